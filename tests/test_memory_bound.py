"""Memory held for export is bounded in bytes (`max_queue_bytes`) as well as in spans
(`max_queue_size`), with the collector down or hung; every span is accounted for.

The accounting identity asserted after shutdown (docs/tracer.md, with `queued`):

    started == ended
    ended == exported + failed + dropped + queued + filtered
    dropped == dropped_queue_full + dropped_queue_bytes
               + dropped_after_shutdown + dropped_at_shutdown
"""

from __future__ import annotations

import json
from typing import Any, Callable

from conftest import free_port, run_python
from honeytrace import HoneyHiveTracer, trace

Make = Callable[..., HoneyHiveTracer]

MIB = 1 << 20
DROPPED_PARTS = (
    "dropped_queue_full",
    "dropped_queue_bytes",
    "dropped_after_shutdown",
    "dropped_at_shutdown",
)


def assert_accounted(stats: dict[str, Any], started: int) -> None:
    assert stats["started"] == stats["ended"] == started, stats
    assert stats["ended"] == (
        stats["exported"] + stats["failed"] + stats["dropped"] + stats["queued"] + stats["filtered"]
    ), stats
    assert stats["dropped"] == sum(stats[k] for k in DROPPED_PARTS), stats


# -- 20,000 calls of three 100 KB strings, in a subprocess for a clean RSS ----------------

CALLS = 20_000
# max_queue_bytes bounds the spans held (64 MiB by default), the batch in flight
# included; batch_bytes (4 MiB) bounds each export request and so the request buffer.
# Measured growth: dead collector 86-122 MiB (two modes, ~88 and ~120, from how the
# allocator's heap fragments; the same on Python 3.9, 3.11 and 3.13, and with the
# machine loaded), hung collector ~68 MiB. The bound leaves ~40 MiB above the worst.
# Regressions it catches: export requests not cut by bytes grew by ~184 MiB (dead);
# the old queue, bounded in spans only, passed the bound within ~500 calls (the loop
# stops once past the bound rather than eat the machine).
RSS_BOUND = 64 * MIB + 96 * MIB

SOAK = """
import json, os, socket, sys, time
from honeytrace import HoneyHiveTracer, trace

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak():
    # VmHWM: this process's own high-water mark. Not getrusage's ru_maxrss, which on
    # Linux keeps the peak of the process that started us (pytest) across exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

calls, bound, collector = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
port = listener.getsockname()[1]
if collector == "hung":
    # It listens but never accepts: every export waits out export_timeout.
    listener.listen(1)
else:
    # Dead: the port refuses connections, every export fails at once.
    listener.close()

t = HoneyHiveTracer.init(
    project="soak",
    otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces",
    export_timeout=0.5,
    max_retries=0,
    shutdown_timeout=3.0,
)

@trace
def handle(a, b, c):
    return None

a, b, c = "a" * 100_000, "b" * 100_000, "c" * 100_000
handle(a, b, c)  # warm up
base = rss()
max_queued = 0
done = 0
for i in range(calls):
    handle(a, b, c)
    done += 1
    if i % 100 == 0:
        max_queued = max(max_queued, t.stats().get("queued_bytes", 0))
        if rss() - base > bound:  # a regression: stop before it eats the machine
            break
growth = max(rss(), peak()) - base
before_shutdown = t.stats()
clean = t.shutdown(timeout=3.0)
at_return = {k: v for k, v in t.stats().items() if isinstance(v, int)}
# The export thread's last timed-out request ends at the shutdown deadline; shutdown
# waits a moment more for it to count what it held. On a loaded machine it may need
# longer: until then its spans show as `queued`.
settle_until = time.monotonic() + 10.0
while t.stats()["queued"] and time.monotonic() < settle_until:
    time.sleep(0.01)
after = {k: v for k, v in t.stats().items() if isinstance(v, int)}
print(json.dumps({
    "calls": done, "growth": growth, "max_queued_bytes": max_queued,
    "before": {k: v for k, v in before_shutdown.items() if isinstance(v, int)},
    "at_return": at_return, "after": after, "clean_shutdown": clean,
}))
"""


def run_soak(calls: int, collector: str) -> dict[str, Any]:
    code = f"import sys; sys.argv[1:] = {[str(calls), str(RSS_BOUND), collector]!r}\n"
    r = run_python(code + SOAK, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def check_soak(got: dict[str, Any]) -> dict[str, Any]:
    print(
        f"RSS growth {got['growth'] / MIB:.1f} MiB over {got['calls']} calls; "
        f"max queued_bytes {got['max_queued_bytes'] / MIB:.1f} MiB; stats {got['after']}"
    )
    assert got["calls"] == CALLS, f"stopped early: RSS grew by {got['growth'] / MIB:.0f} MiB"
    assert got["growth"] < RSS_BOUND, got["growth"] / MIB
    assert 0 < got["max_queued_bytes"] <= 64 * MIB
    # Every span accounted for the moment shutdown returns (spans the export thread
    # still held count as `queued`), and after it lets go.
    assert_accounted(got["at_return"], CALLS + 1)
    after: dict[str, Any] = got["after"]
    assert after["dropped_queue_full"] == 0  # the byte bound comes first, not the span count
    assert after["exported"] == 0  # nothing answers
    assert after["failed"] > 0  # the export thread tried, and failed
    assert (after["queued"], after["queued_bytes"]) == (0, 0)
    assert_accounted(after, CALLS + 1)
    return after


def test_a_hung_collector_does_not_grow_memory_beyond_the_byte_bound() -> None:
    # Every export waits out its timeout, so the queue fills on any machine.
    got = run_soak(CALLS, "hung")
    after = check_soak(got)
    assert after["dropped_queue_bytes"] > 0
    assert got["clean_shutdown"] is False  # spans were still queued at the deadline
    assert after["dropped_at_shutdown"] > 0


def test_a_dead_collector_does_not_grow_memory_beyond_the_byte_bound() -> None:
    # Exports fail at once; on a quick machine the export thread keeps up with the loop
    # and nothing is dropped (CI saw both). This catches what a fast failure loop grows:
    # export requests not cut by bytes (a whole 64 MiB queue encoded at once each time)
    # grew by ~184 MiB.
    check_soak(run_soak(CALLS, "dead"))


# -- small scale, in process ------------------------------------------------------------------


def test_queued_bytes_stay_within_max_queue_bytes(make_tracer: Make) -> None:
    limit = 1_000_000
    t = make_tracer(
        project="small",
        otlp_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
        export_timeout=0.5,
        max_retries=0,
        max_queue_bytes=limit,
    )

    @trace(tracer=t)
    def handle(a: str, b: str, c: str) -> None:
        return None

    a, b, c = "a" * 100_000, "b" * 100_000, "c" * 100_000
    calls = 300
    seen = []
    for _ in range(calls):
        handle(a, b, c)
        seen.append(t.stats()["queued_bytes"])
    assert len(seen) == calls
    assert max(seen) <= limit, max(seen)
    # Each span holds three 64 KiB inputs: a few fit, most are dropped.
    assert max(seen) >= 3 * 65536
    stats = t.stats()
    assert stats["dropped_queue_bytes"] > 0
    assert stats["dropped"] >= stats["dropped_queue_bytes"]
    t.shutdown(timeout=5.0)
    stats = t.stats()
    assert (stats["queued"], stats["queued_bytes"]) == (0, 0)
    assert_accounted(stats, calls)


def test_max_queue_bytes_from_the_environment() -> None:
    r = run_python(
        f"""
        import json
        from honeytrace import HoneyHiveTracer, trace
        t = HoneyHiveTracer.init(
            otlp_endpoint="http://127.0.0.1:{free_port()}/v1/traces",
            export_timeout=0.5, max_retries=0,
        )

        @trace
        def handle(a):
            return None

        seen = []
        for _ in range(50):
            handle("x" * 100_000)
            seen.append(t.stats()["queued_bytes"])
        before = t.stats()
        t.shutdown(timeout=5.0)
        print(json.dumps({{"max": max(seen), "before": before, "after": t.stats()}}))
        """,
        env={"HH_MAX_QUEUE_BYTES": "300000"},
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert 65536 <= got["max"] <= 300_000
    assert got["before"]["dropped_queue_bytes"] > 0
    assert_accounted(got["after"], 50)


def test_the_span_count_bound_still_applies(make_tracer: Make) -> None:
    t = make_tracer(
        otlp_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
        export_timeout=0.5,
        max_retries=0,
        max_queue_size=5,
        batch_size=5,
        flush_interval=60.0,
    )

    @trace(tracer=t)
    def small() -> None:
        return None

    for _ in range(40):
        small()
    stats = t.stats()
    # `queued` counts every span not yet handled: up to 5 in the queue, and a batch of
    # up to 5 the export thread has taken (as OpenTelemetry's max_queue_size, the
    # count bound is on the queue; max_queue_bytes counts the batch in flight too).
    assert stats["queued"] <= 5 + 5
    assert stats["dropped_queue_full"] > 0
    assert stats["dropped_queue_bytes"] == 0
    t.shutdown(timeout=5.0)
    assert_accounted(t.stats(), 40)


def test_a_span_larger_than_the_whole_bound_is_dropped(make_tracer: Make) -> None:
    t = make_tracer(
        otlp_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
        export_timeout=0.5,
        max_retries=0,
        max_queue_bytes=1024,  # the smallest allowed
    )

    @trace(tracer=t)
    def big(a: str) -> None:
        return None

    big("x" * 10_000)
    stats = t.stats()
    assert stats["dropped_queue_bytes"] == 1
    assert stats["queued_bytes"] == 0
    t.shutdown(timeout=5.0)
    assert_accounted(t.stats(), 1)
