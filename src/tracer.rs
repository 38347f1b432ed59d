//! HoneyHiveTracer's engine: one `Core` per tracer (provider, pipeline, stats, session
//! identity), a registry of live tracers with a real default, span routing for
//! OpenTelemetry instrumentation, and the fork/exit hooks.

use crate::attributes;
use crate::config::{self, Config, ExporterKind, Mode};
use crate::context::{baggage_of, bridge, from_py_span_context, parent_of, Parent};
use crate::diag;
use crate::export::console::ConsoleExporter;
use crate::export::file::FileExporter;
use crate::export::otlp::{OtlpExporter, OtlpSettings};
use crate::export::{Exporter, ExporterFactory, Pipeline, Stats};
use crate::ids::{self, ForkSafeIdGenerator};
use crate::processor::{self, HoneyHiveProcessor, Stamper};
use crate::session::{client_headers, Job, RestClient};
use crate::span::{ns_to_time, PySpan, Recording};
use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, SpanData, SpanEvents, SpanLimits, SpanLinks};
use opentelemetry_sdk::Resource;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use std::time::{Duration, Instant};

pub const SDK_NAME: &str = "honeytrace";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const MEMORY_CAP: usize = 100_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The tracer's defaults as Python strings, for baggage the decorator adds.
pub struct BaggageDefaults {
    pub session_id: Py<PyString>,
    pub project: Option<Py<PyString>>,
    pub source: Py<PyString>,
    /// `{session_id, project, source}` shared by every call that starts without
    /// baggage: OpenTelemetry treats baggage dicts as immutable (it copies to change).
    pub dict: Py<PyDict>,
}

pub struct Core {
    pub id: u64,
    pub bag: BaggageDefaults,
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
        attrs.push(KeyValue::new("honeyhive.project", p.clone()));
    }
    attrs.push(KeyValue::new("honeyhive.source", cfg.source.clone()));
    Resource::builder_empty().with_attributes(attrs).build()
}

