//! Reading and writing propagation headers in any carrier, case-insensitively.
//!
//! Accepted: a dict in any key case (`dict(request.headers)` gives `Traceparent`), a
//! WSGI environ (`HTTP_TRACEPARENT`), an ASGI scope (its raw `headers` list), werkzeug
//! and Starlette header objects, requests' CaseInsensitiveDict, `email.message.Message`,
//! a list of `(name, value)` pairs (str or bytes); values may be lists of strings.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

#[derive(Default, Debug)]
pub struct Headers {
    pub traceparent: Vec<String>,
    pub tracestate: Vec<String>,
    pub baggage: Vec<String>,
}

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
fn text(v: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(s) = v.cast::<PyString>() {
        return Some(crate::pystr::text(s).into_owned());
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
        if !matches!(crate::pystr::char_len(s), 7 | 10 | 11 | 12 | 15 | 16) {
            return None;
        }
        return field_of(crate::pystr::text(s).as_bytes());
    }
    if let Ok(b) = k.cast::<PyBytes>() {
        return field_of(b.as_bytes());
    }
    None
}

impl Headers {
    fn push(&mut self, f: Field, v: &Bound<'_, PyAny>) {
        let target = match f {
            Field::Traceparent => &mut self.traceparent,
            Field::Tracestate => &mut self.tracestate,
            Field::Baggage => &mut self.baggage,
        };
        if let Some(s) = text(v) {
            target.push(s);
        } else if let Ok(l) = v.cast::<PyList>() {
            target.extend(l.iter().filter_map(|x| text(&x)));
        } else if let Ok(t) = v.cast::<PyTuple>() {
            target.extend(t.iter().filter_map(|x| text(&x)));
        }
    }

    fn pair(&mut self, k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) {
        if let Some(f) = name_field(k) {
            self.push(f, v);
        }
    }

    fn pairs(&mut self, items: &Bound<'_, PyAny>) {
        let Ok(iter) = items.try_iter() else { return };
        for item in iter.flatten() {
            if let Ok(t) = item.cast::<PyTuple>() {
                if t.len() == 2 {
                    if let (Ok(k), Ok(v)) = (t.get_item(0), t.get_item(1)) {
                        self.pair(&k, &v);
                    }
                }
            } else if let Ok(l) = item.cast::<PyList>() {
                if l.len() == 2 {
                    if let (Ok(k), Ok(v)) = (l.get_item(0), l.get_item(1)) {
                        self.pair(&k, &v);
                    }
                }
            }
        }
    }
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
                h.pairs(&raw);
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
                    h.push(f, &v);
                }
            }
            return h;
        }
        for (k, v) in d.iter() {
            h.pair(&k, &v);
        }
        return h;
    }
    if carrier.is_instance_of::<PyList>() || carrier.is_instance_of::<PyTuple>() {
        h.pairs(carrier);
        return h;
    }
    // Starlette Headers: the raw (bytes, bytes) list is the cheapest view.
    if let Ok(raw) = carrier.getattr(intern!(py, "raw")) {
        if raw.is_instance_of::<PyList>() {
            h.pairs(&raw);
            return h;
        }
    }
    if let Ok(items) = carrier.call_method0(intern!(py, "items")) {
        h.pairs(&items);
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
                h.push(f, &v);
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
                    .filter(|s| crate::pystr::char_len(s) == name.len())
                    .map(|s| {
                        let s = crate::pystr::text(s);
                        s.eq_ignore_ascii_case(name) && s != name
                    })
                    .unwrap_or(false)
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
    carrier
        .call_method1(intern!(py, "__setitem__"), (name, value))
        .is_ok()
}
