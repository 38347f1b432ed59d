//! The HoneyHive span processor.
//!
//! At start (`Stamper::stamp`, on the caller's thread, before the SDK span is built):
//! session id, project and source with the priority explicit-on-the-span > baggage >
//! tracer, their `session.id` and `traceloop.association.properties.*` twins,
//! `honeyhive.parent_id` from baggage, evaluation ids as `honeyhive_metadata.*`, and
//! allow-listed baggage keys as `baggage.<k>`. Every span gets a session id.
//!
//! At end (`HoneyHiveProcessor::on_end`): span-name filters, then the export queue.
//! (Spans are built as the SDK's `SpanData` directly, so the engine calls this rather
//! than the SDK's `SpanProcessor` trait.)
//!
//! At export (`prepare`, on the background thread): attributes de-duplicated and the
//! event type inferred from the span's final attributes.

use crate::attributes;
use crate::config::{Config, NameMatcher};
use crate::export::{Pipeline, Stats};
use opentelemetry::trace::SpanKind;
use opentelemetry::{Key, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::SpanData;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::fmt;
use std::sync::{Arc, Mutex};

pub const SESSION_ID: Key = Key::from_static_str("honeyhive.session_id");
pub const PROJECT: Key = Key::from_static_str("honeyhive.project");
pub const SOURCE: Key = Key::from_static_str("honeyhive.source");
pub const PARENT_ID: Key = Key::from_static_str("honeyhive.parent_id");
pub const OTEL_SESSION_ID: Key = Key::from_static_str("session.id");
pub const TL_SESSION_ID: Key = Key::from_static_str("traceloop.association.properties.session_id");
pub const TL_PROJECT: Key = Key::from_static_str("traceloop.association.properties.project");
pub const TL_SOURCE: Key = Key::from_static_str("traceloop.association.properties.source");
pub const TL_PARENT_ID: Key = Key::from_static_str("traceloop.association.properties.parent_id");
pub const EVENT_TYPE: Key = Key::from_static_str("honeyhive_event_type");
pub const DURATION_MS: Key = Key::from_static_str("honeyhive_duration_ms");
const RUN_ID: Key = Key::from_static_str("honeyhive_metadata.run_id");
const DATASET_ID: Key = Key::from_static_str("honeyhive_metadata.dataset_id");
const DATAPOINT_ID: Key = Key::from_static_str("honeyhive_metadata.datapoint_id");

/// Session-related values found in a span's baggage, as shared attribute values.
#[derive(Default, Debug, Clone)]
pub struct Incoming {
    pub session_id: Option<Value>,
    pub project: Option<Value>,
    pub source: Option<Value>,
    pub parent_id: Option<Value>,
    pub run_id: Option<Value>,
    pub dataset_id: Option<Value>,
    pub datapoint_id: Option<Value>,
    pub extra: Vec<(Key, Value)>,
}

/// Explicit values for one span (a decorator's or enrich_span_context's arguments):
/// they win over baggage and the tracer.
#[derive(Default, Debug, Clone)]
pub struct Explicit {
    pub session_id: Option<Value>,
    pub project: Option<Value>,
    pub source: Option<Value>,
}

/// A tracer's defaults, as shared values (cloning one is a reference count).
pub struct Stamper {
    /// The last baggage dict read and what it held. Every span of a request sees the
    /// same dict object; holding a reference keeps its address from being reused.
    cache: Mutex<Option<(Py<PyDict>, Arc<Incoming>)>>,
    pub session_id: Value,
    pub project: Option<Value>,
    pub source: Value,
    run_id: Option<Value>,
    dataset_id: Option<Value>,
    datapoint_id: Option<Value>,
    allowlist: Vec<String>,
}

/// A string attribute value backed by an `Arc<str>`.
pub fn shared(s: &str) -> Value {
    Value::String(StringValue::from(Arc::<str>::from(s)))
}

fn text(v: Option<Bound<'_, PyAny>>) -> Option<String> {
    let v = v?;
    if v.is_none() {
        return None;
    }
    let s = match v.cast::<PyString>() {
        Ok(s) => crate::pystr::text(s).into_owned(),
        Err(_) => crate::pystr::text(&v.str().ok()?).into_owned(),
    };
    (!s.is_empty()).then_some(s)
}

fn has(attrs: &[KeyValue], key: &Key) -> bool {
    attrs.iter().any(|kv| &kv.key == key)
}

fn find<'a>(attrs: &'a [KeyValue], key: &Key) -> Option<&'a Value> {
    attrs
        .iter()
        .rev()
        .find(|kv| &kv.key == key)
        .map(|kv| &kv.value)
}

