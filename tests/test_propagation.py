"""inject / extract / with_distributed_trace_context: HoneyHive 1.7's documented cases,
the trust policy, validation, signed sessions, and property tests of the parsers."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, context, propagate, trace

import honeytrace
from honeytrace import (
    HoneyHiveTracer,
    extract_context_from_carrier,
    inject_context_into_carrier,
    with_distributed_trace_context,
)
from honeytrace import (
    trace as ht_trace,
)
from otlp_receiver import Receiver

Make = Callable[..., HoneyHiveTracer]
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


# -- with_distributed_trace_context (HoneyHive 1.7's documented cases) ------------------------------------


def test_session_from_baggage(memory_tracer: HoneyHiveTracer) -> None:
    with with_distributed_trace_context({"baggage": "session_id=S"}, memory_tracer):
        assert baggage.get_baggage("session_id") == "S"


@pytest.mark.parametrize(
    "header",
    [
        "session_id=S,project=P,source=Q",
        "honeyhive_session_id=S,honeyhive_project=P,honeyhive_source=Q",
        "honeyhive.session_id=S,honeyhive.project=P,honeyhive.source=Q",
    ],
)
def test_key_variants_become_canonical(memory_tracer: HoneyHiveTracer, header: str) -> None:
    with with_distributed_trace_context({"baggage": header}, memory_tracer):
        assert baggage.get_all() == {"session_id": "S", "project": "P", "source": "Q"}


def test_explicit_session_wins(memory_tracer: HoneyHiveTracer) -> None:
    with with_distributed_trace_context({"baggage": "session_id=A"}, memory_tracer, session_id="B"):
        assert baggage.get_baggage("session_id") == "B"


def test_context_is_restored_on_exit_and_on_exceptions(memory_tracer: HoneyHiveTracer) -> None:
    before = context.get_current()
    with with_distributed_trace_context({"traceparent": TP, "baggage": "session_id=S"}):
        assert context.get_current() != before
    assert context.get_current() == before
    with pytest.raises(ValueError), with_distributed_trace_context({"baggage": "session_id=S"}):
        raise ValueError("boom")
    assert context.get_current() == before


@pytest.mark.parametrize(
    "carrier", [{}, None, "garbage", 42, [("x", "y")], {"traceparent": "nope"}]
)
def test_empty_or_garbage_carrier_gives_the_current_context(
    memory_tracer: HoneyHiveTracer, carrier: Any
) -> None:
    with memory_tracer.start_as_current_span("outer") as outer:
        before = context.get_current()
        with with_distributed_trace_context(carrier, memory_tracer) as ctx:
            assert ctx is not None
            assert trace.get_current_span() is outer
            assert baggage.get_all(ctx) == baggage.get_all(before)


@pytest.mark.parametrize(
    "transform",
    [str.lower, str.title, str.upper, lambda k: "HTTP_" + k.upper()],
    ids=["lower", "Title", "UPPER", "wsgi-environ"],
)
def test_client_inject_to_server_in_any_header_case(make_tracer: Make, transform: Any) -> None:
    client = make_tracer(test_mode=True, project="client-p", source="client")
    server = make_tracer(test_mode=True, project="server-p", source="server")

    @ht_trace(tracer=client)
    def call() -> dict[str, str]:
        return inject_context_into_carrier({})

    headers = {transform(k): v for k, v in call().items()}
    (client_span,) = client.finished_spans()

    @ht_trace  # no tracer given: the one named for the request is used
    def handle() -> None:
        pass

    with with_distributed_trace_context(headers, server):
        handle()
    (s,) = server.finished_spans()
    assert s["trace_id"] == client_span["trace_id"]
    assert s["parent_span_id"] == client_span["span_id"]
    assert s["parent_is_remote"] is True
    a = s["attributes"]
    assert (a["honeyhive.session_id"], a["honeyhive.project"], a["honeyhive.source"]) == (
        client.session_id,
        "client-p",
        "client",
    )


def test_werkzeug_and_starlette_header_objects(memory_tracer: HoneyHiveTracer) -> None:
    from starlette.datastructures import Headers as StarletteHeaders
    from werkzeug.datastructures import Headers as WerkzeugHeaders

    raw = [("Traceparent", TP), ("Baggage", "session_id=S1")]
    for carrier in (
        WerkzeugHeaders(raw),
        StarletteHeaders(raw=[(k.lower().encode(), v.encode()) for k, v in raw]),
        {"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in raw]},
        raw,
        [(k.encode(), v.encode()) for k, v in raw],
    ):
        ctx = extract_context_from_carrier(carrier)
        assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == TRACE
        assert baggage.get_baggage("session_id", ctx) == "S1"


def test_several_baggage_headers_are_combined(memory_tracer: HoneyHiveTracer) -> None:
    ctx = extract_context_from_carrier([("baggage", "session_id=S"), ("Baggage", "project=P")])
    assert baggage.get_all(ctx) == {"session_id": "S", "project": "P"}


def test_percent_decoding_and_properties(memory_tracer: HoneyHiveTracer) -> None:
    ctx = extract_context_from_carrier({"baggage": "session_id=a%20b;ttl=3, project=p%2Cq"})
    assert baggage.get_all(ctx) == {"session_id": "a b", "project": "p,q"}


def test_async_with_and_asyncio_run_keep_the_session(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)

    @ht_trace
    async def agent() -> str:
        await asyncio.sleep(0)
        return str(baggage.get_baggage("session_id"))

    async def handler() -> str:
        async with with_distributed_trace_context({"traceparent": TP, "baggage": "session_id=R"}):
            return await agent()

    assert asyncio.run(handler()) == "R"
    # A sync handler that starts an event loop: no re-attachment needed.
    with with_distributed_trace_context({"traceparent": TP, "baggage": "session_id=R2"}):
        assert asyncio.run(agent()) == "R2"
    for s in t.finished_spans():
        assert s["trace_id"] == TRACE and s["parent_span_id"] == PARENT
    assert [s["attributes"]["honeyhive.session_id"] for s in t.finished_spans()] == ["R", "R2"]


# -- inject / extract (HoneyHive 1.7's cases) ---------------------------------------------------


def test_inject_outside_any_span_carries_the_session_only(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, project="p")
    carrier = inject_context_into_carrier({})
    assert "traceparent" not in carrier
    assert carrier["baggage"] == f"session_id={t.session_id},project=p,source=dev"
    assert "tracer_id" not in carrier["baggage"]


def test_inject_inside_a_plain_span_carries_the_session(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)
    with t.start_as_current_span("plain") as span:
        carrier = t.inject({})
    ctx = span.get_span_context()
    # A trace honeytrace starts is sampled and, its ids being random, says so (W3C Trace
    # Context Level 2 random flag, 0x02).
    assert carrier["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-03"
    assert ctx.trace_flags == 0x03 and ctx.trace_flags.sampled
    assert f"session_id={t.session_id}" in carrier["baggage"]  # HoneyHive omits it here


@pytest.mark.parametrize("flags", ["00", "01", "02", "03"])
def test_the_sampled_and_random_flags_are_continued(make_tracer: Make, flags: str) -> None:
    t = make_tracer(test_mode=True)
    incoming = {"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"}
    with with_distributed_trace_context(incoming, t):
        with t.start_as_current_span("child") as span:
            out = t.inject({})
            recording = span.is_recording()
    assert out["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert out["traceparent"].endswith("-" + flags)
    assert span.get_span_context().trace_flags == int(flags, 16)
    assert recording is (flags in ("01", "03"))


def test_inject_keeps_existing_keys_and_forwards_other_baggage(
    memory_tracer: HoneyHiveTracer,
) -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme co"))
    try:
        carrier = inject_context_into_carrier({"Authorization": "x", "Baggage": "stale=1"})
    finally:
        context.detach(token)
    assert carrier["Authorization"] == "x"
    assert "Baggage" not in carrier  # replaced, not duplicated in another case
    # honeytrace's own members first (they always fit), then the others.
    assert carrier["baggage"].startswith("session_id=")
    assert carrier["baggage"].endswith(",tenant=acme%20co")


def test_extract_is_never_attached_and_link_unlink(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)
    before = context.get_current()
    ctx = t.extract({"traceparent": TP, "baggage": "session_id=E"})
    assert context.get_current() == before
    token = context.attach(ctx)
    try:
        with t.start_as_current_span("child"):
            pass
    finally:
        context.detach(token)
    s = t.finished_spans()[0]
    assert (s["trace_id"], s["parent_span_id"]) == (TRACE, PARENT)
    assert s["attributes"]["honeyhive.session_id"] == "E"
    tok = t.link({"traceparent": TP})
    assert format(trace.get_current_span().get_span_context().span_id, "016x") == PARENT
    t.unlink(tok)
    assert context.get_current() == before


def test_global_propagator_is_honeytraces_and_works_with_the_otel_api(
    memory_tracer: HoneyHiveTracer,
) -> None:
    assert isinstance(propagate.get_global_textmap(), honeytrace.HoneyTracePropagator)
    ctx = propagate.extract({"Traceparent": TP, "BAGGAGE": "honeyhive_session_id=X"})
    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == TRACE
    assert baggage.get_all(ctx) == {"session_id": "X"}
    with memory_tracer.start_as_current_span("s"):
        out: dict[str, str] = {}
        propagate.inject(out)
    assert "traceparent" in out and f"session_id={memory_tracer.session_id}" in out["baggage"]

    class ListSetter:
        def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
            carrier.append((key, value))

    pairs: list[tuple[str, str]] = []
    propagate.inject(pairs, setter=ListSetter())  # type: ignore[arg-type]
    assert [k for k, _ in pairs] == ["baggage"]


# -- trust policy and validation ----------------------------------------------------------


def test_trust_restart_starts_a_new_trace_linked_to_the_caller(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)

    @ht_trace
    def handle() -> None:
        pass

    with with_distributed_trace_context(
        {"traceparent": TP, "baggage": "session_id=S"}, trust="restart"
    ):
        handle()
    (s,) = t.finished_spans()
    assert s["trace_id"] != TRACE and s["parent_span_id"] is None
    assert s["links"][0]["trace_id"] == TRACE and s["links"][0]["span_id"] == PARENT
    assert s["links"][0]["attributes"] == {"honeytrace.link": "restarted"}
    assert s["attributes"]["honeyhive.session_id"] == "S"  # a valid session is kept


def test_trust_ignore_drops_the_incoming_context(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, trust="ignore")
    with with_distributed_trace_context({"traceparent": TP, "baggage": "session_id=attacker"}):
        with t.start_as_current_span("s"):
            assert baggage.get_baggage("session_id") is None
    s = t.finished_spans()[0]
    assert s["trace_id"] != TRACE
    assert s["attributes"]["honeyhive.session_id"] == t.session_id
    assert t.stats()["contexts_ignored"] >= 1


def test_trust_from_the_environment(make_tracer: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HH_TRUST", "restart")
    t = make_tracer(test_mode=True)
    with with_distributed_trace_context({"traceparent": TP}, t):
        with t.start_as_current_span("s"):
            pass
    assert t.finished_spans()[0]["trace_id"] != TRACE
    with pytest.raises(ValueError, match="continue, restart or ignore"):
        HoneyHiveTracer.init(test_mode=True, trust="sometimes")
    # Per request, a bad policy must not fail the request: logged, counted, ignored.
    before = t.stats()["invalid_arguments"]
    with with_distributed_trace_context({"traceparent": TP}, t, trust="maybe"):
        with t.start_as_current_span("s2"):
            pass
    assert t.stats()["invalid_arguments"] == before + 1
    assert t.finished_spans()[-1]["trace_id"] != TRACE  # the tracer's policy: restart


@pytest.mark.parametrize(
    "bad",
    ["a%0Ab", "x" * 300, "tab%09in"],
    ids=["control-char", "too-long", "tab"],
)
def test_invalid_incoming_sessions_are_dropped_and_counted(make_tracer: Make, bad: str) -> None:
    t = make_tracer(test_mode=True)
    before = t.stats()["incoming_rejected"]
    with with_distributed_trace_context({"baggage": f"session_id={bad},project=ok"}, t):
        with t.start_as_current_span("s"):
            pass
    a = t.finished_spans()[0]["attributes"]
    assert a["honeyhive.session_id"] == t.session_id
    assert a["honeyhive.project"] == "ok"
    assert t.stats()["incoming_rejected"] == before + 1


def test_cloud_mode_requires_uuid_sessions(make_tracer: Make, receiver: Any) -> None:
    t = make_tracer(api_key="k", server_url=receiver.url)
    ctx = extract_context_from_carrier({"baggage": "session_id=not-a-uuid"}, t)
    assert baggage.get_baggage("session_id", ctx) is None
    good = "123E4567-E89B-12D3-A456-426614174000"
    ctx = extract_context_from_carrier({"baggage": f"session_id={good}"}, t)
    assert baggage.get_baggage("session_id", ctx) == good.lower()


def test_forged_sessions_under_ignore_and_restart(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, baggage_secret="shared-secret-of-enough-length")
    forged = {"traceparent": TP, "baggage": "session_id=victim;sig=AAAAAAAAAAAAAAAAAAAAAA"}
    for trust in ("ignore", "restart"):
        with with_distributed_trace_context(forged, t, trust=trust):
            with t.start_as_current_span(trust):
                pass
    spans = t.finished_spans()
    assert sorted(s["name"] for s in spans) == ["ignore", "restart"]
    for s in spans:
        assert s["attributes"]["honeyhive.session_id"] == t.session_id
        assert s["trace_id"] != TRACE


# -- property tests ------------------------------------------------------------------------

header_text = st.text(max_size=300)
header_names = st.sampled_from(
    ["traceparent", "Traceparent", "TRACESTATE", "baggage", "Baggage", "x-other", "HTTP_BAGGAGE"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(header_names, st.text(max_size=20)), header_text, max_size=6))
def test_extract_never_raises_and_always_gives_a_context(carrier: dict[str, str]) -> None:
    ctx = extract_context_from_carrier(carrier)
    assert isinstance(ctx, context.Context)
    span_ctx = trace.get_current_span(ctx).get_span_context()
    assert not span_ctx.is_valid or (span_ctx.trace_id != 0 and span_ctx.span_id != 0)
    for k, v in baggage.get_all(ctx).items():
        assert isinstance(k, str) and isinstance(v, str)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(
        r"[0-9a-fA-F]{2}-[0-9a-f]{0,33}-[0-9a-f]{0,17}-[0-9a-f]{0,3}.{0,5}", fullmatch=True
    )
)
def test_traceparent_fuzz(value: str) -> None:
    ctx = extract_context_from_carrier({"traceparent": value})
    sc = trace.get_current_span(ctx).get_span_context()
    if sc.is_valid:
        # Accepted only when the ids are exactly the ones written in the header.
        assert value[3:35] == format(sc.trace_id, "032x")
        assert value[36:52] == format(sc.span_id, "016x")
        assert value[:2].lower() != "ff"


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=80))
@example([("tenant", "acme"), ("note", "a b,c;d=é")])
def test_baggage_roundtrip(entries: list[tuple[str, str]]) -> None:
    ctx = context.get_current()
    for k, v in entries:
        ctx = baggage.set_baggage(k, v, ctx)
    token = context.attach(ctx)
    try:
        carrier = inject_context_into_carrier({})
    finally:
        context.detach(token)
    back = baggage.get_all(extract_context_from_carrier(carrier))
    sent = baggage.get_all(ctx)
    # Nothing comes back that was not sent, and nothing comes back changed.
    for k, v in back.items():
        if k not in ("session_id", "project", "source"):
            assert sent[k] == v
    # Well within the W3C limits (64 members, 8192 bytes), every entry with a valid key
    # comes back.
    if len(sent) <= 20:
        for k, v in sent.items():
            if _TOKEN.fullmatch(k) and k not in ("session_id", "project", "source"):
                assert back.get(k) == v, (k, v)


def test_a_one_megabyte_baggage_header_is_rejected_and_counted(
    memory_tracer: HoneyHiveTracer,
) -> None:
    before = memory_tracer.stats()["baggage_dropped"]
    huge = "k=" + "v" * (1 << 20) + ",session_id=late"
    ctx = extract_context_from_carrier({"baggage": "first=1," + huge})
    assert baggage.get_all(ctx) == {"first": "1"}
    assert memory_tracer.stats()["baggage_dropped"] == before + 2


def test_grpc_style_tuple_metadata_round_trips(make_tracer: Make) -> None:
    """gRPC metadata is a tuple of pairs: extract reads it; inject, which cannot write
    to a tuple, returns a new tuple with the caller's pairs first, then ours."""
    client = make_tracer(test_mode=True, project="p")
    server = make_tracer(test_mode=True, project="p")
    with client.start_as_current_span("call") as span:
        md = inject_context_into_carrier((("x-request-id", "42"),))
    assert isinstance(md, tuple) and md[0] == ("x-request-id", "42")
    names = [k for k, _ in md]
    assert names[1:] == ["traceparent", "baggage"]
    ctx = extract_context_from_carrier(md, server)
    from opentelemetry import trace as ot

    remote = ot.get_current_span(ctx).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id


