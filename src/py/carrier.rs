//! Reading and writing propagation headers in any carrier, case-insensitively.
//!
//! Accepted: a dict in any key case (`dict(request.headers)` gives `Traceparent`), a
//! WSGI environ (`HTTP_TRACEPARENT`), an ASGI scope (its raw `headers` list), werkzeug
//! and Starlette header objects, requests' CaseInsensitiveDict, `email.message.Message`,
//! a list of `(name, value)` pairs (str or bytes); values may be lists of strings.

use crate::engine::propagation::policy::Headers;
use crate::py::boundary::Section;
use crate::py::convert::dict_items;
use crate::py::pystr;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

#[derive(Clone, Copy)]
enum Field {
    Traceparent,
    Tracestate,
    Baggage,
}

fn field_of(name: &[u8]) -> Option<Field> {
    let name = match name.len() {
        16 | 15 | 12 if name[..5].eq_ignore_ascii_case(b"HTTP_") => &name[5..],
        _ => name,
    };
    if name.eq_ignore_ascii_case(b"traceparent") {
        Some(Field::Traceparent)
    } else if name.eq_ignore_ascii_case(b"tracestate") {
        Some(Field::Tracestate)
    } else if name.eq_ignore_ascii_case(b"baggage") {
        Some(Field::Baggage)
    } else {
        None
    }
}

/// Header names and values may be str or bytes (latin-1, as HTTP is).
pub(crate) fn text(v: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(s) = v.cast::<PyString>() {
        return Some(pystr::text(s).into_owned());
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Some(b.as_bytes().iter().map(|&c| c as char).collect());
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Some(b.to_vec().iter().map(|&c| c as char).collect());
    }
    None
}

fn name_field(k: &Bound<'_, PyAny>) -> Option<Field> {
    if let Ok(s) = k.cast::<PyString>() {
        // Most keys of a WSGI environ or a header dict are not ours: skip them by
        // length before reading any text.
        if !matches!(pystr::char_len(s), 7 | 10 | 11 | 12 | 15 | 16) {
            return None;
        }
        return field_of(pystr::text(s).as_bytes());
    }
    if let Ok(b) = k.cast::<PyBytes>() {
        return field_of(b.as_bytes());
    }
    None
}

fn push(h: &mut Headers, f: Field, v: &Bound<'_, PyAny>) {
    let target = match f {
        Field::Traceparent => &mut h.traceparent,
        Field::Tracestate => &mut h.tracestate,
        Field::Baggage => &mut h.baggage,
    };
    if let Some(s) = text(v) {
        target.push(s);
    } else if let Ok(l) = v.cast::<PyList>() {
        target.extend(l.to_tuple().iter().filter_map(|x| text(&x)));
    } else if let Ok(t) = v.cast::<PyTuple>() {
        target.extend(t.iter().filter_map(|x| text(&x)));
    }
}

fn pair(h: &mut Headers, k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) {
    if let Some(f) = name_field(k) {
        push(h, f, v);
    }
}

/// `(name, value)` pairs from a list or any iterable (iterating a foreign object runs
/// its code: only inside a section).
fn pairs(h: &mut Headers, items: &Bound<'_, PyAny>) {
    let items = if items.is_instance_of::<PyList>() || items.is_instance_of::<PyTuple>() {
        items.clone()
    } else {
        let Some(_section) = Section::open() else {
            return;
        };
        match items.try_iter() {
            Ok(iter) => match PyList::new(items.py(), iter.flatten().collect::<Vec<_>>()) {
                Ok(l) => l.into_any(),
                Err(_) => return,
            },
            Err(_) => return,
        }
    };
    each_pair(&items, |k, v| {
        pair(h, k, v);
        true
    });
}

/// Call `f(name, value)` for each two-item tuple or list in `items` (a list or a
/// tuple: reading them runs no user code) until it returns false.
fn each_pair(
    items: &Bound<'_, PyAny>,
    mut f: impl FnMut(&Bound<'_, PyAny>, &Bound<'_, PyAny>) -> bool,
) {
    let Ok(iter) = items.try_iter() else { return };
    for item in iter.flatten() {
        let kv = if let Ok(t) = item.cast::<PyTuple>() {
            (t.len() == 2).then(|| (t.get_item(0), t.get_item(1)))
        } else if let Ok(l) = item.cast::<PyList>() {
            (l.len() == 2).then(|| (l.get_item(0), l.get_item(1)))
        } else {
            None
        };
        if let Some((Ok(k), Ok(v))) = kv {
            if !f(&k, &v) {
                return;
            }
        }
    }
}

