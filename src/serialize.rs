//! Python object -> JSON text, never failing, within a byte budget.
//!
//! Type dispatch (orjson-style): str, bool, int, float, None, dict, list, tuple,
//! set/frozenset, dataclasses, pydantic v2 models (`model_dump(mode="json")`), Enum
//! (its value), datetime/date/time (ISO 8601), UUID and Decimal (strings), bytes
//! (UTF-8 text, else base64), numpy arrays and scalars, objects with `__dict__`, and
//! finally `repr`. Cycles and deep nesting become markers; past the budget the writer
//! adds a truncation marker and closes every open container, so the JSON stays valid.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple, PyType,
};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub const MAX_DEPTH: usize = 32;
pub const TRUNCATED: &str = "…(truncated)";

/// Values whose conversion raised (model_dump, isoformat, __repr__ ...), process-wide.
pub static CONVERSION_ERRORS: AtomicU64 = AtomicU64::new(0);

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
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_string())
}

fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Copy runs of bytes that need no escaping in one go; the bytes that do are all
    // ASCII, so every cut is on a char boundary.
    let mut start = 0;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        let esc = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

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

/// A string within `budget` bytes, with the truncation marker when cut.
pub fn budget_str(s: &str, budget: usize) -> String {
    if s.len() <= budget {
        return s.to_string();
    }
    let mut out = cut(s, budget).to_string();
    out.push_str(TRUNCATED);
    out
}

pub struct JsonWriter {
    pub out: String,
    budget: usize,
    pub truncated: bool,
    stack: Vec<usize>,
}

impl JsonWriter {
    pub fn new(budget: usize) -> Self {
        JsonWriter {
            out: String::with_capacity(budget.min(256)),
            budget,
            truncated: false,
            stack: Vec::new(),
        }
    }

    /// Incremental arrays (a generator's items): `begin_array`, `array_item`...,
    /// `end_array`. Items past the budget are replaced by one truncation marker.
    pub fn begin_array(&mut self) {
        self.out.push('[');
    }

    pub fn array_item(&mut self, item: &Bound<'_, PyAny>) {
        if self.truncated {
            return;
        }
        if self.out.len() > 1 {
            self.out.push(',');
        }
        if self.over() {
            self.marker();
            return;
        }
        self.value(item, 1);
    }

    pub fn end_array(&mut self) {
        self.out.push(']');
    }

    fn over(&self) -> bool {
        self.out.len() >= self.budget
    }

    fn string(&mut self, s: &str) {
        let room = self.budget.saturating_sub(self.out.len() + 2);
        if s.len() > room {
            let mut cutted = cut(s, room).to_string();
            cutted.push_str(TRUNCATED);
            push_json_str(&mut self.out, &cutted);
            self.truncated = true;
        } else {
            push_json_str(&mut self.out, s);
        }
    }

    fn marker(&mut self) {
        self.truncated = true;
        push_json_str(&mut self.out, TRUNCATED);
    }

    fn fallback(&mut self, obj: &Bound<'_, PyAny>) {
        match obj.repr() {
            Ok(r) => {
                let r = crate::pystr::text(&r);
                self.string(&r);
            }
            Err(_) => {
                CONVERSION_ERRORS.fetch_add(1, Ordering::Relaxed);
                let s = format!("<unrepresentable {}>", type_name(obj));
                self.string(&s);
            }
        }
    }

