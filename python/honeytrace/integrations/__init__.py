"""Framework integrations: server middleware (WSGI/Flask, ASGI/FastAPI/Starlette),
outgoing HTTP propagation (requests, httpx) and Celery tasks."""

from ._common import ExcludedUrls
from .asgi import HoneyTraceASGIMiddleware, instrument_fastapi
from .celery import instrument_celery, uninstrument_celery
from .http import instrument_http, uninstrument_http
from .wsgi import HoneyTraceWSGIMiddleware, instrument_flask

__all__ = [
    "ExcludedUrls",
    "HoneyTraceASGIMiddleware",
    "HoneyTraceWSGIMiddleware",
    "instrument_celery",
    "instrument_fastapi",
    "instrument_flask",
    "instrument_http",
    "uninstrument_celery",
    "uninstrument_http",
]
