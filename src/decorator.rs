//! `@trace`: the per-function spec, the sync wrapper (a Rust callable), and the call
//! scope the async/generator wrappers in Python drive.
//!
//! Per call: read the current context, pick the tracer (explicit > the tracer of the
//! current honeytrace span > the default), start a span with the static attributes,
//! the captured arguments and the session stamps, attach a child context (adding
//! session_id/project/source to baggage only where absent, or overriding them when
//! given explicitly), call, detach with the token in the same frame, capture the
//! result or the exception, end the span.

use crate::attributes::{self, capture_into, flatten, DEFAULT_BUDGET};
use crate::context::{baggage_of, bridge, parent_of, Bridge, Parent};
use crate::diag;
use crate::processor::{is_stamp_key, shared, Explicit, Incoming};
use crate::serialize::{self, JsonWriter};
use crate::span::PySpan;
use crate::tracer::{default_core, Core, TracerCore};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Key, KeyValue, Value};
use pyo3::exceptions::{PyException, PyGeneratorExit, PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const OUTPUT_KEY: Key = Key::from_static_str("honeyhive_outputs.result");
const ERROR_KEY: Key = Key::from_static_str("honeyhive_error");
const ERROR_TYPE_KEY: Key = Key::from_static_str("honeyhive_error_type");

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
    default: Option<Py<PyAny>>,
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
    explicit: Explicit,
    /// Explicit session/project/source for the baggage of children (key, value).
    bag_overrides: Vec<(Py<PyString>, Py<PyString>)>,
    tracer: Option<Arc<Core>>,
    capture_inputs: bool,
    capture_outputs: bool,
    /// Signature known (else inputs are captured as `args`/`kwargs`).
    params: Option<Vec<Param>>,
}

