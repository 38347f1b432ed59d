//! OTLP protobuf encoding written directly from `SpanData`.
//!
//! The generic path (SpanData -> opentelemetry-proto structs -> prost) allocates a
//! String and a value object per attribute and re-walks nested messages to size them;
//! on the export thread that cost more than creating the span did. This encoder
//! writes the same bytes in two passes (sizes, then content) into one buffer, with no
//! intermediate objects. A test checks that prost decodes it to exactly what the
//! opentelemetry-proto transform produces.

use crate::engine::propagation::traceparent;
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use std::time::{SystemTime, UNIX_EPOCH};

const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const FIXED32: u8 = 5;

#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

#[inline]
fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, u64::from((field << 3) | u32::from(wire)));
}

/// Size of a length-delimited field holding `n` bytes.
#[inline]
fn ld(field: u32, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

#[inline]
fn put_ld(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A string field (proto3: omitted when empty).
#[inline]
fn str_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        ld(field, s.len())
    }
}

#[inline]
fn put_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_ld(buf, field, s.as_bytes());
    }
}

#[inline]
fn u32_len(field: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        tag_len(field) + varint_len(u64::from(v))
    }
}

#[inline]
fn put_u32(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        put_tag(buf, field, VARINT);
        put_varint(buf, u64::from(v));
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// -- AnyValue / KeyValue ----------------------------------------------------------------

fn scalar_len(v: &Value) -> usize {
    // Content of an AnyValue message (oneof: always written, even when zero).
    match v {
        Value::String(s) => ld(1, s.as_str().len()),
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + varint_len(*i as u64),
        Value::F64(_) => 9,
        Value::Array(a) => ld(5, array_len(a)),
        _ => 0,
    }
}

fn array_len(a: &Array) -> usize {
    // ArrayValue { repeated AnyValue values = 1 }
    match a {
        Array::Bool(x) => x.len() * ld(1, 2),
        Array::I64(x) => x.iter().map(|i| ld(1, 1 + varint_len(*i as u64))).sum(),
        Array::F64(x) => x.len() * ld(1, 9),
        Array::String(x) => x.iter().map(|s| ld(1, ld(1, s.as_str().len()))).sum(),
        _ => 0,
    }
}

fn put_scalar(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => put_ld(buf, 1, s.as_str().as_bytes()),
        Value::Bool(b) => {
            put_tag(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::I64(i) => {
            put_tag(buf, 3, VARINT);
            put_varint(buf, *i as u64);
        }
        Value::F64(f) => {
            put_tag(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::Array(a) => {
            put_tag(buf, 5, LEN);
            put_varint(buf, array_len(a) as u64);
            match a {
                Array::Bool(x) => {
                    for b in x {
                        put_ld(buf, 1, &[0x10, u8::from(*b)]);
                    }
                }
                Array::I64(x) => {
                    for i in x {
                        put_tag(buf, 1, LEN);
                        put_varint(buf, (1 + varint_len(*i as u64)) as u64);
                        put_tag(buf, 3, VARINT);
                        put_varint(buf, *i as u64);
                    }
                }
                Array::F64(x) => {
                    for f in x {
                        put_tag(buf, 1, LEN);
                        put_varint(buf, 9);
                        put_tag(buf, 4, FIXED64);
                        buf.extend_from_slice(&f.to_le_bytes());
                    }
                }
                Array::String(x) => {
                    for s in x {
                        put_tag(buf, 1, LEN);
                        put_varint(buf, ld(1, s.as_str().len()) as u64);
                        put_ld(buf, 1, s.as_str().as_bytes());
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Content size of a KeyValue message.
fn kv_len(kv: &KeyValue) -> usize {
    str_len(1, kv.key.as_str()) + ld(2, scalar_len(&kv.value))
}

fn attrs_len(field: u32, attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| ld(field, kv_len(kv))).sum()
}

fn put_attrs(buf: &mut Vec<u8>, field: u32, attrs: &[KeyValue]) {
    for kv in attrs {
        let key = kv.key.as_str();
        let value_len = scalar_len(&kv.value);
        put_tag(buf, field, LEN);
        put_varint(buf, (str_len(1, key) + ld(2, value_len)) as u64);
        put_str(buf, 1, key);
        put_tag(buf, 2, LEN);
        put_varint(buf, value_len as u64);
        put_scalar(buf, &kv.value);
    }
}

// -- Span -----------------------------------------------------------------------------------

fn span_flags(parent_remote: bool, trace_flags: u8) -> u32 {
    // OTLP: HAS_IS_REMOTE (0x100) always, IS_REMOTE (0x200) for a remote parent.
    u32::from(trace_flags) | 0x100 | if parent_remote { 0x200 } else { 0 }
}

fn kind_number(k: &SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn status_parts(s: &Status) -> (u64, &str) {
    match s {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    }
}

fn status_len(s: &Status) -> usize {
    let (code, msg) = status_parts(s);
    str_len(2, msg) + if code == 0 { 0 } else { 1 + varint_len(code) }
}

fn span_len(s: &SpanData, trace_state: &str) -> usize {
    let mut n = ld(1, 16) + ld(2, 8) + str_len(3, trace_state);
    if s.parent_span_id != SpanId::INVALID {
        n += ld(4, 8);
    }
    n += str_len(5, &s.name);
    n += 1 + varint_len(kind_number(&s.span_kind));
    n += 2 * 9; // start/end fixed64
    n += attrs_len(9, &s.attributes);
    n += u32_len(10, s.dropped_attributes_count);
    for e in s.events.iter() {
        n += ld(11, event_len(e));
    }
    n += u32_len(12, s.events.dropped_count);
    for l in s.links.iter() {
        n += ld(13, link_len(l));
    }
    n += u32_len(14, s.links.dropped_count);
    n += ld(15, status_len(&s.status));
    n += tag_len(16) + 4; // flags fixed32
    n
}

fn event_len(e: &opentelemetry::trace::Event) -> usize {
    9 + str_len(2, &e.name) + attrs_len(3, &e.attributes) + u32_len(4, e.dropped_attributes_count)
}

fn link_len(l: &opentelemetry::trace::Link) -> usize {
    ld(1, 16)
        + ld(2, 8)
        + str_len(3, &traceparent::state_header(l.span_context.trace_state()))
        + attrs_len(4, &l.attributes)
        + u32_len(5, l.dropped_attributes_count)
        + 5
}

fn put_span(buf: &mut Vec<u8>, s: &SpanData, len: usize, trace_state: &str) {
    put_tag(buf, 2, LEN); // ScopeSpans.spans
    put_varint(buf, len as u64);
    put_ld(buf, 1, &s.span_context.trace_id().to_bytes());
    put_ld(buf, 2, &s.span_context.span_id().to_bytes());
    put_str(buf, 3, trace_state);
    if s.parent_span_id != SpanId::INVALID {
        put_ld(buf, 4, &s.parent_span_id.to_bytes());
    }
    put_str(buf, 5, &s.name);
    put_tag(buf, 6, VARINT);
    put_varint(buf, kind_number(&s.span_kind));
    put_tag(buf, 7, FIXED64);
    buf.extend_from_slice(&nanos(s.start_time).to_le_bytes());
    put_tag(buf, 8, FIXED64);
    buf.extend_from_slice(&nanos(s.end_time).to_le_bytes());
    put_attrs(buf, 9, &s.attributes);
    put_u32(buf, 10, s.dropped_attributes_count);
    for e in s.events.iter() {
        put_tag(buf, 11, LEN);
        put_varint(buf, event_len(e) as u64);
        put_tag(buf, 1, FIXED64);
        buf.extend_from_slice(&nanos(e.timestamp).to_le_bytes());
        put_str(buf, 2, &e.name);
        put_attrs(buf, 3, &e.attributes);
        put_u32(buf, 4, e.dropped_attributes_count);
    }
    put_u32(buf, 12, s.events.dropped_count);
    for l in s.links.iter() {
        put_tag(buf, 13, LEN);
        put_varint(buf, link_len(l) as u64);
        put_ld(buf, 1, &l.span_context.trace_id().to_bytes());
        put_ld(buf, 2, &l.span_context.span_id().to_bytes());
        put_str(
            buf,
            3,
            &traceparent::state_header(l.span_context.trace_state()),
        );
        put_attrs(buf, 4, &l.attributes);
        put_u32(buf, 5, l.dropped_attributes_count);
        put_tag(buf, 6, FIXED32);
        let flags = span_flags(
            l.span_context.is_remote(),
            l.span_context.trace_flags().to_u8(),
        );
        buf.extend_from_slice(&flags.to_le_bytes());
    }
    put_u32(buf, 14, s.links.dropped_count);
    let (code, msg) = status_parts(&s.status);
    put_tag(buf, 15, LEN);
    put_varint(buf, status_len(&s.status) as u64);
    put_str(buf, 2, msg);
    if code != 0 {
        put_tag(buf, 3, VARINT);
        put_varint(buf, code);
    }
    put_tag(buf, 16, FIXED32);
    let flags = span_flags(
        s.parent_span_is_remote,
        s.span_context.trace_flags().to_u8(),
    );
    buf.extend_from_slice(&flags.to_le_bytes());
}

// -- Scope / Resource / Request ---------------------------------------------------------

fn scope_len(scope: &InstrumentationScope) -> usize {
    str_len(1, scope.name())
        + scope.version().map_or(0, |v| str_len(2, v))
        + scope
            .attributes()
            .map(|kv| ld(3, kv_len(kv)))
            .sum::<usize>()
}

fn put_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    put_tag(buf, 1, LEN);
    put_varint(buf, scope_len(scope) as u64);
    put_str(buf, 1, scope.name());
    if let Some(v) = scope.version() {
        put_str(buf, 2, v);
    }
    for kv in scope.attributes() {
        put_tag(buf, 3, LEN);
        put_varint(buf, kv_len(kv) as u64);
        put_str(buf, 1, kv.key.as_str());
        put_tag(buf, 2, LEN);
        put_varint(buf, scalar_len(&kv.value) as u64);
        put_scalar(buf, &kv.value);
    }
}

/// Encode one ExportTraceServiceRequest (one ResourceSpans, one ScopeSpans per scope).
/// Spans must already have been through `processor::prepare`.
pub fn request(spans: &[SpanData], resource: &[KeyValue], buf: &mut Vec<u8>) {
    buf.clear();
    // Group by instrumentation scope, keeping first-seen order.
    let mut groups: Vec<(&InstrumentationScope, Vec<usize>)> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|(sc, _)| **sc == s.instrumentation_scope)
        {
            Some((_, idx)) => idx.push(i),
            None => groups.push((&s.instrumentation_scope, vec![i])),
        }
    }
    let states: Vec<String> = spans
        .iter()
        .map(|s| traceparent::state_header(s.span_context.trace_state()))
        .collect();
    let span_lens: Vec<usize> = spans
        .iter()
        .zip(&states)
        .map(|(s, st)| span_len(s, st))
        .collect();
    let scope_lens: Vec<usize> = groups
        .iter()
        .map(|(scope, idx)| {
            ld(1, scope_len(scope)) + idx.iter().map(|&i| ld(2, span_lens[i])).sum::<usize>()
        })
        .collect();
    let resource_len = attrs_len(1, resource);
    let rs_len = ld(1, resource_len) + scope_lens.iter().map(|&n| ld(2, n)).sum::<usize>();

    buf.reserve(ld(1, rs_len));
    put_tag(buf, 1, LEN); // ExportTraceServiceRequest.resource_spans
    put_varint(buf, rs_len as u64);
    put_tag(buf, 1, LEN); // ResourceSpans.resource
    put_varint(buf, resource_len as u64);
    put_attrs(buf, 1, resource);
    for ((scope, idx), &slen) in groups.iter().zip(&scope_lens) {
        put_tag(buf, 2, LEN); // ResourceSpans.scope_spans
        put_varint(buf, slen as u64);
        put_scope(buf, scope);
        for &i in idx {
            put_span(buf, &spans[i], span_lens[i], &states[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Array, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use opentelemetry_sdk::Resource;
    use prost::Message;
    use std::str::FromStr;
    use std::time::Duration;

    fn span(i: u64, scope: &str, remote_parent: bool) -> SpanData {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + i);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "exception",
            t,
            vec![
                KeyValue::new("exception.message", "boom"),
                KeyValue::new("n", -5),
            ],
            1,
        ));
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                TraceFlags::SAMPLED,
                true,
                TraceState::from_str("a=1").unwrap(),
            ),
            vec![KeyValue::new("why", "restart")],
            0,
        ));
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c + u128::from(i)),
                SpanId::from(0xb7ad_6b71_6920_3331 + i),
                TraceFlags::SAMPLED,
                false,
                if i % 2 == 0 {
                    TraceState::from_str("vendor=x,other=y").unwrap()
                } else {
                    TraceState::default()
                },
            ),
            parent_span_id: if i % 3 == 0 {
                SpanId::INVALID
            } else {
                SpanId::from(42 + i)
            },
            parent_span_is_remote: remote_parent,
            span_kind: [SpanKind::Internal, SpanKind::Server, SpanKind::Client][i as usize % 3]
                .clone(),
            name: format!("span-{i}").into(),
            start_time: t,
            end_time: t + Duration::from_micros(5),
            attributes: vec![
                KeyValue::new("s", "text ü"),
                KeyValue::new("empty", ""),
                KeyValue::new("b", true),
                KeyValue::new("f", false),
                KeyValue::new("i", i as i64),
                KeyValue::new("neg", -1_i64),
                KeyValue::new("d", 1.5),
                KeyValue::new("zero", 0.0),
                KeyValue::new(
                    "arr_s",
                    Value::Array(Array::String(vec![
                        StringValue::from("a"),
                        StringValue::from(""),
                    ])),
                ),
                KeyValue::new("arr_i", Value::Array(Array::I64(vec![1, -2, 300]))),
                KeyValue::new("arr_b", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("arr_f", Value::Array(Array::F64(vec![0.5]))),
                KeyValue::new("long", "x".repeat(300)),
            ],
            dropped_attributes_count: (i % 2) as u32,
            events,
            links,
            status: [Status::Unset, Status::Ok, Status::error("bad thing")][i as usize % 3].clone(),
            instrumentation_scope: InstrumentationScope::builder(scope.to_string())
                .with_version("1.0")
                .with_attributes([KeyValue::new("scope.attr", 1)])
                .build(),
        }
    }

    #[test]
    fn decodes_to_what_the_generic_transform_produces() {
        let spans: Vec<SpanData> = (0..12)
            .map(|i| {
                span(
                    i,
                    if i % 4 == 0 { "other" } else { "honeytrace" },
                    i % 5 == 0,
                )
            })
            .collect();
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "svc"), KeyValue::new("n", 3)])
            .build();
        let mut buf = Vec::new();
        let attrs: Vec<KeyValue> = resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        request(&spans, &attrs, &mut buf);
        let ours = ExportTraceServiceRequest::decode(buf.as_slice()).expect("valid protobuf");
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        // Resource attribute order can differ (the resource is a map): compare sorted.
        let mut a = ours.clone();
        let mut b = expected.clone();
        for r in a
            .resource_spans
            .iter_mut()
            .chain(b.resource_spans.iter_mut())
        {
            if let Some(res) = r.resource.as_mut() {
                res.attributes.sort_by(|x, y| x.key.cmp(&y.key));
            }
        }
        assert_eq!(a, b);
    }

    #[test]
    fn varints() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
