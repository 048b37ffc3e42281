"""``aegis_shared.models``: the seed's base entity and pagination model."""

from aegis_tortoise.models import BaseEntity, PaginatedResponse, SoftDeleteMixin, TimestampMixin

__all__ = ["BaseEntity", "PaginatedResponse", "SoftDeleteMixin", "TimestampMixin"]
