"""FastAPI integration: sessions per request, safe error bodies, health and lifespan.

Needs the ``fastapi`` extra (``pip install 'aegis-tortoise[fastapi]'``, FastAPI >= 0.121).

.. code-block:: python

    db = DatabaseManager()                        # DATABASE_URL, DATABASE_MODELS
    app = FastAPI(lifespan=database_lifespan(db))
    install_exception_handlers(app)               # {"error_code", "message", "details"}
    install_health_route(app, db)                 # GET /health: 200 or 503
    DbSession = Annotated[Session, session_dependency(db)]

    @app.post("/users")
    async def create_user(data: UserCreate, session: DbSession) -> UserOut: ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, Request, params
from fastapi.exception_handlers import http_exception_handler as fastapi_http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from tortoise import exceptions as tortoise_exc
from tortoise.models import Model

from aegis_tortoise import errors
from aegis_tortoise._observe import pool_state
from aegis_tortoise._register import (
    RegisterTortoise,
    register_tortoise,
    test_manager,
    tortoise_exception_handlers,
)
from aegis_tortoise.errors import ErrorCode, ServiceException, driver_error, translate_exception
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = [
    "ERROR_BODY_SCHEMA",
    "ERROR_RESPONSES",
    "ErrorBody",
    "ErrorDetails",
    "RegisterTortoise",
    "check_health",
    "database_lifespan",
    "error_response",
    "install_exception_handlers",
    "install_health_route",
    "register_tortoise",
    "session_dependency",
    "tortoise_exception_handlers",
]

logger = logging.getLogger("aegis_tortoise.fastapi")


def session_dependency(db: DatabaseManager, readonly: bool = False) -> params.Depends:
    """A FastAPI dependency that gives each request its own session of ``db``.

    The session commits when the endpoint returns and rolls back when it raises (an
    ``HTTPException`` or a :class:`~aegis_tortoise.ServiceException` included), both before
    the response is sent: the dependency is declared with ``scope="function"``, because with
    FastAPI's default scope for dependencies with ``yield`` the commit would run after the
    client had already received a success, and a failed commit could no longer change the
    response. A commit error (e.g. a deferred constraint) therefore reaches the app's
    exception handlers. One dependency object per request is shared by every parameter that
    uses it (FastAPI's dependency cache), so they all see one transaction.

    The generator itself is ``session_dependency(db).dependency``, for use in other
    dependencies. With ``readonly=True`` each request gets ``db.session(readonly=True)``:
    a read replica (see the README, "Scaling out"), in a READ ONLY transaction.

    Returns:
        A ``Depends`` marker: ``session: Session = session_dependency(db)`` or
        ``Annotated[Session, session_dependency(db)]``.
    """

    async def request_session() -> AsyncIterator[Session]:
        # Under the pytest plugin's app_client, requests run on the test's manager.
        manager = test_manager.get() or db
        async with manager.session(readonly=readonly) as session:
            yield session

    dependency: params.Depends = Depends(request_session, scope="function")
    return dependency


# -- error bodies ------------------------------------------------------------------------------


class ErrorDetails(BaseModel):
    """The safe context of an error: names from the schema, never values or SQL."""

    model_config = ConfigDict(extra="forbid")

    entity_type: str | None = Field(
        default=None, description="The model concerned, e.g. 'User'.")
    field: str | None = Field(
        default=None, description="The field at fault, e.g. 'email' or 'user_id'.")
    fields: list[str] | None = Field(
        default=None, description="Several fields at fault (request validation: "
        "locations such as 'body.email').")


class ErrorBody(BaseModel):
    """The JSON body of every error answer (:data:`ERROR_BODY_SCHEMA` is its JSON Schema)."""

    model_config = ConfigDict(extra="forbid")

    error_code: str = Field(description="A stable code, e.g. 'COMMON_1005'.")
    message: str = Field(description="A fixed, human-readable sentence.")
    details: ErrorDetails = Field(description="Safe context; keys appear only when known.")


_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ErrorBody",
    # Short enough for a line of the docs' code block (tests/docs/test_docs_layout.py).
    "description": "The body of every error answer; details holds the known keys",
    "type": "object",
    "required": ["error_code", "message", "details"],
    "additionalProperties": False,
    "properties": {
        "error_code": {"type": "string", "pattern": "^[A-Z]+_[0-9]{4}$",
                       "description": "A stable code, e.g. COMMON_1005"},
        "message": {"type": "string", "description": "A fixed, human-readable sentence"},
        "details": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "entity_type": {"type": "string", "pattern": _NAME_PATTERN,
                                "description": "The model concerned, e.g. User"},
                "field": {"type": "string",
                          "pattern": "^[A-Za-z_][A-Za-z0-9_]*(, [A-Za-z_][A-Za-z0-9_]*)*$",
                          "description": "The field at fault, e.g. email or user_id"},
                "fields": {"type": "array", "items": {"type": "string"},
                           "description": "Several fields (request validation: body.email)"},
            },
        },
    },
}
"""The JSON Schema (draft 2020-12) of the error body, as documented in docs/reference/fastapi.md."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in ((400, "Invalid input"), (404, "Not found"), (409, "Conflict"),
                         (422, "Invalid request"), (500, "Internal error"),
                         (503, "Database unavailable"))
}
"""For ``@app.get(..., responses=ERROR_RESPONSES)``: the error bodies in the OpenAPI schema."""

