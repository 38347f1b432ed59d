"""Carrying the context into threads and executors.

``bind_context(fn)`` is the explicit, patch-free way. ``instrument_threads()`` (or
``HoneyHiveTracer.init(propagate_threads=True)``) patches ``threading.Thread.start`` and
``ThreadPoolExecutor.submit`` so work started from a traced context keeps its parent
span and session; that covers ``loop.run_in_executor`` too. ``asyncio.to_thread`` and
``asyncio.run`` copy the context by themselves.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_orig_start: Optional[Callable[[threading.Thread], None]] = None
_orig_submit: Optional[Callable[..., Future[Any]]] = None


def bind_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to the current context: wherever it is called (another thread, an
    executor, a callback), it runs with this context's span and session."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        # A copy per call: one Context cannot be entered by two threads at once.
        return ctx.copy().run(fn, *args, **kwargs)

    return run


def _start(self: threading.Thread) -> None:
    ctx = contextvars.copy_context()
    run = self.run
    self.run = lambda: ctx.run(run)  # type: ignore[method-assign]
    assert _orig_start is not None
    _orig_start(self)


def _submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    ctx = contextvars.copy_context()
    assert _orig_submit is not None
    return _orig_submit(self, ctx.run, fn, *args, **kwargs)


def instrument_threads() -> None:
    """Carry the current context into new threads and ThreadPoolExecutor tasks.
    Idempotent."""
    global _orig_start, _orig_submit
    with _lock:
        if _orig_start is not None:
            return
        _orig_start = threading.Thread.start
        _orig_submit = ThreadPoolExecutor.submit
        threading.Thread.start = _start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]


def uninstrument_threads() -> None:
    global _orig_start, _orig_submit
    with _lock:
        if _orig_start is None or _orig_submit is None:
            return
        threading.Thread.start = _orig_start  # type: ignore[method-assign,assignment]
        ThreadPoolExecutor.submit = _orig_submit  # type: ignore[method-assign]
        _orig_start = None
        _orig_submit = None