@pytest.mark.parametrize("carrier", ["traceparent=x", b"raw", 42, None, frozenset()])
def test_a_carrier_that_cannot_take_headers_is_returned_and_counted(
    make_tracer: Make, carrier: Any
) -> None:
    t = make_tracer(test_mode=True)
    before = t.stats()["invalid_arguments"]
    with t.start_as_current_span("s"):
        out = inject_context_into_carrier(carrier)
    assert out is carrier
    assert t.stats()["invalid_arguments"] == before + 1


def test_a_carrier_that_cannot_take_headers_is_logged() -> None:
    from conftest import messages, run_reporting

    out = run_reporting(
        """
        import logging
        from honeytrace import inject_context_into_carrier
        t = HoneyHiveTracer.init(test_mode=True)
        with t.start_as_current_span("s"):
            inject_context_into_carrier("traceparent=x")
        done(logs=logs())
        """
    )
    warnings = messages(out["logs"], 30)
    assert any("a str cannot carry headers; pass a dict" in m for m in warnings), warnings


@pytest.mark.parametrize("shape", ["64 members", "8192 bytes"])
def test_the_session_survives_incoming_baggage_at_the_limits(make_tracer: Make, shape: str) -> None:
    """Incoming baggage already at the W3C limits: the session, project and source still
    go downstream; foreign members make room, counted."""
    t = make_tracer(test_mode=True, project="p", source="s")
    if shape == "64 members":
        foreign = ",".join(f"k{i}=v{i}" for i in range(64))
    else:
        # 8,127 bytes: room for ours only if a foreign member goes.
        foreign = ",".join(f"k{i}={'x' * 1012}" for i in range(8))
    before = t.stats()["baggage_dropped"]
    incoming = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "baggage": foreign,
    }
    with with_distributed_trace_context(incoming, t):
        with t.start_as_current_span("work"):
            out = t.inject({})
    members = dict(m.split("=", 1) for m in out["baggage"].split(","))
    assert (members["session_id"], members["project"], members["source"]) == (
        t.session_id,
        "p",
        "s",
    )
    assert len(members) <= 64 and len(out["baggage"]) <= 8192
    assert t.stats()["baggage_dropped"] > before


