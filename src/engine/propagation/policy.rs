//! The policy for incoming context: W3C parsing of what a carrier held, session keys
//! mapped to their canonical names (`session_id | honeyhive_session_id |
//! honeyhive.session_id | session.id`, and the same for project and source), values
//! validated (length, printable, a UUID for HoneyHive cloud, a valid signature when a
//! secret is configured), and signed sessions. Pure Rust: the boundary reads the
//! carrier (`py::carrier`) and builds the Python Context (`py::propagation`).

use super::baggage::{self, printable, Member};
use super::traceparent;
use crate::engine::config::model::Secret;
use crate::engine::config::{Config, Mode, Trust};
use crate::engine::diag;
use crate::engine::ids;
use opentelemetry::trace::SpanContext;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

/// The three propagation headers as a carrier held them (every value of each).
#[derive(Default, Debug)]
pub struct Headers {
    pub traceparent: Vec<String>,
    pub tracestate: Vec<String>,
    pub baggage: Vec<String>,
}

/// Process-wide propagation counters (reported in `tracer.stats()`).
#[derive(Default)]
pub struct PropagationStats {
    pub traceparent_invalid: AtomicU64,
    pub tracestate_dropped: AtomicU64,
    pub baggage_dropped: AtomicU64,
    pub incoming_rejected: AtomicU64,
    pub sessions_unsigned: AtomicU64,
    pub sessions_forged: AtomicU64,
    pub sessions_stale: AtomicU64,
    pub contexts_ignored: AtomicU64,
}

pub static STATS: PropagationStats = PropagationStats {
    traceparent_invalid: AtomicU64::new(0),
    tracestate_dropped: AtomicU64::new(0),
    baggage_dropped: AtomicU64::new(0),
    incoming_rejected: AtomicU64::new(0),
    sessions_unsigned: AtomicU64::new(0),
    sessions_forged: AtomicU64::new(0),
    sessions_stale: AtomicU64::new(0),
    contexts_ignored: AtomicU64::new(0),
};

pub fn count(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A member's properties in normal form, borrowed from the header when already normal.
fn normalize_props_of<'a>(m: &Member<'a>) -> (Cow<'a, str>, usize) {
    baggage::normalize_props(m.props)
}

/// The canonical keys and the aliases read for them, in order of precedence.
const ALIASES: [(&str, &[&str]); 3] = [
    (
        "session_id",
        &[
            "session_id",
            "honeyhive_session_id",
            "honeyhive.session_id",
            "session.id",
        ],
    ),
    (
        "project",
        &["project", "honeyhive_project", "honeyhive.project"],
    ),
    (
        "source",
        &["source", "honeyhive_source", "honeyhive.source"],
    ),
];

fn canonical(key: &str) -> Option<(&'static str, usize)> {
    ALIASES.iter().find_map(|(canon, aliases)| {
        aliases
            .iter()
            .position(|a| *a == key)
            .map(|rank| (*canon, rank))
    })
}

/// The session, project and source a list of baggage entries means, resolved as
/// `interpret` resolves them (the best-ranked alias; the last of equal rank); "" when
/// absent. What a signature covers is computed with this on both sides.
pub fn canonical_values<'e>(entries: impl Iterator<Item = (&'e str, &'e str)>) -> [&'e str; 3] {
    let mut best: [Option<(usize, &str)>; 3] = [None, None, None];
    for (k, v) in entries {
        if let Some((canon, rank)) = canonical(k) {
            let slot = ALIASES.iter().position(|(c, _)| *c == canon).unwrap_or(0);
            if best[slot].is_none_or(|(r, _)| rank <= r) {
                best[slot] = Some((rank, v));
            }
        }
    }
    best.map(|b| b.map_or("", |(_, v)| v))
}

// ---------------------------------------------------------------------------------
// Signed context: `session_id=<id>;sig=<issued>.<mac>`, where `issued` is the signing
// time (Unix seconds) and `mac` is base64url(HMAC-SHA256(secret, the text below))[..16
// bytes]. One MAC covers the session, the project, the source (empty when absent; none
// of them can hold a line break, see `interpret`) and the time. The signature is a W3C
// baggage property, which other SDKs ignore.

const SIG_BYTES: usize = 16;
/// A signature made this far in the future (another host's clock) is still accepted.
pub const CLOCK_SKEW_SECS: u64 = 60;

