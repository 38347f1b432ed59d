//! Python span processors (`TracerProvider.add_span_processor`): any object with the
//! OpenTelemetry SDK's `SpanProcessor` methods. A tracer's own processors and the
//! global provider's (which see every tracer's spans) are each behind a flag, so a
//! tracer without any pays two relaxed loads per span. Processors run on the thread
//! that starts or ends the span, as in the SDK, with tracing suppressed; what they
//! raise is logged and counted, never passed to the application.

use crate::engine::diag::{self, COUNTERS};
use crate::py::boundary::Section;
use crate::py::bridge::bridge;
use crate::py::capture::suppress_tracing;
use crate::py::handle::{Handle, GLOBAL_PROCESSORS};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

fn all(py: Python<'_>, h: &Handle) -> Vec<Py<PyAny>> {
    let mut v = GLOBAL_PROCESSORS.snapshot(py);
    v.extend(h.processors.snapshot(py));
    v
}

/// Call `method` of each processor; failures are logged and counted.
fn call_each<'py>(
    py: Python<'py>,
    h: &Handle,
    method: &Bound<'py, PyString>,
    arg: impl Fn(&Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>,
) {
    let Some(_section) = Section::open() else {
        return;
    };
    let _quiet = suppress_tracing();
    for p in all(py, h) {
        let p = p.bind(py);
        if let Err(e) = arg(p) {
            report(py, &e, method);
        }
    }
}

fn report(py: Python<'_>, e: &PyErr, method: &Bound<'_, PyString>) {
    // A processor runs where the application cannot catch what it raises (inside
    // `end()`, a decorator, a garbage-collected span): even a KeyboardInterrupt
    // raised there is reported, not passed on.
    diag::count(&COUNTERS.processor_errors);
    diag::warn_limited(
        "processor-failed",
        &format!(
            "a span processor's {method} raised {}: {}; the span is exported as usual",
            e.get_type(py)
                .name()
                .map_or_else(|_| "an exception".to_string(), |n| n.to_string()),
            e.value(py)
        ),
    );
}

/// `on_start(span, parent_context)` of every processor of `h` (the span's tracer),
/// for a span that records.
pub fn on_start(h: &Handle, span: &Bound<'_, PyAny>, parent_context: Option<&Bound<'_, PyAny>>) {
    let py = span.py();
    if !h.has_processors() {
        return;
    }
    let method = intern!(py, "on_start");
    call_each(py, h, method, |p| {
        p.call_method1(method, (span, parent_context))
    });
}

/// `on_end(readable)` of every processor, with the SDK's `ReadableSpan` for the ended
/// span `view` (see `honeytrace/_readable.py`).
pub fn on_end(py: Python<'_>, h: &Handle, view: &Bound<'_, PyAny>) {
    let Some(_section) = Section::open() else {
        return;
    };
    let readable = {
        let _quiet = suppress_tracing();
        bridge(py).and_then(|b| {
            b.readable
                .bind(py)
                .call_method1(intern!(py, "readable"), (view,))
        })
    };
    let method = intern!(py, "on_end");
    match readable {
        Ok(r) => call_each(py, h, method, |p| p.call_method1(method, (&r,))),
        Err(e) => report(py, &e, method),
    }
}
