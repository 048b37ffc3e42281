"""Issue 18 item 4: with two managers' sessions nested, each manager's ``use_tz`` and
``timezone`` apply to the reads and writes of its own session, on both backends."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager
from aegis_tortoise.examples.repositories import UserRepository
from tests.conftest import EXAMPLE_MODELS, fresh_manager

SEOUL = timezone(timedelta(hours=9))
# (use_tz, timezone) of the outer manager a, then of the inner manager b.
SETTINGS = [((True, "Asia/Seoul"), (False, "UTC")),
            ((False, "Asia/Seoul"), (True, "UTC")),
            ((True, "America/St_Johns"), (True, "Asia/Seoul"))]


@pytest.fixture(params=SETTINGS, ids=["aware-seoul/naive-utc", "naive-seoul/aware-utc",
                                      "aware-stjohns/aware-seoul"])
async def managers(request: pytest.FixtureRequest, backend: str
                   ) -> AsyncIterator[tuple[DatabaseManager, DatabaseManager]]:
    (a_tz, a_zone), (b_tz, b_zone) = request.param
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            urls = [f"sqlite:///{os.path.join(tmp, name)}.db" for name in ("a", "b")]
        else:
            urls = [request.getfixturevalue("pg_database"),
                    request.getfixturevalue("pg_database_b")]
        async for a in fresh_manager(urls[0], backend, use_tz=a_tz, timezone=a_zone,
                                     pool_size=2, max_overflow=0):
            async for b in fresh_manager(urls[1], backend, use_tz=b_tz, timezone=b_zone,
                                         pool_size=2, max_overflow=0):
                yield a, b


def _value(manager: DatabaseManager) -> datetime:
    # 09:00 in the manager's zone: aware under use_tz, naive (as Tortoise wants) without.
    moment = datetime(2024, 5, 1, 9, 0)
    return moment.replace(tzinfo=SEOUL) if manager.use_tz else moment


async def _write_and_read(manager: DatabaseManager, email: str) -> dict[str, Any]:
    """Through ``manager``'s open session: create, set deleted_at, read it back three ways."""
    session = manager._current.get()
    assert session is not None
    repo = UserRepository(session)
    user = await repo.create({"email": email, "name": "N"})
    updated = await repo.update(user.id, deleted_at=_value(manager))
    assert updated is not None
    got = await repo.get(user.id)
    raw = (await session.execute("SELECT deleted_at FROM users WHERE id = :id",
                                 {"id": user.id})).scalar()
    listed = await repo.list(filters={"id": user.id})
    return {"updated": updated.deleted_at, "got": got.deleted_at,
            "listed": listed[0].deleted_at, "raw": raw,
            "created_aware": user.created_at.tzinfo is not None,
            "created_offset": user.created_at.utcoffset()}


def _same(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    for key, value in expected.items():
        other = actual[key]
        assert other == value, key
        if isinstance(value, datetime):
            assert (other.tzinfo is None) == (value.tzinfo is None), key
            assert other.utcoffset() == value.utcoffset(), key


async def test_each_manager_keeps_its_time_settings_when_nested(
        managers: tuple[DatabaseManager, DatabaseManager]) -> None:
    a, b = managers
    # Reference: each manager alone.
    async with a.session():
        alone_a = await _write_and_read(a, "a1@x")
    async with b.session():
        alone_b = await _write_and_read(b, "b1@x")
    # Nested both ways: the innermost manager's settings must not leak into the outer one's.
    async with a.session(), b.session():
        nested_a = await _write_and_read(a, "a2@x")
        nested_b = await _write_and_read(b, "b2@x")
    async with b.session(), a.session():
        inner_a = await _write_and_read(a, "a3@x")
        outer_b = await _write_and_read(b, "b3@x")
    for result in (nested_a, inner_a):
        _same(alone_a, result)
    for result in (nested_b, outer_b):
        _same(alone_b, result)
    assert alone_a["got"].tzinfo is not None if a.use_tz else alone_a["got"].tzinfo is None


async def test_published_manager_follows_the_environment_as_tortoise_does(
        backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    """Issue 21 acceptance 6: code that changes USE_TZ/TIMEZONE in os.environ and resets
    Tortoise's timezone cache (as Tortoise's own tests do) is honoured by the published
    manager, as by ``Tortoise.init``; a manager that is not published keeps its settings."""
    from tortoise import timezone as tz

    from aegis_tortoise.examples.models import User

    models = EXAMPLE_MODELS
    # Model classes hold one SQL dialect: the second manager is of the same backend.
    other = ("sqlite:///:memory:" if backend == "sqlite"
             else request.getfixturevalue("pg_database_b"))
    async for _published in fresh_manager(db_url, backend, models=models, use_tz=False,
                                         timezone="Asia/Seoul", global_context=True):
        async for own in fresh_manager(other, backend, models=models,
                                       use_tz=True, timezone="UTC"):
            assert tz.now().tzinfo is None  # the published manager's use_tz=False
            before = {name: os.environ.get(name) for name in ("USE_TZ", "TIMEZONE")}
            monkeypatch.setenv("USE_TZ", "True")
            monkeypatch.setenv("TIMEZONE", "America/St_Johns")
            tz._reset_timezone_cache()
            assert tz.now().tzinfo is not None
            assert str(tz.get_default_timezone()) == "America/St_Johns"
            user = await User.create(email="e@x", name="E",
                                     deleted_at=datetime(2024, 5, 1, 9, 0, tzinfo=SEOUL))
            read = await User.get(id=user.id)
            assert read.deleted_at is not None
            # St John's daylight time, as Tortoise reads it after that change.
            assert read.deleted_at.utcoffset() == timedelta(hours=-2, minutes=-30)
            async with own.session() as session:
                # Not published: its own settings, whatever the environment says.
                mine = await UserRepository(session).create({"email": "o@x", "name": "O"})
                assert mine.created_at.utcoffset() == timedelta(0)
            for name, value in before.items():  # as they were when it was published
                if value is None:
                    monkeypatch.delenv(name)
                else:
                    monkeypatch.setenv(name, value)
            tz._reset_timezone_cache()
            assert tz.now().tzinfo is None  # back to the manager's own
            assert str(tz.get_default_timezone()) == "Asia/Seoul"
