"""gRPC, sync and grpc.aio, on 127.0.0.1: honeytrace's client interceptor on the channel
and server interceptor on the server carry the trace and session across every call
shape, with the gRPC status on both spans. Generic handlers over raw bytes (no
generated code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
from opentelemetry import baggage

from honeytrace import HoneyHiveTracer, trace

grpc = pytest.importorskip("grpc")
from grpc import aio as grpc_aio  # noqa: E402

from honeytrace.integrations.grpc import (  # noqa: E402
    aio_client_interceptors,
    aio_server_interceptor,
    client_interceptor,
    server_interceptor,
)

Make = Callable[..., HoneyHiveTracer]
SERVICE = "demo.Agent"
SHAPES = {  # method: (request streaming, response streaming)
    "Ask": (False, False),
    "Stream": (False, True),
    "Collect": (True, False),
    "Chat": (True, True),
    "Fail": (False, False),
}


def session() -> bytes:
    return (baggage.get_baggage("session_id") or "none").encode()


@trace(event_type="tool")
def tool() -> bytes:
    return session()


def sync_handlers() -> Any:
    def ask(request: bytes, context: Any) -> bytes:
        return tool()

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(3):
            yield tool()

    def collect(requests: Iterator[bytes], context: Any) -> bytes:
        return b"%d:" % sum(1 for _ in requests) + tool()

    def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for _ in requests:
            yield tool()

    def fail(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such agent")
        raise AssertionError("unreachable")

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Ask": grpc.unary_unary_rpc_method_handler(ask),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )


def aio_handlers() -> Any:
    async def ask(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0)
        return tool()

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield tool()

    async def collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        n = 0
        async for _ in requests:
            n += 1
        return b"%d:" % n + tool()

    async def chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield tool()

    async def fail(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such agent")
        raise AssertionError("unreachable")

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Ask": grpc.unary_unary_rpc_method_handler(ask),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )


def method(channel: Any, name: str) -> Any:
    req_stream, resp_stream = SHAPES[name]
    make = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(req_stream, resp_stream)]
    return make(f"/{SERVICE}/{name}")


EXPECTED = {
    "Ask": [b"sess-grpc"],
    "Stream": [b"sess-grpc"] * 3,
    "Collect": [b"2:sess-grpc"],
    "Chat": [b"sess-grpc"] * 2,
}


def check(client: HoneyHiveTracer, server: HoneyHiveTracer, replies: dict[str, Any]) -> None:
    assert replies.pop("Fail") == (grpc.StatusCode.NOT_FOUND, "no such agent")
    assert replies == EXPECTED
    calls = {
        s["name"].rsplit("/", 1)[1]: s for s in client.finished_spans() if s["kind"] == "CLIENT"
    }
    (request,) = [s for s in client.finished_spans() if s["name"] == "request"]
    handled = {
        s["name"].rsplit("/", 1)[1]: s for s in server.finished_spans() if s["kind"] == "SERVER"
    }
    assert set(calls) == set(handled) == set(SHAPES)
    for name in SHAPES:
        c, h = calls[name], handled[name]
        assert c["parent_span_id"] == request["span_id"]
        assert (h["trace_id"], h["parent_span_id"]) == (c["trace_id"], c["span_id"]), name
        assert h["attributes"]["honeyhive.session_id"] == "sess-grpc"
        assert h["attributes"]["rpc.system"] == "grpc"
        assert h["attributes"]["rpc.service"] == SERVICE and h["attributes"]["rpc.method"] == name
        code = 5 if name == "Fail" else 0
        assert c["attributes"]["rpc.grpc.status_code"] == code, name
        assert h["attributes"]["rpc.grpc.status_code"] == code, name
        want = "ERROR" if name == "Fail" else "UNSET"
        assert c["status"]["code"] == h["status"]["code"] == want, name
    # The handlers' traced functions are children of the SERVER spans, in the session.
    tools = [s for s in server.finished_spans() if s["name"].endswith(".tool")]
    by_id = {s["span_id"]: s for s in server.finished_spans()}
    assert len(tools) == 1 + 3 + 1 + 2
    for t in tools:
        assert by_id[t["parent_span_id"]]["kind"] == "SERVER"
        assert t["attributes"]["honeyhive.session_id"] == "sess-grpc"


def test_sync_grpc_carries_the_session(make_tracer: Make) -> None:
    client = make_tracer(test_mode=True, session_id="sess-grpc", project="client-p")
    server = make_tracer(test_mode=True, project="server-p")
    srv = grpc.server(ThreadPoolExecutor(4), interceptors=[server_interceptor(server)])
    srv.add_generic_rpc_handlers((sync_handlers(),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    replies: dict[str, Any] = {}
    try:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(f"127.0.0.1:{port}"), client_interceptor(client)
        )
        with client.start_as_current_span("request"):
            replies["Ask"] = [method(channel, "Ask")(b"q", timeout=10)]
            replies["Stream"] = list(method(channel, "Stream")(b"q", timeout=10))
            replies["Collect"] = [method(channel, "Collect")(iter([b"a", b"b"]), timeout=10)]
            replies["Chat"] = list(method(channel, "Chat")(iter([b"a", b"b"]), timeout=10))
            with pytest.raises(grpc.RpcError) as err:
                method(channel, "Fail")(b"q", timeout=10)
            replies["Fail"] = (err.value.code(), err.value.details())
        channel.close()
    finally:
        srv.stop(None)
    check(client, server, replies)


def test_aio_grpc_carries_the_session(make_tracer: Make) -> None:
    client = make_tracer(test_mode=True, session_id="sess-grpc", project="client-p")
    server = make_tracer(test_mode=True, project="server-p")

    async def main() -> dict[str, Any]:
        srv = grpc_aio.server(interceptors=[aio_server_interceptor(server)])
        srv.add_generic_rpc_handlers((aio_handlers(),))
        port = srv.add_insecure_port("127.0.0.1:0")
        await srv.start()
        replies: dict[str, Any] = {}
        try:
            async with grpc_aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=aio_client_interceptors(client)
            ) as channel:

                async def two() -> AsyncIterator[bytes]:
                    yield b"a"
                    yield b"b"

                with client.start_as_current_span("request"):
                    replies["Ask"] = [await method(channel, "Ask")(b"q", timeout=10)]
                    replies["Stream"] = [
                        r async for r in method(channel, "Stream")(b"q", timeout=10)
                    ]
                    replies["Collect"] = [await method(channel, "Collect")(two(), timeout=10)]
                    replies["Chat"] = [r async for r in method(channel, "Chat")(two(), timeout=10)]
                    with pytest.raises(grpc.RpcError) as err:
                        await method(channel, "Fail")(b"q", timeout=10)
                    replies["Fail"] = (err.value.code(), err.value.details())
                await asyncio.sleep(0.1)  # the calls' done callbacks end the CLIENT spans
        finally:
            await srv.stop(None)
        return replies

    replies = asyncio.run(main())
    check(client, server, replies)


def test_without_the_interceptors_nothing_crosses(make_tracer: Make) -> None:
    """The control: over a plain channel and server, the handler's span starts a trace
    of its own."""
    client = make_tracer(test_mode=True, session_id="sess-grpc")
    srv = grpc.server(ThreadPoolExecutor(2))
    srv.add_generic_rpc_handlers((sync_handlers(),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with client.start_as_current_span("request"):
                method(channel, "Ask")(b"q", timeout=10)
    finally:
        srv.stop(None)
    spans = client.finished_spans()
    (request,) = [s for s in spans if s["name"] == "request"]
    (tool_span,) = [s for s in spans if s["name"].endswith(".tool")]
    assert tool_span["parent_span_id"] is None
    assert tool_span["trace_id"] != request["trace_id"]
    assert not [s for s in spans if s["kind"] in ("CLIENT", "SERVER")]
