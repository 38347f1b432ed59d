"""The apps of scenario 7: the same handler under each variant (BENCH_VARIANT), every
traced variant exporting to the local receiver (BENCH_SINK).

- ``untraced``: no tracing at all.
- ``honeytrace``: the honeytrace middleware and a ``@trace``'d function (FastAPI
  created with ``telemetry={"tracing": False}``, so its built-in telemetry stays off).
- ``honeytrace+fastapi``: FastAPI's built-in OpenTelemetry telemetry on (its default
  when a provider is set), recorded by honeytrace; the middleware defers to FastAPI's
  server span; the same ``@trace``'d function.
- ``otel``: the OpenTelemetry SDK (BatchSpanProcessor, OTLP/HTTP exporter) with the
  contrib middleware (Flask: FlaskInstrumentor; FastAPI: the ASGI middleware, which
  turns FastAPI's built-in telemetry off) and a span around the function.
- ``otel+fastapi``: the SDK as provider with FastAPI's built-in telemetry.
"""

from __future__ import annotations

import os
from typing import Any

VARIANT = os.environ.get("BENCH_VARIANT", "untraced")
SINK = os.environ.get("BENCH_SINK", "")


def work(query: str) -> dict[str, Any]:
    return {"answer": query.upper(), "tokens": len(query)}


tracer: Any = None
if VARIANT.startswith("honeytrace"):
    from honeytrace import HoneyHiveTracer, trace

    tracer = HoneyHiveTracer.init(project="bench", otlp_endpoint=SINK, service_name="bench-web")
    work = trace(event_type="chain")(work)
elif VARIANT.startswith("otel"):
    from opentelemetry import trace as otel_trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{SINK}/v1/traces")))
    otel_trace.set_tracer_provider(provider)
    work = otel_trace.get_tracer("bench").start_as_current_span("work")(work)

# -- Flask ---------------------------------------------------------------------------------
from flask import Flask  # noqa: E402

flask_app = Flask(__name__)
if VARIANT == "honeytrace":
    from honeytrace.integrations import instrument_flask

    instrument_flask(flask_app, tracer)
elif VARIANT == "otel":
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(flask_app)


@flask_app.get("/agent")
def flask_agent() -> dict[str, Any]:
    return work("hello agents")


# -- FastAPI -------------------------------------------------------------------------------
from fastapi import FastAPI  # noqa: E402

_native = VARIANT.endswith("+fastapi") or VARIANT == "untraced"
try:
    fastapi_app = FastAPI() if _native else FastAPI(telemetry={"tracing": False})
except TypeError:  # a FastAPI without built-in telemetry
    fastapi_app = FastAPI()
if VARIANT.startswith("honeytrace"):
    from honeytrace.integrations import instrument_fastapi

    instrument_fastapi(fastapi_app, tracer)
elif VARIANT == "otel":
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    fastapi_app.add_middleware(OpenTelemetryMiddleware)


@fastapi_app.get("/agent")
async def fastapi_agent() -> dict[str, Any]:
    return work("hello agents")
