//! What every exporter shares: the tracer's counters, the exporter trait and the
//! control an exporter gets from the pipeline while it works.

use crate::engine::diag::ForkSafeMutex;
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters a user can read with `tracer.stats()`.
///
/// The counters the callers' threads write for every span come first, on a cache line
/// of their own: the export thread writes the others, and two cores writing the same
/// line would pass it back and forth on every span.
#[derive(Default, Debug)]
#[repr(C, align(64))]
pub struct Stats {
    pub started: AtomicU64,
    pub ended: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_queue_bytes: AtomicU64,
    pub dropped_after_shutdown: AtomicU64,
    pub filtered: AtomicU64,
    /// Spans not recorded because their parent was not sampled (counted in `started`
    /// and `ended` as they begin: they record nothing and export nothing).
    pub sampled_out: AtomicU64,
    _callers_line: [u64; 1],
    pub exported: AtomicU64,
    pub dropped_at_shutdown: AtomicU64,
    pub failed: AtomicU64,
    pub failed_exports: AtomicU64,
    pub retries: AtomicU64,
    pub api_calls: AtomicU64,
    pub api_calls_failed: AtomicU64,
    /// Spans of batches written to the disk spool (collector unreachable in time).
    pub spooled: AtomicU64,
    /// Spans sent from the spool (batches this process or an earlier one spooled).
    pub spool_exported: AtomicU64,
    /// Spans the spool deleted: past its bounds or age, or refused by the collector.
    pub spool_dropped: AtomicU64,
    /// Spans an additional exporter (`exporter="otlp,console"`) could not take; the
    /// main exporter's outcome is what the accounting counts.
    pub copies_failed: AtomicU64,
    /// Taken by the export thread: fork-safe (`reset` renews it in a forked child).
    last_error: ForkSafeMutex<Option<String>>,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set_error(&self, e: &str) {
        *self.last_error.lock() = Some(e.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Start from zero (in a forked child: the parent's export thread may have held
    /// the last error's lock when it forked, so that lock is replaced, not taken).
    pub fn reset(&self) {
        for c in [
            &self.started,
            &self.ended,
            &self.exported,
            &self.dropped_queue_full,
            &self.dropped_queue_bytes,
            &self.dropped_after_shutdown,
            &self.dropped_at_shutdown,
            &self.failed,
            &self.failed_exports,
            &self.retries,
            &self.filtered,
            &self.sampled_out,
            &self.api_calls,
            &self.api_calls_failed,
            &self.spooled,
            &self.spool_exported,
            &self.spool_dropped,
            &self.copies_failed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.last_error.renew();
    }
}

/// What became of a batch a collector answered: all of it delivered, or some spans
/// rejected (OTLP partial success; the rest were accepted).
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    All,
    Partly {
        rejected: u64,
        message: String,
    },
    /// Not delivered in time, kept in the disk spool for later (`why`: the failure).
    Spooled {
        why: String,
    },
}

pub type ExportResult = Result<Delivered, String>;

/// What an exporter may ask of the pipeline while it works.
pub trait ExportControl {
    /// The export deadline, brought forward by a shutdown deadline if one is running.
    fn deadline(&self) -> Instant;
    /// Sleep for a retry backoff; false (at once) when the deadline would pass first.
    fn backoff(&self, wait: Duration) -> bool;
    /// The longest one attempt may take, whatever is left of the deadline.
    fn attempt_timeout(&self) -> Duration {
        Duration::MAX
    }
    fn stats(&self) -> &Stats;
}

/// A destination for batches of finished spans. Runs on the pipeline's thread only.
pub trait Exporter: Send {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult;
    /// Emit anything held back (the console exporter buffers unfinished trees).
    fn flush(&mut self) {}
    fn shutdown(&mut self) {}
    /// Keep `batch` in the disk spool without trying to send it (the shutdown deadline
    /// has passed); false (the batch dropped) when there is no spool or it failed.
    fn spool(&mut self, _batch: Vec<SpanData>, _stats: &Stats) -> bool {
        false
    }
    /// Send what waits in the disk spool, within `deadline`; returns when to call again
    /// (None: nothing waits).
    fn drain_spool(&mut self, _ctl: &dyn ExportControl) -> Option<Instant> {
        None
    }
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(a)) => a.iter().map(|s| s.as_str().len() + 16).sum(),
        Value::Array(Array::I64(a)) => a.len() * 8,
        Value::Array(Array::F64(a)) => a.len() * 8,
        Value::Array(Array::Bool(a)) => a.len(),
        _ => 8,
    }
}

fn attrs_bytes(attrs: &[KeyValue]) -> usize {
    attrs
        .iter()
        .map(|kv| kv.key.as_str().len() + value_bytes(&kv.value) + 48)
        .sum()
}

/// The bytes of captured inputs and output, which the export copies into OpenInference's
/// `input.value`/`output.value` (`prepare`).
fn copied_bytes(attrs: &[KeyValue]) -> usize {
    attrs
        .iter()
        .filter(|kv| {
            let k = kv.key.as_str();
            k.starts_with("honeyhive_inputs.") || k == "honeyhive_outputs.result"
        })
        .map(|kv| kv.key.as_str().len() + value_bytes(&kv.value))
        .sum()
}

/// About what a finished span holds in memory: its fixed part, its name and the text
/// of its attributes, events and links (and the copies the export adds, `openinference`).
/// The queue's byte bound and the batches' byte bound count this.
pub fn span_bytes(s: &SpanData, openinference: bool) -> usize {
    (if openinference {
        copied_bytes(&s.attributes)
    } else {
        0
    }) + std::mem::size_of::<SpanData>()
        + s.name.len()
        + attrs_bytes(&s.attributes)
        + s.events
            .iter()
            .map(|e| e.name.len() + 64 + attrs_bytes(&e.attributes))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| 64 + attrs_bytes(&l.attributes))
            .sum::<usize>()
}
