"""The FastAPI kit as a newcomer meets it: Starlette's own errors in the public body (#18
item 18), /health on the in-memory default (#20 item 3) and under the test's manager (#20
item 4)."""

from __future__ import annotations

import logging

import httpx
import jsonschema
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from aegis_tortoise import DatabaseManager
from aegis_tortoise import config as config_module
from aegis_tortoise.fastapi import (
    ERROR_BODY_SCHEMA,
    install_exception_handlers,
    install_health_route,
)
from aegis_tortoise.testing import app_client
from tests.conftest import EXAMPLE_MODELS


class Item(BaseModel):
    name: str


def _app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    @app.post("/items")
    async def create(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "I refuse to brew coffee", headers={"X-Why": "teapot"})

    return app


def _body(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    jsonschema.validate(body, ERROR_BODY_SCHEMA)
    assert "detail" not in body
    return body


async def test_starlette_errors_answer_the_public_body() -> None:
    """Before: invalid UTF-8, an unknown route and a wrong method answered {"detail": ...}."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()),
                                 base_url="http://test") as client:
        bad_utf8 = await client.post("/items", content=b'{"name": "\xff\xfe"}',
                                     headers={"content-type": "application/json"})
        unknown = await client.get("/no-such-route")
        wrong_method = await client.delete("/items")
        teapot = await client.get("/teapot")
    assert _body(bad_utf8, 400) == {"error_code": "COMMON_1001",
                                    "message": "The request body could not be read",
                                    "details": {}}
    assert "\\xff" not in bad_utf8.text
    assert _body(unknown, 404) == {"error_code": "COMMON_1004", "message": "Not found",
                                   "details": {}}
    assert _body(wrong_method, 405) == {"error_code": "COMMON_1001",
                                        "message": "Method not allowed", "details": {}}
    assert wrong_method.headers["allow"] == "POST"
    assert _body(teapot, 418)["message"] == "I refuse to brew coffee"
    assert teapot.headers["x-why"] == "teapot"


async def test_http_errors_can_keep_fastapis_body() -> None:
    app = FastAPI()
    install_exception_handlers(app, http_errors=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        assert (await client.get("/nothing")).json() == {"detail": "Not Found"}


@pytest.mark.parametrize("status", [204, 304])
async def test_http_errors_of_a_status_without_a_body_send_none(status: int) -> None:
    """Before: HTTPException(304) (an ETag check) answered a JSON body, which HTTP forbids
    (a server such as uvicorn then fails the response); FastAPI sends none."""
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/cached")
    async def cached() -> None:
        raise HTTPException(status, headers={"ETag": '"v1"'})

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        response = await client.get("/cached")
    assert response.status_code == status
    assert response.content == b""
    assert response.headers["etag"] == '"v1"'


async def test_an_apps_own_http_exception_handler_is_kept() -> None:
    """Before: install_exception_handlers() replaced the app's own handler of Starlette's
    HTTPException (FastAPI's documented way to customise it) when called after it."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI()

    @app.exception_handler(StarletteHTTPException)
    async def own(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"own": exc.detail}, status_code=exc.status_code)

    install_exception_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        response = await client.get("/no-such-route")
    assert response.status_code == 404
    assert response.json() == {"own": "Not Found"}


async def test_health_on_the_in_memory_default_is_degraded(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object,
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: with no DATABASE_URL, /health answered "ok" and every request failed."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(str(tmp_path))  # no .env
    monkeypatch.setattr(config_module, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        db = DatabaseManager(models=EXAMPLE_MODELS)
    assert any("DATABASE_URL" in r.getMessage() for r in caplog.records)
    explicit = DatabaseManager("sqlite+aiosqlite:///:memory:", models=EXAMPLE_MODELS)
    app = FastAPI()
    install_health_route(app, db)
    install_health_route(app, explicit, path="/explicit")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            default = await client.get("/health")
            chosen = await client.get("/explicit")
    finally:
        await db.close()
        await explicit.close()
    assert default.status_code == 200
    assert default.json()["status"] == "degraded"
    assert default.json()["database"]["storage"] == "in-memory"
    assert default.json()["database"]["reachable"] is True
    assert chosen.json()["status"] == "ok"
    assert "storage" not in chosen.json()["database"]


async def test_health_under_app_client_checks_the_tests_manager(
        db: DatabaseManager, backend: str) -> None:
    """Before: /health checked the app's own manager (here unreachable) in tests."""
    own = DatabaseManager("postgresql://postgres:pw@127.0.0.1:1/nowhere", models=EXAMPLE_MODELS,
                          pool_timeout=1)
    app = FastAPI()
    install_health_route(app, own)
    async with app_client(app, db) as client:
        response = await client.get("/health")
    await own.close()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
    assert response.json()["database"]["dialect"] == backend
