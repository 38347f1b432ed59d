//! The parent a new span gets, and the other things a span's start reads from a
//! Python Context: its baggage, and the caller's span a restarted context links to.

use crate::py::boundary::Section;
use crate::py::bridge::{from_py_span_context, Bridge};
use crate::py::handle::Handle;
use crate::py::span::PySpan;
use opentelemetry::trace::SpanContext;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Arc;

/// The parent a new span would have, read from a Python Context.
pub enum Parent {
    Root,
    /// No parent, but the context names the tracer (a restarted incoming context).
    RootFor(Arc<Handle>),
    /// A honeytrace span: its tracer is the natural home of the child.
    Ours(SpanContext, Option<Arc<Handle>>),
    Foreign(SpanContext),
}

impl Parent {
    pub fn is_root(&self) -> bool {
        matches!(self, Parent::Root | Parent::RootFor(_))
    }

    /// The honeytrace tracer this parent belongs to, if any.
    pub fn handle(&self) -> Option<&Arc<Handle>> {
        match self {
            Parent::Ours(_, c) => c.as_ref(),
            Parent::RootFor(c) => Some(c),
            _ => None,
        }
    }

    /// The tracer a child of this parent goes to: `explicit` if given, else the
    /// parent's tracer while it is live, else the default tracer.
    pub fn tracer(&self, explicit: Option<&Arc<Handle>>) -> Option<Arc<Handle>> {
        if let Some(h) = explicit {
            return Some(h.clone());
        }
        match self.handle().filter(|h| h.core.is_live()) {
            Some(h) => Some(h.clone()),
            None => crate::py::handle::default_handle(),
        }
    }

    pub fn span_context(&self) -> Option<&SpanContext> {
        match self {
            Parent::Root | Parent::RootFor(_) => None,
            Parent::Ours(sc, _) | Parent::Foreign(sc) => Some(sc),
        }
    }
}

pub fn parent_of(bridge: &Bridge, ctx: &Bound<'_, PyAny>) -> Parent {
    let Some(span) = bridge.span_in(ctx) else {
        return Parent::Root;
    };
    if let Ok(ours) = span.cast::<PySpan>() {
        let s = ours.get();
        if !s.sc.is_valid() {
            return match &s.handle {
                Some(c) => Parent::RootFor(c.clone()),
                None => Parent::Root,
            };
        }
        return Parent::Ours(s.sc.clone(), s.handle.clone());
    }
    foreign_parent(&span)
}

/// The context of another SDK's span (Python code: a section).
fn foreign_parent(span: &Bound<'_, PyAny>) -> Parent {
    let py = span.py();
    let Some(_section) = Section::open() else {
        return Parent::Root;
    };
    match span
        .call_method0(intern!(py, "get_span_context"))
        .ok()
        .and_then(|sc| from_py_span_context(&sc))
    {
        Some(sc) if sc.is_valid() => Parent::Foreign(sc),
        _ => Parent::Root,
    }
}

/// The baggage dict in a Context, if any.
pub fn baggage_of<'py>(bridge: &Bridge, ctx: &Bound<'py, PyAny>) -> Option<Bound<'py, PyDict>> {
    bridge
        .baggage_in(ctx)
        .and_then(|b| b.cast_into::<PyDict>().ok())
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
pub fn restart_link(ctx: &Bound<'_, PyAny>) -> Option<SpanContext> {
    let py = ctx.py();
    let d = ctx.cast::<PyDict>().ok()?;
    let v = d.get_item(link_key(py)).ok().flatten()?;
    let s = v.cast::<PySpan>().ok()?;
    Some(s.get().sc.clone())
}

/// The key under which a Context keeps the `;properties` of incoming foreign baggage
/// members: a dict `{key: (value, properties)}`. OpenTelemetry's baggage has no place
/// for them; inject sends them on with a member whose value is still the one that
/// came in.
pub const BAGGAGE_PROPS_KEY: &str = "honeytrace.baggage_properties";

static BAGGAGE_PROPS_KEY_OBJ: pyo3::sync::PyOnceLock<Py<PyString>> = pyo3::sync::PyOnceLock::new();

pub fn baggage_props_key(py: Python<'_>) -> &Bound<'_, PyString> {
    BAGGAGE_PROPS_KEY_OBJ
        .get_or_init(py, || PyString::intern(py, BAGGAGE_PROPS_KEY).unbind())
        .bind(py)
}

/// The baggage properties a Context keeps (see `BAGGAGE_PROPS_KEY`).
pub fn baggage_props<'py>(ctx: &Bound<'py, PyAny>) -> Option<Bound<'py, PyDict>> {
    let d = ctx.cast::<PyDict>().ok()?;
    d.get_item(baggage_props_key(ctx.py()))
        .ok()
        .flatten()?
        .cast_into::<PyDict>()
        .ok()
}
