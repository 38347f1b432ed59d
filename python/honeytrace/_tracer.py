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

from . import _core, _log, _otel, _process_end, _registry, _wrappers
from ._core import CurrentSpan
from ._decorators import F, _check_options, _decorate
from ._distributed import (
    extract_context_from_carrier,
    inject_context_into_carrier,
    install_propagator,
)
from ._enrich import enrich_session as _enrich_session
from ._enrich import enrich_span as _enrich_span
from ._enrich import enrich_span_context
from ._log import logger
from ._otel import Tracer, TracerProvider, install_global
from ._processes import instrument_processes
from ._threads import instrument_threads

if TYPE_CHECKING:  # typing_extensions is only needed by type checkers
    from typing_extensions import Self

# Each tracer has an export thread: many live tracers usually means init() per request.
_MANY_TRACERS = 32
# How long the exit hook waits for engine calls that are running Python code to end.
_EXIT_WAIT = 5.0
_T = TypeVar("_T")
_lock = threading.Lock()
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
    """The exit hook (``atexit`` runs it before CPython starts finalizing): export what
    is queued within the deadline, emit the engine's last log records, then tell the
    engine the interpreter is going away (no engine call runs Python code after it)."""
    try:
        _core.shutdown_all(None)
        _log.drain()
    finally:
        _core._mark_exiting(_EXIT_WAIT)


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
        # Every setting is parsed and checked by the engine, by one table (see the
        # configuration table in the README).
        core, unknown, legacy = _core.TracerCore.create(kwargs, dict(os.environ))
        redact = kwargs.get("redact")
        if redact is not None:
            _core.set_redactor(redact)
        self._core = core
        self._provider = TracerProvider(core)
        self._otel_tracer: Tracer = core.tracer("honeytrace", _core.__version__)
        _log.set_verbose(core.verbose)
        _log.start_pump()
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
        live = _registry.add(self)
        with _lock:
            _install_hooks()
        if live == _MANY_TRACERS:
            logger.warning(
                "%d tracers are live in this process, each with its own export thread; "
                "create one tracer per process and reuse it (or shut unused ones down)",
                live,
            )
        live_mode = core.mode != "disabled"
        self._is_global = install_global(core.set_global) if live_mode else False
        if live_mode and core.exit_hooks:
            _process_end.install()
        if live_mode:
            install_propagator(core.set_global)
            if core.propagate_threads:
                instrument_threads()
            if core.propagate_processes:
                instrument_processes()
            if core.instrument_celery:
                from .integrations.celery import instrument_celery as _instrument_celery

                try:
                    _instrument_celery()
                except ImportError:
                    logger.warning(
                        "instrument_celery is on but Celery is not installed; nothing to do"
                    )
            if core.instrument_http:
                from .integrations.http import instrument_http as _instrument_http

                # The tracer's own baggage_hosts apply to its requests (read per
                # request): another init does not widen or narrow them.
                _instrument_http()
        destination = core.destination
        if destination not in _announced:
            _announced.add(destination)
            _log.emit_now(20, "traces go to %s", destination)

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
        return self._otel_tracer.start_span(
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
        kwargs.pop("tracer", None)
        _check_options("trace", kwargs)
        return _TraceOrSpan(self, name, kwargs)

    def enrich_span(self, *args: Any, **kwargs: Any) -> bool:
        """:func:`honeytrace.enrich_span` with this tracer (for ``event_id`` updates)."""
        kwargs.setdefault("tracer", self)
        return _enrich_span(*args, **kwargs)

    def enrich_session(self, *args: Any, **kwargs: Any) -> bool:
        """:func:`honeytrace.enrich_session` for this tracer's session by default."""
        kwargs.setdefault("tracer", self)
        return _enrich_session(*args, **kwargs)

    # -- distributed tracing (HoneyHive's tracer methods) ---------------------------
    def inject(self, carrier: Any) -> Any:
        """Write traceparent and session baggage into ``carrier``; returns it."""
        return inject_context_into_carrier(carrier, self)

    inject_context = inject

    def extract(self, carrier: Any) -> Context:
        """The Context ``carrier`` describes (not attached)."""
        return extract_context_from_carrier(carrier, self)

    extract_context = extract

    def link(self, carrier: Any) -> Any:
        """Attach the context ``carrier`` describes; returns the token for :meth:`unlink`."""
        return _wrappers.attach(self.extract(carrier))

    def unlink(self, token: Any) -> None:
        """Restore the context from before :meth:`link`."""
        _wrappers.restore(token)

    # -- lifecycle -----------------------------------------------------------------
    def flush(self, timeout: Optional[float] = None, *, timeout_millis: Any = None) -> bool:
        """Export every span ended so far; True when done within ``timeout`` seconds
        (default 30)."""
        ok = self._core.flush(_timeout(timeout, timeout_millis))
        _log.drain()
        return ok

    force_flush = flush

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Export what is queued (within ``timeout``, default ``shutdown_timeout``), then
        stop. Spans ended afterwards are dropped and counted. True on a clean shutdown."""
        ok = self._core.shutdown(timeout)
        _registry.remove(self._core.id)
        _log.drain()
        return ok

    async def aflush(self, timeout: Optional[float] = None) -> bool:
        """:meth:`flush` for async apps: waits in a worker thread, never blocking the loop."""
        return await _to_thread(self.flush, timeout)

    async def ashutdown(self, timeout: Optional[float] = None) -> bool:
        """:meth:`shutdown` for async apps, without blocking the event loop."""
        return await _to_thread(self.shutdown, timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: spans started, ended, exported, dropped, failed; retries; more."""
        _log.drain()
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


def _timeout(seconds: Any, millis: Any) -> Any:
    """Seconds from ``timeout`` or ``timeout_millis`` (OpenTelemetry's spelling). The
    engine checks the value: NaN, not a number, or seconds too large for a float
    (``10**400``) give the default (counted as an invalid argument); a negative value
    means no wait; infinity or more than a day means a day. Milliseconds follow the
    same rules (``_otel.millis_to_seconds``)."""
    if seconds is not None:
        return seconds
    return _otel.millis_to_seconds(millis)


class _TraceOrSpan:
    """``tracer.trace(...)``: a decorator bound to the tracer that is also usable as
    ``with tracer.trace("name"):`` (HoneyHive's two meanings of this method)."""

    def __init__(self, tracer: HoneyHiveTracer, name: Optional[str], kwargs: dict[str, Any]):
        self._tracer = tracer
        self._name = name
        self._kwargs = kwargs
        self._cm: Any = None

    def __call__(self, func: F) -> F:
        opts = dict(self._kwargs, tracer=self._tracer)
        if self._name is not None:
            opts.setdefault("event_name", self._name)
        _check_options("trace", opts)
        return _decorate(func, opts)  # type: ignore[no-any-return]

    def __enter__(self) -> Any:
        opts = dict(self._kwargs)
        name = opts.pop("event_name", None) or self._name or "span"
        # Options about a function's arguments and result mean nothing for a block.
        for k in ("capture_inputs", "capture_outputs", "ignore_inputs"):
            opts.pop(k, None)
        self._cm = enrich_span_context(name, tracer=self._tracer, **opts)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        if self._cm is None:  # __exit__ without __enter__
            return None
        return self._cm.__exit__(*exc)


async def _to_thread(fn: Callable[..., _T], *args: Any) -> _T:
    # A plain thread hand-off (no tokio runtime): the Rust side releases the GIL while
    # it waits, and unlike a global tokio runtime this keeps working in forked children.
    import asyncio  # only here: a cold `import asyncio` costs ~20 ms of import time

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, fn, *args)


