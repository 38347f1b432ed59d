"""The boundary between Python and the engine: hostile arguments, captures of values
that change themselves, a hostile ``Retry-After``, the supervised export thread, the
panic shield, and a structural check that every entry point goes through the shield.

Tests that make the engine panic, or that look at rate-limited log records or at
process-wide counters, run in a fresh interpreter: a contained panic in this process
would show in other tests' ``internal_errors``, and a warning logged here would be
suppressed for 30 s in other tests that expect it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import honeytrace
import honeytrace.integrations
from _boundary_enum import (
    SKIP_CORE,
    IterMutatingDict,
    _iter_mutating_dict,
    _mutating_dict,
    _mutating_list,
    _self_dict,
    _self_list,
    stub_listing,
)
from conftest import REPO, child_env, messages, run_reporting
from honeytrace import HoneyHiveTracer, _core, trace
from otlp_receiver import Receiver, Reply

Make = Callable[..., HoneyHiveTracer]

HUGE_RETRY_AFTER = "18446744073709551615"  # u64::MAX seconds


# ---------------------------------------------------------------------------------
# 1. Every public entry point, called with hostile arguments


@pytest.fixture(scope="module")
def enumeration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run tests/_boundary_enum.py in a fresh interpreter; its JSON report."""
    out = tmp_path_factory.mktemp("boundary") / "calls.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(__file__), "_boundary_enum.py"), str(out)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return {"proc": proc, "report": json.loads(out.read_text()) if out.exists() else None}


def _report(enumeration: dict[str, Any]) -> dict[str, Any]:
    proc = enumeration["proc"]
    assert proc.returncode == 0 and enumeration["report"] is not None, (
        f"the enumeration process died (rc={proc.returncode}); its stderr:\n{proc.stderr[-8000:]}"
    )
    report: dict[str, Any] = enumeration["report"]
    return report


def _where(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {r['label']}({r['position']}={r['hostile']}) -> {r.get('type', r['outcome'])}: "
        f"{r.get('message', '')}"
        for r in rows[:40]
    )


def test_enumeration_runs_to_completion_and_covers_the_api(enumeration: dict[str, Any]) -> None:
    """No crash (a segfault or abort fails here with the process's stderr), and the
    enumeration really reached every group of entry points."""
    report = _report(enumeration)
    targets = set(report["targets"])
    assert len(report["results"]) > 5000
    expected = {f"honeytrace.{n}" for n in honeytrace.__all__ if callable(getattr(honeytrace, n))}
    expected |= {f"integrations.{n}" for n in honeytrace.integrations.__all__}
    funcs, _ = stub_listing()
    expected |= {
        f"_core.{n}" for n in funcs if n not in SKIP_CORE and n not in report["stub_missing"]
    }
    expected |= {
        "HoneyHiveTracer.init",
        "HoneyHiveTracer.flush",
        "HoneyHiveTracer.force_flush",
        "HoneyHiveTracer.shutdown",
        "HoneyHiveTracer.stats",
        "HoneyHiveTracer.start_span",
        "HoneyHiveTracer.trace",
        "Span.set_attribute",
        "Span.set_attributes",
        "Span.add_event",
        "Span.record_exception",
        "Span.end",
        "Span.get_span_context",
        "Span(ended).set_attribute",
        "tracer.tracer.start_span",
        "tracer.tracer.start_as_current_span",
        "tracer.provider.force_flush",
        "tracer.provider.get_tracer",
        "TracerProvider().force_flush",
        "TracerProvider().shutdown",
        "with_distributed_trace_context({}).__enter__",
        "with_distributed_trace_context({}).__exit__",
        "_core.TraceSpec.enter",
        "_core.CallScope.finish",
        "_core.TracerCore.create",
        "_core.TracerCore.flush",
        "@trace sync",
        "@trace async",
        "@trace generator",
        "@trace async generator",
    }
    assert not expected - targets, f"not enumerated: {sorted(expected - targets)}"


