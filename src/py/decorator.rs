//! `@trace`: the per-function spec and the call scope the Python wrappers drive
//! (`honeytrace/_wrappers.py`). The wrappers are Python functions, so the user's code
//! always runs under Python frames, never under an engine frame (see docs/internals.md).
//!
//! Per call: read the current context, pick the tracer (explicit > the tracer of the
//! current honeytrace span > the default), start a span with the static attributes,
//! the captured arguments and the session stamps, make a child context (adding
//! session_id/project/source to baggage only where absent, or overriding them when
//! given explicitly); after the call, capture the result or the exception and end the
//! span.

use crate::engine::diag;
use crate::engine::keys;
use crate::engine::span::SpanOptions;
use crate::engine::stamp::{is_stamp_key, shared, Explicit, Incoming};
use crate::engine::tracer::restart_link_of;
use crate::py::boundary::{Degrade, Section};
use crate::py::bridge::bridge;
use crate::py::capture::{
    self, capture_into, flatten, suppressed, Captured, Interrupt, JsonWriter,
};
use crate::py::convert::{dict_items, from_mapping, lenient_text, truthy, value_to_py};
use crate::py::handle::Handle;
use crate::py::parent::{baggage_of, parent_of, restart_link, Parent};
use crate::py::span::{finish_ok, record_failure, CallCapture, PySpan};
use crate::py::tracer::handle_of;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Key, KeyValue, Value};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::PyTraverseError;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

const DEFAULT_BUDGET: usize = 64 * 1024;

static WARNED_UNTRACED: AtomicBool = AtomicBool::new(false);

// Parameter kinds, as in inspect.Parameter.
const POSITIONAL_ONLY: u8 = 0;
const POSITIONAL_OR_KEYWORD: u8 = 1;
const VAR_POSITIONAL: u8 = 2;
const KEYWORD_ONLY: u8 = 3;
const VAR_KEYWORD: u8 = 4;

/// A parameter as Python describes it: (name, kind, default, skip).
type ParamSpec = (String, u8, Option<Py<PyAny>>, bool);

struct Param {
    name: Py<PyString>,
    key: Key,
    kind: u8,
    skip: bool,
}

/// Everything about a decorated function that does not change between calls.
#[pyclass(module = "honeytrace._core", name = "TraceSpec", frozen)]
pub struct TraceSpec {
    name: Arc<str>,
    /// The name interned for the process (decorated functions): no allocation per call.
    static_name: Option<&'static str>,
    /// No static attribute is a stamp key: stamping needs no scans.
    fresh: bool,
    static_attrs: Vec<KeyValue>,
    /// Options whose values are flattened (metadata, config, ...), kept as given.
    flattened: Option<Flattened>,
    explicit: Explicit,
    /// Explicit session/project/source for the baggage of children (key, value).
    bag_overrides: Vec<(Py<PyString>, Py<PyString>)>,
    tracer: Option<Arc<Handle>>,
    capture_inputs: bool,
    capture_outputs: bool,
    /// Signature known (else inputs are captured as `args`/`kwargs`).
    params: Option<Vec<Param>>,
    /// The parameters' defaults (read only when an argument was not passed).
    defaults: Mutex<Vec<Option<Py<PyAny>>>>,
    /// The constructor's keywords, for pickling (the tracer left out: it belongs to
    /// this process).
    reduce: Mutex<Option<Py<PyDict>>>,
    /// Built after a contained internal error: calls run untraced.
    disabled: bool,
}

impl Degrade for TraceSpec {
    fn degraded() -> Self {
        TraceSpec {
            name: Arc::from("untraced"),
            static_name: None,
            fresh: true,
            static_attrs: Vec::new(),
            flattened: None,
            explicit: Explicit::default(),
            bag_overrides: Vec::new(),
            tracer: None,
            capture_inputs: false,
            capture_outputs: false,
            params: None,
            defaults: Mutex::new(Vec::new()),
            reduce: Mutex::new(None),
            disabled: true,
        }
    }
}

