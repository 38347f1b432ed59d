//! A local OTLP/HTTP receiver for benchmarks: decodes every trace request (protobuf
//! or JSON, gzip or not) and counts spans. `GET /stats` answers
//! `{"requests":..,"spans":..,"bytes":..}`; `POST /reset` zeroes the counters.
//!
//!     otlp_sink [PORT]        prints "listening <port>" once ready

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static SPANS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Read a varint at `*i`; None on malformed input.
fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The length-delimited fields `field` of a message, as sub-slices (other fields skipped).
fn fields(msg: &[u8], field: u64) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < msg.len() {
        let key = varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                varint(msg, &mut i)?;
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let n = varint(msg, &mut i)? as usize;
                let sub = msg.get(i..i + n)?;
                if key >> 3 == field {
                    out.push(sub);
                }
                i += n;
            }
            _ => return None,
        }
    }
    (i == msg.len()).then_some(out)
}

/// Count spans by walking the protobuf wire format (request -> resource_spans ->
/// scope_spans -> spans) without decoding them: the receiver must not be the bottleneck.
fn count_protobuf(body: &[u8]) -> Option<u64> {
    let mut n = 0;
    for rs in fields(body, 1)? {
        for ss in fields(rs, 2)? {
            n += fields(ss, 2)?.len() as u64;
        }
    }
    Some(n)
}

fn count_spans(body: &[u8], json: bool) -> u64 {
    if !json && std::env::var_os("SINK_FULL_DECODE").is_none() {
        return count_protobuf(body).unwrap_or(0);
    }
    if json {
        let v: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return 0,
        };
        let mut n = 0;
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                n += ss["spans"].as_array().map_or(0, |s| s.len() as u64);
            }
        }
        n
    } else {
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => req
                .resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter())
                .map(|ss| ss.spans.len() as u64)
                .sum(),
            Err(_) => 0,
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let (mut len, mut gzip, mut json, mut close) = (0usize, false, false, false);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "content-encoding" => gzip = v.contains("gzip"),
                    "content-type" => json = v.contains("json"),
                    "connection" => close = v == "close",
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        if method == "GET" && path == "/stats" {
            let s = format!(
                "{{\"requests\":{},\"spans\":{},\"bytes\":{}}}",
                REQUESTS.load(Ordering::Relaxed),
                SPANS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed)
            );
            respond(&mut out, "200 OK", "application/json", s.as_bytes())?;
        } else if path == "/reset" {
            for c in [&REQUESTS, &SPANS, &BYTES] {
                c.store(0, Ordering::Relaxed);
            }
            respond(&mut out, "200 OK", "application/json", b"{}")?;
        } else {
            BYTES.fetch_add(len as u64, Ordering::Relaxed);
            let raw = if gzip {
                let mut d = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut d)?;
                d
            } else {
                body
            };
            SPANS.fetch_add(count_spans(&raw, json), Ordering::Relaxed);
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            if json {
                respond(&mut out, "200 OK", "application/json", b"{}")?;
            } else {
                respond(&mut out, "200 OK", "application/x-protobuf", b"")?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening {}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
    Ok(())
}
