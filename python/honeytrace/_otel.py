"""honeytrace as an OpenTelemetry ``TracerProvider``.

The global provider routes each span to the honeytrace tracer that owns its parent
span, else to the default tracer, so instrumentation spans nest under honeytrace spans
and carry the same session stamps. A tracer's own ``provider`` is bound to it (for
instrumentors given ``tracer_provider=tracer.provider``). The ``Tracer`` itself is the
engine's (``_core.Tracer``), registered as an ``opentelemetry.trace.Tracer``.
"""

from __future__ import annotations

from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.util import types

from . import _core
from ._log import logger

#: An OpenTelemetry ``Tracer`` whose spans are honeytrace spans.
Tracer = _core.Tracer


class TracerProvider(trace.TracerProvider):
    """The honeytrace ``TracerProvider``: bound to one tracer, or routing (global)."""

    def __init__(self, core: Optional[_core.TracerCore] = None) -> None:
        self._core = core

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: Optional[str] = None,
        schema_url: Optional[str] = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        name = instrumenting_module_name or "honeytrace.unnamed"
        if self._core is None:
            rust = _core.routing_tracer(name, instrumenting_library_version, schema_url, attributes)
        else:
            rust = self._core.tracer(name, instrumenting_library_version, schema_url, attributes)
        return rust  # type: ignore[return-value]

    def force_flush(self, timeout_millis: Any = 30000) -> bool:
        seconds = millis_to_seconds(timeout_millis)
        if self._core is None:
            return _core.flush_all(seconds)
        return self._core.flush(seconds)

    def shutdown(self) -> None:
        """Shut down the tracers behind this provider (all of them when global)."""
        if self._core is None:
            _core.shutdown_all(None)
        else:
            self._core.shutdown(None)

    def __repr__(self) -> str:
        return (
            "honeytrace.TracerProvider(global)"
            if self._core is None
            else (f"honeytrace.TracerProvider(tracer={self._core.id})")
        )


def millis_to_seconds(value: Any) -> Any:
    """Milliseconds to seconds; anything unusable (an integer too large for a float
    included) is handed on for the engine to count and replace by the default, as a
    timeout in seconds is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return value / 1000.0
        except OverflowError:
            return value
    return value


#: The provider honeytrace installs as the OpenTelemetry global.
GLOBAL_PROVIDER = TracerProvider(None)


def install_global(want: Optional[bool]) -> bool:
    """Make honeytrace the global provider unless another one already is (or
    ``set_global=False``). Returns True when spans from ``trace.get_tracer`` reach
    honeytrace."""
    if want is False:
        return False
    current = trace.get_tracer_provider()
    if current is GLOBAL_PROVIDER:
        return True
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(GLOBAL_PROVIDER)
        return True
    logger.warning(
        "another OpenTelemetry TracerProvider (%s) is already global; honeytrace does not "
        "replace it and stays isolated: honeytrace decorators and spans still work, but "
        "spans from OpenTelemetry instrumentations go to that provider. To send an "
        "instrumentor's spans to honeytrace, pass tracer_provider=tracer.provider.",
        type(current).__name__,
    )
    return False


def patch_isinstance() -> None:
    """Let ``isinstance(x, opentelemetry.trace.Span / Tracer)`` hold for honeytrace's."""
    trace.Span.register(_core.Span)
    trace.Tracer.register(_core.Tracer)
