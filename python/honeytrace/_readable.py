"""The read half of a honeytrace span, as the OpenTelemetry SDK's objects.

The engine's span (``_core.Span``) answers ``name``, ``kind``, ``attributes``,
``events``, ``links``, ``status``, ``resource``, ``instrumentation_scope`` and the rest
of ``opentelemetry.sdk.trace.ReadableSpan`` with the functions here. When the SDK is
installed the values are the SDK's own classes (``Event``, ``Resource``,
``InstrumentationScope``, ``ReadableSpan`` for processors), so SDK processors and
exporters read honeytrace spans as theirs; without the SDK, small classes with the
same attributes stand in. Nothing here runs unless someone reads a span.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.trace.status import Status, StatusCode

_sdk_loaded = False
_sdk_trace: Any = None
_sdk_resources: Any = None
_sdk_instrumentation: Any = None


def _sdk() -> bool:
    """Import the SDK on first use (not with honeytrace: it costs ~20 ms), if it is
    installed: honeytrace itself needs only opentelemetry-api."""
    global _sdk_loaded, _sdk_trace, _sdk_resources, _sdk_instrumentation
    if not _sdk_loaded:
        _sdk_loaded = True
        try:
            from opentelemetry.sdk import resources, trace
            from opentelemetry.sdk.util import instrumentation
        except ImportError:
            return False
        _sdk_trace, _sdk_resources, _sdk_instrumentation = trace, resources, instrumentation
    return _sdk_trace is not None


#: ``SpanKind`` members by their value (the engine's order).
KINDS = tuple(trace.SpanKind(i) for i in range(5))

_STATUS = (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR)


class Event:
    """An event of a span (the SDK's ``Event`` when the SDK is not installed)."""

    __slots__ = ("_attributes", "_name", "_timestamp", "dropped_attributes")

    def __init__(self, name: str, attributes: Any, timestamp: int, dropped: int = 0) -> None:
        self._name = name
        self._attributes = attributes
        self._timestamp = timestamp
        self.dropped_attributes = dropped

    @property
    def name(self) -> str:
        return self._name

    @property
    def attributes(self) -> Any:
        return self._attributes

    @property
    def timestamp(self) -> int:
        return self._timestamp

    def __repr__(self) -> str:
        return f"Event(name={self._name!r}, timestamp={self._timestamp})"


class _Resource:
    """A resource (the SDK's ``Resource`` when the SDK is not installed)."""

    __slots__ = ("attributes", "schema_url")

    def __init__(self, attributes: Any, schema_url: str = "") -> None:
        self.attributes = attributes
        self.schema_url = schema_url

    def to_json(self, indent: Optional[int] = 4) -> str:
        return json.dumps(
            {"attributes": dict(self.attributes), "schema_url": self.schema_url}, indent=indent
        )


class _Scope:
    """An instrumentation scope (the SDK's when the SDK is not installed)."""

    __slots__ = ("attributes", "name", "schema_url", "version")

    def __init__(
        self, name: str, version: Optional[str], schema_url: Optional[str], attributes: Any
    ) -> None:
        self.name = name
        self.version = version
        self.schema_url = schema_url or ""
        self.attributes = attributes


def attributes(values: dict[str, Any]) -> Any:
    """A read-only mapping, as the SDK's attributes of an ended span."""
    return MappingProxyType(values)


def events(items: list[tuple[str, int, dict[str, Any], int]]) -> tuple[Any, ...]:
    out: list[Any] = []
    sdk = _sdk()
    for name, timestamp, attrs, dropped in items:
        if sdk:
            out.append(_sdk_trace.Event(name, MappingProxyType(attrs), timestamp))
        else:
            out.append(Event(name, MappingProxyType(attrs), timestamp, dropped))
    return tuple(out)


def links(items: list[tuple[Any, dict[str, Any], int]]) -> tuple[trace.Link, ...]:
    return tuple(trace.Link(ctx, MappingProxyType(attrs)) for ctx, attrs, _dropped in items)


_PLAIN_STATUS = (Status(StatusCode.UNSET), Status(StatusCode.OK))


def status(code: int, description: Optional[str]) -> Status:
    if code < 2:  # no description: one shared object each (a Status is not changed)
        return _PLAIN_STATUS[code]
    return Status(_STATUS[code], description)


_resources: dict[int, Any] = {}


def resource(tracer_id: int, attrs: dict[str, Any]) -> Any:
    """The tracer's resource, made once per tracer."""
    found = _resources.get(tracer_id)
    if found is None:
        sdk = _sdk()
        found = _sdk_resources.Resource(attrs) if sdk else _Resource(MappingProxyType(attrs))
        _resources[tracer_id] = found
    return found


_scopes: dict[Any, Any] = {}


def scope(
    name: str, version: Optional[str], schema_url: Optional[str], attrs: dict[str, Any]
) -> Any:
    key: Any = (name, version, schema_url)
    if attrs:
        key += tuple(sorted(attrs.items(), key=lambda kv: kv[0]))
    try:
        found = _scopes.get(key)
    except TypeError:  # an unhashable (list) attribute value
        key, found = None, None
    if found is None:
        if _sdk():
            found = _sdk_instrumentation.InstrumentationScope(
                name, version, schema_url, attrs or None
            )
        else:
            found = _Scope(name, version, schema_url, MappingProxyType(attrs))
        if key is not None and len(_scopes) < 1024:
            _scopes[key] = found
    return found


_ended_class: Any = None


def _ended_span_class() -> Any:
    """``EndedSpan``: made on first use, as a subclass of the SDK's ``ReadableSpan``."""
    global _ended_class
    if _ended_class is None:
        _ended_class = type("EndedSpan", (_EndedSpanBase, _sdk_trace.ReadableSpan), {})
    return _ended_class


class _EndedSpanBase:
    """The SDK's ``ReadableSpan`` of an ended honeytrace span, for processors'
    ``on_end``: an instance of the SDK's class, whose values are read from the
    span when asked (a processor that only queues it pays for none of them)."""

    def __init__(self, span: Any) -> None:  # the SDK's __init__ would read them all
        self._span = span

    name = property(lambda self: self._span.name)
    context = property(lambda self: self._span.context)
    kind = property(lambda self: self._span.kind)
    parent = property(lambda self: self._span.parent)
    start_time = property(lambda self: self._span.start_time)
    end_time = property(lambda self: self._span.end_time)
    status = property(lambda self: self._span.status)
    attributes = property(lambda self: self._span.attributes)
    events = property(lambda self: self._span.events)
    links = property(lambda self: self._span.links)
    resource = property(lambda self: self._span.resource)
    instrumentation_scope = property(lambda self: self._span.instrumentation_scope)
    instrumentation_info = property(lambda self: self._span.instrumentation_scope)
    dropped_attributes = property(lambda self: self._span.dropped_attributes)
    dropped_events = property(lambda self: self._span.dropped_events)
    dropped_links = property(lambda self: self._span.dropped_links)

    def get_span_context(self) -> Any:
        return self._span.context

    def to_json(self, indent: Optional[int] = 4) -> str:
        return str(_materialized(self._span).to_json(indent=indent))

    def __repr__(self) -> str:
        return f"ReadableSpan(name={self.name!r}, context={self.context!r})"


def readable(span: Any) -> Any:
    """What processors' ``on_end`` receive: the SDK's ``ReadableSpan`` for an ended
    honeytrace span (the span itself when the SDK is not installed)."""
    if not _sdk():
        return span
    return _ended_span_class()(span)


def _materialized(span: Any) -> Any:
    """The SDK's own ``ReadableSpan`` with every value of ``span`` read."""
    return _sdk_trace.ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def to_json(span: Any, indent: Any = 4) -> str:
    """The SDK's ``ReadableSpan.to_json`` for a honeytrace span. An ``indent`` that is
    not a small integer (or None) is an invalid argument: the default is used."""
    if indent is not None and (
        not isinstance(indent, int) or isinstance(indent, bool) or not 0 <= indent <= 64
    ):
        from . import _core

        _core._invalid_argument("Span.to_json")
        indent = 4
    if _sdk():
        return str(_materialized(span).to_json(indent=indent))
    ctx = span.context
    parent = span.parent
    st = span.status
    out = {
        "name": span.name,
        "context": {
            "trace_id": f"0x{ctx.trace_id:032x}",
            "span_id": f"0x{ctx.span_id:016x}",
            "trace_state": repr(ctx.trace_state),
        },
        "kind": str(span.kind),
        "parent_id": None if parent is None else f"0x{parent.span_id:016x}",
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status": {"status_code": st.status_code.name, "description": st.description},
        "attributes": dict(span.attributes),
        "events": [
            {"name": e.name, "timestamp": e.timestamp, "attributes": dict(e.attributes)}
            for e in span.events
        ],
        "links": [
            {
                "context": {
                    "trace_id": f"0x{lk.context.trace_id:032x}",
                    "span_id": f"0x{lk.context.span_id:016x}",
                },
                "attributes": dict(lk.attributes or {}),
            }
            for lk in span.links
        ],
        "resource": {"attributes": dict(span.resource.attributes), "schema_url": ""},
    }
    return json.dumps(out, indent=indent)
