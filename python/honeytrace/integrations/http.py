"""Outgoing HTTP for ``requests`` and ``httpx`` (sync and async).

Once enabled, every request gets a CLIENT span and carries ``traceparent`` (so the
server continues the trace) and ``baggage`` with the session (so it continues the
session). Baggage goes only to hosts on the allow-list: by default every host, as
HoneyHive does; restrict it (``baggage_hosts=["*.internal.example.com"]``) so session
ids never reach third-party APIs.

::

    from honeytrace.integrations import instrument_http
    instrument_http(baggage_hosts=["127.0.0.1", "*.svc.cluster.local"])
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _compat, _core, _registry
from .._log import logger
from .._registry import TracerLike
from .._wrappers import attach, restore
from ._common import active_tracer, record_error

_lock = threading.Lock()
_patched: dict[str, tuple[Any, str, Callable[..., Any], Callable[..., Any]]] = {}
# Wrappers of ours left in place under someone else's after uninstrument_http().
_passthrough: set[Callable[..., Any]] = set()
_hosts: Optional[tuple[str, ...]] = None  # instrument_http(baggage_hosts=); None: not set
_tracer: Optional[TracerLike] = None


def _patterns(tracer: Optional[TracerLike]) -> Optional[tuple[str, ...]]:
    """The hosts allowed to receive baggage from ``tracer``'s requests: its own
    ``baggage_hosts`` (init), else what ``instrument_http(baggage_hosts=...)`` set; None:
    every host."""
    if tracer is not None:
        try:
            own = tracer._core.baggage_hosts
        except Exception:  # a foreign or shut-down tracer: fall back
            own = None
        if own is not None:
            return tuple(own)
    return _hosts


def baggage_allowed(host: str, tracer: Optional[TracerLike] = None) -> bool:
    """Whether baggage (the session) may be sent to ``host`` by ``tracer``'s requests."""
    patterns = _patterns(tracer)
    if patterns is None:
        return True
    host = host.lower()
    for pattern in patterns:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
    return False


