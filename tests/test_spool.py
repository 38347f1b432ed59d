"""The disk spool: batches an OTLP collector cannot take in time are kept on disk and
sent when it answers again, by the same process or the next one; bounded, counted, and
off when asked. The collector is the test receiver on 127.0.0.1, down when nothing
listens on its port."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import assert_accounted, free_port, run_reporting
from honeytrace import HoneyHiveTracer
from otlp_receiver import Receiver, Reply

Make = Callable[..., HoneyHiveTracer]


identity = assert_accounted


def spooled_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def end_spans(t: HoneyHiveTracer, prefix: str, n: int) -> None:
    for i in range(n):
        with t.start_as_current_span(f"{prefix}{i}"):
            pass


def test_an_outage_of_30_seconds_loses_nothing(make_tracer: Make, tmp_path: Path) -> None:
    """Spans keep ending while the collector is down for 30 s; once it is back every
    one of them arrives, once, and the counters say where each went."""
    port = free_port()
    spool = tmp_path / "spool"
    t = make_tracer(
        otlp_endpoint=f"http://127.0.0.1:{port}",
        spool=True,
        spool_dir=str(spool),
        export_timeout=1,
        max_retries=1,
        flush_interval=0.2,
    )
    outage_ends = time.monotonic() + 30
    n = 0
    while time.monotonic() < outage_ends:
        end_spans(t, f"down{n}-", 5)
        n += 1
        time.sleep(0.1)
    t.flush(5)
    during = t.stats()
    identity(during)
    assert during["exported"] == 0 and during["failed"] == 0, during
    assert during["spooled"] > 0, during
    assert stat.S_IMODE(os.stat(spooled_files(spool)[0].parent).st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in spooled_files(spool))
    with Receiver(port=port) as receiver:  # back, on the same port
        end_spans(t, "back", 10)
        assert t.flush(10) is True
        deadline = time.monotonic() + 30
        while t.stats()["spool_exported"] < during["spooled"] and time.monotonic() < deadline:
            time.sleep(0.05)
        t.shutdown(timeout=5)
        st = t.stats()
        identity(st)
        names = [s["name"] for s in receiver.spans()]
    ended = 5 * n + 10
    assert st["ended"] == ended
    assert st["exported"] + st["spooled"] == ended, st
    assert st["spool_exported"] == st["spooled"] and st["spool_dropped"] == 0, st
    assert len(names) == len(set(names)) == ended  # every span, once
    assert spooled_files(spool) == []


NEXT_PROCESS = """
settings = dict(project="p", otlp_endpoint=sys.argv[1], export_timeout=1, max_retries=0,
                shutdown_timeout=2)
settings.update(json.loads(sys.argv[2]))
t = HoneyHiveTracer.init(**settings)
for i in range(int(sys.argv[3])):
    with t.start_as_current_span(sys.argv[4] + str(i)):
        pass
if sys.argv[5] == "wait":
    wait_until(lambda: t.stats()["spool_exported"] + t.stats()["spool_dropped"] > 0, 30)
clean = t.shutdown()
done(stats=t.stats(), clean=clean)
"""


def run_child(
    endpoint: str,
    settings: dict[str, Any],
    n: int,
    prefix: str,
    wait: bool,
    env: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    import json

    code = NEXT_PROCESS
    args = [endpoint, json.dumps(settings), str(n), prefix, "wait" if wait else "no"]
    # A value of None removes the variable (HH_SPOOL=false is the tests' default).
    prelude = "import os\n" + "".join(
        f"os.environ.pop({k!r}, None)\n" if v is None else f"os.environ[{k!r}] = {v!r}\n"
        for k, v in (env or {}).items()
    )
    return run_reporting(prelude + "sys.argv[1:] = " + repr(args) + "\n" + code)


def test_the_next_process_sends_what_an_earlier_one_spooled(tmp_path: Path) -> None:
    """A process ends while the collector is down: its spans go to the spool (the
    default location, under XDG_CACHE_HOME; the spool is on by default). The next
    process with the same destination sends them."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HH_SPOOL": None}
    first = run_child(endpoint, {}, 300, "first", wait=False, env=env)["stats"]
    assert (first["ended"], first["spooled"], first["exported"]) == (300, 300, 0), first
    identity(first)
    root = tmp_path / "cache" / "honeytrace" / "spool"
    assert len(spooled_files(root)) >= 1
    with Receiver(port=port) as receiver:
        second = run_child(endpoint, {}, 5, "second", wait=True, env=env)["stats"]
        names = sorted(s["name"] for s in receiver.spans())
    assert second["spool_exported"] == 300 and second["exported"] == 5, second
    identity(second)
    assert names == sorted([f"first{i}" for i in range(300)] + [f"second{i}" for i in range(5)])
    assert spooled_files(root) == []


