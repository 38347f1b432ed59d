"""One contender in one scenario, in its own process (so peers' global OpenTelemetry
state cannot interfere). The coordinator (run.py) drives several workers in
interleaved rounds over a line protocol on the worker's original stdout:

    -> {"cmd": "round", "n": N}      <- {"base_ns": ..., "traced_ns": ...}   (per op)
    -> {"cmd": "stats"}              <- contender-specific counters
    -> {"cmd": "quit"}

Everything the contender prints goes to /dev/null (honeyhive 1.7 logs one JSON line
per span to stdout in test mode).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any, Callable

# -- protocol channel first, then silence fd 1 and 2 ------------------------------------
_proto = os.fdopen(os.dup(1), "w", buffering=1)
_devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 1)
if os.environ.get("BENCH_QUIET_STDERR", "1") == "1":
    os.dup2(_devnull, 2)

SCENARIO, CONTENDER, SINK = sys.argv[1], sys.argv[2], sys.argv[3]
TRACES = f"{SINK}/v1/traces"


def reply(obj: Any) -> None:
    _proto.write(json.dumps(obj) + "\n")


def loop(fn: Callable[[], Any], n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return time.perf_counter_ns() - t0


def thread_cpu(name_prefix: str) -> float:
    """CPU seconds of this process's threads named ``name_prefix...``: native threads by
    their OS name (honeytrace's export thread), Python threads by their thread name
    (the SDK's BatchSpanProcessor worker, which the OS knows only as "python")."""
    import threading

    tids = {t.native_id for t in threading.enumerate() if t.name.startswith(name_prefix)}
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
            if not comm.startswith(name_prefix[:15]) and int(tid) not in tids:
                continue
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / tick


# -- contender setup: each returns (traced callable factory, stats function) -------------


def setup_honeytrace() -> dict[str, Any]:
    import honeytrace
    from honeytrace import HoneyHiveTracer

    tracer = HoneyHiveTracer.init(project="bench", otlp_endpoint=SINK, service_name="bench")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return honeytrace.trace(fn)

    def span() -> None:
        with tracer.start_span("s"):
            pass

    return {
        "decorate": decorate,
        "span": span,
        "flush": lambda: tracer.flush(60),
        "stats": lambda: {**tracer.stats(), "export_cpu_s": thread_cpu("honeytrace-export")},
        "dtc": lambda carrier: honeytrace.with_distributed_trace_context(carrier, tracer),
        "inject": lambda: honeytrace.inject_context_into_carrier({}, tracer),
        "tracer": tracer,
        "celery": celery_toggles_honeytrace,
        "provider": tracer.provider,
    }


def celery_toggles_honeytrace() -> tuple[Callable[[], None], Callable[[], None]]:
    from honeytrace.integrations import instrument_celery, uninstrument_celery

    return instrument_celery, uninstrument_celery


def setup_otel() -> dict[str, Any]:
    from opentelemetry import context, propagate
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    bsp = BatchSpanProcessor(OTLPSpanExporter(endpoint=TRACES))
    provider.add_span_processor(bsp)
    tracer = provider.get_tracer("bench")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return tracer.start_as_current_span(fn.__name__)(fn)

    def span() -> None:
        tracer.start_span("s").end()

    class DTC:
        def __init__(self, carrier: dict[str, str]) -> None:
            self.carrier = carrier

        def __enter__(self) -> None:
            self.token = context.attach(propagate.extract(self.carrier))

        def __exit__(self, *exc: Any) -> None:
            context.detach(self.token)

    def inject() -> dict[str, str]:
        out: dict[str, str] = {}
        propagate.inject(out)
        return out

    return {
        "decorate": decorate,
        "span": span,
        "flush": lambda: provider.force_flush(60_000),
        "stats": lambda: {"export_cpu_s": thread_cpu("OtelBatchSpan")},
        "dtc": DTC,
        "inject": inject,
        "tracer": tracer,
        "celery": lambda: celery_toggles_otel(provider),
        "provider": provider,
    }


def celery_toggles_otel(provider: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    return (
        lambda: CeleryInstrumentor().instrument(tracer_provider=provider),
        lambda: CeleryInstrumentor().uninstrument(),
    )


def setup_honeyhive() -> dict[str, Any]:
    import logging

    logging.disable(logging.CRITICAL)
    from honeyhive import HoneyHiveTracer, trace
    from honeyhive.tracer.processing.context import (
        inject_context_into_carrier,
        with_distributed_trace_context,
    )

    tracer = HoneyHiveTracer.init(api_key="bench", project="bench", test_mode=True)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return trace(tracer=tracer)(fn)

    return {
        "decorate": decorate,
        "flush": lambda: None,
        "stats": lambda: {},
        "dtc": lambda carrier: with_distributed_trace_context(carrier, tracer),
        "inject": lambda: inject_context_into_carrier({}, tracer),
    }


def setup_langfuse() -> dict[str, Any]:
    os.environ.setdefault("LANGFUSE_PUBLIC_KEY", "pk-lf-bench")
    os.environ.setdefault("LANGFUSE_SECRET_KEY", "sk-lf-bench")
    os.environ.setdefault("LANGFUSE_HOST", SINK)
    from langfuse import get_client, observe

    client = get_client()

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return observe()(fn)

    return {
        "decorate": decorate,
        "flush": lambda: client.flush(),
        "stats": lambda: {},
    }


def with_processor(setup: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``setup`` plus one SDK ``SimpleSpanProcessor`` whose exporter does nothing: the
    cost of a Python span processor added to the provider."""

    def made() -> dict[str, Any]:
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Nothing(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        c = setup()
        c["provider"].add_span_processor(SimpleSpanProcessor(Nothing()))
        return c

    return made


SETUPS = {
    "honeytrace": setup_honeytrace,
    "honeytrace + SDK processor": with_processor(setup_honeytrace),
    "opentelemetry-sdk + SDK processor": with_processor(setup_otel),
    "opentelemetry-sdk": setup_otel,
    "honeyhive-1.7.0": setup_honeyhive,
    "langfuse": setup_langfuse,
}


# -- scenarios -----------------------------------------------------------------------------


def scenario_trivial(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    def f() -> int:
        return 1

    traced = c["decorate"](f)

    def run(n: int) -> dict[str, float]:
        base = loop(f, n)
        tr = loop(traced, n)
        return {"base_ns": base / n, "traced_ns": tr / n}

    return run


def scenario_args(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    def f(query: str, k: int, temperature: float) -> dict[str, Any]:
        return {"answer": query, "k": k, "t": temperature}

    if CONTENDER == "opentelemetry-sdk":
        # The SDK captures nothing by itself: do what a user would, by hand.
        tracer = c["tracer"]

        def traced(query: str, k: int, temperature: float) -> dict[str, Any]:
            with tracer.start_as_current_span("f") as span:
                span.set_attribute("input.query", query)
                span.set_attribute("input.k", k)
                span.set_attribute("input.temperature", temperature)
                out = f(query, k, temperature)
                span.set_attribute("output", json.dumps(out))
                return out
    else:
        traced = c["decorate"](f)

    def run(n: int) -> dict[str, float]:
        base = loop(lambda: f("what is the capital of France?", 3, 0.2), n)
        tr = loop(lambda: traced("what is the capital of France?", 3, 0.2), n)
        return {"base_ns": base / n, "traced_ns": tr / n}

    return run


def scenario_async(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    async def f(i: int) -> int:
        await asyncio.sleep(0)
        return i

    traced = c["decorate"](f)

    async def gather(fn: Callable[[int], Any], n: int) -> None:
        await asyncio.gather(*(fn(i) for i in range(n)))

    def run(n: int) -> dict[str, float]:
        tasks = 1000
        rounds = max(1, n // tasks)
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            asyncio.run(gather(f, tasks))
        base = time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            asyncio.run(gather(traced, tasks))
        tr = time.perf_counter_ns() - t0
        total = rounds * tasks
        return {"base_ns": base / total, "traced_ns": tr / total}

    return run


CARRIER = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "baggage": "session_id=3f1c9d2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b,project=agents,source=prod",
}


def scenario_dtc(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    dtc = c["dtc"]

    def enter_exit() -> None:
        with dtc(CARRIER):
            pass

    def run(n: int) -> dict[str, float]:
        base = loop(lambda: None, n)
        tr = loop(enter_exit, n)
        return {"base_ns": base / n, "traced_ns": tr / n}

    return run


def scenario_inject(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    inject = c["inject"]

    def run(n: int) -> dict[str, float]:
        base = loop(lambda: {}, n)
        tr = loop(inject, n)
        return {"base_ns": base / n, "traced_ns": tr / n}

    return run


def scenario_celery(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    """Publishing one Celery task (kombu's in-memory broker) inside a span, with the
    contender's Celery propagation minus without it (toggled within the round)."""
    import celery

    app = celery.Celery("bench", broker="memory://")
    app.conf.task_ignore_result = True
    on, off = c["celery"]()
    tracer = c["tracer"]

    def publish() -> None:
        app.send_task("bench.task", (1,))

    def run(n: int) -> dict[str, float]:
        # Off and on alternate every 50 publishes: a publish drifts by tens of µs over
        # a round (kombu's in-memory queue), far more than what is added.
        chunk = 50
        chunks = max(1, n // chunk)
        base = tr = 0
        with tracer.start_as_current_span("request"):
            for _ in range(chunks):
                off()
                base += loop(publish, chunk)
                on()
                tr += loop(publish, chunk)
                off()
            app.control.purge()
        total = chunks * chunk
        return {"base_ns": base / total, "traced_ns": tr / total}

    return run


def scenario_throughput(c: dict[str, Any]) -> Callable[..., dict[str, float]]:
    """Spans started and ended by one thread, then flushed: spans/s through the
    pipeline. ``rate`` > 0 paces the thread to that many spans per second (in steps of
    1000 spans); 0 runs it flat out."""
    import urllib.request

    span = c["span"]

    def sink_spans() -> int:
        with urllib.request.urlopen(f"{SINK}/stats", timeout=10) as r:
            return int(json.loads(r.read())["spans"])

    def run(n: int, rate: float = 0.0) -> dict[str, float]:
        before_sink = sink_spans()
        st0 = c["stats"]()
        cpu0 = st0.get("export_cpu_s", 0.0)
        dropped0 = st0.get("dropped", -1)
        t0 = time.perf_counter_ns()
        start = time.perf_counter()
        for i in range(n):
            span()
            if rate and i % 1000 == 999:
                due = start + (i + 1) / rate
                while time.perf_counter() < due:
                    time.sleep(0.0002)
        c["flush"]()
        elapsed = time.perf_counter_ns() - t0
        delivered = sink_spans() - before_sink
        st = c["stats"]()
        cpu = st.get("export_cpu_s", 0.0) - cpu0
        dropped = st.get("dropped", -1)
        return {
            "base_ns": 0.0,
            "traced_ns": elapsed / n,
            "spans_per_s": n / (elapsed / 1e9),
            "delivered": delivered,
            "sent": n,
            "dropped": dropped - dropped0 if dropped >= 0 else -1,
            "bg_cpu_ns_per_span": cpu * 1e9 / max(1, delivered),
        }

    return run


def scenario_memory(c: dict[str, Any]) -> Callable[[int], dict[str, float]]:
    span = c["span"]

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def run(n: int) -> dict[str, float]:
        before = rss_mb()
        for _ in range(n):
            span()
        c["flush"]()
        after = rss_mb()
        st = c["stats"]()
        return {
            "base_ns": 0.0,
            "traced_ns": 0.0,
            "rss_before_mb": before,
            "rss_after_mb": after,
            "dropped": st.get("dropped", -1),
            "queued": st.get("queued", -1),
        }

    return run


SCENARIOS = {
    "trivial": scenario_trivial,
    "args": scenario_args,
    "async": scenario_async,
    "dtc": scenario_dtc,
    "inject": scenario_inject,
    "celery": scenario_celery,
    "throughput": scenario_throughput,
    "memory": scenario_memory,
}


def main() -> None:
    contender = SETUPS[CONTENDER]()
    run = SCENARIOS[SCENARIO](contender)
    reply({"ready": True})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "round":
            extra = {"rate": float(msg["rate"])} if msg.get("rate") else {}
            result = run(int(msg["n"]), **extra)
            # Untimed: this contender's background export finishes before the next
            # contender's round, so it never competes with another's timed loop for
            # the machine's cores (rounds are interleaved).
            contender["flush"]()
            reply(result)
        elif msg["cmd"] == "stats":
            reply(contender["stats"]())
        elif msg["cmd"] == "quit":
            break
    _proto.flush()
    os._exit(0)  # skip the peers' exit hooks (some flush with long timeouts)


if __name__ == "__main__":
    main()
