"""The service's own fixtures, as a plain-Tortoise project writes them."""

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from tortoise.contrib.test import truncate_all_models

from tests.dropin.service.main import app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # asgi-lifespan runs the lifespan in a task of its own: the requests and the test body
    # find the ORM through Tortoise's global fallback context.
    async with LifespanManager(app) as manager:
        await truncate_all_models()
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
        await truncate_all_models()
