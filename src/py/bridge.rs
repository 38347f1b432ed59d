//! The bridge to the Python OpenTelemetry context (the context lives in Python; see
//! docs/internals.md). The engine never keeps a "current" context of its own: it reads
//! the `opentelemetry-api` ContextVar (or a Context it is handed) and returns values
//! for Python to attach with tokens. What it needs from `opentelemetry-api` (the
//! ContextVar, the context keys, the classes) is found and checked by
//! `honeytrace/_compat.py` and handed over once (`_install_bridge`).

use crate::engine::diag::{self, COUNTERS};
use crate::engine::propagation::{policy, traceparent};
use crate::py::boundary::Section;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;
use std::sync::Mutex;
use std::sync::PoisonError;

/// CPython's ContextVar C functions. They are not in the stable ABI our abi3 wheel is
/// built against, but every CPython since 3.7 exports them with these signatures, so
/// we look them up once at import (and fall back to method calls when absent). They
/// save a tuple and a method lookup per attach, detach and read: three per traced call.
type VarGetFn = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::PyObject,
    *mut *mut pyo3::ffi::PyObject,
) -> std::os::raw::c_int;
type VarSetFn = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;
type VarResetFn =
    unsafe extern "C" fn(*mut pyo3::ffi::PyObject, *mut pyo3::ffi::PyObject) -> std::os::raw::c_int;

#[derive(Clone, Copy)]
struct FastVar {
    get: VarGetFn,
    set: VarSetFn,
    reset: VarResetFn,
}

#[cfg(unix)]
fn lookup_fast_var() -> Option<FastVar> {
    // SAFETY: dlsym with RTLD_DEFAULT only reads the process's symbol tables; the
    // transmutes give each symbol the signature CPython documents for it.
    unsafe {
        let sym = |name: &[u8]| libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast());
        let (g, s, r) = (
            sym(b"PyContextVar_Get\0"),
            sym(b"PyContextVar_Set\0"),
            sym(b"PyContextVar_Reset\0"),
        );
        if g.is_null() || s.is_null() || r.is_null() {
            return None;
        }
        Some(FastVar {
            get: std::mem::transmute::<*mut libc::c_void, VarGetFn>(g),
            set: std::mem::transmute::<*mut libc::c_void, VarSetFn>(s),
            reset: std::mem::transmute::<*mut libc::c_void, VarResetFn>(r),
        })
    }
}

#[cfg(not(unix))]
fn lookup_fast_var() -> Option<FastVar> {
    None
}

pub struct Bridge {
    /// `Context.tp_new` (dict's), to make an empty Context without going through the
    /// type call, argument tuple and `__init__` (stable ABI: PyType_GetSlot).
    context_new: Option<pyo3::ffi::newfunc>,
    empty_tuple: Py<PyAny>,
    /// The ContextVar itself, when it is a real `contextvars.ContextVar` and the C
    /// functions were found.
    fast: Option<(FastVar, Py<PyAny>)>,
    pub span_key: Py<PyString>,
    pub baggage_key: Py<PyString>,
    pub context_type: Py<PyAny>,
    /// Bound `get`/`set`/`reset` of the ContextVar (or `get_current`/`attach`/`detach`
    /// of a non-standard runtime), looked up once.
    var_get: Py<PyAny>,
    var_set: Py<PyAny>,
    var_reset: Py<PyAny>,
    pub span_context_type: Py<PyAny>,
    pub trace_flags_type: Py<PyAny>,
    pub trace_state_type: Py<PyAny>,
    pub format_exception: Py<PyAny>,
    pub empty_trace_state: Py<PyAny>,
    pub flags_sampled: Py<PyAny>,
    /// Sampled and random (W3C Level 2): the flags of every trace honeytrace starts.
    pub flags_sampled_random: Py<PyAny>,
    pub flags_default: Py<PyAny>,
    /// `opentelemetry.trace.INVALID_SPAN_CONTEXT`, for when no Python code may run.
    pub invalid_span_context: Py<PyAny>,
    /// `opentelemetry.context.set_value`, used when a Context is not a plain dict.
    set_value: Py<PyAny>,
    /// `honeytrace._wrappers.as_decorator`: `start_as_current_span(...)` on a function.
    pub as_decorator: Py<PyAny>,
    /// The context keys under which OpenTelemetry turns instrumentation off
    /// (`_SUPPRESS_INSTRUMENTATION_KEY` and its older plain-string form).
    suppress_keys: Vec<Py<PyAny>>,
    /// `honeytrace._readable`: the read half of spans as OpenTelemetry objects.
    pub readable: Py<PyAny>,
}

static BRIDGE: PyOnceLock<Bridge> = PyOnceLock::new();

