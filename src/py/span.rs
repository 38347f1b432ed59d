//! The Python span handle (spans live in the engine; Python holds this handle).
//! Implements the `opentelemetry.trace.Span` interface; `honeytrace/__init__.py`
//! registers the class as a virtual subclass so `isinstance(span, trace.Span)` holds.

use crate::engine::diag::{self, COUNTERS};
use crate::engine::keys;
use crate::engine::span::{ns_to_time, Recording};
use crate::engine::tracer::Begun;
use crate::py::boundary::{Degrade, Section};
use crate::py::bridge::{bridge, from_py_span_context};
use crate::py::capture::{capture_into, Captured};
use crate::py::convert::{from_mapping, lenient_ns, lenient_text, to_value};
use crate::py::handle::Handle;
use crate::py::pystr;
use opentelemetry::trace::{SpanContext, Status};
use opentelemetry::KeyValue;
use pyo3::exceptions::{PyException, PyGeneratorExit, PyKeyboardInterrupt, PySystemExit};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};
use pyo3::PyTraverseError;
use std::borrow::Cow;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// What a span handle holds under its lock.
#[derive(Default)]
struct State {
    /// The span while it records. Boxed: a span object moves several times between
    /// creation and the Python heap; a pointer moves instead of the ~350-byte `SpanData`.
    rec: Option<Box<Recording>>,
    /// A decorated call's context token (`TraceSpec.enter`), restored by `_done`/`_error`.
    token: Option<Py<PyAny>>,
}

/// How a decorated call's result is captured (`TraceSpec.enter`): the span handle is
/// the call's scope too, which saves an object per call.
#[derive(Clone, Copy)]
pub struct CallCapture {
    pub outputs: bool,
    pub budget: usize,
}

#[pyclass(module = "honeytrace._core", name = "Span", frozen, weakref)]
pub struct PySpan {
    inner: Mutex<State>,
    call: Option<CallCapture>,
    pub(crate) sc: SpanContext,
    pub(crate) handle: Option<Arc<Handle>>,
    /// The Python `SpanContext`, made on first use. It cannot refer back to the span,
    /// so it needs no clearing.
    py_sc: Mutex<Option<Py<PyAny>>>,
    record_exception: bool,
    set_status_on_exception: bool,
}

impl Drop for PySpan {
    /// A span garbage-collected without `end()` is ended then (like the SDK's Span).
    fn drop(&mut self) {
        let rec = self.inner.get_mut().map_or(None, |st| st.rec.take());
        if let (Some(rec), Some(h)) = (rec, self.handle.as_ref()) {
            diag::shield("span end", || (), || h.core.finish(rec, None));
        }
    }
}

impl Degrade for PySpan {
    fn degraded() -> Self {
        PySpan::non_recording(SpanContext::empty_context())
    }
}

