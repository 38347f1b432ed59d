//! OTLP/HTTP export (http/protobuf and http/json).

use super::http::{agent, send_with_retry};
use super::prepare::prepare;
use super::sink::{Delivered, ExportControl, ExportResult, Exporter};
use crate::engine::config::{Protocol, Secret};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use prost::Message;
use std::io::Write;
use std::time::Duration;

/// Build one ExportTraceServiceRequest (attributes de-duplicated, event type set).
pub fn encode_request(
    mut batch: Vec<SpanData>,
    resource: &ResourceAttributesWithSchema,
) -> ExportTraceServiceRequest {
    for span in &mut batch {
        prepare(span);
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
        }
    }

    /// The request body for `batch`, in `self.scratch` (raw) or `self.zscratch`
    /// (gzip). Both buffers are reused from batch to batch (up to `keep_buffer`): a fresh ~300 KB buffer per
    /// batch showed up as the kernel zeroing new pages on the export thread.
    fn body(&mut self, mut batch: Vec<SpanData>) -> Result<(), String> {
        match self.protocol {
            Protocol::HttpProtobuf => {
                for span in &mut batch {
                    prepare(span);
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
            self.zscratch = gzip_into(&self.scratch, std::mem::take(&mut self.zscratch))?;
        }
        Ok(())
    }

    /// Encode `batch` and send it, retries included.
    fn send(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult {
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
        match partial {
            // A negative or oversized count from a confused collector is clamped.
            Some((rejected, message)) if rejected > 0 => Ok(Delivered::Partly {
                rejected: u64::try_from(rejected).unwrap_or(0).min(n as u64),
                message,
            }),
            _ => Ok(Delivered::All),
        }
    }
}

impl Exporter for OtlpExporter {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult {
        let result = self.send(batch, ctl);
        for buf in [&mut self.scratch, &mut self.zscratch] {
            if buf.capacity() > self.keep_buffer {
                *buf = Vec::new();
            }
        }
        result
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
