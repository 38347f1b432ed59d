//! Python arguments -> engine types: attribute values (the OpenTelemetry rules: str,
//! bool, int, float and homogeneous sequences of those; anything else is dropped and
//! counted as `attributes_dropped`; integers beyond int64 are kept as their decimal
//! text), names, timestamps, span kinds, links, and `SpanOptions`.
//!
//! Everything here is lenient: API misuse never raises into the user's code. Items of
//! a user's container are collected before they are converted, so a container changed
//! while it is read cannot break the iteration.

use crate::engine::diag::{self, COUNTERS};
use crate::engine::span::{ns_to_time, SpanOptions};
use crate::py::boundary::Section;
use crate::py::bridge::from_py_span_context;
use crate::py::pystr;
use opentelemetry::trace::{Link, SpanKind};
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;

fn invalid() {
    diag::count(&COUNTERS.attributes_dropped);
}

/// The decimal digits of a Python int, also of a subclass (an `IntEnum`, a class with
/// its own `__str__`): `int.__repr__` is C code and always gives digits. None past
/// the interpreter's limit on digits.
pub fn int_digits(obj: &Bound<'_, PyAny>) -> Option<String> {
    let py = obj.py();
    let r = py
        .get_type::<PyInt>()
        .getattr(intern!(py, "__repr__"))
        .and_then(|f| f.call1((obj,)))
        .ok()?;
    let s = pystr::text(r.cast::<PyString>().ok()?).into_owned();
    let digits = s.strip_prefix('-').unwrap_or(&s);
    (!digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())).then_some(s)
}

fn scalar(v: &Bound<'_, PyAny>) -> Option<Value> {
    if let Ok(s) = v.cast::<PyString>() {
        return Some(Value::String(pystr::text(s).into_owned().into()));
    }
    // bool before int: bool is an int subclass.
    if let Ok(b) = v.cast::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        return Some(match v.extract::<i64>() {
            Ok(i) => Value::I64(i),
            // Digits from `int.__repr__` (C code), also for a subclass.
            Err(_) => Value::String(int_digits(v)?.into()),
        });
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Some(Value::F64(f.value()));
    }
    None
}

fn sequence(items: Vec<Bound<'_, PyAny>>) -> Option<Value> {
    let Some(first) = items.first() else {
        // An empty sequence is valid; keep it as an empty string array.
        return Some(Value::Array(Array::String(Vec::new())));
    };
    if first.is_instance_of::<PyString>() {
        let mut out = Vec::with_capacity(items.len());
        for it in &items {
            out.push(StringValue::from(
                pystr::text(it.cast::<PyString>().ok()?).into_owned(),
            ));
        }
        return Some(Value::Array(Array::String(out)));
    }
    if first.is_instance_of::<PyBool>() {
        let mut out = Vec::with_capacity(items.len());
        for it in &items {
            out.push(it.cast::<PyBool>().ok()?.is_true());
        }
        return Some(Value::Array(Array::Bool(out)));
    }
    if first.is_instance_of::<PyInt>() {
        let mut out = Vec::with_capacity(items.len());
        for it in &items {
            if it.is_instance_of::<PyBool>() || !it.is_instance_of::<PyInt>() {
                return None;
            }
            out.push(it.extract::<i64>().ok()?);
        }
        return Some(Value::Array(Array::I64(out)));
    }
    if first.is_instance_of::<PyFloat>() {
        let mut out = Vec::with_capacity(items.len());
        for it in &items {
            out.push(it.cast::<PyFloat>().ok()?.value());
        }
        return Some(Value::Array(Array::F64(out)));
    }
    None
}

/// Any object as text (a span or event name): `str` as is, anything else `str(obj)`
/// (Python code: a section). API misuse must not raise into the user's code.
pub fn lenient_text(obj: &Bound<'_, PyAny>) -> String {
    if let Ok(s) = obj.cast::<PyString>() {
        return pystr::text(s).into_owned();
    }
    let Some(_section) = crate::py::boundary::Section::open() else {
        return "<unnamed>".to_string();
    };
    obj.str().map_or_else(
        |_| "<unnamed>".to_string(),
        |s| pystr::text(&s).into_owned(),
    )
}

