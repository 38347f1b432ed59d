"""``honeytrace`` command line: read the local trace file (OTLP JSON lines).

honeytrace view [PATH] [--session ID] [--last N]   sessions as span trees
honeytrace sessions [PATH]                         one line per session
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from . import _core


@dataclass
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: Optional[str]
    start: int
    end: int
    attributes: dict[str, Any]
    service: str
    status_code: int
    status_message: str
    children: list[SpanRecord] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return str(self.attributes.get("honeyhive.session_id", "(no session)"))

    @property
    def duration_ms(self) -> float:
        return max(0, self.end - self.start) / 1e6


def default_path() -> str:
    return os.environ.get("HH_FILE_PATH") or os.path.join(os.getcwd(), _core.DEFAULT_FILE)


def trace_files(path: str) -> list[str]:
    """The files holding the traces of ``path``, oldest first.

    A file stands for itself and the files rotation renamed aside
    (``traces.<UTC time>.<pid>.jsonl`` for ``traces.jsonl``); a directory for every
    ``*.jsonl`` file in it.
    """
    if os.path.isdir(path):
        found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".jsonl"))
        return [p for p in found if os.path.isfile(p)]
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    if not stem:
        stem, ext = name, ""
    aside = sorted(
        os.path.join(folder, n)
        for n in (os.listdir(folder or ".") if os.path.isdir(folder or ".") else [])
        if n.startswith(stem + ".")
        and n.endswith(ext)
        and len(n) > len(stem) + 1 + len(ext)
        and n[len(stem) + 1].isdigit()
    )
    return aside + ([path] if os.path.isfile(path) else [])


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return v["doubleValue"]
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attrs(kvs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value", {})) for kv in kvs}


def read_spans(path: str) -> Iterator[SpanRecord]:
    """Spans from an OTLP-JSON-lines file; malformed lines are skipped (and counted)."""
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
            except ValueError:
                bad += 1
                continue
            for rs in req.get("resourceSpans", []):
                resource = _attrs(rs.get("resource", {}).get("attributes", []))
                service = str(resource.get("service.name", "?"))
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        status = s.get("status", {})
                        yield SpanRecord(
                            name=s.get("name", ""),
                            trace_id=s.get("traceId", ""),
                            span_id=s.get("spanId", ""),
                            parent_span_id=s.get("parentSpanId") or None,
                            start=int(s.get("startTimeUnixNano", 0)),
                            end=int(s.get("endTimeUnixNano", 0)),
                            attributes=_attrs(s.get("attributes", [])),
                            service=service,
                            status_code=int(status.get("code", 0)),
                            status_message=status.get("message", ""),
                        )
    if bad:
        print(f"honeytrace: skipped {bad} malformed line(s) in {path}", file=sys.stderr)


def _short(v: Any, limit: int = 50) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    s = s.replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _line(s: SpanRecord, depth: int, show_service: bool) -> str:
    etype = s.attributes.get("honeyhive_event_type")
    parts = ["  " * depth + s.name + (f" [{etype}]" if etype else "")]
    parts.append(f"{s.duration_ms:.1f} ms")
    if show_service:
        parts.append(f"({s.service})")
    if s.status_code == 2:
        parts.append(f"✗ {s.status_message}")
    inputs = _fields(s.attributes, "honeyhive_inputs.", 30)
    if inputs:
        parts.append("in: " + " ".join(inputs))
    out = s.attributes.get("honeyhive_outputs.result")
    if out is not None:
        parts.append("out: " + _short(out))
    else:
        outs = _fields(s.attributes, "honeyhive_outputs.", 40)
        if outs:
            parts.append("out: " + " ".join(outs))
    return "  ".join(parts)


def _fields(attributes: dict[str, Any], prefix: str, width: int) -> list[str]:
    """The first three ``name=value`` pairs under ``prefix``, values shortened."""
    return [
        f"{k[len(prefix) :]}={_short(v, width)}"
        for k, v in attributes.items()
        if k.startswith(prefix)
    ][:3]


def render_session(session_id: str, spans: list[SpanRecord]) -> str:
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        s.children = []
    roots = []
    for s in sorted(spans, key=lambda x: x.start):
        parent = by_id.get(s.parent_span_id or "")
        if parent is not None and parent is not s:
            parent.children.append(s)
        else:
            roots.append(s)
    services = sorted({s.service for s in spans})
    traces = {s.trace_id for s in spans}
    projects = sorted(
        {
            str(s.attributes["honeyhive.project"])
            for s in spans
            if "honeyhive.project" in s.attributes
        }
    )
    head = (
        f"session {session_id}"
        + (f"  project {', '.join(projects)}" if projects else "")
        + f"  · {len(spans)} spans · {len(traces)} trace(s) · services: {', '.join(services)}"
    )
    lines = [head]
    show_service = len(services) > 1
    stack = [(r, 1) for r in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        lines.append(_line(node, depth, show_service))
        for child in reversed(node.children):
            stack.append((child, depth + 1))
    return "\n".join(lines)


def group_sessions(spans: Iterable[SpanRecord]) -> dict[str, list[SpanRecord]]:
    sessions: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        sessions[s.session_id].append(s)
    return dict(sorted(sessions.items(), key=lambda kv: min(x.start for x in kv[1])))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="honeytrace", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    view = sub.add_parser("view", help="print sessions as span trees")
    view.add_argument("path", nargs="?", default=None)
    view.add_argument("--session", help="only this session id")
    view.add_argument("--last", type=int, default=None, help="only the N most recent sessions")
    sessions = sub.add_parser("sessions", help="list sessions")
    sessions.add_argument("path", nargs="?", default=None)
    args = parser.parse_args(argv)

    path = args.path or default_path()
    files = trace_files(path)
    if not files:
        print(f"honeytrace: no trace file at {path}", file=sys.stderr)
        return 1
    grouped = group_sessions(s for f in files for s in read_spans(f))
    if args.command == "sessions":
        for sid, spans in grouped.items():
            services = sorted({s.service for s in spans})
            print(f"{sid}  {len(spans)} spans  {', '.join(services)}")
        return 0
    if args.session:
        grouped = {k: v for k, v in grouped.items() if k == args.session}
        if not grouped:
            print(f"honeytrace: session {args.session} not found in {path}", file=sys.stderr)
            return 1
    items = list(grouped.items())
    if args.last:
        items = items[-args.last :]
    print("\n\n".join(render_session(sid, spans) for sid, spans in items))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
