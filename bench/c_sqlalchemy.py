"""(B) SQLAlchemy 2 async ORM, written the way the original (SQLAlchemy-based) library does it.

The original's ``DatabaseManager.session()`` is one ``AsyncSession`` per unit of work from
``async_sessionmaker(engine)`` (defaults: ``expire_on_commit=True``), committed when the
block ends and rolled back on error; its ``BaseRepository`` commits and refreshes inside
``create``/``update`` (an expired object cannot be read in asyncio without ``refresh``).
The models mirror the example models' tables, which Tortoise created.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import DateTime, ForeignKey, Integer, String, desc, func, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload
from sqlalchemy.pool import StaticPool

from bench.base import Contender, PoolEnv
from bench.workload import MAX_OVERFLOW, PAGE, POOL_SIZE


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SaUser(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow,
                                                 onupdate=_utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True,
                                                        index=True)
    policies: Mapped[list[SaPolicy]] = relationship(back_populates="user")


class SaPolicy(Base):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow,
                                                 onupdate=_utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    user: Mapped[SaUser] = relationship(back_populates="policies")


M = TypeVar("M", bound=Base)


class SaBaseRepository(Generic[M]):
    """The original library's generic repository (the parts the benchmark uses)."""

    def __init__(self, session: AsyncSession, model: type[M]) -> None:
        self.session = session
        self.model = model

    async def create(self, entity: M) -> M:
        self.session.add(entity)
        await self.session.commit()
        await self.session.refresh(entity)
        return entity

    async def create_many(self, entities: list[M]) -> list[int]:
        self.session.add_all(entities)
        # Read the ids between flush and commit: after commit they are expired, and reading
        # 10,000 expired objects would take 10,000 refreshes.
        await self.session.flush()
        ids = [e.id for e in entities]  # type: ignore[attr-defined]
        await self.session.commit()
        return ids

    async def get_by_id(self, entity_id: int) -> M | None:
        return await self.session.get(self.model, entity_id)

    def _where(self, query: Any, filters: dict[str, Any] | None) -> Any:
        for name, value in (filters or {}).items():
            column = getattr(self.model, name)
            query = query.where(column.is_(None) if value is None else column == value)
        return query

    async def list(self, skip: int = 0, limit: int = 100, filters: dict[str, Any] | None = None,
                   order_by: str | None = None) -> list[M]:
        query = self._where(select(self.model), filters)
        if order_by:
            if order_by.startswith("-"):
                query = query.order_by(desc(getattr(self.model, order_by[1:])))
            else:
                query = query.order_by(getattr(self.model, order_by))
        result = await self.session.execute(query.offset(skip).limit(limit))
        return list(result.scalars().all())

    async def count(self, filters: dict[str, Any] | None = None) -> int:
        query = self._where(select(func.count()).select_from(self.model), filters)
        result = await self.session.execute(query)
        return int(result.scalar_one())

    async def update(self, entity_id: int, **fields: Any) -> M | None:
        entity = await self.get_by_id(entity_id)
        if entity is None:
            return None
        for name, value in fields.items():
            setattr(entity, name, value)
        await self.session.commit()
        await self.session.refresh(entity)
        return entity


class SaUserRepository(SaBaseRepository[SaUser]):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session, SaUser)

    async def get_with_policies(self, ids: list[int]) -> list[SaUser]:
        query = (select(SaUser).options(selectinload(SaUser.policies))
                 .where(SaUser.id.in_(ids)).order_by(SaUser.id))
        result = await self.session.execute(query)
        return list(result.scalars().all())


class SaDatabaseManager:
    """The original library's manager: an engine and one session per unit of work."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.session_factory = async_sessionmaker(engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.session_factory() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise


def _engine(url: str, max_overflow: int = MAX_OVERFLOW) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_async_engine(url, poolclass=StaticPool)
    return create_async_engine(url, pool_size=POOL_SIZE, max_overflow=max_overflow)


def _sa_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://"):]
    return url


class _Env(PoolEnv):
    def __init__(self, url: str) -> None:
        self.db = SaDatabaseManager(_engine(url, max_overflow=0))

    async def get_update(self, user_id: int, name: str) -> Any:
        async with self.db.session() as session:
            repo = SaUserRepository(session)
            user = await repo.get_by_id(user_id)
            await repo.update(user_id, name=name)
            return user

    async def close(self) -> None:
        await self.db.engine.dispose()


class SqlAlchemyContender(Contender):
    """The original library's usage: ``async with db.session()`` + repository methods.

    The ORM objects are expired when the session commits at the end of the block, so in
    check mode the operations return plain values computed inside the session.
    """

    key = "B"
    name = "SQLAlchemy 2 ORM"

    def __init__(self, url: str, backend: str = "postgres") -> None:
        self.url = _sa_url(url)
        self.backend = backend
        self.db = SaDatabaseManager(_engine(self.url))
        self.checking = False

    async def start(self) -> None:
        if self.backend == "sqlite":
            async with self.db.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)

    async def close(self) -> None:
        await self.db.engine.dispose()

    def _user(self, user: SaUser | None) -> Any:
        return super().norm_user(user) if self.checking else user

    def norm_user(self, obj: Any) -> tuple[int, str, str] | None:
        return obj if self.checking else super().norm_user(obj)

    async def create(self, row: tuple[str, str]) -> Any:
        async with self.db.session() as session:
            user = await SaUserRepository(session).create(SaUser(email=row[0], name=row[1]))
            return self._user(user)

    async def get(self, user_id: int) -> Any:
        async with self.db.session() as session:
            return self._user(await SaUserRepository(session).get_by_id(user_id))

    async def list_page(self, offset: int) -> Any:
        async with self.db.session() as session:
            users = await SaUserRepository(session).list(
                skip=offset, limit=PAGE, filters={"deleted_at": None}, order_by="email")
            return [self._user(u) for u in users] if self.checking else users

    async def count(self) -> int:
        async with self.db.session() as session:
            return await SaUserRepository(session).count(filters={"deleted_at": None})

    async def update(self, user_id: int, name: str) -> Any:
        async with self.db.session() as session:
            return self._user(await SaUserRepository(session).update(user_id, name=name))

    async def relations(self, ids: list[int]) -> Any:
        async with self.db.session() as session:
            users = await SaUserRepository(session).get_with_policies(ids)
            if self.checking:
                return [(u.id, [p.user_id for p in u.policies]) for u in users]
            return users

    def norm_relations(self, result: Any) -> list[tuple[int, list[int]]]:
        return result if self.checking else super().norm_relations(result)

    async def create_many(self, rows: list[tuple[str, str]]) -> list[int]:
        async with self.db.session() as session:
            return await SaUserRepository(session).create_many(
                [SaUser(email=e, name=n) for e, n in rows])

    async def create_many_dicts(self, rows: list[dict[str, Any]]) -> list[int]:
        async with self.db.session() as session:
            return await SaUserRepository(session).create_many([SaUser(**row) for row in rows])

    async def pool_env(self) -> PoolEnv:
        return _Env(self.url)

    async def seed(self, rows: list[tuple[str, str]]) -> list[int]:
        return await self.create_many(rows)

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        async with self.db.engine.begin() as conn:
            result = await conn.exec_driver_sql(statement)
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