#[pymethods]
impl TraceSpec {
    #[new]
    #[pyo3(signature = (name, *, tracer=None, event_type=None, event_name=None, event_id=None,
        session_id=None, project=None, source=None, config=None, metadata=None, metrics=None,
        feedback=None, user_properties=None, inputs=None, outputs=None, attributes=None,
        error=None, capture_inputs=true, capture_outputs=true, params=None, long_lived=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        tracer: Option<&Bound<'_, TracerCore>>,
        event_type: Option<String>,
        event_name: Option<String>,
        event_id: Option<String>,
        session_id: Option<String>,
        project: Option<String>,
        source: Option<String>,
        config: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        metrics: Option<&Bound<'_, PyAny>>,
        feedback: Option<&Bound<'_, PyAny>>,
        user_properties: Option<&Bound<'_, PyAny>>,
        inputs: Option<&Bound<'_, PyAny>>,
        outputs: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        error: Option<String>,
        capture_inputs: bool,
        capture_outputs: bool,
        params: Option<Vec<ParamSpec>>,
        long_lived: bool,
    ) -> Self {
        let budget = DEFAULT_BUDGET;
        let mut attrs: Vec<KeyValue> = Vec::new();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            attributes::from_mapping(a, &mut attrs);
        }
        if let Some(e) = error {
            attrs.push(KeyValue::new(ERROR_KEY, e));
        }
        if let Some(t) = event_type {
            attrs.push(KeyValue::new("honeyhive_event_type", t));
        }
        if let Some(n) = event_name {
            attrs.push(KeyValue::new("honeyhive_event_name", n));
        }
        if let Some(id) = event_id {
            attrs.push(KeyValue::new("honeyhive_event_id", id));
        }
        for (ns, v) in [
            ("honeyhive_config", config),
            ("honeyhive_metadata", metadata),
            ("honeyhive_metrics", metrics),
            ("honeyhive_feedback", feedback),
            ("honeyhive_user_properties", user_properties),
            ("honeyhive_inputs", inputs),
            ("honeyhive_outputs", outputs),
        ] {
            if let Some(v) = v.filter(|v| !v.is_none()) {
                flatten(ns, v, budget, &mut attrs);
            }
        }
        let mut bag_overrides = Vec::new();
        for (k, v) in [
            ("session_id", &session_id),
            ("project", &project),
            ("source", &source),
        ] {
            if let Some(v) = v {
                bag_overrides.push((PyString::new(py, k).unbind(), PyString::new(py, v).unbind()));
            }
        }
        let params = params.map(|ps| {
            ps.into_iter()
                .map(|(name, kind, default, skip)| Param {
                    key: {
                        let k = format!("honeyhive_inputs.{name}");
                        if long_lived {
                            crate::intern::key(&k)
                        } else {
                            Key::from(k)
                        }
                    },
                    name: PyString::new(py, &name).unbind(),
                    kind,
                    default,
                    skip,
                })
                .collect()
        });
        let fresh = !attrs.iter().any(|kv| is_stamp_key(kv.key.as_str()));
        // A decorator's spec lives as long as the code and is cloned into every span:
        // its text is interned. A one-off spec (`enrich_span_context`, whose values
        // change per call) must not fill the process-wide intern table.
        let text = |v: &str| {
            if long_lived {
                crate::intern::value(v)
            } else {
                shared(v)
            }
        };
        TraceSpec {
            static_name: if long_lived {
                crate::intern::intern(&name)
            } else {
                None
            },
            fresh,
            name: Arc::from(name.as_str()),
            static_attrs: if long_lived {
                attrs.into_iter().map(interned_kv).collect()
            } else {
                attrs
            },
            explicit: Explicit {
                // Never interned: decorators made per request (`@trace(session_id=...)`
                // inside a handler) would fill the table with one-off ids.
                session_id: session_id.as_deref().map(shared),
                project: project.as_deref().map(text),
                source: source.as_deref().map(text),
            },
            bag_overrides,
            tracer: tracer.map(|t| t.get().core.clone()),
            capture_inputs: capture_inputs && inputs.is_none_or(|i| i.is_none()),
            capture_outputs: capture_outputs && outputs.is_none_or(|o| o.is_none()),
            params,
        }
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Start a span for a call (async and generator wrappers). None: run untraced.
    #[pyo3(signature = (args, kwargs=None))]
    fn enter(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Option<CallScope> {
        diag::shield(
            "@trace",
            || None,
            || {
                self.begin(py, args, kwargs)
                    .ok()
                    .flatten()
                    .map(|s| CallScope {
                        span: s.span,
                        context: s.ctx.unbind(),
                        budget: s.core.cfg.max_attribute_bytes,
                        capture_outputs: self.capture_outputs,
                        stream: Mutex::new(Stream::default()),
                        token: Mutex::new(None),
                    })
            },
        )
    }

    /// `enter`, with the span's context attached (the async wrapper: one call instead
    /// of three; `done`/`error` restore it). Call it, and `done`/`error`, from the
    /// coroutine itself, so attach and restore happen in the same context.
    #[pyo3(signature = (args, kwargs=None))]
    fn start(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Option<CallScope> {
        let scope = self.enter(py, args, kwargs)?;
        let token = bridge(py).and_then(|b| b.attach(scope.context.bind(py)));
        match token {
            Ok(t) => {
                *scope.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.unbind());
                Some(scope)
            }
            Err(e) => {
                diag::warn_limited("attach-failed", &format!("could not attach: {e}"));
                scope.span.get().end_at(None);
                None
            }
        }
    }
}

/// The same attribute with interned text (see `intern`): cloned into every span.
fn interned_kv(kv: KeyValue) -> KeyValue {
    let key = crate::intern::key(kv.key.as_str());
    let value = match kv.value {
        Value::String(s) => crate::intern::value(s.as_str()),
        other => other,
    };
    KeyValue::new(key, value)
}

struct Begun<'py> {
    span: Py<PySpan>,
    ctx: Bound<'py, PyAny>,
    core: Arc<Core>,
}

fn warn_untraced() {
    if !WARNED_UNTRACED.swap(true, Ordering::Relaxed) {
        diag::log(
            diag::WARNING,
            "@trace: no HoneyHiveTracer is initialised (or all are shut down); decorated functions run untraced",
        );
    }
}

impl TraceSpec {
    fn pick_core(&self, parent: &Parent) -> Option<Arc<Core>> {
        let core = match (&self.tracer, parent) {
            (Some(c), _) => Some(c.clone()),
            (None, p) if p.core().is_some_and(|c| c.is_live()) => p.core().cloned(),
            _ => default_core(),
        };
        match core {
            Some(c) if c.is_live() => Some(c),
            Some(_) => None,
            None => {
                warn_untraced();
                None
            }
        }
    }

