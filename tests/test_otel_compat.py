"""honeytrace as an OpenTelemetry TracerProvider/Tracer/Span, with the real Python
OpenTelemetry API and SDK as peers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import honeytrace
from conftest import run_python, spans_by_name
from honeytrace import HoneyHiveTracer

Make = Callable[..., HoneyHiveTracer]


def test_span_implements_the_opentelemetry_interface(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    span = t.start_span("op", attributes={"a": 1})
    assert isinstance(span, trace.Span)
    assert isinstance(span, honeytrace.Span)
    ctx = span.get_span_context()
    assert isinstance(ctx, trace.SpanContext)
    assert ctx.is_valid and not ctx.is_remote and ctx.trace_flags.sampled
    assert span.get_span_context() is ctx  # built once
    with trace.use_span(span):
        assert trace.get_current_span() is span
    assert trace.get_current_span() is not span
    span.update_name("renamed")
    span.set_status(Status(StatusCode.OK))
    span.set_status(StatusCode.ERROR, "ignored: OK is final")
    assert span.is_recording()
    span.end()
    assert not span.is_recording()
    span.end()  # idempotent
    span.set_attribute("late", 1)  # no-op after end
    (s,) = t.finished_spans()
    assert s["name"] == "renamed"
    assert s["status"]["code"] == "OK"
    assert "late" not in s["attributes"]


def test_record_exception_and_with_block_errors(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    with pytest.raises(KeyError), t.start_span("boom"):
        raise KeyError("missing")
    (s,) = t.finished_spans()
    assert s["status"] == {"code": "ERROR", "description": "KeyError: 'missing'"}
    (ev,) = s["events"]
    assert ev["name"] == "exception"
    assert ev["attributes"]["exception.type"] == "KeyError"
    assert ev["attributes"]["exception.message"] == "'missing'"
    assert ev["attributes"]["exception.escaped"] == "True"
    assert "Traceback" in ev["attributes"]["exception.stacktrace"]
    assert "test_record_exception_and_with_block_errors" in ev["attributes"]["exception.stacktrace"]


def test_events_links_times_and_kinds(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    other = t.start_span("other")
    link_ctx = other.get_span_context()
    other.end()
    span = t.start_span(
        "op",
        kind=SpanKind.SERVER,
        links=[Link(link_ctx, {"why": "retry"})],
        start_time=1_700_000_000_000_000_000,
    )
    span.add_event("e1", {"n": 1}, timestamp=1_700_000_000_500_000_000)
    span.add_link(link_ctx)
    span.end(end_time=1_700_000_001_000_000_000)
    s = t.finished_spans()[-1]
    assert s["kind"] == "SERVER"
    assert s["start_time"] == 1_700_000_000_000_000_000
    assert s["end_time"] == 1_700_000_001_000_000_000
    assert s["events"][0] == {
        "name": "e1",
        "timestamp": 1_700_000_000_500_000_000,
        "attributes": {"n": 1},
    }
    assert [lk["span_id"] for lk in s["links"]] == [format(link_ctx.span_id, "016x")] * 2
    assert s["links"][0]["attributes"] == {"why": "retry"}


def test_invalid_attribute_values_are_dropped_and_counted(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    before = t.stats()["attributes_dropped"]
    with t.start_as_current_span("s") as s:
        s.set_attribute("ok", "v")
        s.set_attribute("none", None)  # type: ignore[arg-type]
        s.set_attribute("obj", object())  # type: ignore[arg-type]
        s.set_attribute("mixed", [1, "a"])  # type: ignore[list-item]
        s.set_attribute("big", 2**80)
    attrs = t.finished_spans()[0]["attributes"]
    assert attrs["ok"] == "v"
    assert attrs["big"] == str(2**80)
    assert not {"none", "obj", "mixed"} & attrs.keys()
    assert t.stats()["attributes_dropped"] - before == 3


def test_instrumentation_span_nests_under_a_honeytrace_span(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    assert t.is_global
    otel = trace.get_tracer("my.instrumentation", "1.2")
    with (
        t.start_as_current_span("agent") as agent,
        otel.start_as_current_span("http GET", kind=SpanKind.CLIENT) as child,
    ):
        assert isinstance(child, honeytrace.Span)
    spans = spans_by_name(t.finished_spans())
    a, c = spans["agent"], spans["http GET"]
    assert c["trace_id"] == a["trace_id"] == format(agent.get_span_context().trace_id, "032x")
    assert c["parent_span_id"] == a["span_id"]
    assert c["attributes"]["honeyhive.session_id"] == t.session_id
    assert c["scope"] == {"name": "my.instrumentation", "version": "1.2"}


def test_two_tracers_keep_their_own_stamps_and_children(make_tracer: Make) -> None:
    t1 = make_tracer(test_mode=True, project="p1", source="s1")
    t2 = make_tracer(test_mode=True, project="p2", source="s2")
    otel = trace.get_tracer("lib")
    with t1.start_as_current_span("one"), otel.start_as_current_span("one.child"):
        pass
    with t2.start_as_current_span("two"), otel.start_as_current_span("two.child"):
        pass
    s1, s2 = spans_by_name(t1.finished_spans()), spans_by_name(t2.finished_spans())
    assert set(s1) == {"one", "one.child"}
    assert set(s2) == {"two", "two.child"}
    for s in s1.values():
        assert (s["attributes"]["honeyhive.project"], s["attributes"]["honeyhive.source"]) == (
            "p1",
            "s1",
        )
        assert s["attributes"]["honeyhive.session_id"] == t1.session_id
    for s in s2.values():
        assert (s["attributes"]["honeyhive.project"], s["attributes"]["honeyhive.source"]) == (
            "p2",
            "s2",
        )
        assert s["attributes"]["honeyhive.session_id"] == t2.session_id


def test_set_default_tracer_really_sets_the_default(make_tracer: Make) -> None:
    t1 = make_tracer(test_mode=True, project="p1")
    t2 = make_tracer(test_mode=True, project="p2")
    otel = trace.get_tracer("lib")
    honeytrace.set_default_tracer(t1)
    assert honeytrace.get_default_tracer() is t1
    with otel.start_as_current_span("to-t1"):
        pass
    honeytrace.set_default_tracer(t2)
    assert honeytrace.get_default_tracer() is t2
    with otel.start_as_current_span("to-t2"):
        pass
    assert [s["name"] for s in t1.finished_spans()] == ["to-t1"]
    assert [s["name"] for s in t2.finished_spans()] == ["to-t2"]


def test_session_priority_explicit_then_baggage_then_tracer(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    ctx = baggage.set_baggage("session_id", "from-baggage")
    ctx = baggage.set_baggage("project", "bag-project", ctx)
    ctx = baggage.set_baggage("parent_id", "pid-1", ctx)
    ctx = baggage.set_baggage("run_id", "run-9", ctx)
    ctx = baggage.set_baggage("secret_key", "not-copied", ctx)
    token = context.attach(ctx)
    try:
        with t.start_as_current_span("from-bag"):
            pass
        with t.start_as_current_span("explicit", attributes={"honeyhive.session_id": "mine"}):
            pass
    finally:
        context.detach(token)
    with t.start_as_current_span("plain"):
        pass
    s = spans_by_name(t.finished_spans())
    bag = s["from-bag"]["attributes"]
    assert bag["honeyhive.session_id"] == bag["session.id"] == "from-baggage"
    assert bag["honeyhive.project"] == "bag-project"
    assert bag["honeyhive.source"] == "test"  # not in baggage: the tracer's
    assert bag["honeyhive.parent_id"] == "pid-1"
    assert bag["honeyhive_metadata.run_id"] == "run-9"
    assert not any(k.startswith("baggage.") for k in bag)  # allow-list is empty by default
    exp = s["explicit"]["attributes"]
    assert exp["honeyhive.session_id"] == exp["session.id"] == "mine"
    assert s["plain"]["attributes"]["honeyhive.session_id"] == t.session_id


def test_baggage_allow_list_copies_only_listed_keys(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, baggage_allowlist=["tenant"])
    ctx = baggage.set_baggage("tenant", "acme", baggage.set_baggage("other", "x"))
    token = context.attach(ctx)
    try:
        with t.start_as_current_span("s"):
            pass
    finally:
        context.detach(token)
    attrs = t.finished_spans()[0]["attributes"]
    assert attrs["baggage.tenant"] == "acme"
    assert "baggage.other" not in attrs


def test_python_sdk_span_as_parent(memory_tracer: HoneyHiveTracer) -> None:
    # A span from the real Python OpenTelemetry SDK (not installed globally) as parent.
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider

    sdk_tracer = SdkProvider().get_tracer("peer")
    with sdk_tracer.start_as_current_span("sdk-parent") as parent:
        with memory_tracer.start_as_current_span("ours"):
            pass
    s = memory_tracer.finished_spans()[0]
    pc = parent.get_span_context()
    assert s["trace_id"] == format(pc.trace_id, "032x")
    assert s["parent_span_id"] == format(pc.span_id, "016x")


def test_remote_parent_from_extracted_context(memory_tracer: HoneyHiveTracer) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    ctx = TraceContextTextMapPropagator().extract(carrier)
    with memory_tracer.start_as_current_span("server", context=ctx):
        pass
    s = memory_tracer.finished_spans()[0]
    assert s["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert s["parent_span_id"] == "b7ad6b7169203331"
    assert s["parent_is_remote"] is True


def test_threads_and_asyncio_tasks_keep_their_own_parents(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer

    def in_thread(i: int) -> None:
        with t.start_as_current_span(f"thread-{i}"), t.start_as_current_span(f"thread-{i}-child"):
            pass

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    async def task(i: int) -> None:
        with t.start_as_current_span(f"task-{i}"):
            await asyncio.sleep(0.01)
            with t.start_as_current_span(f"task-{i}-child"):
                await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(8)))

    asyncio.run(main())
    s = spans_by_name(t.finished_spans())
    for kind in ("thread", "task"):
        for i in range(8):
            assert s[f"{kind}-{i}-child"]["parent_span_id"] == s[f"{kind}-{i}"]["span_id"]
            assert s[f"{kind}-{i}"]["parent_span_id"] is None


def test_another_global_provider_is_not_fought() -> None:
    out = run_python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        theirs = TracerProvider()
        trace.set_tracer_provider(theirs)
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(test_mode=True)
        assert trace.get_tracer_provider() is theirs
        assert not t.is_global
        # honeytrace spans still work, and instrumentors can be pointed at it explicitly
        with t.start_as_current_span("ours"):
            with trace.get_tracer("x", tracer_provider=t.provider).start_as_current_span("inst"):
                pass
        print(sorted(s["name"] for s in t.finished_spans()))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['inst', 'ours']"
    assert "already global; honeytrace does not replace it" in out.stderr


def test_set_global_false_stays_isolated() -> None:
    out = run_python(
        """
        from opentelemetry import trace
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(test_mode=True, set_global=False)
        print(type(trace.get_tracer_provider()).__name__, t.is_global)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ProxyTracerProvider False"