impl PySpan {
    /// The handle for what `Core::begin_span` decided.
    pub fn begun(
        begun: Begun,
        handle: Arc<Handle>,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> Self {
        match begun {
            Begun::Recording(rec) => PySpan {
                sc: rec.data.span_context.clone(),
                inner: Mutex::new(State {
                    rec: Some(rec),
                    token: None,
                }),
                call: None,
                handle: Some(handle),
                py_sc: Mutex::new(None),
                record_exception,
                set_status_on_exception,
            },
            Begun::NotSampled(sc) => PySpan::remote(sc, Some(handle)),
        }
    }

    /// A span that records nothing (disabled or shut-down tracer).
    pub fn non_recording(sc: SpanContext) -> Self {
        Self::remote(sc, None)
    }

    /// A span that records nothing but has a context: a remote parent (from incoming
    /// headers) or an unsampled span. `handle` is the tracer its children belong to.
    pub fn remote(sc: SpanContext, handle: Option<Arc<Handle>>) -> Self {
        PySpan {
            inner: Mutex::new(State::default()),
            call: None,
            sc,
            handle,
            py_sc: Mutex::new(None),
            record_exception: false,
            set_status_on_exception: false,
        }
    }

    /// The span as a decorated call's scope (see `CallCapture`).
    pub fn for_call(mut self, call: CallCapture) -> Self {
        self.call = Some(call);
        self
    }

    /// Keep the call's context token, for `_done`/`_error` to restore.
    pub fn set_token(&self, token: Py<PyAny>) {
        self.lock().token = Some(token);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn restore(&self, py: Python<'_>) {
        let token = self.lock().token.take();
        if let Some(t) = token {
            if let Ok(b) = bridge(py) {
                b.detach(t.bind(py));
            }
        }
    }

    pub(crate) fn with_span(&self, f: impl FnOnce(&mut Recording)) {
        if let Some(s) = self.lock().rec.as_deref_mut() {
            f(s);
        }
    }

    pub fn end_at(&self, end: Option<SystemTime>) {
        // Take the span out first: ending runs the processor, no lock held.
        let taken = self.lock().rec.take();
        if let (Some(rec), Some(h)) = (taken, self.handle.as_ref()) {
            h.core.finish(rec, end);
        }
    }

    /// Add attributes then end, under one lock (the decorator's result).
    pub fn end_with(&self, kvs: Vec<KeyValue>) {
        let taken = self.lock().rec.take();
        if let (Some(mut rec), Some(h)) = (taken, self.handle.as_ref()) {
            rec.set_attributes(kvs);
            h.core.finish(rec, None);
        }
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

    pub fn is_recording_now(&self) -> bool {
        self.lock().rec.is_some()
    }

    pub fn flags(&self) -> (bool, bool) {
        (self.record_exception, self.set_status_on_exception)
    }

    /// The `exception` event (the decorator, the context managers, `record_exception`).
    /// The message and the stack trace come from Python code: without a section (the
    /// interpreter exiting) the event has the type only.
    pub fn record_exception_event(
        &self,
        exception: &Bound<'_, PyAny>,
        traceback: Option<Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<u64>,
        escaped: bool,
    ) {
        if !self.is_recording_now() {
            return;
        }
        let py = exception.py();
        let ty = exception.get_type();
        let type_name = qualified_type(&ty);
        let (message, stack) = match Section::open() {
            None => (String::new(), String::new()),
            Some(_section) => {
                let message = exception.str().map(|s| s.to_string()).unwrap_or_default();
                // An exception caught at the C level carries its traceback in the error
                // state, not yet in `__traceback__`: the caller passes it.
                let tb = traceback.or_else(|| exception.getattr(intern!(py, "__traceback__")).ok());
                let stack = bridge(py)
                    .and_then(|b| b.format_exception.bind(py).call1((ty, exception, tb)))
                    .and_then(|lines| PyString::new(py, "").call_method1("join", (lines,)))
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                (message, stack)
            }
        };
        let mut attrs = vec![
            KeyValue::new("exception.type", type_name),
            KeyValue::new("exception.message", message),
            KeyValue::new("exception.stacktrace", stack),
            KeyValue::new("exception.escaped", if escaped { "True" } else { "False" }),
        ];
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            from_mapping(a, &mut attrs);
        }
        let when = timestamp.map_or_else(SystemTime::now, ns_to_time);
        self.with_span(|s| s.add_event_with_timestamp("exception", when, attrs));
    }

    /// `ERROR` with "Type: message" (the OpenTelemetry context managers' status).
    /// As the SDK writes it, also for an empty message (`"ValueError: "`).
    pub fn set_error_status_for(&self, exc: &Bound<'_, PyAny>) {
        let name = exc
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let msg = Section::open()
            .and_then(|_s| exc.str().ok().map(|m| m.to_string()))
            .unwrap_or_default();
        self.set_status_now(Status::error(format!("{name}: {msg}")));
    }

    fn status_from_py(status: &Bound<'_, PyAny>, description: Option<String>) -> Option<Status> {
        let py = status.py();
        let _section = Section::open()?;
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

/// End the span of a call that returned `result` (captured per `capture`). The span
/// ends whatever happens while capturing; an `Interrupt` raised then is passed on.
pub fn finish_ok(
    span: &PySpan,
    result: &Bound<'_, PyAny>,
    capture: bool,
    budget: usize,
) -> Captured<()> {
    let mut kv = Vec::new();
    let r = if capture {
        capture_into(keys::OUTPUT, result, budget, &mut kv)
    } else {
        Ok(())
    };
    span.end_with(kv);
    r
}

/// Record how a call ended on its span (every wrapper kind).
pub fn record_failure(span: &PySpan, err: &Bound<'_, PyAny>, traceback: Option<Bound<'_, PyAny>>) {
    let py = err.py();
    let ty = err.get_type();
    let (type_name, described) = describe(err);
    if err.is_instance_of::<PyException>() {
        if type_name == "CancelledError" {
            // asyncio.CancelledError is an Exception subclass before 3.8 only; kept for
            // other frameworks' CancelledError types that are.
            span.set_many(vec![KeyValue::new("honeyhive_metadata.cancelled", true)]);
            return;
        }
        span.record_exception_event(err, traceback, None, None, true);
        span.set_many(vec![
            KeyValue::new(keys::ERROR, described.clone()),
            KeyValue::new(keys::ERROR_TYPE, qualified_type(&ty)),
        ]);
        span.set_status_now(Status::error(described));
    } else if err.is_instance_of::<PyGeneratorExit>() {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.closed_early", true)]);
    } else if err.is_instance_of::<PyKeyboardInterrupt>() {
        span.set_status_now(Status::error(described));
    } else if err.is_instance_of::<PySystemExit>() {
        let code = Section::open()
            .and_then(|_s| {
                err.getattr(intern!(py, "code"))
                    .ok()
                    .map(|c| c.str().map(|s| s.to_string()).unwrap_or_default())
            })
            .unwrap_or_default();
        span.set_many(vec![KeyValue::new("honeyhive_metadata.exit_code", code)]);
    } else if type_name == "CancelledError" {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.cancelled", true)]);
    } else {
        span.set_status_now(Status::error(described));
    }
}

/// An exception's type name, and "Type: message" (the type alone when the message is
/// empty). `str(exc)` is user code: read inside a section.
fn describe(err: &Bound<'_, PyAny>) -> (String, String) {
    let type_name = err
        .get_type()
        .name()
        .map_or_else(|_| "Exception".into(), |n| n.to_string());
    let message = Section::open()
        .and_then(|_s| err.str().ok().map(|s| s.to_string()))
        .unwrap_or_default();
    let described = if message.is_empty() {
        type_name.clone()
    } else {
        format!("{type_name}: {message}")
    };
    (type_name, described)
}

fn qualified_type(ty: &Bound<'_, PyType>) -> String {
    let q = ty.qualname().map(|q| q.to_string()).unwrap_or_default();
    match ty.module().map(|m| m.to_string()) {
        Ok(m) if !m.is_empty() && m != "builtins" => format!("{m}.{q}"),
        _ => q,
    }
}

#[honeytrace_macros::methods]
impl PySpan {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(sc) = self.py_sc.try_lock() {
            if let Some(sc) = sc.as_ref() {
                visit.call(sc)?;
            }
        }
        if let Ok(st) = self.inner.try_lock() {
            if let Some(t) = st.token.as_ref() {
                visit.call(t)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let t = self.lock().token.take();
        drop(t);
    }

    /// A decorated call returned `result`: restore the context `TraceSpec.enter`
    /// attached, capture the result, end the span. Returns `result`.
    #[fallback(Ok(result.clone().unbind()))]
    fn _done(&self, py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        // One lock for the token and the span (the hot path of every decorated call).
        let (token, rec) = {
            let mut st = self.lock();
            (st.token.take(), st.rec.take())
        };
        if let Some(t) = token {
            bridge(py)?.detach(t.bind(py));
        }
        if let (Some(mut rec), Some(h)) = (rec, self.handle.as_ref()) {
            let mut kv = Vec::new();
            // A span that is not a decorated call's ends without capturing `result`.
            let captured = match self.call {
                Some(call) if call.outputs => {
                    capture_into(keys::OUTPUT, result, call.budget, &mut kv)
                }
                _ => Ok(()),
            };
            // The span ends whatever happened while capturing.
            rec.set_attributes(kv);
            h.core.finish(rec, None);
            captured.map_err(PyErr::from)?;
        }
        Ok(result.clone().unbind())
    }

    /// A decorated call raised `exc` (any BaseException): restore the context, record
    /// it, end the span.
    fn _error(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) {
        self.restore(py);
        if !self.is_recording_now() {
            return; // an untraced call's scope, or already ended
        }
        if exc.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            record_failure(self, exc, None);
        } else {
            crate::py::boundary::invalid_argument("Span._error");
        }
        self.end_at(None);
    }

    #[pyo3(signature = (end_time=None))]
    fn end(&self, end_time: Option<&Bound<'_, PyAny>>) {
        self.end_at(lenient_ns(end_time).map(ns_to_time));
    }

    fn get_span_context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(sc) = self
            .py_sc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(sc.clone_ref(py));
        }
        // Made without the lock held: building it runs Python code.
        let made = bridge(py)?.to_py_span_context(py, &self.sc)?.unbind();
        let mut slot = self.py_sc.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(slot.get_or_insert(made).clone_ref(py))
    }

    fn set_attribute(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) {
        let Ok(key) = key.cast::<PyString>() else {
            diag::count(&COUNTERS.attributes_dropped);
            return;
        };
        match to_value(value) {
            Some(v) => {
                let k = pystr::text(key).into_owned();
                self.with_span(|s| s.set_attribute(KeyValue::new(k, v)));
            }
            None => diag::count(&COUNTERS.attributes_dropped),
        }
    }

    fn set_attributes(&self, attributes: &Bound<'_, PyAny>) {
        let mut kvs = Vec::new();
        from_mapping(attributes, &mut kvs);
        self.with_span(|s| s.set_attributes(kvs));
    }

    #[pyo3(signature = (name, attributes=None, timestamp=None))]
    fn add_event(
        &self,
        name: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) {
        let name = lenient_text(name);
        let mut kvs = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            from_mapping(a, &mut kvs);
        }
        let when = lenient_ns(timestamp).map_or_else(SystemTime::now, ns_to_time);
        self.with_span(|s| s.add_event_with_timestamp(Cow::Owned(name), when, kvs));
    }

    #[pyo3(signature = (context, attributes=None))]
    fn add_link(&self, context: &Bound<'_, PyAny>, attributes: Option<&Bound<'_, PyAny>>) {
        let Some(sc) = from_py_span_context(context) else {
            return;
        };
        let mut kvs = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            from_mapping(a, &mut kvs);
        }
        self.with_span(|s| s.add_link(sc, kvs));
    }

