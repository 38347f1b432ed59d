"""Every way a process ends delivers what is queued: multiprocessing children (which end
with ``os._exit``), SIGTERM (default disposition, an app's handler, an ignored signal),
``os._exit`` itself. Nothing here calls ``flush()`` in the child: that is the point.

Each scenario runs in a fresh interpreter against the test receiver, with a long
``flush_interval`` so that spans are still queued when the process ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import child_env, run_python, start_python, stop_process
from otlp_receiver import Receiver

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process model")

TASKS = 300
PROCESSES = 6

MP_SCRIPT = """
import multiprocessing as mp, sys
from concurrent.futures import ProcessPoolExecutor
from honeytrace import HoneyHiveTracer

t = HoneyHiveTracer.init(otlp_endpoint=sys.argv[1], project="mp", flush_interval=60,
                         session_id="0b6a3d4e-54b5-4f4e-9d7e-3c2a1f0e9d8c")

def work(i):
    with t.start_as_current_span(f"w-{i}"):
        pass
    return i

if __name__ == "__main__":
    method, shape, tasks, processes = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    ctx = mp.get_context(method)
    if shape == "process":
        ps = [ctx.Process(target=work, args=(i,)) for i in range(processes)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        assert [p.exitcode for p in ps] == [0] * processes
    elif shape == "pool-with":  # leaving the block calls terminate(): SIGTERM to workers
        with ctx.Pool(3) as pool:
            assert pool.map(work, range(tasks)) == list(range(tasks))
    elif shape == "pool-close":  # workers end by os._exit after their last task
        pool = ctx.Pool(3)
        assert pool.map(work, range(tasks)) == list(range(tasks))
        pool.close()
        pool.join()
    elif shape == "executor":
        with ProcessPoolExecutor(3, mp_context=ctx) as ex:
            assert list(ex.map(work, range(tasks))) == list(range(tasks))
    print("parent done", flush=True)
"""


def names_in(receiver: Receiver) -> list[str]:
    return sorted(s["name"] for s in receiver.spans())


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize("shape", ["process", "pool-with", "pool-close", "executor"])
def test_multiprocessing_children_deliver_without_flush(
    method: str, shape: str, tmp_path: Path
) -> None:
    script = tmp_path / "mp_app.py"
    script.write_text(MP_SCRIPT)
    n = PROCESSES if shape == "process" else TASKS
    with Receiver() as receiver:
        r = subprocess.run(
            [sys.executable, str(script), receiver.url, method, shape, str(n), str(PROCESSES)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "parent done" in r.stdout
        expected = sorted(f"w-{i}" for i in range(n))
        # Children deliver before they exit, so the spans are here once the parent is
        # done; the wait only covers the receiver recording them.
        receiver.wait_for(lambda: len(receiver.spans()) >= n, timeout=10)
        assert names_in(receiver) == expected  # each once: none lost, none twice
        sessions = {s["attributes"]["honeyhive.session_id"] for s in receiver.spans()}
        assert sessions == {"0b6a3d4e-54b5-4f4e-9d7e-3c2a1f0e9d8c"}


# -- SIGTERM ----------------------------------------------------------------------------

SIGTERM_CHILD = """
import os, signal, sys, time
from honeytrace import HoneyHiveTracer

{before}
t = HoneyHiveTracer.init(otlp_endpoint=sys.argv[1], flush_interval=60)
for i in range(50):
    with t.start_as_current_span(f"s-{{i}}"):
        pass
print("ready", t.stats()["queued"], flush=True)
{wait}
"""


def run_and_terminate(receiver: Receiver, before: str = "", wait: str = "") -> Any:
    code = SIGTERM_CHILD.format(
        before=textwrap.dedent(before),
        wait=textwrap.dedent(wait) or "while True:\n    time.sleep(0.05)",
    )
    p = start_python(code, receiver.url)
    assert p.stdout is not None
    ready = p.stdout.readline()
    assert ready.startswith("ready"), p.communicate(timeout=30)
    assert int(ready.split()[1]) > 0  # the spans are still queued
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    return p.returncode, ready + out, err


def test_sigterm_with_the_default_handler_delivers_then_dies_of_sigterm() -> None:
    with Receiver() as receiver:
        code, _out, err = run_and_terminate(receiver)
        assert code == -signal.SIGTERM, err  # the same end as without honeytrace
        assert names_in(receiver) == sorted(f"s-{i}" for i in range(50))


def test_sigterm_runs_the_apps_own_handler_after_delivering() -> None:
    # The app's handler ends the process without atexit: spans arrive only if honeytrace
    # exported before calling it.
    before = """
    def app_handler(signum, frame):
        print("app handler", signum, flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    signal.signal(signal.SIGTERM, app_handler)
    """
    with Receiver() as receiver:
        code, out, err = run_and_terminate(receiver, before=before)
        assert f"app handler {int(signal.SIGTERM)}" in out, (out, err)
        assert code == -signal.SIGTERM, err
        assert names_in(receiver) == sorted(f"s-{i}" for i in range(50))


def test_an_ignored_sigterm_stays_ignored() -> None:
    before = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    wait = """
    time.sleep(1.0)
    print("still running", flush=True)
    """
    with Receiver() as receiver:
        code, out, err = run_and_terminate(receiver, before=before, wait=wait)
        assert code == 0, err
        assert "still running" in out
        # And the normal exit delivered through atexit.
        assert names_in(receiver) == sorted(f"s-{i}" for i in range(50))


def test_a_handler_installed_after_init_replaces_ours_as_it_would_the_default() -> None:
    # uvicorn and gunicorn workers do this; they end through atexit.
    wait = """
    stop = []
    signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
    print("handler set", flush=True)
    while not stop:
        time.sleep(0.01)
    print("graceful exit", flush=True)
    """
    code = SIGTERM_CHILD.format(before="", wait=textwrap.dedent(wait))
    with Receiver() as receiver:
        p = start_python(code, receiver.url)
        assert p.stdout is not None
        assert p.stdout.readline().startswith("ready")
        assert p.stdout.readline().startswith("handler set")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "graceful exit" in out
        assert names_in(receiver) == sorted(f"s-{i}" for i in range(50))


# -- os._exit ---------------------------------------------------------------------------


def test_os_exit_delivers_and_keeps_its_status(receiver: Receiver) -> None:
    r = run_python(
        f"""
        import os
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(otlp_endpoint={receiver.url!r}, flush_interval=60)
        for i in range(20):
            with t.start_as_current_span(f"x-{{i}}"):
                pass
        os._exit(3)
        """
    )
    assert r.returncode == 3, r.stderr
    assert names_in(receiver) == sorted(f"x-{i}" for i in range(20))


def test_os_exit_with_a_bad_status_raises_as_before_and_keeps_tracing(
    receiver: Receiver,
) -> None:
    r = run_python(
        f"""
        import os
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(otlp_endpoint={receiver.url!r})
        try:
            os._exit("no")
        except TypeError as e:
            print("TypeError", e)
        with t.start_as_current_span("after"):
            pass
        print("flushed", t.flush(10))
        """
    )
    assert r.returncode == 0, r.stderr
    assert "TypeError" in r.stdout and "flushed True" in r.stdout
    assert names_in(receiver) == ["after"]


def test_exit_hooks_off_leaves_os_exit_and_sigterm_alone(receiver: Receiver) -> None:
    r = run_python(
        f"""
        import os, signal
        real = os._exit
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(otlp_endpoint={receiver.url!r}, flush_interval=60,
                                 exit_hooks=False)
        print(os._exit is real, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
              t._core.exit_hooks)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "False"]
    r = run_python(
        """
        import os, signal
        real = os._exit
        from honeytrace import HoneyHiveTracer
        HoneyHiveTracer.init(exporter="none")
        print(os._exit is real, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """,
        env={"HH_EXIT_HOOKS": "false"},
    )
    assert r.stdout.split() == ["True", "True"], r.stderr


# -- the engine's threads never take a signal --------------------------------------------


def test_honeytrace_threads_block_process_signals(receiver: Receiver) -> None:
    """A process-directed signal goes to a thread that does not block it. If it lands on
    an engine thread, a main thread blocked in a system call is never woken to run the
    Python handler: a multiprocessing worker waiting for a task hung on SIGTERM."""
    r = run_python(
        f"""
        import os, threading
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(otlp_endpoint={receiver.url!r})
        with t.start_as_current_span("s"):
            pass
        t.flush(10)
        # The log pump is a Python thread: its OS name is not set before 3.14.
        pump = {{th.native_id for th in threading.enumerate() if th.name == "honeytrace-log"}}
        for tid in sorted(os.listdir("/proc/self/task")):
            with open(f"/proc/self/task/{{tid}}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{{tid}}/status") as f:
                blocked = [l.split()[1] for l in f if l.startswith("SigBlk:")][0]
            if int(tid) == os.getpid():
                name = "main"
            elif int(tid) in pump:
                name = "honeytrace-log"
            print(name, int(blocked, 16))
        """
    )
    assert r.returncode == 0, r.stderr
    masks = dict(line.rsplit(" ", 1) for line in r.stdout.strip().splitlines())
    engine = [n for n in masks if n.startswith("honeytrace")]
    assert sorted(engine) == ["honeytrace-expo", "honeytrace-log"], masks
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1):
        bit = 1 << (int(sig) - 1)
        for name in engine:
            assert int(masks[name]) & bit, (name, sig)
        assert not int(masks["main"]) & bit  # the main thread's mask is untouched
    assert not int(masks["honeytrace-expo"]) & (1 << (int(signal.SIGSEGV) - 1))


