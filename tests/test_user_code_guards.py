"""Where honeytrace reads a user's object, the user's code runs only where it may (with
tracing suppressed, inside a section), never longer than the read that needed it, and
what an object's own methods would say does not replace what honeytrace reads at the
C level (digits of an int, items of a tuple).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from conftest import run_python
from honeytrace import HoneyHiveTracer, trace
from honeytrace.integrations.asgi import HoneyTraceASGIMiddleware

Make = Callable[..., HoneyHiveTracer]


def names(t: HoneyHiveTracer) -> list[str]:
    return [s["name"].rsplit(".", 1)[-1] for s in t.finished_spans()]


class Chunk:
    """A streamed item only its ``__repr__`` describes (user code)."""

    def __repr__(self) -> str:
        return "Chunk()"


def test_a_streamed_item_read_by_its_repr_does_not_silence_tracing_for_the_stream(
    memory_tracer: HoneyHiveTracer,
) -> None:
    @trace
    def step(i: int) -> int:
        return i

    @trace
    def stream() -> Iterator[Any]:
        yield Chunk()
        step(1)  # in the generator, after an item that needed user code
        yield Chunk()

    for _ in stream():
        step(2)  # in the consumer's loop
    assert sorted(names(memory_tracer)) == ["step", "step", "step", "stream"]


def test_text_items_before_another_item_are_kept_in_the_output(
    memory_tracer: HoneyHiveTracer,
) -> None:
    @trace
    def words() -> Iterator[str]:
        yield "a"
        yield "b"

    @trace
    def mixed() -> Iterator[Any]:
        yield "a"
        yield "b\n"
        yield 3
        yield "c"

    assert list(words()) == ["a", "b"]
    assert list(mixed()) == ["a", "b\n", 3, "c"]
    out = {
        s["name"].rsplit(".", 1)[-1]: s["attributes"]["honeyhive_outputs.result"]
        for s in memory_tracer.finished_spans()
    }
    assert out["words"] == "ab"
    assert json.loads(out["mixed"]) == ["a", "b\n", 3, "c"]


def test_a_span_ended_through_done_is_exported(memory_tracer: HoneyHiveTracer) -> None:
    span = memory_tracer.start_span("plain")
    assert span._done(5) == 5
    assert names(memory_tracer) == ["plain"]


def test_cut_bytes_carry_one_truncation_marker(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, max_attribute_bytes=200)

    @trace
    def upload(blob: Any) -> None:
        return None

    upload([bytes(range(256)) * 10])  # not UTF-8: written as base64, cut
    value = t.finished_spans()[0]["attributes"]["honeyhive_inputs.blob"]
    assert len(value.encode()) <= 200
    (text,) = json.loads(value)
    assert text.startswith("base64:")
    assert text.endswith("…(truncated)")
    # One marker, after whole base64 (not a marker cut inside another).
    encoded = text[len("base64:") : -len("…(truncated)")]
    assert (
        base64.b64decode(encoded, validate=True)
        == (bytes(range(256)) * 10)[: len(encoded) // 4 * 3]
    )


def test_a_dict_key_of_an_int_subclass_is_read_with_tracing_suppressed(
    memory_tracer: HoneyHiveTracer,
) -> None:
    @trace
    def inside() -> str:
        return "k"

    class Key(int):
        def __str__(self) -> str:
            return inside()

    @trace
    def f(d: dict[Any, str]) -> None:
        return None

    f({Key(7): "v"})
    spans = memory_tracer.finished_spans()
    assert [s["name"].rsplit(".", 1)[-1] for s in spans] == ["f"]
    assert json.loads(spans[0]["attributes"]["honeyhive_inputs.d"]) == {"k": "v"}


def test_a_big_int_attribute_is_its_digits_whatever_its_str_says(
    memory_tracer: HoneyHiveTracer,
) -> None:
    class Big(int):
        def __str__(self) -> str:
            return "not digits"

    span = memory_tracer.start_span("s")
    span.set_attribute("n", Big(10**30))
    span.end()
    assert memory_tracer.finished_spans()[0]["attributes"]["n"] == str(10**30)


def test_asgi_scope_parts_are_read_without_running_their_methods(
    memory_tracer: HoneyHiveTracer,
) -> None:
    touched: list[str] = []

    class Server:
        """Not the `(host, port)` tuple the spec asks for."""

        def __getitem__(self, i: int) -> Any:
            touched.append("server")
            return ("evil", 1)[i]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": ((b"user-agent", b"probe/1"),),
        "server": Server(),
        "client": ("127.0.0.1", 5000),
    }
    asyncio.run(HoneyTraceASGIMiddleware(app, memory_tracer)(scope, receive, send))
    (span,) = memory_tracer.finished_spans()
    assert touched == []
    assert span["attributes"]["user_agent.original"] == "probe/1"
    assert span["attributes"]["client.address"] == "127.0.0.1"
    assert "server.address" not in span["attributes"]


def test_decorating_starts_no_thread_before_a_tracer_exists() -> None:
    out = run_python(
        """
        import threading
        from honeytrace import trace

        @trace
        def f():
            return 1

        assert f() == 1
        print(sorted(t.name for t in threading.enumerate()))
        """
    )
    assert out.returncode == 0, out.stderr
    assert "honeytrace-log" not in out.stdout
    assert "MainThread" in out.stdout


def test_a_tracer_argument_must_be_a_tracer() -> None:
    class LooksLikeOne:
        _core = object()

    with pytest.raises(TypeError, match="tracer must be a HoneyHiveTracer"):
        trace(tracer=LooksLikeOne())


def test_a_context_honeytrace_cannot_read_gets_its_own_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import MappingProxyType

    from honeytrace import _compat

    assert _compat._single_key(MappingProxyType({"k": 1}), "own") == "k"
    with caplog.at_level("WARNING", logger="honeytrace"):
        assert _compat._single_key(object(), "own") == "own"
    assert "not a mapping" in caplog.text
