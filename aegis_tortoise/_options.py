"""Validation of DatabaseManager's options: each error names the option (and never a value
that could be a secret)."""

from __future__ import annotations

from zoneinfo import ZoneInfoNotFoundError

from tortoise.timezone import parse_timezone

from aegis_tortoise.config import DatabaseSettings
from aegis_tortoise.errors import ConfigurationError

__all__ = ["flag", "positive_int", "seconds", "zone"]


def positive_int(name: str, value: int | None, settings: DatabaseSettings | None, *,
                  minimum: int) -> int:
    if value is None:
        value = getattr(settings, f"database_{name}")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}",
                                 details={"field": name})
    return value


def seconds(name: str, value: float | None, settings: DatabaseSettings | None, *,
             allow_zero: bool) -> float:
    if value is None:
        value = getattr(settings, f"database_{name}")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a number of seconds {bound}, got {value!r}",
                                 details={"field": name})
    return float(value)


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}",
                                 details={"field": name})
    return value


def zone(name: object) -> str:
    if not isinstance(name, str):
        raise ConfigurationError(f"timezone must be a time zone name such as 'UTC' or "
                                 f"'Europe/Berlin', got {name!r}", details={"field": "timezone"})
    try:
        parse_timezone(name)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ConfigurationError(f"Unknown time zone {name!r}; use an IANA name such as "
                                 "'UTC' or 'Asia/Shanghai'", details={"field": "timezone"}
                                 ) from exc
    return name
