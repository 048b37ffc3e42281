"""Tortoise configs as a manager reads them: loading, the primary connection, app labels.

A service that runs on plain Tortoise has a ``TORTOISE_ORM`` dict (or a ``TortoiseConfig``,
a dotted path to either, or a JSON/YAML file). :func:`load_tortoise_config` accepts each of
these and returns the plain dict Tortoise itself would use; its URLs keep Tortoise's meaning
(``sqlite:///tmp/x.db`` is ``/tmp/x.db``). :func:`config_from_url` builds the same shape for
a ``DatabaseManager(database_url, models)``, with one connection named ``"default"`` and an
app for every label the model modules declare.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from tortoise.backends.base.config_generator import expand_db_url, generate_config
from tortoise.config import TortoiseConfig
from tortoise.exceptions import ConfigurationError as TortoiseConfigurationError

from aegis_tortoise._modules import module_models
from aegis_tortoise.config import (
    DatabaseURL,
    credentials_pgbouncer,
    parse_database_url,
    refuse_unencoded_password,
)
from aegis_tortoise.errors import ConfigurationError

__all__ = [
    "DEFAULT_CONNECTION",
    "RegistrationError",
    "app_labels",
    "config_from_url",
    "config_source",
    "context_config",
    "load_tortoise_config",
    "pool_from_credentials",
    "primary_connection",
    "take_pgbouncer_flags",
    "url_of_connection",
]

DEFAULT_CONNECTION = "default"
DEFAULT_APP = "models"
_ENGINES = {
    "tortoise.backends.asyncpg": "postgres",
    "tortoise.backends.sqlite": "sqlite",
    "aegis_tortoise._sqlite": "sqlite",
}
_CONFIG_FILE_SUFFIXES = (".json", ".yml", ".yaml")


class RegistrationError(ConfigurationError, TortoiseConfigurationError):
    """A registration or ``Tortoise.init`` that cannot start: this library's
    :class:`ConfigurationError` and Tortoise's own, so a service's
    ``except tortoise.exceptions.ConfigurationError`` (what Tortoise raises) keeps matching."""


def load_tortoise_config(config: Mapping[str, Any] | TortoiseConfig | str) -> dict[str, Any]:
    """A Tortoise config as a dict, from a dict, a TortoiseConfig, a dotted path or a file.

    Connections given as URLs are expanded the way Tortoise expands them.

    Raises:
        ConfigurationError: the config cannot be found or Tortoise rejects it.
    """
    source = config
    if isinstance(config, str):
        config = _resolve_reference(config)
    try:
        if isinstance(config, TortoiseConfig):
            typed = config
        elif isinstance(config, Mapping):
            typed = TortoiseConfig.from_dict(config)
        else:
            raise ConfigurationError(
                f"A Tortoise config must be a dict, a TortoiseConfig, a dotted path or a "
                f".json/.yml file; {source!r} is a {type(config).__name__}",
                details={"config": type(config).__name__})
        result = copy.deepcopy(typed.to_dict())
        result["connections"] = {
            name: _expand(name, conn) if isinstance(conn, str) else conn
            for name, conn in result["connections"].items()}
    except TortoiseConfigurationError as exc:
        raise ConfigurationError(f"Invalid Tortoise config: {exc}") from exc
    return result


def config_source(config: Mapping[str, Any] | TortoiseConfig | str | None = None,
                  config_file: str | None = None, db_url: str | None = None,
                  modules: Mapping[str, Iterable[str | ModuleType]] | None = None,
                  ) -> Mapping[str, Any] | TortoiseConfig | str:
    """The one config source of ``Tortoise.init``'s arguments: ``config``, ``config_file``
    or ``db_url`` + ``modules`` (a dict of app label to model modules), as Tortoise takes
    them.

    Raises:
        ConfigurationError: none or several of them, or ``db_url`` without ``modules``.
    """
    if sum(map(bool, (config, config_file, db_url))) != 1:
        raise ConfigurationError(
            'Give exactly one of "config", "config_file" or "db_url" (with "modules"), as '
            "Tortoise.init takes them", details={"field": "config"})
    if config:
        return config
    if config_file:
        return str(config_file)
    if not modules or not isinstance(modules, Mapping):
        raise ConfigurationError(
            'db_url needs "modules": a dict of app label to model modules, such as '
            '{"models": ["app.models"]}', details={"field": "modules"})
    generated: dict[str, Any] = generate_config(
        str(db_url), app_modules={label: list(entries) for label, entries in modules.items()})
    return generated


def _expand(name: str, url: str) -> dict[str, Any]:
    """Tortoise's expansion of a connection URL; ours for a multi-host PostgreSQL URL,
    which Tortoise 1.1.9 cannot parse (``h1:5432,h2:5433``).

    Raises:
        ConfigurationError: a malformed URL, naming the connection, never a part of the URL
            (an unencoded password would be read as a port or host, and quoted).
    """
    scheme, _, rest = url.partition("://")
    if not scheme.lower().startswith(("sqlite", "aiosqlite")):  # a file path may hold '@'
        refuse_unencoded_password(url, scheme.lower())
    if "," in rest.split("/", 1)[0] and parse_database_url(url).dialect == "postgres":
        parsed = parse_database_url(url)
        connection = parsed.tortoise_connection()
        if "pgbouncer" in parsed.options:  # read by the manager, as Tortoise would keep it
            connection["credentials"]["pgbouncer"] = parsed.options["pgbouncer"]
        return connection
    try:
        expanded: dict[str, Any] = expand_db_url(url)
    except (TortoiseConfigurationError, ValueError):
        # Not chained: Tortoise 1.1.9's ValueError (urlparse's, int() of the port or of a
        # query value) quotes the text it could not read.
        raise ConfigurationError(
            f"The URL of the Tortoise connection {name!r} is malformed: check its port, "
            "brackets and query values, and percent-encode special characters in the "
            "password (urllib.parse.quote(password, safe=''))",
            details={"connection": name}) from None
    return expanded


def _resolve_reference(reference: str) -> Any:
    """A config file's path, or ``"package.module.NAME"`` naming a dict or TortoiseConfig."""
    if reference.endswith(_CONFIG_FILE_SUFFIXES) or os.path.sep in reference:
        if not os.path.isfile(reference):
            raise ConfigurationError(f"Tortoise config file {reference!r} does not exist",
                                     details={"config_file": reference})
        try:
            return TortoiseConfig.from_config_file(reference)
        except (TortoiseConfigurationError, ValueError, ImportError) as exc:
            raise ConfigurationError(f"Cannot read Tortoise config file {reference!r}: {exc}",
                                     details={"config_file": reference}) from exc
    module_name, _, attribute = reference.rpartition(".")
    if not module_name:
        raise ConfigurationError(
            f"{reference!r} is neither a config file nor a dotted path such as "
            "'app.config.TORTOISE_ORM'", details={"config": reference})
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"Cannot import {module_name!r} for the Tortoise config "
                                 f"{reference!r}: {exc}", details={"config": reference}) from exc
    if not hasattr(module, attribute):
        raise ConfigurationError(f"Module {module_name!r} has no {attribute!r} (the Tortoise "
                                 f"config {reference!r})", details={"config": reference})
    return getattr(module, attribute)


