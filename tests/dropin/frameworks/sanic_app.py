"""The Sanic service."""

from sanic import Sanic, json
from sanic.request import Request
from sanic.response import HTTPResponse
from tortoise.exceptions import DoesNotExist, IntegrityError
from tortoise.transactions import in_transaction

from tests.dropin.frameworks.config import TORTOISE_ORM, contrib
from tests.dropin.frameworks.models import Item

register_tortoise = contrib("sanic").register_tortoise

app = Sanic("dropin")


@app.post("/items")
async def create(request: Request) -> HTTPResponse:
    item = await Item.create(name=request.json["name"])
    return json(item.as_dict(), status=201)


@app.get("/items/<item_id:int>")
async def get(request: Request, item_id: int) -> HTTPResponse:
    return json((await Item.get(id=item_id)).as_dict())


@app.get("/items")
async def count(request: Request) -> HTTPResponse:
    return json({"count": await Item.all().count()})


@app.delete("/items")
async def clear(request: Request) -> HTTPResponse:
    return json({"deleted": await Item.all().delete()})


@app.post("/pairs")
async def pair(request: Request) -> HTTPResponse:
    first, second = request.json["names"]
    async with in_transaction():
        await Item.create(name=first)
        await Item.create(name=second)
    return json({"created": 2}, status=201)


@app.exception(DoesNotExist)
async def not_found(request: Request, exc: Exception) -> HTTPResponse:
    return json({"detail": str(exc)}, status=404)


@app.exception(IntegrityError)
async def conflict(request: Request, exc: Exception) -> HTTPResponse:
    return json({"detail": "conflict"}, status=409)


register_tortoise(app, config=TORTOISE_ORM, generate_schemas=True)
