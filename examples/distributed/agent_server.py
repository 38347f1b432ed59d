"""The remote agent service: continues the caller's trace and session in one line.

python examples/distributed/agent_server.py --port 8765
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from honeytrace import HoneyHiveTracer, enrich_span, trace, with_distributed_trace_context

tracer = HoneyHiveTracer.init(project="agents", source="server", service_name="agent-server")


@trace(event_type="model")
def fake_model(prompt: str) -> str:
    """Stands in for an LLM call."""
    enrich_span(metrics={"prompt_tokens": len(prompt.split())})
    return f"[remote model] {prompt.upper()}"


@trace(event_type="chain")
def research_agent(query: str) -> str:
    return fake_model(f"research: {query}")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # The one line: continue the caller's trace and session, whatever the header case.
        with with_distributed_trace_context(dict(self.headers), tracer):
            answer = research_agent(body["query"])
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
