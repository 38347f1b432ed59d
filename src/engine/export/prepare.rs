//! Final touches on the export path (the background thread): de-duplicated
//! attributes, the `session.id` and traceloop twins of the session stamps, `*_raw`
//! copies, the event type when absent, and `honeyhive_duration_ms`.

use crate::engine::keys::{
    DURATION_MS, EVENT_TYPE, FRAMEWORK_SESSION_ID, OTEL_SESSION_ID, TL_PARENT_ID, TL_PROJECT,
    TL_SESSION_ID, TL_SOURCE,
};
use opentelemetry::trace::SpanKind;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

/// Last write wins, at the position of the first write (Python dict semantics).
/// The SDK appends on every `set_attribute`; this runs off the hot path, at export.
pub fn dedup(attrs: &mut Vec<KeyValue>) {
    let n = attrs.len();
    if n < 2 {
        return;
    }
    let has_dup = if n <= 16 {
        (1..n).any(|i| attrs[..i].iter().any(|a| a.key == attrs[i].key))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(n);
        attrs.iter().any(|a| !seen.insert(a.key.as_str()))
    };
    if !has_dup {
        return;
    }
    let mut index: std::collections::HashMap<Key, usize> =
        std::collections::HashMap::with_capacity(n);
    let mut out: Vec<KeyValue> = Vec::with_capacity(n);
    for kv in attrs.drain(..) {
        if let Some(&i) = index.get(&kv.key) {
            out[i].value = kv.value;
        } else {
            index.insert(kv.key.clone(), out.len());
            out.push(kv);
        }
    }
    *attrs = out;
}

/// HoneyHive event type from a span's attributes (its OpenTelemetry GenAI or
/// OpenInference kind, else `model` when a model is named, else `tool`), without
/// HoneyHive 1.7's span-name heuristic, which labels ordinary functions as `model`.
fn event_type_from(op: Option<&Value>, oi: Option<&Value>, llm: bool) -> &'static str {
    if let Some(op) = op {
        match op.as_str().as_ref() {
            "chat" | "text_completion" | "generate_content" | "embeddings" => return "model",
            "invoke_agent" | "create_agent" | "invoke_workflow" => return "chain",
            "execute_tool" | "retrieval" => return "tool",
            _ => {}
        }
    }
    if let Some(kind) = oi {
        return match kind.as_str().to_ascii_uppercase().as_str() {
            "LLM" => "model",
            "CHAIN" | "AGENT" => "chain",
            _ => "tool",
        };
    }
    if llm {
        return "model";
    }
    "tool"
}

/// Final touches on the export path (background thread): de-duplicate, add the
/// `session.id` and traceloop twins of the session stamps, copy `*_raw` attributes to
/// unset base keys, set the event type when absent, and `honeyhive_duration_ms`.
/// One classification pass over the attributes.
pub fn prepare(span: &mut SpanData, openinference: bool) {
    dedup(&mut span.attributes);
    let attrs = &span.attributes;
    let (mut sid, mut project, mut source, mut parent) = (None, None, None, None);
    let mut otel_sid_at = None;
    let (mut otel_sid, mut tl_sid, mut tl_project, mut tl_source, mut tl_parent) =
        (false, false, false, false, false);
    let (mut event_type, mut duration, mut any_raw, mut llm) = (false, false, false, false);
    let (mut op, mut oi) = (None, None);
    for (i, kv) in attrs.iter().enumerate() {
        match kv.key.as_str() {
            "honeyhive.session_id" => sid = Some(i),
            "honeyhive.project" => project = Some(i),
            "honeyhive.source" => source = Some(i),
            "honeyhive.parent_id" => parent = Some(i),
            "session.id" => {
                otel_sid = true;
                otel_sid_at = Some(i);
            }
            "traceloop.association.properties.session_id" => tl_sid = true,
            "traceloop.association.properties.project" => tl_project = true,
            "traceloop.association.properties.source" => tl_source = true,
            "traceloop.association.properties.parent_id" => tl_parent = true,
            "honeyhive_event_type" => event_type = true,
            "honeyhive_duration_ms" => duration = true,
            "gen_ai.operation.name" => op = Some(i),
            "openinference.span.kind" => oi = Some(i),
            "gen_ai.request.model"
            | "gen_ai.system"
            | "llm.request.model"
            | "llm.model_name"
            | "gen_ai.response.model" => llm = true,
            k if k.ends_with("_raw") => any_raw = true,
            _ => {}
        }
    }
    let mut extra: Vec<KeyValue> = Vec::with_capacity(7);
    // A `session.id` other code set that is not the span's session (the caller's, or
    // an explicit one): the session wins, the other id is kept under another key.
    let mut fix_sid = None;
    if let (Some(s), Some(o)) = (sid, otel_sid_at) {
        if attrs[s].value != attrs[o].value {
            fix_sid = Some((o, attrs[s].value.clone()));
            extra.push(KeyValue::new(FRAMEWORK_SESSION_ID, attrs[o].value.clone()));
        }
    }
    let twin = |extra: &mut Vec<KeyValue>, idx: Option<usize>, present: bool, key: &Key| {
        if let (Some(i), false) = (idx, present) {
            extra.push(KeyValue::new(key.clone(), attrs[i].value.clone()));
        }
    };
    twin(&mut extra, sid, otel_sid, &OTEL_SESSION_ID);
    twin(&mut extra, sid, tl_sid, &TL_SESSION_ID);
    twin(&mut extra, project, tl_project, &TL_PROJECT);
    twin(&mut extra, source, tl_source, &TL_SOURCE);
    twin(&mut extra, parent, tl_parent, &TL_PARENT_ID);
    if any_raw {
        for kv in attrs {
            if let Some(base) = kv.key.as_str().strip_suffix("_raw") {
                if !base.is_empty() && !attrs.iter().any(|o| o.key.as_str() == base) {
                    extra.push(KeyValue::new(base.to_string(), kv.value.clone()));
                }
            }
        }
    }
    let event = if event_type {
        None
    } else {
        let t = event_type_from(
            op.map(|i| &attrs[i].value),
            oi.map(|i| &attrs[i].value),
            llm,
        );
        extra.push(KeyValue::new(EVENT_TYPE, t));
        Some(t)
    };
    if openinference {
        let t = event.unwrap_or_else(|| {
            attrs
                .iter()
                .find(|kv| kv.key == EVENT_TYPE)
                .map_or("tool", |kv| oi_event(kv.value.as_str().as_ref()))
        });
        open_inference(attrs, t, oi.is_some(), &mut extra);
    }
    if !duration {
        let ms = span
            .end_time
            .duration_since(span.start_time)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        extra.push(KeyValue::new(DURATION_MS, ms));
    }
    if let Some((o, session)) = fix_sid {
        span.attributes[o].value = session;
    }
    span.attributes.extend(extra);
}

