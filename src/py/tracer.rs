//! `HoneyHiveTracer`'s engine as Python sees it (`TracerCore`: init, stats, finished
//! spans), and the process-wide functions (flush, shutdown, fork, the default tracer).
//! The tracer's handle and the registry are in `handle.rs`.

use crate::engine::config::parse::{parse, Input};
use crate::engine::config::Mode;
use crate::engine::diag::{self, COUNTERS};
use crate::engine::export::pipeline::Pipeline;
use crate::engine::export::prepare::{kind_name, prepare};
use crate::engine::export::rest::Job;
use crate::engine::export::sink::Stats;
use crate::engine::ids;
use crate::engine::propagation::policy;
use crate::engine::tracer::Core;
use crate::py::boundary::invalid_argument;
use crate::py::capture::to_json;
use crate::py::config::raw_kwargs;
use crate::py::convert::{kvs_to_dict, ns, value_to_py};
use crate::py::handle::{default_handle, Handle, Processors, GLOBAL_PROCESSORS, REGISTRY};
use crate::py::otel::{scope_of, ScopedTracer};
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------
// Reports

#[allow(clippy::many_single_char_names)] // counters, dict, getter: one letter each
fn stats_dict<'py>(py: Python<'py>, h: &Handle) -> PyResult<Bound<'py, PyDict>> {
    let s = &h.core.stats;
    let g = Stats::get;
    // The tracer's counters and what is not yet handled, read at one moment (Python is
    // called only after, to build the dict).
    let (queued, queued_bytes, counts) = h.core.pipeline.consistent(|| {
        [
            ("started", g(&s.started)),
            ("ended", g(&s.ended)),
            ("exported", g(&s.exported)),
            ("dropped_queue_full", g(&s.dropped_queue_full)),
            ("dropped_queue_bytes", g(&s.dropped_queue_bytes)),
            ("dropped_after_shutdown", g(&s.dropped_after_shutdown)),
            ("dropped_at_shutdown", g(&s.dropped_at_shutdown)),
            ("failed", g(&s.failed)),
            ("failed_exports", g(&s.failed_exports)),
            ("retries", g(&s.retries)),
            ("filtered", g(&s.filtered)),
            ("sampled_out", g(&s.sampled_out)),
            ("spooled", g(&s.spooled)),
            ("spool_exported", g(&s.spool_exported)),
            ("spool_dropped", g(&s.spool_dropped)),
            ("copies_failed", g(&s.copies_failed)),
        ]
    });
    let dropped: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("dropped_"))
        .map(|&(_, v)| v)
        .sum();
    let d = PyDict::new(py);
    for (k, v) in counts {
        d.set_item(k, v)?;
        if k == "exported" {
            d.set_item("dropped", dropped)?; // keeps the documented key order
        }
    }
    d.set_item("queued", queued)?;
    d.set_item("queued_bytes", queued_bytes)?;
    d.set_item("api_calls", g(&s.api_calls))?;
    d.set_item("api_calls_failed", g(&s.api_calls_failed))?;
    let c = &COUNTERS;
    for (k, v) in [
        ("attributes_dropped", &c.attributes_dropped),
        ("internal_errors", &c.internal_errors),
        ("values_unconvertible", &c.values_unconvertible),
        ("redaction_errors", &c.redaction_errors),
        ("processor_errors", &c.processor_errors),
        ("context_detach_errors", &c.context_detach_errors),
        ("invalid_arguments", &c.invalid_arguments),
        ("log_records_dropped", &c.log_records_dropped),
        ("thread_restarts", &c.thread_restarts),
    ] {
        d.set_item(k, diag::get(v))?;
    }
    let p = &policy::STATS;
    for (k, v) in [
        ("traceparent_invalid", &p.traceparent_invalid),
        ("tracestate_dropped", &p.tracestate_dropped),
        ("baggage_dropped", &p.baggage_dropped),
        ("incoming_rejected", &p.incoming_rejected),
        ("sessions_unsigned", &p.sessions_unsigned),
        ("sessions_forged", &p.sessions_forged),
        ("sessions_stale", &p.sessions_stale),
        ("contexts_ignored", &p.contexts_ignored),
    ] {
        d.set_item(k, diag::get(v))?;
    }
    d.set_item("last_error", s.last_error())?;
    Ok(d)
}

