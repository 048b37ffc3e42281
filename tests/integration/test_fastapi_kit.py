"""aegis_tortoise.fastapi against a real uvicorn server, on sqlite and PostgreSQL.

The example app (``aegis_tortoise.examples.fastapi_app``) is served by ``uvicorn.Server`` in
the test's event loop on a free 127.0.0.1 port, and called over HTTP. Every error body
must match the documented schema (``ERROR_BODY_SCHEMA``), be the same on both backends,
and hold no SQLSTATE, constraint name, SQL or value the client sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn
from fastapi import FastAPI

from aegis_tortoise import ConfigurationError, DatabaseManager
from aegis_tortoise.examples.fastapi_app import create_app
from aegis_tortoise.fastapi import (
    ERROR_BODY_SCHEMA,
    ErrorBody,
    ErrorDetails,
    check_health,
    database_lifespan,
    install_health_route,
)
from tests.conftest import EXAMPLE_MODELS, reset_pg_schema

FASTAPI_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "fastapi.md"
# What a body must never show: SQLSTATEs, driver and SQL words, constraint names.
FORBIDDEN = re.compile(
    r"\b(23\d{3}|22\d{3}|40P01|sqlstate|sqlite_\w+|SQLITE\w*|constraint|fkey|_key|unique|"
    r"foreign key|INSERT|SELECT|UPDATE|violates|DETAIL|\$\d)\b", re.IGNORECASE)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server in this event loop; yields its base URL."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def base_url(db: DatabaseManager, backend: str, db_url: str) -> AsyncIterator[str]:
    async for url in _serve(create_app(db)):
        yield url
    if backend == "postgres":  # later tests on the shared database start empty
        await reset_pg_schema(db_url)


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield client


def _public(response: httpx.Response, status: int, *secrets: str) -> dict[str, Any]:
    """The body, checked: status, the documented schema, nothing internal or echoed."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    jsonschema.validate(body, ERROR_BODY_SCHEMA)
    ErrorBody.model_validate(body, strict=True)  # the OpenAPI model agrees
    assert not FORBIDDEN.search(response.text), response.text
    for secret in secrets:
        assert secret not in response.text
    return body


async def test_duplicate_is_409_naming_the_field(http: httpx.AsyncClient) -> None:
    email = "a" * 200 + "@example.com"  # long, valid, and never echoed
    assert (await http.post("/users", json={"email": email, "name": "First"})).status_code == 201
    response = await http.post("/users", json={"email": email, "name": "Second"})
    assert _public(response, 409, email, "a" * 50) == {
        "error_code": "COMMON_1005", "message": "User already exists",
        "details": {"entity_type": "User", "field": "email"}}


async def test_missing_row_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/users/987654321")
    assert _public(response, 404, "987654321") == {
        "error_code": "COMMON_1004", "message": "User not found",
        "details": {"entity_type": "User"}}


async def test_bad_filter_is_400(http: httpx.AsyncClient) -> None:
    bogus = "zq" * 150
    response = await http.get("/users", params={"order_by": bogus})
    assert _public(response, 400, bogus, "zqzq") == {
        "error_code": "COMMON_1001", "message": "Invalid filter or ordering",
        "details": {"entity_type": "User"}}


async def test_foreign_key_violation_is_400_naming_the_field(
        http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, backend: str) -> None:
    title = "T" * 150
    with caplog.at_level(logging.INFO, logger="aegis_tortoise.fastapi"):
        response = await http.post("/policies", json={"user_id": 987654321, "title": title})
    assert _public(response, 400, "987654321", title) == {
        "error_code": "COMMON_1001", "message": "A referenced entity does not exist",
        "details": {"entity_type": "Policy", "field": "user_id"}}
    # The full cause goes to the log, not to the client.
    cause = "policies_user_id_fkey" if backend == "postgres" else "FOREIGN KEY constraint"
    assert cause in caplog.text
    user = (await http.post("/users", json={"email": "o@example.com", "name": "O"})).json()
    created = await http.post("/policies", json={"user_id": user["id"], "title": "ok"})
    assert created.status_code == 201, created.text


