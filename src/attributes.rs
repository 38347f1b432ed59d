//! Python value <-> OpenTelemetry attribute value.
//!
//! `set_attribute` follows the OpenTelemetry rules: str, bool, int, float and
//! homogeneous sequences of those; anything else is dropped and counted (stats
//! `attributes_dropped`). Integers beyond int64 are kept as their decimal string
//! rather than lost.

use opentelemetry::{Array, Key, KeyValue, StringValue, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::sync::atomic::{AtomicU64, Ordering};

/// Attribute values rejected for their type, process-wide.
pub static INVALID_VALUES: AtomicU64 = AtomicU64::new(0);

fn scalar(v: &Bound<'_, PyAny>) -> Option<Value> {
    if let Ok(s) = v.cast::<PyString>() {
        return Some(Value::String(crate::pystr::text(s).into_owned().into()));
    }
    // bool before int: bool is an int subclass.
    if let Ok(b) = v.cast::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        return Some(match v.extract::<i64>() {
            Ok(i) => Value::I64(i),
            Err(_) => Value::String(v.str().ok()?.to_string().into()),
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
                crate::pystr::text(it.cast::<PyString>().ok()?).into_owned(),
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

/// Any object as text (a span or event name): `str` as is, anything else `str(obj)`.
/// API misuse must not raise into the user's code.
pub fn lenient_text(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyString>() {
        Ok(s) => crate::pystr::text(s).into_owned(),
        Err(_) => obj
            .str()
            .map(|s| crate::pystr::text(&s).into_owned())
            .unwrap_or_else(|_| "<unnamed>".to_string()),
    }
}

/// A timestamp in nanoseconds since the epoch; `None` for None or anything unusable.
pub fn lenient_ns(obj: Option<&Bound<'_, PyAny>>) -> Option<u64> {
    let o = obj.filter(|o| !o.is_none())?;
    if let Ok(i) = o.extract::<u64>() {
        return Some(i);
    }
    o.extract::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| f as u64)
}

/// Convert a Python attribute value; `None` when OpenTelemetry would reject it.
pub fn to_value(v: &Bound<'_, PyAny>) -> Option<Value> {
    if let Some(s) = scalar(v) {
        return Some(s);
    }
    if let Ok(l) = v.cast::<PyList>() {
        return sequence(l.iter().collect());
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return sequence(t.iter().collect());
    }
    None
}

/// Convert a mapping of attributes, dropping (and counting) invalid entries.
pub fn from_mapping(attrs: &Bound<'_, PyAny>, out: &mut Vec<KeyValue>) {
    let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if let Ok(d) = attrs.cast::<PyDict>() {
        d.iter().collect()
    } else {
        match attrs.call_method0("items").and_then(|it| it.try_iter()) {
            Ok(iter) => iter
                .filter_map(|pair| pair.ok()?.extract::<(Bound<PyAny>, Bound<PyAny>)>().ok())
                .collect(),
            Err(_) => {
                INVALID_VALUES.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    out.reserve(items.len());
    for (k, v) in items {
        let Ok(key) = k.cast::<PyString>() else {
            INVALID_VALUES.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let key = crate::pystr::text(key);
        match to_value(&v) {
            Some(value) => out.push(KeyValue::new(Key::new(key.into_owned()), value)),
            None => {
                INVALID_VALUES.fetch_add(1, Ordering::Relaxed);
            }
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
            Array::String(x) => PyList::new(py, x.iter().map(|s| s.as_str()))?.into_any(),
            _ => PyList::empty(py).into_any(),
        },
        _ => py.None().into_bound(py),
    })
}

pub fn kvs_to_dict<'py>(py: Python<'py>, kvs: &[KeyValue]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for kv in kvs {
        d.set_item(kv.key.as_str(), value_to_py(py, &kv.value)?)?;
    }
    Ok(d)
}

/// Last write wins, at the position of the first write (Python dict semantics).
/// The SDK appends on every `set_attribute`; this runs off the hot path, at export.
pub fn dedup(attrs: &mut Vec<KeyValue>) {
    let n = attrs.len();
    if n < 2 {
        return;
    }
    let has_dup = if n <= 16 {
        (1..n).any(|i| attrs[..i].iter().any(|a| a.key == attrs[i].key))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(n);
        attrs.iter().any(|a| !seen.insert(a.key.as_str()))
    };
    if !has_dup {
        return;
    }
    let mut index: std::collections::HashMap<Key, usize> =
        std::collections::HashMap::with_capacity(n);
    let mut out: Vec<KeyValue> = Vec::with_capacity(n);
    for kv in attrs.drain(..) {
        match index.get(&kv.key) {
            Some(&i) => out[i].value = kv.value,
            None => {
                index.insert(kv.key.clone(), out.len());
                out.push(kv);
            }
        }
    }
    *attrs = out;
}

// ---------------------------------------------------------------------------------
// Captured values (inputs, outputs, enrichment): budgets, flattening, redaction.

use crate::serialize::{budget_str, to_json_text};
use std::sync::Mutex;

/// Default per-attribute byte budget for captured values.
pub const DEFAULT_BUDGET: usize = 64 * 1024;
/// Flattening writes at most this many attributes per call (then one marker).
const MAX_FLATTENED: usize = 512;

static REDACTOR: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
static HAS_REDACTOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Values the redaction hook failed on (replaced, never exported unredacted).
pub static REDACTION_ERRORS: AtomicU64 = AtomicU64::new(0);

pub fn set_redactor(hook: Option<Py<PyAny>>) {
    HAS_REDACTOR.store(hook.is_some(), Ordering::Relaxed);
    *REDACTOR.lock().unwrap_or_else(|p| p.into_inner()) = hook;
}

/// The value to capture for `key`, after the process-wide redaction hook.
fn redacted<'py>(key: &str, value: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    if !HAS_REDACTOR.load(Ordering::Relaxed) {
        return value.clone();
    }
    let py = value.py();
    let hook = REDACTOR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|h| h.clone_ref(py));
    let Some(hook) = hook else {
        return value.clone();
    };
    match hook.bind(py).call1((key, value)) {
        Ok(v) => v,
        Err(e) => {
            REDACTION_ERRORS.fetch_add(1, Ordering::Relaxed);
            crate::diag::warn_limited(
                "redact-failed",
                &format!("the redaction hook raised {e} for {key}; the value was replaced"),
            );
            PyString::new(py, "<redaction failed>").into_any()
        }
    }
}

/// One captured value as an attribute value: str/int/float/bool native (strings within
/// the budget), None skipped, anything else JSON text within the budget.
pub fn captured(value: &Bound<'_, PyAny>, budget: usize) -> Option<Value> {
    if value.is_none() {
        return None;
    }
    if let Ok(s) = value.cast::<PyString>() {
        let s = crate::pystr::text(s);
        return Some(Value::String(budget_str(&s, budget).into()));
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(i) = value.extract::<i64>() {
            return Some(Value::I64(i));
        }
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Some(Value::F64(f.value()));
    }
    Some(Value::String(to_json_text(value, budget).into()))
}

/// Capture `value` under `key` (redaction hook first).
pub fn capture_into(key: Key, value: &Bound<'_, PyAny>, budget: usize, out: &mut Vec<KeyValue>) {
    let v = redacted(key.as_str(), value);
    if let Some(v) = captured(&v, budget) {
        out.push(KeyValue::new(key, v));
    }
}

/// HoneyHive flattening (reference §4.2): dicts recurse as `prefix.key`, lists and
/// tuples as `prefix.index`, None is skipped at every depth, scalars stay native,
/// anything else becomes JSON. Bounded in depth and count.
pub fn flatten(prefix: &str, value: &Bound<'_, PyAny>, budget: usize, out: &mut Vec<KeyValue>) {
    let mut written = 0usize;
    flatten_inner(prefix, value, budget, out, 0, &mut written);
}

fn flatten_inner(
    prefix: &str,
    value: &Bound<'_, PyAny>,
    budget: usize,
    out: &mut Vec<KeyValue>,
    depth: usize,
    written: &mut usize,
) {
    if value.is_none() {
        return;
    }
    if *written >= MAX_FLATTENED {
        if *written == MAX_FLATTENED {
            out.push(KeyValue::new(
                format!("{prefix}.…"),
                crate::serialize::TRUNCATED,
            ));
            *written += 1;
        }
        return;
    }
    let children: Option<Vec<(String, Bound<'_, PyAny>)>> = if depth >= crate::serialize::MAX_DEPTH
    {
        None
    } else if let Ok(d) = value.cast::<PyDict>() {
        Some(
            d.iter()
                .map(|(k, v)| {
                    let k = match k.cast::<PyString>() {
                        Ok(s) => crate::pystr::text(s).into_owned(),
                        Err(_) => k.str().map(|s| s.to_string()).unwrap_or_default(),
                    };
                    (k, v)
                })
                .collect(),
        )
    } else if let Ok(l) = value.cast::<PyList>() {
        Some(
            l.iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        )
    } else if let Ok(t) = value.cast::<PyTuple>() {
        Some(
            t.iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        )
    } else {
        None
    };
    match children {
        Some(children) => {
            for (k, v) in children {
                flatten_inner(
                    &format!("{prefix}.{k}"),
                    &v,
                    budget,
                    out,
                    depth + 1,
                    written,
                );
            }
        }
        None => {
            let v = redacted(prefix, value);
            if let Some(v) = captured(&v, budget) {
                out.push(KeyValue::new(prefix.to_string(), v));
                *written += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_first_position_last_value() {
        let mut v = vec![
            KeyValue::new("a", 1),
            KeyValue::new("b", 2),
            KeyValue::new("a", 3),
        ];
        dedup(&mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key.as_str(), "a");
        assert_eq!(v[0].value, Value::I64(3));
        assert_eq!(v[1].value, Value::I64(2));
    }

    #[test]
    fn dedup_large_sets() {
        let mut v: Vec<KeyValue> = (0..40).map(|i| KeyValue::new(format!("k{i}"), i)).collect();
        v.push(KeyValue::new("k5", 99));
        dedup(&mut v);
        assert_eq!(v.len(), 40);
        assert_eq!(v[5].value, Value::I64(99));
    }
}
