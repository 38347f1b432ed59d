"""gunicorn --preload: the tracer is created in the master before the workers fork."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, stop_process
from otlp_receiver import Receiver

GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not (os.path.exists(GUNICORN) or shutil.which("gunicorn")),
    reason="needs gunicorn (POSIX)",
)

APP = """
import os
from honeytrace import HoneyHiveTracer

tracer = HoneyHiveTracer.init(otlp_endpoint={endpoint!r}, flush_interval=0.1,
                              service_name="preloaded")

def app(environ, start_response):
    with tracer.start_as_current_span("GET " + environ["PATH_INFO"]) as span:
        span.set_attribute("worker.pid", os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_preloaded_workers_export_their_spans(receiver: Receiver, tmp_path: Path) -> None:
    (tmp_path / "preload_app.py").write_text(APP.format(endpoint=receiver.url))
    port = free_port()
    exe = GUNICORN if os.path.exists(GUNICORN) else "gunicorn"
    proc = subprocess.Popen(
        [exe, "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "preload_app:app"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=2) as r:
                    pids.add(int(r.read()))
            except OSError:
                time.sleep(0.1)
        assert len(pids) == 2, "both workers should have answered"
        # The workers export from their own (re-created) background threads.
        assert receiver.wait_for(
            lambda: {s["attributes"].get("worker.pid") for s in receiver.spans()} >= pids, 20
        ), "spans from both preloaded workers should reach the collector"
        spans = receiver.spans()
        assert all(s["name"] == "GET /hello" for s in spans)
        assert len({s["span_id"] for s in spans}) == len(spans)
    finally:
        stop_process(proc, timeout=30)