def test_start_as_current_span_as_decorator_and_flags(memory_tracer: HoneyHiveTracer) -> None:
    """OpenTelemetry's start_as_current_span semantics, from the engine: a decorator
    (a span per call, around the whole awaited coroutine), the exception flags,
    end_on_exit, and the context restored on exit."""
    tracer = trace.get_tracer("lib", tracer_provider=memory_tracer.provider)

    @tracer.start_as_current_span("sync-op", attributes={"k": 1})
    def sync_op(x: int) -> int:
        assert trace.get_current_span().is_recording()
        return x + 1

    @tracer.start_as_current_span("async-op")
    async def async_op() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert sync_op(1) == 2 and sync_op(2) == 3
    assert asyncio.run(async_op()) == "done"
    assert sync_op.__name__ == "sync_op"

    before = context.get_current()
    with pytest.raises(ValueError), tracer.start_as_current_span("quiet", record_exception=False):
        raise ValueError("not recorded")
    with pytest.raises(ValueError), tracer.start_as_current_span("noisy"):
        raise ValueError("recorded")

    class Stop(BaseException):
        pass

    with pytest.raises(Stop), tracer.start_as_current_span("base"):
        raise Stop()
    assert context.get_current() == before

    with tracer.start_as_current_span("open", end_on_exit=False) as still_open:
        pass
    assert still_open.is_recording()
    still_open.end()

    spans: dict[str, list[dict[str, Any]]] = {}
    for s in memory_tracer.finished_spans():
        spans.setdefault(s["name"], []).append(s)
    assert len(spans["sync-op"]) == 2
    assert spans["sync-op"][0]["attributes"]["k"] == 1
    (a,) = spans["async-op"]
    assert a["end_time"] - a["start_time"] >= 10_000_000  # the whole awaited call
    (quiet,) = spans["quiet"]
    assert quiet["status"]["code"] == "ERROR" and quiet["events"] == []
    (noisy,) = spans["noisy"]
    assert noisy["status"] == {"code": "ERROR", "description": "ValueError: recorded"}
    assert [e["name"] for e in noisy["events"]] == ["exception"]
    (base,) = spans["base"]
    assert base["status"]["code"] == "UNSET" and base["events"] == []
    assert len(spans["open"]) == 1


