"""The FastAPI session dependency and the example service, on sqlite and PostgreSQL."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from starlette.types import Message, Receive, Scope, Send

from aegis_tortoise import DatabaseManager, Session, ValidationError
from aegis_tortoise.examples.models import User
from aegis_tortoise.fastapi import session_dependency
from examples.fastapi_app import UserRepository, create_app
from tests.conftest import reset_pg_schema


@pytest.fixture(autouse=True)
async def _leave_the_database_empty(backend: str, db_url: str) -> AsyncIterator[None]:
    # Torn down after `db`: later tests on the shared PostgreSQL database start empty.
    yield
    if backend == "postgres":
        await reset_pg_schema(db_url)


def _client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def client(db: DatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(db)) as client:
        yield client


async def _emails(db: DatabaseManager) -> list[str]:
    async with db.session():
        return list(await User.all().order_by("id").values_list("email", flat=True))


async def test_concurrent_requests_all_commit(client: httpx.AsyncClient,
                                              db: DatabaseManager) -> None:
    responses = await asyncio.gather(*(
        client.post("/users", json={"email": f"user{i}@example.com", "name": f"User {i}"})
        for i in range(20)))
    assert [r.status_code for r in responses] == [201] * 20
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 20
    assert sorted(await _emails(db)) == sorted(f"user{i}@example.com" for i in range(20))

    page = (await client.get("/users", params={"page": 2, "page_size": 6})).json()
    assert (page["total"], page["page"], page["page_size"], page["total_pages"]) == (20, 2, 6, 4)
    assert [item["id"] for item in page["items"]] == sorted(ids)[6:12]
    assert set(page["items"][0]) == {"id", "email", "name", "created_at", "updated_at"}
    last = (await client.get("/users", params={"page": 4, "page_size": 6})).json()
    assert len(last["items"]) == 2
    assert (await client.get("/users", params={"page": 0})).status_code == 422


async def test_get_user_and_not_found(client: httpx.AsyncClient) -> None:
    created = (await client.post("/users", json={"email": "a@example.com", "name": "A"})).json()
    got = await client.get(f"/users/{created['id']}")
    assert got.status_code == 200
    assert got.json() == created

    missing = await client.get("/users/4242")
    assert missing.status_code == 404
    # The public body: no echo of the id the client sent (aegis_tortoise.fastapi).
    assert missing.json() == {"error_code": "COMMON_1004", "message": "User not found",
                              "details": {"entity_type": "User"}}


async def test_duplicate_email_is_409(client: httpx.AsyncClient, db: DatabaseManager) -> None:
    body = {"email": "dup@example.com", "name": "First"}
    assert (await client.post("/users", json=body)).status_code == 201
    duplicate = await client.post("/users", json={**body, "name": "Second"})
    assert duplicate.status_code == 409
    error = duplicate.json()
    assert error == {"error_code": "COMMON_1005", "message": "User already exists",
                     "details": {"entity_type": "User", "field": "email"}}
    # The failed request's transaction is gone; the service carries on.
    assert (await client.post("/users", json={"email": "next@example.com", "name": "N"})
            ).status_code == 201
    assert await _emails(db) == ["dup@example.com", "next@example.com"]


def _failing_routes(app: FastAPI, db: DatabaseManager) -> None:
    session_dep = Annotated[Session, session_dependency(db)]

    async def write(session: Session, email: str) -> None:
        await UserRepository(session).create({"email": email, "name": "doomed"})
        assert await UserRepository(session).count() == 1  # written, inside the transaction

    @app.post("/fail/service")
    async def fail_service(session: session_dep) -> None:
        await write(session, "service@example.com")
        raise ValidationError("rejected after writing")

    @app.post("/fail/http")
    async def fail_http(session: session_dep) -> None:
        await write(session, "http@example.com")
        raise HTTPException(status_code=403, detail="no")

    @app.post("/fail/crash")
    async def fail_crash(session: session_dep) -> None:
        await write(session, "crash@example.com")
        raise RuntimeError("bug after writing")


async def test_failed_request_leaves_nothing_behind(db: DatabaseManager) -> None:
    app = create_app(db)
    _failing_routes(app, db)
    async with _client(app, raise_app_exceptions=False) as client:
        service = await client.post("/fail/service")
        assert service.status_code == 400
        # The library's classes answer with fixed messages (an app's own subclass of
        # ServiceException keeps its text).
        assert service.json() == {"error_code": "COMMON_1001", "message": "Invalid value",
                                  "details": {}}
        assert (await client.post("/fail/http")).status_code == 403
        assert (await client.post("/fail/crash")).status_code == 500
    assert await _emails(db) == []


async def test_commit_happens_before_the_response_is_sent(db: DatabaseManager) -> None:
    """A client that has seen 201 can read the row: the commit is not deferred past it."""
    app = create_app(db)
    seen_at_response_start: list[list[str]] = []

    async def probe(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_look(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen_at_response_start.append(await _emails(db))
            await send(message)

        await app(scope, receive, send_and_look)

    async with _client(probe) as client:
        response = await client.post("/users", json={"email": "early@example.com", "name": "E"})
    assert response.status_code == 201
    assert seen_at_response_start == [["early@example.com"]]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_failed_commit_becomes_the_response(client: httpx.AsyncClient,
                                                  db: DatabaseManager) -> None:
    """A constraint checked at COMMIT fails the request instead of a 201 already sent."""
    async with db.session() as session:
        await session.execute("ALTER TABLE users ADD CONSTRAINT users_name_at_commit "
                              "UNIQUE (name) DEFERRABLE INITIALLY DEFERRED")
    assert (await client.post("/users", json={"email": "a@example.com", "name": "Same"})
            ).status_code == 201
    failed = await client.post("/users", json={"email": "b@example.com", "name": "Same"})
    assert failed.status_code == 409
    assert failed.json()["error_code"] == "COMMON_1005"
    assert await _emails(db) == ["a@example.com"]
