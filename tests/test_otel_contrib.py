"""OpenTelemetry's contrib instrumentors with honeytrace as their provider.

Each instrumentor is the official package (pinned in the test extras), given
``tracer_provider=tracer.provider``; servers run on 127.0.0.1. For each: every request
succeeds, its spans nest in one trace under the caller's span, the caller's session is
stamped on the server's side, there is one span per operation, and honeytrace logs no
warning. (Celery's instrumentor: tests/test_celery.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import httpx
import pytest
import requests

from honeytrace import HoneyHiveTracer, _log, trace
from honeytrace.integrations import uninstrument_http

# The pinned instrumentors need Python 3.10 (the test extras install them there); the
# run at the opentelemetry-api floor installs the suite without them.
if sys.version_info < (3, 10) or os.environ.get("HONEYTRACE_CONTRIB_OPTIONAL") == "1":
    pytest.importorskip("opentelemetry.instrumentation.flask")

from test_distributed_servers import serve_asgi, serve_wsgi

Make = Callable[..., HoneyHiveTracer]


@pytest.fixture
def no_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """honeytrace logs nothing at WARNING or above during the test."""
    with caplog.at_level(logging.WARNING, logger="honeytrace"):
        yield
        _log.drain()
    bad = [r.getMessage() for r in caplog.records if r.name.startswith("honeytrace")]
    assert not bad, bad


@pytest.fixture
def pair(make_tracer: Make) -> tuple[HoneyHiveTracer, HoneyHiveTracer]:
    """A calling service and a called one, each with its own session."""
    client = make_tracer(project="contrib", source="client", test_mode=True)
    server = make_tracer(project="contrib", source="server", test_mode=True)
    assert client.session_id != server.session_id
    return client, server


def spans_of(t: HoneyHiveTracer) -> list[dict[str, Any]]:
    t.flush()
    return t.finished_spans()


def the(spans: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one span matching every ``key=value`` (``scope``: its scope name)."""
    found = [
        s
        for s in spans
        if all((s["scope"]["name"] if k == "scope" else s[k]) == v for k, v in match.items())
    ]
    assert len(found) == 1, (match, [(s["name"], s["kind"], s["scope"]["name"]) for s in spans])
    return found[0]


def assert_continues(
    server_span: dict[str, Any], client_span: dict[str, Any], client: HoneyHiveTracer
) -> None:
    """``server_span`` is the remote child of ``client_span``, in the caller's session."""
    assert server_span["trace_id"] == client_span["trace_id"]
    assert server_span["parent_span_id"] == client_span["span_id"]
    assert server_span["parent_is_remote"] is True
    assert server_span["attributes"]["honeyhive.session_id"] == client.session_id
    assert server_span["attributes"]["session.id"] == client.session_id


def call_through(client: HoneyHiveTracer, url: str, n: int = 3) -> list[dict[str, Any]]:
    """``n`` requests with ``requests``, each inside its own client span, with the
    client's contrib requests instrumentor making the CLIENT spans. Returns the client
    spans, in order."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RequestsInstrumentor().instrument(tracer_provider=client.provider)
    try:
        for i in range(n):
            with client.start_as_current_span(f"user-request-{i}"):
                r = requests.get(f"{url}/agent?q={i}", timeout=10)
                assert r.status_code == 200, r.text
                assert r.json() == {"answer": i}
    finally:
        RequestsInstrumentor().uninstrument()
    spans = spans_of(client)
    out = []
    for i in range(n):
        root = the(spans, name=f"user-request-{i}")
        kids = [s for s in spans if s["parent_span_id"] == root["span_id"]]
        assert [(s["kind"], s["scope"]["name"]) for s in kids] == [
            ("CLIENT", "opentelemetry.instrumentation.requests")
        ]
        out.append(kids[0])
    return out


def assert_server_side(
    server: HoneyHiveTracer,
    client: HoneyHiveTracer,
    client_spans: list[dict[str, Any]],
    scope: str,
) -> None:
    """One SERVER span per request from the instrumentor's scope, each continuing its
    CLIENT span, the handler's ``@trace`` span its descendant in the same session."""
    spans = spans_of(server)
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert len(servers) == len(client_spans), [(s["name"], s["scope"]) for s in servers]
    for i, c in enumerate(client_spans):
        srv = next(s for s in servers if s["parent_span_id"] == c["span_id"])
        assert srv["scope"]["name"] == scope
        assert_continues(srv, c, client)
        handler = next(
            s
            for s in spans
            if s["name"].endswith("answer") and s["attributes"].get("honeyhive_inputs.q") == i
        )
        assert handler["trace_id"] == srv["trace_id"]
        by_id = {s["span_id"]: s for s in spans}
        node = handler
        while node["span_id"] != srv["span_id"]:
            node = by_id[node["parent_span_id"]]  # KeyError: not under the SERVER span
        assert handler["attributes"]["honeyhive.session_id"] == client.session_id


