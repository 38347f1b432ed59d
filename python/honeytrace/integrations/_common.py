"""Shared pieces of the integrations."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Optional, Union

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from .. import _registry
from .._registry import TracerLike


class ExcludedUrls:
    """Paths not to trace (health checks, metrics): path prefixes, or compiled regular
    expressions searched in the path. ``HH_EXCLUDED_URLS`` adds comma-separated prefixes.
    """

    def __init__(self, patterns: Optional[Iterable[Union[str, re.Pattern[str]]]] = None) -> None:
        items: list[Union[str, re.Pattern[str]]] = list(patterns or ())
        env = os.environ.get("HH_EXCLUDED_URLS", "")
        items.extend(p.strip() for p in env.split(",") if p.strip())
        self._prefixes = tuple(p for p in items if isinstance(p, str))
        self._regexes = [p for p in items if isinstance(p, re.Pattern)]

    def __call__(self, path: str) -> bool:
        if self._prefixes and path.startswith(self._prefixes):
            return True
        return any(r.search(path) for r in self._regexes)


def active_tracer(tracer: Optional[TracerLike]) -> Optional[TracerLike]:
    """The tracer to use now: the given one if live, else the default."""
    if tracer is not None:
        return tracer if tracer.is_initialized else None
    found: Optional[TracerLike] = _registry.default()
    return found


def record_error(span: trace.Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    if isinstance(exc, Exception):
        span.record_exception(exc, escaped=True)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    else:  # cancellation, client gone, interpreter exit
        span.set_attribute("honeyhive_metadata.cancelled", True)
