"""The apps of scenario 7: the same handler with and without honeytrace
(BENCH_TRACED=1: the middleware plus a @trace'd function, exporting to BENCH_SINK)."""

from __future__ import annotations

import os
from typing import Any

TRACED = os.environ.get("BENCH_TRACED") == "1"


def work(query: str) -> dict[str, Any]:
    return {"answer": query.upper(), "tokens": len(query)}


tracer: Any = None
if TRACED:
    from honeytrace import HoneyHiveTracer, trace

    tracer = HoneyHiveTracer.init(
        project="bench", otlp_endpoint=os.environ["BENCH_SINK"], service_name="bench-web"
    )
    work = trace(event_type="chain")(work)

# -- Flask ---------------------------------------------------------------------------------
from flask import Flask  # noqa: E402

flask_app = Flask(__name__)
if TRACED:
    from honeytrace.integrations import instrument_flask

    instrument_flask(flask_app, tracer)


@flask_app.get("/agent")
def flask_agent() -> dict[str, Any]:
    return work("hello agents")


# -- FastAPI -------------------------------------------------------------------------------
from fastapi import FastAPI  # noqa: E402

fastapi_app = FastAPI()
if TRACED:
    from honeytrace.integrations import instrument_fastapi

    instrument_fastapi(fastapi_app, tracer)


@fastapi_app.get("/agent")
async def fastapi_agent() -> dict[str, Any]:
    return work("hello agents")
