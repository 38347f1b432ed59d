//! `HoneyHiveTracer.init(**kwargs)` -> the engine's `RawValue`s: the keywords taken out
//! of their Python objects, each by the kind its setting declares
//! (`engine::config::settings`). None values are left out (None means "not given").

use crate::engine::config::settings::{self, Kind};
use crate::engine::config::value::RawValue;
use crate::py::capture::{to_json, type_name};
use crate::py::convert::dict_items;
use crate::py::pystr;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

fn raw(v: &Bound<'_, PyAny>, depth: usize) -> RawValue {
    if let Ok(b) = v.cast::<PyBool>() {
        return RawValue::Bool(b.is_true());
    }
    if v.is_instance_of::<PyInt>() {
        return match v.extract::<i64>() {
            Ok(i) => RawValue::Int(i),
            Err(_) => RawValue::BigInt(v.str().map(|s| s.to_string()).unwrap_or_default()),
        };
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return RawValue::Float(f.value());
    }
    if let Ok(s) = v.cast::<PyString>() {
        return RawValue::Str(pystr::text(s).into_owned());
    }
    if depth < 8 {
        if let Ok(d) = v.cast::<PyDict>() {
            return RawValue::Map(
                dict_items(d)
                    .iter()
                    .map(|(k, v)| (raw(k, depth + 1), raw(v, depth + 1)))
                    .collect(),
            );
        }
        if let Ok(l) = v.cast::<PyList>() {
            return RawValue::List(l.to_tuple().iter().map(|x| raw(&x, depth + 1)).collect());
        }
        if let Ok(t) = v.cast::<PyTuple>() {
            return RawValue::List(t.iter().map(|x| raw(&x, depth + 1)).collect());
        }
    }
    RawValue::Other(type_name(v))
}

/// The keywords as the parser reads them.
pub fn raw_kwargs(kwargs: &Bound<'_, PyDict>) -> PyResult<Vec<(String, RawValue)>> {
    let mut out = Vec::new();
    for (k, v) in dict_items(kwargs) {
        let Ok(k) = k.cast::<PyString>() else {
            continue;
        };
        let key = pystr::text(k).into_owned();
        if v.is_none() {
            continue;
        }
        let value = match settings::find(&key).map(|s| s.kind) {
            Some(Kind::Json) => RawValue::Json(to_json(&v)?),
            Some(Kind::Callable) if v.is_callable() => RawValue::Callable,
            _ => raw(&v, 0),
        };
        out.push((key, value));
    }
    Ok(out)
}
