"""A missing table says what to run (#20 item 7): the migrations, or generate_schemas() in
tests. The hint is in the exception message and the log; the HTTP body stays client-safe."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from aegis_tortoise import DatabaseError, DatabaseManager, Session
from aegis_tortoise.examples.repositories import PolicyRepository
from aegis_tortoise.fastapi import install_exception_handlers, session_dependency


async def _drop_policies(db: DatabaseManager) -> None:
    async with db.session() as session:
        cascade = " CASCADE" if db.dialect == "postgres" else ""
        await session.execute(f"DROP TABLE policies{cascade}")


async def test_a_missing_table_names_the_migrations(db: DatabaseManager) -> None:
    """Before: a bare "Database error: no such table: policies" / "relation ... does not
    exist"."""
    await _drop_policies(db)
    with pytest.raises(DatabaseError) as info:
        async with db.session() as session:
            await PolicyRepository(session).list()
    message = info.value.message
    assert "policies" in message
    assert "aerich upgrade" in message
    assert "generate_schemas()" in message


async def test_the_http_body_stays_safe_and_the_log_has_the_hint(
        db: DatabaseManager, caplog: pytest.LogCaptureFixture) -> None:
    await _drop_policies(db)
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/policies")
    async def policies(session: Session = session_dependency(db)) -> int:  # noqa: B008
        return len(await PolicyRepository(session).list())

    with caplog.at_level(logging.INFO, logger="aegis_tortoise.fastapi"):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            response = await client.get("/policies")
    assert response.status_code == 500
    assert response.json() == {"error_code": "COMMON_1009", "message": "Internal server error",
                               "details": {}}
    assert "aerich upgrade" in caplog.text
    assert "policies" in caplog.text