impl Stamper {
    pub fn new(cfg: &Config) -> Self {
        Stamper {
            cache: Mutex::new(None),
            // Interned: cloned into every span (see `intern`). Not the session id: a
            // tracer per session (HoneyHive's serverless pattern) would fill the intern
            // table with one-off ids.
            session_id: shared(&cfg.session_id),
            project: cfg.project.as_deref().map(crate::intern::value),
            source: crate::intern::value(&cfg.source),
            run_id: cfg.run_id.as_deref().map(crate::intern::value),
            dataset_id: cfg.dataset_id.as_deref().map(crate::intern::value),
            datapoint_id: cfg.datapoint_id.as_deref().map(crate::intern::value),
            allowlist: cfg.baggage_allowlist.clone(),
        }
    }

    pub fn read_baggage(&self, bag: Option<&Bound<'_, PyDict>>) -> Arc<Incoming> {
        static EMPTY: std::sync::OnceLock<Arc<Incoming>> = std::sync::OnceLock::new();
        let Some(bag) = bag.filter(|b| !b.is_empty()) else {
            return EMPTY.get_or_init(|| Arc::new(Incoming::default())).clone();
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((dict, inc)) = cache.as_ref() {
                if dict.as_ptr() == bag.as_ptr() {
                    return inc.clone();
                }
            }
        }
        let py = bag.py();
        let get =
            |k: &Bound<'_, PyString>| text(bag.get_item(k).ok().flatten()).map(|t| shared(&t));
        let inc = Arc::new(Incoming {
            session_id: get(intern!(py, "session_id")),
            project: get(intern!(py, "project")),
            source: get(intern!(py, "source")),
            parent_id: get(intern!(py, "parent_id")),
            run_id: get(intern!(py, "run_id")),
            dataset_id: get(intern!(py, "dataset_id")),
            datapoint_id: get(intern!(py, "datapoint_id")),
            extra: self
                .allowlist
                .iter()
                .filter_map(|k| {
                    let v = text(bag.get_item(k.as_str()).ok().flatten())?;
                    Some((Key::new(format!("baggage.{k}")), shared(&v)))
                })
                .collect(),
        });
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((bag.clone().unbind(), inc.clone()));
        inc
    }

    /// Add the session stamps to a new span's start attributes (the caller's thread:
    /// three values; their twins are added at export by `prepare`). `fresh`: the
    /// caller guarantees no stamp key is in `attrs` yet, so nothing is scanned.
    pub fn stamp(&self, attrs: &mut Vec<KeyValue>, inc: &Incoming, explicit: &Explicit) {
        self.stamp_with(attrs, inc, explicit, false)
    }

    pub fn stamp_with(
        &self,
        attrs: &mut Vec<KeyValue>,
        inc: &Incoming,
        explicit: &Explicit,
        fresh: bool,
    ) {
        let absent = |attrs: &Vec<KeyValue>, k: &Key| fresh || !has(attrs, k);
        if absent(attrs, &SESSION_ID) {
            let session = explicit
                .session_id
                .clone()
                .or_else(|| {
                    if fresh {
                        None
                    } else {
                        find(attrs, &OTEL_SESSION_ID).cloned()
                    }
                })
                .or_else(|| inc.session_id.clone())
                .unwrap_or_else(|| self.session_id.clone());
            attrs.push(KeyValue::new(SESSION_ID, session));
        }
        if absent(attrs, &PROJECT) {
            let project = explicit
                .project
                .clone()
                .or_else(|| inc.project.clone())
                .or_else(|| self.project.clone());
            if let Some(p) = project {
                attrs.push(KeyValue::new(PROJECT, p));
            }
        }
        if absent(attrs, &SOURCE) {
            let source = explicit
                .source
                .clone()
                .or_else(|| inc.source.clone())
                .unwrap_or_else(|| self.source.clone());
            attrs.push(KeyValue::new(SOURCE, source));
        }
        if let Some(p) = &inc.parent_id {
            if absent(attrs, &PARENT_ID) {
                attrs.push(KeyValue::new(PARENT_ID, p.clone()));
            }
        }
        for (key, from_bag, default) in [
            (RUN_ID, &inc.run_id, &self.run_id),
            (DATASET_ID, &inc.dataset_id, &self.dataset_id),
            (DATAPOINT_ID, &inc.datapoint_id, &self.datapoint_id),
        ] {
            if let Some(v) = from_bag.as_ref().or(default.as_ref()) {
                if absent(attrs, &key) {
                    attrs.push(KeyValue::new(key, v.clone()));
                }
            }
        }
        for (k, v) in &inc.extra {
            if absent(attrs, k) {
                attrs.push(KeyValue::new(k.clone(), v.clone()));
            }
        }
    }
}

