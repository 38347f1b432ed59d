"""Celery: one trace and session from the producer to the worker, with a real Redis
(broker and result backend) on 127.0.0.1 and a real Celery worker in a subprocess
(prefork with two children recycled after every task, solo, threads), for several
simulated users at once. Every span of every process is decoded by the test's OTLP
receiver. `redis-server` comes from the Debian package (.ci/run installs it)."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import child_env, free_port
from honeytrace import HoneyHiveTracer, with_distributed_trace_context
from honeytrace.integrations import instrument_celery, uninstrument_celery
from otlp_receiver import Receiver

celery = pytest.importorskip("celery")

Make = Callable[..., HoneyHiveTracer]
CONSUMER = 5  # OTLP SpanKind
USERS = ("u1", "u2", "u3")

TASKS = """
import os

from celery import Celery
from celery.signals import worker_process_init

from honeytrace import HoneyHiveTracer, trace

app = Celery("ht_tasks", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)


def make_tracer():
    if os.environ.get("OTEL_CELERY") == "1":
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()
    return HoneyHiveTracer.init(
        project="worker-p",
        source="worker",
        otlp_endpoint=os.environ["ENDPOINT"],
        flush_interval=0.05,
        instrument_celery=os.environ["INTEGRATION"] == "1",
    )


if os.environ["TRACER_AT"] == "import":
    tracer = make_tracer()
else:

    @worker_process_init.connect
    def _child_init(**_):
        make_tracer()


@trace(event_type="tool")
def tool(x):
    return x + 1


@app.task
def add(x, y):
    return tool(x) + y


@app.task
def total(xs):
    return sum(xs)


@app.task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, x):
    if self.request.retries < 2:
        raise self.retry(exc=ValueError("not yet"))
    return x


@app.task
def boom(x):
    raise RuntimeError("task exploded %d" % x)
"""


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def flush_redis(redis_url: str) -> Iterator[str]:
    import redis

    redis.Redis.from_url(redis_url).flushall()
    yield redis_url
    # A result object unsubscribes from Redis when it is collected: collect the test's
    # while Redis runs (after the module, with Redis gone, Celery retries for minutes).
    gc.collect()


def producer_app(broker: str) -> Any:
    app = celery.Celery("producer", broker=broker, backend=broker)
    # Fail fast instead of retrying for minutes if Redis is gone.
    app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 1}}
    return app


def start_worker(
    tmp_path: Path,
    broker: str,
    endpoint: str,
    pool: list[str],
    tracer_at: str,
    otel: bool,
    integration: bool = True,
) -> subprocess.Popen[str]:
    (tmp_path / "ht_tasks.py").write_text(textwrap.dedent(TASKS))
    env = child_env()
    env.update(
        BROKER=broker,
        ENDPOINT=endpoint,
        TRACER_AT=tracer_at,
        OTEL_CELERY="1" if otel else "0",
        INTEGRATION="1" if integration else "0",
        PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
    )
    cmd = [sys.executable, "-m", "celery", "-A", "ht_tasks", "worker", *pool]
    cmd += ["--loglevel=warning", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop_worker(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)  # warm shutdown
    try:
        out, _ = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, _ = worker.communicate()
        pytest.fail(f"the worker did not stop on SIGTERM:\n{out[-3000:]}")
    return out


def produce(app: Any, producer: HoneyHiveTracer) -> dict[str, dict[str, Any]]:
    """For each user: inside their request, one task, a chain, a group, a chord, a task
    retried twice and a failing one. Returns each user's request span and results."""
    from celery import chain, chord, group

    sig = app.signature
    out: dict[str, dict[str, Any]] = {}
    for n, user in enumerate(USERS, start=1):
        trace_id = f"{n:x}" * 32
        headers = {
            "traceparent": f"00-{trace_id}-{'1' * 16}-01",
            "baggage": f"session_id=session-{user}",
        }
        with with_distributed_trace_context(headers, producer):
            with producer.start_as_current_span(f"request-{user}") as span:
                results = {
                    "add": app.send_task("ht_tasks.add", (n, 10)),
                    "chain": chain(sig("ht_tasks.add", (n, 1)), sig("ht_tasks.add", (2,)))(),
                    "group": group(sig("ht_tasks.add", (n, i)) for i in range(2))(),
                    "chord": chord(
                        [sig("ht_tasks.add", (n, i)) for i in range(2)], sig("ht_tasks.total")
                    )(),
                    "flaky": app.send_task("ht_tasks.flaky", (n,)),
                    "boom": app.send_task("ht_tasks.boom", (n,)),
                }
                sc = span.get_span_context()
        out[user] = {
            "trace_id": trace_id,
            "request": format(sc.span_id, "016x"),
            "results": results,
        }
    for n, o in enumerate(out.values(), start=1):
        r = o["results"]
        assert r["add"].get(timeout=60) == n + 1 + 10
        assert r["chain"].get(timeout=60) == (n + 1 + 1) + 1 + 2
        assert r["group"].get(timeout=60) == [n + 1 + 0, n + 1 + 1]
        assert r["chord"].get(timeout=60) == 2 * (n + 1) + 1
        assert r["flaky"].get(timeout=60) == n
        with pytest.raises(Exception, match="task exploded"):
            r["boom"].get(timeout=60, propagate=True)
    return out


