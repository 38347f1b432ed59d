//! Diagnostics: process-wide counters, log records, the panic shield, and the locks a
//! forked child renews.
//!
//! The engine never calls into Python to log. A record is queued here and emitted by
//! Python code (`honeytrace._log`, which drains the queue from a Python thread and on
//! every lifecycle call). So no engine thread ever attaches to the interpreter, and no
//! Rust frame waits inside a logging handler (see docs/internals.md, "Threads and the
//! interpreter's exit").

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::PoisonError;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Python logging levels of the records the engine queues.
pub const WARNING: u8 = 30;
pub const ERROR: u8 = 40;

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Counters that belong to the process rather than to one tracer.
pub struct Counters {
    /// Panics caught by a shield (the boundary or a background thread).
    pub internal_errors: AtomicU64,
    /// Attribute values rejected for their type.
    pub attributes_dropped: AtomicU64,
    /// Captured values whose conversion raised (`__repr__`, `model_dump`, ...).
    pub values_unconvertible: AtomicU64,
    /// Values the redaction hook failed on (replaced, never exported unredacted).
    pub redaction_errors: AtomicU64,
    /// Exceptions raised by Python span processors' `on_start`/`on_end` (the span
    /// is exported as usual).
    pub processor_errors: AtomicU64,
    /// Context restores that failed (a token from another context).
    pub context_detach_errors: AtomicU64,
    /// Arguments of the wrong type or out of range, given to an API call and replaced
    /// by its default.
    pub invalid_arguments: AtomicU64,
    /// Log records dropped because nobody drained the queue in time.
    pub log_records_dropped: AtomicU64,
    /// Background threads restarted after an unexpected failure.
    pub thread_restarts: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    internal_errors: AtomicU64::new(0),
    attributes_dropped: AtomicU64::new(0),
    values_unconvertible: AtomicU64::new(0),
    redaction_errors: AtomicU64::new(0),
    processor_errors: AtomicU64::new(0),
    context_detach_errors: AtomicU64::new(0),
    invalid_arguments: AtomicU64::new(0),
    log_records_dropped: AtomicU64::new(0),
    thread_restarts: AtomicU64::new(0),
};

pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

