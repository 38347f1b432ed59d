//! Captured values (inputs, outputs, enrichment): Python object -> attribute value or
//! JSON text, never failing, within a byte budget. The one place that walks user
//! objects.
//!
//! Guarantees, each held by one mechanism:
//! - Valid JSON within the budget, exactly: the writer keeps room for the closing
//!   brackets and one truncation marker at every step (`Writer::room`), and writes the
//!   marker instead of anything that does not fit.
//! - Cycles and deep nesting become a marker value (`"<cycle>"`, `"<max depth>"`),
//!   decided by a recursion guard that returns a result (`Writer::nested`).
//! - Containers are snapshotted (a list of their items, made at the C level) before
//!   any user code runs, so a `__repr__` that changes the container cannot break the
//!   iteration.
//! - Python code (`__repr__`, `model_dump`, the redaction hook) runs only inside a
//!   `Section` and with tracing suppressed on this thread; `KeyboardInterrupt` and
//!   `SystemExit` raised in it propagate (`Interrupt`), other errors are counted.
//! - The redaction hook sees the attribute key, and every entry inside captured dicts
//!   and lists by its dot path (`honeyhive_inputs.payload.password`).
//!
//! Type dispatch (orjson-style): str, bool, int, float, None, dict, list, tuple,
//! set/frozenset, dataclasses, pydantic v2 models (`model_dump(mode="json")`), Enum (its
//! value), datetime/date/time (ISO 8601), UUID and Decimal (strings), bytes (UTF-8 text,
//! else base64), numpy arrays and scalars, mappings, objects with `__dict__`, then
//! `repr`.

use crate::engine::diag::{self, COUNTERS};
use crate::py::boundary::Section;
use crate::py::convert::{to_value, value_to_py};
use crate::py::pystr;
use opentelemetry::{Key, KeyValue, Value};
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple, PyType,
};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::sync::PoisonError;

pub const MAX_DEPTH: usize = 32;
pub const TRUNCATED: &str = "…(truncated)";
/// The smallest budget the writer works with (room for a marker and brackets).
const MIN_BUDGET: usize = 32;
/// Room kept for the marker that may end the output: `,"…":"…(truncated)"`.
const RESERVE: usize = 1 + 5 + 1 + 2 + TRUNCATED.len();
/// Flattening writes at most this many attributes per call (then one marker).
const MAX_FLATTENED: usize = 512;
const CYCLE: &str = "<cycle>";
const TOO_DEEP: &str = "<max depth>";
const EXITING: &str = "<not captured: the interpreter is exiting>";

/// A `KeyboardInterrupt`, `SystemExit` (any `BaseException` that is not an
/// `Exception`) raised by user code during a capture: it must reach the caller.
pub struct Interrupt(pub PyErr);

impl From<Interrupt> for PyErr {
    fn from(i: Interrupt) -> PyErr {
        i.0
    }
}

pub type Captured<T> = Result<T, Interrupt>;

/// An error raised by user code: an `Interrupt` to pass on, or a counted failure.
fn classify(py: Python<'_>, e: PyErr) -> Captured<()> {
    if e.is_instance_of::<PyException>(py) {
        diag::count(&COUNTERS.values_unconvertible);
        Ok(())
    } else {
        Err(Interrupt(e))
    }
}

// ---------------------------------------------------------------------------------
// Suppression: user code run during a capture is not traced (no re-entry).

thread_local! {
    static SUPPRESSED: Cell<u32> = const { Cell::new(0) };
}

/// True while this thread runs user code on the engine's behalf (a redaction hook, a
/// `__repr__`): spans started then are not recorded.
pub fn suppressed() -> bool {
    SUPPRESSED.with(|s| s.get() > 0)
}

/// Tracing suppressed on this thread while it lives (see `suppress_tracing`).
pub struct Suppress;

impl Suppress {
    fn new() -> Self {
        SUPPRESSED.with(|s| s.set(s.get() + 1));
        Suppress
    }
}

impl Drop for Suppress {
    fn drop(&mut self) {
        SUPPRESSED.with(|s| s.set(s.get().saturating_sub(1)));
    }
}

/// No span is started on this thread until the value is dropped (user code run by
/// the engine: hooks, processors).
pub fn suppress_tracing() -> Suppress {
    Suppress::new()
}

/// Permission to run user code: a section (none once the interpreter is exiting)
/// with tracing suppressed.
struct UserCode {
    _section: Section,
    _suppress: Suppress,
}