fn span_to_dict<'py>(
    py: Python<'py>,
    mut s: SpanData,
    resource: &Resource,
    openinference: bool,
) -> PyResult<Bound<'py, PyDict>> {
    prepare(&mut s, openinference);
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
    d.set_item("kind", kind_name(&s.span_kind))?;
    d.set_item("start_time", ns(s.start_time))?;
    d.set_item("end_time", ns(s.end_time))?;
    d.set_item("attributes", kvs_to_dict(py, &s.attributes)?)?;
    let events = PyList::empty(py);
    for e in s.events.iter() {
        let ed = PyDict::new(py);
        ed.set_item("name", e.name.as_ref())?;
        ed.set_item("timestamp", ns(e.timestamp))?;
        ed.set_item("attributes", kvs_to_dict(py, &e.attributes)?)?;
        events.append(ed)?;
    }
    d.set_item("events", events)?;
    let links = PyList::empty(py);
    for l in s.links.iter() {
        let ld = PyDict::new(py);
        ld.set_item("trace_id", l.span_context.trace_id().to_string())?;
        ld.set_item("span_id", l.span_context.span_id().to_string())?;
        ld.set_item("attributes", kvs_to_dict(py, &l.attributes)?)?;
        links.append(ld)?;
    }
    d.set_item("links", links)?;
    let status = PyDict::new(py);
    let (code, description) = match &s.status {
        Status::Unset => ("UNSET", None),
        Status::Ok => ("OK", None),
        Status::Error { description } => ("ERROR", Some(description.to_string())),
    };
    status.set_item("code", code)?;
    status.set_item("description", description)?;
    d.set_item("status", status)?;
    let scope = PyDict::new(py);
    scope.set_item("name", s.instrumentation_scope.name())?;
    scope.set_item("version", s.instrumentation_scope.version())?;
    d.set_item("scope", scope)?;
    d.set_item("resource", resource_dict(py, resource)?)?;
    Ok(d)
}

fn resource_dict<'py>(py: Python<'py>, resource: &Resource) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in resource {
        d.set_item(k.as_str(), value_to_py(py, v)?)?;
    }
    Ok(d)
}

/// Seconds given by a user as a `Duration`: NaN, negative, infinite, huge, or not a
/// number at all give `default` or the nearest bound (and count as invalid).
fn timeout_arg(value: Option<&Bound<'_, PyAny>>, default: Duration, what: &str) -> Duration {
    const MAX: Duration = Duration::from_secs(86_400);
    let Some(v) = value.filter(|v| !v.is_none()) else {
        return default;
    };
    match v.extract::<f64>() {
        Ok(f) if f.is_nan() => {
            invalid_argument(what);
            default
        }
        Ok(f) => diag::seconds(f, MAX),
        Err(_) => {
            invalid_argument(what);
            default
        }
    }
}

// ---------------------------------------------------------------------------------
// Python classes

/// The engine of one `HoneyHiveTracer`.
#[pyclass(module = "honeytrace._core", name = "TracerCore", frozen)]
pub struct TracerCore {
    pub handle: Arc<Handle>,
}

impl TracerCore {
    pub fn core(&self) -> &Core {
        &self.handle.core
    }
}

/// A tracer in disabled mode, for when building the real one failed inside the engine.
fn disabled_core(py: Python<'_>) -> PyResult<(TracerCore, Vec<String>, Vec<String>)> {
    let mut input = Input {
        kwargs: Vec::new(),
        env: HashMap::new(),
    };
    input.env.insert("OTEL_SDK_DISABLED".into(), "true".into());
    let parsed = parse(&input).map_err(|e| PyValueError::new_err(e.0))?;
    let handle = Arc::new(Handle::new(py, Core::build(parsed.config))?);
    Ok((TracerCore { handle }, Vec::new(), Vec::new()))
}

#[honeytrace_macros::methods]
impl TracerCore {
    /// Parse and validate the configuration, build the engine, register it.
    /// Returns (core, unknown keywords, ignored HoneyHive keywords). Only
    /// configuration errors raise (`ValueError`).
    #[staticmethod]
    #[fallback(Python::attach(disabled_core))]
    fn create(
        py: Python<'_>,
        kwargs: &Bound<'_, PyDict>,
        env: HashMap<String, String>,
    ) -> PyResult<(TracerCore, Vec<String>, Vec<String>)> {
        let input = Input {
            kwargs: raw_kwargs(kwargs)?,
            env,
        };
        let parsed =
            parse(&input).map_err(|e| PyValueError::new_err(format!("honeytrace: {e}")))?;
        diag::set_verbose(parsed.config.verbose);
        let handle = Arc::new(Handle::new(py, Core::build(parsed.config))?);
        REGISTRY.register(&handle);
        Ok((TracerCore { handle }, parsed.unknown, parsed.ignored_legacy))
    }

