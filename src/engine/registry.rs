//! The live tracers of the process and the default one. Generic over what the
//! boundary registers (the engine `Core` wrapped with its Python-side handle).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::PoisonError;
use std::sync::{Arc, Mutex, MutexGuard};

pub trait Entry: Send + Sync {
    fn id(&self) -> u64;
    fn is_live(&self) -> bool;
}

struct Inner<T> {
    entries: Vec<Arc<T>>,
    default: Option<u64>,
}

pub struct Registry<T> {
    inner: Mutex<Inner<T>>,
    /// Bumped whenever the registry changes, so callers can cache the default.
    generation: AtomicU64,
}

impl<T: Entry> Registry<T> {
    pub const fn new() -> Self {
        Registry {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                default: None,
            }),
            generation: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Add a tracer; the first one becomes the default.
    pub fn register(&self, entry: &Arc<T>) {
        let mut r = self.lock();
        r.entries.push(entry.clone());
        if r.default.is_none() {
            r.default = Some(entry.id());
        }
        drop(r);
        self.changed();
    }

    pub fn remove(&self, id: u64) {
        self.lock().entries.retain(|e| e.id() != id);
        self.changed();
    }

    pub fn clear(&self) {
        self.lock().entries.clear();
        self.changed();
    }

    pub fn set_default(&self, id: u64) {
        self.lock().default = Some(id);
        self.changed();
    }

    pub fn all(&self) -> Vec<Arc<T>> {
        self.lock().entries.clone()
    }

    /// The default tracer while it is live; otherwise the oldest live one.
    pub fn default_entry(&self) -> Option<Arc<T>> {
        let r = self.lock();
        if let Some(id) = r.default {
            if let Some(e) = r.entries.iter().find(|e| e.id() == id && e.is_live()) {
                return Some(e.clone());
            }
        }
        r.entries.iter().find(|e| e.is_live()).cloned()
    }
}

impl<T: Entry> Default for Registry<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct E(u64, AtomicBool);

    impl Entry for E {
        fn id(&self) -> u64 {
            self.0
        }
        fn is_live(&self) -> bool {
            self.1.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn default_falls_back_to_the_oldest_live() {
        let r: Registry<E> = Registry::new();
        let a = Arc::new(E(1, AtomicBool::new(true)));
        let b = Arc::new(E(2, AtomicBool::new(true)));
        r.register(&a);
        r.register(&b);
        assert_eq!(r.default_entry().map(|e| e.0), Some(1));
        r.set_default(2);
        assert_eq!(r.default_entry().map(|e| e.0), Some(2));
        b.1.store(false, Ordering::Relaxed);
        assert_eq!(r.default_entry().map(|e| e.0), Some(1));
        let g = r.generation();
        r.remove(1);
        assert!(r.generation() > g);
        assert!(r.default_entry().is_none());
    }
}
