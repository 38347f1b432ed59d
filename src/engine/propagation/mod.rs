//! W3C propagation: traceparent/tracestate, baggage, and the policy for incoming
//! context.

pub mod baggage;
pub mod policy;
pub mod traceparent;