def test_sigint_still_interrupts_a_main_thread_blocked_in_a_lock() -> None:
    # Ctrl-C raises KeyboardInterrupt in a main thread waiting on a lock only when the
    # signal lands on it.
    code = """
    import os, sys, threading
    from honeytrace import HoneyHiveTracer
    t = HoneyHiveTracer.init(exporter="none")
    lock = threading.Lock()
    lock.acquire()
    print("blocked", flush=True)
    try:
        lock.acquire()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
    p = start_python(code)
    assert p.stdout is not None
    assert p.stdout.readline().startswith("blocked")
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert "interrupted" in out, err


# -- Celery prefork children, recycled after each task ------------------------------------

CELERY_TASKS = """
import os
from celery import Celery
from honeytrace import HoneyHiveTracer, trace

folder = os.environ["BROKER_DIR"]
app = Celery("tasks", broker="filesystem://", backend="file://" + os.environ["RESULT_DIR"])
app.conf.broker_transport_options = {{
    "data_folder_in": folder, "data_folder_out": folder, "polling_interval": 0.05,
    "control_folder": os.environ["CONTROL_DIR"],
}}
tracer = HoneyHiveTracer.init(otlp_endpoint={endpoint!r}, flush_interval=60, project="celery")

@app.task(name="tasks.work")
@trace(tracer=tracer)
def work(i):
    return os.getpid()