/// The items of a dict, collected before anything else happens to it.
pub fn dict_items<'py>(d: &Bound<'py, PyDict>) -> Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    // Collected in one pass of `PyDict_Next` that runs no Python code (no hashing, no
    // comparison, only reference counts), so the dict cannot change size under it;
    // the caller then works on the copy, whatever user code does to the dict.
    let mut items = Vec::with_capacity(d.len());
    items.extend(d.iter());
    items
}

/// The truth of an argument: `default` for None or absent. A `bool` or an exact
/// `int` is read directly; anything else asks its `__bool__` (user code) inside a
/// section, and is `default` when it raises or the interpreter is exiting.
pub fn truthy(v: Option<&Bound<'_, PyAny>>, default: bool) -> bool {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return default;
    };
    if let Ok(b) = v.cast::<PyBool>() {
        return b.is_true();
    }
    if v.is_exact_instance_of::<PyInt>() {
        return v.extract::<i64>().map_or(true, |i| i != 0);
    }
    Section::open()
        .and_then(|_s| v.is_truthy().ok())
        .unwrap_or(default)
}

/// A keyword flag that defaults to True (None or absent means True).
pub fn flag(v: Option<&Bound<'_, PyAny>>) -> bool {
    truthy(v, true)
}

/// A number read by `read`: directly from an exact `int` (no user code); from
/// anything else (an `__index__`, an enum's `value` property) inside a section.
fn user_int<T>(
    v: &Bound<'_, PyAny>,
    read: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>,
) -> Option<T> {
    if v.is_exact_instance_of::<PyInt>() {
        return read(v).ok();
    }
    let _section = Section::open()?;
    read(v).ok()
}

