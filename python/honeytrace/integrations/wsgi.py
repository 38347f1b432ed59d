"""WSGI and Flask: continue the incoming trace and session for each request.

::

    from honeytrace.integrations import instrument_flask
    instrument_flask(app)
    # or, for any WSGI app: app.wsgi_app = HoneyTraceWSGIMiddleware(app.wsgi_app)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from .. import _core
from .._decorators import _attach, _restore
from ._common import ExcludedUrls, record_error, server_status, tracer_core

if TYPE_CHECKING:
    from .._tracer import HoneyHiveTracer

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _attributes(environ: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "http.request.method": environ.get("REQUEST_METHOD", "GET"),
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
        "url.path": environ.get("PATH_INFO", "") or "/",
    }
    if environ.get("QUERY_STRING"):
        attrs["url.query"] = environ["QUERY_STRING"]
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
    if host:
        name, _, port = host.partition(":")
        attrs["server.address"] = name
        port = port or environ.get("SERVER_PORT", "")
        if port.isdigit():
            attrs["server.port"] = int(port)
    if environ.get("REMOTE_ADDR"):
        attrs["client.address"] = environ["REMOTE_ADDR"]
    if environ.get("HTTP_USER_AGENT"):
        attrs["user_agent.original"] = environ["HTTP_USER_AGENT"]
    proto = environ.get("SERVER_PROTOCOL", "")
    if proto.startswith("HTTP/"):
        attrs["network.protocol.version"] = proto[5:]
    return attrs


class _Body:
    """The response body: the span stays open (and current while the body is produced)
    until the server closes it, so streamed responses are covered."""

    def __init__(self, inner: Iterable[bytes], span: trace.Span, ctx: Any) -> None:
        self._inner = inner
        self._it: Optional[Iterator[bytes]] = None
        self._span = span
        self._ctx = ctx
        self._ended = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._it is None:
            self._it = iter(self._inner)
        token = _attach(self._ctx)
        try:
            return next(self._it)
        except StopIteration:
            raise
        except BaseException as exc:
            record_error(self._span, exc)
            raise
        finally:
            _restore(token)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            if not self._ended:
                self._ended = True
                self._span.end()


class HoneyTraceWSGIMiddleware:
    """WSGI middleware: a SERVER span per request, continuing the caller's trace and
    session (with the tracer's trust policy, or ``trust=``). Excluded paths pass
    through untraced."""

    def __init__(
        self,
        app: WSGIApp,
        tracer: Optional[HoneyHiveTracer] = None,
        *,
        excluded_urls: Optional[Iterable[Any]] = None,
        trust: Optional[str] = None,
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.excluded = ExcludedUrls(excluded_urls)
        self.trust = trust

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        core = tracer_core(self.tracer)
        if core is None or self.excluded(environ.get("PATH_INFO", "") or "/"):
            return self.app(environ, start_response)
        ctx = _core.extract(environ, None, core, self.trust)
        method = environ.get("REQUEST_METHOD", "GET")
        span = core.start_span(method, ctx, SpanKind.SERVER, _attributes(environ))
        ctx = trace.set_span_in_context(span, ctx)

        def traced_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            code = status.split(" ", 1)[0]
            if code.isdigit():
                server_status(span, int(code))
            return start_response(status, headers, exc_info)

        token = _attach(ctx)
        try:
            body = self.app(environ, traced_start_response)
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            _restore(token)
        return _Body(body, span, ctx)


def instrument_flask(
    app: Any,
    tracer: Optional[HoneyHiveTracer] = None,
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

    @app.before_request  # type: ignore[untyped-decorator]
    def _honeytrace_route() -> None:
        rule = flask.request.url_rule
        span = trace.get_current_span()
        if rule is not None and span.is_recording():
            span.update_name(f"{flask.request.method} {rule.rule}")
            span.set_attribute("http.route", rule.rule)

    def _on_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
        record_error(trace.get_current_span(), exception)

    flask.got_request_exception.connect(_on_exception, app, weak=False)
    return app