pub fn bridge(py: Python<'_>) -> PyResult<&Bridge> {
    BRIDGE.get(py).ok_or_else(|| {
        PyRuntimeError::new_err("honeytrace._core used before honeytrace was imported")
    })
}

/// Hand the engine what it needs from `opentelemetry-api` (see `_compat.py`).
#[honeytrace_macros::function]
#[pyo3(signature = (var, runtime, span_key, baggage_key, context_type, span_context_type, trace_flags_type, trace_state_type, format_exception, invalid_span_context, set_value, as_decorator, suppress_keys, readable))]
#[allow(clippy::too_many_arguments)]
#[fallback(Err(PyRuntimeError::new_err("honeytrace: could not install the context bridge")))]
pub fn _install_bridge(
    py: Python<'_>,
    var: Option<Py<PyAny>>,
    runtime: Py<PyAny>,
    span_key: Py<PyString>,
    baggage_key: Py<PyString>,
    context_type: Py<PyAny>,
    span_context_type: Py<PyAny>,
    trace_flags_type: Py<PyAny>,
    trace_state_type: Py<PyAny>,
    format_exception: Py<PyAny>,
    invalid_span_context: Py<PyAny>,
    set_value: Py<PyAny>,
    as_decorator: Py<PyAny>,
    suppress_keys: Vec<Py<PyAny>>,
    readable: Py<PyAny>,
) -> PyResult<()> {
    let empty_trace_state = trace_state_type.bind(py).call0()?.unbind();
    let flags_sampled = trace_flags_type.bind(py).call1((1,))?.unbind();
    let flags_sampled_random = trace_flags_type.bind(py).call1((3,))?.unbind();
    let flags_default = trace_flags_type.bind(py).call1((0,))?.unbind();
    let (var_get, var_set, var_reset) = if let Some(v) = &var {
        let v = v.bind(py);
        (v.getattr("get")?, v.getattr("set")?, v.getattr("reset")?)
    } else {
        let r = runtime.bind(py);
        (
            r.getattr("get_current")?,
            r.getattr("attach")?,
            r.getattr("detach")?,
        )
    };
    let (var_get, var_set, var_reset) = (var_get.unbind(), var_set.unbind(), var_reset.unbind());
    let is_context_var = match &var {
        Some(v) => {
            let cv = py.import("contextvars")?.getattr("ContextVar")?;
            v.bind(py).get_type().is(&cv)
        }
        None => false,
    };
    let fast = match (&var, is_context_var) {
        (Some(v), true) => lookup_fast_var().map(|f| (f, v.clone_ref(py))),
        _ => None,
    };
    // SAFETY: `context_type` is a heap type (a Python class); the slot is read-only.
    let context_new = unsafe {
        let t = context_type
            .bind(py)
            .cast::<pyo3::types::PyType>()?
            .as_type_ptr();
        let slot = pyo3::ffi::PyType_GetSlot(t, pyo3::ffi::Py_tp_new);
        if slot.is_null() {
            None
        } else {
            Some(std::mem::transmute::<
                *mut std::os::raw::c_void,
                pyo3::ffi::newfunc,
            >(slot))
        }
    };
    let empty_tuple = pyo3::types::PyTuple::empty(py).into_any().unbind();
    let _ = BRIDGE.set(
        py,
        Bridge {
            context_new,
            empty_tuple,
            fast,
            span_key,
            baggage_key,
            context_type,
            var_get,
            var_set,
            var_reset,
            span_context_type,
            trace_flags_type,
            trace_state_type,
            format_exception,
            empty_trace_state,
            flags_sampled,
            flags_sampled_random,
            flags_default,
            invalid_span_context,
            set_value,
            as_decorator,
            suppress_keys,
            readable,
        },
    );
    Ok(())
}

/// A section for the public-API fallbacks below (Python code of `opentelemetry-api`);
/// an error once the interpreter is exiting, which callers treat as "untraced".
fn fallback_section() -> PyResult<Section> {
    Section::open().ok_or_else(|| PyRuntimeError::new_err("the interpreter is exiting"))
}