    fn capture_args(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        budget: usize,
        out: &mut Vec<KeyValue>,
    ) {
        let py = args.py();
        let Some(params) = &self.params else {
            // No signature (some builtins): positional args and keywords as wholes.
            if !args.is_empty() {
                capture_into(
                    Key::from_static_str("honeyhive_inputs.args"),
                    args.as_any(),
                    budget,
                    out,
                );
            }
            if let Some(kw) = kwargs.filter(|k| !k.is_empty()) {
                capture_into(
                    Key::from_static_str("honeyhive_inputs.kwargs"),
                    kw.as_any(),
                    budget,
                    out,
                );
            }
            return;
        };
        let mut pos = 0usize;
        let n_args = args.len();
        for p in params {
            let value: Option<Bound<'_, PyAny>> = match p.kind {
                POSITIONAL_ONLY | POSITIONAL_OR_KEYWORD => {
                    if pos < n_args {
                        pos += 1;
                        args.get_item(pos - 1).ok()
                    } else if p.kind == POSITIONAL_OR_KEYWORD {
                        kwargs
                            .and_then(|k| k.get_item(p.name.bind(py)).ok().flatten())
                            .or_else(|| p.default.as_ref().map(|d| d.bind(py).clone()))
                    } else {
                        p.default.as_ref().map(|d| d.bind(py).clone())
                    }
                }
                VAR_POSITIONAL => {
                    let rest = args.get_slice(pos.min(n_args), n_args);
                    pos = n_args;
                    (!rest.is_empty()).then(|| rest.into_any())
                }
                KEYWORD_ONLY => kwargs
                    .and_then(|k| k.get_item(p.name.bind(py)).ok().flatten())
                    .or_else(|| p.default.as_ref().map(|d| d.bind(py).clone())),
                VAR_KEYWORD => {
                    if let Some(kw) = kwargs {
                        let d = PyDict::new(py);
                        for (k, v) in kw.iter() {
                            let named = params.iter().any(|q| {
                                (q.kind == POSITIONAL_OR_KEYWORD || q.kind == KEYWORD_ONLY)
                                    && k.eq(q.name.bind(py)).unwrap_or(false)
                            });
                            if !named {
                                let _ = d.set_item(k, v);
                            }
                        }
                        (!d.is_empty()).then(|| d.into_any())
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if p.skip {
                continue;
            }
            if let Some(v) = value {
                capture_into(p.key.clone(), &v, budget, out);
            }
        }
    }

    /// Start the span and build its context (not attached). None: run untraced.
    fn begin<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Begun<'py>>> {
        let b = bridge(py)?;
        let cur = b.current(py)?;
        let parent = parent_of(b, &cur);
        let Some(core) = self.pick_core(&parent) else {
            return Ok(None);
        };
        let budget = core.cfg.max_attribute_bytes;
        let mut attrs: Vec<KeyValue> = Vec::with_capacity(
            self.static_attrs.len() + 8 + self.params.as_ref().map_or(2, Vec::len),
        );
        attrs.extend(self.static_attrs.iter().cloned());
        if self.capture_inputs {
            self.capture_args(args, kwargs, budget, &mut attrs);
        }
        let bag = baggage_of(b, &cur);
        let incoming = core.stamper.read_baggage(bag.as_ref());
        core.stamper
            .stamp_with(&mut attrs, &incoming, &self.explicit, self.fresh);

        let name: Cow<'static, str> = match self.static_name {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(self.name.to_string()),
        };
        let mut links = Vec::new();
        if parent.is_root() {
            if let Some(remote) = crate::propagation::restart_link(b, &cur) {
                links.push(crate::tracer::restart_link_of(remote));
            }
        }
        let span = core.begin_span(
            &core.scope,
            name,
            SpanKind::Internal,
            &parent,
            attrs,
            links,
            None,
            true,
            true,
        );
        let span = Py::new(py, span)?;

        let new_bag = self.child_baggage(py, &core, &incoming, bag.as_ref())?;
        let ctx = b.child(&cur, span.bind(py).as_any(), new_bag.as_ref())?;
        Ok(Some(Begun { span, ctx, core }))
    }

