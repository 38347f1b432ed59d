"""Carrying the context into process pools, per task.

A worker process of a ``ProcessPoolExecutor`` or a ``multiprocessing.Pool`` does not
share the submitting thread's context: with the fork start method it keeps whatever
context it had when it forked (the request that happened to create the pool), with
spawn and forkserver it has none. ``carry_context(fn)`` wraps ``fn`` with the current
trace and session (as W3C ``traceparent``/``baggage`` headers); the wrapper pickles
like ``fn`` (by reference) and, in the worker, runs ``fn`` in the context those headers
describe. ``instrument_processes()``
(or ``HoneyHiveTracer.init(propagate_processes=True)``) does it for every task
submitted: ``ProcessPoolExecutor.submit``/``map`` and ``Pool.apply``/``apply_async``/
``map``/``map_async``/``starmap``/``starmap_async``/``imap``/``imap_unordered``.

The carrier comes from this process through the pool's own pipe, so the worker
continues it whatever the tracer's trust policy for incoming requests is, and does not
check a signature (a task may wait in the queue longer than ``baggage_max_age``). A
worker without a tracer runs ``fn`` unchanged.
"""

from __future__ import annotations

import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import pool as _mp_pool
from typing import Any, Callable, Generic, TypeVar

from opentelemetry import context as _context

from . import _core, _registry

T = TypeVar("T")

_lock = threading.Lock()
_originals: dict[tuple[type, str], Any] = {}


class ContextCarrier(Generic[T]):
    """``fn`` with the context of the moment it was wrapped, for another process.
    Pickles by reference to ``fn`` (which must be picklable, as without honeytrace)."""

    __slots__ = ("carrier", "fn")

    def __init__(self, fn: Callable[..., T], carrier: dict[str, str]) -> None:
        self.fn = fn
        self.carrier = carrier

    def __reduce__(self) -> tuple[Any, ...]:
        return (ContextCarrier, (self.fn, self.carrier))

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        if not self.carrier or _registry.default() is None:
            return self.fn(*args, **kwargs)
        token = _context.attach(_core._extract_own(self.carrier))
        try:
            return self.fn(*args, **kwargs)
        finally:
            _context.detach(token)

    def __repr__(self) -> str:
        return f"ContextCarrier({self.fn!r})"


def carry_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to the current trace and session, for another process: submit it to
    a ``ProcessPoolExecutor`` or a ``multiprocessing.Pool`` (any start method) and its
    spans are children of the current span, in the current session. Without a tracer,
    or outside any trace and session, ``fn`` is returned as it is."""
    if isinstance(fn, ContextCarrier) or _registry.default() is None:
        return fn
    carrier: dict[str, str] = {}
    try:
        _core.inject(carrier)
    except Exception:  # tracing never breaks the submit
        return fn
    if not carrier:
        return fn
    return ContextCarrier(fn, carrier)


def _wrapping(cls: type, name: str) -> Callable[..., Any]:
    original = getattr(cls, name)

    def submit(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, carry_context(fn), *args, **kwargs)

    submit.__name__ = name
    submit.__qualname__ = f"{cls.__name__}.{name}"
    submit.__doc__ = original.__doc__
    return submit


# Each of these takes the function first; the others (apply, map, starmap, ...) call
# one of them. ``ProcessPoolExecutor.map`` submits chunks through ``submit``, carrying
# the context of the ``map`` call.
_TARGETS: list[tuple[type, str]] = [
    (ProcessPoolExecutor, "submit"),
    (_mp_pool.Pool, "apply_async"),
    (_mp_pool.Pool, "_map_async"),
    (_mp_pool.Pool, "imap"),
    (_mp_pool.Pool, "imap_unordered"),
]


def instrument_processes() -> None:
    """Carry the current trace and session into every task submitted to a
    ``ProcessPoolExecutor`` or a ``multiprocessing.Pool``. Idempotent."""
    with _lock:
        if _originals:
            return
        for cls, name in _TARGETS:
            if not hasattr(cls, name):
                continue
            _originals[(cls, name)] = cls.__dict__[name]
            setattr(cls, name, _wrapping(cls, name))


def uninstrument_processes() -> None:
    with _lock:
        for (cls, name), original in _originals.items():
            setattr(cls, name, original)
        _originals.clear()


def is_instrumented() -> bool:
    return bool(_originals)