    fn update_name(&self, name: &Bound<'_, PyAny>) {
        let name = lenient_text(name);
        self.with_span(|s| s.update_name(name));
    }

    fn is_recording(&self) -> bool {
        self.is_recording_now()
    }

    #[pyo3(signature = (status, description=None))]
    fn set_status(&self, status: &Bound<'_, PyAny>, description: Option<&Bound<'_, PyAny>>) {
        let description = description.filter(|d| !d.is_none()).map(lenient_text);
        if let Some(st) = Self::status_from_py(status, description) {
            self.with_span(|s| s.set_status(st));
        }
    }

    #[pyo3(signature = (exception, attributes=None, timestamp=None, escaped=None))]
    fn record_exception(
        &self,
        exception: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
        escaped: Option<&Bound<'_, PyAny>>,
    ) {
        if !exception.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            crate::py::boundary::invalid_argument("Span.record_exception");
            return;
        }
        let timestamp = lenient_ns(timestamp);
        let escaped = crate::py::convert::truthy(escaped, false);
        self.record_exception_event(exception, None, attributes, timestamp, escaped);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type=None, exc_val=None, exc_tb=None))]
    fn __exit__(
        &self,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_val: Option<&Bound<'_, PyAny>>,
        exc_tb: Option<&Bound<'_, PyAny>>,
    ) {
        let _ = exc_tb;
        let exc = exc_val.filter(|v| {
            exc_type.is_some_and(pyo3::types::PyAnyMethods::is_instance_of::<PyType>)
                && v.is_instance_of::<pyo3::exceptions::PyBaseException>()
        });
        if let Some(v) = exc {
            if self.is_recording_now() {
                if self.record_exception {
                    self.record_exception_event(v, None, None, None, true);
                }
                if self.set_status_on_exception {
                    self.set_error_status_for(v);
                }
            }
        }
        self.end_at(None);
    }

    /// The id of the honeytrace tracer that owns this span (None if not recording).
    #[getter]
    fn _tracer_id(&self) -> Option<u64> {
        self.handle.as_ref().map(|h| h.core.id)
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
