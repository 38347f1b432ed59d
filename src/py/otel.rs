//! The OpenTelemetry `Tracer`: bound to one tracer, or routing each span to the tracer
//! of its honeytrace parent (else the default tracer) when it is the global one; and
//! `start_as_current_span`, one engine object with the SDK's semantics.

use crate::engine::span::SpanOptions;
use crate::engine::tracer::{restart_link_of, SDK_NAME, VERSION};
use crate::py::boundary::Degrade;
use crate::py::bridge::bridge;
use crate::py::capture::{redact_kvs, suppressed};
use crate::py::convert::{flag, from_mapping, lenient_text, SpanArgs};
use crate::py::handle::Handle;
use crate::py::parent::{baggage_of, parent_of, restart_link, Parent};
use crate::py::span::PySpan;
use opentelemetry::trace::SpanContext;
use opentelemetry::InstrumentationScope;
use pyo3::exceptions::PyException;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use std::borrow::Cow;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

/// An instrumentation scope from `get_tracer`'s arguments. Its text is interned: the
/// scope is cloned into every span it makes (see `engine::intern`).
pub fn scope_of(
    name: &Bound<'_, PyAny>,
    version: Option<&Bound<'_, PyAny>>,
    schema_url: Option<&Bound<'_, PyAny>>,
    attributes: Option<&Bound<'_, PyAny>>,
) -> InstrumentationScope {
    let text = |s: String| -> Cow<'static, str> {
        match crate::engine::intern::intern(&s) {
            Some(st) => Cow::Borrowed(st),
            None => Cow::Owned(s),
        }
    };
    let opt = |v: Option<&Bound<'_, PyAny>>| v.filter(|v| !v.is_none()).map(lenient_text);
    let mut name = lenient_text(name);
    if name.is_empty() {
        name = "honeytrace.unnamed".to_string();
    }
    let mut b = InstrumentationScope::builder(text(name));
    if let Some(v) = opt(version) {
        b = b.with_version(text(v));
    }
    if let Some(s) = opt(schema_url) {
        b = b.with_schema_url(text(s));
    }
    if let Some(a) = attributes.filter(|a| !a.is_none()) {
        let mut kvs = Vec::new();
        from_mapping(a, &mut kvs);
        b = b.with_attributes(kvs);
    }
    b.build()
}

/// Start a span for `handle` under `parent` (read from `ctx`): the session stamps from
/// the context's baggage, and the link of a restarted incoming context.
pub fn start_in(
    handle: &Arc<Handle>,
    scope: &InstrumentationScope,
    ctx: &Bound<'_, PyAny>,
    parent: &Parent,
    mut opts: SpanOptions,
) -> PyResult<PySpan> {
    if !handle.core.is_live() {
        return Ok(PySpan::non_recording(SpanContext::empty_context()));
    }
    let b = bridge(ctx.py())?;
    redact_kvs(ctx.py(), &mut opts.attributes)?;
    let bag = baggage_of(b, ctx);
    let incoming = handle.read_baggage(bag.as_ref());
    handle.core.stamper.stamp(
        &mut opts.attributes,
        &incoming,
        &crate::engine::stamp::Explicit::default(),
    );
    if parent.is_root() {
        if let Some(remote) = restart_link(ctx) {
            opts.links.push(restart_link_of(remote));
        }
    }
    let (record, status) = (opts.record_exception, opts.set_status_on_exception);
    let begun = handle.core.begin_span(scope, parent.span_context(), opts);
    Ok(PySpan::begun(begun, handle.clone(), record, status))
}

/// OpenTelemetry's `start_span` under the parent in `context` (else the current one),
/// recorded by `fixed`, else by the parent's live tracer, else by the default.
pub fn start_span_in(
    py: Python<'_>,
    scope: &InstrumentationScope,
    fixed: Option<&Arc<Handle>>,
    context: Option<&Bound<'_, PyAny>>,
    opts: SpanOptions,
) -> PyResult<PySpan> {
    if suppressed() {
        return Ok(PySpan::non_recording(SpanContext::empty_context()));
    }
    let b = bridge(py)?;
    let ctx = match context.filter(|c| !c.is_none()) {
        Some(c) => c.clone(),
        None => b.current(py)?,
    };
    let parent = parent_of(b, &ctx);
    if b.suppressed_in(&ctx) {
        // Not recorded; its children and outgoing headers continue the parent.
        let sc = parent.span_context().cloned();
        return Ok(PySpan::remote(
            sc.unwrap_or_else(SpanContext::empty_context),
            None,
        ));
    }
    match parent.tracer(fixed) {
        Some(h) => start_in(&h, scope, &ctx, &parent, opts),
        None => Ok(PySpan::non_recording(SpanContext::empty_context())),
    }
}