/// True when `key` is one the stamper writes (so static attributes holding one must
/// not take the no-scan path).
pub fn is_stamp_key(key: &str) -> bool {
    matches!(
        key,
        "honeyhive.session_id"
            | "honeyhive.project"
            | "honeyhive.source"
            | "honeyhive.parent_id"
            | "session.id"
            | "honeyhive_metadata.run_id"
            | "honeyhive_metadata.dataset_id"
            | "honeyhive_metadata.datapoint_id"
    ) || key.starts_with("baggage.")
}

/// HoneyHive event type from a span's attributes (reference §4.3 rule 8), minus the
/// span-name heuristic, which labels ordinary functions as `model` (reference bug 13).
#[cfg(test)]
pub fn infer_event_type(attrs: &[KeyValue]) -> &'static str {
    let mut op = None;
    let mut oi = None;
    let mut llm = false;
    for kv in attrs {
        match kv.key.as_str() {
            "gen_ai.operation.name" => op = Some(&kv.value),
            "openinference.span.kind" => oi = Some(&kv.value),
            "gen_ai.request.model"
            | "gen_ai.system"
            | "llm.request.model"
            | "llm.model_name"
            | "gen_ai.response.model" => llm = true,
            _ => {}
        }
    }
    event_type_from(op, oi, llm)
}

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
pub fn prepare(span: &mut SpanData) {
    attributes::dedup(&mut span.attributes);
    let attrs = &span.attributes;
    let (mut sid, mut project, mut source, mut parent) = (None, None, None, None);
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
            "session.id" => otel_sid = true,
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
    if !event_type {
        let t = event_type_from(
            op.map(|i| &attrs[i].value),
            oi.map(|i| &attrs[i].value),
            llm,
        );
        extra.push(KeyValue::new(EVENT_TYPE, t));
    }
    if !duration {
        let ms = span
            .end_time
            .duration_since(span.start_time)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        extra.push(KeyValue::new(DURATION_MS, ms));
    }
    span.attributes.extend(extra);
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

/// The SDK span processor: filters, then the tracer's pipeline.
pub struct HoneyHiveProcessor {
    pub pipeline: Arc<Pipeline>,
    pub stats: Arc<Stats>,
    include: Vec<NameMatcher>,
    exclude: Vec<NameMatcher>,
}

impl fmt::Debug for Stamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stamper")
    }
}

impl fmt::Debug for HoneyHiveProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HoneyHiveProcessor")
    }
}

impl HoneyHiveProcessor {
    pub fn new(pipeline: Arc<Pipeline>, stats: Arc<Stats>, cfg: &Config) -> Self {
        HoneyHiveProcessor {
            pipeline,
            stats,
            include: cfg.include_names.clone(),
            exclude: cfg.exclude_names.clone(),
        }
    }

    fn filtered(&self, name: &str) -> bool {
        (!self.include.is_empty() && !self.include.iter().any(|m| m.matches(name)))
            || self.exclude.iter().any(|m| m.matches(name))
    }
}

