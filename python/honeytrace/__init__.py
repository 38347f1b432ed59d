"""honeytrace: a HoneyHive-compatible tracing SDK for Python LLM and agent apps,
with a Rust engine.

    from honeytrace import HoneyHiveTracer

    tracer = HoneyHiveTracer.init(project="agents")
"""

from __future__ import annotations

from . import _compat, _core, _log, _readable, _wrappers

_core._install_bridge(
    **_compat.bridge_parts(), as_decorator=_wrappers.as_decorator, readable=_readable
)
_log.connect(_core._take_logs, _core._logs_pending)
_log.drain_at_exit()

from ._decorators import atrace, trace, trace_class  # noqa: E402
from ._distributed import (  # noqa: E402
    HoneyTracePropagator,
    extract_context_from_carrier,
    inject_context_into_carrier,
    with_distributed_trace_context,
)
from ._enrich import enrich_session, enrich_span, enrich_span_context  # noqa: E402
from ._otel import Tracer, TracerProvider, patch_isinstance  # noqa: E402
from ._processes import (  # noqa: E402
    carry_context,
    instrument_processes,
    uninstrument_processes,
)
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
    "carry_context",
    "enrich_session",
    "enrich_span",
    "enrich_span_context",
    "extract_context_from_carrier",
    "flush",
    "get_default_tracer",
    "inject_context_into_carrier",
    "instrument_processes",
    "instrument_threads",
    "set_default_tracer",
    "set_redactor",
    "shutdown",
    "trace",
    "trace_class",
    "tracers",
    "uninstrument_processes",
    "uninstrument_threads",
    "with_distributed_trace_context",
]
