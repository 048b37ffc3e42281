"""Hypothesis strategies: stored data, filters, orderings, windows and write payloads.

Values are drawn from small pools as well as from the full range of each type, so that
filters hit stored rows, orderings meet ties and NULLs, and writes meet edge values.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from tortoise.expressions import F, Subquery

from tests.differential.models import Color, Item, Kind, Owner

UTC = dt.UTC
ZONES = [UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
ALPHABET = list("aAbZ_%\\ é")


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.sampled_from(ALPHABET), min_size=min_size, max_size=max_size)


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-2, 3), st.sampled_from([low, high]), st.integers(low, high))


def decimals() -> st.SearchStrategy[decimal.Decimal]:
    return st.one_of(
        st.sampled_from([decimal.Decimal(v) for v in ("0.00", "1.50", "-2.25")]),
        st.decimals(min_value=-999_999, max_value=999_999, places=2,
                    allow_nan=False, allow_infinity=False))


def floats() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([0.0, 1.5, -2.25]),
                     st.floats(allow_nan=False, allow_infinity=False, width=64))


def dates() -> st.SearchStrategy[dt.date]:
    return st.one_of(st.sampled_from([dt.date(2024, 1, 1), dt.date(2024, 1, 2)]),
                     st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1)))


def datetimes() -> st.SearchStrategy[dt.datetime]:
    return st.one_of(
        st.sampled_from([dt.datetime(2024, 1, 1, hour, tzinfo=UTC) for hour in (0, 12)]),
        st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.sampled_from(ZONES)))


def times() -> st.SearchStrategy[dt.time]:
    return st.times(timezones=st.just(UTC))


def timedeltas() -> st.SearchStrategy[dt.timedelta]:
    return st.one_of(st.sampled_from([dt.timedelta(0), dt.timedelta(seconds=90)]),
                     st.timedeltas(min_value=dt.timedelta(days=-999),
                                   max_value=dt.timedelta(days=999)))


def json_values() -> st.SearchStrategy[Any]:
    # Top level: a list or dict (JSONField reads a str as JSON text, not as a JSON string).
    scalars = st.one_of(st.booleans(), st.integers(-10, 10), texts(3))
    inner = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(texts(3), inner, max_size=3)), max_leaves=4)
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts(3), inner, max_size=3))


# -- per-field value kinds -------------------------------------------------------------------------

#: Item's filterable fields: (name, kind, nullable).
ITEM_FIELDS: list[tuple[str, str, bool]] = [
    ("id", "int", False), ("num", "int", False), ("big", "bigint", True),
    ("small", "smallint", False), ("name", "text", False), ("note", "text", True),
    ("flag", "bool", False), ("price", "decimal", True), ("ratio", "float", True),
    ("day", "date", True), ("clock", "time", True), ("span", "timedelta", True),
    ("moment", "datetime", True), ("token", "uuid", False), ("label", "text", False),
    ("data", "json", True), ("blob", "bytes", True), ("kind", "intenum", False),
    ("color", "charenum", True), ("status", "text", False), ("owner_id", "fk", True),
]
OWNER_FIELDS: list[tuple[str, str, bool]] = [
    ("id", "int", False), ("name", "text", False), ("rank", "smallint", False),
]


def value_of(kind: str, backend: str) -> st.SearchStrategy[Any]:
    """Valid values of a field kind on ``backend``."""
    strategies: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "int": lambda: ints(-2**31, 2**31 - 1),
        "bigint": lambda: ints(-2**63, 2**63 - 1),
        "smallint": lambda: ints(-2**15, 2**15 - 1),
        "text": lambda: texts(10),
        "bool": st.booleans,
        "decimal": decimals,
        "float": floats,
        "date": dates,
        # Tortoise 1.1.9 cannot bind datetime.time on sqlite (its own create fails too):
        # times are generated on PostgreSQL only.
        "time": (times if backend == "postgres" else st.nothing),
        "timedelta": timedeltas,
        "datetime": datetimes,
        "uuid": st.uuids,
        "json": json_values,
        "bytes": lambda: st.binary(max_size=6),
        "intenum": lambda: st.sampled_from(list(Kind)),
        "charenum": lambda: st.sampled_from(list(Color)),
        "fk": lambda: st.integers(1, 4),
    }
    return strategies[kind]()


#: Values a field of the kind cannot hold (or a driver cannot send).
INVALID: dict[str, list[Any]] = {
    "int": ["abc", 2**63, 2**31, -2**31 - 1, [1], 1.5, "\ud800"],
    "bigint": [2**63, -2**63 - 1, "x1"],
    "smallint": [2**15, "many"],
    "text": ["\ud800", "a\x00b", 12, "x" * 40],
    "bool": ["maybe", [True]],
    "decimal": ["x", "NaN1", [1], decimal.Decimal("1e20"), object],
    "float": ["fast", [1.0]],
    "date": ["garbage", "2024-13-45", 12],
    "time": ["25:99", 7],
    "timedelta": ["long", 1.5],
    "datetime": ["yesterday", 3, "2024-02-30T00:00:00"],
    "uuid": ["nope", 12, "0000"],
    "json": [{1, 2}, object],
    "bytes": ["text", 12],
    "intenum": [99, "A"],
    "charenum": ["purple", 3],
    "fk": ["one", 2**63],
}


def values_for(kind: str, backend: str, invalid: bool) -> st.SearchStrategy[Any]:
    valid = value_of(kind, backend)
    if not invalid:
        return valid
    return st.one_of(valid, st.sampled_from(INVALID[kind]))


# -- stored data ------------------------------------------------------------


@dataclass
class Dataset:
    owners: list[dict[str, Any]]
    items: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    badges: list[dict[str, Any]]


@st.composite
def item_row(draw: st.DrawFn, backend: str, owners: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, kind, null in ITEM_FIELDS:
        if name in ("id",):
            continue
        if kind == "fk":
            if owners and draw(st.booleans()):
                row[name] = draw(st.integers(1, owners))
            else:
                row[name] = None
            continue
        if kind == "time" and backend != "postgres":
            row[name] = None
            continue
        if name == "name":
            row[name] = draw(texts(16))
            continue
        if name == "label":
            row[name] = draw(texts(12))
            continue
        if null and draw(st.integers(0, 3)) == 0:
            row[name] = None
        else:
            row[name] = draw(value_of(kind, backend))
    return row


@st.composite
def datasets(draw: st.DrawFn, backend: str, max_items: int = 7) -> Dataset:
    names = draw(st.lists(texts(12, min_size=1), max_size=3, unique=True))
    owners = [{"id": i + 1, "name": n, "rank": draw(st.integers(-1, 2))}
              for i, n in enumerate(names)]
    items = [{"id": i + 1, **draw(item_row(backend, len(owners)))}
             for i in range(draw(st.integers(0, max_items)))]
    tags: list[dict[str, Any]] = []
    badges: list[dict[str, Any]] = []
    if items:
        labels = draw(st.lists(texts(12, min_size=1), max_size=5, unique=True))
        tags = [{"id": draw(st.uuids()), "label": label, "weight": draw(floats()),
                 "item_id": draw(st.integers(1, len(items)))} for label in labels]
        codes = draw(st.lists(texts(8, min_size=1), max_size=3, unique=True))
        holders: list[int] = []
        if len(codes) <= len(items):
            holders = draw(st.lists(st.integers(1, len(items)), min_size=len(codes),
                                    max_size=len(codes), unique=True))
        badges = [{"code": c, "title": draw(st.none() | texts(5)),
                   "item_id": holders[i] if holders and draw(st.booleans()) else None}
                  for i, c in enumerate(codes)]
    return Dataset(owners, items, tags, badges)


# -- filters ----------------------------------------------------------------

ORDERED = {"int", "bigint", "smallint", "decimal", "float", "date", "datetime", "timedelta",
           "time", "text", "uuid", "fk"}
TEXT_LOOKUPS = ["contains", "icontains", "startswith", "istartswith", "endswith", "iendswith",
                "iexact"]
CONTAINERS = ["list", "tuple", "iter", "map", "generator"]


def wrap(values: list[Any], container: str) -> Iterable[Any]:
    """``values`` in the container the caller passes (one-shot ones included)."""
    if container == "tuple":
        return tuple(values)
    if container == "iter":
        return iter(values)
    if container == "map":
        return map(lambda v: v, values)  # noqa: C417 - a map object is the point
    if container == "generator":
        return (v for v in values)
    return list(values)


@dataclass
class Term:
    """One filter: the key the caller writes, and how to build its value for each side."""

    key: str
    value: Any = None
    container: str | None = None
    expression: str | None = None  # "F:<field>", "subquery"

    def for_repo(self) -> tuple[str, Any]:
        return self.key, self._value(for_repo=True)

    def for_tortoise(self) -> tuple[str, Any]:
        if self.value is None and self.container is None and self.expression is None:
            head, _, last = self.key.rpartition("__")
            if last == "not":
                return f"{head}__not_isnull", True
            return f"{self.key}__isnull", True
        return self.key, self._value(for_repo=False)

    def _value(self, *, for_repo: bool) -> Any:
        if self.expression is not None:
            if self.expression == "subquery":
                return Subquery(Item.filter(flag=True).values("id"))
            if self.expression == "owner_subquery":
                return Subquery(Owner.filter(rank__gte=1).values("id"))
            return F(self.expression.split(":", 1)[1])
        if self.container is not None:
            return wrap(list(self.value), self.container if for_repo else "list")
        return self.value


@dataclass
class Filters:
    terms: list[Term] = field(default_factory=list)

    def for_repo(self) -> dict[str, Any] | None:
        return dict(t.for_repo() for t in self.terms) if self.terms else None

    def for_tortoise(self) -> dict[str, Any]:
        return dict(t.for_tortoise() for t in self.terms)

    def fans_out(self) -> bool:
        return any(t.key.startswith("tags__") for t in self.terms)


@st.composite
def item_term(draw: st.DrawFn, backend: str, invalid: bool) -> Term:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.sampled_from([
            Term("num__gt", expression="F:small"), Term("num", expression="F:small"),
            Term("small__lte", expression="F:num"), Term("big__gte", expression="F:num"),
            Term("id__in", expression="subquery"),
            Term("owner_id__in", expression="owner_subquery"),
        ]))
    if choice == 1:
        key = draw(st.sampled_from(["owner__name", "owner__name__icontains", "owner__rank__gte",
                                    "tags__label", "tags__label__startswith", "tags__weight__lt",
                                    "pk", "pk__gt", "pk__in", "owner__id", "badge__title"]))
        kind = ("smallint" if "rank" in key else "float" if "weight" in key
                else "int" if key.startswith(("pk", "owner__id")) else "text")
        if key == "pk__in":
            return Term(key, draw(st.lists(value_of(kind, backend), max_size=3)),
                        container=draw(st.sampled_from(CONTAINERS)))
        return Term(key, draw(value_of(kind, backend)))
    name, kind, null = draw(st.sampled_from(ITEM_FIELDS))
    if kind in ("json", "bytes"):
        return Term(name) if draw(st.booleans()) else Term(f"{name}__isnull", draw(st.booleans()))
    if kind == "time" and backend != "postgres":
        return Term(name)
    lookups = ["", "not", "in", "not_in"]
    if kind in ORDERED:
        lookups += ["gt", "gte", "lt", "lte", "range"]
    if kind == "text":
        lookups += TEXT_LOOKUPS
    if kind == "bool":
        lookups = ["", "not"]
    if null:
        lookups += ["isnull", "null"]
    lookup = draw(st.sampled_from(lookups))
    key = name if lookup in ("", "null") else f"{name}__{lookup}"
    values = values_for(kind, backend, invalid)
    if lookup == "null":
        return Term(name if draw(st.booleans()) else f"{name}__not")
    if lookup == "isnull":
        return Term(key, draw(st.booleans()))
    if lookup in ("in", "not_in"):
        return Term(key, draw(st.lists(values, max_size=4)),
                    container=draw(st.sampled_from(CONTAINERS)))
    if lookup == "range":
        return Term(key, tuple(draw(st.lists(values, min_size=2, max_size=2))))
    return Term(key, draw(values))


@st.composite
def item_filters(draw: st.DrawFn, backend: str, invalid: bool = False) -> Filters:
    terms = draw(st.lists(item_term(backend, invalid), max_size=3, unique_by=lambda t: t.key))
    return Filters(terms)


@st.composite
def owner_filters(draw: st.DrawFn, backend: str) -> Filters:
    terms: list[Term] = []
    for name, kind, _ in draw(st.lists(st.sampled_from(OWNER_FIELDS), max_size=2, unique=True)):
        text = TEXT_LOOKUPS if kind == "text" else []
        lookup = draw(st.sampled_from(["", "gte", "lt", "in", *text]))
        key = name if not lookup else f"{name}__{lookup}"
        if lookup == "in":
            terms.append(Term(key, draw(st.lists(value_of(kind, backend), max_size=3)),
                              container=draw(st.sampled_from(CONTAINERS))))
        else:
            terms.append(Term(key, draw(value_of(kind, backend))))
    if draw(st.integers(0, 4)) == 0:
        terms.append(Term("items__num__gte", draw(value_of("int", backend))))
    return Filters(terms)


# -- orderings and windows -------------------------------------------------------------------------

ITEM_ORDER_FIELDS = [n for n, kind, _ in ITEM_FIELDS if kind not in ("json",)] + [
    "pk", "owner__name"]
OWNER_ORDER_FIELDS = ["id", "name", "rank", "since", "pk"]


@dataclass
class Ordering:
    names: list[str] | None
    form: str

    def for_repo(self) -> Any:
        if self.names is None:
            return None
        if self.form == "str":
            return self.names[0]
        return wrap(self.names, self.form)


@st.composite
def orderings(draw: st.DrawFn, fields: list[str], backend: str) -> Ordering:
    if draw(st.integers(0, 3)) == 0:
        return Ordering(None, "none")
    usable = [f for f in fields if backend == "postgres" or f != "clock"]
    names = draw(st.lists(st.sampled_from(usable), min_size=1, max_size=3, unique=True))
    names = [("-" if draw(st.booleans()) else "") + n for n in names]
    form = "str" if len(names) == 1 and draw(st.booleans()) else draw(
        st.sampled_from(CONTAINERS))
    return Ordering(names, form)


def windows() -> st.SearchStrategy[tuple[int, int | None]]:
    return st.tuples(st.integers(0, 8), st.one_of(st.none(), st.integers(0, 8)))


def pages() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(1, 4), st.integers(1, 5))


ITEM_PREFETCH = ["tags", "owner", "badge"]
OWNER_PREFETCH = ["items", "items__tags"]


@st.composite
def prefetches(draw: st.DrawFn, names: list[str]) -> tuple[list[str], str]:
    chosen = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    return chosen, draw(st.sampled_from(CONTAINERS))


# -- write payloads ---------------------------------------------------------

WRITABLE = [(n, k, null) for n, k, null in ITEM_FIELDS if n != "id"]


@st.composite
def item_payloads(draw: st.DrawFn, backend: str, *, invalid: bool, owners: int,
                  partial: bool = False) -> dict[str, Any]:
    """A create (or, with ``partial``, update) payload for Item; with ``invalid``, some values
    are of the wrong type or out of range, or None for NOT NULL fields."""
    payload: dict[str, Any] = {}
    required = {"num", "name"}
    for name, kind, null in WRITABLE:
        if kind == "time" and backend != "postgres":
            continue
        wanted = draw(st.integers(0, 2)) == 0 if partial or name not in required else True
        if not wanted:
            continue
        if invalid and draw(st.integers(0, 5)) == 0:
            payload[name] = draw(st.sampled_from([*INVALID[kind], None]))
            continue
        if kind == "fk":
            payload[name] = draw(st.integers(1, owners)) if owners and draw(st.booleans()) else None
        elif null and draw(st.integers(0, 3)) == 0:
            payload[name] = None
        elif name == "name":
            payload[name] = draw(texts(16))
        elif name == "label":
            payload[name] = draw(texts(12))
        else:
            payload[name] = draw(value_of(kind, backend))
    return payload


def has_invalid(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` holds a value :data:`INVALID` lists, or None for a NOT NULL field."""
    nullable = {name for name, _, null in ITEM_FIELDS if null}
    for name, value in payload.items():
        if value is None and name not in nullable:
            return True
        if any(value is bad or (type(value) is type(bad) and value == bad)
               for bads in INVALID.values() for bad in bads):
            return True
    return False


