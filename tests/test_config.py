"""HoneyHiveTracer.init: precedence, validation, modes, secrets."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import run_python
from honeytrace import HoneyHiveTracer
from otlp_receiver import Receiver, parse_otlp_json

Make = Callable[..., HoneyHiveTracer]


def test_init_returns_instance_of_the_class_it_is_called_on(make_tracer: Make) -> None:
    class MyTracer(HoneyHiveTracer):
        pass

    t = MyTracer.init(test_mode=True)
    try:
        assert type(t) is MyTracer
    finally:
        t.shutdown()


def test_explicit_beats_environment_beats_default(
    make_tracer: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HH_PROJECT", "env-project")
    monkeypatch.setenv("HH_SOURCE", "env-source")
    monkeypatch.setenv("SESSION_NAME", "env-name")
    t_env = make_tracer(test_mode=True)
    assert (t_env.project, t_env.source, t_env.session_name) == (
        "env-project",
        "env-source",
        "env-name",
    )
    t_kw = make_tracer(test_mode=True, project="kw-project", source="kw-source", session_name="n")
    assert (t_kw.project, t_kw.source, t_kw.session_name) == ("kw-project", "kw-source", "n")
    monkeypatch.delenv("HH_SOURCE")
    assert make_tracer(test_mode=True).source == "dev"


def test_hh_session_name_preferred_over_bare(
    make_tracer: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HH_SESSION_NAME", "hh-name")
    monkeypatch.setenv("SESSION_NAME", "bare-name")
    assert make_tracer(test_mode=True).session_name == "hh-name"


def test_session_name_defaults_to_the_script_name(tmp_path: Path) -> None:
    script = tmp_path / "my_agent.py"
    script.write_text(
        "from honeytrace import HoneyHiveTracer\n"
        "print(HoneyHiveTracer.init(test_mode=True).session_name)\n"
    )
    out = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "my_agent.py"


def test_test_mode_keeps_a_provided_session_id(make_tracer: Make) -> None:
    # HoneyHive 1.7 discards it in test mode (a bug honeytrace fixes).
    t = make_tracer(test_mode=True, session_id="my-session-1")
    assert t.session_id == "my-session-1"
    with t.start_as_current_span("s"):
        pass
    assert t.finished_spans()[0]["attributes"]["honeyhive.session_id"] == "my-session-1"


def test_session_id_from_environment(make_tracer: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_ID", "from-env")
    assert make_tracer(test_mode=True).session_id == "from-env"
    monkeypatch.setenv("HH_SESSION_ID", "from-hh-env")
    assert make_tracer(test_mode=True).session_id == "from-hh-env"


def test_generated_session_id_is_a_uuid4(make_tracer: Make) -> None:
    a, b = make_tracer(test_mode=True), make_tracer(test_mode=True)
    pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    assert re.match(pattern, a.session_id)
    assert a.session_id != b.session_id


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"server_url": "ftp://example.com", "api_key": "k"}, {}, "must start with http"),
        ({"server_url": "not a url"}, {}, "not a valid URL"),
        ({}, {"HH_API_URL": "htp:/broken"}, "HH_API_URL"),
        ({"otlp_endpoint": "localhost:4318"}, {}, "otlp_endpoint"),
        ({"batch_size": -1}, {}, "must not be negative"),
        ({"max_queue_size": 0}, {}, "at least 1"),
        ({"batch_size": 100, "max_queue_size": 10}, {}, "must not exceed max_queue_size"),
        ({}, {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"flush_interval": -2.0}, {}, "non-negative"),
        ({}, {"HH_TEST_MODE": "maybe"}, "HH_TEST_MODE"),
        ({"otlp_protocol": "grpc", "otlp_endpoint": "http://h:4318"}, {}, "grpc"),
        ({"exporter": "zipkin"}, {}, "zipkin"),
        ({"exporter": "otlp"}, {}, "needs otlp_endpoint"),
        ({"test_mode": True, "exporter": "otlp"}, {}, "test_mode"),
        ({"api_key": "k", "session_id": "not-a-uuid"}, {}, "not a UUID"),
        ({"otlp_headers": {"bad header": "x"}, "otlp_endpoint": "http://h"}, {}, "header name"),
        ({"project": 42}, {}, "must be a string"),
        ({"span_name_filters": {"drop": []}}, {}, "unknown key"),
    ],
)
def test_bad_configuration_raises_a_clear_value_error(
    kwargs: dict[str, Any], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=re.escape(message)):
        HoneyHiveTracer.init(**kwargs)


def test_unknown_keyword_is_warned_about_not_ignored_silently(make_tracer: Make) -> None:
    with pytest.warns(UserWarning, match="unknown keyword 'instrumentor'") as rec:
        t = HoneyHiveTracer.init(test_mode=True, instrumentor=object())
    t.shutdown()
    # the warning points at the caller, not at honeytrace internals
    assert rec[0].filename == __file__


def test_honeyhive_legacy_keyword_is_warned_about(make_tracer: Make) -> None:
    with pytest.warns(UserWarning, match="'disable_http_tracing' is accepted for HoneyHive"):
        make_tracer(test_mode=True, disable_http_tracing=True)


def test_api_key_never_in_repr_errors_or_exported_data(
    receiver: Receiver, make_tracer: Make
) -> None:
    key = "hh_super_secret_key_123"
    t = make_tracer(api_key=key, server_url=receiver.url, project="p")
    assert key not in repr(t)
    assert key not in str(t.stats())
    with t.start_as_current_span("s"):
        pass
    assert t.flush(10)
    spans = receiver.wait_for_spans(1)
    assert spans and all(key not in json.dumps(s) for s in spans)
    for r in receiver.requests:
        assert key.encode() not in r.body
    with pytest.raises(ValueError) as err:
        HoneyHiveTracer.init(api_key=key, session_id="bad", server_url=receiver.url)
    assert key not in str(err.value)


def test_otel_sdk_disabled_gives_a_no_op_tracer(
    make_tracer: Make, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    t = make_tracer()
    assert t.mode == "disabled"
    with t.start_as_current_span("s") as span:
        assert not span.is_recording()
        assert not span.get_span_context().is_valid
    assert t.flush(1)
    assert t.stats()["started"] == 0
    assert not (tmp_path / ".honeytrace").exists()


def test_modes_follow_what_is_configured(
    make_tracer: Make, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert make_tracer().mode == "file"
    assert make_tracer(test_mode=True).mode == "memory"
    assert make_tracer(api_key="k", server_url=receiver.url).mode == "cloud"
    assert make_tracer(otlp_endpoint=receiver.url).mode == "otlp"
    # an explicit endpoint wins over the HoneyHive cloud default
    assert make_tracer(otlp_endpoint=receiver.url, api_key="k").mode == "otlp"
    assert make_tracer(exporter="console").mode == "console"
    assert make_tracer(exporter="none").mode == "none"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    assert make_tracer().mode == "otlp"


def test_otel_exporter_environment_is_honoured(
    make_tracer: Make, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url + "/base")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=agents%20team,x-token=abc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    t = make_tracer(project="p")
    with t.start_as_current_span("s"):
        pass
    assert t.flush(10)
    receiver.wait_for_spans(1)
    req = receiver.delivered()[0]
    assert req.path == "/base/v1/traces"
    assert req.headers["x-team"] == "agents team"
    assert req.headers["x-token"] == "abc"
    assert req.headers["content-type"] == "application/json"
    span = receiver.spans()[0]
    assert span["resource"]["service.name"] == "checkout"
    assert span["resource"]["deployment.environment"] == "staging"


def test_local_default_writes_otlp_json_lines_and_says_where(tmp_path: Path) -> None:
    out = run_python(
        """
        from honeytrace import HoneyHiveTracer
        t = HoneyHiveTracer.init(project="demo")
        with t.start_as_current_span("root"):
            with t.start_as_current_span("child"):
                pass
        """,
        cwd=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path / ".honeytrace" / "traces.jsonl"
    assert f"traces go to local file {path}" in out.stderr
    assert out.stderr.count("traces go to") == 1
    lines = path.read_text().splitlines()
    assert lines
    names = []
    for line in lines:
        req = parse_otlp_json(line)  # strict OTLP/JSON
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                names.extend(s.name for s in ss.spans)
    assert sorted(names) == ["child", "root"]
    if os.name == "posix":  # prompts and outputs: the user's alone, whatever the umask
        assert (path.parent.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)


def test_batch_environment_variables_are_read(
    make_tracer: Make, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HH_BATCH_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only full batches go out
    t = make_tracer(otlp_endpoint=receiver.url)
    for i in range(7):
        with t.start_as_current_span(f"s{i}"):
            pass
    receiver.wait_for_spans(6)
    sizes = sorted(
        len(r.trace_request.resource_spans[0].scope_spans[0].spans) for r in receiver.delivered()
    )  # type: ignore[union-attr]
    assert sizes == [3, 3]
    assert t.flush(10)
    assert len(receiver.spans()) == 7


def test_verbose_and_env_flags(make_tracer: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HH_TEST_MODE", "yes")
    assert make_tracer().test_mode is True


def test_repr_is_informative(make_tracer: Make) -> None:
    t = make_tracer(test_mode=True, project="p", session_id="s1")
    assert repr(t) == (
        "HoneyHiveTracer(project='p', source='dev', session_id='s1', mode='memory', "
        "initialized=True)"
    )
    assert os.path.basename(__file__) not in repr(t)


# -- one settings table ---------------------------------------------------------------


def test_readme_configuration_table_is_the_engine_settings_table() -> None:
    """The README's table is generated from the engine's settings table (the one the
    parser reads): a setting added, renamed or given a new variable without the docs
    fails here. `python tools/settings_table.py` regenerates it."""
    from conftest import REPO
    from honeytrace import _core

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert _core.SETTINGS_MARKDOWN in readme, "README is out of date: run tools/settings_table.py"
    keys = [s["key"] for s in _core.SETTINGS]
    assert len(keys) == len(set(keys)) and len(keys) >= 40
    for s in _core.SETTINGS:
        assert f"| `{s['key']}` |" in readme
        for env in [*s["env"], *s["env_ms"]]:
            assert f"`{env}`" in readme, env
    # The aliases the table once missed are there.
    for name in (
        "ingestion_api_key",
        "HONEYHIVE_API_KEY",
        "HH_DISABLE_TRACING",
        "HH_INCOMING_TRUST",
    ):
        assert name in readme


def test_every_documented_keyword_is_accepted(make_tracer: Make) -> None:
    import warnings

    from honeytrace import _core

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown keyword would warn
        every = {s["key"]: None for s in _core.SETTINGS}
        every["test_mode"] = True
        t = make_tracer(**every)
    assert t.mode == "memory"


@pytest.mark.parametrize("value", ["false", "0", "no", "off", False])
def test_flags_follow_one_rule_from_keywords_and_environment(
    make_tracer: Make, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    """`propagate_threads="false"` used to turn thread propagation on (Python read it
    with `bool()`); every flag now goes through the engine's one parser."""
    import threading

    import honeytrace

    honeytrace.uninstrument_threads()
    original = threading.Thread.start
    make_tracer(test_mode=True, propagate_threads=value)
    assert threading.Thread.start is original
    monkeypatch.setenv("HH_PROPAGATE_THREADS", "true")
    make_tracer(test_mode=True)
    try:
        assert threading.Thread.start is not original
    finally:
        honeytrace.uninstrument_threads()
    with pytest.raises(ValueError, match="propagate_threads"):
        make_tracer(test_mode=True, propagate_threads="sometimes")