def test_no_base_exception_reachesrun_reporting(enumeration: dict[str, Any]) -> None:
    """No call raises a BaseException that is not an Exception: no PanicException, and
    (since none is ever used as an argument) no KeyboardInterrupt or SystemExit."""
    report = _report(enumeration)
    bad = [r for r in report["results"] if r["outcome"] == "base_exception"]
    assert not bad, f"BaseExceptions reached Python:\n{_where(bad)}"


def test_no_contained_panic_during_the_enumeration(enumeration: dict[str, Any]) -> None:
    """Hostile arguments are handled, not panicked on: every contained panic is a bug
    (``_core.internal_errors()`` counts them)."""
    report = _report(enumeration)
    panics = [r for r in report["results"] if r["internal_errors"]]
    assert not panics, f"contained panics (internal errors) in:\n{_where(panics)}"
    assert report["internal_errors_total"] == 0


def test_traced_functions_return_their_own_result(enumeration: dict[str, Any]) -> None:
    """Decorated functions of every kind, called with every hostile value, return
    exactly what the function returned (the same object) and raise nothing of their own."""
    report = _report(enumeration)
    traced = [r for r in report["results"] if r["kind"] == "traced"]
    assert len(traced) > 100
    wrong = [r for r in traced if r["outcome"] not in ("ok", "arity")]
    changed = [r for r in report["results"] if r["outcome"] == "changed"]
    assert not wrong, f"traced calls that failed:\n{_where(wrong)}"
    assert not changed, f"results changed by tracing:\n{_where(changed)}"


# What a hostile argument may raise, beyond the allowed classes (configuration at init,
# decorator options at decoration time, argument counts, classes without a constructor,
# the awaitable protocol): the error Python itself raises for such a value, or the
# hostile value's own exception (``Boom``, from its ``__bool__``, ``__iter__``, ...)
# passed through unchanged. Anything else (OverflowError, SystemError, RuntimeError,
# KeyError, ...) comes from the engine's side of the boundary and is a bug.
EXPECTED_EXCEPTION_TYPES = {
    "builtins.TypeError",
    "builtins.ValueError",
    "builtins.UnicodeEncodeError",  # a lone surrogate where UTF-8 text is needed
    "builtins.AttributeError",  # a non-app given to instrument_flask(), ...
    "__main__.Boom",  # tests/_boundary_enum.py runs as __main__
}

# Calls an application makes while it runs (as opposed to setting tracing up): a wrong
# argument is counted and ignored, never raised (only a wrong argument count is).
RUNTIME_CALLS = {
    "honeytrace.enrich_span",
    "honeytrace.enrich_session",
    "honeytrace.flush",
    "honeytrace.inject_context_into_carrier",
    "honeytrace.extract_context_from_carrier",
    "honeytrace.with_distributed_trace_context",
    "HoneyHiveTracer.enrich_span",
    "HoneyHiveTracer.enrich_session",
    "HoneyHiveTracer.flush",
    "HoneyHiveTracer.force_flush",
    "HoneyHiveTracer.shutdown",
    "HoneyHiveTracer.start_span",
    "HoneyHiveTracer.start_as_current_span",
    "HoneyHiveTracer.inject",
    "HoneyHiveTracer.extract",
    "HoneyHiveTracer.stats",
    "tracer.provider.force_flush",
    "tracer.tracer.start_span",
    "tracer.tracer.start_as_current_span",
}


def test_exceptions_raised_by_the_enumeration_are_of_expected_types(
    enumeration: dict[str, Any],
) -> None:
    """Every exception a hostile argument raises is of a type in
    ``EXPECTED_EXCEPTION_TYPES`` or of an allowed class, and the runtime calls raise
    none but argument-count errors. ``python tests/_boundary_enum.py out.json --summary``
    lists every exception by call."""
    report = _report(enumeration)
    exceptions = [r for r in report["results"] if r["outcome"] == "exception"]
    classes = {r["class"] for r in exceptions}
    assert {"allowed:config", "allowed:arity", "candidate"} <= classes  # classified
    unexpected = [
        r
        for r in exceptions
        if r["class"] == "candidate" and r["type"] not in EXPECTED_EXCEPTION_TYPES
    ]
    assert not unexpected, f"unexpected exception types:\n{_where(unexpected)}"

    targets = set(report["targets"])
    spans = {t for t in targets if t.startswith(("Span.", "Span(ended)."))}
    assert targets >= RUNTIME_CALLS and len(spans) >= 20
    raised = [
        r
        for r in exceptions
        if (r["label"] in RUNTIME_CALLS or r["label"] in spans) and r["class"] != "allowed:arity"
    ]
    assert not raised, f"runtime calls that raised:\n{_where(raised)}"


