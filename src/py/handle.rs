//! One tracer as the boundary holds it (the engine `Core` and the Python strings its
//! baggage defaults need), and the registry of live tracers.

use crate::engine::registry::{Entry, Registry};
use crate::engine::stamp::{shared, Incoming};
use crate::engine::tracer::Core;
use crate::py::pystr;
use opentelemetry::Key;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

/// The tracer's defaults as Python strings, for the baggage the decorator adds.
pub struct BaggageDefaults {
    pub session_id: Py<PyString>,
    pub project: Option<Py<PyString>>,
    pub source: Py<PyString>,
    /// `{session_id, project, source}` shared by every call that starts without
    /// baggage: OpenTelemetry treats baggage dicts as immutable (it copies to change).
    pub dict: Py<PyDict>,
}

/// An ordered list of processors and whether it is empty.
#[derive(Default)]
pub struct Processors {
    list: Mutex<Vec<Py<PyAny>>>,
    active: AtomicBool,
}

impl Processors {
    pub const fn new() -> Self {
        Processors {
            list: Mutex::new(Vec::new()),
            active: AtomicBool::new(false),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn add(&self, p: Py<PyAny>) {
        let mut l = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        l.push(p);
        self.active.store(true, Ordering::Relaxed);
    }

    /// The processors, in the order they were added (cloned: calls run unlocked).
    pub fn snapshot(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|p| p.clone_ref(py))
            .collect()
    }

    /// Remove them all (the provider's shutdown), returning them.
    pub fn take(&self) -> Vec<Py<PyAny>> {
        self.active.store(false, Ordering::Relaxed);
        std::mem::take(&mut *self.list.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The global provider's Python span processors: they see the spans of every tracer
/// (`TracerProvider.add_span_processor`; calls in `processors`).
pub static GLOBAL_PROCESSORS: Processors = Processors::new();

/// One tracer as the boundary holds it.
pub struct Handle {
    pub core: Arc<Core>,
    pub bag: BaggageDefaults,
    /// The last baggage dict read and what it held. Every span of a request sees the
    /// same dict object; holding a reference keeps its address from being reused.
    bag_cache: Mutex<Option<(Py<PyDict>, Arc<Incoming>)>>,
    /// Python span processors added to this tracer's provider.
    pub processors: Processors,
}

impl Entry for Handle {
    fn id(&self) -> u64 {
        self.core.id
    }
    fn is_live(&self) -> bool {
        self.core.is_live()
    }
}

fn baggage_text(v: Option<Bound<'_, PyAny>>) -> Option<String> {
    pystr::str_of(&v?).filter(|s| !s.is_empty())
}

impl Handle {
    pub fn new(py: Python<'_>, core: Arc<Core>) -> PyResult<Handle> {
        let cfg = &core.cfg;
        let session_id = PyString::new(py, &cfg.session_id);
        let project = cfg.project.as_deref().map(|p| PyString::new(py, p));
        let source = PyString::new(py, &cfg.source);
        let dict = PyDict::new(py);
        dict.set_item("session_id", &session_id)?;
        if let Some(p) = &project {
            dict.set_item("project", p)?;
        }
        dict.set_item("source", &source)?;
        Ok(Handle {
            bag: BaggageDefaults {
                session_id: session_id.unbind(),
                project: project.map(Bound::unbind),
                source: source.unbind(),
                dict: dict.unbind(),
            },
            core,
            bag_cache: Mutex::new(None),
            processors: Processors::new(),
        })
    }

    /// True when this tracer's spans have Python processors to tell (two relaxed
    /// loads: the cost of processors for a tracer without any).
    pub fn has_processors(&self) -> bool {
        GLOBAL_PROCESSORS.is_active() || self.processors.is_active()
    }

    /// The session values in a span's baggage, as shared attribute values.
    pub fn read_baggage(&self, bag: Option<&Bound<'_, PyDict>>) -> Arc<Incoming> {
        static EMPTY: std::sync::OnceLock<Arc<Incoming>> = std::sync::OnceLock::new();
        let Some(bag) = bag.filter(|b| !b.is_empty()) else {
            return EMPTY.get_or_init(|| Arc::new(Incoming::default())).clone();
        };
        {
            let cache = self
                .bag_cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((dict, inc)) = cache.as_ref() {
                if dict.as_ptr() == bag.as_ptr() {
                    return inc.clone();
                }
            }
        }
        let py = bag.py();
        // Only str values count: baggage holds strings, and reading anything else
        // would run user code.
        let get = |k: &Bound<'_, PyString>| {
            baggage_text(bag.get_item(k).ok().flatten()).map(|t| shared(&t))
        };
        let inc = Arc::new(Incoming {
            session_id: get(intern!(py, "session_id")),
            project: get(intern!(py, "project")),
            source: get(intern!(py, "source")),
            parent_id: get(intern!(py, "parent_id")),
            run_id: get(intern!(py, "run_id")),
            dataset_id: get(intern!(py, "dataset_id")),
            datapoint_id: get(intern!(py, "datapoint_id")),
            extra: self
                .core
                .stamper
                .allowlist
                .iter()
                .filter_map(|k| {
                    let v = baggage_text(bag.get_item(k.as_str()).ok().flatten())?;
                    Some((Key::new(format!("baggage.{k}")), shared(&v)))
                })
                .collect(),
        });
        let old = self
            .bag_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace((bag.clone().unbind(), inc.clone()));
        // Dropped after the lock: freeing the previous dict can run a `__del__`.
        drop(old);
        inc
    }
}

// ---------------------------------------------------------------------------------
// Registry

pub static REGISTRY: Registry<Handle> = Registry::new();

thread_local! {
    /// The default tracer, cached per thread and per registry generation.
    static DEFAULT_CACHE: std::cell::RefCell<(u64, Option<Arc<Handle>>)> =
        const { std::cell::RefCell::new((0, None)) };
}

/// The default tracer: the one `set_default_tracer` chose (or the first), while it is
/// live; otherwise the oldest live one.
pub fn default_handle() -> Option<Arc<Handle>> {
    // Hot path (every root span): a thread-local cache, refreshed when the registry
    // changed or the cached tracer was shut down.
    let generation = REGISTRY.generation();
    let cached = DEFAULT_CACHE.with(|c| {
        let c = c.borrow();
        (c.0 == generation)
            .then(|| c.1.clone())
            .flatten()
            .filter(|h| h.is_live())
    });
    if cached.is_some() {
        return cached;
    }
    let found = REGISTRY.default_entry();
    DEFAULT_CACHE.with(|c| *c.borrow_mut() = (generation, found.clone()));
    found
}
