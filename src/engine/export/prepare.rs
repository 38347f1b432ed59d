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

/// Where the attributes `prepare` looks at are, found in one pass.
#[derive(Default)]
struct Seen {
    sid: Option<usize>,
    project: Option<usize>,
    source: Option<usize>,
    parent: Option<usize>,
    otel_sid: Option<usize>,
    tl_sid: bool,
    tl_project: bool,
    tl_source: bool,
    tl_parent: bool,
    event_type: Option<usize>,
    duration: bool,
    any_raw: bool,
    llm: bool,
    op: Option<usize>,
    oi: Option<usize>,
    // OpenInference's
    inputs: bool,
    output: Option<usize>,
    user: Option<usize>,
    has_input: bool,
    has_output: bool,
    has_user: bool,
}

impl Seen {
    fn of(attrs: &[KeyValue]) -> Seen {
        let mut s = Seen::default();
        for (i, kv) in attrs.iter().enumerate() {
            match kv.key.as_str() {
                "honeyhive.session_id" => s.sid = Some(i),
                "honeyhive.project" => s.project = Some(i),
                "honeyhive.source" => s.source = Some(i),
                "honeyhive.parent_id" => s.parent = Some(i),
                "session.id" => s.otel_sid = Some(i),
                "traceloop.association.properties.session_id" => s.tl_sid = true,
                "traceloop.association.properties.project" => s.tl_project = true,
                "traceloop.association.properties.source" => s.tl_source = true,
                "traceloop.association.properties.parent_id" => s.tl_parent = true,
                "honeyhive_event_type" => s.event_type = Some(i),
                "honeyhive_duration_ms" => s.duration = true,
                "gen_ai.operation.name" => s.op = Some(i),
                "openinference.span.kind" => s.oi = Some(i),
                "gen_ai.request.model"
                | "gen_ai.system"
                | "llm.request.model"
                | "llm.model_name"
                | "gen_ai.response.model" => s.llm = true,
                "honeyhive_outputs.result" => s.output = Some(i),
                "honeyhive_user_properties.user_id" => s.user = Some(i),
                "input.value" => s.has_input = true,
                "output.value" => s.has_output = true,
                "user.id" => s.has_user = true,
                k if k.starts_with("honeyhive_inputs.") => s.inputs = true,
                k if k.ends_with("_raw") => s.any_raw = true,
                _ => {}
            }
        }
        s
    }
}

/// Final touches on the export path (background thread): de-duplicate, add the
/// `session.id` and traceloop twins of the session stamps, copy `*_raw` attributes to
/// unset base keys, set the event type when absent, `honeyhive_duration_ms`, and
/// OpenInference's attributes (`openinference`). One classification pass over the
/// attributes.
pub fn prepare(span: &mut SpanData, openinference: bool) {
    dedup(&mut span.attributes);
    let attrs = &span.attributes;
    let seen = Seen::of(attrs);
    let mut extra: Vec<KeyValue> = Vec::with_capacity(8);
    // A `session.id` other code set that is not the span's session (the caller's, or
    // an explicit one): the session wins, the other id is kept under another key.
    let mut fix_sid = None;
    if let (Some(s), Some(o)) = (seen.sid, seen.otel_sid) {
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
    twin(
        &mut extra,
        seen.sid,
        seen.otel_sid.is_some(),
        &OTEL_SESSION_ID,
    );
    twin(&mut extra, seen.sid, seen.tl_sid, &TL_SESSION_ID);
    twin(&mut extra, seen.project, seen.tl_project, &TL_PROJECT);
    twin(&mut extra, seen.source, seen.tl_source, &TL_SOURCE);
    twin(&mut extra, seen.parent, seen.tl_parent, &TL_PARENT_ID);
    if seen.any_raw {
        for kv in attrs {
            if let Some(base) = kv.key.as_str().strip_suffix("_raw") {
                if !base.is_empty() && !attrs.iter().any(|o| o.key.as_str() == base) {
                    extra.push(KeyValue::new(base.to_string(), kv.value.clone()));
                }
            }
        }
    }
    let event = if let Some(i) = seen.event_type {
        oi_event(attrs[i].value.as_str().as_ref())
    } else {
        let t = event_type_from(
            seen.op.map(|i| &attrs[i].value),
            seen.oi.map(|i| &attrs[i].value),
            seen.llm,
        );
        extra.push(KeyValue::new(EVENT_TYPE, t));
        t
    };
    if openinference {
        open_inference(attrs, &seen, event, &mut extra);
    }
    if !seen.duration {
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
fn open_inference(attrs: &[KeyValue], seen: &Seen, event_type: &str, extra: &mut Vec<KeyValue>) {
    if seen.oi.is_none() {
        extra.push(KeyValue::new(
            "openinference.span.kind",
            oi_kind(event_type),
        ));
    }
    if seen.inputs && !seen.has_input {
        // An object of the inputs in the order they were captured (the arguments').
        let mut text = String::from("{");
        for kv in attrs {
            if let Some(name) = kv.key.as_str().strip_prefix("honeyhive_inputs.") {
                if text.len() > 1 {
                    text.push(',');
                }
                push_json_str(&mut text, name);
                text.push(':');
                push_json(&mut text, &kv.value);
            }
        }
        text.push('}');
        extra.push(KeyValue::new("input.value", text));
        extra.push(KeyValue::new("input.mime_type", "application/json"));
    }
    if let (Some(i), false) = (seen.output, seen.has_output) {
        let v = &attrs[i].value;
        let (value, mime) = match v {
            Value::String(s) if !is_json(s.as_str()) => (v.clone(), "text/plain"),
            _ => {
                let mut text = String::new();
                push_json(&mut text, v);
                (Value::from(text), "application/json")
            }
        };
        extra.push(KeyValue::new("output.value", value));
        extra.push(KeyValue::new("output.mime_type", mime));
    }
    if let (Some(i), false) = (seen.user, seen.has_user) {
        extra.push(KeyValue::new("user.id", attrs[i].value.clone()));
    }
}

/// Structured values are captured as JSON text: a string that is a JSON object or
/// array is taken as that value (a string that only looks like one is text).
fn is_json(s: &str) -> bool {
    (s.starts_with('{') || s.starts_with('['))
        && serde_json::from_str::<serde_json::Value>(s).is_ok()
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// A captured attribute value as JSON text (captured JSON as it is: not re-encoded).
fn push_json(out: &mut String, v: &Value) {
    match v {
        Value::String(s) if is_json(s.as_str()) => out.push_str(s.as_str()),
        Value::String(s) => push_json_str(out, s.as_str()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I64(i) => out.push_str(&i.to_string()),
        Value::F64(f) if f.is_finite() => out.push_str(&f.to_string()),
        other => push_json_str(out, other.as_str().as_ref()),
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

pub fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Internal => "INTERNAL",
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
    }
}
