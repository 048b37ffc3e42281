"""The Quart service."""

from typing import Any

from quart import Quart, request
from tortoise.exceptions import DoesNotExist, IntegrityError
from tortoise.transactions import in_transaction

from tests.dropin.frameworks.config import TORTOISE_ORM, contrib
from tests.dropin.frameworks.models import Item

register_tortoise = contrib("quart").register_tortoise

app = Quart(__name__)


@app.post("/items")
async def create() -> tuple[dict[str, Any], int]:
    item = await Item.create(name=(await request.get_json())["name"])
    return item.as_dict(), 201


@app.get("/items/<int:item_id>")
async def get(item_id: int) -> dict[str, Any]:
    return (await Item.get(id=item_id)).as_dict()


@app.get("/items")
async def count() -> dict[str, Any]:
    return {"count": await Item.all().count()}


@app.delete("/items")
async def clear() -> dict[str, Any]:
    return {"deleted": await Item.all().delete()}


@app.post("/pairs")
async def pair() -> tuple[dict[str, Any], int]:
    first, second = (await request.get_json())["names"]
    async with in_transaction():
        await Item.create(name=first)
        await Item.create(name=second)
    return {"created": 2}, 201


@app.errorhandler(DoesNotExist)
async def not_found(exc: DoesNotExist) -> tuple[dict[str, Any], int]:
    return {"detail": str(exc)}, 404


@app.errorhandler(IntegrityError)
async def conflict(exc: IntegrityError) -> tuple[dict[str, Any], int]:
    return {"detail": "conflict"}, 409


register_tortoise(app, config=TORTOISE_ORM, generate_schemas=True)
