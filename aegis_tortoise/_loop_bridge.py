"""One PostgreSQL connection for a whole pytest run, usable from every test's event loop.

pytest-asyncio gives each test a new event loop, and an asyncpg connection belongs to the
loop that opened it, so a connection per test costs a new server backend (about 6 ms on
the reference machine, more than the rest of a rolled-back test together). The plugin's
rollback isolation needs one connection at a time and never commits, so it keeps a single
connection open in a background thread with a loop of its own; :class:`BridgedConnection`
forwards each call to it. Every coroutine method of asyncpg's ``Connection`` (``fetch``,
``execute``, ``_execute``...) runs there and is awaited from the test's loop; the
``transaction()`` objects are forwarded the same way. A forwarded call costs two thread
hops (tens of microseconds), against a new backend per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Coroutine
from typing import Any

import asyncpg

__all__ = ["BridgedConnection", "close_all", "discard", "shared_connection"]

_CONNECT_PARAMETERS = frozenset(inspect.signature(asyncpg.connect).parameters)
_shared: dict[tuple[Any, ...], BridgedConnection] = {}


class _Forward:
    """Forwards attribute access to ``target``; coroutine methods run on ``loop``."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    async def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future: Any = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return await asyncio.wrap_future(future)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        # asyncpg wraps many coroutine methods in plain functions (connresource.guarded):
        # whatever returns a coroutine has it run on the connection's own loop.
        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            return self._run(result) if inspect.iscoroutine(result) else result

        return call


class BridgedConnection(_Forward):
    """An asyncpg connection living on a background loop, called from any loop."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        super().__init__(target, loop)
        self._thread = thread

    def transaction(self, **options: Any) -> _Forward:
        return _Forward(self._target.transaction(**options), self._loop)

    def terminate(self) -> None:
        self._loop.call_soon_threadsafe(self._target.terminate)


async def shared_connection(client: Any) -> BridgedConnection:
    """The run's connection for a Tortoise asyncpg client's database (opened once)."""
    settings = dict(client.server_settings)
    if client.schema:
        settings["search_path"] = client.schema
    if client.application_name:
        settings["application_name"] = client.application_name
    options = {key: value for key, value in client.extra.items()
               if key in _CONNECT_PARAMETERS and key not in ("connect", "timeout")}
    key = (client.host, client.port, client.user, client.database, repr(sorted(settings.items())),
           repr(sorted(options.items())))
    bridged = _shared.get(key)
    if bridged is not None:
        if not bridged._target.is_closed():
            return bridged
        await discard(bridged)  # closed under us: its loop and thread go with it
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="aegis-test-connection",
                              daemon=True)
    thread.start()
    connect = asyncpg.connect(host=client.host, port=client.port, user=client.user,
                              password=client.password, database=client.database,
                              server_settings=settings, **options)
    try:
        connection = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(connect, loop))
    except BaseException:
        await asyncio.to_thread(_stop, loop, thread)
        raise
    bridged = _shared[key] = BridgedConnection(connection, loop, thread)
    return bridged


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread,
          connection: Any = None) -> None:
    """Terminate ``connection`` (if any), then stop and close its loop and thread.

    ``terminate()`` aborts the transport, whose socket is closed by a callback on the loop:
    the loop must run once more before it stops, or the socket (and the loop) are left
    for the garbage collector, which reports them as ResourceWarnings in whatever runs
    next.
    """

    async def terminate() -> None:
        if connection is not None:
            connection.terminate()
        for _ in range(3):  # the transport's connection_lost callbacks
            await asyncio.sleep(0)

    if thread.is_alive():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(terminate(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    if not thread.is_alive() and not loop.is_closed():
        loop.close()


async def discard(bridged: BridgedConnection) -> None:
    """Drop a connection that failed: terminate it, stop and close its loop and thread."""
    for key, known in list(_shared.items()):
        if known is bridged:
            del _shared[key]
    await asyncio.to_thread(_stop, bridged._loop, bridged._thread, bridged._target)


def close_all() -> None:
    """Close every shared connection (the end of the pytest run), with its loop and thread."""
    while _shared:
        _, bridged = _shared.popitem()
        future = asyncio.run_coroutine_threadsafe(bridged._target.close(timeout=5),
                                                  bridged._loop)
        try:
            future.result(timeout=10)
        except Exception:  # noqa: BLE001 - the run is over; the server drops it anyway
            _stop(bridged._loop, bridged._thread, bridged._target)
        else:
            _stop(bridged._loop, bridged._thread)
