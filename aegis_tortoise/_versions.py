"""Optimistic versions: repository writes of a model with a version field.

A model opts in with ``class Meta: version_field = "version"`` (an ``IntField``), or by
inheriting :class:`~aegis_tortoise.models.VersionedEntity`. Every repository update of such a
model sets ``version = version + 1`` in the same statement. One that names the version it
read (``expected_version=n``, or a loaded instance passed as the id) adds
``WHERE version = n``: when someone else changed the row meanwhile, nothing is written and
:class:`ConcurrentUpdateError` is raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.expressions import F
from tortoise.models import Model

from aegis_tortoise import _writes
from aegis_tortoise._filters import writable_values
from aegis_tortoise._values import python_values
from aegis_tortoise.errors import ConcurrentUpdateError, ValidationError
from aegis_tortoise.models import version_field

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["bump", "update", "update_many", "upsert", "upsert_many", "versioned"]

M = TypeVar("M", bound=Model)


def versioned(model: type[Model], expected_version: object) -> str | None:
    """The model's version field; None when it has none and no version was named.

    Raises:
        ValidationError: ``expected_version`` given for a model without a version field.
    """
    name = version_field(model)
    if name is None and expected_version is not None:
        raise ValidationError(
            f"{model.__name__} has no version field, so expected_version cannot be checked: "
            "add one (class Meta: version_field = 'version', or inherit VersionedEntity)",
            details={"model": model.__name__, "field": "expected_version"})
    if name is not None and name not in model._meta.fields_map:
        raise ValidationError(
            f"{model.__name__}.Meta.version_field names {name!r}, which is no field of it",
            details={"model": model.__name__, "field": name})
    return name


def bump(model: type[Model], values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{version: version + 1}`` for a write of a versioned model's rows (``{}`` for a model
    without a version field), so that every change, not only ``update()``, makes an older
    ``expected_version`` stale.

    Raises:
        ValidationError: ``values`` sets the version itself (it could set it back to a value
            a stale writer still holds).
    """
    field = versioned(model, None)
    if field is None:
        return {}
    if values is not None and field in values:
        raise ValidationError(
            f"{model.__name__}.{field} is the optimistic version, set by the repository: "
            "it cannot be written directly", details={"model": model.__name__, "field": field})
    return {field: F(field) + 1}


def _expected(repo: BaseRepository[Any], field: str, entity_id: Any, given: object) -> int | None:
    if given is None and isinstance(entity_id, repo.model):
        given = getattr(entity_id, field, None)  # the version the caller loaded
    if given is None:
        return None
    if isinstance(given, bool) or not isinstance(given, int):
        raise ValidationError(f"expected_version must be an int, got {given!r}",
                              details={"model": repo.model.__name__, "field": "expected_version"})
    return given


async def update(repo: BaseRepository[M], entity_id: Any, pk: Any, values: dict[str, Any],
                 expected_version: object, *, visible_only: bool = False) -> M | None:
    """``BaseRepository.update`` of a versioned model: ``values`` (already checked and
    converted) plus ``version = version + 1``, only where the version is the expected one.
    ``visible_only``: a soft-deleted row counts as missing (update_many, hide_soft_deleted).

    Raises:
        ConcurrentUpdateError: the row exists with another version; nothing was written.
    """
    field = versioned(repo.model, expected_version)
    assert field is not None  # noqa: S101 - the caller checked
    expected = _expected(repo, field, entity_id, expected_version)
    if field in values:
        raise ValidationError(
            f"{repo.model.__name__}.{field} is the optimistic version, set by the repository: "
            "pass the version you read as expected_version=",
            details={"model": repo.model.__name__, "field": field})
    if not values:  # nothing to change: still say whether the version is current
        row = await repo.get_by_id(pk, include_deleted=not visible_only)
        if row is not None and expected is not None and getattr(row, field) != expected:
            raise ConcurrentUpdateError(repo.model.__name__, pk, expected_version=expected)
        return row
    values = {**values, field: F(field) + 1}
    row = await _writes.update_returning(
        repo, pk, values, where=None if expected is None else {field: expected},
        where_null=True if visible_only else None)
    if (row is None and expected is not None
            and await repo.exists(pk, include_deleted=not visible_only)):
        raise ConcurrentUpdateError(repo.model.__name__, pk, expected_version=expected)
    return row


