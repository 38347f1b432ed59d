"""gRPC: client and server interceptors for ``grpcio``, sync and ``grpc.aio``.

The client interceptor starts a CLIENT span per call and writes ``traceparent``,
``tracestate`` and ``baggage`` into the call's metadata; the server interceptor
continues them (the tracer's trust policy applies) in a SERVER span, current while the
handler runs, so the caller's session continues on the server. Both record the gRPC
status (``rpc.grpc.status_code``; anything but OK is an ERROR status)::

    channel = grpc.intercept_channel(grpc.insecure_channel(addr), client_interceptor())
    server = grpc.server(pool, interceptors=[server_interceptor()])

    channel = grpc.aio.insecure_channel(addr, interceptors=aio_client_interceptors())
    server = grpc.aio.server(interceptors=[aio_server_interceptor()])

All four call shapes (unary and streaming, either way) are covered. Tracing never
changes what the call returns or raises.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable, Optional

import grpc
from grpc import aio as grpc_aio
from opentelemetry import context as _context
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _core, _registry
from .._registry import TracerLike

logger = logging.getLogger("honeytrace")

_FIELDS = ("traceparent", "tracestate", "baggage")
# grpc.aio: the tasks that read a finished call's status, until they are done.
_pending: set[Any] = set()


def _tracer_of(tracer: Optional[TracerLike]) -> Any:
    return tracer if tracer is not None else _registry.default()


def _attributes(method: str) -> dict[str, Any]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _finish(span: Any, code: Any, details: Any = None) -> None:
    """Record a gRPC status on ``span`` and end it."""
    try:
        if isinstance(code, grpc.StatusCode):
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                message = f"{code.name}: {details}" if details else code.name
                span.set_status(Status(StatusCode.ERROR, message))
    except Exception:
        logger.debug("honeytrace: could not record a gRPC status", exc_info=True)
    finally:
        span.end()


def _fail(span: Any, exc: BaseException, code: Any = None) -> None:
    try:
        span.record_exception(exc)
    finally:
        _finish(span, code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, exc)


# -- client -------------------------------------------------------------------------------------


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _AioCallDetails(
    collections.namedtuple(
        "_AioCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")
    ),
    grpc_aio.ClientCallDetails,
):
    pass


def _method_name(method: Any) -> str:
    return method.decode("utf-8", "replace") if isinstance(method, bytes) else str(method)


def _start_client(tracer: Optional[TracerLike], details: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """A CLIENT span for the call, and the call's metadata with the headers written for
    it (any propagation headers the caller put there replaced)."""
    t = _tracer_of(tracer)
    method = _method_name(details.method)
    span = (
        t.start_span(method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_attributes(method))
        if t is not None
        else _trace.INVALID_SPAN
    )
    carrier: dict[str, str] = {}
    _core.inject(carrier, context=_trace.set_span_in_context(span), tracer=t)
    metadata = [(k, v) for k, v in (details.metadata or ()) if str(k).lower() not in _FIELDS]
    metadata.extend(carrier.items())
    return span, metadata


class _ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, tracer: Optional[TracerLike]) -> None:
        self._tracer = tracer

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        try:
            span, metadata = _start_client(self._tracer, details)
            details = _CallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                getattr(details, "wait_for_ready", None),
                getattr(details, "compression", None),
            )
        except Exception:  # tracing never breaks the call
            logger.debug("honeytrace: could not trace a gRPC call", exc_info=True)
            return continuation(details, request)
        try:
            call = continuation(details, request)
        except BaseException as e:
            _fail(span, e)
            raise

        def done(c: Any) -> None:
            try:
                code, text = c.code(), c.details()
            except Exception:
                code, text = grpc.StatusCode.UNKNOWN, None
            _finish(span, code, text)

        call.add_done_callback(done)
        return call

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._call(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._call(continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._call(continuation, details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._call(continuation, details, requests)


def client_interceptor(tracer: Optional[TracerLike] = None) -> Any:
    """An interceptor for ``grpc.intercept_channel`` (see the module's doc). ``tracer``:
    where CLIENT spans go (default: the default tracer at each call)."""
    return _ClientInterceptor(tracer)


class _AioClient:
    def __init__(self, tracer: Optional[TracerLike]) -> None:
        self._tracer = tracer

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        try:
            span, metadata = _start_client(self._tracer, details)
            details = _AioCallDetails(
                details.method,
                details.timeout,
                grpc_aio.Metadata(*metadata),
                details.credentials,
                details.wait_for_ready,
            )
        except Exception:  # tracing never breaks the call
            logger.debug("honeytrace: could not trace a gRPC call", exc_info=True)
            return await continuation(details, request)
        try:
            call = await continuation(details, request)
        except BaseException as e:
            _fail(span, e)
            raise

        def done(c: Any) -> None:
            # The call is done: its status is there; reading it is a coroutine.
            import asyncio

            async def status() -> None:
                try:
                    code, text = await c.code(), await c.details()
                except BaseException:
                    code, text = grpc.StatusCode.CANCELLED, None
                _finish(span, code, text)

            task = asyncio.ensure_future(status())
            _pending.add(task)  # held until done (the loop keeps only a weak reference)
            task.add_done_callback(_pending.discard)

        call.add_done_callback(done)
        return call


class _AioUnaryUnary(_AioClient, grpc_aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._call(continuation, details, request)


class _AioUnaryStream(_AioClient, grpc_aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._call(continuation, details, request)


class _AioStreamUnary(_AioClient, grpc_aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._call(continuation, details, requests)


class _AioStreamStream(_AioClient, grpc_aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._call(continuation, details, requests)


def aio_client_interceptors(tracer: Optional[TracerLike] = None) -> list[Any]:
    """The interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)``, one per
    call shape (grpc.aio takes each shape's interceptor separately)."""
    return [
        _AioUnaryUnary(tracer),
        _AioUnaryStream(tracer),
        _AioStreamUnary(tracer),
        _AioStreamStream(tracer),
    ]


# -- server -------------------------------------------------------------------------------------


def _start_server(tracer: Optional[TracerLike], details: Any) -> tuple[Any, Any]:
    """The SERVER span for a call and the context to run its handler in."""
    t = _tracer_of(tracer)
    if t is None:
        return None, None
    method = _method_name(details.method)
    ctx = _core.extract(tuple(details.invocation_metadata or ()), tracer=t)
    span = t.start_span(
        method.lstrip("/"), context=ctx, kind=SpanKind.SERVER, attributes=_attributes(method)
    )
    return span, _trace.set_span_in_context(span, ctx)


def _code_of(context: Any) -> Any:
    try:
        code = context.code()
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _details_of(context: Any) -> Any:
    try:
        return context.details()
    except Exception:
        return None


def _wrap_sync(
    behavior: Callable[..., Any], streaming_response: bool, tracer: Any, hcd: Any
) -> Any:
    if streaming_response:

        def traced_stream(request: Any, context: Any) -> Iterator[Any]:
            try:
                span, ctx = _start_server(tracer, hcd)
            except Exception:
                logger.debug("honeytrace: could not trace a gRPC handler", exc_info=True)
                span = None
            if span is None:
                yield from behavior(request, context)
                return
            try:
                token = _context.attach(ctx)
                try:
                    it = iter(behavior(request, context))
                finally:
                    _context.detach(token)
                while True:
                    token = _context.attach(ctx)
                    try:
                        item = next(it)
                    except StopIteration:
                        break
                    finally:
                        _context.detach(token)
                    yield item
            except BaseException as e:
                _fail(span, e, _code_of(context))
                raise
            _finish(span, _code_of(context) or grpc.StatusCode.OK, _details_of(context))

        return traced_stream

    def traced(request: Any, context: Any) -> Any:
        try:
            span, ctx = _start_server(tracer, hcd)
        except Exception:
            logger.debug("honeytrace: could not trace a gRPC handler", exc_info=True)
            span = None
        if span is None:
            return behavior(request, context)
        token = _context.attach(ctx)
        try:
            response = behavior(request, context)
        except BaseException as e:
            _fail(span, e, _code_of(context))
            raise
        finally:
            _context.detach(token)
        _finish(span, _code_of(context) or grpc.StatusCode.OK, _details_of(context))
        return response

    return traced


def _wrap_aio(behavior: Callable[..., Any], streaming_response: bool, tracer: Any, hcd: Any) -> Any:
    if streaming_response:

        async def traced_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                span, ctx = _start_server(tracer, hcd)
            except Exception:
                logger.debug("honeytrace: could not trace a gRPC handler", exc_info=True)
                span = None
            if span is None:
                async for item in behavior(request, context):
                    yield item
                return
            token = _context.attach(ctx)
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as e:
                _fail(span, e, _code_of(context))
                raise
            finally:
                _context.detach(token)
            _finish(span, _code_of(context) or grpc.StatusCode.OK, _details_of(context))

        return traced_stream

    async def traced(request: Any, context: Any) -> Any:
        try:
            span, ctx = _start_server(tracer, hcd)
        except Exception:
            logger.debug("honeytrace: could not trace a gRPC handler", exc_info=True)
            span = None
        if span is None:
            return await behavior(request, context)
        token = _context.attach(ctx)
        try:
            response = await behavior(request, context)
        except BaseException as e:
            _fail(span, e, _code_of(context))
            raise
        finally:
            _context.detach(token)
        _finish(span, _code_of(context) or grpc.StatusCode.OK, _details_of(context))
        return response

    return traced


_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def _traced_handler(handler: Any, wrap: Callable[..., Any], tracer: Any, hcd: Any) -> Any:
    if handler is None:
        return None
    for field, make, streaming_response in _SHAPES:
        behavior = getattr(handler, field, None)
        if behavior is not None:
            return make(
                wrap(behavior, streaming_response, tracer, hcd),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class _ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, tracer: Optional[TracerLike]) -> None:
        self._tracer = tracer

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        try:
            return _traced_handler(handler, _wrap_sync, self._tracer, handler_call_details)
        except Exception:
            logger.debug("honeytrace: could not wrap a gRPC handler", exc_info=True)
            return handler


class _AioServerInterceptor(grpc_aio.ServerInterceptor):
    def __init__(self, tracer: Optional[TracerLike]) -> None:
        self._tracer = tracer

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        try:
            return _traced_handler(handler, _wrap_aio, self._tracer, handler_call_details)
        except Exception:
            logger.debug("honeytrace: could not wrap a gRPC handler", exc_info=True)
            return handler


def server_interceptor(tracer: Optional[TracerLike] = None) -> Any:
    """An interceptor for ``grpc.server(..., interceptors=[...])`` (see the module's doc).
    ``tracer``: where SERVER spans go and whose trust policy applies (default: the
    default tracer at each call)."""
    return _ServerInterceptor(tracer)


def aio_server_interceptor(tracer: Optional[TracerLike] = None) -> Any:
    """The same for ``grpc.aio.server(interceptors=[...])``."""
    return _AioServerInterceptor(tracer)
