"""Release basics: typing markers, license, changelog, version and what a wheel ships."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import metadata, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

USER_CODE = '''\
from aegis_shared.database import BaseRepository, DatabaseManager, with_db_retry
from aegis_shared.errors.exceptions import EntityNotFoundError
from aegis_shared.models import BaseEntity, PaginatedResponse
from aegis_tortoise.fastapi import ERROR_BODY_SCHEMA, error_response


class Item(BaseEntity):
    class Meta:
        table = "items"


class ItemRepository(BaseRepository[Item]):
    pass


@with_db_retry(max_attempts=2)
async def count(db: DatabaseManager) -> int:
    async with db.session() as session:
        return await ItemRepository(session).count()


status, body = error_response(EntityNotFoundError("Item", 1))
page: PaginatedResponse[Item] | None = None
schema: dict[str, object] = ERROR_BODY_SCHEMA
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `python -m build --wheel` makes (without isolation: no download needed)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(  # noqa: S603 - build of this environment
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
         str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("aegis_tortoise-*.whl")
    return built


@pytest.mark.slow
def test_mypy_strict_passes_on_code_importing_the_installed_package(wheel: Path,
                                                                    tmp_path: Path) -> None:
    """A service that installed the wheel type-checks against it (py.typed in both packages).

    The wheel goes into a new environment whose other packages come from this one (a .pth
    file), so mypy sees the package as an installed distribution, as a service would.
    """
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)],  # noqa: S603
                   check=True, timeout=120)
    site = next((env_dir / "lib").glob("python3.*/site-packages"))
    subprocess.run(  # noqa: S603 - pip of this environment, the local wheel only
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
         str(site), str(wheel)], check=True, timeout=300, capture_output=True)
    ours = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "dependencies.pth").write_text(ours + "\n")
    (tmp_path / "service.py").write_text(USER_CODE)
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    proc = subprocess.run(  # noqa: S603 - mypy of this environment
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable",
         str(env_dir / "bin" / "python"), "service.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_license_changelog_and_single_sourced_version() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    assert "WITHOUT WARRANTY OF ANY KIND" in license_text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "Keep a Changelog" in changelog
    assert "## [Unreleased]" in changelog
    assert re.search(rf"## \[{re.escape(PYPROJECT['project']['version'])}\] - \d{{4}}-\d\d-\d\d",
                     changelog)
    assert version("aegis-tortoise") == PYPROJECT["project"]["version"]


def test_classifiers_claim_only_the_python_that_runs_the_suite() -> None:
    claimed = {c.rsplit(" :: ", 1)[1] for c in metadata("aegis-tortoise").get_all("Classifier")
               if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in claimed
    assert claimed == {"3.11"}, "claim a version only after the suite passed on it"


@pytest.mark.slow
def test_wheel_ships_typing_markers_license_and_the_example_app(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("aegis_tortoise/py.typed", "aegis_shared/py.typed",
                     "aegis_tortoise/examples/fastapi_app.py", "aegis_tortoise/fastapi.py",
                     "aegis_shared/database.py"):
        assert expected in names, expected
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "examples/", "bench/")) for n in names)