    /// Baggage for the call's children: the tracer's session/project/source where
    /// absent, explicit ones always. None when nothing changes (the common nested case).
    fn child_baggage<'py>(
        &self,
        py: Python<'py>,
        core: &Core,
        incoming: &Incoming,
        bag: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut missing: Vec<(&Py<PyString>, &Py<PyString>)> = Vec::new();
        let sid_key = intern!(py, "session_id");
        let project_key = intern!(py, "project");
        let source_key = intern!(py, "source");
        let explicit = |k: &Bound<'_, PyString>| {
            self.bag_overrides
                .iter()
                .any(|(ok, _)| ok.bind(py).as_any().eq(k).unwrap_or(false))
        };
        let mut defaults: Vec<(Bound<'py, PyString>, Bound<'py, PyString>)> = Vec::new();
        if incoming.session_id.is_none() && !explicit(sid_key) {
            defaults.push((sid_key.clone(), core.bag.session_id.bind(py).clone()));
        }
        if incoming.project.is_none() && !explicit(project_key) {
            if let Some(p) = &core.bag.project {
                defaults.push((project_key.clone(), p.bind(py).clone()));
            }
        }
        if incoming.source.is_none() && !explicit(source_key) {
            defaults.push((source_key.clone(), core.bag.source.bind(py).clone()));
        }
        for (k, v) in &self.bag_overrides {
            missing.push((k, v));
        }
        if defaults.is_empty() && missing.is_empty() {
            return Ok(None);
        }
        // The common top-level case: no baggage yet, nothing explicit.
        if missing.is_empty() && bag.is_none_or(|b| b.is_empty()) {
            return Ok(Some(core.bag.dict.bind(py).clone().into_any()));
        }
        let new = match bag {
            Some(b) => b.copy()?,
            None => PyDict::new(py),
        };
        for (k, v) in defaults {
            new.set_item(k, v)?;
        }
        for (k, v) in missing {
            new.set_item(k.bind(py), v.bind(py))?;
        }
        Ok(Some(new.into_any()))
    }
}

/// Record how a call ended on its span (shared by every wrapper kind).
pub fn record_failure(
    py: Python<'_>,
    span: &PySpan,
    err: &Bound<'_, PyAny>,
    traceback: Option<Bound<'_, PyAny>>,
) {
    let ty = err.get_type();
    let type_name = ty
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let message = err.str().map(|s| s.to_string()).unwrap_or_default();
    let described = if message.is_empty() {
        type_name.clone()
    } else {
        format!("{type_name}: {message}")
    };
    if err.is_instance_of::<PyException>() {
        if type_name == "CancelledError" {
            // asyncio.CancelledError is an Exception subclass before 3.8 only; kept for
            // other frameworks' CancelledError types that are.
            span.set_many(vec![KeyValue::new("honeyhive_metadata.cancelled", true)]);
            return;
        }
        span.record_exception_event(py, err, traceback, true);
        span.set_many(vec![
            KeyValue::new(ERROR_KEY, described.clone()),
            KeyValue::new(ERROR_TYPE_KEY, qualified_type(&ty)),
        ]);
        span.set_status_now(Status::error(described));
    } else if err.is_instance_of::<PyGeneratorExit>() {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.closed_early", true)]);
    } else if err.is_instance_of::<PyKeyboardInterrupt>() {
        span.set_status_now(Status::error(described));
    } else if err.is_instance_of::<PySystemExit>() {
        let code = err
            .getattr(intern!(py, "code"))
            .ok()
            .map(|c| c.str().map(|s| s.to_string()).unwrap_or_default())
            .unwrap_or_default();
        span.set_many(vec![KeyValue::new("honeyhive_metadata.exit_code", code)]);
    } else if type_name == "CancelledError" {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.cancelled", true)]);
    } else {
        span.set_status_now(Status::error(described));
    }
}

fn qualified_type(ty: &Bound<'_, PyType>) -> String {
    let q = ty.qualname().map(|q| q.to_string()).unwrap_or_default();
    match ty.module().map(|m| m.to_string()) {
        Ok(m) if !m.is_empty() && m != "builtins" => format!("{m}.{q}"),
        _ => q,
    }
}

fn finish_ok(span: &PySpan, result: &Bound<'_, PyAny>, capture: bool, budget: usize) {
    let mut kv = Vec::new();
    if capture {
        capture_into(OUTPUT_KEY, result, budget, &mut kv);
    }
    span.end_with(kv);
}