pub fn set_verbose(on: bool) {
    if on {
        VERBOSE.store(true, Ordering::Relaxed);
    }
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// Log records

/// Records waiting for Python; beyond this many the oldest are dropped and counted.
const MAX_PENDING: usize = 512;

static PENDING: ForkSafeMutex<VecDeque<(u8, String)>> = ForkSafeMutex::new();
static HAS_PENDING: AtomicBool = AtomicBool::new(false);
/// Set once Python can no longer take records (the interpreter is exiting): warnings
/// then go straight to stderr.
static DIRECT: AtomicBool = AtomicBool::new(false);

/// Log `msg` at `level` (Python logging levels) through the logger "honeytrace".
/// Never blocks on Python: the record is queued for Python code to emit.
pub fn log(level: u8, msg: &str) {
    if DIRECT.load(Ordering::Relaxed) {
        if level >= WARNING {
            eprintln!("honeytrace: {msg}");
        }
        return;
    }
    let mut q = PENDING.lock();
    if q.len() >= MAX_PENDING {
        q.pop_front();
        count(&COUNTERS.log_records_dropped);
    }
    q.push_back((level, msg.to_string()));
    HAS_PENDING.store(true, Ordering::Release);
}

pub fn has_pending() -> bool {
    HAS_PENDING.load(Ordering::Acquire)
}

/// Every queued record, oldest first.
pub fn take_pending() -> Vec<(u8, String)> {
    if !has_pending() {
        return Vec::new();
    }
    let mut q = PENDING.lock();
    HAS_PENDING.store(false, Ordering::Release);
    q.drain(..).collect()
}

/// From now on, write warnings to stderr instead of queueing them (the interpreter is
/// going away). Queued records are written out too.
pub fn go_direct() {
    DIRECT.store(true, Ordering::Relaxed);
    for (level, msg) in take_pending() {
        if level >= WARNING {
            eprintln!("honeytrace: {msg}");
        }
    }
}

/// How often one kind of repeated warning may be logged.
const RATE_WINDOW: Duration = Duration::from_secs(30);

struct Window {
    last: Instant,
    suppressed: u64,
}

static WINDOWS: ForkSafeMutex<HashMap<(&'static str, u64), Window>> = ForkSafeMutex::new();

/// Log a warning of kind `key` at most once per window; the next one that passes
/// says how many were suppressed in between.
pub fn warn_limited(key: &'static str, msg: &str) {
    warn_limited_for(key, 0, msg);
}

/// `warn_limited` with a window of its own per `source` (an export pipeline): one
/// tracer's failing collector does not silence another's warnings.
pub fn warn_limited_for(key: &'static str, source: u64, msg: &str) {
    let suppressed = {
        let mut map = WINDOWS.lock();
        let now = Instant::now();
        match map.get_mut(&(key, source)) {
            Some(w) if now.saturating_duration_since(w.last) < RATE_WINDOW => {
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
                    (key, source),
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

// ---------------------------------------------------------------------------------
// Panics

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Count and log a contained panic.
pub fn contained(what: &str, payload: &(dyn std::any::Any + Send)) {
    count(&COUNTERS.internal_errors);
    warn_limited(
        "panic",
        &format!(
            "internal error in {what} was contained: {}; tracing continues",
            panic_text(payload)
        ),
    );
}

/// Run `f`; if it panics, count and log the panic and return `fallback()` instead.
/// For engine code that must go on after a panic (a span's end, a HoneyHive API call
/// on the export thread); Python's entry points use `py::boundary::guard`.
pub fn shield<T>(what: &'static str, fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch(f) {
        Ok(v) => v,
        Err(payload) => {
            contained(what, payload.as_ref());
            fallback()
        }
    }
}

/// `catch_unwind`, marked so the panic hook stays quiet for what it catches (the
/// caller counts and logs the panic itself).
pub fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    SHIELDED.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    SHIELDED.with(|d| d.set(d.get() - 1));
    result
}

thread_local! {
    /// How many `catch`es this thread is inside.
    static SHIELDED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Silence the panic hook's stderr dump for the panics `shield` contains (we log our
/// own); every other panic in the process (another extension's) goes to the hook that
/// was there before, as it would without honeytrace.
pub fn install_panic_hook() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if SHIELDED.with(std::cell::Cell::get) == 0 || verbose() {
            previous(info);
        }
    }));
}

// ---------------------------------------------------------------------------------
// Locks that survive fork()

/// A mutex that a forked child replaces with a fresh one (`renew`).
///
/// The export thread takes a few locks outside its pipeline (the log queue, the
/// warning rate limiter, a tracer's last error). If `fork()` happens while it holds
/// one, the child, where that thread does not exist, would block forever on it. So the
/// mutex lives behind a pointer to a leaked box, and the child swaps in a new one,
/// leaking the old, as the export pipeline does with its queue
/// (`export::pipeline::WorkerSlot`).
pub struct ForkSafeMutex<T> {
    current: AtomicPtr<Mutex<T>>,
    /// Send and Sync as `Mutex<T>` is (an `AtomicPtr` alone would always be both).
    _owns: PhantomData<Mutex<T>>,
}

impl<T: Default> ForkSafeMutex<T> {
    /// Holds `T::default()`, made on first use.
    pub const fn new() -> Self {
        ForkSafeMutex {
            current: AtomicPtr::new(std::ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    fn mutex(&self) -> &Mutex<T> {
        let mut p = self.current.load(Ordering::Acquire);
        if p.is_null() {
            let fresh = Box::into_raw(Box::new(Mutex::new(T::default())));
            p = match self.current.compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => fresh,
                Err(installed) => {
                    // SAFETY: `fresh` came from Box::into_raw above and was not shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    installed
                }
            };
        }
        // SAFETY: a non-null pointer here came from Box::into_raw; a replaced one is
        // leaked, and the current one is freed only by `drop`, which takes `&mut self`
        // (no borrow of `self`, hence no guard, is alive then).
        unsafe { &*p }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.mutex().lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// In a forked child: start over with a new, unlocked mutex holding `T::default()`.
    /// The old one is leaked (a thread that no longer exists may hold it).
    pub fn renew(&self) {
        let fresh = Box::into_raw(Box::new(Mutex::new(T::default())));
        self.current.swap(fresh, Ordering::AcqRel);
    }
}

impl<T: Default> Default for ForkSafeMutex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for ForkSafeMutex<T> {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        if !p.is_null() {
            // SAFETY: see `mutex`; `&mut self` means no guard is alive.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl<T> std::fmt::Debug for ForkSafeMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForkSafeMutex")
    }
}

/// In a forked child, before anything logs: fresh log and rate-limiter locks (the
/// parent's records stay with the parent).
pub fn after_fork_child() {
    PENDING.renew();
    WINDOWS.renew();
    HAS_PENDING.store(false, Ordering::Release);
}

// ---------------------------------------------------------------------------------
// Fault injection (tests of the supervision only; `_core._panic_for_test`)

/// Where an injected panic happens.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// A batch export on the export thread.
    Export = 0,
    /// A HoneyHive API call on the export thread.
    ApiCall = 1,
    /// The exporter's shutdown, after the pipeline has finished.
    ExporterShutdown = 2,
}

static FAULTS: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];

/// Make the next `n` passes through `fault` panic.
pub fn inject_panics(fault: Fault, n: u32) {
    FAULTS[fault as usize].store(n, Ordering::SeqCst);
}

/// Panic here if a panic was injected at `fault`.
pub fn injected_panic(fault: Fault) {
    let left = &FAULTS[fault as usize];
    if left.load(Ordering::Relaxed) > 0
        && left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        panic!("a panic injected by _panic_for_test ({fault:?})");
    }
}

/// A duration of `secs` seconds, for values that come from users: NaN and negative
/// values give zero, infinity and overflow give `max`.
pub fn seconds(secs: f64, max: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
}

/// `now + d`, saturating at a far-off instant instead of overflowing.
pub fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// A deadline that is never reached in practice (about 30 years).
pub const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_checked() {
        let max = Duration::from_secs(100);
        assert_eq!(seconds(f64::NAN, max), Duration::ZERO);
        assert_eq!(seconds(-1.0, max), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY, max), max);
        assert_eq!(seconds(1e300, max), max);
        assert_eq!(seconds(1.5, max), Duration::from_millis(1500));
    }

    #[test]
    fn deadlines_saturate() {
        let d = deadline_after(Duration::MAX);
        assert!(d > Instant::now());
    }

    #[test]
    fn a_renewed_lock_is_free_and_fresh() {
        let m: ForkSafeMutex<Vec<u8>> = ForkSafeMutex::new();
        m.lock().push(1);
        // As a thread that does not exist in a forked child would leave it: held.
        std::mem::forget(m.lock());
        assert!(m.mutex().try_lock().is_err());
        m.renew();
        assert!(m.lock().is_empty());
        m.lock().push(2);
        assert_eq!(*m.lock(), vec![2]);
    }

    #[test]
    fn shield_degrades() {
        let v = shield("test", || 7, || -> i32 { panic!("boom") });
        assert_eq!(v, 7);
        assert!(get(&COUNTERS.internal_errors) >= 1);
    }
}
