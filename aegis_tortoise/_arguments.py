"""What the repository's methods take: ids, entity data, new instances, windows.

Checked and converted before any SQL is sent, so bad input is a :class:`ValidationError`
naming the model and field, and the session's transaction is left as it was.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel
from tortoise.models import Model

from aegis_tortoise._filters import writable_values
from aegis_tortoise._translate import VALUE_ERRORS
from aegis_tortoise._values import refuse_nan
from aegis_tortoise.errors import ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["EntityArguments", "EntityData", "check_window"]

ModelT = TypeVar("ModelT", bound=Model)

#: Entity data: a model instance, a dict of field values, or a pydantic model.
EntityData = Mapping[str, Any] | BaseModel


class EntityArguments(Generic[ModelT]):
    """The repository's argument handling (mixed into :class:`BaseRepository`)."""

    model: type[ModelT]
    session: Session

    @property
    def _name(self) -> str:
        return self.model.__name__

    def _pk(self, entity_id: Any) -> Any:
        """``entity_id`` converted to the primary key's Python type (before any SQL)."""
        if isinstance(entity_id, Model):
            entity_id = entity_id.pk
        try:
            if entity_id is None:
                raise ValueError("None")  # same message as a bad value
            return self.model._meta.pk.to_python_value(entity_id)
        except VALUE_ERRORS as exc:
            raise ValidationError(f"Invalid {self._name} id: {entity_id!r}", details={
                "model": self._name, "id": repr(entity_id),
                "field": self.model._meta.pk_attr}) from exc

    def _data(self, data: EntityData | None, *, partial: bool) -> dict[str, Any]:
        if data is None:
            return {}
        if isinstance(data, BaseModel):
            return data.model_dump(exclude_unset=partial)
        if isinstance(data, Mapping):
            return dict(data)
        raise ValidationError(
            f"Expected a {self._name}, a dict or a pydantic model, not {type(data).__name__}",
            details={"model": self._name})

    def _build(self, data: Mapping[str, Any]) -> ModelT:
        values = writable_values(self.model, data, action="create")
        try:
            instance = self.model(**values)
        except Exception as exc:
            # Model() raises ValueError for None in a non-null field, Tortoise errors for an
            # unsaved related object: both are bad input.
            raise ValidationError(f"Invalid {self._name} data: {exc}",
                                  details={"model": self._name}) from exc
        return instance

    def _unsaved(self, entity: Model) -> ModelT:
        """``entity`` itself, checked to be a new instance of this repository's model."""
        if not isinstance(entity, self.model):
            raise ValidationError(
                f"{type(self).__name__} stores {self._name}, not {type(entity).__name__}",
                details={"model": self._name})
        if entity._saved_in_db:
            raise ValidationError(
                f"This {self._name} is already saved (id={entity.pk}); use update()",
                details={"model": self._name, "id": repr(entity.pk)})
        return entity

    def _instance(self, entity: ModelT | EntityData) -> ModelT:
        if isinstance(entity, Model):
            instance = self._unsaved(entity)
        else:
            instance = self._build(self._data(entity, partial=False))
        self._check_required(instance)
        refuse_nan(self.model, instance.__dict__, self.session.dialect)
        return instance

    def _check_required(self, instance: ModelT) -> None:
        """Name a missing required field before the INSERT (which would abort a PG transaction)."""
        meta = self.model._meta
        missing = []
        for name in meta.fields_db_projection:
            field = meta.fields_map[name]
            if (field.null or field.generated or field.default is not None
                    or field.has_db_default() or getattr(field, "auto_now", False)
                    or getattr(field, "auto_now_add", False)):
                continue
            if getattr(instance, name, None) is None:
                missing.append(next((fk for fk in meta.fk_fields | meta.o2o_fields
                                     if meta.fields_map[fk].source_field == name), name))
        if missing:
            raise self._missing(missing)

    def _missing(self, missing: builtins.list[str]) -> ValidationError:
        return ValidationError(
            f"Cannot create {self._name}: missing required field(s): {', '.join(missing)}",
            details={"model": self._name, "fields": missing, "field": missing[0]})


def check_window(skip: int, limit: int | None) -> None:
    """Check ``skip`` and ``limit`` of a list or page."""
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValidationError(f"skip must be an integer >= 0, got {skip!r}",
                              details={"field": "skip"})
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be an integer >= 0 or None, got {limit!r}",
                              details={"field": "limit"})
