//! HTTP for the exporters: a blocking ureq agent (no async runtime, so `fork()` stays
//! safe), one attempt with the remaining time as its budget, and the retry loop the
//! OTLP specification describes: 429, 502, 503 and 504 and network errors retried with
//! exponential backoff and jitter, honouring `Retry-After`, within the export deadline
//! (shortened by a shutdown deadline). Every retry is counted.

use super::sink::{ExportControl, Stats};
use crate::engine::ids;
use std::time::{Duration, Instant, SystemTime};

pub const USER_AGENT: &str = concat!("honeytrace/", env!("CARGO_PKG_VERSION"));

/// Shared HTTP agent settings: no status-as-error, bounded connect time, our UA.
pub fn agent(connect_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(connect_timeout))
        .user_agent(USER_AGENT)
        .max_idle_connections_per_host(4)
        .build()
        .new_agent()
}

/// The outcome of one HTTP attempt, as the retry loop sees it.
pub enum Attempt {
    Done(Vec<u8>),
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fail(String),
}

pub fn is_retryable_status(code: u16) -> bool {
    matches!(code, 429 | 502 | 503 | 504)
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        // Any wait, however long: the retry loop compares it with its deadline.
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate only ("Sun, 06 Nov 1994 08:49:37 GMT"), the form servers send.
fn httpdate_parse(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u64
        + 1;
    let year: u64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    // Years past 9999 are not dates a server means (and would overflow below).
    if hms.len() != 3
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || hms[0] > 23
        || hms[1] > 59
        || hms[2] > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Backoff for retry `n` (0-based): 250 ms doubling, capped at 8 s, ±20 % jitter.
pub fn backoff_delay(n: u32) -> Duration {
    let base = 250u64.saturating_mul(1u64 << n.min(5)).min(8_000);
    let jitter = (ids::next_u64() % 401) as i64 - 200; // -200..=200 per mille
    let ms = (base as i64 + base as i64 * jitter / 1000).max(1) as u64;
    Duration::from_millis(ms)
}

/// Query parameter names whose values are secrets (matched as substrings, any case).
const SECRET_PARAMS: [&str; 8] = [
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "auth",
    "signature",
    "credential",
];

/// `url` as it may be shown (logs, warnings, `destination`, `stats()`): a password in
/// it (`http://user:PW@host`) becomes `***`, as does a user name alone (often a token:
/// `https://TOKEN@host`) and the value of a query parameter named like a secret
/// (`?api_key=...`). What is sent is the URL as given.
pub fn shown_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    match authority.rfind('@') {
        Some(at) => {
            match authority[..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str("***"),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    match before_fragment.split_once('?') {
        None => out.push_str(before_fragment),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((k, _))
                        if SECRET_PARAMS
                            .iter()
                            .any(|s| k.to_ascii_lowercase().contains(s)) =>
                    {
                        out.push_str(k);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
        }
    }
    out.push_str(fragment);
    out
}

/// One POST/PUT with the remaining time as its whole budget.
pub fn send_once(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    remaining: Duration,
) -> Attempt {
    let mut req = match method {
        "PUT" => agent.put(url),
        _ => agent.post(url),
    };
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.config().timeout_global(Some(remaining)).build();
    match req.send(body) {
        Ok(mut resp) => {
            let code = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = resp
                .body_mut()
                .with_config()
                .limit(1024 * 1024)
                .read_to_vec()
                .unwrap_or_default();
            if (200..300).contains(&code) {
                Attempt::Done(body)
            } else if is_retryable_status(code) {
                Attempt::Retry {
                    reason: format!("HTTP {code}"),
                    after: retry_after,
                }
            } else {
                let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                let shown = shown_url(url);
                Attempt::Fail(format!("HTTP {code} from {shown}: {}", detail.trim()))
            }
        }
        Err(e) => match tls_failure(&e) {
            // A certificate or a TLS handshake does not fix itself: say what it is,
            // and do not retry.
            Some(why) => Attempt::Fail(format!(
                "{}: TLS failed: {why} (not retried: check the collector's certificate, or use http:// if it does not speak TLS)",
                shown_url(url)
            )),
            None => Attempt::Retry {
                reason: describe_error(&e),
                after: None,
            },
        },
    }
}

/// The TLS failure behind `e`, if it is one: rustls reports a refused certificate or a
/// failed handshake as an I/O error of kind `InvalidData` carrying its own error.
fn tls_failure(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::Rustls(inner) => Some(inner.to_string()),
        ureq::Error::Tls(what) => Some((*what).to_string()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            io.get_ref().map(ToString::to_string)
        }
        _ => None,
    }
}

fn describe_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Io(io) => match io.get_ref() {
            Some(inner) => format!("network error: {}: {inner}", io.kind()),
            None => format!("network error: {}", io.kind()),
        },
        other => format!("network error: {other}"),
    }
}

/// Why a request was not delivered; `transient` when a later attempt may succeed (the
/// collector was unreachable, slow, overloaded or answered 429/5xx), as opposed to a
/// refusal (4xx) or a TLS failure.
#[derive(Debug)]
pub struct SendFailure {
    pub message: String,
    pub transient: bool,
}

impl From<SendFailure> for String {
    fn from(f: SendFailure) -> String {
        f.message
    }
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Send with retries until success, a permanent failure, or the deadline.
pub fn send_with_retry(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    max_retries: u32,
    ctl: &dyn ExportControl,
) -> Result<Vec<u8>, SendFailure> {
    let mut retries = 0u32;
    let shown = || shown_url(url);
    let transient = |message| SendFailure {
        message,
        transient: true,
    };
    loop {
        let deadline = ctl.deadline();
        let now = Instant::now();
        if now >= deadline {
            return Err(transient(format!("{}: export deadline passed", shown())));
        }
        let budget = (deadline - now).min(ctl.attempt_timeout());
        match send_once(agent, method, url, headers, body, budget) {
            Attempt::Done(b) => return Ok(b),
            Attempt::Fail(message) => {
                return Err(SendFailure {
                    message,
                    transient: false,
                })
            }
            Attempt::Retry { reason, after } => {
                if retries >= max_retries {
                    return Err(transient(format!(
                        "{}: {reason} (gave up after {retries} retries)",
                        shown()
                    )));
                }
                let wait = after.unwrap_or_else(|| backoff_delay(retries));
                if !ctl.backoff(wait) {
                    return Err(transient(format!(
                        "{}: {reason}; the next retry would pass the export deadline",
                        shown()
                    )));
                }
                retries += 1;
                Stats::add(&ctl.stats().retries, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_hide_credentials() {
        for (given, shown) in [
            (
                "http://127.0.0.1:4318/v1/traces",
                "http://127.0.0.1:4318/v1/traces",
            ),
            (
                "http://user:PW@host:1/v1/traces",
                "http://user:***@host:1/v1/traces",
            ),
            ("https://TOKEN@host/v1/traces", "https://***@host/v1/traces"),
            (
                "http://u:p:q@h/x?a=1&api_key=s3&Token=t#f",
                "http://u:***@h/x?a=1&api_key=***&Token=***#f",
            ),
            ("http://h?x@y", "http://h?x@y"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(shown_url(given), shown, "{given}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 99999999999999999 08:49:37 GMT"),
            None
        );
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 0..10 {
            let d = backoff_delay(n).as_millis() as u64;
            let base = (250u64 << n.min(5)).min(8000);
            assert!(d >= base * 8 / 10 && d <= base * 12 / 10, "{n}: {d}");
        }
    }

    #[test]
    fn retryable_codes() {
        for c in [429, 502, 503, 504] {
            assert!(is_retryable_status(c));
        }
        for c in [400, 401, 403, 404, 413, 500] {
            assert!(!is_retryable_status(c));
        }
    }
}
