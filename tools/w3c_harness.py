"""Run the official W3C Trace Context test harness against honeytrace's integrations.

    python tools/w3c_harness.py HARNESS_DIR

HARNESS_DIR is the harness's ``test/`` folder (``test.py``; it needs ``aiohttp``). For
each integration (Flask with ``instrument_flask``, FastAPI with ``instrument_fastapi``,
both with ``instrument_http`` carrying the context on the service's callbacks) and each
STRICT_LEVEL/SPEC_LEVEL, this starts the service on 127.0.0.1, runs the harness, and
prints a table of passed/failed/skipped. It exits 1 when any test fails, or when a
level ran no test at all.

The service is this file run with ``--serve KIND PORT``: it receives the harness's POST
(a JSON list of ``{"url", "arguments"}``) and POSTs each ``arguments`` to its ``url``.
"""

import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

LEVELS = [(1, 1), (2, 1), (2, 2)]
KINDS = ["flask", "fastapi"]


def serve(kind: str, port: int) -> None:
    from honeytrace import HoneyHiveTracer

    tracer = HoneyHiveTracer.init(project="w3c", exporter="none", instrument_http=True)
    if kind == "flask":
        import requests
        from flask import Flask, jsonify, request

        from honeytrace.integrations import instrument_flask

        app = Flask(__name__)
        instrument_flask(app, tracer)

        @app.post("/test")
        def flask_test() -> Any:
            for item in request.get_json():
                requests.post(item["url"], json=item["arguments"], timeout=5)
            return jsonify({})

        app.run(host="127.0.0.1", port=port, threaded=True)
        return
    import httpx
    import uvicorn
    from fastapi import FastAPI, Request

    from honeytrace.integrations import instrument_fastapi

    api = FastAPI()
    instrument_fastapi(api, tracer)

    @api.post("/test")
    async def fastapi_test(request: Request) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            for item in await request.json():
                await client.post(item["url"], json=item["arguments"])
        return {}

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the service did not start")


def run(harness: str, kind: str, strict: int, spec: int) -> dict[str, str]:
    port, harness_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HH_", "OTEL_"))}
    service = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", kind, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port, service)
        out = subprocess.run(
            [sys.executable, "test.py", f"http://127.0.0.1:{port}/test"],
            cwd=harness,
            env=dict(
                env,
                STRICT_LEVEL=str(strict),
                SPEC_LEVEL=str(spec),
                HARNESS_PORT=str(harness_port),
            ),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        service.terminate()
        service.wait(30)
    # unittest's verbose output: "test_x (module.Class.test_x)", then (on the same line
    # or after the docstring's line) "... ok" / "FAIL" / "ERROR" / "skipped '...'".
    results: dict[str, str] = {}
    current = None
    for line in out.stderr.splitlines():
        name = re.match(r"(test_\w+) \(", line)
        if name:
            current = name.group(1)
        verdict = re.search(r" \.\.\. (ok|FAIL|ERROR|skipped)", line)
        if verdict and current:
            results[current] = verdict.group(1)
            current = None
    if not results:
        raise SystemExit(f"no harness results:\n{out.stderr[-3000:]}")
    return results


def main() -> int:
    harness = sys.argv[1]
    unexpected: list[str] = []
    print("| integration | STRICT_LEVEL | SPEC_LEVEL | passed | failed | skipped | failing |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for kind in KINDS:
        for strict, spec in LEVELS:
            results = run(harness, kind, strict, spec)
            failed = sorted(t for t, r in results.items() if r in ("FAIL", "ERROR"))
            passed = sum(1 for r in results.values() if r == "ok")
            skipped = sum(1 for r in results.values() if r == "skipped")
            print(
                f"| {kind} | {strict} | {spec} | {passed} | {len(failed)} | {skipped} | "
                f"{', '.join(failed) or '-'} |"
            )
            unexpected += [f"{kind} {strict}/{spec}: {t} failed" for t in failed]
            if passed == 0:
                unexpected.append(f"{kind} {strict}/{spec}: no test passed")
    for u in unexpected:
        print("UNEXPECTED:", u, file=sys.stderr)
    return 1 if unexpected else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 2:
        sys.exit(main())
    else:
        sys.exit(__doc__)
