"""A throw-away Patroni cluster: one etcd member and three PostgreSQL 15 nodes, each under
its own Patroni.

Everything runs as the ``postgres`` OS user, on free ports, in a temporary directory that is
deleted at the end (:meth:`PatroniCluster.close`); the machine's cluster on 5432 is never
touched. Patroni's settings are short so that a failover takes seconds: ``ttl`` 10 s,
``loop_wait`` 1 s, ``retry_timeout`` 4 s, ``synchronous_mode: true``, ``use_pg_rewind: true``,
``failsafe_mode`` off (Patroni's default: a leader that loses etcd demotes itself).

Every wait is on a condition with a deadline: Patroni's REST API (``/leader``, ``/replica``,
``/health``) and etcd's ``/health``, never a bare sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.conftest import PG_BIN, free_port

SCOPE = "aegis"
#: Patroni's timings (seconds); ``loop_wait + 2 * retry_timeout <= ttl`` as Patroni requires.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 1, 4
#: The longest any one wait of the fixture may take (the machine is shared and slow).
DEADLINE = 60.0


def unavailable() -> str | None:
    """Why a Patroni cluster cannot be built here, or None."""
    for tool in ("patroni", "patronictl", "etcd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y patroni etcd-server)"
    return None


def wait_until(what: str, check: Callable[[], bool], timeout: float = DEADLINE,
               every: float = 0.2) -> float:
    """Poll ``check`` until it is true; the seconds it took. TimeoutError after ``timeout``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


