"""The garbage collector sees honeytrace's objects.

Traced functions and classes created at run time (a handler defined per request, a
class per test, a decorator applied inside a function) sit in reference cycles: a
recursive function refers to itself through its closure, a method using ``super()``
refers to its class through ``__class__``, a default argument can refer back to the
function or class. The engine's objects in such a cycle (the ``TraceSpec``, which keeps
the decorated function's defaults, and the spans' context managers) must let the
collector traverse and clear them, or every cycle through them lives forever. Each case
creates 1000 of them with collection paused (they are all alive: only the cycle
collector can free them), then requires ``gc.collect()`` to free every one.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from honeytrace import HoneyHiveTracer, trace

N = 1000


@pytest.fixture
def paused_gc() -> Iterator[None]:
    """Automatic collection off while the cycles are made (so each case can check they
    are cycles), back on afterwards."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def alive(refs: list[weakref.ref[Any]]) -> int:
    return sum(r() is not None for r in refs)


def assert_all_collected(refs: list[weakref.ref[Any]]) -> None:
    assert len(refs) == N
    # Nothing freed them yet: each object is in a reference cycle.
    assert alive(refs) == N
    gc.collect()
    gc.collect()
    assert alive(refs) == 0, f"{alive(refs)} of {N} objects survived gc.collect()"


def make_many(make: Callable[[], Any]) -> list[weakref.ref[Any]]:
    refs = []
    for _ in range(N):
        refs.append(weakref.ref(make()))
    return refs


def test_recursive_traced_function_defined_per_call_is_collected(
    memory_tracer: HoneyHiveTracer, paused_gc: None
) -> None:
    """(a) A recursive @trace function defined inside a function (like a request
    handler), created, called once and dropped, 1000 times."""

    def handle_request() -> Callable[[int], int]:
        @trace
        def walk(n: int) -> int:
            return 0 if n == 0 else 1 + walk(n - 1)

        assert walk(2) == 2
        return walk

    refs = make_many(handle_request)
    assert_all_collected(refs)
    spans = memory_tracer.finished_spans()
    assert len(spans) == 3 * N  # every call was traced
    assert spans[0]["attributes"]["honeyhive_inputs.n"] == 0


def test_class_with_traced_super_method_is_collected(
    memory_tracer: HoneyHiveTracer, paused_gc: None
) -> None:
    """(b) A class defined 1000 times whose @trace method calls ``super()`` (the method
    refers to its class through the ``__class__`` cell)."""

    class Base:
        def greet(self, name: str) -> str:
            return f"hello {name}"

    def define() -> type:
        class Child(Base):
            @trace
            def greet(self, name: str) -> str:
                return super().greet(name) + "!"

        assert Child().greet("ann") == "hello ann!"
        return Child

    refs = make_many(define)
    assert_all_collected(refs)
    spans = memory_tracer.finished_spans()
    assert len(spans) == N
    assert spans[-1]["attributes"]["honeyhive_outputs.result"] == "hello ann!"


def test_traced_function_whose_default_refers_to_it_is_collected(
    memory_tracer: HoneyHiveTracer, paused_gc: None
) -> None:
    """(c) A default argument that refers back to the decorated function: the engine's
    TraceSpec keeps the defaults, so the cycle runs through it."""

    def define() -> Callable[..., Any]:
        registry: list[Any] = []

        @trace
        def handler(x: int, registry: list[Any] = registry) -> int:
            return x + len(registry)

        registry.append(handler)
        assert handler(1) == 2
        return handler

    refs = make_many(define)
    assert_all_collected(refs)
    assert len(memory_tracer.finished_spans()) == N


def test_traced_method_whose_default_refers_to_its_class_is_collected(
    memory_tracer: HoneyHiveTracer, paused_gc: None
) -> None:
    """(c) A default argument of a @trace method that refers back to the class."""

    def define() -> type:
        registry: dict[str, Any] = {}

        class Service:
            @trace(event_type="tool")
            def run(self, x: int, registry: dict[str, Any] = registry) -> int:
                return x * len(registry)

        registry["cls"] = Service
        assert Service().run(3) == 3
        return Service

    refs = make_many(define)
    assert_all_collected(refs)
    assert len(memory_tracer.finished_spans()) == N


def test_start_as_current_span_decorator_defined_per_call_is_collected(
    memory_tracer: HoneyHiveTracer, paused_gc: None
) -> None:
    """(c) ``tracer.start_as_current_span("x")`` used as a decorator inside a function,
    on a recursive function."""
    tracer = memory_tracer

    def handle_request() -> Callable[[int], int]:
        @tracer.start_as_current_span("x")
        def walk(n: int) -> int:
            return 0 if n == 0 else 1 + walk(n - 1)

        assert walk(1) == 1
        return walk

    refs = make_many(handle_request)
    assert_all_collected(refs)
    spans = memory_tracer.finished_spans()
    assert len(spans) == 2 * N
    assert {s["name"] for s in spans} == {"x"}
