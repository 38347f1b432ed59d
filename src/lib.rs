//! honeytrace's Rust engine. `#[pymodule]` wiring only; see ARCHITECTURE.md for the map.

mod attributes;
mod config;
mod context;
mod decorator;
mod diag;
mod export;
mod ids;
mod intern;
mod processor;
mod propagation;
mod pystr;
mod serialize;
mod server;
mod session;
mod span;
mod tracer;

use pyo3::prelude::*;

// Spans are allocated on the caller's thread and freed on the export thread; glibc's
// malloc serialises those cross-thread frees on an arena lock, which the benchmark
// showed on the caller's hot path. mimalloc frees across threads without that lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Entry points for the Rust micro-benchmarks in `benches/rust` (not a public API).
#[doc(hidden)]
pub mod __bench {
    pub use crate::attributes::{captured, flatten, from_mapping, to_value};
    pub use crate::propagation::baggage::{encode as encode_baggage, parse as parse_baggage};
    pub use crate::propagation::traceparent::parse as parse_traceparent;
    pub use crate::serialize::to_json_text;
}

/// The number of internal errors (contained panics) so far, process-wide.
#[pyfunction]
fn internal_errors() -> u64 {
    diag::panic_count()
}

/// A new random (v4) UUID string.
#[pyfunction]
fn uuid4() -> String {
    ids::uuid4()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", tracer::VERSION)?;
    m.add("CONFIG_KEYS", config::KNOWN_KEYS.to_vec())?;
    m.add("LEGACY_KEYS", config::IGNORED_LEGACY_KEYS.to_vec())?;
    m.add("DEFAULT_FILE", config::DEFAULT_FILE)?;
    m.add("DEFAULT_SERVER_URL", config::DEFAULT_SERVER_URL)?;
    m.add_class::<span::PySpan>()?;
    m.add_class::<tracer::TracerCore>()?;
    m.add_class::<tracer::ScopedTracer>()?;
    m.add_class::<decorator::TraceSpec>()?;
    m.add_class::<decorator::TracedFunction>()?;
    m.add_class::<decorator::CallScope>()?;
    m.add_function(wrap_pyfunction!(decorator::set_redactor, m)?)?;
    m.add_function(wrap_pyfunction!(decorator::enrich, m)?)?;
    m.add_class::<propagation::DistributedContext>()?;
    m.add_class::<server::WsgiMiddleware>()?;
    m.add_class::<tracer::CurrentSpan>()?;
    m.add_class::<server::AsgiTracing>()?;
    m.add_class::<server::AsgiRequest>()?;
    m.add_function(wrap_pyfunction!(propagation::extract, m)?)?;
    m.add_function(wrap_pyfunction!(propagation::inject, m)?)?;
    m.add_function(wrap_pyfunction!(propagation::py_sign_session, m)?)?;
    m.add_function(wrap_pyfunction!(context::_install_bridge, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::routing_tracer, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::default_tracer_id, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::after_fork_child, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::flush_all, m)?)?;
    m.add_function(wrap_pyfunction!(tracer::shutdown_all, m)?)?;
    m.add_function(wrap_pyfunction!(internal_errors, m)?)?;
    m.add_function(wrap_pyfunction!(uuid4, m)?)?;
    Ok(())
}
