"""@trace / atrace / trace_class on every shape of Python callable."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import pickle
import sys
import threading
import traceback
from typing import Any, Callable

import pytest
from opentelemetry import context, trace

import honeytrace
from conftest import spans_by_name
from honeytrace import HoneyHiveTracer, atrace, enrich_span, trace_class
from honeytrace import trace as ht_trace

Make = Callable[..., HoneyHiveTracer]


@ht_trace
def module_level(x: int) -> int:
    """Doubles."""
    return x * 2


def only(t: HoneyHiveTracer, name: str) -> dict[str, Any]:
    matches = [s for s in t.finished_spans() if s["name"] == name]
    assert len(matches) == 1, [s["name"] for s in t.finished_spans()]
    return matches[0]


def test_bare_and_configured_forms(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    def a() -> int:
        return 1

    @ht_trace()
    def b() -> int:
        return 2

    @ht_trace("chain", "named-c")
    def c() -> int:
        return 3

    @ht_trace(event_type="model", event_name="named-d", config={"temperature": 0.2})
    def d() -> int:
        return 4

    assert (a(), b(), c(), d()) == (1, 2, 3, 4)
    spans = spans_by_name(memory_tracer.finished_spans())
    assert set(spans) == {f"{__name__}.a", f"{__name__}.b", "named-c", "named-d"}
    assert spans[f"{__name__}.a"]["attributes"]["honeyhive_event_type"] == "tool"
    assert spans["named-c"]["attributes"]["honeyhive_event_type"] == "chain"
    dd = spans["named-d"]["attributes"]
    assert dd["honeyhive_event_type"] == "model"
    assert dd["honeyhive_config.temperature"] == 0.2  # config= works (HoneyHive raises)


def test_unknown_keyword_raises_at_decoration_time() -> None:
    with pytest.raises(TypeError, match="'colour'"):
        ht_trace(colour="red")
    with pytest.raises(TypeError, match="metadata must be a dict"):
        ht_trace(metadata=["x"])
    with pytest.raises(TypeError, match="ignore_inputs"):
        ht_trace(ignore_inputs="x")


def test_metadata_and_signature_are_preserved() -> None:
    async def coro(a: int, *, b: str = "x") -> int:
        """A coroutine."""
        return a

    def gen(n: int) -> Any:
        yield n

    async def agen(n: int) -> Any:
        yield n

    assert module_level.__name__ == "module_level"
    assert module_level.__qualname__ == "module_level"
    assert module_level.__doc__ == "Doubles."
    assert module_level.__module__ == __name__
    assert module_level.__wrapped__.__name__ == "module_level"  # type: ignore[attr-defined]
    assert str(inspect.signature(module_level)) == "(x: 'int') -> 'int'"
    tc, tg, ta = ht_trace(coro), ht_trace(gen), ht_trace(agen)
    assert inspect.iscoroutinefunction(tc)
    assert inspect.isgeneratorfunction(tg)
    assert inspect.isasyncgenfunction(ta)
    assert inspect.signature(tc) == inspect.signature(coro)
    assert tc.__doc__ == "A coroutine."
    assert not inspect.iscoroutinefunction(module_level)
    assert atrace is ht_trace


def test_traced_function_pickles_by_reference(memory_tracer: HoneyHiveTracer) -> None:
    again = pickle.loads(pickle.dumps(module_level))
    assert again is module_level
    assert again(4) == 8


def test_methods_classmethods_staticmethods(memory_tracer: HoneyHiveTracer) -> None:
    class Agent:
        factor = 3

        @ht_trace
        def run(self, x: int) -> int:
            return x * self.factor

        @ht_trace
        @classmethod
        def make(cls, n: int) -> int:
            return n + cls.factor

        @ht_trace
        @staticmethod
        def pure(z: int) -> int:
            return -z

    a = Agent()
    assert (a.run(2), Agent.make(1), Agent.pure(5), a.pure(6)) == (6, 4, -5, -6)
    assert Agent.run(a, 1) == 3  # unbound call
    spans = [s for s in memory_tracer.finished_spans()]
    by = {s["name"]: s for s in spans}
    assert by[f"{__name__}.run"]["attributes"]["honeyhive_inputs.x"] == 1
    assert "honeyhive_inputs.self" not in by[f"{__name__}.run"]["attributes"]
    assert "honeyhive_inputs.cls" not in by[f"{__name__}.make"]["attributes"]
    assert by[f"{__name__}.make"]["attributes"]["honeyhive_outputs.result"] == 4


def test_partial_and_callable_objects(memory_tracer: HoneyHiveTracer) -> None:
    def power(base: int, exp: int) -> int:
        return base**exp

    square = ht_trace(functools.partial(power, exp=2))
    assert square(7) == 49

    class Scorer:
        def __call__(self, text: str) -> int:
            return len(text)

    class AsyncScorer:
        async def __call__(self, text: str) -> int:
            return len(text) * 2

    scorer = ht_trace(Scorer())
    ascorer = ht_trace(AsyncScorer())
    assert scorer("abc") == 3
    assert asyncio.run(ascorer("abc")) == 6
    names = [s["name"] for s in memory_tracer.finished_spans()]
    assert names == [f"{__name__}.power", f"{__name__}.Scorer", f"{__name__}.AsyncScorer"]
    p = memory_tracer.finished_spans()[0]["attributes"]
    assert (p["honeyhive_inputs.base"], p["honeyhive_inputs.exp"]) == (7, 2)


def test_nested_calls_are_children_and_context_is_restored(
    memory_tracer: HoneyHiveTracer,
) -> None:
    @ht_trace
    def inner() -> Any:
        return trace.get_current_span()

    @ht_trace
    def outer() -> Any:
        me = trace.get_current_span()
        assert inner() is not me
        assert trace.get_current_span() is me
        return me

    before = context.get_current()
    outer_span = outer()
    assert context.get_current() == before
    spans = spans_by_name(memory_tracer.finished_spans())
    assert spans[f"{__name__}.inner"]["parent_span_id"] == spans[f"{__name__}.outer"]["span_id"]
    assert spans[f"{__name__}.outer"]["span_id"] == outer_span.span_id_hex


def test_exception_is_recorded_once_and_reraised_unchanged(memory_tracer: HoneyHiveTracer) -> None:
    calls = []
    err = ValueError("bad input")

    @ht_trace
    def fail() -> None:
        calls.append(1)
        raise err

    before = context.get_current()
    with pytest.raises(ValueError) as info:
        fail()
    assert info.value is err
    assert calls == [1]  # no second call
    assert context.get_current() == before
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "fail" and frames[-1].line == "raise err"
    (s,) = memory_tracer.finished_spans()  # no extra "_error" span
    assert s["status"] == {"code": "ERROR", "description": "ValueError: bad input"}
    assert [e["name"] for e in s["events"]] == ["exception"]
    ev = s["events"][0]["attributes"]
    assert ev["exception.type"] == "ValueError"
    assert ev["exception.message"] == "bad input"
    assert "raise err" in ev["exception.stacktrace"]
    assert s["attributes"]["honeyhive_error"] == "ValueError: bad input"


def test_keyboard_interrupt_passes_through_with_a_clear_status(
    memory_tracer: HoneyHiveTracer,
) -> None:
    @ht_trace
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    (s,) = memory_tracer.finished_spans()
    assert s["status"] == {"code": "ERROR", "description": "KeyboardInterrupt"}
    assert s["events"] == []


def test_generator_span_covers_the_whole_iteration(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    def child(i: int) -> int:
        return i

    @ht_trace(event_type="model")
    def stream(n: int) -> Any:
        for i in range(n):
            child(i)
            yield f"tok{i} "

    g = stream(3)
    assert memory_tracer.finished_spans() == []  # nothing has run yet
    items = list(g)
    assert items == ["tok0 ", "tok1 ", "tok2 "]
    spans = memory_tracer.finished_spans()
    gen_span = next(s for s in spans if s["name"].endswith(".stream"))
    children = [s for s in spans if s["name"].endswith(".child")]
    assert len(children) == 3
    assert all(c["parent_span_id"] == gen_span["span_id"] for c in children)
    assert gen_span["end_time"] >= max(c["end_time"] for c in children)
    a = gen_span["attributes"]
    assert a["honeyhive_outputs.result"] == "tok0 tok1 tok2 "  # streamed text, joined
    assert a["honeyhive_metadata.stream_chunks"] == 3
    assert a["honeyhive_inputs.n"] == 3


def test_generator_early_break_close_and_gc_end_the_span(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    def numbers() -> Any:
        yield from range(100)

    for n in numbers():
        if n == 2:
            break
    gc.collect()
    g = numbers()
    next(g)
    g.close()
    g2 = numbers()
    next(g2)
    del g2
    gc.collect()
    spans = memory_tracer.finished_spans()
    assert len(spans) == 3
    for s in spans:
        assert s["attributes"]["honeyhive_metadata.closed_early"] is True
        assert s["status"]["code"] == "UNSET"
    assert spans[0]["attributes"]["honeyhive_outputs.result"] == "[0,1,2]"


def test_generator_send_throw_and_errors(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    def echo() -> Any:
        received = None
        while True:
            try:
                received = yield received
            except KeyError:
                received = "recovered"
            if received == "stop":
                return "done"
            if received == "boom":
                raise RuntimeError("boom")

    g = echo()
    assert next(g) is None
    assert g.send("a") == "a"
    assert g.throw(KeyError("k")) == "recovered"
    with pytest.raises(StopIteration) as stop:
        g.send("stop")
    assert stop.value.value == "done"
    g2 = echo()
    next(g2)
    with pytest.raises(RuntimeError):
        g2.send("boom")
    ok, failed = memory_tracer.finished_spans()
    assert ok["status"]["code"] == "UNSET"
    assert failed["status"] == {"code": "ERROR", "description": "RuntimeError: boom"}


def test_generator_resumed_in_other_contexts_never_fails_to_detach(
    memory_tracer: HoneyHiveTracer, caplog: pytest.LogCaptureFixture
) -> None:
    import contextvars

    @ht_trace
    def chunks() -> Any:
        yield 1
        yield 2
        yield 3

    g = chunks()
    with caplog.at_level(logging.ERROR):
        assert next(g) == 1
        assert contextvars.copy_context().run(next, g) == 2
        t = threading.Thread(target=lambda: next(g))
        t.start()
        t.join()
        assert list(g) == []
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]
    assert len(memory_tracer.finished_spans()) == 1


def test_async_generator(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    async def tokens(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield {"i": i}

    async def main() -> list[Any]:
        out = [t async for t in tokens(2)]
        agen = tokens(10)
        await agen.__anext__()
        await agen.aclose()
        return out

    assert asyncio.run(main()) == [{"i": 0}, {"i": 1}]
    full, closed = memory_tracer.finished_spans()
    assert full["attributes"]["honeyhive_outputs.result"] == '[{"i":0},{"i":1}]'
    assert closed["attributes"]["honeyhive_metadata.closed_early"] is True


def test_async_functions_concurrency_and_cancellation(memory_tracer: HoneyHiveTracer) -> None:
    @ht_trace
    async def leaf(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        return i

    @ht_trace
    async def task(i: int) -> int:
        await asyncio.sleep(0)
        return await leaf(i)

    @ht_trace
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> list[int]:
        results = await asyncio.gather(*(task(i) for i in range(20)))
        t = asyncio.ensure_future(slow())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return list(results)

    assert asyncio.run(main()) == list(range(20))
    spans = memory_tracer.finished_spans()
    tasks = {s["attributes"]["honeyhive_inputs.i"]: s for s in spans if s["name"].endswith(".task")}
    leaves = {
        s["attributes"]["honeyhive_inputs.i"]: s for s in spans if s["name"].endswith(".leaf")
    }
    for i in range(20):
        assert leaves[i]["parent_span_id"] == tasks[i]["span_id"]
        assert leaves[i]["trace_id"] == tasks[i]["trace_id"]
    cancelled = next(s for s in spans if s["name"].endswith(".slow"))
    assert cancelled["attributes"]["honeyhive_metadata.cancelled"] is True
    assert cancelled["status"]["code"] == "UNSET"


def test_threads_keep_their_own_span_and_session(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)

    @ht_trace
    def work(i: int) -> str:
        return str(trace.get_current_span().get_span_context().span_id)

    def run(i: int) -> None:
        token = context.attach(honeytrace._enrich.baggage.set_baggage("session_id", f"s{i}"))
        try:
            work(i)
        finally:
            context.detach(token)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    spans = t.finished_spans()
    assert sorted(s["attributes"]["honeyhive_inputs.i"] for s in spans) == list(range(16))
    for s in spans:
        i = s["attributes"]["honeyhive_inputs.i"]
        assert s["attributes"]["honeyhive.session_id"] == f"s{i}"
        assert s["attributes"]["honeyhive_outputs.result"] == str(int(s["span_id"], 16))


def test_trace_class_traces_own_public_methods(memory_tracer: HoneyHiveTracer) -> None:
    class Base:
        def inherited(self) -> int:
            return 0

    @trace_class
    class Service(Base):
        def handle(self, q: str) -> str:
            return q.upper()

        async def ahandle(self, q: str) -> str:
            return q

        @classmethod
        def build(cls) -> Service:
            return cls()

        @staticmethod
        def util() -> int:
            return 1

        def _private(self) -> int:
            return 2

        @property
        def prop(self) -> int:
            return 3

    s = Service.build()
    s.handle("a")
    asyncio.run(s.ahandle("b"))
    Service.util()
    s.inherited()
    s._private()
    assert s.prop == 3
    names = sorted(x["name"] for x in memory_tracer.finished_spans())
    assert names == ["Service.ahandle", "Service.build", "Service.handle", "Service.util"]


def test_tracer_trace_method_as_decorator_and_context_manager(make_tracer: Make) -> None:
    t1 = make_tracer(test_mode=True, project="one")
    t2 = make_tracer(test_mode=True, project="two")

    @t2.trace(event_type="tool")
    def on_t2() -> int:
        return 1

    with t1.start_as_current_span("t1-root"):
        on_t2()  # explicit tracer wins over the parent's tracer
    with t2.trace("block", event_type="chain"):
        pass
    assert [s["name"] for s in t2.finished_spans()] == [f"{__name__}.on_t2", "block"]
    assert t2.finished_spans()[1]["attributes"]["honeyhive_event_type"] == "chain"


def test_untraced_without_a_tracer_and_warns_once() -> None:
    from conftest import run_python

    out = run_python(
        """
        from honeytrace import trace
        @trace
        def f(x):
            return x + 1
        print(f(1), f(2))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 3"
    assert out.stderr.count("run untraced") == 1


