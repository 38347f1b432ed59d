"""Celery: the trace and session travel with each task, from the code that sends it to
the worker that runs it.

``instrument_celery()`` (or ``HoneyHiveTracer.init(instrument_celery=True)``,
``HH_INSTRUMENT_CELERY=true``) connects to Celery's signals, in the producer and in the
worker (the same module usually runs both):

- ``before_task_publish``: the current trace and session are written into the message
  headers (``traceparent``, ``tracestate``, ``baggage``; signed when the tracer has a
  baggage secret). A task published by a running task (a chain's next step, a chord's
  body, a task started from a task) is a child of that task's span.
- ``task_prerun``: the worker continues the headers under the tracer's trust policy and
  starts a CONSUMER span named after the task, current for the task's body.
- ``task_failure`` / ``task_retry`` / ``task_postrun``: the exception and an ERROR
  status, a ``retry`` event, then the span ends with the task's state.

A retry is published from inside the failing attempt: it continues what that attempt
continued, so every attempt is a child of the producer's span, and attempts after the
first link to the first one (``celery.retries`` counts them).

With OpenTelemetry's own Celery instrumentor active, these handlers do nothing: that
instrumentor makes the spans, and honeytrace's propagator (installed globally) carries
the session in its headers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from opentelemetry import context as _context
from opentelemetry import trace as _trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from .. import _core, _registry
from .._registry import TracerLike

logger = logging.getLogger("honeytrace")

_FIELDS = ("traceparent", "tracestate", "baggage")
# The first attempt's traceparent, carried by a task's retries (for their link).
_FIRST = "honeytrace_first_attempt"

_lock = threading.Lock()
_connected = False
_tracer: Optional[TracerLike] = None
# Task id -> (span, context token, first attempt's traceparent, the context the task
# continued) while the task runs.
_running: dict[str, tuple[Any, Any, str, Any]] = {}


_otel_instrumentor: Any = None  # OpenTelemetry's CeleryInstrumentor class, once found
_otel_looked = False


def _otel_active() -> bool:
    """Whether OpenTelemetry's Celery instrumentor is instrumenting (then it makes the
    spans, and honeytrace stays out of the way). The import is tried once."""
    global _otel_instrumentor, _otel_looked
    if not _otel_looked:
        try:
            from opentelemetry.instrumentation.celery import CeleryInstrumentor

            _otel_instrumentor = CeleryInstrumentor
        except Exception:
            _otel_instrumentor = None
        _otel_looked = True
    if _otel_instrumentor is None:
        return False
    # A singleton, kept in the class's `_instance` once made (instrument() makes it);
    # read without instantiating, which costs a microsecond on every publish.
    instance = getattr(_otel_instrumentor, "_instance", None)
    if instance is None:
        return False
    return bool(getattr(instance, "_is_instrumented_by_opentelemetry", False))


def _tracer_now() -> Any:
    t = _tracer if _tracer is not None else _registry.default()
    return t


def _current_task_id() -> Optional[str]:
    from celery import current_task  # imported by then: Celery is publishing

    request = getattr(current_task, "request", None) if current_task is not None else None
    tid = getattr(request, "id", None)
    return tid if isinstance(tid, str) else None


def _before_publish(sender: Any = None, headers: Any = None, **_: Any) -> None:
    if not isinstance(headers, dict) or _otel_active():
        return
    try:
        tid = headers.get("id")
        running = _running.get(tid) if isinstance(tid, str) and _running else None
        carrier: dict[str, str] = {}
        if running is not None and tid == _current_task_id():
            # A retry of the running task: it continues what the failing attempt
            # continued (the producer's span; signed again, now), and carries the
            # first attempt for a link.
            _core.inject(carrier, context=running[3], tracer=_tracer)
            carrier[_FIRST] = running[2]
        else:
            _core.inject(carrier, tracer=_tracer)
        for field in (*_FIELDS, _FIRST):
            headers.pop(field, None)
        headers.update(carrier)
    except Exception:  # tracing never breaks the publish
        logger.debug("honeytrace: could not write the trace headers of a task", exc_info=True)


def _prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    if not isinstance(task_id, str) or task is None or _otel_active():
        return
    tracer = _tracer_now()
    if tracer is None:
        return
    try:
        request = task.request
        carrier = {}
        for field in _FIELDS:
            value = getattr(request, field, None)
            if isinstance(value, str):
                carrier[field] = value
        ctx = _core.extract(carrier, tracer=tracer) if carrier else _context.get_current()
        retries = getattr(request, "retries", 0) or 0
        links = []
        first = getattr(request, _FIRST, None)
        if retries and isinstance(first, str):
            linked = _trace.get_current_span(_core.extract({"traceparent": first}))
            sc = linked.get_span_context()
            if sc.is_valid:
                links.append(Link(sc, {"celery.link": "first_attempt"}))
        attributes = {
            "messaging.system": "celery",
            "messaging.operation.type": "process",
            "messaging.message.id": task_id,
            "celery.task_name": str(getattr(task, "name", "")),
            "celery.retries": int(retries) if isinstance(retries, int) else 0,
        }
        span = tracer.start_span(
            str(getattr(task, "name", None) or "celery.task"),
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        token = _context.attach(_trace.set_span_in_context(span, ctx))
        sc = span.get_span_context()
        own = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
        _running[task_id] = (span, token, first if isinstance(first, str) else own, ctx)
    except Exception:  # tracing never breaks the task
        logger.debug("honeytrace: could not start the span of a task", exc_info=True)


def _failure(task_id: Any = None, exception: Any = None, **_: Any) -> None:
    running = _running.get(task_id) if isinstance(task_id, str) else None
    if running is None:
        return
    try:
        span = running[0]
        if isinstance(exception, BaseException):
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
        else:
            span.set_status(Status(StatusCode.ERROR))
    except Exception:
        logger.debug("honeytrace: could not record a task's failure", exc_info=True)


def _retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    tid = getattr(request, "id", None)
    running = _running.get(tid) if isinstance(tid, str) else None
    if running is None:
        return
    try:
        running[0].add_event("retry", {"celery.retry.reason": str(reason)[:1024]})
    except Exception:
        logger.debug("honeytrace: could not record a task's retry", exc_info=True)


def _postrun(task_id: Any = None, state: Any = None, **_: Any) -> None:
    running = _running.pop(task_id, None) if isinstance(task_id, str) else None
    if running is None:
        return
    span, token = running[0], running[1]
    try:
        if isinstance(state, str):
            span.set_attribute("celery.state", state)
    finally:
        try:
            _context.detach(token)
        finally:
            span.end()


_HANDLERS = (
    ("before_task_publish", _before_publish),
    ("task_prerun", _prerun),
    ("task_failure", _failure),
    ("task_retry", _retry),
    ("task_postrun", _postrun),
)


def instrument_celery(tracer: Optional[TracerLike] = None) -> None:
    """Carry the trace and session with every Celery task (see the module's doc).
    ``tracer``: the tracer worker spans go to (default: the default tracer when each
    task runs, so a tracer created in ``worker_process_init`` works). Idempotent."""
    global _connected, _tracer
    from celery import signals

    with _lock:
        if tracer is not None:
            _tracer = tracer
        if _connected:
            return
        for name, handler in _HANDLERS:
            getattr(signals, name).connect(handler, weak=False, dispatch_uid=f"honeytrace.{name}")
        _connected = True


def uninstrument_celery() -> None:
    """Disconnect the handlers of ``instrument_celery``."""
    global _connected, _tracer
    from celery import signals

    with _lock:
        for name, handler in _HANDLERS:
            getattr(signals, name).disconnect(handler, dispatch_uid=f"honeytrace.{name}")
        _connected = False
        _tracer = None