impl Bridge {
    /// The current Python Context (a dict subclass).
    pub fn current<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some((f, var)) = &self.fast {
            let mut out: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
            // SAFETY: attached to the interpreter; `out` receives a new reference.
            let rc = unsafe { (f.get)(var.as_ptr(), std::ptr::null_mut(), &raw mut out) };
            if rc == 0 && !out.is_null() {
                // SAFETY: a new reference returned by PyContextVar_Get.
                return Ok(unsafe { Bound::from_owned_ptr(py, out) });
            }
            if let Some(e) = PyErr::take(py) {
                return Err(e);
            }
        }
        let _section = fallback_section()?;
        self.var_get.bind(py).call0()
    }

    /// Make `ctx` current; the token must be given back to `detach` in the same context.
    pub fn attach<'py>(&self, ctx: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = ctx.py();
        if let Some((f, var)) = &self.fast {
            // SAFETY: attached; PyContextVar_Set returns a new reference or NULL.
            let token = unsafe { (f.set)(var.as_ptr(), ctx.as_ptr()) };
            if token.is_null() {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: a new reference returned by PyContextVar_Set.
            return Ok(unsafe { Bound::from_owned_ptr(py, token) });
        }
        let _section = fallback_section()?;
        self.var_set.bind(py).call1((ctx,))
    }

    /// Restore the context before `attach`. Never raises into user code: a token from
    /// another context (which our own wrappers never produce) is logged and counted.
    pub fn detach(&self, token: &Bound<'_, PyAny>) {
        let py = token.py();
        let result = match &self.fast {
            // SAFETY: attached; PyContextVar_Reset returns -1 with an exception set.
            Some((f, var)) => match unsafe { (f.reset)(var.as_ptr(), token.as_ptr()) } {
                0 => Ok(()),
                _ => Err(PyErr::fetch(py)),
            },
            None => fallback_section()
                .and_then(|_section| self.var_reset.bind(py).call1((token,)).map(|_| ())),
        };
        if let Err(e) = result {
            diag::count(&COUNTERS.context_detach_errors);
            diag::warn_limited(
                "detach-failed",
                &format!("could not restore the previous context: {e}"),
            );
        }
    }

    /// A child of `cur` holding `span` as the current span, and `baggage` if given.
    /// One dict copy; items are set at the C level (Context forbids `__setitem__`).
    pub fn child<'py>(
        &self,
        cur: &Bound<'py, PyAny>,
        span: &Bound<'py, PyAny>,
        baggage: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cur.py();
        if !cur.is_instance_of::<PyDict>() {
            // Not the layout `_compat.py` checked for: the public API.
            let _section = fallback_section()?;
            let set = self.set_value.bind(py);
            let mut ctx = set.call1((self.span_key.bind(py), span, cur))?;
            if let Some(b) = baggage {
                ctx = set.call1((self.baggage_key.bind(py), b, &ctx))?;
            }
            return Ok(ctx);
        }
        let ctx = self.copy_of(cur)?;
        let d = ctx.cast::<PyDict>()?;
        d.set_item(self.span_key.bind(py), span)?;
        if let Some(b) = baggage {
            d.set_item(self.baggage_key.bind(py), b)?;
        }
        Ok(ctx)
    }

    /// A new Context with the entries of `cur`, to be filled before anyone sees it.
    pub fn copy_of<'py>(&self, cur: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = cur.py();
        Ok(match self.context_new {
            // SAFETY: attached; tp_new of a dict subclass returns a new empty instance
            // (or NULL with an exception); PyDict_Merge copies `cur` into it at C level.
            Some(new) if cur.is_instance_of::<PyDict>() => unsafe {
                let t = self
                    .context_type
                    .bind(py)
                    .as_ptr()
                    .cast::<pyo3::ffi::PyTypeObject>();
                let obj = new(t, self.empty_tuple.as_ptr(), std::ptr::null_mut());
                let obj = Bound::from_owned_ptr_or_err(py, obj)?;
                if pyo3::ffi::PyDict_Merge(obj.as_ptr(), cur.as_ptr(), 1) != 0 {
                    return Err(PyErr::fetch(py));
                }
                obj
            },
            _ => self.context_type.bind(py).call1((cur,))?,
        })
    }

    /// Whether `ctx` turns instrumentation off (OpenTelemetry's
    /// `suppress_instrumentation()`, set by SDK exporters around their own requests).
    pub fn suppressed_in(&self, ctx: &Bound<'_, PyAny>) -> bool {
        self.suppress_keys.iter().any(|k| {
            Self::get(ctx, k.bind(ctx.py())).is_some_and(|v| v.is_truthy().unwrap_or(false))
        })
    }

    /// The current span in `ctx`, if any.
    pub fn span_in<'py>(&self, ctx: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        Self::get(ctx, self.span_key.bind(ctx.py()).as_any())
    }

    /// The baggage dict in `ctx`, if any.
    pub fn baggage_in<'py>(&self, ctx: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        Self::get(ctx, self.baggage_key.bind(ctx.py()).as_any())
    }

    fn get<'py>(ctx: &Bound<'py, PyAny>, key: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        let py = ctx.py();
        if let Ok(d) = ctx.cast::<PyDict>() {
            return d.get_item(key).ok().flatten();
        }
        let _section = Section::open()?;
        ctx.call_method1(intern!(py, "get"), (key,))
            .ok()
            .filter(|v| !v.is_none())
    }

    /// Build a Python `SpanContext` for a Rust one.
    pub fn to_py_span_context<'py>(
        &self,
        py: Python<'py>,
        sc: &SpanContext,
    ) -> PyResult<Bound<'py, PyAny>> {
        // The OpenTelemetry classes are Python code.
        let Some(_section) = Section::open() else {
            return Ok(self.invalid_span_context.bind(py).clone());
        };
        let trace_id = u128::from_be_bytes(sc.trace_id().to_bytes());
        let span_id = u64::from_be_bytes(sc.span_id().to_bytes());
        let flags = match sc.trace_flags().to_u8() {
            3 => self.flags_sampled_random.bind(py).clone(),
            1 => self.flags_sampled.bind(py).clone(),
            0 => self.flags_default.bind(py).clone(),
            other => self.trace_flags_type.bind(py).call1((other,))?,
        };
        let state = if sc.trace_state() == &TraceState::NONE {
            self.empty_trace_state.bind(py).clone()
        } else {
            // Keys Python's TraceState refuses (the current grammar allows more) are
            // left out here only; they are still sent on (see `traceparent`).
            let pairs = PyList::empty(py);
            for (k, v) in traceparent::state_pairs(sc.trace_state()) {
                if traceparent::python_accepts_key(&k) {
                    pairs.append(PyTuple::new(py, [k.as_ref(), v])?)?;
                }
            }
            self.trace_state_type.bind(py).call1((pairs,))?
        };
        self.span_context_type
            .bind(py)
            .call1((trace_id, span_id, sc.is_remote(), flags, state))
    }
}

