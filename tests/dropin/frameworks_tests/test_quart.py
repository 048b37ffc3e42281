"""The Quart service's tests, as Quart users write them (app.test_app(), test_client())."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.dropin.frameworks.models import Item
from tests.dropin.frameworks.quart_app import app


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    await app.startup()  # before_serving, in the test's context
    client = app.test_client()
    await client.delete("/items")
    yield client
    await app.shutdown()


async def test_create_get_count(client: Any) -> None:
    created = await client.post("/items", json={"name": "a"})
    assert created.status_code == 201
    body = await created.get_json()
    assert await (await client.get(f"/items/{body['id']}")).get_json() == body
    assert body["created_at"].endswith("+09:00")
    assert await (await client.get("/items")).get_json() == {"count": 1}
    assert await Item.filter(name="a").exists()  # plain ORM call in the test body


async def test_missing_is_404(client: Any) -> None:
    missing = await client.get("/items/4242")
    assert missing.status_code == 404
    assert await missing.get_json() == {"detail": 'Object "Item" does not exist'}


async def test_a_failed_transaction_writes_nothing(client: Any) -> None:
    assert (await client.post("/items", json={"name": "taken"})).status_code == 201
    assert (await client.post("/pairs", json={"names": ["new", "taken"]})).status_code == 409
    assert await Item.all().count() == 1
    assert (await client.post("/pairs", json={"names": ["x", "y"]})).status_code == 201
    assert await Item.all().count() == 3