impl UserCode {
    fn open() -> Option<UserCode> {
        Some(UserCode {
            _section: Section::open()?,
            _suppress: Suppress::new(),
        })
    }
}

// ---------------------------------------------------------------------------------
// The redaction hook

static REDACTOR: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
static HAS_REDACTOR: AtomicBool = AtomicBool::new(false);
/// Bumped on every change of the hook (values captured earlier are captured again).
static REDACTOR_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn redactor_generation() -> u64 {
    REDACTOR_GENERATION.load(Ordering::Acquire)
}

pub fn set_redactor(hook: Option<Py<PyAny>>) {
    HAS_REDACTOR.store(hook.is_some(), Ordering::Release);
    let old = std::mem::replace(
        &mut *REDACTOR.lock().unwrap_or_else(PoisonError::into_inner),
        hook,
    );
    // The new hook is in place before cached values are invalidated.
    REDACTOR_GENERATION.fetch_add(1, Ordering::AcqRel);
    drop(old);
}

fn redactor(py: Python<'_>) -> Option<Py<PyAny>> {
    if !HAS_REDACTOR.load(Ordering::Acquire) {
        return None;
    }
    REDACTOR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|h| h.clone_ref(py))
}

/// `hook(key, value)`; its failures are counted and the value replaced.
fn call_hook<'py>(
    hook: &Bound<'py, PyAny>,
    key: &str,
    value: &Bound<'py, PyAny>,
) -> Captured<Bound<'py, PyAny>> {
    let py = value.py();
    let Some(_user) = UserCode::open() else {
        return Ok(PyString::new(py, EXITING).into_any());
    };
    match hook.call1((key, value)) {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyException>(py) => {
            diag::count(&COUNTERS.redaction_errors);
            diag::warn_limited(
                "redact-failed",
                &format!(
                    "the redaction hook raised {} for {key}; the value was replaced",
                    e.get_type(py)
                        .name()
                        .map_or_else(|_| "an exception".to_string(), |n| n.to_string())
                ),
            );
            Ok(PyString::new(py, "<redaction failed>").into_any())
        }
        Err(e) => Err(Interrupt(e)),
    }
}

/// Attributes set through the span API (by instrumentations, the SDK's way) through
/// the redaction hook, when one is set: `hook(key, value)` for each, its answer
/// converted as `set_attribute` would (a value OpenTelemetry cannot hold becomes its
/// `str`). Nothing runs without a hook. A `KeyboardInterrupt` in the hook is passed on.
pub fn redact_kvs(py: Python<'_>, kvs: &mut [KeyValue]) -> PyResult<()> {
    if kvs.is_empty() {
        return Ok(());
    }
    let Some(hook) = redactor(py) else {
        return Ok(());
    };
    let hook = hook.bind(py);
    for kv in kvs.iter_mut() {
        let value = value_to_py(py, &kv.value)?;
        let replaced = call_hook(hook, kv.key.as_str(), &value).map_err(|Interrupt(e)| e)?;
        if replaced.is(&value) {
            continue;
        }
        kv.value = to_value(&replaced).unwrap_or_else(|| {
            Value::from(
                Section::open()
                    .and_then(|_s| replaced.str().ok().map(|s| s.to_string()))
                    .unwrap_or_default(),
            )
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Strings within a budget

/// Cut `s` to at most `max` bytes on a char boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` within `budget` bytes, the truncation marker included when cut; allocated
/// exactly (a value held in the export queue costs its length, not a grown buffer's).
pub fn budget_str(s: &str, budget: usize) -> String {
    if s.len() <= budget {
        return s.to_owned();
    }
    let head = cut(s, budget.saturating_sub(TRUNCATED.len()));
    let mut out = String::with_capacity(head.len() + TRUNCATED.len());
    out.push_str(head);
    out.push_str(TRUNCATED);
    out
}

fn escape(c: u8) -> Option<&'static str> {
    Some(match c {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0..=0x1f => "",
        _ => return None,
    })
}

/// The length of `s` as a JSON string, quotes included.
fn json_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|c| match escape(c) {
            None => 1,
            Some("") => 6,
            Some(e) => e.len(),
        })
        .sum::<usize>()
}

/// Whether `s` as a JSON string fits in `room` bytes. Escapes only lengthen: a string
/// longer than the room is not read, nor one that fits even with every byte escaped.
fn fits_json(s: &str, room: usize) -> bool {
    s.len() + 2 <= room && (s.len().saturating_mul(6) + 2 <= room || json_len(s) <= room)
}

/// Append `s` as a JSON string, stopping before the content exceeds `max` bytes (on a
/// character and escape boundary). Returns whether all of `s` was written; the caller
/// closes the quote. Reads at most `max` bytes of `s`: every byte writes at least one.
fn push_escaped(out: &mut String, s: &str, max: usize) -> bool {
    let head = cut(s, max);
    push_escaped_within(out, head, max) && head.len() == s.len()
}

fn push_escaped_within(out: &mut String, s: &str, max: usize) -> bool {
    let limit = out.len() + max;
    let mut start = 0;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        let Some(esc) = escape(c) else { continue };
        // The unescaped run before this byte.
        let run = &s[start..i];
        if out.len() + run.len() > limit {
            out.push_str(cut(run, limit - out.len()));
            return false;
        }
        out.push_str(run);
        let n = if esc.is_empty() { 6 } else { esc.len() };
        if out.len() + n > limit {
            return false;
        }
        if esc.is_empty() {
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    let run = &s[start..];
    if out.len() + run.len() > limit {
        out.push_str(cut(run, limit - out.len()));
        return false;
    }
    out.push_str(run);
    true
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s, usize::MAX - out.len());
    out.push('"');
}

// ---------------------------------------------------------------------------------
// The writer

struct Types {
    enum_type: Py<PyType>,
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    uuid: Py<PyType>,
    decimal: Py<PyType>,
    mapping: Py<PyType>,
}

static TYPES: PyOnceLock<Option<Types>> = PyOnceLock::new();

fn types(py: Python<'_>) -> Option<&Types> {
    TYPES
        .get_or_init(py, || {
            let get = |m: &str, n: &str| -> PyResult<Py<PyType>> {
                Ok(py.import(m)?.getattr(n)?.cast_into::<PyType>()?.unbind())
            };
            (|| -> PyResult<Types> {
                Ok(Types {
                    enum_type: get("enum", "Enum")?,
                    datetime: get("datetime", "datetime")?,
                    date: get("datetime", "date")?,
                    time: get("datetime", "time")?,
                    uuid: get("uuid", "UUID")?,
                    decimal: get("decimal", "Decimal")?,
                    mapping: get("collections.abc", "Mapping")?,
                })
            })()
            .ok()
        })
        .as_ref()
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_string(), |n| n.to_string())
}

