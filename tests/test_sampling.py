"""Samplers: OpenTelemetry's (``OTEL_TRACES_SAMPLER``/``_ARG``, ``sampler=``), checked
against the OpenTelemetry SDK's own samplers as peers, and the session sampler, which
keeps or drops whole sessions alike in every service."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from honeytrace import (
    HoneyHiveTracer,
    inject_context_into_carrier,
    with_distributed_trace_context,
)
from honeytrace import (
    trace as ht_trace,
)

Make = Callable[..., HoneyHiveTracer]


def test_traceidratio_decides_as_the_sdk_does(make_tracer: Make) -> None:
    t = make_tracer(project="p", test_mode=True, sampler="traceidratio", sampler_arg=0.25)
    sdk = TraceIdRatioBased(0.25)
    kept = 0
    n = 4000
    for _ in range(n):
        span = t.start_span("root")
        tid = span.get_span_context().trace_id
        want = sdk.should_sample(None, tid, "root").decision == Decision.RECORD_AND_SAMPLE
        assert span.is_recording() == want
        assert span.get_span_context().trace_flags.sampled == want
        kept += want
        span.end()
    assert 0.2 * n < kept < 0.3 * n
    st = t.stats()
    assert st["sampled_out"] == n - kept
    assert len(t.finished_spans()) == kept


@pytest.mark.parametrize(
    ("sampler", "arg", "under_sampled", "under_unsampled", "root"),
    [
        ("parentbased_always_on", None, True, False, True),
        ("parentbased_always_off", None, True, False, False),
        ("parentbased_traceidratio", "0", True, False, False),
        ("always_on", None, True, True, True),
        ("always_off", None, False, False, False),
    ],
)
def test_samplers_from_the_environment(
    make_tracer: Make,
    monkeypatch: pytest.MonkeyPatch,
    sampler: str,
    arg: Any,
    under_sampled: bool,
    under_unsampled: bool,
    root: bool,
) -> None:
    """Under a remote sampled parent, an unsampled one, and as a root."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    t = make_tracer(project="p", test_mode=True)
    got = []
    for flags in ("01", "00"):
        carrier = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{flags}"}
        with with_distributed_trace_context(carrier, t):
            with t.start_as_current_span("child") as s:
                got.append(s.is_recording())
    with t.start_as_current_span("root") as r:
        got.append(r.is_recording())
        # what a downstream service is told
        sent = inject_context_into_carrier({}, t)["traceparent"]
    assert got == [under_sampled, under_unsampled, root]
    assert sent.endswith("-03" if root else "-02")


def session_kept(session_id: str, ratio: float) -> bool:
    """The documented rule (docs/opentelemetry.md, "Sampling"), computed here apart."""
    first8 = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big")
    return first8 < round(ratio * 2**64)


def test_the_session_sampler_keeps_or_drops_whole_sessions_in_every_service(
    make_tracer: Make,
) -> None:
    """Two services with the session sampler at 0.5: for each of 300 sessions both
    record everything, or neither records anything; which ones is the documented rule."""
    client = make_tracer(project="p", test_mode=True, sampler="session", sampler_arg="0.5")
    server = make_tracer(project="p", test_mode=True, sampler="session", sampler_arg="0.5")

    @ht_trace(tracer=server)
    def handle(q: int) -> int:
        return q

    @ht_trace(tracer=client)
    def ask(q: int) -> int:
        headers = inject_context_into_carrier({}, client)
        with with_distributed_trace_context(headers, server):
            return handle(q)

    kept_sessions = set()
    for i in range(300):
        sid = f"session-{i}"

        def turn(i: int = i) -> int:
            return ask(i)  # nested call, then the server, in the turn's session

        assert ht_trace(tracer=client, session_id=sid)(turn)() == i
        if session_kept(sid, 0.5):
            kept_sessions.add(sid)
    assert 100 < len(kept_sessions) < 200
    cs = client.finished_spans()
    ss = server.finished_spans()
    by_session: dict[str, set[str]] = {}
    for s in cs:
        by_session.setdefault(s["attributes"]["honeyhive.session_id"], set()).add("client")
    for s in ss:
        by_session.setdefault(s["attributes"]["honeyhive.session_id"], set()).add("server")
    assert set(by_session) == kept_sessions
    assert all(v == {"client", "server"} for v in by_session.values())


def test_an_unsampled_call_captures_nothing(make_tracer: Make) -> None:
    """Unsampled spans cost less: the arguments of a dropped call are not even read."""
    t = make_tracer(project="p", test_mode=True, sampler="always_off")
    reads = []

    class Arg:
        def __repr__(self) -> str:
            reads.append(1)
            return "Arg()"

    @ht_trace(tracer=t)
    def f(a: Any) -> int:
        assert not trace.get_current_span().is_recording()
        return 7

    assert f(Arg()) == 7
    assert reads == [] and t.finished_spans() == []
    assert t.stats()["sampled_out"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "jaeger_remote"}, "sampler"),
        ({"sampler": "traceidratio", "sampler_arg": 1.5}, "from 0 to 1"),
        ({"sampler": "traceidratio", "sampler_arg": "half"}, "number"),
    ],
)
def test_a_sampler_that_cannot_work_is_a_configuration_error(
    make_tracer: Make, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make_tracer(project="p", test_mode=True, **kwargs)
