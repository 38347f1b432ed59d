"""The console exporter and the `honeytrace` CLI over the local trace file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_python


def test_console_exporter_prints_an_indented_tree() -> None:
    out = run_python(
        """
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(exporter="console", session_id="s-42")
        with t.start_as_current_span("agent"):
            with t.start_as_current_span("plan"):
                pass
            try:
                with t.start_as_current_span("tool"):
                    raise RuntimeError("no network")
            except RuntimeError:
                pass
        t.flush()
        """
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    head = next(i for i, line in enumerate(lines) if "session s-42" in line)
    body = lines[head + 1 : head + 4]
    assert body[0].startswith("  agent [tool]")
    assert body[1].startswith("    plan [tool]")
    assert body[2].startswith("    tool [tool]")
    assert "✗ RuntimeError: no network" in body[2]


def test_cli_view_groups_sessions_across_processes(tmp_path: Path) -> None:
    code = """
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(project="demo", service_name={svc!r}, session_id="shared-session")
        with t.start_as_current_span({name!r}):
            pass
    """
    for svc, name in [("client", "ask"), ("server", "answer")]:
        out = run_python(code.format(svc=svc, name=name), cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
    view = subprocess.run(
        [sys.executable, "-m", "honeytrace", "view"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert view.returncode == 0, view.stderr
    assert "session shared-session  project demo  · 2 spans" in view.stdout
    assert "services: client, server" in view.stdout
    assert "ask [tool]" in view.stdout and "answer [tool]" in view.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "honeytrace", "sessions"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert listing.stdout.strip() == "shared-session  2 spans  client, server"


def test_cli_reports_a_missing_file(tmp_path: Path) -> None:
    view = subprocess.run(
        [sys.executable, "-m", "honeytrace", "view", str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
    )
    assert view.returncode == 1
    assert "no trace file" in view.stderr


# Three processes write the default trace file at once, through many rotations (a
# small file_max_bytes): every exported span must be in exactly one file, none in a
# file renamed aside after it was written, and `honeytrace sessions` must read them all.
WRITER = """
import os, sys
from honeytrace import HoneyHiveTracer
t = HoneyHiveTracer.init(project="demo", service_name="w" + sys.argv[1],
                         session_id="s-" + sys.argv[1], file_max_bytes=16384, file_keep=100000,
                         batch_size=7, flush_interval=0.001)
for i in range({spans}):
    with t.start_as_current_span("w%s-%d" % (sys.argv[1], i)):
        pass
    if i % 50 == 0:
        t.flush()
t.shutdown()
st = t.stats()
print("STATS", st["ended"], st["exported"], st["failed"], st["dropped"])
"""


def test_several_processes_share_the_file_through_rotations(tmp_path: Path) -> None:
    from conftest import child_env
    from honeytrace.cli import read_spans, trace_files

    spans = 1500
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(spans=spans), str(n)],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    exported = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ended, exp, failed, dropped = map(int, out.split("STATS")[1].split())
        assert (ended, exp, failed, dropped) == (spans, spans, 0, 0), out
        exported += exp
    trace_dir = tmp_path / ".honeytrace"
    files = trace_files(str(trace_dir / "traces.jsonl"))
    assert len(files) >= 10, files  # rotated many times
    seen: dict[str, int] = {}
    for f in files:
        for s in read_spans(f):
            seen[s.span_id] = seen.get(s.span_id, 0) + 1
    assert len(seen) == exported == 3 * spans
    assert set(seen.values()) == {1}  # each span in exactly one file, once
    for f in files:
        assert (Path(f).stat().st_mode & 0o777) == 0o600
    assert (trace_dir.stat().st_mode & 0o777) == 0o700
    listing = subprocess.run(
        [sys.executable, "-m", "honeytrace", "sessions"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0, listing.stderr
    for n in range(3):
        assert f"s-{n}  {spans} spans  w{n}" in listing.stdout, listing.stdout


def test_rotation_keeps_file_keep_files_and_logs_deletions(tmp_path: Path) -> None:
    from honeytrace.cli import trace_files

    out = run_python(
        """
        import logging
        from honeytrace import HoneyHiveTracer
        logging.basicConfig(level=logging.WARNING)
        t = HoneyHiveTracer.init(project="demo", file_max_bytes=4096, file_keep=2,
                                 batch_size=5)
        for i in range(400):
            with t.start_as_current_span("s%d" % i):
                pass
            if i % 20 == 0:
                t.flush()
        t.shutdown()
        """,
        cwd=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    files = trace_files(str(tmp_path / ".honeytrace" / "traces.jsonl"))
    assert len(files) == 3, files  # two renamed aside and the current one
    assert "deleted the oldest rotated trace file" in out.stderr
    assert "more than file_keep=2 rotated files" in out.stderr


LOCKED_WRITER = """
import json, sys
from honeytrace import HoneyHiveTracer
t = HoneyHiveTracer.init(project="p", file_path=sys.argv[1], export_timeout=0.5)
with t.start_as_current_span("while-locked"):
    pass
t.flush(5)
print(json.dumps(t.stats()), flush=True)
sys.stdin.readline()  # the test frees the lock
with t.start_as_current_span("after"):
    pass
t.flush(5)
print(json.dumps(t.stats()), flush=True)
"""


def test_a_trace_file_locked_forever_fails_the_batch_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """Another process holds the file's lock (stopped, say): the export gives up at its
    deadline and counts the batch as failed; once the lock is free, writing resumes."""
    import fcntl
    import json
    import os

    from conftest import child_env
    from honeytrace.cli import read_spans

    path = tmp_path / "traces.jsonl"
    path.write_text("")
    holder = os.open(path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKED_WRITER, str(path)],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        locked = json.loads(proc.stdout.readline())
        assert (locked["failed"], locked["exported"]) == (1, 0), locked
        assert "locked by another process" in locked["last_error"]
        fcntl.flock(holder, fcntl.LOCK_UN)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        after = json.loads(proc.stdout.readline())
        assert (after["failed"], after["exported"]) == (1, 1), after
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(holder)
    assert [s.name for s in read_spans(str(path))] == ["after"]
