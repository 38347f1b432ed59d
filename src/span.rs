//! The Python span handle (rule 2: spans live in Rust). Implements the
//! `opentelemetry.trace.Span` interface; `honeytrace/__init__.py` registers the class
//! as a virtual subclass so `isinstance(span, opentelemetry.trace.Span)` holds.

use crate::attributes;
use crate::context::{bridge, from_py_span_context};
use crate::diag;
use crate::tracer::Core;
use opentelemetry::trace::{Event, Link, SpanContext, Status};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanLimits};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A span being recorded: the SDK's `SpanData`, filled in place with the SDK's limit
/// rules, handed to the tracer's processor when it ends. (Building `SpanData` directly,
/// instead of through the SDK's Tracer/Span layer, was about a fifth of a decorated
/// call; see the performance notes.)
pub struct Recording {
    pub(crate) data: SpanData,
    limits: SpanLimits,
}

impl Recording {
    pub fn new(data: SpanData, limits: SpanLimits) -> Self {
        Recording { data, limits }
    }

    pub fn set_attribute(&mut self, kv: KeyValue) {
        if self.data.attributes.len() < self.limits.max_attributes_per_span as usize {
            self.data.attributes.push(kv);
        } else {
            self.data.dropped_attributes_count += 1;
        }
    }

    pub fn set_attributes(&mut self, kvs: impl IntoIterator<Item = KeyValue>) {
        for kv in kvs {
            self.set_attribute(kv);
        }
    }

    pub fn add_event_with_timestamp(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        timestamp: SystemTime,
        mut attrs: Vec<KeyValue>,
    ) {
        if self.data.events.len() < self.limits.max_events_per_span as usize {
            let max = self.limits.max_attributes_per_event as usize;
            let dropped = attrs.len().saturating_sub(max) as u32;
            attrs.truncate(max);
            self.data
                .events
                .events
                .push(Event::new(name, timestamp, attrs, dropped));
        } else {
            self.data.events.dropped_count += 1;
        }
    }

    pub fn add_link(&mut self, sc: SpanContext, mut attrs: Vec<KeyValue>) {
        if self.data.links.len() < self.limits.max_links_per_span as usize {
            let max = self.limits.max_attributes_per_link as usize;
            let dropped = attrs.len().saturating_sub(max) as u32;
            attrs.truncate(max);
            self.data.links.links.push(Link::new(sc, attrs, dropped));
        } else {
            self.data.links.dropped_count += 1;
        }
    }

    pub fn update_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.data.name = name.into();
    }

    /// OpenTelemetry's order: Ok > Error > Unset; a status never goes down.
    pub fn set_status(&mut self, status: Status) {
        if status > self.data.status {
            self.data.status = status;
        }
    }
}

#[pyclass(module = "honeytrace._core", name = "Span", frozen, weakref)]
pub struct PySpan {
    /// Boxed: a span object moves several times between creation and the Python
    /// heap; a pointer moves instead of the ~350-byte `SpanData`.
    inner: Mutex<Option<Box<Recording>>>,
    pub(crate) sc: SpanContext,
    pub(crate) core: Option<Arc<Core>>,
    py_sc: PyOnceLock<Py<PyAny>>,
    record_exception: bool,
    set_status_on_exception: bool,
}

pub fn ns_to_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

impl Drop for PySpan {
    /// A span garbage-collected without `end()` is ended then (like the SDK's Span).
    fn drop(&mut self) {
        let rec = self.inner.get_mut().map(Option::take).unwrap_or(None);
        if let (Some(rec), Some(core)) = (rec, self.core.as_ref()) {
            diag::shield("span end", || (), || core.finish(rec, None));
        }
    }
}

