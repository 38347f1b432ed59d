//! One tracer's engine (`Core`): its configuration, resource, stamps, processor and
//! export pipeline, and the start and end of its spans.

use crate::engine::config::{Config, ExporterKind, Mode, RootSampler, Secret};
use crate::engine::export::console::ConsoleExporter;
use crate::engine::export::fanout::FanOut;
use crate::engine::export::file::FileExporter;
use crate::engine::export::http::shown_url;
use crate::engine::export::otlp::{OtlpExporter, OtlpSettings};
use crate::engine::export::pipeline::{ExporterFactory, Pipeline};
use crate::engine::export::rest::{client_headers, Job, RestClient};
use crate::engine::export::sink::{Exporter, Stats};
use crate::engine::ids::ForkSafeIdGenerator;
use crate::engine::keys::{PROJECT, SESSION_ID, SOURCE};
use crate::engine::processor::HoneyHiveProcessor;
use crate::engine::propagation::traceparent;
use crate::engine::span::{Recording, SpanOptions};
use crate::engine::stamp::Stamper;
use opentelemetry::trace::{Link, SpanContext, SpanId, Status, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, SpanData, SpanEvents, SpanLimits, SpanLinks};
use opentelemetry_sdk::Resource;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const SDK_NAME: &str = "honeytrace";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const MEMORY_CAP: usize = 100_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Core {
    pub id: u64,
    pub cfg: Config,
    pub pipeline: Arc<Pipeline>,
    pub stats: Arc<Stats>,
    pub stamper: Stamper,
    pub resource: Resource,
    processor: HoneyHiveProcessor,
    limits: SpanLimits,
    /// The tracer's own instrumentation scope ("honeytrace").
    pub scope: InstrumentationScope,
}

fn build_resource(cfg: &Config) -> Resource {
    let mut attrs: Vec<KeyValue> = cfg
        .resource_attributes
        .iter()
        .filter(|(k, _)| k != "service.name")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attrs.push(KeyValue::new("service.name", cfg.service_name.clone()));
    attrs.push(KeyValue::new("telemetry.sdk.name", SDK_NAME));
    attrs.push(KeyValue::new("telemetry.sdk.version", VERSION));
    attrs.push(KeyValue::new("telemetry.sdk.language", "python"));
    if let Some(p) = &cfg.project {
        attrs.push(KeyValue::new(PROJECT, p.clone()));
    }
    attrs.push(KeyValue::new(SOURCE, cfg.source.clone()));
    Resource::builder_empty().with_attributes(attrs).build()
}

/// The exporter of `cfg.exporter`, with the others of an exporter list (`file`,
/// `console`) getting copies of its batches.
fn exporter_factory(cfg: &Config, resource: &Resource) -> ExporterFactory {
    let main = one_exporter(cfg.exporter, cfg, resource);
    if cfg.extra_exporters.is_empty() {
        return main;
    }
    let others: Vec<ExporterFactory> = cfg
        .extra_exporters
        .iter()
        .map(|k| one_exporter(*k, cfg, resource))
        .collect();
    Arc::new(move || {
        let (exporter, client) = main();
        let copies = others.iter().map(|f| f().0).collect();
        (
            Box::new(FanOut::new(exporter, copies)) as Box<dyn Exporter>,
            client,
        )
    })
}

fn one_exporter(kind: ExporterKind, cfg: &Config, resource: &Resource) -> ExporterFactory {
    let resource = resource.clone();
    let connect = cfg.batch.export_timeout.min(Duration::from_secs(5));
    match kind {
        ExporterKind::File => {
            let path = cfg
                .file_path
                .clone()
                .unwrap_or_else(|| crate::engine::config::settings::DEFAULT_FILE.into());
            let (max, keep) = (cfg.file_max_bytes, cfg.file_keep);
            let openinference = cfg.openinference;
            Arc::new(move || {
                (
                    Box::new(
                        FileExporter::new(path.clone(), max, keep, &resource)
                            .with_openinference(openinference),
                    ) as Box<dyn Exporter>,
                    None,
                )
            })
        }
        ExporterKind::Console => Arc::new(|| {
            (
                Box::new(ConsoleExporter::stderr()) as Box<dyn Exporter>,
                None,
            )
        }),
        _ => {
            let mut headers = cfg.otlp_headers.clone();
            let rest = if cfg.mode == Mode::Cloud {
                cfg.api_key.as_ref().map(|key| {
                    headers.push((
                        "authorization".into(),
                        Secret::from(format!("Bearer {}", key.expose())),
                    ));
                    headers.push(("x-source".into(), Secret::from(cfg.source.clone())));
                    for (k, v) in client_headers() {
                        headers.push((k, Secret::from(v)));
                    }
                    (cfg.server_url.clone(), key.clone())
                })
            } else {
                None
            };
            let settings = Arc::new(OtlpSettings {
                endpoint: cfg.otlp_endpoint.clone().unwrap_or_default(),
                headers,
                protocol: cfg.protocol,
                gzip: cfg.gzip,
                max_retries: cfg.batch.max_retries,
                connect_timeout: connect,
                keep_buffer: cfg.batch.max_export_batch_bytes.saturating_mul(2),
                spool: cfg.spool.clone(),
                openinference: cfg.openinference,
            });
            let retries = cfg.batch.max_retries;
            Arc::new(move || {
                let exporter =
                    Box::new(OtlpExporter::new(&settings, &resource)) as Box<dyn Exporter>;
                let client = rest
                    .as_ref()
                    .map(|(url, key)| RestClient::new(url, key, connect, retries));
                (exporter, client)
            })
        }
    }
}

