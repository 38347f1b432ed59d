"""Input/output capture: types, bounds, redaction, and the HoneyHive baggage rules."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from typing import Any, Callable

import numpy as np
import pydantic
import pytest
from opentelemetry import baggage, context

import honeytrace
from conftest import captured
from honeytrace import HoneyHiveTracer, trace

Make = Callable[..., HoneyHiveTracer]


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Model(pydantic.BaseModel):
    name: str
    when: datetime.date
    tags: list[str]


class Plain:
    def __init__(self) -> None:
        self.a = 1
        self.b = "two"


class Opaque:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<Opaque>"


NATIVE = object()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", NATIVE),
        (42, NATIVE),
        (2.5, NATIVE),
        (True, NATIVE),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ((1, "x"), [1, "x"]),
        ({3}, [3]),
        (Point(1, 2), {"x": 1, "y": 2}),
        (
            Model(name="m", when=datetime.date(2025, 1, 2), tags=["t"]),
            {"name": "m", "when": "2025-01-02", "tags": ["t"]},
        ),
        (Color.RED, "red"),
        (datetime.datetime(2025, 1, 2, 3, 4, 5), "2025-01-02T03:04:05"),
        (datetime.time(1, 2), "01:02:00"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (decimal.Decimal("1.10"), "1.10"),
        (b"bytes", "bytes"),
        (b"\xff\x00", "base64:/wA="),
        (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
        (np.float32(1.5), 1.5),
        (Plain(), {"a": 1, "b": "two"}),
        (Opaque(), "<Opaque>"),
        (2**100, 2**100),  # beyond int64: a JSON number with every digit
        # Numbers inside JSON round-trip exactly, exponents and int64 edges included.
        (
            [0.2, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 3.0, -(2**63), 2**63 - 1, 0],
            [0.2, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 3.0, -(2**63), 2**63 - 1, 0],
        ),
    ],
)
def test_values_become_native_or_json(
    memory_tracer: HoneyHiveTracer, value: Any, expected: Any
) -> None:
    got = captured(memory_tracer, value)
    if expected is NATIVE:
        assert got == value and type(got) is type(value)
    else:
        assert isinstance(got, str)
        assert json.loads(got) == expected


def test_nan_stays_a_float(memory_tracer: HoneyHiveTracer) -> None:
    got = captured(memory_tracer, float("nan"))
    assert isinstance(got, float) and got != got


def test_none_arguments_are_skipped(memory_tracer: HoneyHiveTracer) -> None:
    assert captured(memory_tracer, None) is None


def test_cycles_and_deep_nesting_are_bounded(memory_tracer: HoneyHiveTracer) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert json.loads(captured(memory_tracer, loop)) == [1, "<cycle>"]
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    text = captured(memory_tracer, deep)
    assert "<max depth>" in text
    json.loads(text)


def test_huge_values_are_truncated_and_stay_valid_json(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, max_attribute_bytes=1024)
    big = {"rows": [{"id": i, "text": "x" * 50} for i in range(1000)]}
    text = captured(t, big)
    assert len(text.encode()) < 1300
    decoded = json.loads(text)  # still valid JSON
    assert "…(truncated)" in text
    assert decoded["rows"][0] == {"id": 0, "text": "x" * 50}
    long = captured(t, "y" * 5000)
    assert long.startswith("yyy") and long.endswith("…(truncated)")
    assert len(long.encode()) <= 1024 + len("…(truncated)".encode())
    arr = captured(t, np.zeros(1_000_000))
    assert arr.startswith('"<ndarray shape=(1000000,)')


def test_ignore_inputs_and_capture_switches(memory_tracer: HoneyHiveTracer) -> None:
    @trace(ignore_inputs=["password"])
    def login(user: str, password: str) -> str:
        return "token"

    @trace(capture_inputs=False, capture_outputs=False)
    def quiet(secret: str) -> str:
        return secret

    @trace(inputs={"q": "given"}, outputs={"a": "fixed"})
    def explicit(q: str) -> str:
        return "ignored"

    login("ann", "hunter2")
    quiet("s3cret")
    explicit("from-arg")
    a, b, c = (s["attributes"] for s in memory_tracer.finished_spans())
    assert a["honeyhive_inputs.user"] == "ann"
    assert "honeyhive_inputs.password" not in a
    assert a["honeyhive_outputs.result"] == "token"
    assert not any(k.startswith(("honeyhive_inputs", "honeyhive_outputs")) for k in b)
    assert c["honeyhive_inputs.q"] == "given"
    assert c["honeyhive_outputs.a"] == "fixed"
    assert "honeyhive_outputs.result" not in c


def test_defaults_varargs_and_kwargs_are_bound(memory_tracer: HoneyHiveTracer) -> None:
    @trace
    def f(a: int, b: int = 2, *rest: int, c: str = "c", **extra: Any) -> None:
        return None

    f(1, 5, 6, 7, c="C", flag=True)
    f(9)
    first, second = (s["attributes"] for s in memory_tracer.finished_spans())
    assert (first["honeyhive_inputs.a"], first["honeyhive_inputs.b"]) == (1, 5)
    assert json.loads(first["honeyhive_inputs.rest"]) == [6, 7]
    assert first["honeyhive_inputs.c"] == "C"
    assert json.loads(first["honeyhive_inputs.extra"]) == {"flag": True}
    assert (second["honeyhive_inputs.b"], second["honeyhive_inputs.c"]) == (2, "c")
    assert "honeyhive_inputs.rest" not in second


def test_redaction_hook_sees_every_captured_value(make_tracer: Make) -> None:
    seen: list[str] = []

    def redact(key: str, value: Any) -> Any:
        seen.append(key)
        if key.endswith("api_key") or key.endswith(".ssn"):
            return "[redacted]"
        return value

    t = make_tracer(test_mode=True, redact=redact)
    try:

        @trace(metadata={"ssn": "123-45"})
        def call(api_key: str, query: str) -> dict[str, str]:
            honeytrace.enrich_span(metadata={"user": {"ssn": "999"}})
            return {"api_key": "out-secret"}

        call("sk-123", "hi")
        a = t.finished_spans()[0]["attributes"]
        assert a["honeyhive_inputs.api_key"] == "[redacted]"
        assert a["honeyhive_inputs.query"] == "hi"
        assert a["honeyhive_metadata.ssn"] == "[redacted]"
        assert a["honeyhive_metadata.user.ssn"] == "[redacted]"
        assert set(seen) >= {
            "honeyhive_inputs.api_key",
            "honeyhive_inputs.query",
            "honeyhive_outputs.result",
            "honeyhive_metadata.user.ssn",
        }

        def broken(key: str, value: Any) -> Any:
            raise RuntimeError("oops")

        honeytrace.set_redactor(broken)
        t.clear_finished_spans()
        call("sk-456", "hi")
        a = t.finished_spans()[0]["attributes"]
        assert a["honeyhive_inputs.api_key"] == "<redaction failed>"  # never the raw value
        assert "sk-456" not in json.dumps(a)
    finally:
        honeytrace.set_redactor(None)


# -- HoneyHive's baggage-preservation cases (HoneyHive 1.7's cases) -------------------------


def _with_baggage(**items: str) -> Any:
    ctx = context.get_current()
    for k, v in items.items():
        ctx = baggage.set_baggage(k, v, ctx)
    return context.attach(ctx)


def test_remote_session_is_preserved_and_local_never_written(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, project="server-p", source="server")
    seen: dict[str, Any] = {}

    @trace
    def child() -> None:
        seen["child"] = baggage.get_baggage("session_id")

    @trace
    def handler() -> None:
        seen["handler"] = baggage.get_baggage("session_id")
        child()

    token = _with_baggage(session_id="remote", project="client-p", source="client")
    try:
        handler()
    finally:
        context.detach(token)
    assert seen == {"handler": "remote", "child": "remote"}
    spans = t.finished_spans()
    assert len(spans) == 2
    for s in spans:
        a = s["attributes"]
        assert (a["honeyhive.session_id"], a["honeyhive.project"], a["honeyhive.source"]) == (
            "remote",
            "client-p",
            "client",
        )


def test_without_baggage_the_decorator_sets_the_tracer_session_for_children(
    make_tracer: Make,
) -> None:
    t = make_tracer(test_mode=True, project="p", source="s")
    inside: dict[str, Any] = {}

    @trace
    def f() -> None:
        inside.update(baggage.get_all())

    f()
    assert inside == {"session_id": t.session_id, "project": "p", "source": "s"}
    assert baggage.get_all() == {}  # restored after the call


def test_remote_session_without_project_and_source(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, project="local-p", source="local-s")
    inside: dict[str, Any] = {}

    @trace
    def f() -> None:
        inside.update(baggage.get_all())

    token = _with_baggage(session_id="remote")
    try:
        f()
    finally:
        context.detach(token)
    assert inside == {"session_id": "remote", "project": "local-p", "source": "local-s"}
    a = t.finished_spans()[0]["attributes"]
    assert (a["honeyhive.session_id"], a["honeyhive.project"]) == ("remote", "local-p")


def test_explicit_session_on_the_decorator_starts_that_session(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)

    @trace
    def child() -> str:
        return str(baggage.get_baggage("session_id"))

    @trace(session_id="explicit-session", project="explicit-p")
    def parent() -> str:
        return child()

    token = _with_baggage(session_id="remote")
    try:
        assert parent() == "explicit-session"
    finally:
        context.detach(token)
    spans = t.finished_spans()
    assert len(spans) == 2
    for s in spans:
        assert s["attributes"]["honeyhive.session_id"] == "explicit-session"
        assert s["attributes"]["honeyhive.project"] == "explicit-p"


def test_broken_baggage_never_breaks_the_function(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)

    class Evil:
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    ctx = baggage.set_baggage("session_id", Evil())  # type: ignore[arg-type]
    token = context.attach(ctx)
    try:

        @trace
        def f() -> int:
            return 7

        assert f() == 7
    finally:
        context.detach(token)
    assert t.finished_spans()[0]["attributes"]["honeyhive.session_id"] == t.session_id