fn exporter_factory(cfg: &Config, resource: &Resource) -> ExporterFactory {
    let resource = resource.clone();
    let connect = cfg.batch.export_timeout.min(Duration::from_secs(5));
    match cfg.exporter {
        ExporterKind::File => {
            let path = cfg
                .file_path
                .clone()
                .unwrap_or_else(|| config::DEFAULT_FILE.into());
            let max = cfg.file_max_bytes;
            Arc::new(move || {
                (
                    Box::new(FileExporter::new(path.clone(), max, &resource)) as Box<dyn Exporter>,
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
                        config_secret(format!("Bearer {}", key.expose())),
                    ));
                    headers.push(("x-source".into(), config_secret(cfg.source.clone())));
                    for (k, v) in client_headers() {
                        headers.push((k, config_secret(v)));
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

fn config_secret(s: String) -> config::Secret {
    config::Secret::from(s)
}

impl Core {
    fn build(cfg: Config, bag: BaggageDefaults) -> Arc<Core> {
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
        Arc::new(Core {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            bag,
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
        })
    }

    pub fn is_live(&self) -> bool {
        self.cfg.mode != Mode::Disabled && !self.pipeline.is_shut_down()
    }

    /// Begin a span: ids, parent-based sampling (a root or a sampled parent records;
    /// an unsampled parent's children do not), and the SDK's span limits.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_span(
        self: &Arc<Self>,
        scope: &InstrumentationScope,
        name: Cow<'static, str>,
        kind: SpanKind,
        parent: &Parent,
        mut attrs: Vec<KeyValue>,
        mut links: Vec<Link>,
        start: Option<SystemTime>,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> PySpan {
        let ids = ForkSafeIdGenerator;
        let (trace_id, flags, state, parent_id, parent_remote) = match parent.span_context() {
            Some(p) => (
                p.trace_id(),
                p.trace_flags(),
                p.trace_state().clone(),
                p.span_id(),
                p.is_remote(),
            ),
            None => (
                ids.new_trace_id(),
                TraceFlags::SAMPLED,
                TraceState::default(),
                SpanId::INVALID,
                false,
            ),
        };
        let sc = SpanContext::new(trace_id, ids.new_span_id(), flags, false, state);
        if !flags.is_sampled() {
            return PySpan::remote(sc, Some(self.clone()));
        }
        let max_attrs = self.limits.max_attributes_per_span as usize;
        let dropped_attrs = attrs.len().saturating_sub(max_attrs) as u32;
        attrs.truncate(max_attrs);
        let mut span_links = SpanLinks::default();
        let max_links = self.limits.max_links_per_span as usize;
        span_links.dropped_count = links.len().saturating_sub(max_links) as u32;
        links.truncate(max_links);
        span_links.links = links;
        let start_time = start.unwrap_or_else(SystemTime::now);
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
        PySpan::recording(
            Box::new(Recording::new(data, self.limits)),
            self.clone(),
            record_exception,
            set_status_on_exception,
        )
    }

    /// End a recorded span and hand it to the processor.
    pub fn finish(&self, mut rec: Box<Recording>, end: Option<SystemTime>) {
        rec.data.end_time = end.unwrap_or_else(SystemTime::now);
        self.processor.on_end(rec.data);
    }

    /// Start a span under the parent found in `ctx` (OpenTelemetry API path).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        self: &Arc<Self>,
        py: Python<'_>,
        scope: &InstrumentationScope,
        name: String,
        ctx: &Bound<'_, PyAny>,
        parent: Parent,
        kind: SpanKind,
        attributes: Option<&Bound<'_, PyAny>>,
        links: Option<&Bound<'_, PyAny>>,
        start_time: Option<u64>,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> PyResult<PySpan> {
        if !self.is_live() {
            return Ok(PySpan::non_recording(SpanContext::empty_context()));
        }
        let mut attrs: Vec<KeyValue> = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            attributes::from_mapping(a, &mut attrs);
        }
        let links = links
            .filter(|l| !l.is_none())
            .map(convert_links)
            .unwrap_or_default();
        self.start_kv(
            py,
            scope,
            Cow::Owned(name),
            ctx,
            parent,
            kind,
            attrs,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
    }

    /// `start` with attributes and links already converted (engine-side callers).
    #[allow(clippy::too_many_arguments)]
    pub fn start_kv(
        self: &Arc<Self>,
        py: Python<'_>,
        scope: &InstrumentationScope,
        name: Cow<'static, str>,
        ctx: &Bound<'_, PyAny>,
        parent: Parent,
        kind: SpanKind,
        mut attrs: Vec<KeyValue>,
        mut all_links: Vec<Link>,
        start_time: Option<u64>,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> PyResult<PySpan> {
        if !self.is_live() {
            return Ok(PySpan::non_recording(SpanContext::empty_context()));
        }
        let b = bridge(py)?;
        let bag = baggage_of(b, ctx);
        let incoming = self.stamper.read_baggage(bag.as_ref());
        self.stamper
            .stamp(&mut attrs, &incoming, &processor::Explicit::default());
        if parent.is_root() {
            if let Some(remote) = crate::propagation::restart_link(b, ctx) {
                all_links.push(restart_link_of(remote));
            }
        }
        Ok(self.begin_span(
            scope,
            name,
            kind,
            &parent,
            attrs,
            all_links,
            start_time.map(ns_to_time),
            record_exception,
            set_status_on_exception,
        ))
    }

    pub fn destination(&self) -> String {
        match self.cfg.mode {
            Mode::Cloud => format!(
                "HoneyHive at {} (project {}, session {})",
                self.cfg.server_url,
                self.cfg.project.as_deref().unwrap_or("<from API key>"),
                self.cfg.session_id
            ),
            Mode::Otlp => format!(
                "OTLP collector at {} ({})",
                self.cfg.otlp_endpoint.as_deref().unwrap_or(""),
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

fn convert_links(links: &Bound<'_, PyAny>) -> Vec<Link> {
    let py = links.py();
    let Ok(iter) = links.try_iter() else {
        return Vec::new();
    };
    iter.filter_map(Result::ok)
        .filter_map(|link| {
            let sc = from_py_span_context(&link.getattr(intern!(py, "context")).ok()?)?;
            let mut kvs = Vec::new();
            if let Ok(a) = link.getattr(intern!(py, "attributes")) {
                if !a.is_none() {
                    attributes::from_mapping(&a, &mut kvs);
                }
            }
            Some(Link::new(sc, kvs, 0))
        })
        .collect()
}

/// A keyword flag that defaults to True (None or absent means True).
fn flag(v: Option<&Bound<'_, PyAny>>) -> bool {
    v.filter(|v| !v.is_none())
        .map(|v| v.is_truthy().unwrap_or(true))
        .unwrap_or(true)
}

fn span_kind(kind: Option<&Bound<'_, PyAny>>) -> SpanKind {
    let Some(k) = kind.filter(|k| !k.is_none()) else {
        return SpanKind::Internal;
    };
    let v: i64 = k
        .getattr("value")
        .and_then(|v| v.extract())
        .or_else(|_| k.extract())
        .unwrap_or(0);
    match v {
        1 => SpanKind::Server,
        2 => SpanKind::Client,
        3 => SpanKind::Producer,
        4 => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

// ---------------------------------------------------------------------------------
// Registry

struct Registry {
    cores: Vec<Arc<Core>>,
    default: Option<u64>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    cores: Vec::new(),
    default: None,
});

/// Bumped whenever the registry changes; threads cache the default tracer per generation.
static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static DEFAULT_CACHE: std::cell::RefCell<(u64, Option<Arc<Core>>)> =
        const { std::cell::RefCell::new((0, None)) };
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lock the registry to change it (invalidates every thread's cached default).
fn registry_mut() -> std::sync::MutexGuard<'static, Registry> {
    let g = registry();
    GENERATION.fetch_add(1, Ordering::Release);
    g
}

fn register(core: &Arc<Core>) {
    let mut r = registry_mut();
    r.cores.push(core.clone());
    if r.default.is_none() {
        r.default = Some(core.id);
    }
}

/// The default tracer: the one `set_default_tracer` chose (or the first), while it is
/// live; otherwise the oldest live one.
pub fn default_core() -> Option<Arc<Core>> {
    // Hot path (every root span): a thread-local cache, refreshed when the registry
    // changed or the cached tracer was shut down.
    let generation = GENERATION.load(Ordering::Acquire);
    let cached = DEFAULT_CACHE.with(|c| {
        let c = c.borrow();
        (c.0 == generation)
            .then(|| c.1.clone())
            .flatten()
            .filter(|core| core.is_live())
    });
    if cached.is_some() {
        return cached;
    }
    let found = lookup_default();
    DEFAULT_CACHE.with(|c| *c.borrow_mut() = (generation, found.clone()));
    found
}

fn lookup_default() -> Option<Arc<Core>> {
    let r = registry();
    if let Some(id) = r.default {
        if let Some(c) = r.cores.iter().find(|c| c.id == id && c.is_live()) {
            return Some(c.clone());
        }
    }
    r.cores.iter().find(|c| c.is_live()).cloned()
}

fn live_cores() -> Vec<Arc<Core>> {
    registry().cores.clone()
}

// ---------------------------------------------------------------------------------
// Python classes

/// The engine of one HoneyHiveTracer.
#[pyclass(module = "honeytrace._core", name = "TracerCore", frozen)]
pub struct TracerCore {
    pub core: Arc<Core>,
}

/// An OpenTelemetry Tracer: bound to one tracer, or routing each span to the tracer
/// of its honeytrace parent (else the default tracer) when it is the global one.
#[pyclass(module = "honeytrace._core", name = "ScopedTracer", frozen)]
pub struct ScopedTracer {
    scope: InstrumentationScope,
    fixed: Option<Arc<Core>>,
}

impl ScopedTracer {
    fn new(scope: InstrumentationScope, fixed: Option<Arc<Core>>) -> Self {
        ScopedTracer { scope, fixed }
    }
}

fn scope_of(
    name: String,
    version: Option<String>,
    schema_url: Option<String>,
    attributes: Option<&Bound<'_, PyAny>>,
) -> InstrumentationScope {
    // Interned: the scope is cloned into every span it makes (see `intern`).
    let text = |s: String| -> Cow<'static, str> {
        match crate::intern::intern(&s) {
            Some(st) => Cow::Borrowed(st),
            None => Cow::Owned(s),
        }
    };
    let mut b = InstrumentationScope::builder(text(name));
    if let Some(v) = version {
        b = b.with_version(text(v));
    }
    if let Some(s) = schema_url {
        b = b.with_schema_url(text(s));
    }
    if let Some(a) = attributes.filter(|a| !a.is_none()) {
        let mut kvs = Vec::new();
        attributes::from_mapping(a, &mut kvs);
        b = b.with_attributes(kvs);
    }
    b.build()
}

impl ScopedTracer {
    /// The span `start_span` gives, with arguments already read.
    #[allow(clippy::too_many_arguments)]
    fn start_inner(
        &self,
        py: Python<'_>,
        name: String,
        context: Option<&Bound<'_, PyAny>>,
        kind: SpanKind,
        attributes: Option<&Bound<'_, PyAny>>,
        links: Option<&Bound<'_, PyAny>>,
        start_time: Option<u64>,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> PyResult<PySpan> {
        start_span_in(
            py,
            &self.scope,
            self.fixed.as_ref(),
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
    }
}

/// Start a span (OpenTelemetry `start_span`) under the parent in `context` (else the
/// current one), recorded by `fixed` or else by the parent's live tracer or the default.
#[allow(clippy::too_many_arguments)]
fn start_span_in(
    py: Python<'_>,
    scope: &InstrumentationScope,
    fixed: Option<&Arc<Core>>,
    name: String,
    context: Option<&Bound<'_, PyAny>>,
    kind: SpanKind,
    attributes: Option<&Bound<'_, PyAny>>,
    links: Option<&Bound<'_, PyAny>>,
    start_time: Option<u64>,
    record_exception: bool,
    set_status_on_exception: bool,
) -> PyResult<PySpan> {
    diag::shield(
        "start_span",
        || Ok(PySpan::non_recording(SpanContext::empty_context())),
        || {
            let b = bridge(py)?;
            let ctx = match context.filter(|c| !c.is_none()) {
                Some(c) => c.clone(),
                None => b.current(py)?,
            };
            let parent = parent_of(b, &ctx);
            let core = match (fixed, &parent) {
                (Some(c), _) => Some(c.clone()),
                (None, p) if p.core().is_some_and(|c| c.is_live()) => p.core().cloned(),
                _ => default_core(),
            };
            let Some(core) = core else {
                return Ok(PySpan::non_recording(SpanContext::empty_context()));
            };
            core.start(
                py,
                scope,
                name,
                &ctx,
                parent,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        },
    )
}

#[pymethods]
impl ScopedTracer {
    #[pyo3(signature = (name, context=None, kind=None, attributes=None, links=None, start_time=None, record_exception=None, set_status_on_exception=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_span(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        kind: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        links: Option<&Bound<'_, PyAny>>,
        start_time: Option<&Bound<'_, PyAny>>,
        record_exception: Option<&Bound<'_, PyAny>>,
        set_status_on_exception: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PySpan> {
        self.start_inner(
            py,
            attributes::lenient_text(name),
            context,
            span_kind(kind),
            attributes,
            links,
            attributes::lenient_ns(start_time),
            flag(record_exception),
            flag(set_status_on_exception),
        )
    }

    /// OpenTelemetry's `start_as_current_span`: a context manager (and decorator) that
    /// starts the span on enter, makes it current, and on exit records an escaping
    /// `Exception` (per the flags), restores the context and ends the span.
    #[pyo3(signature = (name, context=None, kind=None, attributes=None, links=None, start_time=None, record_exception=None, set_status_on_exception=None, end_on_exit=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_as_current_span(
        slf: Py<Self>,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        context: Option<Py<PyAny>>,
        kind: Option<&Bound<'_, PyAny>>,
        attributes: Option<Py<PyAny>>,
        links: Option<Py<PyAny>>,
        start_time: Option<&Bound<'_, PyAny>>,
        record_exception: Option<&Bound<'_, PyAny>>,
        set_status_on_exception: Option<&Bound<'_, PyAny>>,
        end_on_exit: Option<&Bound<'_, PyAny>>,
    ) -> CurrentSpan {
        let _ = py;
        CurrentSpan {
            args: Arc::new(CurrentSpanArgs {
                tracer: slf,
                name: attributes::lenient_text(name),
                context: context.filter(|c| !c.is_none(py)),
                kind: span_kind(kind),
                attributes: attributes.filter(|a| !a.is_none(py)),
                links: links.filter(|l| !l.is_none(py)),
                start_time: attributes::lenient_ns(start_time),
                record_exception: flag(record_exception),
                set_status_on_exception: flag(set_status_on_exception),
                end_on_exit: flag(end_on_exit),
            }),
            active: Mutex::new(Vec::new()),
        }
    }

    #[getter]
    fn name(&self) -> String {
        self.scope.name().to_string()
    }
}

struct CurrentSpanArgs {
    tracer: Py<ScopedTracer>,
    name: String,
    context: Option<Py<PyAny>>,
    kind: SpanKind,
    attributes: Option<Py<PyAny>>,
    links: Option<Py<PyAny>>,
    start_time: Option<u64>,
    record_exception: bool,
    set_status_on_exception: bool,
    end_on_exit: bool,
}

/// What `Tracer.start_as_current_span` returns (see there).
#[pyclass(module = "honeytrace._core", name = "CurrentSpan", frozen)]
pub struct CurrentSpan {
    args: Arc<CurrentSpanArgs>,
    /// (span, context token) per active `with`, innermost last.
    active: Mutex<Vec<(Py<PySpan>, Py<PyAny>)>>,
}

static AS_DECORATOR: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

#[pymethods]
impl CurrentSpan {
    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PySpan>> {
        let a = &*self.args;
        let span = a.tracer.get().start_inner(
            py,
            a.name.clone(),
            a.context.as_ref().map(|c| c.bind(py)),
            a.kind.clone(),
            a.attributes.as_ref().map(|x| x.bind(py)),
            a.links.as_ref().map(|x| x.bind(py)),
            a.start_time,
            a.record_exception,
            a.set_status_on_exception,
        )?;
        let span = Bound::new(py, span)?;
        let b = bridge(py)?;
        let cur = b.current(py)?;
        let ctx = b.child(&cur, span.as_any(), None)?;
        let token = b.attach(&ctx)?;
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((span.clone().unbind(), token.unbind()));
        Ok(span.unbind())
    }

    #[pyo3(signature = (exc_type=None, exc=None, tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        let Some((span, token)) = self.active.lock().unwrap_or_else(|p| p.into_inner()).pop()
        else {
            return Ok(false);
        };
        bridge(py)?.detach(token.bind(py));
        let s = span.get();
        let a = &*self.args;
        if let Some(e) = exc.filter(|e| e.is_instance_of::<pyo3::exceptions::PyException>()) {
            if s.is_recording_now() {
                if a.record_exception {
                    s.record_exception_event(py, e, None, false);
                }
                if a.set_status_on_exception {
                    let name = e
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    let msg = e.str().map(|m| m.to_string()).unwrap_or_default();
                    s.set_status_now(opentelemetry::trace::Status::error(format!(
                        "{name}: {msg}"
                    )));
                }
            }
        }
        if a.end_on_exit {
            s.end_at(None);
        }
        Ok(false)
    }

    /// A fresh context manager with the same arguments (one per decorated call).
    fn _recreate_cm(&self) -> CurrentSpan {
        CurrentSpan {
            args: self.args.clone(),
            active: Mutex::new(Vec::new()),
        }
    }

    /// Used as a decorator: each call (or each awaited coroutine) in its own span.
    fn __call__(slf: Py<Self>, py: Python<'_>, func: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let helper = AS_DECORATOR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("honeytrace._otel")?
                .getattr("_as_decorator")?
                .unbind())
        })?;
        Ok(helper.bind(py).call1((slf, func))?.unbind())
    }
}

fn stats_dict<'py>(py: Python<'py>, core: &Core) -> PyResult<Bound<'py, PyDict>> {
    let s = &core.stats;
    let d = PyDict::new(py);
    let g = Stats::get;
    let dropped =
        g(&s.dropped_queue_full) + g(&s.dropped_after_shutdown) + g(&s.dropped_at_shutdown);
    d.set_item("started", g(&s.started))?;
    d.set_item("ended", g(&s.ended))?;
    d.set_item("exported", g(&s.exported))?;
    d.set_item("dropped", dropped)?;
    d.set_item("dropped_queue_full", g(&s.dropped_queue_full))?;
    d.set_item("dropped_after_shutdown", g(&s.dropped_after_shutdown))?;
    d.set_item("dropped_at_shutdown", g(&s.dropped_at_shutdown))?;
    d.set_item("failed", g(&s.failed))?;
    d.set_item("failed_exports", g(&s.failed_exports))?;
    d.set_item("retries", g(&s.retries))?;
    d.set_item("filtered", g(&s.filtered))?;
    d.set_item("queued", core.pipeline.queue_depth())?;
    d.set_item("api_calls", g(&s.api_calls))?;
    d.set_item("api_calls_failed", g(&s.api_calls_failed))?;
    d.set_item(
        "attributes_dropped",
        attributes::INVALID_VALUES.load(Ordering::Relaxed),
    )?;
    d.set_item("internal_errors", diag::panic_count())?;
    d.set_item(
        "values_unconvertible",
        crate::serialize::CONVERSION_ERRORS.load(Ordering::Relaxed),
    )?;
    d.set_item(
        "redaction_errors",
        attributes::REDACTION_ERRORS.load(Ordering::Relaxed),
    )?;
    d.set_item(
        "context_detach_errors",
        crate::context::DETACH_ERRORS.load(Ordering::Relaxed),
    )?;
    crate::propagation::stats_into(&d)?;
    d.set_item("last_error", s.last_error())?;
    Ok(d)
}

fn span_to_dict<'py>(
    py: Python<'py>,
    mut s: SpanData,
    resource: &Resource,
) -> PyResult<Bound<'py, PyDict>> {
    processor::prepare(&mut s);
    let d = PyDict::new(py);
    d.set_item("name", s.name.as_ref())?;
    d.set_item("trace_id", s.span_context.trace_id().to_string())?;
    d.set_item("span_id", s.span_context.span_id().to_string())?;
    d.set_item(
        "parent_span_id",
        (s.parent_span_id != opentelemetry::trace::SpanId::INVALID)
            .then(|| s.parent_span_id.to_string()),
    )?;
    d.set_item("parent_is_remote", s.parent_span_is_remote)?;
    d.set_item("kind", processor::kind_name(&s.span_kind))?;
    let ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    d.set_item("start_time", ns(s.start_time))?;
    d.set_item("end_time", ns(s.end_time))?;
    d.set_item("attributes", attributes::kvs_to_dict(py, &s.attributes)?)?;
    let events = PyList::empty(py);
    for e in s.events.iter() {
        let ed = PyDict::new(py);
        ed.set_item("name", e.name.as_ref())?;
        ed.set_item("timestamp", ns(e.timestamp))?;
        ed.set_item("attributes", attributes::kvs_to_dict(py, &e.attributes)?)?;
        events.append(ed)?;
    }
    d.set_item("events", events)?;
    let links = PyList::empty(py);
    for l in s.links.iter() {
        let ld = PyDict::new(py);
        ld.set_item("trace_id", l.span_context.trace_id().to_string())?;
        ld.set_item("span_id", l.span_context.span_id().to_string())?;
        ld.set_item("attributes", attributes::kvs_to_dict(py, &l.attributes)?)?;
        links.append(ld)?;
    }
    d.set_item("links", links)?;
    let status = PyDict::new(py);
    match &s.status {
        opentelemetry::trace::Status::Unset => {
            status.set_item("code", "UNSET")?;
            status.set_item("description", py.None())?;
        }
        opentelemetry::trace::Status::Ok => {
            status.set_item("code", "OK")?;
            status.set_item("description", py.None())?;
        }
        opentelemetry::trace::Status::Error { description } => {
            status.set_item("code", "ERROR")?;
            status.set_item("description", description.as_ref())?;
        }
    }
    d.set_item("status", status)?;
    let scope = PyDict::new(py);
    scope.set_item("name", s.instrumentation_scope.name())?;
    scope.set_item("version", s.instrumentation_scope.version())?;
    d.set_item("scope", scope)?;
    let res = PyDict::new(py);
    for (k, v) in resource.iter() {
        res.set_item(k.as_str(), attributes::value_to_py(py, v)?)?;
    }
    d.set_item("resource", res)?;
    Ok(d)
}

fn value_str(v: &Option<String>) -> Option<&str> {
    v.as_deref()
}

#[pymethods]
impl TracerCore {
    /// Parse and validate the configuration, build the engine, register it.
    /// Returns (core, unknown keywords, ignored HoneyHive keywords).
    #[staticmethod]
    fn create(
        py: Python<'_>,
        kwargs: &Bound<'_, PyDict>,
        env: HashMap<String, String>,
    ) -> PyResult<(TracerCore, Vec<String>, Vec<String>)> {
        let parsed = config::parse(kwargs, env)
            .map_err(|e| PyValueError::new_err(format!("honeytrace: {e}")))?;
        diag::set_verbose(parsed.config.verbose);
        diag::install_panic_hook();
        let session_id = PyString::new(py, &parsed.config.session_id);
        let project = parsed
            .config
            .project
            .as_deref()
            .map(|p| PyString::new(py, p));
        let source = PyString::new(py, &parsed.config.source);
        let dict = PyDict::new(py);
        dict.set_item("session_id", &session_id)?;
        if let Some(p) = &project {
            dict.set_item("project", p)?;
        }
        dict.set_item("source", &source)?;
        let bag = BaggageDefaults {
            session_id: session_id.unbind(),
            project: project.map(Bound::unbind),
            source: source.unbind(),
            dict: dict.unbind(),
        };
        let core = py.detach(move || Core::build(parsed.config, bag));
        if core.cfg.mode == Mode::Cloud {
            core.pipeline.push_job(Job::SessionStart {
                body: session_start_body(&core.cfg),
                session_id: core.cfg.session_id.clone(),
            });
        }
        register(&core);
        Ok((TracerCore { core }, parsed.unknown, parsed.ignored_legacy))
    }

    #[getter]
    fn id(&self) -> u64 {
        self.core.id
    }
    #[getter]
    fn session_id(&self) -> &str {
        &self.core.cfg.session_id
    }
    #[getter]
    fn session_id_given(&self) -> bool {
        self.core.cfg.session_id_given
    }
    #[getter]
    fn project(&self) -> Option<&str> {
        value_str(&self.core.cfg.project)
    }
    #[getter]
    fn source(&self) -> &str {
        &self.core.cfg.source
    }
    #[getter]
    fn session_name(&self) -> Option<&str> {
        value_str(&self.core.cfg.session_name)
    }
    #[getter]
    fn server_url(&self) -> &str {
        &self.core.cfg.server_url
    }
    #[getter]
    fn mode(&self) -> &'static str {
        self.core.cfg.mode.as_str()
    }
    #[getter]
    fn test_mode(&self) -> bool {
        self.core.cfg.test_mode
    }
    #[getter]
    fn verbose(&self) -> bool {
        self.core.cfg.verbose
    }
    #[getter]
    fn otlp_endpoint(&self) -> Option<&str> {
        value_str(&self.core.cfg.otlp_endpoint)
    }
    #[getter]
    fn otlp_protocol(&self) -> &'static str {
        self.core.cfg.protocol.as_str()
    }
    #[getter]
    fn file_path(&self) -> Option<String> {
        self.core
            .cfg
            .file_path
            .as_ref()
            .map(|p| p.display().to_string())
    }
    #[getter]
    fn service_name(&self) -> &str {
        &self.core.cfg.service_name
    }
    #[getter]
    fn set_global(&self) -> Option<bool> {
        self.core.cfg.set_global
    }
    #[getter]
    fn shutdown_timeout(&self) -> f64 {
        self.core.cfg.shutdown_timeout.as_secs_f64()
    }
    #[getter]
    fn is_shut_down(&self) -> bool {
        self.core.pipeline.is_shut_down()
    }
    #[getter]
    fn destination(&self) -> String {
        self.core.destination()
    }

    /// The resource attributes every span carries.
    fn resource<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.core.resource.iter() {
            d.set_item(k.as_str(), attributes::value_to_py(py, v)?)?;
        }
        Ok(d)
    }

    #[pyo3(signature = (name, version=None, schema_url=None, attributes=None))]
    fn tracer(
        &self,
        name: String,
        version: Option<String>,
        schema_url: Option<String>,
        attributes: Option<&Bound<'_, PyAny>>,
    ) -> ScopedTracer {
        ScopedTracer::new(
            scope_of(name, version, schema_url, attributes),
            Some(self.core.clone()),
        )
    }

    #[pyo3(signature = (name, context=None, kind=None, attributes=None, links=None, start_time=None, record_exception=None, set_status_on_exception=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_span(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
        kind: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        links: Option<&Bound<'_, PyAny>>,
        start_time: Option<&Bound<'_, PyAny>>,
        record_exception: Option<&Bound<'_, PyAny>>,
        set_status_on_exception: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PySpan> {
        start_span_in(
            py,
            &self.core.scope,
            Some(&self.core),
            attributes::lenient_text(name),
            context,
            span_kind(kind),
            attributes,
            links,
            attributes::lenient_ns(start_time),
            flag(record_exception),
            flag(set_status_on_exception),
        )
    }

    /// Wait until every span ended so far is exported (or failed, counted).
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let t = Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
        let p = self.core.pipeline.clone();
        py.detach(move || p.flush(t))
    }

    fn shutdown(&self, py: Python<'_>, timeout: f64) -> bool {
        let t = Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
        let p = self.core.pipeline.clone();
        let ok = py.detach(move || p.shutdown(t));
        registry_mut().cores.retain(|c| c.id != self.core.id);
        ok
    }

    fn make_default(&self) {
        registry_mut().default = Some(self.core.id);
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.core)
    }

    /// Spans kept by the memory exporter, as plain dicts, in end order.
    fn finished_spans<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        if let Some(m) = self.core.pipeline.memory_store() {
            for s in m.snapshot() {
                out.append(span_to_dict(py, s, &self.core.resource)?)?;
            }
        }
        Ok(out)
    }

    fn clear_finished_spans(&self) {
        if let Some(m) = self.core.pipeline.memory_store() {
            m.clear();
        }
    }

    /// Queue a HoneyHive `PUT /events` (cloud mode). False when it cannot be sent.
    fn update_event(&self, body: &Bound<'_, PyAny>) -> bool {
        if self.core.cfg.mode != Mode::Cloud {
            return false;
        }
        self.core.pipeline.push_job(Job::UpdateEvent {
            body: crate::serialize::to_json(body),
        })
    }
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

