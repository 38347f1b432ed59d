"""The client service: runs a session of agent steps, some local, some on the
remote agent service, all in one trace and one session.

    python examples/distributed/agent_client.py --server http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from opentelemetry import baggage, context, propagate

from honeytrace import HoneyHiveTracer

tracer = HoneyHiveTracer.init(project="agents", source="client", service_name="agent-client")


def fake_model(prompt: str) -> str:
    """Stands in for an LLM call."""
    return f"[local model] {prompt[::-1]}"


def call_remote_agent(server: str, query: str) -> str:
    with tracer.start_as_current_span(
        "call_research_agent_remote", attributes={"honeyhive_event_type": "tool"}
    ):
        headers: dict[str, str] = {"Content-Type": "application/json"}
        propagate.inject(headers)  # traceparent + baggage (session_id, project, source)
        req = urllib.request.Request(
            f"{server}/agent", data=json.dumps({"query": query}).encode(), headers=headers
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: str = json.loads(resp.read())["response"]
        return answer


def run_session(server: str, queries: list[str]) -> str:
    # Put the session in baggage so it travels with every outgoing request
    # (issue 4's inject_context_into_carrier does this for you).
    ctx = baggage.set_baggage("session_id", tracer.session_id)
    ctx = baggage.set_baggage("project", tracer.project or "", ctx)
    ctx = baggage.set_baggage("source", tracer.source, ctx)
    token = context.attach(ctx)
    try:
        with tracer.start_as_current_span(
            "agent_session", attributes={"honeyhive_event_type": "chain"}
        ):
            for i, query in enumerate(queries):
                if i % 2:  # conditional: every other step runs remotely
                    call_remote_agent(server, query)
                else:
                    with tracer.start_as_current_span(
                        "local_agent", attributes={"honeyhive_event_type": "model"}
                    ) as span:
                        span.set_attribute("honeyhive_outputs.result", fake_model(query))
    finally:
        context.detach(token)
    return tracer.session_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="http://127.0.0.1:8765")
    args = parser.parse_args()
    session = run_session(args.server, ["plan a trip", "find flights", "book hotel"])
    tracer.flush()
    print(session)


if __name__ == "__main__":
    main()
