"""A real Arize Phoenix server receives the two-service quickstart flow over OTLP.

Phoenix (`arize-phoenix` from PyPI) has dependencies of its own that do not belong in
the test environment: `.ci/run` installs it in a virtualenv of its own and names its
interpreter in ``HONEYTRACE_PHOENIX_PYTHON`` (stage "Arize Phoenix"). Without it this
module is skipped. The test starts Phoenix on 127.0.0.1, runs
``examples/distributed/agent_server.py`` and ``agent_client.py`` sending to it, and
reads the spans back through Phoenix's REST API: one trace, one session, every span
with its kind, and inputs and outputs where honeytrace captured them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, child_env, free_port, stop_process

PHOENIX = os.environ.get("HONEYTRACE_PHOENIX_PYTHON")
pytestmark = pytest.mark.skipif(
    not PHOENIX, reason="HONEYTRACE_PHOENIX_PYTHON is not set (.ci/run's Phoenix stage sets it)"
)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def phoenix(tmp_path: Path) -> Iterator[str]:
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    assert PHOENIX
    log = tmp_path / "phoenix.log"
    with log.open("w") as out:  # a file: a pipe nobody reads would fill and block it
        proc = subprocess.Popen(
            [PHOENIX, "-m", "phoenix.server.main", "serve"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            get_json(f"{url}/v1/projects")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"Phoenix did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_phoenix_shows_the_two_service_quickstart(phoenix: str) -> None:
    env = child_env()
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{phoenix}/v1/traces"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "examples/distributed/agent_server.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # up when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no agent server"
                time.sleep(0.1)
        client = subprocess.run(
            [
                sys.executable,
                str(REPO / "examples/distributed/agent_client.py"),
                "--server",
                f"http://127.0.0.1:{port}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        session_id = client.stdout.strip().splitlines()[-1]
    finally:
        stop_process(server)  # SIGTERM: the server exports what it holds on the way out

    def remote_agent(spans: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The server's ``research_agent`` span (the client runs its agents locally
        under ``local_agent``)."""
        return next((s for s in spans if s["name"].endswith(".research_agent")), None)

    deadline = time.monotonic() + 60
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = get_json(f"{phoenix}/v1/projects/default/spans?limit=1000")["data"]
        if remote_agent(spans) is not None and len(spans) >= 8:
            break
        time.sleep(0.5)
    by_id = {s["context"]["span_id"]: s for s in spans}
    server_agent = remote_agent(spans)
    assert server_agent is not None, [s["name"] for s in spans]
    # client: run_session, two local agents and their models, the remote call;
    # server: research_agent and its model
    assert len(spans) == 8, [s["name"] for s in spans]
    caller = by_id[server_agent["parent_id"]]
    assert caller["name"] == "call_research_agent_remote"
    assert {s["context"]["trace_id"] for s in spans} == {caller["context"]["trace_id"]}
    assert {s["attributes"].get("session.id") for s in spans} == {session_id}
    assert all(s["span_kind"] != "UNKNOWN" for s in spans), [
        (s["name"], s["span_kind"]) for s in spans
    ]
    assert server_agent["span_kind"] == "CHAIN"
    server_model = next(s for s in spans if s["parent_id"] == server_agent["context"]["span_id"])
    assert server_model["span_kind"] == "LLM"
    assert json.loads(server_agent["attributes"]["input.value"]) == {"query": "find flights"}
    assert server_agent["attributes"]["output.value"] == "[remote model] RESEARCH: FIND FLIGHTS"
    assert caller["span_kind"] == "TOOL"
    assert json.loads(caller["attributes"]["input.value"])["agent"] == "research_agent"
