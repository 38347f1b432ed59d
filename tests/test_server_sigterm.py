"""Servers stopped by SIGTERM after a bounded load: every span of every completed request
arrives. uvicorn (single and ``--workers 2``) and gunicorn (sync, gthread and uvicorn's
worker), each started as users start them, with the tracer created when the app module
is imported and a ``flush_interval`` long enough that nothing leaves before the stop.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import child_env, free_port, stop_process
from otlp_receiver import Receiver

BIN = os.path.dirname(sys.executable)
GUNICORN = os.path.join(BIN, "gunicorn")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REQUESTS = 120

ASGI_APP = """
import os
from fastapi import FastAPI
from honeytrace import HoneyHiveTracer, trace
from honeytrace.integrations import instrument_fastapi

tracer = HoneyHiveTracer.init(otlp_endpoint={endpoint!r}, flush_interval=60,
                              batch_size=4096, project="stop")
app = FastAPI()
instrument_fastapi(app, tracer)

@trace(tracer=tracer)
def handle(i):
    return i

@app.get("/work")
def work(i: int):
    return {{"pid": os.getpid(), "i": handle(i)}}
"""

# Without honeytrace's ASGI integration: nothing flushes at the lifespan shutdown, and
# uvicorn ends by re-raising SIGTERM under the default disposition (no atexit). The
# app's own shutdown work, traced, ends after the SIGTERM.
ASGI_PLAIN_APP = """
import os
from contextlib import asynccontextmanager
from fastapi import FastAPI
from honeytrace import HoneyHiveTracer, trace

tracer = HoneyHiveTracer.init(otlp_endpoint={endpoint!r}, flush_interval=60,
                              batch_size=4096, project="stop")

@trace(tracer=tracer)
def handle(i):
    return i

@asynccontextmanager
async def lifespan(app):
    yield
    handle(-2)

app = FastAPI(lifespan=lifespan)

@app.get("/work")
def work(i: int):
    return {{"pid": os.getpid(), "i": handle(i)}}
"""

WSGI_APP = """
import json, os
from urllib.parse import parse_qs
from honeytrace import HoneyHiveTracer, trace
from honeytrace.integrations import HoneyTraceWSGIMiddleware

tracer = HoneyHiveTracer.init(otlp_endpoint={endpoint!r}, flush_interval=60,
                              batch_size=4096, project="stop")

@trace(tracer=tracer)
def handle(i):
    return i

def plain(environ, start_response):
    i = int(parse_qs(environ["QUERY_STRING"])["i"][0])
    body = json.dumps({{"pid": os.getpid(), "i": handle(i)}}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

app = HoneyTraceWSGIMiddleware(plain, tracer)
"""


def _command(server: str, port: int) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if server in ("uvicorn", "uvicorn-plain"):
        return [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)]
    if server in ("uvicorn-workers", "uvicorn-plain-workers"):
        return [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--workers", "2"]
    exe = GUNICORN if os.path.exists(GUNICORN) else (shutil.which("gunicorn") or "gunicorn")
    if server == "gunicorn-sync":
        return [exe, "-w", "2", "-b", bind, "app:app"]
    if server == "gunicorn-gthread":
        return [exe, "-w", "2", "--threads", "4", "-k", "gthread", "-b", bind, "app:app"]
    assert server == "gunicorn-uvicorn"
    return [exe, "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b", bind, "app:app"]


def _get(port: int, i: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/work?i={i}", timeout=10) as r:
        assert r.status == 200
        return int(json.loads(r.read())["i"])


SERVERS = [
    "uvicorn",
    "uvicorn-plain",
    "uvicorn-workers",
    "uvicorn-plain-workers",
    "gunicorn-sync",
    "gunicorn-gthread",
    "gunicorn-uvicorn",
]


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_after_load_delivers_every_completed_request(server: str, tmp_path: Path) -> None:
    if server.startswith("gunicorn") and not (os.path.exists(GUNICORN) or shutil.which("gunicorn")):
        pytest.skip("needs gunicorn")
    if server == "gunicorn-uvicorn" and importlib.util.find_spec("uvicorn.workers") is None:
        pytest.skip("this uvicorn has no gunicorn worker")
    asgi = server.startswith("uvicorn") or server == "gunicorn-uvicorn"
    port = free_port()
    with Receiver() as receiver:
        plain = server.startswith("uvicorn-plain")
        source = ASGI_PLAIN_APP if plain else ASGI_APP if asgi else WSGI_APP
        app = source.format(endpoint=receiver.url)
        (tmp_path / "app.py").write_text(app)
        env = child_env(tmp_path)
        env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"  # uvicorn.workers says it moved
        proc = subprocess.Popen(
            _command(server, port),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:  # wait until it answers
                try:
                    _get(port, -1)
                    break
                except OSError:
                    assert proc.poll() is None, proc.communicate()[0][-3000:]
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.1)
            done = [_get(port, i) for i in range(REQUESTS)]
            assert done == list(range(REQUESTS))
            assert receiver.spans() == []  # all still queued (flush_interval=60)
        finally:
            out = stop_process(proc)
        # The stop delivered before the processes ended: no waiting for stragglers.
        handled = sorted(
            int(s["attributes"]["honeyhive_inputs.i"])
            for s in receiver.spans()
            if s["name"] == "app.handle"
        )
        names = sorted({s["name"] for s in receiver.spans()})
        # Each plain uvicorn process traced its lifespan shutdown (-2) after the SIGTERM.
        shutdowns = (2 if server.endswith("workers") else 1) if plain else 0
        expected = [-2] * shutdowns + [-1, *range(REQUESTS)]
        assert handled == expected, (names, len(receiver.spans()), out[-3000:])
        if not plain:  # (a FastAPI with built-in telemetry makes SERVER spans of its own)
            servers = [s for s in receiver.spans() if s["kind"] == 2]  # SPAN_KIND_SERVER
            assert len(servers) == REQUESTS + 1, out[-3000:]