    #[getter]
    fn id(&self) -> u64 {
        self.core().id
    }
    #[getter]
    fn session_id(&self) -> String {
        self.core().cfg.session_id.clone()
    }
    #[getter]
    fn session_id_given(&self) -> bool {
        self.core().cfg.session_id_given
    }
    #[getter]
    fn project(&self) -> Option<String> {
        self.core().cfg.project.clone()
    }
    #[getter]
    fn source(&self) -> String {
        self.core().cfg.source.clone()
    }
    #[getter]
    fn session_name(&self) -> Option<String> {
        self.core().cfg.session_name.clone()
    }
    #[getter]
    fn server_url(&self) -> String {
        self.core().cfg.server_url.clone()
    }
    #[getter]
    fn mode(&self) -> String {
        self.core().cfg.mode.as_str().to_string()
    }
    #[getter]
    fn test_mode(&self) -> bool {
        self.core().cfg.test_mode
    }
    #[getter]
    fn verbose(&self) -> bool {
        self.core().cfg.verbose
    }
    #[getter]
    fn otlp_endpoint(&self) -> Option<String> {
        self.core().cfg.otlp_endpoint.clone()
    }
    #[getter]
    fn otlp_protocol(&self) -> String {
        self.core().cfg.protocol.as_str().to_string()
    }
    #[getter]
    fn file_path(&self) -> Option<String> {
        self.core()
            .cfg
            .file_path
            .as_ref()
            .map(|p| p.display().to_string())
    }
    #[getter]
    fn service_name(&self) -> String {
        self.core().cfg.service_name.clone()
    }
    #[getter]
    fn set_global(&self) -> Option<bool> {
        self.core().cfg.set_global
    }
    #[getter]
    fn exit_hooks(&self) -> bool {
        self.core().cfg.exit_hooks
    }
    #[getter]
    fn propagate_threads(&self) -> bool {
        self.core().cfg.propagate_threads
    }
    #[getter]
    fn propagate_processes(&self) -> bool {
        self.core().cfg.propagate_processes
    }
    #[getter]
    fn instrument_http(&self) -> bool {
        self.core().cfg.instrument_http
    }
    #[getter]
    fn instrument_celery(&self) -> bool {
        self.core().cfg.instrument_celery
    }
    #[getter]
    fn baggage_hosts(&self) -> Option<Vec<String>> {
        self.core().cfg.baggage_hosts.clone()
    }
    #[getter]
    fn shutdown_timeout(&self) -> f64 {
        self.core().cfg.shutdown_timeout.as_secs_f64()
    }
    #[getter]
    fn is_shut_down(&self) -> bool {
        self.core().pipeline.is_shut_down()
    }
    #[getter]
    fn destination(&self) -> String {
        self.core().destination()
    }

    /// The resource attributes every span carries.
    fn resource(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        Ok(resource_dict(py, &self.core().resource)?.unbind())
    }

    /// An OpenTelemetry `Tracer` bound to this tracer.
    #[pyo3(signature = (name, version=None, schema_url=None, attributes=None))]
    fn tracer(
        &self,
        name: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
        schema_url: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
    ) -> ScopedTracer {
        ScopedTracer::new(
            scope_of(name, version, schema_url, attributes),
            Some(self.handle.clone()),
        )
    }

    /// Wait until every span ended so far is exported (or failed, counted).
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> bool {
        let t = timeout_arg(timeout, Duration::from_secs(30), "flush");
        let p: Arc<Pipeline> = self.core().pipeline.clone();
        py.detach(move || p.flush(t))
    }

    #[pyo3(signature = (timeout=None))]
    fn shutdown(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> bool {
        let t = timeout_arg(timeout, self.core().cfg.shutdown_timeout, "shutdown");
        let p: Arc<Pipeline> = self.core().pipeline.clone();
        let ok = py.detach(move || p.shutdown(t));
        REGISTRY.remove(self.core().id);
        ok
    }

    fn make_default(&self) {
        REGISTRY.set_default(self.core().id);
    }

    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        Ok(stats_dict(py, &self.handle)?.unbind())
    }

    /// Spans kept by the memory exporter, as plain dicts, in end order.
    fn finished_spans(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let out = PyList::empty(py);
        if let Some(m) = self.core().pipeline.memory_store() {
            for s in m.snapshot() {
                let oi = self.core().cfg.openinference;
                out.append(span_to_dict(py, s, &self.core().resource, oi)?)?;
            }
        }
        Ok(out.unbind())
    }

    fn clear_finished_spans(&self) {
        if let Some(m) = self.core().pipeline.memory_store() {
            m.clear();
        }
    }

    /// Queue a HoneyHive `PUT /events` (cloud mode). False when it cannot be sent.
    fn update_event(&self, body: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.core().cfg.mode != Mode::Cloud {
            return Ok(false);
        }
        let body = to_json(body)?;
        Ok(self.core().pipeline.push_job(Job::UpdateEvent { body }))
    }
}

