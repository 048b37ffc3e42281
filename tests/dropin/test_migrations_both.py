"""Issue 21 acceptance 3: one TORTOISE_ORM config runs Tortoise's native migrations
(``tortoise makemigrations`` / ``migrate`` / ``downgrade``) and aerich, on PostgreSQL:
upgrade, add a field, migrate, downgrade; then the documented move of an aerich-managed
database to native migrations (``tortoise migrate --fake``). The library runs on the
migrated schema from the same config."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PgServer

BIN = Path(sys.executable).parent
SETTINGS = '''import os

TORTOISE_ORM = {
    "connections": {"default": os.environ["MIG_DB_URL"]},
    "apps": {
        "models": {"models": ["shop"], "default_connection": "default",
                   "migrations": "native_migrations"},
        # aerich's bookkeeping model, in an app of its own: native migrations skip it
        "aerich": {"models": ["aerich.models"], "default_connection": "default"},
    },
}
'''
MODEL = '''from tortoise import fields
from tortoise.models import Model


class Product(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
{extra}
    class Meta:
        table = "product"
'''


def _cli(project: Path, db_url: str, *args: str) -> str:
    env = {**os.environ, "MIG_DB_URL": db_url, "PYTHONPATH": str(project)}
    done = subprocess.run(  # noqa: S603 - the venv's own tortoise / aerich commands
        [str(BIN / args[0]), *args[1:]], cwd=project, env=env, capture_output=True,
        text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


def _columns(db_url: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'product'")
        finally:
            await conn.close()
        return {row["column_name"] for row in rows}

    return asyncio.run(read())


def _model(project: Path, *fields: str) -> None:
    extra = "".join(f"    {field}\n" for field in fields)
    (project / "shop.py").write_text(MODEL.format(extra=extra))


@pytest.mark.slow
def test_native_migrations_and_aerich_from_one_config(tmp_path: Path,
                                                      pg_server: PgServer) -> None:
    project = tmp_path
    (project / "settings.py").write_text(SETTINGS)
    _model(project)
    native = pg_server.url_for(pg_server.create_database("mig_native"))
    aerich = pg_server.url_for(pg_server.create_database("mig_aerich"))
    config = "settings.TORTOISE_ORM"

    # Upgrade: the first migration of each tool.
    _cli(project, native, "tortoise", "-c", config, "makemigrations", "models")
    _cli(project, native, "tortoise", "-c", config, "migrate", "models")
    _cli(project, aerich, "aerich", "init", "-t", config, "--location", "./aerich_migrations")
    _cli(project, aerich, "aerich", "--app", "models", "init-db")
    assert _columns(native) == _columns(aerich) == {"id", "name"}

    # Add a field, migrate.
    _model(project, "price = fields.IntField(default=0)")
    _cli(project, native, "tortoise", "-c", config, "makemigrations", "models")
    _cli(project, native, "tortoise", "-c", config, "migrate", "models")
    _cli(project, aerich, "aerich", "--app", "models", "migrate", "--name", "add_price")
    _cli(project, aerich, "aerich", "--app", "models", "upgrade")
    assert _columns(native) == _columns(aerich) == {"id", "name", "price"}

    # The library on the migrated schema, from the same config.
    # (in a process of its own: loading aerich's model labels it, for this process)
    assert _cli(project, native, "python", "-c", LIBRARY_READS).strip() == "read"

    # Downgrade one step with each tool.
    first = sorted(p.stem for p in (project / "native_migrations").glob("0001_*.py"))[0]
    _cli(project, native, "tortoise", "-c", config, "downgrade", "models", first)
    _cli(project, aerich, "aerich", "--app", "models", "downgrade", "--yes")
    assert _columns(native) == _columns(aerich) == {"id", "name"}

    # aerich -> native: bring the aerich database to the models' state with aerich, record
    # the native history as applied without running it (--fake), then go on natively.
    _cli(project, aerich, "aerich", "--app", "models", "upgrade")
    _cli(project, native, "tortoise", "-c", config, "migrate", "models")
    _cli(project, aerich, "tortoise", "-c", config, "migrate", "--fake", "models")
    _model(project, "price = fields.IntField(default=0)", "stock = fields.IntField(default=0)")
    _cli(project, native, "tortoise", "-c", config, "makemigrations", "models")
    for url in (native, aerich):
        _cli(project, url, "tortoise", "-c", config, "migrate", "models")
    assert _columns(native) == _columns(aerich) == {"id", "name", "price", "stock"}


LIBRARY_READS = """
import asyncio

import settings

from aegis_tortoise import DatabaseManager


async def main() -> None:
    db = DatabaseManager.from_tortoise_config(settings.TORTOISE_ORM, pool_size=2)
    try:
        async with db.session() as session:
            await session.execute("INSERT INTO product (name, price) VALUES ('p', 3)")
            assert (await session.execute("SELECT price FROM product")).scalar() == 3
            # Tortoise 1.1.9's native AddField sets no database DEFAULT, so re-adding a
            # NOT NULL column (the re-upgrade below) fails on a table with rows.
            await session.execute("DELETE FROM product")
    finally:
        await db.close()


asyncio.run(main())
print("read")
"""