/// A decorator's flattened options: flattened again when the tracer's budget or the
/// redaction hook differs from the last time (a decorator is usually applied before
/// the tracer exists and the hook is set), cached otherwise.
struct Flattened {
    values: Vec<(&'static str, Py<PyAny>)>,
    cache: Mutex<Option<FlattenedCache>>,
    /// Intern the text (a long-lived decorator's, cloned into every span).
    intern: bool,
}

/// The attributes flattened last, and for what (budget, redaction hook generation).
type FlattenedCache = ((usize, u64), Arc<Vec<KeyValue>>);

impl Flattened {
    fn attributes(&self, py: Python<'_>, budget: usize) -> Captured<Arc<Vec<KeyValue>>> {
        let key = (budget, capture::redactor_generation());
        if let Some((k, attrs)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            if *k == key {
                return Ok(attrs.clone());
            }
        }
        let mut attrs = Vec::new();
        for (ns, v) in &self.values {
            flatten(ns, v.bind(py), budget, &mut attrs)?;
        }
        let attrs = Arc::new(if self.intern {
            attrs.into_iter().map(interned_kv).collect()
        } else {
            attrs
        });
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some((key, attrs.clone()));
        Ok(attrs)
    }
}

/// The same attribute with interned text (see `engine::intern`): cloned into every span.
fn interned_kv(kv: KeyValue) -> KeyValue {
    let key = crate::engine::intern::key(kv.key.as_str());
    let value = match kv.value {
        Value::String(s) => crate::engine::intern::value(s.as_str()),
        other => other,
    };
    KeyValue::new(key, value)
}

fn warn_untraced() {
    if !WARNED_UNTRACED.swap(true, Ordering::Relaxed) {
        diag::log(
            diag::WARNING,
            "@trace: no HoneyHiveTracer is initialised (or all are shut down); decorated functions run untraced",
        );
    }
}

/// The scope of an untraced call: a span that records nothing (one per process).
static NOOP: PyOnceLock<Py<PySpan>> = PyOnceLock::new();

fn noop(py: Python<'_>) -> PyResult<Py<PySpan>> {
    NOOP.get_or_try_init(py, || Py::new(py, PySpan::degraded()))
        .map(|s| s.clone_ref(py))
}

struct Begun<'py> {
    span: Py<PySpan>,
    ctx: Bound<'py, PyAny>,
    handle: Arc<Handle>,
}

impl TraceSpec {
    fn pick(&self, parent: &Parent) -> Option<Arc<Handle>> {
        match parent.tracer(self.tracer.as_ref()) {
            Some(h) if h.core.is_live() => Some(h),
            Some(_) => None,
            None => {
                warn_untraced();
                None
            }
        }
    }

