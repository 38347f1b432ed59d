//! The Python span handle (spans live in the engine; Python holds this handle).
//! Implements the `opentelemetry.trace.Span` interface; `honeytrace/__init__.py`
//! registers the class as a virtual subclass so `isinstance(span, trace.Span)` holds.

use crate::engine::diag::{self, COUNTERS};
use crate::engine::export::prepare::{dedup, kind_name, prepare};
use crate::engine::keys;
use crate::engine::span::{ns_to_time, Recording};
use crate::engine::tracer::Begun;
use crate::py::boundary::{Degrade, Section};
use crate::py::bridge::{bridge, from_py_span_context};
use crate::py::capture::{capture_into, redact_kvs, Captured};
use crate::py::convert::{
    from_mapping, kvs_to_dict, lenient_ns, lenient_text, ns, to_value, value_to_py,
};
use crate::py::handle::Handle;
use crate::py::processors;
use crate::py::pystr;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SpanData;
use pyo3::exceptions::{PyException, PyGeneratorExit, PyKeyboardInterrupt, PySystemExit};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
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
    /// Keep the span's data after it ends, for reads then (`ended`): set by a read
    /// while it records. A span nobody read keeps nothing (see `conclude`).
    keep: bool,
    /// The ended span as exported (stamps applied), when kept.
    ended: Option<Arc<SpanData>>,
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
    kind: SpanKind,
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
        if let Some(rec) = rec {
            diag::shield("span end", || (), || self.conclude(rec, false, None));
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
                kind: rec.data.span_kind.clone(),
                inner: Mutex::new(State {
                    rec: Some(rec),
                    ..State::default()
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
            kind: SpanKind::Internal,
            handle,
            py_sc: Mutex::new(None),
            record_exception: false,
            set_status_on_exception: false,
        }
    }

    /// An ended span's data as a span handle (what processors' `on_end` reads).
    fn view(sc: SpanContext, kind: SpanKind, handle: Arc<Handle>, data: Arc<SpanData>) -> Self {
        PySpan {
            inner: Mutex::new(State {
                ended: Some(data),
                ..State::default()
            }),
            call: None,
            sc,
            kind,
            handle: Some(handle),
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

    /// The recording and whether to keep it after end, taken out of the state (the
    /// end runs processors: no lock held then).
    fn take(&self) -> Option<(Box<Recording>, bool)> {
        let mut st = self.lock();
        let keep = st.keep;
        st.rec.take().map(|r| (r, keep))
    }

    /// End `rec`: hand it to the tracer and, only when the span is kept or Python
    /// processors are there, copy it first (stamps applied as at export) for reads
    /// after end and for the processors' `on_end`.
    fn conclude(&self, mut rec: Box<Recording>, keep: bool, end: Option<SystemTime>) {
        let Some(h) = self.handle.as_ref() else {
            return;
        };
        let procs = h.has_processors();
        if !keep && !procs {
            h.core.finish(rec, end);
            return;
        }
        let end = end.unwrap_or_else(SystemTime::now);
        rec.data.end_time = end;
        let mut copy = rec.data.clone();
        prepare(&mut copy, h.core.cfg.openinference);
        let copy = Arc::new(copy);
        h.core.finish(rec, Some(end));
        if keep {
            self.lock().ended = Some(copy.clone());
        }
        if procs {
            let view = PySpan::view(self.sc.clone(), self.kind.clone(), h.clone(), copy);
            Python::attach(|py| match Bound::new(py, view) {
                Ok(v) => processors::on_end(py, h, v.as_any()),
                Err(e) => drop(e),
            });
        }
    }

    pub fn end_at(&self, end: Option<SystemTime>) {
        if let Some((rec, keep)) = self.take() {
            self.conclude(rec, keep, end);
        }
    }

    /// Add attributes then end, under one lock (the decorator's result).
    pub fn end_with(&self, kvs: Vec<KeyValue>) {
        if let Some((mut rec, keep)) = self.take() {
            rec.set_attributes(kvs);
            self.conclude(rec, keep, None);
        }
    }

    /// A `session.id` among attributes other code sets, with the tracer's own session
    /// (which that id replaces: the session precedence, see `stamp`).
    fn session_from(
        &self,
        kvs: &[KeyValue],
    ) -> Option<(opentelemetry::Value, opentelemetry::Value)> {
        let kv = kvs
            .iter()
            .rev()
            .find(|kv| kv.key == keys::OTEL_SESSION_ID)?;
        let h = self.handle.as_ref()?;
        Some((kv.value.clone(), h.core.stamper.session_id.clone()))
    }

    /// The span's data now (a copy while it records, which marks it kept), or as it
    /// ended when kept; None for a span that records nothing.
    fn data(&self) -> Option<Arc<SpanData>> {
        let mut st = self.lock();
        if let Some(rec) = st.rec.as_deref() {
            let mut d = rec.data.clone();
            st.keep = true;
            dedup(&mut d.attributes);
            return Some(Arc::new(d));
        }
        st.ended.clone()
    }

    /// Set several attributes at once (engine-side enrichment).
    pub fn set_many(&self, kvs: Vec<KeyValue>) {
        if kvs.is_empty() {
            return;
        }
        self.with_span(|s| s.set_attributes(kvs));
    }

    /// `set_many` for values that may hold user data (an exception's message), through
    /// the redaction hook.
    pub fn set_many_redacted(&self, py: Python<'_>, mut kvs: Vec<KeyValue>) {
        redact_quietly(py, &mut kvs);
        self.set_many(kvs);
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
        redact_quietly(py, &mut attrs);
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
        let described = redacted_status(exc.py(), format!("{name}: {msg}"));
        self.set_status_now(Status::error(described));
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
        span.set_many_redacted(
            py,
            vec![
                KeyValue::new(keys::ERROR, described.clone()),
                KeyValue::new(keys::ERROR_TYPE, qualified_type(&ty)),
            ],
        );
        span.set_status_now(Status::error(redacted_status(py, described)));
    } else if err.is_instance_of::<PyGeneratorExit>() {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.closed_early", true)]);
    } else if err.is_instance_of::<PyKeyboardInterrupt>() {
        span.set_status_now(Status::error(redacted_status(py, described)));
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
        span.set_status_now(Status::error(redacted_status(py, described)));
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

/// Through the redaction hook where nothing may raise (an exception being recorded): a
/// `KeyboardInterrupt` in the hook replaces every value, as a failure does, so nothing
/// unredacted is exported; it is counted with the hook's failures.
fn redact_quietly(py: Python<'_>, kvs: &mut [KeyValue]) {
    if redact_kvs(py, kvs).is_err() {
        diag::count(&COUNTERS.redaction_errors);
        for kv in kvs.iter_mut() {
            kv.value = opentelemetry::Value::from("<redaction failed>");
        }
    }
}

/// An error status description with the exception's message, through the redaction
/// hook as `otel.status_description` (it is exported as the status message).
fn redacted_status(py: Python<'_>, described: String) -> String {
    let mut kv = [KeyValue::new("otel.status_description", described)];
    redact_quietly(py, &mut kv);
    let [kv] = kv;
    kv.value.as_str().into_owned()
}

/// A span whose session is its tracer's own takes the `session.id` other code set
/// (`session`: that id and the tracer's session). A session from the caller's baggage
/// or an explicit one stays (the other id is kept at export, see `prepare`).
fn adopt(rec: &mut Recording, session: Option<(opentelemetry::Value, opentelemetry::Value)>) {
    let Some((id, tracers)) = session else {
        return;
    };
    let current = rec
        .data
        .attributes
        .iter()
        .rev()
        .find(|kv| kv.key == keys::SESSION_ID)
        .map(|kv| &kv.value);
    if current.is_none_or(|c| *c == tracers) {
        rec.set_attribute(KeyValue::new(keys::SESSION_ID, id));
    }
}

/// Tell the Python processors of a new span's tracer (`parent_context`: the context
/// it was started in, when given).
pub fn started(span: &Bound<'_, PySpan>, parent_context: Option<&Bound<'_, PyAny>>) {
    let s = span.get();
    if let Some(h) = s.handle.as_ref() {
        if h.has_processors() && s.is_recording_now() {
            processors::on_start(h, span.as_any(), parent_context);
        }
    }
}

/// `honeytrace._readable.<name>` (handed over with the bridge): the Python objects of
/// the read half of a span.
fn readable<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    bridge(py)?.readable.bind(py).getattr(name)
}

/// `opentelemetry.trace.SpanKind` members by value (read on every request by some
/// instrumentations: cached).
fn readable_kinds(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    static KINDS: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    KINDS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(readable(py, "KINDS")?.cast_into::<PyTuple>()?.unbind())
        })
        .map(|t| t.bind(py))
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
        let (token, rec, keep) = {
            let mut st = self.lock();
            (st.token.take(), st.rec.take(), st.keep)
        };
        if let Some(t) = token {
            bridge(py)?.detach(t.bind(py));
        }
        if let Some(mut rec) = rec {
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
            self.conclude(rec, keep, None);
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

    fn set_attribute(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let Ok(key) = key.cast::<PyString>() else {
            diag::count(&COUNTERS.attributes_dropped);
            return Ok(());
        };
        if !self.is_recording_now() {
            return Ok(());
        }
        match to_value(value) {
            Some(v) => {
                let mut kv = [KeyValue::new(pystr::text(key).into_owned(), v)];
                redact_kvs(key.py(), &mut kv)?;
                let [kv] = kv;
                let session = self.session_from(std::slice::from_ref(&kv));
                self.with_span(|s| {
                    s.set_attribute(kv);
                    adopt(s, session);
                });
            }
            None => diag::count(&COUNTERS.attributes_dropped),
        }
        Ok(())
    }

    fn set_attributes(&self, attributes: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.is_recording_now() {
            return Ok(());
        }
        let mut kvs = Vec::new();
        from_mapping(attributes, &mut kvs);
        redact_kvs(attributes.py(), &mut kvs)?;
        let session = self.session_from(&kvs);
        self.with_span(|s| {
            s.set_attributes(kvs);
            adopt(s, session);
        });
        Ok(())
    }

    #[pyo3(signature = (name, attributes=None, timestamp=None))]
    fn add_event(
        &self,
        name: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if !self.is_recording_now() {
            return Ok(());
        }
        let name = lenient_text(name);
        let mut kvs = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            from_mapping(a, &mut kvs);
            redact_kvs(a.py(), &mut kvs)?;
        }
        let when = lenient_ns(timestamp).map_or_else(SystemTime::now, ns_to_time);
        self.with_span(|s| s.add_event_with_timestamp(Cow::Owned(name), when, kvs));
        Ok(())
    }

    #[pyo3(signature = (context, attributes=None))]
    fn add_link(
        &self,
        context: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let Some(sc) = from_py_span_context(context) else {
            return Ok(());
        };
        let mut kvs = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            from_mapping(a, &mut kvs);
            redact_kvs(a.py(), &mut kvs)?;
        }
        self.with_span(|s| s.add_link(sc, kvs));
        Ok(())
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

    // -- The read half of the SDK's span (`opentelemetry.sdk.trace.ReadableSpan`), for
    // instrumentations and processors. Nothing here runs unless someone reads.

    #[getter]
    fn name(&self) -> String {
        if let Some(rec) = self.lock().rec.as_deref() {
            return rec.data.name.to_string();
        }
        self.data().map(|d| d.name.to_string()).unwrap_or_default()
    }

    #[getter]
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let i = match self.kind {
            SpanKind::Internal => 0,
            SpanKind::Server => 1,
            SpanKind::Client => 2,
            SpanKind::Producer => 3,
            SpanKind::Consumer => 4,
        };
        Ok(readable_kinds(py)?.get_item(i)?.unbind())
    }

    #[getter]
    fn context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.get_span_context(py)
    }

    #[getter]
    fn parent(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(d) = self.data() else {
            return Ok(None);
        };
        if d.parent_span_id == SpanId::INVALID {
            return Ok(None);
        }
        let sc = SpanContext::new(
            self.sc.trace_id(),
            d.parent_span_id,
            self.sc.trace_flags(),
            d.parent_span_is_remote,
            self.sc.trace_state().clone(),
        );
        Ok(Some(bridge(py)?.to_py_span_context(py, &sc)?.unbind()))
    }

    #[getter]
    fn start_time(&self) -> Option<u64> {
        if let Some(rec) = self.lock().rec.as_deref() {
            return Some(ns(rec.data.start_time));
        }
        self.data().map(|d| ns(d.start_time))
    }

    /// None while the span records.
    #[getter]
    fn end_time(&self) -> Option<u64> {
        if self.is_recording_now() {
            return None;
        }
        self.data().map(|d| ns(d.end_time))
    }

    /// A read-only mapping; the last value set for a key is the one read.
    #[getter]
    fn attributes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let d = self.data();
        let attrs = kvs_to_dict(py, d.as_ref().map_or(&[][..], |d| &d.attributes[..]))?;
        Ok(readable(py, "attributes")?.call1((attrs,))?.unbind())
    }

    #[getter]
    fn events(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = PyList::empty(py);
        if let Some(d) = self.data() {
            for e in d.events.iter() {
                list.append((
                    e.name.as_ref(),
                    ns(e.timestamp),
                    kvs_to_dict(py, &e.attributes)?,
                    e.dropped_attributes_count,
                ))?;
            }
        }
        Ok(readable(py, "events")?.call1((list,))?.unbind())
    }

    #[getter]
    fn links(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = PyList::empty(py);
        if let Some(d) = self.data() {
            let b = bridge(py)?;
            for l in d.links.iter() {
                list.append((
                    b.to_py_span_context(py, &l.span_context)?,
                    kvs_to_dict(py, &l.attributes)?,
                    l.dropped_attributes_count,
                ))?;
            }
        }
        Ok(readable(py, "links")?.call1((list,))?.unbind())
    }

    #[getter]
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (code, description) = match self.data().map(|d| d.status.clone()) {
            Some(Status::Ok) => (1, None),
            Some(Status::Error { description }) => (2, Some(description.to_string())),
            _ => (0, None),
        };
        Ok(readable(py, "status")?.call1((code, description))?.unbind())
    }

    #[getter]
    fn resource(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let attrs = PyDict::new(py);
        let mut id = 0;
        if let Some(h) = self.handle.as_ref() {
            id = h.core.id;
            for (k, v) in &h.core.resource {
                attrs.set_item(k.as_str(), value_to_py(py, v)?)?;
            }
        }
        Ok(readable(py, "resource")?.call1((id, attrs))?.unbind())
    }

    #[getter]
    fn instrumentation_scope(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let scope = self.data().map(|d| d.instrumentation_scope.clone());
        let (name, version, schema, attrs) = match &scope {
            Some(s) => (
                s.name().to_string(),
                s.version().map(str::to_string),
                s.schema_url().map(str::to_string),
                kvs_to_dict(py, &s.attributes().cloned().collect::<Vec<_>>())?,
            ),
            None => (String::new(), None, None, PyDict::new(py)),
        };
        Ok(readable(py, "scope")?
            .call1((name, version, schema, attrs))?
            .unbind())
    }

    /// The SDK's older name for `instrumentation_scope`.
    #[getter]
    fn instrumentation_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.instrumentation_scope(py)
    }

    #[getter]
    fn dropped_attributes(&self) -> u64 {
        self.data()
            .map_or(0, |d| u64::from(d.dropped_attributes_count))
    }

    #[getter]
    fn dropped_events(&self) -> u64 {
        self.data().map_or(0, |d| u64::from(d.events.dropped_count))
    }

    #[getter]
    fn dropped_links(&self) -> u64 {
        self.data().map_or(0, |d| u64::from(d.links.dropped_count))
    }

    /// The SDK's `ReadableSpan.to_json`.
    #[pyo3(signature = (*args, **kwargs))]
    fn to_json(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mut items = vec![slf.as_any().clone()];
        items.extend(args.iter());
        let all = PyTuple::new(py, items)?;
        Ok(readable(py, "to_json")?.call(all, kwargs)?.unbind())
    }

    /// The kind's OpenTelemetry name (`SERVER`, ...), for `honeytrace/_readable.py`.
    #[getter]
    fn _kind_name(&self) -> String {
        kind_name(&self.kind).to_string()
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
