"""Optimistic versions: expected_version on update, update_many and upsert."""

from __future__ import annotations

import pytest

from aegis_tortoise import (
    BaseRepository,
    ConcurrentUpdateError,
    DatabaseManager,
    LockNotAvailableError,
    ValidationError,
)
from aegis_tortoise.fastapi import error_response
from tests.concurrency.models import Counter, Tally


async def _value(db: DatabaseManager, pk: int = 1) -> tuple[int, int]:
    async with db.session() as session:
        row = await BaseRepository(session, Tally).get(pk)
        return row.value, row.version


async def test_update_checks_and_increments_the_version(cdb: DatabaseManager) -> None:
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        created = await repo.create({"id": 1, "value": 0})
        assert created.version == 1
        first = await repo.update(1, value=1, expected_version=1)
        assert first is not None
        assert (first.value, first.version) == (1, 2)
        plain = await repo.update(1, value=2)  # no check, still counted
        assert plain is not None
        assert plain.version == 3
        with pytest.raises(ConcurrentUpdateError) as caught:
            await repo.update(1, value=99, expected_version=2)
        error = caught.value
        assert (error.status_code, str(error.error_code)) == (409, "DB_2005")
        assert error.details["entity_type"] == "Tally"
        assert error.details["entity_id"] == 1
        assert error.details["expected_version"] == 2
        # A loaded instance carries the version it was read at.
        with pytest.raises(ConcurrentUpdateError):
            await repo.update(created, value=98)
        assert await repo.update(404, value=1, expected_version=1) is None  # missing: None
        with pytest.raises(ValidationError, match="set by the repository"):
            await repo.update(1, version=10)
        with pytest.raises(ConcurrentUpdateError):
            await repo.update(1, expected_version=1)  # nothing to change, still checked
    assert await _value(cdb) == (2, 3)  # nothing of the stale calls was written


async def test_update_many_and_upsert_respect_the_version(cdb: DatabaseManager) -> None:
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        await repo.create_many([{"id": 1, "value": 0}, {"id": 2, "value": 0}])
        rows = await repo.update_many([{"id": 1, "value": 5, "version": 1},
                                       {"id": 2, "value": 6}, {"id": 3, "value": 7}])
        assert [(r.id, r.value, r.version) for r in rows] == [(1, 5, 2), (2, 6, 2)]
        with pytest.raises(ConcurrentUpdateError):
            await repo.update_many([{"id": 2, "value": 60, "version": 2},
                                    {"id": 1, "value": 50, "version": 1}])
        row, created = await repo.upsert({"id": 1, "value": 8}, conflict=["id"],
                                         update=["value"], expected_version=2)
        assert (created, row.value, row.version) == (False, 8, 3)
        with pytest.raises(ConcurrentUpdateError):
            await repo.upsert({"id": 1, "value": 9}, conflict=["id"], update=["value"],
                              expected_version=2)
        row, created = await repo.upsert({"id": 4, "value": 1}, conflict=["id"],
                                         update=["value"])
        assert (created, row.version) == (True, 1)
        results = await repo.upsert_many([{"id": 4, "value": 2}, {"id": 5, "value": 3}],
                                         conflict=["id"], update=["value"])
        assert [(r.id, r.version, c) for r, c in results] == [(4, 2, False), (5, 1, True)]
    assert await _value(cdb, 1) == (8, 3)
    assert await _value(cdb, 2) == (6, 2)  # the failed update_many wrote nothing


async def test_a_version_for_a_model_without_one_is_refused(cdb: DatabaseManager) -> None:
    async with cdb.session() as session:
        repo = BaseRepository(session, Counter)
        await repo.create({"id": 1, "value": 0})
        with pytest.raises(ValidationError, match="no version field"):
            await repo.update(1, value=1, expected_version=1)


def test_the_fastapi_kit_answers_409() -> None:
    status, body = error_response(ConcurrentUpdateError("Tally", 1, expected_version=2))
    assert status == 409
    assert body["error_code"] == "DB_2005"
    assert body["details"] == {"entity_type": "Tally"}
    assert "someone else" in body["message"]
    status, body = error_response(LockNotAvailableError("locked", details={
        "entity_type": "Tally", "sqlstate": "55P03"}))
    assert (status, body["error_code"], body["details"]) == (409, "DB_2004",
                                                             {"entity_type": "Tally"})
