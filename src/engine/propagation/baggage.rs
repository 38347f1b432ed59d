//! W3C Baggage: parsing with percent-decoding and limits, and encoding.
//!
//! Accepted: up to 64 members and 8192 bytes (the W3C minimums, and the limits of the
//! OpenTelemetry Rust SDK). Beyond those, members are dropped one by one and counted,
//! instead of losing the whole header; a huge header is never parsed past the limit.
//! Members with an invalid key or a missing `=` are dropped and counted. Values are
//! percent-decoded as the W3C Baggage spec says: an escape that does not decode to
//! UTF-8 becomes U+FFFD, and a `%` without two hex digits is kept as it is.
//! `;properties` are kept raw; `Member::properties` gives them normalized (`key` or
//! `key=value`, no spaces) for the members sent on, a property outside the grammar
//! dropped and counted.

use std::borrow::Cow;
use std::fmt::Write as _;

pub const MAX_MEMBERS: usize = 64;
pub const MAX_BYTES: usize = 8192;

/// One baggage member, borrowed from the header: key, decoded value (copied only when
/// it had percent-escapes), and its raw `;properties` (may be empty; `properties()`
/// gives them checked and in normal form, for the members that are sent on).
#[derive(Debug, Clone, PartialEq)]
pub struct Member<'a> {
    pub key: &'a str,
    pub value: Cow<'a, str>,
    pub props: &'a str,
}

#[derive(Debug, Default, PartialEq)]
pub struct Parsed<'a> {
    pub entries: Vec<Member<'a>>,
    /// Members dropped (malformed or over a limit).
    pub dropped: usize,
}

impl Member<'_> {
    /// The value of property `name` (`key=value;name=x`), if present.
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.props.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (ows(k) == name).then(|| ows(v))
        })
    }

    /// The properties checked and in normal form (see `normalize_props`), and how many
    /// were dropped.
    pub fn properties(&self) -> (Cow<'_, str>, usize) {
        if self.props.is_empty() {
            return (Cow::Borrowed(""), 0);
        }
        normalize_props(self.props)
    }
}

/// RFC 7230 token characters (W3C baggage keys, HTTP header names).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Text of 1 to `max` characters without control characters (an incoming or
/// configured session id, a baggage value the policy checks).
pub fn printable(s: &str, max: usize) -> bool {
    if s.is_empty() || s.chars().any(char::is_control) {
        return false;
    }
    // Bytes bound characters from above: count only when it can matter.
    s.len() <= max || s.chars().count() <= max
}

