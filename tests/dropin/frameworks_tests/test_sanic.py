"""The Sanic service's tests, as Sanic users write them (sanic-testing's asgi_client)."""

import pytest
from sanic_testing import TestManager
from sanic_testing.testing import SanicASGITestClient

from tests.dropin.frameworks.sanic_app import app

TestManager(app)


@pytest.fixture
async def client() -> SanicASGITestClient:
    await app.asgi_client.delete("/items")
    return app.asgi_client


async def test_create_get_count(client: SanicASGITestClient) -> None:
    _, created = await client.post("/items", json={"name": "a"})
    assert created.status == 201
    body = created.json
    _, got = await client.get(f"/items/{body['id']}")
    assert got.json == body
    assert body["created_at"].endswith("+09:00")
    _, counted = await client.get("/items")
    assert counted.json == {"count": 1}


async def test_missing_is_404(client: SanicASGITestClient) -> None:
    _, missing = await client.get("/items/4242")
    assert missing.status == 404
    assert missing.json == {"detail": 'Object "Item" does not exist'}


async def test_a_failed_transaction_writes_nothing(client: SanicASGITestClient) -> None:
    _, taken = await client.post("/items", json={"name": "taken"})
    assert taken.status == 201
    _, failed = await client.post("/pairs", json={"names": ["new", "taken"]})
    assert failed.status == 409
    _, counted = await client.get("/items")
    assert counted.json == {"count": 1}
    _, done = await client.post("/pairs", json={"names": ["x", "y"]})
    assert done.status == 201
    _, counted = await client.get("/items")
    assert counted.json == {"count": 3}