    fn default_of<'py>(&self, py: Python<'py>, i: usize) -> Option<Bound<'py, PyAny>> {
        self.defaults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(i)
            .and_then(|d| d.as_ref().map(|d| d.bind(py).clone()))
    }

    fn capture_args(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        budget: usize,
        out: &mut Vec<KeyValue>,
    ) -> Captured<()> {
        let py = args.py();
        let Some(params) = &self.params else {
            // No signature (some builtins): positional args and keywords as wholes.
            if !args.is_empty() {
                capture_into(
                    Key::from_static_str("honeyhive_inputs.args"),
                    args.as_any(),
                    budget,
                    out,
                )?;
            }
            if let Some(kw) = kwargs.filter(|k| !k.is_empty()) {
                capture_into(
                    Key::from_static_str("honeyhive_inputs.kwargs"),
                    kw.as_any(),
                    budget,
                    out,
                )?;
            }
            return Ok(());
        };
        let mut pos = 0usize;
        let n_args = args.len();
        let keyword = |p: &Param| kwargs.and_then(|k| k.get_item(p.name.bind(py)).ok().flatten());
        for (i, p) in params.iter().enumerate() {
            let value: Option<Bound<'_, PyAny>> = match p.kind {
                POSITIONAL_ONLY | POSITIONAL_OR_KEYWORD => {
                    if pos < n_args {
                        pos += 1;
                        args.get_item(pos - 1).ok()
                    } else if p.kind == POSITIONAL_OR_KEYWORD {
                        keyword(p).or_else(|| self.default_of(py, i))
                    } else {
                        self.default_of(py, i)
                    }
                }
                VAR_POSITIONAL => {
                    let rest = args.get_slice(pos.min(n_args), n_args);
                    pos = n_args;
                    (!rest.is_empty()).then(|| rest.into_any())
                }
                KEYWORD_ONLY if p.skip => None,
                KEYWORD_ONLY => keyword(p).or_else(|| self.default_of(py, i)),
                VAR_KEYWORD => match kwargs.filter(|_| !p.skip) {
                    Some(kw) => {
                        let d = PyDict::new(py);
                        for (k, v) in dict_items(kw) {
                            let named = params.iter().any(|q| {
                                (q.kind == POSITIONAL_OR_KEYWORD || q.kind == KEYWORD_ONLY)
                                    && k.cast::<PyString>().is_ok_and(|k| {
                                        crate::py::pystr::text(k)
                                            == crate::py::pystr::text(q.name.bind(py))
                                    })
                            });
                            if !named {
                                let _ = d.set_item(k, v);
                            }
                        }
                        (!d.is_empty()).then(|| d.into_any())
                    }
                    None => None,
                },
                _ => None,
            };
            if p.skip {
                continue;
            }
            if let Some(v) = value {
                capture_into(p.key.clone(), &v, budget, out)?;
            }
        }
        Ok(())
    }

    /// Start the span and build its context (not attached). None: run untraced.
    fn begin<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        call: Option<CallCapture>,
    ) -> PyResult<Option<Begun<'py>>> {
        if self.disabled || suppressed() {
            return Ok(None);
        }
        let b = bridge(py)?;
        let cur = b.current(py)?;
        let parent = parent_of(b, &cur);
        let Some(handle) = self.pick(&parent) else {
            return Ok(None);
        };
        let budget = handle.core.cfg.max_attribute_bytes;
        let bag = baggage_of(b, &cur);
        let incoming = handle.read_baggage(bag.as_ref());
        // Decided before anything is captured: an unsampled call costs only its context.
        let decision = handle.core.decide(parent.span_context(), || {
            let static_session = || {
                self.static_attrs
                    .iter()
                    .rev()
                    .find(|kv| kv.key == keys::OTEL_SESSION_ID)
                    .map(|kv| &kv.value)
            };
            let v = self
                .explicit
                .session_id
                .as_ref()
                .or(incoming.session_id.as_ref())
                .or_else(static_session)
                .unwrap_or(&handle.core.stamper.session_id);
            Some(v.as_str())
        });
        let mut opts = SpanOptions::new(Cow::Borrowed(""), SpanKind::Internal);
        if decision.sampled() {
            let mut attrs: Vec<KeyValue> = Vec::with_capacity(
                self.static_attrs.len() + 8 + self.params.as_ref().map_or(2, Vec::len),
            );
            attrs.extend(self.static_attrs.iter().cloned());
            if let Some(f) = &self.flattened {
                attrs.extend(f.attributes(py, budget)?.iter().cloned());
            }
            if self.capture_inputs {
                self.capture_args(args, kwargs, budget, &mut attrs)?;
            }
            handle
                .core
                .stamper
                .stamp_with(&mut attrs, &incoming, &self.explicit, self.fresh);
            opts.name = match self.static_name {
                Some(n) => Cow::Borrowed(n),
                None => Cow::Owned(self.name.to_string()),
            };
            opts.attributes = attrs;
            if parent.is_root() {
                if let Some(remote) = restart_link(&cur) {
                    opts.links.push(restart_link_of(remote));
                }
            }
        }
        let begun = handle
            .core
            .begin_decided(&handle.core.scope, decision, opts);
        let mut span = PySpan::begun(begun, handle.clone(), true, true);
        if let Some(mut call) = call {
            call.budget = budget;
            span = span.for_call(call);
        }
        let span = Py::new(py, span)?;
        crate::py::span::started(span.bind(py), None);
        let new_bag = self.child_baggage(py, &handle, &incoming, bag.as_ref())?;
        let ctx = b.child(&cur, span.bind(py).as_any(), new_bag.as_ref())?;
        Ok(Some(Begun { span, ctx, handle }))
    }

    fn scope(&self, begun: Begun<'_>) -> CallScope {
        CallScope {
            span: Some(begun.span),
            context: Some(begun.ctx.unbind()),
            budget: begun.handle.core.cfg.max_attribute_bytes,
            capture_outputs: self.capture_outputs,
            stream: Mutex::new(Stream::default()),
        }
    }

    /// Baggage for the call's children: the tracer's session/project/source where
    /// absent, explicit ones always. None when nothing changes (the common nested case).
    fn child_baggage<'py>(
        &self,
        py: Python<'py>,
        handle: &Handle,
        incoming: &Incoming,
        bag: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let sid_key = intern!(py, "session_id");
        let project_key = intern!(py, "project");
        let source_key = intern!(py, "source");
        // `bag_overrides` holds exactly the explicit ones of these three.
        let explicit = &self.explicit;
        let mut defaults: Vec<(Bound<'py, PyString>, Bound<'py, PyString>)> = Vec::new();
        if incoming.session_id.is_none() && explicit.session_id.is_none() {
            defaults.push((sid_key.clone(), handle.bag.session_id.bind(py).clone()));
        }
        if incoming.project.is_none() && explicit.project.is_none() {
            if let Some(p) = &handle.bag.project {
                defaults.push((project_key.clone(), p.bind(py).clone()));
            }
        }
        if incoming.source.is_none() && explicit.source.is_none() {
            defaults.push((source_key.clone(), handle.bag.source.bind(py).clone()));
        }
        if defaults.is_empty() && self.bag_overrides.is_empty() {
            return Ok(None);
        }
        // The common top-level case: no baggage yet, nothing explicit.
        if self.bag_overrides.is_empty() && bag.is_none_or(pyo3::types::PyDictMethods::is_empty) {
            return Ok(Some(handle.bag.dict.bind(py).clone().into_any()));
        }
        let new = match bag {
            Some(b) => b.copy()?,
            None => PyDict::new(py),
        };
        for (k, v) in defaults {
            new.set_item(k, v)?;
        }
        for (k, v) in &self.bag_overrides {
            new.set_item(k.bind(py), v.bind(py))?;
        }
        Ok(Some(new.into_any()))
    }
}