/// Why a container is not entered.
enum Stop {
    Cycle,
    Depth,
}

/// True for the exact builtin containers, whose items are read without user code.
fn builtin_container(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_exact_instance_of::<PyList>()
        || obj.is_exact_instance_of::<PyTuple>()
        || obj.is_exact_instance_of::<PySet>()
        || obj.is_exact_instance_of::<PyFrozenSet>()
}

/// The items of `obj` (any iterable) as a list made at the C level.
fn snapshot<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    // SAFETY: attached (we hold a Bound); PySequence_List returns a new reference or
    // NULL with an exception set.
    let list = unsafe {
        Bound::from_owned_ptr_or_err(obj.py(), pyo3::ffi::PySequence_List(obj.as_ptr()))
    }?;
    Ok(list.cast_into::<PyList>()?)
}

/// Whether a writer may run user code (asked once, at the first need).
enum UserState {
    NotAsked,
    Open(UserCode),
    /// The interpreter is exiting.
    Refused,
}

pub struct JsonWriter {
    pub out: String,
    budget: usize,
    /// Closing brackets owed for the open containers.
    closers: usize,
    pub truncated: bool,
    /// The containers being written (ids), for cycles.
    stack: Vec<usize>,
    /// The redaction hook and the dot path of the value being written.
    redact: Option<(Py<PyAny>, String)>,
    /// Permission to run user code, asked for at the first need.
    user: UserState,
    /// Items written by `array_item`.
    items: usize,
}

impl JsonWriter {
    pub fn new(budget: usize) -> Self {
        JsonWriter {
            out: String::with_capacity(budget.min(256)),
            budget: budget.max(MIN_BUDGET),
            closers: 0,
            truncated: false,
            stack: Vec::new(),
            redact: None,
            user: UserState::NotAsked,
            items: 0,
        }
    }

    /// A writer whose entries go through the process's redaction hook, their paths
    /// starting at `path`.
    pub fn redacted(py: Python<'_>, budget: usize, path: &str) -> Self {
        Self::new(budget).with_redactor(redactor(py), path)
    }