"""


def test_celery_prefork_children_deliver_when_recycled(tmp_path: Path) -> None:
    """billiard ends a child with ``os._exit`` once it has run ``--max-tasks-per-child``
    tasks; each task's span must leave with it, while the worker keeps running."""
    celery_mod = pytest.importorskip("celery")
    broker, results = tmp_path / "broker", tmp_path / "results"
    broker.mkdir()
    results.mkdir()
    env = child_env(tmp_path)
    env.update(
        BROKER_DIR=str(broker), RESULT_DIR=str(results), CONTROL_DIR=str(tmp_path / "control")
    )
    tasks = 8
    with Receiver() as receiver:
        (tmp_path / "tasks.py").write_text(CELERY_TASKS.format(endpoint=receiver.url))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--max-tasks-per-child=1",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            client = celery_mod.Celery(
                "client", broker="filesystem://", backend=f"file://{results}"
            )
            client.conf.broker_transport_options = {
                "data_folder_in": str(broker),
                "data_folder_out": str(broker),
                "control_folder": str(tmp_path / "control"),
            }
            pending = [client.send_task("tasks.work", args=[i]) for i in range(tasks)]
            pids = {r.get(timeout=60) for r in pending}
            assert len(pids) == tasks  # one child per task: each recycled after one
            # The worker is still running: only the recycled children can have sent these.
            assert receiver.wait_for(lambda: len(receiver.spans()) >= tasks, timeout=30), len(
                receiver.spans()
            )
            assert worker.poll() is None
            spans = receiver.spans()
            assert len(spans) == tasks
            assert {int(s["attributes"]["honeyhive_outputs.result"]) for s in spans} == pids
        finally:
            stop_process(worker)
