//! Python value -> attribute JSON (the capture path of @trace).

use _core::__bench::to_json_text;
use criterion::{criterion_group, criterion_main, Criterion};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    Python::initialize();
    Python::attach(|py| {
        let small = PyDict::new(py);
        small.set_item("answer", "Paris").unwrap();
        small.set_item("tokens", 12).unwrap();
        small.set_item("score", 0.93).unwrap();
        c.bench_function("json/small dict", |b| b.iter(|| to_json_text(black_box(small.as_any()), 65536)));

        let rows = PyList::empty(py);
        for i in 0..1000 {
            let d = PyDict::new(py);
            d.set_item("id", i).unwrap();
            d.set_item("text", "lorem ipsum dolor sit amet").unwrap();
            rows.append(d).unwrap();
        }
        c.bench_function("json/1000 rows (within 64 KiB budget)", |b| {
            b.iter(|| to_json_text(black_box(rows.as_any()), 65536))
        });
        let big = "x".repeat(1 << 20);
        let s = pyo3::types::PyString::new(py, &big);
        c.bench_function("json/1 MB string (cut to 64 KiB)", |b| {
            b.iter(|| to_json_text(black_box(s.as_any()), 65536))
        });
    });
}

criterion_group!(serialize, benches);
criterion_main!(serialize);
