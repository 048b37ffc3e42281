"""Prototypes of the issue's performance levers, measured against the real E and D.

EXPERIMENTS ONLY: nothing here is used by bench/run.py's contenders. Each lever is a subclass
(of the manager, backend, session client or repository) selected by name, so the unpatched
library runs next to the patched one in the same process, interleaved like run.py:

    python bench/levers.py                       # every lever alone and all together
    python bench/levers.py --levers lazy_begin,no_reset --ops get,count --rounds 7

Levers (the README's "Levers" section gives the exact change each needs in aegis_tortoise):

- ``lazy_begin``  a session sends BEGIN only before its first write or locking read; plain
  ORM SELECTs before that run in autocommit on the session's connection (no BEGIN/COMMIT for
  a session that only reads).
- ``no_reset``    the pool's ``reset=`` skips asyncpg's reset query (``SELECT
  pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) unless the session ran raw
  SQL; an open transaction is still rolled back by asyncpg itself.
- ``cached_sql``  get_by_id and update run SQL built once per model (and column set) instead
  of building a QuerySet / pypika query on every call.
- ``fast_bulk``   create_many prepares rows from a per-model plan (no per-instance async-
  default scan, validation per distinct key set, one timestamp per batch sent as a scalar,
  all-NULL columns left out), builds instances without ``Model.__init__``, and inserts with
  ``unnest`` without ``WITH ORDINALITY``/``ORDER BY`` (ids come back in insertion order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortoise.backends.base.client import ConnectionWrapper
from tortoise.fields import CharField
from tortoise.models import Model
from tortoise.validators import MaxLengthValidator

from aegis_tortoise import DatabaseManager
from aegis_tortoise._backends import PostgresBackend, SqliteBackend
from aegis_tortoise._filters import writable_values
from aegis_tortoise.errors import ValidationError, translate_errors
from aegis_tortoise.examples.repositories import UserRepository
from aegis_tortoise.session import Session
from bench.base import Contender
from bench.c_aegis import AegisContender
from bench.c_tortoise import TortoiseContender
from bench.workload import OPS_BY_KEY, Sizes

LEVERS = ("lazy_begin", "no_reset", "cached_sql", "fast_bulk")
MANAGER_LEVERS = frozenset({"lazy_begin", "no_reset"})

# --- lazy_begin ------------------------------------------------------------------------------

_SELECT = re.compile(r"\s*SELECT\s", re.IGNORECASE)
_LOCKING = re.compile(r"\sFOR\s+(?:UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b",
                      re.IGNORECASE)


@lru_cache(maxsize=1024)
def _plain_read(sql: str) -> bool:
    """An ORM SELECT that takes no row locks: it may run before the transaction begins."""
    return _SELECT.match(sql) is not None and _LOCKING.search(sql) is None


_LAZY_READ: contextvars.ContextVar[bool] = contextvars.ContextVar("aegis_lazy_read",
                                                                 default=False)


@lru_cache(maxsize=8)
def _lazy_class(base: type) -> type:
    """``base`` (a session client class) whose reads before the first write skip BEGIN.

    Tortoise sends every ORM read through ``execute_query``/``execute_query_dict``, which
    take the connection from ``acquire_connection()``; a context variable tells the latter
    that this statement is a plain read (per task, so concurrent users of one session are
    safe). Raw ``session.execute`` and every write still begin first. A subclass with one
    base keeps the layout, so ``__class__`` can be swapped on a live client.
    """

    class Lazy(base):  # type: ignore[valid-type,misc]
        def acquire_connection(self) -> Any:
            if _LAZY_READ.get():
                return ConnectionWrapper(self._lock, self)  # the lock only: no BEGIN
            return super().acquire_connection()

        async def execute_query(self, query: str, values: list[Any] | None = None) -> Any:
            if self._aegis_session._began or not _plain_read(query):
                return await super().execute_query(query, values)
            token = _LAZY_READ.set(True)
            try:
                return await super().execute_query(query, values)
            finally:
                _LAZY_READ.reset(token)

        async def execute_query_dict(self, query: str, values: list[Any] | None = None
                                     ) -> Any:
            if self._aegis_session._began or not _plain_read(query):
                return await super().execute_query_dict(query, values)
            token = _LAZY_READ.set(True)
            try:
                return await super().execute_query_dict(query, values)
            finally:
                _LAZY_READ.reset(token)

    Lazy.__name__ = Lazy.__qualname__ = f"Lazy{base.__name__}"
    return Lazy


# --- no_reset --------------------------------------------------------------------------------


async def _no_reset_query(conn: Any) -> None:
    """asyncpg's pool ``reset=``: asyncpg has already rolled back an open transaction."""