    /// Redact nested entries with `hook`, their paths starting at `path`.
    fn with_redactor(mut self, hook: Option<Py<PyAny>>, path: &str) -> Self {
        self.redact = hook.map(|h| (h, path.to_string()));
        self
    }

    /// Bytes that may still be written before the reserve for closers and a marker.
    fn room(&self) -> usize {
        self.budget
            .saturating_sub(self.out.len() + self.closers + RESERVE)
    }

    /// May user code run now? (Opens the section on first use.)
    fn user_code(&mut self) -> bool {
        if matches!(self.user, UserState::NotAsked) {
            self.user = match UserCode::open() {
                Some(u) => UserState::Open(u),
                None => UserState::Refused,
            };
        }
        matches!(self.user, UserState::Open(_))
    }

    /// A marker string in value position (fits in the reserve); stops the output.
    fn stop_value(&mut self) {
        self.truncated = true;
        push_json_str(&mut self.out, TRUNCATED);
    }

    /// A string value: whole if it fits, else cut with the marker inside; then stop.
    fn string(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let room = self.room();
        if fits_json(s, room) {
            push_json_str(&mut self.out, s);
            return;
        }
        // Everything left goes to this string: the reserve included, closers not.
        let left = self
            .budget
            .saturating_sub(self.out.len() + self.closers + 2 + TRUNCATED.len());
        self.out.push('"');
        push_escaped(&mut self.out, s, left);
        self.out.push_str(TRUNCATED);
        self.out.push('"');
        self.truncated = true;
    }

    /// A short marker string that is a value, not a truncation (`"<cycle>"`).
    fn note(&mut self, s: &str) {
        if fits_json(s, self.room()) {
            push_json_str(&mut self.out, s);
        } else {
            self.stop_value();
        }
    }

    /// Raw JSON (a number, `true`, `null`) if it fits, else the marker.
    fn raw(&mut self, s: &str) {
        if s.len() <= self.room() {
            self.out.push_str(s);
        } else {
            self.stop_value();
        }
    }

    /// Enter `obj` as a container: checks only, writes nothing.
    fn enter(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), Stop> {
        let id = obj.as_ptr() as usize;
        if self.stack.contains(&id) {
            return Err(Stop::Cycle);
        }
        if depth >= MAX_DEPTH {
            return Err(Stop::Depth);
        }
        self.stack.push(id);
        Ok(())
    }

    /// Write `obj` as a container with `body`, under the recursion guard: a cycle or
    /// the depth limit writes a marker value instead, and the guard is always left.
    fn nested(
        &mut self,
        obj: &Bound<'_, PyAny>,
        depth: usize,
        body: impl FnOnce(&mut Self) -> Captured<()>,
    ) -> Captured<()> {
        match self.enter(obj, depth) {
            Err(Stop::Cycle) => {
                self.note(CYCLE);
                Ok(())
            }
            Err(Stop::Depth) => {
                self.note(TOO_DEEP);
                Ok(())
            }
            Ok(()) => {
                let r = body(self);
                self.stack.pop();
                r
            }
        }
    }

    /// Open a container (`[` or `{`), owing its closer; false (marker written) when
    /// there is no room.
    fn open(&mut self, c: char) -> bool {
        if self.room() < 1 {
            self.stop_value();
            return false;
        }
        self.out.push(c);
        self.closers += 1;
        true
    }

    fn close(&mut self, c: char) {
        self.out.push(c);
        self.closers -= 1;
    }

    /// Before an item of a container: the comma, or the end marker when there is no
    /// room for a comma and a minimal item.
    fn item_room(&mut self, first: bool, object: bool) -> bool {
        if self.truncated {
            return false;
        }
        let comma = usize::from(!first);
        if self.room() < comma + 2 {
            if !first {
                self.out.push(',');
            }
            if object {
                push_json_str(&mut self.out, "…");
                self.out.push(':');
            }
            self.stop_value();
            return false;
        }
        if !first {
            self.out.push(',');
        }
        true
    }

    /// The value of an entry at `segment`, after the redaction hook.
    fn entry(&mut self, segment: &str, value: &Bound<'_, PyAny>, depth: usize) -> Captured<()> {
        let Some((hook, path)) = self.redact.as_mut() else {
            return self.value(value, depth);
        };
        let keep = path.len();
        path.push('.');
        path.push_str(segment);
        let hook = hook.clone_ref(value.py());
        let key = path.clone();
        let replaced = call_hook(hook.bind(value.py()), &key, value);
        let r = match replaced {
            Ok(v) => self.value(&v, depth),
            Err(e) => Err(e),
        };
        if let Some((_, path)) = self.redact.as_mut() {
            path.truncate(keep);
        }
        r
    }

