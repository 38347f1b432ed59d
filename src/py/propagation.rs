//! Distributed context as Python sees it.
//!
//! Extract: read traceparent/tracestate/baggage from any carrier (`py::carrier`),
//! apply the incoming-context policy (`engine::propagation::policy`), and return a new
//! Python Context (never attached here).
//!
//! Inject: traceparent/tracestate from the current span, baggage with the current
//! entries plus session_id/project/source from baggage or else the tracer, signed when
//! a secret is configured. Never an internal id.

use crate::engine::config::Trust;
use crate::engine::propagation::baggage;
use crate::engine::propagation::policy::{
    canonical_values, count, interpret, now_secs, sign, STATS,
};
use crate::engine::propagation::traceparent;
use crate::py::boundary::{invalid_argument, Degrade};
use crate::py::bridge::{bridge, Ready};
use crate::py::carrier;
use crate::py::convert::dict_items;
use crate::py::handle::{default_handle, Handle};
use crate::py::parent::{baggage_of, baggage_props, baggage_props_key, link_key, parent_of};
use crate::py::pystr;
use crate::py::span::PySpan;
use crate::py::tracer::handle_of;
use opentelemetry::trace::SpanContext;
use pyo3::exceptions::PyValueError;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

/// A trust policy named by a Python argument (`"continue"`, `"restart"`, `"ignore"`).
/// A bad value is an error where it configures something (constructors), and an
/// invalid argument (the tracer's policy) elsewhere.
pub fn parse_trust(trust: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Trust>> {
    let Some(t) = trust.filter(|t| !t.is_none()) else {
        return Ok(None);
    };
    match pystr::str_of(t).as_deref().and_then(Trust::parse) {
        Some(t) => Ok(Some(t)),
        None => Err(PyValueError::new_err(format!(
            "trust must be 'continue', 'restart' or 'ignore', got {}",
            t.repr().map_or_else(|_| "?".to_string(), |r| r.to_string())
        ))),
    }
}

/// A per-call trust policy: a bad one is logged and counted, and the tracer's policy
/// is used (a request must not fail because of it).
fn lenient_trust(trust: Option<&Bound<'_, PyAny>>) -> Option<Trust> {
    parse_trust(trust).unwrap_or_else(|e| {
        crate::engine::diag::count(&crate::engine::diag::COUNTERS.invalid_arguments);
        crate::engine::diag::warn_limited(
            "invalid-trust",
            &format!("{e}; the tracer's trust policy is used"),
        );
        None
    })
}

fn text_arg(v: Option<&Bound<'_, PyAny>>) -> Option<String> {
    let v = v.filter(|v| !v.is_none())?;
    let text = pystr::str_of(v);
    if text.is_none() {
        invalid_argument("session_id");
    }
    text
}

/// Build the Context for `carrier` on top of `base` (the current context if None).
pub fn extract_context<'py>(
    py: Python<'py>,
    carrier: &Bound<'py, PyAny>,
    base: Option<&Bound<'py, PyAny>>,
    handle: Option<&Arc<Handle>>,
    trust: Option<Trust>,
    session_id: Option<&str>,
    own: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let b = bridge(py)?;
    let base = match base.filter(|c| !c.is_none()) {
        Some(c) => c.clone(),
        None => b.current(py)?,
    };
    let mut policy =
        crate::engine::propagation::policy::Policy::of(handle.map(|h| &h.core.cfg), trust);
    if own {
        // Headers from this program's own process (a pool task): nothing to verify.
        policy.secret = None;
    }
    if policy.trust == Trust::Ignore {
        count(&STATS.contexts_ignored, 1);
        return Ok(base);
    }
    let headers = carrier::read(carrier);
    let inc = interpret(&headers, &policy);

    // Baggage: the base context's, then the incoming entries, then an explicit session.
    let bag_changed = !inc.baggage.is_empty() || session_id.is_some();
    if !bag_changed && inc.parent.is_none() {
        // Nothing came in (a request without propagation headers): the base context
        // as it is, no copy.
        return Ok(base);
    }
    let ctx = b.copy_of(&base)?;
    let d = ctx.cast::<PyDict>()?;
    if bag_changed {
        let bag = match baggage_of(b, &base) {
            Some(d) => d.copy()?,
            None => PyDict::new(py),
        };
        for (k, v) in &inc.baggage {
            let key = match *k {
                "session_id" => pyo3::intern!(py, "session_id").clone(),
                "project" => pyo3::intern!(py, "project").clone(),
                "source" => pyo3::intern!(py, "source").clone(),
                other => PyString::new(py, other),
            };
            bag.set_item(key, v.as_ref())?;
        }
        if let Some(sid) = session_id {
            bag.set_item(pyo3::intern!(py, "session_id"), sid)?;
        }
        d.set_item(b.baggage_key.bind(py), &bag)?;
        // Properties of foreign members, kept to be sent on with them.
        let base_props = baggage_props(&base);
        if base_props.is_some() || !inc.props.is_empty() {
            let props = match base_props {
                Some(p) => p.copy()?,
                None => PyDict::new(py),
            };
            for (k, _) in &inc.baggage {
                if props.contains(*k)? {
                    props.del_item(*k)?;
                }
            }
            for (k, p) in &inc.props {
                if let Some((_, v)) = inc.baggage.iter().find(|(bk, _)| bk == k) {
                    props.set_item(*k, (v.as_ref(), p.as_ref()))?;
                }
            }
            d.set_item(baggage_props_key(py), props)?;
        }
    }
    if let Some(parent) = inc.parent {
        match policy.trust {
            Trust::Continue => {
                let remote = PySpan::remote(parent, handle.cloned());
                d.set_item(b.span_key.bind(py), Py::new(py, remote)?)?;
            }
            Trust::Restart => {
                // No parent: the next span is a root, linked to the caller's span.
                d.set_item(
                    b.span_key.bind(py),
                    Py::new(
                        py,
                        PySpan::remote(SpanContext::empty_context(), handle.cloned()),
                    )?,
                )?;
                d.set_item(link_key(py), Py::new(py, PySpan::non_recording(parent))?)?;
            }
            Trust::Ignore => {}
        }
    }
    Ok(ctx)
}