/// The value of one hex digit.
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode `s` (copied only when it has a `%`), as the W3C Baggage spec says:
/// bytes that are not UTF-8 become U+FFFD, and a `%` not followed by two hex digits is
/// kept as it is (as OpenTelemetry's Python propagator does). Also used for the
/// `OTEL_*` key=value lists.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let escape = b
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?));
            if let Some(v) = escape {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// W3C `baggage-octet`: printable ASCII except space, `"`, `,`, `;`, `\` and `%`.
fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if is_baggage_octet(c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

/// Split at the first `sep` (ASCII, so both halves stay on char boundaries); a byte
/// scan, cheaper than the generic char searcher on these short strings.
fn split_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = s.as_bytes().iter().position(|&c| c == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

fn ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Properties (the text after a member's first `;`) in normal form: each `key` or
/// `key=value` (a token key, a value of baggage-octets), spaces around them removed,
/// joined by `;`. Borrowed when already normal. Returns how many were dropped.
pub fn normalize_props(raw: &str) -> (Cow<'_, str>, usize) {
    let mut normal = true;
    let mut dropped = 0;
    let mut kept: Vec<(&str, Option<&str>)> = Vec::new();
    for p in raw.split(';') {
        let t = ows(p);
        if t.len() != p.len() {
            normal = false;
        }
        if t.is_empty() {
            normal = false;
            continue;
        }
        let (k, v) = match split_byte(t, b'=') {
            Some((k, v)) => {
                let (k2, v2) = (ows(k), ows(v));
                if k2.len() != k.len() || v2.len() != v.len() {
                    normal = false;
                }
                (k2, Some(v2))
            }
            None => (t, None),
        };
        if is_token(k) && v.is_none_or(|v| v.bytes().all(is_baggage_octet)) {
            kept.push((k, v));
        } else {
            normal = false;
            dropped += 1;
        }
    }
    if normal {
        return (Cow::Borrowed(raw), 0);
    }
    let mut out = String::new();
    for (k, v) in kept {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    (Cow::Owned(out), dropped)
}

/// Parse one or more `baggage` header values (combined as one list).
pub fn parse(values: &[String]) -> Parsed<'_> {
    let mut out = Parsed::default();
    let mut budget = MAX_BYTES;
    'values: for (vi, value) in values.iter().enumerate() {
        let mut rest = value.as_str();
        while !rest.is_empty() {
            let (member, tail) = split_byte(rest, b',').unwrap_or((rest, ""));
            rest = tail;
            let member = ows(member);
            if member.is_empty() {
                continue;
            }
            if out.entries.len() >= MAX_MEMBERS || member.len() > budget {
                // Over a limit: count what is left without parsing it.
                out.dropped += 1 + rest.split(',').filter(|m| !m.trim().is_empty()).count();
                for later in &values[vi + 1..] {
                    out.dropped += later.split(',').filter(|m| !m.trim().is_empty()).count();
                }
                break 'values;
            }
            budget -= member.len();
            let (kv, props) = split_byte(member, b';').unwrap_or((member, ""));
            let Some((k, v)) = split_byte(kv, b'=') else {
                out.dropped += 1;
                continue;
            };
            let k = ows(k);
            if !is_token(k) {
                out.dropped += 1;
                continue;
            }
            out.entries.push(Member {
                key: k,
                value: percent_decode(ows(v)),
                props,
            });
        }
    }
    out
}

/// Encode entries (key, value, properties) as one `baggage` header value within the
/// limits; returns the value and how many entries did not fit (or had an invalid key).
pub fn encode(entries: &[(String, String, String)]) -> (String, usize) {
    let mut out = String::new();
    let mut dropped = 0;
    let mut n = 0;
    for (k, v, props) in entries {
        if !is_token(k) {
            dropped += 1;
            continue;
        }
        let member = if props.is_empty() {
            format!("{k}={}", percent_encode(v))
        } else {
            format!("{k}={};{props}", percent_encode(v))
        };
        let extra = member.len() + usize::from(!out.is_empty());
        if n >= MAX_MEMBERS || out.len() + extra > MAX_BYTES {
            dropped += 1;
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&member);
        n += 1;
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Parsed<'static> {
        let owned: Vec<String> = v.iter().map(std::string::ToString::to_string).collect();
        parse(Box::leak(owned.into_boxed_slice()))
    }

    fn kv(r: &Parsed) -> Vec<(String, String)> {
        r.entries
            .iter()
            .map(|m| (m.key.to_string(), m.value.to_string()))
            .collect()
    }

    #[test]
    fn basic_and_percent_decoding() {
        let r = p(&["session_id=abc, project = my%20proj ;prop=1,source=dev%2Cx"]);
        assert_eq!(r.entries[1].prop("prop"), Some("1"));
        assert_eq!(
            kv(&r),
            vec![
                ("session_id".into(), "abc".into()),
                ("project".into(), "my proj".into()),
                ("source".into(), "dev,x".into())
            ]
        );
        assert_eq!(r.dropped, 0);
    }

    #[test]
    fn percent_decoding_per_the_w3c_baggage_spec() {
        let d = |s| percent_decode(s).into_owned();
        assert_eq!(d("a%20b%2c"), "a b,");
        assert_eq!(d("Am%C3%A9lie"), "Am\u{e9}lie");
        // Not UTF-8: U+FFFD. A `%` without two hex digits: kept.
        assert_eq!(d("%FFa"), "\u{FFFD}a");
        assert_eq!(d("%ZZ%4%+1%41%"), "%ZZ%4%+1A%");
    }

    #[test]
    fn the_w3c_baggage_spec_examples() {
        // The examples of the W3C Baggage spec, section "Example".
        let r = p(&["key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"]);
        let got: Vec<(String, String, String)> = r
            .entries
            .iter()
            .map(|m| {
                (
                    m.key.into(),
                    m.value.to_string(),
                    m.properties().0.into_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("key1".into(), "value1".into(), "property1;property2".into()),
                ("key2".into(), "value2".into(), String::new()),
                (
                    "key3".into(),
                    "value3".into(),
                    "propertyKey=propertyValue".into()
                ),
            ]
        );
        assert_eq!(r.entries[2].prop("propertyKey"), Some("propertyValue"));
        let r = p(&["userId=alice,serverNode=DF%2028,isProduction=false"]);
        assert_eq!(kv(&r)[1], ("serverNode".into(), "DF 28".into()));
        let r = p(&["userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false"]);
        assert_eq!(kv(&r)[0], ("userId".into(), "Am\u{e9}lie".into()));
        assert_eq!(r.dropped, 0);
        // A property outside the grammar is dropped and counted; the member stays.
        let r = p(&["k=v;ok=1;bad key=2;x=caf\u{e9};flag"]);
        assert_eq!(r.entries[0].properties(), ("ok=1;flag".into(), 2));
    }

    #[test]
    fn several_headers_are_combined() {
        let r = p(&["a=1", "b=2,c=3"]);
        assert_eq!(r.entries.len(), 3);
    }

    #[test]
    fn invalid_members_are_dropped_and_counted() {
        let r = p(&["good=1,novalue,bad key=2,k=%ZZ,k2=%FF%FE,=x,ok=2"]);
        assert_eq!(
            kv(&r),
            vec![
                ("good".into(), "1".into()),
                ("k".into(), "%ZZ".into()),
                ("k2".into(), "\u{FFFD}\u{FFFD}".into()),
                ("ok".into(), "2".into())
            ]
        );
        assert_eq!(r.dropped, 3);
    }

    #[test]
    fn limits_drop_the_excess_not_everything() {
        let many = (0..100)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let many = [many];
        let r = parse(&many);
        assert_eq!(r.entries.len(), MAX_MEMBERS);
        assert_eq!(r.dropped, 36);
        let huge = format!("a=1,big={},c=3", "x".repeat(10_000));
        let huge = [huge];
        let r = parse(&huge);
        assert_eq!(kv(&r), vec![("a".into(), "1".into())]);
        assert_eq!(r.dropped, 2);
        let mb = format!("x={}", "y".repeat(1 << 20));
        let two = [mb.clone(), "z=1".into()];
        let r = parse(&two);
        assert!(r.entries.is_empty());
        assert_eq!(r.dropped, 2);
    }

    #[test]
    fn encode_roundtrips_and_respects_limits() {
        let e = vec![
            (
                "session_id".to_string(),
                "a b,c;d%".to_string(),
                "sig=xyz".to_string(),
            ),
            ("bad key".to_string(), "x".to_string(), String::new()),
        ];
        let (v, dropped) = encode(&e);
        assert_eq!(v, "session_id=a%20b%2Cc%3Bd%25;sig=xyz");
        assert_eq!(dropped, 1);
        let v = [v];
        let back = parse(&v);
        assert_eq!(kv(&back), vec![("session_id".into(), "a b,c;d%".into())]);
        assert_eq!(back.entries[0].prop("sig"), Some("xyz"));
        let many: Vec<(String, String, String)> = (0..80)
            .map(|i| (format!("k{i}"), "v".into(), String::new()))
            .collect();
        let (v, dropped) = encode(&many);
        assert_eq!(v.split(',').count(), MAX_MEMBERS);
        assert_eq!(dropped, 16);
    }
}
