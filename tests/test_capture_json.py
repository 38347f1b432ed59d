"""Captured values are always valid JSON within the byte budget (src/py/capture.rs).

The property: whatever a traced call is given or returns — nested containers with any
keys, odd strings, huge numbers, objects with cycles through themselves or an ancestor,
objects whose ``__repr__`` raises, containers mutated by a ``__repr__`` while they are
captured — every captured attribute is at most ``max_attribute_bytes`` in UTF-8, and
the ones that hold JSON parse as strict JSON (no NaN/Infinity tokens).
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Callable, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import honeytrace
from conftest import captured
from honeytrace import HoneyHiveTracer, trace

Make = Callable[..., HoneyHiveTracer]

MARKER = "…(truncated)"
I64 = (-(2**63), 2**63 - 1)
CAPTURE_PREFIXES = ("honeyhive_inputs.", "honeyhive_outputs.", "honeyhive_metadata.")


# -- objects the values are built from ------------------------------------------------


class Obj:
    """A plain object: captured through its ``__dict__``."""


class BadRepr:
    """No ``__dict__``: captured by ``repr``, which raises."""

    __slots__ = ()

    def __repr__(self) -> str:
        raise ValueError("no repr")


class BadKey:
    """A dict key whose ``str()`` raises."""

    __slots__ = ()

    def __str__(self) -> str:
        raise ValueError("no str")

    __repr__ = __str__


class Mutator:
    """Its ``__repr__`` changes the container being captured around it."""

    __slots__ = ("mode", "target")

    def __init__(self, target: Any, mode: int) -> None:
        self.target = target
        self.mode = mode

    def __repr__(self) -> str:
        t = self.target
        if isinstance(t, list):
            if self.mode == 0:
                t.append("added by repr")
            elif self.mode == 1:
                t.clear()
            else:
                t[:] = list(range(50))
        elif isinstance(t, dict):
            if self.mode == 0:
                t[f"added-{len(t)}"] = "x" * 100
            elif self.mode == 1:
                t.clear()
            else:
                t.update({i: i for i in range(50)})
        elif isinstance(t, Obj):
            if self.mode == 0:
                setattr(t, f"added_{len(vars(t))}", [1, 2, 3])
            else:
                vars(t).clear()
        return "<mutator>"


# -- the value strategy ---------------------------------------------------------------
#
# Hypothesis draws a *spec* (plain tuples, printed readably on failure); `build` turns it
# into the real objects, tying references to ancestors (cycles) and mutators to the
# enclosing containers.

SPECIAL_CHARS = [
    "\ud800",
    "\udfff",
    "\udc80",
    "\x00",
    "\x1f",
    "\x7f",
    "\u2028",
    '"',
    "\\",
    "\n",
    "é",
    "😀",
]

strings = st.one_of(
    st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS)), max_size=20).map("".join),
    # Long runs of 1-, 2-, 3- and 4-byte characters, escapes and surrogates: truncation.
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["x", "é", "€", "😀", "\\", '"', "\n", "\x01", "\ud800"]),
        st.integers(0, 5000),
    ),
)
ints = st.one_of(
    st.integers(),
    st.sampled_from([I64[0], I64[1], I64[0] - 1, I64[1] + 1, 2**100, -(10**300)]),
)
scalars = st.one_of(
    strings.map(lambda s: ("v", s)),
    ints.map(lambda i: ("v", i)),
    # 10**k for k up to 5000: beyond int_max_str_digits (4300) str() raises.
    st.sampled_from([1000, 4299, 4300, 5000]).map(lambda k: ("pow10", k)),
    st.floats().map(lambda f: ("v", f)),  # nan and ±inf included
    st.sampled_from([None, True, False]).map(lambda v: ("v", v)),
    st.binary(max_size=3000).map(lambda b: ("v", b)),
    strings.map(lambda s: ("v", s.encode("utf-8", "surrogatepass"))),
    st.just(("bad_repr",)),
    st.integers(0, 6).map(lambda k: ("ancestor", k)),
    st.tuples(st.integers(0, 6), st.integers(0, 2)).map(lambda km: ("mutator", *km)),
)
keys = st.one_of(
    strings.map(lambda s: ("v", s)),
    st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.binary(max_size=4)).map(
        lambda k: ("v", k)
    ),
    st.tuples(st.integers(), st.text(max_size=3)).map(lambda k: ("v", k)),
    st.frozensets(st.integers(), max_size=3).map(lambda k: ("v", k)),
    st.just(("bad_key",)),
)
hashables = st.one_of(
    st.integers(), st.text(max_size=5), st.floats(), st.booleans(), st.binary(max_size=5)
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=6).map(lambda c: ("list", c)),
        st.lists(children, max_size=6).map(lambda c: ("tuple", c)),
        st.lists(st.tuples(keys, children), max_size=6).map(lambda c: ("dict", c)),
        st.lists(st.tuples(st.text(max_size=6), children), max_size=6).map(lambda c: ("obj", c)),
        st.frozensets(hashables, max_size=6).map(lambda c: ("set", c)),
        st.frozensets(hashables, max_size=6).map(lambda c: ("frozenset", c)),
        # A deep chain, beyond the 32-level limit.
        st.tuples(st.sampled_from(["list", "dict", "obj"]), st.integers(30, 45), children).map(
            lambda c: ("chain", *c)
        ),
    )


specs = st.recursive(scalars, _containers, max_leaves=40)


def build(spec: Any, stack: list[Any] | None = None) -> Any:
    """The object a spec describes; `stack` holds the enclosing mutable containers."""
    stack = [] if stack is None else stack
    tag = spec[0]
    if tag == "v":
        return spec[1]
    if tag == "pow10":
        return 10 ** spec[1]
    if tag == "bad_repr":
        return BadRepr()
    if tag == "bad_key":
        return BadKey()
    if tag == "ancestor":  # 0: the immediate container (a self-reference)
        return stack[-1 - spec[1] % len(stack)] if stack else None
    if tag == "mutator":
        target = stack[-1 - spec[1] % len(stack)] if stack else []
        return Mutator(target, spec[2])
    if tag == "set":
        return set(spec[1])
    if tag == "frozenset":
        return frozenset(spec[1])
    if tag == "tuple":
        return tuple(build(c, stack) for c in spec[1])
    if tag == "chain":
        _, kind, n, leaf = spec
        value = build(leaf, stack)
        for _ in range(n):
            if kind == "list":
                value = [value]
            elif kind == "dict":
                value = {"k": value}
            else:
                o = Obj()
                o.inner = value
                value = o
        return value
    container: Any = {"list": list, "dict": dict, "obj": Obj}[tag]()
    stack.append(container)
    try:
        for child in spec[1]:
            if tag == "list":
                container.append(build(child, stack))
            elif tag == "dict":
                key, value = child
                container[build(key, stack)] = build(value, stack)
            else:
                name, value = child
                setattr(container, name, build(value, stack))
    finally:
        stack.pop()
    return container


# -- checks ---------------------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ValueError(f"not strict JSON: {token}")


def strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def is_native(value: Any) -> bool:
    """Values captured as themselves, not as JSON text."""
    if isinstance(value, (str, bool, float)):
        return True
    return isinstance(value, int) and I64[0] <= value <= I64[1]


def utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))  # raises on a lone surrogate: never exported


def check_span(attrs: dict[str, Any], budget: int, json_keys: list[str]) -> None:
    captured = {k: v for k, v in attrs.items() if k.startswith(CAPTURE_PREFIXES)}
    for key, v in captured.items():
        if isinstance(v, str):
            assert utf8_len(v) <= budget, (key, utf8_len(v), budget)
    for key in json_keys:
        assert key in captured, (key, sorted(captured))
        text = captured[key]
        assert isinstance(text, str), (key, text)
        assert utf8_len(text) <= budget, (key, utf8_len(text), budget)
        try:
            strict_json(text)
        except ValueError as e:
            raise AssertionError(f"{key}: invalid JSON ({e}): {text!r}") from e


def identity_redactor(key: str, value: Any) -> Any:
    return value


def capture_all(budget: int, value: Any, redact: bool) -> None:
    """Trace one call that captures `value` every way, and check what was recorded."""
    tracer = HoneyHiveTracer.init(test_mode=True, max_attribute_bytes=budget)
    if redact:
        honeytrace.set_redactor(identity_redactor)
    try:

        class Wrap:
            def __init__(self, w: Any) -> None:
                self.w = w

        @trace(tracer=tracer)
        def f(v: Any, *rest: Any, **kw: Any) -> Any:
            honeytrace.enrich_span(metadata={"flat": v, "wrapped": Wrap(v)})
            return v

        @trace(tracer=tracer)
        def stream(v: Any) -> Any:
            yield v
            yield [v]

        f(value, value, kw=value)
        assert len(list(stream(value))) == 2
        spans = tracer.finished_spans()
        assert len(spans) == 2
        json_keys = [
            "honeyhive_inputs.rest",
            "honeyhive_inputs.kw",
            "honeyhive_metadata.wrapped",
        ]
        if value is not None and not is_native(value):
            json_keys += ["honeyhive_inputs.v", "honeyhive_outputs.result"]
        check_span(spans[0]["attributes"], budget, json_keys)
        # A generator's items: a JSON array of what it yielded.
        json_keys = ["honeyhive_outputs.result"]
        if value is not None and not is_native(value):
            json_keys.append("honeyhive_inputs.v")
        check_span(spans[1]["attributes"], budget, json_keys)
    finally:
        honeytrace.set_redactor(None)
        tracer.shutdown(timeout=1.0)


# -- the property -------------------------------------------------------------------------


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=specs, budget=st.integers(64, 4096), redact=st.booleans())
def test_any_value_is_valid_json_within_the_budget(spec: Any, budget: int, redact: bool) -> None:
    capture_all(budget, build(spec), redact)


@pytest.mark.parametrize("budget", [64, 65, 97, 4096])
@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=specs)
def test_edge_budgets(budget: int, spec: Any) -> None:
    capture_all(budget, build(spec), redact=False)


# -- explicit examples -------------------------------------------------------------------------


class Node:
    def __init__(self) -> None:
        self.me = self


class Box:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


def test_self_reference_is_a_cycle_marker(memory_tracer: HoneyHiveTracer) -> None:
    # Before: {"me":"<cycle>""<__main__.Node object at 0x…>"} (invalid JSON).
    assert strict_json(captured(memory_tracer, Node())) == {"me": "<cycle>"}


def test_reference_to_an_ancestor_is_a_cycle_marker(memory_tracer: HoneyHiveTracer) -> None:
    parent, child = Obj(), Obj()
    parent.name = "p"
    parent.child = child
    child.parent = parent
    child.items = [parent, {"back": child}]
    got = strict_json(captured(memory_tracer, parent))
    assert got == {
        "name": "p",
        "child": {"parent": "<cycle>", "items": ["<cycle>", {"back": "<cycle>"}]},
    }
    # The same object twice, side by side, is not a cycle.
    shared = {"x": 1}
    assert strict_json(captured(memory_tracer, [shared, shared])) == [{"x": 1}, {"x": 1}]


@pytest.mark.parametrize("kind", ["obj", "dict", "list"])
def test_forty_deep_nesting_stops_at_32_levels(memory_tracer: HoneyHiveTracer, kind: str) -> None:
    # Before: 40 nested objects gave {"inner":…"<max depth>""<__main__.Box object at …>"}.
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"obj": Box, "dict": lambda d: {"inner": d}, "list": lambda d: [d]}[kind](deep)
    got = strict_json(captured(memory_tracer, deep))
    levels = 0
    while not isinstance(got, str):
        got = got["inner"] if isinstance(got, dict) else got[0]
        levels += 1
    assert (levels, got) == (32, "<max depth>")


@pytest.mark.parametrize("budget", [64, 1000, 65536])
def test_the_sys_module_as_an_argument(make_tracer: Make, budget: int) -> None:
    # Before: invalid JSON (a "<cycle>" marker followed by a repr, inside sys.__dict__).
    t = make_tracer(test_mode=True, max_attribute_bytes=budget)
    text = captured(t, sys)
    assert utf8_len(text) <= budget
    got = strict_json(text)
    if budget >= 1000:
        assert got["__name__"] == "sys"


def test_a_100kb_string_in_a_dict_at_budget_1000(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, max_attribute_bytes=1000)
    text = captured(t, {"big": "x" * 100_000})
    n = utf8_len(text)
    assert 900 < n <= 1000, n  # the budget is used, never exceeded (before: overshoot)
    assert text.endswith(MARKER + '"}')
    got = strict_json(text)
    assert list(got) == ["big"] and got["big"].endswith("x" + MARKER)


@pytest.mark.parametrize("budget", [64, 100, 1000])
def test_truncation_marker_and_closers_fit_in_the_budget(make_tracer: Make, budget: int) -> None:
    t = make_tracer(test_mode=True, max_attribute_bytes=budget)
    values = [
        [[["é" * 5000]]],
        {"a": {"b": {"c": ["\x01" * 5000]}}},
        [1] * 5000,
        {f"key{i}": i for i in range(5000)},
        [{"k" * 200: 1}],
        {"k" * 5000: 1},
        [b"\xff" * 5000],
        [2**100] * 500,
        [10**5000],  # beyond int_max_str_digits: a marker, not an error
    ]
    for v in values:
        text = captured(t, v)
        assert utf8_len(text) <= budget, (v if len(repr(v)) < 100 else type(v), text)
        strict_json(text)
    # A top-level string is cut within the budget too, marker included.
    long = captured(t, "y" * 5000)
    assert long.endswith(MARKER) and utf8_len(long) <= budget


def test_containers_are_snapshotted_before_a_repr_mutates_them(
    memory_tracer: HoneyHiveTracer,
) -> None:
    items: list[Any] = [1]
    items += [Mutator(items, 1), 3]  # its repr clears the list being captured
    assert strict_json(captured(memory_tracer, items)) == [1, "<mutator>", 3]
    d: dict[Any, Any] = {"a": 1}
    d["m"] = Mutator(d, 2)  # its repr adds 50 keys while the dict is captured
    d["z"] = 2
    assert strict_json(captured(memory_tracer, d)) == {"a": 1, "m": "<mutator>", "z": 2}
    o = Obj()
    o.a = 1
    o.m = Mutator(o, 1)  # its repr clears the object's __dict__
    o.z = 2
    assert strict_json(captured(memory_tracer, o)) == {"a": 1, "m": "<mutator>", "z": 2}


def test_a_raising_repr_is_counted_and_replaced(memory_tracer: HoneyHiveTracer) -> None:
    class BadDump:
        __pydantic_fields__: ClassVar[dict[str, Any]] = {}  # taken for a pydantic model

        def model_dump(self, **kw: Any) -> Any:
            raise ValueError("no dump")

        def __repr__(self) -> str:
            raise ValueError("no repr")

    class BadDate(datetime.date):
        def isoformat(self) -> str:
            raise ValueError("no isoformat")

        def __repr__(self) -> str:
            return "BadDate()"

    before = memory_tracer.stats()["values_unconvertible"]
    assert strict_json(captured(memory_tracer, [BadRepr()])) == ["<unrepresentable BadRepr>"]
    assert memory_tracer.stats()["values_unconvertible"] == before + 1
    # model_dump and repr both raise: two failures, one placeholder.
    assert strict_json(captured(memory_tracer, [BadDump()])) == ["<unrepresentable BadDump>"]
    assert memory_tracer.stats()["values_unconvertible"] == before + 3
    # isoformat raises: counted, and the repr stands in.
    assert captured(memory_tracer, BadDate(2025, 1, 2)) == '"BadDate()"'
    assert memory_tracer.stats()["values_unconvertible"] == before + 4
    # A dict key whose str() raises: counted, its type name stands in.
    assert strict_json(captured(memory_tracer, {BadKey(): 1})) == {"BadKey": 1}
    assert memory_tracer.stats()["values_unconvertible"] == before + 5


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_the_result_repr_propagates_and_the_span_ends(
    memory_tracer: HoneyHiveTracer, exc: type[BaseException]
) -> None:
    class Stop:
        __slots__ = ()

        def __repr__(self) -> str:
            raise exc()

    called = []

    @trace(tracer=memory_tracer)
    def f() -> Any:
        called.append(1)
        return Stop()

    with pytest.raises(exc):
        f()
    assert called == [1]
    stats = memory_tracer.stats()
    assert stats["started"] == stats["ended"] == 1
    assert len(memory_tracer.finished_spans()) == 1


def test_static_decorator_metadata_is_within_the_budget(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, max_attribute_bytes=1000)

    @trace(tracer=t, metadata={"note": "y" * 5000, "nested": {"rows": ["z" * 5000]}})
    def f() -> None:
        return None

    f()
    attrs = t.finished_spans()[0]["attributes"]
    sizes = {
        k: utf8_len(v)
        for k, v in attrs.items()
        if k.startswith("honeyhive_metadata.") and isinstance(v, str)
    }
    assert sizes and max(sizes.values()) <= 1000, sizes


def test_enrich_span_metadata_is_within_the_budget(make_tracer: Make) -> None:
    # The same values through enrich_span: bounded by the tracer's budget.
    t = make_tracer(test_mode=True, max_attribute_bytes=1000)

    @trace(tracer=t)
    def f() -> None:
        honeytrace.enrich_span(metadata={"note": "y" * 5000, "nested": {"rows": ["z" * 5000]}})

    f()
    attrs = t.finished_spans()[0]["attributes"]
    assert utf8_len(attrs["honeyhive_metadata.note"]) <= 1000
    assert attrs["honeyhive_metadata.note"].endswith(MARKER)
    assert utf8_len(attrs["honeyhive_metadata.nested.rows.0"]) <= 1000


class NotDigits(int):
    """An int subclass whose str() is not a number (as str() of an IntEnum member is
    on Python < 3.11: "Big.X")."""

    def __str__(self) -> str:
        return "not a number"


def test_a_big_int_subclass_with_its_own_str_is_valid_json(memory_tracer: HoneyHiveTracer) -> None:
    for value in (NotDigits(2**70), [NotDigits(2**70)]):
        text = captured(memory_tracer, value)
        strict_json(text)


class BadIter(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise ValueError("no iter")


class InterruptingIter(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise KeyboardInterrupt


def test_a_raising_iter_of_a_list_subclass_is_counted(memory_tracer: HoneyHiveTracer) -> None:
    before = memory_tracer.stats()["values_unconvertible"]
    text = captured(memory_tracer, BadIter([1, 2]))
    strict_json(text)  # valid today: "<unreadable>"
    assert memory_tracer.stats()["values_unconvertible"] == before + 1


def test_an_interrupt_in_a_list_subclass_iter_propagates(memory_tracer: HoneyHiveTracer) -> None:
    with pytest.raises(KeyboardInterrupt):
        captured(memory_tracer, InterruptingIter([1]))