impl HoneyHiveProcessor {
    /// A span ended: filters, then the export pipeline (O(1), never blocks).
    pub fn on_end(&self, span: SpanData) {
        Stats::add(&self.stats.ended, 1);
        if (!self.include.is_empty() || !self.exclude.is_empty()) && self.filtered(&span.name) {
            Stats::add(&self.stats.filtered, 1);
            return;
        }
        self.pipeline.push(span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry::InstrumentationScope;
    use std::time::{Duration, SystemTime};

    fn stamper() -> Stamper {
        Stamper {
            cache: Mutex::new(None),
            session_id: shared("local"),
            project: Some(shared("p-local")),
            source: shared("dev"),
            run_id: None,
            dataset_id: None,
            datapoint_id: None,
            allowlist: vec!["tenant".into()],
        }
    }

    fn get(a: &[KeyValue], k: &str) -> Option<String> {
        a.iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.as_str().into_owned())
    }

    fn exported(attrs: Vec<KeyValue>) -> Vec<KeyValue> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let mut span = SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "s".into(),
            start_time: start,
            end_time: start + Duration::from_millis(5),
            attributes: attrs,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        };
        prepare(&mut span);
        span.attributes
    }

    #[test]
    fn baggage_beats_tracer_and_twins_follow() {
        let mut a = Vec::new();
        let inc = Incoming {
            session_id: Some(shared("remote")),
            source: Some(shared("client")),
            ..Default::default()
        };
        stamper().stamp(&mut a, &inc, &Explicit::default());
        let a = exported(a);
        assert_eq!(get(&a, "honeyhive.session_id").as_deref(), Some("remote"));
        assert_eq!(get(&a, "session.id").as_deref(), Some("remote"));
        assert_eq!(
            get(&a, "traceloop.association.properties.session_id").as_deref(),
            Some("remote")
        );
        assert_eq!(get(&a, "honeyhive.project").as_deref(), Some("p-local"));
        assert_eq!(get(&a, "honeyhive.source").as_deref(), Some("client"));
        assert_eq!(
            get(&a, "traceloop.association.properties.source").as_deref(),
            Some("client")
        );
        assert_eq!(get(&a, "honeyhive_duration_ms").as_deref(), Some("5"));
    }

    #[test]
    fn explicit_beats_baggage() {
        let inc = Incoming {
            session_id: Some(shared("remote")),
            project: Some(shared("remote-p")),
            ..Default::default()
        };
        let mut a = vec![KeyValue::new("honeyhive.session_id", "attr")];
        stamper().stamp(&mut a, &inc, &Explicit::default());
        let a = exported(a);
        assert_eq!(
            a.iter()
                .filter(|kv| kv.key.as_str() == "honeyhive.session_id")
                .count(),
            1
        );
        assert_eq!(get(&a, "session.id").as_deref(), Some("attr"));

        let mut b = Vec::new();
        let explicit = Explicit {
            session_id: Some(shared("arg")),
            project: Some(shared("arg-p")),
            source: None,
        };
        stamper().stamp(&mut b, &inc, &explicit);
        assert_eq!(get(&b, "honeyhive.session_id").as_deref(), Some("arg"));
        assert_eq!(get(&b, "honeyhive.project").as_deref(), Some("arg-p"));

        // an explicit `session.id` attribute (OpenInference style) counts as explicit
        let mut c = vec![KeyValue::new("session.id", "oi")];
        stamper().stamp(&mut c, &inc, &Explicit::default());
        assert_eq!(get(&c, "honeyhive.session_id").as_deref(), Some("oi"));
    }

    #[test]
    fn tracer_default_and_allowlist() {
        let mut a = Vec::new();
        let inc = Incoming {
            extra: vec![(Key::new("baggage.tenant"), shared("acme"))],
            parent_id: Some(shared("P")),
            run_id: Some(shared("R")),
            ..Default::default()
        };
        stamper().stamp(&mut a, &inc, &Explicit::default());
        let a = exported(a);
        assert_eq!(get(&a, "honeyhive.session_id").as_deref(), Some("local"));
        assert_eq!(get(&a, "baggage.tenant").as_deref(), Some("acme"));
        assert_eq!(get(&a, "honeyhive.parent_id").as_deref(), Some("P"));
        assert_eq!(
            get(&a, "traceloop.association.properties.parent_id").as_deref(),
            Some("P")
        );
        assert_eq!(get(&a, "honeyhive_metadata.run_id").as_deref(), Some("R"));
        assert_eq!(get(&a, "honeyhive_event_type").as_deref(), Some("tool"));
    }

    #[test]
    fn event_types() {
        let t = |k: &str, v: &str| infer_event_type(&[KeyValue::new(k.to_string(), v.to_string())]);
        assert_eq!(t("gen_ai.operation.name", "chat"), "model");
        assert_eq!(t("gen_ai.operation.name", "invoke_agent"), "chain");
        assert_eq!(t("openinference.span.kind", "RETRIEVER"), "tool");
        assert_eq!(t("openinference.span.kind", "LLM"), "model");
        assert_eq!(t("gen_ai.request.model", "gpt"), "model");
        assert_eq!(t("http.method", "GET"), "tool");
        assert_eq!(infer_event_type(&[]), "tool");
    }
}