# One task run per: add, chain (2), group (2), chord (2 + body), flaky (3 attempts), boom.
RUNS_PER_USER = 1 + 2 + 2 + 3 + 3 + 1


def check_users(spans: list[dict[str, Any]], produced: dict[str, dict[str, Any]]) -> None:
    by_id = {s["span_id"]: s for s in spans}
    runs = [s for s in spans if s["kind"] == CONSUMER]
    assert len(runs) == RUNS_PER_USER * len(USERS), sorted(s["name"] for s in runs)
    for user, o in produced.items():
        mine = [s for s in runs if s["trace_id"] == o["trace_id"]]
        assert len(mine) == RUNS_PER_USER, (user, sorted(s["name"] for s in mine))
        for s in mine:
            assert s["attributes"]["honeyhive.session_id"] == f"session-{user}", s["name"]
            # The parent chain reaches the producer's request span.
            node, hops = s, 0
            while node["parent_span_id"] and node["span_id"] != o["request"] and hops < 20:
                node, hops = by_id.get(node["parent_span_id"], {"parent_span_id": None}), hops + 1
                node.setdefault("span_id", None)
            assert node["span_id"] == o["request"], (user, s["name"])
        # The traced function inside each `add` run is its child, in the same session.
        tools = [s for s in spans if s["name"].endswith("tool") and s["trace_id"] == o["trace_id"]]
        assert len(tools) == 7  # every add: 1, chain 2, group 2, chord header 2
        assert all(by_id[t["parent_span_id"]]["kind"] == CONSUMER for t in tools)
        assert all(t["attributes"]["honeyhive.session_id"] == f"session-{user}" for t in tools)


@pytest.mark.parametrize(
    ("pool", "tracer_at"),
    [
        (["-P", "prefork", "-c", "2", "--max-tasks-per-child=1"], "import"),
        (["-P", "prefork", "-c", "2", "--max-tasks-per-child=1"], "worker_process_init"),
        (["-P", "solo"], "import"),
        (["-P", "threads", "-c", "2"], "import"),
    ],
    ids=["prefork-recycled", "prefork-init-in-child", "solo", "threads"],
)
def test_sessions_cross_into_the_worker(
    tmp_path: Path,
    flush_redis: str,
    receiver: Receiver,
    make_tracer: Make,
    pool: list[str],
    tracer_at: str,
) -> None:
    producer = make_tracer(project="producer-p", otlp_endpoint=receiver.url, flush_interval=0.05)
    instrument_celery()
    app = producer_app(flush_redis)
    worker = start_worker(tmp_path, flush_redis, receiver.url, pool, tracer_at, otel=False)
    try:
        produced = produce(app, producer)
    finally:
        out = stop_worker(worker)
        uninstrument_celery()
    producer.flush()
    expected = RUNS_PER_USER * len(USERS)
    assert receiver.wait_for(
        lambda: sum(1 for s in receiver.spans() if s["kind"] == CONSUMER) >= expected, 30
    ), out[-3000:]
    spans = receiver.spans()
    check_users(spans, produced)

    runs = [s for s in spans if s["kind"] == CONSUMER]
    for o in produced.values():
        mine = [s for s in runs if s["trace_id"] == o["trace_id"]]
        # Retries: three attempts, all children of the request, linked to the first.
        attempts = sorted(
            (s for s in mine if s["name"] == "ht_tasks.flaky"),
            key=lambda s: s["attributes"]["celery.retries"],
        )
        assert [a["attributes"]["celery.retries"] for a in attempts] == [0, 1, 2]
        assert {a["parent_span_id"] for a in attempts} == {o["request"]}
        first = attempts[0]["span_id"]
        assert [[lk["span_id"] for lk in a["links"]] for a in attempts] == [[], [first], [first]]
        assert [a["attributes"]["celery.state"] for a in attempts] == ["RETRY", "RETRY", "SUCCESS"]
        assert all(any(e["name"] == "retry" for e in a["events"]) for a in attempts[:2])
        # A failing task: ERROR status and the exception.
        (boom,) = [s for s in mine if s["name"] == "ht_tasks.boom"]
        assert boom["status"]["code"] == 2 and "task exploded" in boom["status"]["message"]
        assert any(e["name"] == "exception" for e in boom["events"])
        assert boom["attributes"]["celery.state"] == "FAILURE"


