"""ASGI, FastAPI and Starlette: continue the incoming trace and session per request.

::

    from honeytrace.integrations import instrument_fastapi
    instrument_fastapi(app)              # or: app.add_middleware(HoneyTraceASGIMiddleware)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from .. import _core
from .._decorators import _attach, _restore
from ._common import ExcludedUrls, header_value, record_error, server_status, tracer_core

if TYPE_CHECKING:
    from .._tracer import HoneyHiveTracer

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


def _attributes(scope: Scope) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "http.request.method": scope.get("method", "GET"),
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope.get("path", "/"),
    }
    query = scope.get("query_string")
    if query:
        attrs["url.query"] = header_value(query)
    server = scope.get("server")
    if server:
        attrs["server.address"] = str(server[0])
        if len(server) > 1 and server[1] is not None:
            attrs["server.port"] = int(server[1])
    client = scope.get("client")
    if client:
        attrs["client.address"] = str(client[0])
    for k, v in scope.get("headers") or ():
        if k.lower() == b"user-agent":
            attrs["user_agent.original"] = header_value(v)
            break
    if scope.get("http_version"):
        attrs["network.protocol.version"] = scope["http_version"]
    return attrs


class HoneyTraceASGIMiddleware:
    """ASGI middleware: a SERVER span per HTTP request, continuing the caller's trace
    and session; the span (and its context) stays open until the last body chunk of a
    streaming or server-sent-events response has gone out."""

    def __init__(
        self,
        app: ASGIApp,
        tracer: Optional[HoneyHiveTracer] = None,
        *,
        excluded_urls: Optional[Iterable[Any]] = None,
        trust: Optional[str] = None,
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.excluded = ExcludedUrls(excluded_urls)
        self.trust = trust

    async def __call__(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        core = tracer_core(self.tracer)
        if core is None or self.excluded(scope.get("path", "/")):
            await self.app(scope, receive, send)
            return
        ctx = _core.extract(scope, None, core, self.trust)
        method = scope.get("method", "GET")
        span = core.start_span(method, ctx, SpanKind.SERVER, _attributes(scope))
        ctx = trace.set_span_in_context(span, ctx)

        async def traced_send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                server_status(span, int(message.get("status", 200)))
            await send(message)

        token = _attach(ctx)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            _restore(token)
            span.end()


def instrument_fastapi(
    app: Any,
    tracer: Optional[HoneyHiveTracer] = None,
    *,
    excluded_urls: Optional[Iterable[Any]] = None,
    trust: Optional[str] = None,
) -> Any:
    """Add the middleware to a FastAPI or Starlette app. Returns the app."""
    app.add_middleware(
        HoneyTraceASGIMiddleware, tracer=tracer, excluded_urls=excluded_urls, trust=trust
    )
    return app
