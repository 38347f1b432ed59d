"""honeytrace as an OpenTelemetry ``TracerProvider`` (rule 3).

The global provider routes each span to the honeytrace tracer that owns its parent
span, else to the default tracer, so instrumentation spans nest under honeytrace spans
and carry the same session stamps. A tracer's own ``provider`` is bound to it (for
instrumentors given ``tracer_provider=tracer.provider``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util import types

from . import _core
from ._log import logger

if TYPE_CHECKING:
    from ._tracer import HoneyHiveTracer


class Tracer(trace.Tracer):
    """An OpenTelemetry ``Tracer`` whose spans are honeytrace (Rust) spans."""

    __slots__ = ("_rust",)

    def __init__(self, rust: _core.ScopedTracer) -> None:
        self._rust = rust

    def start_span(
        self,
        name: str,
        context: Optional[Context] = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Optional[Sequence[Link]] = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self._rust.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Optional[Context] = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Optional[Sequence[Link]] = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _core.CurrentSpan:
        """A context manager (and decorator) for a span that is current inside it:
        implemented in the engine, with OpenTelemetry's semantics (an escaping
        ``Exception`` is recorded and sets an ERROR status, per the flags)."""
        return self._rust.start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )


def _as_decorator(cm: _core.CurrentSpan, func: Callable[..., Any]) -> Callable[..., Any]:
    """``@tracer.start_as_current_span("name")``: a span per call; for a coroutine
    function, around the whole awaited call (as OpenTelemetry does)."""
    import functools
    import inspect

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with cm._recreate_cm():
                return await func(*args, **kwargs)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with cm._recreate_cm():
            return func(*args, **kwargs)

    return wrapper


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
        return Tracer(rust)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._core is None:
            return _core.flush_all(timeout_millis / 1000.0)
        return self._core.flush(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Shut down the tracers behind this provider (all of them when global)."""
        if self._core is None:
            _core.shutdown_all(None)
        else:
            self._core.shutdown(self._core.shutdown_timeout)

    def __repr__(self) -> str:
        return (
            "honeytrace.TracerProvider(global)"
            if self._core is None
            else (f"honeytrace.TracerProvider(tracer={self._core.id})")
        )


#: The provider honeytrace installs as the OpenTelemetry global.
GLOBAL_PROVIDER = TracerProvider(None)


def install_global(tracer: HoneyHiveTracer, want: Optional[bool]) -> bool:
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
    """Let ``isinstance(span, opentelemetry.trace.Span)`` hold for honeytrace spans."""
    trace.Span.register(_core.Span)
