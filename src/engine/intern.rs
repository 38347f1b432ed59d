//! Process-wide interned text for strings that live as long as the code that made them:
//! decorated functions' names, parameter keys and static attributes, each tracer's
//! project and source, instrumentation scopes. Text that changes at run time (session
//! ids, incoming baggage, `enrich_span_context` values) is not interned: it would fill
//! the table for good.
//!
//! Why not `Arc<str>`: these values are cloned into every span on the caller's thread
//! and dropped with the span on the export thread. With a reference count, every clone
//! and every drop writes the same cache line from two cores, and the line bounces
//! between them on every span (measured: ~60 ns of a decorated call with export on).
//! A `&'static str` is copied, never counted.
//!
//! Bounded: at most `MAX_ENTRIES` strings and `MAX_BYTES` bytes are ever leaked; past
//! that (a program that makes tracers or decorators in a loop) callers fall back to
//! `Arc<str>`, which is correct, only slower.

use opentelemetry::{Key, StringValue, Value};
use std::collections::HashSet;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

const MAX_ENTRIES: usize = 10_000;
const MAX_BYTES: usize = 1 << 20;
/// Longer strings are not worth keeping forever.
const MAX_LEN: usize = 1024;

struct Table {
    set: HashSet<&'static str>,
    bytes: usize,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// The interned copy of `s`, or None once the table is full (or `s` is too long).
pub fn intern(s: &str) -> Option<&'static str> {
    if s.len() > MAX_LEN {
        return None;
    }
    let mut guard = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    let table = guard.get_or_insert_with(|| Table {
        set: HashSet::new(),
        bytes: 0,
    });
    if let Some(found) = table.set.get(s) {
        return Some(found);
    }
    if table.set.len() >= MAX_ENTRIES || table.bytes + s.len() > MAX_BYTES {
        return None;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    table.set.insert(leaked);
    table.bytes += s.len();
    Some(leaked)
}

/// An attribute key that is cheap to clone across threads.
pub fn key(s: &str) -> Key {
    match intern(s) {
        Some(st) => Key::from_static_str(st),
        None => Key::from(Arc::<str>::from(s)),
    }
}

/// A string value that is cheap to clone across threads.
pub fn value(s: &str) -> Value {
    Value::String(match intern(s) {
        Some(st) => StringValue::from(st),
        None => StringValue::from(Arc::<str>::from(s)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_pointer_and_bounded_length() {
        let a = intern("honeyhive_inputs.query").unwrap();
        let b = intern(&String::from("honeyhive_inputs.query")).unwrap();
        assert!(std::ptr::eq(a, b));
        assert!(intern(&"x".repeat(MAX_LEN + 1)).is_none());
        assert_eq!(key(&"k".repeat(MAX_LEN + 1)).as_str().len(), MAX_LEN + 1);
        assert_eq!(value("dev").as_str(), "dev");
    }
}
