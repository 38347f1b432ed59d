"""A FastAPI service traced by the ASGI middleware, with a streamed answer whose span
stays open until the last chunk.

    pip install fastapi uvicorn && uvicorn examples.fastapi_app:app --port 8001
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from honeytrace import HoneyHiveTracer, trace
from honeytrace.integrations import instrument_fastapi

tracer = HoneyHiveTracer.init(project="agents", service_name="fastapi-agent")
app = FastAPI()
instrument_fastapi(app, tracer)


@trace(event_type="model")
async def stream_answer(query: str) -> AsyncIterator[str]:
    for word in query.split():
        yield word.upper() + " "


@app.get("/agent")
async def agent(query: str) -> StreamingResponse:
    return StreamingResponse(stream_answer(query), media_type="text/plain")
