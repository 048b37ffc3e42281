"""A wrong model module is our ConfigurationError from DatabaseManager, naming the module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegis_tortoise import ConfigurationError, DatabaseManager


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("needs_a_dependency", "broken_models"):
        sys.modules.pop(name, None)


async def _first_session(models: list[str]) -> None:
    db = DatabaseManager("sqlite:///:memory:", models=models)
    try:
        async with db.session():
            pass
    finally:
        await db.close()


async def test_unknown_module() -> None:
    with pytest.raises(ConfigurationError, match=r"'app_nowhere\.models' not found") as info:
        await _first_session(["app_nowhere.models"])
    assert "DATABASE_MODELS" in info.value.message
    assert info.value.details == {"module": "app_nowhere.models"}
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


async def test_module_without_models_is_an_error_not_a_warning() -> None:
    with pytest.raises(ConfigurationError, match="'json' defines no Tortoise models"):
        await _first_session(["json"])


async def test_module_whose_import_fails(on_path: Path) -> None:
    (on_path / "needs_a_dependency.py").write_text("import a_package_not_installed\n")
    with pytest.raises(ConfigurationError,
                       match="imports 'a_package_not_installed', which is not installed"):
        await _first_session(["needs_a_dependency"])
    (on_path / "broken_models.py").write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigurationError, match="failed to import: RuntimeError: boom"):
        await _first_session(["broken_models"])


