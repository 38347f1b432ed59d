"""The Python half of the boundary: the wrappers around the user's code.

The user's function, generator and application always run under these Python frames,
never under an engine frame: the engine is called before and after (``spec.enter``,
``scope.done``), so CPython's teardown of a daemon thread at exit never unwinds Rust
(see docs/internals.md). Each wrapper attaches and restores the span's context in the
same frame.
"""

from __future__ import annotations

import functools
import inspect
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
