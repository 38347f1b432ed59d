"""The accounting identity holds whatever the collector does: every span ended is
exported, failed, dropped or still queued, and a flush or a shutdown stays within its
deadline. Each fault is served by the test receiver on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import assert_accounted, free_port
from honeytrace import HoneyHiveTracer
from otlp_receiver import Receiver, Reply

Make = Callable[..., HoneyHiveTracer]
SPANS = 40


def identity(st: dict[str, Any]) -> None:
    assert st["started"] == st["ended"] == SPANS, st
    assert_accounted(st)


def end_spans(t: HoneyHiveTracer) -> None:
    for i in range(SPANS):
        with t.start_as_current_span(f"s{i}"):
            pass


FAULTS = {
    # fault: (script of replies, then the default reply)
    "503 forever": ([], Reply(503)),
    "hang": ([], Reply(200, delay=5)),
    "slow-loris": ([], Reply(200, slow=0.2)),
    "connection reset": ([], Reply(200, reset=True)),
    "429 then accepted": ([Reply(429, headers={"Retry-After": "1"})], Reply(200)),
    "partial success": ([Reply(200, rejected=7, rejected_message="bad")], Reply(200)),
}


@pytest.mark.parametrize("spool", [False, True], ids=["no spool", "spool"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_identity_holds_under_a_collector_fault(
    make_tracer: Make, fault: str, spool: bool, tmp_path: Path
) -> None:
    script, default = FAULTS[fault]
    with Receiver() as receiver:
        receiver.script = list(script)
        receiver.default_reply = default
        t = make_tracer(
            otlp_endpoint=receiver.url,
            export_timeout=2,
            max_retries=2,
            flush_interval=60,
            spool=spool,
            spool_dir=str(tmp_path),
        )
        end_spans(t)
        started = time.monotonic()
        flushed = t.flush(10)
        took = time.monotonic() - started
        st = t.stats()
        identity(st)
        assert took < 10 + 5, took  # within the flush deadline, whatever the collector does
        if fault in ("503 forever", "hang", "slow-loris", "connection reset") and spool:
            # Kept on disk for later, not lost.
            assert (st["exported"], st["failed"], st["spooled"]) == (0, 0, SPANS), st
            assert st["last_error"], st
            assert any(tmp_path.rglob("*.pb")), list(tmp_path.rglob("*"))
        elif fault in ("503 forever", "hang", "slow-loris", "connection reset"):
            assert (st["exported"], st["failed"]) == (0, SPANS), st
            assert st["failed_exports"] >= 1 and st["last_error"], st
        elif fault == "429 then accepted":
            assert flushed is True
            assert (st["exported"], st["failed"], st["retries"]) == (SPANS, 0, 1), st
            assert len(receiver.spans()) == SPANS
        else:
            assert flushed is True
            assert (st["exported"], st["failed"]) == (SPANS - 7, 7), st
        t.shutdown(timeout=5)
        identity(t.stats())
        assert t.stats()["queued"] == 0


def test_a_collector_down_then_back_gets_the_later_spans(make_tracer: Make) -> None:
    port = free_port()
    t = make_tracer(
        otlp_endpoint=f"http://127.0.0.1:{port}", export_timeout=1, max_retries=1, flush_interval=60
    )
    end_spans(t)  # the collector is down
    t.flush(5)
    down = t.stats()
    identity(down)
    assert (down["exported"], down["failed"]) == (0, SPANS), down
    with Receiver(port=port) as receiver:  # back, on the same port
        for i in range(SPANS):
            with t.start_as_current_span(f"later{i}"):
                pass
        assert t.flush(10) is True
        st = t.stats()
        assert st["ended"] == 2 * SPANS
        assert (st["exported"], st["failed"]) == (SPANS, SPANS), st
        assert sorted(s["name"] for s in receiver.spans()) == sorted(
            f"later{i}" for i in range(SPANS)
        )


def test_spans_of_an_unsampled_trace_count_as_sampled_out(make_tracer: Make) -> None:
    """A caller that did not sample its trace (traceparent flags 00): our spans under it
    record nothing, and are counted, so the identity holds with them."""
    from honeytrace import with_distributed_trace_context

    with Receiver() as receiver:
        t = make_tracer(otlp_endpoint=receiver.url)
        unsampled = {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"}
        with with_distributed_trace_context(unsampled, t):
            with t.start_as_current_span("parent") as parent:
                assert not parent.is_recording()
                with t.start_as_current_span("child"):
                    pass
        with t.start_as_current_span("sampled"):
            pass
        assert t.shutdown(timeout=5) is True
        st = t.stats()
        names = [s["name"] for s in receiver.spans()]
    assert (st["started"], st["ended"], st["sampled_out"], st["exported"]) == (3, 3, 2, 1), st
    assert_accounted(st)
    assert names == ["sampled"]


@pytest.mark.parametrize("spool", [False, True], ids=["no spool", "spool"])
def test_a_hung_collector_at_the_default_export_timeout_is_counted_at_shutdown(
    make_tracer: Make, spool: bool, tmp_path: Path
) -> None:
    """export_timeout (10 s by default) is longer than shutdown_timeout: the request in
    flight when the shutdown begins still ends by its deadline (one attempt lasts at
    most shutdown_timeout), so after shutdown() nothing is left uncounted in `queued`;
    with the spool, every span is kept."""
    with Receiver() as receiver:
        receiver.default_reply = Reply(200, delay=30)
        t = make_tracer(
            otlp_endpoint=receiver.url,
            shutdown_timeout=2,
            flush_interval=0.05,
            spool=spool,
            spool_dir=str(tmp_path),
        )
        end_spans(t)
        time.sleep(0.3)  # the batch is in flight
        started = time.monotonic()
        clean = t.shutdown()
        took = time.monotonic() - started
        st = t.stats()
    identity(st)
    assert took < 2 + 1, took
    assert st["queued"] == 0, st
    if spool:
        assert (st["spooled"], st["failed"], st["dropped"]) == (SPANS, 0, 0), st
        assert clean is True
    else:
        assert st["failed"] + st["dropped_at_shutdown"] == SPANS, st