/// An OpenTelemetry Tracer (registered as a virtual subclass of
/// `opentelemetry.trace.Tracer`).
#[pyclass(module = "honeytrace", name = "Tracer", frozen)]
pub struct ScopedTracer {
    scope: InstrumentationScope,
    fixed: Option<Arc<Handle>>,
}

impl ScopedTracer {
    pub fn new(scope: InstrumentationScope, fixed: Option<Arc<Handle>>) -> Self {
        ScopedTracer { scope, fixed }
    }
}

impl Degrade for ScopedTracer {
    fn degraded() -> Self {
        ScopedTracer::new(
            InstrumentationScope::builder(SDK_NAME)
                .with_version(VERSION)
                .build(),
            None,
        )
    }
}

#[honeytrace_macros::methods]
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
    ) -> PyResult<Py<PySpan>> {
        let opts = SpanArgs {
            name,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        }
        .options();
        let span = start_span_in(py, &self.scope, self.fixed.as_ref(), context, opts)?;
        let span = Bound::new(py, span)?;
        crate::py::span::started(&span, context);
        Ok(span.unbind())
    }

    /// OpenTelemetry's `start_as_current_span`: a context manager (and decorator) that
    /// starts the span on enter, makes it current, and on exit records an escaping
    /// `Exception` (per the flags), restores the context and ends the span.
    #[pyo3(signature = (name, context=None, kind=None, attributes=None, links=None, start_time=None, record_exception=None, set_status_on_exception=None, end_on_exit=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_as_current_span(
        slf: Py<Self>,
        name: Py<PyAny>,
        context: Option<Py<PyAny>>,
        kind: Option<Py<PyAny>>,
        attributes: Option<Py<PyAny>>,
        links: Option<Py<PyAny>>,
        start_time: Option<Py<PyAny>>,
        record_exception: Option<Py<PyAny>>,
        set_status_on_exception: Option<Py<PyAny>>,
        end_on_exit: Option<&Bound<'_, PyAny>>,
    ) -> CurrentSpan {
        CurrentSpan {
            args: CurrentSpanArgs {
                tracer: Some(slf),
                name: Some(name),
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
                end_on_exit: flag(end_on_exit),
            },
            active: Mutex::new(Vec::new()),
        }
    }

    #[getter]
    fn name(&self) -> String {
        self.scope.name().to_string()
    }
}

/// The arguments `start_as_current_span` was given, kept as the Python objects (each
/// use converts them: a decorated function starts a span per call).
struct CurrentSpanArgs {
    tracer: Option<Py<ScopedTracer>>,
    name: Option<Py<PyAny>>,
    context: Option<Py<PyAny>>,
    kind: Option<Py<PyAny>>,
    attributes: Option<Py<PyAny>>,
    links: Option<Py<PyAny>>,
    start_time: Option<Py<PyAny>>,
    record_exception: Option<Py<PyAny>>,
    set_status_on_exception: Option<Py<PyAny>>,
    end_on_exit: bool,
}

impl CurrentSpanArgs {
    fn objects(&self) -> [Option<&Py<PyAny>>; 8] {
        [
            self.name.as_ref(),
            self.context.as_ref(),
            self.kind.as_ref(),
            self.attributes.as_ref(),
            self.links.as_ref(),
            self.start_time.as_ref(),
            self.record_exception.as_ref(),
            self.set_status_on_exception.as_ref(),
        ]
    }

    fn clone_ref(&self, py: Python<'_>) -> Self {
        let c = |o: &Option<Py<PyAny>>| o.as_ref().map(|o| o.clone_ref(py));
        CurrentSpanArgs {
            tracer: self.tracer.as_ref().map(|t| t.clone_ref(py)),
            name: c(&self.name),
            context: c(&self.context),
            kind: c(&self.kind),
            attributes: c(&self.attributes),
            links: c(&self.links),
            start_time: c(&self.start_time),
            record_exception: c(&self.record_exception),
            set_status_on_exception: c(&self.set_status_on_exception),
            end_on_exit: self.end_on_exit,
        }
    }
}

