//! honeytrace's Rust engine. `#[pymodule]` wiring only; docs/internals.md has the map:
//! `engine` knows nothing of Python, `py` is the boundary layer over it.

mod engine;
mod py;

use pyo3::prelude::*;

// Spans are allocated on the caller's thread and freed on the export thread; glibc's
// malloc serialises those cross-thread frees on an arena lock, which the benchmark
// showed on the caller's hot path. mimalloc frees across threads without that lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Entry points for the Rust micro-benchmarks in `benches/rust` (not a public API).
#[doc(hidden)]
pub mod __bench {
    pub use crate::engine::config::Trust;
    pub use crate::engine::propagation::baggage::{
        encode as encode_baggage, parse as parse_baggage,
    };
    pub use crate::engine::propagation::policy::{
        interpret, sign as sign_context, Headers, Policy,
    };
    pub use crate::engine::propagation::traceparent::{
        parse as parse_traceparent, parse_state as parse_tracestate,
    };
    pub use crate::py::capture::{captured, flatten, to_json_text};
    pub use crate::py::convert::{from_mapping, to_value};
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
