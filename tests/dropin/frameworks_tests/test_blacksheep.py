"""The BlackSheep service's tests, as BlackSheep users write them (blacksheep.testing's
TestClient on a started app)."""

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from blacksheep.contents import JSONContent
from blacksheep.testing import TestClient

from tests.dropin.frameworks.blacksheep_app import app
from tests.dropin.frameworks.models import Item

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started() -> AsyncIterator[TestClient]:
    # A BlackSheep app starts once: its handlers are normalised at start.
    await app.start()
    yield TestClient(app)
    await app.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(started: TestClient) -> TestClient:
    await started.delete("/items")
    return started


async def test_create_get_count(client: TestClient) -> None:
    created = await client.post("/items", content=JSONContent({"name": "a"}))
    assert created.status == 201
    body = await created.json()
    assert await (await client.get(f"/items/{body['id']}")).json() == body
    assert body["created_at"].endswith("+09:00")
    assert await (await client.get("/items")).json() == {"count": 1}
    assert await Item.filter(name="a").exists()  # plain ORM call in the test body


async def test_missing_is_404(client: TestClient) -> None:
    missing = await client.get("/items/4242")
    assert missing.status == 404
    assert await missing.json() == {"detail": 'Object "Item" does not exist'}


async def test_a_failed_transaction_writes_nothing(client: TestClient) -> None:
    assert (await client.post("/items", content=JSONContent({"name": "taken"}))).status == 201
    failed = await client.post("/pairs", content=JSONContent({"names": ["new", "taken"]}))
    assert failed.status == 422  # Tortoise's IntegrityError handler
    assert await Item.all().count() == 1
    done = await client.post("/pairs", content=JSONContent({"names": ["x", "y"]}))
    assert done.status == 201
    assert await Item.all().count() == 3
