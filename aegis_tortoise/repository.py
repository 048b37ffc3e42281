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
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin, overload

from pydantic import BaseModel
from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.query_utils import Prefetch
from tortoise.queryset import QuerySet

from aegis_tortoise import _bulk, _create_many, _keyset, _reads, _stream, _writes
from aegis_tortoise import _select as _sql
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
from aegis_tortoise._translate import VALUE_ERRORS, public_methods
from aegis_tortoise._values import iterable_argument, payload_or_field, python_values, refuse_nan
from aegis_tortoise.errors import (
    ConfigurationError,
    DuplicateEntityError,
    EntityNotFoundError,
    ValidationError,
    translate_errors,
)
from aegis_tortoise.models import KeysetPage, PaginatedResponse
from aegis_tortoise.session import Session

__all__ = ["BaseRepository", "ModelT"]

ModelT = TypeVar("ModelT", bound=Model)

#: Entity data: a model instance, a dict of field values, or a pydantic model.
EntityData = Mapping[str, Any] | BaseModel
OrderBy = str | Sequence[str]
Prefetches = str | Iterable[str | Prefetch]

# get_by_ids sends at most this many ids per query (PostgreSQL allows 32767 parameters).
_IDS_PER_QUERY = 10_000


@public_methods
class BaseRepository(Generic[ModelT]):
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
        cursor_secret: The HMAC key of ``paginate_keyset`` cursors; None: the
            ``AEGIS_CURSOR_SECRET`` environment variable, else a key made per process.
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

    @property
    def _name(self) -> str:
        return self.model.__name__

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
                        prefetch: Prefetches | None = None) -> ModelT | None:
        """The entity with this id, or None."""
        related = prefetch_fields(self.model, prefetch)
        pk = self._pk(entity_id)
        # The cached statement stands for query().filter(pk=...): only while query() is plain.
        if not related and self._plain_query():
            hidden = self.hide_soft_deleted and not include_deleted
            sql = _bulk.select_by_pk_sql(self.model, self.session.dialect,
                                         self.soft_delete_field, True if hidden else None)
            return await _reads.one_row(self, sql,
                                       [self.model._meta.pk.to_db_value(pk, self.model)])
        queryset = self.query(include_deleted=include_deleted).filter(pk=pk)
        return await queryset.prefetch_related(*related).first()

    async def get(self, entity_id: Any, *, include_deleted: bool = False,
                  prefetch: Prefetches | None = None) -> ModelT:
        """The entity with this id.

        Raises:
            EntityNotFoundError: "User not found: 5".
        """
        found = await self.get_by_id(entity_id, include_deleted=include_deleted,
                                     prefetch=prefetch)
        if found is None:
            raise EntityNotFoundError(self._name, entity_id)
        return found

    async def get_by_ids(self, ids: Iterable[Any], *, include_deleted: bool = False,
                         prefetch: Prefetches | None = None) -> builtins.list[ModelT]:
        """The entities with these ids, in the order given; missing ids are skipped."""
        related = prefetch_fields(self.model, prefetch)
        iterable_argument(self.model, "get_by_ids() ids", ids)
        wanted = builtins.list(dict.fromkeys(self._pk(i) for i in ids))
        found: dict[Any, ModelT] = {}
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[start:start + _IDS_PER_QUERY]
            plain = _reads.plain_where(self, {f"{self.model._meta.pk_attr}__in": chunk},
                                      include_deleted)
            rows = None if plain is None else await _reads.plain_fetch(
                self, *plain, (), related, skip=0, limit=None)
            if rows is not None:
                found.update((row.pk, row) for row in rows)
                continue
            queryset = self.query(include_deleted=include_deleted).filter(pk__in=chunk)
            if related:
                queryset = queryset.prefetch_related(*related)
            found.update((row.pk, row) for row in await queryset)
        return [found[pk] for pk in wanted if pk in found]

    async def list(self, skip: int = 0, limit: int | None = 100,
                   filters: Mapping[str, Any] | None = None, order_by: OrderBy | None = None,
                   *, include_deleted: bool = False,
                   prefetch: Prefetches | None = None) -> builtins.list[ModelT]:
        """Entities matching ``filters``, ordered by ``order_by`` (default: the model's
        ``Meta.ordering``, then the primary key).

        Args:
            skip: Rows to skip.
            limit: Maximum rows to return; None for all.
            filters: ``{"name__icontains": "kim", "deleted_at": None}``; None means IS NULL.
            order_by: ``"name"``, ``"-created_at"`` or a list of them.
            include_deleted: Show soft-deleted rows when ``hide_soft_deleted`` is set.
            prefetch: Relations to load in one extra query each (``["policies"]``).

        Raises:
            InvalidFilterError: an unknown field or lookup, before any SQL runs.
        """
        filters = single_pass(filters)
        plain = _reads.plain_where(self, filters, include_deleted)
        ordering = self._ordering(order_by_fields(self.model, order_by))
        related = prefetch_fields(self.model, prefetch)
        _check_window(skip, limit)
        if plain is not None:
            rows = await _reads.plain_fetch(self, *plain, tuple(ordering), related,
                                            skip=skip, limit=limit)
            if rows is not None:
                return rows
        queryset = self._select(filters, ordering, related, include_deleted)
        if skip:
            queryset = queryset.offset(skip)
        return await (queryset if limit is None else queryset.limit(limit))

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
        the depth. ``order_by`` takes non-null fields; the primary key breaks ties.

        Raises:
            ValidationError: a changed cursor, or one of another model or ordering.
        """
        return await _keyset.paginate_keyset(self, limit=limit, order_by=order_by,
                                             filters=filters, after=after,
                                             include_deleted=include_deleted)

    def iterate(self, filters: Mapping[str, Any] | None = None,
                order_by: OrderBy | None = None, batch_size: int = 1000, *,
                include_deleted: bool = False) -> AsyncGenerator[ModelT, None]:
        """Every matching entity, holding at most ``batch_size`` rows (a server-side cursor
        on PostgreSQL, keyset batches on sqlite): ``async for user in repo.iterate(): ...``."""
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

    async def update(self, entity_id: Any, data: EntityData | None = None,
                     **fields: Any) -> ModelT | None:
        """Change the given fields (and ``updated_at``); returns the entity, or None if missing.

        ``data`` is a dict or a pydantic model (only the fields it set); ``fields`` win over
        it. On every backend this is one ``UPDATE ... RETURNING`` statement. On a model with
        a field named ``data``, ``update(id, data=[1, 2])`` (a value that is neither a dict
        nor a pydantic model) sets that field, as ``save()`` would.
        """
        data, fields = payload_or_field(self.model, data, fields)
        values = writable_values(self.model, {**self._data(data, partial=True), **fields},
                                 action="update")
        pk = self._pk(entity_id)
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
        row = await _writes.update_returning(self, pk, {self.soft_delete_field: datetime.now(UTC)},
                                           where_null=True)
        return row if row is not None else await self.get_by_id(pk, include_deleted=True)

    async def restore(self, entity_id: Any) -> ModelT | None:
        """Clear ``deleted_at``; returns the entity (found even when hidden), or None."""
        self._require_soft_delete("restore")
        pk = self._pk(entity_id)
        row = await _writes.update_returning(self, pk, {self.soft_delete_field: None},
                                             where_null=False)
        return row if row is not None else await self.get_by_id(pk, include_deleted=True)


    # -- set-based writes (aegis_tortoise._writes) -----------------------------------------

    async def upsert(self, data: EntityData, *, conflict: Sequence[str],
                     update: Sequence[str] | None = None) -> tuple[ModelT, bool]:
        """Insert ``data``, or on a conflict over ``conflict`` update the ``update`` fields
        (and ``updated_at``); ``update=None``: leave the existing row as it is.

        Returns:
            ``(entity, created)``: the row as stored, and whether this call inserted it.
        """
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
        return await _writes.upsert_many(self, rows, conflict, update)

    async def update_many(self, rows: Iterable[EntityData]) -> builtins.list[ModelT]:
        """Update each row (a dict with its id and the fields to change); rows may name
        different fields. Ids that do not exist are skipped. One statement per field set
        (``UPDATE ... FROM unnest(...)`` on PostgreSQL), all or nothing.

        Returns:
            The updated entities, in input order.
        """
        return await _writes.update_many(self, rows)

    async def update_where(self, filters: Mapping[str, Any] | None, **values: Any) -> int:
        """Set ``values`` (and ``updated_at``) on every row matching ``filters``; the count."""
        return await _writes.update_where(self, filters, values)

    async def delete_where(self, filters: Mapping[str, Any] | None) -> int:
        """Delete every row matching ``filters`` for good; the count."""
        return await _writes.delete_where(self, filters)

    async def soft_delete_where(self, filters: Mapping[str, Any] | None) -> int:
        """Soft-delete every row matching ``filters`` not deleted yet; the count."""
        return await _writes.soft_delete_where(self, filters)

def _check_window(skip: int, limit: int | None) -> None:
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValidationError(f"skip must be an integer >= 0, got {skip!r}",
                              details={"field": "skip"})
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be an integer >= 0 or None, got {limit!r}",
                              details={"field": "limit"})