/// An event type read from a span as one of the static names `oi_kind` knows.
fn oi_event(t: &str) -> &'static str {
    match t {
        "model" => "model",
        "chain" => "chain",
        "session" => "session",
        _ => "tool",
    }
}

/// OpenInference's attributes (what Arize Phoenix reads, and MLflow's OTLP ingestion
/// translates into its span inputs, outputs and type): the span kind from the event
/// type, `input.value` (an object of the captured inputs, in their order) and
/// `output.value` with their mime types, `user.id`. Any already set are kept.
fn open_inference(attrs: &[KeyValue], event_type: &str, has_kind: bool, extra: &mut Vec<KeyValue>) {
    let (mut has_input, mut has_output, mut has_user) = (false, false, false);
    let (mut inputs, mut output, mut user) = (false, None, None);
    for kv in attrs {
        match kv.key.as_str() {
            "input.value" => has_input = true,
            "output.value" => has_output = true,
            "user.id" => has_user = true,
            "honeyhive_outputs.result" => output = Some(&kv.value),
            "honeyhive_user_properties.user_id" => user = Some(&kv.value),
            k if k.starts_with("honeyhive_inputs.") => inputs = true,
            _ => {}
        }
    }
    if !has_kind {
        extra.push(KeyValue::new(
            "openinference.span.kind",
            oi_kind(event_type),
        ));
    }
    if inputs && !has_input {
        // An object of the inputs in the order they were captured (the arguments').
        let mut text = String::from("{");
        for kv in attrs {
            if let Some(name) = kv.key.as_str().strip_prefix("honeyhive_inputs.") {
                if text.len() > 1 {
                    text.push(',');
                }
                text.push_str(&serde_json::Value::from(name).to_string());
                text.push(':');
                text.push_str(&json_of(&kv.value).to_string());
            }
        }
        text.push('}');
        extra.push(KeyValue::new("input.value", text));
        extra.push(KeyValue::new("input.mime_type", "application/json"));
    }
    if let (Some(v), false) = (output, has_output) {
        let (text, mime) = match json_of(v) {
            serde_json::Value::String(s) => (s, "text/plain"),
            other => (other.to_string(), "application/json"),
        };
        extra.push(KeyValue::new("output.value", text));
        extra.push(KeyValue::new("output.mime_type", mime));
    }
    if let (Some(v), false) = (user, has_user) {
        extra.push(KeyValue::new("user.id", v.as_str().into_owned()));
    }
}

/// OpenInference's span kind for a HoneyHive event type.
fn oi_kind(event_type: &str) -> &'static str {
    match event_type {
        "model" => "LLM",
        "chain" | "session" => "CHAIN",
        _ => "TOOL",
    }
}

/// A captured attribute value as JSON: structured values are captured as JSON text,
/// so a string that parses as a JSON object or array is that value; other strings,
/// numbers and lists are themselves.
fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => {
            let s = s.as_str();
            if s.starts_with('{') || s.starts_with('[') {
                if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(s) {
                    return parsed;
                }
            }
            serde_json::Value::String(s.to_string())
        }
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::I64(i) => serde_json::Value::from(*i),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or_else(
            || serde_json::Value::String(f.to_string()),
            serde_json::Value::Number,
        ),
        Value::Array(a) => serde_json::Value::String(a.to_string()),
        _ => serde_json::Value::Null,
    }
}

pub fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Internal => "INTERNAL",
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
    }
}
