"""The export thread under load and under failure: a flush completes while spans keep
coming, a panic loses only the batch in hand, a panicking REST call or exporter
shutdown does not stall or restart the pipeline, and the thread gives up after five
failures in a row (docs/internals.md, "Export happens on a background thread").

Tests that make the engine panic run in a fresh interpreter: a contained panic would
show in other tests' process-wide ``internal_errors``, and a warning logged here would
be rate-limited for 30 s in other tests that expect it.
"""

from __future__ import annotations

from conftest import messages, run_reporting
from otlp_receiver import Receiver, Reply
from test_memory_bound import assert_accounted

# ---------------------------------------------------------------------------------
# A flush under steady load


FLUSH_UNDER_LOAD = """
import os
t = HoneyHiveTracer.init(otlp_endpoint=URL, export_timeout=30, max_queue_size=QUEUE,
                         project="p", source="s")
stop = threading.Event()

def produce():
    while not stop.is_set():
        t.start_span("load").end()

def through():
    s = t.stats()
    return s["exported"] + s["failed"]

def watched_flush():
    # A flush waits for the spans ended before it: at most a queue and a batch. Once
    # the export thread has handled many queues' worth since, it will not finish.
    ended, base = t.stats()["ended"], through()
    result = {}
    waiter = threading.Thread(target=lambda: result.update(ok=t.flush(timeout=600)),
                              daemon=True)
    waiter.start()
    while waiter.is_alive():
        if through() - base > 50 * QUEUE:
            return {"ok": "still waiting", "ended_before": ended}
        waiter.join(0.01)
    s = t.stats()
    return {"ok": result["ok"], "ended_before": ended,
            "handled": s["exported"] + s["failed"] + s["dropped"]}

producer = threading.Thread(target=produce, daemon=True)
producer.start()
busy = wait_until(lambda: through() > 0)
flushes = []
for _ in range(3):
    flushes.append(watched_flush())
    if flushes[-1]["ok"] is not True:
        break
still_running = producer.is_alive()
if flushes[-1]["ok"] is not True:
    done(busy=busy, flushes=flushes, still_running=still_running)
    sys.stdout.flush()
    os._exit(0)  # a flush is stuck in the engine: do not wait for it at exit
stop.set()
producer.join()
last = t.flush(timeout=60)
t.shutdown(timeout=30)
done(busy=busy, flushes=flushes, still_running=still_running, last=last, stats=t.stats())
"""


def test_flush_completes_while_spans_keep_coming(receiver: Receiver) -> None:
    """Before the fix a flush counted as done only when the queue was empty at the end
    of a turn; with a producer that never pauses it never is, so every flush waited
    its whole timeout while the export thread sent batch after batch."""
    # A collector slower than the producer, so the queue never runs dry on its own.
    receiver.default_reply = Reply(200, delay=0.02)
    out = run_reporting(f"URL = {receiver.traces_url!r}\nQUEUE = 2048\n" + FLUSH_UNDER_LOAD)
    assert out["busy"], "the export thread never exported under load"
    flushes = out["flushes"]
    assert [f["ok"] for f in flushes] == [True, True, True], flushes
    assert out["still_running"], "the producer must keep running through the flushes"
    for f in flushes:
        # True means every span ended before the call was handled.
        assert f["handled"] >= f["ended_before"], f
    assert out["last"] is True
    stats = out["stats"]
    assert_accounted(stats, stats["started"])
    assert stats["failed"] == 0 and stats["internal_errors"] == 0, stats


# ---------------------------------------------------------------------------------
# A panic loses only the batch in hand

B = 10

ONE_BAD_BATCH = """
gate = threading.Event()
receiver = Receiver().__enter__()

def hold_first(req):
    if len(receiver.trace_requests()) == 1:
        gate.wait(120)

receiver.on_request = hold_first
t = HoneyHiveTracer.init(otlp_endpoint=receiver.traces_url, batch_size=B,
                         flush_interval=600, export_timeout=120, project="p", source="s")
# A full batch wakes the export thread, which takes exactly it and is held (by the
# receiver) inside its export.
for i in range(B):
    t.start_span(f"first-{i}").end()
held = receiver.wait_for(lambda: len(receiver.requests) >= 1, timeout=60)
# Three batches queue up behind it; the next export panics.
_core._panic_for_test("export", 1)
for i in range(3 * B):
    t.start_span(f"next-{i}").end()
queued = t.stats()["queued"]
gate.set()
flushed = t.flush(timeout=60)
stats = t.stats()
names = [s["name"] for r in receiver.delivered() for s in flatten(r.trace_request)]
receiver.__exit__(None, None, None)
done(held=held, queued=queued, flushed=flushed, stats=stats, names=names, logs=logs())
"""


