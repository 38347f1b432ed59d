//! Reading a Python `str` as UTF-8, without a copy where CPython allows it.
//!
//! Under the stable ABI of Python 3.9 (our wheel's floor) pyo3 reads a `str` by
//! encoding it into a new `bytes` object and copying that out: an allocation and a copy
//! per header, attribute key and captured string. `PyUnicode_AsUTF8AndSize` returns the
//! UTF-8 form CPython caches inside the string itself (for ASCII strings, the string's
//! own storage). It is in the stable ABI from 3.10 and exported by every CPython 3, so
//! it is looked up once with `dlsym`; when absent we fall back to pyo3's copy.

use pyo3::prelude::*;
use pyo3::types::PyString;
use std::borrow::Cow;
use std::sync::OnceLock;

type AsUtf8AndSize = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *mut pyo3::ffi::Py_ssize_t,
) -> *const std::os::raw::c_char;

static AS_UTF8: OnceLock<Option<AsUtf8AndSize>> = OnceLock::new();

#[cfg(unix)]
fn lookup() -> Option<AsUtf8AndSize> {
    // SAFETY: dlsym with RTLD_DEFAULT only reads the process's symbol tables; the
    // transmute gives the symbol the signature CPython documents for it.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, c"PyUnicode_AsUTF8AndSize".as_ptr());
        (!p.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, AsUtf8AndSize>(p))
    }
}

#[cfg(not(unix))]
fn lookup() -> Option<AsUtf8AndSize> {
    None
}

/// The text of `s`, borrowed from the string object when possible. Lone surrogates
/// (not valid UTF-8) are replaced with U+FFFD, as `to_string_lossy` does.
pub fn text<'a>(s: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    if let Some(f) = *AS_UTF8.get_or_init(lookup) {
        let mut len: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: attached to the interpreter (we hold a Bound); `s` is a str. The
        // returned buffer belongs to the string object, which is immutable and kept
        // alive by the borrow of `s` for 'a; CPython guarantees it is valid UTF-8.
        let p = unsafe { f(s.as_ptr(), &raw mut len) };
        if !p.is_null() {
            let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) };
            return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        // A string with lone surrogates: clear the UnicodeEncodeError, go the slow way.
        let _ = PyErr::take(s.py());
    }
    s.to_string_lossy()
}

/// The length of `s` in code points, without decoding it (stable ABI).
pub fn char_len(s: &Bound<'_, PyString>) -> usize {
    // SAFETY: attached; `s` is a str, for which PyUnicode_GetLength cannot fail.
    let n = unsafe { pyo3::ffi::PyUnicode_GetLength(s.as_ptr()) };
    usize::try_from(n).unwrap_or(0)
}

/// The text of `v` if it is a `str` (any other object would need user code to read).
pub fn str_of(v: &Bound<'_, PyAny>) -> Option<String> {
    v.cast::<PyString>().ok().map(|s| text(s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ascii_unicode_and_surrogates() {
        Python::initialize();
        Python::attach(|py| {
            let a = PyString::new(py, "traceparent");
            assert_eq!(text(&a), "traceparent");
            assert!(matches!(text(&a), Cow::Borrowed(_)));
            let u = PyString::new(py, "héllo ✓");
            assert_eq!(text(&u), "héllo ✓");
            assert_eq!(char_len(&u), 7);
            let s = py.eval(c"'a\\udc80b'", None, None).unwrap();
            let s = s.cast::<PyString>().unwrap();
            let t = text(s);
            assert!(t.starts_with('a') && t.ends_with('b') && t.contains('\u{FFFD}'));
            assert!(PyErr::take(py).is_none());
        });
    }
}
