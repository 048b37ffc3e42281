"""What the pytest plugin costs per test: rollback isolation against TRUNCATE.

Runs a generated suite of N one-row tests three times in fresh pytest processes on a
PostgreSQL database created for the run (and dropped after): with the plugin's default
rollback isolation, with ``@pytest.mark.aegis_commit`` (TRUNCATE before and after each
test), and a baseline of N tests that use no database. The cost per test is
``(suite - baseline) / N``, the best of ``--repeat`` runs each.

    python bench/plugin_cost.py [--tests 200] [--repeat 3] [--pg-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
aegis_models = aegis_tortoise.examples.models
"""

SUITE = '''
import pytest
from aegis_tortoise.examples.models import User
{mark}

@pytest.mark.parametrize("i", range({n}))
async def test_one_row(db_session, i):
    await User.create(email=f"user{{i}}@example.com", name="n")
    assert await User.all().count() == 1
'''

BASELINE = '''
import asyncio
import pytest


@pytest.mark.parametrize("i", range({n}))
async def test_no_database(i):
    await asyncio.sleep(0)
'''


def _suite_seconds(folder: Path, url: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter and a generated suite
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         f"--aegis-db-url={url}", str(folder)],
        cwd=folder, capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the generated suite in {folder} failed:\n{done.stdout[-3000:]}")
    return elapsed


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-url", default=os.environ.get(
        "AEGIS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    name = f"aegis_plugin_cost_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(args.pg_url, f'CREATE DATABASE "{name}"'))
    url = f"{args.pg_url.rsplit('/', 1)[0]}/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            variants = {
                "rollback (default)": SUITE.format(mark="", n=args.tests),
                "TRUNCATE (aegis_commit)": SUITE.format(
                    mark="pytestmark = pytest.mark.aegis_commit", n=args.tests),
                "baseline (no database)": BASELINE.format(n=args.tests),
            }
            seconds: dict[str, float] = {}
            for label, code in variants.items():
                folder = Path(tmp) / label.split()[0].lower()
                folder.mkdir()
                (folder / "pytest.ini").write_text(INI)
                (folder / "test_suite.py").write_text(code)
                seconds[label] = min(_suite_seconds(folder, url) for _ in range(args.repeat))
    finally:
        asyncio.run(_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    base = seconds["baseline (no database)"]
    print(f"{args.tests} one-row tests on PostgreSQL, best of {args.repeat} runs")
    print(f"{'variant':<26} {'suite s':>8} {'ms per test':>12}")
    for label, total in seconds.items():
        per_test = (total - base) / args.tests * 1000
        print(f"{label:<26} {total:>8.2f} {per_test:>12.2f}")


if __name__ == "__main__":
    main()
