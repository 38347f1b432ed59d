from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import honeytrace
from honeytrace import HoneyHiveTracer, trace
from otlp_receiver import Receiver

_CONFIG_PREFIXES = ("HH_", "OTEL_", "HONEYHIVE_")
_CONFIG_NAMES = ("SESSION_ID", "SESSION_NAME")


# The disk spool is on by default; a test of how failures are counted without it
# would otherwise see `spooled` where it expects `failed` (and leave batches in the
# user's cache). Tests of the spool turn it on (tests/test_spool.py).
_TEST_DEFAULTS = {"HH_SPOOL": "false"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no HoneyHive/OpenTelemetry configuration from the machine."""
    for k in list(os.environ):
        if k.startswith(_CONFIG_PREFIXES) or k in _CONFIG_NAMES:
            monkeypatch.delenv(k, raising=False)
    for k, v in _TEST_DEFAULTS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def make_tracer() -> Iterator[Callable[..., HoneyHiveTracer]]:
    made: list[HoneyHiveTracer] = []

    def make(**kwargs: Any) -> HoneyHiveTracer:
        kwargs.setdefault("shutdown_timeout", 5.0)
        t = HoneyHiveTracer.init(**kwargs)
        made.append(t)
        return t

    yield make
    for t in made:
        if t.is_initialized:
            t.shutdown(timeout=2.0)


@pytest.fixture
def memory_tracer(make_tracer: Callable[..., HoneyHiveTracer]) -> HoneyHiveTracer:
    return make_tracer(project="test-project", source="test", test_mode=True)


REPO = Path(__file__).resolve().parent.parent


def child_env(*importable: str | Path) -> dict[str, str]:
    """This process's environment without HoneyHive/OpenTelemetry configuration, with
    ``importable`` directories and tests/ importable: for child interpreters."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_CONFIG_PREFIXES) and k not in _CONFIG_NAMES
    }
    env.update(_TEST_DEFAULTS)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, importable), os.path.dirname(__file__)])
    return env


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter (clean environment, as ``run_python``),
    with pipes for its output; ``args`` are its ``sys.argv[1:]``."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_process(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """SIGTERM ``proc`` (if still running) and wait; killed if it does not end in time.
    Returns its remaining standard output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def run_python(
    code: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    cwd: str | None = None,
    args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with a clean HH_/OTEL_ environment;
    ``args`` are its ``sys.argv[1:]``."""
    full_env = child_env()
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


# A child interpreter that reports back. Its code runs after ``REPORTING_PRELUDE``,
# which gives it ``logs()`` (honeytrace's log records as [level, message]),
# ``wait_until(predicate)``, ``done(**values)`` and the test receiver; ``run_reporting``
# returns what ``done`` reported, with the child's stderr as ``_stderr``.
REPORTING_PRELUDE = """
import json, logging, sys, threading, time
import honeytrace
from honeytrace import HoneyHiveTracer, _core
from otlp_receiver import Receiver, flatten

RECORDS = []

class _Keep(logging.Handler):
    def emit(self, record):
        RECORDS.append([record.levelno, record.getMessage()])

logging.getLogger("honeytrace").addHandler(_Keep())

def logs():
    honeytrace._log.drain()
    return list(RECORDS)

def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True

def done(**values):
    print("RESULT " + json.dumps(values, default=repr))
"""


def run_reporting(code: str, timeout: float = 240.0) -> dict[str, Any]:
    """Run ``code`` after ``REPORTING_PRELUDE`` in a fresh interpreter (clean HH_/OTEL_
    environment); what it reported with ``done(**values)``. A crash or a missing report
    fails with its output."""
    proc = run_python(REPORTING_PRELUDE + textwrap.dedent(code), timeout=timeout)
    reports = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and reports, (
        f"subprocess failed (rc={proc.returncode})\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-6000:]}"
    )
    out: dict[str, Any] = json.loads(reports[-1][len("RESULT ") :])
    out["_stderr"] = proc.stderr
    return out


def messages(records: list[list[Any]], level: int) -> list[str]:
    """The messages of ``logs()`` records at ``level``."""
    return [m for lvl, m in records if lvl == level]


def assert_accounted(st: dict[str, Any]) -> None:
    """The accounting identity of docs/tracer.md: every span a tracer ended is in
    exactly one outcome counter, or still queued."""
    assert st["ended"] == (
        st["exported"]
        + st["failed"]
        + st["dropped"]
        + st["spooled"]
        + st["filtered"]
        + st["sampled_out"]
        + st["queued"]
    ), st


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now: for a server a test
    starts, or for an endpoint whose connections must be refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def captured(t: HoneyHiveTracer, value: Any) -> Any:
    """What ``value`` becomes as the argument of a function traced by ``t``: its
    span's ``honeyhive_inputs.v`` attribute (None when it has none)."""
    t.clear_finished_spans()

    @trace(tracer=t)
    def f(v: Any) -> None:
        return None

    f(value)
    return t.finished_spans()[0]["attributes"].get("honeyhive_inputs.v")


def spans_by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in spans}


__all__ = [
    "REPO",
    "Receiver",
    "captured",
    "child_env",
    "free_port",
    "honeytrace",
    "messages",
    "run_python",
    "run_reporting",
    "spans_by_name",
]
