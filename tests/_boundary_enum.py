"""Call every public entry point of honeytrace with hostile arguments.

Run by ``tests/test_boundary.py`` in a subprocess (a crash fails that test with this
process's stderr); also runnable by hand::

    python tests/_boundary_enum.py [out.json] [--summary]

Covered: every callable in ``honeytrace.__all__``; the public methods of a
``HoneyHiveTracer`` (test_mode), of a span (recording and ended), of ``tracer.tracer``,
``tracer.provider`` and the global ``TracerProvider``, of ``with_distributed_trace_context``,
``enrich_span_context``, ``HoneyTracePropagator`` and ``tracer.trace(...)``; the
callables of ``honeytrace.integrations``; every function and class (with its methods)
that ``python/honeytrace/_core.pyi`` lists, plus the engine's other Python-visible
callables (``_panic_for_test`` and ``_mark_exiting`` are skipped: test hook and
process-ending); and decorated functions of every kind called with hostile arguments.

Each parameter position (from ``inspect.signature``; else 0-3 positional arguments)
gets each hostile value in turn, the other required parameters a benign value. Nested
positions (``metadata={"k": <hostile>}``, ``attributes={...}``, carriers) are covered
by extra plans. Every call runs in a copy of the current context, so a context left
attached by one call does not leak into the next.

The output is JSON: one record per call (label, hostile value, outcome, exception type
and message, contained panics counted by ``internal_errors()`` during the call),
plus the stub names that the engine does not have.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import contextvars
import faulthandler
import gc
import inspect
import io
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from opentelemetry.trace import StatusCode

import honeytrace
import honeytrace.integrations as integrations
from honeytrace import HoneyHiveTracer, _core

try:  # absent from builds before the engine/boundary split (for running this by hand)
    from honeytrace import _compat, _wrappers
except ImportError:  # pragma: no cover
    _compat = _wrappers = None  # type: ignore[assignment]
internal_errors: Callable[[], int] = getattr(_core, "internal_errors", lambda: 0)

STUB = Path(honeytrace.__file__).with_name("_core.pyi")
# The test hook and the exit hook (after it no engine call runs Python code).
SKIP_CORE = {"_panic_for_test", "_mark_exiting"}
# Stub names whose engine class is now called differently.
STUB_ALIASES = {
    "ScopedTracer": "Tracer",
    "AsgiTracing": "ServerTracing",
    "AsgiRequest": "ServerRequest",
}
PROTOCOL = ("__enter__", "__exit__", "__aenter__", "__aexit__", "__call__")

# ---------------------------------------------------------------------------------
# Hostile values (fresh objects per call: some of them change themselves)


class Boom(Exception):
    pass


class BadStr:
    """Its __str__, __repr__ and __format__ raise."""

    __slots__ = ()

    def __str__(self) -> str:
        raise Boom("__str__")

    def __repr__(self) -> str:
        raise Boom("__repr__")

    def __format__(self, spec: str) -> str:
        raise Boom("__format__")


class Grower:
    """A value whose __repr__/__str__ adds an entry to the container holding it.
    No __dict__ (``__slots__``), so a capture has to fall back to ``repr``."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target

    def __repr__(self) -> str:
        t = self.target
        if len(t) < 50:
            if isinstance(t, dict):
                t[f"added{len(t)}"] = Grower(t)
            else:
                t.append(Grower(t))
        return "Grower()"

    __str__ = __repr__


class IterMutatingDict(dict):
    """A dict that adds a key whenever it is iterated or its views are taken."""

    def _grow(self) -> None:
        if len(self) < 50:
            dict.__setitem__(self, f"iter{len(self)}", Grower(self))

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._grow()
        return dict.__iter__(self)

    def items(self):  # type: ignore[no-untyped-def]
        self._grow()
        return dict.items(self)

    def values(self):  # type: ignore[no-untyped-def]
        self._grow()
        return dict.values(self)

    def keys(self):  # type: ignore[no-untyped-def]
        self._grow()
        return dict.keys(self)


class BadNumber:
    """Looks numeric to duck typing; every conversion raises."""

    __slots__ = ()

    def __float__(self) -> float:
        raise Boom("__float__")

    def __int__(self) -> int:
        raise Boom("__int__")

    def __index__(self) -> int:
        raise Boom("__index__")

    def __bool__(self) -> bool:
        raise Boom("__bool__")


class BadIterable:
    """Looks like a container; iterating, measuring or indexing it raises."""

    __slots__ = ()

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise Boom("__iter__")

    def __len__(self) -> int:
        raise Boom("__len__")

    def __getitem__(self, k: Any) -> Any:
        raise Boom("__getitem__")


def _mutating_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"plain": 1}
    d["grows"] = Grower(d)
    return d


def _iter_mutating_dict() -> dict[str, Any]:
    d = IterMutatingDict(plain=1)
    dict.__setitem__(d, "grows", Grower(d))
    return d


def _mutating_list() -> list[Any]:
    lst: list[Any] = [1]
    lst.append(Grower(lst))
    return lst


def _self_list() -> list[Any]:
    lst: list[Any] = [1, "a"]
    lst.append(lst)
    return lst


def _self_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


