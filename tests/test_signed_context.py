"""Signed context (`baggage_secret`): one signature over the session, project and source
with the time it was made. A real Flask server (instrument_flask) receives the calls;
the client sends with instrumented requests and httpx, or by hand for the hostile cases.
The caller's trace continues in every case; only the session context is at stake."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import httpx
import pytest
import requests
from opentelemetry import baggage

import honeytrace
from honeytrace import (
    HoneyHiveTracer,
    inject_context_into_carrier,
    with_distributed_trace_context,
)
from honeytrace._processes import ContextCarrier
from honeytrace.integrations import instrument_flask, instrument_http, uninstrument_http

Make = Callable[..., HoneyHiveTracer]
SECRET = "shared-secret-of-enough-length"
TRACE = "0af7651916cd43dd8448eb211c80319c"
TP = f"00-{TRACE}-b7ad6b7169203331-01"


@contextmanager
def flask_server(server: HoneyHiveTracer) -> Iterator[str]:
    import flask
    from werkzeug.serving import make_server

    app = flask.Flask("signed")
    instrument_flask(app, server)

    @app.get("/who")
    def who() -> Any:
        return {k: baggage.get_baggage(k) for k in ("session_id", "project", "source")}

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        th.join(10)


def stamps(server: HoneyHiveTracer, n: int) -> list[tuple[str, str, str, str]]:
    """(trace id, session, project, source) of the server's request spans, in order,
    once there are `n` (a request span ends just after its response is sent)."""
    deadline = time.monotonic() + 10
    while True:
        spans = [s for s in server.finished_spans() if s["kind"] == "SERVER"]
        if len(spans) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    spans.sort(key=lambda s: s["start_time"])
    return [
        (
            s["trace_id"],
            s["attributes"]["honeyhive.session_id"],
            s["attributes"]["honeyhive.project"],
            s["attributes"]["honeyhive.source"],
        )
        for s in spans
    ]


def counts(t: HoneyHiveTracer) -> dict[str, int]:
    st = t.stats()
    keys = ("sessions_unsigned", "sessions_forged", "sessions_stale", "incoming_rejected")
    return {k: st[k] for k in keys}


def delta(t: HoneyHiveTracer, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in counts(t).items() if v != before[k]}


@pytest.fixture
def pair(make_tracer: Make) -> Iterator[tuple[HoneyHiveTracer, HoneyHiveTracer, str]]:
    """(client, server, url): a tenant-a client and a server of the same deployment."""
    client = make_tracer(
        test_mode=True,
        project="tenant-a",
        source="client-src",
        session_id="sess-a",
        baggage_secret=SECRET,
    )
    server = make_tracer(
        test_mode=True, project="server-p", source="server-src", baggage_secret=SECRET
    )
    with flask_server(server) as url:
        yield client, server, url


@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_a_signed_context_is_continued_with_instrumented_clients(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer, str], library: str
) -> None:
    client, server, url = pair
    instrument_http(tracer=client)
    try:
        with client.start_as_current_span("call") as span:
            if library == "requests":
                reply = requests.get(f"{url}/who", timeout=10).json()
            else:
                reply = httpx.get(f"{url}/who", timeout=10).json()
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        uninstrument_http()
    assert reply == {"session_id": "sess-a", "project": "tenant-a", "source": "client-src"}
    assert stamps(server, 1) == [(trace_id, "sess-a", "tenant-a", "client-src")]


def test_forged_and_other_tenant_contexts_are_ignored_the_trace_continues(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer, str],
) -> None:
    client, server, url = pair
    with client.start_as_current_span("call"):
        signed = inject_context_into_carrier({}, client)
    good = signed["baggage"]
    assert ";sig=" in good
    hostile = {
        # Another session id under tenant-a's signature.
        "forged session": good.replace("sess-a", "sess-victim"),
        # Another tenant's project under tenant-a's signature.
        "other tenant, in place": good.replace("tenant-a", "tenant-b"),
        # The signed members as they are, and another project after them.
        "other tenant, appended": good + ",project=tenant-b",
        "other tenant, alias": good.replace("project=tenant-a", "honeyhive.project=tenant-b"),
        "garbage signature": re.sub(r";sig=[^,]*", ";sig=123.AAAAAAAAAAAAAAAAAAAAAA", good),
    }
    before = counts(server)
    replies = {}
    for name, bag in hostile.items():
        h = {"traceparent": TP, "baggage": bag}
        replies[name] = requests.get(f"{url}/who", headers=h, timeout=10).json()
    for name, reply in replies.items():
        assert reply["session_id"] is None and reply["project"] is None, name
    assert delta(server, before) == {
        "sessions_forged": len(hostile),
        "incoming_rejected": 3 * len(hostile),
    }
    # The caller's trace continued; the session context is the server's own.
    own = (TRACE, server.session_id, "server-p", "server-src")
    assert stamps(server, len(hostile)) == [own] * len(hostile)


def test_unsigned_project_or_source_alone_is_ignored(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer, str],
) -> None:
    _, server, url = pair
    before = counts(server)
    for bag in ("honeyhive.project=tenant-b", "source=spoofed,other=kept", "session_id=s1"):
        reply = requests.get(
            f"{url}/who", headers={"traceparent": TP, "baggage": bag}, timeout=10
        ).json()
        assert reply == {"session_id": None, "project": None, "source": None}, bag
    assert delta(server, before) == {"sessions_unsigned": 3, "incoming_rejected": 3}
    assert {s[1:] for s in stamps(server, 3)} == {(server.session_id, "server-p", "server-src")}


def test_a_signature_replayed_after_max_age_is_stale(make_tracer: Make) -> None:
    server = make_tracer(test_mode=True, baggage_secret=SECRET, baggage_max_age=60)
    now = int(time.time())
    sign = honeytrace._core.sign_context

    def bag(issued: int) -> str:
        sig = sign(SECRET, "sess-a", "tenant-a", "client-src", issued_at=issued)
        return f"session_id=sess-a;sig={sig},project=tenant-a,source=client-src"

    with flask_server(server) as url:
        before = counts(server)
        got = {}
        for name, issued in {
            "fresh": now - 5,
            "within the skew": now + 30,
            "replayed": now - 3600,
            "from the future": now + 3600,
        }.items():
            h = {"traceparent": TP, "baggage": bag(issued)}
            got[name] = requests.get(f"{url}/who", headers=h, timeout=10).json()["session_id"]
    assert got == {
        "fresh": "sess-a",
        "within the skew": "sess-a",
        "replayed": None,
        "from the future": None,
    }
    assert delta(server, before) == {"sessions_stale": 2, "incoming_rejected": 6}


def test_without_a_secret_signatures_are_not_needed(make_tracer: Make) -> None:
    server = make_tracer(test_mode=True)
    with flask_server(server) as url:
        reply = requests.get(
            f"{url}/who",
            headers={"baggage": "session_id=s1;sig=1.bogus,project=p1,source=src1"},
            timeout=10,
        ).json()
    assert reply == {"session_id": "s1", "project": "p1", "source": "src1"}


def test_a_process_pool_task_is_not_held_to_max_age(make_tracer: Make) -> None:
    """A pool task's carrier crossed only the pool's pipe: it keeps its session even when
    it waited in the queue longer than baggage_max_age."""
    t = make_tracer(test_mode=True, baggage_secret=SECRET, baggage_max_age=1)
    old = honeytrace._core.sign_context(SECRET, "sess-a", issued_at=int(time.time()) - 3600)
    carrier = {"traceparent": TP, "baggage": f"session_id=sess-a;sig={old}"}
    with with_distributed_trace_context(carrier, t):
        assert baggage.get_baggage("session_id") is None  # from a caller: stale
    seen = ContextCarrier(lambda: baggage.get_baggage("session_id"), carrier)()
    assert seen == "sess-a"
    with pytest.raises(ValueError, match="at least 16"):
        HoneyHiveTracer.init(test_mode=True, baggage_secret="short")