# ---------------------------------------------------------------------------------
# 2. Timeouts that are not numbers


def test_flush_and_shutdown_timeouts_never_raise(memory_tracer: HoneyHiveTracer) -> None:
    t = memory_tracer
    nan, inf = float("nan"), float("inf")

    def invalid() -> int:
        return int(t.stats()["invalid_arguments"])

    calls: list[tuple[str, Callable[[], Any], bool]] = [
        ("tracer.force_flush(nan)", lambda: t.force_flush(nan), True),
        ("tracer.flush(inf)", lambda: t.flush(inf), False),
        ("tracer.flush('soon')", lambda: t.flush("soon"), True),
        ("honeytrace.flush(timeout=-5)", lambda: honeytrace.flush(timeout=-5), False),
        ("tracer.provider.force_flush(nan)", lambda: t.provider.force_flush(nan), True),
        (
            "TracerProvider().force_flush(nan)",
            lambda: honeytrace.TracerProvider().force_flush(nan),
            True,
        ),
        (
            "tracer.provider.force_flush(timeout_millis=nan)",
            lambda: t.provider.force_flush(timeout_millis=nan),
            True,
        ),
    ]
    for label, call, counted in calls:
        before = invalid()
        result = call()
        assert isinstance(result, bool), label
        if counted:
            assert invalid() == before + 1, f"{label} was not counted as an invalid argument"
    with t.start_as_current_span("still-traced"):
        pass
    before = invalid()
    assert isinstance(t.shutdown(timeout=nan), bool)
    assert invalid() == before + 1
    assert not t.is_initialized
    assert [s["name"] for s in t.finished_spans()] == ["still-traced"]


def test_negative_timeout_means_no_wait(memory_tracer: HoneyHiveTracer) -> None:
    """A negative timeout is a valid request not to wait (as documented); NaN is not."""
    before = memory_tracer.stats()["invalid_arguments"]
    assert isinstance(honeytrace.flush(timeout=-5), bool)
    assert memory_tracer.stats()["invalid_arguments"] == before
    assert isinstance(honeytrace.flush(timeout=float("nan")), bool)
    assert memory_tracer.stats()["invalid_arguments"] == before + 1


def test_huge_integer_timeouts_never_raise(memory_tracer: HoneyHiveTracer) -> None:
    """Seconds or milliseconds too large for a float are counted and replaced by the
    default."""
    t = memory_tracer

    def invalid() -> int:
        return int(t.stats()["invalid_arguments"])

    calls: list[tuple[str, Callable[[], Any], int]] = [
        ("tracer.flush(timeout=10**400)", lambda: t.flush(timeout=10**400), 1),
        ("tracer.flush(timeout=-10**400)", lambda: t.flush(timeout=-(10**400)), 1),
        ("honeytrace.flush(timeout=10**400)", lambda: honeytrace.flush(timeout=10**400), 1),
        ("tracer.provider.force_flush(10**400)", lambda: t.provider.force_flush(10**400), 1),
        ("tracer.flush(timeout_millis=10**400)", lambda: t.flush(timeout_millis=10**400), 1),
    ]
    for label, call, counted in calls:
        before = invalid()
        assert isinstance(call(), bool), label
        assert invalid() == before + counted, label
    before = invalid()
    assert isinstance(t.shutdown(timeout=10**400), bool)
    assert invalid() == before + 1
    assert not t.is_initialized


# ---------------------------------------------------------------------------------
# 3. Values that change while they are captured


def _spans(t: HoneyHiveTracer, name: str) -> list[dict[str, Any]]:
    return [s for s in t.finished_spans() if s["name"] == name]


