//! The HoneyHive stamps a span gets when it starts (on the caller's thread): session
//! id, project and source with the priority explicit-on-the-span > baggage > tracer,
//! `honeyhive.parent_id` from baggage, evaluation ids as `honeyhive_metadata.*`, and
//! allow-listed baggage keys as `baggage.<k>`. Every span gets a session id. Their
//! `session.id` and traceloop twins are added at export (`export::prepare`).

use crate::engine::config::Config;
use crate::engine::intern;
use crate::engine::keys::{
    DATAPOINT_ID, DATASET_ID, OTEL_SESSION_ID, PARENT_ID, PROJECT, RUN_ID, SESSION_ID, SOURCE,
};
use opentelemetry::{Key, KeyValue, StringValue, Value};
use std::fmt;
use std::sync::Arc;

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

/// A tracer's defaults, as attribute values cloned into every span: interned text (a
/// pointer copy), except the session id (a reference count; see `Stamper::new`).
pub struct Stamper {
    pub session_id: Value,
    pub project: Option<Value>,
    pub source: Value,
    run_id: Option<Value>,
    dataset_id: Option<Value>,
    datapoint_id: Option<Value>,
    pub allowlist: Vec<String>,
}

/// A string attribute value backed by an `Arc<str>`.
pub fn shared(s: &str) -> Value {
    Value::String(StringValue::from(Arc::<str>::from(s)))
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
            // Interned: cloned into every span (see `intern`). Not the session id: a
            // tracer per session (HoneyHive's serverless pattern) would fill the intern
            // table with one-off ids.
            session_id: shared(&cfg.session_id),
            project: cfg.project.as_deref().map(intern::value),
            source: intern::value(&cfg.source),
            run_id: cfg.run_id.as_deref().map(intern::value),
            dataset_id: cfg.dataset_id.as_deref().map(intern::value),
            datapoint_id: cfg.datapoint_id.as_deref().map(intern::value),
            allowlist: cfg.baggage_allowlist.clone(),
        }
    }

    /// Add the session stamps to a new span's start attributes (the caller's thread:
    /// three values; their twins are added at export by `prepare`).
    pub fn stamp(&self, attrs: &mut Vec<KeyValue>, inc: &Incoming, explicit: &Explicit) {
        self.stamp_with(attrs, inc, explicit, false);
    }

    /// `stamp`; `fresh`: the caller guarantees no stamp key is in `attrs` yet, so
    /// nothing is scanned.
    pub fn stamp_with(
        &self,
        attrs: &mut Vec<KeyValue>,
        inc: &Incoming,
        explicit: &Explicit,
        fresh: bool,
    ) {
        let absent = |attrs: &Vec<KeyValue>, k: &Key| fresh || !has(attrs, k);
        if absent(attrs, &SESSION_ID) {
            // Explicit, then the caller's baggage, then a `session.id` set by other
            // code (OpenInference's convention), then the tracer's: a framework's own
            // session never splits a distributed one (see docs/opentelemetry.md).
            let session = explicit
                .session_id
                .clone()
                .or_else(|| inc.session_id.clone())
                .or_else(|| {
                    if fresh {
                        None
                    } else {
                        find(attrs, &OTEL_SESSION_ID).cloned()
                    }
                })
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
    [
        SESSION_ID,
        PROJECT,
        SOURCE,
        PARENT_ID,
        OTEL_SESSION_ID,
        RUN_ID,
        DATASET_ID,
        DATAPOINT_ID,
    ]
    .iter()
    .any(|k| k.as_str() == key)
        || key.starts_with("baggage.")
}

impl fmt::Debug for Stamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stamper")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::export::prepare::prepare;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry::InstrumentationScope;
    use opentelemetry_sdk::trace::SpanData;
    use std::time::{Duration, SystemTime};

    fn stamper() -> Stamper {
        Stamper {
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
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        };
        prepare(&mut span, false);
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

        // a `session.id` attribute (OpenInference style) yields to the caller's
        // baggage, and beats the tracer's session
        let mut c = vec![KeyValue::new("session.id", "oi")];
        stamper().stamp(&mut c, &inc, &Explicit::default());
        assert_eq!(get(&c, "honeyhive.session_id").as_deref(), Some("remote"));
        let c = exported(c);
        assert_eq!(get(&c, "session.id").as_deref(), Some("remote"));
        assert_eq!(
            get(&c, "honeyhive_metadata.framework_session_id").as_deref(),
            Some("oi")
        );
        let mut d = vec![KeyValue::new("session.id", "oi")];
        stamper().stamp(&mut d, &Incoming::default(), &Explicit::default());
        assert_eq!(get(&d, "honeyhive.session_id").as_deref(), Some("oi"));
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
        let of = |attrs: Vec<KeyValue>| {
            get(&exported(attrs), "honeyhive_event_type").expect("an event type")
        };
        let t = |k: &str, v: &str| of(vec![KeyValue::new(k.to_string(), v.to_string())]);
        assert_eq!(t("gen_ai.operation.name", "chat"), "model");
        assert_eq!(t("gen_ai.operation.name", "invoke_agent"), "chain");
        assert_eq!(t("openinference.span.kind", "RETRIEVER"), "tool");
        assert_eq!(t("openinference.span.kind", "LLM"), "model");
        assert_eq!(t("gen_ai.request.model", "gpt"), "model");
        assert_eq!(t("http.method", "GET"), "tool");
        assert_eq!(of(Vec::new()), "tool");
        // An event type already set is kept.
        let set = KeyValue::new(crate::engine::keys::EVENT_TYPE, "chain");
        assert_eq!(of(vec![set]), "chain");
    }
}