/// What `Tracer.start_as_current_span` returns (see there).
#[pyclass(module = "honeytrace._core", name = "CurrentSpan", frozen)]
pub struct CurrentSpan {
    args: CurrentSpanArgs,
    /// (span, context token) per active `with`, innermost last.
    active: Mutex<Vec<(Py<PySpan>, Py<PyAny>)>>,
}

impl Degrade for CurrentSpan {
    fn degraded() -> Self {
        CurrentSpan {
            args: CurrentSpanArgs {
                tracer: None,
                name: None,
                context: None,
                kind: None,
                attributes: None,
                links: None,
                start_time: None,
                record_exception: None,
                set_status_on_exception: None,
                end_on_exit: true,
            },
            active: Mutex::new(Vec::new()),
        }
    }
}

impl CurrentSpan {
    fn start(&self, py: Python<'_>) -> PyResult<PySpan> {
        let a = &self.args;
        let (Some(tracer), Some(name)) = (a.tracer.as_ref(), a.name.as_ref()) else {
            return Ok(PySpan::non_recording(SpanContext::empty_context()));
        };
        let bind = |o: &Option<Py<PyAny>>| o.as_ref().map(|o| o.bind(py).clone());
        let (kind, attributes, links, start_time, rec, status) = (
            bind(&a.kind),
            bind(&a.attributes),
            bind(&a.links),
            bind(&a.start_time),
            bind(&a.record_exception),
            bind(&a.set_status_on_exception),
        );
        let opts = SpanArgs {
            name: name.bind(py),
            kind: kind.as_ref(),
            attributes: attributes.as_ref(),
            links: links.as_ref(),
            start_time: start_time.as_ref(),
            record_exception: rec.as_ref(),
            set_status_on_exception: status.as_ref(),
        }
        .options();
        let t = tracer.get();
        let context = bind(&a.context);
        start_span_in(py, &t.scope, t.fixed.as_ref(), context.as_ref(), opts)
    }
}

#[honeytrace_macros::methods]
impl CurrentSpan {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(t) = &self.args.tracer {
            visit.call(t)?;
        }
        for o in self.args.objects().into_iter().flatten() {
            visit.call(o)?;
        }
        if let Ok(active) = self.active.try_lock() {
            for (span, token) in active.iter() {
                visit.call(span)?;
                visit.call(token)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken =
            std::mem::take(&mut *self.active.lock().unwrap_or_else(PoisonError::into_inner));
        drop(taken);
    }

    #[fallback(Python::attach(|py| Py::new(py, PySpan::degraded())))]
    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PySpan>> {
        let span = Bound::new(py, self.start(py)?)?;
        crate::py::span::started(&span, self.args.context.as_ref().map(|c| c.bind(py)));
        let b = bridge(py)?;
        let cur = b.current(py)?;
        let ctx = b.child(&cur, span.as_any(), None)?;
        let token = b.attach(&ctx)?;
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
        let Some((span, token)) = self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        else {
            return Ok(false);
        };
        bridge(py)?.detach(token.bind(py));
        let s = span.get();
        if let Some(e) = exc.filter(|e| e.is_instance_of::<PyException>()) {
            let (record, status) = s.flags();
            if s.is_recording_now() {
                if record {
                    s.record_exception_event(e, None, None, None, false);
                }
                if status {
                    s.set_error_status_for(e);
                }
            }
        }
        if self.args.end_on_exit {
            s.end_at(None);
        }
        Ok(false)
    }

    /// A fresh context manager with the same arguments (one per decorated call).
    fn _recreate_cm(&self, py: Python<'_>) -> CurrentSpan {
        CurrentSpan {
            args: self.args.clone_ref(py),
            active: Mutex::new(Vec::new()),
        }
    }

    /// Used as a decorator: each call (or each awaited coroutine) in its own span.
    fn __call__(slf: Py<Self>, py: Python<'_>, func: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let helper = bridge(py)?.as_decorator.bind(py);
        Ok(helper.call1((slf, func))?.unbind())
    }
}

/// The global provider's tracer: routes each span (see `start_span_in`).
#[honeytrace_macros::function]
#[pyo3(signature = (name, version=None, schema_url=None, attributes=None))]
pub fn routing_tracer(
    name: &Bound<'_, PyAny>,
    version: Option<&Bound<'_, PyAny>>,
    schema_url: Option<&Bound<'_, PyAny>>,
    attributes: Option<&Bound<'_, PyAny>>,
) -> ScopedTracer {
    ScopedTracer::new(scope_of(name, version, schema_url, attributes), None)
}
