"""The "honeytrace" logger, and the pump that carries the engine's log records to it.

Messages go through :mod:`logging`. When the application has not configured logging
at all, a fallback handler writes them to stderr (prefixed ``honeytrace:``), so the
one-line "where traces go" notice and real warnings are never lost; once the app
configures the root logger, the fallback steps aside and propagation takes over.

The engine never calls :mod:`logging` itself (a logging handler may block, and no
engine frame may wait in Python code; see docs/internals.md). It queues its records,
and this module emits them: from a small daemon thread (``honeytrace-log``, started
with the first tracer) that looks every half second, and at once from every
lifecycle call and decoration (:func:`drain`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

logger = logging.getLogger("honeytrace")

_PUMP_INTERVAL = 0.5


class _FallbackStderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return  # the app configured logging: the record propagates there
        with contextlib.suppress(Exception):  # stderr may be closed at exit
            sys.stderr.write(f"honeytrace: {record.getMessage()}\n")


_fallback = _FallbackStderrHandler(logging.INFO)
if not any(isinstance(h, _FallbackStderrHandler) for h in logger.handlers):
    logger.addHandler(_fallback)
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)


def set_verbose(on: bool) -> None:
    if on:
        logger.setLevel(logging.DEBUG)
        _fallback.setLevel(logging.DEBUG)


# -- the engine's records -----------------------------------------------------------

_take: Optional[Callable[[], list[tuple[int, str]]]] = None
_pending: Optional[Callable[[], bool]] = None
_lock = threading.Lock()
_pump: Optional[threading.Thread] = None
_pump_pid = 0


def connect(take: Callable[[], list[tuple[int, str]]], pending: Callable[[], bool]) -> None:
    """Where the engine's records come from (``honeytrace/__init__.py`` wires it)."""
    global _take, _pending
    _take, _pending = take, pending


def drain() -> None:
    """Emit every record the engine has queued, now."""
    if _take is None:
        return
    for level, message in _take():
        logger.log(level, "%s", message)


def drain_at_exit() -> None:
    """Emit what is left when the interpreter exits (registered first, so it runs
    after the tracers' own exit hook)."""
    import atexit

    atexit.register(drain)


# Signals raised by a fault in this thread itself; every other signal is blocked here.
_FAULTS = {"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGABRT", "SIGSYS"}


def _start_without_signals(thread: threading.Thread) -> None:
    """Start ``thread`` with process-directed signals blocked; it inherits the mask and
    never takes one (why: with_async_signals_blocked in src/engine/export/pipeline.rs).
    A signal arriving meanwhile stays pending until the caller's mask is restored."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        thread.start()
        return
    faults = {getattr(signal, name) for name in _FAULTS if hasattr(signal, name)}
    try:
        old = mask(signal.SIG_BLOCK, set(signal.valid_signals()) - faults)
    except (OSError, ValueError):
        thread.start()
        return
    try:
        thread.start()
    finally:
        mask(signal.SIG_SETMASK, old)


def _run() -> None:
    while True:
        time.sleep(_PUMP_INTERVAL)
        if _pending is not None and _pending():
            with contextlib.suppress(Exception):
                drain()


def start_pump() -> None:
    """Start the log pump once per process (again after a fork)."""
    global _pump, _pump_pid
    with _lock:
        if _pump is not None and _pump_pid == os.getpid() and _pump.is_alive():
            return
        _pump = threading.Thread(target=_run, name="honeytrace-log", daemon=True)
        _pump_pid = os.getpid()
        _start_without_signals(_pump)


def emit_now(level: int, message: str, *args: Any) -> None:
    """Log from Python code of honeytrace (engine records first, to keep order)."""
    drain()
    logger.log(level, message, *args)