def test_decorated_call_with_containers_that_grow_while_captured(
    memory_tracer: HoneyHiveTracer,
) -> None:
    @trace(event_name="growing-args")
    def f(d: Any, lst: Any, other: Any = None) -> Any:
        return {"d": d, "lst": lst}

    d, lst, other = _mutating_dict(), _mutating_list(), _iter_mutating_dict()
    before = _core.internal_errors()
    out = f(d, lst, other)
    assert out["d"] is d and out["lst"] is lst
    assert len(d) > 2 and len(lst) > 2  # the __repr__s did run, and did add entries
    assert _core.internal_errors() == before
    (span,) = _spans(memory_tracer, "growing-args")
    attrs = span["attributes"]
    captured_d = json.loads(attrs["honeyhive_inputs.d"])
    captured_lst = json.loads(attrs["honeyhive_inputs.lst"])
    captured_other = json.loads(attrs["honeyhive_inputs.other"])
    result = json.loads(attrs["honeyhive_outputs.result"])
    assert captured_d["plain"] == 1 and captured_d["grows"] == "Grower()"
    assert captured_lst[:2] == [1, "Grower()"]
    assert captured_other["plain"] == 1
    assert set(result) == {"d", "lst"}


def test_decorated_call_with_self_containing_values(memory_tracer: HoneyHiveTracer) -> None:
    @trace(event_name="self-containing")
    def f(d: Any, lst: Any) -> Any:
        return [d, lst]

    d, lst = _self_dict(), _self_list()
    assert f(d, lst)[0] is d
    (span,) = _spans(memory_tracer, "self-containing")
    for key in ("honeyhive_inputs.d", "honeyhive_inputs.lst", "honeyhive_outputs.result"):
        json.loads(span["attributes"][key])


def test_decorator_metadata_that_grows_while_captured(memory_tracer: HoneyHiveTracer) -> None:
    @trace(
        event_name="growing-metadata",
        metadata=_mutating_dict(),
        config={"c": _mutating_list()},
        feedback=_iter_mutating_dict(),
    )
    def g(x: int) -> int:
        return x + 1

    assert g(1) == 2
    (span,) = _spans(memory_tracer, "growing-metadata")
    attrs = span["attributes"]
    assert attrs["honeyhive_metadata.plain"] == 1
    assert attrs["honeyhive_config.c.0"] == 1
    assert attrs["honeyhive_feedback.plain"] == 1
    flattened = {
        k: v
        for k, v in attrs.items()
        if k.startswith(("honeyhive_metadata.", "honeyhive_config.", "honeyhive_feedback."))
    }
    assert len(flattened) >= 5
    for value in flattened.values():
        if isinstance(value, str):
            json.loads(value)  # leaves that are not scalars are JSON text


def test_enrich_span_with_metadata_that_grows(memory_tracer: HoneyHiveTracer) -> None:
    with memory_tracer.start_as_current_span("enriched"):
        assert honeytrace.enrich_span(metadata=_mutating_dict(), outputs={"o": _mutating_list()})
    (span,) = _spans(memory_tracer, "enriched")
    assert span["attributes"]["honeyhive_metadata.plain"] == 1


def test_init_with_session_metadata_that_grows(make_tracer: Make) -> None:
    before = _core.internal_errors()
    t = make_tracer(test_mode=True, metadata=_mutating_dict())
    with t.start_as_current_span("after-init"):
        pass
    assert [s["name"] for s in t.finished_spans()] == ["after-init"]
    assert _core.internal_errors() == before


def test_session_metadata_that_grows_is_sent_as_json(receiver: Receiver, make_tracer: Make) -> None:
    """In cloud mode the session metadata goes out with the session start: valid JSON
    (the receiver parses it) holding what the dict held when it was read."""
    t = make_tracer(
        api_key="k",
        server_url=receiver.url,
        project="p",
        metadata={"outer": _mutating_dict(), "n": 2},
    )
    with t.start_as_current_span("cloud-span"):
        pass
    assert t.flush(10)
    starts = [r for r in receiver.requests if r.path == "/session/start"]
    assert len(starts) == 1
    metadata = starts[0].json_body["session"]["metadata"]
    assert metadata["n"] == 2
    assert metadata["outer"]["plain"] == 1
    assert [s["name"] for s in receiver.spans()] == ["cloud-span"]