/// An OpenTelemetry `SpanKind` (the enum, or its integer value).
pub fn span_kind(kind: Option<&Bound<'_, PyAny>>) -> SpanKind {
    let Some(k) = kind.filter(|k| !k.is_none()) else {
        return SpanKind::Internal;
    };
    let py = k.py();
    let v: i64 = user_int(k, |k| {
        k.extract::<i64>()
            .or_else(|_| k.getattr(intern!(py, "value")).and_then(|v| v.extract()))
    })
    .unwrap_or(0);
    match v {
        1 => SpanKind::Server,
        2 => SpanKind::Client,
        3 => SpanKind::Producer,
        4 => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

/// OpenTelemetry `Link`s (anything with `.context` and `.attributes`).
pub fn links(links: Option<&Bound<'_, PyAny>>) -> Vec<Link> {
    let Some(links) = links.filter(|l| !l.is_none()) else {
        return Vec::new();
    };
    let py = links.py();
    let Some(_section) = crate::py::boundary::Section::open() else {
        return Vec::new();
    };
    let Ok(iter) = links.try_iter() else {
        diag::count(&COUNTERS.invalid_arguments);
        return Vec::new();
    };
    let items: Vec<Bound<'_, PyAny>> = iter.filter_map(Result::ok).collect();
    items
        .into_iter()
        .filter_map(|link| {
            let sc = from_py_span_context(&link.getattr(intern!(py, "context")).ok()?)?;
            let mut kvs = Vec::new();
            if let Ok(a) = link.getattr(intern!(py, "attributes")) {
                if !a.is_none() {
                    from_mapping(&a, &mut kvs);
                }
            }
            Some(Link::new(sc, kvs, 0))
        })
        .collect()
}

/// The arguments of OpenTelemetry's `start_span`, as `SpanOptions`.
pub struct SpanArgs<'a, 'py> {
    pub name: &'a Bound<'py, PyAny>,
    pub kind: Option<&'a Bound<'py, PyAny>>,
    pub attributes: Option<&'a Bound<'py, PyAny>>,
    pub links: Option<&'a Bound<'py, PyAny>>,
    pub start_time: Option<&'a Bound<'py, PyAny>>,
    pub record_exception: Option<&'a Bound<'py, PyAny>>,
    pub set_status_on_exception: Option<&'a Bound<'py, PyAny>>,
}

impl SpanArgs<'_, '_> {
    pub fn options(&self) -> SpanOptions {
        let mut attributes = Vec::new();
        if let Some(a) = self.attributes.filter(|a| !a.is_none()) {
            from_mapping(a, &mut attributes);
        }
        SpanOptions {
            name: Cow::Owned(lenient_text(self.name)),
            kind: span_kind(self.kind),
            attributes,
            links: links(self.links),
            start_time: lenient_ns(self.start_time).map(ns_to_time),
            record_exception: flag(self.record_exception),
            set_status_on_exception: flag(self.set_status_on_exception),
        }
    }
}

/// A timestamp in nanoseconds since the epoch; `None` for None or anything unusable
/// (counted as an invalid argument).
pub fn lenient_ns(obj: Option<&Bound<'_, PyAny>>) -> Option<u64> {
    let o = obj.filter(|o| !o.is_none())?;
    if let Some(i) = user_int(o, |o| o.extract::<u64>()) {
        return Some(i);
    }
    let f = o
        .cast::<PyFloat>()
        .ok()
        .map(pyo3::types::PyFloatMethods::value)
        .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19);
    if f.is_none() {
        diag::count(&COUNTERS.invalid_arguments);
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    f.map(|f| f as u64)
}

/// Convert a Python attribute value; `None` when OpenTelemetry would reject it.
pub fn to_value(v: &Bound<'_, PyAny>) -> Option<Value> {
    if let Some(s) = scalar(v) {
        return Some(s);
    }
    if let Ok(l) = v.cast::<PyList>() {
        // A snapshot of the items: the list may change under us.
        return sequence(l.to_tuple().iter().collect());
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return sequence(t.iter().collect());
    }
    None
}

/// Convert a mapping of attributes, dropping (and counting) invalid entries.
pub fn from_mapping(attrs: &Bound<'_, PyAny>, out: &mut Vec<KeyValue>) {
    let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if let Ok(d) = attrs.cast::<PyDict>() {
        dict_items(d)
    } else {
        let Some(_section) = crate::py::boundary::Section::open() else {
            return;
        };
        if let Ok(iter) = attrs.call_method0("items").and_then(|it| it.try_iter()) {
            iter.filter_map(|pair| pair.ok()?.extract::<(Bound<PyAny>, Bound<PyAny>)>().ok())
                .collect()
        } else {
            invalid();
            return;
        }
    };
    out.reserve(items.len());
    for (k, v) in items {
        let Ok(key) = k.cast::<PyString>() else {
            invalid();
            continue;
        };
        let key = pystr::text(key);
        match to_value(&v) {
            Some(value) => out.push(KeyValue::new(Key::new(key.into_owned()), value)),
            None => invalid(),
        }
    }
}

pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::I64(i) => i.into_pyobject(py)?.into_any(),
        Value::F64(f) => PyFloat::new(py, *f).into_any(),
        Value::String(s) => PyString::new(py, s.as_str()).into_any(),
        Value::Array(a) => match a {
            Array::Bool(x) => PyList::new(py, x)?.into_any(),
            Array::I64(x) => PyList::new(py, x)?.into_any(),
            Array::F64(x) => PyList::new(py, x)?.into_any(),
            Array::String(x) => {
                PyList::new(py, x.iter().map(opentelemetry::StringValue::as_str))?.into_any()
            }
            _ => PyList::empty(py).into_any(),
        },
        _ => py.None().into_bound(py),
    })
}

/// Attributes as a Python dict.
pub fn kvs_to_dict<'py>(py: Python<'py>, kvs: &[KeyValue]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for kv in kvs {
        d.set_item(kv.key.as_str(), value_to_py(py, &kv.value)?)?;
    }
    Ok(d)
}

/// A time as nanoseconds since the epoch (0 before it, saturating past u64).
pub fn ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