def set_default_tracer(tracer: HoneyHiveTracer) -> None:
    """Make ``tracer`` the default: bare ``@trace`` and OpenTelemetry instrumentation
    spans outside any honeytrace span go to it."""
    checked = _registry.checked(tracer, "set_default_tracer")
    if checked is not None:
        checked._core.make_default()


def get_default_tracer() -> Optional[HoneyHiveTracer]:
    """The default tracer (the first initialised, unless changed), if any is live."""
    found: Optional[HoneyHiveTracer] = _registry.default()
    return found


def tracers() -> list[HoneyHiveTracer]:
    """Every live tracer in this process, oldest first."""
    return _registry.all_tracers()


def flush(
    tracer: Optional[HoneyHiveTracer] = None,
    timeout: Optional[float] = None,
    *,
    timeout_millis: Any = None,
) -> bool:
    """Flush one tracer, or every tracer when called without one."""
    t = _timeout(timeout, timeout_millis)
    tracer = _registry.checked(tracer, "flush")
    if tracer is not None:
        return tracer.flush(t)
    ok = _core.flush_all(t)
    _log.drain()
    return ok


def shutdown(timeout: Optional[float] = None) -> bool:
    """Shut every tracer down within one deadline (what the exit hook does)."""
    ok = _core.shutdown_all(timeout)
    _registry.clear()
    _log.drain()
    return ok


def _after_fork_in_child() -> None:
    _core.after_fork_child()
    if _registry.all_tracers():
        _log.start_pump()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
