"""Database URLs: parsing (``parse_database_url``), the parsed form (``DatabaseURL``) and masking.

SQLAlchemy-style URLs (``postgresql+asyncpg://``, ``sqlite+aiosqlite:///x.db``) and
Tortoise-style URLs (``asyncpg://``, ``sqlite://:memory:``) are both accepted. Errors never
quote a password. Every public name is re-exported by :mod:`aegis_tortoise.config`, the
place to import them from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from aegis_tortoise.errors import ConfigurationError

__all__ = [
    "DatabaseURL",
    "mask_url",
    "parse_database_url",
    "refuse_unencoded_password",
    "split_hosts",
    "url_flag",
]

_POSTGRES_SCHEMES = frozenset({
    "postgresql+asyncpg", "postgresql", "postgres", "asyncpg", "postgres+asyncpg",
})
_SQLITE_SCHEMES = frozenset({"sqlite+aiosqlite", "sqlite", "aiosqlite"})
_SUPPORTED = sorted(_POSTGRES_SCHEMES | _SQLITE_SCHEMES)

def url_flag(value: str) -> bool:
    """A boolean URL or settings flag (``true``/``1``/``yes``/``on``, or false ones)."""
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(value)


# Query parameters of a PostgreSQL URL that we pass on to asyncpg, with their types
# (pgbouncer is this library's own: see DatabaseManager's pgbouncer option).
_PG_QUERY_PARAMS: dict[str, Any] = {
    "pgbouncer": url_flag,
    "target_session_attrs": str,
    "ssl": str,
    "sslmode": str,
    "application_name": str,
    "schema": str,
    "statement_cache_size": int,
    "command_timeout": float,
    "connect_timeout": float,
}
_SQLITE_QUERY_PARAMS: dict[str, Any] = {
    "journal_mode": str,
    "journal_size_limit": int,
    "synchronous": str,
    "foreign_keys": str,
    "busy_timeout": int,
}


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL. ``repr``/``str`` mask the password.

    Attributes:
        dialect: ``"postgres"`` or ``"sqlite"``.
        scheme: The scheme as written in the URL (``postgresql+asyncpg``).
    """

    dialect: Literal["postgres", "sqlite"]
    scheme: str
    #: One host, or several as libpq writes them (``h1:5432,h2:5433``): see split_hosts.
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    database: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_memory(self) -> bool:
        """Whether this is an in-memory sqlite database."""
        return self.dialect == "sqlite" and self.database in (":memory:", "")

    def masked(self) -> str:
        """The URL with the password replaced by ``***`` (safe for logs and messages)."""
        if self.dialect == "sqlite":
            return f"{self.scheme}:///{self.database}"
        auth = ""
        if self.user:
            auth = self.user + (":***" if self.password else "") + "@"
        elif self.password:
            auth = ":***@"
        host = self.host or ""
        port = f":{self.port}" if self.port and "," not in host else ""
        return f"{self.scheme}://{auth}{host}{port}/{self.database or ''}"

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked()!r})"

    def tortoise_connection(self, **driver_options: Any) -> dict[str, Any]:
        """The Tortoise connection dict (``{"engine": ..., "credentials": ...}``)."""
        if self.dialect == "sqlite":
            credentials: dict[str, Any] = {"file_path": self.database or ":memory:"}
            credentials.update(self.options)
            credentials.update(driver_options)
            return {"engine": "tortoise.backends.sqlite", "credentials": credentials}
        credentials = {
            "host": self.host or "localhost",
            "port": self.port or 5432,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }
        options = dict(self.options)
        sslmode = options.pop("sslmode", None)
        if sslmode is not None and "ssl" not in options:
            options["ssl"] = sslmode
        options.pop("pgbouncer", None)  # read by the manager, not a driver option
        connect_timeout = options.pop("connect_timeout", None)
        if connect_timeout is not None:
            options["timeout"] = connect_timeout
        credentials.update(options)
        credentials.update(driver_options)
        return {"engine": "tortoise.backends.asyncpg", "credentials": credentials}


def split_hosts(host: str, port: Any = None) -> tuple[list[str], list[int]]:
    """The hosts and ports of a multi-host ``host`` (``"h1:5432,h2:5433"``), for asyncpg.

    A host without a port gets ``port`` (5432 when none). ``[::1]:5433`` is an IPv6 host.
    """
    default = int(port) if port else 5432
    hosts: list[str] = []
    ports: list[int] = []
    for raw in host.split(","):
        spec = raw.strip()
        if spec.startswith("["):
            name, _, rest = spec[1:].partition("]")
            number = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, number = spec.partition(":")
        if not name or (number and not number.isdigit()):
            raise ConfigurationError(
                f"Invalid host {spec!r} in a multi-host database URL; write host:port pairs "
                "separated by commas (postgresql://user@h1:5432,h2:5433/db)",
                details={"host": spec})
        hosts.append(name)
        ports.append(int(number) if number else default)
    return hosts, ports


