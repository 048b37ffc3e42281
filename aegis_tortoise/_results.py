"""Results of raw SQL: :class:`Result`, :class:`Row`, scalar and mapping views.

The SQLAlchemy-like result objects returned by :meth:`Session.execute`. They hold rows
already fetched; nothing here touches a connection. Re-exported by
:mod:`aegis_tortoise.session` (and ``Result``/``Row`` by :mod:`aegis_tortoise`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from aegis_tortoise.errors import MultipleResultsFoundError, NoResultFoundError

__all__ = ["MappingResult", "Result", "Row", "ScalarResult"]


class Row(Sequence[Any]):
    """One result row: ``row[0]``, ``row.email``, ``row._mapping["email"]``, tuple equality."""

    __slots__ = ("_index", "_keys", "_values")

    def __init__(self, keys: tuple[str, ...], index: dict[str, int], values: tuple[Any, ...]):
        self._keys = keys
        self._index = index
        self._values = values

    @overload
    def __getitem__(self, item: int) -> Any: ...
    @overload
    def __getitem__(self, item: slice) -> tuple[Any, ...]: ...
    def __getitem__(self, item: int | slice) -> Any:
        return self._values[item]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[self._index[name]]
        except KeyError:
            raise AttributeError(
                f"Row has no column {name!r}; columns: {', '.join(self._keys)}"
            ) from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._keys, self._values, strict=True))

    def _asdict(self) -> dict[str, Any]:
        return self._mapping

    @property
    def _fields(self) -> tuple[str, ...]:
        return self._keys

    def __repr__(self) -> str:
        return repr(self._values)


class _Consumable:
    _rows: list[Any]
    _pos: int

    def _take_all(self) -> list[Any]:
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rows

    def _one(self, *, allow_none: bool) -> Any:
        rows = self._take_all()
        if not rows:
            if allow_none:
                return None
            raise NoResultFoundError("No row was found when one was required")
        if len(rows) > 1:
            raise MultipleResultsFoundError(
                f"Multiple rows ({len(rows)}) were found when exactly one was required"
            )
        return rows[0]

    def all(self) -> list[Any]:
        """All remaining rows."""
        return self._take_all()

    def first(self) -> Any:
        """The first remaining row, or None; the rest are discarded."""
        rows = self._take_all()
        return rows[0] if rows else None

    def one(self) -> Any:
        """Exactly one row, else :class:`NoResultFoundError`/:class:`MultipleResultsFoundError`."""
        return self._one(allow_none=False)

    def one_or_none(self) -> Any:
        """One row or None; several rows raise :class:`MultipleResultsFoundError`."""
        return self._one(allow_none=True)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._take_all())


class ScalarResult(_Consumable):
    """The first column of each row (``result.scalars().all()``)."""

    def __init__(self, values: list[Any]) -> None:
        self._rows = values
        self._pos = 0


class MappingResult(_Consumable):
    """Each row as a dict of column name to value (``result.mappings().all()``)."""

    def __init__(self, values: list[dict[str, Any]]) -> None:
        self._rows = values
        self._pos = 0

    def fetchall(self) -> list[dict[str, Any]]:
        """All remaining rows as dicts."""
        return self._take_all()


class Result(_Consumable):
    """The result of :meth:`Session.execute`, with SQLAlchemy's ``Result`` API.

    Attributes:
        rowcount: Rows inserted, updated or deleted by a DML statement (as the server
            reports them), else the number of rows returned.
    """

    def __init__(self, keys: Sequence[str], records: Sequence[Sequence[Any]],
                 rowcount: int) -> None:
        self._keys = tuple(keys)
        index = {key: i for i, key in enumerate(self._keys)}
        self._rows: list[Row] = [Row(self._keys, index, tuple(rec)) for rec in records]
        self._pos = 0
        self.rowcount = rowcount

    @property
    def returns_rows(self) -> bool:
        """Whether the statement returned columns (a SELECT or ``RETURNING``)."""
        return bool(self._keys)

    def keys(self) -> tuple[str, ...]:
        """The column names."""
        return self._keys

    def fetchall(self) -> list[Row]:
        """All remaining rows."""
        return self._take_all()

    def fetchone(self) -> Row | None:
        """The next row, or None when there are no more."""
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int = 1) -> list[Row]:
        """Up to ``size`` next rows."""
        rows = self._rows[self._pos:self._pos + size]
        self._pos += len(rows)
        return rows

    def scalar(self) -> Any:
        """The first column of the first row, or None; the rest are discarded."""
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        """The first column of exactly one row."""
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        """The first column of the only row, or None when there is none."""
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self, index: int = 0) -> ScalarResult:
        """The remaining rows' column ``index`` (default the first)."""
        return ScalarResult([row[index] for row in self._take_all()])

    def mappings(self) -> MappingResult:
        """The remaining rows as dicts."""
        return MappingResult([row._mapping for row in self._take_all()])

    def __repr__(self) -> str:
        return f"<Result rows={len(self._rows)} rowcount={self.rowcount} keys={self._keys}>"