def test_spans_queued_at_the_shutdown_deadline_go_to_the_spool(tmp_path: Path) -> None:
    """A hung collector: each batch times out (export_timeout) and is spooled; at the
    shutdown deadline what is still queued is spooled too, not dropped, and the shutdown
    is clean."""
    with Receiver() as receiver:
        receiver.default_reply = Reply(200, delay=10)
        out = run_child(
            receiver.url,
            {
                "spool_dir": str(tmp_path),
                "spool": True,
                "export_timeout": 0.5,
                "batch_size": 50,
                "shutdown_timeout": 1.2,
            },
            400,
            "s",
            wait=False,
        )
    st = out["stats"]
    identity(st)
    assert (st["spooled"], st["dropped_at_shutdown"], st["exported"]) == (400, 0, 0), st
    assert out["clean"] is True
    assert sum(int(p.name.split(".")[0].split("-")[3]) for p in spooled_files(tmp_path)) == 400


def test_the_spool_is_bounded_and_counts_what_it_deletes(tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    settings = {"spool_dir": str(tmp_path), "spool": True, "spool_max_files": 3, "batch_size": 10}
    st = run_child(endpoint, settings, 100, "s", wait=False)["stats"]
    identity(st)
    assert st["spooled"] == 100 and st["spool_dropped"] == 70, st  # 10 batches, 3 kept
    assert len(spooled_files(tmp_path)) == 3
    # Too old to send: the next process deletes and counts them instead.
    aged = dict(settings, spool_max_age=0.001)
    with Receiver(port=port) as receiver:
        nxt = run_child(endpoint, aged, 1, "n", wait=True)["stats"]
        assert [s["name"] for s in receiver.spans()] == ["n0"]
    assert (nxt["spool_dropped"], nxt["spool_exported"]) == (30, 0), nxt
    assert spooled_files(tmp_path) == []


def test_refused_batches_are_not_spooled(make_tracer: Make, tmp_path: Path) -> None:
    with Receiver() as receiver:
        receiver.default_reply = Reply(400)
        t = make_tracer(otlp_endpoint=receiver.url, spool=True, spool_dir=str(tmp_path))
        end_spans(t, "s", 20)
        t.flush(5)
        st = t.stats()
    identity(st)
    assert (st["failed"], st["spooled"]) == (20, 0), st
    assert spooled_files(tmp_path) == []


def test_the_spool_can_be_turned_off(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path), "HH_SPOOL": None}
    port = free_port()
    st = run_child(f"http://127.0.0.1:{port}", {"spool": False}, 20, "s", wait=False, env=env)[
        "stats"
    ]
    identity(st)
    assert (st["failed"], st["spooled"]) == (20, 0), st
    assert spooled_files(tmp_path) == []


@pytest.mark.parametrize("value", ["yes please", "-1"])
def test_bad_spool_settings_are_refused(value: str) -> None:
    key = "spool" if value == "yes please" else "spool_max_files"
    with pytest.raises(ValueError, match=key):
        HoneyHiveTracer.init(otlp_endpoint="http://127.0.0.1:9", **{key: value})
