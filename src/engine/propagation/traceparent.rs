//! W3C Trace Context `traceparent` and `tracestate`.
//!
//! Version 00 must be exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version (01 to
//! fe) may carry more fields after a `-` (forward compatibility); `ff` is invalid, as
//! are all-zero ids, uppercase hex and anything malformed: the caller then starts a
//! new trace.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use std::str::FromStr;

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
    // Only the sampled bit is defined for version 00; keep the others for higher ones.
    let flags = if version == 0 { flags & 0x01 } else { flags };
    Some(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// `tracestate` from one or more header values: members joined, at most 32 kept; an
/// invalid list is dropped whole (W3C: a vendor that cannot parse it discards it).
pub fn parse_state(values: &[String]) -> (TraceState, bool) {
    let joined = values
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    if joined.is_empty() {
        return (TraceState::default(), false);
    }
    let members: Vec<&str> = joined
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let truncated = members.len() > MAX_TRACESTATE_MEMBERS;
    let kept = members[..members.len().min(MAX_TRACESTATE_MEMBERS)].join(",");
    match TraceState::from_str(&kept) {
        Ok(ts) => (ts, truncated),
        Err(_) => (TraceState::default(), true),
    }
}

/// The `traceparent` value for a span context.
pub fn format(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & 0x01
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
    fn tracestate_is_capped_and_validated() {
        let many: Vec<String> = vec![(0..40)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")];
        let (ts, truncated) = parse_state(&many);
        assert!(truncated);
        assert_eq!(ts.header().split(',').count(), 32);
        let (ts, _) = parse_state(&["a=1".to_string(), "b=2".to_string()]);
        assert_eq!(ts.header(), "a=1,b=2");
        let (ts, bad) = parse_state(&["not valid at all".to_string()]);
        assert!(bad && ts.header().is_empty());
    }

    #[test]
    fn format_roundtrips() {
        assert_eq!(format(&parse(GOOD).unwrap()), GOOD);
    }
}