def primary_connection(config: Mapping[str, Any]) -> str:
    """The connection a manager's sessions use: ``"default"``, the only one, or the first
    app's ``default_connection`` (as Tortoise picks its default connection)."""
    connections = config["connections"]
    if DEFAULT_CONNECTION in connections or not connections:
        return DEFAULT_CONNECTION
    if len(connections) == 1:
        return str(next(iter(connections)))
    for app in config["apps"].values():
        name = app.get("default_connection", DEFAULT_CONNECTION)
        if name in connections:
            return str(name)
    return str(next(iter(connections)))


def take_pgbouncer_flags(config: dict[str, Any], alias: str) -> None:
    """Take this library's ``pgbouncer`` flag out of every connection's credentials.

    asyncpg rejects it as an unknown keyword. The sessions' connection (``alias``) follows
    the manager's ``pgbouncer`` option, which read the flag already; any other PostgreSQL
    connection of the config that sets it gets no named prepared statements
    (``statement_cache_size=0``), as PgBouncer's transaction pooling needs.
    """
    for name, connection in config["connections"].items():
        credentials = connection.get("credentials") or {}
        if "pgbouncer" not in credentials:
            continue
        through_bouncer = credentials_pgbouncer(name, credentials)
        del credentials["pgbouncer"]
        if through_bouncer and name != alias and _ENGINES.get(
                str(connection.get("engine", ""))) == "postgres":
            credentials["statement_cache_size"] = 0


