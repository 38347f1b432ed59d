"""Distributed tracing end to end with real servers on 127.0.0.1: Flask (threaded
werkzeug) with requests, FastAPI (uvicorn) with httpx, the Python OpenTelemetry SDK as
a peer on either side, and many concurrent sessions."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import httpx
import pytest
import requests
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from opentelemetry import baggage, context, trace

from conftest import free_port
from honeytrace import (
    HoneyHiveTracer,
    bind_context,
    inject_context_into_carrier,
    instrument_threads,
    set_default_tracer,
    uninstrument_threads,
    with_distributed_trace_context,
)
from honeytrace import (
    trace as ht_trace,
)
from honeytrace.integrations import (
    instrument_fastapi,
    instrument_flask,
    instrument_http,
    uninstrument_http,
)

Make = Callable[..., HoneyHiveTracer]


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        th.join(10)


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(10)


@pytest.fixture
def http_instrumented() -> Iterator[None]:
    yield
    uninstrument_http()


def flask_apps(server: HoneyHiveTracer) -> tuple[Any, Any]:
    """(manual: the one-liner in the handler, auto: instrument_flask middleware)."""
    import flask

    @ht_trace(event_type="chain")
    def agent(q: str) -> str:
        return f"answer to {q}"

    manual = flask.Flask("manual")

    @manual.post("/agent")
    def manual_agent() -> Any:
        before = context.get_current()
        with with_distributed_trace_context(dict(flask.request.headers), server):
            answer = agent(flask.request.json["q"])
            session = baggage.get_baggage("session_id")
        return {"answer": answer, "session": session, "restored": context.get_current() == before}

    auto = flask.Flask("auto")
    instrument_flask(auto, server, excluded_urls=["/health"])

    @auto.post("/agent/<name>")
    def auto_agent(name: str) -> Any:
        return {
            "answer": agent(flask.request.json["q"]),
            "session": baggage.get_baggage("session_id"),
        }

    @auto.get("/health")
    def health() -> str:
        return "ok"

    @auto.get("/boom")
    def boom() -> str:
        raise RuntimeError("server exploded")

    @auto.get("/stream")
    def stream() -> Any:
        @ht_trace
        def chunk(i: int) -> str:
            return f"{i},"

        return flask.Response((chunk(i) for i in range(3)), mimetype="text/plain")

    return manual, auto


def by_name(spans: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"].endswith(suffix)]


def descends_from(
    span: dict[str, Any], ancestor: dict[str, Any], spans: list[dict[str, Any]]
) -> bool:
    """``span`` is below ``ancestor`` (FastAPI adds its own OpenTelemetry spans between)."""
    by_id = {s["span_id"]: s for s in spans}
    node = span
    while node.get("parent_span_id"):
        if node["parent_span_id"] == ancestor["span_id"]:
            return True
        node = by_id.get(node["parent_span_id"], {})
    return False


def test_flask_manual_one_liner_with_requests_in_any_header_case(make_tracer: Make) -> None:
    client = make_tracer(test_mode=True, project="client-p", source="client")
    server = make_tracer(test_mode=True, project="server-p", source="server")
    manual, _ = flask_apps(server)

    @ht_trace(tracer=client)
    def ask(url: str, q: str, case: Callable[[str], str]) -> Any:
        headers = {case(k): v for k, v in inject_context_into_carrier({}, client).items()}
        return requests.post(f"{url}/agent", json={"q": q}, headers=headers, timeout=10).json()

    with serve_wsgi(manual) as url:
        replies = [ask(url, case.__name__, case) for case in (str.lower, str.title, str.upper)]
    assert all(r["session"] == client.session_id and r["restored"] for r in replies)
    asks = {
        s["attributes"]["honeyhive_inputs.q"]: s for s in by_name(client.finished_spans(), ".ask")
    }
    agents = by_name(server.finished_spans(), ".agent")
    assert len(agents) == 3
    for s in agents:
        caller = asks[s["attributes"]["honeyhive_inputs.q"].removeprefix("")]
        assert s["trace_id"] == caller["trace_id"]
        assert s["parent_span_id"] == caller["span_id"] and s["parent_is_remote"]
        a = s["attributes"]
        assert (a["honeyhive.session_id"], a["honeyhive.project"], a["honeyhive.source"]) == (
            client.session_id,
            "client-p",
            "client",
        )


def test_flask_middleware_with_instrumented_requests(
    make_tracer: Make, http_instrumented: None
) -> None:
    client = make_tracer(test_mode=True, project="client-p")
    server = make_tracer(test_mode=True, project="server-p")
    _, auto = flask_apps(server)
    instrument_http(tracer=client)

    @ht_trace(tracer=client)
    def ask(url: str) -> Any:
        return requests.post(f"{url}/agent/bob?x=1", json={"q": "hi"}, timeout=10).json()

    with serve_wsgi(auto) as url:
        assert ask(url)["session"] == client.session_id
        assert requests.get(f"{url}/health", timeout=10).text == "ok"
        assert requests.get(f"{url}/boom", timeout=10).status_code == 500
        assert requests.get(f"{url}/stream", timeout=10).text == "0,1,2,"
    cspans = client.finished_spans()
    http_client = next(
        s for s in cspans if s["kind"] == "CLIENT" and "agent" in s["attributes"]["url.full"]
    )
    sspans = server.finished_spans()
    srv = next(s for s in sspans if s["name"] == "POST /agent/<name>")
    assert srv["kind"] == "SERVER"
    assert srv["trace_id"] == http_client["trace_id"]
    assert srv["parent_span_id"] == http_client["span_id"]
    a = srv["attributes"]
    assert a["http.route"] == "/agent/<name>"
    assert a["http.response.status_code"] == 200
    assert a["url.query"] == "x=1"
    assert a["honeyhive.session_id"] == client.session_id
    agent = by_name(sspans, ".agent")[0]
    assert agent["parent_span_id"] == srv["span_id"]
    assert not any(s["name"] == "GET /health" for s in sspans)  # excluded
    boom = next(s for s in sspans if s["name"] == "GET /boom")
    assert boom["status"]["code"] == "ERROR"
    assert boom["attributes"]["http.response.status_code"] == 500
    assert boom["events"][0]["attributes"]["exception.message"] == "server exploded"
    stream = next(s for s in sspans if s["name"] == "GET /stream")
    chunks = by_name(sspans, ".chunk")
    assert len(chunks) == 3 and all(c["parent_span_id"] == stream["span_id"] for c in chunks)
    assert stream["end_time"] >= max(c["end_time"] for c in chunks)


def fastapi_app(server: HoneyHiveTracer) -> Any:
    app = FastAPI()
    instrument_fastapi(app, server)

    @ht_trace(event_type="chain")
    async def agent(q: str) -> str:
        await asyncio.sleep(0.001)
        return q.upper()

    @app.post("/agent/{name}")
    async def run(name: str, request: Request) -> Any:
        body = await request.json()
        return {"answer": await agent(body["q"]), "session": baggage.get_baggage("session_id")}

    @app.get("/sse")
    async def sse() -> Any:
        @ht_trace
        async def event(i: int) -> str:
            await asyncio.sleep(0.01)
            return f"data: {i}\n\n"

        async def gen() -> Any:
            for i in range(3):
                yield await event(i)

        return StreamingResponse(gen(), media_type="text/event-stream")

    return app


def fastapi_manual_app(server: HoneyHiveTracer) -> Any:
    app = FastAPI()

    @ht_trace
    async def agent(q: str) -> str:
        return q

    @app.post("/agent")
    async def run(request: Request) -> Any:
        before = context.get_current()
        async with with_distributed_trace_context(request.headers, server):
            answer = await agent((await request.json())["q"])
            session = baggage.get_baggage("session_id")
        return {"answer": answer, "session": session, "restored": context.get_current() == before}

    return app


def test_fastapi_uvicorn_with_httpx_async(make_tracer: Make, http_instrumented: None) -> None:
    client = make_tracer(test_mode=True, project="client-p", source="client")
    server = make_tracer(test_mode=True, project="server-p", source="server")
    instrument_http(tracer=client)

    @ht_trace(tracer=client)
    async def ask(url: str) -> tuple[Any, str]:
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/agent/ann", json={"q": "hi"})
            s = await http.get(f"{url}/sse")
            return r.json(), s.text

    with serve_asgi(fastapi_app(server)) as url:
        reply, events = asyncio.run(ask(url))
    assert reply == {"answer": "HI", "session": client.session_id}
    assert events == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    cspans, sspans = client.finished_spans(), server.finished_spans()
    post = next(s for s in cspans if s["kind"] == "CLIENT" and s["name"] == "POST")
    srv = next(s for s in sspans if s["name"] == "POST /agent/{name}")
    assert (srv["trace_id"], srv["parent_span_id"]) == (post["trace_id"], post["span_id"])
    a = srv["attributes"]
    assert (a["honeyhive.session_id"], a["honeyhive.project"], a["honeyhive.source"]) == (
        client.session_id,
        "client-p",
        "client",
    )
    assert a["http.route"] == "/agent/{name}" and a["http.response.status_code"] == 200
    assert descends_from(by_name(sspans, ".agent")[0], srv, sspans)
    # FastAPI's own OpenTelemetry spans land in honeytrace too, under the server span
    # (FastAPI versions with built-in telemetry; those for Python 3.9 have none).
    if importlib.util.find_spec("fastapi.telemetry") is not None:
        assert any(s["scope"]["name"] == "fastapi" for s in sspans)
    sse = next(s for s in sspans if s["name"] == "GET /sse")
    events_spans = by_name(sspans, ".event")
    assert len(events_spans) == 3
    assert all(descends_from(e, sse, sspans) for e in events_spans)
    assert sse["end_time"] >= max(e["end_time"] for e in events_spans)  # open until the last chunk


def test_fastapi_manual_async_with_starlette_headers(make_tracer: Make) -> None:
    client = make_tracer(test_mode=True)
    server = make_tracer(test_mode=True)

    @ht_trace(tracer=client)
    def ask(url: str) -> Any:
        headers = {k.upper(): v for k, v in inject_context_into_carrier({}, client).items()}
        return httpx.post(f"{url}/agent", json={"q": "x"}, headers=headers).json()

    with serve_asgi(fastapi_manual_app(server)) as url:
        reply = ask(url)
    assert reply == {"answer": "x", "session": client.session_id, "restored": True}
    (caller,) = by_name(client.finished_spans(), ".ask")
    (s,) = by_name(server.finished_spans(), ".agent")
    assert (s["trace_id"], s["parent_span_id"]) == (caller["trace_id"], caller["span_id"])


def test_python_otel_sdk_client_to_our_server(make_tracer: Make) -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    server = make_tracer(test_mode=True)
    manual, _ = flask_apps(server)
    sdk_tracer = SdkProvider().get_tracer("sdk-client")
    with serve_wsgi(manual) as url:
        with sdk_tracer.start_as_current_span("sdk-call") as sdk_span:
            ctx = baggage.set_baggage("session_id", "sdk-session")
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(
                headers, context=trace.set_span_in_context(sdk_span, ctx)
            )
            W3CBaggagePropagator().inject(headers, context=ctx)
            requests.post(f"{url}/agent", json={"q": "sdk"}, headers=headers, timeout=10)
    (s,) = by_name(server.finished_spans(), ".agent")
    sc = sdk_span.get_span_context()
    assert s["trace_id"] == format(sc.trace_id, "032x")
    assert s["parent_span_id"] == format(sc.span_id, "016x")
    assert s["attributes"]["honeyhive.session_id"] == "sdk-session"


def test_our_client_to_a_python_otel_sdk_server(make_tracer: Make, http_instrumented: None) -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    exporter = InMemorySpanExporter()
    provider = SdkProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sdk_tracer = provider.get_tracer("sdk-server")
    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            ctx = TraceContextTextMapPropagator().extract(headers)
            ctx = W3CBaggagePropagator().extract(headers, context=ctx)
            seen["session"] = baggage.get_baggage("session_id", ctx)
            with sdk_tracer.start_as_current_span("sdk-handler", context=ctx):
                pass
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    client = make_tracer(test_mode=True)
    instrument_http(tracer=client)
    try:

        @ht_trace(tracer=client)
        def call() -> None:
            requests.get(f"http://127.0.0.1:{httpd.server_port}/", timeout=10)

        call()
    finally:
        httpd.shutdown()
        th.join(10)
    (sdk_span,) = exporter.get_finished_spans()
    http_span = next(s for s in client.finished_spans() if s["kind"] == "CLIENT")
    assert format(sdk_span.context.trace_id, "032x") == http_span["trace_id"]
    assert (
        sdk_span.parent is not None
        and format(sdk_span.parent.span_id, "016x") == http_span["span_id"]
    )
    assert seen["session"] == client.session_id


def assert_each_request_kept_its_session(replies: list[Any], server: HoneyHiveTracer) -> None:
    """Request i was sent in session sess-i: the server saw it, restored its context
    afterwards, and stamped its span with that session and no other."""
    assert [r["session"] for r in replies] == [f"sess-{i}" for i in range(32)]
    assert all(r["restored"] for r in replies)
    agents = by_name(server.finished_spans(), ".agent")
    assert len(agents) == 32
    for s in agents:
        assert (
            s["attributes"]["honeyhive.session_id"]
            == f"sess-{s['attributes']['honeyhive_inputs.q']}"
        )


def test_32_concurrent_sessions_against_a_threaded_server(make_tracer: Make) -> None:
    client = make_tracer(test_mode=True)
    server = make_tracer(test_mode=True)
    manual, _ = flask_apps(server)

    def one(url: str, i: int) -> Any:
        @ht_trace(tracer=client, session_id=f"sess-{i}")
        def ask() -> Any:
            headers = inject_context_into_carrier({}, client)
            return requests.post(
                f"{url}/agent", json={"q": str(i)}, headers=headers, timeout=20
            ).json()

        return ask()

    with serve_wsgi(manual) as url, ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: one(url, i), range(32)))
    assert_each_request_kept_its_session(replies, server)


def test_32_concurrent_sessions_against_an_async_server(make_tracer: Make) -> None:
    client = make_tracer(test_mode=True)
    server = make_tracer(test_mode=True)

    async def main(url: str) -> list[Any]:
        async with httpx.AsyncClient() as http:

            async def one(i: int) -> Any:
                @ht_trace(tracer=client, session_id=f"sess-{i}")
                async def ask() -> Any:
                    headers = inject_context_into_carrier({}, client)
                    r = await http.post(f"{url}/agent", json={"q": str(i)}, headers=headers)
                    return r.json()

                return await ask()

            return await asyncio.gather(*(one(i) for i in range(32)))

    with serve_asgi(fastapi_manual_app(server)) as url:
        replies = asyncio.run(main(url))
    assert_each_request_kept_its_session(replies, server)


def test_baggage_only_to_allowed_hosts(make_tracer: Make, http_instrumented: None) -> None:
    client = make_tracer(test_mode=True)
    server = make_tracer(test_mode=True)
    manual, _ = flask_apps(server)
    instrument_http(tracer=client, baggage_hosts=["*.internal.example.com"])

    @ht_trace(tracer=client)
    def ask(url: str) -> Any:
        return requests.post(f"{url}/agent", json={"q": "x"}, timeout=10).json()

    with serve_wsgi(manual) as url:
        reply = ask(url)
    assert reply["session"] is None  # 127.0.0.1 is not on the list: no session sent
    (s,) = by_name(server.finished_spans(), ".agent")
    caller = next(c for c in client.finished_spans() if c["kind"] == "CLIENT")
    assert s["trace_id"] == caller["trace_id"]  # the trace still continues
    assert s["attributes"]["honeyhive.session_id"] == server.session_id


def test_threads_executors_and_bind_context_keep_the_session(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True)
    remote = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "baggage": "session_id=remote-s",
    }

    @ht_trace
    def work(tag: str) -> str:
        return str(baggage.get_baggage("session_id"))

    with with_distributed_trace_context(remote, t):
        # No patching: bind_context.
        with ThreadPoolExecutor(2) as pool:
            assert pool.submit(bind_context(work), "bound").result() == "remote-s"
            # Unpatched, the thread starts from an empty context: the tracer's own session.
            assert pool.submit(work, "unpatched").result() == t.session_id
    instrument_threads()
    try:
        with with_distributed_trace_context(remote, t):
            with ThreadPoolExecutor(2) as pool:
                assert pool.submit(work, "pool").result() == "remote-s"
            out: list[str] = []
            th = threading.Thread(target=lambda: out.append(work("thread")))
            th.start()
            th.join()
            assert out == ["remote-s"]

            async def in_loop() -> str:
                loop = asyncio.get_running_loop()
                return str(await loop.run_in_executor(None, work, "executor"))

            assert asyncio.run(in_loop()) == "remote-s"
    finally:
        uninstrument_threads()
    spans = {s["attributes"]["honeyhive_inputs.tag"]: s for s in t.finished_spans()}
    for tag in ("bound", "pool", "thread", "executor"):
        assert spans[tag]["attributes"]["honeyhive.session_id"] == "remote-s"
        assert spans[tag]["parent_span_id"] == "b7ad6b7169203331"
    assert spans["unpatched"]["parent_span_id"] is None


def test_restart_policy_per_middleware(make_tracer: Make) -> None:
    import flask

    server = make_tracer(test_mode=True)
    app = flask.Flask("restart")
    instrument_flask(app, server, trust="restart")

    @app.get("/")
    def index() -> str:
        return json.dumps(dict(baggage.get_all()))

    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with serve_wsgi(app) as url:
        r = requests.get(url, headers={"traceparent": tp, "baggage": "session_id=ok-s"}, timeout=10)
    assert json.loads(r.text) == {"session_id": "ok-s"}
    (s,) = server.finished_spans()
    assert s["trace_id"] != "0af7651916cd43dd8448eb211c80319c" and s["parent_span_id"] is None
    assert s["links"][0]["span_id"] == "b7ad6b7169203331"


def _server_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["kind"] == "SERVER"]


@pytest.mark.parametrize("native_tracing", [True, False])
def test_fastapi_one_server_span_per_request(make_tracer: Make, native_tracing: bool) -> None:
    """FastAPI's built-in telemetry already makes the request's SERVER span through
    honeytrace; the middleware then steps aside. With FastAPI's tracing off, the
    middleware makes it. Either way: one SERVER span, continuing the caller's trace
    and session."""
    import fastapi

    if not hasattr(fastapi, "telemetry") and native_tracing:
        pytest.skip("this FastAPI has no built-in telemetry")
    client = make_tracer(test_mode=True, project="p-client")
    server = make_tracer(test_mode=True)
    # As in a real server process, whose one tracer is the default: FastAPI's own spans
    # (through the global provider) go to it.
    set_default_tracer(server)
    kwargs: dict[str, Any] = {} if native_tracing else {"telemetry": {"tracing": False}}
    if not hasattr(fastapi, "telemetry"):
        kwargs = {}
    app = FastAPI(**kwargs)
    instrument_fastapi(app, server)

    @app.get("/items/{item}")
    async def item(item: str) -> Any:
        return {"item": item, "session": baggage.get_baggage("session_id")}

    @ht_trace(tracer=client)
    def ask(url: str) -> Any:
        return httpx.get(f"{url}/items/7", headers=inject_context_into_carrier({}, client)).json()

    with serve_asgi(app) as url:
        reply = ask(url)
    assert reply == {"item": "7", "session": client.session_id}
    (caller,) = by_name(client.finished_spans(), ".ask")
    (srv,) = _server_spans(server.finished_spans())
    assert srv["name"] == "GET /items/{item}"
    assert (srv["trace_id"], srv["parent_span_id"]) == (caller["trace_id"], caller["span_id"])
    a = srv["attributes"]
    assert a["honeyhive.session_id"] == client.session_id
    assert a["honeyhive.project"] == "p-client"
    assert a["http.response.status_code"] == 200
    assert srv["scope"]["name"] == ("fastapi" if native_tracing and kwargs == {} else "honeytrace")


def test_wsgi_middleware_edges(make_tracer: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any WSGI app: regex and env exclusions, an error raised while the body is
    produced, and a garbage traceparent (a new trace, counted, no error)."""
    import re

    from honeytrace.integrations import ExcludedUrls, HoneyTraceWSGIMiddleware

    monkeypatch.setenv("HH_EXCLUDED_URLS", "/metrics")
    server = make_tracer(test_mode=True)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/broken":

            def body() -> Iterator[bytes]:
                yield b"partial"
                raise ValueError("body failed")

            return body()
        return [b"hello"]

    wrapped = HoneyTraceWSGIMiddleware(app, server, excluded_urls=[re.compile(r"^/internal/\d+$")])
    assert wrapped.app is app
    with serve_wsgi(wrapped) as url:
        assert requests.get(f"{url}/internal/42", timeout=10).text == "hello"
        assert requests.get(f"{url}/metrics", timeout=10).text == "hello"
        r = requests.get(f"{url}/ok?x=1", headers={"traceparent": "garbage"}, timeout=10)
        assert r.text == "hello"
        with pytest.raises(requests.RequestException):
            requests.get(f"{url}/broken", timeout=10).raise_for_status()
    spans = _server_spans(server.finished_spans())
    by_path = {s["attributes"]["url.path"]: s for s in spans}
    assert set(by_path) == {"/ok", "/broken"}
    ok = by_path["/ok"]
    assert ok["parent_span_id"] is None  # garbage traceparent: a new trace
    assert ok["attributes"]["url.query"] == "x=1"
    assert ok["attributes"]["http.response.status_code"] == 200
    broken = by_path["/broken"]
    assert broken["status"]["code"] == "ERROR"
    assert broken["attributes"]["error.type"] == "ValueError"
    assert any(e["name"] == "exception" for e in broken["events"])
    assert server.stats()["traceparent_invalid"] >= 1
    # An ExcludedUrls object is accepted as it is: its paths pass through untraced.
    server.clear_finished_spans()
    with serve_wsgi(
        HoneyTraceWSGIMiddleware(app, server, excluded_urls=ExcludedUrls(["/x"]))
    ) as url:
        assert requests.get(f"{url}/x/1", timeout=10).text == "hello"
        assert requests.get(f"{url}/y", timeout=10).text == "hello"
    assert [s["attributes"]["url.path"] for s in _server_spans(server.finished_spans())] == ["/y"]
    with pytest.raises(TypeError):
        HoneyTraceWSGIMiddleware(app, server, excluded_urls=[42])


