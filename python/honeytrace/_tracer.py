"""``HoneyHiveTracer``: configuration, lifecycle and the registry of tracers."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util import types

from . import _core, _log
from ._core import CurrentSpan
from ._distributed import install_propagator
from ._log import logger
from ._otel import Tracer, TracerProvider, install_global
from ._threads import instrument_threads

if TYPE_CHECKING:  # typing_extensions is only needed by type checkers
    from typing_extensions import Self

_DEFAULT_FLUSH_TIMEOUT = 30.0
# Each tracer has an export thread: many live tracers usually means init() per request.
_MANY_TRACERS = 32
_T = TypeVar("_T")
_lock = threading.Lock()
_tracers: dict[int, HoneyHiveTracer] = {}
_announced: set[str] = set()
_hooks_installed = False


def _user_stacklevel() -> int:
    """The warnings stacklevel of the first frame outside this package."""
    here = os.path.dirname(__file__)
    level = 1
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _default_session_name() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else "")
    name = os.path.basename(path)
    return name if name and name != "-c" else "unknown"


def _at_exit() -> None:
    _core.shutdown_all(None)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)


class HoneyHiveTracer:
    """A HoneyHive-compatible tracer backed by the Rust engine.

    Create it with :meth:`init` (or the constructor); see the configuration table in
    the README for every keyword. Any number of tracers may live in one process.
    """

    _core: _core.TracerCore

    def __init__(self, **kwargs: Any) -> None:
        if (
            "session_name" not in kwargs
            and not os.environ.get("HH_SESSION_NAME")
            and not os.environ.get("SESSION_NAME")
        ):
            kwargs["session_name"] = _default_session_name()
        propagate_threads = _flag(kwargs.pop("propagate_threads", None), "HH_PROPAGATE_THREADS")
        instrument_http = _flag(kwargs.pop("instrument_http", None), "HH_INSTRUMENT_HTTP")
        baggage_hosts = kwargs.pop("baggage_hosts", None)
        if baggage_hosts is None and os.environ.get("HH_BAGGAGE_HOSTS"):
            baggage_hosts = [h.strip() for h in os.environ["HH_BAGGAGE_HOSTS"].split(",")]
        if isinstance(baggage_hosts, str) or (
            baggage_hosts is not None and not all(isinstance(h, str) for h in baggage_hosts)
        ):
            raise ValueError("honeytrace: baggage_hosts must be a list of host names")
        redact = kwargs.pop("redact", None)
        if redact is not None and not callable(redact):
            raise ValueError("honeytrace: redact must be a callable redact(key, value) -> value")
        core, unknown, legacy = _core.TracerCore.create(kwargs, dict(os.environ))
        if redact is not None:
            _core.set_redactor(redact)
        self._core = core
        self._provider = TracerProvider(core)
        self._otel_tracer = Tracer(core.tracer("honeytrace", _core.__version__))
        _log.set_verbose(core.verbose)
        level = _user_stacklevel()
        for key in unknown:
            warnings.warn(
                f"honeytrace: HoneyHiveTracer.init() got an unknown keyword {key!r}; it is "
                f"ignored (known keywords: see the configuration table in the README)",
                stacklevel=level,
            )
        for key in legacy:
            warnings.warn(
                f"honeytrace: keyword {key!r} is accepted for HoneyHive compatibility but has "
                f"no effect",
                stacklevel=level,
            )
        with _lock:
            _tracers[core.id] = self
            live = len(_tracers)
            _install_hooks()
        if live == _MANY_TRACERS:
            logger.warning(
                "%d tracers are live in this process, each with its own export thread; "
                "create one tracer per process and reuse it (or shut unused ones down)",
                live,
            )
        live_mode = core.mode != "disabled"
        self._is_global = install_global(self, core.set_global) if live_mode else False
        if live_mode:
            install_propagator(core.set_global)
            if propagate_threads:
                instrument_threads()
            if instrument_http:
                from .integrations.http import instrument_http as _instrument_http

                _instrument_http(baggage_hosts=baggage_hosts)
        destination = core.destination
        if destination not in _announced:
            _announced.add(destination)
            logger.info("traces go to %s", destination)

    @classmethod
    def init(cls, **kwargs: Any) -> Self:
        """Create a tracer (HoneyHive's entry point). Returns an instance of ``cls``."""
        return cls(**kwargs)

    # -- identity ------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self._core.session_id

    @property
    def session_name(self) -> Optional[str]:
        return self._core.session_name

    @property
    def project(self) -> Optional[str]:
        return self._core.project

    @property
    def source(self) -> str:
        return self._core.source

    @property
    def server_url(self) -> str:
        return self._core.server_url

    @property
    def mode(self) -> str:
        """Where spans go: cloud, otlp, file, console, memory, none or disabled."""
        return self._core.mode

    @property
    def destination(self) -> str:
        """A human-readable description of where spans go."""
        return self._core.destination

    @property
    def test_mode(self) -> bool:
        return self._core.test_mode

    @property
    def is_initialized(self) -> bool:
        return not self._core.is_shut_down

    @property
    def is_global(self) -> bool:
        """True when OpenTelemetry's global provider routes spans to honeytrace."""
        return self._is_global

    # HoneyHive aliases
    project_name = project
    source_environment = source
    is_test_mode = test_mode

    @property
    def provider(self) -> TracerProvider:
        """An OpenTelemetry ``TracerProvider`` bound to this tracer."""
        return self._provider

    @property
    def tracer(self) -> Tracer:
        """An OpenTelemetry ``Tracer`` bound to this tracer."""
        return self._otel_tracer

    @property
    def resource(self) -> dict[str, Any]:
        """The OpenTelemetry resource attributes on every exported span."""
        return dict(self._core.resource())

    # -- spans ---------------------------------------------------------------------
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
        """Start a span owned by this tracer, not made current (OpenTelemetry semantics).

        Use it with ``with tracer.start_span(...) as span:`` to end it on exit, or use
        :meth:`start_as_current_span` to also make it the current span.
        """
        return self._core.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    def start_as_current_span(
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
    ) -> CurrentSpan:
        """Start a span, make it current for the block, end it on exit (a context
        manager, also usable as a decorator)."""
        return self._otel_tracer.start_as_current_span(
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

    # -- decorators and enrichment (HoneyHive's tracer methods) -----------------------
    def trace(self, name: Optional[str] = None, **kwargs: Any) -> Any:
        """``@tracer.trace(event_type=...)`` decorates with this tracer;
        ``with tracer.trace("name"):`` runs the block in a span of this tracer."""
        from ._decorators import _tracer_trace

        return _tracer_trace(self, name, **kwargs)

    def enrich_span(self, *args: Any, **kwargs: Any) -> bool:
        """:func:`honeytrace.enrich_span` with this tracer (for ``event_id`` updates)."""
        from ._enrich import enrich_span

        kwargs.setdefault("tracer", self)
        return enrich_span(*args, **kwargs)

    def enrich_session(self, *args: Any, **kwargs: Any) -> bool:
        """:func:`honeytrace.enrich_session` for this tracer's session by default."""
        from ._enrich import enrich_session

        kwargs.setdefault("tracer", self)
        return enrich_session(*args, **kwargs)

    # -- distributed tracing (HoneyHive's tracer methods) ---------------------------
    def inject(self, carrier: Any) -> Any:
        """Write traceparent and session baggage into ``carrier``; returns it."""
        from ._distributed import inject_context_into_carrier

        return inject_context_into_carrier(carrier, self)

    inject_context = inject

    def extract(self, carrier: Any) -> Context:
        """The Context ``carrier`` describes (not attached)."""
        from ._distributed import extract_context_from_carrier

        return extract_context_from_carrier(carrier, self)

    extract_context = extract

    def link(self, carrier: Any) -> Any:
        """Attach the context ``carrier`` describes; returns the token for :meth:`unlink`."""
        from ._decorators import _attach

        return _attach(self.extract(carrier))

    def unlink(self, token: Any) -> None:
        """Restore the context from before :meth:`link`."""
        from ._decorators import _restore

        _restore(token)

    # -- lifecycle -----------------------------------------------------------------
    def flush(
        self, timeout: Optional[float] = None, *, timeout_millis: Optional[int] = None
    ) -> bool:
        """Export every span ended so far; True when done within ``timeout`` seconds."""
        return self._core.flush(_timeout(timeout, timeout_millis, _DEFAULT_FLUSH_TIMEOUT))

    force_flush = flush

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Export what is queued (within ``timeout``, default ``shutdown_timeout``), then
        stop. Spans ended afterwards are dropped and counted. True on a clean shutdown."""
        ok = self._core.shutdown(_timeout(timeout, None, self._core.shutdown_timeout))
        with _lock:
            _tracers.pop(self._core.id, None)
        return ok

    async def aflush(self, timeout: Optional[float] = None) -> bool:
        """:meth:`flush` for async apps: waits in a worker thread, never blocking the loop."""
        return await _to_thread(self.flush, timeout)

    async def ashutdown(self, timeout: Optional[float] = None) -> bool:
        """:meth:`shutdown` for async apps, without blocking the event loop."""
        return await _to_thread(self.shutdown, timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: spans started, ended, exported, dropped, failed; retries; more."""
        return dict(self._core.stats())

    def finished_spans(self) -> list[dict[str, Any]]:
        """Spans captured by the memory exporter (``test_mode`` or ``exporter="memory"``)
        as plain dicts, in the order they ended."""
        return list(self._core.finished_spans())

    def clear_finished_spans(self) -> None:
        self._core.clear_finished_spans()

    def __repr__(self) -> str:
        return (
            f"HoneyHiveTracer(project={self.project!r}, source={self.source!r}, "
            f"session_id={self.session_id!r}, mode={self.mode!r}, "
            f"initialized={self.is_initialized})"
        )


def _flag(value: Any, env: str) -> bool:
    if value is not None:
        return bool(value)
    raw = os.environ.get(env, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"honeytrace: environment variable {env} must be true or false, got {raw!r}")


def _timeout(seconds: Optional[float], millis: Optional[int], default: float) -> float:
    if seconds is not None:
        return max(0.0, float(seconds))
    if millis is not None:
        return max(0.0, millis / 1000.0)
    return default


async def _to_thread(fn: Callable[..., _T], *args: Any) -> _T:
    # A plain thread hand-off (no tokio runtime): the Rust side releases the GIL while
    # it waits, and unlike a global tokio runtime this keeps working in forked children.
    import asyncio  # only here: a cold `import asyncio` costs ~20 ms of import time

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, fn, *args)


def set_default_tracer(tracer: HoneyHiveTracer) -> None:
    """Make ``tracer`` the default: bare ``@trace`` and OpenTelemetry instrumentation
    spans outside any honeytrace span go to it."""
    tracer._core.make_default()


def get_default_tracer() -> Optional[HoneyHiveTracer]:
    """The default tracer (the first initialised, unless changed), if any is live."""
    tid = _core.default_tracer_id()
    with _lock:
        return _tracers.get(tid) if tid is not None else None


def tracer_of_span(span: Any) -> Optional[HoneyHiveTracer]:
    """The HoneyHiveTracer that owns ``span`` (a honeytrace span), else None."""
    tid = getattr(span, "_tracer_id", None)
    if tid is None:
        return None
    with _lock:
        return _tracers.get(tid)


def tracers() -> list[HoneyHiveTracer]:
    """Every live tracer in this process, oldest first."""
    with _lock:
        return list(_tracers.values())


def flush(
    tracer: Optional[HoneyHiveTracer] = None,
    timeout: Optional[float] = None,
    *,
    timeout_millis: Optional[int] = None,
) -> bool:
    """Flush one tracer, or every tracer when called without one."""
    t = _timeout(timeout, timeout_millis, _DEFAULT_FLUSH_TIMEOUT)
    if tracer is not None:
        return tracer.flush(t)
    return _core.flush_all(t)


def shutdown(timeout: Optional[float] = None) -> bool:
    """Shut every tracer down within one deadline (what the exit hook does)."""
    ok = _core.shutdown_all(timeout)
    with _lock:
        _tracers.clear()
    return ok


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core.after_fork_child)
