//! What a tracer is configured with, once the settings are resolved and validated
//! (`super::parse`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A credential: never shown by Debug/Display.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExporterKind {
    Otlp,
    File,
    Console,
    Memory,
    None,
}

/// Where spans go, as the user would describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// HoneyHive over OTLP, plus session REST calls.
    Cloud,
    /// Any OTLP/HTTP collector.
    Otlp,
    File,
    Console,
    Memory,
    None,
    /// OTEL_SDK_DISABLED / disable_tracing: a no-op tracer.
    Disabled,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cloud => "cloud",
            Mode::Otlp => "otlp",
            Mode::File => "file",
            Mode::Console => "console",
            Mode::Memory => "memory",
            Mode::None => "none",
            Mode::Disabled => "disabled",
        }
    }
}

/// What to do with an incoming trace context (traceparent and baggage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Continue the caller's trace and session (HoneyHive's behaviour).
    Continue,
    /// A new trace linked to the caller's span; a valid incoming session is kept.
    Restart,
    /// Drop the incoming context entirely.
    Ignore,
}

impl Trust {
    pub fn parse(s: &str) -> Option<Trust> {
        match s.trim().to_ascii_lowercase().as_str() {
            "continue" => Some(Trust::Continue),
            "restart" => Some(Trust::Restart),
            "ignore" => Some(Trust::Ignore),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Continue => "continue",
            Trust::Restart => "restart",
            Trust::Ignore => "ignore",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BatchConfig {
    pub max_queue_size: usize,
    /// Bytes of finished spans held for export, queued and in flight.
    pub max_queue_bytes: usize,
    pub max_export_batch_size: usize,
    /// Bytes of spans (`span_bytes`) per export request; a larger span goes alone.
    pub max_export_batch_bytes: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
    /// The longest one HTTP attempt may take: `shutdown_timeout` (at least 1 s), so a
    /// request in flight when a shutdown begins ends by its deadline and what it
    /// carried can still be counted or spooled.
    pub attempt_timeout: Duration,
    pub max_retries: u32,
    /// Spans are exported with OpenInference's copies of their inputs and outputs
    /// (`Config::openinference`): their size counts those copies too.
    pub openinference: bool,
}

/// How a span that starts a trace (or any span, for samplers that are not parent-based)
/// is sampled. Bounds are out of 2^64 (`ratio × 2^64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    /// OpenTelemetry's `TraceIdRatioBased`: the low 64 bits of the trace id below the bound.
    TraceIdRatio(u128),
    /// Whole sessions: the first 8 bytes of SHA-256 of the span's session id below the
    /// bound, so every service of a session decides alike without coordination.
    Session(u128),
}

/// The sampler: `parent_based` follows a parent's sampled flag where there is a parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    pub root: RootSampler,
    pub parent_based: bool,
}

impl Sampling {
    /// Every span records unless its parent was not sampled (the default).
    pub const DEFAULT: Sampling = Sampling {
        root: RootSampler::AlwaysOn,
        parent_based: true,
    };
}

/// The disk spool for batches an OTLP collector could not take
/// (src/engine/export/spool.rs).
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// The spool's root; each destination gets a subdirectory.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_files: u64,
    pub max_age: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    Prefix,
    Exact,
    Suffix,
    Contains,
}

#[derive(Clone, Debug)]
pub struct NameMatcher {
    pub kind: MatchKind,
    pub value: String,
}

impl NameMatcher {
    pub fn matches(&self, name: &str) -> bool {
        match self.kind {
            MatchKind::Prefix => name.starts_with(&self.value),
            MatchKind::Exact => name == self.value,
            MatchKind::Suffix => name.ends_with(&self.value),
            MatchKind::Contains => name.contains(&self.value),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub exporter: ExporterKind,
    /// Exporters that get a copy of every batch besides `exporter` (`file`, `console`).
    pub extra_exporters: Vec<ExporterKind>,
    pub api_key: Option<Secret>,
    pub project: Option<String>,
    pub source: String,
    pub session_name: Option<String>,
    pub session_id: String,
    pub session_id_given: bool,
    pub server_url: String,
    pub test_mode: bool,
    pub verbose: bool,
    /// Write OpenInference's attributes at export (`export::prepare`).
    pub openinference: bool,
    pub sampling: Sampling,
    pub disable_batch: bool,
    pub otlp_endpoint: Option<String>,
    /// Header values may hold credentials: never logged.
    pub otlp_headers: Vec<(String, Secret)>,
    pub protocol: Protocol,
    pub gzip: bool,
    pub file_path: Option<PathBuf>,
    pub file_max_bytes: u64,
    /// Renamed-aside trace files kept.
    pub file_keep: u64,
    /// None: no spool (turned off, or not an OTLP destination).
    pub spool: Option<SpoolConfig>,
    pub batch: BatchConfig,
    pub shutdown_timeout: Duration,
    pub set_global: Option<bool>,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub max_attributes: u32,
    pub max_events: u32,
    pub max_links: u32,
    pub max_attribute_bytes: usize,
    pub trust: Trust,
    /// Shared secret for signed session baggage (HH_BAGGAGE_SECRET).
    pub baggage_secret: Option<Secret>,
    /// How long a signature is accepted (HH_BAGGAGE_MAX_AGE).
    pub baggage_max_age: Duration,
    pub baggage_allowlist: Vec<String>,
    pub include_names: Vec<NameMatcher>,
    pub exclude_names: Vec<NameMatcher>,
    pub run_id: Option<String>,
    pub dataset_id: Option<String>,
    pub datapoint_id: Option<String>,
    pub session_inputs: Option<serde_json::Value>,
    pub session_metadata: Option<serde_json::Value>,
    pub user_properties: Option<serde_json::Value>,
    /// Wrap `os._exit` and chain a SIGTERM handler (python/honeytrace/_process_end.py).
    pub exit_hooks: bool,
    pub propagate_threads: bool,
    /// Carry the context into process-pool tasks (python/honeytrace/_processes.py).
    pub propagate_processes: bool,
    pub instrument_http: bool,
    pub instrument_celery: bool,
    /// Hosts allowed to receive baggage from the HTTP integration (None: every host).
    pub baggage_hosts: Option<Vec<String>>,
}
