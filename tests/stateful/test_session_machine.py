"""A stateful test of sessions against a reference model of what must be stored (#18 Scope).

A Hypothesis ``RuleBasedStateMachine`` drives, on each backend, one manager ``a`` (and a
second manager ``b`` on its own database) through sessions opened and ended across steps,
savepoints (``TransactionManager(session).transaction()``) entered and left across steps,
creates that may hit the unique email (a failed statement), updates by raw SQL, deletes by
plain Tortoise calls, commits and rollbacks in the middle of a session, ``iterate`` left with
``break``, several tasks at once on one session, a task whose call is still running when the
block ends, and writes through ``b`` nested inside ``a``'s session.

The reference model is a dict ``email -> name`` per level: what is committed, what the open
session's transaction sees, and a snapshot per open savepoint; a failed statement marks the
innermost level as needing a rollback (API.md: "commit never lies"). After every step the
session's view is compared with the model, and with no session open, what is stored.

``make test`` runs a few examples per backend (bounded, ~20 s each); ``AEGIS_DIFF_PROFILE=fuzz``
(``make fuzz``) runs many more. The number of steps run is reported at the end of the run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tortoise.exceptions import BaseORMException

from aegis_tortoise import (
    DatabaseManager,
    DuplicateEntityError,
    ServiceException,
    Session,
    TransactionError,
    TransactionManager,
)
from aegis_tortoise.errors import PendingRollback
from aegis_tortoise.examples.models import User
from tests.conftest import EXAMPLE_MODELS, fresh_manager
from tests.integration.test_repository_support import UserRepository

T = TypeVar("T")

PROFILE = os.environ.get("AEGIS_DIFF_PROFILE", "diff")
#: Examples (each up to STEPS steps) per backend: bounded in `make test`, many in fuzz.
EXAMPLES = int(os.environ.get("AEGIS_STATEFUL_EXAMPLES", "500" if PROFILE == "fuzz" else "80"))
STEPS = 40
#: A step that takes longer has hung (a deadlock): fail it rather than wait forever.
STEP_TIMEOUT = 10.0

#: Steps run per backend, and how often each rule ran (reported by conftest.py).
STEPS_RUN: dict[str, int] = {}
RULES: collections.Counter[str] = collections.Counter()

#: A statement that runs ~20 ms.
SLOW = {
    "postgres": "SELECT pg_sleep(0.02)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
              "SELECT count(*) FROM c",
}

EMAILS = st.sampled_from([f"u{i}@x.io" for i in range(6)])
NAMES = st.sampled_from(["ann", "bob", "cy", "dee", "eve"])


@dataclass
class Level:
    """One level of the open session: the transaction (first) or a savepoint."""

    view: dict[str, str]
    failed: bool = False
    context: Any = None  # the savepoint's async context manager


@dataclass
class World:
    """What the test runs on: one event loop, the two managers, the step counter."""

    runner: asyncio.Runner
    a: DatabaseManager
    b: DatabaseManager
    backend: str
    steps: int = 0

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        RULES[sys._getframe(1).f_code.co_name] += 1
        async def bounded() -> T:
            # asyncio.timeout, not wait_for: the step runs in this task, in the runner's one
            # context, so the session's context variables carry over to the next step.
            async with asyncio.timeout(STEP_TIMEOUT):
                return await make()
        self.steps += 1
        return self.runner.run(bounded())


@contextlib.contextmanager
def world(backend: str, url_a: str, url_b: str) -> Iterator[World]:
    with asyncio.Runner() as runner:
        managers_a = fresh_manager(url_a, backend, EXAMPLE_MODELS, pool_size=3, max_overflow=0)
        managers_b = fresh_manager(url_b, backend, EXAMPLE_MODELS, pool_size=2, max_overflow=0)
        a = runner.run(anext(managers_a))  # type: ignore[arg-type]
        b = runner.run(anext(managers_b))  # type: ignore[arg-type]
        try:
            yield World(runner, a, b, backend)
        finally:
            runner.run(managers_b.aclose())
            runner.run(managers_a.aclose())


async def _stored(manager: DatabaseManager) -> dict[str, str]:
    async with manager.session() as session:
        return await _view(session)


async def _view(session: Session) -> dict[str, str]:
    rows = await session.execute("SELECT email, name FROM users")
    return dict(rows.fetchall())


def machine(w: World) -> type[RuleBasedStateMachine]:
    """The state machine class over ``w`` (one class per backend)."""

    class Sessions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.committed: dict[str, str] = {}
            self.committed_b: dict[str, str] = {}
            self.session: Session | None = None
            self.levels: list[Level] = []
            self.lates = 0

        # -- the model -------------------------------------------------------------------------

        @property
        def view(self) -> dict[str, str]:
            return self.levels[-1].view if self.levels else self.committed

        @property
        def aborted(self) -> bool:
            """A statement failed outside any savepoint: the session needs a rollback, every
            statement is refused with TransactionError until then (both backends)."""
            return bool(self.levels) and self.levels[0].failed

        @property
        def doomed(self) -> bool:
            """A statement failed in an open savepoint block: its end rolls it back. What runs
            in it meanwhile differs (PostgreSQL refuses, sqlite runs it) and is undone."""
            return any(level.failed for level in self.levels[1:])

        def _refused(self, outcome: Any) -> None:
            assert isinstance(outcome, TransactionError), (
                f"expected TransactionError after a failed statement, got {outcome!r}")

        def _settled(self, outcome: Any) -> bool:
            """Check an outcome where the model cannot say it; True when the caller can."""
            if self.aborted:
                self._refused(outcome)
                return False
            if self.doomed:
                # PostgreSQL refuses: our error, or Tortoise's own for a plain Tortoise call
                # (its TransactionManagementError, as in plain Tortoise).
                assert outcome is None or isinstance(
                    outcome, ServiceException | BaseORMException | int), repr(outcome)
                return False
            return True

        # -- setup -------------------------------------------------------------------------------

        @initialize()
        def empty(self) -> None:
            async def clear() -> None:
                for manager in (w.a, w.b):
                    async with manager.session() as session:
                        await session.execute("DELETE FROM policies")
                        await session.execute("DELETE FROM users")
            w.run(clear)

        def teardown(self) -> None:
            # An open savepoint or session is left with an error: nothing of it is stored.
            # Whatever happens, the session ends (else the next example waits on its locks).
            errors: list[BaseException] = []

            async def close() -> None:
                while self.levels[1:]:
                    level = self.levels.pop()
                    try:
                        await level.context.__aexit__(RuntimeError, RuntimeError("end"), None)
                    except RuntimeError:
                        pass
                    except BaseException as exc:
                        errors.append(exc)
                if self.session is not None:
                    try:
                        await self.session.__aexit__(RuntimeError, RuntimeError("end"), None)
                    except BaseException as exc:
                        errors.append(exc)
                        w.a._backend.discard(self.session)

            w.run(close)
            self.session = None
            self.levels = []
            if errors:
                raise errors[0]
            assert w.run(lambda: _stored(w.a)) == self.committed
            assert w.run(lambda: _stored(w.b)) == self.committed_b
            STEPS_RUN[w.backend] = w.steps

        # -- sessions ----------------------------------------------------------------------------

        @precondition(lambda self: self.session is None)
        @rule()
        def open_session(self) -> None:
            async def enter() -> Session:
                session = w.a.session()
                await session.__aenter__()
                return session
            self.session = w.run(enter)
            self.levels = [Level(dict(self.committed))]

        @precondition(lambda self: self.session is not None and len(self.levels) == 1)
        @rule(ok=st.booleans())
        def end_session(self, ok: bool) -> None:
            session = self.session
            assert session is not None

            async def leave() -> BaseException | None:
                try:
                    if ok:
                        await session.__aexit__(None, None, None)
                    else:
                        await session.__aexit__(RuntimeError, RuntimeError("body"), None)
                except TransactionError as exc:
                    return exc
                return None

            outcome = w.run(leave)
            if ok and not self.aborted:
                assert outcome is None, repr(outcome)
                self.committed = dict(self.view)
            elif ok:
                self._refused(outcome)  # commit never lies: nothing stored
            else:
                assert outcome is None, repr(outcome)
            self.session, self.levels = None, []

        @precondition(lambda self: self.session is not None and len(self.levels) == 1)
        @rule(commit=st.booleans())
        def commit_or_rollback(self, commit: bool) -> None:
            session = self.session
            assert session is not None

            async def end() -> BaseException | None:
                try:
                    await (session.commit() if commit else session.rollback())
                except TransactionError as exc:
                    return exc
                return None

            outcome = w.run(end)
            if commit and not self.aborted:
                assert outcome is None, repr(outcome)
                self.committed = dict(self.view)
            elif commit:
                self._refused(outcome)
            else:
                assert outcome is None, repr(outcome)
            self.levels = [Level(dict(self.committed))]

        # -- savepoints --------------------------------------------------------------------------

        @precondition(lambda self: self.session is not None and len(self.levels) < 4
                      and not self.aborted and not self.doomed)
        @rule()
        def enter_savepoint(self) -> None:
            session = self.session
            assert session is not None
            context = TransactionManager(session).transaction()
            w.run(context.__aenter__)
            self.levels.append(Level(dict(self.view), context=context))

        @precondition(lambda self: len(self.levels) > 1)
        @rule(ok=st.booleans())
        def leave_savepoint(self, ok: bool) -> None:
            level = self.levels[-1]

            async def leave() -> BaseException | None:
                try:
                    if ok:
                        await level.context.__aexit__(None, None, None)
                    else:
                        await level.context.__aexit__(RuntimeError, RuntimeError("body"), None)
                except (TransactionError, RuntimeError) as exc:
                    return exc
                return None

            outcome = w.run(leave)
            self.levels.pop()
            if ok and not level.failed:
                assert outcome is None, repr(outcome)
                self.levels[-1].view = level.view  # released: its writes are the parent's
            elif ok:
                # A failure caught inside the block: rolled back to the savepoint, refused.
                assert isinstance(outcome, TransactionError), repr(outcome)
            else:  # the body's error goes on (contextlib's __aexit__ returns False)
                assert outcome is None or isinstance(outcome, RuntimeError), repr(outcome)

        # -- writes and reads --------------------------------------------------------------------

        @rule(email=EMAILS, name=NAMES)
        def create(self, email: str, name: str) -> None:
            async def make(session: Session) -> BaseException | None:
                try:
                    await UserRepository(session).create({"email": email, "name": name})
                except ServiceException as exc:
                    return exc
                return None

            outcome = self._in_session(make)
            if not self._settled(outcome):
                return
            if email in self.view:
                assert isinstance(outcome, DuplicateEntityError), repr(outcome)
                if self.levels:
                    self.levels[-1].failed = True
            else:
                assert outcome is None, repr(outcome)
                self.view[email] = name

        @rule(email=EMAILS, name=NAMES)
        def update_raw(self, email: str, name: str) -> None:
            async def change(session: Session) -> Any:
                try:
                    result = await session.execute(
                        "UPDATE users SET name = :name WHERE email = :email",
                        {"name": name, "email": email})
                except ServiceException as exc:
                    return exc
                return result.rowcount

            outcome = self._in_session(change)
            if not self._settled(outcome):
                return
            assert outcome == (1 if email in self.view else 0)
            if email in self.view:
                self.view[email] = name

        @rule(email=EMAILS)
        def delete_plain_tortoise(self, email: str) -> None:
            async def delete(session: Session) -> Any:
                try:
                    return await User.filter(email=email).delete()
                except PendingRollback as exc:  # a plain Tortoise call: Tortoise's error type
                    return exc.error
                except Exception as exc:
                    return exc

            outcome = self._in_session(delete)
            if not self._settled(outcome):
                return
            assert outcome == (1 if email in self.view else 0)
            self.view.pop(email, None)

        @precondition(lambda self: self.session is not None)
        @rule(stop=st.integers(1, 4), closed=st.booleans())
        def iterate_then_break(self, stop: int, closed: bool) -> None:
            # Left with break: closed by the loop's aclosing(), or (as most code does) left
            # to Python's finalizer of the generator, which runs in a task of its own.
            session = self.session
            assert session is not None

            async def walk() -> Any:
                seen: list[str] = []
                walker = UserRepository(session).iterate(batch_size=2)
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        if closed:
                            await stack.enter_async_context(contextlib.aclosing(walker))
                        async for user in walker:
                            seen.append(user.email)
                            if len(seen) == stop:
                                break
                except ServiceException as exc:
                    return exc
                return seen

            outcome = w.run(walk)
            if not self._settled(None if isinstance(outcome, list) else outcome):
                return
            assert isinstance(outcome, list), repr(outcome)
            assert len(outcome) == min(stop, len(self.view))
            assert set(outcome) <= set(self.view)

        @precondition(lambda self: self.session is not None and not self.aborted
                      and not self.doomed)
        @rule(names=st.lists(NAMES, min_size=2, max_size=3))
        def tasks_at_once(self, names: list[str]) -> None:
            # Several tasks create at once on one session: serialised, every write kept.
            session = self.session
            assert session is not None
            fresh = [e for e in (f"t{i}@x.io" for i in range(20)) if e not in self.view]
            emails = fresh[:len(names)]

            async def together() -> list[Any]:
                repo = UserRepository(session)
                return await asyncio.gather(
                    *(repo.create({"email": e, "name": n}) for e, n in zip(emails, names,
                                                                          strict=False)),
                    return_exceptions=True)

            outcomes = w.run(together)
            assert all(isinstance(o, User) for o in outcomes), outcomes
            self.view.update(zip(emails, names, strict=False))

        @precondition(lambda self: self.session is None)
        @rule(email=EMAILS, name=NAMES)
        def block_ends_under_a_running_call(self, email: str, name: str) -> None:
            # Another task's call is running when the block ends: it completes inside the
            # transaction, which commits after it; the task's next call is refused.
            self.lates += 1
            late = f"late{self.lates}@x.io"

            async def scene() -> tuple[Any, Any, Any]:
                async def other(session: Session) -> Any:
                    try:
                        await session.execute(SLOW[w.backend])  # running when the block ends
                        await UserRepository(session).create({"email": late, "name": "late"})
                    except TransactionError as exc:
                        return exc
                    return None

                duplicate: Any = None
                ending: Any = None
                task: asyncio.Task[Any] | None = None
                try:
                    async with w.a.session() as session:
                        try:
                            await UserRepository(session).create({"email": email,
                                                                  "name": name})
                        except DuplicateEntityError as exc:
                            duplicate = exc  # caught: the block's end must refuse to commit
                        task = asyncio.create_task(other(session))
                        await asyncio.sleep(0.005)
                except TransactionError as exc:
                    ending = exc
                assert task is not None
                return duplicate, ending, await task

            duplicate, ending, ended = w.run(scene)
            # Never a connection error: the late call ran before the end, or was refused.
            assert ended is None or isinstance(ended, TransactionError), repr(ended)
            if email in self.committed:
                assert isinstance(duplicate, DuplicateEntityError), repr(duplicate)
                assert isinstance(ending, TransactionError), repr(ending)  # nothing stored
                return
            assert duplicate is None, repr(duplicate)
            assert ending is None, repr(ending)
            self.committed[email] = name
            if ended is None:
                self.committed[late] = "late"

        @rule(email=EMAILS, name=NAMES)
        def write_through_b(self, email: str, name: str) -> None:
            # Manager b's session, nested in a's open session or not: independent of it.
            async def write() -> BaseException | None:
                try:
                    async with w.b.session() as session:
                        await UserRepository(session).create({"email": email, "name": name})
                except DuplicateEntityError as exc:
                    return exc
                return None

            outcome = w.run(write)
            if email in self.committed_b:
                assert isinstance(outcome, DuplicateEntityError), repr(outcome)
            else:
                assert outcome is None, repr(outcome)
                self.committed_b[email] = name

        # -- checks ------------------------------------------------------------------------------

        @invariant()
        def matches_the_model(self) -> None:
            if self.session is None:
                assert w.run(lambda: _stored(w.a)) == self.committed
            elif not self.aborted and not self.doomed:
                session = self.session
                assert w.run(lambda: _view(session)) == self.view

        def _in_session(self, make: Callable[[Session], Awaitable[T]]) -> T:
            """Run ``make`` in the open session, else in a session of its own (committed)."""
            if self.session is not None:
                session = self.session
                return w.run(lambda: make(session))

            async def alone() -> Any:
                result: Any = None
                try:
                    async with w.a.session() as session:
                        result = await make(session)
                except TransactionError:
                    # The statement failed and the caller caught it: the block's end refuses
                    # to commit (nothing stored), as the model expects of a failed create.
                    assert isinstance(result, ServiceException), repr(result)
                return result
            result: T = w.run(alone)
            return result

    return Sessions


@pytest.fixture
def urls(backend: str, request: pytest.FixtureRequest) -> tuple[str, str]:
    if backend == "sqlite":
        return "sqlite:///:memory:", "sqlite:///:memory:"
    return request.getfixturevalue("pg_database"), request.getfixturevalue("pg_database_b")


def test_sessions_against_the_model(backend: str, urls: tuple[str, str]) -> None:
    with world(backend, *urls) as w:
        run_state_machine_as_test(machine(w), settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            derandomize=PROFILE != "fuzz", database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