    fn seq<'py>(&mut self, items: impl Iterator<Item = Bound<'py, PyAny>>, depth: usize) {
        self.out.push('[');
        let mut first = true;
        for item in items {
            if !first {
                self.out.push(',');
            }
            first = false;
            if self.over() {
                self.marker();
                break;
            }
            self.value(&item, depth + 1);
        }
        self.out.push(']');
    }

    fn object<'py>(
        &mut self,
        items: impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        depth: usize,
    ) {
        self.out.push('{');
        let mut first = true;
        for (k, v) in items {
            if !first {
                self.out.push(',');
            }
            first = false;
            if self.over() {
                push_json_str(&mut self.out, "…");
                self.out.push(':');
                self.marker();
                break;
            }
            match k.cast::<PyString>() {
                Ok(s) => self.string(&crate::pystr::text(s)),
                Err(_) => {
                    let key = k
                        .str()
                        .map(|s| crate::pystr::text(&s).into_owned())
                        .unwrap_or_default();
                    self.string(&key);
                }
            }
            self.out.push(':');
            self.value(&v, depth + 1);
        }
        self.out.push('}');
    }

    /// Enter a container: false (and a marker written) on a cycle or past max depth.
    fn enter(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> bool {
        let id = obj.as_ptr() as usize;
        if self.stack.contains(&id) {
            self.string("<cycle>");
            return false;
        }
        if depth >= MAX_DEPTH {
            self.string("<max depth>");
            return false;
        }
        self.stack.push(id);
        true
    }

    fn leave(&mut self) {
        self.stack.pop();
    }

    pub fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) {
        let py = obj.py();
        if let Ok(s) = obj.cast::<PyString>() {
            let s = crate::pystr::text(s);
            self.string(&s);
            return;
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            self.out
                .push_str(if b.is_true() { "true" } else { "false" });
            return;
        }
        if obj.is_instance_of::<PyInt>() {
            match obj.extract::<i64>() {
                Ok(i) => {
                    self.out.push_str(itoa::Buffer::new().format(i));
                }
                // Arbitrary-precision integers are valid JSON numbers as digits.
                Err(_) => match obj.str() {
                    Ok(s) => self.out.push_str(&crate::pystr::text(&s)),
                    Err(_) => self.fallback(obj),
                },
            }
            return;
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            let v = f.value();
            if v.is_finite() {
                self.out.push_str(zmij::Buffer::new().format_finite(v));
            } else if v.is_nan() {
                self.string("NaN");
            } else if v > 0.0 {
                self.string("Infinity");
            } else {
                self.string("-Infinity");
            }
            return;
        }
        if obj.is_none() {
            self.out.push_str("null");
            return;
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            if self.enter(obj, depth) {
                self.object(d.iter(), depth);
                self.leave();
            }
            return;
        }
        if let Ok(l) = obj.cast::<PyList>() {
            if self.enter(obj, depth) {
                self.seq(l.iter(), depth);
                self.leave();
            }
            return;
        }
        if let Ok(t) = obj.cast::<PyTuple>() {
            if self.enter(obj, depth) {
                self.seq(t.iter(), depth);
                self.leave();
            }
            return;
        }
        if let Ok(s) = obj.cast::<PySet>() {
            if self.enter(obj, depth) {
                self.seq(s.iter(), depth);
                self.leave();
            }
            return;
        }
        if let Ok(s) = obj.cast::<PyFrozenSet>() {
            if self.enter(obj, depth) {
                self.seq(s.iter(), depth);
                self.leave();
            }
            return;
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            self.bytes(b.as_bytes());
            return;
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            let v = b.to_vec();
            self.bytes(&v);
            return;
        }
        self.rare(py, obj, depth);
    }

    fn bytes(&mut self, b: &[u8]) {
        match std::str::from_utf8(b) {
            Ok(s) => self.string(s),
            Err(_) => {
                let room = self.budget.saturating_sub(self.out.len() + 10) * 3 / 4;
                let enc = base64(&b[..b.len().min(room)]);
                if b.len() > room {
                    self.truncated = true;
                    self.string(&format!("base64:{enc}{TRUNCATED}"));
                } else {
                    self.string(&format!("base64:{enc}"));
                }
            }
        }
    }

    fn rare(&mut self, py: Python<'_>, obj: &Bound<'_, PyAny>, depth: usize) {
        let ty = obj.get_type();
        let Some(t) = types(py) else {
            self.fallback(obj);
            return;
        };
        // Enum before int/str checks of subclasses already happened above: IntEnum and
        // StrEnum are caught as int/str, which is their JSON value anyway.
        if obj.is_instance(t.enum_type.bind(py)).unwrap_or(false) {
            match obj.getattr(intern!(py, "value")) {
                Ok(v) if depth < MAX_DEPTH => self.value(&v, depth + 1),
                _ => self.fallback(obj),
            }
            return;
        }
        if obj.is_instance(t.datetime.bind(py)).unwrap_or(false)
            || obj.is_instance(t.date.bind(py)).unwrap_or(false)
            || obj.is_instance(t.time.bind(py)).unwrap_or(false)
        {
            self.call_str(obj, intern!(py, "isoformat"));
            return;
        }
        if obj.is_instance(t.uuid.bind(py)).unwrap_or(false)
            || obj.is_instance(t.decimal.bind(py)).unwrap_or(false)
        {
            match obj.str() {
                Ok(s) => self.string(&crate::pystr::text(&s)),
                Err(_) => self.fallback(obj),
            }
            return;
        }
        if ty.is_subclass_of::<PyType>().unwrap_or(false) {
            // A class object: its name (dataclass/model classes would match below).
            self.fallback(obj);
            return;
        }
        // dataclasses
        if let Ok(fields) = ty.getattr(intern!(py, "__dataclass_fields__")) {
            if let Ok(fields) = fields.cast::<PyDict>() {
                if self.enter(obj, depth) {
                    let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = fields
                        .keys()
                        .iter()
                        .filter_map(|k| {
                            let v = obj.getattr(k.cast::<PyString>().ok()?).ok()?;
                            Some((k, v))
                        })
                        .collect();
                    self.object(items.into_iter(), depth);
                    self.leave();
                }
                return;
            }
        }
        // pydantic v2 models
        if ty
            .hasattr(intern!(py, "__pydantic_fields__"))
            .unwrap_or(false)
        {
            let dumped = obj.call_method(
                intern!(py, "model_dump"),
                (),
                Some(
                    &[("mode", "json")]
                        .into_py_dict(py)
                        .unwrap_or_else(|_| PyDict::new(py)),
                ),
            );
            match dumped {
                Ok(d) if depth < MAX_DEPTH => self.value(&d, depth + 1),
                _ => {
                    CONVERSION_ERRORS.fetch_add(1, Ordering::Relaxed);
                    self.fallback(obj);
                }
            }
            return;
        }
        // numpy arrays and scalars (without importing numpy ourselves)
        let module = ty
            .getattr(intern!(py, "__module__"))
            .ok()
            .and_then(|m| m.extract::<String>().ok())
            .unwrap_or_default();
        if module == "numpy" || module.starts_with("numpy.") {
            if let Ok(size) = obj
                .getattr(intern!(py, "size"))
                .and_then(|s| s.extract::<usize>())
            {
                if obj.hasattr(intern!(py, "shape")).unwrap_or(false) && size > 0 {
                    let room = self.budget.saturating_sub(self.out.len());
                    // Rough guard: an element needs at least 2 bytes of JSON.
                    if size.saturating_mul(2) > room.max(64) * 4 {
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
                        self.truncated = true;
                        self.string(&format!(
                            "<ndarray shape={shape} dtype={dtype} {TRUNCATED}>"
                        ));
                        return;
                    }
                }
            }
            if let Ok(v) = obj.call_method0(intern!(py, "tolist")) {
                if depth < MAX_DEPTH {
                    self.value(&v, depth + 1);
                    return;
                }
            }
        }
        if obj.is_instance(t.mapping.bind(py)).unwrap_or(false) {
            if let Ok(items) = obj.call_method0(intern!(py, "items")) {
                if let Ok(iter) = items.try_iter() {
                    if self.enter(obj, depth) {
                        let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> =
                            iter.filter_map(|p| p.ok()?.extract().ok()).collect();
                        self.object(pairs.into_iter(), depth);
                        self.leave();
                    }
                    return;
                }
            }
        }
        if let Ok(d) = obj.getattr(intern!(py, "__dict__")) {
            if let Ok(d) = d.cast::<PyDict>() {
                if !d.is_empty() && self.enter(obj, depth) {
                    self.object(d.iter(), depth);
                    self.leave();
                    return;
                }
            }
        }
        self.fallback(obj);
    }

    fn call_str(&mut self, obj: &Bound<'_, PyAny>, method: &Bound<'_, PyString>) {
        match obj.call_method0(method).and_then(|s| s.str()) {
            Ok(s) => self.string(&crate::pystr::text(&s)),
            Err(_) => {
                CONVERSION_ERRORS.fetch_add(1, Ordering::Relaxed);
                self.fallback(obj);
            }
        }
    }
}

use pyo3::types::IntoPyDict;

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

/// JSON text of any Python object within `budget` bytes (plus a short marker).
pub fn to_json_text(obj: &Bound<'_, PyAny>, budget: usize) -> String {
    let mut w = JsonWriter::new(budget);
    w.value(obj, 0);
    w.out
}

/// A `serde_json::Value` of a Python object (REST payloads): via the writer, so every
/// type above is handled the same way.
pub fn to_json(obj: &Bound<'_, PyAny>) -> serde_json::Value {
    let text = to_json_text(obj, 1 << 20);
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
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
        assert_eq!(budget_str("abcdef", 3), format!("abc{TRUNCATED}"));
        assert_eq!(budget_str("abc", 3), "abc");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001\"");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
    }
}