fn b64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (u32::from(c) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn mac(secret: &str, issued: u64, session: &str, project: &str, source: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    for part in [
        "honeytrace-context-v1",
        &issued.to_string(),
        session,
        project,
        source,
    ] {
        ctx.update(part.as_bytes());
        ctx.update(b"\n");
    }
    b64url(&ctx.sign().as_ref()[..SIG_BYTES])
}

/// The `sig` property value for a session context signed at `issued`.
pub fn sign(secret: &str, issued: u64, session: &str, project: &str, source: &str) -> String {
    format!("{issued}.{}", mac(secret, issued, session, project, source))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Unsigned,
    Forged,
    Stale,
}

/// Check a `sig` property against the values it must cover, at `now`.
pub fn verify(
    secret: &str,
    sig: Option<&str>,
    values: [&str; 3],
    now: u64,
    max_age: u64,
) -> Verdict {
    let Some(sig) = sig else {
        return Verdict::Unsigned;
    };
    let Some((issued, tag)) = sig.split_once('.') else {
        return Verdict::Forged;
    };
    let Ok(issued_n) = issued.parse::<u64>() else {
        return Verdict::Forged;
    };
    // The time as signed: `issued_n.to_string()` must give back the same text.
    if issued_n.to_string() != issued {
        return Verdict::Forged;
    }
    let expected = mac(secret, issued_n, values[0], values[1], values[2]);
    // Constant time over the expected length.
    let same = expected.len() == tag.len()
        && expected
            .bytes()
            .zip(tag.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Verdict::Forged;
    }
    if issued_n > now.saturating_add(CLOCK_SKEW_SECS) || now.saturating_sub(issued_n) > max_age {
        return Verdict::Stale;
    }
    Verdict::Valid
}

// ---------------------------------------------------------------------------------
// Extract

/// How incoming context is treated, resolved from the call, the tracer and defaults.
pub struct Policy<'a> {
    pub trust: Trust,
    pub require_uuid: bool,
    /// Borrowed from the tracer's configuration (never copied per request).
    pub secret: Option<&'a str>,
    /// Seconds a signature is accepted after it was made.
    pub max_age: u64,
}

impl<'a> Policy<'a> {
    /// The policy of a tracer (`cfg`), with an explicit `trust` winning.
    pub fn of(cfg: Option<&'a Config>, trust: Option<Trust>) -> Policy<'a> {
        Policy {
            trust: trust
                .or_else(|| cfg.map(|c| c.trust))
                .unwrap_or(Trust::Continue),
            require_uuid: cfg.is_some_and(|c| c.mode == Mode::Cloud),
            secret: cfg.and_then(|c| c.baggage_secret.as_ref().map(Secret::expose)),
            max_age: cfg.map_or(300, |c| c.baggage_max_age.as_secs()),
        }
    }
}

pub struct Incoming<'a> {
    pub parent: Option<SpanContext>,
    /// Baggage entries after normalization and validation (canonical keys first),
    /// borrowed from the headers where nothing had to change.
    pub baggage: Vec<(&'a str, Cow<'a, str>)>,
    /// The `;properties` of foreign members that had some (honeytrace's own members
    /// carry only the signature, which is made again going out).
    pub props: Vec<(&'a str, Cow<'a, str>)>,
}