#[honeytrace_macros::methods]
impl TraceSpec {
    #[new]
    #[pyo3(signature = (name, *, tracer=None, event_type=None, event_name=None, event_id=None,
        session_id=None, project=None, source=None, config=None, metadata=None, metrics=None,
        feedback=None, user_properties=None, inputs=None, outputs=None, attributes=None,
        error=None, capture_inputs=None, capture_outputs=None, params=None, long_lived=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        tracer: Option<&Bound<'_, PyAny>>,
        event_type: Option<&Bound<'_, PyAny>>,
        event_name: Option<&Bound<'_, PyAny>>,
        event_id: Option<&Bound<'_, PyAny>>,
        session_id: Option<&Bound<'_, PyAny>>,
        project: Option<&Bound<'_, PyAny>>,
        source: Option<&Bound<'_, PyAny>>,
        config: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        metrics: Option<&Bound<'_, PyAny>>,
        feedback: Option<&Bound<'_, PyAny>>,
        user_properties: Option<&Bound<'_, PyAny>>,
        inputs: Option<&Bound<'_, PyAny>>,
        outputs: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        error: Option<&Bound<'_, PyAny>>,
        capture_inputs: Option<&Bound<'_, PyAny>>,
        capture_outputs: Option<&Bound<'_, PyAny>>,
        params: Option<&Bound<'_, PyAny>>,
        long_lived: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let text = |v: Option<&Bound<'_, PyAny>>| given(v).map(|v| lenient_text(&v));
        let long_lived_flag = long_lived.cloned();
        let long_lived = truthy(long_lived, false);
        let name = lenient_text(name);
        let (sid, proj, src) = (text(session_id), text(project), text(source));
        let budget = DEFAULT_BUDGET;
        let mut attrs: Vec<KeyValue> = Vec::new();
        if let Some(a) = given(attributes) {
            from_mapping(&a, &mut attrs);
        }
        if let Some(e) = text(error) {
            attrs.push(KeyValue::new(keys::ERROR, e));
        }
        for (key, v) in [
            ("honeyhive_event_type", text(event_type)),
            ("honeyhive_event_name", text(event_name)),
            ("honeyhive_event_id", text(event_id)),
        ] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(key, v));
            }
        }
        let values: Vec<(&'static str, Py<PyAny>)> = [
            ("honeyhive_config", config),
            ("honeyhive_metadata", metadata),
            ("honeyhive_metrics", metrics),
            ("honeyhive_feedback", feedback),
            ("honeyhive_user_properties", user_properties),
            ("honeyhive_inputs", inputs),
            ("honeyhive_outputs", outputs),
        ]
        .into_iter()
        .filter_map(|(ns, v)| given(v).map(|v| (ns, v.unbind())))
        .collect();
        let flattened = (!values.is_empty()).then(|| Flattened {
            values,
            cache: Mutex::new(None),
            intern: long_lived,
        });
        if let Some(f) = &flattened {
            // Checked now, so a bad value fails at decoration, as before.
            f.attributes(py, budget)?;
        }
        let mut bag_overrides = Vec::new();
        for (k, v) in [("session_id", &sid), ("project", &proj), ("source", &src)] {
            if let Some(v) = v {
                bag_overrides.push((PyString::new(py, k).unbind(), PyString::new(py, v).unbind()));
            }
        }
        // The constructor's keywords again, for `__reduce__`.
        let reduce = PyDict::new(py);
        for (k, v) in [
            ("event_type", event_type),
            ("event_name", event_name),
            ("event_id", event_id),
            ("session_id", session_id),
            ("project", project),
            ("source", source),
            ("config", config),
            ("metadata", metadata),
            ("metrics", metrics),
            ("feedback", feedback),
            ("user_properties", user_properties),
            ("inputs", inputs),
            ("outputs", outputs),
            ("attributes", attributes),
            ("error", error),
            ("capture_inputs", capture_inputs),
            ("capture_outputs", capture_outputs),
            ("long_lived", long_lived_flag.as_ref()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_none()) {
                reduce.set_item(k, v)?;
            }
        }
        let mut defaults = Vec::new();
        let params = given(params);
        if let Some(p) = &params {
            reduce.set_item("params", p)?;
        }
        let specs: Option<Vec<ParamSpec>> = params.map(|p| p.extract()).transpose()?;
        let params = specs.map(|ps| {
            ps.into_iter()
                .map(|(name, kind, default, skip)| {
                    defaults.push(default);
                    let k = format!("honeyhive_inputs.{name}");
                    Param {
                        key: if long_lived {
                            crate::engine::intern::key(&k)
                        } else {
                            Key::from(k)
                        },
                        name: PyString::new(py, &name).unbind(),
                        kind,
                        skip,
                    }
                })
                .collect()
        });
        // Flattened keys are known only per tracer (their budget): scan for stamps then.
        let fresh = flattened.is_none() && !attrs.iter().any(|kv| is_stamp_key(kv.key.as_str()));
        // A decorator's spec lives as long as the code and is cloned into every span:
        // its text is interned. A one-off spec (`enrich_span_context`, whose values
        // change per call) must not fill the process-wide intern table.
        let long_text = |v: &str| {
            if long_lived {
                crate::engine::intern::value(v)
            } else {
                shared(v)
            }
        };
        let inputs_given = given(inputs).is_some();
        let outputs_given = given(outputs).is_some();
        Ok(TraceSpec {
            static_name: if long_lived {
                crate::engine::intern::intern(&name)
            } else {
                None
            },
            fresh,
            flattened,
            name: Arc::from(name.as_str()),
            static_attrs: if long_lived {
                attrs.into_iter().map(interned_kv).collect()
            } else {
                attrs
            },
            explicit: Explicit {
                // Never interned: decorators made per request (`@trace(session_id=...)`
                // inside a handler) would fill the table with one-off ids.
                session_id: sid.as_deref().map(shared),
                project: proj.as_deref().map(long_text),
                source: src.as_deref().map(long_text),
            },
            bag_overrides,
            tracer: handle_of(tracer),
            capture_inputs: truthy(capture_inputs, true) && !inputs_given,
            capture_outputs: truthy(capture_outputs, true) && !outputs_given,
            params,
            defaults: Mutex::new(defaults),
            reduce: Mutex::new(Some(reduce.unbind())),
            disabled: false,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(d) = self.defaults.try_lock() {
            for v in d.iter().flatten() {
                visit.call(v)?;
            }
        }
        if let Ok(r) = self.reduce.try_lock() {
            if let Some(r) = r.as_ref() {
                visit.call(r)?;
            }
        }
        if let Some(f) = &self.flattened {
            for (_, v) in &f.values {
                visit.call(v)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let d = std::mem::take(&mut *self.defaults.lock().unwrap_or_else(PoisonError::into_inner));
        let r = self
            .reduce
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop((d, r));
    }

    #[getter]
    fn name(&self) -> String {
        self.name.to_string()
    }

    /// Pickle by value: the same spec in another process (using that process's tracer).
    fn __reduce__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let rebuild = py
            .import(intern!(py, "honeytrace._core"))?
            .getattr(intern!(py, "_trace_spec"))?
            .unbind();
        let kwargs = match self
            .reduce
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(d) => d.bind(py).copy()?.into_any().unbind(),
            None => PyDict::new(py).into_any().unbind(),
        };
        Ok((rebuild, (self.name.to_string(), kwargs))
            .into_pyobject(py)?
            .into_any()
            .unbind())
    }

    /// Start a span for a call and make its context current (sync and async
    /// functions; `done`/`error` restore it). Call it, and `done`/`error`, from the
    /// same frame, so attach and restore happen in the same context. Returns the
    /// no-op scope when the call is not traced.
    #[pyo3(signature = (args, kwargs=None))]
    fn enter(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PySpan>> {
        let call = CallCapture {
            outputs: self.capture_outputs,
            budget: DEFAULT_BUDGET,
        };
        let Some(begun) = self.begin(py, args, kwargs, Some(call))? else {
            return noop(py);
        };
        let b = bridge(py)?;
        match b.attach(&begun.ctx) {
            Ok(t) => begun.span.get().set_token(t.unbind()),
            Err(e) => {
                diag::warn_limited("attach-failed", &format!("could not attach: {e}"));
                begun.span.get().end_at(None);
                return noop(py);
            }
        }
        Ok(begun.span)
    }

    /// Start a span for a call without making it current (generators and
    /// `enrich_span_context` attach `scope.context` around each step themselves).
    /// None: run untraced.
    #[pyo3(signature = (args, kwargs=None))]
    fn start(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Option<CallScope>> {
        Ok(self
            .begin(py, args, kwargs, None)?
            .map(|begun| self.scope(begun)))
    }
}

fn given<'py>(v: Option<&Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
    v.filter(|v| !v.is_none()).cloned()
}

/// Rebuild a pickled `TraceSpec` (see `TraceSpec.__reduce__`).
#[honeytrace_macros::function]
#[fallback(Python::attach(|py| Py::new(py, TraceSpec::degraded())))]
pub fn _trace_spec(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    kwargs: &Bound<'_, PyDict>,
) -> PyResult<Py<TraceSpec>> {
    let cls = py.get_type::<TraceSpec>();
    Ok(cls
        .call((name,), Some(kwargs))?
        .cast_into::<TraceSpec>()?
        .unbind())
}

/// What a generator has yielded so far. While every item is a `str`, the items are
/// kept as text (with where each one ends, as long as they could still fit the JSON
/// array); the first other item starts the JSON array with the text items replayed
/// into it, so an all-text stream is never written twice.
#[derive(Default)]
struct Stream {
    count: u64,
    text: String,
    /// End offsets in `text` of the items kept for a replay.
    ends: Vec<usize>,
    /// The JSON array, once an item was not a `str`. Taken out of the lock while an
    /// item is written (that may run user code).
    json: Option<JsonWriter>,
}

/// One traced call driven from Python (generators and `enrich_span_context`, which
/// attach `context` around each step themselves).
#[pyclass(module = "honeytrace._core", name = "CallScope", frozen)]
pub struct CallScope {
    /// None: the no-op scope of an untraced call.
    span: Option<Py<PySpan>>,
    context: Option<Py<PyAny>>,
    budget: usize,
    capture_outputs: bool,
    stream: Mutex<Stream>,
}

impl Degrade for CallScope {
    fn degraded() -> Self {
        CallScope {
            span: None,
            context: None,
            budget: DEFAULT_BUDGET,
            capture_outputs: false,
            stream: Mutex::new(Stream::default()),
        }
    }
}

impl CallScope {
    fn stream(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stream_started(&self) -> bool {
        self.stream().count > 0
    }

    /// The stream's JSON writer, started with the text items so far (`ends`: where
    /// each ends in `text`).
    fn start_json(&self, py: Python<'_>, text: &str, ends: &[usize]) -> Captured<JsonWriter> {
        let mut w = JsonWriter::redacted(py, self.budget, keys::OUTPUT.as_str());
        w.begin_array();
        let mut start = 0;
        for &end in ends {
            w.array_item(PyString::new(py, &text[start..end]).as_any())?;
            start = end;
        }
        Ok(w)
    }

    /// A stream's output: the text of an all-text stream (through the redaction hook
    /// as one value), else the JSON array of its items (each through the hook as it
    /// came).
    fn write_stream(&self, py: Python<'_>, span: &PySpan) -> Captured<()> {
        let (text, json, count) = {
            let mut st = self.stream();
            let json = st.json.take();
            let text = json.is_none().then(|| std::mem::take(&mut st.text));
            (text, json, st.count)
        };
        let mut kvs = vec![KeyValue::new(
            "honeyhive_metadata.stream_chunks",
            i64::try_from(count).unwrap_or(i64::MAX),
        )];
        let captured = match (text, json) {
            (Some(text), _) => capture_into(
                keys::OUTPUT,
                PyString::new(py, &text).as_any(),
                self.budget,
                &mut kvs,
            ),
            (None, Some(mut w)) => {
                w.end_array();
                kvs.push(KeyValue::new(keys::OUTPUT, Value::from(w.finish())));
                Ok(())
            }
            (None, None) => Ok(()),
        };
        span.set_many(kvs);
        captured
    }

    fn fail_inner(&self, exc: &Bound<'_, PyAny>) {
        let Some(span) = &self.span else { return };
        let span = span.get();
        if self.stream_started() {
            // An interrupt raised by the hook here is not the error being recorded.
            let _ = self.write_stream(exc.py(), span);
        }
        if !exc.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            crate::py::boundary::invalid_argument("CallScope.error");
            return;
        }
        record_failure(span, exc, None);
        span.end_at(None);
    }
}

#[honeytrace_macros::methods]
impl CallScope {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(s) = &self.span {
            visit.call(s)?;
        }
        if let Some(c) = &self.context {
            visit.call(c)?;
        }
        Ok(())
    }

    /// The Context to attach while the call's code runs.
    #[getter]
    fn context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context
            .as_ref()
            .map_or_else(|| py.None(), |c| c.clone_ref(py))
    }

    #[getter]
    fn span(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.span {
            Some(s) => Ok(s.clone_ref(py).into_any()),
            None => Ok(noop(py)?.into_any()),
        }
    }

    /// The call returned `result` (no context to restore).
    fn finish(&self, result: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(span) = &self.span {
            finish_ok(span.get(), result, self.capture_outputs, self.budget)
                .map_err(PyErr::from)?;
        }
        Ok(())
    }

    /// The call raised `exc` (any BaseException; no context to restore).
    fn fail(&self, exc: &Bound<'_, PyAny>) {
        self.fail_inner(exc);
    }

    /// A generator yielded `item`: collected (within the budget) as the output.
    fn add_item(&self, item: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.capture_outputs || self.span.is_none() {
            return Ok(());
        }
        let py = item.py();
        let mut w = {
            let mut st = self.stream();
            st.count += 1;
            match (st.json.take(), item.cast::<PyString>()) {
                (None, Ok(s)) => {
                    if st.text.len() <= self.budget {
                        st.text.push_str(&crate::py::pystr::text(s));
                        // Each item costs at least its text and `"",` in the array.
                        if st.text.len() + 3 * (st.ends.len() + 1) <= self.budget {
                            let end = st.text.len();
                            st.ends.push(end);
                        }
                    }
                    return Ok(());
                }
                (Some(w), _) => w,
                (None, Err(_)) => {
                    let (text, ends) = (std::mem::take(&mut st.text), std::mem::take(&mut st.ends));
                    drop(st);
                    self.start_json(py, &text, &ends).map_err(PyErr::from)?
                }
            }
        };
        // Written without the lock: the item's `__repr__` and the hook are user code.
        let written = w.array_item(item);
        self.stream().json = Some(w);
        written.map_err(PyErr::from)
    }

    /// The generator finished (exhausted or returned `value`).
    #[pyo3(signature = (value=None))]
    fn finish_stream(&self, py: Python<'_>, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let Some(span) = &self.span else {
            return Ok(());
        };
        let span = span.get();
        if self.stream_started() {
            let captured = self.write_stream(py, span);
            span.end_at(None);
            return captured.map_err(PyErr::from);
        } else if let Some(v) = value.filter(|v| !v.is_none()) {
            return finish_ok(span, v, self.capture_outputs, self.budget).map_err(PyErr::from);
        }
        span.end_at(None);
        Ok(())
    }
}