/// The first value of header `name` (ASCII, any case) in an ASGI-style list of
/// `(name, value)` pairs; None for anything but a list or tuple.
pub fn header(items: &Bound<'_, PyAny>, name: &str) -> Option<String> {
    if !(items.is_instance_of::<PyList>() || items.is_instance_of::<PyTuple>()) {
        return None;
    }
    let mut found = None;
    each_pair(items, |k, v| {
        if text(k).is_some_and(|k| k.eq_ignore_ascii_case(name)) {
            found = text(v);
            return false;
        }
        true
    });
    found
}

/// Collect the three propagation headers from `carrier`; never raises.
pub fn read(carrier: &Bound<'_, PyAny>) -> Headers {
    let py = carrier.py();
    let mut h = Headers::default();
    if carrier.is_none() {
        return h;
    }
    if let Ok(d) = carrier.cast::<PyDict>() {
        // An ASGI scope carries its headers as a raw list.
        if let Ok(Some(raw)) = d.get_item(intern!(py, "headers")) {
            if raw.is_instance_of::<PyList>() && d.contains(intern!(py, "type")).unwrap_or(false) {
                pairs(&mut h, &raw);
                return h;
            }
        }
        // A WSGI environ: headers are already normalized to `HTTP_<NAME>`, so three
        // lookups instead of a scan of every key.
        if d.contains(intern!(py, "wsgi.version")).unwrap_or(false) {
            for (key, f) in [
                (intern!(py, "HTTP_TRACEPARENT"), Field::Traceparent),
                (intern!(py, "HTTP_TRACESTATE"), Field::Tracestate),
                (intern!(py, "HTTP_BAGGAGE"), Field::Baggage),
            ] {
                if let Ok(Some(v)) = d.get_item(key) {
                    push(&mut h, f, &v);
                }
            }
            return h;
        }
        for (k, v) in dict_items(d) {
            pair(&mut h, &k, &v);
        }
        return h;
    }
    if carrier.is_instance_of::<PyList>() || carrier.is_instance_of::<PyTuple>() {
        pairs(&mut h, carrier);
        return h;
    }
    // Anything else is another library's object: its methods are Python code.
    let Some(_section) = Section::open() else {
        return h;
    };
    // Starlette Headers: the raw (bytes, bytes) list is the cheapest view.
    if let Ok(raw) = carrier.getattr(intern!(py, "raw")) {
        if raw.is_instance_of::<PyList>() {
            pairs(&mut h, &raw);
            return h;
        }
    }
    if let Ok(items) = carrier.call_method0(intern!(py, "items")) {
        pairs(&mut h, &items);
        return h;
    }
    // Last resort: a `get(name)` mapping.
    for (name, f) in [
        ("traceparent", Field::Traceparent),
        ("tracestate", Field::Tracestate),
        ("baggage", Field::Baggage),
    ] {
        if let Ok(v) = carrier.call_method1(intern!(py, "get"), (name,)) {
            if !v.is_none() {
                push(&mut h, f, &v);
            }
        }
    }
    h
}

/// Write `name: value` into `carrier` (a mapping, or a list of pairs). False when the
/// carrier cannot take it.
pub fn write(carrier: &Bound<'_, PyAny>, name: &str, value: &str) -> bool {
    let py = carrier.py();
    if let Ok(d) = carrier.cast::<PyDict>() {
        // Replace any other spelling of the same header first.
        let stale: Vec<Bound<'_, PyAny>> = d
            .keys()
            .iter()
            .filter(|k| {
                k.cast::<PyString>()
                    .ok()
                    .filter(|s| pystr::char_len(s) == name.len())
                    .is_some_and(|s| {
                        let s = pystr::text(s);
                        s.eq_ignore_ascii_case(name) && s != name
                    })
            })
            .collect();
        for k in stale {
            let _ = d.del_item(k);
        }
        return d.set_item(name, value).is_ok();
    }
    if let Ok(l) = carrier.cast::<PyList>() {
        return l.append((name, value)).is_ok();
    }
    let Some(_section) = Section::open() else {
        return false;
    };
    carrier
        .call_method1(intern!(py, "__setitem__"), (name, value))
        .is_ok()
}
