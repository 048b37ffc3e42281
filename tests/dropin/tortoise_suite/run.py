"""Tortoise's own test suite (the tortoise-orm 1.1.9 sdist's ``tests/``) through the library
(issue 21 acceptance 6): ``make tortoise-suite``.

Downloads the sdist once (``pip download``), puts ``library_conftest.py`` at its root as
``conftest.py``, and runs its tests twice per backend in processes of their own: once with
Tortoise's own set-up (the reference) and once with every set-up through
``DatabaseManager.from_tortoise_config``. Prints the pass counts and every test that passes
on plain Tortoise but not through the library.

    python -m tests.dropin.tortoise_suite.run [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TSUITE_DIR", "/tmp/tsdist"))  # noqa: S108 - a download cache
VERSION = "1.1.9"
# Modules that import database drivers this library does not use (psycopg, asyncmy,
# aiomysql): they fail to import on plain Tortoise just the same.
IGNORED = ["tests/benchmarks", "tests/backends/test_connection_params.py",
           "tests/contrib/postgres/test_search.py", "tests/test_default.py",
           "tests/test_queryset.py", "tests/test_sql.py"]
PREFIX = "aegis_tsuite_"


def sdist() -> Path:
    """The unpacked sdist (downloaded on first use)."""
    root = CACHE / f"tortoise_orm-{VERSION}"
    if not root.is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",  # noqa: S603
                        "--no-binary", ":all:", f"tortoise-orm=={VERSION}", "-d",
                        str(CACHE)], check=True)
        with tarfile.open(CACHE / f"tortoise_orm-{VERSION}.tar.gz") as archive:
            archive.extractall(CACHE, filter="data")
    shutil.copy(HERE / "library_conftest.py", root / "conftest.py")
    return root


async def _drop_leftovers(admin_url: str) -> None:
    """Drop the per-context databases a run left (Tortoise's own set-up never drops)."""
    conn = await asyncpg.connect(admin_url)
    try:
        names = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                 f"{PREFIX}%")
        for row in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


def _pg_url(admin_url: str) -> str:
    # "{}": each context creates a database of its own (generate_config(testing=True)).
    return (admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgres://")
            + "/" + PREFIX + "{}")


def run(root: Path, db_url: str, *, plain: bool) -> tuple[dict[str, int], set[str]]:
    """One run of the suite: the summary counts and the failed test ids."""
    env = {**os.environ, "TORTOISE_TEST_DB": db_url}
    env.pop("TSUITE_PLAIN", None)
    if plain:
        env["TSUITE_PLAIN"] = "1"
    args = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:aegis_tortoise", "-p",
            "no:cacheprovider", "tests", *(f"--ignore={path}" for path in IGNORED)]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True,  # noqa: S603
                          check=False)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (\w+)", summary)}
    failed = set(re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.MULTILINE))
    return counts, failed


def main() -> int:
    """Run both backends; exit 1 when a test passes on plain Tortoise only."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", default=os.environ.get(
        "AEGIS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    root = sdist()
    worse = False
    for backend in args.backends.split(","):
        for plain in (True, False):
            db_url = "sqlite://:memory:" if backend == "sqlite" else _pg_url(args.pg_url)
            try:
                counts, failed = run(root, db_url, plain=plain)
            finally:
                if backend != "sqlite":
                    asyncio.run(_drop_leftovers(args.pg_url))
            label = "plain Tortoise" if plain else "through aegis-tortoise"
            print(f"{backend:8} {label:24} {counts}", flush=True)
            if plain:
                reference = failed
            else:
                only_ours = sorted(failed - reference)
                for test in only_ours:
                    print(f"    fails only through the library: {test}")
                worse = worse or bool(only_ours)
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
