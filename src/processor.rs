//! The HoneyHive span processor.
//!
//! At start (`Stamper::stamp`, on the caller's thread, before the SDK span is built):
//! session id, project and source with the priority explicit-on-the-span > baggage >
//! tracer, their `session.id` and `traceloop.association.properties.*` twins,
//! `honeyhive.parent_id` from baggage, evaluation ids as `honeyhive_metadata.*`, and
//! allow-listed baggage keys as `baggage.<k>`. Every span gets a session id.
//!
//! At end (`HoneyHiveProcessor::on_end`): span-name filters, then the export queue.
//!
//! At export (`prepare`, on the background thread): attributes de-duplicated and the
//! event type inferred from the span's final attributes.

use crate::attributes;
use crate::config::{Config, NameMatcher};
use crate::export::{Pipeline, Stats};
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, Key, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
const RUN_ID: Key = Key::from_static_str("honeyhive_metadata.run_id");
const DATASET_ID: Key = Key::from_static_str("honeyhive_metadata.dataset_id");
const DATAPOINT_ID: Key = Key::from_static_str("honeyhive_metadata.datapoint_id");

/// Session-related values found in a span's baggage.
#[derive(Default, Debug, Clone)]
pub struct Incoming {
    pub session_id: Option<String>,
    pub project: Option<String>,
    pub source: Option<String>,
    pub parent_id: Option<String>,
    pub run_id: Option<String>,
    pub dataset_id: Option<String>,
    pub datapoint_id: Option<String>,
    pub extra: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Stamper {
    pub session_id: String,
    pub project: Option<String>,
    pub source: String,
    run_id: Option<String>,
    dataset_id: Option<String>,
    datapoint_id: Option<String>,
    allowlist: Vec<String>,
}

fn text(v: Option<Bound<'_, PyAny>>) -> Option<String> {
    let v = v?;
    if v.is_none() {
        return None;
    }
    let s = match v.cast::<PyString>() {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => v.str().ok()?.to_string_lossy().into_owned(),
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

fn push_if_absent(attrs: &mut Vec<KeyValue>, key: Key, value: &str) {
    if !has(attrs, &key) {
        attrs.push(KeyValue::new(key, value.to_string()));
    }
}

impl Stamper {
    pub fn new(cfg: &Config) -> Self {
        Stamper {
            session_id: cfg.session_id.clone(),
            project: cfg.project.clone(),
            source: cfg.source.clone(),
            run_id: cfg.run_id.clone(),
            dataset_id: cfg.dataset_id.clone(),
            datapoint_id: cfg.datapoint_id.clone(),
            allowlist: cfg.baggage_allowlist.clone(),
        }
    }

    pub fn read_baggage(&self, bag: Option<&Bound<'_, PyDict>>) -> Incoming {
        let Some(bag) = bag else {
            return Incoming::default();
        };
        if bag.is_empty() {
            return Incoming::default();
        }
        let get = |k: &str| text(bag.get_item(k).ok().flatten());
        Incoming {
            session_id: get("session_id"),
            project: get("project"),
            source: get("source"),
            parent_id: get("parent_id"),
            run_id: get("run_id"),
            dataset_id: get("dataset_id"),
            datapoint_id: get("datapoint_id"),
            extra: self
                .allowlist
                .iter()
                .filter_map(|k| get(k).map(|v| (k.clone(), v)))
                .collect(),
        }
    }

    /// Add the session stamps to a new span's start attributes.
    pub fn stamp(&self, attrs: &mut Vec<KeyValue>, inc: &Incoming) {
        let session = find(attrs, &SESSION_ID)
            .map(|v| v.as_str().into_owned())
            .or_else(|| inc.session_id.clone())
            .unwrap_or_else(|| self.session_id.clone());
        push_if_absent(attrs, SESSION_ID, &session);
        push_if_absent(attrs, OTEL_SESSION_ID, &session);
        push_if_absent(attrs, TL_SESSION_ID, &session);

        let project = find(attrs, &PROJECT)
            .map(|v| v.as_str().into_owned())
            .or_else(|| inc.project.clone())
            .or_else(|| self.project.clone());
        if let Some(p) = project {
            push_if_absent(attrs, PROJECT, &p);
            push_if_absent(attrs, TL_PROJECT, &p);
        }
        let source = find(attrs, &SOURCE)
            .map(|v| v.as_str().into_owned())
            .or_else(|| inc.source.clone())
            .unwrap_or_else(|| self.source.clone());
        push_if_absent(attrs, SOURCE, &source);
        push_if_absent(attrs, TL_SOURCE, &source);

        if let Some(p) = &inc.parent_id {
            push_if_absent(attrs, PARENT_ID, p);
            push_if_absent(attrs, TL_PARENT_ID, p);
        }
        for (key, from_bag, default) in [
            (RUN_ID, &inc.run_id, &self.run_id),
            (DATASET_ID, &inc.dataset_id, &self.dataset_id),
            (DATAPOINT_ID, &inc.datapoint_id, &self.datapoint_id),
        ] {
            if let Some(v) = from_bag.as_ref().or(default.as_ref()) {
                push_if_absent(attrs, key, v);
            }
        }
        for (k, v) in &inc.extra {
            push_if_absent(attrs, Key::new(format!("baggage.{k}")), v);
        }
    }
}

/// HoneyHive event type from a span's attributes (reference §4.3 rule 8), minus the
/// span-name heuristic, which labels ordinary functions as `model` (reference bug 13).
pub fn infer_event_type(attrs: &[KeyValue]) -> &'static str {
    let get = |k: &str| {
        attrs
            .iter()
            .rev()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.as_str().into_owned())
    };
    if let Some(op) = get("gen_ai.operation.name") {
        match op.as_str() {
            "chat" | "text_completion" | "generate_content" | "embeddings" => return "model",
            "invoke_agent" | "create_agent" | "invoke_workflow" => return "chain",
            "execute_tool" | "retrieval" => return "tool",
            _ => {}
        }
    }
    if let Some(kind) = get("openinference.span.kind") {
        return match kind.to_ascii_uppercase().as_str() {
            "LLM" => "model",
            "CHAIN" | "AGENT" => "chain",
            _ => "tool",
        };
    }
    const LLM_KEYS: [&str; 5] = [
        "gen_ai.request.model",
        "gen_ai.system",
        "llm.request.model",
        "llm.model_name",
        "gen_ai.response.model",
    ];
    if attrs.iter().any(|kv| LLM_KEYS.contains(&kv.key.as_str())) {
        return "model";
    }
    "tool"
}

/// Final touches on the export path (background thread): de-duplicate, copy
/// `*_raw` attributes to unset base keys, and set the event type when absent.
pub fn prepare(span: &mut SpanData) {
    attributes::dedup(&mut span.attributes);
    let raws: Vec<KeyValue> = span
        .attributes
        .iter()
        .filter_map(|kv| {
            let base = kv.key.as_str().strip_suffix("_raw")?;
            (!base.is_empty() && !span.attributes.iter().any(|o| o.key.as_str() == base))
                .then(|| KeyValue::new(base.to_string(), kv.value.clone()))
        })
        .collect();
    span.attributes.extend(raws);
    if !has(&span.attributes, &EVENT_TYPE) {
        let t = infer_event_type(&span.attributes);
        span.attributes.push(KeyValue::new(EVENT_TYPE, t));
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

/// The SDK span processor: filters, then the tracer's pipeline.
pub struct HoneyHiveProcessor {
    pub pipeline: Arc<Pipeline>,
    pub stats: Arc<Stats>,
    include: Vec<NameMatcher>,
    exclude: Vec<NameMatcher>,
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

impl SpanProcessor for HoneyHiveProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {
        // Stamps are computed by `Stamper` before the span is built: they need the
        // Python context (baggage), which the SDK's Rust Context does not carry.
    }

    fn on_end(&self, span: SpanData) {
        Stats::add(&self.stats.ended, 1);
        if (!self.include.is_empty() || !self.exclude.is_empty()) && self.filtered(&span.name) {
            Stats::add(&self.stats.filtered, 1);
            return;
        }
        self.pipeline.push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing goes through `Pipeline::flush` with the GIL released.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamper() -> Stamper {
        Stamper {
            session_id: "local".into(),
            project: Some("p-local".into()),
            source: "dev".into(),
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

    #[test]
    fn baggage_beats_tracer() {
        let mut a = Vec::new();
        let inc = Incoming {
            session_id: Some("remote".into()),
            source: Some("client".into()),
            ..Default::default()
        };
        stamper().stamp(&mut a, &inc);
        assert_eq!(get(&a, "honeyhive.session_id").as_deref(), Some("remote"));
        assert_eq!(get(&a, "session.id").as_deref(), Some("remote"));
        assert_eq!(
            get(&a, "traceloop.association.properties.session_id").as_deref(),
            Some("remote")
        );
        assert_eq!(get(&a, "honeyhive.project").as_deref(), Some("p-local"));
        assert_eq!(get(&a, "honeyhive.source").as_deref(), Some("client"));
    }

    #[test]
    fn explicit_beats_baggage_and_twins_follow() {
        let mut a = vec![KeyValue::new("honeyhive.session_id", "explicit")];
        let inc = Incoming {
            session_id: Some("remote".into()),
            ..Default::default()
        };
        stamper().stamp(&mut a, &inc);
        assert_eq!(
            a.iter()
                .filter(|kv| kv.key.as_str() == "honeyhive.session_id")
                .count(),
            1
        );
        assert_eq!(get(&a, "session.id").as_deref(), Some("explicit"));
    }

    #[test]
    fn tracer_default_and_allowlist() {
        let mut a = Vec::new();
        let inc = Incoming {
            extra: vec![("tenant".into(), "acme".into())],
            parent_id: Some("P".into()),
            run_id: Some("R".into()),
            ..Default::default()
        };
        stamper().stamp(&mut a, &inc);
        assert_eq!(get(&a, "honeyhive.session_id").as_deref(), Some("local"));
        assert_eq!(get(&a, "baggage.tenant").as_deref(), Some("acme"));
        assert_eq!(get(&a, "honeyhive.parent_id").as_deref(), Some("P"));
        assert_eq!(get(&a, "honeyhive_metadata.run_id").as_deref(), Some("R"));
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
