//! Python values -> OpenTelemetry attribute values (span attributes, captured
//! arguments, enrichment flattening).

use _core::__bench::{captured, flatten, from_mapping, to_value};
use criterion::{criterion_group, criterion_main, Criterion};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    Python::initialize();
    Python::attach(|py| {
        let s = PyString::new(py, "what is the capital of France?");
        c.bench_function("attribute/str", |b| b.iter(|| to_value(black_box(s.as_any()))));
        let n = 12i64.into_pyobject(py).unwrap();
        c.bench_function("attribute/int", |b| b.iter(|| to_value(black_box(n.as_any()))));
        let l = PyList::new(py, ["a", "b", "c", "d"]).unwrap();
        c.bench_function("attribute/list of 4 str", |b| b.iter(|| to_value(black_box(l.as_any()))));

        let attrs = PyDict::new(py);
        attrs.set_item("llm.model", "gpt-4o").unwrap();
        attrs.set_item("llm.tokens", 812).unwrap();
        attrs.set_item("llm.temperature", 0.2).unwrap();
        attrs.set_item("llm.stream", false).unwrap();
        c.bench_function("attributes/mapping of 4", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(4);
                from_mapping(black_box(attrs.as_any()), &mut out);
                out
            })
        });
        c.bench_function("captured/str argument", |b| b.iter(|| captured(black_box(s.as_any()), 65536, "honeyhive_inputs.query").is_ok()));
        let meta = PyDict::new(py);
        meta.set_item("user", "u-42").unwrap();
        let nested = PyDict::new(py);
        nested.set_item("tokens", 812).unwrap();
        nested.set_item("cost", 0.0031).unwrap();
        meta.set_item("usage", nested).unwrap();
        meta.set_item("tags", PyList::new(py, ["a", "b"]).unwrap()).unwrap();
        c.bench_function("flatten/metadata (nested dict, list)", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(8);
                let _ = flatten("honeyhive_metadata", black_box(meta.as_any()), 65536, &mut out);
                out
            })
        });
    });
}

criterion_group!(attributes, benches);
criterion_main!(attributes);
