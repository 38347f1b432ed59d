//! Parsing and encoding of W3C traceparent and baggage.

use _core::__bench::{
    encode_baggage, interpret, parse_baggage, parse_traceparent, parse_tracestate, sign_context, Headers, Policy,
    Trust,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    c.bench_function("traceparent/valid", |b| b.iter(|| parse_traceparent(black_box(tp))));
    c.bench_function("traceparent/garbage", |b| {
        b.iter(|| parse_traceparent(black_box("not-a-traceparent-at-all-but-long-enough-to-look-at-it")))
    });
    let three = vec!["session_id=3f1c9d2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b,project=agents,source=prod".to_string()];
    c.bench_function("baggage/3 keys", |b| b.iter(|| parse_baggage(black_box(&three))));
    let many = vec![(0..64).map(|i| format!("key{i}=value%20{i}")).collect::<Vec<_>>().join(",")];
    c.bench_function("baggage/64 keys", |b| b.iter(|| parse_baggage(black_box(&many))));
    let huge = vec![format!("a=1,{}", "x".repeat(1 << 20))];
    c.bench_function("baggage/1 MB header (rejected)", |b| b.iter(|| parse_baggage(black_box(&huge))));
    let entries: Vec<(String, String, String)> = [
        ("session_id", "3f1c9d2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
        ("project", "agents"),
        ("source", "prod"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string(), String::new()))
    .collect();
    c.bench_function("baggage/encode 3 keys", |b| b.iter(|| encode_baggage(black_box(&entries))));
    let state = vec!["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_string()];
    c.bench_function("tracestate/2 members", |b| b.iter(|| parse_tracestate(black_box(&state))));
    // A whole incoming request as the server reads it: traceparent, tracestate and a
    // 3-key baggage through the policy (aliases, validation), without and with a secret.
    let request = Headers {
        traceparent: vec![tp.to_string()],
        tracestate: state.clone(),
        baggage: three.clone(),
    };
    let plain = Policy { trust: Trust::Continue, require_uuid: false, secret: None, max_age: 300 };
    c.bench_function("incoming/traceparent + tracestate + 3-key baggage", |b| {
        b.iter(|| interpret(black_box(&request), &plain).baggage.len())
    });
    const SECRET: &str = "a-long-enough-shared-secret";
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sig = sign_context(SECRET, now, "3f1c9d2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "agents", "prod");
    let signed = Headers {
        traceparent: vec![tp.to_string()],
        tracestate: state,
        baggage: vec![format!("session_id=3f1c9d2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b;sig={sig},project=agents,source=prod")],
    };
    let secret = Policy { trust: Trust::Continue, require_uuid: false, secret: Some(SECRET), max_age: 300 };
    c.bench_function("incoming/the same, signed", |b| {
        b.iter(|| interpret(black_box(&signed), &secret).baggage.len())
    });
}

criterion_group!(propagation, benches);
criterion_main!(propagation);
