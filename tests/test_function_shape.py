"""``@trace`` on a sync function returns a real Python function.

What users and frameworks look at: ``inspect.isfunction``, the ``functools.wraps``
metadata, the signature, descriptor binding (methods, classmethods, staticmethods),
the kind of async and generator callables, pickling by reference (``pickle``) and by
value (``cloudpickle``, as Dask/Ray/PySpark do for functions defined in ``__main__``),
and frameworks that wrap the function (Celery's ``@app.task`` / ``@shared_task`` and a
worker, ``dask.delayed``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import traceback
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Optional

import celery
import dask
import pytest

from conftest import run_python, spans_by_name
from honeytrace import HoneyHiveTracer, trace


def original_sync(query: str, *, limit: int = 3, **opts: Any) -> list[str]:
    """Search for ``query``."""
    return [query] * limit


traced_sync = trace(original_sync)


@trace(event_type="tool", metadata={"kind": "module"})
def module_level(x: int, y: int = 2) -> int:
    """Multiply."""
    return x * y


# -- a real function with the original's metadata and signature -------------------------


def test_traced_sync_function_is_a_real_function(memory_tracer: HoneyHiveTracer) -> None:
    assert inspect.isfunction(traced_sync)
    assert isinstance(traced_sync, types.FunctionType)
    assert traced_sync is not original_sync
    assert traced_sync("q", limit=2) == ["q", "q"]
    assert [s["name"] for s in memory_tracer.finished_spans()] == [f"{__name__}.original_sync"]


def test_traced_function_keeps_wraps_metadata_and_signature() -> None:
    assert traced_sync.__name__ == "original_sync"
    assert traced_sync.__qualname__ == "original_sync"
    assert traced_sync.__module__ == __name__
    assert traced_sync.__doc__ == "Search for ``query``."
    assert traced_sync.__wrapped__ is original_sync
    assert traced_sync.__annotations__ == original_sync.__annotations__
    assert inspect.signature(traced_sync) == inspect.signature(original_sync)
    assert str(inspect.signature(traced_sync)) == str(inspect.signature(original_sync))


def test_decorator_with_options_keeps_metadata_of_nested_function() -> None:
    def outer() -> Any:
        def helper(a: int, b: str = "x") -> str:
            """Helper doc."""
            return b * a

        helper.custom_attribute = 7  # type: ignore[attr-defined]
        return helper, trace(event_type="chain", metadata={"m": 1})(helper)

    original, traced = outer()
    assert inspect.isfunction(traced)
    assert traced.__name__ == "helper"
    assert traced.__qualname__ == original.__qualname__
    assert traced.__qualname__.endswith("outer.<locals>.helper")
    assert traced.__doc__ == "Helper doc."
    assert traced.__wrapped__ is original
    assert traced.custom_attribute == 7
    assert inspect.signature(traced) == inspect.signature(original)


# -- wrappers with the function's own parameters ---------------------------------------
#
# A plain function without *args/**kwargs gets a wrapper generated with its own
# parameters; everything else gets the (*args, **kwargs) one. Both must behave alike.


def _layouts() -> list[tuple[Any, list[tuple[tuple[Any, ...], dict[str, Any]]]]]:
    def none() -> str:
        return "none"

    def pos(a: int, b: int) -> tuple[int, int]:
        return (a, b)

    def defaults(a: int, b: Any = None, c: str = "c") -> tuple[Any, ...]:
        return (a, b, c)

    def posonly(a: int, b: int = 2, /, c: int = 3) -> tuple[int, ...]:
        return (a, b, c)

    def kwonly(a: int, *, k: int, m: int = 9) -> tuple[int, ...]:
        return (a, k, m)

    def star_only(*, k: int = 1) -> int:
        return k

    def generic(a: int, *rest: int, **named: int) -> tuple[Any, ...]:
        return (a, rest, named)

    return [
        (none, [((), {})]),
        (pos, [((1, 2), {}), ((1,), {"b": 2}), ((), {"b": 2, "a": 1})]),
        (defaults, [((1,), {}), ((1, 2), {}), ((1,), {"c": "x"}), ((1, 2, "y"), {})]),
        (posonly, [((1,), {}), ((1, 5), {"c": 6}), ((1, 5, 6), {})]),
        (kwonly, [((1,), {"k": 2}), ((1,), {"k": 2, "m": 3}), ((), {"a": 1, "k": 2})]),
        (star_only, [((), {}), ((), {"k": 4})]),
        (generic, [((1,), {}), ((1, 2, 3), {"x": 4})]),
    ]


def test_own_parameter_wrappers_pass_arguments_as_the_function_receives_them(
    memory_tracer: HoneyHiveTracer,
) -> None:
    calls = 0
    for func, cases in _layouts():
        traced = trace(func)
        assert inspect.signature(traced) == inspect.signature(func)
        for args, kwargs in cases:
            assert traced(*args, **kwargs) == func(*args, **kwargs), (func, args, kwargs)
            calls += 1
    spans = memory_tracer.finished_spans()
    assert calls == 18
    assert len(spans) == calls
    # Captured inputs name every parameter, defaults included, whichever wrapper ran.
    by_name = {s["name"].rsplit(".", 1)[-1]: s["attributes"] for s in spans}
    kw = by_name["kwonly"]
    assert (kw["honeyhive_inputs.a"], kw["honeyhive_inputs.k"]) == (1, 2)
    assert kw["honeyhive_inputs.m"] == 9
    assert json.loads(by_name["generic"]["honeyhive_inputs.named"]) == {"x": 4}


def test_own_parameter_wrappers_raise_what_the_function_raises() -> None:
    for func, _ in _layouts():
        if func.__name__ == "generic":  # takes anything
            continue
        traced = trace(func)
        for args, kwargs in [((object(),) * 5, {}), ((), {"unexpected": 1})]:
            with pytest.raises(TypeError) as plain:
                func(*args, **kwargs)
            with pytest.raises(TypeError) as wrapped:
                traced(*args, **kwargs)
            assert str(wrapped.value) == str(plain.value), func

    error = ValueError("boom")

    def fails(x: int) -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        trace(fails)(1)
    assert raised.value is error
    # The wrapper's source is in linecache, so tracebacks show its lines.
    text = "".join(
        traceback.format_exception(type(raised.value), raised.value, raised.value.__traceback__)
    )
    assert "_ht_func(x)" in text


def test_own_parameter_wrappers_keep_default_objects() -> None:
    shared: list[int] = []

    def append(x: int, into: list[int] = shared, *, tag: Optional[list[int]] = shared) -> bool:
        into.append(x)
        return into is shared and tag is shared

    traced = trace(append)
    assert traced(1) is True
    assert shared == [1]
    assert traced.__defaults__ == (shared,)
    assert traced.__defaults__[0] is shared


def test_parameter_names_the_generated_wrapper_uses_fall_back_to_the_generic_one() -> None:
    def odd(_ht_scope: int, BaseException: int = 2) -> int:
        return _ht_scope + BaseException

    traced = trace(odd)
    assert traced(1) == 3
    assert traced(_ht_scope=1, BaseException=5) == 6
    # Parameter names that are not identifiers (a rewritten code object) are never
    # written into generated source.
    code = odd.__code__.replace(co_varnames=("a=print('injected')", "b"))
    weird = types.FunctionType(code, {}, "weird", odd.__defaults__)
    assert trace(weird)(1) == 3


async def _async_layouts() -> list[Any]:
    async def coro(a: int, b: int = 2, *, k: int = 3) -> tuple[int, ...]:
        await asyncio.sleep(0)
        return (a, b, k)

    traced = trace(coro)
    assert inspect.iscoroutinefunction(traced)
    return [await traced(1), await traced(1, 5, k=6), await traced(a=7)]


def test_own_parameter_wrappers_for_coroutines(memory_tracer: HoneyHiveTracer) -> None:
    assert asyncio.run(_async_layouts()) == [(1, 2, 3), (1, 5, 6), (7, 2, 3)]
    assert len(memory_tracer.finished_spans()) == 3


# -- binding --------------------------------------------------------------------------


class Calculator:
    factor = 10

    def __init__(self, base: int) -> None:
        self.base = base

    @trace
    def add(self, x: int) -> int:
        return self.base + x

    @trace
    @classmethod
    def scaled(cls, x: int) -> int:
        return cls.factor * x

    @classmethod
    @trace
    def scaled_inner(cls, x: int) -> int:
        return cls.factor * x

    @trace
    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @staticmethod
    @trace
    def triple(x: int) -> int:
        return 3 * x


class SubCalculator(Calculator):
    factor = 100


def test_methods_classmethods_and_staticmethods_bind(memory_tracer: HoneyHiveTracer) -> None:
    calc = Calculator(5)
    assert inspect.ismethod(calc.add) and calc.add.__self__ is calc
    assert calc.add(1) == 6
    assert Calculator.add(calc, 2) == 7
    assert inspect.ismethod(Calculator.scaled) and Calculator.scaled.__self__ is Calculator
    assert Calculator.scaled(3) == 30
    assert calc.scaled(3) == 30
    assert SubCalculator.scaled(3) == 300  # cls is the subclass
    assert SubCalculator.scaled_inner(3) == 300
    assert Calculator.double(4) == 8 and calc.double(4) == 8
    assert Calculator.triple(4) == 12 and calc.triple(4) == 12
    assert inspect.isfunction(Calculator.double)
    assert list(inspect.signature(calc.add).parameters) == ["x"]  # self is bound
    assert list(inspect.signature(Calculator.scaled).parameters) == ["x"]

    spans = memory_tracer.finished_spans()
    assert len(spans) == 10
    add = [s for s in spans if s["name"] == f"{__name__}.add"]
    assert len(add) == 2
    # self is not captured; the argument is
    assert add[0]["attributes"]["honeyhive_inputs.x"] == 1
    assert "honeyhive_inputs.self" not in add[0]["attributes"]
    scaled = [s for s in spans if s["name"] == f"{__name__}.scaled"]
    assert [s["attributes"]["honeyhive_outputs.result"] for s in scaled] == [30, 30, 300]
    assert "honeyhive_inputs.cls" not in scaled[0]["attributes"]


# -- async functions and generators keep their kind ---------------------------------------


def test_async_and_generator_functions_keep_their_kind(memory_tracer: HoneyHiveTracer) -> None:
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    def count(n: int) -> Iterator[int]:
        yield from range(n)

    async def acount(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    t_fetch, t_count, t_acount = trace(fetch), trace(count), trace(acount)
    assert inspect.iscoroutinefunction(t_fetch)
    assert inspect.isgeneratorfunction(t_count) and not inspect.iscoroutinefunction(t_count)
    assert inspect.isasyncgenfunction(t_acount)
    for traced, original in [(t_fetch, fetch), (t_count, count), (t_acount, acount)]:
        assert inspect.isfunction(traced)
        assert traced.__wrapped__ is original
        assert traced.__name__ == original.__name__
        assert inspect.signature(traced) == inspect.signature(original)

    async def consume() -> list[int]:
        return [i async for i in t_acount(3)]

    assert asyncio.run(t_fetch(1)) == 2
    assert list(t_count(3)) == [0, 1, 2]
    assert asyncio.run(consume()) == [0, 1, 2]
    names = {s["name"].rsplit(".", 1)[-1] for s in memory_tracer.finished_spans()}
    assert names == {"fetch", "count", "acount"}


# -- pickling ---------------------------------------------------------------------------


def test_module_level_traced_function_pickles_by_reference(
    memory_tracer: HoneyHiveTracer,
) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps(module_level, protocol=protocol)
        assert pickle.loads(data) is module_level
    assert pickle.loads(pickle.dumps(Calculator.double)) is Calculator.double
    restored = pickle.loads(pickle.dumps(module_level))
    assert restored(3) == 6
    span = memory_tracer.finished_spans()[0]
    assert span["name"] == f"{__name__}.module_level"
    assert span["attributes"]["honeyhive_event_type"] == "tool"


def test_cloudpickle_pickles_a_traced_main_function_by_value(tmp_path: Path) -> None:
    payload = tmp_path / "payload.pkl"
    producer = """
        import sys
        import cloudpickle
        from honeytrace import HoneyHiveTracer, trace

        tracer = HoneyHiveTracer.init(project="producer", test_mode=True)

        @trace(event_type="tool", metadata={"origin": "producer"})
        def scale(values, factor=10):
            return [v * factor for v in values]

        assert scale([1]) == [10]
        with open(sys.argv[1], "wb") as f:
            f.write(cloudpickle.dumps(scale))
    """
    consumer = """
        import json, pickle, sys
        from honeytrace import HoneyHiveTracer

        tracer = HoneyHiveTracer.init(project="consumer", test_mode=True)
        with open(sys.argv[1], "rb") as f:
            scale = pickle.loads(f.read())
        results = [scale([1, 2]), scale([3], factor=2)]
        spans = [
            {"name": s["name"], "attributes": s["attributes"]}
            for s in tracer.finished_spans()
        ]
        print(json.dumps({"results": results, "spans": spans}))
    """
    made = run_python(producer, cwd=str(tmp_path), args=[str(payload)])
    assert made.returncode == 0, made.stderr
    # Pickled by value: the consumer is another interpreter, whose __main__ has no `scale`.
    used = run_python(consumer, cwd=str(tmp_path), args=[str(payload)])
    assert used.returncode == 0, used.stderr
    out = json.loads(used.stdout.strip().splitlines()[-1])
    assert out["results"] == [[10, 20], [6]]
    assert [s["name"] for s in out["spans"]] == ["__main__.scale", "__main__.scale"]
    first, second = (s["attributes"] for s in out["spans"])
    assert json.loads(first["honeyhive_inputs.values"]) == [1, 2]
    assert first["honeyhive_inputs.factor"] == 10  # the default, kept in the pickle
    assert second["honeyhive_inputs.factor"] == 2
    assert json.loads(first["honeyhive_outputs.result"]) == [10, 20]
    assert first["honeyhive_event_type"] == "tool"
    assert first["honeyhive_metadata.origin"] == "producer"
    assert first["honeyhive.project"] == "consumer"  # the consumer's tracer recorded it


# -- task frameworks ----------------------------------------------------------------------


@pytest.fixture
def celery_app(request: pytest.FixtureRequest) -> Any:
    # Celery registers tasks with every app made later too (shared tasks): one app name
    # per test keeps the task names apart.
    app = celery.Celery(request.node.name, broker="memory://", backend="cache+memory://")
    app.conf.broker_transport_options = {"polling_interval": 0.05}
    app.conf.worker_hijack_root_logger = False
    yield app
    app.close()


def _celery_tasks(app: Any) -> tuple[Any, Any]:
    from celery import shared_task

    @app.task(name=f"{app.main}.add")
    @trace
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @shared_task(name=f"{app.main}.multiply")
    @trace(event_type="tool")
    def multiply(a: int, b: int) -> int:
        return a * b

    return add, multiply


def test_celery_tasks_over_trace_run_eagerly(
    celery_app: Any, memory_tracer: HoneyHiveTracer
) -> None:
    add, multiply = _celery_tasks(celery_app)
    celery_app.finalize()
    assert add.name in celery_app.tasks
    assert multiply.name in celery_app.tasks
    assert add.__doc__ == "Add two numbers."
    assert add.apply(args=(2, 3)).get() == 5
    assert multiply.apply(args=(4, 5)).get() == 20

    spans = spans_by_name(memory_tracer.finished_spans())
    assert set(spans) == {f"{__name__}.add", f"{__name__}.multiply"}
    a = spans[f"{__name__}.add"]["attributes"]
    assert (a["honeyhive_inputs.a"], a["honeyhive_inputs.b"]) == (2, 3)
    assert a["honeyhive_outputs.result"] == 5
    assert spans[f"{__name__}.multiply"]["attributes"]["honeyhive_event_type"] == "tool"


def test_celery_worker_runs_traced_tasks(celery_app: Any, memory_tracer: HoneyHiveTracer) -> None:
    from celery.contrib.testing.worker import start_worker

    add, multiply = _celery_tasks(celery_app)
    with start_worker(celery_app, pool="solo", perform_ping_check=False):
        assert add.delay(4, 5).get(timeout=10, interval=0.05) == 9
        assert multiply.delay(6, 7).get(timeout=10, interval=0.05) == 42

    spans = spans_by_name(memory_tracer.finished_spans())
    assert set(spans) == {f"{__name__}.add", f"{__name__}.multiply"}
    a = spans[f"{__name__}.add"]["attributes"]
    assert (a["honeyhive_inputs.a"], a["honeyhive_inputs.b"]) == (4, 5)
    assert a["honeyhive_outputs.result"] == 9
    m = spans[f"{__name__}.multiply"]["attributes"]
    assert m["honeyhive_outputs.result"] == 42


def _add(a: int, b: int) -> int:
    return a + b


def test_dask_delayed_over_a_traced_function(memory_tracer: HoneyHiveTracer) -> None:
    """``dask.delayed`` wraps the traced function; computing the graph (synchronous
    scheduler, so in this thread and context) calls it once per task, each call a span
    under the span that computed it."""
    left = dask.delayed(module_level)(2)
    right = dask.delayed(module_level)(3, y=5)
    total = dask.delayed(trace(event_type="chain")(_add))(left, right)
    assert memory_tracer.finished_spans() == []  # building the graph calls nothing
    with memory_tracer.start_as_current_span("compute") as parent:
        assert total.compute(scheduler="synchronous") == 4 + 15
    spans = memory_tracer.finished_spans()
    parent_id = parent.get_span_context().span_id
    tasks = [s for s in spans if s["name"] != "compute"]
    assert sorted(s["name"] for s in tasks) == sorted(
        [f"{__name__}.module_level"] * 2 + [f"{__name__}._add"]
    )
    assert all(int(s["parent_span_id"], 16) == parent_id for s in tasks)
    inputs = sorted(
        (s["attributes"]["honeyhive_inputs.x"], s["attributes"]["honeyhive_inputs.y"])
        for s in tasks
        if s["name"].endswith(".module_level")
    )
    assert inputs == [(2, 2), (3, 5)]
    (add,) = (s for s in tasks if s["name"].endswith("._add"))
    a = add["attributes"]
    assert (a["honeyhive_inputs.a"], a["honeyhive_inputs.b"]) == (4, 15)
    assert a["honeyhive_outputs.result"] == 19
    assert a["honeyhive_event_type"] == "chain"


def test_dask_delayed_decorator_stacks_on_trace(memory_tracer: HoneyHiveTracer) -> None:
    @dask.delayed
    @trace(event_type="tool")
    def inc(x: int) -> int:
        return x + 1

    assert dask.compute(inc(1), inc(41), scheduler="synchronous") == (2, 42)
    spans = memory_tracer.finished_spans()
    assert sorted(s["attributes"]["honeyhive_outputs.result"] for s in spans) == [2, 42]
    assert {s["attributes"]["honeyhive_event_type"] for s in spans} == {"tool"}