_FK_STATES = {"23503"}
_NOT_NULL_STATES = {"23502"}
_MAX_NAME = 64


def _name(value: Any) -> str | None:
    """``value`` if it looks like a schema name (an identifier), else None."""
    if isinstance(value, str) and value.isidentifier() and len(value) <= _MAX_NAME:
        return value
    return None


def _constraint_of(exc: BaseException) -> str | None:
    root = driver_error(exc)
    name = getattr(root, "constraint_name", None) if isinstance(root, asyncpg.PostgresError) \
        else None
    return str(name) if name else None


def _safe_field(exc: ServiceException) -> str | None:
    """The field of a translated error, unless it is really a constraint's name."""
    value = exc.details.get("field")
    if not isinstance(value, str) or exc.details.get("sqlite_errorname", "").endswith("CHECK"):
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(_name(p) for p in parts) or value == _constraint_of(exc):
        return None
    return ", ".join(parts)


def _failed_instance(exc: BaseException) -> Model | None:
    """The model instance whose write failed, from the tracebacks of the chain.

    sqlite reports a foreign-key violation as "FOREIGN KEY constraint failed", naming
    neither table nor column. Tortoise's executor holds the instance in its frame
    (``execute_insert(instance)``): the innermost model instance of the innermost
    exception that has one is the failed row.
    """
    found: Model | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, Model):
                    found = value
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return found


def _foreign_key_details(exc: ServiceException) -> dict[str, Any]:
    """Which field of which entity refers to a row that does not exist."""
    root = driver_error(exc)
    details: dict[str, Any] = {}
    instance = _failed_instance(exc)
    if instance is not None:
        details["entity_type"] = type(instance).__name__
    if isinstance(root, asyncpg.PostgresError):
        # "Key (user_id)=(42) is not present in table "users"." names the column.
        detail = str(getattr(root, "detail", "") or "")
        column = detail[detail.find("(") + 1:detail.find(")")] if detail.startswith("Key (") \
            else ""
        if _name(column):
            details["field"] = column
        return details
    if instance is not None:
        meta = instance._meta
        given = sorted(meta.fields_map[fk].source_field or f"{fk}_id" for fk in meta.fk_fields
                       if getattr(instance, meta.fields_map[fk].source_field or f"{fk}_id",
                                  None) is not None)
        if len(given) == 1:
            details["field"] = given[0]
        elif given:
            details["fields"] = given
    return details


def _public(exc: ServiceException) -> tuple[str, dict[str, Any]]:
    """A fixed message and safe details for one of this library's errors."""
    entity = _name(exc.details.get("entity_type") or exc.details.get("model"))
    state = str(exc.details.get("sqlstate") or exc.details.get("sqlite_errorname") or "")
    if isinstance(exc, errors.EntityNotFoundError):
        return f"{entity or 'Entity'} not found", {"entity_type": entity}
    if isinstance(exc, errors.DuplicateEntityError):
        return (f"{entity or 'Entity'} already exists",
                {"entity_type": entity, "field": _safe_field(exc)})
    if isinstance(exc, errors.InvalidFilterError):
        return "Invalid filter or ordering", {"entity_type": entity}
    if isinstance(exc, errors.ValidationError):
        if state in _FK_STATES or state == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return "A referenced entity does not exist", _foreign_key_details(exc)
        if state in _NOT_NULL_STATES or state == "SQLITE_CONSTRAINT_NOTNULL":
            return "A required value is missing", {"field": _safe_field(exc)}
        return "Invalid value", {"field": _safe_field(exc)}
    if isinstance(exc, errors.PoolTimeoutError):
        return "The service is busy, retry later", {}
    if isinstance(exc, errors.TransactionOutcomeUnknownError):
        return ("The outcome of the request is unknown: check whether it took effect "
                "before retrying"), {}
    if isinstance(exc, errors.DatabaseConnectionError):
        return "The database is unavailable, retry later", {}
    if isinstance(exc, errors.ConcurrentUpdateError):
        return (f"{entity or 'Entity'} was changed by someone else: read it again and retry",
                {"entity_type": entity})
    if isinstance(exc, errors.LockNotAvailableError):
        return f"{entity or 'Entity'} is locked by another request, retry later", {
            "entity_type": entity}
    if isinstance(exc, errors.TransactionConflictError):
        return "A concurrent change conflicted with this request, retry it", {}
    return "Internal server error", {}