# ---------------------------------------------------------------------------------
# Servers


def traced_answer(server: HoneyHiveTracer) -> Callable[[int], int]:
    @trace(tracer=server)
    def answer(q: int) -> int:
        return q

    return answer


def test_flask_instrumentor(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer], no_warnings: None
) -> None:
    from flask import Flask, request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    client, server = pair
    answer = traced_answer(server)
    app = Flask(__name__)

    @app.get("/agent")
    def agent() -> dict[str, int]:
        return {"answer": answer(int(request.args["q"]))}

    FlaskInstrumentor().instrument_app(app, tracer_provider=server.provider)
    try:
        with serve_wsgi(app) as url:
            client_spans = call_through(client, url)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert_server_side(server, client, client_spans, "opentelemetry.instrumentation.flask")
    srv = the(spans_of(server), kind="SERVER", parent_span_id=client_spans[0]["span_id"])
    assert srv["name"] == "GET /agent"
    assert srv["attributes"]["http.route"] == "/agent"


def test_wsgi_middleware(pair: tuple[HoneyHiveTracer, HoneyHiveTracer], no_warnings: None) -> None:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    client, server = pair
    answer = traced_answer(server)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        q = int(environ["QUERY_STRING"].split("=")[1])
        body = json.dumps({"answer": answer(q)}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    wrapped = OpenTelemetryMiddleware(app, tracer_provider=server.provider)
    with serve_wsgi(wrapped) as url:
        client_spans = call_through(client, url)
    assert_server_side(server, client, client_spans, "opentelemetry.instrumentation.wsgi")


def fastapi_app(server: HoneyHiveTracer) -> Any:
    from fastapi import FastAPI

    answer = traced_answer(server)
    app = FastAPI()

    @app.get("/agent")
    async def agent(q: int) -> dict[str, int]:
        return {"answer": answer(q)}

    return app


def test_fastapi_instrumentor(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer], no_warnings: None
) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    client, server = pair
    app = fastapi_app(server)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=server.provider)
    try:
        with serve_asgi(app) as url:
            client_spans = call_through(client, url)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert_server_side(server, client, client_spans, "opentelemetry.instrumentation.fastapi")


def test_asgi_middleware(pair: tuple[HoneyHiveTracer, HoneyHiveTracer], no_warnings: None) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    client, server = pair
    answer = traced_answer(server)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        q = int(scope["query_string"].decode().split("=")[1])
        body = json.dumps({"answer": answer(q)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    with serve_asgi(OpenTelemetryMiddleware(app, tracer_provider=server.provider)) as url:
        client_spans = call_through(client, url)
    assert_server_side(server, client, client_spans, "opentelemetry.instrumentation.asgi")


DJANGO_URLS = sys.modules[__name__]
urlpatterns: list[Any] = []


def test_django_instrumentor(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer], no_warnings: None
) -> None:
    import django
    from django.conf import settings

    client, server = pair
    answer = traced_answer(server)
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            SECRET_KEY="contrib-matrix",
        )
        django.setup()
    from django.http import JsonResponse
    from django.urls import path
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    def agent(request: Any) -> Any:
        return JsonResponse({"answer": answer(int(request.GET["q"]))})

    urlpatterns[:] = [path("agent", agent)]
    DjangoInstrumentor().instrument(tracer_provider=server.provider)
    try:
        from django.core.wsgi import get_wsgi_application

        with serve_wsgi(get_wsgi_application()) as url:
            client_spans = call_through(client, url)
    finally:
        DjangoInstrumentor().uninstrument()
    assert_server_side(server, client, client_spans, "opentelemetry.instrumentation.django")