def test_decorated_spans_reach_a_real_receiver(receiver: Any, make_tracer: Make) -> None:
    t = make_tracer(otlp_endpoint=receiver.url, project="agents", session_id="s-otlp")

    @ht_trace(event_type="chain", metadata={"version": "2"})
    def run_agent(query: str, k: int = 3) -> dict[str, Any]:
        enrich_span(metrics={"tokens": 12})
        return {"answer": query[::-1], "k": k}

    run_agent("hello")
    assert t.flush(10)
    (s,) = receiver.wait_for_spans(1)
    a = s["attributes"]
    assert s["name"] == f"{__name__}.run_agent"
    assert a["honeyhive_event_type"] == "chain"
    assert a["honeyhive_metadata.version"] == "2"
    assert a["honeyhive_inputs.query"] == "hello"
    assert a["honeyhive_inputs.k"] == 3
    assert a["honeyhive_metrics.tokens"] == 12
    assert a["honeyhive_outputs.result"] == '{"answer":"olleh","k":3}'
    assert a["honeyhive.session_id"] == a["session.id"] == "s-otlp"
    assert isinstance(a["honeyhive_duration_ms"], float)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="needs 3.10 syntax in the test only")
def test_return_value_and_arguments_are_never_modified(memory_tracer: HoneyHiveTracer) -> None:
    payload = {"k": [1, 2]}
    result = {"r": {"nested": True}}

    @ht_trace
    def f(p: dict[str, Any]) -> dict[str, Any]:
        return result

    assert f(payload) is result
    assert payload == {"k": [1, 2]} and result == {"r": {"nested": True}}
