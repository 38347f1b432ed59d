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