class _RawTrackingSession(Session):
    """Remembers that raw SQL ran (it may have SET, LISTEN or locked): reset it on release."""

    __slots__ = ("_aegis_raw",)

    def __init__(self, manager: DatabaseManager) -> None:
        super().__init__(manager)
        self._aegis_raw = False

    async def execute(self, statement: str, params: Any = None) -> Any:
        self._aegis_raw = True
        return await super().execute(statement, params)


class _LeverBackend(PostgresBackend):
    levers: frozenset[str] = frozenset()

    def pool_options(self) -> dict[str, Any]:
        options = super().pool_options()
        if "no_reset" in self.levers:
            options["reset"] = _no_reset_query
        return options

    async def acquire(self, session: Session, client: Any) -> None:
        await super().acquire(session, client)
        if "lazy_begin" in self.levers:
            # Same object and state, one more behaviour: robust to the client's attributes.
            session._client.__class__ = _lazy_class(type(session._client))

    async def release(self, session: Session, client: Any) -> None:
        conn = session._conn
        if ("no_reset" in self.levers and getattr(session, "_aegis_raw", False)
                and conn is not None and not conn.is_closed()):
            await conn.execute(conn.get_reset_query())
        await super().release(session, client)


class _LeverSqliteBackend(SqliteBackend):
    levers: frozenset[str] = frozenset()

    async def acquire(self, session: Session, client: Any) -> None:
        await super().acquire(session, client)
        if "lazy_begin" in self.levers:
            session._client.__class__ = _lazy_class(type(session._client))


