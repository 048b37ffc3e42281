"""The worker's tests: each Tortoise.init form, schemas, plain calls, transactions, close."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tortoise import connections
from tortoise.exceptions import ConfigurationError, IntegrityError
from tortoise.transactions import in_transaction

from tests.dropin.worker.config import TORTOISE_ORM
from tests.dropin.worker.main import Tortoise, enqueue, main, process_batch
from tests.dropin.worker.models import Job
from tests.dropin.worker_tests.conftest import init_forms

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("form", ["config", "config_file", "db_url"])
async def test_each_init_form_runs_the_worker(form: str, tmp_path: Path) -> None:
    await Tortoise.init(**init_forms(tmp_path)[form])
    await Tortoise.generate_schemas()
    try:
        assert Tortoise.apps.get_model("models", "Job") is Job
        assert Tortoise.get_connection("default") is connections.get("default")
        assert await enqueue("x", "y") == 2
        assert await process_batch() == ["x", "y"]
        assert await Job.filter(done=True).count() == 2
        rows = await Tortoise.get_connection("default").execute_query_dict(
            "SELECT name FROM worker_job ORDER BY name")
        assert rows == [{"name": "x"}, {"name": "y"}]
    finally:
        await Tortoise.get_connection("default").execute_script("DROP TABLE worker_job")
        await Tortoise.close_connections()


async def test_a_failed_batch_writes_nothing(orm: None) -> None:
    await enqueue("a", "b", "c")
    with pytest.raises(RuntimeError, match="job b failed"):
        await process_batch(fail_on="b")
    assert await Job.filter(done=True).count() == 0
    assert await process_batch(limit=2) == ["a", "b"]


async def test_in_transaction_and_tortoise_errors(orm: None) -> None:
    async with in_transaction() as conn:
        await Job.create(name="one", using_db=conn)
    with pytest.raises(IntegrityError):  # noqa: PT012 - the transaction is the unit
        async with in_transaction():
            await Job.create(name="two")
            await Job.create(name="one")
    assert await Job.all().values_list("name", flat=True) == ["one"]


@pytest.mark.parametrize(("use_tz", "zone"), [(True, "Asia/Seoul"), (False, "Asia/Tokyo")])
async def test_use_tz_and_timezone(use_tz: bool, zone: str) -> None:
    await Tortoise.init(config=TORTOISE_ORM, use_tz=use_tz, timezone=zone)
    await Tortoise.generate_schemas()
    try:
        await enqueue("t")
        await process_batch()
        job = await Job.get(name="t")
        assert job.finished_at is not None
        if use_tz:
            assert job.finished_at.utcoffset() == timedelta(hours=9)
            assert job.created_at.utcoffset() == timedelta(hours=9)
        else:
            assert job.finished_at.tzinfo is None
            assert job.created_at.tzinfo is None
    finally:
        await Tortoise.get_connection("default").execute_script("DROP TABLE worker_job")
        await Tortoise.close_connections()


async def test_init_again_replaces_the_first(tmp_path: Path) -> None:
    await Tortoise.init(config=TORTOISE_ORM)
    await Tortoise.init(**init_forms(tmp_path)["db_url"])
    await Tortoise.generate_schemas()
    try:
        assert await enqueue("r") == 1
    finally:
        await Tortoise.get_connection("default").execute_script("DROP TABLE worker_job")
        await Tortoise.close_connections()


@pytest.mark.parametrize("arguments", [{}, {"config": TORTOISE_ORM, "db_url": "sqlite://:memory:"},
                                       {"db_url": "sqlite://:memory:"}])
async def test_bad_init_arguments_raise_tortoise_configuration_error(
        arguments: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        await Tortoise.init(**arguments)


async def test_main_end_to_end() -> None:
    assert await main() == ["a", "b", "c"]
    await Tortoise.init(config=TORTOISE_ORM)
    try:
        await Tortoise.get_connection("default").execute_script("DROP TABLE worker_job")
    finally:
        await Tortoise.close_connections()


def test_the_script_in_a_process_of_its_own() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.dropin.worker.main"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['a', 'b', 'c']"


async def test_after_the_script(orm: None) -> None:
    # Runs after the script (file order): its rows are in the database the tests share.
    assert await Job.filter(done=True).values_list("name", flat=True) == ["a", "b", "c"]