# ---------------------------------------------------------------------------------
# Clients: the CLIENT span is the contrib one, below the caller's span, and the
# headers it sends continue it, with the session in the baggage.


@contextmanager
def header_echo() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}", seen
    finally:
        srv.shutdown()
        th.join(10)


def assert_one_client_span(
    t: HoneyHiveTracer, scope: str, seen: list[dict[str, str]], n: int
) -> None:
    spans = spans_of(t)
    roots = [s for s in spans if s["name"].startswith("call-")]
    assert len(roots) == n and len(seen) == n
    for root, headers in zip(sorted(roots, key=lambda s: s["name"]), seen):
        kids = [s for s in spans if s["parent_span_id"] == root["span_id"]]
        assert [(s["kind"], s["scope"]["name"]) for s in kids] == [("CLIENT", scope)], kids
        c = kids[0]
        assert c["attributes"]["honeyhive.session_id"] == t.session_id
        assert headers["traceparent"].split("-")[1:3] == [c["trace_id"], c["span_id"]]
        assert f"session_id={t.session_id}" in headers["baggage"]


@pytest.mark.parametrize("with_ours", [False, True], ids=["alone", "with-instrument_http"])
def test_requests_and_urllib3_instrumentors(
    make_tracer: Make, no_warnings: None, with_ours: bool
) -> None:
    """requests above urllib3, both instrumented by contrib, and honeytrace's own
    ``instrument_http`` on as well: still one CLIENT span per request."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    t = make_tracer(project="contrib", test_mode=True, instrument_http=with_ours)
    RequestsInstrumentor().instrument(tracer_provider=t.provider)
    URLLib3Instrumentor().instrument(tracer_provider=t.provider)
    try:
        with header_echo() as (url, seen):
            for i in range(3):
                with t.start_as_current_span(f"call-{i}"):
                    assert requests.get(url, timeout=10).text == "ok"
    finally:
        RequestsInstrumentor().uninstrument()
        URLLib3Instrumentor().uninstrument()
        uninstrument_http()
    assert_one_client_span(t, "opentelemetry.instrumentation.requests", seen, 3)


def test_urllib3_instrumentor(make_tracer: Make, no_warnings: None) -> None:
    import urllib3
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    t = make_tracer(project="contrib", test_mode=True)
    URLLib3Instrumentor().instrument(tracer_provider=t.provider)
    try:
        with header_echo() as (url, seen), urllib3.PoolManager() as pool:
            for i in range(2):
                with t.start_as_current_span(f"call-{i}"):
                    assert pool.request("GET", url).data == b"ok"
    finally:
        URLLib3Instrumentor().uninstrument()
    assert_one_client_span(t, "opentelemetry.instrumentation.urllib3", seen, 2)


@pytest.mark.parametrize("with_ours", [False, True], ids=["alone", "with-instrument_http"])
def test_httpx_instrumentor_sync_and_async(
    make_tracer: Make, no_warnings: None, with_ours: bool
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    t = make_tracer(project="contrib", test_mode=True, instrument_http=with_ours)
    HTTPXClientInstrumentor().instrument(tracer_provider=t.provider)
    try:
        with header_echo() as (url, seen):
            with t.start_as_current_span("call-0"):
                assert httpx.get(url).text == "ok"

            async def go() -> None:
                async with httpx.AsyncClient() as c:
                    with t.start_as_current_span("call-1"):
                        assert (await c.get(url)).text == "ok"

            asyncio.run(go())
    finally:
        HTTPXClientInstrumentor().uninstrument()
        uninstrument_http()
    assert_one_client_span(t, "opentelemetry.instrumentation.httpx", seen, 2)


def test_aiohttp_client_instrumentor(make_tracer: Make, no_warnings: None) -> None:
    import aiohttp
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    t = make_tracer(project="contrib", test_mode=True)
    AioHttpClientInstrumentor().instrument(tracer_provider=t.provider)
    try:
        with header_echo() as (url, seen):

            async def go() -> None:
                async with aiohttp.ClientSession() as s:
                    for i in range(2):
                        with t.start_as_current_span(f"call-{i}"):
                            async with s.get(url) as r:
                                assert await r.text() == "ok"

            asyncio.run(go())
    finally:
        AioHttpClientInstrumentor().uninstrument()
    assert_one_client_span(t, "opentelemetry.instrumentation.aiohttp_client", seen, 2)


def test_sqlite3_instrumentor(make_tracer: Make, no_warnings: None) -> None:
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    t = make_tracer(project="contrib", test_mode=True)
    SQLite3Instrumentor().instrument(tracer_provider=t.provider)
    try:

        @trace(tracer=t)
        def store(rows: int) -> int:
            conn = sqlite3.connect(":memory:")
            cur = conn.cursor()  # dbapi instrumentation traces cursors
            cur.execute("create table t (x integer)")
            cur.executemany("insert into t values (?)", [(i,) for i in range(rows)])
            cur.execute("select count(*) from t")
            (n,) = cur.fetchone()
            conn.close()
            return int(n)

        assert store(5) == 5
    finally:
        SQLite3Instrumentor().uninstrument()
    spans = spans_of(t)
    root = the(spans, name="test_otel_contrib.store")
    db = [s for s in spans if s["scope"]["name"] == "opentelemetry.instrumentation.sqlite3"]
    assert len(db) == 3, [s["name"] for s in db]
    for s in db:
        assert s["parent_span_id"] == root["span_id"] and s["kind"] == "CLIENT"
        assert s["attributes"]["db.system"] == "sqlite"
        assert s["attributes"]["honeyhive.session_id"] == t.session_id


def test_logging_instrumentor(make_tracer: Make, no_warnings: None) -> None:
    """Log records made inside a honeytrace span carry its trace and span ids."""
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    t = make_tracer(project="contrib", test_mode=True)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("contrib.app")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    LoggingInstrumentor().instrument(
        tracer_provider=t.provider, set_logging_format=False, inject_trace_context=True
    )
    try:
        with t.start_as_current_span("work") as span:
            log.info("inside")
        ctx = span.get_span_context()
    finally:
        LoggingInstrumentor().uninstrument()
    (r,) = records
    assert r.otelTraceID == f"{ctx.trace_id:032x}"  # type: ignore[attr-defined]
    assert r.otelSpanID == f"{ctx.span_id:016x}"  # type: ignore[attr-defined]
    assert r.otelServiceName == "contrib"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------
# openai-v2 against a local server speaking OpenAI's chat completions API


@contextmanager
def fake_openai() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Chat completions on 127.0.0.1: a JSON reply, or server-sent chunks when the
    request asks to stream. Yields the base URL and the request bodies."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
            if body.get("stream"):
                chunks = [
                    {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": word},
                                "finish_reason": None,
                            }
                        ],
                    }
                    for word in ("Hello", " there")
                ]
                chunks.append(
                    {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    }
                )
                data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                payload, ctype = data.encode(), "text/event-stream"
            else:
                reply = {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello there"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                }
                payload, ctype = json.dumps(reply).encode(), "application/json"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/v1", bodies
    finally:
        srv.shutdown()
        th.join(10)


def test_openai_v2_instrumentor_sync_stream_and_async(make_tracer: Make, no_warnings: None) -> None:
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    t = make_tracer(project="contrib", test_mode=True)
    OpenAIInstrumentor().instrument(tracer_provider=t.provider)
    messages = [{"role": "user", "content": "Say hello"}]
    try:
        with fake_openai() as (url, bodies):
            client = openai.OpenAI(base_url=url, api_key="test", max_retries=0)

            @trace(tracer=t, event_type="chain")
            def agent() -> list[str]:
                one = client.chat.completions.create(model="gpt-test", messages=messages)
                stream = client.chat.completions.create(
                    model="gpt-test", messages=messages, stream=True
                )
                two = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

                async def three() -> str:
                    aclient = openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0)
                    r = await aclient.chat.completions.create(model="gpt-test", messages=messages)
                    await aclient.close()
                    return str(r.choices[0].message.content)

                return [str(one.choices[0].message.content), two, asyncio.run(three())]

            assert agent() == ["Hello there"] * 3
            assert len(bodies) == 3
    finally:
        OpenAIInstrumentor().uninstrument()
    spans = spans_of(t)
    root = the(spans, name="test_otel_contrib.agent")
    chats = [s for s in spans if s["name"] == "chat gpt-test"]
    assert len(chats) == 3, [(s["name"], s["scope"]) for s in spans]
    for s in chats:
        a = s["attributes"]
        assert s["parent_span_id"] == root["span_id"] and s["kind"] == "CLIENT"
        assert a["gen_ai.request.model"] == "gpt-test"
        assert a["honeyhive.session_id"] == t.session_id
        assert a["honeyhive_event_type"] == "model"


# ---------------------------------------------------------------------------------
# gRPC: OpenTelemetry's client and server interceptors (sync and aio) on 127.0.0.1


def test_grpc_instrumentor_sync_and_aio(
    pair: tuple[HoneyHiveTracer, HoneyHiveTracer], no_warnings: None
) -> None:
    """A unary and a server-streaming call, sync and ``grpc.aio``: the SERVER span is the
    remote child of the CLIENT span, the handler sees the caller's session in its
    baggage, and its ``@trace`` span sits below the SERVER span."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from grpc import aio
    from opentelemetry import baggage
    from opentelemetry.instrumentation import grpc as otel_grpc
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    client, server = pair
    service = "demo.Agent"

    @trace(tracer=server, event_type="tool")
    def tool() -> bytes:
        return (baggage.get_baggage("session_id") or "none").encode()

    def ask(request: bytes, context: Any) -> bytes:
        return tool()

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        yield tool()
        yield tool()

    handlers = grpc.method_handlers_generic_handler(
        service,
        {
            "Ask": grpc.unary_unary_rpc_method_handler(ask),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    srv = grpc.server(
        ThreadPoolExecutor(4),
        interceptors=[otel_grpc.server_interceptor(tracer_provider=server.provider)],
    )
    srv.add_generic_rpc_handlers((handlers,))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    target = f"127.0.0.1:{port}"
    try:
        # the instrumentor's own channel wrapper (its sync interceptor is not grpc's type)
        channel = intercept_channel(
            grpc.insecure_channel(target),
            otel_grpc.client_interceptor(tracer_provider=client.provider),
        )
        with client.start_as_current_span("call-0"):
            assert channel.unary_unary(f"/{service}/Ask")(b"q") == client.session_id.encode()
        with client.start_as_current_span("call-1"):
            got = list(channel.unary_stream(f"/{service}/Stream")(b"q"))
            assert got == [client.session_id.encode()] * 2
        channel.close()

        async def go() -> None:
            async with aio.insecure_channel(
                target,
                interceptors=otel_grpc.aio_client_interceptors(tracer_provider=client.provider),
            ) as ch:
                with client.start_as_current_span("call-2"):
                    reply = await ch.unary_unary(f"/{service}/Ask")(b"q")
                    assert reply == client.session_id.encode()

        asyncio.run(go())
    finally:
        srv.stop(None)
    cspans = spans_of(client)
    sspans = spans_of(server)
    by_id = {s["span_id"]: s for s in sspans}
    for i, method in enumerate(["Ask", "Stream", "Ask"]):
        root = the(cspans, name=f"call-{i}")
        (c,) = [s for s in cspans if s["parent_span_id"] == root["span_id"]]
        assert (c["kind"], c["scope"]["name"]) == ("CLIENT", "opentelemetry.instrumentation.grpc")
        assert c["name"] == f"/{service}/{method}"
        srv_span = the(sspans, parent_span_id=c["span_id"])
        assert srv_span["kind"] == "SERVER"
        assert_continues(srv_span, c, client)
        tools = [s for s in sspans if s["parent_span_id"] == srv_span["span_id"]]
        assert len(tools) == (2 if method == "Stream" else 1)
        assert all(s["attributes"]["honeyhive.session_id"] == client.session_id for s in tools)
        assert by_id[tools[0]["span_id"]]["trace_id"] == c["trace_id"]
