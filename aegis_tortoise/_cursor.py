"""Keyset cursors: the position after a page's last row, signed with the cursor secret.

A cursor is ``base64url(json(values)) "." base64url(mac)``. ``values`` are the ordering
columns of the page's last row as the database returned them (a timestamp with its offset,
sqlite's stored text, an interval's microseconds): sent back as they came, they compare
exactly as the rows do, whatever ``use_tz``, ``timezone`` or the process time zone. ``mac``
is HMAC-SHA256 (16 bytes) over the model, the ordering, the filters and the values.

A cursor is signed, not encrypted: whoever holds one can read the ordering values of the
last row of the page it follows (base64 of JSON). It cannot be changed, nor used with
another model, ordering or filter set (:class:`ValidationError`).

The key: ``BaseRepository.cursor_secret``, else ``DatabaseManager(cursor_secret=...)``, else
the setting ``DATABASE_CURSOR_SECRET`` (environment or ``.env``), else the deprecated
``AEGIS_CURSOR_SECRET`` environment variable; each at least 16 bytes. With none, a random
key made once per process signs, and a WARNING says (once) that cursors then fail after a
restart and across the instances of a service.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from tortoise.models import Model

from aegis_tortoise.errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager
    from aegis_tortoise.repository import BaseRepository

__all__ = ["MIN_SECRET_BYTES", "checked_secret", "decode", "encode", "filters_digest",
           "secret_for"]

logger = logging.getLogger("aegis_tortoise.keyset")

#: The shortest key accepted: an HMAC key of fewer bytes can be guessed.
MIN_SECRET_BYTES = 16
_MAC_BYTES = 16
_process_key: bytes | None = None
_warned: set[str] = set()


def checked_secret(value: str | bytes | SecretStr | None, name: str) -> bytes | None:
    """``value`` as key bytes (None stays None).

    Raises:
        ConfigurationError: shorter than 16 bytes (empty included), naming ``name``; the
            message never quotes the value.
    """
    if value is None:
        return None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str | bytes | bytearray):
        raise ConfigurationError(f"{name} must be a string or bytes, got {type(value).__name__}",
                                 details={"field": name})
    key = value.encode() if isinstance(value, str) else bytes(value)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes long (it has {len(key)}); "
            "it signs keyset cursors: use e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'", details={"field": name})
    return key


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _fallback_key() -> bytes:
    """The deprecated ``AEGIS_CURSOR_SECRET`` (read now, not at import), else the process's
    random key."""
    global _process_key
    legacy = os.environ.get("AEGIS_CURSOR_SECRET")
    if legacy is not None:
        key = checked_secret(legacy, "AEGIS_CURSOR_SECRET")
        _warn_once("legacy", "AEGIS_CURSOR_SECRET is deprecated: set DATABASE_CURSOR_SECRET "
                   "(environment or .env) instead")
        assert key is not None  # noqa: S101 - checked_secret keeps a str a str
        return key
    if _process_key is None:
        _process_key = secrets.token_bytes(32)
    _warn_once("random", "No DATABASE_CURSOR_SECRET is set: keyset cursors are signed with a "
               "random key made for this process, so they fail after a restart and across "
               "the instances of a service. Set DATABASE_CURSOR_SECRET (at least %d bytes, the "
               "same for every instance)", MIN_SECRET_BYTES)
    return _process_key


def manager_key(manager: DatabaseManager) -> bytes:
    """The manager's cursor key: its ``cursor_secret`` option, else the settings', else the
    fallbacks (cached on the manager)."""
    key: bytes | None = manager._cursor_key
    if key is None:
        from aegis_tortoise.config import DEFAULT_DATABASE_URL, DatabaseSettings

        settings = manager.settings
        if settings is None:  # every option was given: read the one setting still needed
            settings = DatabaseSettings(database_url=DEFAULT_DATABASE_URL, database_models=[])
        key = checked_secret(settings.database_cursor_secret, "DATABASE_CURSOR_SECRET")
        if key is None:
            key = _fallback_key()
        manager._cursor_key = key
    return key


def secret_for(repo: BaseRepository[Any]) -> bytes:
    """The key that signs ``repo``'s cursors (the class's ``cursor_secret`` first)."""
    own = type(repo).cursor_secret
    if own is not None:
        key = checked_secret(own, f"{type(repo).__name__}.cursor_secret")
        assert key is not None  # noqa: S101 - not None in, not None out
        return key
    return manager_key(repo.session.manager)


# -- the filters a cursor belongs to ------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A JSON form of a filter value that is the same in every process (no ``id()``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Model):
        return ["model", type(value).__name__, _canonical(value.pk)]
    if isinstance(value, enum.Enum):
        return ["enum", type(value).__name__, _canonical(value.value)]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda i: str(i[0]))}
    if isinstance(value, set | frozenset):
        return ["set", sorted((_canonical(v) for v in value), key=repr)]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dt.date | dt.time | dt.timedelta | decimal.Decimal | uuid.UUID):
        return [type(value).__name__, str(value), str(getattr(value, "tzinfo", None))]
    if isinstance(value, bytes):
        return ["bytes", base64.b64encode(value).decode()]
    return [type(value).__name__, repr(value)]


def filters_digest(filters: Mapping[str, Any] | None, include_deleted: bool) -> bytes:
    """A digest of the filter set (and ``include_deleted``) a cursor was made for."""
    canonical = {"filters": _canonical(dict(filters or {})), "deleted": include_deleted}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).digest()


# -- values <-> JSON ------------------------------------------------------------------------------


def _tagged(value: Any) -> Any:
    """A raw column value as JSON; non-JSON types as ``[tag, text]`` (lists are never raw
    ordering values, so a list is always a tag)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return ["f", repr(value)]  # NaN and infinities too, which JSON has not
    if isinstance(value, dt.datetime):
        return ["dt", value.isoformat()]
    if isinstance(value, dt.date):
        return ["d", value.isoformat()]
    if isinstance(value, dt.time):
        return ["t", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["td", value.days, value.seconds, value.microseconds]
    if isinstance(value, decimal.Decimal):
        return ["dec", str(value)]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["b", base64.b64encode(bytes(value)).decode()]
    raise TypeError(f"cannot put a {type(value).__name__} into a keyset cursor")


def _untagged(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    tag, *rest = value
    if tag == "f":
        return float(rest[0])
    if tag == "dt":
        return dt.datetime.fromisoformat(rest[0])
    if tag == "d":
        return dt.date.fromisoformat(rest[0])
    if tag == "t":
        return dt.time.fromisoformat(rest[0])
    if tag == "td":
        return dt.timedelta(days=rest[0], seconds=rest[1], microseconds=rest[2])
    if tag == "dec":
        return decimal.Decimal(rest[0])
    if tag == "uuid":
        return uuid.UUID(rest[0])
    if tag == "b":
        return base64.b64decode(rest[0])
    raise ValueError(tag)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, model: type[Model], ordering: Sequence[str], digest: bytes,
         payload: bytes) -> bytes:
    context = (f"{model.__module__}.{model.__qualname__}|{','.join(ordering)}|".encode()
               + digest + b"|")
    return hmac.new(key, context + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode(repo: BaseRepository[Any], ordering: Sequence[str], digest: bytes,
           values: Sequence[Any]) -> str:
    """The cursor of the position after a row whose ordering columns hold ``values``."""
    payload = json.dumps([_tagged(v) for v in values], separators=(",", ":")).encode()
    mac = _mac(secret_for(repo), repo.model, ordering, digest, payload)
    return f"{_b64(payload)}.{_b64(mac)}"


def decode(repo: BaseRepository[Any], ordering: Sequence[str], digest: bytes,
           cursor: Any) -> list[Any]:
    """The raw ordering values a cursor holds.

    Raises:
        ValidationError: not a cursor of this model, ordering and filter set, or changed.
    """
    model = repo.model
    error = ValidationError(
        f"Invalid cursor for {model.__name__} ordered by {', '.join(ordering)}: pass back a "
        "next_cursor of the same model, order_by and filters, unchanged",
        details={"model": model.__name__, "field": "after"})
    if not isinstance(cursor, str) or cursor.count(".") != 1:
        raise error
    head, _, tail = cursor.partition(".")
    try:
        payload, mac = _unb64(head), _unb64(tail)
    except (binascii.Error, ValueError) as exc:
        raise error from exc
    if _b64(payload) != head or _b64(mac) != tail:
        raise error  # another spelling of the same bytes: also a changed cursor
    if not hmac.compare_digest(mac, _mac(secret_for(repo), model, ordering, digest, payload)):
        raise error
    try:
        raw = json.loads(payload)
        values = [_untagged(v) for v in raw]
    except (ValueError, TypeError, IndexError) as exc:  # pragma: no cover - MAC vouches
        raise error from exc
    if len(values) != len(ordering):  # pragma: no cover - the MAC vouches for it
        raise error
    return values
