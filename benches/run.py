"""honeytrace's benchmark suite: honeytrace beside its peers, in one run.

    python benches/run.py            # everything (~20 minutes on 2 cores)
    python benches/run.py --quick    # fewer rounds
    python benches/run.py --only trivial,args

It builds honeytrace in release mode into its own virtual environment (benches/.venv)
with the peers (honeyhive==1.7.0 in test mode, the OpenTelemetry SDK with its
BatchSpanProcessor and OTLP/HTTP exporter, langfuse pointed at the local receiver),
builds the Rust OTLP receiver (benches/rust), then runs each scenario with every
contender in its own worker process, interleaved round by round (A B C A B C ...).
It prints the tables and writes docs/performance.md and docs/performance.png.
Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv"
SINK_BIN = HERE / "rust" / "target" / "release" / "otlp_sink"
PEERS = [
    "honeyhive==1.7.0",
    # 1.45.1, not the tests' 1.45.2: the contrib instrumentations (0.66b1, the newest)
    # pin the semantic-conventions package that goes with 1.45.1.
    "opentelemetry-sdk==1.45.1",
    "opentelemetry-exporter-otlp-proto-http==1.45.1",
    "opentelemetry-instrumentation-flask==0.66b1",
    "opentelemetry-instrumentation-asgi==0.66b1",
    "opentelemetry-instrumentation-celery==0.66b1",
    "celery",
    "langfuse",
    "flask",
    "gunicorn",
    "fastapi",
    "uvicorn",
    "matplotlib",
]
DECORATOR_CONTENDERS = ["honeytrace", "opentelemetry-sdk", "honeyhive-1.7.0", "langfuse"]
#: Each worker's counters at the end of its scenario (honeytrace: tracer.stats()).
STATS: dict[tuple[str, str], dict[str, Any]] = {}


def honeytrace_delivery(scenario: str) -> str:
    st = STATS.get((scenario, "honeytrace"), {})
    if "ended" not in st:
        return ""
    return (
        f" honeytrace ended {st['ended']:,} spans in this scenario; {st.get('dropped', 0):,}"
        " were dropped (export queue full)."
    )


def sh(*cmd: str, **kw: Any) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


# -- bootstrap ----------------------------------------------------------------------------


def bootstrap(args: argparse.Namespace) -> None:
    py = VENV / "bin" / "python"
    if not py.exists():
        sh(sys.executable, "-m", "venv", str(VENV))
        sh(str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    if not args.no_build:
        sh(str(py), "-m", "pip", "install", "--quiet", *PEERS)
        # Release build of the current tree (pip builds with maturin in release mode);
        # its one dependency, opentelemetry-api, comes with the SDK above.
        sh(str(py), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(REPO))
        sh(
            "cargo",
            "build",
            "--quiet",
            "--release",
            "--manifest-path",
            str(HERE / "rust" / "Cargo.toml"),
            "--bin",
            "otlp_sink",
        )
    os.execv(str(py), [str(py), str(Path(__file__)), "--inside", *sys.argv[1:]])


# -- the local receiver ---------------------------------------------------------------------


@contextmanager
def sink() -> Iterator[str]:
    proc = subprocess.Popen([str(SINK_BIN)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- workers ---------------------------------------------------------------------------------


class Worker:
    def __init__(self, scenario: str, contender: str, endpoint: str) -> None:
        self.contender = contender
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), scenario, contender, endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        self.ask_raw()  # ready

    def ask_raw(self, msg: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if msg is not None:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.contender} died")
        return json.loads(line)  # type: ignore[no-any-return]

    def round(self, n: int) -> dict[str, Any]:
        return self.ask_raw({"cmd": "round", "n": n})

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def interleaved(
    scenario: str,
    contenders: list[str],
    endpoint: str,
    rounds: int,
    target_s: float = 0.25,
    fixed_n: Optional[int] = None,
) -> dict[str, list[dict[str, Any]]]:
    workers = []
    for c in contenders:
        try:
            workers.append(Worker(scenario, c, endpoint))
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            print(f"  {c}: could not start ({e})", flush=True)
    sizes: dict[str, int] = {}
    for w in workers:  # warm-up and calibration
        if fixed_n:
            sizes[w.contender] = fixed_n
            continue
        # The first calls pay one-time costs (lazy imports, first allocations, cold
        # caches): a round of them is the warm-up, the second sizes the rounds.
        w.round(500)
        probe = w.round(5000)
        per_op = max(probe["traced_ns"], probe["base_ns"], 50.0)
        sizes[w.contender] = int(min(300_000, max(300, target_s * 1e9 / per_op)))
        w.round(sizes[w.contender])
    results: dict[str, list[dict[str, Any]]] = {w.contender: [] for w in workers}
    for r in range(rounds):
        for w in workers:
            results[w.contender].append(w.round(sizes[w.contender]))
        print(f"  round {r + 1}/{rounds}", end="\r", flush=True)
    print(" " * 30, end="\r")
    for w in workers:
        with suppress(Exception):
            STATS[(scenario, w.contender)] = w.ask_raw({"cmd": "stats"})
        w.close()
    return results


def overhead_table(
    results: dict[str, list[dict[str, Any]]], unit: str = "µs"
) -> list[dict[str, Any]]:
    """min/median/max of (traced - base) per op, and each peer's ratio to honeytrace,
    computed per round (rounds are interleaved) and summarised by the median."""
    scale = 1000.0 if unit == "µs" else 1.0
    rows = []
    ht = results.get("honeytrace", [])
    for c, rounds in results.items():
        over = [(x["traced_ns"] - x["base_ns"]) / scale for x in rounds]
        ratios = []
        if c != "honeytrace" and ht:
            for mine, theirs in zip(rounds, ht):
                base = (theirs["traced_ns"] - theirs["base_ns"]) or 1e-9
                ratios.append((mine["traced_ns"] - mine["base_ns"]) / base)
        rows.append(
            {
                "contender": c,
                "min": min(over),
                "median": statistics.median(over),
                "max": max(over),
                "base": statistics.median(x["base_ns"] / scale for x in rounds),
                "ratio": statistics.median(ratios) if ratios else None,
            }
        )
    return rows


def fmt_rows(rows: list[dict[str, Any]], unit: str, what: str) -> str:
    out = [
        f"| contender | {what} median | min | max | ratio to honeytrace (median of rounds) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = (
            "1×"
            if r["contender"] == "honeytrace"
            else (f"{r['ratio']:.1f}×" if r["ratio"] else "–")
        )
        out.append(
            f"| {r['contender']} | {r['median']:.3f} {unit} | {r['min']:.3f} | {r['max']:.3f} | {ratio} |"
        )
    return "\n".join(out)


# -- scenarios ----------------------------------------------------------------------------


def run_decorator(
    name: str, scenario: str, args: argparse.Namespace, report: list[str], plot: dict[str, Any]
) -> None:
    print(f"[{name}]", flush=True)
    with sink() as url:
        res = interleaved(scenario, DECORATOR_CONTENDERS, url, args.rounds)
    rows = overhead_table(res)
    table = fmt_rows(rows, "µs", "added per call")
    print(table + "\n")
    base = next((r["base"] for r in rows if r["contender"] == "honeytrace"), 0.0)
    report.append(
        f"### {name}\n\nUndecorated call: {base:.3f} µs. Export on, to the local OTLP receiver"
        " (honeyhive-1.7.0 in its test mode, as it cannot export offline)."
        f"{honeytrace_delivery(scenario)}\n\n{table}\n"
    )
    plot[name] = rows


def run_async(args: argparse.Namespace, report: list[str], plot: dict[str, Any]) -> None:
    print("[async]", flush=True)
    with sink() as url:
        res = interleaved(
            "async", DECORATOR_CONTENDERS, url, max(3, args.rounds // 2), fixed_n=5000
        )
    rows = overhead_table(res)
    table = fmt_rows(rows, "µs", "added per task")
    print(table + "\n")
    report.append(
        "### 3. An async function under the decorator, 1000 concurrent tasks\n\n"
        "`asyncio.gather` of 1000 tasks (each `await asyncio.sleep(0)`), five batches per"
        " round; overhead per task against the undecorated coroutine."
        f"{honeytrace_delivery('async')}\n\n{table}\n"
    )
    plot["3. async, 1000 concurrent tasks"] = rows


PROCESSOR_CONTENDERS = [
    "honeytrace",
    "honeytrace + SDK processor",
    "opentelemetry-sdk",
    "opentelemetry-sdk + SDK processor",
]


def run_processor(args: argparse.Namespace, report: list[str]) -> None:
    print("[processor]", flush=True)
    with sink() as url:
        res = interleaved("trivial", PROCESSOR_CONTENDERS, url, args.rounds)
    rows = overhead_table(res)
    table = fmt_rows(rows, "µs", "added per call")
    print(table + "\n")
    report.append(
        "### A Python span processor added to the provider\n\n"
        "The trivial function of scenario 1, with and without one OpenTelemetry SDK"
        " `SimpleSpanProcessor` (its exporter does nothing) added with"
        " `provider.add_span_processor`; each contender still exports to the local OTLP"
        f" receiver.\n\n{table}\n"
    )


def run_propagation(args: argparse.Namespace, report: list[str]) -> None:
    contenders = ["honeytrace", "opentelemetry-sdk", "honeyhive-1.7.0"]
    with sink() as url:
        for scenario, title in [
            ("dtc", "with_distributed_trace_context enter+exit (traceparent + 3-key baggage)"),
            ("inject", "inject_context_into_carrier into a dict"),
        ]:
            print(f"[{scenario}]", flush=True)
            res = interleaved(scenario, contenders, url, args.rounds)
            rows = overhead_table(res)
            table = fmt_rows(rows, "µs", "per call")
            print(table + "\n")
            report.append(
                f"#### {title}\n\nThe OpenTelemetry SDK row is `propagate.extract` + "
                f"`context.attach`/`detach` (or `propagate.inject`) with its default W3C "
                f"propagators.\n\n{table}\n"
            )


def run_celery(args: argparse.Namespace, report: list[str]) -> None:
    """The added cost of publishing one Celery task with propagation (kombu's in-memory
    broker, inside a span): honeytrace's integration and OpenTelemetry's instrumentor."""
    print("[celery]", flush=True)
    with sink() as url:
        # Rounds of a second: a publish varies by tens of µs (kombu's queue), far more
        # than what is added; long rounds make the difference readable.
        res = interleaved(
            "celery", ["honeytrace", "opentelemetry-sdk"], url, args.rounds, target_s=1.0
        )
    rows = overhead_table(res)
    table = fmt_rows(rows, "µs", "added per task published")
    print(table + "\n")
    base = next((r["base"] for r in rows if r["contender"] == "honeytrace"), 0.0)
    report.append(
        "#### Publishing one Celery task\n\n`app.send_task` to kombu's in-memory broker inside"
        f" a span, without instrumentation: {base:.1f} µs. Added by honeytrace's"
        " `instrument_celery()` (headers written on `before_task_publish`) and by"
        " OpenTelemetry's `CeleryInstrumentor` (a PRODUCER span and the headers), each"
        f" toggled on and off within the round.\n\n{table}\n"
    )


def run_throughput(args: argparse.Namespace, report: list[str]) -> None:
    print("[throughput]", flush=True)
    lines = [
        "| contender | offered | delivered spans/s (median) | delivered / sent | dropped |"
        " export-thread CPU per span |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    n = 300_000 if args.quick else 1_000_000
    with sink() as url:
        for c, rates in [
            ("honeytrace", [500_000, 750_000, 0]),
            ("opentelemetry-sdk", [0]),
        ]:
            w = Worker("throughput", c, url)
            try:
                w.ask_raw({"cmd": "round", "n": 20_000})  # warm-up
                for rate in rates:
                    size = n if c == "honeytrace" else n // 4
                    rounds = [
                        w.ask_raw({"cmd": "round", "n": size, "rate": rate}) for _ in range(3)
                    ]
                    sps = statistics.median(
                        r["delivered"] / (r["traced_ns"] * r["sent"] / 1e9) for r in rounds
                    )
                    delivered = sum(r["delivered"] for r in rounds)
                    sent = sum(r["sent"] for r in rounds)
                    counted = [r["dropped"] for r in rounds if r["dropped"] >= 0]
                    # honeytrace counts its drops; for the SDK, what never arrived.
                    dropped = sum(counted) if len(counted) == len(rounds) else sent - delivered
                    cpu = statistics.median(r["bg_cpu_ns_per_span"] for r in rounds)
                    offered = f"{rate:,} /s" if rate else "flat out"
                    lines.append(
                        f"| {c} | {offered} | {sps:,.0f} | {delivered:,} / {sent:,} |"
                        f" {dropped:,} | {cpu / 1000:.2f} µs |"
                    )
            finally:
                w.close()
    table = "\n".join(lines)
    print(table + "\n")
    report.append(
        "### 5. Export throughput\n\n"
        "One Python thread starts and ends spans, paced to an offered rate or flat out,"
        " then `flush()`; three rounds of"
        f" {n:,} spans (the SDK: {n // 4:,}). Delivered spans per second are counted by the"
        " receiver, from the first span to the end of the flush; dropped spans are"
        " honeytrace's counter (for the SDK, the spans that never arrived); CPU is the"
        " export thread's (`honeytrace-export` / the SDK's `OtelBatchSpanRecordProcessor`)"
        " per delivered span. Default settings (honeytrace: queue 16,384; the SDK: queue"
        " 2,048). On two cores the producing thread, the export thread and the receiver"
        " share the machine; when the producer outruns the export thread (flat out, with"
        " the receiver busy on the other core), the bounded queue drops (and counts) the"
        " excess instead of growing or blocking the caller.\n\n" + table + "\n"
    )


def measure_import_init(args: argparse.Namespace, report: list[str]) -> None:
    print("[import/init]", flush=True)
    cases = {
        "honeytrace": (
            "import honeytrace",
            "honeytrace.HoneyHiveTracer.init(project='p', test_mode=True)",
        ),
        "opentelemetry-sdk": (
            "import opentelemetry.sdk.trace, opentelemetry.sdk.trace.export, "
            "opentelemetry.exporter.otlp.proto.http.trace_exporter as e",
            "p = opentelemetry.sdk.trace.TracerProvider(); p.add_span_processor("
            "opentelemetry.sdk.trace.export.BatchSpanProcessor(e.OTLPSpanExporter()))",
        ),
        "honeyhive-1.7.0": (
            "import honeyhive",
            "honeyhive.HoneyHiveTracer.init(api_key='k', project='p', test_mode=True)",
        ),
        "langfuse": (
            "import langfuse",
            "langfuse.Langfuse(public_key='pk', secret_key='sk', host='http://127.0.0.1:9')",
        ),
    }
    lines = ["| contender | import (median of 5) | init (median of 5) |", "|---|---:|---:|"]
    for c, (imp, init) in cases.items():
        imports, inits = [], []
        for _ in range(5):
            code = (
                f"import time; t0=time.perf_counter(); {imp}; t1=time.perf_counter(); {init};"
                f" t2=time.perf_counter(); print(t1-t0, t2-t1)"
            )
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env={**os.environ, "HH_API_URL": "http://127.0.0.1:9"},
            )
            try:
                a, b = out.stdout.strip().splitlines()[-1].split()
            except (ValueError, IndexError):
                break
            imports.append(float(a) * 1000)
            inits.append(float(b) * 1000)
        if imports:
            lines.append(
                f"| {c} | {statistics.median(imports):.1f} ms | {statistics.median(inits):.2f} ms |"
            )
    # -X importtime for honeytrace itself (fresh process).
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import honeytrace"],
        capture_output=True,
        text=True,
    )
    last = [ln for ln in out.stderr.splitlines() if ln.rstrip().endswith("| honeytrace")]
    cum = last[-1].split("|")[1].strip() if last else "?"
    table = "\n".join(lines)
    print(table + "\n")
    report.append(
        "### 6. Import and init\n\nFresh interpreter each time; init without network"
        " (honeytrace in test mode; the others as noted).\n`python -X importtime -c"
        f" 'import honeytrace'`: {int(cum) / 1000 if cum.isdigit() else cum} ms cumulative.\n\n"
        + table
        + "\n"
    )


def run_memory(args: argparse.Namespace, report: list[str]) -> None:
    print("[memory]", flush=True)
    n = 200_000 if args.quick else 1_000_000
    lines = [
        "| contender | receiver | RSS before | RSS after | dropped | queued |",
        "|---|---|---:|---:|---:|---:|",
    ]
    with sink() as url:
        for label, endpoint in [("up", url), ("down", dead_endpoint())]:
            for c in ["honeytrace", "opentelemetry-sdk"]:
                w = Worker("memory", c, endpoint)
                r = w.round(n)
                w.close()
                lines.append(
                    f"| {c} | {label} | {r['rss_before_mb']:.0f} MB | {r['rss_after_mb']:.0f} MB |"
                    f" {r['dropped'] if r['dropped'] >= 0 else 'not counted'} |"
                    f" {r['queued'] if r['queued'] >= 0 else 'not reported'} |"
                )
    table = "\n".join(lines)
    print(table + "\n")
    report.append(
        f"### 8. Memory\n\nRSS of the worker after {n:,} spans (then a flush), with the"
        " receiver up and with nothing listening. Bounded by the export queue when it is down."
        "\n\n" + table + "\n"
    )


def run_web(args: argparse.Namespace, report: list[str]) -> None:
    from web import run_web_benchmarks

    print("[web]", flush=True)
    with sink() as url:
        table = run_web_benchmarks(url, quick=args.quick)
    print(table + "\n")
    report.append("### 7. Web apps under load\n\n" + table + "\n")


def run_micro(args: argparse.Namespace, report: list[str]) -> None:
    """The criterion micro-benchmarks of benches/rust (parsers, attribute conversion,
    the JSON writer), summarised from criterion's own output."""
    import re

    print("[micro]", flush=True)
    manifest = str(HERE / "rust" / "Cargo.toml")
    timing = ["--warm-up-time", "1", "--measurement-time", "2" if args.quick else "5"]
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--manifest-path", manifest, "--", *timing],
        capture_output=True,
        text=True,
    )
    rows = []
    name = ""
    for line in out.stdout.splitlines():
        m = re.search(r"time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", line)
        head = line.split("time:")[0].strip()
        if head and not line.startswith(" "):
            name = head
        if m and name:
            rows.append(f"| `{name}` | {m.group(2)} | {m.group(1)} – {m.group(3)} |")
            name = ""
    if not rows:
        print(out.stderr[-2000:])
        return
    table = "| benchmark | time (estimate) | 95% interval |\n|---|---:|---:|\n" + "\n".join(rows)
    print(table + "\n")
    report.append(
        "### 9. Rust micro-benchmarks\n\n"
        "criterion, on the engine's own functions (`cargo bench --manifest-path"
        " benches/rust/Cargo.toml`): W3C traceparent and baggage parsing, Python value to"
        " attribute conversion, and the JSON writer that captures arguments.\n\n" + table + "\n"
    )


