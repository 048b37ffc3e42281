"""``aegis_shared.models``: the seed's base entity and pagination models."""

from aegis_tortoise.models import (
    BaseEntity,
    KeysetPage,
    PaginatedResponse,
    SoftDeleteMixin,
    TimestampMixin,
    VersionedEntity,
)

__all__ = ["BaseEntity", "KeysetPage", "PaginatedResponse", "SoftDeleteMixin", "TimestampMixin",
           "VersionedEntity"]
