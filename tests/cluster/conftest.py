"""Throw-away PostgreSQL 15 clusters and a PgBouncer for the scaling-out tests.

Started once per test run (session scope) as the ``postgres`` OS user, in a temporary
directory owned by it, on free ports: a primary, a synchronous standby ``s1`` and an
asynchronous standby ``s2`` (``pg_basebackup -R``), and a PgBouncer in transaction pooling
mode in front of the primary (a pool of 10 server connections). The failover test builds a
pair of its own (:func:`make_pair`), since it promotes a standby. Everything is stopped and
deleted at the end; the machine's shared cluster on 5432 is never touched.

The replica tests share one database with the example tables (``replicated``), emptied for
each test (``truncated``), and the helpers below (``sql``, ``where``, ``visible_on``).

Without the PostgreSQL 15 binaries, root (to run as ``postgres``) or pgbouncer, the tests
are skipped with the reason, and fail with ``CI=true`` (``.ci/run`` installs pgbouncer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from aegis_tortoise import DatabaseManager, Session
from tests.conftest import EXAMPLE_MODELS, _in_ci

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: The database with the example tables that the replica tests share (see ``replicated``).
REPLICATED = "replicated"
BOUNCER_POOL_SIZE = 10
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice; never 5432)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 5432:
            return port


def as_postgres(*args: str | Path, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command as the ``postgres`` OS user (initdb and postgres refuse root)."""
    return subprocess.run(  # noqa: S603 - fixed binaries, arguments of our own
        [RUNUSER, "-u", "postgres", "--", *map(str, args)],
        check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Cluster:
    """One PostgreSQL cluster in a data directory of its own."""

    name: str
    datadir: Path
    port: int
    running: bool = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres", **query: Any) -> str:
        """A URL for a manager."""
        text = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        if query:
            text += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return text

    def start(self) -> None:
        as_postgres(PG_BIN / "pg_ctl", "-D", self.datadir, "-l", self.datadir / "log.txt",
                    "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            as_postgres(PG_BIN / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop",
                        check=False)
            self.running = False

    def promote(self) -> None:
        as_postgres(PG_BIN / "pg_ctl", "-D", self.datadir, "-w", "promote")

    def configure(self, **settings: Any) -> None:
        """Append settings to postgresql.auto.conf (read at the next start or reload)."""
        lines = []
        for key, value in settings.items():
            text = value if isinstance(value, int) else f"'{value}'"
            lines.append(f"{key} = {text}\n")
        path = self.datadir / "postgresql.auto.conf"
        with path.open("a", encoding="utf-8") as out:
            out.writelines(lines)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()


@dataclass
class Bouncer:
    """A PgBouncer in transaction pooling mode in front of one cluster."""

    port: int
    ini: Path
    pidfile: Path

    def url(self, database: str = "postgres", **query: Any) -> str:
        text = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        if query:
            text += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return text

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 15)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)


@dataclass
class Topology:
    """The session's clusters: primary, standbys s1 (synchronous) and s2, a PgBouncer."""

    root: Path
    primary: Cluster
    standbys: dict[str, Cluster] = field(default_factory=dict)
    bouncer: Bouncer | None = None
    started_in: float = 0.0