impl PySpan {
    pub fn recording(
        rec: Box<Recording>,
        core: Arc<Core>,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> Self {
        PySpan {
            sc: rec.data.span_context.clone(),
            inner: Mutex::new(Some(rec)),
            core: Some(core),
            py_sc: PyOnceLock::new(),
            record_exception,
            set_status_on_exception,
        }
    }

    /// A span that records nothing (disabled or shut-down tracer).
    pub fn non_recording(sc: SpanContext) -> Self {
        Self::remote(sc, None)
    }

    /// A span that records nothing but has a context: a remote parent (from incoming
    /// headers) or an unsampled span. `core` is the tracer its children belong to.
    pub fn remote(sc: SpanContext, core: Option<Arc<Core>>) -> Self {
        PySpan {
            inner: Mutex::new(None),
            sc,
            core,
            py_sc: PyOnceLock::new(),
            record_exception: false,
            set_status_on_exception: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Box<Recording>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn with_span(&self, f: impl FnOnce(&mut Recording)) {
        diag::shield(
            "span update",
            || (),
            || {
                if let Some(s) = self.lock().as_deref_mut() {
                    f(s);
                }
            },
        )
    }

    pub fn end_at(&self, end: Option<SystemTime>) {
        diag::shield(
            "span end",
            || (),
            || {
                // Take the span out first: ending runs the processor, no lock held.
                let taken = self.lock().take();
                if let (Some(rec), Some(core)) = (taken, self.core.as_ref()) {
                    core.finish(rec, end);
                }
            },
        )
    }

    /// Add attributes then end, under one lock (the decorator's result).
    pub fn end_with(&self, kvs: Vec<KeyValue>) {
        diag::shield(
            "span end",
            || (),
            || {
                let taken = self.lock().take();
                if let (Some(mut rec), Some(core)) = (taken, self.core.as_ref()) {
                    rec.set_attributes(kvs);
                    core.finish(rec, None);
                }
            },
        )
    }

    /// Set several attributes at once (engine-side enrichment).
    pub fn set_many(&self, kvs: Vec<KeyValue>) {
        if kvs.is_empty() {
            return;
        }
        self.with_span(|s| s.set_attributes(kvs));
    }

    pub fn set_status_now(&self, status: Status) {
        self.with_span(|s| s.set_status(status));
    }

    /// The `exception` event for an escaping exception (decorator, context managers).
    pub fn record_exception_event(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, PyAny>,
        traceback: Option<Bound<'_, PyAny>>,
        escaped: bool,
    ) {
        if let Err(e) = self.exception_event_tb(py, exc, traceback, None, None, escaped) {
            diag::log_py(py, diag::DEBUG, &format!("record_exception: {e}"));
        }
    }

    pub fn is_recording_now(&self) -> bool {
        self.lock().is_some()
    }

    fn exception_event(
        &self,
        py: Python<'_>,
        exception: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<u64>,
        escaped: bool,
    ) -> PyResult<()> {
        self.exception_event_tb(py, exception, None, attributes, timestamp, escaped)
    }

    fn exception_event_tb(
        &self,
        py: Python<'_>,
        exception: &Bound<'_, PyAny>,
        traceback: Option<Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<u64>,
        escaped: bool,
    ) -> PyResult<()> {
        if !self.is_recording_now() {
            return Ok(());
        }
        let b = bridge(py)?;
        let ty = exception.get_type();
        let qualname = ty.qualname()?.to_string();
        let module = ty.module()?.to_string();
        let type_name = if module.is_empty() || module == "builtins" {
            qualname
        } else {
            format!("{module}.{qualname}")
        };
        let message = exception.str().map(|s| s.to_string()).unwrap_or_default();
        // An exception caught at the C level (our sync wrapper) carries its traceback in
        // the error state, not yet in `__traceback__`: the caller passes it.
        let tb = traceback.or_else(|| exception.getattr(intern!(py, "__traceback__")).ok());
        let stack = b
            .format_exception
            .bind(py)
            .call1((ty, exception, tb))
            .and_then(|lines| PyString::new(py, "").call_method1("join", (lines,)))
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut attrs = vec![
            KeyValue::new("exception.type", type_name),
            KeyValue::new("exception.message", message),
            KeyValue::new("exception.stacktrace", stack),
            KeyValue::new("exception.escaped", if escaped { "True" } else { "False" }),
        ];
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            attributes::from_mapping(a, &mut attrs);
        }
        let when = timestamp.map(ns_to_time).unwrap_or_else(SystemTime::now);
        self.with_span(|s| s.add_event_with_timestamp("exception", when, attrs));
        Ok(())
    }

    fn status_from_py(status: &Bound<'_, PyAny>, description: Option<String>) -> Option<Status> {
        let py = status.py();
        // `Status` objects carry `status_code` and `description`; a bare `StatusCode` is an enum.
        let (code_obj, desc) = match status.getattr(intern!(py, "status_code")) {
            Ok(code) => (
                code,
                status
                    .getattr(intern!(py, "description"))
                    .ok()
                    .and_then(|d| d.extract::<Option<String>>().ok())
                    .flatten()
                    .or(description),
            ),
            Err(_) => (status.clone(), description),
        };
        let code: i64 = code_obj
            .getattr(intern!(py, "value"))
            .and_then(|v| v.extract())
            .or_else(|_| code_obj.extract())
            .ok()?;
        Some(match code {
            1 => Status::Ok,
            2 => Status::error(desc.unwrap_or_default()),
            _ => Status::Unset,
        })
    }
}

#[pymethods]
impl PySpan {
    #[pyo3(signature = (end_time=None))]
    fn end(&self, end_time: Option<&Bound<'_, PyAny>>) {
        self.end_at(attributes::lenient_ns(end_time).map(ns_to_time));
    }

    fn get_span_context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.py_sc
            .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
                Ok(bridge(py)?.to_py_span_context(py, &self.sc)?.unbind())
            })
            .map(|o| o.clone_ref(py))
    }

    fn set_attribute(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) {
        let Ok(key) = key.cast::<PyString>() else {
            attributes::INVALID_VALUES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        match attributes::to_value(value) {
            Some(v) => {
                let k = crate::pystr::text(key).into_owned();
                self.with_span(|s| s.set_attribute(KeyValue::new(k, v)));
            }
            None => {
                attributes::INVALID_VALUES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn set_attributes(&self, attributes: &Bound<'_, PyAny>) {
        let mut kvs = Vec::new();
        attributes::from_mapping(attributes, &mut kvs);
        self.with_span(|s| s.set_attributes(kvs));
    }

    #[pyo3(signature = (name, attributes=None, timestamp=None))]
    fn add_event(
        &self,
        name: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) {
        let name = attributes::lenient_text(name);
        let mut kvs = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            attributes::from_mapping(a, &mut kvs);
        }
        let when = attributes::lenient_ns(timestamp)
            .map(ns_to_time)
            .unwrap_or_else(SystemTime::now);
        self.with_span(|s| s.add_event_with_timestamp(Cow::Owned(name), when, kvs));
    }

    #[pyo3(signature = (context, attributes=None))]
    fn add_link(&self, context: &Bound<'_, PyAny>, attributes: Option<&Bound<'_, PyAny>>) {
        let Some(sc) = from_py_span_context(context) else {
            return;
        };
        let mut kvs = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            attributes::from_mapping(a, &mut kvs);
        }
        self.with_span(|s| s.add_link(sc, kvs));
    }

    fn update_name(&self, name: &Bound<'_, PyAny>) {
        let name = attributes::lenient_text(name);
        self.with_span(|s| s.update_name(name));
    }

    fn is_recording(&self) -> bool {
        self.is_recording_now()
    }

    #[pyo3(signature = (status, description=None))]
    fn set_status(&self, status: &Bound<'_, PyAny>, description: Option<&Bound<'_, PyAny>>) {
        let description = description
            .filter(|d| !d.is_none())
            .map(attributes::lenient_text);
        if let Some(st) = Self::status_from_py(status, description) {
            self.with_span(|s| s.set_status(st));
        }
    }

    #[pyo3(signature = (exception, attributes=None, timestamp=None, escaped=None))]
    fn record_exception(
        &self,
        py: Python<'_>,
        exception: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
        escaped: Option<&Bound<'_, PyAny>>,
    ) {
        let timestamp = attributes::lenient_ns(timestamp);
        let escaped = escaped.is_some_and(|e| e.is_truthy().unwrap_or(false));
        if let Err(e) = self.exception_event(py, exception, attributes, timestamp, escaped) {
            diag::log_py(py, diag::DEBUG, &format!("record_exception: {e}"));
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type=None, exc_val=None, exc_tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        exc_val: Option<&Bound<'_, PyAny>>,
        exc_tb: Option<&Bound<'_, PyAny>>,
    ) {
        let _ = exc_tb;
        if let (Some(t), Some(v)) = (exc_type, exc_val.filter(|v| !v.is_none())) {
            if self.is_recording_now() {
                if self.record_exception {
                    let _ = self.exception_event(py, v, None, None, true);
                }
                if self.set_status_on_exception {
                    let name = t.name().map(|n| n.to_string()).unwrap_or_default();
                    let msg = v.str().map(|s| s.to_string()).unwrap_or_default();
                    self.with_span(|s| s.set_status(Status::error(format!("{name}: {msg}"))));
                }
            }
        }
        self.end_at(None);
    }

    /// The id of the honeytrace tracer that owns this span (None if not recording).
    #[getter]
    fn _tracer_id(&self) -> Option<u64> {
        self.core.as_ref().map(|c| c.id)
    }

    /// Hex trace id, as in OTLP/JSON.
    #[getter]
    fn trace_id_hex(&self) -> String {
        self.sc.trace_id().to_string()
    }

    /// Hex span id, as in OTLP/JSON.
    #[getter]
    fn span_id_hex(&self) -> String {
        self.sc.span_id().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "honeytrace.Span(trace_id={}, span_id={}, recording={})",
            self.sc.trace_id(),
            self.sc.span_id(),
            if self.is_recording_now() {
                "True"
            } else {
                "False"
            }
        )
    }
}
