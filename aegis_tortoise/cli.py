"""Command line: ``python -m aegis_tortoise demo|check`` (also installed as ``aegis-tortoise``).

``demo`` runs the seed's walkthrough (in-memory sqlite unless ``--database-url``).
``check`` connects with the configured settings, prints the server version, the pool limits
and whether the tables match the models, and exits 1 with the reason when anything fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from aegis_tortoise.config import DatabaseSettings
from aegis_tortoise.errors import ServiceException
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = ["main", "schema_differences"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aegis-tortoise", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the seed's walkthrough, printing each step")
    demo.add_argument("--database-url", default="sqlite+aiosqlite:///:memory:",
                      help="database to run it on (default: in-memory sqlite)")
    check = sub.add_parser("check", help="check the configured database and schema")
    check.add_argument("--database-url", default=None,
                       help="database to check (default: DATABASE_URL)")
    check.add_argument("--models", default=None,
                       help="comma-separated model modules (default: DATABASE_MODELS)")
    check.add_argument("--timeout", type=float, default=10.0,
                       help="seconds to wait for a connection (default 10)")
    return parser


async def schema_differences(session: Session) -> list[str]:
    """What the database lacks compared with the manager's models (tables, columns)."""
    problems: list[str] = []
    for model in session.manager._models:
        table = model._meta.db_table
        if session.dialect == "postgres":
            result = await session.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :table",
                {"table": table})
            columns = set(result.scalars().all())
        else:
            result = await session.execute(f'PRAGMA table_info("{table}")')
            columns = {row[1] for row in result.fetchall()}
        if not columns:
            problems.append(f"table {table!r} ({model.__name__}) is missing")
            continue
        expected = {model._meta.fields_db_projection[f] for f in model._meta.db_fields}
        missing = sorted(expected - columns)
        if missing:
            problems.append(f"table {table!r} lacks column(s) {', '.join(missing)}")
    return problems


async def _check(args: argparse.Namespace) -> int:
    try:
        settings = DatabaseSettings()
        models = ([m.strip() for m in args.models.split(",") if m.strip()]
                  if args.models is not None else settings.database_models)
        db = DatabaseManager(args.database_url or settings.database_url, models=models,
                             settings=settings, pool_timeout=args.timeout)
    except ServiceException as exc:
        print(f"FAILED: {exc.message}")
        return 1
    print(f"database:   {db.url.masked()} ({db.dialect})")
    print(f"pool:       pool_size={db.pool_size} max_overflow={db.max_overflow} "
          f"(at most {db.pool_size + db.max_overflow} connections), "
          f"pool_timeout={db.pool_timeout:g}s, pool_recycle={db.pool_recycle:g}s")
    try:
        async with db.session() as session:
            sql = "SHOW server_version" if db.dialect == "postgres" else "SELECT sqlite_version()"
            version = (await session.execute(sql)).scalar()
            print(f"server:     {'PostgreSQL' if db.dialect == 'postgres' else 'SQLite'} "
                  f"{version}")
            problems = await schema_differences(session)
    except ServiceException as exc:
        print(f"FAILED: {type(exc).__name__}: {exc.message}")
        return 1
    finally:
        await db.close()
    if not db.models:
        print("schema:     no models configured (DATABASE_MODELS), not checked")
        return 0
    if problems:
        print("schema:     DOES NOT MATCH the models:")
        for problem in problems:
            print(f"  - {problem}")
        print("Run the migrations (aerich upgrade) or db.generate_schemas().")
        return 1
    print(f"schema:     matches {len(db._models)} model(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aegis_tortoise`` and ``aegis-tortoise``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="    (log) %(name)s: %(message)s")
    if args.command == "demo":
        from aegis_tortoise.examples.walkthrough import run_walkthrough

        try:
            asyncio.run(run_walkthrough(args.database_url))
        except ServiceException as exc:
            print(f"FAILED: {type(exc).__name__}: {exc.message}")
            return 1
        print("\nDone: every step of the walkthrough ran.")
        return 0
    return asyncio.run(_check(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
