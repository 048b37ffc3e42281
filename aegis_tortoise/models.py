"""BaseEntity (an abstract Tortoise model with timestamps and soft delete) and
PaginatedResponse, KeysetPage."""

from __future__ import annotations

import math
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tortoise import fields
from tortoise.models import Model

__all__ = [
    "BaseEntity", "KeysetPage", "PaginatedResponse", "SoftDeleteMixin", "TimestampMixin",
    "VersionedEntity", "version_field",
]

T = TypeVar("T")


class TimestampMixin:
    """``created_at`` and ``updated_at``, set automatically (UTC)."""

    created_at = fields.DatetimeField(auto_now_add=True, description="Creation time (UTC)")
    updated_at = fields.DatetimeField(auto_now=True, description="Last update time (UTC)")


class SoftDeleteMixin:
    """``deleted_at``: set by ``BaseRepository.soft_delete``, cleared by ``restore``."""

    deleted_at = fields.DatetimeField(null=True, default=None, db_index=True,
                                      description="Soft-delete time (UTC), or NULL")


class BaseEntity(TimestampMixin, SoftDeleteMixin, Model):
    """Abstract base model: ``id`` (int pk), ``created_at``, ``updated_at``, ``deleted_at``."""

    id = fields.IntField(primary_key=True)

    class Meta:
        abstract = True

    @property
    def is_deleted(self) -> bool:
        """Whether the row is soft-deleted."""
        return self.deleted_at is not None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.pk}>"


class VersionedEntity(BaseEntity):
    """Abstract base model with an optimistic version: :class:`BaseEntity` plus ``version``.

    Any model opts in the same way with ``class Meta: version_field = "<an IntField>"``.
    Every repository update of such a model increments the version; one that names
    ``expected_version`` (or passes a loaded instance) writes only if the row still has that
    version, else raises :class:`ConcurrentUpdateError` and writes nothing.
    """

    version = fields.IntField(default=1, description="Optimistic version, +1 per update")

    class Meta:
        abstract = True
        version_field = "version"


def version_field(model: type[Model]) -> str | None:
    """The model's version field (``Meta.version_field``, inherited), or None."""
    for klass in model.__mro__:
        meta = klass.__dict__.get("Meta")
        name = getattr(meta, "version_field", None) if meta is not None else None
        if name:
            return str(name)
    return None


class PaginatedResponse(BaseModel, Generic[T]):
    """One page of results with totals (``repo.paginate()``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    items: list[T]
    total: int = Field(ge=0)
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    total_pages: int = Field(ge=0)

    @classmethod
    def create(cls, items: list[T], total: int, page: int, page_size: int
               ) -> PaginatedResponse[T]:
        """Build a page, computing ``total_pages``."""
        return cls(items=items, total=total, page=page, page_size=page_size,
                   total_pages=math.ceil(total / page_size) if total else 0)

    @property
    def has_next(self) -> bool:
        """Whether a later page exists."""
        return self.page < self.total_pages

    @property
    def has_previous(self) -> bool:
        """Whether an earlier page exists."""
        return self.page > 1


class KeysetPage(BaseModel, Generic[T]):
    """One page of ``repo.paginate_keyset()``: the items, and the cursor of the next page.

    ``next_cursor`` is to be passed back as ``after=`` unchanged; None when ``has_next`` is
    False. It is signed, not encrypted: the ordering values of the last item are readable.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    items: list[T]
    next_cursor: str | None = None
    has_next: bool = False
