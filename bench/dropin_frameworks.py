"""The drop-in bench row per framework: a service's plain Tortoise calls (get + save, no
session) through Tortoise's ``register_tortoise`` and through ours, side by side.

For each framework both registrations run in one process on one PostgreSQL database
(created for the run, dropped after), each started the way the framework starts it, in a
task of its own (so each keeps its own Tortoise context). Rounds alternate between the
two; the ratio is Tortoise's median time per call over ours (>= 1.0: ours is as fast).

    python -m bench.dropin_frameworks --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.c_tortoise import dropin_unit

MODELS = ["aegis_tortoise.examples.models"]
ROWS = 200


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _db_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgres://") + "/" + name


async def _start_aiohttp(module: str, url: str) -> Callable[[], Awaitable[None]]:
    from aiohttp import web

    app = web.Application()
    importlib.import_module(module).register_tortoise(
        app, db_url=url, modules={"models": MODELS}, generate_schemas=True)
    app.freeze()
    await app.startup()
    return app.cleanup


async def _start_fastapi(module: str, url: str) -> Callable[[], Awaitable[None]]:
    orm = importlib.import_module(module).RegisterTortoise(
        None, db_url=url, modules={"models": MODELS}, generate_schemas=True,
        _enable_global_fallback=False)
    await orm.__aenter__()

    async def stop() -> None:
        await orm.__aexit__(None, None, None)

    return stop


STARTERS = {"aiohttp": (_start_aiohttp, "tortoise.contrib.aiohttp",
                        "aegis_tortoise.contrib.aiohttp"),
            "fastapi": (_start_fastapi, "tortoise.contrib.fastapi", "aegis_tortoise.fastapi")}


class Side:
    """One registration, started in a task of its own; its context runs the rounds."""

    def __init__(self, starter: Any, module: str, url: str) -> None:
        self.starter, self.module, self.url = starter, module, url
        self.context: contextvars.Context | None = None
        self.stop: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        async def inside() -> None:
            self.stop = await self.starter(self.module, self.url)
            self.context = contextvars.copy_context()

        await asyncio.create_task(inside())

    async def round(self, ids: list[int]) -> float:
        async def calls() -> float:
            began = time.perf_counter()
            for user_id in ids:
                await dropin_unit(user_id, "bench")
            return (time.perf_counter() - began) / len(ids)

        return await asyncio.get_running_loop().create_task(calls(), context=self.context)

    async def close(self) -> None:
        if self.stop is not None:
            await asyncio.get_running_loop().create_task(self.stop(), context=self.context)


async def measure(framework: str, admin_url: str, rounds: int, calls: int) -> float:
    starter, theirs, ours = STARTERS[framework]
    name = f"aegis_bench_dropin_{framework}"
    await _admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await _admin(admin_url, f"CREATE DATABASE {name}")
    url = _db_url(admin_url, name)
    tortoise_side, aegis_side = Side(starter, theirs, url), Side(starter, ours, url)
    try:
        await tortoise_side.start()
        await aegis_side.start()
        seed = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
        try:
            await seed.executemany(
                "INSERT INTO users (email, name, created_at, updated_at) "
                "VALUES ($1, 'n', now(), now())", [(f"u{i}@x",) for i in range(ROWS)])
            ids = [r["id"] for r in await seed.fetch("SELECT id FROM users ORDER BY id")]
        finally:
            await seed.close()
        sample = (ids * (calls // len(ids) + 1))[:calls]
        times: dict[str, list[float]] = {"D": [], "E": []}
        await tortoise_side.round(sample[:50])  # warm both pools
        await aegis_side.round(sample[:50])
        for index in range(rounds):
            order = [("D", tortoise_side), ("E", aegis_side)]
            for key, side in order if index % 2 == 0 else reversed(order):
                times[key].append(await side.round(sample))
        theirs_us = statistics.median(times["D"]) * 1e6
        ours_us = statistics.median(times["E"]) * 1e6
        print(f"{framework:8} Tortoise {theirs_us:7.1f} us/call   ours {ours_us:7.1f} us/call"
              f"   ratio {theirs_us / ours_us:.3f}")
        return theirs_us / ours_us
    finally:
        await aegis_side.close()
        await tortoise_side.close()
        await _admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    """Print the drop-in row of each framework asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--frameworks", default="fastapi,aiohttp")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    for framework in args.frameworks.split(","):
        asyncio.run(measure(framework, args.pg_url, args.rounds, args.calls))


if __name__ == "__main__":
    main()
