"""Typed contract of the Rust engine (``honeytrace._core``)."""

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Callable, Optional

from opentelemetry import trace as _trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types

from ._tracer import HoneyHiveTracer

__version__: str
CONFIG_KEYS: list[str]
LEGACY_KEYS: list[str]
DEFAULT_FILE: str
DEFAULT_SERVER_URL: str

class Span(_trace.Span):
    """A honeytrace span; registered as an ``opentelemetry.trace.Span`` at import."""

    def end(self, end_time: Optional[int] = None) -> None: ...
    def get_span_context(self) -> SpanContext: ...
    def set_attribute(self, key: str, value: types.AttributeValue) -> None: ...
    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None: ...
    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: Optional[int] = None,
    ) -> None: ...
    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None: ...
    def update_name(self, name: str) -> None: ...
    def is_recording(self) -> bool: ...
    def set_status(
        self, status: Status | StatusCode, description: Optional[str] = None
    ) -> None: ...
    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: Optional[int] = None,
        escaped: bool = False,
    ) -> None: ...
    def __enter__(self) -> Span: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc_val: Optional[BaseException],
        exc_tb: Optional[TracebackType],
    ) -> None: ...
    @property
    def _tracer_id(self) -> Optional[int]: ...
    @property
    def trace_id_hex(self) -> str: ...
    @property
    def span_id_hex(self) -> str: ...