/// A decorated sync function: a Rust callable (no Python frame of ours per call).
#[pyclass(
    module = "honeytrace._core",
    name = "TracedFunction",
    frozen,
    dict,
    weakref
)]
pub struct TracedFunction {
    func: Py<PyAny>,
    spec: Py<TraceSpec>,
}

#[pymethods]
impl TracedFunction {
    #[new]
    fn new(func: Py<PyAny>, spec: Py<TraceSpec>) -> Self {
        TracedFunction { func, spec }
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let spec = self.spec.get();
        let begun = diag::shield(
            "@trace",
            || None,
            || spec.begin(py, args, kwargs).ok().flatten(),
        );
        let Some(begun) = begun else {
            return Ok(self.func.bind(py).call(args, kwargs)?.unbind());
        };
        let b: &Bridge = bridge(py)?;
        let token = b.attach(&begun.ctx);
        let result = self.func.bind(py).call(args, kwargs);
        if let Ok(t) = &token {
            b.detach(t);
        }
        let span = begun.span.get();
        let budget = begun.core.cfg.max_attribute_bytes;
        match result {
            Ok(v) => {
                diag::shield(
                    "@trace",
                    || (),
                    || finish_ok(span, &v, spec.capture_outputs, budget),
                );
                Ok(v.unbind())
            }
            Err(e) => {
                diag::shield(
                    "@trace",
                    || (),
                    || {
                        let tb = e.traceback(py).map(Bound::into_any);
                        record_failure(py, span, e.value(py).as_any(), tb);
                        span.end_at(None);
                    },
                );
                Err(e)
            }
        }
    }

    /// Methods: bind to the instance like a function would.
    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        objtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = objtype;
        let py = slf.py();
        match obj.filter(|o| !o.is_none()) {
            None => Ok(slf.clone().into_any().unbind()),
            Some(o) => Ok(py
                .import(intern!(py, "types"))?
                .getattr(intern!(py, "MethodType"))?
                .call1((slf, o))?
                .unbind()),
        }
    }

    /// Pickle by reference, like the function it wraps.
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Ok(slf.getattr(intern!(py, "__qualname__"))?.unbind())
    }

    #[getter]
    fn __honeytrace_spec__(&self, py: Python<'_>) -> Py<TraceSpec> {
        self.spec.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let inner = self
            .func
            .bind(py)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_default();
        format!("<traced {inner}>")
    }
}

#[derive(Default)]
struct Stream {
    count: u64,
    all_text: bool,
    started: bool,
    text: String,
    json: Option<JsonWriter>,
}

/// One traced call driven from Python (async functions, generators).
#[pyclass(module = "honeytrace._core", name = "CallScope", frozen)]
pub struct CallScope {
    span: Py<PySpan>,
    context: Py<PyAny>,
    budget: usize,
    capture_outputs: bool,
    stream: Mutex<Stream>,
    /// The context token when `TraceSpec.start` attached the span's context.
    token: Mutex<Option<Py<PyAny>>>,
}

impl CallScope {
    fn restore(&self, py: Python<'_>) {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let (Some(t), Ok(b)) = (token, bridge(py)) {
            b.detach(t.bind(py));
        }
    }
}

#[pymethods]
impl CallScope {
    /// Restore the context `TraceSpec.start` attached, then `finish`.
    fn done(&self, py: Python<'_>, result: &Bound<'_, PyAny>) {
        self.restore(py);
        self.finish(result);
    }

    /// Restore the context `TraceSpec.start` attached, then `fail`.
    fn error(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) {
        self.restore(py);
        self.fail(py, exc);
    }

    /// The Context to attach while the call's code runs.
    #[getter]
    fn context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn span(&self, py: Python<'_>) -> Py<PySpan> {
        self.span.clone_ref(py)
    }

    /// The call returned `result`.
    fn finish(&self, result: &Bound<'_, PyAny>) {
        diag::shield(
            "@trace",
            || (),
            || finish_ok(self.span.get(), result, self.capture_outputs, self.budget),
        )
    }

    /// The call raised `exc` (any BaseException).
    fn fail(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) {
        diag::shield(
            "@trace",
            || (),
            || {
                let span = self.span.get();
                if self.stream_started() {
                    self.write_stream(span);
                }
                record_failure(py, span, exc, None);
                span.end_at(None);
            },
        )
    }

