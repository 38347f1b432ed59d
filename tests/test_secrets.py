"""Secrets in the configuration never reach logs, warnings, ``destination`` or
``stats()``, and a secret no HTTP header can carry is refused at ``init``, naming where
it came from and not the value."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from conftest import free_port, run_python, run_reporting
from honeytrace import HoneyHiveTracer
from otlp_receiver import Receiver

Make = Callable[..., HoneyHiveTracer]
PASSWORD = "Pw-9f3c1e"


def test_url_credentials_never_shown_and_export_still_works(receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    out = run_reporting(
        f"""
        good = HoneyHiveTracer.init(
            otlp_endpoint="http://alice:{PASSWORD}@127.0.0.1:{port}/v1/traces",
            project="p", max_retries=0, export_timeout=2,
        )
        with good.start_as_current_span("delivered"):
            pass
        delivered = good.flush(10)
        dead = HoneyHiveTracer.init(
            otlp_endpoint="http://bob:{PASSWORD}@127.0.0.1:{free_port()}/v1/traces?api_key={PASSWORD}",
            project="q", max_retries=0, export_timeout=1,
        )
        with dead.start_as_current_span("lost"):
            pass
        dead.flush(5)
        done(delivered=delivered, destinations=[good.destination, dead.destination],
             stats=[repr(good.stats()), repr(dead.stats())], reprs=[repr(good), repr(dead)],
             logs=logs())
        """
    )
    shown = repr(out)
    assert PASSWORD not in shown, shown
    assert out["delivered"] is True
    assert [s["name"] for s in receiver.spans()] == ["delivered"]
    assert "alice:***@127.0.0.1" in out["destinations"][0]
    assert "bob:***@127.0.0.1" in out["destinations"][1]
    assert "api_key=***" in out["destinations"][1]
    assert "bob:***@" in out["stats"][1]  # last_error names the endpoint, hidden
    assert any("bob:***@" in m for _, m in out["logs"])  # the export warning
    assert PASSWORD not in out["_stderr"]


@pytest.mark.parametrize("value", ["hh_key\r\nX-Evil: 1", "hh_key\nmore", "hh\tkey", "hh_key\x00"])
def test_an_api_key_no_header_can_carry_is_refused_by_name(make_tracer: Make, value: str) -> None:
    with pytest.raises(ValueError) as info:
        make_tracer(api_key=value, project="p")
    message = str(info.value)
    assert "api_key" in message and "control character" in message
    assert "hh_key" not in message and "hh\tkey" not in message and "Evil" not in message


def test_an_api_key_from_the_environment_is_refused_naming_the_variable() -> None:
    r = run_python(
        """
        from honeytrace import HoneyHiveTracer
        try:
            HoneyHiveTracer.init(project="p")
        except ValueError as e:
            print("refused:", e)
        """,
        env={"HH_API_KEY": "hh_secret_1\r\nX-Evil: 1"},
    )
    assert "refused:" in r.stdout and "HH_API_KEY" in r.stdout, (r.stdout, r.stderr)
    assert "hh_secret_1" not in r.stdout + r.stderr


def test_a_source_with_a_line_break_is_refused(make_tracer: Make) -> None:
    with pytest.raises(ValueError, match="source"):
        make_tracer(source="prod\r\nX-Evil: 1", exporter="none")


def test_surrounding_whitespace_of_a_key_is_trimmed_not_refused(make_tracer: Make) -> None:
    # A key read from a file keeps its trailing newline: trimmed, as before.
    t: Any = make_tracer(api_key="  hh_key\r\n", project="p", test_mode=True)
    assert t.is_initialized
