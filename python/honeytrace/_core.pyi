"""Typed contract of the Rust engine (``honeytrace._core``), checked against the built
module by ``python -m mypy.stubtest honeytrace._core`` in CI.

Every function here is lenient about its arguments (wrong types and values are counted
in ``stats()["invalid_arguments"]`` and replaced by defaults), so most parameters are
typed as what callers should pass, with ``None`` meaning "the default".
"""

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Callable, Optional, final

from opentelemetry import trace as _trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types
from typing_extensions import disjoint_base

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_FILE",
    "DEFAULT_SERVER_URL",
    "LEGACY_KEYS",
    "SETTINGS",
    "SETTINGS_MARKDOWN",
    "CallScope",
    "CurrentSpan",
    "ServerRequest",
    "ServerTracing",
    "Span",
    "TraceSpec",
    "Tracer",
    "TracerCore",
    "_Ready",
    "__version__",
    "_add_span_processor",
    "_extract_own",
    "_install_bridge",
    "_invalid_argument",
    "_logs_pending",
    "_mark_exiting",
    "_panic_for_test",
    "_span_processors",
    "_take_logs",
    "_trace_spec",
    "after_fork_child",
    "default_tracer_id",
    "enrich",
    "extract",
    "flush_all",
    "inject",
    "internal_errors",
    "routing_tracer",
    "set_redactor",
    "shutdown_all",
    "sign_context",
    "uuid4",
    "with_distributed_trace_context",
]
__version__: str
CONFIG_KEYS: list[str]
LEGACY_KEYS: list[str]
SETTINGS: list[dict[str, Any]]
SETTINGS_MARKDOWN: str
DEFAULT_FILE: str
DEFAULT_SERVER_URL: str

@final
class Span(_trace.Span):
    """A honeytrace span; registered as an ``opentelemetry.trace.Span`` at import."""

    def _done(self, result: Any) -> Any: ...
    def _error(self, exc: BaseException) -> None: ...
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
        escaped: Optional[bool] = None,
    ) -> None: ...
    def __enter__(self) -> Span: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        exc_val: Optional[BaseException] = None,
        exc_tb: Optional[TracebackType] = None,
    ) -> None: ...
    # The read half (the SDK's ReadableSpan), see honeytrace/_readable.py.
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> SpanKind: ...
    @property
    def context(self) -> SpanContext: ...
    @property
    def parent(self) -> Optional[SpanContext]: ...
    @property
    def start_time(self) -> Optional[int]: ...
    @property
    def end_time(self) -> Optional[int]: ...
    @property
    def attributes(self) -> Mapping[str, types.AttributeValue]: ...
    @property
    def events(self) -> tuple[Any, ...]: ...
    @property
    def links(self) -> tuple[Link, ...]: ...
    @property
    def status(self) -> Status: ...
    @property
    def resource(self) -> Any: ...
    @property
    def instrumentation_scope(self) -> Any: ...
    @property
    def instrumentation_info(self) -> Any: ...
    @property
    def dropped_attributes(self) -> int: ...
    @property
    def dropped_events(self) -> int: ...
    @property
    def dropped_links(self) -> int: ...
    def to_json(self, *args: Any, **kwargs: Any) -> str: ...
    @property
    def _kind_name(self) -> str: ...
    @property
    def _tracer_id(self) -> Optional[int]: ...
    @property
    def trace_id_hex(self) -> str: ...
    @property
    def span_id_hex(self) -> str: ...

@final
class Tracer:
    """An OpenTelemetry ``Tracer`` (registered as ``opentelemetry.trace.Tracer``)."""

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
        record_exception: Optional[bool] = None,
        set_status_on_exception: Optional[bool] = None,
    ) -> Span: ...
    def start_as_current_span(
        self,
        name: str,
        context: Optional[Context] = None,
        kind: Optional[SpanKind] = None,
        attributes: types.Attributes = None,
        links: Optional[Sequence[Link]] = None,
        start_time: Optional[int] = None,
        record_exception: Optional[bool] = None,
        set_status_on_exception: Optional[bool] = None,
        end_on_exit: Optional[bool] = None,
    ) -> CurrentSpan: ...

@final
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

