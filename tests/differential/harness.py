"""Running generated cases against one manager, and comparing what two paths gave.

Hypothesis drives sync functions; each example's async body runs on one ``asyncio.Runner``
that also owns the manager, so the manager (and its pool) lives for the whole test, not for
one example. Between examples the tables are emptied with ``DELETE`` (cheap on both backends).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import math
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings
from tortoise.models import Model

from aegis_tortoise import DatabaseManager, DuplicateEntityError, ValidationError
from tests.conftest import fresh_manager
from tests.differential.models import MODELS, Badge, Item, Owner, Tag

T = TypeVar("T")

# Profiles: "diff" bounds the suite in `make test` (about 60 s for both backends);
# `make fuzz` selects "fuzz" through AEGIS_DIFF_PROFILE. derandomize: the same cases on every
# run (CI stability); database=None: no example database written into the work tree.
settings.register_profile(
    "diff", max_examples=int(os.environ.get("AEGIS_DIFF_EXAMPLES", "55")), deadline=None,
    derandomize=True, database=None, print_blob=True, report_multiple_bugs=False,
    # No "explain" phase: its line tracing makes a failing example take minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.register_profile(
    "fuzz", settings.get_profile("diff"),
    max_examples=int(os.environ.get("AEGIS_DIFF_EXAMPLES", "2000")), derandomize=False)
settings.register_profile(
    "dev", settings.get_profile("diff"), phases=[Phase.explicit, Phase.generate])
PROFILE = os.environ.get("AEGIS_DIFF_PROFILE", "diff")

#: Generated cases run per backend (reported at the end of the run by conftest.py).
CASES: Counter[str] = Counter()


def scaled(weight: float) -> settings:
    """The active profile with ``max_examples`` scaled by ``weight`` (cheap tests run more)."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=max(1, round(base.max_examples * weight)))


#: Tables in delete order (children first).
TABLES = ("diff_badge", "diff_tag", "diff_item", "diff_owner")
MODEL_OF_TABLE: dict[str, type[Model]] = {
    "diff_badge": Badge, "diff_tag": Tag, "diff_item": Item, "diff_owner": Owner}


class Harness:
    """One manager on one backend, and a loop to run examples on."""

    def __init__(self, runner: asyncio.Runner, manager: DatabaseManager, backend: str) -> None:
        self.runner = runner
        self.db = manager
        self.backend = backend

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def body() -> T:
            return await make()
        CASES[self.backend] += 1
        return self.runner.run(body())

    async def reset(self) -> None:
        async with self.db.session() as session:
            for table in TABLES:
                await session.execute(f'DELETE FROM "{table}"')

    async def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row of every table, read with raw SQL in a new session."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        async with self.db.session() as session:
            for table in TABLES:
                meta = MODEL_OF_TABLE[table]._meta
                columns = ",".join(f'"{c}"' for c in meta.fields_db_projection.values())
                result = await session.execute(
                    f'SELECT {columns} FROM "{table}" ORDER BY "{meta.db_pk_column}"')
                out[table] = [tuple("NaN" if isinstance(c, float | decimal.Decimal)
                                    and c != c else c for c in row)  # noqa: PLR0124
                              for row in result.fetchall()]
        return out


@contextmanager
def harness(backend: str, url: str) -> Iterator[Harness]:
    """A :class:`Harness` on an empty database of ``backend`` with the differential models."""
    with asyncio.Runner() as runner:
        managers = fresh_manager(url, backend, models=MODELS)
        manager = runner.run(anext(managers))  # type: ignore[arg-type]
        try:
            yield Harness(runner, manager, backend)
        finally:
            runner.run(managers.aclose())


# -- outcomes ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one path gave: a value or an exception."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def attempt(make: Callable[[], Awaitable[Any]]) -> Outcome:
    try:
        return Outcome(value=await make())
    except Exception as exc:  # every kind: the comparison decides what is allowed
        return Outcome(error=exc)


def is_ours(exc: BaseException | None) -> bool:
    """An error the repository may raise for bad input."""
    return isinstance(exc, ValidationError | DuplicateEntityError)


def check_ours(outcome: Outcome, context: str) -> None:
    assert outcome.error is not None, f"{context}: expected an error, got {outcome.value!r}"
    assert is_ours(outcome.error), (
        f"{context}: raw {type(outcome.error).__module__}.{type(outcome.error).__name__} "
        f"escaped the repository: {outcome.error!r}")


# -- values ----------------------------------------------------------------------------------------


ANY = "<any>"


