"""High availability on Patroni: node loss, switchover, rejoin and consensus loss under load.

One etcd and three Patroni nodes (``tests/cluster/patroni.py``). The library runs as a user
would run it there: sessions on a multi-host URL over the three nodes with
``target_session_attrs=read-write``, readonly sessions on ``replica_urls`` naming each node
(the node that is the primary is skipped while a standby is usable). During each scenario 20
writer tasks append to a ledger through ``with_db_retry`` (a unique id per attempt) and 10
readers run readonly sessions. The scenarios run in the order of the issue and each starts
from the state the previous one left: 1 kills the leader, 2 switches over, 3 restarts the
node 1 killed, 4 stops etcd for 10 s, 5 does it again with Patroni's failsafe mode on.

Per scenario the ledger must hold every acknowledged write, no unit of work twice, and no
row that was neither acknowledged nor reported as ``TransactionOutcomeUnknownError``. The
numbers (longest gap between acknowledged writes, readers' errors) are printed and recorded
in docs/scaling-out.md ("Running on Patroni").
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    ServiceException,
    TransactionOutcomeUnknownError,
    with_db_retry,
)
from tests.cluster.conftest import _skip_or_fail, _unavailable, run_sync
from tests.cluster.patroni import DEADLINE, Node, PatroniCluster, unavailable, wait_until

pytestmark = pytest.mark.postgres

WRITERS, READERS = 20, 10
#: The retry budget of a unit of work: 15 attempts, waits 0.25, 0.5, 1, then 2 s (~26 s),
#: well past a failover's ~10 s (ttl) on a busy machine.
ATTEMPTS, BACKOFF, MAX_BACKOFF = 15, 0.25, 2.0
#: Seconds of load before each event, and after the cluster has settled again.
BEFORE, AFTER = 1.5, 2.0
#: Seconds the readers are given, once roles settled, to leave a node that became the
#: primary (the replica check runs at most once per _replicas.CHECK_EVERY, 1 s).
FOLLOW = 2.0
ETCD_DOWN = 10.0


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    """One etcd, three Patroni nodes and a ledger table; all removed at the end."""
    reason = _unavailable() or unavailable()
    if reason is not None:
        _skip_or_fail(reason)
    cluster = PatroniCluster.start()
    print(f"\npatroni cluster started in {cluster.started_in:.1f} s")
    try:
        leader = cluster.leader()
        assert leader is not None
        run_sync(_execute(leader, "CREATE TABLE ledger (id text PRIMARY KEY, "
                                  "scenario text, writer int, seq int)"))
        yield cluster
    finally:
        cluster.close()


async def _execute(node: Node, sql: str) -> None:
    conn = await asyncpg.connect(node.url(), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _manager(cluster: PatroniCluster) -> DatabaseManager:
    hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in cluster.nodes.values())
    return DatabaseManager(
        f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write",
        models=[], replica_urls=[n.url() for n in cluster.nodes.values()],
        read_your_writes=0, pool_size=WRITERS, max_overflow=0, pool_timeout=10)


@dataclass
class Load:
    """The writers and readers of one scenario, and what they saw."""

    db: DatabaseManager
    scenario: str
    acked: dict[str, float] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    reads: list[tuple[float, bool, int]] = field(default_factory=list)
    read_errors: list[tuple[float, str]] = field(default_factory=list)
    running: bool = True
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._writer(w)) for w in range(WRITERS)]
        self.tasks += [asyncio.create_task(self._reader()) for _ in range(READERS)]

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)

    async def _writer(self, writer: int) -> None:
        attempt_of: dict[int, str] = {}

        @with_db_retry(max_attempts=ATTEMPTS, backoff_factor=BACKOFF, max_backoff=MAX_BACKOFF)
        async def write(seq: int) -> str:
            key = attempt_of[seq] = uuid.uuid4().hex  # a new id for every attempt
            async with self.db.session() as session:
                await session.execute(
                    "INSERT INTO ledger VALUES (:id, :scenario, :writer, :seq)",
                    {"id": key, "scenario": self.scenario, "writer": writer, "seq": seq})
            return key

        for seq in itertools.count():
            if not self.running:
                return
            try:
                self.acked[await write(seq)] = time.monotonic()
            except TransactionOutcomeUnknownError:
                # Reported as such; with_db_retry did not retry it, and neither do we: the
                # next unit of work is a new one.
                self.unknown.add(attempt_of[seq])
            except DatabaseConnectionError as exc:
                self.failed.append(f"{writer}/{seq}: {exc}")
            await asyncio.sleep(0.02)

    async def _reader(self) -> None:
        while self.running:
            try:
                async with self.db.session(readonly=True) as session:
                    row = (await session.execute(
                        "SELECT pg_is_in_recovery(), inet_server_port(), "
                        "(SELECT count(*) FROM ledger)")).one()
                self.reads.append((time.monotonic(), row[0], row[1]))
            except ServiceException as exc:
                self.read_errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            await asyncio.sleep(0.02)

    async def acks_after(self, moment: float, count: int = WRITERS) -> float:
        """Until ``count`` writes were acknowledged after ``moment``; the first one's time."""
        def later() -> list[float]:
            return sorted(t for t in self.acked.values() if t > moment)

        await asyncio.to_thread(wait_until, "writes resume", lambda: len(later()) >= count)
        return later()[0]

    def reads_between(self, start: float, end: float) -> list[tuple[float, bool, int]]:
        return [r for r in self.reads if start <= r[0] <= end]

    def longest_gap(self) -> float:
        times = sorted(self.acked.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def longest_read_outage(self) -> float:
        """The longest stretch in which readers saw errors and no successful read."""
        if not self.read_errors:
            return 0.0
        events = sorted([(t, True) for t, _ in self.read_errors]
                        + [(t, False) for t, _, _ in self.reads])
        longest, began = 0.0, None
        for moment, error in events:
            if error and began is None:
                began = moment
            elif not error and began is not None:
                longest, began = max(longest, moment - began), None
        return longest


async def _ledger(cluster: PatroniCluster, scenario: str) -> tuple[set[str], int]:
    """The ids of the scenario's rows on the current leader, and its units written twice."""
    await asyncio.to_thread(wait_until, "a leader", lambda: cluster.leader() is not None)
    node = cluster.leader()
    assert node is not None
    conn = await asyncpg.connect(node.url(), timeout=10)
    try:
        ids = {r["id"] for r in await conn.fetch(
            "SELECT id FROM ledger WHERE scenario = $1", scenario)}
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM ledger WHERE scenario = $1 "
            "GROUP BY writer, seq HAVING count(*) > 1) d", scenario)
    finally:
        await conn.close()
    return ids, int(twice)


