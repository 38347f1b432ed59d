"""Quickstart: a distributed trace across two services on the local default.

Starts the remote agent service, runs a client session that calls it, and prints the
unified session (one trace, one session id, spans from both services) from the local
trace file. No account and no network beyond 127.0.0.1.

    python examples/quickstart.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"agent server did not start at {url}")


def main() -> int:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "distributed", "agent_server.py"), "--port", str(port)]
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/")
        client = subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "distributed", "agent_client.py"),
                "--server",
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        session_id = client.stdout.strip().splitlines()[-1]
    finally:
        server.terminate()  # the server flushes its spans on the way out
        server.wait(timeout=30)
    print(f"\nunified session {session_id} across agent-client and agent-server:\n")
    from honeytrace.cli import main as cli

    return cli(["view", "--session", session_id])


if __name__ == "__main__":
    sys.exit(main())
