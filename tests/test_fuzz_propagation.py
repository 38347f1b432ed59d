"""Hostile carriers through extract, inject and a downstream httpx call: no exception
reaches the app, and nothing honeytrace sends is an invalid header (tests/_fuzz_carriers.py
says how each carrier is sent through and checked).

How many: `HONEYTRACE_FUZZ_CARRIERS` random carriers (default 40,000, split over two
processes, one of them with a baggage secret) and `HONEYTRACE_FUZZ_EXAMPLES` hypothesis
examples (default 1,000). CI runs 1,000,000 and 20,000 once (`.ci/run`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import urllib.parse
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _fuzz_carriers as fuzz
from honeytrace import HoneyHiveTracer
from honeytrace.integrations import uninstrument_http

Make = Callable[..., HoneyHiveTracer]
CARRIERS = int(os.environ.get("HONEYTRACE_FUZZ_CARRIERS", "40000"))
EXAMPLES = int(os.environ.get("HONEYTRACE_FUZZ_EXAMPLES", "1000"))


def test_the_grammars_catch_what_they_must() -> None:
    """The checks themselves: valid headers pass, each kind of invalid one fails."""
    good = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
        "tracestate": "a=1,foo@@bar=x y,t@v=2",
        "baggage": "session_id=abc;sig=1.x,k=Am%C3%A9lie;ttl=3;flag",
    }
    assert fuzz.carrier_problems(good) == []
    for name, bad in [
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff"),
        ("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        ("tracestate", "a=1,a=2"),
        ("tracestate", "a=caf\u00e9"),
        ("tracestate", "a="),
        ("tracestate", ",".join(f"k{i}=v" for i in range(33))),
        ("baggage", "k=a b"),
        ("baggage", "k=v\r\nx: y"),
        ("baggage", "k=v;bad prop"),
        ("baggage", "k=\x00"),
        ("baggage", ",".join(f"k{i}=v" for i in range(65))),
    ]:
        assert fuzz.header_problems(name, bad), (name, bad)


def test_random_carriers(tmp_path: Any) -> None:
    """Random bytes and mutations of valid headers, in every carrier shape."""
    half = CARRIERS // 2
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        results = list(
            pool.map(
                fuzz.run_random,
                [11, 12],
                [half, CARRIERS - half],
                [None, "fuzz-secret-of-enough-length"],
            )
        )
    total = {k: sum(r[k] for r in results) for k in ("carriers", "calls", "exceptions", "invalid")}
    print("fuzz random carriers:", json.dumps(total), json.dumps([r["stats"] for r in results]))
    assert total["carriers"] == CARRIERS
    assert total["exceptions"] == 0, [r["examples"] for r in results]
    assert total["invalid"] == 0, [r["examples"] for r in results]
    assert total["calls"] == CARRIERS
    # The carriers reached the parsers' every outcome.
    for r in results:
        s = r["stats"]
        assert s["traceparent_invalid"] > 0 and s["tracestate_dropped"] > 0
        assert s["baggage_dropped"] > 0 and s["incoming_rejected"] > 0


# -- hypothesis: structured headers, near the grammars --------------------------------------------

NASTY = '\x00\r\n\t \x01\x7f\x80\xff\u00e9\u2028\ufffd,;=%@"\\'
hexish = st.text(alphabet="0123456789abcdefABCDEF-" + NASTY, min_size=0, max_size=40)
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0"
traceparents = st.one_of(
    st.sampled_from([TP + f for f in "0123"]),
    st.builds(
        lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
        st.sampled_from(["00", "01", "cc", "ff", "0g", "0", "000"]),
        st.one_of(st.just("0af7651916cd43dd8448eb211c80319c"), hexish),
        st.one_of(st.just("b7ad6b7169203331"), hexish),
        st.one_of(st.sampled_from(["00", "01", "02", "03", "ff"]), hexish),
    ),
    st.text(max_size=80),
)
ts_keys = st.text(alphabet="abcz09_-*/@" + NASTY, min_size=0, max_size=20)
ts_values = st.text(alphabet=st.characters(codec="latin-1"), min_size=0, max_size=20)
tracestates = st.builds(
    lambda members, sep: sep.join(f"{k}={v}" for k, v in members),
    st.lists(st.tuples(ts_keys, ts_values), max_size=40),
    st.sampled_from([",", ", ", " ,\t", ",,"]),
)
bag_keys = st.one_of(
    st.sampled_from(["session_id", "honeyhive.session_id", "project", "source", "session.id"]),
    st.text(alphabet="abcAZ09!#$%&'*+-.^_`|~" + NASTY, max_size=12),
)
bag_values = st.builds(
    lambda text, safe: urllib.parse.quote(text, safe=safe),
    st.text(max_size=30),
    st.sampled_from(["", "/", " ,;=%", NASTY]),
)
props = st.lists(st.one_of(bag_keys, st.builds(lambda k, v: f"{k}={v}", bag_keys, bag_values)))
baggages = st.builds(
    lambda members: ",".join(f"{k}={v}" + "".join(f";{p}" for p in ps) for k, v, ps in members),
    st.lists(st.tuples(bag_keys, bag_values, props), max_size=70),
)
names = st.sampled_from(["traceparent", "Traceparent", "TRACESTATE", "tracestate", "baggage"])


@st.composite
def carriers(draw: Any) -> Any:
    headers = {
        "traceparent": draw(traceparents),
        "tracestate": draw(tracestates),
        "baggage": draw(baggages),
    }
    pairs = [(k, v) for k, v in headers.items() if draw(st.booleans())]
    pairs = [(draw(st.sampled_from([k, k.title(), k.upper()])), v) for k, v in pairs]
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return dict(pairs)
    if shape == 1:
        return pairs + pairs[: draw(st.integers(0, len(pairs)))]  # repeated lines
    if shape == 2:
        return {"HTTP_" + k.upper(): v for k, v in pairs}
    raw = [(k.lower().encode(), v.encode("utf-8", "surrogatepass")) for k, v in pairs]
    return {"type": "http", "headers": raw}


@pytest.fixture(scope="module")
def pipeline() -> Any:
    t = HoneyHiveTracer.init(test_mode=True, project="fuzz", source="fuzz")
    p = fuzz.Pipeline(t)
    yield p
    uninstrument_http()
    t.shutdown()
    print("fuzz hypothesis examples:", json.dumps(p.summary()))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(carrier=carriers(), trust=st.sampled_from(["continue", "restart", "ignore"]))
def test_structured_carriers(pipeline: Any, carrier: Any, trust: str) -> None:
    before = (len(pipeline.exceptions), pipeline.invalid)
    pipeline.run(carrier, trust)
    assert (len(pipeline.exceptions), pipeline.invalid) == before, (
        pipeline.exceptions + pipeline.problems
    )[-3:]