/// A new span's context (ids, flags: sampled or not) and its parent, from `decide`.
pub struct Decision {
    pub context: SpanContext,
    parent_id: SpanId,
    parent_remote: bool,
}

impl Decision {
    pub fn sampled(&self) -> bool {
        self.context.is_sampled()
    }
}

/// The first 8 bytes of SHA-256 of a session id, as a number (the session sampler's:
/// the same in every service and language).
pub fn session_hash(session: &str) -> u128 {
    let d = ring::digest::digest(&ring::digest::SHA256, session.as_bytes());
    let b = d.as_ref();
    u128::from(u64::from_be_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

/// The start of a span, once `begin_span` has decided about it.
pub enum Begun {
    /// Recorded: the span to fill and end.
    Recording(Box<Recording>),
    /// Not sampled (the parent was not): only a context for its children.
    NotSampled(SpanContext),
}

impl Core {
    pub fn build(cfg: Config) -> Arc<Core> {
        let stats = Arc::new(Stats::default());
        let resource = build_resource(&cfg);
        let pipeline = Arc::new(match (cfg.mode, cfg.exporter) {
            (Mode::Disabled, _) | (_, ExporterKind::None) => {
                Pipeline::discard(stats.clone(), cfg.batch.clone())
            }
            (_, ExporterKind::Memory) => {
                Pipeline::memory(stats.clone(), cfg.batch.clone(), MEMORY_CAP)
            }
            _ => Pipeline::worker(
                stats.clone(),
                cfg.batch.clone(),
                exporter_factory(&cfg, &resource),
            ),
        });
        let processor = HoneyHiveProcessor::new(pipeline.clone(), stats.clone(), &cfg);
        let limits = SpanLimits {
            max_attributes_per_span: cfg.max_attributes,
            max_events_per_span: cfg.max_events,
            max_links_per_span: cfg.max_links,
            ..SpanLimits::default()
        };
        let stamper = Stamper::new(&cfg);
        let core = Arc::new(Core {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cfg,
            pipeline,
            stats,
            stamper,
            resource,
            processor,
            limits,
            scope: InstrumentationScope::builder(SDK_NAME)
                .with_version(VERSION)
                .build(),
        });
        if core.cfg.mode == Mode::Cloud {
            core.pipeline.push_job(Job::SessionStart {
                body: session_start_body(&core.cfg),
                session_id: core.cfg.session_id.clone(),
            });
        }
        core
    }

    pub fn is_live(&self) -> bool {
        self.cfg.mode != Mode::Disabled && !self.pipeline.is_shut_down()
    }

    /// The ids and flags of a new span under `parent` (None: a root), and whether it
    /// records, per the sampler (`session`: the span's session id, read only by the
    /// session sampler).
    pub fn decide<'s>(
        &self,
        parent: Option<&SpanContext>,
        session: impl FnOnce() -> Option<Cow<'s, str>>,
    ) -> Decision {
        let ids = ForkSafeIdGenerator;
        let (trace_id, flags, state, parent_id, parent_remote) = match parent {
            Some(p) => (
                p.trace_id(),
                p.trace_flags(),
                p.trace_state().clone(),
                p.span_id(),
                p.is_remote(),
            ),
            None => (
                ids.new_trace_id(),
                traceparent::NEW_TRACE_FLAGS,
                TraceState::default(),
                SpanId::INVALID,
                false,
            ),
        };
        let sampling = self.cfg.sampling;
        let sampled = match parent {
            Some(p) if sampling.parent_based => p.is_sampled(),
            _ => match sampling.root {
                RootSampler::AlwaysOn => true,
                RootSampler::AlwaysOff => false,
                RootSampler::TraceIdRatio(bound) => {
                    let b = trace_id.to_bytes();
                    let low =
                        u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
                    u128::from(low) < bound
                }
                RootSampler::Session(bound) => session().is_none_or(|s| session_hash(&s) < bound),
            },
        };
        Decision {
            context: SpanContext::new(
                trace_id,
                ids.new_span_id(),
                flags.with_sampled(sampled),
                false,
                state,
            ),
            parent_id,
            parent_remote,
        }
    }

    /// Begin a span under `parent` (None: a root): ids, the sampler's decision (see
    /// `decide`), and the SDK's span limits. `opts.attributes` already carry the stamps.
    pub fn begin_span(
        &self,
        scope: &InstrumentationScope,
        parent: Option<&SpanContext>,
        opts: SpanOptions,
    ) -> Begun {
        let d = self.decide(parent, || {
            opts.attributes
                .iter()
                .rev()
                .find(|kv| kv.key == SESSION_ID)
                .map(|kv| kv.value.as_str())
        });
        self.begin_decided(scope, d, opts)
    }

    /// Begin a span as `decide` decided. An unsampled one is only a context: it is
    /// counted as started, ended and `sampled_out` at once.
    pub fn begin_decided(
        &self,
        scope: &InstrumentationScope,
        d: Decision,
        opts: SpanOptions,
    ) -> Begun {
        let Decision {
            context: sc,
            parent_id,
            parent_remote,
        } = d;
        if !sc.is_sampled() {
            // Decided as it begins: it records nothing, so it is also done with.
            Stats::add(&self.stats.started, 1);
            Stats::add(&self.stats.ended, 1);
            Stats::add(&self.stats.sampled_out, 1);
            return Begun::NotSampled(sc);
        }
        let SpanOptions {
            name,
            kind,
            attributes: mut attrs,
            mut links,
            start_time,
            ..
        } = opts;
        let max_attrs = self.limits.max_attributes_per_span as usize;
        if attrs.len() > max_attrs {
            crate::engine::export::prepare::dedup(&mut attrs);
        }
        let dropped_attrs =
            u32::try_from(attrs.len().saturating_sub(max_attrs)).unwrap_or(u32::MAX);
        attrs.truncate(max_attrs);
        let mut span_links = SpanLinks::default();
        let max_links = self.limits.max_links_per_span as usize;
        span_links.dropped_count =
            u32::try_from(links.len().saturating_sub(max_links)).unwrap_or(u32::MAX);
        links.truncate(max_links);
        span_links.links = links;
        let start_time = start_time.unwrap_or_else(SystemTime::now);
        Stats::add(&self.stats.started, 1);
        let data = SpanData {
            span_context: sc,
            parent_span_id: parent_id,
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name,
            start_time,
            end_time: start_time,
            attributes: attrs,
            dropped_attributes_count: dropped_attrs,
            events: SpanEvents::default(),
            links: span_links,
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        };
        Begun::Recording(Box::new(Recording::new(data, self.limits)))
    }

    /// End a recorded span and hand it to the processor.
    pub fn finish(&self, mut rec: Box<Recording>, end: Option<SystemTime>) {
        rec.data.end_time = end.unwrap_or_else(SystemTime::now);
        self.processor.on_end(rec.data);
    }

    /// Where spans go, in words (the line `init` logs).
    pub fn destination(&self) -> String {
        let mut out = self.main_destination();
        for k in &self.cfg.extra_exporters {
            match k {
                ExporterKind::File => {
                    out.push_str(", and the local file ");
                    if let Some(p) = &self.cfg.file_path {
                        out.push_str(&p.display().to_string());
                    }
                }
                ExporterKind::Console => out.push_str(", and the console (stderr)"),
                _ => {}
            }
        }
        out
    }

    fn main_destination(&self) -> String {
        match self.cfg.mode {
            Mode::Cloud => format!(
                "HoneyHive at {} (project {}, session {})",
                shown_url(&self.cfg.server_url),
                self.cfg.project.as_deref().unwrap_or("<from API key>"),
                self.cfg.session_id
            ),
            Mode::Otlp => format!(
                "OTLP collector at {} ({})",
                shown_url(self.cfg.otlp_endpoint.as_deref().unwrap_or("")),
                self.cfg.protocol.as_str()
            ),
            Mode::File => format!(
                "local file {} (OTLP JSON lines; view with `honeytrace view`)",
                self.cfg
                    .file_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Mode::Console => "the console (stderr)".to_string(),
            Mode::Memory => "memory (tracer.finished_spans())".to_string(),
            Mode::None => "nowhere (exporter='none')".to_string(),
            Mode::Disabled => "nowhere (tracing disabled)".to_string(),
        }
    }
}

/// The link a restarted incoming context adds to its first span.
pub fn restart_link_of(remote: SpanContext) -> Link {
    Link::new(
        remote,
        vec![KeyValue::new("honeytrace.link", "restarted")],
        0,
    )
}

fn session_start_body(cfg: &Config) -> serde_json::Value {
    let mut s = serde_json::Map::new();
    if let Some(p) = &cfg.project {
        s.insert("project".into(), p.clone().into());
    }
    s.insert(
        "session_name".into(),
        cfg.session_name
            .clone()
            .unwrap_or_else(|| "unknown".into())
            .into(),
    );
    s.insert("source".into(), cfg.source.clone().into());
    s.insert("session_id".into(), cfg.session_id.clone().into());
    if let Some(v) = &cfg.session_inputs {
        s.insert("inputs".into(), v.clone());
    }
    if let Some(v) = &cfg.session_metadata {
        s.insert("metadata".into(), v.clone());
    }
    if let Some(v) = &cfg.user_properties {
        s.insert("user_properties".into(), v.clone());
    }
    serde_json::json!({ "session": s })
}
