//! The boundary layer: every Python-visible class and function, and the only Rust
//! that knows the shapes of Python objects (the Context dict, the span handle,
//! carriers). It converts Python arguments into the engine's types, runs every entry
//! point under the panic shield (`boundary::guard`, put there by the
//! `#[honeytrace_macros::methods]`/`#[honeytrace_macros::function]` attributes), and implements GC
//! traversal for the classes that hold Python objects.

pub mod boundary;
pub mod bridge;
pub mod capture;
pub mod carrier;
pub mod config;
pub mod convert;
pub mod decorator;
pub mod handle;
pub mod otel;
pub mod parent;
pub mod processors;
pub mod propagation;
pub mod pystr;
pub mod server;
pub mod span;
pub mod tracer;

use crate::engine::config::settings;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The settings table, for the docs and their drift test.
fn settings_table(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    settings::SETTINGS
        .iter()
        .map(|s| {
            let d = PyDict::new(py);
            d.set_item("key", s.key)?;
            d.set_item("env", s.env.to_vec())?;
            d.set_item("env_ms", s.env_ms.to_vec())?;
            d.set_item("default", s.default)?;
            d.set_item("doc", s.doc)?;
            Ok(d)
        })
        .collect()
}

/// Add every class, function and constant of `honeytrace._core` to `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    crate::engine::diag::install_panic_hook();
    m.add("__version__", crate::engine::tracer::VERSION)?;
    m.add(
        "CONFIG_KEYS",
        settings::SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>(),
    )?;
    m.add("LEGACY_KEYS", settings::IGNORED_LEGACY_KEYS.to_vec())?;
    m.add("SETTINGS", settings_table(py)?)?;
    m.add("SETTINGS_MARKDOWN", settings::markdown_table())?;
    m.add("DEFAULT_FILE", settings::DEFAULT_FILE)?;
    m.add("DEFAULT_SERVER_URL", settings::DEFAULT_SERVER_URL)?;
    m.add_class::<span::PySpan>()?;
    m.add_class::<tracer::TracerCore>()?;
    m.add_class::<otel::ScopedTracer>()?;
    m.add_class::<otel::CurrentSpan>()?;
    m.add_class::<decorator::TraceSpec>()?;
    m.add_class::<decorator::CallScope>()?;
    m.add_class::<propagation::DistributedContext>()?;
    m.add_class::<server::ServerTracing>()?;
    m.add_class::<server::ServerRequest>()?;
    m.add_class::<bridge::Ready>()?;
    m.add_function(wrap_pyfunction!(decorator::set_redactor, m)?)?;
    m.add_function(wrap_pyfunction!(decorator::enrich, m)?)?;
    m.add_function(wrap_pyfunction!(decorator::_trace_spec, m)?)?;
    m.add_function(wrap_pyfunction!(propagation::extract, m)?)?;
    m.add_function(wrap_pyfunction!(propagation::inject, m)?)?;
    m.add_function(wrap_pyfunction!(propagation::sign_context, m)?)?;
    m.add_function(wrap_pyfunction!(propagation::_extract_own, m)?)?;
    m.add_function(wrap_pyfunction!(bridge::_install_bridge, m)?)?;
    m.add_function(wrap_pyfunction!(otel::routing_tracer, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::_add_span_processor, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::_span_processors, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::default_tracer_id, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::after_fork_child, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::flush_all, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::shutdown_all, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::uuid4, m)?)?;
    m.add_function(wrap_pyfunction!(boundary::internal_errors, m)?)?;
    m.add_function(wrap_pyfunction!(boundary::_invalid_argument, m)?)?;
    m.add_function(wrap_pyfunction!(boundary::_mark_exiting, m)?)?;
    m.add_function(wrap_pyfunction!(boundary::_take_logs, m)?)?;
    m.add_function(wrap_pyfunction!(boundary::_logs_pending, m)?)?;
    m.add_function(wrap_pyfunction!(boundary::_panic_for_test, m)?)?;
    Ok(())
}
