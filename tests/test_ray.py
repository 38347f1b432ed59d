"""Ray: a local Ray cluster (started by the driver, one CPU) runs tasks submitted inside
simulated user requests. With the pattern of docs/beyond-http.md (a tracer made by
Ray's `worker_process_setup_hook`, and each task submitted as `carry_context(fn)`), the
task's spans are in its user's trace and session; without it they are not. The driver
and Ray's workers export to the test's OTLP receiver."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import child_env
from otlp_receiver import Receiver

pytest.importorskip("ray")

APP = '''
import os

from honeytrace import HoneyHiveTracer, trace


def setup():
    """Ray's worker_process_setup_hook: the worker's tracer."""
    HoneyHiveTracer.init(
        project="ray-p", source="ray-worker", otlp_endpoint=os.environ["ENDPOINT"],
        flush_interval=0.05,
    )


@trace(event_type="tool")
def work(x):
    return x * 2
'''

DRIVER = """
import os
import sys

import ray

import ray_app
from honeytrace import HoneyHiveTracer, carry_context, with_distributed_trace_context

tracer = HoneyHiveTracer.init(
    project="driver-p", otlp_endpoint=os.environ["ENDPOINT"], flush_interval=0.05
)
ray.init(
    num_cpus=1,
    include_dashboard=False,
    logging_level="ERROR",
    runtime_env={
        "worker_process_setup_hook": "ray_app.setup",
        "env_vars": {"PYTHONPATH": os.getcwd(), "ENDPOINT": os.environ["ENDPOINT"]},
    },
)


@ray.remote
def run(task, *args):
    return task(*args)


carry = sys.argv[1] == "carry"
for n, user in enumerate(("u1", "u2", "u3"), start=1):
    headers = {
        "traceparent": "00-%s-%s-01" % (str(n) * 32, "1" * 16),
        "baggage": "session_id=session-" + user,
    }
    with with_distributed_trace_context(headers, tracer):
        with tracer.start_as_current_span("request-" + user):
            task = carry_context(ray_app.work) if carry else ray_app.work
            assert ray.get([run.remote(task, i) for i in range(2)]) == [0, 2]
# Ray ends its workers at shutdown with a C-level _exit that no Python code sees
# (docs/beyond-http.md): the test lets the workers' spans arrive first.
print("submitted", flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def run_driver(tmp_path: Path, receiver: Receiver, mode: str) -> None:
    """Run the driver; once its tasks are done, wait for the 6 `work` spans of Ray's
    workers, then let it shut Ray down."""
    (tmp_path / "ray_app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    env = child_env()
    env["ENDPOINT"] = receiver.url
    env["PYTHONPATH"] = f"{tmp_path}:{env.get('PYTHONPATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    driver = subprocess.Popen(
        [sys.executable, "driver.py", mode],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout is not None and driver.stdin is not None
        line = driver.stdout.readline()
        assert line.strip() == "submitted", line + driver.communicate(timeout=60)[1][-3000:]
        arrived = receiver.wait_for(
            lambda: sum(1 for s in receiver.spans() if s["name"].endswith("work")) >= 6, 30
        )
        driver.stdin.write("\n")
        driver.stdin.flush()
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err[-3000:]
    assert arrived, [s["name"] for s in receiver.spans()]


def test_tasks_carry_their_users_session(tmp_path: Path, receiver: Receiver) -> None:
    run_driver(tmp_path, receiver, "carry")
    spans = receiver.spans()
    requests = {s["name"].split("-")[1]: s for s in spans if s["name"].startswith("request-")}
    works = [s for s in spans if s["name"].endswith("work")]
    assert len(works) == 6 and set(requests) == {"u1", "u2", "u3"}
    for user, request in requests.items():
        mine = [s for s in works if s["trace_id"] == request["trace_id"]]
        assert len(mine) == 2, user
        for s in mine:
            assert s["parent_span_id"] == request["span_id"]
            assert s["attributes"]["honeyhive.session_id"] == f"session-{user}"
            # Made by the worker's tracer (its resource), in another process.
            assert s["resource"]["service.name"] == "ray-p"


def test_without_the_pattern_nothing_crosses(tmp_path: Path, receiver: Receiver) -> None:
    run_driver(tmp_path, receiver, "plain")
    spans = receiver.spans()
    traces = {s["trace_id"] for s in spans if s["name"].startswith("request-")}
    works = [s for s in spans if s["name"].endswith("work")]
    assert not [s for s in works if s["trace_id"] in traces]
    assert not [s for s in works if s["attributes"]["honeyhive.session_id"].startswith("session-")]