@final
class TracerCore:
    """The engine of one ``HoneyHiveTracer``."""

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
    def exit_hooks(self) -> bool: ...
    @property
    def propagate_threads(self) -> bool: ...
    @property
    def propagate_processes(self) -> bool: ...
    @property
    def instrument_http(self) -> bool: ...
    @property
    def instrument_celery(self) -> bool: ...
    @property
    def baggage_hosts(self) -> Optional[list[str]]: ...
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
    ) -> Tracer: ...
    def flush(self, timeout: Optional[float] = None) -> bool: ...
    def shutdown(self, timeout: Optional[float] = None) -> bool: ...
    def make_default(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def finished_spans(self) -> list[dict[str, Any]]: ...
    def clear_finished_spans(self) -> None: ...
    def update_event(self, body: Mapping[str, Any]) -> bool: ...

@final
class TraceSpec:
    """What a decorated function's spans share (built once per function)."""

    def __new__(
        cls,
        name: str,
        *,
        tracer: Any = None,
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
        capture_inputs: Optional[bool] = None,
        capture_outputs: Optional[bool] = None,
        params: Optional[Sequence[tuple[str, int, Any, bool]]] = None,
        long_lived: Optional[bool] = None,
    ) -> TraceSpec: ...
    @property
    def name(self) -> str: ...
    def __reduce__(self) -> Any: ...
    def enter(self, args: tuple[Any, ...], kwargs: Optional[dict[str, Any]] = None) -> Span: ...
    def start(
        self, args: tuple[Any, ...], kwargs: Optional[dict[str, Any]] = None
    ) -> Optional[CallScope]: ...

@final
class CallScope:
    """One traced call driven from Python (generators, ``enrich_span_context``)."""

    @property
    def context(self) -> Context: ...
    @property
    def span(self) -> Span: ...
    def finish(self, result: Any) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def add_item(self, item: Any) -> None: ...
    def finish_stream(self, value: Any = None) -> None: ...

@disjoint_base
class with_distributed_trace_context:
    """Continue the caller's trace and session for a block (``with`` / ``async with``)."""

    def __new__(
        cls,
        carrier: Any,
        tracer: Any = None,
        *,
        session_id: Optional[str] = None,
        trust: Optional[str] = None,
    ) -> with_distributed_trace_context: ...
    def __enter__(self) -> Context: ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> None: ...
    def __aenter__(self) -> _Ready: ...
    def __aexit__(
        self,
        _exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> _Ready: ...

@final
class _Ready:
    """An awaitable that is already done."""

    def __await__(self) -> _Ready: ...
    def __iter__(self) -> _Ready: ...
    def __next__(self) -> None: ...
    def send(self, _value: Any) -> None: ...
    def throw(self, exc: Any, _value: Any = None, _tb: Any = None) -> None: ...
    def close(self) -> None: ...

@final
class ServerTracing:
    """The engine side of the WSGI and ASGI middleware."""

    def __new__(
        cls,
        tracer: Any = None,
        *,
        excluded_urls: Any = None,
        trust: Optional[str] = None,
    ) -> ServerTracing: ...
    @property
    def has_trust(self) -> bool: ...
    def owns(self, span: Any) -> bool: ...
    def begin_wsgi(self, environ: Any) -> Optional[ServerRequest]: ...
    def begin_asgi(self, scope: Any) -> Optional[ServerRequest]: ...

@final
class ServerRequest:
    """One traced request."""

    @property
    def span(self) -> Span: ...
    @property
    def context(self) -> Context: ...
    def observe(self, what: Any) -> None: ...
    def record(self, exc: BaseException) -> None: ...
    def end(self) -> None: ...

def set_redactor(hook: Optional[Callable[[str, Any], Any]]) -> None: ...
def enrich(
    span: _trace.Span,
    items: Sequence[tuple[str, Any]],
    raw: Optional[Mapping[str, Any]] = None,
) -> bool: ...
def _trace_spec(name: str, kwargs: dict[str, Any]) -> TraceSpec: ...
def extract(
    carrier: Any,
    context: Optional[Context] = None,
    tracer: Any = None,
    trust: Optional[str] = None,
    session_id: Optional[str] = None,
) -> Context: ...
def inject(
    carrier: Any,
    context: Optional[Context] = None,
    tracer: Any = None,
    baggage: Optional[bool] = None,
) -> Any: ...
def _extract_own(carrier: Any) -> Context: ...
def sign_context(
    secret: str,
    session_id: str,
    project: Optional[str] = None,
    source: Optional[str] = None,
    issued_at: Optional[int] = None,
) -> str: ...
def _install_bridge(
    var: Any,
    runtime: Any,
    span_key: str,
    baggage_key: str,
    context_type: Any,
    span_context_type: Any,
    trace_flags_type: Any,
    trace_state_type: Any,
    format_exception: Callable[..., list[str]],
    invalid_span_context: Any,
    set_value: Callable[..., Any],
    as_decorator: Callable[..., Any],
    suppress_keys: list[Any],
    readable: Any,
) -> None: ...
def _add_span_processor(tracer: Optional[TracerCore], processor: Any) -> bool: ...
def _span_processors(tracer: Optional[TracerCore], remove: bool = False) -> list[Any]: ...
def routing_tracer(
    name: str,
    version: Optional[str] = None,
    schema_url: Optional[str] = None,
    attributes: types.Attributes = None,
) -> Tracer: ...
def default_tracer_id() -> Optional[int]: ...
def after_fork_child() -> None: ...
def flush_all(timeout: Optional[float] = None) -> bool: ...
def shutdown_all(timeout: Optional[float] = None) -> bool: ...
def uuid4() -> str: ...
def internal_errors() -> int: ...
def _invalid_argument(what: str) -> None: ...
def _mark_exiting(timeout: float) -> bool: ...
def _take_logs() -> list[tuple[int, str]]: ...
def _logs_pending() -> bool: ...
def _panic_for_test(what: str, count: int = 1) -> bool: ...
