"""A Flask service traced by the middleware: every request continues the caller's
trace and session; handlers just use @trace.

    pip install flask && python examples/flask_app.py
"""

from __future__ import annotations

from flask import Flask, request

from honeytrace import HoneyHiveTracer, trace
from honeytrace.integrations import instrument_flask

tracer = HoneyHiveTracer.init(project="agents", service_name="flask-agent")
app = Flask(__name__)
instrument_flask(app, tracer, excluded_urls=["/health"])


@trace(event_type="chain")
def run_agent(query: str) -> str:
    return query.upper()


@app.post("/agent")
def agent() -> dict[str, str]:
    return {"answer": run_agent(request.get_json()["query"])}


@app.get("/health")
def health() -> str:
    return "ok"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000, threaded=True)