def patched_manager(levers: str | Iterable[str]) -> type[DatabaseManager]:
    """A DatabaseManager subclass with the manager-level levers applied."""
    chosen = frozenset(LEVERS if levers == "all" else
                       (levers.split(",") if isinstance(levers, str) else levers))
    attrs = {"levers": chosen & MANAGER_LEVERS}
    pg_backend = type("Backend", (_LeverBackend,), attrs)
    sqlite_backend = type("SqliteBackend", (_LeverSqliteBackend,), attrs)

    class PatchedManager(DatabaseManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            backend = pg_backend if self.dialect == "postgres" else sqlite_backend
            self._backend = backend(self)

        def session(self) -> Session:
            return _RawTrackingSession(self) if "no_reset" in chosen else Session(self)

    return PatchedManager


# --- cached_sql ------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _select_by_pk_sql(model: type[Model], dialect: str) -> str:
    meta = model._meta
    cols = ",".join(f'"{c}"' for c in meta.fields_db_projection.values())
    mark = "$1" if dialect == "postgres" else "?"
    return (f'SELECT {cols} FROM "{meta.db_table}" '
            f'WHERE "{meta.db_pk_column}"={mark} LIMIT 1')


@lru_cache(maxsize=1024)
def _update_sql(model: type[Model], dialect: str, columns: tuple[str, ...]) -> str:
    meta = model._meta
    if dialect == "postgres":
        sets = ",".join(f'"{c}"=${i + 1}' for i, c in enumerate(columns))
        where = f'"{meta.db_pk_column}"=${len(columns) + 1}'
    else:
        sets = ",".join(f'"{c}"=?' for c in columns)
        where = f'"{meta.db_pk_column}"=?'
    cols = ",".join(f'"{c}"' for c in meta.fields_db_projection.values())
    return f'UPDATE "{meta.db_table}" SET {sets} WHERE {where} RETURNING {cols}'


@lru_cache(maxsize=256)
def _auto_now_fields(model: type[Model]) -> tuple[str, ...]:
    return tuple(n for n, f in model._meta.fields_map.items() if getattr(f, "auto_now", False))


# --- fast_bulk -------------------------------------------------------------------------------


class _BulkPlan:
    """Per model: the insertable fields and how to turn each value into a database value."""

    def __init__(self, model: type[Model]) -> None:
        meta = model._meta
        self.model = model
        self.fields: list[tuple[str, str, Any, str, str]] = []
        for name in meta.fields_db_projection:
            field = meta.fields_map[name]
            if field.generated:
                continue
            sql_type = str(field.get_for_dialect("postgres", "SQL_TYPE")).strip()
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                kind = "now"
            elif (isinstance(field, CharField) and type(field).to_db_value is _base_to_db_value
                  and [type(v) for v in field.validators] == [MaxLengthValidator]):
                kind = "str"  # checked a column at a time
            elif type(field).to_db_value is _base_to_db_value and not field.validators:
                kind = "plain"
            else:
                kind = "convert"
            self.fields.append((name, meta.fields_db_projection[name], field, sql_type, kind))
        self.pk_column = meta.db_pk_column
        self.has_async_default = any(
            asyncio.iscoroutinefunction(getattr(f, "default", None))
            for f in meta.fields_map.values())


def _base_to_db_value(self: Any, value: Any, instance: Any) -> Any:  # pragma: no cover
    raise NotImplementedError


@lru_cache(maxsize=256)
def _plan(model: type[Model]) -> _BulkPlan:
    return _BulkPlan(model)


def _fill_base_to_db_value() -> None:
    from tortoise.fields.base import Field

    global _base_to_db_value
    _base_to_db_value = Field.to_db_value


_fill_base_to_db_value()


class LeverUserRepository(UserRepository):
    """UserRepository with the repository-level levers (``cached_sql``, ``fast_bulk``)."""

    levers: frozenset[str] = frozenset()

    async def get_by_id(self, entity_id: Any, *, include_deleted: bool = False,
                        prefetch: Any = None) -> Any:
        if ("cached_sql" not in self.levers or prefetch
                or (self.hide_soft_deleted and not include_deleted)):
            return await super().get_by_id(entity_id, include_deleted=include_deleted,
                                           prefetch=prefetch)
        pk = self._pk(entity_id)
        model = self.model
        sql = _select_by_pk_sql(model, self.session.dialect)
        with translate_errors(entity=self._name):
            _, rows = await self.session.connection.execute_query(
                sql, [model._meta.pk.to_db_value(pk, model)])
        return model._init_from_db(**rows[0]) if rows else None

    async def _update_returning(self, pk: Any, values: dict[str, Any], *,
                                where_null: bool | None = None) -> Any:
        meta = self.model._meta
        if ("cached_sql" not in self.levers or where_null is not None
                or any(k in meta.fk_fields or k in meta.o2o_fields or not hasattr(v, "__eq__")
                       or type(v).__module__.startswith("tortoise") for k, v in values.items())):
            return await super()._update_returning(pk, values, where_null=where_null)
        model = self.model
        now = datetime.now(UTC)
        for name in _auto_now_fields(model):
            values.setdefault(name, now)
        names = tuple(values)
        columns = tuple(meta.fields_db_projection[n] for n in names)
        with translate_errors(entity=self._name):
            params = [meta.fields_map[name].to_db_value(values[name], model) for name in names]
        params.append(meta.pk.to_db_value(pk, model))
        sql = _update_sql(model, self.session.dialect, columns)
        with translate_errors(entity=self._name):
            rows = await self.session.connection.execute_query_dict(sql, params)
        return model._init_from_db(**rows[0]) if rows else None

    async def create_many(self, entities: Iterable[Any]) -> list[Any]:
        if "fast_bulk" not in self.levers or self.session.dialect != "postgres":
            return await super().create_many(entities)
        entities = list(entities)
        plan = _plan(self.model)
        if plan.has_async_default or not entities:
            return await super().create_many(entities)
        rows = [self._row(e) for e in entities]
        relational = self.model._meta.fk_fields | self.model._meta.o2o_fields
        # Instances share the model's fields; only dicts need their key sets checked.
        keysets = {frozenset(r) for r, e in zip(rows, entities, strict=True)
                   if not isinstance(e, Model)}
        if any(k in relational for keys in keysets for k in keys):
            return await super().create_many(entities)
        return await self._fast_insert(plan, rows, entities, keysets)

    def _row(self, entity: Any) -> Mapping[str, Any]:
        if isinstance(entity, Model):
            if not isinstance(entity, self.model) or entity._saved_in_db:
                self._instance(entity)  # raises the usual error
            return entity.__dict__
        if isinstance(entity, Mapping):
            return entity
        return self._data(entity, partial=False)

    async def _fast_insert(  # noqa: PLR0915 - one flat pass, kept together for reading
            self, plan: _BulkPlan, rows: list[Mapping[str, Any]],
                           entities: list[Any], keysets: set[frozenset[str]]) -> list[Any]:
        model = self.model
        # Unknown keys: checked once per distinct key set, not once per row.
        for keys in keysets:
            writable_values(model, dict.fromkeys(k for k in keys if not k.startswith("_")),
                            action="create")
        now = datetime.now(UTC)
        columns: list[str] = []
        terms: list[str] = []
        arrays: list[list[Any]] = []
        types: list[str] = []
        scalars: list[tuple[int, str]] = []  # (position in terms, SQL type)
        python_values: dict[str, list[Any]] = {}
        missing: list[str] = []
        for name, column, field, sql_type, kind in plan.fields:
            if kind == "now":
                columns.append(column)
                scalars.append((len(terms), sql_type))
                terms.append("")
                continue
            values = [r.get(name) for r in rows]
            default = field.default
            if default is not None and None in values:
                # A dict that leaves the field out gets its default, as Model() would give.
                values = [r[name] if name in r else (default() if callable(default) else default)
                          for r in rows]
            if None in values and not field.null and not field.has_db_default():
                missing.append(name)
                continue
            if field.null and all(v is None for v in values):
                continue  # NULL everywhere: leave the column out
            if kind == "str":
                limit = field.max_length  # type: ignore[attr-defined]
                if all(type(v) is str for v in values) and max(map(len, values)) <= limit:
                    python_values[name] = values
                    columns.append(column)
                    terms.append(f"c{len(arrays)}")
                    arrays.append(values)
                    types.append(sql_type)
                    continue
            if kind in ("str", "convert"):  # a str column that failed the fast check, too
                try:
                    python_values[name] = [field.to_python_value(v) for v in values]
                    values = [field.to_db_value(v, model) for v in python_values[name]]
                except (ValueError, TypeError) as exc:
                    raise ValidationError(f"Invalid {self._name} data: {exc}",
                                          details={"model": self._name}) from exc
            else:
                python_values[name] = values
            columns.append(column)
            terms.append(f"c{len(arrays)}")
            arrays.append(values)
            types.append(sql_type)
        if missing:
            raise ValidationError(
                f"Cannot create {self._name}: missing required field(s): {', '.join(missing)}",
                details={"model": self._name, "fields": missing, "field": missing[0]})
        params: list[Any] = list(arrays)
        for position, sql_type in scalars:
            params.append(now)
            terms[position] = f"${len(params)}::{sql_type}"
        unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        aliases = ", ".join(f"c{i}" for i in range(len(types)))
        cols = ", ".join(f'"{c}"' for c in columns)
        sql = (f'INSERT INTO "{model._meta.db_table}" ({cols}) '
               f"SELECT {', '.join(terms)} FROM unnest({unnest}) AS u({aliases}) "
               f'RETURNING "{plan.pk_column}"')
        async with self.session.savepoint():
            with translate_errors(entity=self._name):
                result = await self.session.connection.execute_query_dict(sql, params)
        keys = sorted(r[plan.pk_column] for r in result)
        now_fields = [name for name, *_, kind in plan.fields if kind == "now"]
        null_fields = [name for name, *_ in plan.fields
                       if name not in python_values and name not in now_fields]
        out: list[Any] = []
        new = model.__new__
        custom_pk = model._meta.db_pk_column not in model._meta.generated_db_fields
        pk_attr = model._meta.pk_attr
        for i, (key, entity) in enumerate(zip(keys, entities, strict=True)):
            if isinstance(entity, Model):
                obj = entity
                d = obj.__dict__
            else:
                obj = new(model)
                d = obj.__dict__
                d.update(_partial=False, _custom_generated_pk=custom_pk, _await_when_save={})
                for name, values in python_values.items():
                    d[name] = values[i]
                for name in null_fields:
                    d[name] = None
            for name in now_fields:
                d[name] = now
            d[pk_attr] = key
            d["_saved_in_db"] = True
            out.append(obj)
        return out


def lever_repository(levers: Iterable[str]) -> type[UserRepository]:
    chosen = frozenset(levers) - MANAGER_LEVERS
    return type("LeverRepo", (LeverUserRepository,), {"levers": chosen})


def lever_contender(levers: Iterable[str], backend: str = "postgres"
                    ) -> Callable[[str], Contender]:
    chosen = frozenset(levers)

    def make(url: str) -> Contender:
        c = AegisContender(url, backend=backend,
                           manager_class=patched_manager(chosen & MANAGER_LEVERS),
                           repo_class=lever_repository(chosen))
        c.key = "E+" + "+".join(sorted(chosen))
        return c
    return make


# --- the experiment --------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    from bench.harness import Bench, PgSetup, Results, assign_ops, sqlite_slots
    from bench.report import log

    sizes = Sizes.at(args.scale)
    chosen = LEVERS if args.levers == "all" else tuple(args.levers.split(","))
    combos = {f"E+{lever}": [lever] for lever in chosen}
    if len(chosen) > 1:
        combos["E+all"] = list(chosen)
    ops = [OPS_BY_KEY[k] for k in args.ops.split(",")]
    results = Results()
    labels = ["D", "E", *combos]
    pg_ops = [op for op in ops if op.backend == "postgres"]
    sqlite_ops = [op for op in ops if op.backend == "sqlite"]
    if pg_ops:
        variants: dict[str, Callable[[str], Contender]] = {"D": TortoiseContender,
                                                           "E": AegisContender}
        variants.update({k: lever_contender(v) for k, v in combos.items()})
        async with PgSetup(args.pg_url, tuple(variants), sizes, variants) as setup:
            bench = Bench("postgres", setup.slots, sizes, pg_ops, seeded=setup.seeded,
                          expected=setup.expected, rounds=args.rounds, results=results,
                          log=log, rng_seed=7)
            assign_ops(setup.slots, pg_ops)
            if not await bench.run_checks():
                print("\n".join(results.failures))
                return 1
            await bench.run_rounds(warmup=True)
    if sqlite_ops:
        memory = "sqlite:///:memory:"
        factories: dict[str, Callable[[], Contender]] = {
            "D": lambda: TortoiseContender("sqlite://:memory:", backend="sqlite"),
            "E": lambda: AegisContender(memory, backend="sqlite")}
        for k, v in combos.items():
            factories[k] = lambda v=v: lever_contender(v, "sqlite")(memory)  # type: ignore[misc]
        slots, seeded = await sqlite_slots(tuple(factories), sizes, factories)
        try:
            assign_ops(slots, sqlite_ops)
            bench = Bench("sqlite", slots, sizes, sqlite_ops, seeded=seeded, expected={},
                          rounds=args.rounds, results=results, log=log, rng_seed=7)
            if not await bench.run_checks():
                print("\n".join(results.failures))
                return 1
            await bench.run_rounds(warmup=True)
        finally:
            for slot in slots:
                await slot.contender.close()
    _print(results, ops, labels, args.rounds)
    return 0


def _print(results: Any, ops: list[Any], labels: list[str], rounds: int) -> None:
    levers = labels[2:]
    print(f"Median throughput (units/s) and median paired ratios over {rounds} rounds.\n")
    print("| operation | " + " | ".join(labels) + " | E/D | "
          + " | ".join(f"{v}/E" for v in levers) + " | "
          + " | ".join(f"{v}/D" for v in levers) + " |")
    print("|---|" + "--:|" * (len(labels) + 1 + 2 * len(levers)))
    for op in ops:
        med = [results.median(op.key, v) for v in labels]
        ratios = ([results.ratio(op.key, "E", "D")]
                  + [results.ratio(op.key, v, "E") for v in levers]
                  + [results.ratio(op.key, v, "D") for v in levers])
        print(f"| {op.key} | " + " | ".join(f"{m:,.0f}" if m else "-" for m in med) + " | "
              + " | ".join(f"{r:.2f}" if r else "-" for r in ratios) + " |")
    print("\nper-round ratio to E, min-max:")
    for op in ops:
        spans = []
        for v in levers:
            per = results.ratios(op.key, v, "E")
            if per:
                spans.append(f"{v} {min(per):.2f}-{max(per):.2f}")
        print(f"  {op.key}: " + ", ".join(spans))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--levers", default="all", help=f"comma-separated of {LEVERS} or all")
    parser.add_argument("--ops", default="create,get,list_first,count,update,concurrent,"
                        "relations,create_many,create_many_dicts,sqlite_create,sqlite_get,"
                        "sqlite_create_many")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
