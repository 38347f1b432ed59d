"""Deliver what is queued however the process ends, not only at a normal exit.

``atexit`` covers a normal exit (the exit hook in ``_tracer.py``). Two common ends skip
it, and with them every span still queued:

- ``os._exit()``: how ``multiprocessing`` ends a fork or forkserver child after its
  target or its last task (``Process``, ``Pool``, ``ProcessPoolExecutor``), and how
  Celery's prefork children end when recycled (``--max-tasks-per-child``).
  ``os._exit`` is wrapped: it first shuts every tracer down within the longest
  ``shutdown_timeout`` (nothing to wait for returns at once), then exits as asked.
- ``SIGTERM`` under Python's default disposition, which kills the process at once:
  ``Pool.terminate()`` (``with Pool(...)`` on leaving the block), ``docker stop``,
  Kubernetes, systemd. A handler is installed at ``init`` (from the main thread) that
  chains onto the one it finds: it exports what is queued, then does what that one
  would have done (the default: the process still dies of SIGTERM, with the same exit
  status; an app's own handler: it is called, with the same arguments). A handler the
  app installs later replaces ours, as it would replace the default; the app then
  decides how the process ends (uvicorn and gunicorn end through ``atexit``, or put
  ours back and re-raise). An ignored SIGTERM stays ignored.

- ``signal.raise_signal(sig)`` of a signal that kills the process by default, while its
  disposition is the default: how uvicorn ends after a graceful shutdown on SIGTERM (it
  puts back the handler it found, the default when the app module created the tracer,
  and re-raises). ``signal.raise_signal`` is wrapped: in that case it shuts every
  tracer down first.

All are on by default and turned off with ``exit_hooks=False`` (``HH_EXIT_HOOKS``).
The design rules are in docs/internals.md ("How a process ends").
"""

from __future__ import annotations

import operator
import os
import signal
import threading
from typing import Any, Callable, Optional, Union

from . import _core, _log, _registry

_Handler = Union[Callable[[int, Any], Any], int, signal.Handlers, None]

_lock = threading.Lock()
_real_exit: Optional[Callable[[int], Any]] = None
_real_raise_signal: Optional[Callable[[int], None]] = None
# Signals whose default action ends the process (a core dump aside) without Python's
# exit: raising one under the default disposition is an exit without atexit.
_FATAL_BY_DEFAULT = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
)
_sigterm_installed = False
_handling = False


def exit_deadline() -> float:
    """The longest ``shutdown_timeout`` of the live tracers (what the exit hook uses)."""
    timeouts = [t._core.shutdown_timeout for t in _registry.all_tracers()]
    return max(timeouts, default=5.0)


def flush_for_exit() -> None:
    """Export what is queued within the exit deadline, keeping the tracers (the app may
    still run a moment), and emit the engine's log records."""
    _core.flush_all(exit_deadline())
    _log.drain()


def _shut_down_all() -> None:
    try:
        _core.shutdown_all(None)
        _log.drain()
    except Exception:  # the process is ending: never stand in its way
        pass


def _exit(status: int) -> Any:
    real = _real_exit
    assert real is not None
    try:
        operator.index(status)
    except TypeError:
        return real(status)  # the real one raises the TypeError; nothing was shut down
    try:
        _shut_down_all()
    finally:
        real(status)


def _raise_signal(signalnum: int) -> None:
    real = _real_raise_signal
    assert real is not None
    try:
        if signalnum in _FATAL_BY_DEFAULT and signal.getsignal(signalnum) is signal.SIG_DFL:
            _shut_down_all()  # the process dies next
    except Exception:  # never stand in the way of the signal
        pass
    real(signalnum)


def _make_sigterm_handler(previous: _Handler) -> Callable[[int, Any], Any]:
    def on_sigterm(signum: int, frame: Any) -> Any:
        global _handling
        if not _handling:  # a second SIGTERM while exporting goes straight on
            _handling = True
            try:
                if previous is signal.SIG_DFL:
                    _shut_down_all()  # the process dies next: count what is left
                else:
                    # The app's handler decides what happens next (it may keep running
                    # for a while): export what is queued, keep the tracers.
                    flush_for_exit()
            except Exception:
                pass
            finally:
                _handling = False
        if callable(previous):
            return previous(signum, frame)
        # The default: die of SIGTERM as the process would have without us.
        signal.signal(signum, signal.SIG_DFL)
        (_real_raise_signal or signal.raise_signal)(signum)
        return None

    on_sigterm._honeytrace_previous = previous  # type: ignore[attr-defined]
    return on_sigterm


def _install_sigterm() -> None:
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; a later init may
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return
    if previous is signal.SIG_IGN or previous is None:
        # Ignored on purpose, or set outside Python: not ours to change.
        _sigterm_installed = True
        return
    try:
        signal.signal(signal.SIGTERM, _make_sigterm_handler(previous))
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return
    _sigterm_installed = True


def install() -> None:
    """Wrap ``os._exit`` and chain a SIGTERM handler (idempotent; see the module doc)."""
    global _real_exit, _real_raise_signal
    with _lock:
        if _real_exit is None:
            _real_exit = os._exit
            os._exit = _exit
            _exit.__doc__ = _real_exit.__doc__
        if hasattr(signal, "SIGTERM") and hasattr(signal, "raise_signal"):
            if _real_raise_signal is None:
                _real_raise_signal = signal.raise_signal
                signal.raise_signal = _raise_signal
                _raise_signal.__doc__ = _real_raise_signal.__doc__
            _install_sigterm()