// ---------------------------------------------------------------------------------
// Inject

/// Write traceparent/tracestate/baggage for `ctx` (the current context if None).
pub fn inject_into(
    py: Python<'_>,
    carrier: &Bound<'_, PyAny>,
    ctx: Option<&Bound<'_, PyAny>>,
    explicit: Option<&Arc<Handle>>,
    with_baggage: bool,
) -> PyResult<()> {
    let b = bridge(py)?;
    let ctx = match ctx.filter(|c| !c.is_none()) {
        Some(c) => c.clone(),
        None => b.current(py)?,
    };
    let parent = parent_of(b, &ctx);
    if let Some(sc) = parent.span_context() {
        carrier::write(carrier, "traceparent", &traceparent::format(sc));
        let state = traceparent::state_header(sc.trace_state());
        if !state.is_empty() {
            // Checked again going out: a span context from another SDK may carry a
            // tracestate that never went through our extraction.
            if traceparent::valid_state_header(&state) {
                carrier::write(carrier, "tracestate", &state);
            } else {
                count(&STATS.tracestate_dropped, 1);
            }
        }
    }
    if !with_baggage {
        return Ok(());
    }
    let handle = parent.tracer(explicit);
    let mut entries: Vec<(String, String, String)> = Vec::new();
    if let Some(bag) = baggage_of(b, &ctx) {
        let props = baggage_props(&ctx);
        for (k, v) in dict_items(&bag) {
            if let (Some(ks), Some(vs)) = (pystr::str_of(&k), pystr::str_of(&v)) {
                // An incoming member's properties go on with it while its value is
                // the one that came in.
                let p = props
                    .as_ref()
                    .and_then(|p| p.get_item(&k).ok().flatten())
                    .and_then(|t| t.extract::<(String, String)>().ok())
                    .filter(|(v0, _)| *v0 == vs)
                    .map(|(_, p)| p)
                    .unwrap_or_default();
                entries.push((ks, vs, p));
            }
        }
    }
    if let Some(h) = &handle {
        let cfg = &h.core.cfg;
        let defaults = [
            ("session_id", Some(cfg.session_id.as_str())),
            ("project", cfg.project.as_deref()),
            ("source", Some(cfg.source.as_str())),
        ];
        for (k, v) in defaults {
            if let Some(v) = v {
                if !entries.iter().any(|(ek, _, _)| ek == k) {
                    entries.push((k.to_string(), v.to_string(), String::new()));
                }
            }
        }
        if let Some(secret) = &cfg.baggage_secret {
            // One signature over the session, project and source as the receiver will
            // resolve them, and the time.
            let [session, project, source] =
                canonical_values(entries.iter().map(|(k, v, _)| (k.as_str(), v.as_str())));
            let sig = sign(secret.expose(), now_secs(), session, project, source);
            for e in entries.iter_mut().filter(|e| e.0 == "session_id") {
                e.2 = format!("sig={sig}");
            }
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    // honeytrace's own members always fit: they go first, and what the W3C limits (64
    // members, 8192 bytes) leave no room for is foreign, dropped and counted.
    entries.sort_by_key(|(k, _, _)| !matches!(k.as_str(), "session_id" | "project" | "source"));
    let (value, dropped) = baggage::encode(&entries);
    count(&STATS.baggage_dropped, dropped as u64);
    if !value.is_empty() {
        carrier::write(carrier, "baggage", &value);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Python API

fn current_or(py: Python<'_>, context: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    Ok(match context.filter(|c| !c.is_none()) {
        Some(c) => c.clone().unbind(),
        None => bridge(py)?.current(py)?.unbind(),
    })
}

/// The Context a carrier describes, on top of `context` (default: the current one).
/// Never attached here; never raises for bad input.
#[honeytrace_macros::function]
#[pyo3(signature = (carrier, context=None, tracer=None, trust=None, session_id=None))]
#[fallback(Python::attach(|py| current_or(py, None)))]
pub fn extract(
    py: Python<'_>,
    carrier: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    tracer: Option<&Bound<'_, PyAny>>,
    trust: Option<&Bound<'_, PyAny>>,
    session_id: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let trust = lenient_trust(trust);
    let handle = handle_of(tracer).or_else(default_handle);
    let sid = text_arg(session_id);
    match extract_context(
        py,
        carrier,
        context,
        handle.as_ref(),
        trust,
        sid.as_deref(),
        false,
    ) {
        Ok(c) => Ok(c.unbind()),
        Err(e) => {
            crate::engine::diag::warn_limited(
                "extract-failed",
                &format!("could not read the incoming context: {e}"),
            );
            current_or(py, context)
        }
    }
}

/// The Context of headers that this program's own process wrote (a process-pool
/// task's, see `_processes.py`): continued as they are, signatures not checked (they
/// crossed only the pool's pipe, and a task may wait in the queue longer than
/// `baggage_max_age`). Private.
#[honeytrace_macros::function]
#[fallback(Python::attach(|py| current_or(py, None)))]
pub fn _extract_own(py: Python<'_>, carrier: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let handle = default_handle();
    match extract_context(
        py,
        carrier,
        None,
        handle.as_ref(),
        Some(Trust::Continue),
        None,
        true,
    ) {
        Ok(c) => Ok(c.unbind()),
        Err(e) => {
            crate::engine::diag::warn_limited(
                "extract-failed",
                &format!("could not read the incoming context: {e}"),
            );
            current_or(py, None)
        }
    }
}

/// Write propagation headers into `carrier` and return it.
#[honeytrace_macros::function]
#[pyo3(signature = (carrier, context=None, tracer=None, baggage=None))]
#[fallback(Python::attach(|py| py.None()))]
#[allow(clippy::redundant_closure_for_method_calls)] // `Python::None` is not general enough
pub fn inject(
    py: Python<'_>,
    carrier: Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    tracer: Option<&Bound<'_, PyAny>>,
    baggage: Option<&Bound<'_, PyAny>>,
) -> Py<PyAny> {
    let explicit = handle_of(tracer);
    let with_baggage = crate::py::convert::flag(baggage);
    let failed = |e: &dyn std::fmt::Display| {
        crate::engine::diag::warn_limited(
            "inject-failed",
            &format!("could not write propagation headers: {e}"),
        );
    };
    // A tuple of pairs (gRPC metadata) cannot be written to: a new tuple is returned,
    // its pairs followed by ours.
    if let Ok(t) = carrier.cast::<PyTuple>() {
        let Ok(list) = PyList::new(py, t.iter()) else {
            return carrier.unbind();
        };
        if let Err(e) = inject_into(py, list.as_any(), context, explicit.as_ref(), with_baggage) {
            failed(&e);
        }
        return PyTuple::new(py, list.iter())
            .map_or_else(|_| carrier.clone().unbind(), |t| t.into_any().unbind());
    }
    let writable = carrier.is_instance_of::<PyDict>()
        || carrier.is_instance_of::<PyList>()
        || carrier
            .get_type()
            .hasattr(intern!(py, "__setitem__"))
            .unwrap_or(false);
    if !writable {
        crate::engine::diag::count(&crate::engine::diag::COUNTERS.invalid_arguments);
        let kind = carrier
            .get_type()
            .name()
            .map_or_else(|_| "object".to_string(), |n| n.to_string());
        failed(&format!(
            "a {kind} cannot carry headers; pass a dict, a headers object, or a list or tuple of (name, value) pairs"
        ));
        return carrier.unbind();
    }
    if let Err(e) = inject_into(py, &carrier, context, explicit.as_ref(), with_baggage) {
        failed(&e);
    }
    carrier.unbind()
}

/// Continue the caller's trace and session for a block: one line on the server.
///
/// ```python
/// with with_distributed_trace_context(dict(request.headers), tracer):
///     return run_agent(query)
/// ```
///
/// Reads `traceparent`, `tracestate` and `baggage` from any carrier in any header case
/// (a dict, werkzeug/Starlette headers, an ASGI scope, a WSGI environ, a list of
/// pairs), maps `session_id | honeyhive_session_id | honeyhive.session_id` (and the
/// same for `project` and `source`) to the canonical keys, validates them, applies the
/// trust policy (`trust="continue" | "restart" | "ignore"`, default from the tracer,
/// `HH_TRUST`), attaches the context for the block and restores the previous one on
/// exit, also on exceptions. An explicit `session_id` wins. An empty or garbage carrier
/// gives the current context; nothing here raises for bad input. Works with `with` and
/// `async with`; yields the attached Context.
#[pyclass(
    module = "honeytrace",
    name = "with_distributed_trace_context",
    subclass
)]
pub struct DistributedContext {
    carrier: Option<Py<PyAny>>,
    handle: Option<Arc<Handle>>,
    session_id: Option<String>,
    trust: Option<Trust>,
    tokens: Mutex<Vec<Py<PyAny>>>,
}

