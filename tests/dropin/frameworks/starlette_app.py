"""The Starlette service."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tortoise.exceptions import DoesNotExist, IntegrityError
from tortoise.transactions import in_transaction

from tests.dropin.frameworks.config import TORTOISE_ORM, contrib
from tests.dropin.frameworks.models import Item

register_tortoise = contrib("starlette").register_tortoise


async def create(request: Request) -> JSONResponse:
    item = await Item.create(name=(await request.json())["name"])
    return JSONResponse(item.as_dict(), status_code=201)


async def get(request: Request) -> JSONResponse:
    return JSONResponse((await Item.get(id=int(request.path_params["item_id"]))).as_dict())


async def count(request: Request) -> JSONResponse:
    return JSONResponse({"count": await Item.all().count()})


async def clear(request: Request) -> JSONResponse:
    return JSONResponse({"deleted": await Item.all().delete()})


async def pair(request: Request) -> JSONResponse:
    first, second = (await request.json())["names"]
    async with in_transaction():
        await Item.create(name=first)
        await Item.create(name=second)
    return JSONResponse({"created": 2}, status_code=201)


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "conflict"}, status_code=409)


app = Starlette(
    routes=[Route("/items", create, methods=["POST"]), Route("/items", count),
            Route("/items", clear, methods=["DELETE"]),
            Route("/items/{item_id:int}", get), Route("/pairs", pair, methods=["POST"])],
    exception_handlers={DoesNotExist: not_found, IntegrityError: conflict})
register_tortoise(app, config=TORTOISE_ORM, generate_schemas=True)
