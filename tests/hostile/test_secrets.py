"""Hostile input, secrets: no password in any message, log line, span or settings dump.

Generated passwords are made of distinctive segments (``Q`` and 3-5 letters of an alphabet
no message uses) joined by the characters that break URLs (``@ : / % ? #``, spaces, quotes,
unicode). A leak of any segment, raw or percent-encoded, fails the test, so a message that
quotes only part of the password (the text after a ``:`` read as a port, issue 18 item 12)
is caught too. Every accepted PostgreSQL scheme, the password percent-encoded (must be
accepted and decoded exactly) and as typed (may be refused with our ConfigurationError, or
must be parsed right), reached through:

- ``parse_database_url`` and ``DatabaseManager(database_url=...)``;
- ``DatabaseSettings`` from the environment and from ``.env`` (``DATABASE_URL``,
  ``DATABASE_REPLICA_URLS``): errors, ``repr``, ``str``, ``model_dump``, ``model_dump_json``;
- ``DatabaseManager.from_tortoise_config`` with credentials dicts and with URLs;
- replica URLs (``replica_urls=``);
- connections to a port nothing listens on (errors and DEBUG logs of the aegis_tortoise
  loggers), and on PostgreSQL a working connection with OpenTelemetry spans, in a process
  of its own (a tracer provider is process-wide).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aegis_tortoise import ConfigurationError, DatabaseManager, ServiceException, with_db_retry
from aegis_tortoise.config import DatabaseSettings, parse_database_url
from tests.conftest import EXAMPLE_MODELS
from tests.differential.harness import scaled


def profile(weight: float) -> settings:
    """The differential suite's Hypothesis profile (``make fuzz`` runs more), scaled; the
    fixtures used (caplog, tmp_path) are reset or keyed per example by the tests."""
    base = scaled(weight)
    return settings(base, suppress_health_check=[*base.suppress_health_check,
                                                 HealthCheck.function_scoped_fixture])

SCHEMES = ["postgresql+asyncpg", "postgresql", "postgres", "asyncpg", "postgres+asyncpg"]
SEPARATORS = ["@", ":", "/", "%", "?", "#", "%40", "%zz", "@@", ":/", " ", "한", "é", "'", '"',
              "\\", "&", "=", "[", "]", "+", ";"]
SEGMENT_ALPHABET = "xzjkvwXZJKVWé한ß"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Password:
    """A password and the segments whose appearance anywhere is a leak."""

    text: str
    segments: tuple[str, ...]

    def leaks_in(self, text: str) -> list[str]:
        return [form for part in (self.text, *self.segments)
                for form in {part, quote(part, safe=""), quote(part)} if form in text]


@st.composite
def passwords(draw: st.DrawFn) -> Password:
    segments = draw(st.lists(
        st.text(alphabet=SEGMENT_ALPHABET, min_size=3, max_size=5).map(lambda t: "Q" + t),
        min_size=1, max_size=4))
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(segments) + 1,
                         max_size=len(segments) + 1))
    text = seps[0] if draw(st.booleans()) else ""
    for segment, sep in zip(segments, seps[1:], strict=True):
        text += segment + sep
    if draw(st.booleans()):
        text = text[:-len(seps[-1])]
    return Password(text, tuple(segments))


#: The shapes of issue 18 item 12 (``p@ss:w/rd%``; ``Tr0ub4dor@secrethostpart:5432/abc``)
#: and a ``#`` after an ``@``, tried first in every run.
ISSUE_PASSWORDS = [
    Password("Qpss@Qwzz:Qwx/Qrdx%", ("Qpss", "Qwzz", "Qwx", "Qrdx")),
    Password("Qtrouk@Qsecrethost:5432/Qabc", ("Qtrouk", "Qsecrethost", "Qabc")),
    Password("Qaq@Qcdx#Qsecx", ("Qaq", "Qcdx", "Qsecx")),
]


def free_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def url(scheme: str, password: Password, port: int, *, encoded: bool,
        database: str = "appdb", user: str = "app") -> str:
    secret = quote(password.text, safe="") if encoded else password.text
    return f"{scheme}://{user}:{secret}@{HOST}:{port}/{database}"


def error_texts(exc: BaseException) -> list[str]:
    """Everything an error shows: message, repr, details, to_dict, chain, traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    current: BaseException | None = exc
    seen = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), str(getattr(current, "details", "")),
                  str(current.args)]
        if isinstance(current, ServiceException):
            texts.append(json.dumps(current.to_dict(), default=repr))
        # What Python and error trackers print: the context unless ``raise ... from None``.
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__)
    return texts


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)