@st.composite
def tag_payloads(draw: st.DrawFn, *, items: int, invalid: bool) -> dict[str, Any]:
    """A Tag (UUID key, NOT NULL FK to Item) to create; the key given or generated."""
    payload: dict[str, Any] = {"label": draw(texts(12, min_size=1))}
    if draw(st.booleans()):
        payload["id"] = draw(st.uuids())
    if draw(st.booleans()):
        payload["weight"] = draw(floats())
    payload["item_id"] = draw(st.integers(1, items)) if items else None
    if invalid and draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(["id", "label", "weight", "item_id"]))
        kind = {"id": "uuid", "label": "text", "weight": "float", "item_id": "fk"}[name]
        payload[name] = draw(st.sampled_from([*INVALID[kind], None]))
    return payload


@st.composite
def owner_payloads(draw: st.DrawFn, *, invalid: bool) -> dict[str, Any]:
    """An Owner (int key, unique name under another column) to create."""
    payload: dict[str, Any] = {"name": draw(texts(12, min_size=1))}
    if draw(st.integers(0, 3)) == 0:
        payload["id"] = draw(st.integers(50, 60))
    if draw(st.booleans()):
        payload["rank"] = draw(ints(-2**15, 2**15 - 1))
    if invalid and draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(["id", "name", "rank"]))
        kind = {"id": "int", "name": "text", "rank": "smallint"}[name]
        payload[name] = draw(st.sampled_from([*INVALID[kind], None]))
    return payload
