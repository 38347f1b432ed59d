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

import threading
from collections.abc import Iterable
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _core, _registry
from .._registry import TracerLike
from .._wrappers import attach, restore
from ._common import active_tracer, record_error

_lock = threading.Lock()
_patched: dict[str, tuple[Any, str, Callable[..., Any]]] = {}
_hosts: Optional[tuple[str, ...]] = None  # None: every host
_tracer: Optional[TracerLike] = None


def baggage_allowed(host: str) -> bool:
    """Whether baggage (the session) may be sent to ``host``."""
    if _hosts is None:
        return True
    host = host.lower()
    for pattern in _hosts:
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

    def __init__(self, method: str, url: str) -> None:
        self.span: Optional[trace.Span] = None
        self.token: Any = None
        self.headers: dict[str, str] = {}
        tracer = active_tracer(_tracer)
        if tracer is None:
            return
        attrs, host = _client_attrs(method, url)
        self.span = tracer.tracer.start_span(method, None, SpanKind.CLIENT, attrs)
        ctx = trace.set_span_in_context(self.span)
        self.token = attach(ctx)
        _core.inject(self.headers, ctx, tracer, baggage_allowed(host))

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


def _patch(key: str, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    if key in _patched:
        return
    original = getattr(owner, name)
    _patched[key] = (owner, name, original)
    setattr(owner, name, wrapper(original))


def _wrap_send(send: Callable[..., Any]) -> Callable[..., Any]:
    """A traced ``send(self, request, **kwargs)``: ``requests.Session.send`` and
    ``httpx.Client.send`` have the same shape (method, url, headers, status_code)."""

    def traced_send(self: Any, request: Any, **kwargs: Any) -> Any:
        call = _Call(str(request.method), str(request.url))
        request.headers.update(call.headers)
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

    _patch("requests", requests.Session, "send", _wrap_send)
    return True


def _httpx() -> bool:
    try:
        import httpx
    except ImportError:
        return False

    def wrap_async(send: Callable[..., Any]) -> Callable[..., Any]:
        async def traced_send(self: Any, request: Any, **kwargs: Any) -> Any:
            call = _Call(str(request.method), str(request.url))
            request.headers.update(call.headers)
            try:
                response = await send(self, request, **kwargs)
            except BaseException as exc:
                call.done(None, exc)
                raise
            call.done(response.status_code)
            return response

        return traced_send

    _patch("httpx", httpx.Client, "send", _wrap_send)
    _patch("httpx-async", httpx.AsyncClient, "send", wrap_async)
    return True


def instrument_http(
    *,
    baggage_hosts: Optional[Iterable[str]] = None,
    tracer: Optional[TracerLike] = None,
) -> list[str]:
    """Propagate the trace and session on outgoing requests made with ``requests`` and
    ``httpx`` (whichever is installed). ``baggage_hosts``: hosts allowed to receive
    baggage (exact names or ``*.domain``); None means every host. Returns the libraries
    instrumented."""
    global _hosts, _tracer
    with _lock:
        _hosts = None if baggage_hosts is None else tuple(h.lower() for h in baggage_hosts)
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
        for owner, name, original in _patched.values():
            setattr(owner, name, original)
        _patched.clear()
        _hosts = None
        _tracer = None
