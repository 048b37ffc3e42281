"""Take a pooled asyncpg connection within ``pool_timeout``, never cancelling a connect.

asyncpg 0.32's ``Pool.acquire(timeout=t)`` runs the wait for a free slot and the opening of
a new connection under one timeout, and cancels both when it expires. On a cold pool hit by
a burst, every connection attempt is then cancelled part-way: none joins the pool, each new
wave of requests starts cold again, and a server that is up answers nothing but timeouts
(#18: 500 requests on pool 5 with a 0.5 s timeout got 500 errors cold, 0 warm).

Here the acquire runs in a task of its own. When the caller stops waiting for it (its
timeout, or a cancellation), a task still waiting for a free slot is cancelled (asyncpg's
queue gives nothing up then), but a task that is opening a connection carries on: the
connection, once open, goes back to the pool at once, where the next waiter takes it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

__all__ = ["CONNECT_TIMEOUT", "acquire"]

logger = logging.getLogger("aegis_tortoise.pool")

#: Connection attempts nobody waits for any more, until they have joined the pool (a task
#: must be referenced while it runs).
_finishing: set[asyncio.Future[Any]] = set()
#: id(pool) -> the acquire attempts whose task still runs (their ``connecting`` says whether
#: they are opening a connection).
_running: dict[int, set[Any]] = {}

#: Default connect timeout of a pool, when none shorter is given: an attempt may outlive the
#: waiter that started it (it joins the pool), and it counts event-loop time, which a burst
#: of requests stretches (0.5 s of requests' work before the connect's replies are read).
CONNECT_TIMEOUT = 10.0


async def _take(pool: Any) -> Any:
    # No timeout: acquire() below bounds the wait, and a connect in progress must finish.
    return await pool.acquire()


async def acquire(pool: Any, timeout: float, connecting: Any) -> Any:  # noqa: ASYNC109
    """A connection proxy of ``pool`` within ``timeout`` seconds.

    ``connecting`` is the caller's acquire attempt, whose ``connecting`` attribute the
    pool's connect function sets (it runs in the task, which shares the attempt).

    Raises:
        TimeoutError: no connection within ``timeout``; ``connecting.connecting`` then says
            whether one was being opened (it carries on and joins the pool).
    """
    if _ready(pool):
        # A connected connection is free: asyncpg hands it over without suspending, so this
        # takes no task and no timer (and the session's first statement goes out before the
        # event loop runs anything else, as with asyncpg's own acquire).
        return await pool.acquire()
    task = asyncio.ensure_future(_take(pool))
    running = _running.setdefault(id(pool), set())
    running.add(connecting)
    task.add_done_callback(functools.partial(_done, id(pool), connecting))
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        _abandon(pool, task, connecting=connecting.connecting)
        raise
    if done:
        return task.result()
    _abandon(pool, task, connecting=connecting.connecting)
    # Waiting for a slot while the slots were being connected is a connect that took too
    # long, not a pool whose connections were all busy.
    connecting.connecting = connecting.connecting or any(
        attempt.connecting for attempt in running)
    raise TimeoutError


def _ready(pool: Any) -> bool:
    """Whether the holder asyncpg 0.32's queue of free connections hands out next is
    connected (and of the pool's current generation), so that ``pool.acquire()`` returns it
    at once."""
    # asyncpg 0.32's _PoolConnectionHolderQueue is a LifoQueue whose get() takes the newest
    # connected holder, else the newest one; the deque's first holder is the oldest, which
    # in a pool not yet fully connected is an unconnected one (then every acquire took the
    # task below, even with connected connections free).
    for holder in reversed(pool._queue._queue):
        if holder.is_connected():
            return bool(holder._generation == pool._generation)
    return False


def _done(pool_id: int, attempt: Any, _: asyncio.Future[Any]) -> None:
    running = _running.get(pool_id)
    if running is not None:
        running.discard(attempt)
        if not running:
            del _running[pool_id]


def _abandon(pool: Any, task: asyncio.Future[Any], *, connecting: bool) -> None:
    """Nobody waits for ``task`` any more: stop its wait for a slot, or let its connection
    attempt finish and hand the connection back to the pool."""
    if task.done():
        _give_back(pool, task)
        return
    if not connecting:
        task.cancel()  # waiting in asyncpg's queue: cancelling takes nothing from it
    _finishing.add(task)
    task.add_done_callback(functools.partial(_give_back, pool))


def _give_back(pool: Any, task: asyncio.Future[Any]) -> None:
    _finishing.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.debug("a connection attempt nobody waited for failed: %r", error)
        return
    release = asyncio.ensure_future(_release(pool, task.result()))
    _finishing.add(release)
    release.add_done_callback(_finishing.discard)


async def _release(pool: Any, proxy: Any) -> None:
    raw = proxy._con  # asyncpg 0.32: the connection behind the pool's proxy
    try:
        await pool.release(proxy)
    except Exception:  # the pool is closing, or the connection broke meanwhile
        logger.debug("could not return a new connection to the pool", exc_info=True)
        if raw is not None and not raw.is_closed():
            raw.terminate()