impl Degrade for DistributedContext {
    fn degraded() -> Self {
        DistributedContext {
            carrier: None,
            handle: None,
            session_id: None,
            trust: None,
            tokens: Mutex::new(Vec::new()),
        }
    }
}

impl DistributedContext {
    fn enter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let b = bridge(py)?;
        let handle = self.handle.clone().or_else(default_handle);
        let ctx = match &self.carrier {
            None => b.current(py)?,
            Some(carrier) => extract_context(
                py,
                carrier.bind(py),
                None,
                handle.as_ref(),
                self.trust,
                self.session_id.as_deref(),
                false,
            )
            .or_else(|e| {
                crate::engine::diag::warn_limited(
                    "extract-failed",
                    &format!("could not read the incoming context: {e}"),
                );
                b.current(py)
            })?,
        };
        let token = b.attach(&ctx)?;
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token.unbind());
        Ok(ctx.unbind())
    }

    fn exit(&self, py: Python<'_>) -> PyResult<()> {
        let token = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(t) = token {
            bridge(py)?.detach(t.bind(py));
        }
        Ok(())
    }
}

#[honeytrace_macros::methods]
impl DistributedContext {
    #[new]
    #[pyo3(signature = (carrier, tracer=None, *, session_id=None, trust=None))]
    fn new(
        carrier: Py<PyAny>,
        tracer: Option<&Bound<'_, PyAny>>,
        session_id: Option<&Bound<'_, PyAny>>,
        trust: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(DistributedContext {
            carrier: Some(carrier),
            handle: handle_of(tracer),
            session_id: text_arg(session_id),
            trust: lenient_trust(trust),
            tokens: Mutex::new(Vec::new()),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(c) = &self.carrier {
            visit.call(c)?;
        }
        if let Ok(t) = self.tokens.try_lock() {
            for tok in t.iter() {
                visit.call(tok)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let t = std::mem::take(&mut *self.tokens.lock().unwrap_or_else(PoisonError::into_inner));
        drop(t);
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.enter(py)
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.exit(py)
    }

    /// `async with`: attaches in the awaiting task, like `with`.
    fn __aenter__(&self, py: Python<'_>) -> PyResult<Ready> {
        Ok(Ready::new(Some(self.enter(py)?)))
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Ready> {
        self.exit(py)?;
        Ok(Ready::new(None))
    }
}

/// The `sig` baggage property for a session context (for tests, and for services that
/// build baggage by hand): `session_id=<id>;sig=<this>`. `issued_at`: Unix seconds
/// (default: now).
#[honeytrace_macros::function]
#[pyo3(signature = (secret, session_id, project=None, source=None, issued_at=None))]
pub fn sign_context(
    secret: &Bound<'_, PyAny>,
    session_id: &Bound<'_, PyAny>,
    project: Option<&Bound<'_, PyAny>>,
    source: Option<&Bound<'_, PyAny>>,
    issued_at: Option<&Bound<'_, PyAny>>,
) -> String {
    let issued_at = match issued_at.filter(|v| !v.is_none()) {
        None => now_secs(),
        // An exact int only: anything else could run user code (`__index__`).
        Some(v) => (v.is_exact_instance_of::<pyo3::types::PyInt>())
            .then(|| v.extract::<u64>().ok())
            .flatten()
            .unwrap_or_else(|| {
                invalid_argument("sign_context");
                now_secs()
            }),
    };
    // Text only: baggage holds strings, and reading anything else would run user code.
    let text = |v: Option<&Bound<'_, PyAny>>| match v.filter(|v| !v.is_none()) {
        None => Some(String::new()),
        Some(v) => pystr::str_of(v),
    };
    if let (Some(secret), Some(sid), Some(project), Some(source)) = (
        pystr::str_of(secret),
        pystr::str_of(session_id),
        text(project),
        text(source),
    ) {
        sign(&secret, issued_at, &sid, &project, &source)
    } else {
        invalid_argument("sign_context");
        String::new()
    }
}