    fn seq(&mut self, items: &Bound<'_, PyList>, depth: usize) -> Captured<()> {
        if !self.open('[') {
            return Ok(());
        }
        let mut first = true;
        for (i, item) in items.iter().enumerate() {
            if !self.item_room(first, false) {
                break;
            }
            first = false;
            self.entry(itoa::Buffer::new().format(i), &item, depth + 1)?;
        }
        self.close(']');
        Ok(())
    }

    fn key_text<'k>(&mut self, k: &'k Bound<'_, PyAny>) -> Captured<Cow<'k, str>> {
        if let Ok(s) = k.cast::<PyString>() {
            return Ok(pystr::text(s));
        }
        // Exact types only: a subclass's `__str__` is user code.
        if k.is_exact_instance_of::<PyInt>() || k.is_exact_instance_of::<PyFloat>() || k.is_none() {
            return Ok(Cow::Owned(
                k.str()
                    .map(|s| pystr::text(&s).into_owned())
                    .unwrap_or_default(),
            ));
        }
        if !self.user_code() {
            return Ok(Cow::Owned(type_name(k)));
        }
        match k.str() {
            Ok(s) => Ok(Cow::Owned(pystr::text(&s).into_owned())),
            Err(e) => classify(k.py(), e).map(|()| Cow::Owned(type_name(k))),
        }
    }

    fn object(
        &mut self,
        items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
        depth: usize,
    ) -> Captured<()> {
        if !self.open('{') {
            return Ok(());
        }
        let mut first = true;
        for (k, v) in items {
            if !self.item_room(first, true) {
                break;
            }
            let key = self.key_text(&k)?;
            // The key and its colon must fit with room for a value.
            if !fits_json(&key, self.room().saturating_sub(1 + 2)) {
                // After the comma `item_room` wrote (if any), a marker entry.
                push_json_str(&mut self.out, "…");
                self.out.push(':');
                self.stop_value();
                break;
            }
            first = false;
            push_json_str(&mut self.out, &key);
            self.out.push(':');
            self.entry(&key, &v, depth + 1)?;
        }
        self.close('}');
        Ok(())
    }

    fn dict(&mut self, d: &Bound<'_, PyDict>, depth: usize) -> Captured<()> {
        self.nested(d.as_any(), depth, |w| {
            w.object(crate::py::convert::dict_items(d), depth)
        })
    }