async def _verdict(cluster: PatroniCluster, load: Load, *, event: float,
                   may_fail: bool = False, extra: str = "") -> None:
    """The ledger checks every scenario passes, and its numbers printed."""
    ids, twice = await _ledger(cluster, load.scenario)
    acked = set(load.acked)
    committed_unknown = len(load.unknown & ids)
    during = [e for e in load.read_errors if e[0] >= event]
    print(f"\n{load.scenario}: {len(acked)} writes acknowledged, {len(load.unknown)} outcome "
          f"unknown ({committed_unknown} of them committed), {len(load.failed)} failed after "
          f"{ATTEMPTS} attempts, {twice} written twice; longest gap between acknowledged "
          f"writes {load.longest_gap():.1f} s; readers: {len(load.reads)} reads, "
          f"{len(during)} errors (longest outage {load.longest_read_outage():.1f} s){extra}")
    if during:
        kinds = collections.Counter(e[1][:160] for e in during).most_common(3)
        print("  readers' errors: " + "; ".join(f"{n} x {kind}" for kind, n in kinds))
    assert acked <= ids, f"acknowledged writes missing: {sorted(acked - ids)[:5]}"
    assert twice == 0
    # Every row that was not acknowledged was reported as outcome-unknown: no failure that
    # was reported as definite had in fact committed.
    assert ids - acked <= load.unknown, sorted(ids - acked - load.unknown)[:5]
    if not may_fail:
        assert load.failed == [], load.failed[:3]


