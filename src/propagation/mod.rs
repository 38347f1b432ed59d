//! Distributed context: W3C propagation in Rust, the trust policy for incoming context,
//! and signed sessions.
//!
//! Extract: read traceparent/tracestate/baggage from any carrier (case-insensitively),
//! map `session_id | honeyhive_session_id | honeyhive.session_id | session.id` (and the
//! same for project and source) to the canonical keys, validate them (length, printable,
//! a UUID for HoneyHive cloud, a valid signature when a secret is configured), apply
//! the trust policy, and return a new Python Context (never attached here).
//!
//! Inject: traceparent/tracestate from the current span, baggage with the current
//! entries plus session_id/project/source from baggage or else the tracer, signed when
//! a secret is configured. Never an internal id.

pub mod baggage;
pub mod carrier;
pub mod traceparent;

use crate::config::{Mode, Trust};
use crate::context::{bridge, from_py_span_context, Bridge, Ready};
use crate::diag;
use crate::ids;
use crate::span::PySpan;
use crate::tracer::{default_core, Core, TracerCore};
use baggage::Member;
use opentelemetry::trace::SpanContext;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Process-wide propagation counters (reported in `tracer.stats()`).
#[derive(Default)]
pub struct PropagationStats {
    pub traceparent_invalid: AtomicU64,
    pub tracestate_dropped: AtomicU64,
    pub baggage_dropped: AtomicU64,
    pub incoming_rejected: AtomicU64,
    pub sessions_unsigned: AtomicU64,
    pub sessions_forged: AtomicU64,
    pub contexts_ignored: AtomicU64,
}

pub static STATS: PropagationStats = PropagationStats {
    traceparent_invalid: AtomicU64::new(0),
    tracestate_dropped: AtomicU64::new(0),
    baggage_dropped: AtomicU64::new(0),
    incoming_rejected: AtomicU64::new(0),
    sessions_unsigned: AtomicU64::new(0),
    sessions_forged: AtomicU64::new(0),
    contexts_ignored: AtomicU64::new(0),
};

fn count(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The canonical keys and the aliases read for them, in order of precedence.
const ALIASES: [(&str, &[&str]); 3] = [
    (
        "session_id",
        &[
            "session_id",
            "honeyhive_session_id",
            "honeyhive.session_id",
            "session.id",
        ],
    ),
    (
        "project",
        &["project", "honeyhive_project", "honeyhive.project"],
    ),
    (
        "source",
        &["source", "honeyhive_source", "honeyhive.source"],
    ),
];

fn canonical(key: &str) -> Option<(&'static str, usize)> {
    ALIASES.iter().find_map(|(canon, aliases)| {
        aliases
            .iter()
            .position(|a| *a == key)
            .map(|rank| (*canon, rank))
    })
}

fn printable(s: &str, max: usize) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_control()) {
        return false;
    }
    // Bytes bound characters from above: count only when it can matter.
    s.len() <= max || s.chars().count() <= max
}

// ---------------------------------------------------------------------------------
// Signed sessions: `session_id=<id>;sig=<base64url(HMAC-SHA256(secret, id))[..16 bytes]>`
// The signature is a W3C baggage property, which other SDKs ignore.

const SIG_BYTES: usize = 16;

fn b64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (u32::from(c) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn sign(secret: &str, session_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, session_id.as_bytes());
    b64url(&tag.as_ref()[..SIG_BYTES])
}

fn verify(secret: &str, session_id: &str, sig: &str) -> bool {
    let expected = sign(secret, session_id);
    // Constant time over the expected length.
    expected.len() == sig.len()
        && expected
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

// ---------------------------------------------------------------------------------
// Extract

/// How incoming context is treated, resolved from the call, the tracer and defaults.
pub struct Policy {
    pub trust: Trust,
    pub require_uuid: bool,
    pub secret: Option<String>,
}

impl Policy {
    pub fn for_core(core: Option<&Core>, trust: Option<Trust>) -> Policy {
        Policy {
            trust: trust
                .or_else(|| core.map(|c| c.cfg.trust))
                .unwrap_or(Trust::Continue),
            require_uuid: core.is_some_and(|c| c.cfg.mode == Mode::Cloud),
            secret: core.and_then(|c| {
                c.cfg
                    .baggage_secret
                    .as_ref()
                    .map(|s| s.expose().to_string())
            }),
        }
    }
}

pub struct Incoming<'a> {
    pub parent: Option<SpanContext>,
    /// Baggage entries after normalization and validation (canonical keys first),
    /// borrowed from the headers where nothing had to change.
    pub baggage: Vec<(&'a str, Cow<'a, str>)>,
}