def _client_attrs(method: str, url: str) -> tuple[dict[str, Any], str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    attrs: dict[str, Any] = {
        "http.request.method": method,
        # Credentials in the URL never reach a span.
        "url.full": parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(),
        "server.address": host,
    }
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attrs["server.port"] = port
    return attrs, host


class _Call:
    """One outgoing request: the CLIENT span, its context, the headers to add."""

    def __init__(self, method: str, url: str, library: str) -> None:
        self.span: Optional[trace.Span] = None
        self.token: Any = None
        self.headers: dict[str, str] = {}
        self.baggage = True
        tracer = active_tracer(_tracer)
        if tracer is None:
            return
        attrs, host = _client_attrs(method, url)
        current = context.get_current()
        if _suppressed(current) or _contrib_active(library):
            # Another instrumentation traces this request (or an outer hop of ours:
            # requests sends each redirect through here), or none may: no span, no
            # headers; a host outside baggage_hosts still gets no baggage.
            self.baggage = baggage_allowed(host, tracer)
            return
        self.span = tracer.tracer.start_span(method, None, SpanKind.CLIENT, attrs)
        # The libraries below (urllib3, httpcore) are the same request: an HTTP
        # instrumentation of theirs steps aside, as under the contrib instrumentors.
        ctx = context.set_value(_HTTP_KEY, True, trace.set_span_in_context(self.span, current))
        self.token = attach(ctx)
        self.baggage = baggage_allowed(host, tracer)
        _core.inject(self.headers, ctx, tracer, self.baggage)

    def done(self, status: Optional[int], exc: Optional[BaseException] = None) -> None:
        if self.token is not None:
            restore(self.token)
        span = self.span
        if span is None:
            return
        if exc is not None:
            record_error(span, exc)
        elif status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        span.end()


_SUPPRESS_KEYS = tuple(_compat.suppress_keys())
_HTTP_KEY = _compat.http_suppress_key()


def _suppressed(ctx: Any) -> bool:
    """Instrumentation turned off here (``suppress_instrumentation()``, as SDK
    exporters do around their own requests), or HTTP instrumentation (an outer HTTP
    instrumentation already traces this request)."""
    get = ctx.get
    return bool(get(_HTTP_KEY)) or any(get(k) for k in _SUPPRESS_KEYS)


#: library -> (module of its OpenTelemetry contrib instrumentor, class name)
_CONTRIB = {
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
}
_stepped_aside: set[str] = set()


def _contrib_active(library: str) -> bool:
    """Whether OpenTelemetry's contrib instrumentor of ``library`` is on: then it makes
    the CLIENT span and injects the headers (through honeytrace's provider and the
    global propagator), and honeytrace steps aside, saying so once."""
    module_name, cls_name = _CONTRIB[library]
    module = sys.modules.get(module_name)
    if module is None:
        return False
    try:
        active = bool(getattr(module, cls_name)().is_instrumented_by_opentelemetry)
    except Exception:  # an instrumentor we do not know the shape of: do our job
        return False
    if active and library not in _stepped_aside:
        _stepped_aside.add(library)
        logger.info(
            "instrument_http: OpenTelemetry's %s instrumentor is active; honeytrace leaves "
            "%s requests to it (one CLIENT span per request, headers from the global "
            "propagator)",
            cls_name,
            library,
        )
    return active


def _strip_baggage(request: Any) -> None:
    for name in [k for k in request.headers if str(k).lower() == "baggage"]:
        del request.headers[name]


def _set_headers(request: Any, call: _Call) -> None:
    # A request to a host outside baggage_hosts carries no baggage at all, not even
    # one copied from the request before a redirect (requests sends each hop here).
    if not call.baggage:
        _strip_baggage(request)
    request.headers.update(call.headers)


def _hop_guard(send_single: Callable[..., Any]) -> Callable[..., Any]:
    """httpx follows redirects below ``send``: each hop goes through
    ``_send_single_request``, with the previous hop's headers copied. A hop to a host
    outside baggage_hosts loses its baggage there."""

    def guarded(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if guarded in _passthrough:
            return send_single(self, request, *args, **kwargs)
        if not baggage_allowed(str(request.url.host or ""), active_tracer(_tracer)):
            _strip_baggage(request)
        return send_single(self, request, *args, **kwargs)

    return guarded


def _patch(key: str, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    if key in _patched:
        return
    original = getattr(owner, name)
    ours = wrapper(original)
    _patched[key] = (owner, name, original, ours)
    setattr(owner, name, ours)


def _wrap_send(send: Callable[..., Any], library: str) -> Callable[..., Any]:
    """A traced ``send(self, request, **kwargs)``: ``requests.Session.send`` and
    ``httpx.Client.send`` have the same shape (method, url, headers, status_code)."""

    def traced_send(self: Any, request: Any, **kwargs: Any) -> Any:
        if traced_send in _passthrough:
            return send(self, request, **kwargs)
        call = _Call(str(request.method), str(request.url), library)
        _set_headers(request, call)
        try:
            response = send(self, request, **kwargs)
        except BaseException as exc:
            call.done(None, exc)
            raise
        call.done(response.status_code)
        return response

    return traced_send


def _requests() -> bool:
    try:
        import requests
    except ImportError:
        return False

    _patch("requests", requests.Session, "send", lambda f: _wrap_send(f, "requests"))
    return True


def _httpx() -> bool:
    try:
        import httpx
    except ImportError:
        return False

    def wrap_async(send: Callable[..., Any]) -> Callable[..., Any]:
        async def traced_send(self: Any, request: Any, **kwargs: Any) -> Any:
            if traced_send in _passthrough:
                return await send(self, request, **kwargs)
            call = _Call(str(request.method), str(request.url), "httpx")
            _set_headers(request, call)
            try:
                response = await send(self, request, **kwargs)
            except BaseException as exc:
                call.done(None, exc)
                raise
            call.done(response.status_code)
            return response

        return traced_send

    _patch("httpx", httpx.Client, "send", lambda f: _wrap_send(f, "httpx"))
    _patch("httpx-async", httpx.AsyncClient, "send", wrap_async)
    for key, owner in (("httpx-hop", httpx.Client), ("httpx-async-hop", httpx.AsyncClient)):
        if hasattr(owner, "_send_single_request"):
            _patch(key, owner, "_send_single_request", _hop_guard)
    return True


def instrument_http(
    *,
    baggage_hosts: Optional[Iterable[str]] = None,
    tracer: Optional[TracerLike] = None,
) -> list[str]:
    """Propagate the trace and session on outgoing requests made with ``requests`` and
    ``httpx`` (whichever is installed). ``baggage_hosts``: hosts allowed to receive
    baggage (exact names or ``*.domain``), for tracers that set none of their own at
    init; None keeps the current list (every host until one is set). The list holds on
    every hop, redirects included. Returns the libraries instrumented."""
    global _hosts, _tracer
    with _lock:
        if baggage_hosts is not None:  # None keeps what an earlier call set
            _hosts = tuple(h.lower() for h in baggage_hosts)
        _tracer = _registry.checked(tracer, "instrument_http")
        done = []
        if _requests():
            done.append("requests")
        if _httpx():
            done.append("httpx")
        return done


def uninstrument_http() -> None:
    """Undo :func:`instrument_http`."""
    global _hosts, _tracer
    with _lock:
        for owner, name, original, ours in _patched.values():
            # Another wrapper put on top of ours (an OpenTelemetry instrumentor
            # enabled later) stays: ours, below it, then only passes calls through.
            if owner.__dict__.get(name) is ours:
                setattr(owner, name, original)
            else:
                _passthrough.add(ours)
        _patched.clear()
        _hosts = None
        _tracer = None
