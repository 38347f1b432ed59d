"""The "honeytrace" logger.

Messages go through :mod:`logging`. When the application has not configured logging
at all, a fallback handler writes them to stderr (prefixed ``honeytrace:``), so the
one-line "where traces go" notice and real warnings are never lost; once the app
configures the root logger, the fallback steps aside and propagation takes over.
"""

from __future__ import annotations

import contextlib
import logging
import sys

logger = logging.getLogger("honeytrace")


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
