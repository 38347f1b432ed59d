//! The span processor: span-name filters, then the tracer's export pipeline. (Spans
//! are built as the SDK's `SpanData` directly, so the engine calls this rather than
//! the SDK's `SpanProcessor` trait.)

use crate::engine::config::{Config, NameMatcher};
use crate::engine::export::pipeline::Pipeline;
use crate::engine::export::sink::Stats;
use opentelemetry_sdk::trace::SpanData;
use std::fmt;
use std::sync::Arc;

/// A tracer's span processor: counts a span as ended, applies the name filters, and
/// hands what passes to the tracer's pipeline.
pub struct HoneyHiveProcessor {
    pipeline: Arc<Pipeline>,
    stats: Arc<Stats>,
    include: Vec<NameMatcher>,
    exclude: Vec<NameMatcher>,
}

impl fmt::Debug for HoneyHiveProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HoneyHiveProcessor")
    }
}

impl HoneyHiveProcessor {
    pub fn new(pipeline: Arc<Pipeline>, stats: Arc<Stats>, cfg: &Config) -> Self {
        HoneyHiveProcessor {
            pipeline,
            stats,
            include: cfg.include_names.clone(),
            exclude: cfg.exclude_names.clone(),
        }
    }

    fn filtered(&self, name: &str) -> bool {
        (!self.include.is_empty() && !self.include.iter().any(|m| m.matches(name)))
            || self.exclude.iter().any(|m| m.matches(name))
    }
}

impl HoneyHiveProcessor {
    /// A span ended: filters, then the export pipeline (O(1), never blocks).
    pub fn on_end(&self, span: SpanData) {
        Stats::add(&self.stats.ended, 1);
        if (!self.include.is_empty() || !self.exclude.is_empty()) && self.filtered(&span.name) {
            Stats::add(&self.stats.filtered, 1);
            return;
        }
        self.pipeline.push(span);
    }
}