async def test_request_validation_names_fields_without_echo(http: httpx.AsyncClient) -> None:
    email = "b" * 300 + "@example.com"  # over max_length
    response = await http.post("/users", json={"email": email, "name": ""})
    assert _public(response, 422, email, "bbbb") == {
        "error_code": "COMMON_1001", "message": "Invalid request",
        "details": {"fields": ["body.email", "body.name"]}}
    assert _public(await http.post("/users", content=b"{not json"), 422, "not json")[
        "error_code"] == "COMMON_1001"


async def test_health_reports_reachability_latency_and_pool(http: httpx.AsyncClient,
                                                            backend: str) -> None:
    response = await http.get("/health")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "ok"
    assert report["database"]["reachable"] is True
    assert report["database"]["dialect"] == backend
    assert 0 < report["database"]["latency_ms"] < 5000
    pool = report["pool"]
    assert set(pool) == {"size", "in_use", "idle", "max_size"}
    assert pool["max_size"] == (10 if backend == "postgres" else 1)
    assert pool["in_use"] == 0
    assert pool["size"] == pool["idle"] >= 1


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_health_of_an_unreachable_database_is_503(backend: str) -> None:
    db = DatabaseManager("postgresql://postgres:s3cr3t-pw@127.0.0.1:1/x", models=EXAMPLE_MODELS,
                         pool_timeout=2)
    report = await check_health(db, timeout=5)
    assert report["status"] == "unavailable"
    assert report["database"]["reachable"] is False
    assert report["database"]["error_code"] == "DB_2000"
    app = FastAPI()
    install_health_route(app, db, path="/ready")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "s3cr3t-pw" not in response.text
    assert "127.0.0.1" not in response.text
    await db.close()


async def test_health_of_a_busy_pool_times_out(db: DatabaseManager, db_url: str) -> None:
    busy = DatabaseManager(db_url, models=EXAMPLE_MODELS, pool_size=1, max_overflow=0)
    try:
        async with busy.session() as session:
            await session.execute("SELECT 1")
            # Another request's task: its own context, as under a server.
            report = await asyncio.create_task(check_health(busy, timeout=0.3),
                                               context=contextvars.Context())
            assert report["status"] == "unavailable"
            assert report["database"]["error_code"] == "DB_2001"
            assert report["pool"]["in_use"] == report["pool"]["max_size"] == 1
    finally:
        await busy.close()


async def test_lifespan_fails_startup_on_a_wrong_model_module(backend: str,
                                                              db_url: str) -> None:
    db = DatabaseManager(db_url, models=["no_such_pkg.models"])
    app = FastAPI()
    with pytest.raises(ConfigurationError, match="no_such_pkg"):
        async with database_lifespan(db)(app):
            pass
    assert app.state.db is db
    good = DatabaseManager(db_url, models=EXAMPLE_MODELS)
    async with database_lifespan(good, generate_schemas=True)(app):
        assert good.is_initialized
    assert not good.is_initialized  # closed at shutdown


def test_docs_document_the_error_body_schema() -> None:
    text = FASTAPI_PAGE.read_text(encoding="utf-8")
    match = re.search(r"<!-- error-body-schema -->\n```json\n(?P<schema>.*?)```", text,
                      re.DOTALL)
    assert match, "the FastAPI page (docs/reference/fastapi.md) shows ERROR_BODY_SCHEMA"
    assert json.loads(match.group("schema")) == ERROR_BODY_SCHEMA
    jsonschema.Draft202012Validator.check_schema(ERROR_BODY_SCHEMA)
    assert set(ErrorBody.model_fields) == set(ERROR_BODY_SCHEMA["properties"])
    details = ERROR_BODY_SCHEMA["properties"]["details"]["properties"]
    assert set(ErrorDetails.model_fields) == set(details)


def test_example_app_runs_from_the_installed_package(tmp_path: Path) -> None:
    """``uvicorn aegis_tortoise.examples.fastapi_app:app``, outside the checkout."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    proc = subprocess.Popen(  # noqa: S603 - uvicorn of this environment
        [sys.executable, "-m", "uvicorn", "aegis_tortoise.examples.fastapi_app:app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health.status_code == 200
        created = httpx.post(f"http://127.0.0.1:{port}/users",
                             json={"email": "a@example.com", "name": "A"}, timeout=5)
        assert created.status_code == 201, created.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
