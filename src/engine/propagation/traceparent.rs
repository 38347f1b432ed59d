//! W3C Trace Context `traceparent` and `tracestate`.
//!
//! Version 00 must be exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version (01 to
//! fe) may carry more fields after a `-` (forward compatibility); `ff` is invalid, as
//! are all-zero ids, uppercase hex and anything malformed: the caller then starts a
//! new trace.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The flags Trace Context Level 2 defines: sampled (0x01) and random (0x02: the
/// trace id's right-most 7 bytes are random). Version 00 carries only these.
pub const KNOWN_FLAGS: u8 = 0x03;
/// The flags of a trace we start: sampled, and random (our trace ids are random).
pub const NEW_TRACE_FLAGS: TraceFlags = TraceFlags::new(0x03);

/// At most this many `tracestate` members are kept (W3C: 32).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_hex_u128(s: &[u8]) -> Option<u128> {
    s.iter()
        .try_fold(0u128, |acc, &c| Some((acc << 4) | u128::from(hex_val(c)?)))
}

/// A remote parent from a `traceparent` value, or None when it must be ignored.
pub fn parse(value: &str) -> Option<SpanContext> {
    let v = value.trim_matches(|c| c == ' ' || c == '\t').as_bytes();
    if v.len() < 55 {
        return None;
    }
    let version = (hex_val(v[0])? << 4) | hex_val(v[1])?;
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if version == 0 && v.len() != 55 {
        return None;
    }
    if version > 0 && v.len() > 55 && v[55] != b'-' {
        return None;
    }
    let trace_id = parse_hex_u128(&v[3..35])?;
    let span_id = parse_hex_u128(&v[36..52])? as u64;
    let flags = (hex_val(v[53])? << 4) | hex_val(v[54])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    // Version 00 defines the sampled and random bits; keep the others for higher ones.
    let flags = if version == 0 {
        flags & KNOWN_FLAGS
    } else {
        flags
    };
    Some(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// A `tracestate` key (W3C Trace Context, current grammar): a lowercase letter or digit,
/// then up to 255 of lowercase letters, digits, `_`, `-`, `*`, `/` and `@`.
fn valid_state_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

/// A `tracestate` value: 1 to 256 printable ASCII characters other than `,` and `=`,
/// not ending in a space. Nothing else can reach an outgoing header.
fn valid_state_value(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b[b.len() - 1] != b' '
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// Whether `header` is a `tracestate` value honeytrace may send: what `parse_state`
/// keeps, unchanged.
pub fn valid_state_header(header: &str) -> bool {
    let (ts, dropped) = parse_state(&[header.to_string()]);
    !dropped && state_header(&ts) == header
}

// ---------------------------------------------------------------------------------
// Keys OpenTelemetry's TraceState refuses.
//
// OpenTelemetry's `TraceState` (Rust and Python) checks keys against the grammar of
// Trace Context Level 1: at most one `@`, and at most 14 characters after it. The
// current grammar allows any number of `@` anywhere after the first character. Such
// a key is kept in `STATE_KEYS`, and the `TraceState` holds `0*<index>` in its place
// (a key OpenTelemetry accepts); every reader of a tracestate that leaves
// honeytrace (`state_header`, `state_pairs`) puts the real key back. Values travel
// in the `TraceState` itself. Keys are vendor names, few per deployment, so the
// table is small and kept for the life of the process; it is bounded, and a list
// with a new such key once the table is full is discarded (counted, like any other
// list honeytrace cannot carry). An incoming key that itself starts with `0*` goes
// through the table too, so a `0*` key in a `TraceState` is always one of ours.

const REF_PREFIX: &str = "0*";
const MAX_STATE_KEYS: usize = 1024;

struct StateKeys {
    index: std::collections::HashMap<Box<str>, usize>,
    keys: Vec<std::sync::Arc<str>>,
}

static STATE_KEYS: std::sync::Mutex<Option<StateKeys>> = std::sync::Mutex::new(None);

/// Whether OpenTelemetry's Rust `TraceState` accepts `key` (its rules, restated).
fn otel_accepts_key(key: &str) -> bool {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 256 || !(b[0].is_ascii_lowercase() || b[0].is_ascii_digit()) {
        return false;
    }
    match b.iter().position(|&c| c == b'@') {
        None => true,
        Some(at) => {
            let vendor = &b[at + 1..];
            vendor.len() <= 13
                && !vendor.contains(&b'@')
                && vendor
                    .first()
                    .is_none_or(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }
    }
}

/// Whether OpenTelemetry's Python `TraceState` accepts `key` (its two patterns: a
/// simple key starting with a letter, or `tenant@system` with a system of at most 14
/// characters starting with a letter). Keys it refuses are left out of the Python
/// `SpanContext` (it would log a warning for each), never out of what is sent on.
pub fn python_accepts_key(key: &str) -> bool {
    let tail = |s: &[u8]| {
        s.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
        })
    };
    let b = key.as_bytes();
    match b.iter().position(|&c| c == b'@') {
        None => !b.is_empty() && b.len() <= 256 && b[0].is_ascii_lowercase() && tail(&b[1..]),
        Some(at) => {
            let (tenant, system) = (&b[..at], &b[at + 1..]);
            !tenant.is_empty()
                && tenant.len() <= 241
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tail(&tenant[1..])
                && !system.is_empty()
                && system.len() <= 14
                && system[0].is_ascii_lowercase()
                && tail(&system[1..])
        }
    }
}

/// The key to store in a `TraceState` for a valid `key`: itself, or its table
/// reference; None when the table is full.
fn stored_key(key: &str) -> Option<std::borrow::Cow<'_, str>> {
    if otel_accepts_key(key) && !key.starts_with(REF_PREFIX) {
        return Some(std::borrow::Cow::Borrowed(key));
    }
    let mut guard = STATE_KEYS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let table = guard.get_or_insert_with(|| StateKeys {
        index: std::collections::HashMap::new(),
        keys: Vec::new(),
    });
    let i = if let Some(&i) = table.index.get(key) {
        i
    } else {
        if table.keys.len() >= MAX_STATE_KEYS {
            return None;
        }
        table.keys.push(key.into());
        table.index.insert(key.into(), table.keys.len() - 1);
        table.keys.len() - 1
    };
    Some(std::borrow::Cow::Owned(format!("{REF_PREFIX}{i}")))
}

/// The real key for a key stored in a `TraceState`.
fn real_key(stored: &str) -> std::borrow::Cow<'_, str> {
    let Some(i) = stored
        .strip_prefix(REF_PREFIX)
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return std::borrow::Cow::Borrowed(stored);
    };
    let guard = STATE_KEYS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match guard.as_ref().and_then(|t| t.keys.get(i)) {
        Some(k) => std::borrow::Cow::Owned(k.to_string()),
        None => std::borrow::Cow::Borrowed(stored),
    }
}

