"""One Tortoise config feeds the app (a DatabaseManager), aerich and ``tortoise migrate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aegis_tortoise import DatabaseManager

CONFIG = '''
import os

TORTOISE_ORM = {
    "connections": {"default": os.environ["ONE_CONFIG_DB"]},
    "apps": {"models": {"models": ["shop_items", "aerich.models"],
                        "default_connection": "default", "migrations": "shop_migrations"}},
}
'''

MODELS = '''
from tortoise import fields
from tortoise.models import Model


class Item(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=20)

    class Meta:
        table = "one_config_item"
'''

APP = '''
import asyncio
import sys

from aegis_tortoise import DatabaseManager
from aegis_tortoise import BaseRepository
from shop_items import Item


async def main():
    db = DatabaseManager.from_tortoise_config("one_config.TORTOISE_ORM")
    try:
        async with db.session() as session:
            await BaseRepository(session, Item).create({"name": sys.argv[1]})
            print(await BaseRepository(session, Item).count())
    finally:
        await db.close()


asyncio.run(main())
'''


def _run(folder: Path, db: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(folder), "ONE_CONFIG_DB": db}
    done = subprocess.run(  # noqa: S603 - our interpreter and the tools it installed
        list(args), cwd=folder, env=env, capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "one_config.py").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "shop_items.py").write_text(MODELS, encoding="utf-8")
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    return tmp_path


def test_tortoise_migrate_then_the_app(project: Path) -> None:
    db = f"sqlite://{project}/migrated.db"  # Tortoise's meaning: an absolute path
    tortoise = [sys.executable, "-m", "tortoise", "-c", "one_config.TORTOISE_ORM"]
    _run(project, db, *tortoise, "init")
    _run(project, db, *tortoise, "makemigrations")
    assert "OK" in _run(project, db, *tortoise, "migrate")
    assert _run(project, db, sys.executable, "app.py", "first").split() == ["1"]
    assert _run(project, db, sys.executable, "app.py", "second").split() == ["2"]


def test_aerich_then_the_app(project: Path) -> None:
    db = f"sqlite://{project}/aerich.db"
    aerich = str(Path(sys.executable).with_name("aerich"))
    _run(project, db, aerich, "init", "-t", "one_config.TORTOISE_ORM",
         "--location", "./aerich_migrations")
    _run(project, db, aerich, "init-db")
    assert _run(project, db, sys.executable, "app.py", "first").split() == ["1"]


async def test_the_same_config_object_in_process(project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONE_CONFIG_DB", f"sqlite://{project}/inproc.db")
    monkeypatch.syspath_prepend(str(project))
    db = DatabaseManager.from_tortoise_config("one_config.TORTOISE_ORM")
    try:
        await db.generate_schemas()
        assert {m.__name__ for m in db._models} == {"Item", "Aerich"}
    finally:
        await db.close()
        for name in ("one_config", "shop_items"):
            sys.modules.pop(name, None)
