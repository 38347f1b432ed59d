"""Process pools carry the submitting context per task: with ``propagate_processes=True``
(or ``carry_context(fn)``), a worker's spans are in the trace and session of the request
that submitted the task, whatever the start method, and even when the pool was created
(and, with fork, its workers forked) inside another request. Real pools, real worker
processes, spans decoded by the test receiver; no ``flush()`` in the workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conftest import child_env
from otlp_receiver import Receiver

APP = """
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import honeytrace
from honeytrace import HoneyHiveTracer, trace, with_distributed_trace_context

tracer = HoneyHiveTracer.init(
    project="pools",
    otlp_endpoint=os.environ["ENDPOINT"],
    propagate_processes=os.environ["MODE"] == "auto",
    flush_interval=0.05,
)


@trace(event_type="tool")
def work(x):
    return x * 2


def boom(x):
    raise ValueError("bad %d" % x)


def task(fn):
    return honeytrace.carry_context(fn) if os.environ["MODE"] == "explicit" else fn


def run(pool, shape, xs):
    if shape == "executor":
        got = [pool.submit(task(work), x).result() for x in xs]
        got += list(pool.map(task(work), xs))
    else:
        got = [pool.apply_async(task(work), (x,)).get(60) for x in xs]
        got += pool.map(task(work), xs)
        got += list(pool.imap_unordered(task(work), xs))
        got += pool.starmap(task(work), [(x,) for x in xs])
    assert sorted(got) == sorted(2 * x for x in xs * (len(got) // len(xs))), got
    return len(got)


def main(method, shape):
    ctx = mp.get_context(method)
    pool = None
    done = 0
    for user in ("u1", "u2", "u3"):
        trace_id = {"u1": "a" * 32, "u2": "b" * 32, "u3": "c" * 32}[user]
        headers = {
            "traceparent": "00-%s-%s-01" % (trace_id, "1" * 16),
            "baggage": "session_id=session-" + user,
        }
        with with_distributed_trace_context(headers, tracer):
            with tracer.start_as_current_span("request-" + user):
                if pool is None:  # created inside the first request
                    if shape == "executor":
                        pool = ProcessPoolExecutor(2, mp_context=ctx)
                    else:
                        pool = ctx.Pool(2)
                done += run(pool, shape, [1, 2, 3])
                if shape == "executor":
                    error = pool.submit(task(boom), 7).exception(60)
                else:
                    error = None
                    try:
                        pool.apply(task(boom), (7,))
                    except ValueError as e:
                        error = e
                assert type(error) is ValueError and str(error) == "bad 7", error
    if shape == "executor":
        pool.shutdown()
    else:
        pool.close()
        pool.join()
    print("TASKS", done)


if __name__ == "__main__":
    main(*sys.argv[1:])
"""


def run_app(tmp_path: Path, method: str, shape: str, mode: str) -> tuple[int, list[dict[str, Any]]]:
    (tmp_path / "poolapp.py").write_text(textwrap.dedent(APP))
    with Receiver() as receiver:
        env = child_env(tmp_path)
        env.update(ENDPOINT=receiver.url, MODE=mode)
        out = subprocess.run(
            [sys.executable, str(tmp_path / "poolapp.py"), method, shape],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        tasks = int(out.stdout.split("TASKS")[1])
        return tasks, receiver.spans()


CASES = [
    (method, shape, mode)
    for method in ("fork", "forkserver", "spawn")
    for shape in ("executor", "pool")
    for mode in ("auto", "explicit")
    if mode == "auto" or method == "spawn"
]


@pytest.mark.parametrize(("method", "shape", "mode"), CASES)
def test_each_task_runs_in_the_submitting_requests_trace_and_session(
    tmp_path: Path, method: str, shape: str, mode: str
) -> None:
    tasks, spans = run_app(tmp_path, method, shape, mode)
    requests = {s["name"]: s for s in spans if s["name"].startswith("request-")}
    assert sorted(requests) == ["request-u1", "request-u2", "request-u3"], sorted(requests)
    work = [s for s in spans if s["name"].rsplit(".", 1)[-1] == "work"]
    assert len(work) == tasks  # every task's span arrived, with no flush() in the workers
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in work:
        by_trace[s["trace_id"]].append(s)
    for user, request in requests.items():
        mine = by_trace[request["trace_id"]]
        assert len(mine) == tasks // 3, (user, len(mine))
        for s in mine:
            assert s["parent_span_id"] == request["span_id"]
            assert s["attributes"]["honeyhive.session_id"] == "session-" + user.split("-")[1]
    assert set(by_trace) == {r["trace_id"] for r in requests.values()}


def test_without_propagation_a_fork_pool_keeps_the_context_it_forked_with(
    tmp_path: Path,
) -> None:
    """What `propagate_processes` fixes: a fork pool created inside the first request
    runs every later request's work in that first request's trace and session."""
    tasks, spans = run_app(tmp_path, "fork", "pool", "off")
    work = [s for s in spans if s["name"].rsplit(".", 1)[-1] == "work"]
    assert len(work) == tasks
    first = next(s for s in spans if s["name"] == "request-u1")
    assert {s["trace_id"] for s in work} == {first["trace_id"]}
    assert {s["attributes"]["honeyhive.session_id"] for s in work} == {"session-u1"}
