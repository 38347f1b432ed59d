"""enrich_span, enrich_session and enrich_span_context."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

import pytest
from opentelemetry import baggage, context, trace

from conftest import spans_by_name
from honeytrace import (
    HoneyHiveTracer,
    enrich_session,
    enrich_span,
    enrich_span_context,
)
from honeytrace import (
    trace as ht_trace,
)
from otlp_receiver import Receiver

Make = Callable[..., HoneyHiveTracer]


def test_enrich_span_flattens_like_honeyhive(memory_tracer: HoneyHiveTracer) -> None:
    with memory_tracer.start_as_current_span("s"):
        ok = enrich_span(
            metadata={"nested": {"b": [1, {"c": None, "d": 2}]}, "skip": None},
            metrics={"latency": 1.5},
            feedback={"thumbs": "up"},
            inputs={"q": "hi"},
            outputs={"a": ["x"]},
            config={"model": "m"},
            user_properties={"tier": "pro"},
            error="partial failure",
            attributes={"from_attributes": 1},
            custom_kw="goes to metadata",
        )
    assert ok is True
    a = memory_tracer.finished_spans()[0]["attributes"]
    assert a["honeyhive_metadata.nested.b.0"] == 1
    assert a["honeyhive_metadata.nested.b.1.d"] == 2
    assert "honeyhive_metadata.nested.b.1.c" not in a and "honeyhive_metadata.skip" not in a
    assert a["honeyhive_metrics.latency"] == 1.5
    assert a["honeyhive_feedback.thumbs"] == "up"
    assert a["honeyhive_inputs.q"] == "hi"
    assert a["honeyhive_outputs.a.0"] == "x"
    assert a["honeyhive_config.model"] == "m"
    assert a["honeyhive_user_properties.tier"] == "pro"
    assert a["honeyhive_error"] == "partial failure"
    assert a["honeyhive_metadata.from_attributes"] == 1
    assert a["honeyhive_metadata.custom_kw"] == "goes to metadata"


def test_enrich_span_without_a_span_returns_false(memory_tracer: HoneyHiveTracer) -> None:
    assert enrich_span(metadata={"x": 1}) is False
    span = memory_tracer.start_span("ended")
    span.end()
    with trace.use_span(span):
        assert enrich_span(metadata={"x": 1}) is False


def test_enrich_span_on_a_python_sdk_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("peer").start_as_current_span("sdk-span"):
        assert enrich_span(metadata={"k": {"v": 1}}) is True
    (s,) = exporter.get_finished_spans()
    assert s.attributes is not None and s.attributes["honeyhive_metadata.k.v"] == 1


def test_enrich_span_is_thread_safe(memory_tracer: HoneyHiveTracer) -> None:
    def worker(i: int) -> None:
        with memory_tracer.start_as_current_span(f"w{i}"):
            for j in range(50):
                assert enrich_span(metrics={f"m{j}": i}) is True

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    spans = memory_tracer.finished_spans()
    assert sorted(s["name"] for s in spans) == [f"w{i}" for i in range(8)]
    for s in spans:
        i = int(s["name"][1:])
        metrics = {k: v for k, v in s["attributes"].items() if k.startswith("honeyhive_metrics.")}
        assert len(metrics) == 50 and set(metrics.values()) == {i}


def test_enrich_span_context_makes_its_span_current(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    def parent() -> None:
        with enrich_span_context(
            "step", inputs={"q": "hi"}, metadata={"kind": "loop"}, attributes={"raw.key": 1}
        ) as span:
            assert trace.get_current_span() is span
            enrich_span(outputs={"answer": 42})  # lands on "step", not on parent
        enrich_span(metadata={"after": True})  # back on the parent

    parent()
    spans = spans_by_name(memory_tracer.finished_spans())
    step, par = spans["step"]["attributes"], spans[f"{__name__}.parent"]["attributes"]
    assert step["honeyhive_outputs.answer"] == 42
    assert step["honeyhive_inputs.q"] == "hi"
    assert step["honeyhive_metadata.kind"] == "loop"
    assert step["raw.key"] == 1
    assert "honeyhive_outputs.answer" not in par
    assert par["honeyhive_metadata.after"] is True
    assert spans["step"]["parent_span_id"] == spans[f"{__name__}.parent"]["span_id"]


def test_enrich_span_context_explicit_session_beats_baggage(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, project="tracer-p")
    token = context.attach(baggage.set_baggage("session_id", "from-baggage"))
    try:
        with enrich_span_context("explicit", session_id="mine", project="my-p", source="my-s"):
            with t.start_as_current_span("child"):
                assert baggage.get_baggage("session_id") == "mine"
    finally:
        context.detach(token)
    spans = t.finished_spans()
    assert sorted(s["name"] for s in spans) == ["child", "explicit"]
    for s in spans:
        a = s["attributes"]
        assert (a["honeyhive.session_id"], a["honeyhive.project"], a["honeyhive.source"]) == (
            "mine",
            "my-p",
            "my-s",
        )
        assert a["session.id"] == "mine"


def test_enrich_span_context_records_and_reraises(memory_tracer: HoneyHiveTracer) -> None:
    err = LookupError("nope")
    with pytest.raises(LookupError) as info, enrich_span_context("failing"):
        raise err
    assert info.value is err
    (s,) = memory_tracer.finished_spans()
    assert s["status"] == {"code": "ERROR", "description": "LookupError: nope"}
    assert [e["name"] for e in s["events"]] == ["exception"]


def test_enrich_span_context_async_with(memory_tracer: HoneyHiveTracer) -> None:
    async def main() -> None:
        async with enrich_span_context("async-step", metadata={"a": 1}) as span:
            await asyncio.sleep(0)
            assert trace.get_current_span() is span
            enrich_span(metrics={"m": 2})

    asyncio.run(main())
    a = memory_tracer.finished_spans()[0]["attributes"]
    assert (a["honeyhive_metadata.a"], a["honeyhive_metrics.m"]) == (1, 2)


def test_enrich_span_context_with_an_explicit_tracer(make_tracer: Make) -> None:
    t1 = make_tracer(test_mode=True)
    t2 = make_tracer(test_mode=True)
    with enrich_span_context("on-t2", tracer=t2):
        pass
    assert t1.finished_spans() == []
    assert [s["name"] for s in t2.finished_spans()] == ["on-t2"]


def test_enrich_session_in_cloud_mode_puts_events(receiver: Receiver, make_tracer: Make) -> None:
    sid = "0b7a6f1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    t = make_tracer(api_key="k", server_url=receiver.url, session_id=sid)
    assert enrich_session(
        metadata={"user": "ann"}, inputs={"q": "hi"}, feedback={"rating": 5}, extra="kw"
    )
    other = "1b7a6f1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    token = context.attach(baggage.set_baggage("session_id", other))
    try:
        assert t.enrich_session(outputs={"final": "answer"})  # baggage beats the tracer
    finally:
        context.detach(token)
    assert t.flush(10)
    puts = [r for r in receiver.requests if r.path == "/events"]
    assert [r.method for r in puts] == ["PUT", "PUT"]
    assert puts[0].headers["authorization"] == "Bearer k"
    assert puts[0].json_body == {
        "event_id": sid,
        "metadata": {"user": "ann", "extra": "kw", "inputs": {"q": "hi"}},
        "feedback": {"rating": 5},
    }
    assert puts[1].json_body == {"event_id": other, "outputs": {"final": "answer"}}


def test_enrich_session_elsewhere_is_recorded_in_the_exported_data(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, session_id="local-session")
    assert enrich_session(metadata={"a": 1}, metrics={"score": 0.9})
    assert enrich_session("explicit-session", feedback={"ok": True})
    first, second = t.finished_spans()
    assert first["name"] == "honeyhive.enrich_session"
    assert first["attributes"]["honeyhive.session_id"] == "local-session"
    assert first["attributes"]["honeyhive_metadata.a"] == 1
    assert first["attributes"]["honeyhive_metrics.score"] == 0.9
    assert second["attributes"]["honeyhive.session_id"] == "explicit-session"
    assert second["attributes"]["honeyhive_feedback.ok"] is True


def test_enrich_span_with_event_id(receiver: Receiver, make_tracer: Make) -> None:
    t = make_tracer(api_key="k", server_url=receiver.url)
    assert enrich_span(event_id="evt-1", metrics={"m": 1})
    assert t.flush(10)
    put = next(r for r in receiver.requests if r.path == "/events")
    assert put.json_body == {"event_id": "evt-1", "metrics": {"m": 1}}
    local = HoneyHiveTracer.init(test_mode=True)
    try:
        assert local.enrich_span(event_id="evt-2", metadata={"x": 1})
        (s,) = local.finished_spans()
        assert s["name"] == "honeyhive.event_update"
        assert s["attributes"]["honeyhive_event_id"] == "evt-2"
    finally:
        local.shutdown()


def test_enrich_without_any_tracer_is_harmless() -> None:
    from conftest import run_python

    out = run_python(
        """
        from honeytrace import enrich_span, enrich_session, enrich_span_context
        print(enrich_span(metadata={"a": 1}), enrich_session(metadata={"a": 1}))
        with enrich_span_context("x") as s:
            print(s.is_recording())
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]