HOSTILE: dict[str, Callable[[], Any]] = {
    "nan": lambda: float("nan"),
    "inf": lambda: float("inf"),
    "-inf": lambda: -float("inf"),
    "10**400": lambda: 10**400,
    "-1": lambda: -1,
    "bad_str": BadStr,
    "mutating_dict": _mutating_dict,
    "iter_mutating_dict": _iter_mutating_dict,
    "mutating_list": _mutating_list,
    "self_list": _self_list,
    "self_dict": _self_dict,
    "bad_utf8_bytes": lambda: b"\xff\xfe\xc3\x28ok",
    "lone_surrogates": lambda: "a\ud800b\udfffc",
    "None": lambda: None,
    "object()": object,
    "complex": lambda: 3 + 4j,
    "bad_number": BadNumber,
    "bad_iterable": BadIterable,
}


class _H:
    """Placeholder for "the hostile value" in an argument template."""

    def __repr__(self) -> str:
        return "H"


H = _H()


class Fresh:
    """A benign value made anew for every call."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def fill(template: Any, hostile: Any) -> Any:
    if template is H:
        return hostile
    if isinstance(template, Fresh):
        return template.make()
    if isinstance(template, list):
        return [fill(x, hostile) for x in template]
    if isinstance(template, tuple):
        return tuple(fill(x, hostile) for x in template)
    if isinstance(template, dict) and type(template) is dict:
        return {k: fill(v, hostile) for k, v in template.items()}
    return template


# ---------------------------------------------------------------------------------
# The process's tracers


class State:
    main: HoneyHiveTracer


S = State()


def new_tracer() -> HoneyHiveTracer:
    return HoneyHiveTracer.init(project="enum", source="test", test_mode=True)


def ensure_main() -> HoneyHiveTracer:
    m = getattr(S, "main", None)
    if m is None or not m.is_initialized:
        S.main = new_tracer()
        honeytrace.set_default_tracer(S.main)
    return S.main


def recording_span() -> Any:
    return ensure_main().start_span("enum-span")


def ended_span() -> Any:
    s = ensure_main().start_span("enum-ended")
    s.end()
    return s


def sample(x: Any = 1, *rest: Any, **kw: Any) -> Any:
    return x


def wsgi_app(environ: Any, start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def asgi_receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def asgi_send(message: Any) -> None:
    return None


def flask_app() -> Any:
    try:
        import flask
    except ImportError:  # pragma: no cover - the test extras install it
        return None
    return flask.Flask("enum")


def fastapi_app() -> Any:
    try:
        import fastapi
    except ImportError:  # pragma: no cover - the test extras install it
        return None
    return fastapi.FastAPI()


def http_scope() -> dict[str, Any]:
    return {"type": "http", "path": "/x", "method": "GET", "headers": [], "query_string": b""}


def wsgi_environ() -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "wsgi.url_scheme": "http"}


BENIGN: dict[str, Any] = {
    "name": "x",
    "event_name": "x",
    "instrumenting_module_name": "enum",
    "key": "k",
    "value": 1,
    "carrier": Fresh(dict),
    "span": Fresh(recording_span),
    "items": Fresh(list),
    "exception": Fresh(lambda: ValueError("x")),
    "exc": Fresh(lambda: ValueError("x")),
    "status": StatusCode.OK,
    "func": sample,
    "fn": sample,
    "app": wsgi_app,
    "environ": Fresh(wsgi_environ),
    "start_response": lambda *a: None,
    "scope": Fresh(http_scope),
    "receive": asgi_receive,
    "send": asgi_send,
    "hook": None,
    "args": (),
    "env": Fresh(dict),
    "secret": "s3cret",
    "session_id": "sid",
    "result": None,
    "item": 1,
    "what": "200 OK",
    "path": "/x",
    "token": None,
    "context": None,
    "tracer": None,
    "timeout": 1.0,
}


# ---------------------------------------------------------------------------------
# Targets


class Target:
    def __init__(
        self,
        label: str,
        get: Callable[[], Callable[..., Any]],
        *,
        kind: str = "public",
        kw_names: tuple[str, ...] = (),
        fixed_kw: Optional[dict[str, Any]] = None,
        benign: Optional[dict[str, Any]] = None,
        extra: tuple[tuple[str, Any, Any], ...] = (),
        deep: str = "",
        cleanup: Optional[Callable[[Any], None]] = None,
        after: Optional[Callable[[], None]] = None,
    ) -> None:
        self.label = label
        self.get = get
        self.kind = kind  # public | config | decorator | core | integration
        self.kw_names = kw_names
        self.fixed_kw = fixed_kw or {}
        self.benign = benign or {}
        self.extra = extra
        self.deep = deep  # "with" | "decorate" | "decorate_class" | "wsgi_body" | ""
        self.cleanup = cleanup
        self.after = after


def _shutdown_extra_tracers(result: Any) -> None:
    """Shut down tracers a call created (never the process's main one)."""
    found: list[Any] = []
    if isinstance(result, HoneyHiveTracer):
        found.append(result)
    if isinstance(result, tuple) and result and isinstance(result[0], _core.TracerCore):
        found.append(result[0])
    for t in found:
        if t is getattr(S, "main", None) or getattr(t, "id", None) == S.main._core.id:
            continue
        with contextlib.suppress(Exception):
            t.shutdown(0.5)


def _reset_globals() -> None:
    _core.set_redactor(None)
    ensure_main()
    honeytrace.set_default_tracer(S.main)


CONFIG_KEYS = tuple(sorted(set(_core.CONFIG_KEYS) | set(_core.LEGACY_KEYS)))
DECORATOR_OPTIONS = tuple(sorted(honeytrace._decorators._OPTIONS))
ENRICH_NAMES = (*tuple(inspect.signature(honeytrace.enrich_span).parameters)[:-1], "extra")
SESSION_NAMES = (*tuple(inspect.signature(honeytrace.enrich_session).parameters)[:-1], "extra")

NESTED_DATA = (
    ("metadata={k:H}", [], {"metadata": {"k": H, "n": {"deep": [H]}}}),
    ("inputs={k:H}", [], {"inputs": {"k": H}}),
    ("outputs={k:H}", [], {"outputs": {"k": H}}),
)


def public_methods(obj: Any) -> list[str]:
    names = []
    for name in dir(obj):
        if name.startswith("_") and name not in PROTOCOL:
            continue
        if (
            name in PROTOCOL
            and name not in type(obj).__dict__
            and not any(name in vars(c) for c in type(obj).__mro__[:-1])
        ):
            continue
        static = inspect.getattr_static(obj, name, None)
        if isinstance(static, property) or type(static).__name__ == "getset_descriptor":
            continue
        try:
            attr = getattr(obj, name)
        except Exception:
            continue
        if callable(attr) and not inspect.isclass(attr):
            names.append(name)
    return names


def public_properties(obj: Any) -> list[str]:
    out = []
    for name in dir(obj):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(obj, name, None)
        if isinstance(static, property) or type(static).__name__ == "getset_descriptor":
            out.append(name)
    return out


def stub_listing() -> tuple[list[str], dict[str, list[str]]]:
    """Functions and classes (with their methods, properties left out) of _core.pyi."""
    tree = ast.parse(STUB.read_text())
    funcs: list[str] = []
    classes: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            funcs.append(node.name)
        elif isinstance(node, ast.ClassDef):
            methods = []
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    decos = {getattr(d, "id", getattr(d, "attr", "")) for d in item.decorator_list}
                    if "property" in decos:
                        continue
                    methods.append(item.name)
            classes[node.name] = methods
    return funcs, classes


SPAN_EXTRA = {
    "set_attribute": (("value nested list", ["k", [H, H]], {}),),
    "set_attributes": (("attributes={k:H}", [{"k": H, "ok": 1}], {}),),
    "add_event": (("attributes={k:H}", ["e", {"k": H}], {}),),
    "add_link": (
        ("attributes={k:H}", [Fresh(lambda: recording_span().get_span_context()), {"k": H}], {}),
    ),
    "record_exception": (("attributes={k:H}", [Fresh(lambda: ValueError("x")), {"k": H}], {}),),
}
TRACER_SPAN_EXTRA = (
    ("attributes={a:H}", ["x"], {"attributes": {"a": H}}),
    ("links=[H]", ["x"], {"links": [H]}),
)


def build_targets() -> tuple[list[Target], list[Target], list[str]]:
    """(safe targets, process-wide destructive targets, stub names not in the engine)."""
    main = ensure_main()
    safe: list[Target] = []
    late: list[Target] = []
    seen: set[str] = set()

    def add(t: Target, destructive: bool = False) -> None:
        if t.label in seen:
            return
        seen.add(t.label)
        (late if destructive else safe).append(t)

    # -- honeytrace.__all__ ------------------------------------------------------
    for name in honeytrace.__all__:
        obj = getattr(honeytrace, name)
        if not callable(obj):
            continue
        label = f"honeytrace.{name}"
        getter = lambda obj=obj: obj  # noqa: E731
        if name == "HoneyHiveTracer":
            add(
                Target(
                    label,
                    getter,
                    kind="config",
                    kw_names=CONFIG_KEYS,
                    fixed_kw={"test_mode": True},
                    cleanup=_shutdown_extra_tracers,
                    extra=NESTED_DATA,
                )
            )
        elif name in ("trace", "atrace"):
            add(
                Target(
                    label,
                    getter,
                    kind="decorator",
                    kw_names=DECORATOR_OPTIONS,
                    deep="decorate",
                    extra=NESTED_DATA,
                )
            )
        elif name == "trace_class":
            add(
                Target(
                    label,
                    getter,
                    kind="decorator",
                    kw_names=DECORATOR_OPTIONS,
                    deep="decorate_class",
                    extra=NESTED_DATA,
                )
            )
        elif name == "shutdown" or name == "set_redactor":
            add(Target(label, getter, after=_reset_globals), destructive=True)
        elif name == "set_default_tracer":
            add(Target(label, getter, after=_reset_globals))
        elif name == "enrich_span":
            add(
                Target(
                    label,
                    getter,
                    kw_names=("extra",),
                    extra=(*NESTED_DATA, ("attributes={k:H}", [], {"attributes": {"k": H}})),
                )
            )
        elif name == "enrich_session":
            add(Target(label, getter, kw_names=("extra",), extra=NESTED_DATA))
        elif name in ("enrich_span_context", "with_distributed_trace_context"):
            extra: tuple[tuple[str, Any, Any], ...] = ()
            if name == "with_distributed_trace_context":
                extra = (
                    ("carrier={traceparent:H,baggage:H}", [{"traceparent": H, "baggage": H}], {}),
                )
            else:
                extra = NESTED_DATA
            add(Target(label, getter, deep="with", extra=extra))
        elif name in ("extract_context_from_carrier", "inject_context_into_carrier"):
            add(
                Target(
                    label,
                    getter,
                    extra=(
                        (
                            "carrier={traceparent:H,baggage:H}",
                            [{"traceparent": H, "baggage": H, "tracestate": H}],
                            {},
                        ),
                    ),
                )
            )
        else:
            add(Target(label, getter))

    # -- a HoneyHiveTracer and what hangs off it ------------------------------------
    for name in public_methods(main):
        label = f"HoneyHiveTracer.{name}"
        if name == "init":
            continue  # the class's init: covered as honeytrace.HoneyHiveTracer keywords
        if name in ("shutdown", "ashutdown"):
            add(Target(label, lambda name=name: getattr(new_tracer(), name)))
        elif name == "trace":
            add(
                Target(
                    label,
                    lambda: S.main.trace,
                    kind="decorator",
                    kw_names=tuple(o for o in DECORATOR_OPTIONS if o != "tracer"),
                    deep="decorate_and_with",
                    extra=NESTED_DATA,
                )
            )
        elif name in ("enrich_span", "enrich_session"):
            names = ENRICH_NAMES if name == "enrich_span" else SESSION_NAMES
            add(
                Target(
                    label,
                    lambda name=name: getattr(S.main, name),
                    kw_names=names,
                    extra=NESTED_DATA,
                )
            )
        elif name in ("start_span", "start_as_current_span"):
            add(
                Target(
                    label,
                    lambda name=name: getattr(S.main, name),
                    extra=TRACER_SPAN_EXTRA,
                    deep="with" if name == "start_as_current_span" else "end",
                )
            )
        else:
            add(Target(label, lambda name=name: getattr(S.main, name)))
    add(
        Target(
            "HoneyHiveTracer.init",
            lambda: HoneyHiveTracer.init,
            kind="config",
            kw_names=CONFIG_KEYS,
            fixed_kw={"test_mode": True},
            cleanup=_shutdown_extra_tracers,
            extra=(("metadata=mutating (top)", [], {"metadata": H, "test_mode": True}),),
        )
    )

    span_variants = (("Span", recording_span), ("Span(ended)", ended_span))
    for prefix, make in span_variants:
        for name in public_methods(make()):
            add(
                Target(
                    f"{prefix}.{name}",
                    lambda name=name, make=make: getattr(make(), name),
                    extra=SPAN_EXTRA.get(name, ()),
                )
            )

    for name in public_methods(main.tracer):
        add(
            Target(
                f"tracer.tracer.{name}",
                lambda name=name: getattr(S.main.tracer, name),
                extra=TRACER_SPAN_EXTRA,
                deep="with" if name == "start_as_current_span" else "end",
            )
        )
    for name in public_methods(main.provider):
        if name == "shutdown":
            add(Target(f"tracer.provider.{name}", lambda: new_tracer().provider.shutdown))
        else:
            add(Target(f"tracer.provider.{name}", lambda name=name: getattr(S.main.provider, name)))
    for name in public_methods(honeytrace.TracerProvider()):
        tgt = Target(
            f"TracerProvider().{name}", lambda name=name: getattr(honeytrace.TracerProvider(), name)
        )
        if name == "shutdown":
            tgt.after = _reset_globals
            add(tgt, destructive=True)
        else:
            add(tgt)

    cm_instances: dict[str, Callable[[], Any]] = {
        "with_distributed_trace_context({})": lambda: honeytrace.with_distributed_trace_context({}),
        "enrich_span_context('x')": lambda: honeytrace.enrich_span_context("x"),
        "tracer.tracer.start_as_current_span('x')": lambda: S.main.tracer.start_as_current_span(
            "x"
        ),
        "HoneyTracePropagator()": honeytrace.HoneyTracePropagator,
        "tracer.trace('x')": lambda: S.main.trace("x"),
    }
    for prefix, make in cm_instances.items():
        for name in public_methods(make()):
            kind = "decorator" if prefix == "tracer.trace('x')" and name == "__call__" else "public"
            add(
                Target(
                    f"{prefix}.{name}",
                    lambda name=name, make=make: getattr(make(), name),
                    kind=kind,
                )
            )

    # -- honeytrace.integrations ---------------------------------------------------
    for name in integrations.__all__:
        obj = getattr(integrations, name)
        label = f"integrations.{name}"
        benign: dict[str, Any] = {}
        if name == "instrument_flask":
            benign = {"app": Fresh(flask_app)}
        elif name == "instrument_fastapi":
            benign = {"app": Fresh(fastapi_app)}
        elif name == "HoneyTraceASGIMiddleware":
            benign = {"app": asgi_app}
        after = integrations.uninstrument_http if name == "instrument_http" else None
        add(Target(label, lambda obj=obj: obj, kind="integration", benign=benign, after=after))
    add(
        Target(
            "integrations.ExcludedUrls().__call__",
            lambda: integrations.ExcludedUrls(["/health"]),
            kind="integration",
        )
    )
    add(
        Target(
            "integrations.HoneyTraceWSGIMiddleware(app).__call__",
            lambda: integrations.HoneyTraceWSGIMiddleware(wsgi_app),
            kind="integration",
            deep="wsgi_body",
        )
    )
    add(
        Target(
            "integrations.HoneyTraceASGIMiddleware(app).__call__",
            lambda: integrations.HoneyTraceASGIMiddleware(asgi_app),
            kind="integration",
        )
    )

    # -- honeytrace._core, as its stub lists it --------------------------------------
    funcs, classes = stub_listing()
    missing: list[str] = []
    for name in funcs:
        if name in SKIP_CORE:
            continue
        if not hasattr(_core, name):
            missing.append(name)
            continue
        label = f"_core.{name}"
        getter = lambda name=name: getattr(_core, name)  # noqa: E731
        if name == "_install_bridge":
            parts = (
                dict(_compat.bridge_parts(), as_decorator=_wrappers.as_decorator)
                if _compat is not None
                else {}
            )
            add(Target(label, getter, kind="core", benign=parts), destructive=True)
        elif name in ("shutdown_all", "after_fork_child", "set_redactor"):
            add(Target(label, getter, kind="core", after=_reset_globals), destructive=True)
        elif name == "enrich":
            add(
                Target(
                    label,
                    getter,
                    kind="core",
                    extra=(
                        (
                            "items=[(ns,H)]",
                            [Fresh(recording_span), [("honeyhive_metadata", H)]],
                            {},
                        ),
                        ("raw={k:H}", [Fresh(recording_span), [], {"k": H}], {}),
                        (
                            "items=[(error,H)]",
                            [Fresh(recording_span), [("honeyhive_error", H)]],
                            {},
                        ),
                    ),
                )
            )
        elif name in ("extract", "inject"):
            add(
                Target(
                    label,
                    getter,
                    kind="core",
                    extra=(
                        (
                            "carrier={traceparent:H,baggage:H}",
                            [{"traceparent": H, "baggage": H, "tracestate": H}],
                            {},
                        ),
                        ("carrier=[(traceparent,H)]", [[("traceparent", H), ("baggage", H)]], {}),
                    ),
                )
            )
        else:
            add(Target(label, getter, kind="core"))

    def core_instance(cls_name: str) -> Optional[Callable[[], Any]]:
        makers: dict[str, Callable[[], Any]] = {
            "Span": recording_span,
            "Tracer": lambda: S.main._core.tracer("enum"),
            "CurrentSpan": lambda: S.main._core.tracer("enum").start_as_current_span("x"),
            "TracerCore": lambda: S.main._core,
            "TraceSpec": lambda: _core.TraceSpec("enum-spec"),
            "CallScope": lambda: _core.TraceSpec("enum-scope").start(()),
            "with_distributed_trace_context": lambda: _core.with_distributed_trace_context({}),
            "ServerTracing": lambda: _core.ServerTracing(None),
            "ServerRequest": lambda: _core.ServerTracing(None).begin_asgi(http_scope()),
            "_Ready": lambda: _core.with_distributed_trace_context({}).__aenter__(),
        }
        return makers.get(cls_name)

    all_classes = dict(classes)
    # The engine's classes that the stub does not list (yet).
    for name in dir(_core):
        obj = getattr(_core, name)
        if inspect.isclass(obj) and name not in all_classes and name not in STUB_ALIASES.values():
            all_classes[name] = []
    for stub_name, stub_methods in all_classes.items():
        real = stub_name if hasattr(_core, stub_name) else STUB_ALIASES.get(stub_name)
        if real is None or not hasattr(_core, real):
            missing.append(stub_name)
            continue
        if real != stub_name:
            missing.append(f"{stub_name} (now _core.{real})")
        cls = getattr(_core, real)
        ctor_label = f"_core.{real}"
        add(
            Target(
                ctor_label,
                lambda cls=cls: cls,
                kind="core",
                cleanup=_shutdown_extra_tracers if real == "TracerCore" else None,
            )
        )
        if real == "TracerCore":
            add(
                Target(
                    "_core.TracerCore.create",
                    lambda: _core.TracerCore.create,
                    kind="config",
                    benign={"kwargs": Fresh(lambda: {"test_mode": True}), "env": Fresh(dict)},
                    cleanup=_shutdown_extra_tracers,
                    extra=(
                        ("kwargs={metadata:H}", [{"metadata": H, "test_mode": True}, {}], {}),
                        ("kwargs=H(mapping)", [H, {}], {}),
                    ),
                )
            )
        make = core_instance(real)
        if make is None:
            continue
        try:
            sample_obj = make()
        except Exception as e:  # pragma: no cover - reported
            missing.append(f"{real}: could not make an instance ({e!r})")
            continue
        names = set(public_methods(sample_obj)) | set(stub_methods)
        for m in sorted(names):
            if m in ("__init__", "create"):
                continue
            if not hasattr(sample_obj, m):
                missing.append(f"{stub_name}.{m}")
                continue
            if real == "TracerCore" and m == "shutdown":
                getter = lambda: new_tracer()._core.shutdown  # noqa: E731
            else:
                getter = lambda m=m, make=make: getattr(make(), m)  # noqa: E731
            extra = ()
            if real == "TraceSpec" and m in ("enter", "start"):
                extra = (("args=(H,) kwargs={k:H}", [(H,), {"k": H}], {}),)
            add(Target(f"_core.{real}.{m}", getter, kind="core", extra=extra))
    return safe, late, missing


# ---------------------------------------------------------------------------------
# Calling


def _safe_text(e: BaseException) -> str:
    try:
        return str(e)[:300]
    except BaseException:
        return "<unprintable>"


async def _await(x: Any) -> Any:
    return await x


def _settle(r: Any) -> Any:
    """Run what a call returned to completion (coroutines, awaitables)."""
    if inspect.iscoroutine(r) or inspect.isawaitable(r):
        return asyncio.run(_await(r))
    return r


def _deep(t: Target, r: Any, hostile_make: Callable[[], Any]) -> Optional[str]:
    """Use a call's result the way an app would; returns a note when the traced
    function's return value was changed."""
    if t.deep in ("decorate", "decorate_and_with") and callable(r) and not inspect.isclass(r):
        wrapped = r(sample)
        value = hostile_make()
        got = wrapped(value)
        if got is not value:
            return "decorated function returned a different object"
    if t.deep == "decorate_class" and callable(r):

        class K:
            def m(self, x: Any) -> Any:
                return x

        K2 = r(K)
        value = hostile_make()
        if K2().m(value) is not value:
            return "decorated method returned a different object"
    if (
        t.deep in ("with", "decorate_and_with")
        and hasattr(r, "__enter__")
        and hasattr(r, "__exit__")
    ):
        with r:
            pass
        if hasattr(r, "__aenter__"):

            async def use() -> None:
                async with r:
                    pass

            asyncio.run(use())
    if t.deep == "end" and hasattr(r, "end"):
        r.end()
    if t.deep == "wsgi_body" and r is not None and hasattr(r, "close"):
        try:
            list(r)
        finally:
            r.close()
    return None


RESULTS: list[dict[str, Any]] = []


def call(
    t: Target,
    position: str,
    hostile_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    hostile_make: Callable[[], Any],
) -> None:
    before = internal_errors()
    record: dict[str, Any] = {
        "label": t.label,
        "kind": t.kind,
        "position": position,
        "hostile": hostile_id,
        "outcome": "ok",
        "phase": "call",
    }
    ctx = contextvars.copy_context()
    phase = ["get"]

    def run() -> None:
        fn = t.get()
        phase[0] = "call"
        r = fn(*args, **kwargs)
        r = _settle(r)
        phase[0] = "use"
        try:
            note = _deep(t, r, hostile_make)
            if note:
                record["outcome"] = "changed"
                record["message"] = note
        finally:
            if t.cleanup is not None:
                t.cleanup(r)

    try:
        ctx.run(run)
    except Exception as e:
        record["outcome"] = "exception"
        record["type"] = f"{type(e).__module__}.{type(e).__qualname__}"
        record["message"] = _safe_text(e)
    except BaseException as e:
        record["outcome"] = "base_exception"
        record["type"] = f"{type(e).__module__}.{type(e).__qualname__}"
        record["message"] = _safe_text(e)
    finally:
        record["phase"] = phase[0]
        if t.after is not None:
            try:
                t.after()
            except BaseException as e:
                record["after_error"] = f"{type(e).__qualname__}: {_safe_text(e)}"
    record["internal_errors"] = internal_errors() - before
    RESULTS.append(record)


def plans_for(t: Target) -> list[tuple[str, list[Any], dict[str, Any], bool]]:
    """(position label, args template, kwargs template, uses a hostile value)."""
    try:
        fn = t.get()
    except Exception:
        return []
    benign = dict(BENIGN, **t.benign)
    try:
        sig: Optional[inspect.Signature] = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    out: list[tuple[str, list[Any], dict[str, Any], bool]] = []
    if sig is None:
        out.append(("0 args", [], {}, False))
        for n in (1, 2, 3):
            out.append((f"{n} args", [H] * n, {}, True))
    else:
        P = inspect.Parameter
        params = list(sig.parameters.values())
        pos = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        kwonly = [p for p in params if p.kind == P.KEYWORD_ONLY]
        var_pos = any(p.kind == P.VAR_POSITIONAL for p in params)
        var_kw = any(p.kind == P.VAR_KEYWORD for p in params)

        def value(p: inspect.Parameter) -> Any:
            if p.name in t.benign:
                return t.benign[p.name]
            if p.default is not P.empty:
                return p.default
            return benign.get(p.name, "x")

        req_pos = [value(p) for p in pos if p.default is P.empty]
        req_kw = {p.name: value(p) for p in kwonly if p.default is P.empty}
        fixed = {k: v for k, v in t.fixed_kw.items()}
        for i, p in enumerate(pos):
            args = [value(q) for q in pos[:i]] + [H]
            args += [value(q) for q in pos[i + 1 :] if q.default is P.empty]
            out.append((p.name, args, dict(req_kw, **fixed), True))
        for p in kwonly:
            out.append((p.name, list(req_pos), dict(req_kw, **fixed, **{p.name: H}), True))
        if var_pos:
            out.append(("*args", [*req_pos, H, H], dict(req_kw, **fixed), True))
        if var_kw:
            for k in t.kw_names:
                kw = dict(req_kw, **fixed)
                kw[k] = H
                out.append((f"**{k}", list(req_pos), kw, True))
        if len(pos) + len(kwonly) > 1:
            out.append(("all", [H] * len(pos), {p.name: H for p in kwonly}, True))
        if not req_pos and not req_kw:
            out.append(("no args", [], dict(fixed), False))
        if not var_pos:
            # One positional argument too many: the argument-count check.
            out.append(("too many", [value(p) for p in pos] + [H], {}, True))
    for label, a, k in t.extra:
        out.append((label, list(a), dict(k), True))
    return out


def run_target(t: Target) -> None:
    # Which target was running shows at the end of stderr if the process dies.
    sys.stderr.write(f"target {t.label}\n")
    sys.stderr.flush()
    for position, a_tmpl, k_tmpl, uses in plans_for(t):
        ids = list(HOSTILE) if uses else ["-"]
        for hid in ids:
            make = HOSTILE.get(hid, lambda: None)
            value = make()
            args = fill(a_tmpl, value)
            kwargs = fill(k_tmpl, value)
            call(t, position, hid, args, kwargs, make)


# ---------------------------------------------------------------------------------
# Decorated functions of every kind, called with hostile arguments


def traced_function_targets() -> list[Target]:
    out: list[Target] = []

    def make_sync() -> Callable[..., Any]:
        @honeytrace.trace
        def f(a: Any, b: Any = None, *rest: Any, **kw: Any) -> Any:
            return a

        return f

    def make_sync_meta() -> Callable[..., Any]:
        d = _mutating_dict()

        @honeytrace.trace(metadata=d, config={"c": _mutating_list()})
        def f(a: Any, b: Any = None) -> Any:
            return a

        return f

    def make_async() -> Callable[..., Any]:
        @honeytrace.trace
        async def f(a: Any, b: Any = None) -> Any:
            return a

        return f

    def make_gen() -> Callable[..., Any]:
        @honeytrace.trace
        def f(a: Any, b: Any = None) -> Any:
            yield a
            yield a

        return f

    def make_agen() -> Callable[..., Any]:
        @honeytrace.trace
        async def f(a: Any, b: Any = None) -> Any:
            yield a

        return f

    def make_otel() -> Callable[..., Any]:
        @S.main.tracer.start_as_current_span("otel-deco")
        def f(a: Any, b: Any = None) -> Any:
            return a

        return f

    def make_method() -> Callable[..., Any]:
        @honeytrace.trace_class
        class C:
            def m(self, a: Any, b: Any = None) -> Any:
                return a

        return C().m

    kinds = {
        "sync": make_sync,
        "sync(metadata=mutating)": make_sync_meta,
        "async": make_async,
        "generator": make_gen,
        "async generator": make_agen,
        "start_as_current_span decorator": make_otel,
        "trace_class method": make_method,
    }
    for kind, make in kinds.items():
        out.append(Target(f"@trace {kind}", make, kind="traced"))
    return out


def run_traced(t: Target) -> None:
    sys.stderr.write(f"target {t.label}\n")
    sys.stderr.flush()
    plans = (
        ("a", lambda h: ((h,), {})),
        ("b", lambda h: ((1,), {"b": h})),
        ("a,b", lambda h: ((h, h), {})),
        ("a,*rest,**kw", lambda h: ((h, h, h), {"x": h})),
    )
    for position, build in plans:
        for hid, make in HOSTILE.items():
            before = internal_errors()
            record: dict[str, Any] = {
                "label": t.label,
                "kind": t.kind,
                "position": position,
                "hostile": hid,
                "outcome": "ok",
                "phase": "call",
            }
            value = make()
            args, kwargs = build(value)

            async def consume_agen(g: Any) -> list[Any]:
                return [x async for x in g]

            def run(args: Any = args, kwargs: Any = kwargs, record: Any = record) -> None:
                f = t.get()
                r = f(*args, **kwargs)
                if inspect.iscoroutine(r):
                    r = asyncio.run(_await(r))
                    items = [r]
                elif inspect.isgenerator(r):
                    items = list(r)
                elif inspect.isasyncgen(r):
                    items = asyncio.run(consume_agen(r))
                else:
                    items = [r]
                if not items or any(x is not args[0] for x in items):
                    record["outcome"] = "changed"
                    record["message"] = "the traced function's result was changed"

            try:
                contextvars.copy_context().run(run)
            except TypeError as e:
                # Functions without *rest/**kw reject the extra arguments: Python's own
                # arity error, not honeytrace's.
                msg = _safe_text(e)
                if re.search(r"positional argument|unexpected keyword", msg):
                    record["outcome"] = "arity"
                else:
                    record["outcome"] = "exception"
                    record["type"] = "builtins.TypeError"
                record["message"] = msg
            except Exception as e:
                record["outcome"] = "exception"
                record["type"] = f"{type(e).__module__}.{type(e).__qualname__}"
                record["message"] = _safe_text(e)
            except BaseException as e:
                record["outcome"] = "base_exception"
                record["type"] = f"{type(e).__module__}.{type(e).__qualname__}"
                record["message"] = _safe_text(e)
            record["internal_errors"] = internal_errors() - before
            RESULTS.append(record)


def read_properties(objs: dict[str, Callable[[], Any]]) -> None:
    for prefix, make in objs.items():
        obj = make()
        for name in public_properties(obj):
            t = Target(
                f"{prefix}.{name} (property)", lambda obj=obj, name=name: lambda: getattr(obj, name)
            )
            call(t, "get", "-", [], {}, lambda: None)


# ---------------------------------------------------------------------------------


def classify(r: dict[str, Any]) -> str:
    """For exceptions: 'allowed' (init configuration, decorator options at decoration
    time, pyo3/Python argument-count or keyword errors) or 'candidate'."""
    if r["outcome"] != "exception":
        return r["outcome"]
    typ = r.get("type", "")
    msg = r.get("message", "")
    if r["kind"] == "config" and typ in ("builtins.ValueError", "builtins.TypeError"):
        return "allowed:config"
    if (
        r["kind"] == "decorator"
        and typ == "builtins.TypeError"
        and (r.get("phase") == "call" or re.match(r"(trace|trace_class)\(\)|@trace needs", msg))
    ):
        return "allowed:decorator-options"
    if r["label"].startswith("_core._Ready."):
        return "protocol"  # an awaitable's send/throw raise StopIteration or the thrown error
    if typ == "builtins.TypeError" and re.match(r"cannot create '[\w.]+' instances", msg):
        return "allowed:no-constructor"
    if (
        typ == "builtins.TypeError"
        and r.get("phase") == "call"
        and re.search(
            r"positional argument|required positional|missing \d+ required|unexpected keyword|"
            r"got multiple values|takes no arguments|No constructor defined|takes \d+ positional",
            msg,
        )
    ):
        return "allowed:arity"
    if typ == "builtins.TypeError" and re.search(r"^argument '\w+': ", msg):
        return "pyo3-argument-type"
    return "candidate"


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a crash prints the Python stack of the call that caused it
    warnings.simplefilter("ignore")
    # A configured root logger: honeytrace's fallback stderr handler steps aside, so
    # this process's stderr shows only real crashes.
    logging.basicConfig(stream=io.StringIO(), level=logging.DEBUG)
    out_path = next((a for a in argv if not a.startswith("--")), None)
    ensure_main()
    safe, late, missing = build_targets()
    for t in safe:
        run_target(t)
        S.main.clear_finished_spans()
        gc.collect()
    for t in traced_function_targets():
        run_traced(t)
        gc.collect()
    read_properties(
        {
            "HoneyHiveTracer": lambda: S.main,
            "Span": recording_span,
            "tracer.tracer": lambda: S.main.tracer,
            "TracerCore": lambda: S.main._core,
            "TraceSpec": lambda: _core.TraceSpec("p"),
            "CallScope": lambda: _core.TraceSpec("p").start(()),
        }
    )
    for t in late:
        run_target(t)
        gc.collect()
    ensure_main()
    honeytrace.flush(timeout=2)
    gc.collect()
    for r in RESULTS:
        r["class"] = classify(r)
    report = {
        "results": RESULTS,
        "targets": sorted({r["label"] for r in RESULTS}),
        "stub_missing": missing,
        "internal_errors_total": internal_errors(),
        "python": sys.version,
        "pid": os.getpid(),
    }
    text = json.dumps(report)
    if out_path:
        Path(out_path).write_text(text)
    else:
        sys.stdout.write(text)
    if "--summary" in argv:
        sys.stderr.write(summary(report))
    return 0


def summary(report: dict[str, Any]) -> str:
    """Exceptions grouped by call and type, for humans."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in report["results"]:
        if r["outcome"] in ("ok", "arity"):
            continue
        key = (r["class"], r["label"], r.get("type", r["outcome"]))
        groups.setdefault(key, []).append(f"{r['position']}={r['hostile']}")
    lines = [f"{len(report['results'])} calls, {len(report['targets'])} targets"]
    lines.append(f"stub names not in the engine: {report['stub_missing']}")
    for (cls, label, typ), where in sorted(groups.items()):
        example = next(
            r.get("message", "")
            for r in report["results"]
            if r["label"] == label and r.get("type", r["outcome"]) == typ and r["class"] == cls
        )
        lines.append(
            f"[{cls}] {label}: {typ} x{len(where)} ({', '.join(where[:6])}"
            f"{', ...' if len(where) > 6 else ''}) e.g. {example!r}"
        )
    panics = [r for r in report["results"] if r["internal_errors"]]
    lines.append(f"calls with contained panics: {len(panics)}")
    for r in panics[:50]:
        lines.append(f"  PANIC {r['label']} {r['position']}={r['hostile']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