/// Parse, normalize and validate what a carrier holds (pure Rust, no Python objects).
pub fn interpret<'a>(h: &'a carrier::Headers, policy: &Policy) -> Incoming<'a> {
    let mut parent = None;
    if !h.traceparent.is_empty() {
        let first = &h.traceparent[0];
        // Several traceparent headers that disagree: none can be trusted.
        if h.traceparent.iter().all(|t| t.trim() == first.trim()) {
            parent = traceparent::parse(first);
        }
        if parent.is_none() {
            count(&STATS.traceparent_invalid, 1);
            diag::warn_limited(
                "bad-traceparent",
                "an incoming traceparent was invalid and ignored; a new trace was started",
            );
        }
    }
    if let Some(p) = parent.take() {
        let (state, dropped) = traceparent::parse_state(&h.tracestate);
        count(&STATS.tracestate_dropped, u64::from(dropped));
        parent = Some(SpanContext::new(
            p.trace_id(),
            p.span_id(),
            p.trace_flags(),
            true,
            state,
        ));
    }

    let parsed = baggage::parse(&h.baggage);
    count(&STATS.baggage_dropped, parsed.dropped as u64);
    if parsed.dropped > 0 {
        diag::warn_limited(
            "bad-baggage",
            &format!(
                "dropped {} incoming baggage member(s): malformed or beyond the W3C limits (64 members, 8192 bytes)",
                parsed.dropped
            ),
        );
    }

    // Canonical keys: the best-ranked alias wins; aliases are not kept.
    let mut best: [Option<(usize, Member<'a>)>; 3] = [None, None, None];
    let mut other: Vec<(&'a str, Cow<'a, str>)> = Vec::new();
    for m in parsed.entries {
        match canonical(m.key) {
            Some((canon, rank)) => {
                let slot = ALIASES.iter().position(|(c, _)| *c == canon).unwrap_or(0);
                if best[slot].as_ref().is_none_or(|(r, _)| rank <= *r) {
                    best[slot] = Some((rank, m));
                }
            }
            None => other.push((m.key, m.value)),
        }
    }
    let mut out: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(other.len() + 3);
    for (slot, chosen) in best.into_iter().enumerate() {
        let Some((_, m)) = chosen else { continue };
        let canon = ALIASES[slot].0;
        let ok = match canon {
            "session_id" => {
                let mut ok =
                    printable(&m.value, 256) && (!policy.require_uuid || ids::is_uuid(&m.value));
                if ok {
                    if let Some(secret) = &policy.secret {
                        match m.prop("sig") {
                            None => {
                                count(&STATS.sessions_unsigned, 1);
                                ok = false;
                            }
                            Some(sig) if !verify(secret, &m.value, sig) => {
                                count(&STATS.sessions_forged, 1);
                                ok = false;
                            }
                            _ => {}
                        }
                    }
                }
                ok
            }
            _ => printable(&m.value, 128),
        };
        if ok {
            let value = if canon == "session_id"
                && policy.require_uuid
                && m.value.bytes().any(|c| c.is_ascii_uppercase())
            {
                Cow::Owned(m.value.to_ascii_lowercase())
            } else {
                m.value
            };
            out.push((canon, value));
        } else {
            count(&STATS.incoming_rejected, 1);
            diag::warn_limited(
                "rejected-session",
                &format!(
                    "an incoming {canon} was rejected (invalid{}); the tracer's own value is used",
                    if policy.secret.is_some() && canon == "session_id" {
                        ", unsigned or forged"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    out.extend(other);
    Incoming {
        parent,
        baggage: out,
    }
}

/// The key under which a restarted context keeps the caller's span, for the link.
pub const LINK_KEY: &str = "honeytrace.restart_link";

static LINK_KEY_OBJ: pyo3::sync::PyOnceLock<Py<PyString>> = pyo3::sync::PyOnceLock::new();

pub fn link_key(py: Python<'_>) -> &Bound<'_, PyString> {
    LINK_KEY_OBJ
        .get_or_init(py, || PyString::intern(py, LINK_KEY).unbind())
        .bind(py)
}

/// The remote span a restarted context links to (checked for root spans only).
pub fn restart_link(b: &Bridge, ctx: &Bound<'_, PyAny>) -> Option<SpanContext> {
    let py = ctx.py();
    let d = ctx.cast::<PyDict>().ok()?;
    let v = d.get_item(link_key(py)).ok().flatten()?;
    let _ = b;
    let s = v.cast::<PySpan>().ok()?;
    Some(s.get().sc.clone())
}

/// Build the Context for `carrier` on top of `base` (the current context if None).
pub fn extract_context<'py>(
    py: Python<'py>,
    carrier: &Bound<'py, PyAny>,
    base: Option<&Bound<'py, PyAny>>,
    core: Option<&Arc<Core>>,
    trust: Option<Trust>,
    session_id: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let b = bridge(py)?;
    let base = match base.filter(|c| !c.is_none()) {
        Some(c) => c.clone(),
        None => b.current(py)?,
    };
    let policy = Policy::for_core(core.map(|c| c.as_ref()), trust);
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
        let bag = match crate::context::baggage_of(b, &base) {
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
    }
    if let Some(parent) = inc.parent {
        match policy.trust {
            Trust::Continue => {
                let remote = PySpan::remote(parent, core.cloned());
                d.set_item(b.span_key.bind(py), Py::new(py, remote)?)?;
            }
            Trust::Restart => {
                // No parent: the next span is a root, linked to the caller's span.
                d.set_item(
                    b.span_key.bind(py),
                    Py::new(
                        py,
                        PySpan::remote(SpanContext::empty_context(), core.cloned()),
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

fn pick_core(
    b: &Bridge,
    ctx: &Bound<'_, PyAny>,
    explicit: Option<&Arc<Core>>,
) -> Option<Arc<Core>> {
    if let Some(c) = explicit {
        return Some(c.clone());
    }
    if let Some(span) = b.get(ctx, &b.span_key) {
        if let Ok(s) = span.cast::<PySpan>() {
            if let Some(c) = s.get().core.as_ref().filter(|c| c.is_live()) {
                return Some(c.clone());
            }
        }
    }
    default_core()
}

fn text(v: &Bound<'_, PyAny>) -> Option<String> {
    if v.is_none() {
        return None;
    }
    match v.cast::<PyString>() {
        Ok(s) => Some(crate::pystr::text(s).into_owned()),
        Err(_) => v.str().ok().map(|s| s.to_string_lossy().into_owned()),
    }
}

/// Write traceparent/tracestate/baggage for `ctx` (the current context if None).
pub fn inject_into(
    py: Python<'_>,
    carrier: &Bound<'_, PyAny>,
    ctx: Option<&Bound<'_, PyAny>>,
    explicit: Option<&Arc<Core>>,
    with_baggage: bool,
) -> PyResult<()> {
    let b = bridge(py)?;
    let ctx = match ctx.filter(|c| !c.is_none()) {
        Some(c) => c.clone(),
        None => b.current(py)?,
    };
    let sc = match b.get(&ctx, &b.span_key) {
        Some(span) => match span.cast::<PySpan>() {
            Ok(s) => Some(s.get().sc.clone()),
            Err(_) => span
                .call_method0(pyo3::intern!(py, "get_span_context"))
                .ok()
                .and_then(|c| from_py_span_context(&c)),
        },
        None => None,
    };
    if let Some(sc) = sc.filter(|s| s.is_valid()) {
        carrier::write(carrier, "traceparent", &traceparent::format(&sc));
        let state = sc.trace_state().header();
        if !state.is_empty() {
            carrier::write(carrier, "tracestate", &state);
        }
    }
    if !with_baggage {
        return Ok(());
    }
    let core = pick_core(b, &ctx, explicit);
    let mut entries: Vec<(String, String, String)> = Vec::new();
    if let Some(bag) = crate::context::baggage_of(b, &ctx) {
        for (k, v) in bag.iter() {
            if let (Some(k), Some(v)) = (text(&k), text(&v)) {
                entries.push((k, v, String::new()));
            }
        }
    }
    if let Some(core) = &core {
        let defaults = [
            ("session_id", Some(core.cfg.session_id.as_str())),
            ("project", core.cfg.project.as_deref()),
            ("source", Some(core.cfg.source.as_str())),
        ];
        for (k, v) in defaults {
            if let Some(v) = v {
                if !entries.iter().any(|(ek, _, _)| ek == k) {
                    entries.push((k.to_string(), v.to_string(), String::new()));
                }
            }
        }
        if let Some(secret) = &core.cfg.baggage_secret {
            for e in entries.iter_mut().filter(|e| e.0 == "session_id") {
                e.2 = format!("sig={}", sign(secret.expose(), &e.1));
            }
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    let (value, dropped) = baggage::encode(&entries);
    count(&STATS.baggage_dropped, dropped as u64);
    if !value.is_empty() {
        carrier::write(carrier, "baggage", &value);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Python API

pub fn parse_trust(trust: Option<&str>) -> PyResult<Option<Trust>> {
    match trust {
        None => Ok(None),
        Some(t) => Trust::parse(t).map(Some).ok_or_else(|| {
            PyValueError::new_err(format!(
                "trust must be 'continue', 'restart' or 'ignore', got {t:?}"
            ))
        }),
    }
}

fn core_of(tracer: Option<&Bound<'_, TracerCore>>) -> Option<Arc<Core>> {
    tracer.map(|t| t.get().core.clone()).or_else(default_core)
}

/// The Context a carrier describes, on top of `context` (default: the current one).
/// Never attached here; never raises for bad input.
#[pyfunction]
#[pyo3(signature = (carrier, context=None, tracer=None, trust=None, session_id=None))]
pub fn extract(
    py: Python<'_>,
    carrier: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    tracer: Option<&Bound<'_, TracerCore>>,
    trust: Option<&str>,
    session_id: Option<&str>,
) -> PyResult<Py<PyAny>> {
    let trust = parse_trust(trust)?;
    let core = core_of(tracer);
    let fallback = || -> PyResult<Py<PyAny>> {
        let b = bridge(py)?;
        Ok(match context.filter(|c| !c.is_none()) {
            Some(c) => c.clone().unbind(),
            None => b.current(py)?.unbind(),
        })
    };
    diag::shield("extract", fallback, || {
        match extract_context(py, carrier, context, core.as_ref(), trust, session_id) {
            Ok(c) => Ok(c.unbind()),
            Err(e) => {
                diag::warn_limited(
                    "extract-failed",
                    &format!("could not read the incoming context: {e}"),
                );
                let b = bridge(py)?;
                Ok(match context.filter(|c| !c.is_none()) {
                    Some(c) => c.clone().unbind(),
                    None => b.current(py)?.unbind(),
                })
            }
        }
    })
}

/// Write propagation headers into `carrier` and return it.
#[pyfunction]
#[pyo3(signature = (carrier, context=None, tracer=None, baggage=true))]
pub fn inject<'py>(
    py: Python<'py>,
    carrier: Bound<'py, PyAny>,
    context: Option<&Bound<'py, PyAny>>,
    tracer: Option<&Bound<'py, TracerCore>>,
    baggage: bool,
) -> Bound<'py, PyAny> {
    let explicit = tracer.map(|t| t.get().core.clone());
    diag::shield(
        "inject",
        || (),
        || {
            if let Err(e) = inject_into(py, &carrier, context, explicit.as_ref(), baggage) {
                diag::warn_limited(
                    "inject-failed",
                    &format!("could not write propagation headers: {e}"),
                );
            }
        },
    );
    carrier
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
    carrier: Py<PyAny>,
    core: Option<Arc<Core>>,
    session_id: Option<String>,
    trust: Option<Trust>,
    tokens: Mutex<Vec<Py<PyAny>>>,
}

impl DistributedContext {
    fn enter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let b = bridge(py)?;
        let core = self.core.clone().or_else(default_core);
        let ctx = diag::shield(
            "with_distributed_trace_context",
            || b.current(py),
            || {
                extract_context(
                    py,
                    self.carrier.bind(py),
                    None,
                    core.as_ref(),
                    self.trust,
                    self.session_id.as_deref(),
                )
                .or_else(|e| {
                    diag::warn_limited(
                        "extract-failed",
                        &format!("could not read the incoming context: {e}"),
                    );
                    b.current(py)
                })
            },
        )?;
        let token = b.attach(&ctx)?;
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(token.unbind());
        Ok(ctx.unbind())
    }

    fn exit(&self, py: Python<'_>) -> PyResult<()> {
        let token = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(t) = token {
            bridge(py)?.detach(t.bind(py));
        }
        Ok(())
    }
}

#[pymethods]
impl DistributedContext {
    #[new]
    #[pyo3(signature = (carrier, tracer=None, *, session_id=None, trust=None))]
    fn new(
        carrier: Py<PyAny>,
        tracer: Option<&Bound<'_, PyAny>>,
        session_id: Option<String>,
        trust: Option<&str>,
    ) -> PyResult<Self> {
        let core = match tracer.filter(|t| !t.is_none()) {
            None => None,
            Some(t) => {
                let tc = match t.cast::<TracerCore>() {
                    Ok(c) => c.clone(),
                    Err(_) => t.getattr("_core")?.cast_into::<TracerCore>()?,
                };
                Some(tc.get().core.clone())
            }
        };
        Ok(DistributedContext {
            carrier,
            core,
            session_id,
            trust: parse_trust(trust)?,
            tokens: Mutex::new(Vec::new()),
        })
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

/// Sign a session id with `secret` (for tests and for services that build baggage
/// by hand).
#[pyfunction]
#[pyo3(name = "sign_session")]
pub fn py_sign_session(secret: &str, session_id: &str) -> String {
    sign(secret, session_id)
}

pub fn stats_into(d: &Bound<'_, PyDict>) -> PyResult<()> {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    d.set_item("traceparent_invalid", g(&STATS.traceparent_invalid))?;
    d.set_item("tracestate_dropped", g(&STATS.tracestate_dropped))?;
    d.set_item("baggage_dropped", g(&STATS.baggage_dropped))?;
    d.set_item("incoming_rejected", g(&STATS.incoming_rejected))?;
    d.set_item("sessions_unsigned", g(&STATS.sessions_unsigned))?;
    d.set_item("sessions_forged", g(&STATS.sessions_forged))?;
    d.set_item("contexts_ignored", g(&STATS.contexts_ignored))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Leaked: `interpret` borrows from the headers, and tests build them inline.
    fn headers(tp: &[&str], bag: &[&str]) -> &'static carrier::Headers {
        Box::leak(Box::new(carrier::Headers {
            traceparent: tp.iter().map(|s| s.to_string()).collect(),
            tracestate: vec![],
            baggage: bag.iter().map(|s| s.to_string()).collect(),
        }))
    }

    fn policy() -> Policy {
        Policy {
            trust: Trust::Continue,
            require_uuid: false,
            secret: None,
        }
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn aliases_map_to_canonical_keys() {
        let inc = interpret(
            headers(
                &[TP],
                &["honeyhive.session_id=a,honeyhive_project=p,honeyhive.source=s,x=1"],
            ),
            &policy(),
        );
        assert!(inc.parent.is_some());
        assert_eq!(
            inc.baggage,
            vec![
                ("session_id", "a".into()),
                ("project", "p".into()),
                ("source", "s".into()),
                ("x", "1".into())
            ]
        );
        // The canonical key wins over an alias, whatever the order.
        let inc = interpret(
            headers(&[], &["honeyhive_session_id=alias,session_id=canon"]),
            &policy(),
        );
        assert_eq!(inc.baggage, vec![("session_id", "canon".into())]);
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut p = policy();
        p.require_uuid = true;
        let inc = interpret(headers(&[], &["session_id=not-a-uuid,project=ok"]), &p);
        assert_eq!(inc.baggage, vec![("project", "ok".into())]);
        let long = format!("session_id={}", "a".repeat(300));
        let inc = interpret(headers(&[], &[&long]), &policy());
        assert!(inc.baggage.is_empty());
        let inc = interpret(headers(&[], &["session_id=a%0Ab"]), &policy());
        assert!(inc.baggage.is_empty());
        let uuid = "123E4567-E89B-12D3-A456-426614174000";
        let inc = interpret(headers(&[], &[&format!("session_id={uuid}")]), &p);
        assert_eq!(inc.baggage[0].1, uuid.to_ascii_lowercase());
    }

    #[test]
    fn conflicting_traceparents_are_ignored() {
        let other = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(interpret(headers(&[TP, other], &[]), &policy())
            .parent
            .is_none());
        assert!(interpret(headers(&[TP, TP], &[]), &policy())
            .parent
            .is_some());
    }

    #[test]
    fn signed_sessions() {
        let mut p = policy();
        p.secret = Some("a-long-enough-shared-secret".into());
        let sig = sign("a-long-enough-shared-secret", "sess-1");
        let good = format!("session_id=sess-1;sig={sig}");
        assert_eq!(
            interpret(headers(&[], &[&good]), &p).baggage,
            vec![("session_id", "sess-1".into())]
        );
        let forged = format!("session_id=sess-2;sig={sig}");
        assert!(interpret(headers(&[], &[&forged]), &p).baggage.is_empty());
        assert!(interpret(headers(&[], &["session_id=sess-1"]), &p)
            .baggage
            .is_empty());
        // Without a secret the property is ignored.
        assert_eq!(
            interpret(headers(&[], &[&forged]), &policy()).baggage.len(),
            1
        );
    }

    #[test]
    fn b64url_is_unpadded() {
        assert_eq!(b64url(b"\xff\xfe\xfd"), "__79");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(sign("k", "s").len(), 22);
    }
}