def test_hostile_dict_helper_grows_when_iterated() -> None:
    # The helper itself: iterating it adds keys (so the tests above can fail).
    d = IterMutatingDict(a=1)
    list(d.items())
    assert len(d) == 2


# ---------------------------------------------------------------------------------
# 4. A collector answering Retry-After: u64::MAX
#
# tools/compare_old_build.py runs the session-start scenario below against a build from
# before the fix as well (it needs that second build, so it is not a test).


@pytest.fixture
def huge_retry_after_receiver() -> Iterator[Receiver]:
    """Answers the first OTLP request 503 with an enormous Retry-After, then 200."""
    with Receiver() as r:
        r.script.append(Reply(status=503, headers={"Retry-After": HUGE_RETRY_AFTER}))
        yield r


RETRY_AFTER_OTLP = """
t = HoneyHiveTracer.init(otlp_endpoint=URL, export_timeout=2, max_retries=3,
                         project="p", source="s")
for i in range(3):
    t.start_span(f"first-{i}").end()
flush1 = t.flush(timeout=30)
s1 = t.stats()
t.start_span("second").end()
flush2 = t.flush(timeout=30)
s2 = t.stats()
done(flush1=flush1, flush2=flush2, s1=s1, s2=s2, logs=logs(),
     threads=[th.name for th in threading.enumerate()])
"""


def test_huge_retry_after_fails_one_batch_and_the_export_thread_survives(
    huge_retry_after_receiver: Receiver,
) -> None:
    r = huge_retry_after_receiver
    out = run_reporting(f"URL = {r.traces_url!r}\n" + RETRY_AFTER_OTLP)
    s1, s2 = out["s1"], out["s2"]
    assert isinstance(out["flush1"], bool) and isinstance(out["flush2"], bool)
    # The first batch: one 503 with a wait past any deadline; counted as failed.
    assert (s1["failed"], s1["failed_exports"], s1["exported"]) == (3, 1, 0)
    assert "HTTP 503" in (s1["last_error"] or "")
    warnings = messages(out["logs"], 30)
    assert any("could not export 3 spans" in m for m in warnings), out["logs"]
    # Handled, not panicked on and restarted.
    assert s2["internal_errors"] == 0 and s2["thread_restarts"] == 0
    # The export thread lives on: the second batch is delivered.
    assert s2["exported"] == 1 and s2["queued"] == 0
    assert [s["name"] for s in r.spans()] == ["second"]
    statuses = [req.status for req in r.trace_requests()]
    assert statuses == [503, 200]


RETRY_AFTER_SESSION = """
t = HoneyHiveTracer.init(api_key="k", server_url=URL, export_timeout=2, max_retries=3,
                         project="p", source="s")
for i in range(3):
    t.start_span(f"first-{i}").end()
flush1 = t.flush(timeout=FLUSH)
s1 = t.stats()
t.start_span("second").end()
flush2 = t.flush(timeout=FLUSH)
s2 = t.stats()
done(flush1=flush1, flush2=flush2, s1=s1, s2=s2, logs=logs(),
     threads=[th.name for th in threading.enumerate()])
"""


@pytest.fixture
def huge_retry_after_session_receiver() -> Iterator[Receiver]:
    """HoneyHive stand-in: the session start gets 503 with an enormous Retry-After;
    everything after it 200."""
    with Receiver() as r:
        r.default_reply = Reply(status=503, headers={"Retry-After": HUGE_RETRY_AFTER})

        def after_first(_req: Any) -> None:
            r.default_reply = Reply()

        r.on_request = after_first
        yield r


