"""Everything honeytrace assumes about ``opentelemetry-api`` beyond its public API, in
one place, checked at import.

The fast path reads and sets the context through private names: the ``ContextVar``
behind ``opentelemetry.context._RUNTIME_CONTEXT``, the context keys ``_SPAN_KEY`` and
``_BAGGAGE_KEY``, and ``Context`` being a plain ``dict``. Each is looked up here, then
the whole layout is checked with a round trip through the public API. When any part is
missing or behaves differently (a newer ``opentelemetry-api``), honeytrace uses the
public API instead (slower, same results) and says so once in the log. Nothing else in
honeytrace imports a private OpenTelemetry name.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Callable

from opentelemetry import baggage as _baggage
from opentelemetry import context as _context
from opentelemetry import trace as _trace

from ._log import logger

Context = _context.Context


def _single_key(ctx: Any, own: str) -> Any:
    """The one key a Context made by a public setter holds. When a Context is not a
    mapping of one key, honeytrace keeps its own key (``own``): its spans still nest,
    but OpenTelemetry's ``get_current_span`` no longer sees them (logged)."""
    if isinstance(ctx, Mapping) and len(ctx) == 1:
        return next(iter(ctx))
    logger.warning(
        "opentelemetry-api's Context is not a mapping honeytrace can read; honeytrace "
        "spans nest among themselves but are not visible to OpenTelemetry instrumentation"
    )
    return own


def _public_keys() -> tuple[Any, Any]:
    """The span and baggage keys, found through the public API."""
    span_key = _single_key(
        _trace.set_span_in_context(_trace.INVALID_SPAN, Context()), "honeytrace-current-span"
    )
    bag_key = _single_key(
        _baggage.set_baggage("honeytrace.probe", "1", Context()), "honeytrace-baggage"
    )
    return span_key, bag_key


def _private_parts() -> tuple[Any, Any, Any]:
    """(ContextVar, span key, baggage key) from the private names, or raises."""
    from opentelemetry.baggage import _BAGGAGE_KEY
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    from opentelemetry.trace.propagation import _SPAN_KEY

    runtime = _context._RUNTIME_CONTEXT
    if not isinstance(runtime, ContextVarsRuntimeContext):
        raise TypeError(f"the runtime context is a {type(runtime).__name__}")
    return runtime._current_context, _SPAN_KEY, _BAGGAGE_KEY


def _check(var: Any, span_key: Any, bag_key: Any) -> None:
    """Raise unless the layout behaves as the fast path assumes."""
    span = _trace.NonRecordingSpan(_trace.INVALID_SPAN_CONTEXT)
    ctx = _trace.set_span_in_context(span, Context())
    if not isinstance(ctx, dict) or ctx.get(span_key) is not span:
        raise TypeError("a Context is not a dict keyed by the span key")
    bag = _baggage.set_baggage("honeytrace.probe", "1", Context())
    if bag.get(bag_key) != {"honeytrace.probe": "1"}:
        raise TypeError("baggage is not a dict under the baggage key")
    token = var.set(ctx)
    try:
        if _context.get_current() is not ctx or _trace.get_current_span() is not span:
            raise TypeError("the ContextVar is not the current context")
    finally:
        var.reset(token)


def _layout() -> tuple[Any, Any, Any, bool]:
    try:
        var, span_key, bag_key = _private_parts()
        _check(var, span_key, bag_key)
        return var, span_key, bag_key, True
    except Exception as exc:  # any change in the private layout
        span_key, bag_key = _public_keys()
        logger.warning(
            "opentelemetry-api's internal context layout is not the one honeytrace knows "
            "(%s); using its public API instead (tracing works, a little slower)",
            exc,
        )
        return None, span_key, bag_key, False


_var, SPAN_KEY, BAGGAGE_KEY, FAST = _layout()

#: Make a Context current; returns the token for :func:`detach`.
attach: Callable[[Any], Any] = _var.set if _var is not None else _context.attach
#: Restore the context from before :func:`attach`.
detach: Callable[[Any], Any] = _var.reset if _var is not None else _context.detach


def runtime() -> Any:
    """What the engine calls when it has no ContextVar: the public functions."""
    return types.SimpleNamespace(
        get_current=_context.get_current, attach=_context.attach, detach=_context.detach
    )


def bridge_parts() -> dict[str, Any]:
    """What ``_core._install_bridge`` needs (see ``src/py/bridge.rs``)."""
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    def format_exception(*args: Any) -> list[str]:
        # traceback is imported on the first recorded exception, not with honeytrace
        # (it costs ~9 ms of a cold import).
        import traceback

        return traceback.format_exception(*args)

    return {
        "var": _var,
        "runtime": runtime(),
        "span_key": SPAN_KEY,
        "baggage_key": BAGGAGE_KEY,
        "context_type": Context,
        "span_context_type": SpanContext,
        "trace_flags_type": TraceFlags,
        "trace_state_type": TraceState,
        "format_exception": format_exception,
        "invalid_span_context": _trace.INVALID_SPAN_CONTEXT,
        "set_value": _context.set_value,
        "suppress_keys": suppress_keys(),
    }


def suppress_keys() -> list[Any]:
    """The context keys that turn instrumentation off: ``_SUPPRESS_INSTRUMENTATION_KEY``
    of ``opentelemetry.context`` and the plain string contrib's
    ``suppress_instrumentation()`` also sets."""
    keys: list[Any] = ["suppress_instrumentation"]
    key = getattr(_context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
    if key is not None and key not in keys:
        keys.insert(0, key)
    return keys


def http_suppress_key() -> Any:
    """The context key under which HTTP client instrumentations step aside (set by an
    outer HTTP instrumentation, so the library below does not trace the same request)."""
    return getattr(_context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", "suppress_http_instrumentation")
