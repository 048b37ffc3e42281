"""BaseRepository[T]: CRUD, filters, pagination and soft delete for one model on a session.

Every query runs on the session's Tortoise client (``using_db(session.connection)``), so a
repository works in the session's transaction whichever task or context calls it.
``filters``, ``order_by`` and ``prefetch`` are checked against the model before any SQL is
sent (:mod:`aegis_tortoise._filters`).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin, overload

from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.query_utils import Prefetch
from tortoise.queryset import QuerySet

from aegis_tortoise import _bulk, _create_many, _keyset, _reads, _stream, _versions, _writes
from aegis_tortoise import _select as _sql
from aegis_tortoise._arguments import EntityArguments, EntityData, check_window
from aegis_tortoise._filters import (
    bound_lists,
    default_ordering,
    fans_out,
    filter_kwargs,
    order_by_fields,
    prefetch_fields,
    single_pass,
    writable_values,
)
from aegis_tortoise._locks import ForUpdate, LockMode, LockOf, lock_of, refuse_readonly
from aegis_tortoise._translate import public_methods
from aegis_tortoise._values import iterable_argument, payload_or_field, python_values
from aegis_tortoise.errors import (
    ConfigurationError,
    DuplicateEntityError,
    EntityNotFoundError,
    LockNotAvailableError,
    ValidationError,
    translate_errors,
)
from aegis_tortoise.models import KeysetPage, PaginatedResponse
from aegis_tortoise.session import Session

__all__ = ["BaseRepository", "ModelT"]

ModelT = TypeVar("ModelT", bound=Model)

OrderBy = str | Sequence[str]
Prefetches = str | Iterable[str | Prefetch]

# get_by_ids sends at most this many ids per query (PostgreSQL allows 32767 parameters).
_IDS_PER_QUERY = 10_000


@public_methods
class BaseRepository(EntityArguments[ModelT]):
    """Data access for one model, bound to an open :class:`Session`.

    ``UserRepository(session)`` takes the model from ``BaseRepository[User]``;
    ``BaseRepository(session, User)`` and ``BaseRepository(User, session)`` name it.

    Attributes:
        session: The session every query runs in.
        model: The Tortoise model class.
        hide_soft_deleted: When True, ``get``/``get_by_id``/``get_by_ids``/``list``/``count``/
            ``exists``/``paginate``/``query`` skip soft-deleted rows unless called with
            ``include_deleted=True``. Default False: soft-deleted rows stay visible, as in
            the original library.
        soft_delete_field: The nullable datetime field that marks soft-deleted rows.
        cursor_secret: The HMAC key of ``paginate_keyset`` cursors (at least 16 bytes);
            None: the manager's (``DatabaseManager(cursor_secret=...)``, else the
            ``DATABASE_CURSOR_SECRET`` setting; see :mod:`aegis_tortoise._cursor`).
    """

    hide_soft_deleted: ClassVar[bool] = False
    soft_delete_field: ClassVar[str] = "deleted_at"
    cursor_secret: ClassVar[str | bytes | None] = None

    session: Session
    model: type[ModelT]

    @overload
    def __init__(self, session: Session, model: type[ModelT] | None = None) -> None: ...
    @overload
    def __init__(self, session: type[ModelT], model: Session) -> None: ...
    def __init__(self, session: Session | type[ModelT],
                 model: type[ModelT] | Session | None = None) -> None:
        if isinstance(session, type) and isinstance(model, Session):
            session, model = model, session
        if not isinstance(session, Session):
            raise ConfigurationError(
                f"{type(self).__name__} takes an open Session (async with db.session() as "
                f"session), not {type(session).__name__}")
        if model is None:
            model = self._model_from_generic()
        if not (isinstance(model, type) and issubclass(model, Model)):
            raise ConfigurationError(
                f"{type(self).__name__} needs a Tortoise model: subclass BaseRepository[User] "
                f"or pass it, BaseRepository(session, User); got {model!r}")
        registered = session.manager._models
        if registered and model not in registered:
            raise ConfigurationError(
                f"{model.__module__}.{model.__name__} is not one of this manager's models: add "
                "its module to DatabaseManager(models=[...])",
                details={"model": model.__name__})
        if self.hide_soft_deleted and self.soft_delete_field not in model._meta.fields_map:
            raise ConfigurationError(
                f"{type(self).__name__}.hide_soft_deleted is set but {model.__name__} has no "
                f"{self.soft_delete_field!r} field")
        self.session = session
        self.model = model

    @classmethod
    def _model_from_generic(cls) -> type[ModelT] | None:
        for klass in cls.__mro__:
            for base in klass.__dict__.get("__orig_bases__", ()):
                origin = get_origin(base)
                if not (isinstance(origin, type) and issubclass(origin, BaseRepository)):
                    continue
                for arg in get_args(base):
                    if isinstance(arg, type) and issubclass(arg, Model):
                        found: type[ModelT] = arg  # type: ignore[assignment]
                        return found
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.model.__name__} on {self.session!r}>"

    # -- building blocks ------------------------------------------------------------------

    def query(self, *, include_deleted: bool = False) -> QuerySet[ModelT]:
        """A QuerySet of the model bound to the session, for custom methods.

        Honours ``hide_soft_deleted`` (unless ``include_deleted=True``).
        """
        queryset = self.model.all().using_db(self.session.connection)
        if self.hide_soft_deleted and not include_deleted:
            queryset = queryset.filter(**{f"{self.soft_delete_field}__isnull": True})
        return queryset

    def _plain_query(self) -> bool:
        """Whether ``query()`` is the plain table, so SQL built once per shape may stand for
        it: neither the repository's ``query()`` nor the model's ``Meta.manager`` is
        overridden (:mod:`aegis_tortoise._reads`)."""
        return type(self).query is BaseRepository.query and _sql.plain_model(self.model)

    @contextmanager
    def _translating(self) -> Iterator[None]:
        """Translate database errors; a ValueError from a field conversion is bad input."""
        with translate_errors(entity=self._name):
            try:
                yield
            except ValueError as exc:
                raise ValidationError(f"Invalid {self._name} value: {exc}",
                                      details={"model": self._name}) from exc

    def _where(self, filters: Mapping[str, Any] | None, *,
               include_deleted: bool) -> QuerySet[ModelT]:
        """``query()`` narrowed by validated ``filters``.

        A filter across a to-many relation (``policies__title``) goes into a
        ``pk IN (subquery)``, so a row matching through several related rows comes back once
        and is counted once.
        """
        dialect = self.session.dialect
        kwargs = bound_lists(self.model, filter_kwargs(self.model, filters, dialect), dialect)
        queryset = self.query(include_deleted=include_deleted)
        if kwargs and fans_out(self.model, kwargs):
            inner = self.model.filter(**kwargs).using_db(self.session.connection)
            return queryset.filter(pk__in=Subquery(inner.values(self.model._meta.pk_attr)))
        return queryset.filter(**kwargs)

    def _ordering(self, fields: builtins.list[str]) -> builtins.list[str]:
        # Without order_by, the model's Meta.ordering, as Model.all(). The primary key breaks
        # ties, so pages neither repeat nor skip rows. A unique, non-null field orders
        # totally already; adding the key there would make PostgreSQL sort again over that
        # field's index (an Incremental Sort) for nothing.
        fields = fields or default_ordering(self.model)
        fields_map = self.model._meta.fields_map
        for name in fields:
            field = fields_map.get(name.lstrip("-"))
            if field is not None and (field.pk or (field.unique and not field.null)):
                return fields
        return [*fields, self.model._meta.pk_attr]

    # -- create ---------------------------------------------------------------------------

    async def create(self, entity: ModelT | EntityData) -> ModelT:
        """Insert one entity (a model instance, dict or pydantic model); returns it with its id.

        Raises:
            DuplicateEntityError: a unique field already holds the value.
            ValidationError: unknown or missing fields, or an invalid value.
        """
        instance = self._instance(entity)
        await instance.save(using_db=self.session.connection, force_create=True)
        return instance

    @overload
    async def create_many(self, entities: Iterable[ModelT | EntityData], *,
                          returning: Literal[True] = True) -> builtins.list[ModelT]: ...
    @overload
    async def create_many(self, entities: Iterable[ModelT | EntityData], *,
                          returning: Literal[False]) -> int: ...
    async def create_many(self, entities: Iterable[ModelT | EntityData], *,
                          returning: bool = True) -> builtins.list[ModelT] | int:
        """Insert many entities in as few statements as possible; ids are set on all of them.

        All or nothing: on any error (a duplicate included) nothing is written, the session
        stays usable, and the error is raised. Signals (pre/post save) are not sent, as with
        Tortoise's ``bulk_create``. On PostgreSQL a batch of 50,000 rows or more goes in by
        binary COPY. ``returning=False`` returns the row count instead and reads
        ``entities`` in chunks (a generator of more rows than fit in memory).
        """
        return await _create_many.create_many(self, entities, returning=returning)

    async def get_or_create(self, defaults: Mapping[str, Any] | None = None,
                            **lookup: Any) -> tuple[ModelT, bool]:
        """The entity matching ``lookup``, created with ``lookup`` + ``defaults`` if missing.

        Race-safe: the INSERT runs in a savepoint; when a concurrent session inserted the
        same key first (a unique constraint on the lookup fields is what makes this safe),
        the existing row is returned. Never aborts the session's transaction. Soft-deleted
        rows count as existing (they still hold their unique keys).

        Returns:
            ``(entity, created)``.
        """
        if not lookup:
            raise ValidationError("get_or_create() needs at least one lookup field",
                                  details={"model": self._name})
        kwargs = filter_kwargs(self.model, lookup, self.session.dialect)
        plain = {k: v for k, v in lookup.items() if "__" not in k}
        queryset = self.query(include_deleted=True).filter(**kwargs)
        found = await queryset.get_or_none()
        if found is not None:
            return found, False
        instance = self._instance({**plain, **(defaults or {})})
        try:
            with self._translating():
                async with self.session.savepoint():
                    await instance.save(using_db=self.session.connection, force_create=True)
        except DuplicateEntityError:
            found = await queryset.get_or_none()
            if found is not None:
                return found, False
            raise  # the conflict is on another unique field than the lookup
        return instance, True

    # -- read -----------------------------------------------------------------------------

    async def get_by_id(self, entity_id: Any, *, include_deleted: bool = False,
                        prefetch: Prefetches | None = None, for_update: LockMode = False,
                        of: LockOf | None = None) -> ModelT | None:
        """The entity with this id, or None.

        ``for_update``: lock the row until the session's transaction ends (``True``);
        ``"nowait"``: raise :class:`LockNotAvailableError` if another transaction holds it;
        ``"skip_locked"``: None if another transaction holds it. ``of``: the models (or
        tables) to lock when the read joins others. On sqlite the session takes the
        database's write lock instead (:mod:`aegis_tortoise._locks`).
        """
        related = prefetch_fields(self.model, prefetch)
        pk = self._pk(entity_id)
        lock = self._lock(for_update, of)
        # The cached statement stands for query().filter(pk=...): only while query() is plain.
        if not related and self._plain_query():
            hidden = self.hide_soft_deleted and not include_deleted
            sql = _bulk.select_by_pk_sql(self.model, self.session.dialect,
                                         self.soft_delete_field, True if hidden else None)
            if lock is not None:
                sql += lock.sql(self.session.dialect)
            return await _reads.one_row(self, sql,
                                       [self.model._meta.pk.to_db_value(pk, self.model)])
        queryset = self.query(include_deleted=include_deleted).filter(pk=pk)
        if lock is not None:
            queryset = queryset.select_for_update(**lock.tortoise())
        return await queryset.prefetch_related(*related).first()

    async def get(self, entity_id: Any, *, include_deleted: bool = False,
                  prefetch: Prefetches | None = None, for_update: LockMode = False,
                  of: LockOf | None = None) -> ModelT:
        """The entity with this id (``for_update``/``of`` as :meth:`get_by_id`).

        Raises:
            EntityNotFoundError: "User not found: 5".
            LockNotAvailableError: ``for_update="skip_locked"`` skipped the row: it exists,
                locked by another transaction (not a 404).
        """
        found = await self.get_by_id(entity_id, include_deleted=include_deleted,
                                     prefetch=prefetch, for_update=for_update, of=of)
        if found is None:
            if for_update == "skip_locked" and await self.exists(
                    entity_id, include_deleted=include_deleted):
                raise LockNotAvailableError(
                    f"{self._name} {entity_id} is locked by another transaction (skip_locked)",
                    details={"entity_type": self._name, "entity_id": repr(entity_id)})
            raise EntityNotFoundError(self._name, entity_id)
        return found

    async def get_by_ids(self, ids: Iterable[Any], *, include_deleted: bool = False,
                         prefetch: Prefetches | None = None, for_update: LockMode = False,
                         of: LockOf | None = None) -> builtins.list[ModelT]:
        """The entities with these ids, in the order given; missing ids are skipped
        (``for_update``/``of`` as :meth:`get_by_id`; rows are locked in key order)."""
        related = prefetch_fields(self.model, prefetch)
        iterable_argument(self.model, "get_by_ids() ids", ids)
        wanted = builtins.list(dict.fromkeys(self._pk(i) for i in ids))
        lock = self._lock(for_update, of)
        # Locking in one order everywhere keeps two lockers of the same rows from deadlocking.
        ordering = (self.model._meta.pk_attr,) if lock is not None else ()
        # Locking: chunks of the sorted keys too, or two sessions could lock two chunks in
        # opposite orders.
        keys = sorted(wanted) if lock is not None else wanted
        found: dict[Any, ModelT] = {}
        for start in range(0, len(keys), _IDS_PER_QUERY):
            chunk = keys[start:start + _IDS_PER_QUERY]
            plain = _reads.plain_where(self, {f"{self.model._meta.pk_attr}__in": chunk},
                                      include_deleted)
            rows = None if plain is None else await _reads.plain_fetch(
                self, *plain, ordering, related, skip=0, limit=None, lock=lock)
            if rows is not None:
                found.update((row.pk, row) for row in rows)
                continue
            queryset = self.query(include_deleted=include_deleted).filter(pk__in=chunk)
            if lock is not None:
                queryset = queryset.select_for_update(**lock.tortoise()).order_by(*ordering)
            if related:
                queryset = queryset.prefetch_related(*related)
            found.update((row.pk, row) for row in await queryset)
        return [found[pk] for pk in wanted if pk in found]

    async def list(self, skip: int = 0, limit: int | None = 100,
                   filters: Mapping[str, Any] | None = None, order_by: OrderBy | None = None,
                   *, include_deleted: bool = False, prefetch: Prefetches | None = None,
                   for_update: LockMode = False,
                   of: LockOf | None = None) -> builtins.list[ModelT]:
        """Entities matching ``filters``, ordered by ``order_by`` (default: the model's
        ``Meta.ordering``, then the primary key).

        Args:
            skip: Rows to skip.
            limit: Maximum rows to return; None for all.
            filters: ``{"name__icontains": "kim", "deleted_at": None}``; None means IS NULL.
            order_by: ``"name"``, ``"-created_at"`` or a list of them.
            include_deleted: Show soft-deleted rows when ``hide_soft_deleted`` is set.
            prefetch: Relations to load in one extra query each (``["policies"]``).
            for_update: Lock the rows returned (as :meth:`get_by_id`).
                ``list(filters=..., limit=n, for_update="skip_locked")`` claims up to ``n``
                rows no other transaction holds: a work queue.
            of: The models (or tables) to lock when a filter joins another table.

        Raises:
            InvalidFilterError: an unknown field or lookup, before any SQL runs.
        """
        filters = single_pass(filters)
        plain = _reads.plain_where(self, filters, include_deleted)
        ordering = self._ordering(order_by_fields(self.model, order_by))
        related = prefetch_fields(self.model, prefetch)
        check_window(skip, limit)
        lock = self._lock(for_update, of)
        if plain is not None:
            rows = await _reads.plain_fetch(self, *plain, tuple(ordering), related,
                                            skip=skip, limit=limit, lock=lock)
            if rows is not None:
                return rows
        queryset = self._select(filters, ordering, related, include_deleted)
        if lock is not None:
            queryset = queryset.select_for_update(**lock.tortoise())
        if skip:
            queryset = queryset.offset(skip)
        return await (queryset if limit is None else queryset.limit(limit))

    def _lock(self, for_update: LockMode, of: LockOf | None) -> ForUpdate | None:
        """The checked lock request; on sqlite it makes the session's next BEGIN take the
        write lock (``BEGIN IMMEDIATE``)."""
        lock = lock_of(for_update, of, self.model)
        if lock is not None:
            refuse_readonly(self.session, "a row lock (for_update)")
        if lock is not None and self.session.dialect != "postgres" and not self.session._began:
            self.session._lock_at_begin = "nowait" if lock.nowait else True
        return lock

    def _select(self, filters: Mapping[str, Any] | None, ordering: builtins.list[str],
                related: Sequence[str | Prefetch], include_deleted: bool) -> QuerySet[ModelT]:
        """The QuerySet of ``filters`` with the validated ``ordering`` and ``related``."""
        queryset = self._where(filters, include_deleted=include_deleted).order_by(*ordering)
        return queryset.prefetch_related(*related) if related else queryset

    async def count(self, filters: Mapping[str, Any] | None = None, *,
                    include_deleted: bool = False) -> int:
        """The number of entities matching ``filters``."""
        plain = _reads.plain_where(self, filters, include_deleted)
        if plain is not None:
            kwargs, shape = plain
            sql = _sql.count_sql(self.model, self.session.dialect, shape)
            params = _sql.params_for(self.model, shape, kwargs)
            _, rows = await self.session.connection.execute_query(sql, params)
            return int(rows[0][0])
        return await self._where(filters, include_deleted=include_deleted).count()

    async def exists(self, entity_id: Any, *, include_deleted: bool = False) -> bool:
        """Whether an entity with this id exists."""
        pk = self._pk(entity_id)
        return await self.query(include_deleted=include_deleted).filter(pk=pk).exists()

    async def paginate(self, page: int = 1, page_size: int = 20,
                       filters: Mapping[str, Any] | None = None,
                       order_by: OrderBy | None = None, *, include_deleted: bool = False,
                       prefetch: Prefetches | None = None) -> PaginatedResponse[ModelT]:
        """One page of entities (1-based) with the total count; two queries."""
        for name, value in (("page", page), ("page_size", page_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be an integer >= 1, got {value!r}",
                                      details={"field": name})
        filters = single_pass(filters)
        plain = _reads.plain_where(self, filters, include_deleted)
        ordering = self._ordering(order_by_fields(self.model, order_by))
        related = prefetch_fields(self.model, prefetch)
        total = await self.count(filters, include_deleted=include_deleted)
        offset = (page - 1) * page_size
        items: builtins.list[ModelT] | None = []
        if offset < total:
            items = None if plain is None else await _reads.plain_fetch(
                self, *plain, tuple(ordering), related, skip=offset, limit=page_size)
            if items is None:
                queryset = self._select(filters, ordering, related, include_deleted)
                items = await queryset.offset(offset).limit(page_size)
        return PaginatedResponse[ModelT].create(items=items or [], total=total, page=page,
                                                page_size=page_size)

    async def paginate_keyset(self, limit: int = 20, order_by: OrderBy | None = None,
                              filters: Mapping[str, Any] | None = None, after: str | None = None,
                              *, include_deleted: bool = False) -> KeysetPage[ModelT]:
        """The page after the cursor ``after`` (None: the first page); one query whatever
        the depth. ``order_by`` takes the model's own columns (NULLs sorted as Tortoise
        sorts them); the primary key breaks ties. A cursor is signed, not encrypted.

        Raises:
            ValidationError: a changed cursor, or one of another model, ordering or filters.
        """
        return await _keyset.paginate_keyset(self, limit=limit, order_by=order_by,
                                             filters=filters, after=after,
                                             include_deleted=include_deleted)

    def iterate(self, filters: Mapping[str, Any] | None = None,
                order_by: OrderBy | None = None, batch_size: int = 1000, *,
                include_deleted: bool = False) -> AsyncGenerator[ModelT, None]:
        """Every entity that matched when the walk began, holding at most ``batch_size`` rows
        (a server-side cursor on PostgreSQL, a snapshot of the keys on sqlite):
        ``async for user in repo.iterate(): ...``."""
        return _stream.items(self, filters=filters, order_by=order_by, batch_size=batch_size,
                             include_deleted=include_deleted)

    def iterate_batches(self, filters: Mapping[str, Any] | None = None,
                        order_by: OrderBy | None = None, batch_size: int = 1000, *,
                        include_deleted: bool = False
                        ) -> AsyncGenerator[builtins.list[ModelT], None]:
        """:meth:`iterate` a list of up to ``batch_size`` entities at a time."""
        return _stream.batches(self, filters=filters, order_by=order_by,
                               batch_size=batch_size, include_deleted=include_deleted)

    # -- update / delete ------------------------------------------------------------------

    async def update(self, entity_id: Any, data: EntityData | None = None, *,
                     expected_version: int | None = None, **fields: Any) -> ModelT | None:
        """Change the given fields (and ``updated_at``); returns the entity, or None if missing.

        ``data`` is a dict or a pydantic model (only the fields it set); ``fields`` win over
        it. On every backend this is one ``UPDATE ... RETURNING`` statement. On a model with
        a field named ``data``, ``update(id, data=[1, 2])`` (a value that is neither a dict
        nor a pydantic model) sets that field, as ``save()`` would.

        On a model with a version field (``VersionedEntity``, ``Meta.version_field``) the
        version goes up by one; ``expected_version=n`` (or a loaded instance passed as
        ``entity_id``) writes only if the row still has version ``n``.

        Raises:
            ConcurrentUpdateError: the row's version is not ``expected_version``; nothing
                was written.
        """
        data, fields = payload_or_field(self.model, data, fields)
        values = writable_values(self.model, {**self._data(data, partial=True), **fields},
                                 action="update")
        pk = self._pk(entity_id)
        if _versions.versioned(self.model, expected_version) is not None:
            return await _versions.update(self, entity_id, pk, python_values(self.model, values),
                                          expected_version)
        if not values:
            return await self.get_by_id(pk, include_deleted=True)
        return await _writes.update_returning(self, pk, python_values(self.model, values))

    async def delete(self, entity_id: Any) -> bool:
        """Delete the row for good; True if it existed."""
        pk = self._pk(entity_id)
        return await self.model.filter(pk=pk).using_db(self.session.connection).delete() > 0

    def _require_soft_delete(self, action: str) -> None:
        if self.soft_delete_field not in self.model._meta.fields_map:
            raise ValidationError(
                f"Cannot {action} {self._name}: it has no {self.soft_delete_field!r} field "
                "(inherit from BaseEntity or SoftDeleteMixin)",
                details={"model": self._name, "field": self.soft_delete_field})

    async def soft_delete(self, entity_id: Any) -> ModelT | None:
        """Set ``deleted_at`` to now (UTC); returns the entity, or None if it does not exist.

        Soft-deleting a soft-deleted row keeps its original ``deleted_at``.
        """
        self._require_soft_delete("soft-delete")
        pk = self._pk(entity_id)
        row = await _writes.update_returning(
            self, pk, {self.soft_delete_field: datetime.now(UTC), **_versions.bump(self.model)},
            where_null=True)
        return row if row is not None else await self.get_by_id(pk, include_deleted=True)

    async def restore(self, entity_id: Any) -> ModelT | None:
        """Clear ``deleted_at``; returns the entity (found even when hidden), or None."""
        self._require_soft_delete("restore")
        pk = self._pk(entity_id)
        row = await _writes.update_returning(
            self, pk, {self.soft_delete_field: None, **_versions.bump(self.model)},
            where_null=False)
        return row if row is not None else await self.get_by_id(pk, include_deleted=True)


    # -- set-based writes (aegis_tortoise._writes) -----------------------------------------

    async def upsert(self, data: EntityData, *, conflict: Sequence[str],
                     update: Sequence[str] | None = None,
                     expected_version: int | None = None) -> tuple[ModelT, bool]:
        """Insert ``data``, or on a conflict over ``conflict`` update the ``update`` fields
        (and ``updated_at``); ``update=None``: leave the existing row as it is. On a
        versioned model an update raises the version, and checks ``expected_version``
        when given (:meth:`update`).

        Returns:
            ``(entity, created)``: the row as stored, and whether this call inserted it.
        """
        if _versions.versioned(self.model, expected_version) is not None:
            return await _versions.upsert(self, data, conflict, update, expected_version)
        (result,) = await _writes.upsert_many(self, [data], conflict, update)
        return result

    async def upsert_many(self, rows: Iterable[ModelT | EntityData], *, conflict: Sequence[str],
                          update: Sequence[str] | None = None
                          ) -> builtins.list[tuple[ModelT, bool]]:
        """:meth:`upsert` for many rows in one statement per chunk; ``(entity, created)`` in
        input order. All or nothing: a bad row raises and nothing of the call is written.

        Raises:
            ValidationError: two rows with the same conflict key, conflict fields that are no
                unique constraint, a bad value (naming the field).
            DuplicateEntityError: a row conflicts on another unique field.
        """
        if _versions.versioned(self.model, None) is not None:
            return await _versions.upsert_many(self, rows, conflict, update)
        return await _writes.upsert_many(self, rows, conflict, update)

    async def update_many(self, rows: Iterable[EntityData]) -> builtins.list[ModelT]:
        """Update each row (a dict with its id and the fields to change); rows may name
        different fields. Ids that do not exist are skipped. One statement per field set
        (``UPDATE ... FROM unnest(...)`` on PostgreSQL), all or nothing. On a versioned
        model, a row's version field is the version it expects (:meth:`update`), and each
        row is its own statement.

        Returns:
            The updated entities, in input order.
        """
        if _versions.versioned(self.model, None) is not None:
            return await _versions.update_many(self, rows)
        return await _writes.update_many(self, rows)

    async def update_where(self, filters: Mapping[str, Any] | None, **values: Any) -> int:
        """Set ``values`` (and ``updated_at``) on every row matching ``filters``; the count.
        On a versioned model each row's version goes up by one (and ``values`` may not set
        it)."""
        return await _writes.update_where(self, filters, values,
                                          _versions.bump(self.model, values))

    async def delete_where(self, filters: Mapping[str, Any] | None) -> int:
        """Delete every row matching ``filters`` for good; the count."""
        return await _writes.delete_where(self, filters)

    async def soft_delete_where(self, filters: Mapping[str, Any] | None) -> int:
        """Soft-delete every row matching ``filters`` not deleted yet; the count (a
        versioned row's version goes up by one, as on every write)."""
        return await _writes.soft_delete_where(self, filters, _versions.bump(self.model))
