"""Propagation fuzzing: hostile carriers through extract, inject and a downstream httpx
call (used by tests/test_fuzz_propagation.py, in worker processes).

Each carrier goes the way a request goes through a service: the server continues it
(`with_distributed_trace_context`, under a random trust policy), a span runs inside,
`inject_context_into_carrier` writes headers, and an httpx call made inside the span
(httpx instrumented by `instrument_http`) sends them. The httpx transport writes the
request with h11, the HTTP/1.1 library httpx's own transport uses, and parses it back
with an h11 server, so a header h11 would refuse on the wire fails here too. Every
header honeytrace wrote, in the carrier and on the wire, is checked against the
grammars below, written for this test from the specs (not from honeytrace's code).
"""

from __future__ import annotations

import random
import re
from typing import Any, Optional

# -- the grammars every outgoing header must follow ---------------------------------------------

# RFC 9110 field-value, ASCII only (honeytrace percent-encodes everything else).
FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# W3C Trace Context: version 00 as honeytrace sends it; flags carry the sampled and
# random bits only.
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]")
# W3C Trace Context (current grammar): key and value of a tracestate member.
TS_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
TS_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
# W3C Baggage: token keys, baggage-octet values, properties.
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
BAG_MEMBER = re.compile(rf"{TOKEN}={OCTETS}(?:;{TOKEN}(?:={OCTETS})?)*")


def header_problems(name: str, value: Any) -> list[str]:
    """What is wrong with one propagation header honeytrace sent (empty: nothing)."""
    if not isinstance(value, str):
        return [f"{name}: not text: {value!r}"]
    if not FIELD_VALUE.fullmatch(value):
        return [f"{name}: not a valid header value: {value!r}"]
    low = name.lower()
    if low == "traceparent":
        m = TRACEPARENT.fullmatch(value)
        if not m or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
            return [f"traceparent: {value!r}"]
    elif low == "tracestate":
        members = value.split(",")
        keys = [m.split("=", 1)[0] for m in members]
        if len(members) > 32 or len(set(keys)) != len(keys):
            return [f"tracestate: too many or repeated members: {value!r}"]
        for m in members:
            k, eq, v = m.partition("=")
            if not eq or not TS_KEY.fullmatch(k) or not TS_VALUE.fullmatch(v):
                return [f"tracestate member {m!r}"]
    elif low == "baggage":
        members = value.split(",")
        if len(members) > 64 or len(value.encode()) > 8192:
            return [f"baggage over the W3C limits ({len(members)} members, {len(value)} bytes)"]
        for m in members:
            if not BAG_MEMBER.fullmatch(m):
                return [f"baggage member {m!r}"]
    return []


PROPAGATION = ("traceparent", "tracestate", "baggage")


def carrier_problems(carrier: Any) -> list[str]:
    out: list[str] = []
    for k, v in dict(carrier).items():
        if str(k).lower() in PROPAGATION:
            out += header_problems(str(k), v)
    return out


# -- an httpx transport that speaks HTTP/1.1 with h11 on both ends, in memory -----------------


def h11_transport(problems: list[str]) -> Any:
    import h11
    import httpx

    class H11Loopback(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            client = h11.Connection(h11.CLIENT)
            # As httpcore does: the raw header bytes as httpx encoded them.
            wire = client.send(
                h11.Request(
                    method=request.method,
                    target=request.url.raw_path,
                    headers=list(request.headers.raw),
                )
            )
            wire += client.send(h11.EndOfMessage())
            server = h11.Connection(h11.SERVER)
            server.receive_data(wire)
            event = server.next_event()
            assert isinstance(event, h11.Request), event
            received = {}
            for name, value in event.headers:
                n = name.decode("ascii").lower()
                if n in PROPAGATION:
                    if n in received:
                        problems.append(f"{n}: sent twice")
                    received[n] = value.decode("latin-1")
            if "traceparent" not in received:
                problems.append("no traceparent on the wire")
            for n, v in received.items():
                problems.extend(header_problems(n, v))
            return httpx.Response(200)

    return H11Loopback()


# -- carriers -------------------------------------------------------------------------------------

VALID = {
    "traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,foo@@bar=1,t@v=x y",
    "baggage": b"session_id=sess-1;sig=1.x,project=p,userId=Am%C3%A9lie,k=v;ttl=3;flag,s=%FF",
}
NASTY = b'\x00\r\n\t \x01\x1f\x7f\x80\xff\xc3\xa9\xe2\x80\xa8,;=%@"\\-:'
NAMES = {
    "traceparent": ["traceparent", "Traceparent", "TRACEPARENT", "TraceParent"],
    "tracestate": ["tracestate", "Tracestate", "TRACESTATE"],
    "baggage": ["baggage", "Baggage", "BAGGAGE"],
}


def mutate(rng: random.Random, base: bytes) -> bytes:
    b = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(b))
        ch = rng.choice(NASTY) if rng.random() < 0.6 else rng.randrange(256)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = ch
        elif op == 1:
            b.insert(pos, ch)
        elif op == 2 and b:
            del b[min(pos, len(b) - 1)]
        elif op == 3:
            b[pos:pos] = rng.randbytes(rng.randint(1, 12))
        elif op == 4:
            b = b[:pos]
        else:
            b[pos:pos] = rng.choice([b",", b";", b"=", b"%", b"%G", b"%0", b"@", b"-"])
    return bytes(b)


