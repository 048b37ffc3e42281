"""A TCP proxy between the library and PostgreSQL that injects network faults.

It listens on 127.0.0.1 (a random free port) and forwards every connection to the server.
Faults, each switched on and off by the test:

- ``latency``: seconds added before each forwarded chunk, both directions;
- :meth:`FaultProxy.cut_all`: close every live connection, both sides;
- :meth:`FaultProxy.refuse`: new connections are refused (``ECONNREFUSED``), as by a server
  that is down; the port stays reserved by a bound, non-listening socket, so nothing else can
  take it in the meantime;
- ``blackhole``: new connections are accepted and never forwarded nor answered;
- :meth:`FaultProxy.fail_commit`: the next ``COMMIT`` (optionally only of a transaction whose
  statements contain some text) is either forwarded and its reply lost (``"lose_reply"``: the
  server commits, then the connection is cut before the client hears it) or never forwarded
  (``"drop"``: the connection is cut instead, the server rolls back).

To see COMMIT, the client-to-server stream is parsed as the PostgreSQL frontend protocol: the
first packets have no type byte (SSLRequest/GSSENCRequest, then the StartupMessage, or a
CancelRequest); every later message is one type byte and a 4-byte length that counts itself.
asyncpg sends COMMIT as a simple Query (``'Q'``) message ``"COMMIT;"``; parameterised
statements arrive as Parse (``'P'``) messages, whose text is kept for the ``containing`` match.

When either side of a connection closes, the proxy closes the other: otherwise asyncpg's
cancel request (a connection of its own, which the server closes) would never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_COMMIT_WORDS = {b"COMMIT", b"END", b"COMMIT TRANSACTION", b"COMMIT WORK"}

CommitFault = Literal["lose_reply", "drop"]


@dataclass
class ProxyStats:
    """What went through the proxy (for assertions such as "no SQL was sent")."""

    accepted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    commits: int = 0
    commit_faults: int = 0
    cancel_requests: int = 0
    queries: list[str] = field(default_factory=list)


@dataclass
class _ArmedCommit:
    mode: CommitFault
    containing: bytes | None
    fired: asyncio.Event = field(default_factory=asyncio.Event)


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client_writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_writer = client_writer
        self.server_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False
        self.statements: list[bytes] = []  # of the current transaction, for ``containing``
        self.commit_fault: _ArmedCommit | None = None  # set once the COMMIT was forwarded

    def close(self) -> None:
        """Cut both sides at once (no orderly shutdown: this is a network failure)."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            if writer is not None:
                writer.transport.abort()
        self.proxy._links.discard(self)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class FaultProxy:
    """See the module docstring. Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self.blackhole = False
        self.stats = ProxyStats()
        self._links: set[_Link] = set()
        self._held: list[asyncio.StreamWriter] = []
        self._armed: _ArmedCommit | None = None
        self._server: asyncio.Server | None = None
        self._placeholder: socket.socket | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        # A bound socket that never listens keeps the port ours while connections are refused.
        self._placeholder = _reuseport_socket(0)
        self.port = self._placeholder.getsockname()[1]
        await self._listen()
        return self

    async def stop(self) -> None:
        await self._unlisten()
        for link in list(self._links):
            link.close()
        for writer in self._held:
            writer.transport.abort()
        self._held.clear()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def url_for(self, database: str, user: str = "postgres", **query: str) -> str:
        """A PostgreSQL URL of ``database`` through the proxy (TLS off: the stream is parsed)."""
        params = "&".join(f"{k}={v}" for k, v in {"sslmode": "disable", **query}.items())
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?{params}"

    # -- faults -------------------------------------------------------------------------------

    @property
    def live(self) -> int:
        """Connections currently forwarded."""
        return len(self._links)

    def cut_all(self) -> int:
        """Close every live connection (both sides); returns how many were cut."""
        links = list(self._links)
        for link in links:
            link.close()
        return len(links)

    async def refuse(self, refusing: bool = True) -> None:
        """Refuse new connections (``ECONNREFUSED``), or accept them again."""
        if refusing:
            await self._unlisten()
        elif self._server is None:
            await self._listen()

    def fail_commit(self, mode: CommitFault, containing: str | None = None) -> asyncio.Event:
        """Arm a fault for the next COMMIT (of a transaction that ran ``containing``).

        Returns an event set when the fault has happened.
        """
        self._armed = _ArmedCommit(mode, containing.encode() if containing else None)
        return self._armed.fired

    # -- internals ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        sock = _reuseport_socket(self.port)
        sock.listen(128)
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self.blackhole:
            self._held.append(writer)
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass  # swallowed: nothing is forwarded, nothing answered
            writer.transport.abort()
            return
        link = _Link(self, writer)
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            link.close()
            return
        link.server_writer = up_writer
        if link.closed:  # cut while connecting
            up_writer.transport.abort()
            return
        link.tasks = [
            asyncio.create_task(self._pump_up(link, reader, up_writer)),
            asyncio.create_task(self._pump_down(link, up_reader, writer)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        link.close()

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        writer.write(data)
        await writer.drain()

    async def _pump_down(self, link: _Link, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if link.commit_fault is not None:
                    # The server has answered the COMMIT (so it is committed): lose the reply.
                    link.commit_fault.fired.set()
                    return
                self.stats.bytes_down += len(data)
                await self._forward(writer, data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.close()

    async def _pump_up(self, link: _Link, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            await self._startup(link, reader, writer)
            while True:
                header = await reader.readexactly(5)
                kind, length = header[:1], struct.unpack("!i", header[1:])[0]
                message = header + await reader.readexactly(length - 4)
                if not await self._message(link, kind, message[5:]):
                    return
                self.stats.bytes_up += len(message)
                await self._forward(writer, message)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if link.commit_fault is None:
                link.close()

    async def _startup(self, link: _Link, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        """Forward the untyped packets: SSL/GSS requests, then the startup or cancel packet."""
        while True:
            length = struct.unpack("!i", await reader.readexactly(4))[0]
            body = await reader.readexactly(length - 4)
            code = struct.unpack("!i", body[:4])[0]
            self.stats.bytes_up += length
            self.stats.cancel_requests += code == _CANCEL_REQUEST
            await self._forward(writer, struct.pack("!i", length) + body)
            if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                return  # StartupMessage (typed messages follow) or CancelRequest (then EOF)

    async def _message(self, link: _Link, kind: bytes, body: bytes) -> bool:
        """Inspect one typed message; False when it must not be forwarded."""
        if kind == b"Q":
            text = body.rstrip(b"\x00")
            self.stats.queries.append(text.decode(errors="replace"))
            if text.strip().rstrip(b";").strip().upper() in _COMMIT_WORDS:
                self.stats.commits += 1
                return self._commit(link)
            if text.strip().upper().startswith((b"BEGIN", b"START TRANSACTION")):
                link.statements = []
            link.statements.append(text)
        elif kind == b"P":
            _, _, rest = body.partition(b"\x00")
            text = rest.partition(b"\x00")[0]
            self.stats.queries.append(text.decode(errors="replace"))
            link.statements.append(text)
        return True

    def _commit(self, link: _Link) -> bool:
        armed = self._armed
        statements, link.statements = link.statements, []
        if armed is None or (armed.containing is not None
                             and not any(armed.containing in s for s in statements)):
            return True
        self._armed = None
        self.stats.commit_faults += 1
        if armed.mode == "drop":
            armed.fired.set()
            link.close()  # the server never sees COMMIT: it rolls back when the socket closes
            return False
        # Forwarded; _pump_down drops the reply and cuts the connection.
        link.commit_fault = armed
        return True


def _reuseport_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock
