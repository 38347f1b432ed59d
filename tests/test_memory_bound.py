"""Memory held for export is bounded in bytes (`max_queue_bytes`) as well as in spans
(`max_queue_size`), with the collector down; every span is accounted for.

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
# Measured growth: 86-122 MiB (two modes, ~88 and ~120, from how the allocator's heap
# fragments; the same on Python 3.9, 3.11 and 3.13, and with the machine loaded). The
# bound leaves ~40 MiB above that. Regressions it catches: export requests not cut by
# bytes (a whole 64 MiB queue encoded at once) grew by ~184 MiB; the old queue,
# bounded in spans only, passed the bound within ~500 calls (the loop stops once past
# the bound rather than eat the machine).
RSS_BOUND = 64 * MIB + 96 * MIB

SOAK = """
import json, os, sys
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

calls, bound, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t = HoneyHiveTracer.init(
    project="soak",
    otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces",
    export_timeout=0.5,
    max_retries=0,
    shutdown_timeout=10.0,
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
    if i % 5000 == 4999:
        t.flush(timeout=5.0)  # export attempts against the dead collector
growth = max(rss(), peak()) - base
before_shutdown = t.stats()
clean = t.shutdown(timeout=10.0)
after = {k: v for k, v in t.stats().items() if isinstance(v, int)}
print(json.dumps({
    "calls": done, "growth": growth, "max_queued_bytes": max_queued,
    "before": {k: v for k, v in before_shutdown.items() if isinstance(v, int)},
    "after": after, "clean_shutdown": clean,
}))
"""


def run_soak(calls: int) -> dict[str, Any]:
    code = f"import sys; sys.argv[1:] = {[str(calls), str(RSS_BOUND), str(free_port())]!r}\n"
    r = run_python(code + SOAK, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def test_a_dead_collector_does_not_grow_memory_beyond_the_byte_bound() -> None:
    got = run_soak(CALLS)
    print(
        f"RSS growth {got['growth'] / MIB:.1f} MiB over {got['calls']} calls; "
        f"max queued_bytes {got['max_queued_bytes'] / MIB:.1f} MiB; stats {got['after']}"
    )
    assert got["calls"] == CALLS, f"stopped early: RSS grew by {got['growth'] / MIB:.0f} MiB"
    assert got["growth"] < RSS_BOUND, got["growth"] / MIB
    assert 0 < got["max_queued_bytes"] <= 64 * MIB
    after = got["after"]
    assert after["dropped_queue_bytes"] > 0
    assert after["dropped_queue_full"] == 0  # the byte bound came first, not the span count
    assert after["exported"] == 0  # nothing listens
    assert after["failed"] > 0  # the flushes tried, and failed
    assert (after["queued"], after["queued_bytes"]) == (0, 0)
    assert_accounted(after, CALLS + 1)


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
    assert stats["queued"] <= 5
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
