"""The sample user service of the original library, on aegis-tortoise and FastAPI.

One request is one session and one transaction: committed when the endpoint returns,
rolled back when it raises, in both cases before the response is sent. Errors become the
public body ``{"error_code", "message", "details"}`` with their own HTTP status (404 not
found, 409 duplicate, 400 bad filter or reference, ...); ``GET /health`` reports readiness.

It ships inside the package, so it runs from an install (in-memory sqlite by default, its
tables created at startup)::

    pip install 'aegis-tortoise[fastapi]' uvicorn
    uvicorn aegis_tortoise.examples.fastapi_app:app

On PostgreSQL, create the schema with the migrations first::

    export DATABASE_URL=postgresql+asyncpg://user:password@localhost/dbname
    DATABASE_MODELS=aegis_tortoise.examples.models aerich upgrade
    uvicorn aegis_tortoise.examples.fastapi_app:app
"""

# FastAPI reads the endpoints' annotations (the DbSession alias) at definition time, which
# is why this module does not use `from __future__ import annotations`.

from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, Query, status
from pydantic import BaseModel, ConfigDict, Field

from aegis_tortoise import DatabaseManager, PaginatedResponse, Session
from aegis_tortoise.examples.models import Policy, User
from aegis_tortoise.fastapi import (
    ERROR_RESPONSES,
    database_lifespan,
    install_exception_handlers,
    install_health_route,
    session_dependency,
)
from aegis_tortoise.repository import BaseRepository

__all__ = ["PolicyCreate", "PolicyOut", "UserCreate", "UserOut", "UserRepository", "app",
           "create_app"]


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


class PolicyCreate(BaseModel):
    """The body of ``POST /policies``."""

    user_id: int
    title: str = Field(min_length=1, max_length=200)


class PolicyOut(BaseModel):
    """A policy as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    title: str


def create_app(db: DatabaseManager | None = None) -> FastAPI:
    """The service on ``db`` (default: ``DATABASE_URL`` with the example models)."""
    manager = db if db is not None else DatabaseManager(models=["aegis_tortoise.examples.models"])
    # A demo database gets its tables at startup; real ones: `aerich upgrade`.
    app = FastAPI(title="Aegis users on aegis-tortoise",
                  lifespan=database_lifespan(manager, generate_schemas=manager.url.is_memory))
    app.state.db = manager
    install_exception_handlers(app)
    install_health_route(app, manager)
    DbSession = Annotated[Session, session_dependency(manager)]  # noqa: N806 - a type alias

    @app.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut,
              responses=ERROR_RESPONSES)
    async def create_user(data: UserCreate, session: DbSession) -> User:
        return await UserRepository(session).create(data)  # 409 on a duplicate email

    @app.get("/users/{user_id}", response_model=UserOut, responses=ERROR_RESPONSES)
    async def get_user(user_id: int, session: DbSession) -> User:
        return await UserRepository(session).get(user_id)  # 404: EntityNotFoundError

    @app.get("/users", response_model=PaginatedResponse[UserOut], responses=ERROR_RESPONSES)
    async def list_users(
        session: DbSession,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        order_by: Annotated[str | None, Query(max_length=500)] = None,  # 400 if unknown
        name: Annotated[str | None, Query(max_length=100)] = None,
    ) -> PaginatedResponse[User]:
        filters = {"name__icontains": name} if name is not None else None
        return await UserRepository(session).paginate(page=page, page_size=page_size,
                                                      filters=filters, order_by=order_by)

    @app.post("/policies", status_code=status.HTTP_201_CREATED, response_model=PolicyOut,
              responses=ERROR_RESPONSES)
    async def create_policy(data: PolicyCreate, session: DbSession) -> Policy:
        # An unknown user_id is a foreign-key violation: 400 naming the field.
        return await BaseRepository(session, Policy).create(data)

    return app


app = create_app()
