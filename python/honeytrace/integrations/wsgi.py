"""WSGI and Flask: continue the incoming trace and session for each request.

::

    from honeytrace.integrations import instrument_flask
    instrument_flask(app)
    # or, for any WSGI app: app.wsgi_app = HoneyTraceWSGIMiddleware(app.wsgi_app)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

from opentelemetry import trace

from .. import _core
from .._registry import TracerLike
from .._wrappers import attach, restore
from ._common import record_error

StartResponse = Callable[..., Any]


class HoneyTraceWSGIMiddleware:
    """WSGI middleware: a SERVER span per request, continuing the caller's trace and
    session (the tracer's trust policy, or ``trust=``). The span stays open until the
    server closes the response body (streaming is covered), the request's context is
    current while the application runs and while each chunk is produced, and
    werkzeug-based apps (Flask) get spans named ``METHOD /route``. Excluded paths, and
    requests while no tracer is live, pass through untraced.

    ``app.wsgi_app = HoneyTraceWSGIMiddleware(app.wsgi_app, tracer)``
    """

    def __init__(
        self,
        app: Callable[..., Any],
        tracer: Optional[TracerLike] = None,
        *,
        excluded_urls: Optional[Iterable[Any]] = None,
        trust: Optional[str] = None,
    ) -> None:
        self.app = app
        self._engine = _core.ServerTracing(tracer, excluded_urls=excluded_urls, trust=trust)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        request = self._engine.begin_wsgi(environ)
        if request is None:
            return self.app(environ, start_response)

        def traced_start_response(status: Any, headers: Any, exc_info: Any = None) -> Any:
            request.observe(status)
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        token = attach(request.context)
        try:
            body = self.app(environ, traced_start_response)
        except BaseException as exc:
            restore(token)
            request.record(exc)
            request.end()
            raise
        restore(token)
        return _Body(body, request)


class _Body:
    """The response body handed to the server: the request's context is current while
    each chunk is produced, and the span ends when the server closes the body."""

    __slots__ = ("_body", "_ended", "_it", "_request")

    def __init__(self, body: Any, request: _core.ServerRequest) -> None:
        self._body = body
        self._request = request
        self._it: Optional[Iterator[Any]] = None
        self._ended = False

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> Any:
        token = attach(self._request.context)
        try:
            if self._it is None:
                self._it = iter(self._body)
            return next(self._it)
        except StopIteration:
            raise
        except BaseException as exc:
            self._request.record(exc)
            raise
        finally:
            restore(token)

    def close(self) -> None:
        """Close the application's body, then end the span (once)."""
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                close()
        except BaseException as exc:
            if not self._ended:
                self._request.record(exc)
            raise
        finally:
            if not self._ended:
                self._ended = True
                self._request.end()


def instrument_flask(
    app: Any,
    tracer: Optional[TracerLike] = None,
    *,
    excluded_urls: Optional[Iterable[Any]] = None,
    trust: Optional[str] = None,
) -> Any:
    """Trace a Flask app: the middleware, spans named ``METHOD /route``, and exceptions
    Flask turns into 500s recorded on the server span. Returns the app."""
    import flask

    app.wsgi_app = HoneyTraceWSGIMiddleware(
        app.wsgi_app, tracer, excluded_urls=excluded_urls, trust=trust
    )

    def _on_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
        record_error(trace.get_current_span(), exception)

    flask.got_request_exception.connect(_on_exception, app, weak=False)
    return app