class ScopedTracer:
    @property
    def name(self) -> str: ...
    def start_span(
        self,
        name: str,
        context: Optional[Context] = None,
        kind: Optional[SpanKind] = None,
        attributes: types.Attributes = None,
        links: Optional[Sequence[Link]] = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span: ...
    def start_as_current_span(
        self,
        name: str,
        context: Optional[Context] = None,
        kind: Optional[SpanKind] = None,
        attributes: types.Attributes = None,
        links: Optional[Sequence[Link]] = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan: ...

class CurrentSpan:
    """``start_as_current_span``: a context manager and a decorator."""

    def __enter__(self) -> Span: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> bool: ...
    def _recreate_cm(self) -> CurrentSpan: ...
    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]: ...

class TracerCore:
    @staticmethod
    def create(
        kwargs: dict[str, Any], env: dict[str, str]
    ) -> tuple[TracerCore, list[str], list[str]]: ...
    @property
    def id(self) -> int: ...
    @property
    def session_id(self) -> str: ...
    @property
    def session_id_given(self) -> bool: ...
    @property
    def project(self) -> Optional[str]: ...
    @property
    def source(self) -> str: ...
    @property
    def session_name(self) -> Optional[str]: ...
    @property
    def server_url(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def test_mode(self) -> bool: ...
    @property
    def verbose(self) -> bool: ...
    @property
    def otlp_endpoint(self) -> Optional[str]: ...
    @property
    def otlp_protocol(self) -> str: ...
    @property
    def file_path(self) -> Optional[str]: ...
    @property
    def service_name(self) -> str: ...
    @property
    def set_global(self) -> Optional[bool]: ...
    @property
    def shutdown_timeout(self) -> float: ...
    @property
    def is_shut_down(self) -> bool: ...
    @property
    def destination(self) -> str: ...
    def resource(self) -> dict[str, Any]: ...
    def tracer(
        self,
        name: str,
        version: Optional[str] = None,
        schema_url: Optional[str] = None,
        attributes: types.Attributes = None,
    ) -> ScopedTracer: ...
    def start_span(
        self,
        name: str,
        context: Optional[Context] = None,
        kind: Optional[SpanKind] = None,
        attributes: types.Attributes = None,
        links: Optional[Sequence[Link]] = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span: ...
    def flush(self, timeout: float) -> bool: ...
    def shutdown(self, timeout: float) -> bool: ...
    def make_default(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def finished_spans(self) -> list[dict[str, Any]]: ...
    def clear_finished_spans(self) -> None: ...
    def update_event(self, body: Mapping[str, Any]) -> bool: ...

def _install_bridge(
    var: Any,
    runtime: Any,
    span_key: str,
    baggage_key: str,
    context_type: type[Context],
    span_context_type: type[SpanContext],
    trace_flags_type: Any,
    trace_state_type: Any,
    format_exception: Callable[..., list[str]],
) -> None: ...
def routing_tracer(
    name: str,
    version: Optional[str] = None,
    schema_url: Optional[str] = None,
    attributes: types.Attributes = None,
) -> ScopedTracer: ...
def default_tracer_id() -> Optional[int]: ...
def after_fork_child() -> None: ...
def flush_all(timeout: float) -> bool: ...
def shutdown_all(timeout: Optional[float]) -> bool: ...
def internal_errors() -> int: ...
def uuid4() -> str: ...

class TraceSpec:
    """What a decorated function's spans share (built once per function)."""

    def __init__(
        self,
        name: str,
        *,
        tracer: Optional[TracerCore] = None,
        event_type: Optional[str] = None,
        event_name: Optional[str] = None,
        event_id: Optional[str] = None,
        session_id: Optional[str] = None,
        project: Optional[str] = None,
        source: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        feedback: Optional[Mapping[str, Any]] = None,
        user_properties: Optional[Mapping[str, Any]] = None,
        inputs: Optional[Mapping[str, Any]] = None,
        outputs: Optional[Mapping[str, Any]] = None,
        attributes: Optional[Mapping[str, Any]] = None,
        error: Optional[str] = None,
        capture_inputs: bool = True,
        capture_outputs: bool = True,
        params: Optional[Sequence[tuple[str, int, Any, bool]]] = None,
        long_lived: bool = False,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    def enter(
        self, args: tuple[Any, ...], kwargs: Optional[dict[str, Any]] = None
    ) -> Optional[CallScope]: ...
    def start(
        self, args: tuple[Any, ...], kwargs: Optional[dict[str, Any]] = None
    ) -> Optional[CallScope]: ...

class TracedFunction:
    """A decorated sync function (a Rust callable)."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str
    def __init__(self, func: Callable[..., Any], spec: TraceSpec) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: Any = None) -> Any: ...

class CallScope:
    """One traced call driven from Python (async functions, generators)."""

    @property
    def context(self) -> Context: ...
    @property
    def span(self) -> Span: ...
    def finish(self, result: Any) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def done(self, result: Any) -> None: ...
    def error(self, exc: BaseException) -> None: ...
    def add_item(self, item: Any) -> None: ...
    def finish_stream(self, value: Any = None) -> None: ...

def set_redactor(hook: Optional[Callable[[str, Any], Any]]) -> None: ...
def enrich(
    span: _trace.Span,
    items: Sequence[tuple[str, Any]],
    raw: Optional[Mapping[str, Any]] = None,
) -> bool: ...

class with_distributed_trace_context:
    """Continue the caller's trace and session for a block (``with`` / ``async with``)."""

    def __init__(
        self,
        carrier: Any,
        tracer: Optional[HoneyHiveTracer] = None,
        *,
        session_id: Optional[str] = None,
        trust: Optional[str] = None,
    ) -> None: ...
    def __enter__(self) -> Context: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> None: ...
    def __aenter__(self) -> Awaitable[Context]: ...
    def __aexit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> Awaitable[None]: ...

def extract(
    carrier: Any,
    context: Optional[Context] = None,
    tracer: Optional[TracerCore] = None,
    trust: Optional[str] = None,
    session_id: Optional[str] = None,
) -> Context: ...
def inject(
    carrier: Any,
    context: Optional[Context] = None,
    tracer: Optional[TracerCore] = None,
    baggage: bool = True,
) -> Any: ...
def sign_session(secret: str, session_id: str) -> str: ...

class HoneyTraceWSGIMiddleware:
    """WSGI middleware: a SERVER span per request (see honeytrace.integrations)."""

    app: Any
    def __init__(
        self,
        app: Any,
        tracer: Optional[HoneyHiveTracer] = None,
        *,
        excluded_urls: Optional[Iterable[Any]] = None,
        trust: Optional[str] = None,
    ) -> None: ...
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any: ...

class AsgiRequest:
    context: Context
    span: Span
    def wrap_send(self, send: Callable[..., Any]) -> Callable[..., Any]: ...
    def fail(self, exc: BaseException) -> None: ...
    def end(self) -> None: ...

class AsgiTracing:
    has_trust: bool
    def __init__(
        self,
        tracer: Optional[HoneyHiveTracer] = None,
        *,
        excluded_urls: Optional[Iterable[Any]] = None,
        trust: Optional[str] = None,
    ) -> None: ...
    def owns(self, span: Any) -> bool: ...
    def begin(self, scope: Any) -> Optional[AsgiRequest]: ...
