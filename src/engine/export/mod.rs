//! Export: the pipeline (a bounded queue and its supervised background thread) and
//! the exporters it drives.

pub mod console;
pub mod encode;
pub mod fanout;
pub mod file;
pub mod http;
pub mod memory;
pub mod otlp;
pub mod pipeline;
pub mod prepare;
pub mod rest;
pub mod sink;
pub mod spool;
