"""The aiohttp service."""

from collections.abc import Awaitable, Callable

from aiohttp import web
from tortoise.exceptions import DoesNotExist, IntegrityError
from tortoise.transactions import in_transaction

from tests.dropin.frameworks.config import TORTOISE_ORM, contrib
from tests.dropin.frameworks.models import Item

register_tortoise = contrib("aiohttp").register_tortoise
routes = web.RouteTableDef()


@routes.post("/items")
async def create(request: web.Request) -> web.Response:
    item = await Item.create(name=(await request.json())["name"])
    return web.json_response(item.as_dict(), status=201)


@routes.get("/items/{item_id}")
async def get(request: web.Request) -> web.Response:
    return web.json_response((await Item.get(id=int(request.match_info["item_id"]))).as_dict())


@routes.get("/items")
async def count(request: web.Request) -> web.Response:
    return web.json_response({"count": await Item.all().count()})


@routes.delete("/items")
async def clear(request: web.Request) -> web.Response:
    return web.json_response({"deleted": await Item.all().delete()})


@routes.post("/pairs")
async def pair(request: web.Request) -> web.Response:
    first, second = (await request.json())["names"]
    async with in_transaction():
        await Item.create(name=first)
        await Item.create(name=second)
    return web.json_response({"created": 2}, status=201)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def tortoise_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DoesNotExist as exc:
        return web.json_response({"detail": str(exc)}, status=404)
    except IntegrityError:
        return web.json_response({"detail": "conflict"}, status=409)


def create_app() -> web.Application:
    app = web.Application(middlewares=[tortoise_errors])
    app.add_routes(routes)
    register_tortoise(app, config=TORTOISE_ORM, generate_schemas=True)
    return app