# -- repeated header lines: WSGI and ASGI read them the same way --------------------------------


def _echo_apps(server: HoneyHiveTracer) -> tuple[Any, Any]:
    """A Flask and a FastAPI app (honeytrace's middleware on each) that return what they
    continued: the baggage, the trace id and the headers they would send on."""
    import flask

    def seen() -> dict[str, Any]:
        sc = trace.get_current_span().get_span_context()
        return {
            "baggage": dict(baggage.get_all()),
            "trace_id": format(sc.trace_id, "032x"),
            "out": {k: v for k, v in inject_context_into_carrier({}, server).items()},
        }

    wsgi = flask.Flask("echo")
    instrument_flask(wsgi, server)
    wsgi.get("/echo")(seen)
    asgi = FastAPI()
    instrument_fastapi(asgi, server)

    @asgi.get("/echo")
    async def echo() -> Any:
        return seen()

    return wsgi, asgi


TRACE = "0af7651916cd43dd8448eb211c80319c"
TP = f"00-{TRACE}-b7ad6b7169203331-01"
TP2 = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("lines", "check"),
    [
        # Baggage over two lines: one list, in order; a repeated key: the last value.
        (
            [("baggage", "a=1,session_id=sess-r"), ("baggage", "b=2;ttl=3,a=4")],
            lambda r: (
                r["baggage"]["a"] == "4"
                and r["baggage"]["b"] == "2"
                and r["baggage"]["session_id"] == "sess-r"
                and "b=2;ttl=3" in r["out"]["baggage"].split(",")
            ),
        ),
        # tracestate over two lines: joined in order; a repeated key keeps its first value.
        (
            [("traceparent", TP), ("tracestate", "x=1"), ("tracestate", "y=2,x=3")],
            lambda r: r["out"]["tracestate"] == "x=1,y=2" and r["trace_id"] == TRACE,
        ),
        # Two traceparent lines mean "TP,TP" (a WSGI server joins them): not a
        # traceparent, so a new trace, even when both lines are the same.
        ([("traceparent", TP), ("traceparent", TP)], lambda r: r["trace_id"] != TRACE),
        (
            [("traceparent", TP), ("traceparent", TP2)],
            lambda r: r["trace_id"] not in (TRACE, TP2.split("-")[1]),
        ),
    ],
    ids=["baggage", "tracestate", "same-traceparent", "conflicting-traceparents"],
)
def test_repeated_header_lines_read_alike_by_wsgi_and_asgi(
    make_tracer: Make, lines: list[tuple[str, str]], check: Callable[[dict[str, Any]], bool]
) -> None:
    import http.client

    server = make_tracer(test_mode=True)
    wsgi, asgi = _echo_apps(server)
    replies = {}
    for name, serve, app in (("flask", serve_wsgi, wsgi), ("fastapi", serve_asgi, asgi)):
        with serve(app) as url:
            host, port = url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.putrequest("GET", "/echo")
            for k, v in lines:  # each as its own header line
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            assert resp.status == 200
            replies[name] = json.loads(resp.read())
            conn.close()
    assert check(replies["flask"]), replies["flask"]
    # The span ids differ per request; everything else is the same.
    for r in replies.values():
        r["out"].pop("traceparent", None)
        if r["trace_id"] != TRACE:
            r["trace_id"] = "new"  # a trace each service started
    assert replies["flask"] == replies["fastapi"]