def test_with_the_opentelemetry_celery_instrumentor_no_double_spans(
    tmp_path: Path, flush_redis: str, receiver: Receiver, make_tracer: Make
) -> None:
    """Worker and producer both run OpenTelemetry's Celery instrumentor and honeytrace's
    integration: one span per task run (the instrumentor's), in the user's session."""
    pytest.importorskip("opentelemetry.instrumentation.celery")
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    producer = make_tracer(project="producer-p", otlp_endpoint=receiver.url, flush_interval=0.05)
    instrument_celery()
    CeleryInstrumentor().instrument()
    app = producer_app(flush_redis)
    worker = start_worker(tmp_path, flush_redis, receiver.url, ["-P", "solo"], "import", otel=True)
    try:
        produced = produce(app, producer)
    finally:
        out = stop_worker(worker)
        CeleryInstrumentor().uninstrument()
        uninstrument_celery()
    producer.flush()
    expected = RUNS_PER_USER * len(USERS)
    assert receiver.wait_for(
        lambda: sum(1 for s in receiver.spans() if s["kind"] == CONSUMER) >= expected, 30
    ), out[-3000:]
    time.sleep(0.5)  # nothing more arrives: no second span per run
    spans = receiver.spans()
    runs = [s for s in spans if s["kind"] == CONSUMER]
    assert all(s["name"].startswith("run/") for s in runs), sorted(s["name"] for s in runs)
    check_users(spans, produced)


def test_without_the_integration_nothing_crosses(
    tmp_path: Path, flush_redis: str, receiver: Receiver, make_tracer: Make
) -> None:
    """The control: without instrument_celery, the worker's spans start traces of their
    own in the worker tracer's session, whoever sent the task."""
    producer = make_tracer(project="producer-p", otlp_endpoint=receiver.url, flush_interval=0.05)
    app = producer_app(flush_redis)
    worker = start_worker(
        tmp_path, flush_redis, receiver.url, ["-P", "solo"], "import", otel=False, integration=False
    )
    try:
        produced = produce(app, producer)
    finally:
        out = stop_worker(worker)
    producer.flush()
    assert receiver.wait_for(
        lambda: sum(1 for s in receiver.spans() if s["name"].endswith("tool")) >= 7 * len(USERS), 30
    ), out[-3000:]
    tools = [s for s in receiver.spans() if s["name"].endswith("tool")]
    user_traces = {o["trace_id"] for o in produced.values()}
    assert not [s for s in tools if s["trace_id"] in user_traces]
    assert {s["attributes"]["honeyhive.session_id"] for s in tools}.isdisjoint(
        {f"session-{u}" for u in USERS}
    )
    assert not [s for s in receiver.spans() if s["kind"] == CONSUMER]


def test_instrument_celery_without_celery_is_a_warning(
    make_tracer: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A tracer asked to instrument Celery where Celery is not installed starts anyway."""
    import builtins

    real_import = builtins.__import__

    def no_celery(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "celery" or name.startswith("celery."):
            raise ImportError("No module named 'celery'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_celery)
    make_tracer(test_mode=True, instrument_celery=True)
    assert "Celery is not installed" in caplog.text
