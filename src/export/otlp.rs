//! OTLP/HTTP export (http/protobuf and http/json) over a blocking ureq client.
//!
//! Retries follow the OTLP specification: 429, 502, 503 and 504 and network errors
//! are retried with exponential backoff and jitter, honouring `Retry-After`, within
//! the export deadline (shortened by a shutdown deadline). Every retry is counted.

use super::{ExportCtl, ExportResult, Exporter, Stats};
use crate::config::{Protocol, Secret};
use crate::ids;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use prost::Message;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

pub const USER_AGENT: &str = concat!("honeytrace/", env!("CARGO_PKG_VERSION"));

/// Build one ExportTraceServiceRequest (attributes de-duplicated, event type set).
pub fn encode_request(
    mut batch: Vec<SpanData>,
    resource: &ResourceAttributesWithSchema,
) -> ExportTraceServiceRequest {
    for span in &mut batch {
        crate::processor::prepare(span);
    }
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, resource),
    }
}

pub fn resource_attrs(resource: &Resource) -> ResourceAttributesWithSchema {
    ResourceAttributesWithSchema::from(resource)
}

#[cfg(test)]
pub fn gzip(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body).map_err(|e| e.to_string())?;
    enc.finish().map_err(|e| e.to_string())
}

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
    if hms.len() != 3 || !(1..=31).contains(&day) || year < 1970 {
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
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Backoff for retry `n` (0-based): 250 ms doubling, capped at 8 s, ±20 % jitter.
pub fn backoff_delay(n: u32) -> Duration {
    let base = 250u64.saturating_mul(1u64 << n.min(5)).min(8_000);
    let jitter = (ids::next_u64() % 401) as i64 - 200; // -200..=200 per mille
    let ms = (base as i64 + base as i64 * jitter / 1000).max(1) as u64;
    Duration::from_millis(ms)
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
                Attempt::Fail(format!("HTTP {code} from {url}: {}", detail.trim()))
            }
        }
        Err(e) => Attempt::Retry {
            reason: describe_error(&e),
            after: None,
        },
    }
}

fn describe_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Io(io) => format!("network error: {}", io.kind()),
        other => format!("network error: {other}"),
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
    ctl: &ExportCtl<'_>,
) -> Result<Vec<u8>, String> {
    let mut retries = 0u32;
    loop {
        let deadline = ctl.deadline();
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("{url}: export deadline passed"));
        }
        match send_once(agent, method, url, headers, body, deadline - now) {
            Attempt::Done(b) => return Ok(b),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry { reason, after } => {
                if retries >= max_retries {
                    return Err(format!("{url}: {reason} (gave up after {retries} retries)"));
                }
                let wait = after.unwrap_or_else(|| backoff_delay(retries));
                if !ctl.backoff(wait) {
                    return Err(format!(
                        "{url}: {reason}; the next retry would pass the export deadline"
                    ));
                }
                retries += 1;
                Stats::add(&ctl.stats().retries, 1);
            }
        }
    }
}

pub struct OtlpExporter {
    agent: ureq::Agent,
    resource_kvs: Vec<opentelemetry::KeyValue>,
    scratch: Vec<u8>,
    zscratch: Vec<u8>,
    endpoint: String,
    headers: Vec<(String, String)>,
    protocol: Protocol,
    gzip: bool,
    resource: ResourceAttributesWithSchema,
    max_retries: u32,
}

pub struct OtlpSettings {
    pub endpoint: String,
    pub headers: Vec<(String, Secret)>,
    pub protocol: Protocol,
    pub gzip: bool,
    pub max_retries: u32,
    pub connect_timeout: Duration,
}

impl OtlpExporter {
    pub fn new(s: &OtlpSettings, resource: &Resource) -> Self {
        let mut headers: Vec<(String, String)> = vec![(
            "content-type".into(),
            match s.protocol {
                Protocol::HttpProtobuf => "application/x-protobuf".into(),
                Protocol::HttpJson => "application/json".into(),
            },
        )];
        if s.gzip {
            headers.push(("content-encoding".into(), "gzip".into()));
        }
        headers.extend(
            s.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string())),
        );
        OtlpExporter {
            agent: agent(s.connect_timeout),
            resource_kvs: resource
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone()))
                .collect(),
            scratch: Vec::new(),
            zscratch: Vec::new(),
            endpoint: s.endpoint.clone(),
            headers,
            protocol: s.protocol,
            gzip: s.gzip,
            resource: resource_attrs(resource),
            max_retries: s.max_retries,
        }
    }

    /// The request body for `batch`, in `self.scratch` (raw) or `self.zscratch`
    /// (gzip). Both buffers are reused from batch to batch: a fresh ~300 KB buffer per
    /// batch showed up as the kernel zeroing new pages on the export thread.
    fn body(&mut self, mut batch: Vec<SpanData>) -> Result<(), String> {
        match self.protocol {
            Protocol::HttpProtobuf => {
                for span in &mut batch {
                    crate::processor::prepare(span);
                }
                super::encode::request(&batch, &self.resource_kvs, &mut self.scratch);
            }
            Protocol::HttpJson => {
                let req = encode_request(batch, &self.resource);
                self.scratch.clear();
                serde_json::to_writer(&mut self.scratch, &req).map_err(|e| e.to_string())?;
            }
        }
        if self.gzip {
            self.zscratch.clear();
            let mut enc = flate2::write::GzEncoder::new(
                std::mem::take(&mut self.zscratch),
                flate2::Compression::fast(),
            );
            enc.write_all(&self.scratch).map_err(|e| e.to_string())?;
            self.zscratch = enc.finish().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Exporter for OtlpExporter {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &ExportCtl<'_>) -> ExportResult {
        let n = batch.len();
        self.body(batch)?;
        let body = if self.gzip {
            &self.zscratch
        } else {
            &self.scratch
        };
        let resp = send_with_retry(
            &self.agent,
            "POST",
            &self.endpoint,
            &self.headers,
            body,
            self.max_retries,
            ctl,
        )?;
        // OTLP partial success: the collector accepted the request but rejected spans.
        let partial = match self.protocol {
            Protocol::HttpProtobuf => ExportTraceServiceResponse::decode(resp.as_slice())
                .ok()
                .and_then(|r| r.partial_success)
                .map(|p| (p.rejected_spans, p.error_message)),
            Protocol::HttpJson => serde_json::from_slice::<serde_json::Value>(&resp)
                .ok()
                .and_then(|v| {
                    let p = v.get("partialSuccess")?;
                    let rejected = p
                        .get("rejectedSpans")
                        .and_then(|r| r.as_str().and_then(|s| s.parse().ok()).or(r.as_i64()))
                        .unwrap_or(0);
                    let msg = p
                        .get("errorMessage")
                        .and_then(|m| m.as_str())
                        .unwrap_or("")
                        .to_string();
                    Some((rejected, msg))
                }),
        };
        if let Some((rejected, msg)) = partial {
            if rejected > 0 {
                return Err(format!("collector rejected {rejected} of {n} spans: {msg}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
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

    #[test]
    fn gzip_roundtrip() {
        use std::io::Read;
        let data = b"hello hello hello hello".repeat(100);
        let z = gzip(&data).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(z.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