# -- report --------------------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import version

    out = []
    for pkg in [
        "honeytrace",
        "honeyhive",
        "opentelemetry-sdk",
        "langfuse",
        "flask",
        "fastapi",
        "uvicorn",
    ]:
        with suppress(Exception):
            out.append(f"{pkg} {version(pkg)}")
    return ", ".join(out)


def machine() -> str:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}, Python {platform.python_version()}"


def write_plot(plot: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(plot)
    contenders = DECORATOR_CONTENDERS
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(contenders)
    for i, c in enumerate(contenders):
        vals = []
        for n in names:
            row = next((r for r in plot[n] if r["contender"] == c), None)
            vals.append(row["median"] if row else 0)
        xs = [j + i * width for j in range(len(names))]
        bars = ax.bar(xs, vals, width, label=c)
        for b, v in zip(bars, vals):
            if v:
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    v,
                    f"{v:.2f}" if v < 10 else f"{v:.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_yscale("log")
    ax.set_ylabel("added per call, µs (log scale)")
    ax.set_xticks([j + width * (len(contenders) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names, fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("Decorator overhead by contender (median of interleaved rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--no-build", action="store_true", help="reuse benches/.venv as it is")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not args.inside:
        bootstrap(args)
        return
    args.rounds = args.rounds or (5 if args.quick else 15)
    sys.path.insert(0, str(HERE))
    only = set(filter(None, args.only.split(",")))

    def want(s: str) -> bool:
        return not only or s in only

    started = time.time()
    report: list[str] = []
    plot: dict[str, Any] = {}
    if want("trivial"):
        run_decorator("1. trivial sync function", "trivial", args, report, plot)
    if want("args"):
        run_decorator("2. three arguments and a dict return captured", "args", args, report, plot)
    if want("async"):
        run_async(args, report, plot)
    if want("processor"):
        run_processor(args, report)
    if want("propagation"):
        report.append("### 4. Propagation\n")
        run_propagation(args, report)
    if want("propagation") or want("celery"):
        run_celery(args, report)
    if want("throughput"):
        run_throughput(args, report)
    if want("import"):
        measure_import_init(args, report)
    if want("web"):
        run_web(args, report)
    if want("memory"):
        run_memory(args, report)
    if want("micro"):
        run_micro(args, report)

    cmd = (
        "python benches/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else "")
    )
    head = (
        f"# Performance\n\nMeasured by the benchmark suite, peers side by side in one run: `{cmd}`"
        f" ({(time.time() - started) / 60:.0f} min).\n\n"
        f"- Date: {datetime.date.today().isoformat()}\n- Machine: {machine()}\n- Versions: {versions()}\n"
        "- Method: every contender runs in its own worker process; rounds are interleaved"
        " (A B C A B C ...) after a warm-up round, and each contender flushes its export after"
        " its round, untimed, so no contender's background export runs during another's round;"
        ' "added per call" is the decorated loop minus the'
        " undecorated loop in the same round; ratios are computed per round and summarised by their"
        " median. Timings are never pass/fail tests.\n\n![per-call overhead](performance.png)\n\n"
    )
    text = head + "\n".join(report)
    if not args.no_write and not only:
        (REPO / "docs" / "performance.md").write_text(text)
        write_plot(plot, REPO / "docs" / "performance.png")
        print(f"wrote {REPO / 'docs' / 'performance.md'}")
    elif only:
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "partial.md").write_text(text)
        if plot:
            write_plot(plot, out / "partial.png")
        print(f"wrote {out / 'partial.md'}")


if __name__ == "__main__":
    main()
