"""The service's three apps, registered the ways Tortoise documents."""

import importlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel
from tortoise.contrib.fastapi import tortoise_exception_handlers

from tests.dropin.service.config import TORTOISE_ORM, TORTOISE_ORM_NAIVE
from tests.dropin.service.models import Event, Note

# The one line a service changes: where RegisterTortoise comes from.
_register = importlib.import_module(os.environ.get("DROPIN_REGISTER", "tortoise.contrib.fastapi"))
RegisterTortoise: Any = _register.RegisterTortoise
register_tortoise: Any = _register.register_tortoise


class EventIn(BaseModel):
    title: str


class EventOut(BaseModel):
    id: int
    title: str
    created_at: datetime


def _routes(app: FastAPI) -> None:
    @app.post("/events", status_code=201)
    async def create_event(body: EventIn, tasks: BackgroundTasks) -> EventOut:
        event = await Event.create(title=body.title)
        # Runs after the response, outside any request scope.
        tasks.add_task(Note.create, event_id=event.id, text="created")
        return EventOut(id=event.id, title=event.title, created_at=event.created_at)

    @app.get("/events/{event_id}")
    async def get_event(event_id: int) -> EventOut:
        event = await Event.get(id=event_id)  # DoesNotExist -> 404 by the handlers
        return EventOut(id=event.id, title=event.title, created_at=event.created_at)

    @app.get("/events")
    async def count_events() -> dict[str, int]:
        return {"events": await Event.all().count(), "notes": await Note.all().count()}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with RegisterTortoise(app, config=TORTOISE_ORM, generate_schemas=True):
        yield


app = FastAPI(lifespan=lifespan, exception_handlers=tortoise_exception_handlers())
_routes(app)


@asynccontextmanager
async def lifespan_shanghai(app: FastAPI) -> AsyncIterator[None]:
    async with RegisterTortoise(app, config=TORTOISE_ORM, generate_schemas=True, use_tz=True,
                                timezone="Asia/Shanghai", add_exception_handlers=True,
                                _enable_global_fallback=False):
        yield


app_shanghai = FastAPI(lifespan=lifespan_shanghai)
_routes(app_shanghai)

app_naive = FastAPI()
_routes(app_naive)
register_tortoise(app_naive, config=TORTOISE_ORM_NAIVE, generate_schemas=True,
                  add_exception_handlers=True)