def http_status(url: str, timeout: float = 2.0) -> int:
    """The HTTP status of a GET (Patroni answers its health checks with 200 or 503)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - ours
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _as_postgres() -> dict[str, Any]:
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(pw.pw_dir),
                    "LC_ALL": "C.UTF-8"}}


@dataclass
class Node:
    """One PostgreSQL node and its Patroni."""

    name: str
    root: Path
    pg_port: int
    api_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / f"{self.name}.yml"

    @property
    def datadir(self) -> Path:
        return self.root / self.name

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def url(self, database: str = "postgres", **query: Any) -> str:
        text = f"postgresql://postgres@127.0.0.1:{self.pg_port}/{database}"
        if query:
            text += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return text

    def status(self, check: str) -> int:
        """Patroni's answer to ``GET /<check>`` (200: yes), 0 when Patroni does not answer."""
        try:
            return http_status(f"{self.api}/{check}")
        except OSError:
            return 0

    def state(self) -> dict[str, Any]:
        """Patroni's ``GET /patroni`` (role, state, timeline, ...), {} when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.api}/patroni", timeout=2) as reply:  # noqa: S310
                data: dict[str, Any] = json.loads(reply.read())
                return data
        except urllib.error.HTTPError as exc:
            failed: dict[str, Any] = json.loads(exc.read())  # 503 carries the state too
            return failed
        except (OSError, ValueError):
            return {}

    def start(self) -> None:
        log = (self.root / f"{self.name}.patroni.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
            [shutil.which("patroni") or "patroni", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_postgres())
        log.close()

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        return None

    def kill(self) -> None:
        """SIGKILL this node's Patroni and PostgreSQL (the postmaster and its children)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(10)
            self.process = None
        pid = self.postmaster_pid()
        if pid is not None:
            children = _children(pid)
            for victim in (pid, *children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)

    def stop(self) -> None:
        """Stop Patroni, which stops its PostgreSQL (SIGKILL after 30 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None
        pid = self.postmaster_pid()
        if pid is not None:  # Patroni left its PostgreSQL running: stop it too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Etcd:
    """A one-member etcd (v3 API) for Patroni."""

    root: Path
    client_port: int
    peer_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        log = (self.root / "etcd.log").open("ab")
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.client_port}"
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments of our own
            [shutil.which("etcd") or "etcd", "--name", "e1",
             "--data-dir", str(self.root / "etcd"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"e1={peer}", "--initial-cluster-state", "new",
             "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_postgres())
        log.close()
        wait_until("etcd answers /health", lambda: http_status(
            f"http://{self.endpoint}/health") == 200, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@dataclass
class PatroniCluster:
    """etcd and three Patroni nodes (``n1``, ``n2``, ``n3``) under one temporary directory."""

    root: Path
    etcd: Etcd
    nodes: dict[str, Node] = field(default_factory=dict)
    started_in: float = 0.0

    @classmethod
    def start(cls, names: tuple[str, ...] = ("n1", "n2", "n3")) -> PatroniCluster:
        started = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix="aegis-patroni-"))
        os.chmod(root, 0o755)  # noqa: S103 - postgres must traverse it
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        cluster = cls(root, Etcd(root, free_port(), free_port()))
        try:
            cluster.etcd.start()
            for name in names:
                node = Node(name, root, free_port(), free_port())
                cluster.nodes[name] = node
                cluster._write_config(node)
            first, *others = cluster.nodes.values()
            first.start()  # bootstraps (initdb) and takes the leader lock
            wait_until(f"{first.name} is the leader", lambda: first.status("leader") == 200)
            for node in others:
                node.start()  # pg_basebackup from the leader
            cluster.wait_roles(first.name, replicas=[n.name for n in others])
        except BaseException:
            cluster.close()
            raise
        cluster.started_in = time.monotonic() - started
        return cluster

    def _write_config(self, node: Node) -> None:
        trust = ["local all all trust", "host all all 127.0.0.1/32 trust",
                 "host replication all 127.0.0.1/32 trust"]
        config = {
            "scope": SCOPE, "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{node.api_port}",
                        "connect_address": f"127.0.0.1:{node.api_port}"},
            "etcd3": {"hosts": [self.etcd.endpoint]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "synchronous_mode": True, "failsafe_mode": False,
                    "postgresql": {
                        "use_pg_rewind": True, "use_slots": True,
                        "parameters": {
                            "max_connections": 100, "max_wal_senders": 10,
                            "max_replication_slots": 10, "wal_keep_size": "128MB",
                            "hot_standby": "on", "wal_log_hints": "on",
                            "fsync": "off", "full_page_writes": "on",
                            "shared_buffers": "16MB", "wal_receiver_status_interval": "1s",
                            "log_min_messages": "warning",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.datadir), "bin_dir": str(PG_BIN),
                "pgpass": str(self.root / f"{node.name}.pgpass"),
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "postgres"},
                                   "rewind": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(self.root)},
                "pg_hba": trust,
            },
        }
        node.config.write_text(json.dumps(config, indent=1), encoding="utf-8")  # YAML too
        pw = pwd.getpwnam("postgres")
        os.chown(node.config, pw.pw_uid, pw.pw_gid)

    # -- roles ----------------------------------------------------------------------------

    def leader(self) -> Node | None:
        """The node whose Patroni answers ``/leader`` with 200, if exactly one does."""
        leaders = [n for n in self.nodes.values() if n.status("leader") == 200]
        return leaders[0] if len(leaders) == 1 else None

    def sync_standby(self) -> Node | None:
        syncs = [n for n in self.nodes.values() if n.status("sync") == 200]
        return syncs[0] if len(syncs) == 1 else None

    def wait_roles(self, leader: str, replicas: list[str],
                   timeout: float = DEADLINE) -> float:
        """Until ``leader`` leads and each of ``replicas`` streams from it (``/replica``,
        ``/health``) with a synchronous standby among them; the seconds it took."""
        def settled() -> bool:
            if self.nodes[leader].status("leader") != 200:
                return False
            for name in replicas:
                node = self.nodes[name]
                if node.status("replica") != 200 or node.status("health") != 200:
                    return False
            streaming = {r.get("application_name") for r in self.nodes[leader].state().get(
                "replication", []) if r.get("state") == "streaming"}
            # synchronous_mode: Patroni names a synchronous standby once one streams.
            return set(replicas) <= streaming and (
                not replicas or self.sync_standby() is not None)

        return wait_until(f"{leader} leads, {replicas} stream from it", settled, timeout)

    def patronictl(self, *args: str) -> str:
        node = next(iter(self.nodes.values()))
        done = subprocess.run(  # noqa: S603 - fixed binary, arguments of our own
            [shutil.which("patronictl") or "patronictl", "-c", str(node.config), *args],
            check=True, capture_output=True, text=True, timeout=DEADLINE, **_as_postgres())
        return done.stdout

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.etcd.stop()
        shutil.rmtree(self.root, ignore_errors=True)