// ---------------------------------------------------------------------------------
// Module functions

#[pyfunction]
#[pyo3(signature = (name, version=None, schema_url=None, attributes=None))]
pub fn routing_tracer(
    name: String,
    version: Option<String>,
    schema_url: Option<String>,
    attributes: Option<&Bound<'_, PyAny>>,
) -> ScopedTracer {
    ScopedTracer::new(scope_of(name, version, schema_url, attributes), None)
}

#[pyfunction]
pub fn default_tracer_id() -> Option<u64> {
    default_core().map(|c| c.id)
}

/// `os.register_at_fork(after_in_child=...)`: fresh export threads, ids re-seeded.
#[pyfunction]
pub fn after_fork_child() {
    ids::bump_fork_epoch();
    for c in live_cores() {
        c.pipeline.after_fork_child();
    }
}

/// Flush every tracer within one shared deadline.
#[pyfunction]
pub fn flush_all(py: Python<'_>, timeout: f64) -> bool {
    let cores = live_cores();
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
    py.detach(move || {
        let results: Vec<bool> = cores
            .iter()
            .map(|c| {
                c.pipeline
                    .flush(deadline.saturating_duration_since(Instant::now()))
            })
            .collect();
        results.into_iter().all(|ok| ok)
    })
}

/// Shut every tracer down in parallel within one deadline (the atexit hook).
#[pyfunction]
#[pyo3(signature = (timeout=None))]
pub fn shutdown_all(py: Python<'_>, timeout: Option<f64>) -> bool {
    let cores = live_cores();
    if cores.is_empty() {
        return true;
    }
    let secs = timeout.unwrap_or_else(|| {
        cores
            .iter()
            .map(|c| c.cfg.shutdown_timeout.as_secs_f64())
            .fold(0.0, f64::max)
    });
    let deadline = Instant::now() + Duration::from_secs_f64(secs.clamp(0.0, 86_400.0));
    let ok = py.detach(move || {
        for c in &cores {
            c.pipeline.begin_shutdown(deadline);
        }
        // Wait on every pipeline, even after one has failed.
        let results: Vec<bool> = cores
            .iter()
            .map(|c| c.pipeline.wait_shutdown(deadline))
            .collect();
        results.into_iter().all(|ok| ok)
    });
    registry_mut().cores.clear();
    ok
}
