"""The service's tests: HTTP, direct ORM calls, time zones, a script in a fresh process."""

import asyncio
import contextvars
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from asgi_lifespan import LifespanManager
from tortoise import Tortoise, connections
from tortoise.contrib.test import truncate_all_models
from tortoise.transactions import in_transaction

from tests.dropin.service.main import app_naive, app_shanghai
from tests.dropin.service.models import Event, Note

pytestmark = pytest.mark.filterwarnings(
    "ignore:Setting `add_exception_handlers`:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[3]


async def test_create_get_and_missing(client: httpx.AsyncClient) -> None:
    created = await client.post("/events", json={"title": "launch"})
    assert created.status_code == 201
    body = created.json()
    got = await client.get(f"/events/{body['id']}")
    assert got.status_code == 200
    assert got.json() == body
    missing = await client.get("/events/4242")
    assert missing.status_code == 404
    assert missing.json() == {"detail": 'Object "Event" does not exist'}


async def test_duplicate_is_the_handlers_422(client: httpx.AsyncClient) -> None:
    assert (await client.post("/events", json={"title": "same"})).status_code == 201
    duplicate = await client.post("/events", json={"title": "same"})
    assert duplicate.status_code == 422
    [detail] = duplicate.json()["detail"]
    assert detail["type"] == "IntegrityError"
    assert detail["loc"] == []
    assert "dropin_event" in detail["msg"] or "title" in detail["msg"]
    assert await Event.all().count() == 1


async def test_background_task_after_the_response(client: httpx.AsyncClient) -> None:
    assert (await client.post("/events", json={"title": "bg"})).status_code == 201
    assert (await client.get("/events")).json() == {"events": 1, "notes": 1}


async def test_orm_calls_in_the_test_body(client: httpx.AsyncClient) -> None:
    event = await Event.create(title="direct")
    await Note.create(event=event, text="n")
    assert await Event.filter(title="direct").count() == 1
    assert Tortoise.apps is not None
    assert {m.__name__ for m in Tortoise.apps.get_models_iterable()} == {"Event", "Note"}
    assert connections.get("default") is Tortoise.get_connection("default")
    assert (await connections.get("default").execute_query_dict(
        "SELECT count(*) AS n FROM dropin_event"))[0]["n"] == 1
    async with in_transaction("default") as conn:
        await Event.create(title="in tx", using_db=conn)

    async def rolled_back() -> None:
        async with in_transaction():
            await Event.create(title="rolled back")
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert sorted(await Event.all().values_list("title", flat=True)) == ["direct", "in tx"]
    assert (await client.get("/events")).json() == {"events": 2, "notes": 1}


async def test_orm_from_a_task_with_an_empty_context(client: httpx.AsyncClient) -> None:
    # A task that inherits nothing (as a worker or scheduler would start one).
    await Event.create(title="seen")

    async def count() -> int:
        return await Event.all().count()

    task = asyncio.get_running_loop().create_task(count(), context=contextvars.Context())
    assert await task == 1


async def test_truncate_all_models(client: httpx.AsyncClient) -> None:
    await Event.create(title="a")
    await truncate_all_models()
    assert await Event.all().count() == 0


async def test_a_script_in_a_fresh_process(client: httpx.AsyncClient) -> None:
    for title in ("first", "second"):
        assert (await client.post("/events", json={"title": title})).status_code == 201
    script = subprocess.run(  # noqa: ASYNC221 - a short child process
        [sys.executable, "-m", "tests.dropin.service.count_events"], cwd=ROOT,
        capture_output=True, text=True, timeout=60, env=os.environ.copy(), check=False)
    assert script.returncode == 0, script.stderr
    assert script.stdout.split() == ["2", "first,second"]


async def test_app_in_shanghai_time() -> None:
    # No global fallback: the lifespan runs in the test's own task, as Tortoise documents.
    async with app_shanghai.router.lifespan_context(app_shanghai):
        await truncate_all_models()
        transport = httpx.ASGITransport(app=app_shanghai)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = (await client.post("/events", json={"title": "sh"})).json()
            assert created["created_at"].endswith("+08:00")
            event = await Event.get(id=created["id"])
            assert event.created_at.utcoffset() == timedelta(hours=8)
            assert abs(event.created_at - datetime.now(UTC)) < timedelta(minutes=1)
            assert event.created_at.isoformat() == created["created_at"]
            missing = await client.get("/events/4242")
            assert missing.status_code == 404
            assert missing.json() == {"detail": 'Object "Event" does not exist'}
        await truncate_all_models()


async def test_app_with_naive_datetimes_in_tokyo() -> None:
    async with LifespanManager(app_naive):
        await truncate_all_models()
        transport = httpx.ASGITransport(app=app_naive)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = (await client.post("/events", json={"title": "tk"})).json()
            # use_tz=False: auto_now_add is the naive local time of the configured zone.
            stamped = datetime.fromisoformat(created["created_at"])
            tokyo_now = datetime.now(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)
            assert stamped.tzinfo is None
            assert abs(stamped - tokyo_now) < timedelta(minutes=1)
            event = await Event.get(id=created["id"])
            assert event.created_at.tzinfo is None
            duplicate = await client.post("/events", json={"title": "tk"})
            assert duplicate.status_code == 422
        await truncate_all_models()