/// The tracer named by a Python argument: a `HoneyHiveTracer`, its `TracerCore`, or
/// None. Anything else is an invalid argument (None).
pub fn handle_of(tracer: Option<&Bound<'_, PyAny>>) -> Option<Arc<Handle>> {
    let t = tracer.filter(|t| !t.is_none())?;
    if let Ok(c) = t.cast::<TracerCore>() {
        return Some(c.get().handle.clone());
    }
    let py = t.py();
    if let Some(c) = t
        .getattr(intern!(py, "_core"))
        .ok()
        .and_then(|c| c.cast_into::<TracerCore>().ok())
    {
        Some(c.get().handle.clone())
    } else {
        invalid_argument("tracer");
        None
    }
}

// ---------------------------------------------------------------------------------
// Module functions

#[honeytrace_macros::function]
pub fn default_tracer_id() -> Option<u64> {
    default_handle().map(|h| h.core.id)
}

/// `os.register_at_fork(after_in_child=...)`: fresh log queue and export threads (and
/// the locks they take), ids re-seeded.
#[honeytrace_macros::function]
pub fn after_fork_child() {
    diag::after_fork_child();
    ids::bump_fork_epoch();
    for h in REGISTRY.all() {
        h.core.pipeline.after_fork_child();
    }
}

/// Flush every tracer within one shared deadline.
#[honeytrace_macros::function]
#[pyo3(signature = (timeout=None))]
pub fn flush_all(py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> bool {
    let handles = REGISTRY.all();
    let deadline = diag::deadline_after(timeout_arg(timeout, Duration::from_secs(30), "flush"));
    py.detach(move || {
        // Every export thread starts at once; then wait for each.
        let tickets: Vec<_> = handles
            .iter()
            .map(|h| h.core.pipeline.flush_begin())
            .collect();
        handles.iter().zip(tickets).fold(true, |ok, (h, t)| {
            h.core.pipeline.flush_wait(t, deadline) && ok
        })
    })
}

/// Shut every tracer down in parallel within one deadline (the exit hook).
#[honeytrace_macros::function]
#[pyo3(signature = (timeout=None))]
pub fn shutdown_all(py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> bool {
    let handles = REGISTRY.all();
    if handles.is_empty() {
        return true;
    }
    let longest = handles
        .iter()
        .map(|h| h.core.cfg.shutdown_timeout)
        .max()
        .unwrap_or(Duration::from_secs(5));
    let deadline = diag::deadline_after(timeout_arg(timeout, longest, "shutdown"));
    let ok = py.detach(move || {
        for h in &handles {
            h.core.pipeline.begin_shutdown(deadline);
        }
        // Wait on every pipeline, even after one has failed.
        let results: Vec<bool> = handles
            .iter()
            .map(|h| h.core.pipeline.wait_shutdown(deadline))
            .collect();
        results.into_iter().all(|ok| ok)
    });
    REGISTRY.clear();
    ok
}

/// A new random (v4) UUID string.
#[honeytrace_macros::function]
pub fn uuid4() -> String {
    ids::uuid4()
}

// ---------------------------------------------------------------------------------
// Python span processors (`TracerProvider.add_span_processor`; calls in `processors`)

fn list_of(tracer: Option<&Bound<'_, PyAny>>) -> Option<ListRef> {
    match tracer.filter(|t| !t.is_none()) {
        None => Some(ListRef::Global),
        Some(t) => handle_of(Some(t)).map(ListRef::Tracer),
    }
}

enum ListRef {
    Global,
    Tracer(Arc<Handle>),
}

impl ListRef {
    fn get(&self) -> &Processors {
        match self {
            ListRef::Global => &GLOBAL_PROCESSORS,
            ListRef::Tracer(h) => &h.processors,
        }
    }
}

/// Add a Python span processor to a tracer (`tracer`: its `TracerCore`), or to the
/// global provider (None: every tracer's spans).
#[honeytrace_macros::function]
#[pyo3(signature = (tracer, processor))]
pub fn _add_span_processor(tracer: Option<&Bound<'_, PyAny>>, processor: Py<PyAny>) -> bool {
    match list_of(tracer) {
        Some(l) => {
            l.get().add(processor);
            true
        }
        None => false,
    }
}

/// The processors of a tracer or of the global provider; `remove`: and take them off
/// (the provider's shutdown).
#[honeytrace_macros::function]
#[pyo3(signature = (tracer, remove=false))]
pub fn _span_processors(
    py: Python<'_>,
    tracer: Option<&Bound<'_, PyAny>>,
    remove: bool,
) -> Vec<Py<PyAny>> {
    match list_of(tracer) {
        Some(l) if remove => l.get().take(),
        Some(l) => l.get().snapshot(py),
        None => Vec::new(),
    }
}
