//! The engine: everything that does not know Python. Nothing here imports `crate::py`
//! (a test checks it); the boundary (`crate::py`) converts Python values into these
//! types and back.

pub mod config;
pub mod diag;
pub mod export;
pub mod ids;
pub mod intern;
pub mod keys;
pub mod processor;
pub mod propagation;
pub mod registry;
pub mod span;
pub mod stamp;
pub mod tracer;
