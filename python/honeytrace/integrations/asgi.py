"""ASGI, FastAPI and Starlette: continue the incoming trace and session per request.

::

    from honeytrace.integrations import instrument_fastapi
    instrument_fastapi(app)              # or: app.add_middleware(HoneyTraceASGIMiddleware)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Callable, Optional

from opentelemetry import propagate

from .. import _core
from .._distributed import HoneyTracePropagator
from .._process_end import flush_for_exit
from .._registry import TracerLike
from .._wrappers import attach, restore

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


class HoneyTraceASGIMiddleware:
    """ASGI middleware: a SERVER span per HTTP request, continuing the caller's trace
    and session; the span (and its context) stays open until the application returns,
    so streaming and server-sent-events responses are covered.

    On FastAPI versions with built-in OpenTelemetry telemetry, FastAPI already makes
    the request's SERVER span (through honeytrace, the global provider, and its
    propagator). The middleware then steps aside, so there is one server span per
    request, unless it was given its own ``trust=`` policy or a tracer other than the
    one FastAPI's span went to.
    """

    def __init__(
        self,
        app: ASGIApp,
        tracer: Optional[TracerLike] = None,
        *,
        excluded_urls: Optional[Iterable[Any]] = None,
        trust: Optional[str] = None,
    ) -> None:
        self.app = app
        self.tracer = tracer
        self._engine = _core.ServerTracing(tracer, excluded_urls=excluded_urls, trust=trust)

    def _traced_by_fastapi(self, scope: Scope) -> bool:
        telemetry = scope.get("fastapi.telemetry")
        span = getattr(telemetry, "span", None)
        return (
            span is not None
            and not self._engine.has_trust
            and self._engine.owns(span)
            and isinstance(propagate.get_global_textmap(), HoneyTracePropagator)
        )

    async def __call__(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope.get("type") == "lifespan":
            await self.app(scope, receive, _flush_before_shutdown_completes(send))
            return
        request = None
        if "fastapi.telemetry" not in scope or not self._traced_by_fastapi(scope):
            request = self._engine.begin_asgi(scope)
        if request is None:
            await self.app(scope, receive, send)
            return

        def traced_send(message: Any) -> Any:
            # Returns send's awaitable rather than awaiting it in a coroutine of its
            # own: one coroutine fewer per message; the caller awaits it as usual.
            request.observe(message)
            return send(message)

        token = attach(request.context)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            request.record(exc)
            raise
        finally:
            restore(token)
            request.end()


def _flush_before_shutdown_completes(send: Callable[..., Any]) -> Callable[..., Any]:
    """Export what is queued when the server shuts the app down, before telling it the
    shutdown is complete. The server has finished its requests by then, so every
    request's spans are in the queue. uvicorn needs this: after the lifespan shutdown
    it puts back the SIGTERM handler it found when it started (the default, when the
    app is imported by `uvicorn module:app`) and raises SIGTERM again, which ends the
    process without `atexit`."""

    async def lifespan_send(message: Any) -> Any:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, flush_for_exit)
        return await send(message)

    return lifespan_send


def instrument_fastapi(
    app: Any,
    tracer: Optional[TracerLike] = None,
    *,
    excluded_urls: Optional[Iterable[Any]] = None,
    trust: Optional[str] = None,
) -> Any:
    """Add the middleware to a FastAPI or Starlette app. Returns the app."""
    app.add_middleware(
        HoneyTraceASGIMiddleware, tracer=tracer, excluded_urls=excluded_urls, trust=trust
    )
    return app
