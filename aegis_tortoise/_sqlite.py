"""Tortoise's sqlite engine, with aiosqlite's worker thread made a daemon.

aiosqlite 0.22 runs each connection in a non-daemon thread that only stops when the
connection is closed, so a sqlite manager that is never closed (a script that forgets
``await db.close()``) keeps the interpreter from exiting after ``asyncio.run`` returns.
A daemon thread lets the process exit; committed data is safe, since a commit returns only
after sqlite has written it. The manager names this module as the engine of its sqlite
connection (Tortoise imports the engine module and takes its ``get_client_class``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
from tortoise.backends.sqlite import client as tortoise_sqlite
from tortoise.contrib.sqlite.regex import install_regexp_functions

__all__ = ["SqliteClient", "SqliteClientWithRegexpSupport", "client_class", "get_client_class"]


class SqliteClient(tortoise_sqlite.SqliteClient):
    """Tortoise 1.1.9's ``SqliteClient``; only the connection's thread differs."""

    async def create_connection(self, with_db: bool) -> None:
        # Mirrors tortoise.backends.sqlite.client.SqliteClient.create_connection (1.1.9).
        if self._connection:
            return
        connection = aiosqlite.connect(self.filename, isolation_level=None)
        # aiosqlite 0.22.1 creates the thread in connect() and starts it when awaited: mark
        # it a daemon in between. (Before 0.22 the connection was the thread itself.)
        thread: Any = getattr(connection, "_thread", connection)
        thread.daemon = True
        self._connection = await connection
        self._connection._conn.row_factory = sqlite3.Row
        for pragma, value in self.pragmas.items():
            cursor = await self._connection.execute(f"PRAGMA {pragma}={value}")
            await cursor.close()
        await self._post_connect()
        self.log.debug("Created connection %s with params: filename=%s %s", self._connection,
                       self.filename, " ".join(f"{k}={v}" for k, v in self.pragmas.items()))


class SqliteClientWithRegexpSupport(SqliteClient):
    """Tortoise's regexp-enabled variant (``install_regexp_functions=True``)."""

    capabilities = tortoise_sqlite.SqliteClientWithRegexpSupport.capabilities

    async def create_connection(self, with_db: bool) -> None:
        await super().create_connection(with_db)
        if self._connection:
            await install_regexp_functions(self._connection)


client_class = SqliteClient


def get_client_class(db_info: dict[str, Any]) -> type[SqliteClient]:
    """The client class Tortoise instantiates for this engine (as in Tortoise's own)."""
    if db_info.get("credentials", {}).get("install_regexp_functions"):
        return SqliteClientWithRegexpSupport
    return SqliteClient
