"""The Starlette service's tests, as Starlette users write them (TestClient, sync)."""

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.dropin.frameworks.starlette_app import app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as client:  # runs the lifespan: register_tortoise's
        client.delete("/items")
        yield client


def test_create_get_count(client: TestClient) -> None:
    created = client.post("/items", json={"name": "a"})
    assert created.status_code == 201
    body = created.json()
    assert client.get(f"/items/{body['id']}").json() == body
    assert body["created_at"].endswith("+09:00")  # the config's use_tz and timezone
    assert client.get("/items").json() == {"count": 1}


def test_missing_is_404(client: TestClient) -> None:
    missing = client.get("/items/4242")
    assert missing.status_code == 404
    assert missing.json() == {"detail": 'Object "Item" does not exist'}


def test_a_failed_transaction_writes_nothing(client: TestClient) -> None:
    assert client.post("/items", json={"name": "taken"}).status_code == 201
    assert client.post("/pairs", json={"names": ["new", "taken"]}).status_code == 409
    assert client.get("/items").json() == {"count": 1}
    assert client.post("/pairs", json={"names": ["x", "y"]}).status_code == 201
    assert client.get("/items").json() == {"count": 3}