def test_a_foreign_tracestate_that_is_not_a_valid_header_is_not_sent(make_tracer: Make) -> None:
    """A span context from another SDK may carry a tracestate that never went through
    honeytrace's extraction: it is checked again going out, and dropped (counted)."""
    from opentelemetry import trace as ot
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    class Loose(TraceState):
        def to_header(self) -> str:
            return "vendor=caf\u00e9"

    t = make_tracer(test_mode=True)
    sc = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=Loose([("vendor", "x")]),
    )
    before = t.stats()["tracestate_dropped"]
    ctx = ot.set_span_in_context(NonRecordingSpan(sc))
    carrier: dict[str, str] = {}
    honeytrace.HoneyTracePropagator().inject(carrier, context=ctx)
    assert carrier["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert "tracestate" not in carrier
    assert t.stats()["tracestate_dropped"] == before + 1
    assert all(v.isascii() for v in carrier.values())


def test_tracestate_keys_opentelemetry_refuses_are_carried(
    receiver: Receiver, make_tracer: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys valid in the current tracestate grammar that OpenTelemetry's TraceState
    refuses (it checks the previous one) are continued, sent on and exported; the
    Python SpanContext leaves out those Python's refuses, without a warning."""
    t = make_tracer(otlp_endpoint=receiver.url)
    long_key = "t" * 241 + "@" + "v" * 14
    state = f"foo@@bar=1,{long_key}=2,ok=3,0*0=4"
    incoming = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": state,
    }
    with with_distributed_trace_context(incoming, t):
        with t.start_as_current_span("work") as span:
            out = t.inject({})
            py_state = span.get_span_context().trace_state
    assert out["tracestate"] == state
    # Python's TraceState takes the 14-character vendor (Rust's stops at 13).
    assert dict(py_state) == {long_key: "2", "ok": "3"}
    assert not [r for r in caplog.records if "Invalid key/value" in r.getMessage()]
    t.flush()
    (exported,) = receiver.wait_for_spans(1)
    assert exported["trace_state"] == state


# -- W3C Baggage: the spec's examples, percent-decoding, properties ----------------------------------


@pytest.mark.parametrize(
    ("header", "values", "sent"),
    [
        (
            "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue",
            {"key1": "value1", "key2": "value2", "key3": "value3"},
            "key1=value1;property1;property2,key2=value2,key3=value3;propertyKey=propertyValue",
        ),
        (
            "userId=alice,serverNode=DF%2028,isProduction=false",
            {"userId": "alice", "serverNode": "DF 28", "isProduction": "false"},
            "userId=alice,serverNode=DF%2028,isProduction=false",
        ),
        (
            "userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false",
            {"userId": "Am\u00e9lie", "serverNode": "DF 28", "isProduction": "false"},
            "userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false",
        ),
        # Not UTF-8: U+FFFD (sent on percent-encoded). A bare % is kept.
        ("k=%FFx,pct=100%", {"k": "\ufffdx", "pct": "100%"}, "k=%EF%BF%BDx,pct=100%25"),
    ],
)
def test_w3c_baggage_spec_examples(
    make_tracer: Make, header: str, values: dict[str, str], sent: str
) -> None:
    t = make_tracer(test_mode=True, project="p", source="s")
    before = t.stats()["baggage_dropped"]
    with with_distributed_trace_context({"traceparent": TP, "baggage": header}, t):
        assert dict(baggage.get_all()) == values
        out = t.inject({})
    own = f"session_id={t.session_id},project=p,source=s"
    assert out["baggage"] == f"{own},{sent}"
    assert t.stats()["baggage_dropped"] == before


def test_baggage_properties_go_on_with_the_value_that_came_in(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, project="p", source="s")
    before = t.stats()["baggage_dropped"]
    incoming = {"baggage": "a=1;ttl=30,b=2;flag;bad key=x"}
    with with_distributed_trace_context(incoming, t):
        out = t.inject({})
        members = out["baggage"].split(",")
        assert "a=1;ttl=30" in members and "b=2;flag" in members
        # A value changed by the app: its properties described the old one.
        token = context.attach(baggage.set_baggage("a", "changed"))
        try:
            members = t.inject({})["baggage"].split(",")
        finally:
            context.detach(token)
        assert "a=changed" in members and "b=2;flag" in members
    # The property outside the grammar was dropped, counted.
    assert t.stats()["baggage_dropped"] == before + 1