def _port(name: str, port: Any) -> int | None:
    """The ``port`` of connection ``name``'s credentials as an int (None: not given)."""
    if port in (None, ""):
        return None
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = -1
    if isinstance(port, bool | float) or not 0 < number < 65536:
        # The value is quoted by type only: a misplaced secret must not reach a log.
        raise ConfigurationError(
            f"Connection {name!r}: the 'port' of its credentials is not an integer 1-65535 "
            f"(got a {type(port).__name__})", details={"connection": name, "field": "port"})
    return number


def url_of_connection(name: str, connection: Mapping[str, Any]) -> DatabaseURL:
    """The DatabaseURL of a Tortoise connection dict (for messages and the dialect)."""
    engine = str(connection.get("engine", ""))
    dialect = _ENGINES.get(engine)
    if dialect is None:
        raise ConfigurationError(
            f"Connection {name!r} uses engine {engine!r}; aegis-tortoise sessions run on "
            "tortoise.backends.asyncpg (PostgreSQL) and tortoise.backends.sqlite",
            details={"connection": name, "engine": engine})
    credentials = dict(connection.get("credentials") or {})
    if dialect == "sqlite":
        return DatabaseURL(dialect="sqlite", scheme="sqlite",
                           database=str(credentials.get("file_path", ":memory:")))
    return DatabaseURL(
        dialect="postgres", scheme="asyncpg", host=credentials.get("host"),
        port=_port(name, credentials.get("port")), user=credentials.get("user"),
        password=credentials.get("password"), database=credentials.get("database"))


def app_labels(modules: Iterable[str | ModuleType]) -> dict[str, list[str | ModuleType]]:
    """Model modules grouped by the app labels their models declare (``Meta.app``).

    Tortoise discovers a model only under its own label, so a module whose models say
    ``app = "shop"`` must be listed under ``"shop"``; models without a label go to
    ``"models"`` (and keep it: Tortoise writes the label onto the class). The modules are
    importable: the manager checked them first (``_modules.check_model_modules``).
    """
    labels: dict[str, list[str | ModuleType]] = {}
    for entry in modules:
        module = importlib.import_module(entry) if isinstance(entry, str) else entry
        found = {model._meta.app or DEFAULT_APP for model in module_models(module)}
        for label in sorted(found) or [DEFAULT_APP]:
            labels.setdefault(label, []).append(entry)
    return labels


def config_from_url(connection: dict[str, Any], modules: Iterable[str | ModuleType],
                    name: str = DEFAULT_CONNECTION) -> dict[str, Any]:
    """A Tortoise config with one connection and the apps of ``modules``."""
    apps = {label: {"models": [m if isinstance(m, str) else m.__name__ for m in entries],
                    "default_connection": name}
            for label, entries in app_labels(modules).items()}
    return {"connections": {name: connection}, "apps": apps}


def pool_from_credentials(config: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``pool_size`` from an asyncpg ``maxsize`` in the session connection's
    credentials (and no overflow), when ``options`` give no ``pool_size``."""
    credentials = config["connections"][primary_connection(config)].get("credentials", {})
    if "pool_size" not in options and "maxsize" in credentials:
        options["pool_size"] = int(credentials["maxsize"])
        options.setdefault("max_overflow", 0)
    return options


def context_config(url: DatabaseURL, models: Iterable[str | ModuleType], alias: str, *,
                   tortoise_config: dict[str, Any] | None, driver_options: dict[str, Any],
                   pool_options: dict[str, Any]) -> dict[str, Any]:
    """The Tortoise config a manager initialises its context with: its own Tortoise config
    (or one built from ``url`` and ``models``), the driver options on the session
    connection ``alias``.

    The session connection gets the pool's own settings, which win over driver options of
    the same name (the backend already bounds a given connect timeout by pool_timeout), and
    sqlite connections get this library's engine (a daemon thread).
    """
    if tortoise_config is None:
        connection = url.tortoise_connection(**driver_options)
        config = config_from_url(connection, models, alias)
    else:
        config = copy.deepcopy(tortoise_config)
        primary = config["connections"][alias]
        primary.setdefault("credentials", {}).update(driver_options)
        take_pgbouncer_flags(config, alias)  # this library's, not asyncpg's
    config["connections"][alias]["credentials"].update(pool_options)
    for connection in config["connections"].values():
        if connection.get("engine") == "tortoise.backends.sqlite":
            connection["engine"] = "aegis_tortoise._sqlite"
    return config
