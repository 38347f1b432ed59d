"""honeytrace spans and providers as the OpenTelemetry SDK's: the read half of a span,
SDK span processors, instrumentation suppression, the session a framework's
``session.id`` cannot split, and attribute limits per distinct key. The SDK itself is
the peer: its processors and exporters consume honeytrace spans."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
import requests
from opentelemetry import baggage, context, trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import spans_by_name
from honeytrace import HoneyHiveTracer
from honeytrace import trace as ht_trace
from otlp_receiver import Receiver

Make = Callable[..., HoneyHiveTracer]

PB_KIND = {
    SpanKind.INTERNAL: PbSpan.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PbSpan.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PbSpan.SPAN_KIND_CLIENT,
}
PB_STATUS = {
    StatusCode.UNSET: PbStatus.STATUS_CODE_UNSET,
    StatusCode.OK: PbStatus.STATUS_CODE_OK,
    StatusCode.ERROR: PbStatus.STATUS_CODE_ERROR,
}


def test_a_recording_span_reads_as_the_sdk_span(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    with t.start_as_current_span("outer", kind=SpanKind.SERVER, attributes={"a": 1}) as outer:
        outer.set_attribute("a", 2)  # the last value is the one read
        with trace.get_tracer("my.lib", "1.2").start_as_current_span("inner") as inner:
            inner.add_event("tick", {"n": 1}, timestamp=123)
            inner.add_link(outer.get_span_context(), {"why": "test"})
            assert inner.name == "inner"
            assert inner.kind is SpanKind.INTERNAL
            assert inner.parent == outer.get_span_context()
            assert inner.context == inner.get_span_context()
            assert inner.end_time is None and inner.start_time > 0
            (ev,) = inner.events
            assert isinstance(ev, Event) and (ev.name, ev.timestamp) == ("tick", 123)
            assert dict(ev.attributes) == {"n": 1}
            (link,) = inner.links
            assert link.context == outer.get_span_context()
            assert dict(link.attributes) == {"why": "test"}
            scope = inner.instrumentation_scope
            assert (scope.name, scope.version) == ("my.lib", "1.2")
            assert inner.instrumentation_info == scope
        assert outer.kind is SpanKind.SERVER
        assert outer.attributes["a"] == 2
        assert outer.attributes["honeyhive.session_id"] == t.session_id
        with pytest.raises(TypeError):
            outer.attributes["a"] = 3  # type: ignore[index]
        assert outer.parent is None
        assert outer.status.status_code is StatusCode.UNSET
        assert isinstance(outer.resource, Resource)
        assert outer.resource.attributes["service.name"] == "test-project"
    # after the end: the values as exported (stamps applied), the end time set
    assert outer.end_time is not None and outer.end_time >= outer.start_time
    assert outer.attributes["session.id"] == t.session_id
    assert outer.dropped_attributes == 0 and outer.dropped_events == 0
    doc = json.loads(outer.to_json())
    assert doc["name"] == "outer" and doc["kind"] == "SpanKind.SERVER"
    assert doc["attributes"]["a"] == 2


def test_sdk_processor_sees_what_is_exported_over_otlp(
    receiver: Receiver, make_tracer: Make
) -> None:
    """An SDK ``SimpleSpanProcessor(InMemorySpanExporter())`` added to honeytrace's
    provider receives complete spans equal to what honeytrace exports over OTLP."""
    t = make_tracer(otlp_endpoint=receiver.url, project="shop", session_id="sess-1")
    memory = InMemorySpanExporter()
    started: list[str] = []

    class Starts(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            assert span.is_recording()
            started.append(span.name)

    t.provider.add_span_processor(Starts(memory))

    @ht_trace(tracer=t)
    def step(x: int) -> int:
        return x * 2

    with t.start_as_current_span("parent", attributes={"k.list": ["a", "b"]}) as parent:
        with trace.get_tracer("lib").start_as_current_span("child", kind=SpanKind.CLIENT) as c:
            c.set_attribute("k.float", 1.5)
            c.add_event("tick", {"n": 1})
            c.set_status(Status(StatusCode.ERROR, "bad thing"))
        assert step(21) == 42
        parent.set_status(Status(StatusCode.OK))
    assert t.flush(10)
    assert sorted(started) == ["child", "parent", "test_otel_sdk_surface.step"]
    exported = spans_by_name(receiver.wait_for_spans(3))
    got = {s.name: s for s in memory.get_finished_spans()}
    assert set(got) == set(exported)
    for name, r in got.items():
        assert isinstance(r, ReadableSpan)
        e = exported[name]
        assert f"{r.context.trace_id:032x}" == e["trace_id"]
        assert f"{r.context.span_id:016x}" == e["span_id"]
        parent_id = None if r.parent is None else f"{r.parent.span_id:016x}"
        assert parent_id == e["parent_span_id"]
        assert PB_KIND[r.kind] == e["kind"]
        assert dict(r.attributes) == e["attributes"], name
        assert [(ev.name, dict(ev.attributes)) for ev in r.events] == [
            (ev["name"], ev["attributes"]) for ev in e["events"]
        ]
        assert PB_STATUS[r.status.status_code] == e["status"]["code"]
        assert (r.status.description or "") == e["status"]["message"]
        assert r.start_time == e["start"] and r.end_time == e["end"]
        assert r.resource.attributes["service.name"] == e["resource"]["service.name"]
        assert r.instrumentation_scope.name == e["scope"]
    assert got["test_otel_sdk_surface.step"].attributes["honeyhive_outputs.result"] == 42


def test_global_provider_processor_and_a_failing_processor(make_tracer: Make) -> None:
    """A processor added to the global provider sees every tracer's spans; one that
    raises is counted and does not break the application or the export."""
    a = make_tracer(project="a", test_mode=True)
    b = make_tracer(project="b", test_mode=True)
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()

    class Broken:
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("on_start broke")

        def on_end(self, span: Any) -> None:
            raise RuntimeError("on_end broke")

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider.add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    b.provider.add_span_processor(Broken())
    try:
        before = b.stats()["processor_errors"]
        with a.start_as_current_span("in-a"):
            pass
        with b.start_as_current_span("in-b"):
            pass
        assert provider.force_flush()  # type: ignore[attr-defined]
        assert b.stats()["processor_errors"] == before + 2
        assert sorted(s.name for s in memory.get_finished_spans()) == ["in-a", "in-b"]
        assert [s["name"] for s in b.finished_spans()] == ["in-b"]  # exported anyway
    finally:
        from honeytrace import _core

        _core._span_processors(None, remove=True)
        _core._span_processors(b._core, remove=True)


def test_suppress_instrumentation_is_honoured(make_tracer: Make) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    t = make_tracer(project="p", test_mode=True)
    with t.start_as_current_span("root") as root:
        with suppress_instrumentation():
            span = trace.get_tracer("sdk.exporter").start_span("export")
            assert not span.is_recording()
            # children and outgoing headers still continue the root
            assert span.get_span_context().trace_id == root.get_span_context().trace_id
            span.end()
    assert [s["name"] for s in t.finished_spans()] == ["root"]


def test_a_frameworks_session_id_never_splits_the_callers_session(make_tracer: Make) -> None:
    """Precedence: explicit honeytrace argument > caller's baggage > a ``session.id``
    set by other code (OpenInference, Google ADK) > the tracer's session."""
    t = make_tracer(project="p", test_mode=True)
    lib = trace.get_tracer("adk")
    caller = context.attach(baggage.set_baggage("session_id", "caller-session"))
    try:
        with lib.start_as_current_span("a", attributes={"session.id": "adk-1"}) as a:
            a.set_attribute("session.id", "adk-2")
            with lib.start_as_current_span("b") as b:
                b.set_attributes({"session.id": "adk-3"})
    finally:
        context.detach(caller)
    with lib.start_as_current_span("c", attributes={"session.id": "adk-4"}):
        pass
    with lib.start_as_current_span("d") as d:
        d.set_attribute("session.id", "adk-5")
    spans = spans_by_name(t.finished_spans())
    for name, session, framework in [
        ("a", "caller-session", "adk-2"),
        ("b", "caller-session", "adk-3"),
        ("c", "adk-4", None),
        ("d", "adk-5", None),
    ]:
        attrs = spans[name]["attributes"]
        assert attrs["honeyhive.session_id"] == session, name
        assert attrs["session.id"] == session, name
        assert attrs["traceloop.association.properties.session_id"] == session, name
        assert attrs.get("honeyhive_metadata.framework_session_id") == framework, name


