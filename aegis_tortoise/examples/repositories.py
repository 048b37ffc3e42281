"""The seed's repositories, written against aegis_tortoise.

Each method of the seed's ``UserRepository`` is here in its Tortoise form; the comments name
the SQLAlchemy construct it replaces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count

from aegis_tortoise.examples.models import Policy, User
from aegis_tortoise.repository import BaseRepository
from aegis_tortoise.session import Session

__all__ = ["PolicyRepository", "UserRepository"]


class UserRepository(BaseRepository[User]):
    """Users: the seed's custom methods on top of the generic CRUD."""

    def __init__(self, session: Session) -> None:
        super().__init__(session, User)

    async def get_by_email(self, email: str) -> User | None:
        """The user with this email, or None (``select(User).where(User.email == email)``)."""
        return await self.query().get_or_none(email=email)

    async def get_active_users(self) -> list[User]:
        """Users that are not soft-deleted."""
        return await self.list(filters={"deleted_at": None})

    async def get_users_with_policies(self, limit: int = 10) -> list[User]:
        """Users with at least one policy, each with ``policy_count``.

        The seed's ``join + group_by + having(count > 0)`` is ``annotate(Count)`` + filter.
        """
        return await (
            self.query()
            .annotate(policy_count=Count("policies"))
            .filter(policy_count__gt=0)
            .order_by("id")
            .limit(limit)
        )

    async def search_users(self, search_term: str,
                           filters: dict[str, Any] | None = None) -> list[User]:
        """Users whose name or email contains ``search_term`` (case-insensitive).

        ``or_(User.name.ilike(...), User.email.ilike(...))`` is ``Q(...) | Q(...)``.
        """
        query = self.query()
        if search_term:
            query = query.filter(Q(name__icontains=search_term) |
                                 Q(email__icontains=search_term))
        filters = filters or {}
        if filters.get("active_only"):
            query = query.filter(deleted_at__isnull=True)
        created_after: datetime | None = filters.get("created_after")
        if created_after is not None:
            query = query.filter(created_at__gte=created_after)
        return await query.order_by("id")

    async def create_users_batch(self, users_data: list[dict[str, Any]]) -> list[User]:
        """Create many users in one statement per chunk; all or nothing."""
        return await self.create_many([User(**data) for data in users_data])

    async def update_users_batch(self, updates: list[dict[str, Any]]) -> int:
        """Apply ``[{"id": 1, "name": ...}, ...]``; returns the number of rows updated."""
        updated = 0
        for update_data in updates:
            values = dict(update_data)
            user_id = values.pop("id")
            if await self.update(user_id, **values) is not None:
                updated += 1
        return updated

    async def get_user_with_policies(self, user_id: int) -> User | None:
        """The user with its policies loaded (``selectinload`` is ``prefetch_related``)."""
        return await self.query().filter(id=user_id).prefetch_related("policies").first()


class PolicyRepository(BaseRepository[Policy]):
    """Policies."""

    def __init__(self, session: Session) -> None:
        super().__init__(session, Policy)
