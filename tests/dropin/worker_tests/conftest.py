"""The worker's fixtures, as plain-Tortoise projects write them."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.dropin.worker.config import DB_URL, MODULES, TORTOISE_ORM
from tests.dropin.worker.main import Tortoise


def init_forms(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Tortoise.init's three ways to name the database and models."""
    config_file = tmp_path / "tortoise.json"
    config_file.write_text(json.dumps(TORTOISE_ORM))
    return {"config": {"config": TORTOISE_ORM},
            "config_file": {"config_file": str(config_file)},
            "db_url": {"db_url": DB_URL, "modules": MODULES}}


@pytest.fixture
async def orm() -> AsyncIterator[None]:
    await Tortoise.init(config=TORTOISE_ORM)
    await Tortoise.generate_schemas()
    yield
    await Tortoise.get_connection("default").execute_script("DROP TABLE worker_job")
    await Tortoise.close_connections()
