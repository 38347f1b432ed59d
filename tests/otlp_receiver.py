"""A real OTLP/HTTP receiver (and HoneyHive REST stand-in) on 127.0.0.1 for tests.

Every trace request is decoded with the official ``opentelemetry-proto`` messages:
protobuf with ``ParseFromString``; OTLP/JSON strictly with ``json_format.Parse``
after mapping the hex ids OTLP/JSON uses to the base64 that proto3 JSON expects
(unknown fields are an error, so malformed JSON fails the test).
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_b64(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                out[k] = base64.b64encode(bytes.fromhex(v)).decode() if v else ""
            else:
                out[k] = _hex_ids_to_b64(v)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_b64(x) for x in node]
    return node


def parse_otlp_json(raw: bytes | str) -> ExportTraceServiceRequest:
    msg = ExportTraceServiceRequest()
    json_format.Parse(json.dumps(_hex_ids_to_b64(json.loads(raw))), msg)
    return msg


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def flatten(req: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Spans of a request as plain dicts (ids in hex, attributes as Python values)."""
    out = []
    for rs in req.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                keys = [kv.key for kv in s.attributes]
                out.append(
                    {
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex() or None,
                        "kind": s.kind,
                        "flags": s.flags,
                        "trace_state": s.trace_state,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": {kv.key: any_value(kv.value) for kv in s.attributes},
                        "attribute_keys": keys,
                        "events": [
                            {
                                "name": e.name,
                                "attributes": {kv.key: any_value(kv.value) for kv in e.attributes},
                            }
                            for e in s.events
                        ],
                        "links": [
                            {"trace_id": lk.trace_id.hex(), "span_id": lk.span_id.hex()}
                            for lk in s.links
                        ],
                        "status": {"code": s.status.code, "message": s.status.message},
                        "scope": ss.scope.name,
                        "scope_version": ss.scope.version,
                        "resource": resource,
                    }
                )
    return out


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes  # decompressed
    raw_size: int
    trace_request: Optional[ExportTraceServiceRequest] = None
    json_body: Any = None
    status: int = 200
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # OTLP partial success: the request is accepted, this many spans rejected.
    rejected: int = 0
    rejected_message: str = ""
    # Faults: close the connection with a TCP reset instead of answering; or answer
    # slowly, one byte of the status line and headers every `slow` seconds.
    reset: bool = False
    slow: float = 0.0


class Receiver:
    """Start with ``with Receiver() as r:``; ``r.url`` is the base URL."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.script: list[Reply] = []  # replies for trace requests, consumed in order
        self.default_reply = Reply()
        self.on_request: Optional[Callable[[Request], None]] = None
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = raw
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    body = gzip.decompress(raw)
                req = Request(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    raw_size=len(raw),
                )
                is_traces = self.path.endswith("/v1/traces")
                reply = receiver.default_reply
                if is_traces:
                    with receiver._cond:
                        if receiver.script:
                            reply = receiver.script.pop(0)
                    ctype = req.headers.get("content-type", "")
                    if ctype.startswith("application/json"):
                        req.trace_request = parse_otlp_json(body)
                    else:
                        msg = ExportTraceServiceRequest()
                        msg.ParseFromString(body)
                        req.trace_request = msg
                elif body:
                    req.json_body = json.loads(body)
                req.status = reply.status
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                with receiver._cond:
                    receiver.requests.append(req)
                    receiver._cond.notify_all()
                if receiver.on_request:
                    receiver.on_request(req)
                if is_traces:
                    answer = ExportTraceServiceResponse()
                    if reply.rejected:
                        answer.partial_success.rejected_spans = reply.rejected
                        answer.partial_success.error_message = reply.rejected_message
                    if req.headers.get("content-type", "").startswith("application/json"):
                        out = json_format.MessageToJson(answer).encode()
                        ctype_out = "application/json"
                    else:
                        out = answer.SerializeToString()
                        ctype_out = "application/x-protobuf"
                elif self.path == "/session/start" and isinstance(req.json_body, dict):
                    sid = req.json_body.get("session", {}).get("session_id", "x")
                    out, ctype_out = json.dumps({"session_id": sid}).encode(), "application/json"
                else:
                    out, ctype_out = b'{"success": true}', "application/json"
                if reply.slow:
                    head = f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(out)}\r\n\r\n"
                    for byte in head.encode():
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.slow)
                    self.wfile.write(out)
                    return
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", ctype_out)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = _handle
            do_PUT = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client gone away (hung-collector tests close sockets on purpose)

        self._server = Server(("127.0.0.1", port), Handler)
        self._scheme = "http"
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Serve over TLS with ``context`` from now on (``url`` becomes https://)."""
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace_requests(self) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.trace_request is not None]

    def delivered(self) -> list[Request]:
        """Trace requests answered with success."""
        return [r for r in self.trace_requests() if 200 <= r.status < 300]

    def spans(self) -> list[dict[str, Any]]:
        """Spans from successfully answered trace requests."""
        out: list[dict[str, Any]] = []
        for r in self.delivered():
            assert r.trace_request is not None
            out.extend(flatten(r.trace_request))
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        self.wait_for(
            lambda: (
                sum(
                    len(flatten(r.trace_request))
                    for r in self.requests
                    if r.trace_request is not None and 200 <= r.status < 300
                )
                >= n
            ),
            timeout,
        )
        return self.spans()
