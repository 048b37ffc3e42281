"""Command line: python -m aegis_tortoise demo|check (also installed as aegis-tortoise).

demo   runs the seed's walkthrough, printing each step (in-memory sqlite unless
       --database-url). It never changes or deletes data it did not create: on PostgreSQL
       it works in a schema of its own (aegis_demo), created and dropped by it; a sqlite
       file holding other tables is refused unless --allow-existing-data.
check  connects with the configured settings, prints the server version, the pool limits
       and whether the tables match the models.

Model modules are imported from the working directory, as with python -m. Every mistake
(a bad URL, module, password, missing tables) ends in one line "FAILED: ..." and exit
status 1; --debug prints the traceback as well.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from aegis_tortoise.config import DatabaseSettings
from aegis_tortoise.errors import ServiceException
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = ["main", "package_version", "schema_differences"]


class _Failed(Exception):  # noqa: N818 - a reported outcome, not an error type
    """A check that did not pass: reported as one FAILED line, exit status 1."""


def package_version() -> str:
    """The installed distribution's version (single-sourced in pyproject.toml)."""
    try:
        return version("aegis-tortoise")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    # --debug is accepted before and after the command; SUPPRESS keeps the subcommand's
    # default from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of a failure as well")
    parser = argparse.ArgumentParser(prog="aegis-tortoise", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[common])
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,check}")
    demo = sub.add_parser(
        "demo", parents=[common], help="run the seed's walkthrough, printing each step",
        description="Run the seed's walkthrough, printing each step. It never changes or "
        "deletes data it did not create: on PostgreSQL it works in a schema of its own "
        "(created, then dropped at the end); a sqlite file holding tables it did not "
        "create is refused unless --allow-existing-data.")
    demo.add_argument("--database-url", default="sqlite+aiosqlite:///:memory:",
                      help="database to run it on (default: in-memory sqlite)")
    demo.add_argument("--schema", default="aegis_demo",
                      help="PostgreSQL: the schema of its own (default aegis_demo); refused "
                      "if it exists and the demo did not create it")
    demo.add_argument("--allow-existing-data", action="store_true",
                      help="sqlite file: run although it holds tables the demo did not "
                      "create, emptying its users and policies tables")
    check = sub.add_parser("check", parents=[common],
                           help="check the configured database and schema")
    check.add_argument("--database-url", default=None,
                       help="database to check (default: DATABASE_URL)")
    check.add_argument("--models", default=None,
                       help="comma-separated model modules (default: DATABASE_MODELS)")
    check.add_argument("--timeout", type=float, default=None,
                       help="seconds to wait for a connection (default: DATABASE_POOL_TIMEOUT, "
                       "30 unless set)")
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


async def _check(args: argparse.Namespace) -> None:
    settings = DatabaseSettings()
    if args.database_url is None and settings.url_is_default:
        # The in-memory default is empty at every start: checking it says nothing about
        # the service's database, and a service left on it fails every request.
        raise _Failed("no database configured: set DATABASE_URL (environment or .env), e.g. "
                      "DATABASE_URL=postgresql+asyncpg://user:password@host/dbname, and "
                      "DATABASE_MODELS=app.models, or pass --database-url")
    models = ([m.strip() for m in args.models.split(",") if m.strip()]
              if args.models is not None else settings.database_models)
    db = DatabaseManager(args.database_url or settings.database_url, models=models,
                         settings=settings, pool_timeout=args.timeout)
    print(f"database:   {db.url.masked()} ({db.dialect})")
    print(f"pool:       pool_size={db.pool_size} max_overflow={db.max_overflow} "
          f"(at most {db.pool_size + db.max_overflow} connections), "
          f"pool_timeout={db.pool_timeout:g}s, pool_recycle={db.pool_recycle:g}s")
    try:
        async with db.session() as session:
            sql = "SHOW server_version" if db.dialect == "postgres" else "SELECT sqlite_version()"
            version_ = (await session.execute(sql)).scalar()
            print(f"server:     {'PostgreSQL' if db.dialect == 'postgres' else 'SQLite'} "
                  f"{version_}")
            problems = await schema_differences(session)
    finally:
        await db.close()
    if not db.models:
        print("schema:     no models configured (DATABASE_MODELS), not checked")
        return
    if problems:
        print("schema:     DOES NOT MATCH the models:")
        for problem in problems:
            print(f"  - {problem}")
        tables_only = all(problem.endswith("is missing") for problem in problems)
        # generate_schemas() creates missing tables but never adds a column to one.
        advice = ("run the migrations (aerich upgrade), or db.generate_schemas() for a new "
                  "database" if tables_only else
                  "make a migration for the changed models and apply it (aerich migrate, "
                  "then aerich upgrade); generate_schemas() adds no columns to existing "
                  "tables")
        raise _Failed(f"the schema does not match the models ({len(problems)} difference(s)); "
                      + advice)
    print(f"schema:     matches {len(db._models)} model(s)")


async def _demo(args: argparse.Namespace) -> None:
    from aegis_tortoise.examples.walkthrough import run_walkthrough

    await run_walkthrough(args.database_url, schema=args.schema,
                          allow_existing_data=args.allow_existing_data)
    print("\nDone: every step of the walkthrough ran.")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aegis_tortoise`` and ``aegis-tortoise``."""
    args = _parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    # `python -m` puts the working directory first on sys.path; a console script puts its
    # own bin/ folder there instead. Model modules (DATABASE_MODELS=app.models) live in the
    # working directory, so it is importable either way.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="    (log) %(name)s: %(message)s")
    command = _demo if args.command == "demo" else _check
    try:
        asyncio.run(command(args))
    except KeyboardInterrupt:
        print("FAILED: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is reported as one line
        if debug:
            traceback.print_exc()
        if isinstance(exc, _Failed):
            reason = str(exc)
        elif isinstance(exc, ServiceException):
            reason = f"{type(exc).__name__}: {exc.message}"
        else:
            reason = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        hint = "" if debug else " (--debug for the traceback)"
        print(f"FAILED: {_one_line(reason)}{hint}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