def _scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _query_options(query: str, allowed: dict[str, Any], scheme: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ConfigurationError(
                f"Unsupported query parameter {key!r} in a {scheme}:// database URL; "
                f"supported: {', '.join(sorted(allowed))}",
                details={"scheme": scheme, "parameter": key},
            )
        try:
            options[key] = allowed[key](value)
        except ValueError as exc:
            raise ConfigurationError(
                f"Query parameter {key!r} of the database URL has an invalid value {value!r}",
                details={"scheme": scheme, "parameter": key},
            ) from exc
    return options


def parse_database_url(url: str) -> DatabaseURL:
    """Parse a SQLAlchemy- or Tortoise-style database URL.

    ``sqlite:///x.db`` is relative and ``sqlite:////abs/x.db`` absolute, as in SQLAlchemy;
    ``sqlite://x.db`` (Tortoise style) is relative too. ``sqlite://``,
    ``sqlite:///:memory:`` and ``sqlite://:memory:`` are in-memory databases.

    Raises:
        ConfigurationError: for an unknown scheme or a malformed URL. The message names the
            scheme and never contains the password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("The database URL is empty; set DATABASE_URL, e.g. "
                                 "postgresql+asyncpg://user:password@localhost/dbname")
    url = url.strip()
    scheme = _scheme_of(url)
    if not scheme:
        raise ConfigurationError(
            "The database URL has no scheme (expected scheme://...); supported schemes: "
            + ", ".join(_SUPPORTED),
            details={"scheme": None},
        )
    if scheme in _SQLITE_SCHEMES:
        rest = url.split("://", 1)[1]
        rest, _, query = rest.partition("?")
        # SQLAlchemy: sqlite:///rel.db and sqlite:////abs.db; Tortoise: sqlite://rel.db
        path = rest[1:] if rest.startswith("/") else rest
        if path in ("", ":memory:"):
            path = ":memory:"
        return DatabaseURL(dialect="sqlite", scheme=scheme, database=path,
                           options=_query_options(query, _SQLITE_QUERY_PARAMS, scheme))
    if scheme in _POSTGRES_SCHEMES:
        return _parse_postgres(url, scheme)
    raise ConfigurationError(
        f"Unsupported database URL scheme {scheme!r}; supported schemes: "
        + ", ".join(_SUPPORTED),
        details={"scheme": scheme},
    )


def refuse_unencoded_password(url: str, scheme: str) -> None:
    """Refuse a server URL with an ``@`` after its host part (an unencoded password).

    Raises:
        ConfigurationError: naming the scheme only, never a part of the URL.
    """
    # An unencoded '/', '?' or '#' in the password ends the authority part early: the rest
    # of the password then reads as a port, host, path or query, and an error quoting those
    # would leak it (or a host name made of password text would be resolved). The sign is
    # an '@' after the authority, whatever comes before it: a database name, path or query
    # holds no '@', an unencoded password may.
    authority_and_rest = url.split("://", 1)[1]
    cut = min((i for i in (authority_and_rest.find(c) for c in "/?#") if i >= 0),
              default=len(authority_and_rest))
    if "@" in authority_and_rest[cut:]:
        raise ConfigurationError(
            f"The {scheme}:// database URL is malformed: an '@' follows its host part, so "
            "the user or password contains '@', ':', '/', '?', '#' or '%' unencoded; "
            "percent-encode your password (urllib.parse.quote(password, safe=''))",
            details={"scheme": scheme},
        )


def _parse_postgres(url: str, scheme: str) -> DatabaseURL:
    refuse_unencoded_password(url, scheme)
    authority_and_rest = url.split("://", 1)[1]
    cut = min((i for i in (authority_and_rest.find(c) for c in "/?#") if i >= 0),
              default=len(authority_and_rest))
    auth, at, hostlist = authority_and_rest[:cut].rpartition("@")
    if "," in hostlist:
        # Several hosts (libpq, asyncpg: tried in order, see target_session_attrs).
        hosts, ports = split_hosts(hostlist)
        single = _parse_postgres(
            f"{scheme}://{auth}{at}multihost{authority_and_rest[cut:]}", scheme)
        joined = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                          for h, p in zip(hosts, ports, strict=True))
        return dataclasses.replace(single, host=joined, port=None)
    try:
        parts: SplitResult = urlsplit(url)
        port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2]
        port_text = port_text.rpartition(":")[2] if ":" in port_text else ""
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(
                f"The port {port_text!r} in the {scheme}:// database URL is not a number "
                "between 0 and 65535",
                details={"scheme": scheme, "port": port_text},
            ) from None
        host = parts.hostname
    except ConfigurationError:
        raise
    except ValueError:
        raise ConfigurationError(
            f"The {scheme}:// database URL is malformed (check brackets and '@' in it; "
            "percent-encode special characters in the password)",
            details={"scheme": scheme},
        ) from None
    database = unquote(parts.path[1:]) if parts.path else None
    return DatabaseURL(
        dialect="postgres",
        scheme=scheme,
        host=unquote(host) if host else None,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=database or None,
        options=_query_options(parts.query, _PG_QUERY_PARAMS, scheme),
    )


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, everything else as written.

    Unlike :meth:`DatabaseURL.masked`, the query and every host are kept. A URL that does
    not parse is replaced whole (``"<invalid database URL>"``): it may hold a password.
    """
    try:
        parse_database_url(url)
    except ConfigurationError:
        return "<invalid database URL>"
    scheme, sep, rest = url.strip().partition("://")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, hosts = rest[:cut].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hosts}{rest[cut:]}"
