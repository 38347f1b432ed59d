"""The client service: a session of agent steps, some run locally, some on the remote
agent service, all in one trace and one session (HoneyHive's conditional agents).

    python examples/distributed/agent_client.py --server http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from honeytrace import (
    HoneyHiveTracer,
    enrich_span,
    enrich_span_context,
    inject_context_into_carrier,
    trace,
)

tracer = HoneyHiveTracer.init(project="agents", source="client", service_name="agent-client")


@trace(event_type="model")
def fake_model(prompt: str) -> str:
    """Stands in for an LLM call."""
    return f"[local model] {prompt[::-1]}"


@trace(event_type="chain")
def local_agent(agent_name: str, query: str) -> str:
    return fake_model(f"{agent_name}: {query}")


def call_agent(server: str, agent_name: str, query: str, use_remote: bool) -> str:
    if not use_remote:
        return local_agent(agent_name, query)
    # Remote: an explicit span around the call, its headers carrying trace and session.
    with enrich_span_context(
        f"call_{agent_name}_remote",
        inputs={"query": query, "agent": agent_name},
        metadata={"invocation_type": "remote"},
        event_type="tool",
    ):
        headers = inject_context_into_carrier({"Content-Type": "application/json"}, tracer)
        request = urllib.request.Request(
            f"{server}/agent", data=json.dumps({"query": query}).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: str = json.loads(response.read())["response"]
        enrich_span(outputs={"response": answer})
        return answer


@trace(event_type="chain")
def run_session(server: str, queries: list[str]) -> list[str]:
    # Every other step runs on the remote agent service.
    return [
        call_agent(server, "research_agent", q, use_remote=bool(i % 2))
        for i, q in enumerate(queries)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="http://127.0.0.1:8765")
    args = parser.parse_args()
    run_session(args.server, ["plan a trip", "find flights", "book hotel"])
    tracer.flush()
    print(tracer.session_id)


if __name__ == "__main__":
    main()
