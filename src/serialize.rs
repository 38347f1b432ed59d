//! Python object -> JSON value, never failing: anything without a JSON shape becomes
//! its `repr`. Bounded depth so a cyclic or absurdly deep object cannot recurse forever.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple};
use serde_json::{Map, Number, Value};

const MAX_DEPTH: usize = 32;

fn repr_of(obj: &Bound<'_, PyAny>) -> Value {
    match obj.repr() {
        Ok(r) => Value::String(r.to_string()),
        Err(_) => Value::String(format!("<unrepresentable {}>", type_name(obj))),
    }
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_string())
}

pub fn to_json(obj: &Bound<'_, PyAny>) -> Value {
    to_json_depth(obj, 0)
}

fn to_json_depth(obj: &Bound<'_, PyAny>, depth: usize) -> Value {
    if obj.is_none() {
        return Value::Null;
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Value::String(s.to_string_lossy().into_owned());
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Value::Bool(b.is_true());
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Value::Number(i.into());
        }
        return repr_of(obj);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.value().to_string()));
    }
    if depth >= MAX_DEPTH {
        return Value::String("<max depth>".to_string());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = Map::new();
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => s.to_string_lossy().into_owned(),
                Err(_) => k.str().map(|s| s.to_string()).unwrap_or_default(),
            };
            m.insert(key, to_json_depth(&v, depth + 1));
        }
        return Value::Object(m);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return Value::Array(l.iter().map(|v| to_json_depth(&v, depth + 1)).collect());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Value::Array(t.iter().map(|v| to_json_depth(&v, depth + 1)).collect());
    }
    if let Ok(s) = obj.cast::<PySet>() {
        return Value::Array(s.iter().map(|v| to_json_depth(&v, depth + 1)).collect());
    }
    if let Ok(s) = obj.cast::<PyFrozenSet>() {
        return Value::Array(s.iter().map(|v| to_json_depth(&v, depth + 1)).collect());
    }
    repr_of(obj)
}
