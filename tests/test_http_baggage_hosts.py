"""``baggage_hosts`` holds on every hop: a redirect from an allowed host to another
host carries no session there (requests and httpx, sync and async), and the list is
the tracer's own: another ``init(instrument_http=True)`` does not reset it. Two plain
HTTP servers on 127.0.0.1; the second is addressed as ``localhost``, a host outside
the list."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import httpx
import pytest
import requests

from honeytrace import HoneyHiveTracer
from honeytrace.integrations import uninstrument_http

Make = Callable[..., HoneyHiveTracer]


@contextmanager
def server(redirect_to: str | None, seen: list[dict[str, str]]) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            if redirect_to:
                self.send_response(302)
                self.send_header("Location", redirect_to)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def uninstrumented() -> Iterator[None]:
    yield
    uninstrument_http()


def get_requests(url: str) -> None:
    requests.get(url, timeout=10)


def get_httpx(url: str) -> None:
    with httpx.Client(follow_redirects=True, timeout=10) as c:
        c.get(url)


def get_httpx_async(url: str) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(follow_redirects=True, timeout=10) as c:
            await c.get(url)

    asyncio.run(main())


@pytest.mark.parametrize("get", [get_requests, get_httpx, get_httpx_async])
def test_a_redirect_to_another_host_carries_no_session(
    make_tracer: Make, uninstrumented: None, get: Callable[[str], None]
) -> None:
    t = make_tracer(test_mode=True, instrument_http=True, baggage_hosts=["127.0.0.1"])
    # A second tracer turning the integration on must not widen the first one's list.
    make_tracer(test_mode=True, instrument_http=True)
    final: list[dict[str, str]] = []
    first: list[dict[str, str]] = []
    with server(None, final) as final_port:
        with server(f"http://localhost:{final_port}/end", first) as first_port:
            with t.start_as_current_span("request"):
                get(f"http://127.0.0.1:{first_port}/start")
    assert len(first) == 1 and len(final) == 1
    assert "baggage" in first[0] and f"session_id={t.session_id}" in first[0]["baggage"]
    assert "traceparent" in final[0]  # the trace continues across the redirect
    assert "baggage" not in final[0], final[0]  # the session does not leave the list