def value_for(rng: random.Random, field: str) -> bytes:
    base = VALID[field]
    r = rng.random()
    if r < 0.12:
        return rng.randbytes(rng.randint(0, 120))
    if r < 0.17:
        # Over the limits: many members, or one huge one.
        if rng.random() < 0.5:
            return b",".join(base for _ in range(rng.randint(2, 60)))
        return base + b"x" * rng.randint(250, 9000)
    if r < 0.25:
        return base
    return mutate(rng, base)


def random_carrier(rng: random.Random) -> Any:
    """One carrier of a random shape, with 0 to 3 propagation headers (some repeated)."""
    fields = [f for f in PROPAGATION if rng.random() < 0.8]
    pairs: list[tuple[str, bytes]] = []
    for f in fields:
        for _ in range(2 if rng.random() < 0.1 else 1):
            pairs.append((rng.choice(NAMES[f]), value_for(rng, f)))
    if rng.random() < 0.05:
        pairs.append((rng.randbytes(6).decode("latin-1"), rng.randbytes(10)))
    shape = rng.randrange(6)
    text = [(k, v.decode("latin-1")) for k, v in pairs]
    if shape == 0:
        return dict(text)
    if shape == 1:
        return text
    if shape == 2:
        return tuple(text)
    if shape == 3:
        # A WSGI environ (values are latin-1 text, as PEP 3333 says).
        return {"HTTP_" + k.upper().replace("-", "_"): v for k, v in text}
    if shape == 4:
        # An ASGI scope (raw bytes).
        return {
            "type": "http",
            "headers": [(k.lower().encode("latin-1"), v) for k, v in pairs],
        }
    # Values that are not text at all.
    return {k: rng.choice([None, 42, v, v.decode("latin-1"), ["a"], object()]) for k, v in pairs}


# -- the pipeline ---------------------------------------------------------------------------------


class Pipeline:
    """A tracer, instrumented httpx and the h11 loopback; `run(carrier)` sends one
    carrier through, recording exceptions and header problems."""

    def __init__(self, tracer: Any) -> None:
        import httpx

        import honeytrace
        from honeytrace.integrations import instrument_http

        self.tracer = tracer
        instrument_http(tracer=self.tracer)
        self.problems: list[str] = []
        self.client = httpx.Client(transport=h11_transport(self.problems))
        self.honeytrace = honeytrace
        self.exceptions: list[str] = []
        self.carriers = 0
        self.invalid = 0
        self.calls = 0

    def run(self, carrier: Any, trust: str) -> None:
        ht = self.honeytrace
        self.carriers += 1
        before = len(self.problems)
        try:
            with ht.with_distributed_trace_context(carrier, self.tracer, trust=trust):
                with self.tracer.start_as_current_span("fuzz"):
                    out = ht.inject_context_into_carrier({}, self.tracer)
                    self.problems.extend(carrier_problems(out))
                    self.client.get("http://downstream.test/work")
                    self.calls += 1
        except Exception as e:  # counted, reported with the carrier
            self.exceptions.append(f"{type(e).__name__}: {e} for {carrier!r:.300}")
        if len(self.problems) > before:
            self.invalid += 1
            self.problems[before:] = [f"{p} for {carrier!r:.300}" for p in self.problems[before:]]
        if self.carriers % 5000 == 0:
            self.tracer.clear_finished_spans()

    def summary(self) -> dict[str, Any]:
        return {
            "carriers": self.carriers,
            "calls": self.calls,
            "exceptions": len(self.exceptions),
            "invalid": self.invalid,
            "examples": (self.exceptions + self.problems)[:5],
            "stats": {
                k: v
                for k, v in self.tracer.stats().items()
                if k
                in (
                    "traceparent_invalid",
                    "tracestate_dropped",
                    "baggage_dropped",
                    "incoming_rejected",
                    "sessions_unsigned",
                    "sessions_forged",
                    "invalid_arguments",
                )
            },
        }


def run_random(seed: int, n: int, secret: Optional[str]) -> dict[str, Any]:
    """`n` random carriers from `seed` (a worker process's share)."""
    import honeytrace
    from honeytrace.integrations import uninstrument_http

    rng = random.Random(seed)
    kw: dict[str, Any] = {"test_mode": True, "project": "fuzz", "source": "fuzz"}
    if secret:
        kw["baggage_secret"] = secret
    p = Pipeline(honeytrace.HoneyHiveTracer.init(**kw))
    trusts = ["continue", "continue", "restart", "ignore"]
    for _ in range(n):
        p.run(random_carrier(rng), rng.choice(trusts))
    uninstrument_http()
    p.tracer.shutdown()
    return p.summary()