def test_a_changed_opentelemetry_context_layout_falls_back_to_the_public_api() -> None:
    """honeytrace reads and sets the context through opentelemetry-api's private
    layout (checked at import by honeytrace/_compat.py). When that layout differs (here:
    another runtime context class), it uses the public API instead, says so once, and
    traces the same."""
    from conftest import run_python

    out = run_python(
        """
        import opentelemetry.context as c
        from opentelemetry.context.context import _RuntimeContext

        inner = c._RUNTIME_CONTEXT

        class Other(_RuntimeContext):
            def attach(self, context):
                return inner.attach(context)

            def get_current(self):
                return inner.get_current()

            def detach(self, token):
                inner.detach(token)

        c._RUNTIME_CONTEXT = Other()

        import asyncio
        from opentelemetry import baggage
        from opentelemetry import trace as ot
        import honeytrace
        from honeytrace import HoneyHiveTracer, trace

        t = HoneyHiveTracer.init(test_mode=True)

        @trace
        def inner_call():
            return baggage.get_baggage("session_id")

        @trace
        async def outer():
            with t.start_as_current_span("block"):
                return inner_call()

        assert asyncio.run(outer()) == t.session_id
        spans = {s["name"].rsplit(".", 1)[-1]: s for s in t.finished_spans()}
        assert spans["inner_call"]["parent_span_id"] == spans["block"]["span_id"]
        assert spans["block"]["parent_span_id"] == spans["outer"]["span_id"]
        assert ot.get_current_span() is ot.INVALID_SPAN
        print("FAST", honeytrace._compat.FAST)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "FAST False" in out.stdout
    assert out.stderr.count("internal context layout") == 1, out.stderr


def test_the_private_layout_is_used_when_it_is_the_known_one() -> None:
    import honeytrace._compat as compat

    assert compat.FAST is True
