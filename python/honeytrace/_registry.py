"""The live ``HoneyHiveTracer`` objects of the process, by engine id.

The engine keeps its own registry (which tracer is the default, which are live); this
one maps an engine id back to the Python object, so that modules below ``_tracer``
(enrichment, integrations) can find "the tracer of this span" without importing it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional, Protocol

from . import _core

if TYPE_CHECKING:
    from ._core import TracerCore


class TracerLike(Protocol):
    """What the lower modules need of a ``HoneyHiveTracer``."""

    @property
    def _core(self) -> TracerCore: ...

    @property
    def mode(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    @property
    def is_initialized(self) -> bool: ...

    @property
    def tracer(self) -> Any: ...


_lock = threading.Lock()
_tracers: dict[int, Any] = {}


def is_tracer(obj: Any) -> bool:
    """Whether ``obj`` is a HoneyHiveTracer (anything holding an engine tracer)."""
    return isinstance(getattr(obj, "_core", None), _core.TracerCore)


def checked(tracer: Any, where: str) -> Any:
    """``tracer`` if it is a HoneyHiveTracer (or None); anything else is an invalid
    argument, counted and logged, and treated as None (the default tracer)."""
    if tracer is None or is_tracer(tracer):
        return tracer
    _core._invalid_argument(f"{where}(tracer=...)")
    return None


def add(tracer: Any) -> int:
    """Register ``tracer``; returns how many are live."""
    with _lock:
        _tracers[tracer._core.id] = tracer
        return len(_tracers)


def remove(tracer_id: int) -> None:
    with _lock:
        _tracers.pop(tracer_id, None)


def clear() -> None:
    with _lock:
        _tracers.clear()


def get(tracer_id: Optional[int]) -> Any:
    if tracer_id is None:
        return None
    with _lock:
        return _tracers.get(tracer_id)


def all_tracers() -> list[Any]:
    with _lock:
        return list(_tracers.values())


def default() -> Any:
    """The default tracer (the first initialised, unless changed), if any is live."""
    return get(_core.default_tracer_id())


def of_span(span: Any) -> Any:
    """The tracer that owns ``span`` (a honeytrace span), else None."""
    return get(getattr(span, "_tracer_id", None))