/// Read a Python `SpanContext` (ours or any other SDK's).
pub fn from_py_span_context(sc: &Bound<'_, PyAny>) -> Option<SpanContext> {
    let py = sc.py();
    // Attributes of a foreign object may be Python properties.
    let _section = Section::open()?;
    let trace_id: u128 = sc.getattr(intern!(py, "trace_id")).ok()?.extract().ok()?;
    let span_id: u64 = sc.getattr(intern!(py, "span_id")).ok()?.extract().ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    let is_remote: bool = sc
        .getattr(intern!(py, "is_remote"))
        .ok()
        .and_then(|v| v.extract().ok())
        .unwrap_or(false);
    let flags: u8 = sc
        .getattr(intern!(py, "trace_flags"))
        .ok()
        .and_then(|v| v.extract().ok())
        .unwrap_or(0);
    let state = sc
        .getattr(intern!(py, "trace_state"))
        .ok()
        .filter(|s| s.len().is_ok_and(|n| n > 0))
        .and_then(|s| s.call_method0(intern!(py, "to_header")).ok())
        .and_then(|h| h.extract::<String>().ok())
        .map(|h| {
            // Another SDK's tracestate may not be valid: left out, counted.
            let (state, dropped) = traceparent::parse_state(&[h]);
            if dropped {
                policy::count(&policy::STATS.tracestate_dropped, 1);
            }
            state
        })
        .unwrap_or_default();
    Some(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        TraceFlags::new(flags),
        is_remote,
        state,
    ))
}

/// An awaitable that is already done: what `__aenter__`/`__aexit__` return when the
/// work happened synchronously in the call (no coroutine object, no event-loop hop).
#[pyclass(module = "honeytrace._core", name = "_Ready", frozen)]
pub struct Ready {
    value: Mutex<Option<Py<PyAny>>>,
}

impl Ready {
    pub fn new(value: Option<Py<PyAny>>) -> Ready {
        Ready {
            value: Mutex::new(value),
        }
    }

    fn take(&self) -> Option<Py<PyAny>> {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl crate::py::boundary::Degrade for Ready {
    fn degraded() -> Self {
        Ready::new(None)
    }
}

#[honeytrace_macros::methods]
impl Ready {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(v) = self.value.try_lock() {
            if let Some(v) = v.as_ref() {
                visit.call(v)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        drop(self.take());
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[fallback(Err(pyo3::exceptions::PyStopIteration::new_err(())))]
    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        let v = self.take().unwrap_or_else(|| py.None());
        Err(pyo3::exceptions::PyStopIteration::new_err((v,)))
    }

    #[fallback(Err(pyo3::exceptions::PyStopIteration::new_err(())))]
    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = self.take().unwrap_or_else(|| py.None());
        Err(pyo3::exceptions::PyStopIteration::new_err((v,)))
    }

    #[pyo3(signature = (exc, _value=None, _tb=None))]
    #[fallback(Err(pyo3::exceptions::PyStopIteration::new_err(())))]
    fn throw(
        &self,
        exc: &Bound<'_, PyAny>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Err(
            if exc.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                PyErr::from_value(exc.clone())
            } else {
                PyErr::from_value(exc.call0()?)
            },
        )
    }

    fn close(&self) {
        drop(self.take());
    }
}
