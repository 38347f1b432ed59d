//! The boundary between Python and the engine.
//!
//! - `guard`: every Python-visible function and method runs under it (the
//!   `#[honeytrace_macros::methods]` and `#[honeytrace_macros::function]` attributes put it there). A
//!   panic is counted, logged and turned into the function's degraded result: no
//!   `PanicException` reaches Python.
//! - `Section`: the engine calls Python code (a `__repr__`, the redaction hook, the
//!   OpenTelemetry classes) only inside a section. Once the interpreter starts to exit
//!   (our exit hook, or CPython's finalizing flag) no section opens, and the exit hook
//!   waits for open ones to close, so no Rust frame is ever below Python code when
//!   CPython tears a daemon thread down (see docs/internals.md).
//! - Log records: the engine queues them (`engine::diag`); Python takes them here and
//!   emits them (`honeytrace._log`), so the engine never calls `logging` itself.

use crate::engine::diag::{self, COUNTERS};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a Python-visible function returns when its body panicked: the behaviour of
/// untraced code (no span, nothing written, `False` for "did not happen").
pub trait Degrade {
    fn degraded() -> Self;
}

impl Degrade for () {
    fn degraded() -> Self {}
}

impl Degrade for bool {
    fn degraded() -> Self {
        false
    }
}

impl Degrade for u64 {
    fn degraded() -> Self {
        0
    }
}

impl Degrade for f64 {
    fn degraded() -> Self {
        0.0
    }
}

impl Degrade for String {
    fn degraded() -> Self {
        String::new()
    }
}

impl<T> Degrade for Option<T> {
    fn degraded() -> Self {
        None
    }
}

impl<T> Degrade for Vec<T> {
    fn degraded() -> Self {
        Vec::new()
    }
}

impl Degrade for Py<PyAny> {
    #[allow(clippy::redundant_closure_for_method_calls)] // `Python::None` is not general enough
    fn degraded() -> Self {
        Python::attach(|py| py.None())
    }
}

impl Degrade for Py<PyDict> {
    fn degraded() -> Self {
        Python::attach(|py| PyDict::new(py).unbind())
    }
}

impl Degrade for Py<PyList> {
    fn degraded() -> Self {
        Python::attach(|py| PyList::empty(py).unbind())
    }
}

impl<T> Degrade for Py<T>
where
    T: pyo3::PyClass + Degrade + Into<pyo3::PyClassInitializer<T>>,
{
    fn degraded() -> Self {
        // A small object: failing to allocate it after a contained panic leaves
        // nothing sensible to return.
        Python::attach(|py| Py::new(py, T::degraded())).unwrap_or_else(|_| std::process::abort())
    }
}

impl<T: Degrade> Degrade for PyResult<T> {
    fn degraded() -> Self {
        Ok(T::degraded())
    }
}

/// Run the body of a Python-visible function under the panic shield (the engine's).
pub use crate::engine::diag::shield as guard;

/// Count an argument that was of the wrong type or out of range (and was replaced).
pub fn invalid_argument(what: &str) {
    diag::count(&COUNTERS.invalid_arguments);
    diag::warn_limited(
        "invalid-argument",
        &format!("{what}: an argument of the wrong type or out of range was ignored"),
    );
}

// ---------------------------------------------------------------------------------
// The interpreter's exit

static EXITING: AtomicBool = AtomicBool::new(false);
static OPEN_SECTIONS: AtomicUsize = AtomicUsize::new(0);

type IsFinalizingFn = unsafe extern "C" fn() -> std::os::raw::c_int;

/// CPython's "is finalizing" (`Py_IsFinalizing` from 3.13, `_Py_IsFinalizing` before;
/// not in the 3.9 stable ABI, so looked up once at run time).
fn is_finalizing_fn() -> Option<IsFinalizingFn> {
    static F: OnceLock<Option<IsFinalizingFn>> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(unix)]
        // SAFETY: dlsym only reads the process's symbol tables; both symbols have the
        // signature `int (void)`.
        unsafe {
            for name in [c"Py_IsFinalizing", c"_Py_IsFinalizing"] {
                let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
                if !p.is_null() {
                    return Some(std::mem::transmute::<*mut libc::c_void, IsFinalizingFn>(p));
                }
            }
        }
        None
    })
}

/// True once the interpreter is on its way out: our exit hook ran, or CPython is
/// finalizing. From then on the engine runs no Python code.
pub fn exiting() -> bool {
    if EXITING.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: both functions only read a runtime flag.
    is_finalizing_fn().is_some_and(|f| unsafe { f() } != 0)
}

/// A stretch of engine code that calls Python code. `Section::open()` is None once
/// the interpreter is exiting: the caller then does without (a placeholder value, no
/// hook, no log).
pub struct Section(());

impl Section {
    pub fn open() -> Option<Section> {
        OPEN_SECTIONS.fetch_add(1, Ordering::AcqRel);
        if exiting() {
            OPEN_SECTIONS.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Section(()))
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        OPEN_SECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The exit hook's last step (Python's `atexit`, which runs before CPython starts
/// finalizing): no section opens from now on; wait (the GIL released) up to `timeout`
/// seconds for the open ones to close; from now on warnings go straight to stderr.
#[honeytrace_macros::function]
pub fn _mark_exiting(py: Python<'_>, timeout: f64) -> bool {
    EXITING.store(true, Ordering::Release);
    let until = diag::deadline_after(diag::seconds(timeout, Duration::from_secs(5)));
    let closed = py.detach(|| loop {
        if OPEN_SECTIONS.load(Ordering::Acquire) == 0 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    });
    diag::go_direct();
    closed
}

/// Log records queued by the engine: `[(level, message)]`, oldest first.
#[honeytrace_macros::function]
pub fn _take_logs() -> Vec<(u8, String)> {
    diag::take_pending()
}

/// True when log records are waiting (a cheap check for the Python log pump).
#[honeytrace_macros::function]
pub fn _logs_pending() -> bool {
    diag::has_pending()
}

/// Count (and log, rate-limited) an invalid argument found by the Python layer.
#[honeytrace_macros::function]
pub fn _invalid_argument(what: &str) {
    invalid_argument(what);
}

/// The number of internal errors (contained panics) so far, process-wide.
#[honeytrace_macros::function]
pub fn internal_errors() -> u64 {
    diag::get(&COUNTERS.internal_errors)
}

/// Make the engine panic, for tests of the panic shield and the supervision only:
/// `"boundary"` panics in this call (which returns False, degraded); `"export"`,
/// `"rest"` and `"exporter-shutdown"` make the next `count` batch exports, HoneyHive
/// API calls or exporter shutdowns panic on the export thread.
#[honeytrace_macros::function]
#[pyo3(signature = (what, count=1))]
pub fn _panic_for_test(what: &str, count: u32) -> bool {
    let fault = match what {
        "boundary" => panic!("a panic raised on purpose by _panic_for_test"),
        "export" => diag::Fault::Export,
        "rest" => diag::Fault::ApiCall,
        "exporter-shutdown" => diag::Fault::ExporterShutdown,
        _ => return false,
    };
    diag::inject_panics(fault, count);
    true
}
