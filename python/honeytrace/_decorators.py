"""``@trace``, ``atrace`` and ``trace_class``.

Every kind of callable gets a Python function of the same kind (``_wrappers``): a
plain function for a sync callable (``inspect.isfunction`` holds, ``functools.wraps``
metadata and the signature are kept, it pickles by reference and cloudpickles by
value), and coroutine functions, generators and async generators of their own kind, so
``inspect.iscoroutinefunction`` / ``isgeneratorfunction`` / ``isasyncgenfunction`` hold.
Sync and coroutine wrappers drive the span ``spec.enter`` returns (``_done`` /
``_error``), generator wrappers a ``_core.CallScope``; each attaches and restores the
span's context in the same frame (no "Failed to detach context").
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar, Union, overload

from . import _core, _log, _registry, _wrappers

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_OPTIONS = frozenset(
    {
        "event_type",
        "event_name",
        "event_id",
        "config",
        "metadata",
        "metrics",
        "feedback",
        "inputs",
        "outputs",
        "user_properties",
        "tracer",
        "session_id",
        "project",
        "source",
        "capture_inputs",
        "capture_outputs",
        "ignore_inputs",
    }
)
_DICT_OPTIONS = ("config", "metadata", "metrics", "feedback", "user_properties")
_STR_OPTIONS = ("event_type", "event_name", "event_id", "session_id", "project", "source")
_SKIP_FIRST = ("self", "cls")


def _check_options(where: str, opts: dict[str, Any]) -> None:
    unknown = sorted(set(opts) - _OPTIONS)
    if unknown:
        raise TypeError(
            f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(_OPTIONS))}"
        )
    for k in _STR_OPTIONS:
        if opts.get(k) is not None and not isinstance(opts[k], str):
            raise TypeError(f"{where}(): {k} must be a string, got {type(opts[k]).__name__}")
    for k in _DICT_OPTIONS:
        if opts.get(k) is not None and not isinstance(opts[k], dict):
            raise TypeError(f"{where}(): {k} must be a dict, got {type(opts[k]).__name__}")
    ignore = opts.get("ignore_inputs")
    if ignore is not None and (
        isinstance(ignore, str) or not all(isinstance(x, str) for x in ignore)
    ):
        raise TypeError(f"{where}(): ignore_inputs must be a list of parameter names")
    tracer = opts.get("tracer")
    if tracer is not None and not _registry.is_tracer(tracer):
        raise TypeError(f"{where}(): tracer must be a HoneyHiveTracer")


def _callable_name(func: Any) -> str:
    target = func.func if isinstance(func, functools.partial) else func
    name = getattr(target, "__name__", None) or type(target).__name__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{name}" if module else str(name)


def _params(func: Any, ignore: frozenset[str]) -> Optional[list[tuple[str, int, Any, bool]]]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    out = []
    for i, p in enumerate(sig.parameters.values()):
        default = None if p.default is inspect.Parameter.empty else p.default
        skip = (i == 0 and p.name in _SKIP_FIRST) or p.name in ignore
        # A default of None is indistinguishable from "no default" here, and None values
        # are not captured anyway.
        out.append((p.name, int(p.kind), default, skip))
    return out


def _spec(func: Any, opts: dict[str, Any], default_name: Optional[str] = None) -> _core.TraceSpec:
    tracer = opts.get("tracer")
    ignore = frozenset(opts.get("ignore_inputs") or ())
    return _core.TraceSpec(
        opts.get("event_name") or default_name or _callable_name(func),
        tracer=tracer._core if tracer is not None else None,
        event_type=opts.get("event_type"),
        event_name=opts.get("event_name"),
        event_id=opts.get("event_id"),
        session_id=opts.get("session_id"),
        project=opts.get("project"),
        source=opts.get("source"),
        config=opts.get("config"),
        metadata=opts.get("metadata"),
        metrics=opts.get("metrics"),
        feedback=opts.get("feedback"),
        user_properties=opts.get("user_properties"),
        inputs=opts.get("inputs"),
        outputs=opts.get("outputs"),
        capture_inputs=bool(opts.get("capture_inputs", True)),
        capture_outputs=bool(opts.get("capture_outputs", True)),
        params=_params(func, ignore),
        long_lived=True,
    )


def _is_async(func: Any) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - callable objects
    return (
        call is not None
        and not inspect.isfunction(func)
        and not inspect.ismethod(func)
        and inspect.iscoroutinefunction(call)
    )


def _decorate(func: Any, opts: dict[str, Any], default_name: Optional[str] = None) -> Any:
    if isinstance(func, classmethod):
        return classmethod(_decorate(func.__func__, opts, default_name))
    if isinstance(func, staticmethod):
        return staticmethod(_decorate(func.__func__, opts, default_name))
    if not callable(func):
        raise TypeError(f"@trace needs a callable, got {type(func).__name__}")
    spec = _spec(func, opts, default_name)
    _log.drain()  # e.g. the engine's notice that no tracer is live yet
    if inspect.isasyncgenfunction(func):
        wrapper = _wrappers.async_generator(func, spec)
    elif _is_async(func):
        wrapper = _wrappers.coroutine(func, spec)
    elif inspect.isgeneratorfunction(func):
        wrapper = _wrappers.generator(func, spec)
    else:
        wrapper = _wrappers.sync(func, spec)
    try:
        functools.update_wrapper(wrapper, func)
    except (AttributeError, TypeError):  # pragma: no cover - exotic callables
        wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    if isinstance(func, functools.partial) or not hasattr(func, "__name__"):
        wrapper.__name__ = spec.name.rsplit(".", 1)[-1]
        wrapper.__qualname__ = wrapper.__name__
    return wrapper


@overload
def trace(__func: F) -> F: ...
@overload
def trace(
    __event_type: Optional[str] = None, event_name: Optional[str] = None, **kwargs: Any
) -> Callable[[F], F]: ...


def trace(
    __func_or_type: Union[Callable[..., Any], str, None] = None,
    event_name: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """Trace a function: ``@trace``, ``@trace("chain")`` or ``@trace(event_type=...)``.

    Works on sync and async functions, generators and async generators, methods,
    classmethods, staticmethods, ``functools.partial`` objects and callable objects.
    Keywords: ``event_type``, ``event_name``, ``config``, ``metadata``, ``metrics``,
    ``feedback``, ``inputs``, ``outputs``, ``user_properties``, ``tracer``,
    ``session_id``, ``project``, ``source``, ``event_id``, ``capture_inputs``,
    ``capture_outputs``, ``ignore_inputs``. Anything else raises ``TypeError`` here,
    at decoration time.
    """
    if isinstance(__func_or_type, (classmethod, staticmethod)) or (
        callable(__func_or_type) and not isinstance(__func_or_type, str)
    ):
        if event_name is not None or kwargs:
            raise TypeError("use @trace(...) with keywords, or @trace alone")
        return _decorate(__func_or_type, {})
    opts = dict(kwargs)
    if __func_or_type is not None:
        opts["event_type"] = __func_or_type
    if event_name is not None:
        opts["event_name"] = event_name
    _check_options("trace", opts)

    def decorator(func: F) -> F:
        return _decorate(func, opts)  # type: ignore[no-any-return]

    return decorator


#: HoneyHive's async decorator: the same as :func:`trace`, which handles both kinds.
atrace = trace


@overload
def trace_class(__cls: C) -> C: ...
@overload
def trace_class(**kwargs: Any) -> Callable[[C], C]: ...


def trace_class(__cls: Optional[type] = None, **kwargs: Any) -> Any:
    """Trace the public methods a class defines itself (not inherited ones):
    functions, classmethods and staticmethods whose names do not start with ``_``.
    Each span is named ``ClassName.method`` unless ``event_name`` is given."""
    _check_options("trace_class", kwargs)

    def apply(cls: C) -> C:
        for name, member in list(vars(cls).items()):
            if name.startswith("_"):
                continue
            target = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if not inspect.isfunction(target):
                continue  # properties, nested classes, attributes
            setattr(cls, name, _decorate(member, kwargs, f"{cls.__name__}.{name}"))
        return cls

    return apply(__cls) if __cls is not None else apply