async def update_many(repo: BaseRepository[M], rows: Iterable[Any]) -> list[M]:
    """``update_many`` of a versioned model: each row's version field, when given, is the
    version it expects; one statement per row, all in one savepoint (all or nothing)."""
    field = version_field(repo.model)
    model = repo.model
    pk_attr = model._meta.pk_attr
    # As _writes.update_many: every row checked (an id twice is an error) before any SQL;
    # hidden (soft-deleted) rows are skipped when the repository hides them.
    checked: list[tuple[Any, Any, dict[str, Any]]] = []
    seen: set[Any] = set()
    for item in rows:
        data = dict(item) if isinstance(item, Mapping) else repo._data(item, partial=True)
        key = pk_attr if pk_attr in data else "pk"
        if key not in data:
            raise ValidationError(
                f"update_many() needs the {pk_attr!r} of every {model.__name__} row",
                details={"model": model.__name__, "field": pk_attr})
        pk = repo._pk(data.pop(key))
        if pk in seen:
            raise ValidationError(
                f"update_many() got {model.__name__} {pk_attr}={pk!r} twice",
                details={"model": model.__name__, "field": pk_attr, "id": repr(pk)})
        seen.add(pk)
        expected = data.pop(field, None) if field else None
        values = writable_values(model, data, action="update")
        checked.append((pk, expected, python_values(model, values)))
    found: list[M] = []
    async with repo.session.savepoint():
        for pk, expected, values in checked:
            row = await update(repo, pk, pk, values, expected,
                               visible_only=repo.hide_soft_deleted)
            if row is not None:
                found.append(row)
    return found


async def upsert(repo: BaseRepository[M], data: Any, conflict: Sequence[str],
                 update_fields: Sequence[str] | None, expected_version: object
                 ) -> tuple[M, bool]:
    """``upsert`` of a versioned model: an existing row (found under a row lock) is updated
    as :func:`update` does, checking ``expected_version`` when given (or the version a loaded
    instance passed as ``data`` was read at); a missing one is inserted with the version's
    default."""
    field = versioned(repo.model, expected_version)
    assert field is not None  # noqa: S101 - the caller checked
    values = _upsert_values(repo, data, conflict, update_fields, field)
    async with repo.session.savepoint():
        found = await repo.list(filters={name: values[name] for name in conflict}, limit=1,
                                for_update=True, include_deleted=True)
        if not found:
            # DO NOTHING, not DO UPDATE: a row another transaction inserted meanwhile (not
            # visible to the read above) is then updated below, with its version raised.
            ((row, created),) = await _writes.upsert_many(repo, [data], conflict, None)
            if created or not update_fields:
                return row, created
            found = [row]
        existing = found[0]
        changes = {name: values[name] for name in update_fields or () if name in values}
        # A loaded instance carries the version it was read at, as in update(entity, ...);
        # a new one (not saved) only says what to insert or set.
        loaded = data if isinstance(data, Model) and data._saved_in_db else None
        expected = _expected(repo, field, loaded, expected_version)
        updated = await repo.update(existing.pk, changes, expected_version=expected)
        assert updated is not None  # noqa: S101 - locked above, so still there
        return updated, False


def _upsert_values(repo: BaseRepository[Any], data: Any, conflict: Sequence[str],
                   update_fields: Sequence[str] | None, field: str) -> dict[str, Any]:
    """``data``'s values, with ``conflict`` and ``update_fields`` checked as
    ``_writes.upsert_many`` checks them (a unique conflict target, writable update fields),
    before any SQL."""
    model = repo.model
    if isinstance(conflict, str):
        conflict = [conflict]
    target = _writes._conflict_names(model, conflict)
    _writes._update_names(model, update_fields, target)
    bump(model, dict.fromkeys(update_fields or ()))  # the version is not an update field
    if isinstance(data, Model):
        values = {name: getattr(data, name, None) for name in (*conflict, *(update_fields or ()))}
    else:
        values = dict(data) if isinstance(data, Mapping) else repo._data(data, partial=False)
    missing = [name for name in conflict if name not in values]
    if missing:
        raise ValidationError(f"upsert() needs the conflict field(s) {', '.join(missing)}",
                              details={"model": model.__name__, "field": missing[0]})
    return values


async def upsert_many(repo: BaseRepository[M], rows: Iterable[Any], conflict: Sequence[str],
                      update_fields: Sequence[str] | None) -> list[tuple[M, bool]]:
    """``upsert_many`` of a versioned model: :func:`upsert` a row at a time, all in one
    savepoint; two rows with the same conflict key are a ValidationError before any SQL, as
    ``_writes.upsert_many`` says."""
    field = versioned(repo.model, None)
    assert field is not None  # noqa: S101 - the caller checked
    items = list(rows)
    names = [conflict] if isinstance(conflict, str) else list(conflict)
    seen: dict[Any, int] = {}
    for position, item in enumerate(items):
        values = _upsert_values(repo, item, names, update_fields, field)
        key = tuple(values[name] for name in names)
        if seen.setdefault(key, position) != position:
            raise ValidationError(
                f"Cannot upsert {repo.model.__name__}: rows {seen[key]} and {position} have "
                f"the same {', '.join(names)} {key if len(key) > 1 else key[0]!r}",
                details={"model": repo.model.__name__, "field": ", ".join(names)})
    async with repo.session.savepoint():  # all or nothing, a row at a time
        return [await upsert(repo, item, names, update_fields, None) for item in items]
