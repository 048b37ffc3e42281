"""The BlackSheep service (Tortoise's own exception handlers: 404 and 422)."""

from blacksheep import Application, FromJSON, Response, delete, get, json, post
from tortoise.transactions import in_transaction

from tests.dropin.frameworks.config import TORTOISE_ORM, contrib
from tests.dropin.frameworks.models import Item

register_tortoise = contrib("blacksheep").register_tortoise

app = Application()


@post("/items")
async def create(body: FromJSON[dict]) -> Response:
    item = await Item.create(name=body.value["name"])
    return json(item.as_dict(), status=201)


@get("/items/{item_id}")
async def get_item(item_id: int) -> Response:
    return json((await Item.get(id=item_id)).as_dict())


@get("/items")
async def count() -> Response:
    return json({"count": await Item.all().count()})


@delete("/items")
async def clear() -> Response:
    return json({"deleted": await Item.all().delete()})


@post("/pairs")
async def pair(body: FromJSON[dict]) -> Response:
    first, second = body.value["names"]
    async with in_transaction():
        await Item.create(name=first)
        await Item.create(name=second)
    return json({"created": 2}, status=201)


register_tortoise(app, config=TORTOISE_ORM, generate_schemas=True, add_exception_handlers=True)
