"""(E) this library's public API: one ``db.session()`` per unit of work, repository inside."""

from __future__ import annotations

import contextlib
from typing import Any

from aegis_tortoise import DatabaseManager
from aegis_tortoise.examples.models import User
from aegis_tortoise.examples.repositories import UserRepository
from aegis_tortoise.fastapi import RegisterTortoise
from bench.base import Contender, PoolEnv
from bench.c_tortoise import _config as tortoise_config
from bench.c_tortoise import dropin_unit
from bench.counter import AegisCounter
from bench.workload import EXAMPLE_MODELS, MAX_CONNECTIONS, MAX_OVERFLOW, PAGE, POOL_SIZE


def _manager(url: str, max_overflow: int = MAX_OVERFLOW) -> DatabaseManager:
    return DatabaseManager(url, models=[EXAMPLE_MODELS], pool_size=POOL_SIZE,
                         max_overflow=max_overflow, pool_timeout=30)


class _Env(PoolEnv):
    def __init__(self, db: DatabaseManager, repo: type[UserRepository]) -> None:
        self.db = db
        self.repo = repo

    async def get_update(self, user_id: int, name: str) -> Any:
        async with self.db.session() as session:
            repo = self.repo(session)
            user = await repo.get_by_id(user_id)
            await repo.update(user_id, name=name)
            return user

    async def close(self) -> None:
        await self.db.close()


class AegisContender(Contender):
    """``async with db.session() as session: self.repo(session).<method>(...)``.

    ``repo_class`` runs the same code on another repository class (experiments); the
    benchmark itself always uses the example ``UserRepository``.
    """

    key = "E"
    name = "aegis-tortoise"

    def __init__(self, url: str, backend: str = "postgres",
                 repo_class: type[UserRepository] = UserRepository) -> None:
        self.url = url
        self.backend = backend
        self.repo = repo_class
        self.db = _manager(url)
        self.register: RegisterTortoise | None = None

    async def start(self) -> None:
        if self.backend == "sqlite":
            await self.db.generate_schemas()
        else:
            async with self.db.session():
                pass
            # The drop-in: the plain-Tortoise config D uses, under our RegisterTortoise.
            self.register = RegisterTortoise(
                config=tortoise_config(self.url, "default", MAX_CONNECTIONS),
                _enable_global_fallback=False)
            await self.register.__aenter__()

    async def close(self) -> None:
        await self.db.close()
        if self.register is not None:
            await self.register.__aexit__(None, None, None)

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        """The registration's Tortoise context, for the drop-in op's plain calls."""
        if self.register is None:
            return contextlib.nullcontext()
        return self.register.db._ctx  # type: ignore[return-value]

    async def dropin(self, user_id: int, name: str) -> Any:
        return await dropin_unit(user_id, name)

    async def create(self, row: tuple[str, str]) -> Any:
        async with self.db.session() as session:
            return await self.repo(session).create(User(email=row[0], name=row[1]))

    async def get(self, user_id: int) -> Any:
        async with self.db.session() as session:
            return await self.repo(session).get_by_id(user_id)

    async def list_page(self, offset: int) -> Any:
        async with self.db.session() as session:
            return await self.repo(session).list(
                skip=offset, limit=PAGE, filters={"deleted_at": None}, order_by="email")

    async def count(self) -> int:
        async with self.db.session() as session:
            return await self.repo(session).count(filters={"deleted_at": None})

    async def update(self, user_id: int, name: str) -> Any:
        async with self.db.session() as session:
            return await self.repo(session).update(user_id, name=name)

    async def relations(self, ids: list[int]) -> Any:
        async with self.db.session() as session:
            return await self.repo(session).list(
                limit=None, filters={"id__in": ids}, order_by="id", prefetch="policies")

    async def create_many(self, rows: list[tuple[str, str]]) -> list[Any]:
        async with self.db.session() as session:
            return await self.repo(session).create_many(
                [User(email=e, name=n) for e, n in rows])

    async def create_many_dicts(self, rows: list[dict[str, Any]]) -> list[Any]:
        async with self.db.session() as session:
            return await self.repo(session).create_many(rows)

    async def pool_env(self) -> PoolEnv:
        db = _manager(self.url, max_overflow=0)
        async with db.session():
            pass
        return _Env(db, self.repo)

    async def seed(self, rows: list[tuple[str, str]]) -> list[Any]:
        return await self.create_many(rows)

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        async with self.db.session() as session:
            return [tuple(r) for r in (await session.execute(statement)).fetchall()]

    async def counter_env(self) -> AegisCounter:
        """A manager with a pool of 20 for the contended counter (bench/counter.py)."""
        return await AegisCounter.start(self.url)
