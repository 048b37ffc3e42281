"""Prototypes of the issue's performance levers, measured against the real E and D.

EXPERIMENTS ONLY: nothing here is used by bench/run.py's contenders. Each lever is a
subclass of the example UserRepository selected by name, so the unpatched library runs next
to the patched one in the same process, interleaved like run.py:

    python bench/levers.py                       # every lever alone and all together
    python bench/levers.py --levers cached_sql --ops get,update --rounds 7
    python bench/levers.py --micro 200 --rounds 15 --ops get,update,list_mid
                                                 # all variants on one database

Levers (the README's "Levers" section gives the exact change each needs in aegis_tortoise).
Three levers measured here earlier are in the library now, so they are no longer here: no
BEGIN/COMMIT for a session that only reads and no asyncpg reset query on release unless a
statement may have left state (commit 5e4d74d), and no primary-key tie-breaker after a
unique non-null order field (commit 5b6f584).

- ``cached_sql``  get_by_id and update run SQL built once per model (and column set) instead
  of building a QuerySet / pypika query on every call.
- ``fast_bulk``   create_many prepares rows from a per-model plan (no per-instance async-
  default scan, validation per distinct key set, one timestamp per batch sent as a scalar,
  all-NULL columns left out) and builds instances without ``Model.__init__``; the statement
  is today's ``unnest ... WITH ORDINALITY ... ORDER BY ord RETURNING id``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortoise.fields import CharField
from tortoise.models import Model
from tortoise.validators import MaxLengthValidator

from aegis_tortoise._filters import writable_values
from aegis_tortoise.errors import ValidationError, translate_errors
from aegis_tortoise.examples.repositories import UserRepository
from bench.base import Contender
from bench.c_aegis import AegisContender
from bench.c_tortoise import TortoiseContender
from bench.workload import OPS_BY_KEY, Sizes

LEVERS = ("cached_sql", "fast_bulk")

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
        # As today: WITH ORDINALITY + ORDER BY keeps the generated keys in input order.
        sql = (f'INSERT INTO "{model._meta.db_table}" ({cols}) '
               f"SELECT {', '.join(terms)} FROM unnest({unnest}) WITH ORDINALITY "
               f'AS u({aliases}, ord) ORDER BY ord RETURNING "{plan.pk_column}"')
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
    return type("LeverRepo", (LeverUserRepository,), {"levers": frozenset(levers)})


def lever_contender(levers: Iterable[str], backend: str = "postgres"
                    ) -> Callable[[str], Contender]:
    chosen = frozenset(levers)

    def make(url: str) -> Contender:
        c = AegisContender(url, backend=backend, repo_class=lever_repository(chosen))
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


async def micro_async(args: argparse.Namespace) -> int:  # noqa: PLR0915
    """Every variant on ONE database, alternating small samples: less noise per lever."""
    import random
    import time

    import asyncpg

    from bench.harness import tortoise_ddl
    from bench.workload import PgDatabases, seed_pg

    sizes = Sizes.at(args.scale)
    chosen = LEVERS if args.levers == "all" else tuple(args.levers.split(","))
    dbs = PgDatabases(args.pg_url)
    url = await dbs.create("micro", await tortoise_ddl("postgres"))
    admin = await asyncpg.connect(url)
    try:
        seeded = await seed_pg(admin, sizes, "m")
        ids = seeded["ids"]
        offsets = sizes.offsets()
        variants: dict[str, Contender] = {"D": TortoiseContender(url), "E": AegisContender(url)}
        variants.update({f"E+{lv}": lever_contender([lv])(url) for lv in chosen})
        if len(chosen) > 1:
            variants["E+all"] = lever_contender(chosen)(url)
        for c in variants.values():
            await c.start()
        rng = random.Random(3)
        counter = iter(range(10**9))

        async def unit(c: Contender, op: str) -> None:
            if op == "get":
                await c.get(rng.choice(ids))
            elif op == "update":
                await c.update(rng.choice(ids), f"m{next(counter)}")
            elif op == "count":
                await c.count()
            elif op in offsets:
                await c.list_page(offsets[op])
            elif op == "create":
                await c.create((f"m{next(counter)}@micro", "micro"))

        labels = list(variants)
        print(f"Same database, {args.rounds} alternations of {args.micro} units, order rotated;"
              " median per-alternation throughput ratio.\n")
        print("| operation | µs/unit D | µs/unit E | " + " | ".join(
            f"{v}/E" for v in labels[2:]) + " | E/D | E+all/D |")
        print("|---|--:|--:|" + "--:|" * (len(labels) - 2 + 2))
        for op in args.ops.split(","):
            times: dict[str, list[float]] = {v: [] for v in labels}
            for r in range(args.rounds + 1):
                k = r % len(labels)
                for v in labels[k:] + labels[:k]:
                    c = variants[v]
                    with c.activate():
                        start = time.perf_counter()
                        for _ in range(args.micro):
                            await unit(c, op)
                        elapsed = (time.perf_counter() - start) / args.micro
                    if op == "create":
                        await admin.execute(f"DELETE FROM users WHERE id > {seeded['max_id']}")
                    if r:  # the first alternation warms up
                        times[v].append(elapsed)

            def ratio(num: str, den: str, times: dict[str, list[float]] = times) -> float:
                return statistics.median(b / a for a, b in zip(times[num], times[den],
                                                                strict=True))
            cells = [f"{ratio(v, 'E'):.2f}" for v in labels[2:]]
            extra = [f"{ratio('E', 'D'):.2f}"]
            if "E+all" in times:
                extra.append(f"{ratio('E+all', 'D'):.2f}")
            print(f"| {op} | {statistics.median(times['D']) * 1e6:.0f} "
                  f"| {statistics.median(times['E']) * 1e6:.0f} | " + " | ".join(cells + extra)
                  + " |")
        for c in variants.values():
            await c.close()
    finally:
        await admin.close()
        await dbs.drop_all()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--levers", default="all", help=f"comma-separated of {LEVERS} or all")
    parser.add_argument("--ops", default="create,get,list_first,count,update,concurrent,"
                        "relations,create_many,create_many_dicts,sqlite_create,sqlite_get,"
                        "sqlite_create_many")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--micro", type=int, default=0, metavar="N",
                        help="instead: every variant on one database, alternating samples of "
                             "N units (ops: get, update, count, create, list_first/mid/last)")
    args = parser.parse_args()
    if args.micro:
        return asyncio.run(micro_async(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
