"""Keyset pagination: ``paginate_keyset`` and the batches of ``iterate`` on sqlite.

A page is ``WHERE <filters> AND <after the cursor> ORDER BY <ordering>, pk LIMIT n + 1``: the
server seeks to the cursor's position in an index over the ordering instead of reading and
dropping the rows before it, so a page costs the same at any depth (OFFSET reads them all).
"After the cursor" is a row-value comparison, ``(a, b, id) > ($1, $2, $3)``, when every column
sorts the same way (PostgreSQL and sqlite both seek an index with it), else the expanded
form ``a >= $1 AND (a > $1 OR (a = $1 AND b < $2) OR ...)`` whose leading term still bounds
the index scan.

Cursors are opaque: ``base64url(json(values)) "." base64url(HMAC-SHA256)``, the MAC taken
over the values, the model and the ordering, under ``BaseRepository.cursor_secret`` (else
``AEGIS_CURSOR_SECRET``, else a key made at import: cursors then last as long as the process).
Any changed character, another model's or another ordering's cursor fails the check:
:class:`ValidationError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.expressions import Q
from tortoise.models import Model

from aegis_tortoise import _reads
from aegis_tortoise import _select as _sql
from aegis_tortoise._bulk import _quote, _table, fetch_rows
from aegis_tortoise._filters import order_by_fields
from aegis_tortoise.errors import ValidationError
from aegis_tortoise.models import KeysetPage

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["decode_cursor", "encode_cursor", "fetch_after", "keyset_ordering", "paginate_keyset"]

M = TypeVar("M", bound=Model)

_PROCESS_SECRET = (os.environ.get("AEGIS_CURSOR_SECRET", "").encode()
                   or secrets.token_bytes(32))
_MAC_BYTES = 16


def keyset_ordering(model: type[Model], order_by: str | Sequence[str] | None
                    ) -> tuple[str, ...]:
    """The validated ordering, the primary key appended as the tie-breaker.

    Raises:
        ValidationError: a nullable field (NULLs have no place in a keyset order) or one that
            is not a column of the model itself.
    """
    fields = order_by_fields(model, order_by)
    meta = model._meta
    names: list[str] = []
    for item in fields:
        name = item.lstrip("-")
        field = meta.fields_map.get(name)
        if field is None or name not in meta.fields_db_projection or field.null:
            raise ValidationError(
                f"Cannot order {model.__name__} pages by {name!r}: keyset pagination needs "
                "non-null columns of the model itself",
                details={"model": model.__name__, "field": name})
        names.append(item)
    if meta.pk_attr not in (n.lstrip("-") for n in names):
        names.append(meta.pk_attr)
    return tuple(names)


def _secret(repo: BaseRepository[Any]) -> bytes:
    secret = repo.cursor_secret
    if secret is None:
        return _PROCESS_SECRET
    return secret.encode() if isinstance(secret, str) else secret


def _mac(secret: bytes, model: type[Model], ordering: tuple[str, ...], payload: bytes) -> bytes:
    context = f"{model.__module__}.{model.__qualname__}|{','.join(ordering)}|".encode()
    return hmac.new(secret, context + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def encode_cursor(repo: BaseRepository[Any], ordering: tuple[str, ...], item: Model) -> str:
    """The cursor of the position just after ``item``."""
    values = [_plain(getattr(item, name.lstrip("-"))) for name in ordering]
    payload = json.dumps(values, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(_secret(repo), repo.model, ordering, payload))}"


def decode_cursor(repo: BaseRepository[Any], ordering: tuple[str, ...], cursor: str
                  ) -> list[Any]:
    """The ordering values a cursor holds, as Python values of their fields.

    Raises:
        ValidationError: not a cursor of this model and ordering, or changed.
    """
    model = repo.model
    error = ValidationError(
        f"Invalid cursor for {model.__name__} ordered by {', '.join(ordering)}: pass back a "
        "next_cursor of the same model and order_by, unchanged",
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
    if not hmac.compare_digest(mac, _mac(_secret(repo), model, ordering, payload)):
        raise error
    try:
        raw = json.loads(payload)
        fields = model._meta.fields_map
        values = [fields[name.lstrip("-")].to_python_value(value)
                  for name, value in zip(ordering, raw, strict=True)]
    except (ValueError, TypeError) as exc:  # pragma: no cover - the MAC vouches for it
        raise error from exc
    return values


# -- the query --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def keyset_sql(model: type[Model], dialect: str, shape: _sql.Shape, ordering: tuple[str, ...],
               columns_sql: str, *, after: bool) -> str:
    """``SELECT <columns> FROM t WHERE <shape> [AND <after>] ORDER BY <ordering> LIMIT n``;
    the shape's parameters first, then the cursor's values, then the limit."""
    where, count = _sql._where(model, dialect, shape)
    db = model._meta.fields_db_projection
    pg = dialect == "postgres"
    terms = [where[len(" WHERE "):]] if where else []

    def mark(i: int) -> str:
        # sqlite's ?NNN numbers a value so it may appear twice (the expanded form).
        return f"${i}" if pg else f"?{i}"

    columns = [_quote(db[o.lstrip("-")]) for o in ordering]
    marks = [mark(count + i + 1) for i in range(len(ordering))]
    if after:
        descending = [o.startswith("-") for o in ordering]
        if len(set(descending)) == 1:
            op = "<" if descending[0] else ">"
            terms.append(f"({', '.join(columns)}) {op} ({', '.join(marks)})")
        else:
            ors = []
            for i, (column, value) in enumerate(zip(columns, marks, strict=True)):
                equal = [f"{c} = {v}" for c, v in zip(columns[:i], marks[:i], strict=True)]
                step = f"{column} {'<' if descending[i] else '>'} {value}"
                ors.append("(" + " AND ".join([*equal, step]) + ")")
            lead = f"{columns[0]} {'<=' if descending[0] else '>='} {marks[0]}"
            terms.append(f"{lead} AND ({' OR '.join(ors)})")
        count += len(ordering)
    order = ", ".join(f"{c} {'DESC' if o.startswith('-') else 'ASC'}"
                      for c, o in zip(columns, ordering, strict=True))
    where_sql = f" WHERE {' AND '.join(terms)}" if terms else ""
    return (f"SELECT {columns_sql} FROM {_table(model)}{where_sql} "  # noqa: S608 - quoted
            f"ORDER BY {order} LIMIT {mark(count + 1)}")


async def fetch_after(repo: BaseRepository[M], filters: Mapping[str, Any] | None,
                      ordering: tuple[str, ...], after: list[Any] | None, limit: int, *,
                      include_deleted: bool) -> list[M]:
    """Up to ``limit`` rows after the position ``after`` (the ordering's values), in order."""
    model = repo.model
    session = repo.session
    dialect = session.dialect
    plain = _reads.plain_where(repo, filters, include_deleted)
    if plain is not None and _sql.orderable(model, ordering, dialect):
        kwargs, shape = plain
        rows = _reads.rows_of(repo)
        sql = keyset_sql(model, dialect, shape, ordering, rows.columns_sql,
                         after=after is not None)
        params = _sql.params_for(model, shape, kwargs)
        if after is not None:
            fields = model._meta.fields_map
            params.extend(fields[name.lstrip("-")].to_db_value(value, model)
                          for name, value in zip(ordering, after, strict=True))
        params.append(limit)
        found: list[M] = rows.build(await fetch_rows(session.connection, sql, params))
        return found
    queryset = repo._where(filters, include_deleted=include_deleted)
    if after is not None:
        queryset = queryset.filter(_after_q(ordering, after))
    return await queryset.order_by(*ordering).limit(limit)


def _after_q(ordering: tuple[str, ...], after: list[Any]) -> Q:
    """The expanded "after the cursor" condition as Tortoise ``Q`` objects."""
    ors: list[Q] = []
    for i, item in enumerate(ordering):
        equal = {name.lstrip("-"): value for name, value in zip(ordering[:i], after, strict=False)}
        name = item.lstrip("-")
        ors.append(Q(**equal, **{f"{name}__{'lt' if item.startswith('-') else 'gt'}": after[i]}))
    condition = ors[0]
    for term in ors[1:]:
        condition |= term
    return condition


async def paginate_keyset(repo: BaseRepository[M], *, limit: int,
                          order_by: str | Sequence[str] | None,
                          filters: Mapping[str, Any] | None, after: str | None,
                          include_deleted: bool) -> KeysetPage[M]:
    """One page after the cursor ``after`` (the first page when None)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be an integer >= 1, got {limit!r}",
                              details={"field": "limit"})
    ordering = keyset_ordering(repo.model, order_by)
    values = None if after is None else decode_cursor(repo, ordering, after)
    items = await fetch_after(repo, filters, ordering, values, limit + 1,
                              include_deleted=include_deleted)
    has_next = len(items) > limit
    if has_next:
        del items[limit:]
    cursor = encode_cursor(repo, ordering, items[-1]) if has_next else None
    return KeysetPage[M](items=items, next_cursor=cursor, has_next=has_next)