def test_attribute_limits_count_distinct_keys(make_tracer: Make) -> None:
    t = make_tracer(project="p", test_mode=True, max_attributes=8)
    with t.start_as_current_span("s") as s:
        for i in range(100):
            s.set_attribute("same", i)
        for i in range(20):
            s.set_attribute(f"k{i}", i)
        s.set_attribute("same", "last")
        assert s.dropped_attributes == 16
    (out,) = t.finished_spans()
    a = out["attributes"]
    assert a["same"] == "last"
    # 3 stamps + "same" + 4 distinct k* fit in 8; the other 16 are dropped and counted
    assert [k for k in a if k.startswith("k")] == ["k0", "k1", "k2", "k3"]
    assert s.dropped_attributes == 16  # kept: it was read while it recorded


def test_instrument_http_steps_aside_for_the_contrib_instrumentor(
    make_tracer: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """One CLIENT span per request when both are on, and a note saying so once."""
    pytest.importorskip("opentelemetry.instrumentation.requests")
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    from honeytrace import _log
    from honeytrace.integrations import uninstrument_http
    from test_otel_contrib import header_echo

    t = make_tracer(project="p", test_mode=True)
    # honeytrace's wrapper outermost: it must notice the instrumentor below it
    RequestsInstrumentor().instrument(tracer_provider=t.provider)
    from honeytrace.integrations import instrument_http

    instrument_http()
    try:
        with caplog.at_level("INFO", logger="honeytrace"), header_echo() as (url, seen):
            for _ in range(2):
                with t.start_as_current_span("call"):
                    assert requests.get(url, timeout=10).text == "ok"
            _log.drain()
    finally:
        uninstrument_http()
        RequestsInstrumentor().uninstrument()
    t.flush()
    clients = [s for s in t.finished_spans() if s["kind"] == "CLIENT"]
    assert [s["scope"]["name"] for s in clients] == ["opentelemetry.instrumentation.requests"] * 2
    notes = [r.getMessage() for r in caplog.records if "leaves requests" in r.getMessage()]
    assert len(notes) == 1, notes
    assert all("traceparent" in h for h in seen)


def test_openinference_attributes_for_phoenix_and_mlflow(
    receiver: Receiver, make_tracer: Make
) -> None:
    """Alongside HoneyHive's attributes: OpenInference's span kind, inputs, outputs and
    user, on the wire to an OTLP collector; kept where an instrumentation set them."""
    from honeytrace import enrich_span

    t = make_tracer(otlp_endpoint=receiver.url, project="p")

    @ht_trace(tracer=t, event_type="model")
    def complete(prompt: str, options: dict[str, Any], n: int = 1) -> dict[str, Any]:
        enrich_span(user_properties={"user_id": "u-7"})
        return {"text": prompt.upper()}

    @ht_trace(tracer=t, event_type="chain")
    def agent(q: str) -> str:
        complete(q, {"temperature": 0.2})
        return "done"

    @ht_trace(tracer=t)
    def tool() -> None:
        pass

    agent("hi")
    tool()
    lib = trace.get_tracer("openinference.instrumentation.x")
    with lib.start_as_current_span(
        "retrieve", attributes={"openinference.span.kind": "RETRIEVER", "input.value": "q"}
    ):
        pass
    assert t.flush(10)
    spans = spans_by_name(receiver.wait_for_spans(4))
    c = spans["test_otel_sdk_surface.complete"]["attributes"]
    assert c["openinference.span.kind"] == "LLM"
    assert json.loads(c["input.value"]) == {
        "prompt": "hi",
        "options": {"temperature": 0.2},
        "n": 1,
    }
    assert list(json.loads(c["input.value"])) == ["prompt", "options", "n"]  # argument order
    assert c["input.mime_type"] == "application/json"
    assert json.loads(c["output.value"]) == {"text": "HI"}
    assert c["output.mime_type"] == "application/json"
    assert c["user.id"] == "u-7"
    a = spans["test_otel_sdk_surface.agent"]["attributes"]
    assert a["openinference.span.kind"] == "CHAIN"
    assert (a["output.value"], a["output.mime_type"]) == ("done", "text/plain")
    assert spans["test_otel_sdk_surface.tool"]["attributes"]["openinference.span.kind"] == "TOOL"
    r = spans["retrieve"]["attributes"]
    assert (r["openinference.span.kind"], r["input.value"]) == ("RETRIEVER", "q")
    assert r["honeyhive_event_type"] == "tool"


@pytest.mark.parametrize("how", ["keyword", "cloud"])
def test_openinference_attributes_can_be_turned_off(
    receiver: Receiver, make_tracer: Make, how: str
) -> None:
    """``openinference=False``, and HoneyHive cloud by default (HoneyHive reads its own
    attributes: the copies would double what is sent)."""
    if how == "keyword":
        t = make_tracer(otlp_endpoint=receiver.url, project="p", openinference=False)
    else:
        t = make_tracer(api_key="k", server_url=receiver.url, project="p")

    @ht_trace(tracer=t)
    def f(x: int) -> int:
        return x

    f(1)
    assert t.flush(10)
    (s,) = receiver.wait_for_spans(1)
    assert s["attributes"]["honeyhive_inputs.x"] == 1
    assert not [k for k in s["attributes"] if k.startswith(("input.", "output.", "openinf"))]
