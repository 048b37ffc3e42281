"""The sample user service of the original library, on aegis-tortoise and FastAPI.

One request is one session and one transaction: committed when the endpoint returns,
rolled back when it raises, in both cases before the response is sent. Errors of the
library become JSON answers with their own HTTP status (404 not found, 409 duplicate, ...).

Run it on an in-memory sqlite database (its tables are created at startup)::

    pip install 'aegis-tortoise[fastapi]' uvicorn
    uvicorn examples.fastapi_app:app

On PostgreSQL, create the schema with the migrations first::

    export DATABASE_URL=postgresql+asyncpg://user:password@localhost/dbname
    aerich upgrade
    uvicorn examples.fastapi_app:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from aegis_tortoise import DatabaseManager, PaginatedResponse, ServiceException, Session
from aegis_tortoise.examples.models import User
from aegis_tortoise.fastapi import session_dependency
from aegis_tortoise.repository import BaseRepository

__all__ = ["UserCreate", "UserOut", "UserRepository", "app", "create_app"]


class UserRepository(BaseRepository[User]):
    """The seed's ``UserRepository``: the model comes from ``BaseRepository[User]``."""

    async def get_by_email(self, email: str) -> User | None:
        """The user with this email, or None."""
        return await self.query().filter(email=email).first()


class UserCreate(BaseModel):
    """The body of ``POST /users``."""

    email: str = Field(max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(min_length=1, max_length=100)


class UserOut(BaseModel):
    """A user as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


def create_app(db: DatabaseManager | None = None) -> FastAPI:
    """The service on ``db`` (default: ``DATABASE_URL`` with the example models)."""
    manager = db if db is not None else DatabaseManager(models=["aegis_tortoise.examples.models"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manager.url.is_memory:
            await manager.generate_schemas()  # a demo database; real ones: `aerich upgrade`
        yield
        await manager.close()

    app = FastAPI(title="Aegis users on aegis-tortoise", lifespan=lifespan)
    app.state.db = manager
    # FastAPI reads this alias from the endpoints' annotations at definition time, which is
    # why this module does not use `from __future__ import annotations`.
    DbSession = Annotated[Session, session_dependency(manager)]  # noqa: N806 - a type alias

    @app.exception_handler(ServiceException)
    async def service_exception_handler(request: Request, exc: ServiceException
                                        ) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.to_dict())

    @app.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
    async def create_user(data: UserCreate, session: DbSession) -> User:
        return await UserRepository(session).create(data)  # 409 on a duplicate email

    @app.get("/users/{user_id}", response_model=UserOut)
    async def get_user(user_id: int, session: DbSession) -> User:
        return await UserRepository(session).get(user_id)  # 404: EntityNotFoundError

    @app.get("/users", response_model=PaginatedResponse[UserOut])
    async def list_users(
        session: DbSession,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> PaginatedResponse[User]:
        return await UserRepository(session).paginate(page=page, page_size=page_size)

    return app


app = create_app()
