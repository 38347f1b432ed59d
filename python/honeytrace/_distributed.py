"""Distributed tracing: the one-line server helper, inject/extract, and the
OpenTelemetry propagator. W3C parsing, the trust policy and signing are in Rust."""

from __future__ import annotations

import os
from typing import Any, Optional, TypeVar

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from . import _core
from ._log import logger
from ._registry import TracerLike

C = TypeVar("C")
_FIELDS = ("traceparent", "tracestate", "baggage")


#: Continue the caller's trace and session for a block (``with`` / ``async with``):
#: implemented in Rust (``honeytrace._core``); see its docstring.
with_distributed_trace_context = _core.with_distributed_trace_context


def inject_context_into_carrier(
    carrier: C, tracer: Optional[TracerLike] = None, *, baggage: bool = True
) -> C:
    """Write ``traceparent`` (and ``tracestate``) for the current span and ``baggage``
    with the current entries plus ``session_id``, ``project`` and ``source`` (from the
    baggage, else the tracer); signed when a baggage secret is configured. Works inside
    a plain span or outside any span. Returns the carrier."""
    return _core.inject(carrier, None, tracer, baggage)  # type: ignore[no-any-return]


def extract_context_from_carrier(
    carrier: Any,
    tracer: Optional[TracerLike] = None,
    *,
    trust: Optional[str] = None,
    session_id: Optional[str] = None,
) -> Context:
    """The Context a carrier describes, built on the current one; never attached,
    never raising."""
    return _core.extract(carrier, None, tracer, trust, session_id)


class HoneyTracePropagator(TextMapPropagator):
    """A W3C TraceContext + Baggage propagator over the Rust core: case-insensitive
    carriers, the trust policy, and session baggage on inject. honeytrace installs it
    as OpenTelemetry's global propagator, so ``opentelemetry.propagate`` and the
    contrib instrumentors use it."""

    def extract(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        base = context if context is not None else Context()
        if getter is not default_getter:
            headers: dict[str, Any] = {}
            for name in _FIELDS:
                try:
                    value = getter.get(carrier, name)
                except Exception:  # a foreign getter must not break the request
                    value = None
                if value:
                    headers[name] = list(value)
            return _core.extract(headers, base)
        return _core.extract(carrier, base)

    def inject(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        if setter is default_setter:
            _core.inject(carrier, context)
            return
        out: dict[str, str] = {}
        _core.inject(out, context)
        for k, v in out.items():
            setter.set(carrier, k, v)

    @property
    def fields(self) -> set[str]:
        return set(_FIELDS)


def _is_default_propagator(p: TextMapPropagator) -> bool:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    inner = getattr(p, "_propagators", None)
    return (
        isinstance(p, CompositePropagator)
        and inner is not None
        and [type(x) for x in inner] == [TraceContextTextMapPropagator, W3CBaggagePropagator]
    )


def install_propagator(want: Optional[bool]) -> bool:
    """Make honeytrace's propagator the global one, unless the app chose another
    (``OTEL_PROPAGATORS`` or ``set_global_textmap``) or ``set_global=False``."""
    if want is False:
        return False
    current = propagate.get_global_textmap()
    if isinstance(current, HoneyTracePropagator):
        return True
    if os.environ.get("OTEL_PROPAGATORS") or not _is_default_propagator(current):
        logger.info(
            "keeping the application's OpenTelemetry propagator (%s); honeytrace's own "
            "helpers still propagate sessions",
            type(current).__name__,
        )
        return False
    propagate.set_global_textmap(HoneyTracePropagator())
    return True
