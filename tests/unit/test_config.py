"""URL parsing and translation into Tortoise connection settings (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from aegis_tortoise import ConfigurationError, DatabaseManager, DatabaseURL, parse_database_url
from aegis_tortoise._tortoise_config import load_tortoise_config, take_pgbouncer_flags

SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    ("url", "dialect", "database"),
    [
        ("postgresql+asyncpg://u:pw@db.example:5433/app", "postgres", "app"),
        ("postgresql://u:pw@db.example/app", "postgres", "app"),
        ("postgres://u:pw@db.example/app", "postgres", "app"),
        ("asyncpg://u:pw@db.example/app", "postgres", "app"),
        ("sqlite+aiosqlite:///data/app.db", "sqlite", "data/app.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite", ":memory:"),
        ("sqlite:///x.db", "sqlite", "x.db"),
        ("sqlite:////abs/x.db", "sqlite", "/abs/x.db"),
        ("sqlite://:memory:", "sqlite", ":memory:"),
        ("sqlite://", "sqlite", ":memory:"),
    ],
)
def test_every_url_form_parses(url: str, dialect: str, database: str) -> None:
    parsed = parse_database_url(url)
    assert parsed.dialect == dialect
    assert parsed.database == database


def test_postgres_url_parts_and_tortoise_credentials() -> None:
    parsed = parse_database_url(
        f"postgresql+asyncpg://alice:{SECRET}@db.example:5433/app"
        "?application_name=svc&connect_timeout=3&sslmode=disable"
    )
    assert (parsed.host, parsed.port, parsed.user, parsed.password) == (
        "db.example", 5433, "alice", SECRET)
    conn = parsed.tortoise_connection(minsize=0)
    assert conn["engine"] == "tortoise.backends.asyncpg"
    creds = conn["credentials"]
    assert creds["host"] == "db.example"
    assert creds["port"] == 5433
    assert creds["database"] == "app"
    assert creds["application_name"] == "svc"
    assert creds["timeout"] == 3.0
    assert creds["ssl"] == "disable"
    assert creds["minsize"] == 0


def test_percent_encoded_password_is_decoded() -> None:
    parsed = parse_database_url("postgresql://u:p%40ss%2Fw@h/db")
    assert parsed.password == "p@ss/w"


def test_sqlite_tortoise_credentials_use_the_path() -> None:
    conn = parse_database_url("sqlite:////abs/x.db?busy_timeout=500").tortoise_connection()
    assert conn["engine"] == "tortoise.backends.sqlite"
    assert conn["credentials"] == {"file_path": "/abs/x.db", "busy_timeout": 500}


@pytest.mark.parametrize("url", [
    f"mysql://root:{SECRET}@localhost/app",
    f"oracle+cx://root:{SECRET}@localhost/app",
])
def test_unknown_scheme_is_named_and_password_hidden(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_database_url(url)
    scheme = url.split("://", maxsplit=1)[0]
    assert scheme in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert SECRET not in str(info.value.to_dict())


@pytest.mark.parametrize("url", [
    "postgresql://u:AAAA@host:notaport/db",
    # An unencoded '#', '?' or '/' in a password ends the authority part of a URL: the rest
    # of the password then reads as a port, query or path, and must not be echoed.
    "postgresql://u:AAAA#BBBB@host/db",
    "postgresql://u:AAAA?BBBB=CCCC@host/db",
    "postgresql://u:AAAA/BBBB@host/db",
    "postgresql://u:AAAA@[::1/db",
])
def test_malformed_postgres_url_never_shows_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_database_url(url)
    for text in (str(info.value), repr(info.value), str(info.value.to_dict())):
        for piece in ("AAAA", "BBBB", "CCCC"):
            assert piece not in text


def test_at_sign_in_query_must_be_encoded() -> None:
    # #18 item 12: any '@' after the host part may be a password's, so it is refused;
    # a query value with '@' is written percent-encoded.
    with pytest.raises(ConfigurationError, match="percent-encode"):
        parse_database_url("postgresql://u:pw@host/db?application_name=svc@host")
    parsed = parse_database_url("postgresql://u:pw@host/db?application_name=svc%40host")
    assert parsed.options == {"application_name": "svc@host"}


def test_missing_scheme_and_empty_url() -> None:
    with pytest.raises(ConfigurationError, match="no scheme"):
        parse_database_url("localhost/db")
    with pytest.raises(ConfigurationError, match="empty"):
        parse_database_url("  ")


def test_unknown_query_parameter_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        parse_database_url("postgresql://u@h/db?pool_size=3")


def test_database_url_repr_and_str_mask_the_password() -> None:
    parsed = parse_database_url(f"postgresql://alice:{SECRET}@h:5432/app")
    assert isinstance(parsed, DatabaseURL)
    for text in (repr(parsed), str(parsed), parsed.masked()):
        assert SECRET not in text
        assert "alice:***@h:5432/app" in text


def test_sqlite_masked_url_round_trips() -> None:
    for url in ("sqlite:////abs/x.db", "sqlite:///rel.db", "sqlite:///:memory:"):
        parsed = parse_database_url(url)
        assert parse_database_url(parsed.masked()).database == parsed.database


def _bouncer_config(*flags: str) -> dict[str, Any]:
    """A Tortoise config whose connections c0, c1, ... carry ``?pgbouncer=<flag>``."""
    connections = {f"c{i}": f"postgres://u@h:6432/db?pgbouncer={flag}"
                   for i, flag in enumerate(flags)}
    connections["lite"] = {"engine": "tortoise.backends.sqlite",
                           "credentials": {"file_path": ":memory:", "pgbouncer": "true"}}
    return load_tortoise_config({"connections": connections,
                                 "apps": {"models": {"models": ["aegis_tortoise.examples.models"],
                                                     "default_connection": "c0"}}})


def test_pgbouncer_flags_of_every_config_connection_are_taken() -> None:
    """asyncpg rejects the flag; the sessions' connection (c0) follows the manager's option,
    the others with pgbouncer=true get no named prepared statements."""
    config = _bouncer_config("true", "true", "false", "1")
    take_pgbouncer_flags(config, "c0")
    credentials = {name: c["credentials"] for name, c in config["connections"].items()}
    assert all("pgbouncer" not in c for c in credentials.values())
    cache = {name: c.get("statement_cache_size") for name, c in credentials.items()}
    assert cache == {"c0": None, "c1": 0, "c2": None, "c3": 0, "lite": None}


def test_a_pgbouncer_flag_in_a_config_must_be_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match=r"'c0' must be true or false") as info:
        DatabaseManager.from_tortoise_config(_bouncer_config("maybe"))
    assert info.value.details == {"connection": "c0", "field": "pgbouncer"}
    config = _bouncer_config("true", "maybe")
    with pytest.raises(ConfigurationError, match=r"'c1' must be true or false"):
        take_pgbouncer_flags(config, "c0")


def test_a_replica_urls_pgbouncer_flag_wins_over_the_managers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_PGBOUNCER", raising=False)
    replicas = ["postgresql://u@r1/db", "postgresql://u@r2/db?pgbouncer=false",
                "postgresql://u@r3/db?pgbouncer=true"]
    for primary, expected in (("postgresql://u@p/db?pgbouncer=true", [True, False, True]),
                              ("postgresql://u@p/db", [False, False, True])):
        db = DatabaseManager(primary, models=[], replica_urls=replicas)
        modes = [r.pgbouncer for r in db._replicas.replicas]
        cache = [db._replicas._pool_options(r).get("statement_cache_size")
                 for r in db._replicas.replicas]
        assert (modes, cache) == (expected, [0 if on else None for on in expected]), primary