class ClusterFactory:
    """Creates clusters under one temporary directory and removes them all at the end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="aegis-clusters-"))
        os.chmod(self.root, 0o755)  # noqa: S103 - postgres must traverse it
        pw = pwd.getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.clusters: list[Cluster] = []
        self.bouncers: list[Bouncer] = []

    def primary(self, name: str, *, sync_standbys: str = "") -> Cluster:
        datadir = self.root / name
        as_postgres(PG_BIN / "initdb", "-D", datadir, "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        cluster = Cluster(name, datadir, free_port())
        cluster.configure(
            port=cluster.port, listen_addresses="127.0.0.1",
            unix_socket_directories=str(self.root), wal_level="replica",
            max_wal_senders=10, hot_standby="on", fsync="off", full_page_writes="off",
            shared_buffers="16MB", max_connections=120, synchronous_standby_names=sync_standbys,
            wal_receiver_status_interval="1s", cluster_name=name, log_min_messages="warning",
        )
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def standby(self, primary: Cluster, name: str) -> Cluster:
        datadir = self.root / name
        as_postgres(PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", primary.port,
                    "-U", "postgres", "-D", datadir, "-R", "-X", "stream", "-c", "fast")
        cluster = Cluster(name, datadir, free_port())
        # cluster_name is the walreceiver's application_name (synchronous_standby_names);
        # once promoted, this one must not wait for a standby of its own.
        cluster.configure(port=cluster.port, cluster_name=name, synchronous_standby_names="")
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def bouncer(self, target: Cluster, name: str = "bouncer") -> Bouncer:
        folder = self.root / name
        folder.mkdir()
        port = free_port()
        (folder / "userlist.txt").write_text('"postgres" ""\n', encoding="utf-8")
        ini = folder / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={target.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {folder / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {BOUNCER_POOL_SIZE}\nmax_db_connections = "
            f"{BOUNCER_POOL_SIZE}\nreserve_pool_size = 0\nmax_client_conn = 1000\n"
            "ignore_startup_parameters = extra_float_digits,search_path\n"
            f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
            "admin_users = postgres\n",
            encoding="utf-8")
        pw = pwd.getpwnam("postgres")
        for path in (folder, *folder.iterdir()):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        bouncer = Bouncer(port, ini, folder / "pgbouncer.pid")
        self.bouncers.append(bouncer)
        as_postgres(shutil.which("pgbouncer") or "pgbouncer", "-d", ini)
        wait_for_port(port)
        return bouncer

    def close(self) -> None:
        for bouncer in self.bouncers:
            bouncer.stop()
        for cluster in self.clusters:
            cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def wait_streaming(primary: Cluster, *names: str) -> None:
    """Until each named standby streams from ``primary`` (pg_stat_replication), 30 s at most."""
    deadline = time.monotonic() + 30
    while True:
        streaming = set(await primary.fetchval(
            "SELECT coalesce(array_agg(application_name), '{}') FROM pg_stat_replication "
            "WHERE state = 'streaming'"))
        if set(names) <= streaming:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"standbys {names} not streaming; streaming: {streaming}")
        await asyncio.sleep(0.1)


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _unavailable() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 binaries not found in {PG_BIN}"
    if os.geteuid() != 0:
        return "starting clusters as the postgres OS user needs root (runuser)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres OS user"
    if shutil.which("pgbouncer") is None:
        return "pgbouncer is not installed (apt-get install -y pgbouncer)"
    return None


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"cluster tests cannot run: {reason}")
    pytest.skip(f"cluster tests cannot run: {reason}")


@pytest.fixture(scope="session")
def cluster_factory() -> Iterator[ClusterFactory]:
    """Makes clusters; stops and deletes every one of them at the end of the run."""
    reason = _unavailable()
    if reason is not None:
        _skip_or_fail(reason)
    factory = ClusterFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def topology(cluster_factory: ClusterFactory) -> Topology:
    """Primary, synchronous standby s1, asynchronous standby s2, and a PgBouncer."""
    started = time.monotonic()
    primary = cluster_factory.primary("primary", sync_standbys="s1")
    topo = Topology(cluster_factory.root, primary)
    for name in ("s1", "s2"):
        topo.standbys[name] = cluster_factory.standby(primary, name)
    run_sync(wait_streaming(primary, "s1", "s2"))
    topo.bouncer = cluster_factory.bouncer(primary)
    topo.started_in = time.monotonic() - started
    print(f"\nclusters started in {topo.started_in:.1f} s")
    return topo


def make_pair(factory: ClusterFactory, name: str) -> tuple[Cluster, Cluster]:
    """A primary and its synchronous standby, for a test that fails over."""
    primary = factory.primary(f"{name}_primary", sync_standbys=f"{name}_standby")
    standby = factory.standby(primary, f"{name}_standby")
    run_sync(wait_streaming(primary, f"{name}_standby"))
    return primary, standby


async def sql(cluster: Cluster, statement: str, database: str = REPLICATED) -> object:
    """The first value of one statement, on a connection of its own."""
    conn = await asyncpg.connect(cluster.url(database), timeout=10)
    try:
        return await conn.fetchval(statement)
    finally:
        await conn.close()


async def where(session: Session) -> tuple[bool, int]:
    """Where a session runs: ``(pg_is_in_recovery(), inet_server_port())``."""
    result = await session.execute("SELECT pg_is_in_recovery(), inet_server_port()")
    row = result.one()
    return row[0], row[1]


async def standby_port(session: Session) -> int:
    """The port of the standby ``session`` runs on (it fails if it runs on a primary)."""
    recovery, port = await where(session)
    assert recovery is True
    return port


async def visible_on(cluster: Cluster, email: str) -> None:
    """Until the user ``email`` is in ``cluster``'s users table (5 s at most)."""
    for _ in range(100):
        if await sql(cluster, f"SELECT count(*) FROM users WHERE email = '{email}'"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{email} never reached {cluster.name}")


async def replayed(topology: Topology) -> None:
    """Until every standby has replayed the primary's WAL as of now (10 s at most)."""
    lsn = await sql(topology.primary, "SELECT pg_current_wal_lsn()::text")
    for standby in topology.standbys.values():
        for _ in range(200):
            if await sql(standby, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{standby.name} did not replay the primary's WAL to {lsn}")


@pytest.fixture(scope="session")
def replicated(topology: Topology) -> Topology:
    """A database on the primary (and so on both standbys) with the example tables."""
    run_sync(topology.primary.fetchval(f'DROP DATABASE IF EXISTS "{REPLICATED}"'))
    run_sync(topology.primary.fetchval(f'CREATE DATABASE "{REPLICATED}"'))

    async def tables() -> None:
        manager = DatabaseManager(topology.primary.url(REPLICATED), models=EXAMPLE_MODELS)
        try:
            await manager.generate_schemas()
        finally:
            await manager.close()

    async def on_standbys() -> None:
        # CREATE DATABASE and the tables reach the standbys asynchronously (s2 always).
        for standby in topology.standbys.values():
            for _ in range(200):
                try:
                    if await sql(standby, "SELECT to_regclass('users') IS NOT NULL"):
                        break
                except asyncpg.InvalidCatalogNameError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the tables never reached {standby.name}")

    run_sync(tables())
    run_sync(on_standbys())
    return topology


@pytest.fixture
def standbys_back(replicated: Topology) -> Iterator[None]:
    """Whatever a test did to a standby (stopped, replay paused), it streams again after."""
    yield

    async def restore() -> None:
        for standby in replicated.standbys.values():
            if not standby.running:
                standby.start()
            await standby.fetchval("SELECT pg_wal_replay_resume()")
        await wait_streaming(replicated.primary, *replicated.standbys)

    run_sync(restore())


@pytest.fixture
async def truncated(replicated: Topology, standbys_back: None) -> Topology:
    """Empty tables, on the primary and replayed on both standbys."""
    await sql(replicated.primary, "TRUNCATE users CASCADE")
    await replayed(replicated)
    return replicated