def assert_no_leak(password: Password, texts: list[str], where: str) -> None:
    for text in texts:
        leaked = password.leaks_in(text)
        assert not leaked, f"{where}: {leaked!r} of the password {password.text!r} in {text!r}"


@contextmanager
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="aegis_tortoise"):
        yield


def settings_dumps(settings: DatabaseSettings, surface: str) -> list[str]:
    """The ways a settings object is commonly printed (``printed``) or serialised."""
    if surface == "printed":
        return [repr(settings), str(settings), repr(settings.parsed_url),
                str(settings.parsed_url), f"{settings!r:}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pydantic v1's .dict()/.json()
        legacy = [str(settings.dict()), settings.json()]
    return [str(settings.model_dump()), settings.model_dump_json(),
            str(settings.model_dump(mode="json")), *legacy]


# -- URLs: parsing and the manager -------------------------------------------------------------


@profile(3)
@given(password=passwords(), scheme=st.sampled_from(SCHEMES), encoded=st.booleans())
@example(password=ISSUE_PASSWORDS[0], scheme="postgresql+asyncpg", encoded=False)
@example(password=ISSUE_PASSWORDS[1], scheme="postgresql+asyncpg", encoded=False)
@example(password=ISSUE_PASSWORDS[2], scheme="postgres", encoded=False)
def test_database_url_never_shows_the_password(password: Password, scheme: str, encoded: bool,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A percent-encoded password is accepted and decoded exactly; one as typed is refused
    with our ConfigurationError or parsed right (never password text as host, port or
    database); nothing shows any part of it."""
    port = 6543
    written = url(scheme, password, port, encoded=encoded)
    with debug_logs(caplog):
        try:
            parsed = parse_database_url(written)
        except ConfigurationError as exc:
            assert_no_leak(password, error_texts(exc), "parse error")
            if encoded:
                pytest.fail(f"a percent-encoded password was refused: {exc!r}")
        else:
            where = f"parsed {scheme} URL ({'encoded' if encoded else 'as typed'})"
            assert (parsed.host, parsed.port, parsed.database, parsed.user) == (
                HOST, port, "appdb", "app"), f"{where}: read as {parsed!r}"
            # "%40" typed in a password reads as "@": as typed, that is what the URL says.
            readings = {password.text} | (set() if encoded else {unquote(password.text)})
            assert parsed.password in readings, (
                f"{where}: password read as {parsed.password!r}")
            assert_no_leak(password, [repr(parsed), str(parsed), parsed.masked()], where)
        try:
            manager = DatabaseManager(database_url=written, models=EXAMPLE_MODELS)
        except ConfigurationError as exc:
            assert_no_leak(password, error_texts(exc), "DatabaseManager error")
        else:
            assert_no_leak(password, [repr(manager), str(manager.url)], "repr(DatabaseManager)")
        assert_no_leak(password, [log_text(caplog)], "logs")


@pytest.mark.parametrize("surface", ["printed", "serialised"])
@profile(1)
@given(password=passwords(), replica=passwords(), scheme=st.sampled_from(SCHEMES),
       encoded=st.booleans(), source=st.sampled_from(["environment", ".env"]))
@example(password=ISSUE_PASSWORDS[0], replica=ISSUE_PASSWORDS[1], scheme="postgresql",
         encoded=False, source="environment")
def test_settings_never_show_the_password(*, password: Password, replica: Password, scheme: str,
                                          encoded: bool, source: str, surface: str,
                                          tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """DatabaseSettings from the environment or ``.env``: an error, and (``printed``) repr,
    str, or (``serialised``, issue 18 item 13) model_dump, model_dump_json and pydantic's
    legacy dict/json never show the password of DATABASE_URL or DATABASE_REPLICA_URLS."""
    variables = {"DATABASE_URL": url(scheme, password, 5432, encoded=encoded),
                 "DATABASE_REPLICA_URLS": url(scheme, replica, 5433, encoded=encoded)}
    with pytest.MonkeyPatch.context() as patch, debug_logs(caplog):
        for name in (*variables, "DATABASE_URL", "DATABASE_REPLICA_URLS"):
            patch.delenv(name, raising=False)
        folder = tmp_path / f"run{os.getpid()}_{abs(hash((password, replica, source)))}"
        folder.mkdir(exist_ok=True)
        patch.chdir(folder)
        if source == "environment":
            for name, value in variables.items():
                patch.setenv(name, value)
        else:
            (folder / ".env").write_text(
                "".join(f"{name}='{value}'\n" for name, value in variables.items()
                        ), encoding="utf-8")
        try:
            settings = DatabaseSettings()
        except ConfigurationError as exc:
            for secret in (password, replica):
                assert_no_leak(secret, error_texts(exc), "settings error")
            if encoded and "'" not in password.text:  # a quote ends .env's quoting
                pytest.fail(f"refused an encoded URL: {exc!r}")
        else:
            dumps = settings_dumps(settings, surface)
            if surface == "printed":
                dumps.append(repr(DatabaseManager(settings=settings, models=EXAMPLE_MODELS)))
            for secret in (password, replica):
                assert_no_leak(secret, dumps, f"settings from {source}")
        for secret in (password, replica):
            assert_no_leak(secret, [log_text(caplog)], "logs")


@pytest.mark.parametrize("form", ["credentials", "url", "replica"])
@profile(0.5)
@given(password=passwords(), replica=passwords(), scheme=st.sampled_from(SCHEMES),
       encoded=st.booleans())
@example(password=ISSUE_PASSWORDS[2], replica=ISSUE_PASSWORDS[1], scheme="postgresql",
         encoded=False)
def test_connection_failures_never_show_the_password(
        *, password: Password, replica: Password, scheme: str, form: str, encoded: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """A manager built from a URL, a Tortoise config (credentials dict or URL) or with a
    replica URL, connecting to a port nothing listens on: the error, the chained driver
    errors, the DEBUG logs and the manager's repr show no password."""
    port = free_port()

    def make() -> DatabaseManager:
        options: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 2}
        if form == "credentials":
            config = {
                "connections": {"default": {
                    "engine": "tortoise.backends.asyncpg",
                    "credentials": {"host": HOST, "port": port, "user": "app",
                                    "password": password.text, "database": "appdb"}}},
                "apps": {"models": {"models": EXAMPLE_MODELS,
                                    "default_connection": "default"}}}
            return DatabaseManager.from_tortoise_config(config, **options)
        if form == "url":
            tortoise_url = url("asyncpg", password, port, encoded=encoded)
            return DatabaseManager.from_tortoise_config(
                {"connections": {"default": tortoise_url},
                 "apps": {"models": {"models": EXAMPLE_MODELS}}}, **options)
        return DatabaseManager(url(scheme, password, port, encoded=True),
                               models=EXAMPLE_MODELS,
                               replica_urls=[url(scheme, replica, free_port(), encoded=encoded)],
                               **options)

    async def connect(manager: DatabaseManager) -> list[str]:
        texts = [repr(manager)]
        for readonly in (False, True) if form == "replica" else (False,):

            # with_db_retry: its retry log lines are checked too.
            @with_db_retry(max_attempts=2, backoff_factor=0)
            async def work(readonly: bool = readonly) -> None:
                async with manager.session(readonly=readonly) as session:
                    await session.execute("SELECT 1")

            try:
                await work()
            except ServiceException as exc:
                texts += error_texts(exc)
            else:
                pytest.fail(f"connected to port {port}, where nothing listens")
        texts.append(repr(manager))
        await manager.close()
        return texts

    with debug_logs(caplog):
        try:
            manager = make()
        except ConfigurationError as exc:
            texts = error_texts(exc)
        else:
            texts = asyncio.run(connect(manager))
        texts.append(log_text(caplog))
    for secret in (password, replica):
        assert_no_leak(secret, texts, f"{form}: connection failure")


# -- spans and logs of a working connection (PostgreSQL) -----------------------------------------

SPAN_SCRIPT = r'''
import asyncio, json, logging, sys, traceback
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from aegis_tortoise import DatabaseManager, ServiceException
from aegis_tortoise.config import DatabaseSettings

lines = []

class Keep(logging.Handler):
    def emit(self, record):
        lines.append(self.format(record) + repr(record.args))

handler = Keep()
handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
logging.getLogger("aegis_tortoise").addHandler(handler)
logging.getLogger("aegis_tortoise").setLevel(logging.DEBUG)


async def main(cases):
    errors = []
    for primary, replica in cases:
        db = DatabaseManager(primary, models=["aegis_tortoise.examples.models"], pool_size=1,
                             max_overflow=0, pool_timeout=3, echo=True,
                             replica_urls=[replica],
                             settings=DatabaseSettings(database_slow_query_ms=0))
        with trace.get_tracer("test").start_as_current_span("request"):
            async with db.session() as session:
                await session.execute("SELECT 1 AS one")
            async with db.session(readonly=True) as session:  # the replica is down: primary
                await session.execute("SELECT 2 AS two")
            try:
                async with db.session() as session:
                    await session.execute("SELECT * FROM no_such_table")
            except ServiceException as exc:
                errors.append("".join(traceback.format_exception(exc)))
            errors.append(repr(db))
        for _ in range(3):
            await asyncio.sleep(0)
        await db.close()
    return errors


errors = asyncio.run(main(json.loads(sys.argv[1])))
print(json.dumps({
    "spans": [{"name": s.name, "attributes": {k: str(v) for k, v in s.attributes.items()},
               "events": [str(e.attributes) for e in s.events]}
              for s in exporter.get_finished_spans()],
    "logs": lines, "errors": errors}))
'''


@pytest.mark.postgres
@profile(0.05)
@given(secrets=st.lists(st.tuples(passwords(), passwords()), min_size=3, max_size=3),
       scheme=st.sampled_from(SCHEMES))
def test_spans_and_logs_of_a_working_connection(secrets: list[tuple[Password, Password]],
                                                scheme: str, pg_database: str,
                                                tmp_path: Path) -> None:
    """A working connection (the test server trusts local connections, so any password
    connects), echo on, every logger at DEBUG, a replica that is down, a failing statement,
    a tracer provider installed: no span attribute, log line or error shows a password."""
    database = pg_database.rsplit("/", 1)[1]
    cases = [(url(scheme, primary, 5432, encoded=True, database=database, user="postgres"),
              url(scheme, replica, free_port(), encoded=True, database=database,
                  user="postgres"))
             for primary, replica in secrets]
    script = tmp_path / "spans.py"
    script.write_text(SPAN_SCRIPT)

    async def run() -> tuple[int | None, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), json.dumps(cases), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, out, err

    returncode, out, err = asyncio.run(run())
    assert returncode == 0, err.decode()
    found = json.loads(out)
    assert found["spans"], "no span was recorded: the check would prove nothing"
    assert found["logs"], "nothing was logged: the check would prove nothing"
    texts = [json.dumps(span, ensure_ascii=False) for span in found["spans"]]
    texts += found["logs"] + found["errors"] + [err.decode()]
    for primary, replica in secrets:
        for secret in (primary, replica):
            assert_no_leak(secret, texts, "span, log or error of a working connection")


@pytest.mark.parametrize("typed", ["/Qlead;Qsecret", "Qsecret:/Qrest"],
                         ids=["leading-slash", "colon-slash"])
def test_tortoise_config_url_with_a_typed_password(typed: str) -> None:
    """Found by the generator above: a Tortoise config URL whose password is typed with
    '/' (and ':'): the manager's repr must not show it as a path, and an error must not
    carry Tortoise's ValueError quoting it as a port in its traceback."""
    password = Password(typed, tuple(p for p in typed.replace(":", "/").replace(";", "/")
                                     .split("/") if p))
    config = {"connections": {"default": f"asyncpg://app:{typed}@{HOST}:{free_port()}/appdb"},
              "apps": {"models": {"models": EXAMPLE_MODELS}}}
    try:
        manager = DatabaseManager.from_tortoise_config(config)
    except ConfigurationError as exc:
        assert_no_leak(password, error_texts(exc), "from_tortoise_config error")
    else:
        assert_no_leak(password, [repr(manager), str(manager.url)], "repr(DatabaseManager)")