def canon(value: Any) -> Any:
    """A comparable form of one attribute value: type, value and time zone, exactly."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, dt.datetime | dt.time):
        return (type(value).__name__, value.isoformat(), repr(value.tzinfo))
    if isinstance(value, decimal.Decimal):
        return ("Decimal", str(value))  # "NaN" equals "NaN"
    if isinstance(value, dict | list):
        return (type(value).__name__, json.dumps(value, sort_keys=True, default=repr))
    return (type(value).__qualname__, value)


def fields_of(model: type[Model]) -> tuple[str, ...]:
    return tuple(model._meta.fields_db_projection)


def values(obj: Model, masked: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every stored attribute of ``obj`` in :func:`canon` form; ``masked`` ones only by kind
    (their values differ between two runs: generated keys, timestamps, callable defaults)."""
    out: dict[str, Any] = {}
    for name in fields_of(type(obj)):
        value = getattr(obj, name)
        if name in masked and value is not None:
            tz = repr(getattr(value, "tzinfo", None))
            out[name] = (type(value).__name__, ANY, tz)
        else:
            out[name] = canon(value)
    return out


def masked_fields(model: type[Model], given: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Fields whose value is chosen at write time unless the payload gave it."""
    given = given or {}
    meta = model._meta
    out = set()
    for name in fields_of(model):
        field = meta.fields_map[name]
        automatic = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        if automatic or (name not in given and callable(field.default)):
            out.add(name)
    return frozenset(out)


def mask_rows(model: type[Model], rows: list[tuple[Any, ...]],
              masked: frozenset[str]) -> list[tuple[Any, ...]]:
    """Raw rows (select-list order = ``fields_db_projection``) with masked columns blanked,
    sorted so that two runs compare as multisets."""
    positions = [i for i, name in enumerate(fields_of(model)) if name in masked]
    out = []
    for row in rows:
        # NaN (a Decimal or float PostgreSQL stores) never equals itself: compared by name.
        cells = ["NaN" if isinstance(c, float | decimal.Decimal) and c != c else c  # noqa: PLR0124
                 for c in row]
        for i in positions:
            if cells[i] is not None:
                cells[i] = ANY
        out.append(tuple(cells))
    return sorted(out, key=repr)



async def seed(h: Harness, data: Any) -> None:
    """Empty the tables, then store ``data`` (a strategies.Dataset) with plain Tortoise."""
    await h.reset()
    async with h.db.session() as session:
        if data.owners:
            await Owner.bulk_create([Owner(**row) for row in data.owners])
        if data.items:
            await Item.bulk_create([Item(**row) for row in data.items])
        if data.tags:
            await Tag.bulk_create([Tag(**row) for row in data.tags])
        # Badge.stamp is TimeField(auto_now=True), which Tortoise 1.1.9 itself cannot write
        # (a naive time for TIMETZ; no time adapter on sqlite): stored with SQL.
        # Generated keys continue from 100 after every seed, so both paths get the same ids.
        if h.backend == "postgres":
            for table in ("diff_item", "diff_owner"):
                await session.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)")
        else:
            await session.execute("DELETE FROM sqlite_sequence")
            await session.execute("INSERT INTO sqlite_sequence (name, seq) "
                                  "VALUES ('diff_item', 100), ('diff_owner', 100)")
        stamp = "'01:02:03+00:00'" if h.backend == "postgres" else "'01:02:03'"
        for row in data.badges:
            await session.execute(
                f'INSERT INTO "diff_badge" ("code","title","stamp","item_id") '
                f"VALUES (:code, :title, {stamp}, :item_id)", row)


def explain(left: Any, right: Any, path: str = "") -> str:
    """Where two compared results first differ (for assertion messages)."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right), key=str):
            if left.get(key, ANY) != right.get(key, ANY):
                return explain(left.get(key), right.get(key), f"{path}.{key}")
    if (isinstance(left, list | tuple) and isinstance(right, list | tuple)
            and len(left) == len(right)):
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            if a != b:
                return explain(a, b, f"{path}[{i}]")
    return f"at {path or 'top'}: {left!r} != {right!r}"


async def both_ways(h: Harness, data: Any, via_repo: Callable[[], Awaitable[Any]],
                    via_tortoise: Callable[[], Awaitable[Any]]
                    ) -> tuple[Outcome, dict[str, Any], Outcome, dict[str, Any]]:
    """The repository's call on the seeded data, then plain Tortoise's on the same data
    seeded again: each outcome with the tables it left."""
    repo = await attempt(via_repo)
    after_repo = await h.snapshot()
    await seed(h, data)
    ref = await attempt(via_tortoise)
    return repo, after_repo, ref, await h.snapshot()
