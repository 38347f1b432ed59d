"""Show the Retry-After regression on a build from before its fix, next to this one.

Before the fix, a HoneyHive session start answered ``503`` with
``Retry-After: 18446744073709551615`` (u64::MAX seconds) overflowed a deadline on the
export thread: the thread died without a word, flushes timed out and no span was
exported any more. ``tests/test_boundary.py`` checks the fixed behaviour on the current build;
this script runs the same scenario against an older build too, to show the difference.
It is not part of the test suite (it needs a second build).

Make a build of commit 4ae81a9 (the last one before the fix) in its own virtual
environment, from a checkout of this repository::

    mkdir /tmp/ht-old && git archive 4ae81a9 | tar -x -C /tmp/ht-old
    python3 -m venv /tmp/ht-old-venv
    /tmp/ht-old-venv/bin/pip install /tmp/ht-old

then, in an environment with this checkout and its test dependencies installed
(``pip install '.[test]'``)::

    python tools/compare_old_build.py /tmp/ht-old-venv/bin/python

It prints what each build did and exits 0 when the old build loses its export thread
and the current one (this interpreter's honeytrace) delivers every span; 1 otherwise.
``--old-only`` skips the current build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from otlp_receiver import Receiver, Reply

HUGE_RETRY_AFTER = "18446744073709551615"  # u64::MAX seconds

SCENARIO = """
import json, logging
import honeytrace
from honeytrace import HoneyHiveTracer

records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelno, record.getMessage()])

logging.getLogger("honeytrace").addHandler(Keep())
t = HoneyHiveTracer.init(api_key="k", server_url=URL, export_timeout=2, max_retries=3,
                         project="p", source="s")
for i in range(3):
    t.start_span(f"first-{i}").end()
flush1 = t.flush(timeout=FLUSH)
t.start_span("second").end()
flush2 = t.flush(timeout=FLUSH)
s2 = t.stats()
# Builds since the fix queue the engine's log records for Python; older ones logged
# directly.
getattr(getattr(honeytrace, "_log", None), "drain", lambda: None)()
print("RESULT " + json.dumps({
    "version": getattr(honeytrace, "__version__", "?"),
    "flush1": flush1, "flush2": flush2,
    "exported": s2["exported"], "queued": s2["queued"],
    "logs": records,
}))
"""


def run(python: str, flush_timeout: float) -> dict[str, Any]:
    """The scenario on ``python`` against a fresh stand-in for HoneyHive whose first
    answer (the session start) is 503 with the huge Retry-After."""
    with Receiver() as r:
        r.default_reply = Reply(status=503, headers={"Retry-After": HUGE_RETRY_AFTER})

        def after_first(_req: Any) -> None:
            r.default_reply = Reply()

        r.on_request = after_first
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HH_", "OTEL_", "HONEYHIVE_"))
            and k not in ("SESSION_ID", "SESSION_NAME")
        }
        code = f"URL = {r.url!r}\nFLUSH = {flush_timeout!r}\n" + SCENARIO
        proc = subprocess.run(
            [python, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        reports = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not reports:
            raise SystemExit(f"{python} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
        out: dict[str, Any] = json.loads(reports[-1][len("RESULT ") :])
        out["received"] = sorted(s["name"] for s in r.spans())
        return out


def show(label: str, out: dict[str, Any]) -> None:
    print(f"{label} (honeytrace {out['version']}):")
    print(f"  flush: {out['flush1']}, then {out['flush2']}")
    print(f"  exported {out['exported']}, still queued {out['queued']}")
    print(f"  spans the collector received: {out['received']}")
    for level, message in out["logs"]:
        if level >= 30:
            print(f"  log [{level}]: {message}")


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__)
        return 2
    old = run(args[0], flush_timeout=3)
    show("old build", old)
    # The export thread is a native thread (not in threading.enumerate()): that it died
    # shows as flushes that time out and spans that are never exported. (How many the
    # old build still counts as queued depends on when the thread died.)
    old_lost = (
        old["flush1"] is False
        and old["flush2"] is False
        and old["exported"] == 0
        and old["received"] == []
    )
    print(f"  => {'lost its export thread' if old_lost else 'did NOT show the regression'}")
    if "--old-only" in argv:
        return 0 if old_lost else 1
    new = run(sys.executable, flush_timeout=30)
    show("current build", new)
    new_ok = (
        new["flush1"] is True
        and new["queued"] == 0
        and new["received"] == ["first-0", "first-1", "first-2", "second"]
    )
    print(f"  => {'delivered every span' if new_ok else 'did NOT deliver every span'}")
    return 0 if old_lost and new_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