    fn iterable(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Captured<()> {
        // A subclass may iterate in its own `__iter__`: user code.
        if !builtin_container(obj) && !self.user_code() {
            self.note(EXITING);
            return Ok(());
        }
        self.nested(obj, depth, |w| match snapshot(obj) {
            Ok(items) => w.seq(&items, depth),
            Err(e) => {
                classify(obj.py(), e)?;
                w.note("<unreadable>");
                Ok(())
            }
        })
    }

    /// One JSON value for `obj` (or a marker) at value position.
    pub fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Captured<()> {
        if self.truncated {
            return Ok(());
        }
        if let Ok(s) = obj.cast::<PyString>() {
            let s = pystr::text(s);
            self.string(&s);
            return Ok(());
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            self.raw(if b.is_true() { "true" } else { "false" });
            return Ok(());
        }
        if obj.is_instance_of::<PyInt>() {
            match obj.extract::<i64>() {
                Ok(i) => self.raw(itoa::Buffer::new().format(i)),
                // Arbitrary-precision integers are valid JSON numbers as digits.
                Err(_) => match crate::py::convert::int_digits(obj) {
                    Some(s) => self.raw(&s),
                    None => self.note("<int>"),
                },
            }
            return Ok(());
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            let v = f.value();
            if v.is_finite() {
                self.raw(zmij::Buffer::new().format_finite(v));
            } else if v.is_nan() {
                self.note("NaN");
            } else if v > 0.0 {
                self.note("Infinity");
            } else {
                self.note("-Infinity");
            }
            return Ok(());
        }
        if obj.is_none() {
            self.raw("null");
            return Ok(());
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return self.dict(d, depth);
        }
        if obj.is_instance_of::<PyList>()
            || obj.is_instance_of::<PyTuple>()
            || obj.is_instance_of::<PySet>()
            || obj.is_instance_of::<PyFrozenSet>()
        {
            return self.iterable(obj, depth);
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            self.bytes(b.as_bytes());
            return Ok(());
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            let v = b.to_vec();
            self.bytes(&v);
            return Ok(());
        }
        if !self.user_code() {
            self.note(EXITING);
            return Ok(());
        }
        self.rare(obj, depth)
    }

    fn bytes(&mut self, b: &[u8]) {
        if let Ok(s) = std::str::from_utf8(b) {
            self.string(s);
            return;
        }
        // Base64 grows by 4/3: encode only what fits (with the marker, when cut).
        let room = self.room().saturating_sub(2 + "base64:".len());
        if b.len().div_ceil(3) * 4 <= room {
            self.string(&format!("base64:{}", base64(b)));
            return;
        }
        let n = room.saturating_sub(TRUNCATED.len()) / 4 * 3;
        self.string(&format!(
            "base64:{}{TRUNCATED}",
            base64(&b[..n.min(b.len())])
        ));
        self.truncated = true;
    }

    /// `repr(obj)`, or a placeholder when that fails.
    fn fallback(&mut self, obj: &Bound<'_, PyAny>) -> Captured<()> {
        match obj.repr() {
            Ok(r) => {
                let r = pystr::text(&r);
                self.string(&r);
            }
            Err(e) => {
                classify(obj.py(), e)?;
                let s = format!("<unrepresentable {}>", type_name(obj));
                self.string(&s);
            }
        }
        Ok(())
    }

    /// A value computed by user code (`model_dump`, `tolist`, `isoformat`, ...).
    fn derived(
        &mut self,
        obj: &Bound<'_, PyAny>,
        got: PyResult<Bound<'_, PyAny>>,
        depth: usize,
    ) -> Captured<()> {
        match got {
            Ok(v) if depth < MAX_DEPTH => self.value(&v, depth + 1),
            Ok(_) => {
                self.note(TOO_DEEP);
                Ok(())
            }
            Err(e) => {
                classify(obj.py(), e)?;
                self.fallback(obj)
            }
        }
    }

    /// Everything that is not a builtin container or scalar (user code may run).
    fn rare(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Captured<()> {
        let py = obj.py();
        let ty = obj.get_type();
        let Some(t) = types(py) else {
            return self.fallback(obj);
        };
        let is = |ty: &Py<PyType>| obj.is_instance(ty.bind(py)).unwrap_or(false);
        // IntEnum and StrEnum were caught as int/str above: their JSON value anyway.
        if is(&t.enum_type) {
            let v = obj.getattr(intern!(py, "value"));
            return self.derived(obj, v, depth);
        }
        if is(&t.datetime) || is(&t.date) || is(&t.time) {
            match obj
                .call_method0(intern!(py, "isoformat"))
                .and_then(|s| s.str())
            {
                Ok(s) => self.string(&pystr::text(&s)),
                Err(e) => {
                    classify(py, e)?;
                    self.fallback(obj)?;
                }
            }
            return Ok(());
        }
        if is(&t.uuid) || is(&t.decimal) {
            match obj.str() {
                Ok(s) => self.string(&pystr::text(&s)),
                Err(e) => {
                    classify(py, e)?;
                    self.fallback(obj)?;
                }
            }
            return Ok(());
        }
        if ty.is_subclass_of::<PyType>().unwrap_or(false) {
            // A class object: its repr (dataclass and model classes would match below).
            return self.fallback(obj);
        }
        if let Ok(fields) = ty.getattr(intern!(py, "__dataclass_fields__")) {
            if let Ok(fields) = fields.cast::<PyDict>() {
                let names = fields.keys();
                return self.nested(obj, depth, |w| {
                    let mut items = Vec::with_capacity(names.len());
                    for k in names.iter() {
                        let Ok(name) = k.cast::<PyString>() else {
                            continue;
                        };
                        match obj.getattr(name) {
                            Ok(v) => items.push((k.clone(), v)),
                            Err(e) => classify(py, e)?,
                        }
                    }
                    w.object(items, depth)
                });
            }
        }
        if ty
            .hasattr(intern!(py, "__pydantic_fields__"))
            .unwrap_or(false)
        {
            let kwargs = PyDict::new(py);
            let _ = kwargs.set_item("mode", "json");
            let dumped = obj.call_method(intern!(py, "model_dump"), (), Some(&kwargs));
            return self.derived(obj, dumped, depth);
        }
        if let Some(done) = self.numpy(obj, depth)? {
            return Ok(done);
        }
        if is(&t.mapping) {
            match obj
                .call_method0(intern!(py, "items"))
                .and_then(|items| snapshot(&items))
            {
                Ok(list) => {
                    return self.nested(obj, depth, |w| {
                        let pairs = list
                            .iter()
                            .filter_map(|p| p.extract::<(Bound<PyAny>, Bound<PyAny>)>().ok())
                            .collect();
                        w.object(pairs, depth)
                    });
                }
                Err(e) => classify(py, e)?,
            }
        }
        if let Ok(d) = obj.getattr(intern!(py, "__dict__")) {
            if let Ok(d) = d.cast::<PyDict>() {
                if !d.is_empty() {
                    // The object itself is the container (a self-reference is a cycle).
                    return self.nested(obj, depth, |w| {
                        w.object(crate::py::convert::dict_items(d), depth)
                    });
                }
            }
        }
        self.fallback(obj)
    }

    /// numpy arrays and scalars (without importing numpy ourselves). None: not numpy.
    fn numpy(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Captured<Option<()>> {
        let py = obj.py();
        let module = obj
            .get_type()
            .getattr(intern!(py, "__module__"))
            .ok()
            .and_then(|m| m.extract::<String>().ok())
            .unwrap_or_default();
        if module != "numpy" && !module.starts_with("numpy.") {
            return Ok(None);
        }
        if let Ok(size) = obj
            .getattr(intern!(py, "size"))
            .and_then(|s| s.extract::<usize>())
        {
            if obj.hasattr(intern!(py, "shape")).unwrap_or(false) && size > 0 {
                // Rough guard: an element needs at least 2 bytes of JSON.
                if size.saturating_mul(2) > self.room().max(64) * 4 {
                    let shape = obj
                        .getattr(intern!(py, "shape"))
                        .and_then(|s| s.repr())
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    let dtype = obj
                        .getattr(intern!(py, "dtype"))
                        .and_then(|s| s.str())
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    self.string(&format!("<ndarray shape={shape} dtype={dtype}>"));
                    self.truncated = true;
                    return Ok(Some(()));
                }
            }
        }
        match obj.call_method0(intern!(py, "tolist")) {
            Ok(v) => self.derived(obj, Ok(v), depth).map(Some),
            Err(e) => {
                classify(py, e)?;
                Ok(None)
            }
        }
    }

    /// The output, allocated exactly.
    pub fn finish(self) -> String {
        if self.out.capacity() > self.out.len() + self.out.len() / 8 + 16 {
            self.out.as_str().to_owned()
        } else {
            self.out
        }
    }

    // -- incremental arrays (a generator's items) -------------------------------------

    pub fn begin_array(&mut self) {
        self.open('[');
    }

    pub fn array_item(&mut self, item: &Bound<'_, PyAny>) -> Captured<()> {
        let first = self.items == 0;
        if !self.item_room(first, false) {
            return Ok(());
        }
        let index = self.items;
        self.items += 1;
        let r = self.entry(itoa::Buffer::new().format(index), item, 1);
        // A stream's writer lives across yields: the permission (a section, tracing
        // suppressed on this thread) must not outlive the item that needed it.
        self.user = UserState::NotAsked;
        r
    }

    pub fn end_array(&mut self) {
        if self.closers > 0 {
            self.close(']');
        }
    }
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = match chunk.len() {
            3 => (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]),
            2 => (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8),
            _ => u32::from(chunk[0]) << 16,
        };
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// JSON text of any Python object within `budget` bytes, entries redacted by `path`.
fn json_text(obj: &Bound<'_, PyAny>, budget: usize, path: Option<&str>) -> Captured<String> {
    let hook = path.and_then(|_| redactor(obj.py()));
    let mut w = JsonWriter::new(budget).with_redactor(hook, path.unwrap_or(""));
    w.value(obj, 0)?;
    Ok(w.finish())
}

/// JSON text of any Python object within `budget` bytes (no redaction).
pub fn to_json_text(obj: &Bound<'_, PyAny>, budget: usize) -> Captured<String> {
    json_text(obj, budget, None)
}

/// A `serde_json::Value` of a Python object (REST payloads, init keywords).
pub fn to_json(obj: &Bound<'_, PyAny>) -> Captured<serde_json::Value> {
    let text = to_json_text(obj, 1 << 20)?;
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// One captured value as an attribute value: str/int/float/bool native (strings within
/// the budget), None skipped, anything else JSON text within the budget, its entries
/// redacted by their paths under `key`.
pub fn captured(value: &Bound<'_, PyAny>, budget: usize, key: &str) -> Captured<Option<Value>> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(s) = value.cast::<PyString>() {
        let s = pystr::text(s);
        return Ok(Some(Value::String(budget_str(&s, budget).into())));
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Some(Value::Bool(b.is_true())));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Some(Value::I64(i)));
        }
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Ok(Some(Value::F64(f.value())));
    }
    Ok(Some(Value::String(
        json_text(value, budget, Some(key))?.into(),
    )))
}

