"""Framework integrations: server middleware (WSGI/Flask, ASGI/FastAPI/Starlette) and
outgoing HTTP propagation (requests, httpx)."""

from ._common import ExcludedUrls
from .asgi import HoneyTraceASGIMiddleware, instrument_fastapi
from .http import instrument_http, uninstrument_http
from .wsgi import HoneyTraceWSGIMiddleware, instrument_flask

__all__ = [
    "ExcludedUrls",
    "HoneyTraceASGIMiddleware",
    "HoneyTraceWSGIMiddleware",
    "instrument_fastapi",
    "instrument_flask",
    "instrument_http",
    "uninstrument_http",
]
