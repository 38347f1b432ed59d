//! Console exporter: a readable, indented tree per trace on stderr, printed when the
//! trace's local root span ends (children end first, so they are buffered until then).

use super::sink::{Delivered, ExportControl, ExportResult, Exporter};
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

const MAX_BUFFERED: usize = 10_000;
const MAX_VALUE_CHARS: usize = 60;

pub struct ConsoleExporter {
    pending: HashMap<TraceId, Vec<SpanData>>,
    buffered: usize,
    out: Box<dyn Write + Send>,
}

impl ConsoleExporter {
    pub fn stderr() -> Self {
        ConsoleExporter {
            pending: HashMap::new(),
            buffered: 0,
            out: Box::new(std::io::stderr()),
        }
    }

    fn print_trace(&mut self, trace: TraceId, spans: Vec<SpanData>) {
        let text = render(trace, spans);
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn print_all(&mut self) {
        let pending: Vec<(TraceId, Vec<SpanData>)> = self.pending.drain().collect();
        self.buffered = 0;
        for (t, spans) in pending {
            self.print_trace(t, spans);
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.as_str();
    let s = s.replace('\n', " ");
    if s.chars().count() > MAX_VALUE_CHARS {
        let cut: String = s.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        s
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .rev()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn line(span: &SpanData, depth: usize) -> String {
    let ms = span
        .end_time
        .duration_since(span.start_time)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let mut s = format!("{}{}", "  ".repeat(depth + 1), span.name);
    if let Some(t) = attr(span, "honeyhive_event_type") {
        let _ = write!(s, " [{}]", t.as_str());
    }
    let _ = write!(s, "  {ms:.1} ms");
    if let Status::Error { description } = &span.status {
        let _ = write!(s, "  ✗ {description}");
    }
    let inputs: Vec<String> = span
        .attributes
        .iter()
        .filter_map(|kv| {
            kv.key
                .as_str()
                .strip_prefix("honeyhive_inputs.")
                .map(|k| format!("{k}={}", short(&kv.value)))
        })
        .take(4)
        .collect();
    if !inputs.is_empty() {
        let _ = write!(s, "  in: {}", inputs.join(" "));
    }
    if let Some(out) = attr(span, "honeyhive_outputs.result") {
        let _ = write!(s, "  out: {}", short(out));
    }
    s.push('\n');
    s
}

fn render(trace: TraceId, mut spans: Vec<SpanData>) -> String {
    for s in &mut spans {
        super::prepare::prepare(s, false);
    }
    spans.sort_by_key(|s| s.start_time);
    let ids: std::collections::HashSet<SpanId> =
        spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<SpanId, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.parent_span_id != SpanId::INVALID && ids.contains(&s.parent_span_id) {
            children.entry(s.parent_span_id).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let session = spans
        .iter()
        .find_map(|s| attr(s, "honeyhive.session_id"))
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default();
    let mut out = format!("honeytrace · trace {trace} · session {session}\n");
    // Iterative depth-first walk (no recursion limit on deep trees).
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        out.push_str(&line(&spans[i], depth));
        if let Some(kids) = children.get(&spans[i].span_context.span_id()) {
            for &k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    out
}

impl Exporter for ConsoleExporter {
    fn export(&mut self, batch: Vec<SpanData>, _ctl: &dyn ExportControl) -> ExportResult {
        let mut complete = Vec::new();
        for span in batch {
            let local_root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
            let trace = span.span_context.trace_id();
            self.pending.entry(trace).or_default().push(span);
            self.buffered += 1;
            if local_root {
                complete.push(trace);
            }
        }
        for t in complete {
            if let Some(spans) = self.pending.remove(&t) {
                self.buffered -= spans.len();
                self.print_trace(t, spans);
            }
        }
        if self.buffered > MAX_BUFFERED {
            self.print_all();
        }
        Ok(Delivered::All)
    }

    fn flush(&mut self) {
        self.print_all();
    }

    fn shutdown(&mut self) {
        self.print_all();
    }
}