/// The members of a `TraceState` with their real keys.
pub fn state_pairs(ts: &TraceState) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, &str)> {
    ts.into_iter().map(|(k, v)| (real_key(k), v))
}

/// The `tracestate` header value of a `TraceState`, with the real keys.
pub fn state_header(ts: &TraceState) -> String {
    if !ts.into_iter().any(|(k, _)| k.starts_with(REF_PREFIX)) {
        return ts.header();
    }
    let mut out = String::new();
    for (k, v) in state_pairs(ts) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// `tracestate` from one or more header values (joined in order, empty members and the
/// spaces and tabs around members ignored). A list that is invalid anywhere (a member
/// without `=`, a key or value outside the grammar, more than 32 members) is discarded
/// whole, as the W3C test harness and OpenTelemetry do; the flag says it was.
/// Duplicate keys: the first is kept.
pub fn parse_state(values: &[String]) -> (TraceState, bool) {
    let members: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() {
        return (TraceState::default(), false);
    }
    if members.len() > MAX_TRACESTATE_MEMBERS {
        return (TraceState::default(), true);
    }
    let mut pairs: Vec<(std::borrow::Cow<'_, str>, &str)> = Vec::with_capacity(members.len());
    for m in members {
        let Some((k, v)) = m.split_once('=') else {
            return (TraceState::default(), true);
        };
        if !valid_state_key(k) || !valid_state_value(v) {
            return (TraceState::default(), true);
        }
        // The stored key is unique per real key, so comparing stored keys finds
        // repeated real keys.
        let Some(stored) = stored_key(k) else {
            return (TraceState::default(), true);
        };
        if !pairs.iter().any(|(seen, _)| *seen == stored) {
            pairs.push((stored, v));
        }
    }
    match TraceState::from_key_value(pairs) {
        Ok(ts) => (ts, false),
        Err(_) => (TraceState::default(), true),
    }
}

/// The `traceparent` value for a span context.
pub fn format(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & KNOWN_FLAGS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_version_00() {
        let sc = parse(GOOD).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(parse(&format!(" {GOOD}\t")).is_some());
        assert!(
            !parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
                .unwrap()
                .is_sampled()
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "garbage",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn higher_versions_are_forward_compatible() {
        assert!(parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_some());
        assert!(
            parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future")
                .is_some()
        );
        assert!(parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01future").is_none());
    }

    #[test]
    fn tracestate_follows_the_current_grammar() {
        let one = |v: &str| parse_state(&[v.to_string()]);
        let many: String = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let (ts, dropped) = one(&many);
        assert!(
            dropped && ts.header().is_empty(),
            "33 members: discarded whole"
        );
        let (ts, dropped) = one(&many[..many.rfind(',').unwrap()]);
        assert!(!dropped);
        assert_eq!(ts.header().split(',').count(), 32);
        let (ts, _) = parse_state(&["a=1".to_string(), " b=2 ,\t".to_string()]);
        assert_eq!(ts.header(), "a=1,b=2");
        assert_eq!(one("foo@=1,bar=2").0.header(), "foo@=1,bar=2");
        assert_eq!(one("foo=1,foo=2").0.header(), "foo=1");
        assert_eq!(one("foo=a b").0.header(), "foo=a b");
        assert!(!one(&format!("{}=1", "z".repeat(256))).1);
        for bad in [
            "not valid at all",
            "@foo=1,bar=2",
            "foo=bar=baz",
            "foo=,bar=3",
            "Foo=1",
            "foo=caf\u{e9}",
            "foo=a\u{1}b",
            "foo=tab\there",
        ] {
            let (ts, dropped) = one(bad);
            assert!(dropped && ts.header().is_empty(), "{bad:?}");
        }
        let (_, dropped) = one(&format!("{}=1", "z".repeat(257)));
        assert!(dropped);
        // Keys OpenTelemetry's TraceState refuses are carried and sent on unchanged.
        for ok in [
            "foo@@bar=1,bar=2",
            "foo@bar@baz=1,bar=2",
            "0*0=x,0*1=y",
            "a=1,0*x=2",
        ] {
            let (ts, dropped) = one(ok);
            assert!(!dropped, "{ok:?}");
            assert_eq!(state_header(&ts), ok);
            assert!(valid_state_header(ok), "{ok:?}");
        }
        let long = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
        assert_eq!(state_header(&one(&long).0), long);
        let (ts, _) = one("foo@@bar=1,foo@@bar=2,b=3");
        assert_eq!(state_header(&ts), "foo@@bar=1,b=3");
        let keys: Vec<String> = state_pairs(&ts).map(|(k, _)| k.into_owned()).collect();
        assert_eq!(keys, ["foo@@bar", "b"]);
        assert!(valid_state_header("a=1,b=2"));
        assert!(!valid_state_header("a=caf\u{e9}"));
        assert!(!valid_state_header("a=1\r\nx: y"));
    }

    #[test]
    fn python_key_grammar() {
        for ok in ["a", "a-b*c/d_e", "1tenant@sys", "t@s2345678901234"] {
            assert!(python_accepts_key(ok), "{ok:?}");
        }
        for bad in [
            "1abc",
            "foo@@bar",
            "foo@",
            "t@1sys",
            "t@s23456789012345",
            "0*1",
        ] {
            assert!(!python_accepts_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_random_flag_is_kept() {
        let random = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02";
        let sc = parse(random).unwrap();
        assert!(!sc.is_sampled());
        assert_eq!(sc.trace_flags().to_u8(), 0x02);
        assert_eq!(format(&sc), random);
        let both = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";
        assert_eq!(format(&parse(both).unwrap()), both);
        // Undefined bits of version 00 are not passed on.
        let odd = parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff").unwrap();
        assert_eq!(odd.trace_flags().to_u8(), 0x03);
    }

    #[test]
    fn format_roundtrips() {
        assert_eq!(format(&parse(GOOD).unwrap()), GOOD);
    }
}