/// Set (or clear, with None) the process-wide redaction hook `hook(key, value)`.
#[honeytrace_macros::function]
pub fn set_redactor(hook: Option<Bound<'_, PyAny>>) {
    let hook = hook.filter(|h| !h.is_none());
    if hook.as_ref().is_some_and(|h| !h.is_callable()) {
        crate::py::boundary::invalid_argument("set_redactor");
        return;
    }
    capture::set_redactor(hook.map(Bound::unbind));
}

/// `enrich_span`: flatten each `(namespace, value)` onto `span` (ours natively, any
/// other OpenTelemetry span through `set_attribute`). False when it is not recording.
#[honeytrace_macros::function]
#[pyo3(signature = (span, items, raw=None))]
pub fn enrich(
    span: &Bound<'_, PyAny>,
    items: &Bound<'_, PyAny>,
    raw: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let py = span.py();
    let ours = span.cast::<PySpan>().ok();
    let budget = ours
        .as_ref()
        .and_then(|s| {
            s.get()
                .handle
                .as_ref()
                .map(|h| h.core.cfg.max_attribute_bytes)
        })
        .unwrap_or(DEFAULT_BUDGET);
    if ours.as_ref().is_some_and(|s| !s.get().is_recording_now()) {
        return Ok(false); // nothing to flatten (or redact) for an ended span
    }
    let mut kvs: Vec<KeyValue> = Vec::new();
    if let Some(r) = raw.filter(|r| !r.is_none()) {
        from_mapping(r, &mut kvs);
    }
    let items: Vec<(String, Bound<'_, PyAny>)> = if let Ok(i) = items.extract() {
        i
    } else {
        crate::py::boundary::invalid_argument("enrich_span");
        return Ok(false);
    };
    for (ns, value) in &items {
        if value.is_none() {
            continue;
        }
        if ns == "honeyhive_error" || ns == "honeyhive_event_type" {
            kvs.push(KeyValue::new(
                ns.clone(),
                capture::budget_str(&lenient_text(value), budget),
            ));
        } else {
            flatten(ns, value, budget, &mut kvs).map_err(|Interrupt(e)| e)?;
        }
    }
    if let Some(s) = ours {
        let s = s.get();
        if !s.is_recording_now() {
            return Ok(false);
        }
        s.set_many(kvs);
        return Ok(true);
    }
    // Another SDK's span: its methods are Python code.
    let Some(_section) = Section::open() else {
        return Ok(false);
    };
    let recording = span
        .call_method0(intern!(py, "is_recording"))
        .and_then(|r| r.is_truthy())
        .unwrap_or(false);
    if !recording {
        return Ok(false);
    }
    for kv in kvs {
        if let Ok(v) = value_to_py(py, &kv.value) {
            let _ = span.call_method1(intern!(py, "set_attribute"), (kv.key.as_str(), v));
        }
    }
    Ok(true)
}