def error_response(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and public body (:class:`ErrorBody`) that the installed handlers answer.

    This library's errors get a fixed message and only safe details (the entity type and
    the field at fault), so a body never holds SQL, a SQLSTATE, a constraint name, a
    driver message or a value the client sent. A :class:`ServiceException` subclass
    defined by the application keeps its own message and details. Tortoise's own errors
    (``DoesNotExist``, ``IntegrityError``, ...) are translated first; anything else is a
    500 with a generic message.
    """
    translated = translate_exception(exc) if isinstance(exc, Exception) else exc
    if not isinstance(translated, ServiceException):
        return 500, {"error_code": str(ErrorCode.INTERNAL_ERROR),
                     "message": "Internal server error", "details": {}}
    if not type(translated).__module__.startswith("aegis_tortoise."):
        return translated.status_code, {"error_code": str(translated.error_code),
                                        "message": translated.message,
                                        "details": translated.details}
    message, details = _public(translated)
    body = ErrorBody(error_code=str(translated.error_code), message=message,
                     details=ErrorDetails(**{k: v for k, v in details.items() if v is not None}))
    return translated.status_code, body.model_dump(mode="json", exclude_none=True)


def _log(request: Request, status: int, body: dict[str, Any], exc: BaseException) -> None:
    # The whole cause (driver message, SQLSTATE, constraint, values) goes to the log only.
    level = logging.ERROR if status >= 500 else logging.INFO
    logger.log(level, "%s %s -> %d %s: %s", request.method, request.url.path, status,
               body["error_code"], exc, exc_info=exc)


async def _service_handler(request: Request, exc: Exception) -> JSONResponse:
    status, body = error_response(exc)
    _log(request, status, body, exc)
    return JSONResponse(status_code=status, content=body)


async def _request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    fields: list[str] = []
    for error in exc.errors():
        parts = [str(p) for p in error.get("loc", ()) if isinstance(p, int) or _name(p)]
        location = ".".join(parts)
        if location and location not in fields:
            fields.append(location)
    body = ErrorBody(error_code=str(ErrorCode.VALIDATION_ERROR), message="Invalid request",
                     details=ErrorDetails(fields=fields or None))
    logger.info("%s %s -> 422: %s", request.method, request.url.path, exc.errors())
    return JSONResponse(status_code=422, content=body.model_dump(mode="json", exclude_none=True))


async def _http_handler(request: Request, exc: Exception) -> Response:
    # Starlette's and FastAPI's own answers: an unknown route (404), a wrong method (405),
    # a body that cannot be read (400, e.g. invalid UTF-8), and the app's HTTPException.
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    status = exc.status_code
    if not is_body_allowed_for_status_code(status):
        # 1xx, 204, 304 (an ETag check): HTTP forbids a body; FastAPI's handler sends none.
        return Response(status_code=status, headers=exc.headers)
    if isinstance(exc.detail, str) and exc.detail:
        message = exc.detail  # the app's own text (HTTPException(409, "..."))
    else:
        message = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else (
            "Error")
    message = _HTTP_MESSAGES.get(message, message)
    code = ErrorCode.INTERNAL_ERROR if status >= 500 else (
        ErrorCode.ENTITY_NOT_FOUND if status == 404 else ErrorCode.VALIDATION_ERROR)
    logger.log(logging.ERROR if status >= 500 else logging.INFO, "%s %s -> %d: %s",
               request.method, request.url.path, status, exc.detail)
    body = {"error_code": str(code), "message": message, "details": {}}
    return JSONResponse(status_code=status, content=body, headers=exc.headers)


# Starlette's and FastAPI's own texts, in the house style.
_HTTP_MESSAGES = {"Not Found": "Not found", "Method Not Allowed": "Method not allowed",
                  "There was an error parsing the body": "The request body could not be read"}


def install_exception_handlers(app: FastAPI, *, request_validation: bool = True,
                               unexpected: bool = True, http_errors: bool = True) -> None:
    """Answer every error with the public body ``{"error_code", "message", "details"}``.

    Handles :class:`ServiceException` and Tortoise's errors (see :func:`error_response`),
    and by default also FastAPI's request validation errors (422, whose default body
    echoes the input back), Starlette's HTTP errors (an unknown route 404, a wrong method
    405, an unreadable body 400, and the ``HTTPException`` errors the app raises) and unexpected
    exceptions (500; Starlette re-raises them after answering, so the server logs them
    too). The full cause of each goes to the ``aegis_tortoise.fastapi`` logger: INFO for
    4xx, ERROR for 5xx.

    Args:
        app: The application.
        request_validation: Replace FastAPI's 422 body with the public one
            (``details.fields`` lists the locations, e.g. ``body.email``).
        unexpected: Answer unexpected exceptions with a generic 500 body.
        http_errors: Answer ``HTTPException`` (Starlette's and FastAPI's) with the public
            body instead of ``{"detail": ...}``; 404, 405 and 400 get a fixed message,
            other statuses the exception's text. Headers (``Allow``...) are kept, and
            204/304 get no body. A handler of the app's own for Starlette's
            ``HTTPException``, registered before this call, is kept.
    """
    app.add_exception_handler(ServiceException, _service_handler)
    app.add_exception_handler(tortoise_exc.BaseORMException, _service_handler)
    if request_validation:
        app.add_exception_handler(RequestValidationError, _request_validation_handler)
    if http_errors and app.exception_handlers.get(StarletteHTTPException) in (
            None, fastapi_http_exception_handler, _http_handler):
        # Only in place of FastAPI's default: an app's own handler (FastAPI's documented
        # way to customise these answers) registered before this call is kept.
        app.add_exception_handler(StarletteHTTPException, _http_handler)
    if unexpected:
        app.add_exception_handler(Exception, _service_handler)


# -- health and lifespan -----------------------------------------------------------------------


async def check_health(db: DatabaseManager, *, timeout: float = 5.0  # noqa: ASYNC109
                       ) -> dict[str, Any]:
    """Whether the database answers, how fast, and the pool's state.

    Runs ``SELECT 1`` in a session of ``db`` within ``timeout`` seconds (waiting for a
    free connection included). Never raises for a database failure.

    Returns:
        ``{"status": "ok" | "degraded" | "unavailable", "database": {"reachable",
        "latency_ms", "dialect", "storage"?, "error_code"?}, "pool": {"size", "in_use",
        "idle", "max_size"}}``; no message, host or password. ``"degraded"`` with
        ``"storage": "in-memory"``: nothing set ``DATABASE_URL``, so the service runs on
        the default in-memory sqlite database, empty at every start.
    """
    database: dict[str, Any] = {"reachable": False, "latency_ms": None, "dialect": db.dialect}
    in_memory_default = bool(getattr(db, "url_is_default", False)) and db.url.is_memory
    if in_memory_default:
        database["storage"] = "in-memory"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout), db.session() as session:
            await session.execute("SELECT 1")
        database["reachable"] = True
    except TimeoutError:
        database["error_code"] = str(ErrorCode.DB_POOL_TIMEOUT)
        logger.warning("health check: no answer within %s s", timeout)
    except ServiceException as exc:
        database["error_code"] = str(exc.error_code)
        logger.warning("health check failed: %s", exc, exc_info=exc)
    database["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    status = "unavailable" if not database["reachable"] else (
        "degraded" if in_memory_default else "ok")
    return {"status": status, "database": database, "pool": pool_state(db)}


def install_health_route(app: FastAPI, db: DatabaseManager, *, path: str = "/health",
                         timeout: float = 5.0) -> None:
    """``GET path``: :func:`check_health`'s report, 200 when the database answers
    (``"ok"``, or ``"degraded"`` on the in-memory default), 503 when it does not.

    The manager is found as :func:`session_dependency` finds it: under the pytest
    plugin's ``aegis_client`` (or :func:`~aegis_tortoise.testing.app_client`) it is the
    test's, otherwise ``db``.
    """

    async def health() -> JSONResponse:
        report = await check_health(test_manager.get() or db, timeout=timeout)
        return JSONResponse(status_code=503 if report["status"] == "unavailable" else 200,
                            content=report)

    app.add_api_route(path, health, methods=["GET"], include_in_schema=True,
                      summary="Database readiness", tags=["health"])


def database_lifespan(db: DatabaseManager, *, generate_schemas: bool = False,
                      check: bool = True,
                      ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)``: ``db`` is ``app.state.db``, closed at shutdown.

    Args:
        db: The manager.
        generate_schemas: Create missing tables at startup (tests and demos; production
            uses the migrations).
        check: Open a session at startup, so a wrong URL, password or model module stops
            the app from starting instead of failing its first request.

    Inside an own lifespan: ``async with database_lifespan(db)(app): yield``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Under the pytest plugin's app_client the app runs on the test's manager, which
        # the test owns: nothing to create, check or close here.
        manager = test_manager.get()
        if manager is not None:
            app.state.db = manager
            yield
            return
        app.state.db = db
        try:
            if generate_schemas:
                await db.generate_schemas()
            elif check:
                async with db.session() as session:
                    await session.execute("SELECT 1")
            yield
        finally:
            await db.close()

    return lifespan
