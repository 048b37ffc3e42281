"""BaseRepository[T]: CRUD, filters, pagination and soft delete for one model on a session.

Every query runs on the session's Tortoise client (``using_db(session.connection)``), so a
repository works in the session's transaction whichever task or context calls it.
``filters``, ``order_by`` and ``prefetch`` are checked against the model before any SQL is
sent (:mod:`aegis_tortoise._filters`).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin, overload

from pydantic import BaseModel
from tortoise.expressions import Expression, ResolveContext, Subquery
from tortoise.models import Model
from tortoise.query_utils import Prefetch
from tortoise.queryset import QuerySet

from aegis_tortoise import _bulk
from aegis_tortoise import _select as _sql
from aegis_tortoise._filters import (
    default_ordering,
    fans_out,
    filter_kwargs,
    order_by_fields,
    prefetch_fields,
    single_pass,
    writable_values,
)
from aegis_tortoise._translate import public_methods
from aegis_tortoise._values import auto_now_values, db_values, python_values
from aegis_tortoise.errors import (
    ConfigurationError,
    DuplicateEntityError,
    EntityNotFoundError,
    ValidationError,
    translate_errors,
)
from aegis_tortoise.models import PaginatedResponse
from aegis_tortoise.session import Session

__all__ = ["BaseRepository", "ModelT"]

ModelT = TypeVar("ModelT", bound=Model)

#: Entity data: a model instance, a dict of field values, or a pydantic model.
EntityData = Mapping[str, Any] | BaseModel
OrderBy = str | Sequence[str]
Prefetches = str | Iterable[str | Prefetch]

_is_none = functools.partial(operator.is_, None)

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
    """

    hide_soft_deleted: ClassVar[bool] = False
    soft_delete_field: ClassVar[str] = "deleted_at"

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
        kwargs = filter_kwargs(self.model, filters)
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
                raise ValueError("None")  # noqa: TRY301 - same message as a bad value
            return self.model._meta.pk.to_python_value(entity_id)
        except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:
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

    async def create_many(self, entities: Iterable[ModelT | EntityData]
                          ) -> builtins.list[ModelT]:
        """Insert many entities in as few statements as possible; ids are set on all of them.

        All or nothing: on any error (a duplicate included) nothing is written, the session
        stays usable, and the error is raised. Signals (pre/post save) are not sent, as with
        Tortoise's ``bulk_create``.
        """
        items = builtins.list(entities)
        if not items:
            return []
        saved = await self._create_many_by_column(items)
        if saved is not None:
            return saved
        instances = [self._instance(entity) for entity in items]
        rows = await _bulk.prepare_rows(instances)
        before = [instance.pk for instance in instances]
        try:
            async with self.session.savepoint():
                await _bulk.insert_rows(self.session, self.model, rows)
        except BaseException:
            for instance, pk in zip(instances, before, strict=True):
                instance.pk = pk  # the ids of a rolled-back insert must not stick
            raise
        return instances

    async def _create_many_by_column(self, items: builtins.list[ModelT | EntityData]
                                     ) -> builtins.list[ModelT] | None:
        """create_many's column-at-a-time path (:mod:`aegis_tortoise._bulk`).

        Returns None when the batch needs the row-at-a-time path (relations given as
        objects, explicit primary keys, async or database defaults, array columns); then
        nothing has been sent or changed. Both paths accept and reject the same input.
        """
        plan = _bulk.bulk_plan(self.model)
        if plan.unsupported:
            return None
        gathered = self._batch_rows(items)
        if gathered is None:
            return None
        rows, is_instance, keysets = gathered
        for keyset in keysets:
            writable_values(self.model, dict.fromkeys(keyset), action="create")
            if keyset & plan.fallback_keys:
                return None
        try:
            # A value a field cannot convert raises here (object() for a Decimal, "abc" ->
            # InvalidOperation, 12 for a UUID); the public wrapper makes it a ValidationError.
            batch = _bulk.prepare_batch(plan, rows, is_instance, keysets)
        except _bulk.NeedsRowPath:
            return None
        except _bulk.MissingFieldsError as exc:
            raise self._missing(exc.fields) from None
        async with self.session.savepoint():
            # The INSERT goes out first; the instances are built while the server works
            # (~10 ms of a 10,000-row batch), then get their keys.
            insert = asyncio.ensure_future(
                _bulk.insert_batch(self.session, plan, batch, len(rows)))
            try:
                await asyncio.sleep(0)  # the task sends the statement, then waits
                built = _bulk.new_instances(plan, batch, is_instance)
                keys = await insert
            except BaseException:
                await _settle(insert)
                raise
        saved: builtins.list[ModelT] = _bulk.finish_instances(plan, batch, built, items, keys)
        return saved

    def _batch_rows(self, items: builtins.list[ModelT | EntityData]) -> tuple[
            Sequence[Mapping[str, Any]], Sequence[bool], set[frozenset[str]]] | None:
        """Each item's field values (a dict, or an instance's ``__dict__``), which items are
        instances, and the dicts' distinct key sets; None if an instance has its own key."""
        first = items[0]
        if type(first) is dict and set(map(type, items)) == {dict}:
            # Plain dicts with one key set (the usual batch): checked in C, not per row.
            first_keys = first.keys()
            if all(map(first_keys.__eq__, map(dict.keys, items))):  # type: ignore[arg-type]
                dicts: builtins.list[Mapping[str, Any]] = items  # type: ignore[assignment]
                return dicts, [False] * len(items), {frozenset(first_keys)}
        pk_attr = self.model._meta.pk_attr
        generated_pk = self.model._meta.pk.generated
        if type(first) is self.model and set(map(type, items)) == {self.model}:
            # New instances of the model (the other usual batch), checked in C.
            states: builtins.list[dict[str, Any]] = [vars(item) for item in items]
            try:
                saved = any(map(operator.itemgetter("_saved_in_db"), states))
                keyed = generated_pk and not all(
                    map(_is_none, map(operator.itemgetter(pk_attr), states)))
            except KeyError:  # an attribute deleted by the caller: the per-item loop names it
                saved = keyed = False
            else:
                if keyed:
                    return None  # explicit keys: inserted in statements of their own
                if not saved:
                    return states, [True] * len(items), set()
        rows: builtins.list[Mapping[str, Any]] = []
        is_instance: builtins.list[bool] = []
        keysets: set[frozenset[str]] = set()
        last: Any = None
        for entity in items:
            if isinstance(entity, Model):
                state = self._unsaved(entity).__dict__
                if generated_pk and state.get(pk_attr) is not None:
                    return None  # an explicit key: inserted in a statement of its own
                rows.append(state)
                is_instance.append(True)
                continue
            data = entity if isinstance(entity, Mapping) else self._data(entity, partial=False)
            keys = data.keys()
            if keys != last:  # consecutive dicts mostly share their keys: check a set once
                keysets.add(frozenset(keys))
                last = keys
            rows.append(data)
            is_instance.append(False)
        return rows, is_instance, keysets

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
        kwargs = filter_kwargs(self.model, lookup)
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
            return await self._one_row(self.session.connection, sql,
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
        wanted = builtins.list(dict.fromkeys(self._pk(i) for i in ids))
        found: dict[Any, ModelT] = {}
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[start:start + _IDS_PER_QUERY]
            plain = self._plain_where({f"{self.model._meta.pk_attr}__in": chunk},
                                      include_deleted)
            rows = None if plain is None else await self._plain_fetch(
                *plain, (), related, skip=0, limit=None)
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
        plain = self._plain_where(filters, include_deleted)
        ordering = self._ordering(order_by_fields(self.model, order_by))
        related = prefetch_fields(self.model, prefetch)
        _check_window(skip, limit)
        if plain is not None:
            rows = await self._plain_fetch(*plain, tuple(ordering), related, skip=skip, limit=limit)
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
        plain = self._plain_where(filters, include_deleted)
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
        plain = self._plain_where(filters, include_deleted)
        ordering = self._ordering(order_by_fields(self.model, order_by))
        related = prefetch_fields(self.model, prefetch)
        total = await self.count(filters, include_deleted=include_deleted)
        offset = (page - 1) * page_size
        items: builtins.list[ModelT] | None = []
        if offset < total:
            items = None if plain is None else await self._plain_fetch(
                *plain, tuple(ordering), related, skip=offset, limit=page_size)
            if items is None:
                queryset = self._select(filters, ordering, related, include_deleted)
                items = await queryset.offset(offset).limit(page_size)
        return PaginatedResponse[ModelT].create(items=items or [], total=total, page=page,
                                                page_size=page_size)

    # -- reads without the QuerySet (aegis_tortoise._select) ------------------------------

    def _plain_query(self) -> bool:
        """Whether ``query()`` is the plain table, so SQL built here may stand for it: neither
        the repository's ``query()`` nor the model's ``Meta.manager`` is overridden."""
        return type(self).query is BaseRepository.query and _sql.plain_model(self.model)

    def _row_plan(self) -> _sql.RowPlan:
        return _sql.row_plan(self.model, _native_types(self.session.connection))

    def _plain_where(self, filters: Mapping[str, Any] | None, include_deleted: bool
                     ) -> tuple[dict[str, Any], _sql.Shape] | None:
        """Validated filters (as ``query()`` would apply them) and their shape, or None when
        the QuerySet must run them (a ``query()`` override, a filter the shape cannot hold).

        Raises:
            InvalidFilterError: as :meth:`_where` would, before any SQL.
        """
        kwargs = filter_kwargs(self.model, filters)
        if not self._plain_query():
            return None  # query() or the model's manager may narrow or join: QuerySet path
        if self.hide_soft_deleted and not include_deleted:
            hidden = f"{self.soft_delete_field}__isnull"
            if kwargs.get(hidden, True) is not True:
                return None  # query() ANDs IS NULL with the caller's IS NOT NULL: let it
            kwargs = {hidden: True, **kwargs}
        shape = _sql.shape_of(self.model, kwargs, self.session.dialect)
        return None if shape is None else (kwargs, shape)

    async def _plain_fetch(self, kwargs: Mapping[str, Any], shape: _sql.Shape,
                           ordering: tuple[str, ...], related: Sequence[str | Prefetch], *,
                           skip: int, limit: int | None) -> builtins.list[ModelT] | None:
        """Rows for a plain shape through SQL built once per shape; None to use the QuerySet
        (an ordering or prefetch the cached SQL does not cover)."""
        model = self.model
        dialect = self.session.dialect
        if not _sql.orderable(model, ordering, dialect):
            return None
        native = _native_types(self.session.connection)
        prefetches: builtins.list[tuple[str, _sql.PrefetchPlan]] = []
        for name in related:
            if not isinstance(name, str) or dialect != "postgres":
                return None
            plan = _sql.prefetch_plan(model, name, native)
            if plan is None:
                return None
            prefetches.append((name, plan))
        rows = _sql.row_plan(model, native)
        sql = _sql.select_sql(model, dialect, shape, ordering, rows.columns_sql,
                              limit=limit is not None, offset=bool(skip))
        params = _sql.params_for(model, shape, kwargs)
        if limit is not None:
            params.append(limit)
        if skip:
            params.append(skip)
        _, records = await self.session.connection.execute_query(sql, params)
        items: builtins.list[ModelT] = rows.build(records)
        for name, plan in prefetches:
            await self._prefetch_reverse(items, name, plan, native)
        return items

    async def _prefetch_reverse(self, items: Sequence[ModelT], name: str,
                                plan: _sql.PrefetchPlan, native: frozenset[type]) -> None:
        """Load reverse relation ``name`` of ``items`` in one query, as Tortoise 1.1.9's
        ``_prefetch_reverse_relation`` does (same grouping, same result containers)."""
        own = plan.own_attr
        keys = builtins.list(dict.fromkeys(getattr(item, own) for item in items))
        groups: dict[Any, builtins.list[Any]] = {}
        if keys:
            values = [plan.own_field.to_db_value(key, self.model) for key in keys]
            _, records = await self.session.connection.execute_query(plan.sql, [values])
            fk_attr = plan.fk_attr
            for obj in _sql.row_plan(plan.related, native).build(records):
                groups.setdefault(getattr(obj, fk_attr), []).append(obj)
        for item in items:
            getattr(item, name)._set_result_for_query(groups.get(getattr(item, own), []), None)

    # -- update / delete ------------------------------------------------------------------

    async def update(self, entity_id: Any, data: EntityData | None = None,
                     **fields: Any) -> ModelT | None:
        """Change the given fields (and ``updated_at``); returns the entity, or None if missing.

        ``data`` is a dict or a pydantic model (only the fields it set); ``fields`` win over
        it. On every backend this is one ``UPDATE ... RETURNING`` statement. On a model with
        a field named ``data``, ``update(id, data=[1, 2])`` (a value that is neither a dict
        nor a pydantic model) sets that field, as ``save()`` would.
        """
        given: object = data  # callers pass any value as data= for a field of that name
        if (given is not None and not isinstance(given, Mapping | BaseModel)
                and "data" in self.model._meta.fields_map):
            data, fields = None, {"data": given, **fields}
        values = writable_values(self.model, {**self._data(data, partial=True), **fields},
                                 action="update")
        pk = self._pk(entity_id)
        if not values:
            return await self.get_by_id(pk, include_deleted=True)
        return await self._update_returning(pk, python_values(self.model, values))

    async def _update_returning(self, pk: Any, values: dict[str, Any], *,
                                where_null: bool | None = None) -> ModelT | None:
        """``UPDATE ... SET <values>, updated_at = now WHERE pk = ... RETURNING *``.

        Args:
            where_null: True/False: only if the soft-delete field is NULL / NOT NULL.
        """
        meta = self.model._meta
        table = meta.basetable
        conn = self.session.connection
        auto_now_values(self.model, values, datetime.now(UTC))
        if not any(isinstance(v, Expression) or k in meta.fk_fields or k in meta.o2o_fields
                   for k, v in values.items()):
            return await self._update_cached(pk, values, where_null)
        query = conn.query_class.update(table)
        context = ResolveContext(model=self.model, table=table, annotations={},
                                 custom_filters={})
        for key, given in values.items():
            name, value, field = key, given, meta.fields_map[key]
            if key in meta.fk_fields or key in meta.o2o_fields:
                self.model._validate_relation_type(key, given)
                if isinstance(given, Model):
                    value = getattr(given, field.to_field_instance.model_field_name)  # type: ignore[attr-defined]
                name = str(field.source_field)
                field = meta.fields_map[name]
            column = meta.fields_db_projection[name]
            if isinstance(value, Expression):
                query = query.set(column, value.resolve(context).term)
            else:
                # The model class, not an instance: no auto_now side effects, as in
                # Tortoise's own QuerySet.update().
                query = query.set(column, field.to_db_value(value, self.model))
        query = query.where(table[meta.db_pk_column] == meta.pk.to_db_value(pk, self.model))
        if where_null is not None:
            marker = table[meta.fields_db_projection[self.soft_delete_field]]
            query = query.where(marker.isnull() if where_null else marker.notnull())
        query = query.returning(*meta.fields_db_projection.values())  # type: ignore[operator]
        sql, params = query.get_parameterized_sql()
        return await self._one_row(conn, sql, params)

    async def _update_cached(self, pk: Any, values: dict[str, Any],
                             where_null: bool | None) -> ModelT | None:
        """``_update_returning`` for plain values, with the SQL built once per column set."""
        meta = self.model._meta
        columns = tuple(meta.fields_db_projection[key] for key in values)
        sql = _bulk.update_by_pk_sql(self.model, self.session.dialect, columns,
                                     self.soft_delete_field, where_null)
        params = db_values(self.model, values)
        params.append(meta.pk.to_db_value(pk, self.model))
        return await self._one_row(self.session.connection, sql, params)

    async def _one_row(self, connection: Any, sql: str,
                            params: builtins.list[Any]) -> ModelT | None:
        """The first row of a statement that selects or returns every column, as an
        instance (None if there is none)."""
        rows = await _bulk.fetch_rows(connection, sql, params)
        found: builtins.list[ModelT] = self._row_plan().build(rows[:1])
        return found[0] if found else None

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
        row = await self._update_returning(pk, {self.soft_delete_field: datetime.now(UTC)},
                                           where_null=True)
        return row if row is not None else await self.get_by_id(pk, include_deleted=True)

    async def restore(self, entity_id: Any) -> ModelT | None:
        """Clear ``deleted_at``; returns the entity (found even when hidden), or None."""
        self._require_soft_delete("restore")
        pk = self._pk(entity_id)
        row = await self._update_returning(pk, {self.soft_delete_field: None}, where_null=False)
        return row if row is not None else await self.get_by_id(pk, include_deleted=True)


async def _settle(task: asyncio.Future[Any]) -> None:
    """Stop ``task`` and wait until it has (the driver cancels a running statement itself).

    A cancellation that arrives meanwhile is held until the task is done, so the savepoint
    around it is never rolled back while its statement still runs; then it is raised.
    """
    task.cancel()
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if not task.cancelled():
        task.exception()  # retrieved: the caller's own error is the one raised
    if cancelled:
        raise asyncio.CancelledError


@lru_cache(maxsize=64)
def _native_of(executor: type) -> frozenset[type]:
    return frozenset(executor.DB_NATIVE)  # type: ignore[attr-defined]


def _native_types(connection: Any) -> frozenset[type]:
    """The Python types the connection's driver returns as they are (Tortoise DB_NATIVE)."""
    return _native_of(connection.executor_class)


def _check_window(skip: int, limit: int | None) -> None:
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValidationError(f"skip must be an integer >= 0, got {skip!r}",
                              details={"field": "skip"})
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be an integer >= 0 or None, got {limit!r}",
                              details={"field": "limit"})
