"""(D) plain Tortoise ORM: what a user writes without this library.

Its own :class:`TortoiseContext` on the example models, ``in_transaction()`` per unit of work
for writes, plain queries (autocommit, one pooled connection per query) for reads,
``bulk_create`` for the batch. The connection alias is the one aegis-tortoise uses for the
same dialect: Tortoise stores the alias on the (shared) model classes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from aegis_tortoise.examples.models import User
from bench.base import Contender, PoolEnv
from bench.workload import EXAMPLE_MODELS, MAX_CONNECTIONS, PAGE, POOL_SIZE


def _config(url: str, alias: str, maxsize: int) -> dict[str, Any]:
    if url.startswith("sqlite"):
        connection: dict[str, Any] = {"engine": "tortoise.backends.sqlite",
                                      "credentials": {"file_path": ":memory:"}}
    else:
        # postgresql://user@host:port/db
        rest = url.split("://", 1)[1]
        userinfo, hostpart = rest.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        hostport, database = hostpart.split("/", 1)
        host, _, port = hostport.partition(":")
        connection = {"engine": "tortoise.backends.asyncpg", "credentials": {
            "host": host, "port": int(port or 5432), "user": user, "password": password,
            "database": database.split("?", 1)[0], "minsize": 1, "maxsize": maxsize}}
    return {"connections": {alias: connection},
            "apps": {"models": {"models": [EXAMPLE_MODELS], "default_connection": alias}}}


async def _context(url: str, alias: str, maxsize: int = MAX_CONNECTIONS) -> TortoiseContext:
    ctx = TortoiseContext()
    with ctx:
        await ctx.init(config=_config(url, alias, maxsize))
    return ctx


async def _get_update(user_id: int, name: str) -> Any:
    async with in_transaction():
        user = await User.get(id=user_id)
        user.name = name
        await user.save(update_fields=["name", "updated_at"])
        return user


async def dropin_unit(user_id: int, name: str) -> Any:
    """A service's plain Tortoise calls outside any transaction (autocommit)."""
    user = await User.get(id=user_id)
    user.name = name
    await user.save(update_fields=["name", "updated_at"])
    return user


class _Env(PoolEnv):
    def __init__(self, ctx: TortoiseContext) -> None:
        self.ctx = ctx

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        return self.ctx

    async def get_update(self, user_id: int, name: str) -> Any:
        return await _get_update(user_id, name)

    async def close(self) -> None:
        await self.ctx.close_connections()


class TortoiseContender(Contender):
    """Idiomatic plain Tortoise 1.1.9."""

    key = "D"
    name = "plain Tortoise"

    def __init__(self, url: str, backend: str = "postgres") -> None:
        self.url = url
        self.backend = backend
        self.alias = "default"  # what a plain Tortoise service names its connection
        self.ctx: TortoiseContext | None = None

    async def start(self) -> None:
        self.ctx = await _context(self.url, self.alias)
        if self.backend == "sqlite":
            with self.ctx:
                await self.ctx.generate_schemas()

    async def close(self) -> None:
        if self.ctx is not None:
            await self.ctx.close_connections()

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        assert self.ctx is not None
        return self.ctx

    async def create(self, row: tuple[str, str]) -> Any:
        async with in_transaction():
            return await User.create(email=row[0], name=row[1])

    async def get(self, user_id: int) -> Any:
        return await User.get_or_none(id=user_id)

    async def list_page(self, offset: int) -> Any:
        return await (User.filter(deleted_at=None).order_by("email")
                      .offset(offset).limit(PAGE))

    async def count(self) -> int:
        return await User.filter(deleted_at=None).count()

    async def update(self, user_id: int, name: str) -> Any:
        async with in_transaction():
            user = await User.get_or_none(id=user_id)
            if user is None:
                return None
            user.name = name
            await user.save(update_fields=["name", "updated_at"])
            return user

    async def relations(self, ids: list[int]) -> Any:
        return await User.filter(id__in=ids).order_by("id").prefetch_related("policies")

    async def dropin(self, user_id: int, name: str) -> Any:
        """Under Tortoise's RegisterTortoise: Tortoise.init's context, which is D's."""
        return await dropin_unit(user_id, name)

    async def create_many(self, rows: list[tuple[str, str]]) -> None:
        async with in_transaction():
            await User.bulk_create([User(email=e, name=n) for e, n in rows])

    async def create_many_dicts(self, rows: list[dict[str, Any]]) -> None:
        async with in_transaction():
            await User.bulk_create([User(**row) for row in rows])

    async def pool_env(self) -> PoolEnv:
        return _Env(await _context(self.url, self.alias, POOL_SIZE))

    async def seed(self, rows: list[tuple[str, str]]) -> None:
        with self.activate():
            await self.create_many(rows)

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with self.activate():
            client = self.ctx.connections.get(self.alias)  # type: ignore[union-attr]
            _, rows = await client.execute_query(statement)
            return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]
