"""Spans decoded by a real OTLP/HTTP receiver; retries, failures, deadlines, HoneyHive cloud."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from conftest import spans_by_name
from honeytrace import HoneyHiveTracer
from otlp_receiver import Receiver, Reply

Make = Callable[..., HoneyHiveTracer]


def _hex(i: int, width: int) -> str:
    return format(i, f"0{width}x")


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_spans_reach_the_receiver_exactly(
    protocol: str, receiver: Receiver, make_tracer: Make
) -> None:
    t = make_tracer(
        otlp_endpoint=receiver.url,
        otlp_protocol=protocol,
        project="shop",
        source="prod",
        session_id="sess-1",
        service_name="checkout",
    )
    with t.start_as_current_span("parent", attributes={"k.int": 7, "k.list": ["a", "b"]}) as parent:
        with t.start_as_current_span("child", kind=trace.SpanKind.CLIENT) as child:
            child.set_attribute("k.float", 1.5)
            child.set_attribute("k.bool", True)
            child.add_event("tick", {"n": 1})
            child.set_status(trace.Status(trace.StatusCode.ERROR, "bad thing"))
    assert t.flush(10)
    spans = spans_by_name(receiver.wait_for_spans(2))
    pctx, cctx = parent.get_span_context(), child.get_span_context()

    p, c = spans["parent"], spans["child"]
    assert p["trace_id"] == c["trace_id"] == _hex(pctx.trace_id, 32)
    assert p["span_id"] == _hex(pctx.span_id, 16)
    assert c["span_id"] == _hex(cctx.span_id, 16)
    assert c["parent_span_id"] == p["span_id"]
    assert p["parent_span_id"] is None
    assert c["kind"] == PbSpan.SPAN_KIND_CLIENT
    assert p["attributes"]["k.int"] == 7
    assert p["attributes"]["k.list"] == ["a", "b"]
    assert c["attributes"]["k.float"] == 1.5
    assert c["attributes"]["k.bool"] is True
    assert c["events"] == [{"name": "tick", "attributes": {"n": 1}}]
    assert c["status"] == {"code": PbStatus.STATUS_CODE_ERROR, "message": "bad thing"}
    for s in (p, c):
        a = s["attributes"]
        assert a["honeyhive.session_id"] == a["session.id"] == "sess-1"
        assert a["traceloop.association.properties.session_id"] == "sess-1"
        assert a["honeyhive.project"] == "shop"
        assert a["honeyhive.source"] == "prod"
        assert a["honeyhive_event_type"] == "tool"
        assert s["resource"]["service.name"] == "checkout"
        assert s["resource"]["telemetry.sdk.name"] == "honeytrace"
        assert s["resource"]["telemetry.sdk.version"] == __import__("honeytrace").__version__
        assert s["resource"]["honeyhive.project"] == "shop"
        assert s["scope"] == "honeytrace"
    req = receiver.delivered()[0]
    assert "content-encoding" not in req.headers  # OTLP's default: no compression
    assert req.headers["user-agent"].startswith("honeytrace/")


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_gzip_when_asked(protocol: str, receiver: Receiver, make_tracer: Make) -> None:
    t = make_tracer(otlp_endpoint=receiver.url, otlp_compression="gzip", otlp_protocol=protocol)
    with t.start_as_current_span("zipped"):
        pass
    assert t.flush(10)
    (span,) = receiver.wait_for_spans(1)
    req = receiver.delivered()[0]
    assert req.headers["content-encoding"] == "gzip"
    assert req.raw_size < len(req.body)  # the receiver really had to inflate it
    assert span["name"] == "zipped"


def test_attributes_set_twice_are_exported_once(receiver: Receiver, make_tracer: Make) -> None:
    t = make_tracer(otlp_endpoint=receiver.url)
    with t.start_as_current_span("s") as s:
        s.set_attribute("x", 1)
        s.set_attribute("x", 2)
        s.set_attributes({"x": 3, "y": "z"})
    assert t.flush(10)
    span = receiver.wait_for_spans(1)[0]
    assert span["attribute_keys"].count("x") == 1
    assert span["attributes"]["x"] == 3


def test_503_then_200_delivers_every_span_exactly_once(
    receiver: Receiver, make_tracer: Make
) -> None:
    receiver.script = [Reply(503, {"Retry-After": "0"}), Reply(503), Reply(200)]
    t = make_tracer(otlp_endpoint=receiver.url, batch_size=50)
    ids = []
    for i in range(50):
        with t.start_as_current_span(f"s{i}") as s:
            ids.append(s.span_id_hex)
    assert t.flush(20)
    delivered = [s["span_id"] for s in receiver.spans()]
    assert sorted(delivered) == sorted(ids)  # each exactly once
    assert len(receiver.trace_requests()) == 3
    st = t.stats()
    assert st["retries"] == 2
    assert st["exported"] == 50
    assert st["failed"] == 0


def test_429_retry_after_is_honoured(receiver: Receiver, make_tracer: Make) -> None:
    receiver.script = [Reply(429, {"Retry-After": "1"})]
    t = make_tracer(otlp_endpoint=receiver.url)
    with t.start_as_current_span("s"):
        pass
    assert t.flush(20)
    first, second = receiver.trace_requests()[:2]
    assert second.received_at - first.received_at >= 0.9
    assert t.stats()["retries"] == 1
    assert len(receiver.spans()) == 1


def test_permanent_error_is_counted_and_logged(
    receiver: Receiver, make_tracer: Make, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.default_reply = Reply(400)
    t = make_tracer(otlp_endpoint=receiver.url)
    for i in range(3):
        with t.start_as_current_span(f"s{i}"):
            pass
    with caplog.at_level("WARNING", logger="honeytrace"):
        assert t.flush(10)
    st = t.stats()
    assert st["failed"] == 3
    assert st["failed_exports"] == 1
    assert st["retries"] == 0
    assert "HTTP 400" in (st["last_error"] or "")
    assert any("could not export 3 spans" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_a_partial_success_fails_only_the_rejected_spans(
    receiver: Receiver, make_tracer: Make, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [Reply(200, rejected=3, rejected_message="too old")]
    t = make_tracer(otlp_endpoint=receiver.url, otlp_protocol=protocol, flush_interval=60)
    for i in range(10):
        with t.start_as_current_span(f"s{i}"):
            pass
    with caplog.at_level("WARNING", logger="honeytrace"):
        assert t.flush(10)
    st = t.stats()
    assert (st["exported"], st["failed"], st["failed_exports"]) == (7, 3, 1), st
    assert st["ended"] == st["exported"] + st["failed"] + st["dropped"] + st["queued"]
    assert "collector rejected 3 of 10 spans: too old" in (st["last_error"] or "")
    # The next batch is accepted whole.
    with t.start_as_current_span("after"):
        pass
    assert t.flush(10)
    st = t.stats()
    assert (st["exported"], st["failed"]) == (8, 3), st


def test_a_rejected_count_larger_than_the_batch_is_clamped(
    receiver: Receiver, make_tracer: Make
) -> None:
    receiver.script = [Reply(200, rejected=1000)]
    t = make_tracer(otlp_endpoint=receiver.url, flush_interval=60)
    for i in range(4):
        with t.start_as_current_span(f"s{i}"):
            pass
    assert t.flush(10)
    st = t.stats()
    assert (st["exported"], st["failed"]) == (0, 4), st


def _tls_receiver(receiver: Receiver) -> str:
    """Serve the receiver over TLS with a certificate from a CA nobody trusts."""
    import ssl

    trustme = pytest.importorskip("trustme")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(ctx)
    receiver.use_tls(ctx)
    return receiver.url


@pytest.mark.parametrize("case", ["untrusted certificate", "no TLS at the port"])
def test_a_tls_failure_says_so_and_is_not_retried(
    receiver: Receiver, make_tracer: Make, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    if case == "untrusted certificate":
        url = _tls_receiver(receiver)
    else:
        url = "https://" + receiver.url.split("://", 1)[1]  # the receiver speaks plain HTTP
    t = make_tracer(otlp_endpoint=url, max_retries=5, export_timeout=10)
    with t.start_as_current_span("s"):
        pass
    with caplog.at_level("WARNING", logger="honeytrace"):
        assert t.flush(10)
    st = t.stats()
    assert (st["failed"], st["retries"], st["exported"]) == (1, 0, 0), st
    error = st["last_error"] or ""
    assert "TLS failed" in error and "not retried" in error, error
    if case == "untrusted certificate":
        assert "certificate" in error, error
    assert receiver.spans() == []


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_each_tracer_warns_of_its_own_failing_collector(
    make_tracer: Make, caplog: pytest.LogCaptureFixture
) -> None:
    # Rate limiting is per tracer: one failing collector does not silence another's.
    ports = [_dead_port(), _dead_port()]
    tracers = [
        make_tracer(otlp_endpoint=f"http://127.0.0.1:{p}", max_retries=0, export_timeout=1)
        for p in ports
    ]
    with caplog.at_level("WARNING", logger="honeytrace"):
        for _ in range(2):  # the second round is within the window: suppressed
            for t in tracers:
                with t.start_as_current_span("s"):
                    pass
                t.flush(5)
    warned = [r.getMessage() for r in caplog.records if "could not export" in r.getMessage()]
    for p in ports:
        assert sum(f":{p}/" in m for m in warned) == 1, warned


def test_dead_collector_never_raises_and_is_counted(make_tracer: Make) -> None:
    t = make_tracer(
        otlp_endpoint=f"http://127.0.0.1:{_dead_port()}", export_timeout=1.0, max_retries=2
    )
    for i in range(10):
        with t.start_as_current_span(f"s{i}"):
            pass
    t.flush(10)
    st = t.stats()
    assert st["failed"] == 10
    assert st["retries"] >= 1
    assert "connection" in (st["last_error"] or "").lower()
    assert st["ended"] == st["exported"] + st["failed"] + st["dropped"] + st["queued"]


def test_hung_collector_never_blocks_callers_and_shutdown_meets_its_deadline(
    receiver: Receiver,
) -> None:
    receiver.default_reply = Reply(200, delay=30)
    t = HoneyHiveTracer.init(otlp_endpoint=receiver.url, export_timeout=20, batch_size=10)
    done = threading.Event()

    def work() -> None:
        for i in range(500):
            with t.start_as_current_span(f"s{i}"):
                pass
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    # 500 spans while the collector hangs: the calls complete regardless.
    assert done.wait(20), "traced calls blocked on a hung collector"
    started = time.monotonic()
    assert t.shutdown(timeout=1.0) is False
    assert time.monotonic() - started < 8  # deadline 1 s; generous margin for a loaded CI box
    st = t.stats()
    assert st["ended"] == 500
    assert st["exported"] == 0
    # Every span is in a counter the moment shutdown returns: the abandoned request's
    # spans failed, the rest were dropped at the deadline (or, on a machine too loaded
    # for the export thread to let go within 0.1 s, are still `queued`).
    assert st["failed"] + st["dropped"] + st["queued"] == 500, st
    assert st["failed"] + st["dropped_at_shutdown"] + st["queued"] == 500, st


def test_queue_full_drops_are_counted(receiver: Receiver, make_tracer: Make) -> None:
    receiver.default_reply = Reply(200, delay=2)
    t = make_tracer(otlp_endpoint=receiver.url, max_queue_size=20, batch_size=10)
    for i in range(200):
        with t.start_as_current_span(f"s{i}"):
            pass
    st = t.stats()
    assert st["dropped_queue_full"] >= 150
    assert t.flush(30)
    st = t.stats()
    assert st["ended"] == 200
    assert st["ended"] == st["exported"] + st["failed"] + st["dropped"]
    assert len(receiver.spans()) == st["exported"]


def test_span_name_filters(receiver: Receiver, make_tracer: Make) -> None:
    t = make_tracer(
        otlp_endpoint=receiver.url,
        span_name_filters={"exclude": ["health", {"type": "suffix", "value": ".noise"}]},
    )
    for name in ["health check", "work", "db.noise"]:
        with t.start_as_current_span(name):
            pass
    assert t.flush(10)
    assert [s["name"] for s in receiver.spans()] == ["work"]
    assert t.stats()["filtered"] == 2


def test_honeyhive_cloud_mode_paths_headers_and_bodies(
    receiver: Receiver, make_tracer: Make
) -> None:
    sid = "9b7a6f1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    t = make_tracer(
        api_key="hh-key",
        server_url=receiver.url,
        project="agents",
        source="staging",
        session_id=sid.upper(),
        session_name="nightly",
        inputs={"query": "hi"},
    )
    assert t.session_id == sid  # lower-cased, like HoneyHive
    with t.start_as_current_span("step"):
        pass
    assert t.flush(10)
    receiver.wait_for_spans(1)
    paths = [r.path for r in receiver.requests]
    assert paths[0] == "/session/start"  # before any span export
    assert "/opentelemetry/v1/traces" in paths

    start = receiver.requests[0]
    assert start.method == "POST"
    assert start.headers["authorization"] == "Bearer hh-key"
    assert start.headers["content-type"] == "application/json"
    assert start.headers["hh-client-language"] == "python"
    assert start.headers["hh-client-package"] == "honeytrace"
    assert start.headers["hh-client-version"]
    assert start.headers["hh-client-timestamp"].isdigit()
    assert start.json_body == {
        "session": {
            "project": "agents",
            "session_name": "nightly",
            "source": "staging",
            "session_id": sid,
            "inputs": {"query": "hi"},
        }
    }

    otlp = next(r for r in receiver.requests if r.path == "/opentelemetry/v1/traces")
    assert otlp.headers["content-encoding"] == "gzip"  # over the internet: compressed
    assert otlp.headers["authorization"] == "Bearer hh-key"
    assert otlp.headers["x-source"] == "staging"
    assert otlp.headers["hh-client-package"] == "honeytrace"
    span = receiver.spans()[0]
    assert span["attributes"]["honeyhive.session_id"] == sid
    assert t.stats()["api_calls"] == 1
    assert t.stats()["api_calls_failed"] == 0


def test_cloud_init_never_waits_on_the_network(receiver: Receiver, make_tracer: Make) -> None:
    answered = threading.Event()
    receiver.default_reply = Reply(200, delay=3)
    receiver.on_request = lambda r: answered.set()
    t = make_tracer(api_key="k", server_url=receiver.url)
    assert not answered.is_set()  # init returned while /session/start is still hanging
    with t.start_as_current_span("s"):
        pass
    assert answered.wait(10)


def test_session_start_failure_is_counted_and_spans_still_flow(
    receiver: Receiver, make_tracer: Make
) -> None:
    receiver.default_reply = Reply(500)
    receiver.script = [Reply(200)]  # trace requests succeed
    t = make_tracer(api_key="k", server_url=receiver.url)
    with t.start_as_current_span("s"):
        pass
    assert t.flush(10)
    st = t.stats()
    assert st["api_calls_failed"] == 1
    assert st["exported"] == 1


def test_spans_are_exported_on_schedule_without_a_flush(
    receiver: Receiver, make_tracer: Make
) -> None:
    t = make_tracer(otlp_endpoint=receiver.url, flush_interval=0.2)
    with t.start_as_current_span("first"):
        pass
    assert receiver.wait_for_spans(1, timeout=10), "a partial batch must go out on its own"
    with t.start_as_current_span("second"):  # and again after the worker went idle
        pass
    assert len(receiver.wait_for_spans(2, timeout=10)) == 2
    # `queued` counts a batch until its answer is read, just after the receiver has it.
    assert receiver.wait_for(lambda: t.stats()["queued"] == 0, timeout=10), t.stats()


def test_requests_are_cut_by_batch_bytes(receiver: Receiver, make_tracer: Make) -> None:
    # Large captured values: a batch of 512 such spans would be a ~25 MB request, over
    # common collector limits. batch_bytes cuts it, and a full batch by bytes goes out
    # without waiting for flush_interval.
    limit = 200_000
    t = make_tracer(otlp_endpoint=receiver.url, batch_bytes=limit, flush_interval=60.0)

    @t.trace()
    def big(a: str) -> None:
        return None

    for _ in range(20):
        big("x" * 50_000)
    full_batches = receiver.wait_for_spans(16, timeout=10.0)  # no flush asked
    assert len(full_batches) >= 16
    t.flush(timeout=10.0)
    spans = receiver.wait_for_spans(20)
    assert len(spans) == 20
    requests = receiver.delivered()
    per_request = [
        sum(len(ss.spans) for rs in r.trace_request.resource_spans for ss in rs.scope_spans)
        for r in requests
        if r.trace_request is not None
    ]
    assert sum(per_request) == 20
    assert max(per_request) <= limit // 50_000, per_request
    assert max(len(r.body) for r in requests) <= limit, [len(r.body) for r in requests]
    assert t.stats()["exported"] == 20


def test_a_span_larger_than_batch_bytes_goes_alone(receiver: Receiver, make_tracer: Make) -> None:
    t = make_tracer(otlp_endpoint=receiver.url, batch_bytes=1024)

    @t.trace()
    def big(a: str) -> None:
        return None

    for _ in range(3):
        big("y" * 5_000)
    t.flush(timeout=10.0)
    assert len(receiver.wait_for_spans(3)) == 3
    assert len(receiver.delivered()) == 3  # one request each, none refused
    assert t.stats()["exported"] == 3
    assert t.stats()["dropped"] == 0


def test_an_exporter_list_sends_everywhere(
    receiver: Receiver,
    make_tracer: Make,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``exporter="otlp,file"`` and ``OTEL_TRACES_EXPORTER=console,otlp``: the collector
    gets every span, and the file and the console a copy; what a span counts as is the
    OTLP outcome."""
    path = tmp_path / "copy.jsonl"
    t = make_tracer(
        otlp_endpoint=receiver.url, exporter="otlp,file", file_path=str(path), project="p"
    )
    assert t.mode == "otlp" and str(path) in t.destination
    for i in range(3):
        with t.start_as_current_span(f"span-{i}"):
            pass
    assert t.flush(10)
    got = {s["name"] for s in receiver.wait_for_spans(3)}
    assert got == {"span-0", "span-1", "span-2"}
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    in_file = {
        s["name"]
        for ln in lines
        for rs in ln["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    }
    assert in_file == got
    st = t.stats()
    assert st["exported"] == 3 and st["copies_failed"] == 0
    t.shutdown()

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_url)
    u = make_tracer(project="p")
    assert u.mode == "otlp" and "console" in u.destination
    with u.start_as_current_span("to-both"):
        pass
    assert u.flush(10)
    assert "to-both" in {s["name"] for s in receiver.wait_for_spans(4)}
    u.shutdown()
    assert "to-both" in capfd.readouterr().err


@pytest.mark.parametrize("exporter", ["memory,console", "none,file", "otlp,bogus", ""])
def test_an_exporter_list_that_cannot_work_is_a_configuration_error(
    make_tracer: Make, exporter: str
) -> None:
    with pytest.raises(ValueError, match="exporter"):
        make_tracer(project="p", exporter=exporter, otlp_endpoint="http://127.0.0.1:9")
