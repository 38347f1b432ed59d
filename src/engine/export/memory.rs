//! In-memory store for test mode: spans are kept as they end, read back as plain dicts.

use opentelemetry_sdk::trace::SpanData;
use std::sync::Mutex;
use std::sync::PoisonError;

pub struct MemoryStore {
    spans: Mutex<Vec<SpanData>>,
    cap: usize,
}

impl MemoryStore {
    pub fn new(cap: usize) -> Self {
        MemoryStore {
            spans: Mutex::new(Vec::new()),
            cap,
        }
    }

    /// False when the store is full (the span is dropped and counted by the caller).
    pub fn push(&self, span: SpanData) -> bool {
        let mut v = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if v.len() >= self.cap {
            return false;
        }
        v.push(span);
        true
    }

    pub fn snapshot(&self) -> Vec<SpanData> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn clear(&self) {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
