//! Diagnostics: the engine's voice in Python's `logging` (logger "honeytrace"),
//! rate limiting, and the panic shield that keeps Rust panics out of user code.
//!
//! Rules: never log while holding one of our locks (logging takes the GIL, and a
//! Python thread holding the GIL may be waiting for that lock); from a background
//! thread use `try_attach`, which declines during interpreter shutdown.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEBUG: u8 = 10;
pub const INFO: u8 = 20;
pub const WARNING: u8 = 30;
pub const ERROR: u8 = 40;

static VERBOSE: AtomicBool = AtomicBool::new(false);
static PANICS: AtomicU64 = AtomicU64::new(0);
static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// How often one kind of repeated warning may be logged.
const RATE_WINDOW: Duration = Duration::from_secs(30);

struct Window {
    last: Instant,
    suppressed: u64,
}

static WINDOWS: Mutex<Option<HashMap<&'static str, Window>>> = Mutex::new(None);

pub fn set_verbose(on: bool) {
    if on {
        VERBOSE.store(true, Ordering::Relaxed);
    }
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

pub fn panic_count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

fn emit_attached(py: Python<'_>, level: u8, msg: &str) {
    let logger = LOGGER.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py
            .import("logging")?
            .call_method1("getLogger", ("honeytrace",))?
            .unbind())
    });
    let ok = match logger {
        Ok(logger) => logger.bind(py).call_method1("log", (level, msg)).is_ok(),
        Err(_) => false,
    };
    if !ok && level >= WARNING {
        eprintln!("honeytrace: {msg}");
    }
}

/// Log through Python's logging from any thread. Silently falls back to stderr for
/// warnings when the interpreter is shutting down.
pub fn log(level: u8, msg: &str) {
    if level < INFO && !verbose() {
        return;
    }
    if Python::try_attach(|py| emit_attached(py, level, msg)).is_none() && level >= WARNING {
        eprintln!("honeytrace: {msg}");
    }
}

/// Log when the caller already holds the GIL.
pub fn log_py(py: Python<'_>, level: u8, msg: &str) {
    if level < INFO && !verbose() {
        return;
    }
    emit_attached(py, level, msg);
}

/// Log a warning of kind `key` at most once per window; the next one that passes
/// says how many were suppressed in between.
pub fn warn_limited(key: &'static str, msg: &str) {
    let suppressed = {
        let mut guard = WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        match map.get_mut(key) {
            Some(w) if now.duration_since(w.last) < RATE_WINDOW => {
                w.suppressed += 1;
                return;
            }
            Some(w) => {
                let s = w.suppressed;
                w.last = now;
                w.suppressed = 0;
                s
            }
            None => {
                map.insert(
                    key,
                    Window {
                        last: now,
                        suppressed: 0,
                    },
                );
                0
            }
        }
    };
    if suppressed > 0 {
        log(
            WARNING,
            &format!("{msg} ({suppressed} similar messages suppressed)"),
        );
    } else {
        log(WARNING, msg);
    }
}

/// Run `f`; if it panics, count and log the panic and return `fallback` instead.
/// Every entry point reachable from Python goes through this (rule 5).
pub fn shield<T>(what: &'static str, fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            warn_limited(
                "panic",
                &format!("internal error in {what} was contained: {detail}; tracing continues"),
            );
            fallback()
        }
    }
}

/// Silence the default panic hook's stderr dump for contained panics; we log our own.
pub fn install_panic_hook() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if verbose() {
            previous(info);
        }
    }));
}
