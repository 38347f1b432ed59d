//! OTLP/HTTP export (http/protobuf and http/json).

use super::http::{agent, send_with_retry, SendFailure};
use super::prepare::prepare;
use super::sink::{Delivered, ExportControl, ExportResult, Exporter, Stats};
use super::spool::{Sent, Spool};
use crate::engine::config::{Protocol, Secret, SpoolConfig};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use prost::Message;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

/// Build one ExportTraceServiceRequest (attributes de-duplicated, event type set).
pub fn encode_request(
    mut batch: Vec<SpanData>,
    resource: &ResourceAttributesWithSchema,
    openinference: bool,
) -> ExportTraceServiceRequest {
    for span in &mut batch {
        prepare(span, openinference);
    }
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, resource),
    }
}

pub fn resource_attrs(resource: &Resource) -> ResourceAttributesWithSchema {
    ResourceAttributesWithSchema::from(resource)
}

/// `body` gzipped into `out` (cleared first; its capacity is reused).
fn gzip_into(body: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    out.clear();
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    enc.write_all(body).map_err(|e| e.to_string())?;
    enc.finish().map_err(|e| e.to_string())
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
    keep_buffer: usize,
    spool: Option<Spool>,
    openinference: bool,
}

pub struct OtlpSettings {
    pub endpoint: String,
    pub headers: Vec<(String, Secret)>,
    pub protocol: Protocol,
    pub gzip: bool,
    pub max_retries: u32,
    pub connect_timeout: Duration,
    /// Request buffers larger than this after a request are freed rather than kept
    /// for the next one (a span larger than `batch_bytes` went alone).
    pub keep_buffer: usize,
    pub spool: Option<SpoolConfig>,
    /// Write OpenInference's attributes (`prepare`).
    pub openinference: bool,
}

/// Where the collector's answer to a delivered request leaves its spans: all taken, or
/// some rejected (OTLP partial success).
fn partial_success(protocol: Protocol, resp: &[u8], n: u64) -> Delivered {
    let partial = match protocol {
        Protocol::HttpProtobuf => ExportTraceServiceResponse::decode(resp)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Protocol::HttpJson => serde_json::from_slice::<serde_json::Value>(resp)
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
    match partial {
        // A negative or oversized count from a confused collector is clamped.
        Some((rejected, message)) if rejected > 0 => Delivered::Partly {
            rejected: u64::try_from(rejected).unwrap_or(0).min(n),
            message,
        },
        _ => Delivered::All,
    }
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
            keep_buffer: s.keep_buffer,
            openinference: s.openinference,
            spool: s.spool.as_ref().map(|cfg| {
                let mut destination = format!("{}\n{:?}\n{}", s.endpoint, s.protocol, s.gzip);
                for (k, v) in &s.headers {
                    let _ = write!(destination, "\n{}={}", k.to_ascii_lowercase(), v.expose());
                }
                let ext = match (s.protocol, s.gzip) {
                    (Protocol::HttpProtobuf, false) => "pb",
                    (Protocol::HttpProtobuf, true) => "pb.gz",
                    (Protocol::HttpJson, false) => "json",
                    (Protocol::HttpJson, true) => "json.gz",
                };
                Spool::new(cfg, &destination, ext)
            }),
        }
    }

    fn encoded(&self) -> &[u8] {
        if self.gzip {
            &self.zscratch
        } else {
            &self.scratch
        }
    }

    /// The request body for `batch`, in `self.scratch` (raw) or `self.zscratch`
    /// (gzip). Both buffers are reused from batch to batch (up to `keep_buffer`): a fresh ~300 KB buffer per
    /// batch showed up as the kernel zeroing new pages on the export thread.
    fn body(&mut self, mut batch: Vec<SpanData>) -> Result<(), String> {
        match self.protocol {
            Protocol::HttpProtobuf => {
                for span in &mut batch {
                    prepare(span, self.openinference);
                }
                super::encode::request(&batch, &self.resource_kvs, &mut self.scratch);
            }
            Protocol::HttpJson => {
                let req = encode_request(batch, &self.resource, self.openinference);
                self.scratch.clear();
                serde_json::to_writer(&mut self.scratch, &req).map_err(|e| e.to_string())?;
            }
        }
        if self.gzip {
            self.zscratch = gzip_into(&self.scratch, std::mem::take(&mut self.zscratch))?;
        }
        Ok(())
    }

    /// Encode `batch` and send it, retries included; what cannot be delivered in time
    /// goes to the spool, if there is one.
    fn send(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult {
        let n = batch.len() as u64;
        self.body(batch)?;
        let body = self.encoded();
        match send_with_retry(
            &self.agent,
            "POST",
            &self.endpoint,
            &self.headers,
            body,
            self.max_retries,
            ctl,
        ) {
            Ok(resp) => {
                if let Some(spool) = self.spool.as_mut() {
                    spool.collector_answered();
                }
                Ok(partial_success(self.protocol, &resp, n))
            }
            Err(SendFailure {
                message,
                transient: true,
            }) if self.spool.is_some() => {
                let body = if self.gzip {
                    &self.zscratch
                } else {
                    &self.scratch
                };
                let Some(spool) = self.spool.as_mut() else {
                    return Err(message);
                };
                match spool.put(body, n, ctl.stats()) {
                    Ok(()) => Ok(Delivered::Spooled { why: message }),
                    Err(e) => Err(format!("{message}; not spooled: {e}")),
                }
            }
            Err(f) => Err(f.message),
        }
    }

    fn release_buffers(&mut self) {
        for buf in [&mut self.scratch, &mut self.zscratch] {
            if buf.capacity() > self.keep_buffer {
                *buf = Vec::new();
            }
        }
    }
}

impl Exporter for OtlpExporter {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult {
        let result = self.send(batch, ctl);
        self.release_buffers();
        result
    }

    fn spool(&mut self, batch: Vec<SpanData>, stats: &Stats) -> bool {
        if self.spool.is_none() {
            return false;
        }
        let n = batch.len() as u64;
        let written = self.body(batch).and_then(|()| {
            let body = if self.gzip {
                &self.zscratch
            } else {
                &self.scratch
            };
            match self.spool.as_mut() {
                Some(spool) => spool.put(body, n, stats),
                None => Err("no spool".into()),
            }
        });
        self.release_buffers();
        if let Err(e) = &written {
            stats.set_error(e);
            crate::engine::diag::warn_limited("spool-failed", e);
        }
        written.is_ok()
    }

    fn drain_spool(&mut self, ctl: &dyn ExportControl) -> Option<Instant> {
        let OtlpExporter {
            agent,
            endpoint,
            headers,
            protocol,
            spool,
            ..
        } = self;
        let spool = spool.as_mut()?;
        let deadline = ctl.deadline();
        spool.drain(ctl.stats(), deadline, |body| {
            // One attempt per batch: live spans wait behind it.
            match send_with_retry(agent, "POST", endpoint, headers, body, 0, ctl) {
                Ok(resp) => match partial_success(*protocol, &resp, u64::MAX) {
                    Delivered::Partly { rejected, .. } => Sent::Delivered { rejected },
                    _ => Sent::Delivered { rejected: 0 },
                },
                Err(f) if f.transient => Sent::Later,
                Err(f) => Sent::Refused(f.message),
            }
        });
        spool.next_try()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_roundtrip() {
        use std::io::Read;
        let data = b"hello hello hello hello".repeat(100);
        let z = gzip_into(&data, b"stale".to_vec()).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(z.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