/// Parse, normalize and validate what a carrier holds (pure Rust, no Python objects).
#[allow(clippy::too_many_lines)] // one pass over the headers, in the order the spec gives
pub fn interpret<'a>(h: &'a Headers, policy: &Policy<'_>) -> Incoming<'a> {
    let mut parent = None;
    if !h.traceparent.is_empty() {
        // Repeated header lines mean their comma-joined value (RFC 9110, section 5.3;
        // a WSGI server joins them before the app sees them), and two traceparents
        // joined are not a traceparent: a new trace, whichever server read them.
        if h.traceparent.len() == 1 {
            parent = traceparent::parse(&h.traceparent[0]);
        }
        if parent.is_none() {
            count(&STATS.traceparent_invalid, 1);
            diag::warn_limited(
                "bad-traceparent",
                "an incoming traceparent was invalid and ignored; a new trace was started",
            );
        }
    }
    if let Some(p) = parent.take() {
        let (state, dropped) = traceparent::parse_state(&h.tracestate);
        count(&STATS.tracestate_dropped, u64::from(dropped));
        parent = Some(SpanContext::new(
            p.trace_id(),
            p.span_id(),
            p.trace_flags(),
            true,
            state,
        ));
    }

    let parsed = baggage::parse(&h.baggage);
    count(&STATS.baggage_dropped, parsed.dropped as u64);
    if parsed.dropped > 0 {
        diag::warn_limited(
            "bad-baggage",
            &format!(
                "dropped {} incoming baggage member(s): malformed or beyond the W3C limits (64 members, 8192 bytes)",
                parsed.dropped
            ),
        );
    }

    // Canonical keys: the best-ranked alias wins; aliases are not kept.
    let mut best: [Option<(usize, Member<'a>)>; 3] = [None, None, None];
    let mut other: Vec<(&'a str, Cow<'a, str>)> = Vec::new();
    let mut props: Vec<(&'a str, Cow<'a, str>)> = Vec::new();
    let mut props_dropped = 0;
    for m in parsed.entries {
        if let Some((canon, rank)) = canonical(m.key) {
            let slot = ALIASES.iter().position(|(c, _)| *c == canon).unwrap_or(0);
            if best[slot].as_ref().is_none_or(|(r, _)| rank <= *r) {
                best[slot] = Some((rank, m));
            }
        } else {
            if !m.props.is_empty() {
                let (normal, dropped) = normalize_props_of(&m);
                props_dropped += dropped;
                if !normal.is_empty() {
                    props.push((m.key, normal));
                }
            }
            other.push((m.key, m.value));
        }
    }
    if props_dropped > 0 {
        count(&STATS.baggage_dropped, props_dropped as u64);
        diag::warn_limited(
            "bad-baggage-property",
            &format!("dropped {props_dropped} incoming baggage properties outside the W3C grammar"),
        );
    }
    let mut out: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(other.len() + 3);
    // With a secret, the session, project and source come in together under one
    // signature, or not at all; the trace itself is not affected.
    if let Some(secret) = policy.secret {
        if best.iter().any(Option::is_some) {
            let value = |i: usize| best[i].as_ref().map_or("", |(_, m)| m.value.as_ref());
            let sig = best[0].as_ref().and_then(|(_, m)| m.prop("sig"));
            let verdict = verify(
                secret,
                sig,
                [value(0), value(1), value(2)],
                now_secs(),
                policy.max_age,
            );
            let (counter, why) = match verdict {
                Verdict::Valid => (None, ""),
                Verdict::Unsigned => (Some(&STATS.sessions_unsigned), "unsigned"),
                Verdict::Forged => (Some(&STATS.sessions_forged), "its signature does not match"),
                Verdict::Stale => (
                    Some(&STATS.sessions_stale),
                    "its signature is older than baggage_max_age",
                ),
            };
            if let Some(c) = counter {
                count(c, 1);
                let n = best.iter().filter(|b| b.is_some()).count();
                count(&STATS.incoming_rejected, n as u64);
                diag::warn_limited(
                    "rejected-signature",
                    &format!(
                        "an incoming session context (session, project, source) was ignored: {why}; the tracer's own values are used"
                    ),
                );
                best = [None, None, None];
            }
        }
    }
    for (slot, chosen) in best.into_iter().enumerate() {
        let Some((_, m)) = chosen else { continue };
        let canon = ALIASES[slot].0;
        let ok = match canon {
            "session_id" => {
                printable(&m.value, 256) && (!policy.require_uuid || ids::is_uuid(&m.value))
            }
            _ => printable(&m.value, 128),
        };
        if ok {
            let value = if canon == "session_id"
                && policy.require_uuid
                && m.value.bytes().any(|c| c.is_ascii_uppercase())
            {
                Cow::Owned(m.value.to_ascii_lowercase())
            } else {
                m.value
            };
            out.push((canon, value));
        } else {
            count(&STATS.incoming_rejected, 1);
            diag::warn_limited(
                "rejected-session",
                &format!(
                    "an incoming {canon} was rejected (invalid); the tracer's own value is used"
                ),
            );
        }
    }
    out.extend(other);
    Incoming {
        parent,
        baggage: out,
        props,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Leaked: `interpret` borrows from the headers, and tests build them inline.
    fn headers(tp: &[&str], bag: &[&str]) -> &'static Headers {
        Box::leak(Box::new(Headers {
            traceparent: tp.iter().map(std::string::ToString::to_string).collect(),
            tracestate: vec![],
            baggage: bag.iter().map(std::string::ToString::to_string).collect(),
        }))
    }

    fn policy() -> Policy<'static> {
        Policy {
            trust: Trust::Continue,
            require_uuid: false,
            secret: None,
            max_age: 300,
        }
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn aliases_map_to_canonical_keys() {
        let inc = interpret(
            headers(
                &[TP],
                &["honeyhive.session_id=a,honeyhive_project=p,honeyhive.source=s,x=1"],
            ),
            &policy(),
        );
        assert!(inc.parent.is_some());
        assert_eq!(
            inc.baggage,
            vec![
                ("session_id", "a".into()),
                ("project", "p".into()),
                ("source", "s".into()),
                ("x", "1".into())
            ]
        );
        // The canonical key wins over an alias, whatever the order.
        let inc = interpret(
            headers(&[], &["honeyhive_session_id=alias,session_id=canon"]),
            &policy(),
        );
        assert_eq!(inc.baggage, vec![("session_id", "canon".into())]);
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut p = policy();
        p.require_uuid = true;
        let inc = interpret(headers(&[], &["session_id=not-a-uuid,project=ok"]), &p);
        assert_eq!(inc.baggage, vec![("project", "ok".into())]);
        let long = format!("session_id={}", "a".repeat(300));
        let inc = interpret(headers(&[], &[&long]), &policy());
        assert!(inc.baggage.is_empty());
        let inc = interpret(headers(&[], &["session_id=a%0Ab"]), &policy());
        assert!(inc.baggage.is_empty());
        let uuid = "123E4567-E89B-12D3-A456-426614174000";
        let inc = interpret(headers(&[], &[&format!("session_id={uuid}")]), &p);
        assert_eq!(inc.baggage[0].1, uuid.to_ascii_lowercase());
    }

    #[test]
    fn repeated_traceparents_are_ignored() {
        let other = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(interpret(headers(&[TP, other], &[]), &policy())
            .parent
            .is_none());
        // As a WSGI server would join them: "TP,TP" is not a traceparent.
        assert!(interpret(headers(&[TP, TP], &[]), &policy())
            .parent
            .is_none());
        assert!(interpret(headers(&[&format!("{TP},{TP}")], &[]), &policy())
            .parent
            .is_none());
    }

    #[test]
    fn signed_context() {
        const K: &str = "a-long-enough-shared-secret";
        let mut p = policy();
        p.secret = Some(K);
        let now = now_secs();
        let sig = sign(K, now, "sess-1", "proj", "");
        let good = format!("session_id=sess-1;sig={sig},project=proj");
        assert_eq!(
            interpret(headers(&[], &[&good]), &p).baggage,
            vec![("session_id", "sess-1".into()), ("project", "proj".into())]
        );
        // Any value changed or added, under any alias: the whole context is ignored.
        for bad in [
            good.replace("sess-1", "sess-2"),
            good.replace("=proj", "=other"),
            format!("{good},source=x"),
            good.replace("project=proj", "honeyhive_project=other"),
            "session_id=sess-1".to_string(),
            "project=proj".to_string(),
            format!("session_id=sess-1;sig=x{sig}"),
            format!("session_id=sess-1;sig=0{sig}"),
        ] {
            assert!(
                interpret(headers(&[], &[&bad]), &p).baggage.is_empty(),
                "{bad}"
            );
        }
        let v = ["s", "", ""];
        assert_eq!(
            verify(K, Some(&sign(K, now, "s", "", "")), v, now, 300),
            Verdict::Valid
        );
        assert_eq!(verify(K, None, v, now, 300), Verdict::Unsigned);
        assert_eq!(
            verify(K, Some(&sign(K, now - 301, "s", "", "")), v, now, 300),
            Verdict::Stale
        );
        assert_eq!(
            verify(K, Some(&sign(K, now + 61, "s", "", "")), v, now, 300),
            Verdict::Stale
        );
        assert_eq!(
            verify(K, Some(&sign(K, now + 59, "s", "", "")), v, now, 300),
            Verdict::Valid
        );
        assert_eq!(
            verify(
                "another-secret-entirely",
                Some(&sign(K, now, "s", "", "")),
                v,
                now,
                300
            ),
            Verdict::Forged
        );
        // Without a secret the property is ignored.
        let forged = good.replace("sess-1", "sess-2");
        assert_eq!(
            interpret(headers(&[], &[&forged]), &policy()).baggage.len(),
            2
        );
    }

    #[test]
    fn b64url_is_unpadded() {
        assert_eq!(b64url(b"\xff\xfe\xfd"), "__79");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(mac("k", 1, "s", "", "").len(), 22);
    }
}
