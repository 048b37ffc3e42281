"""Optional OpenTelemetry spans, one per statement (``pip install 'aegis-tortoise[otel]'``).

Spans follow the database semantic conventions: kind CLIENT, named
``"{db.operation.name} {db.namespace}"``, with ``db.system.name``, ``db.namespace``,
``db.operation.name``, ``db.query.text`` (the parameterised SQL; parameter values are never
recorded), ``server.address`` / ``server.port`` on PostgreSQL, and ``error.type`` with an
ERROR status when the statement failed. They are made only while a tracer provider is
installed (``opentelemetry.trace.set_tracer_provider``), as children of the span that is
current where the statement runs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace

    _AVAILABLE = True
except ImportError:  # pragma: no cover - the otel extra is not installed
    _AVAILABLE = False

if TYPE_CHECKING:
    from aegis_tortoise.config import DatabaseURL

__all__ = ["statement_span", "tracer"]

_SYSTEMS = {"postgres": "postgresql", "sqlite": "sqlite"}


def tracer() -> Any:
    """The library's tracer, or None while no tracer provider is installed."""
    if not _AVAILABLE:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer("aegis_tortoise")


def statement_span(span_tracer: Any, url: DatabaseURL, sql: str, seconds: float,
                   error: BaseException | None) -> None:
    """Record one finished statement as a span that ended now and lasted ``seconds``."""
    end = time.time_ns()
    words = sql.split(None, 1)
    operation = words[0].upper() if words else ""
    namespace = url.database or ""
    attributes: dict[str, Any] = {
        "db.system.name": _SYSTEMS[url.dialect],
        "db.query.text": sql,
    }
    if operation:
        attributes["db.operation.name"] = operation
    if namespace:
        attributes["db.namespace"] = namespace
    if url.dialect == "postgres" and url.host:
        attributes["server.address"] = url.host
        if url.port:
            attributes["server.port"] = url.port
    name = " ".join(part for part in (operation, namespace) if part) or attributes[
        "db.system.name"]
    span = span_tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes,
                                  start_time=end - int(seconds * 1e9))
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end(end_time=end)
