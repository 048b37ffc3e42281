"""The errors a plain read (cached SQL, _reads) raises on PostgreSQL equal those of the
QuerySet path for the same failure: type, message, details and the chain of causes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tortoise.exceptions import OperationalError

from aegis_tortoise import BaseRepository, DatabaseManager, ServiceException
from aegis_tortoise.examples.models import Policy, User


class PlainUsers(BaseRepository[User]):
    """Reads take the cached-SQL path (_reads.plain_fetch)."""


class QuerySetUsers(BaseRepository[User]):
    """The same reads through Tortoise's QuerySet (query() overridden, so not plain)."""

    def query(self, include_deleted: bool = False) -> Any:
        return super().query(include_deleted=include_deleted)


def _chain(exc: BaseException | None) -> list[type]:
    out: list[type] = []
    while exc is not None:
        out.append(type(exc))
        exc = exc.__cause__
    return out


async def _error(db: DatabaseManager, setup: str | None,
                 call: Callable[[BaseRepository[User]], Awaitable[Any]],
                 repo_class: type[BaseRepository[User]]) -> ServiceException:
    async with db.session() as session:
        if setup:
            await session.execute(setup)  # rolled back below
        with pytest.raises(ServiceException) as info:
            await call(repo_class(session))
        await session.rollback()
    return info.value


CASES = {
    # a text value PostgreSQL refuses (22021): bad input from a caller
    "NUL in a filter value": (None, lambda r: r.list(filters={"name": "a\x00b"})),
    # schema drift (a migration not applied): 42703 on the main select ...
    "missing column, list": ('ALTER TABLE users RENAME COLUMN name TO name_gone',
                             lambda r: r.list()),
    "missing column, get_by_ids": ('ALTER TABLE users RENAME COLUMN name TO name_gone',
                                   lambda r: r.get_by_ids([1, 2])),
    "missing column, paginate": ('ALTER TABLE users RENAME COLUMN name TO name_gone',
                                 lambda r: r.paginate(page=1)),
    # ... and on the reverse prefetch (_reads._prefetch_reverse)
    "missing column, reverse prefetch": (
        'ALTER TABLE policies RENAME COLUMN title TO title_gone',
        lambda r: r.list(prefetch=["policies"])),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_plain_reads_chain_to_the_tortoise_cause_as_the_queryset_path(
        pg_db: DatabaseManager, case: str) -> None:
    """API.md: repository errors are "chained to the Tortoise cause". The QuerySet path chains
    ValidationError/DatabaseError to tortoise.exceptions.OperationalError (then asyncpg's
    error); the plain path's fetch_rows applies Tortoise's translation too."""
    db = pg_db
    async with db.session():
        user = await User.create(email="a@x.io", name="A")
        await Policy.create(user=user, title="P")
    setup, call = CASES[case]
    via_queryset = await _error(db, setup, call, QuerySetUsers)
    via_plain = await _error(db, setup, call, PlainUsers)
    # Same type, message and details: only the chain differs.
    assert type(via_plain) is type(via_queryset)
    assert str(via_plain) == str(via_queryset)
    assert isinstance(via_queryset.cause, OperationalError)
    assert _chain(via_plain) == _chain(via_queryset), (
        f"plain path chains {[t.__name__ for t in _chain(via_plain)]}, the QuerySet path "
        f"{[t.__name__ for t in _chain(via_queryset)]}")
    assert isinstance(via_plain.cause, OperationalError)
