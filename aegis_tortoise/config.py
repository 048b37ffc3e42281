"""Settings (pydantic-settings): ``DatabaseSettings``, environment checks, pgbouncer option.

URL parsing and masking live in :mod:`aegis_tortoise._urls` and are re-exported here
(``parse_database_url``, ``DatabaseURL``, ``mask_url``, ``split_hosts``,
``refuse_unencoded_password``), so ``from aegis_tortoise.config import ...`` keeps working.
SQLAlchemy-style and Tortoise-style URLs are both accepted, so the ``DATABASE_URL`` of a
service migrating from the original library keeps working.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Annotated, Any

import pydantic
from pydantic import Field, SecretStr, SerializationInfo, field_serializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aegis_tortoise._urls import (
    DatabaseURL,
    mask_url,
    parse_database_url,
    refuse_unencoded_password,
    split_hosts,
    url_flag,
)
from aegis_tortoise.errors import ConfigurationError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DatabaseSettings",
    "DatabaseURL",
    "Settings",
    "credentials_pgbouncer",
    "default_url_in_use",
    "mask_url",
    "parse_database_url",
    "pgbouncer_option",
    "refuse_unencoded_password",
    "split_hosts",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///:memory:"

logger = logging.getLogger("aegis_tortoise.config")


def _split_models(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class DatabaseSettings(BaseSettings):
    """Database settings, read from the environment and ``.env``.

    Field names are the seed library's (``settings.database_url``); each is read from the
    upper-case environment variable of the same name (``DATABASE_URL``). A wrong value raises
    :class:`ConfigurationError` naming the variable.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        validate_default=True,
        # pydantic's own ValidationError (model_validate) would quote the input, the URLs
        # with their passwords. A model of yours that holds DatabaseSettings needs the same.
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="DATABASE_URL: SQLAlchemy- or Tortoise-style URL; default in-memory sqlite.",
    )
    database_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DATABASE_MODELS: comma-separated Tortoise model modules.",
    )
    database_pool_size: int = Field(
        default=20, ge=1,
        description="DATABASE_POOL_SIZE: connections kept for reuse (PostgreSQL).",
    )
    database_max_overflow: int = Field(
        default=10, ge=0,
        description="DATABASE_MAX_OVERFLOW: extra connections above pool_size under load.",
    )
    database_pool_timeout: float = Field(
        default=30.0, gt=0,
        description="DATABASE_POOL_TIMEOUT: seconds to wait for a free connection.",
    )
    database_pool_recycle: float = Field(
        default=3600.0, ge=0,
        description="DATABASE_POOL_RECYCLE: seconds a connection may stay idle before it is "
                    "closed and replaced; 0 disables.",
    )
    database_retry_attempts: int = Field(
        default=3, ge=1,
        description="DATABASE_RETRY_ATTEMPTS: with_db_retry's default max_attempts.",
    )
    database_retry_backoff: float = Field(
        default=2.0, ge=0,
        description="DATABASE_RETRY_BACKOFF: with_db_retry's default backoff_factor (s).",
    )
    database_echo: bool = Field(
        default=False,
        description="DATABASE_ECHO: log every SQL statement at INFO level.",
    )
    database_pgbouncer: bool = Field(
        default=False,
        description="DATABASE_PGBOUNCER: connections go through PgBouncer in transaction "
        "pooling mode (as ?pgbouncer=true in the URL): no named prepared statements.",
    )
    database_replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DATABASE_REPLICA_URLS: comma-separated URLs of read replicas, for "
        "db.session(readonly=True).",
    )
    database_max_replica_lag: float = Field(
        default=5.0, gt=0,
        description="DATABASE_MAX_REPLICA_LAG: seconds a replica may lag behind before "
        "readonly sessions skip it.",
    )
    database_read_your_writes: float = Field(
        default=2.0, ge=0,
        description="DATABASE_READ_YOUR_WRITES: seconds after a task committed a write during "
        "which its readonly sessions use the primary; 0 disables.",
    )
    database_slow_query_ms: float | None = Field(
        default=None, ge=0,
        description="DATABASE_SLOW_QUERY_MS: a WARNING on aegis_tortoise.sql for each "
        "statement that takes at least this many milliseconds; unset: none.",
    )
    database_slow_query_parameters: bool = Field(
        default=False,
        description="DATABASE_SLOW_QUERY_PARAMETERS: show parameter values in slow-query "
        "warnings (redacted by default).",
    )

    database_cursor_secret: SecretStr | None = Field(
        default=None,
        description="DATABASE_CURSOR_SECRET: the key that signs keyset cursors, at least 16 "
        "bytes, the same for every instance of a service. Unset: a random key per process "
        "(cursors then fail after a restart and across instances; a WARNING says so).",
    )

    @field_validator("database_cursor_secret")
    @classmethod
    def _long_cursor_secret(cls, value: SecretStr | None) -> SecretStr | None:
        from aegis_tortoise._cursor import checked_secret

        checked_secret(value, "DATABASE_CURSOR_SECRET")
        return value

    database_isolation_level: str | None = Field(
        default=None,
        description="DATABASE_ISOLATION_LEVEL: 'read committed', 'repeatable read' or "
        "'serializable' for every session's transactions; unset: the server's default.",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise _settings_error(exc) from None
        _warn_unknown_names(values.get("_env_file", self.model_config.get("env_file")),
                            values.get("_env_file_encoding",
                                       self.model_config.get("env_file_encoding")))

    @property
    def url_is_default(self) -> bool:
        """Whether ``database_url`` is the default (nothing set it: no ``DATABASE_URL`` in
        the environment or ``.env``, no argument)."""
        return "database_url" not in self.model_fields_set

    @field_validator("database_models", "database_replica_urls", mode="before")
    @classmethod
    def _models_from_csv(cls, value: Any) -> Any:
        return _split_models(value)

    @field_validator("database_replica_urls")
    @classmethod
    def _valid_replica_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parse_database_url(url)
        return value

    @field_validator("database_isolation_level")
    @classmethod
    def _valid_isolation(cls, value: str | None) -> str | None:
        from aegis_tortoise._isolation import isolation_level

        return isolation_level(value, "DATABASE_ISOLATION_LEVEL") if value else None

    @field_validator("database_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        parse_database_url(value)
        return value

    @field_serializer("database_url", "database_replica_urls")
    def _masked_urls(self, value: Any, info: SerializationInfo) -> Any:
        # model_dump(), model_dump_json() and dict() go to logs, debug pages and error
        # reports: the password is masked there, as in repr(). The attributes keep the
        # real URL, and model_dump(context={"reveal_secrets": True}) gives it too.
        if isinstance(info.context, dict) and info.context.get("reveal_secrets"):
            return value
        if isinstance(value, list):
            return [mask_url(str(url)) for url in value]
        return mask_url(str(value))

    @property
    def parsed_url(self) -> DatabaseURL:
        """``database_url`` parsed (the password masked in its ``repr``)."""
        return parse_database_url(self.database_url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "database_url":
                yield name, parse_database_url(str(value)).masked()
            elif name == "database_replica_urls":
                yield name, [parse_database_url(str(url)).masked() for url in value]
            else:
                yield name, value


_warned: set[str] = set()


def _env_file_names(env_file: Any, encoding: str | None = None) -> list[str]:
    """The variable names of the ``.env`` file(s) pydantic-settings reads, in its encoding.

    A file that cannot be read gives no names: the check only warns, it never fails.
    """
    if env_file is None:
        return []
    files = [env_file] if isinstance(env_file, (str, os.PathLike)) else list(env_file)
    names: list[str] = []
    for path in files:
        if os.path.isfile(path):
            from dotenv import dotenv_values  # pydantic-settings' own .env reader

            try:
                names.extend(str(name) for name in dotenv_values(path, encoding=encoding))
            except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
                logger.debug("cannot read %s for unknown DATABASE_* names", path,
                             exc_info=True)
    return names


def _known_names() -> list[str]:
    """The variable names of DatabaseSettings' fields and of every subclass's.

    An app's subclass adds settings of its own (``DATABASE_SCHEMA``); they are read, even
    when a plain DatabaseSettings (the manager's) is the one that looks at the environment.
    """
    names: set[str] = set()
    classes: list[type[DatabaseSettings]] = [DatabaseSettings]
    while classes:
        cls = classes.pop()
        names.update(name.upper() for name in cls.model_fields)
        classes.extend(cls.__subclasses__())
    return sorted(names)


def _warn_unknown_names(env_file: Any, encoding: str | None = None) -> None:
    """A WARNING (once a name) for each ``DATABASE_*`` variable that is no setting.

    ``DATABASE_POOLSIZE=5`` would otherwise be ignored in silence and leave the pool at its
    default. The known names are the fields of :class:`DatabaseSettings` and its subclasses.
    """
    known = _known_names()
    for source, names in (("environment", list(os.environ)),
                          (".env", _env_file_names(env_file, encoding))):
        for name in names:
            upper = name.upper()
            if not upper.startswith("DATABASE_") or upper in known or upper in _warned:
                continue
            _warned.add(upper)
            closest = (difflib.get_close_matches(upper, known, n=1, cutoff=0.5)
                       or difflib.get_close_matches(upper, known, n=1, cutoff=0))[0]
            logger.warning("%s (in the %s) is not a database setting and is ignored; did you "
                           "mean %s?", name, source, closest)


def default_url_in_use(settings: DatabaseSettings | None) -> bool:
    """Whether ``settings`` give the default URL; if so, the WARNING (once a process) that
    names ``DATABASE_URL``."""
    if settings is None or not settings.url_is_default:
        return False
    if "<default url>" in _warned:
        return True
    _warned.add("<default url>")
    logger.warning(
        "DATABASE_URL is not set: using the default %s, an in-memory sqlite database that "
        "is empty at every start and lost at exit. Set DATABASE_URL (environment or .env) "
        "for a service; the default suits scripts, demos and tests", DEFAULT_DATABASE_URL)
    return True


def credentials_pgbouncer(name: str, credentials: dict[str, Any]) -> bool | None:
    """The ``pgbouncer`` flag of a Tortoise config's connection (its URL's
    ``?pgbouncer=true``, kept by Tortoise as a string), or None when it has none.

    Raises:
        ConfigurationError: the value is not a boolean, naming the connection.
    """
    given = credentials.get("pgbouncer")
    if given is None or isinstance(given, bool):
        return given
    try:
        return url_flag(str(given))
    except ValueError:
        raise ConfigurationError(
            f"pgbouncer of the Tortoise connection {name!r} must be true or false, got "
            f"{given!r}", details={"connection": name, "field": "pgbouncer"}) from None


def pgbouncer_option(value: bool | None, url: DatabaseURL, config: dict[str, Any] | None,
                     alias: str, settings: DatabaseSettings | None) -> bool:
    """A manager's ``pgbouncer``: the option, else the URL's (or Tortoise config
    connection's) ``pgbouncer``, else ``DATABASE_PGBOUNCER``."""
    if value is None and config is not None:
        value = credentials_pgbouncer(alias, config["connections"][alias].get("credentials", {}))
    if value is None:
        value = url.options.get("pgbouncer")
    if value is None:
        value = (settings if settings is not None else DatabaseSettings()).database_pgbouncer
    if not isinstance(value, bool):
        raise ConfigurationError(f"pgbouncer must be True or False, got {value!r}",
                                 details={"field": "pgbouncer"})
    return value


# Settings whose values may hold passwords or keys (DATABASE_URL, DATABASE_REPLICA_URLS, a
# secret of a subclass): an error never quotes them.
_SECRET_VARIABLE = re.compile(r"URL|SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL|DSN")


def _settings_error(exc: pydantic.ValidationError) -> ConfigurationError:
    problems = []
    variables = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = field.upper()
        variables.append(variable)
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, ConfigurationError):
            message = ctx_error.message
        else:
            message = error["msg"]
            raw = os.environ.get(variable)
            if raw is not None and not _SECRET_VARIABLE.search(variable):
                message += f" (got {raw!r})"
        problems.append(f"{variable}: {message}")
    return ConfigurationError(
        "Invalid database settings: " + "; ".join(problems),
        details={"variables": variables},
    )


Settings = DatabaseSettings
