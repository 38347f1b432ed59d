"""honeytrace: a HoneyHive-compatible tracing SDK for Python LLM and agent apps,
with a Rust engine.

    from honeytrace import HoneyHiveTracer

    tracer = HoneyHiveTracer.init(project="agents")
"""

from __future__ import annotations

from typing import Any as _Any

from opentelemetry import context as _context
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext as _CVRC
from opentelemetry.trace import SpanContext as _SpanContext
from opentelemetry.trace import TraceFlags as _TraceFlags
from opentelemetry.trace import TraceState as _TraceState
from opentelemetry.trace.propagation import _SPAN_KEY

from . import _core

_runtime = _context._RUNTIME_CONTEXT


def _format_exception(*args: _Any) -> list[str]:
    # traceback is imported on the first recorded exception, not with honeytrace
    # (it costs ~9 ms of a cold import).
    import traceback

    return traceback.format_exception(*args)


_core._install_bridge(
    _runtime._current_context if isinstance(_runtime, _CVRC) else None,
    _runtime,
    _SPAN_KEY,
    _BAGGAGE_KEY,
    _context.Context,
    _SpanContext,
    _TraceFlags,
    _TraceState,
    _format_exception,
)

from ._decorators import atrace, trace, trace_class  # noqa: E402
from ._distributed import (  # noqa: E402
    HoneyTracePropagator,
    extract_context_from_carrier,
    inject_context_into_carrier,
    with_distributed_trace_context,
)
from ._enrich import enrich_session, enrich_span, enrich_span_context  # noqa: E402
from ._otel import Tracer, TracerProvider, patch_isinstance  # noqa: E402
from ._threads import bind_context, instrument_threads, uninstrument_threads  # noqa: E402
from ._tracer import (  # noqa: E402
    HoneyHiveTracer,
    flush,
    get_default_tracer,
    set_default_tracer,
    shutdown,
    tracers,
)

patch_isinstance()

__version__: str = _core.__version__
Span = _core.Span

set_redactor = _core.set_redactor

__all__ = [
    "HoneyHiveTracer",
    "HoneyTracePropagator",
    "Span",
    "Tracer",
    "TracerProvider",
    "__version__",
    "atrace",
    "bind_context",
    "enrich_session",
    "enrich_span",
    "enrich_span_context",
    "extract_context_from_carrier",
    "flush",
    "get_default_tracer",
    "inject_context_into_carrier",
    "instrument_threads",
    "set_default_tracer",
    "set_redactor",
    "shutdown",
    "trace",
    "trace_class",
    "tracers",
    "uninstrument_threads",
    "with_distributed_trace_context",
]