def _on_standbys(load: Load, start: float, end: float, primary: Node) -> None:
    """Readers landed only on nodes in recovery between ``start`` and ``end``."""
    window = load.reads_between(start, end)
    assert window, "no read in the window"
    on_primary = [r for r in window if not r[1] or r[2] == primary.pg_port]
    assert on_primary == [], f"{len(on_primary)} of {len(window)} reads on the primary"


def _running(cluster: PatroniCluster) -> list[Node]:
    return [n for n in cluster.nodes.values() if n.process is not None]


async def test_1_node_loss(patroni: PatroniCluster) -> None:
    """SIGKILL the leader's Patroni and PostgreSQL: the synchronous standby takes over."""
    leader, sync = patroni.leader(), patroni.sync_standby()
    assert leader is not None
    assert sync is not None
    db = _manager(patroni)
    load = Load(db, "1 node loss")
    load.start()
    try:
        await asyncio.sleep(BEFORE)
        killed = time.monotonic()
        await asyncio.to_thread(leader.kill)
        others = [n.name for n in _running(patroni) if n is not sync]
        await asyncio.to_thread(patroni.wait_roles, sync.name, others)
        settled = time.monotonic()
        took = settled - killed
        await load.acks_after(settled)
        await asyncio.sleep(FOLLOW + AFTER)
    finally:
        await load.stop()
        await db.close()
    _on_standbys(load, settled + FOLLOW, time.monotonic(), sync)
    await _verdict(patroni, load, event=killed,
                   extra=f"; {sync.name} led, and the other streamed, {took:.1f} s after the kill")


async def test_2_switchover(patroni: PatroniCluster) -> None:
    """patronictl switchover to the synchronous standby (Patroni's synchronous mode allows
    no other candidate)."""
    leader = patroni.leader()
    candidate = patroni.sync_standby()
    assert leader is not None
    assert candidate is not None
    db = _manager(patroni)
    load = Load(db, "2 switchover")
    load.start()
    try:
        await asyncio.sleep(BEFORE)
        began = time.monotonic()
        await asyncio.to_thread(patroni.patronictl, "switchover", "--leader", leader.name,
                                "--candidate", candidate.name, "--force")
        others = [n.name for n in _running(patroni) if n is not candidate]
        await asyncio.to_thread(patroni.wait_roles, candidate.name, others)
        settled = time.monotonic()
        took = settled - began
        await load.acks_after(settled)
        await asyncio.sleep(FOLLOW + AFTER)
    finally:
        await load.stop()
        await db.close()
    # The old leader is a standby now, the new one is skipped: no read on a primary.
    _on_standbys(load, settled + FOLLOW, time.monotonic(), candidate)
    await _verdict(patroni, load, event=began,
                   extra=f"; {candidate.name} led, and the other streamed, {took:.1f} s after the "
                         "switchover began")


async def test_3_rejoin(patroni: PatroniCluster) -> None:
    """The node killed in scenario 1 starts again and rejoins as a replica (pg_rewind when
    its timeline diverged); readonly sessions use it again."""
    dead = [n for n in patroni.nodes.values() if n.process is None]
    if not dead:  # run on its own: kill a replica first
        victim = next(n for n in patroni.nodes.values() if n.status("replica") == 200)
        victim.kill()
        dead = [victim]
    node = dead[0]
    leader = patroni.leader()
    assert leader is not None
    db = _manager(patroni)
    load = Load(db, "3 rejoin")
    load.start()
    try:
        await asyncio.sleep(BEFORE)
        began = time.monotonic()
        await asyncio.to_thread(node.start)
        others = [n.name for n in patroni.nodes.values() if n is not leader]
        await asyncio.to_thread(patroni.wait_roles, leader.name, others)
        streaming = time.monotonic()
        took = streaming - began

        # A replica that failed to connect is tried again after _replicas.DOWN_FOR (5 s).
        def used_again() -> bool:
            return any(r[2] == node.pg_port for r in load.reads_between(streaming, 1e12))

        used = await asyncio.to_thread(wait_until, f"reads on {node.name}", used_again, 20)
        await asyncio.sleep(AFTER)
    finally:
        await load.stop()
        await db.close()
    rewound = "running pg_rewind" in (
        patroni.root / f"{node.name}.patroni.log").read_text(errors="replace")
    _on_standbys(load, streaming, time.monotonic(), leader)
    window = load.reads_between(streaming + used, time.monotonic())
    share = sum(r[2] == node.pg_port for r in window) / max(len(window), 1)
    assert share > 0.2  # round-robin over two standbys: about half of the reads
    await _verdict(patroni, load, event=began, extra=(
        f"; {node.name} streamed {took:.1f} s after its start "
        f"({'with' if rewound else 'without'} pg_rewind), first read on it {used:.1f} s "
        f"later, {share:.0%} of the reads after that"))