/// Capture `value` under `key`: the redaction hook sees it first, then its entries.
pub fn capture_into(
    key: Key,
    value: &Bound<'_, PyAny>,
    budget: usize,
    out: &mut Vec<KeyValue>,
) -> Captured<()> {
    let replaced;
    let value = match redactor(value.py()) {
        Some(hook) => {
            replaced = call_hook(hook.bind(value.py()), key.as_str(), value)?;
            &replaced
        }
        None => value,
    };
    if let Some(v) = captured(value, budget, key.as_str())? {
        out.push(KeyValue::new(key, v));
    }
    Ok(())
}

/// HoneyHive flattening: dicts recurse as `prefix.key`, lists and tuples as
/// `prefix.index`, None is skipped at every depth, scalars stay native, anything else
/// becomes JSON. Bounded in depth and count; every leaf goes through the redaction hook
/// with its path.
pub fn flatten(
    prefix: &str,
    value: &Bound<'_, PyAny>,
    budget: usize,
    out: &mut Vec<KeyValue>,
) -> Captured<()> {
    let mut written = 0usize;
    let mut stack = Vec::new();
    flatten_inner(prefix, value, budget, out, &mut stack, &mut written)
}

fn flatten_inner(
    prefix: &str,
    value: &Bound<'_, PyAny>,
    budget: usize,
    out: &mut Vec<KeyValue>,
    stack: &mut Vec<usize>,
    written: &mut usize,
) -> Captured<()> {
    if value.is_none() {
        return Ok(());
    }
    if *written >= MAX_FLATTENED {
        if *written == MAX_FLATTENED {
            out.push(KeyValue::new(format!("{prefix}.…"), TRUNCATED));
            *written += 1;
        }
        return Ok(());
    }
    let id = value.as_ptr() as usize;
    let container = value.is_instance_of::<PyDict>()
        || value.is_instance_of::<PyList>()
        || value.is_instance_of::<PyTuple>();
    let cycle = container && stack.contains(&id);
    if cycle || (container && stack.len() >= MAX_DEPTH) {
        let marker = if cycle { CYCLE } else { TOO_DEEP };
        out.push(KeyValue::new(prefix.to_string(), marker));
        *written += 1;
        return Ok(());
    }
    let children: Option<Vec<(String, Bound<'_, PyAny>)>> = if let Ok(d) = value.cast::<PyDict>() {
        let mut kids = Vec::new();
        let mut w = JsonWriter::new(MIN_BUDGET);
        for (k, v) in crate::py::convert::dict_items(d) {
            kids.push((w.key_text(&k)?.into_owned(), v));
        }
        Some(kids)
    } else if container {
        // A subclass iterates in its own `__iter__`: user code.
        let user = if builtin_container(value) {
            None
        } else {
            match UserCode::open() {
                Some(u) => Some(u),
                None => return Ok(()),
            }
        };
        let items = match snapshot(value) {
            Ok(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v))
                    .collect(),
            ),
            Err(e) => {
                classify(value.py(), e)?;
                None
            }
        };
        drop(user);
        items
    } else {
        None
    };
    if let Some(children) = children {
        stack.push(id);
        let mut r = Ok(());
        for (k, v) in children {
            r = flatten_inner(&format!("{prefix}.{k}"), &v, budget, out, stack, written);
            if r.is_err() {
                break;
            }
        }
        stack.pop();
        r
    } else {
        let before = out.len();
        capture_into(Key::from(prefix.to_string()), value, budget, out)?;
        *written += out.len() - before;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        let b = budget_str("abcdefghijklmnopqrstuvwxyz", 20);
        assert!(b.len() <= 20 && b.ends_with(TRUNCATED), "{b}");
        assert_eq!(budget_str("abc", 3), "abc");
    }

    #[test]
    fn json_strings_are_escaped_and_cut_on_boundaries() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_len("a\"b\\c\nd\u{1}"), s.len());
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
        for max in 0..12 {
            let mut out = String::from("\"");
            push_escaped(&mut out, "é\"x\u{1}y", max);
            out.push('"');
            assert!(out.len() <= max + 2);
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
        }
    }
}
