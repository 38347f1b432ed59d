"""The remote agent service: continues the caller's trace and session.

python examples/distributed/agent_server.py --port 8765
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import context, propagate

from honeytrace import HoneyHiveTracer

tracer = HoneyHiveTracer.init(project="agents", source="server", service_name="agent-server")


def fake_model(prompt: str) -> str:
    """Stands in for an LLM call."""
    return f"[remote model] {prompt.upper()}"


def research_agent(query: str) -> str:
    with tracer.start_as_current_span(
        "research_agent", attributes={"honeyhive_event_type": "chain"}
    ):
        with tracer.start_as_current_span(
            "fake_model",
            attributes={"honeyhive_event_type": "model", "honeyhive_inputs.prompt": query},
        ) as span:
            answer = fake_model(query)
            span.set_attribute("honeyhive_outputs.result", answer)
        return answer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # Continue the caller's trace and session (issue 4 turns this into one line).
        token = context.attach(propagate.extract(self.headers))
        try:
            answer = research_agent(body["query"])
        finally:
            context.detach(token)
        out = json.dumps({"response": answer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    # SIGTERM -> SystemExit, so the exit hook flushes the spans.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"agent server on http://127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
