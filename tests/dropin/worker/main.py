"""The worker: Tortoise.init, a batch of jobs processed in transactions, close."""

import importlib
import os
from typing import Any

from tortoise import run_async, timezone
from tortoise.transactions import in_transaction

from tests.dropin.worker.config import TORTOISE_ORM
from tests.dropin.worker.models import Job

# The one line a worker changes: where Tortoise comes from.
Tortoise: Any = importlib.import_module(os.environ.get("DROPIN_TORTOISE", "tortoise")).Tortoise


async def enqueue(*names: str) -> int:
    """Add jobs; returns how many are pending."""
    await Job.bulk_create([Job(name=name) for name in names])
    return await Job.filter(done=False).count()


async def process_batch(limit: int = 10, fail_on: str | None = None) -> list[str]:
    """Mark up to ``limit`` pending jobs done, all or none (one transaction)."""
    async with in_transaction() as conn:
        jobs = await Job.filter(done=False).order_by("id").limit(limit).using_db(conn)
        for job in jobs:
            if job.name == fail_on:
                raise RuntimeError(f"job {job.name} failed")
            job.done = True
            job.attempts += 1
            job.finished_at = timezone.now()
            await job.save(using_db=conn)
    return [job.name for job in jobs]


async def main(**init: Any) -> list[str]:
    """The script's entry point: set up, process, shut down."""
    await Tortoise.init(**(init or {"config": TORTOISE_ORM}))
    await Tortoise.generate_schemas()
    try:
        await enqueue("a", "b", "c")
        return await process_batch()
    finally:
        await Tortoise.close_connections()


async def _script() -> None:
    print(await main())


if __name__ == "__main__":
    run_async(_script())