def test_huge_retry_after_on_session_start_does_not_stop_the_export_thread(
    huge_retry_after_session_receiver: Receiver,
) -> None:
    """The REST call (session start) runs on the export thread too: before the fix the
    overflow killed that thread, silently, and every span stayed queued."""
    r = huge_retry_after_session_receiver
    out = run_reporting(f"URL = {r.url!r}\nFLUSH = 30\n" + RETRY_AFTER_SESSION)
    s1, s2 = out["s1"], out["s2"]
    assert out["flush1"] is True and out["flush2"] is True
    assert s1["api_calls_failed"] == 1
    assert (s2["exported"], s2["queued"], s2["failed"]) == (4, 0, 0)
    assert s2["internal_errors"] == 0
    assert any("session start failed" in m for m in messages(out["logs"], 30)), out["logs"]
    assert sorted(s["name"] for s in r.spans()) == ["first-0", "first-1", "first-2", "second"]
    assert [req.status for req in r.requests if req.path == "/session/start"] == [503]


# ---------------------------------------------------------------------------------
# 5. The supervised export thread


def test_export_thread_restarts_after_a_panic(receiver: Receiver) -> None:
    out = run_reporting(
        f"URL = {receiver.traces_url!r}\n"
        + """
t = HoneyHiveTracer.init(otlp_endpoint=URL, export_timeout=5, project="p", source="s")
before = t.stats()
assert _core._panic_for_test("export", 1) is True
for i in range(3):
    t.start_span(f"lost-{i}").end()
flush1 = t.flush(timeout=30)
mid = t.stats()
t.start_span("after-restart").end()
flush2 = t.flush(timeout=30)
after = t.stats()
done(before=before, mid=mid, after=after, flush1=flush1, flush2=flush2, logs=logs())
"""
    )
    before, mid, after = out["before"], out["mid"], out["after"]
    assert isinstance(out["flush1"], bool) and out["flush2"] is True
    assert mid["thread_restarts"] == before["thread_restarts"] + 1
    assert mid["failed"] == before["failed"] + 3  # the batch in hand when it panicked
    assert mid["internal_errors"] == before["internal_errors"] + 1
    warnings = messages(out["logs"], 30)
    assert any("export thread failed and was restarted" in m for m in warnings), out["logs"]
    # Later spans go out through the restarted thread.
    assert after["exported"] == before["exported"] + 1
    assert after["thread_restarts"] == mid["thread_restarts"]
    assert [s["name"] for s in receiver.spans()] == ["after-restart"]


STOPS_AFTER_REPEATED_FAILURES = """
t = HoneyHiveTracer.init(otlp_endpoint=URL, export_timeout=5, flush_interval=0.05,
                         project="p", source="s")
_core._panic_for_test("export", 50)

def handled():
    s = t.stats()
    return s["failed"] + s["dropped"]

for i in range(N):
    base = handled()
    t.start_span(f"s{i}").end()
    if FLUSH_EACH:
        t.flush(timeout=30)
    else:
        wait_until(lambda: handled() > base)
stopped = t.stats()
flush1 = t.flush(timeout=30)
t.start_span("late").end()
flush2 = t.flush(timeout=30)
late = t.stats()
done(stopped=stopped, late=late, flush1=flush1, flush2=flush2, logs=logs())
"""


def _assert_stopped(out: dict[str, Any], n: int) -> None:
    stopped, late = out["stopped"], out["late"]
    errors = messages(out["logs"], 40)
    assert any("export thread failed" in m and "stopped" in m for m in errors), out["logs"]
    assert "stopped after repeated failures" in (stopped["last_error"] or "")
    assert stopped["failed"] + stopped["dropped"] == n  # every span accounted for
    assert stopped["thread_restarts"] >= 1
    # No hang: flush returns; spans ended afterwards are dropped and counted.
    assert isinstance(out["flush1"], bool) and isinstance(out["flush2"], bool)
    assert late["dropped"] == stopped["dropped"] + 1
    assert late["exported"] == 0


def test_export_thread_stops_after_repeated_failures(receiver: Receiver) -> None:
    n = 10
    out = run_reporting(
        f"URL = {receiver.traces_url!r}\nN = {n}\nFLUSH_EACH = False\n"
        + STOPS_AFTER_REPEATED_FAILURES
    )
    _assert_stopped(out, n)
    assert receiver.spans() == []


def test_export_thread_stops_after_repeated_failures_with_flushes(receiver: Receiver) -> None:
    n = 12
    out = run_reporting(
        f"URL = {receiver.traces_url!r}\nN = {n}\nFLUSH_EACH = True\n"
        + STOPS_AFTER_REPEATED_FAILURES
    )
    _assert_stopped(out, n)