async def test_4_consensus_loss(patroni: PatroniCluster) -> None:
    """etcd stopped for 10 s. failsafe_mode is off (Patroni's default): the leader cannot
    renew its lock and demotes itself to a read-only standby; writes fail (cleanly, as
    DatabaseConnectionError after the retry budget) or wait in with_db_retry, and resume
    once etcd is back and a leader is elected again."""
    await _consensus_loss(patroni, "4 consensus loss")


async def test_5_consensus_loss_in_failsafe_mode(patroni: PatroniCluster) -> None:
    """The same with ``failsafe_mode: true``: a leader that still reaches every member's
    REST API keeps running without etcd."""
    await asyncio.to_thread(patroni.patronictl, "edit-config", "--set", "failsafe_mode=true",
                            "--force")

    def known() -> bool:  # the leader wrote the /failsafe key, and every node read it
        return all(n.status("failsafe") == 200 for n in patroni.nodes.values())

    try:
        await asyncio.to_thread(wait_until, "every node knows the failsafe members", known)
        await _consensus_loss(patroni, "5 consensus loss, failsafe")
    finally:
        await asyncio.to_thread(patroni.patronictl, "edit-config", "--set",
                                "failsafe_mode=false", "--force")


async def _consensus_loss(patroni: PatroniCluster, scenario: str) -> None:
    leader = patroni.leader()
    assert leader is not None
    db = _manager(patroni)
    load = Load(db, scenario)
    load.start()
    try:
        await asyncio.sleep(BEFORE)
        stopped = time.monotonic()
        await asyncio.to_thread(patroni.etcd.stop)

        def demoted() -> bool:
            return leader.status("leader") != 200 and leader.status("health") == 200 and (
                leader.state().get("role") == "replica")

        # Whether the leader demotes while etcd is away (recorded, not asserted).
        try:
            demoted_after: float | None = await asyncio.to_thread(
                wait_until, "the leader demotes", demoted, ETCD_DOWN)
        except TimeoutError:
            demoted_after = None
        await asyncio.sleep(max(0.0, stopped + ETCD_DOWN - time.monotonic()))
        await asyncio.to_thread(patroni.etcd.start)
        back = time.monotonic()

        def led() -> bool:
            return patroni.leader() is not None

        await asyncio.to_thread(wait_until, "a leader again", led, DEADLINE)
        new_leader = patroni.leader()
        assert new_leader is not None
        others = [n.name for n in patroni.nodes.values() if n is not new_leader]
        await asyncio.to_thread(patroni.wait_roles, new_leader.name, others)
        settled = time.monotonic()
        took = settled - back
        await load.acks_after(settled)
        await asyncio.sleep(FOLLOW + AFTER)
    finally:
        if patroni.etcd.process is None:
            patroni.etcd.start()
        await load.stop()
        await db.close()
    _on_standbys(load, settled + FOLLOW, time.monotonic(), new_leader)
    await _verdict(patroni, load, event=stopped, may_fail=True, extra=(
        f"; {leader.name} " + (f"demoted {demoted_after:.1f} s after etcd stopped"
                               if demoted_after is not None else "stayed the leader") + ", "
        f"{new_leader.name} led, and both others streamed, {took:.1f} s after etcd was back"))