    /// A generator yielded `item`: collected (within the budget) as the output.
    fn add_item(&self, item: &Bound<'_, PyAny>) {
        if !self.capture_outputs {
            return;
        }
        diag::shield(
            "@trace",
            || (),
            || {
                let mut st = self.stream.lock().unwrap_or_else(|p| p.into_inner());
                if !st.started {
                    st.started = true;
                    st.all_text = true;
                    let mut w = JsonWriter::new(self.budget);
                    w.begin_array();
                    st.json = Some(w);
                }
                st.count += 1;
                if st.all_text {
                    match item.cast::<PyString>() {
                        Ok(s) if st.text.len() <= self.budget => {
                            st.text.push_str(&crate::pystr::text(s))
                        }
                        Ok(_) => {}
                        Err(_) => st.all_text = false,
                    }
                }
                if let Some(w) = st.json.as_mut() {
                    w.array_item(item);
                }
            },
        )
    }

    /// The generator finished (exhausted or returned `value`).
    #[pyo3(signature = (value=None))]
    fn finish_stream(&self, value: Option<&Bound<'_, PyAny>>) {
        diag::shield(
            "@trace",
            || (),
            || {
                let span = self.span.get();
                if self.stream_started() {
                    self.write_stream(span);
                } else if let Some(v) = value.filter(|v| !v.is_none()) {
                    finish_ok(span, v, self.capture_outputs, self.budget);
                    return;
                }
                span.end_at(None);
            },
        )
    }
}

impl CallScope {
    fn stream_started(&self) -> bool {
        self.stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started
    }

    fn write_stream(&self, span: &PySpan) {
        let mut st = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let value: Value = if st.all_text {
            serialize::budget_str(&st.text, self.budget).into()
        } else {
            match st.json.take() {
                Some(mut w) => {
                    w.end_array();
                    w.out.into()
                }
                None => return,
            }
        };
        span.set_many(vec![
            KeyValue::new(OUTPUT_KEY, value),
            KeyValue::new("honeyhive_metadata.stream_chunks", st.count as i64),
        ]);
    }
}

/// Set (or clear, with None) the process-wide redaction hook `hook(key, value)`.
#[pyfunction]
pub fn set_redactor(hook: Option<Bound<'_, PyAny>>) {
    attributes::set_redactor(hook.filter(|h| !h.is_none()).map(Bound::unbind));
}

/// `enrich_span`: flatten each `(namespace, value)` onto `span` (ours natively, any
/// other OpenTelemetry span through `set_attribute`). False when it is not recording.
#[pyfunction]
#[pyo3(signature = (span, items, raw=None))]
pub fn enrich(
    span: &Bound<'_, PyAny>,
    items: Vec<(String, Bound<'_, PyAny>)>,
    raw: Option<&Bound<'_, PyAny>>,
) -> bool {
    diag::shield(
        "enrich_span",
        || false,
        || {
            let ours = span.cast::<PySpan>().ok();
            let budget = ours
                .as_ref()
                .and_then(|s| s.get().core.as_ref().map(|c| c.cfg.max_attribute_bytes))
                .unwrap_or(DEFAULT_BUDGET);
            let mut kvs: Vec<KeyValue> = Vec::new();
            if let Some(r) = raw.filter(|r| !r.is_none()) {
                attributes::from_mapping(r, &mut kvs);
            }
            for (ns, value) in &items {
                if value.is_none() {
                    continue;
                }
                if ns == "honeyhive_error" || ns == "honeyhive_event_type" {
                    let text = attributes::lenient_text(value);
                    kvs.push(KeyValue::new(ns.clone(), text));
                } else {
                    flatten(ns, value, budget, &mut kvs);
                }
            }
            match ours {
                Some(s) => {
                    let s = s.get();
                    if !s.is_recording_now() {
                        return false;
                    }
                    s.set_many(kvs);
                    true
                }
                None => {
                    let py = span.py();
                    let recording = span
                        .call_method0(intern!(py, "is_recording"))
                        .and_then(|r| r.is_truthy())
                        .unwrap_or(false);
                    if !recording {
                        return false;
                    }
                    for kv in kvs {
                        if let Ok(v) = attributes::value_to_py(py, &kv.value) {
                            let _ = span
                                .call_method1(intern!(py, "set_attribute"), (kv.key.as_str(), v));
                        }
                    }
                    true
                }
            }
        },
    )
}