# ---------------------------------------------------------------------------------
# 6. The panic shield at the boundary


def test_panic_in_a_boundary_call_is_contained_and_counted() -> None:
    out = run_reporting("""
t = HoneyHiveTracer.init(test_mode=True)
before, stats_before = _core.internal_errors(), t.stats()["internal_errors"]
raised = None
try:
    result = _core._panic_for_test("boundary")
except BaseException as e:
    result, raised = None, f"{type(e).__module__}.{type(e).__name__}: {e}"
after, stats_after = _core.internal_errors(), t.stats()["internal_errors"]
unknown = _core._panic_for_test("no-such-thing")
with t.start_as_current_span("after-panic"):
    pass
done(result=result, raised=raised, before=before, after=after,
     stats_before=stats_before, stats_after=stats_after, unknown=unknown,
     after_unknown=_core.internal_errors(), spans=[s["name"] for s in t.finished_spans()],
     logs=logs())
""")
    assert out["raised"] is None
    assert out["result"] is False  # the degraded result
    assert out["after"] == out["before"] + 1
    assert out["stats_after"] == out["stats_before"] + 1
    assert out["unknown"] is False and out["after_unknown"] == out["after"]
    assert out["spans"] == ["after-panic"]  # tracing goes on
    warnings = messages(out["logs"], 30)
    assert any("internal error in _panic_for_test was contained" in m for m in warnings)
    assert "PanicException" not in out["_stderr"]


# ---------------------------------------------------------------------------------
# 7. Every entry point goes through the boundary attributes