def test_a_panic_loses_only_the_batch_in_hand() -> None:
    """The export thread takes the whole queue at once; before the fix a panic on its
    first batch counted everything it had taken (up to the whole queue) as failed."""
    out = run_reporting(f"B = {B}\n" + ONE_BAD_BATCH)
    # Not yet handled: the batch held in flight and the three queued behind it.
    assert out["held"] and out["queued"] == 4 * B, out
    stats = out["stats"]
    assert out["flushed"] is True
    assert stats["failed"] == B, stats  # one batch, not the 3 * B taken with it
    assert stats["exported"] == 3 * B, stats
    assert stats["thread_restarts"] == 1 and stats["internal_errors"] == 1, stats
    assert_accounted(stats, 4 * B)
    assert stats["queued"] == 0 and stats["queued_bytes"] == 0, stats
    # The batch in hand is the oldest of the three; the others are delivered once each.
    expected = [f"first-{i}" for i in range(B)] + [f"next-{i}" for i in range(B, 3 * B)]
    assert sorted(out["names"]) == sorted(expected)
    warnings = messages(out["logs"], 30)
    assert any(f"restarted; {B} spans in hand counted as failed" in m for m in warnings), out[
        "logs"
    ]


# ---------------------------------------------------------------------------------
# Five failures in a row

FIVE_FAILURES = """
t = HoneyHiveTracer.init(otlp_endpoint=URL, export_timeout=5, flush_interval=0.05,
                         project="p", source="s")
_core._panic_for_test("export", 50)

def handled():
    s = t.stats()
    return s["failed"] + s["dropped"]

for i in range(N):
    base = handled()
    t.start_span(f"s{i}").end()
    wait_until(lambda: handled() > base)
done(stats=t.stats(), logs=logs())
"""


def test_the_export_thread_stops_after_five_failures_in_a_row(receiver: Receiver) -> None:
    n = 8
    out = run_reporting(f"URL = {receiver.traces_url!r}\nN = {n}\n" + FIVE_FAILURES)
    stats = out["stats"]
    # One span per batch: five batches fail (four restarts), then the thread stops.
    assert stats["failed"] == 5, stats
    assert stats["internal_errors"] == 5, stats
    assert stats["thread_restarts"] == 4, stats
    assert stats["dropped"] == stats["dropped_after_shutdown"] == n - 5, stats
    assert_accounted(stats, n)
    errors = messages(out["logs"], 40)
    assert any("failed 5 times in a row and stopped" in m for m in errors), out["logs"]
    assert receiver.spans() == []


# ---------------------------------------------------------------------------------
# A panicking REST call, a panicking exporter shutdown

REST_PANIC = """
_core._panic_for_test("rest", 1)
t = HoneyHiveTracer.init(api_key="k", server_url=URL, export_timeout=10,
                         project="p", source="s")
t.start_span("s").end()
flushed = t.flush(timeout=60)
stats = t.stats()
done(flushed=flushed, stats=stats, logs=logs())
"""


def test_a_panic_in_a_rest_call_is_counted_and_does_not_stall_flushes(
    receiver: Receiver,
) -> None:
    """Before the fix the panic restarted the thread and the job never counted as
    done, so this flush (and every later one) waited its whole timeout."""
    out = run_reporting(f"URL = {receiver.url!r}\n" + REST_PANIC)
    stats = out["stats"]
    assert out["flushed"] is True
    assert (stats["api_calls_failed"], stats["internal_errors"]) == (1, 1), stats
    assert stats["thread_restarts"] == 0, stats
    assert stats["exported"] == 1, stats
    assert [r.path for r in receiver.requests if r.path == "/session/start"] == []


SHUTDOWN_PANIC = """
t = HoneyHiveTracer.init(otlp_endpoint=URL, export_timeout=10, project="p", source="s")
t.start_span("s").end()
_core._panic_for_test("exporter-shutdown", 1)
clean = t.shutdown(timeout=30)
# The exporter's shutdown runs after the pipeline has finished (shutdown may return
# first): wait for its panic.
contained = wait_until(lambda: _core.internal_errors() >= 1)
stats = t.stats()
done(clean=clean, contained=contained, stats=stats, logs=logs())
"""


def test_a_panic_in_the_exporter_shutdown_does_not_restart_the_thread(
    receiver: Receiver,
) -> None:
    out = run_reporting(f"URL = {receiver.traces_url!r}\n" + SHUTDOWN_PANIC)
    stats = out["stats"]
    assert out["clean"] is True and out["contained"] is True
    assert stats["exported"] == 1 and stats["internal_errors"] == 1, stats
    assert stats["thread_restarts"] == 0, stats
    assert_accounted(stats, 1)
    warnings = messages(out["logs"], 30)
    assert not any("restarted" in m for m in warnings), out["logs"]
    assert [s["name"] for s in receiver.spans()] == ["s"]
