"""The Python half of the boundary: the wrappers around the user's code.

The user's function, generator and application always run under these Python frames,
never under an engine frame: the engine is called before and after (``spec.enter``,
``scope._done``), so CPython's teardown of a daemon thread at exit never unwinds Rust
(see docs/internals.md). Each wrapper attaches and restores the span's context in the
same frame.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import keyword
import linecache
import types
from collections.abc import AsyncGenerator, Generator
from typing import Any, Callable, Optional

from . import _compat, _core
from ._log import logger

attach = _compat.attach


def restore(token: Any) -> None:
    """Restore the context from before :func:`attach`; never raises."""
    try:
        _compat.detach(token)
    except Exception:  # pragma: no cover - our wrappers never cross contexts
        logger.warning("could not restore the previous context", exc_info=True)


def sync(func: Callable[..., Any], spec: _core.TraceSpec) -> Callable[..., Any]:
    exact = _exact(func, spec, is_async=False)
    if exact is not None:
        return exact
    enter = spec.enter

    def traced(*args: Any, **kwargs: Any) -> Any:
        scope = enter(args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            scope._error(exc)
            raise
        return scope._done(result)

    return traced


def coroutine(func: Callable[..., Any], spec: _core.TraceSpec) -> Callable[..., Any]:
    exact = _exact(func, spec, is_async=True)
    if exact is not None:
        return exact
    enter = spec.enter

    async def traced(*args: Any, **kwargs: Any) -> Any:
        # enter() attaches the span's context, done()/error() restore it: both run in
        # this coroutine, so in the same context.
        scope = enter(args, kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            scope._error(exc)
            raise
        return scope._done(result)

    return traced


# -- Wrappers with the function's own parameters -------------------------------------
#
# ``def traced(*args, **kwargs)`` costs a dict and a tuple per call, and a second
# argument parse when it calls the function. For a plain function whose parameters are
# positional and/or keyword-only (no ``*args``/``**kwargs``), the wrapper is generated
# with the same parameters and the same default objects, and passes every argument on
# by position (keyword-only ones by keyword): the function receives exactly what it
# would have, ~85 ns sooner (docs/internals.md, "Wrappers"). The source is compiled
# once per parameter layout and kept in ``linecache`` so tracebacks show it.

_EXACT_MAX_PARAMS = 16
_EXACT_NAMES = frozenset({"BaseException"})
_exact_makers: dict[tuple[Any, ...], Callable[..., Callable[..., Any]]] = {}
_EXACT_MAKERS_MAX = 1024
_wrapper_numbers = itertools.count()  # unique linecache names, also past the cache


def _exact(func: Any, spec: _core.TraceSpec, *, is_async: bool) -> Optional[Callable[..., Any]]:
    """A wrapper with ``func``'s own parameters, or None when its signature is not one
    of the plain layouts (then the ``*args, **kwargs`` wrapper is used)."""
    if type(func) is not types.FunctionType:
        return None
    code = func.__code__
    if code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return None
    n_pos = code.co_argcount
    n_kw = code.co_kwonlyargcount
    if n_pos + n_kw > _EXACT_MAX_PARAMS:
        return None
    names = code.co_varnames[: n_pos + n_kw]
    if any(
        not n.isidentifier() or keyword.iskeyword(n) or n.startswith("_ht_") or n in _EXACT_NAMES
        for n in names
    ):
        return None
    defaults = func.__defaults__ or ()
    kwdefaults = func.__kwdefaults__ or {}
    key = (
        names,
        code.co_posonlyargcount,
        n_pos,
        len(defaults),
        tuple(n for n in names[n_pos:] if n in kwdefaults),
        is_async,
    )
    maker = _exact_makers.get(key)
    if maker is None:
        maker = _compile_exact(*key)
        if len(_exact_makers) < _EXACT_MAKERS_MAX:
            _exact_makers[key] = maker
    wrapper = maker(spec.enter, func, defaults, kwdefaults)
    # Python 3.9 names the function in argument errors by its code's name.
    wrapper.__code__ = wrapper.__code__.replace(co_name=code.co_name)
    return wrapper


def _compile_exact(
    names: tuple[str, ...],
    n_posonly: int,
    n_pos: int,
    n_defaults: int,
    kw_with_default: tuple[str, ...],
    is_async: bool,
) -> Callable[..., Callable[..., Any]]:
    pos, kw = names[:n_pos], names[n_pos:]
    params: list[str] = []
    first_default = n_pos - n_defaults
    for i, n in enumerate(pos):
        params.append(f"{n}=_ht_d[{i - first_default}]" if i >= first_default else n)
        if n_posonly and i == n_posonly - 1:
            params.append("/")
    if kw:
        params.append("*")
        params.extend(f"{n}=_ht_k[{n!r}]" if n in kw_with_default else n for n in kw)
    args = "".join(f"{n}, " for n in pos)
    kwargs = "{" + ", ".join(f"{n!r}: {n}" for n in kw) + "}" if kw else "None"
    call = ", ".join([*pos, *(f"{n}={n}" for n in kw)])
    a, aw = ("async ", "await ") if is_async else ("", "")
    source = (
        "def _ht_make(_ht_enter, _ht_func, _ht_d, _ht_k):\n"
        f"    {a}def traced({', '.join(params)}):\n"
        f"        _ht_scope = _ht_enter(({args}), {kwargs})\n"
        "        try:\n"
        f"            _ht_result = {aw}_ht_func({call})\n"
        "        except BaseException as _ht_exc:\n"
        "            _ht_scope._error(_ht_exc)\n"
        "            raise\n"
        "        return _ht_scope._done(_ht_result)\n"
        "    return traced\n"
    )
    filename = f"<honeytrace wrapper {next(_wrapper_numbers)}>"
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # parameter names checked above
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return namespace["_ht_make"]  # type: ignore[no-any-return]


def _create_in(scope: Any, func: Any, args: Any, kwargs: Any) -> Any:
    """Call a generator function with the span's context current; a failure to create
    the generator fails the span."""
    token = attach(scope.context)
    try:
        return func(*args, **kwargs)
    except BaseException as exc:
        scope.fail(exc)
        raise
    finally:
        restore(token)


def generator(func: Callable[..., Any], spec: _core.TraceSpec) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        scope = spec.start(args, kwargs)
        if scope is None:
            return (yield from func(*args, **kwargs))
        ctx = scope.context
        gen = _create_in(scope, func, args, kwargs)
        send: Any = None
        throw: Optional[BaseException] = None
        while True:
            token = attach(ctx)
            try:
                item = gen.send(send) if throw is None else gen.throw(throw)
            except StopIteration as stop:
                restore(token)
                scope.finish_stream(stop.value)
                return stop.value
            except BaseException as exc:
                restore(token)
                scope.fail(exc)
                raise
            restore(token)
            scope.add_item(item)
            throw = None
            try:
                send = yield item
            except GeneratorExit as exc:
                # The consumer stopped early (break, close(), garbage collection).
                token = attach(ctx)
                try:
                    gen.close()
                finally:
                    restore(token)
                scope.fail(exc)
                raise
            except BaseException as exc:  # thrown in by the consumer: pass it on
                throw = exc
                send = None

    return traced


def async_generator(func: Callable[..., Any], spec: _core.TraceSpec) -> Callable[..., Any]:
    async def traced(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        scope = spec.start(args, kwargs)
        if scope is None:
            async for item in func(*args, **kwargs):
                yield item
            return
        ctx = scope.context
        agen = _create_in(scope, func, args, kwargs)
        send: Any = None
        throw: Optional[BaseException] = None
        while True:
            token = attach(ctx)
            try:
                if throw is None:
                    item = await agen.asend(send)
                else:
                    item = await agen.athrow(throw)
            except StopAsyncIteration:
                restore(token)
                scope.finish_stream(None)
                return
            except BaseException as exc:
                restore(token)
                scope.fail(exc)
                raise
            restore(token)
            scope.add_item(item)
            throw = None
            try:
                send = yield item
            except GeneratorExit as exc:
                token = attach(ctx)
                try:
                    await agen.aclose()
                finally:
                    restore(token)
                scope.fail(exc)
                raise
            except BaseException as exc:
                throw = exc
                send = None

    return traced


def as_decorator(cm: Any, func: Callable[..., Any]) -> Callable[..., Any]:
    """``@tracer.start_as_current_span("name")``: a span per call; for a coroutine
    function, around the whole awaited call (as OpenTelemetry does)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with cm._recreate_cm():
                return await func(*args, **kwargs)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with cm._recreate_cm():
            return func(*args, **kwargs)

    return wrapper