def _strip_rust(src: str) -> str:
    """Rust source with comments, string and char literals blanked (newlines kept)."""
    out: list[str] = []
    i, n = 0, len(src)

    def blank(text: str) -> str:
        return re.sub(r"[^\n]", " ", text)

    while i < n:
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', src[i:])) and (
            i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")
        ):
            end = src.find('"' + m.group(1), i + m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + blank(src[i + 2 : j]))
            i = j
        elif src[i] == '"' or (src.startswith('b"', i) and (i == 0 or not src[i - 1].isalnum())):
            j = i + (2 if src[i] == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + blank(src[i + 2 : j + 1]))
            i = j + 1
        elif src[i] == "'" and (
            m := re.match(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'", src[i:])
        ):
            out.append("' '" + blank(src[i + 3 : i + m.end()]))
            i += m.end()
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


def _braced(text: str, start: int) -> str:
    """The text from the first ``{`` at or after ``start`` to its matching ``}``."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i : j + 1]
    raise AssertionError(f"unbalanced braces after offset {start}")


def _rust_sources() -> dict[Path, str]:
    files = sorted((REPO / "src").rglob("*.rs"))
    assert files, "no Rust sources found under src/"
    return {p: _strip_rust(p.read_text()) for p in files}


def test_strip_rust_keeps_code_and_blanks_the_rest() -> None:
    src = "let s = \"#[pymethods] // not code\"; // #[pyfunction]\n/* #[pymethods] */ let c = '{';\n#[pymethods]\n"
    stripped = _strip_rust(src)
    assert stripped.count("\n") == src.count("\n")
    assert stripped.count("pymethods") == 1 and "pyfunction" not in stripped
    assert "{" not in stripped


def test_every_entry_point_goes_through_the_boundary_attributes() -> None:
    offenders = []
    guarded = 0
    for path, code in _rust_sources().items():
        for m in re.finditer(r"\b(pymethods|pyfunction)\b|\bnew_closure\b|PyCFunction\s*::", code):
            line = code.count("\n", 0, m.start()) + 1
            offenders.append(f"{path.relative_to(REPO)}:{line}: {m.group(0)}")
        guarded += len(
            re.findall(r"#\[\s*honeytrace_macros\s*::\s*(?:methods|function)\s*\]", code)
        )
    assert not offenders, "Python entry points outside the boundary attributes:\n" + "\n".join(
        offenders
    )
    assert guarded >= 10  # the scan saw the code (and the attributes are in use)


def test_pyclasses_holding_python_objects_implement_traverse() -> None:
    sources = _rust_sources()
    pyclasses: dict[str, tuple[Path, str]] = {}
    traversed: set[str] = set()
    for path, code in sources.items():
        for m in re.finditer(
            r"#\[\s*pyclass\b[^\]]*\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?struct\s+(\w+)",
            code,
        ):
            rest = code[m.end() :].lstrip()
            body = rest[: rest.index(";") + 1] if rest.startswith("(") else _braced(code, m.end())
            pyclasses[m.group(1)] = (path, body)
        for m in re.finditer(r"\bimpl(?:\s*<[^>{]*>)?\s+(\w+)\s*\{", code):
            if re.search(r"\bfn\s+__traverse__\b", _braced(code, m.start())):
                traversed.add(m.group(1))
    assert len(pyclasses) >= 8, sorted(pyclasses)
    holding = {
        name for name, (_, body) in pyclasses.items() if re.search(r"\b(Py|Bound)\s*<", body)
    }
    assert len(holding) >= 3, sorted(holding)
    missing = sorted(
        f"{name} ({pyclasses[name][0].relative_to(REPO)})" for name in holding - traversed
    )
    assert not missing, f"#[pyclass]es holding Py<>/Bound<> without __traverse__: {missing}"


# ---------------------------------------------------------------------------------
# Calls the enumeration found raising, now fixed: a wrong argument is counted and
# ignored


def _invalid(t: HoneyHiveTracer) -> int:
    return int(t.stats()["invalid_arguments"])


def test_tracer_trace_block_accepts_the_decorator_options(memory_tracer: HoneyHiveTracer) -> None:
    with memory_tracer.trace("block", event_name="named-block"):
        pass
    assert [s["name"] for s in memory_tracer.finished_spans()] == ["named-block"]


def test_enrich_span_with_non_mapping_attributes_does_not_raise(
    memory_tracer: HoneyHiveTracer,
) -> None:
    with memory_tracer.start_as_current_span("s"):
        before = _invalid(memory_tracer)
        assert honeytrace.enrich_span(attributes=float("nan"), metadata={"kept": 1}) is True
        assert _invalid(memory_tracer) == before + 1
        assert memory_tracer.enrich_span(attributes=[("k", "v")]) is True
        assert _invalid(memory_tracer) == before + 2
    (span,) = memory_tracer.finished_spans()
    assert span["attributes"]["honeyhive_metadata.kept"] == 1  # the rest was applied


def test_wrong_typed_tracer_argument_does_not_raise(memory_tracer: HoneyHiveTracer) -> None:
    before = _invalid(memory_tracer)
    assert honeytrace.extract_context_from_carrier({}, tracer=1.5) == {}
    assert _invalid(memory_tracer) == before + 1
    assert honeytrace.flush(tracer=1.5) is True
    assert _invalid(memory_tracer) == before + 2
    carrier = honeytrace.inject_context_into_carrier({}, tracer=1.5)
    assert _invalid(memory_tracer) == before + 3
    # Ignored means the default tracer's context goes out, as without the argument.
    assert f"session_id={memory_tracer.session_id}" in carrier["baggage"]


def test_instrument_http_with_a_wrong_typed_tracer_does_not_break_requests(
    memory_tracer: HoneyHiveTracer, receiver: Receiver
) -> None:
    import requests

    from honeytrace.integrations import instrument_http, uninstrument_http

    before = _invalid(memory_tracer)
    try:
        instrument_http(tracer=1.5)
        assert _invalid(memory_tracer) == before + 1
        assert requests.post(receiver.url + "/x", json={}, timeout=10).status_code == 200
    finally:
        uninstrument_http()
    assert len(receiver.requests) == 1


def test_core_stub_matches_the_engine() -> None:
    funcs, classes = stub_listing()
    missing = [n for n in funcs + list(classes) if not hasattr(_core, n)]
    missing += [
        f"{c}.{m}"
        for c, methods in classes.items()
        if hasattr(_core, c)
        for m in methods
        if not hasattr(getattr(_core, c), m)
    ]
    assert not missing, missing
