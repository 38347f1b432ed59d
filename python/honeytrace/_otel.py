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

    @property
    def resource(self) -> Any:
        """The tracer's resource (the default tracer's for the global provider), as the
        SDK's ``Resource`` when the SDK is installed (the logging instrumentor reads
        ``service.name`` from it)."""
        from . import _readable, _registry

        core = self._core
        if core is None:
            default = _registry.default()
            core = default._core if default is not None else None
        if core is None:
            return _readable.resource(0, {})
        return _readable.resource(core.id, dict(core.resource()))

    def add_span_processor(self, span_processor: Any) -> None:
        """Add an OpenTelemetry SDK ``SpanProcessor`` (or any object with its methods).

        Its ``on_start(span, parent_context)`` and ``on_end(readable_span)`` are called
        for every span of this provider's tracer (of every tracer for the global
        provider), in the order processors were added, after honeytrace's own stamps;
        ``on_end`` receives the SDK's ``ReadableSpan``. honeytrace's export is not one
        of them: it runs whatever processors are added. What a processor raises is
        logged and counted (``stats()["processor_errors"]``).
        """
        if not callable(getattr(span_processor, "on_end", None)):
            _core._invalid_argument("TracerProvider.add_span_processor")
            logger.warning("add_span_processor: %r has no on_end method; not added", span_processor)
            return
        _core._add_span_processor(self._core, span_processor)

    def force_flush(self, timeout_millis: Any = 30000) -> bool:
        seconds = millis_to_seconds(timeout_millis)
        ok = _core.flush_all(seconds) if self._core is None else self._core.flush(seconds)
        for p in _core._span_processors(self._core):
            ok = _call_processor(p, "force_flush", timeout_millis) is not False and ok
        return ok

    def shutdown(self) -> None:
        """Shut down the tracers behind this provider (all of them when global), and
        the span processors added to it."""
        if self._core is None:
            _core.shutdown_all(None)
        else:
            self._core.shutdown(None)
        for p in _core._span_processors(self._core, remove=True):
            _call_processor(p, "shutdown")

    def __repr__(self) -> str:
        return (
            "honeytrace.TracerProvider(global)"
            if self._core is None
            else (f"honeytrace.TracerProvider(tracer={self._core.id})")
        )


def _call_processor(p: Any, method: str, *args: Any) -> Any:
    """A processor's ``force_flush``/``shutdown``; what it raises is logged."""
    fn = getattr(p, method, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception as e:  # a processor must not break the application's shutdown
        logger.warning("span processor %r: %s raised %r", p, method, e)
        return False


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
