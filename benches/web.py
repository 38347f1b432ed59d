"""Scenario 7: Flask (gunicorn) and FastAPI (uvicorn) under a load generator on
127.0.0.1: the untraced app against each traced variant (see webapps.py), every
server running at once and the loads interleaved round by round."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk() -> Optional[str]:
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
    return shutil.which("wrk")


VARIANTS = {
    "flask": ["untraced", "honeytrace", "otel"],
    "fastapi": ["untraced", "honeytrace", "honeytrace+fastapi", "otel", "otel+fastapi"],
}
LABELS = {
    "untraced": "untraced",
    "honeytrace": "honeytrace: middleware + traced handler",
    "honeytrace+fastapi": "honeytrace, FastAPI built-in telemetry on + traced handler",
    "otel": "OpenTelemetry SDK: contrib middleware + span in handler",
    "otel+fastapi": "OpenTelemetry SDK, FastAPI built-in telemetry on + span in handler",
}


def _start(kind: str, variant: str, sink: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {
        **os.environ,
        "BENCH_VARIANT": variant,
        "BENCH_SINK": sink,
        "PYTHONPATH": str(HERE),
    }
    if kind == "flask":
        cmd = [  # gunicorn's default worker class (sync), one worker
            str(BIN / "gunicorn"),
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "webapps:flask_app",
        ]
    else:
        cmd = [
            str(BIN / "uvicorn"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "webapps:fastapi_app",
        ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/agent"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def _parse_ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m:
        return float("nan")
    x, unit = float(m.group(1)), m.group(2)
    return x / 1000 if unit == "us" else x * 1000 if unit == "s" else x


def _load_wrk(wrk: str, url: str, secs: int) -> dict[str, float]:
    out = subprocess.run(
        [wrk, "-t1", "-c8", f"-d{secs}s", "--latency", url], capture_output=True, text=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": p50, "p99": p99}


def _load_python(url: str, secs: int) -> dict[str, float]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + secs

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port))
        mine = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            conn.request("GET", "/agent")
            conn.getresponse().read()
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return {"rps": len(lat) / secs, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}


def run_web_benchmarks(sink: str, quick: bool = False) -> str:
    wrk = _wrk()
    secs = 3 if quick else 6
    rounds = 2 if quick else 4
    rows = []
    for kind, variants in VARIANTS.items():
        servers = {v: _start(kind, v, sink) for v in variants}
        try:
            res: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            for v in variants:  # warm-up
                url = servers[v][1]
                _load_wrk(wrk, url, 1) if wrk else _load_python(url, 1)
            for _ in range(rounds):
                for v in variants:
                    url = servers[v][1]
                    res[v].append(_load_wrk(wrk, url, secs) if wrk else _load_python(url, secs))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
        # Per round (the variants of a round ran back to back), then the median.
        for v in variants:
            rps = statistics.median(r["rps"] for r in res[v])
            change = ""
            if v != "untraced":
                ratios = [t["rps"] / u["rps"] for t, u in zip(res[v], res["untraced"])]
                change = f"{(statistics.median(ratios) - 1) * 100:+.1f} %"
            rows.append(
                f"| {kind} | {LABELS[v]} | {rps:,.0f} |"
                f" {statistics.median(r['p50'] for r in res[v]):.2f} ms |"
                f" {statistics.median(r['p99'] for r in res[v]):.2f} ms | {change} |"
            )
    gen = "wrk -t1 -c8" if wrk else "a Python keep-alive load generator (4 threads)"
    head = (
        f"Load: {gen}, {secs} s per run, {rounds} rounds with the variants interleaved"
        " (median; the change is the median of per-round ratios). Flask under gunicorn"
        " (1 worker, its default sync worker class), FastAPI under uvicorn (1 worker); the"
        " handler returns a small JSON dict, so these are worst cases: nothing else in the"
        " request to hide the tracing. Every traced variant exports every span to the local"
        " receiver.\n\n"
        "| app | variant | requests/s | p50 | p99 | requests/s vs untraced |\n"
        "|---|---|---:|---:|---:|---:|"
    )
    return head + "\n" + "\n".join(rows)
