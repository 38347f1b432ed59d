"""WSGI and Flask: continue the incoming trace and session for each request.

::

    from honeytrace.integrations import instrument_flask
    instrument_flask(app)
    # or, for any WSGI app: app.wsgi_app = HoneyTraceWSGIMiddleware(app.wsgi_app)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from opentelemetry import trace

from .. import _core
from ._common import record_error

if TYPE_CHECKING:
    from .._tracer import HoneyHiveTracer

#: WSGI middleware: a SERVER span per request, continuing the caller's trace and
#: session (the tracer's trust policy, or ``trust=``). Implemented in the engine; the
#: span stays open until the server closes the response body (streaming), and
#: werkzeug-based apps (Flask) get spans named ``METHOD /route``. Excluded paths pass
#: through untraced. ``HoneyTraceWSGIMiddleware(app, tracer=None, *,
#: excluded_urls=None, trust=None)``.
HoneyTraceWSGIMiddleware = _core.HoneyTraceWSGIMiddleware


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

    def _on_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
        record_error(trace.get_current_span(), exception)

    flask.got_request_exception.connect(_on_exception, app, weak=False)
    return app
