"""The aiohttp service's tests, as aiohttp users write them (pytest-aiohttp's
aiohttp_client fixture)."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tortoise import Tortoise

from tests.dropin.frameworks.aiohttp_app import create_app
from tests.dropin.frameworks.models import Item

Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Callable[[Any], Awaitable[Client]]) -> AsyncIterator[Client]:
    client = await aiohttp_client(create_app())
    await client.delete("/items")
    yield client
    # Tortoise's on_cleanup runs in another task than on_startup, where its context is not
    # current, and closes nothing: the test closes the connections its startup opened
    # (else aiosqlite's threads keep the process alive at exit).
    await Tortoise.close_connections()


async def test_create_get_count(client: Client) -> None:
    created = await client.post("/items", json={"name": "a"})
    assert created.status == 201
    body = await created.json()
    assert await (await client.get(f"/items/{body['id']}")).json() == body
    assert body["created_at"].endswith("+09:00")
    assert await (await client.get("/items")).json() == {"count": 1}
    assert await Item.filter(name="a").exists()  # plain ORM call in the test body


async def test_missing_is_404(client: Client) -> None:
    missing = await client.get("/items/4242")
    assert missing.status == 404
    assert await missing.json() == {"detail": 'Object "Item" does not exist'}


async def test_a_failed_transaction_writes_nothing(client: Client) -> None:
    assert (await client.post("/items", json={"name": "taken"})).status == 201
    assert (await client.post("/pairs", json={"names": ["new", "taken"]})).status == 409
    assert await Item.all().count() == 1
    assert (await client.post("/pairs", json={"names": ["x", "y"]})).status == 201
    assert await Item.all().count() == 3
