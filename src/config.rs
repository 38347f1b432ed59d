//! `HoneyHiveTracer.init(...)` arguments and the HH_* / OTEL_* environment, resolved
//! once (explicit keyword > environment > default) and validated. Every error names
//! the keyword or variable the bad value came from.

use crate::ids;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_SERVER_URL: &str = "https://api.dp1.us.honeyhive.ai";
pub const DEFAULT_FILE: &str = ".honeytrace/traces.jsonl";

/// A credential: never shown by Debug/Display.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

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
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
    pub max_retries: u32,
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
    pub api_key: Option<Secret>,
    pub project: Option<String>,
    pub source: String,
    pub session_name: Option<String>,
    pub session_id: String,
    pub session_id_given: bool,
    pub server_url: String,
    pub test_mode: bool,
    pub verbose: bool,
    pub disable_batch: bool,
    pub otlp_endpoint: Option<String>,
    /// Header values may hold credentials: never logged.
    pub otlp_headers: Vec<(String, Secret)>,
    pub protocol: Protocol,
    pub gzip: bool,
    pub file_path: Option<PathBuf>,
    pub file_max_bytes: u64,
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
    pub baggage_allowlist: Vec<String>,
    pub include_names: Vec<NameMatcher>,
    pub exclude_names: Vec<NameMatcher>,
    pub run_id: Option<String>,
    pub dataset_id: Option<String>,
    pub datapoint_id: Option<String>,
    pub session_inputs: Option<serde_json::Value>,
    pub session_metadata: Option<serde_json::Value>,
    pub user_properties: Option<serde_json::Value>,
}

/// Keywords `HoneyHiveTracer.init` understands (the Python layer adds its own).
pub const KNOWN_KEYS: &[&str] = &[
    "api_key",
    "ingestion_api_key",
    "project",
    "source",
    "session_name",
    "session_id",
    "server_url",
    "test_mode",
    "verbose",
    "disable_batch",
    "disable_tracing",
    "otlp_endpoint",
    "otlp_headers",
    "otlp_protocol",
    "otlp_compression",
    "exporter",
    "file_path",
    "max_queue_size",
    "batch_size",
    "flush_interval",
    "export_timeout",
    "max_retries",
    "shutdown_timeout",
    "set_global",
    "service_name",
    "resource_attributes",
    "max_attributes",
    "max_events",
    "max_links",
    "max_attribute_bytes",
    "trust",
    "baggage_secret",
    "baggage_allowlist",
    "span_name_filters",
    "run_id",
    "dataset_id",
    "datapoint_id",
    "inputs",
    "metadata",
    "user_properties",
];

/// HoneyHive 1.x keywords accepted for compatibility that have no effect here.
pub const IGNORED_LEGACY_KEYS: &[&str] = &[
    "disable_http_tracing",
    "link_carrier",
    "is_evaluation",
    "requests_session",
    "config",
    "session_config",
    "evaluation_config",
    "tags",
    "instrumentors",
];

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type CResult<T> = Result<T, ConfigError>;

fn err<T>(msg: impl Into<String>) -> CResult<T> {
    Err(ConfigError(msg.into()))
}

/// Where a value came from, for error messages.
#[derive(Clone)]
enum Origin {
    Kw(&'static str),
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Kw(k) => write!(f, "keyword '{k}'"),
            Origin::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

enum Raw<'py> {
    Py(Bound<'py, PyAny>),
    Env(String),
}

struct Reader<'py> {
    kwargs: Bound<'py, PyDict>,
    env: HashMap<String, String>,
}

impl<'py> Reader<'py> {
    fn kw(&self, name: &'static str) -> Option<Bound<'py, PyAny>> {
        self.kwargs
            .get_item(name)
            .ok()
            .flatten()
            .filter(|v| !v.is_none())
    }

    fn env_first(&self, names: &[&str]) -> Option<(String, String)> {
        names.iter().find_map(|n| {
            self.env
                .get(*n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| ((*n).to_string(), v.trim().to_string()))
        })
    }

    fn raw(&self, kw: &'static str, envs: &[&str]) -> Option<(Raw<'py>, Origin)> {
        if let Some(v) = self.kw(kw) {
            return Some((Raw::Py(v), Origin::Kw(kw)));
        }
        self.env_first(envs)
            .map(|(n, v)| (Raw::Env(v), Origin::Env(n)))
    }

    fn string(&self, kw: &'static str, envs: &[&str]) -> CResult<Option<String>> {
        match self.raw(kw, envs) {
            None => Ok(None),
            Some((Raw::Env(s), _)) => Ok(Some(s)),
            Some((Raw::Py(v), o)) => match v.cast::<PyString>() {
                Ok(s) => Ok(Some(s.to_string_lossy().into_owned())),
                Err(_) => err(format!(
                    "{o} must be a string, got {}",
                    crate::serialize::type_name(&v)
                )),
            },
        }
    }

    fn boolean(&self, kw: &'static str, envs: &[&str]) -> CResult<Option<bool>> {
        match self.raw(kw, envs) {
            None => Ok(None),
            Some((Raw::Py(v), o)) => {
                if let Ok(b) = v.cast::<PyBool>() {
                    Ok(Some(b.is_true()))
                } else if let Ok(s) = v.cast::<PyString>() {
                    parse_bool(&s.to_string_lossy(), &o).map(Some)
                } else {
                    err(format!("{o} must be True or False"))
                }
            }
            Some((Raw::Env(s), o)) => parse_bool(&s, &o).map(Some),
        }
    }

    fn count(&self, kw: &'static str, envs: &[&str]) -> CResult<Option<u64>> {
        match self.raw(kw, envs) {
            None => Ok(None),
            Some((Raw::Py(v), o)) => {
                if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
                    return err(format!("{o} must be a whole number"));
                }
                match v.extract::<i64>() {
                    Ok(i) if i >= 0 => Ok(Some(i as u64)),
                    Ok(i) => err(format!("{o} must not be negative, got {i}")),
                    Err(_) => err(format!("{o} is out of range")),
                }
            }
            Some((Raw::Env(s), o)) => match s.parse::<i64>() {
                Ok(i) if i >= 0 => Ok(Some(i as u64)),
                Ok(i) => err(format!("{o} must not be negative, got {i}")),
                Err(_) => err(format!("{o} must be a whole number, got {s:?}")),
            },
        }
    }

    /// Seconds from a keyword or an env var in seconds; `millis_envs` are in ms (OTEL_*).
    fn seconds(
        &self,
        kw: &'static str,
        secs_envs: &[&str],
        millis_envs: &[&str],
    ) -> CResult<Option<Duration>> {
        if let Some((raw, o)) = self.raw(kw, secs_envs) {
            let secs = match raw {
                Raw::Py(v) => {
                    if v.is_instance_of::<PyBool>()
                        || !(v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>())
                    {
                        return err(format!("{o} must be a number of seconds"));
                    }
                    v.extract::<f64>()
                        .map_err(|_| ConfigError(format!("{o} must be a number of seconds")))?
                }
                Raw::Env(s) => s.parse::<f64>().map_err(|_| {
                    ConfigError(format!("{o} must be a number of seconds, got {s:?}"))
                })?,
            };
            return to_duration(secs, &o).map(Some);
        }
        if let Some((n, s)) = self.env_first(millis_envs) {
            let o = Origin::Env(n);
            let ms = s.parse::<f64>().map_err(|_| {
                ConfigError(format!("{o} must be a number of milliseconds, got {s:?}"))
            })?;
            return to_duration(ms / 1000.0, &o).map(Some);
        }
        Ok(None)
    }
}

fn to_duration(secs: f64, o: &Origin) -> CResult<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return err(format!("{o} must be a non-negative number, got {secs}"));
    }
    Ok(Duration::from_secs_f64(secs.min(86_400.0)))
}

fn parse_bool(s: &str, o: &Origin) -> CResult<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => err(format!("{o} must be true or false, got {other:?}")),
    }
}

/// Validate an http(s) URL and strip a trailing slash.
pub fn validate_url(url: &str, what: &str) -> CResult<String> {
    let u = url.trim();
    let parsed: ureq::http::Uri = match u.parse() {
        Ok(p) => p,
        Err(_) => return err(format!("{what} {u:?} is not a valid URL")),
    };
    match parsed.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return err(format!("{what} {u:?} must start with http:// or https://")),
    }
    match parsed.host() {
        Some(h) if !h.is_empty() => {}
        _ => return err(format!("{what} {u:?} has no host")),
    }
    Ok(u.trim_end_matches('/').to_string())
}

/// An OTLP traces endpoint: a bare host gets the standard `/v1/traces` path.
fn traces_endpoint(url: &str, what: &str, always_append: bool) -> CResult<String> {
    let base = validate_url(url, what)?;
    let parsed: ureq::http::Uri = base
        .parse()
        .map_err(|_| ConfigError(format!("{what} {url:?} is not a valid URL")))?;
    let path = parsed.path();
    if always_append || path.is_empty() || path == "/" {
        Ok(format!("{base}/v1/traces"))
    } else {
        Ok(base)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k1=v1,k2=v2` as used by OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES.
fn parse_kv_list(s: &str, o: &Origin) -> CResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return err(format!("{o}: {item:?} is not of the form key=value"));
        };
        let k = percent_decode(k.trim());
        if k.is_empty() {
            return err(format!("{o}: empty key in {item:?}"));
        }
        out.push((k, percent_decode(v.trim())));
    }
    Ok(out)
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn string_list(v: &Bound<'_, PyAny>, o: &Origin) -> CResult<Vec<String>> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s
            .to_string_lossy()
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect());
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = v.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = v.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        match v.try_iter() {
            Ok(it) => it.filter_map(Result::ok).collect(),
            Err(_) => return err(format!("{o} must be a list of strings")),
        }
    };
    items
        .iter()
        .map(|i| {
            i.cast::<PyString>()
                .map(|s| s.to_string_lossy().into_owned())
                .map_err(|_| ConfigError(format!("{o} must be a list of strings")))
        })
        .collect()
}

fn parse_matchers(v: &Bound<'_, PyAny>, o: &Origin) -> CResult<Vec<NameMatcher>> {
    let items: Vec<Bound<'_, PyAny>> = match v.try_iter() {
        Ok(it) => it.filter_map(Result::ok).collect(),
        Err(_) => return err(format!("{o}: include/exclude must be lists")),
    };
    let mut out = Vec::new();
    for it in items {
        if let Ok(s) = it.cast::<PyString>() {
            out.push(NameMatcher {
                kind: MatchKind::Prefix,
                value: s.to_string_lossy().into_owned(),
            });
            continue;
        }
        let d = it
            .cast::<PyDict>()
            .map_err(|_| ConfigError(format!("{o}: each filter is a string or a dict")))?;
        let kind: String = d
            .get_item("type")
            .ok()
            .flatten()
            .and_then(|t| t.extract().ok())
            .unwrap_or_else(|| "prefix".to_string());
        let value: String = d
            .get_item("value")
            .ok()
            .flatten()
            .and_then(|t| t.extract().ok())
            .ok_or_else(|| ConfigError(format!("{o}: a filter needs a string 'value'")))?;
        let kind = match kind.as_str() {
            "prefix" => MatchKind::Prefix,
            "exact" => MatchKind::Exact,
            "suffix" => MatchKind::Suffix,
            "contains" => MatchKind::Contains,
            other => {
                return err(format!(
                    "{o}: filter type {other:?} is not one of prefix, exact, suffix, contains"
                ))
            }
        };
        out.push(NameMatcher { kind, value });
    }
    Ok(out)
}

/// A session id outside HoneyHive cloud: any printable text up to 256 characters.
pub fn valid_session_text(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 256 && !s.chars().any(|c| c.is_control())
}

pub struct Parsed {
    pub config: Config,
    pub unknown: Vec<String>,
    pub ignored_legacy: Vec<String>,
}

pub fn parse(kwargs: &Bound<'_, PyDict>, env: HashMap<String, String>) -> CResult<Parsed> {
    let r = Reader {
        kwargs: kwargs.clone(),
        env,
    };

    let known: HashSet<&str> = KNOWN_KEYS.iter().copied().collect();
    let legacy: HashSet<&str> = IGNORED_LEGACY_KEYS.iter().copied().collect();
    let mut unknown = Vec::new();
    let mut ignored_legacy = Vec::new();
    for k in kwargs.keys() {
        let k: String = k.extract().unwrap_or_default();
        if legacy.contains(k.as_str()) {
            ignored_legacy.push(k);
        } else if !known.contains(k.as_str()) {
            unknown.push(k);
        }
    }

    let verbose = r.boolean("verbose", &["HH_VERBOSE"])?.unwrap_or(false);
    let test_mode = r.boolean("test_mode", &["HH_TEST_MODE"])?.unwrap_or(false);
    let disable_batch = r
        .boolean("disable_batch", &["HH_DISABLE_BATCH"])?
        .unwrap_or(false);
    let disabled = r
        .boolean(
            "disable_tracing",
            &["OTEL_SDK_DISABLED", "HH_DISABLE_TRACING"],
        )?
        .unwrap_or(false);

    let api_key = r
        .string("ingestion_api_key", &["HH_INGESTION_API_KEY"])?
        .or(r.string("api_key", &["HH_API_KEY", "HONEYHIVE_API_KEY"])?)
        .filter(|k| !k.trim().is_empty())
        .map(|k| Secret(k.trim().to_string()));

    let project = r.string("project", &["HH_PROJECT"])?;
    if let Some(p) = &project {
        if p.trim().is_empty() || p.chars().any(|c| c.is_control()) {
            return err("project must be a non-empty name without control characters");
        }
    }
    let source = r
        .string("source", &["HH_SOURCE"])?
        .unwrap_or_else(|| "dev".to_string());
    let session_name = r.string("session_name", &["HH_SESSION_NAME", "SESSION_NAME"])?;

    let server_url = match r.raw(
        "server_url",
        &["HH_API_URL", "HH_SERVER_URL", "HONEYHIVE_SERVER_URL"],
    ) {
        None => DEFAULT_SERVER_URL.to_string(),
        Some((_, o)) => {
            let s = r
                .string(
                    "server_url",
                    &["HH_API_URL", "HH_SERVER_URL", "HONEYHIVE_SERVER_URL"],
                )?
                .unwrap_or_default();
            validate_url(&s, &format!("server_url (from {o})"))?
        }
    };

    // Exporter choice.
    let exporter_kw = match r.raw("exporter", &["HH_EXPORTER", "OTEL_TRACES_EXPORTER"]) {
        None => None,
        Some((_, o)) => {
            let s = r
                .string("exporter", &["HH_EXPORTER", "OTEL_TRACES_EXPORTER"])?
                .unwrap_or_default();
            Some(match s.trim().to_ascii_lowercase().as_str() {
                "otlp" => ExporterKind::Otlp,
                "file" => ExporterKind::File,
                "console" => ExporterKind::Console,
                "memory" => ExporterKind::Memory,
                "none" => ExporterKind::None,
                other => {
                    return err(format!(
                        "{o} is {other:?}; use one of otlp, file, console, memory, none"
                    ))
                }
            })
        }
    };

    let explicit_endpoint = match r.raw("otlp_endpoint", &["HH_OTLP_ENDPOINT"]) {
        None => None,
        Some((_, o)) => {
            let s = r
                .string("otlp_endpoint", &["HH_OTLP_ENDPOINT"])?
                .unwrap_or_default();
            Some(traces_endpoint(
                &s,
                &format!("otlp_endpoint (from {o})"),
                false,
            )?)
        }
    };
    let env_endpoint = if let Some((n, v)) = r.env_first(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
        Some(traces_endpoint(&v, &n, false)?)
    } else if let Some((n, v)) = r.env_first(&["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
        Some(traces_endpoint(&v, &n, true)?)
    } else {
        None
    };

    let (mode, exporter, otlp_endpoint) = if disabled {
        (Mode::Disabled, ExporterKind::None, None)
    } else if test_mode {
        match exporter_kw.unwrap_or(ExporterKind::Memory) {
            ExporterKind::Otlp => return err(
                "test_mode sends nothing over the network, so exporter='otlp' conflicts with it",
            ),
            ExporterKind::File => (Mode::File, ExporterKind::File, None),
            ExporterKind::Console => (Mode::Console, ExporterKind::Console, None),
            ExporterKind::Memory => (Mode::Memory, ExporterKind::Memory, None),
            ExporterKind::None => (Mode::None, ExporterKind::None, None),
        }
    } else {
        match exporter_kw {
            None | Some(ExporterKind::Otlp) => {
                if let Some(e) = explicit_endpoint {
                    (Mode::Otlp, ExporterKind::Otlp, Some(e))
                } else if api_key.is_some() {
                    (
                        Mode::Cloud,
                        ExporterKind::Otlp,
                        Some(format!("{server_url}/opentelemetry/v1/traces")),
                    )
                } else if let Some(e) = env_endpoint {
                    (Mode::Otlp, ExporterKind::Otlp, Some(e))
                } else if exporter_kw.is_some() {
                    return err("exporter='otlp' needs otlp_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or an api_key");
                } else {
                    (Mode::File, ExporterKind::File, None)
                }
            }
            Some(ExporterKind::File) => (Mode::File, ExporterKind::File, None),
            Some(ExporterKind::Console) => (Mode::Console, ExporterKind::Console, None),
            Some(ExporterKind::Memory) => (Mode::Memory, ExporterKind::Memory, None),
            Some(ExporterKind::None) => (Mode::None, ExporterKind::None, None),
        }
    };

    // Session identity.
    let given_session = r.string("session_id", &["HH_SESSION_ID", "SESSION_ID"])?;
    let (session_id, session_id_given) = match given_session {
        Some(s) => {
            let s = s.trim().to_string();
            if mode == Mode::Cloud {
                if !ids::is_uuid(&s) {
                    return err(format!(
                        "session_id {s:?} is not a UUID; HoneyHive needs a UUID such as {}",
                        ids::uuid4()
                    ));
                }
                (s.to_ascii_lowercase(), true)
            } else {
                if !valid_session_text(&s) {
                    return err("session_id must be 1 to 256 printable characters");
                }
                (s, true)
            }
        }
        None => (ids::uuid4(), false),
    };

    // OTLP details.
    let header_envs = [
        "HH_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ];
    let mut otlp_headers: Vec<(String, Secret)> = Vec::new();
    match r.raw("otlp_headers", &header_envs) {
        None => {}
        Some((Raw::Env(s), o)) => {
            for (k, v) in parse_kv_list(&s, &o)? {
                otlp_headers.push((k, Secret(v)));
            }
        }
        Some((Raw::Py(v), o)) => {
            if let Ok(d) = v.cast::<PyDict>() {
                for (k, val) in d.iter() {
                    let k: String = k
                        .extract()
                        .map_err(|_| ConfigError(format!("{o}: header names must be strings")))?;
                    let val: String = val
                        .extract()
                        .map_err(|_| ConfigError(format!("{o}: header values must be strings")))?;
                    otlp_headers.push((k, Secret(val)));
                }
            } else if let Ok(s) = v.cast::<PyString>() {
                for (k, val) in parse_kv_list(&s.to_string_lossy(), &o)? {
                    otlp_headers.push((k, Secret(val)));
                }
            } else {
                return err(format!("{o} must be a dict or a 'k=v,k2=v2' string"));
            }
        }
    }
    for (k, v) in &otlp_headers {
        if !is_header_name(k) {
            return err(format!(
                "otlp_headers: {k:?} is not a valid HTTP header name"
            ));
        }
        if v.0.bytes().any(|c| c == b'\r' || c == b'\n') {
            return err(format!(
                "otlp_headers: the value of {k:?} contains a line break"
            ));
        }
    }

    let protocol_envs = [
        "HH_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ];
    let protocol = match r.raw("otlp_protocol", &protocol_envs) {
        None => Protocol::HttpProtobuf,
        Some((_, o)) => {
            let s = r
                .string("otlp_protocol", &protocol_envs)?
                .unwrap_or_default();
            match s.trim().to_ascii_lowercase().as_str() {
                "http/protobuf" | "protobuf" => Protocol::HttpProtobuf,
                "http/json" | "json" => Protocol::HttpJson,
                "grpc" => {
                    return err(format!(
                        "{o} is 'grpc', which honeytrace does not speak; use http/protobuf (port 4318 on a collector)"
                    ))
                }
                other => {
                    return err(format!("{o} is {other:?}; use http/protobuf or http/json"))
                }
            }
        }
    };
    let compression_envs = [
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ];
    // OTLP's default is no compression; HoneyHive cloud (over the internet) gets gzip.
    let gzip = match r.raw("otlp_compression", &compression_envs) {
        None => mode == Mode::Cloud,
        Some((_, o)) => {
            let s = r
                .string("otlp_compression", &compression_envs)?
                .unwrap_or_default();
            match s.trim().to_ascii_lowercase().as_str() {
                "gzip" => true,
                "none" | "" => false,
                other => return err(format!("{o} is {other:?}; use gzip or none")),
            }
        }
    };

    let file_path = if exporter == ExporterKind::File {
        let p = r
            .string("file_path", &["HH_FILE_PATH"])?
            .unwrap_or_else(|| DEFAULT_FILE.to_string());
        let p = PathBuf::from(p);
        Some(if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        })
    } else {
        None
    };

    // Batching.
    let max_queue_size = r
        .count(
            "max_queue_size",
            &["HH_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"],
        )?
        .unwrap_or(16_384) as usize;
    let mut max_export_batch_size = r
        .count(
            "batch_size",
            &[
                "HH_BATCH_SIZE",
                "HH_MAX_EXPORT_BATCH_SIZE",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            ],
        )?
        .unwrap_or(512) as usize;
    if max_queue_size == 0 {
        return err("max_queue_size must be at least 1");
    }
    if max_export_batch_size == 0 {
        return err("batch_size must be at least 1");
    }
    if max_export_batch_size > max_queue_size {
        return err(format!(
            "batch_size ({max_export_batch_size}) must not exceed max_queue_size ({max_queue_size})"
        ));
    }
    let mut schedule_delay = r
        .seconds(
            "flush_interval",
            &["HH_FLUSH_INTERVAL"],
            &["OTEL_BSP_SCHEDULE_DELAY"],
        )?
        .unwrap_or(Duration::from_millis(1000));
    if disable_batch {
        // Export each span as soon as it ends, still from the background thread.
        max_export_batch_size = 1;
        schedule_delay = Duration::ZERO;
    }
    let export_timeout = r
        .seconds(
            "export_timeout",
            &["HH_EXPORT_TIMEOUT"],
            &[
                "OTEL_BSP_EXPORT_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
        )?
        .unwrap_or(Duration::from_secs(10));
    if export_timeout.is_zero() {
        return err("export_timeout must be greater than 0");
    }
    let max_retries = r
        .count("max_retries", &["HH_MAX_RETRIES"])?
        .unwrap_or(5)
        .min(100) as u32;
    let shutdown_timeout = r
        .seconds("shutdown_timeout", &["HH_SHUTDOWN_TIMEOUT"], &[])?
        .unwrap_or(Duration::from_secs(5));

    let set_global = r.boolean("set_global", &[])?;

    let mut resource_attributes = Vec::new();
    if let Some((n, v)) = r.env_first(&["OTEL_RESOURCE_ATTRIBUTES"]) {
        resource_attributes.extend(parse_kv_list(&v, &Origin::Env(n))?);
    }
    if let Some(v) = r.kw("resource_attributes") {
        let d = v
            .cast::<PyDict>()
            .map_err(|_| ConfigError("resource_attributes must be a dict of strings".into()))?;
        for (k, val) in d.iter() {
            let k: String = k
                .extract()
                .map_err(|_| ConfigError("resource_attributes keys must be strings".into()))?;
            resource_attributes.push((k, val.str().map(|s| s.to_string()).unwrap_or_default()));
        }
    }

    // OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES (OTel spec).
    let service_name = r
        .string("service_name", &["OTEL_SERVICE_NAME", "HH_SERVICE_NAME"])?
        .or_else(|| {
            resource_attributes
                .iter()
                .rev()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| project.clone())
        .unwrap_or_else(|| "unknown_service:python".to_string());

    let max_attributes = r
        .count(
            "max_attributes",
            &["HH_MAX_ATTRIBUTES", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"],
        )?
        .unwrap_or(1024)
        .min(u64::from(u32::MAX)) as u32;
    let max_events = r
        .count(
            "max_events",
            &["HH_MAX_EVENTS", "OTEL_SPAN_EVENT_COUNT_LIMIT"],
        )?
        .unwrap_or(1024)
        .min(u64::from(u32::MAX)) as u32;
    let max_links = r
        .count("max_links", &["HH_MAX_LINKS", "OTEL_SPAN_LINK_COUNT_LIMIT"])?
        .unwrap_or(128)
        .min(u64::from(u32::MAX)) as u32;

    let max_attribute_bytes = r
        .count("max_attribute_bytes", &["HH_MAX_ATTRIBUTE_BYTES"])?
        .unwrap_or(crate::attributes::DEFAULT_BUDGET as u64);
    if max_attribute_bytes < 64 {
        return err("max_attribute_bytes must be at least 64");
    }
    let max_attribute_bytes = max_attribute_bytes.min(64 * 1024 * 1024) as usize;

    let trust = match r.raw("trust", &["HH_TRUST", "HH_INCOMING_TRUST"]) {
        None => Trust::Continue,
        Some((_, o)) => {
            let v = r
                .string("trust", &["HH_TRUST", "HH_INCOMING_TRUST"])?
                .unwrap_or_default();
            Trust::parse(&v).ok_or_else(|| {
                ConfigError(format!("{o} is {v:?}; use continue, restart or ignore"))
            })?
        }
    };
    let baggage_secret = r
        .string("baggage_secret", &["HH_BAGGAGE_SECRET"])?
        .filter(|s| !s.is_empty())
        .map(Secret);
    if baggage_secret.as_ref().is_some_and(|s| s.0.len() < 16) {
        return err("baggage_secret must be at least 16 characters");
    }

    let baggage_allowlist = match r.raw("baggage_allowlist", &["HH_BAGGAGE_ALLOWLIST"]) {
        None => Vec::new(),
        Some((Raw::Env(s), _)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        Some((Raw::Py(v), o)) => string_list(&v, &o)?,
    };

    let (mut include_names, mut exclude_names) = (Vec::new(), Vec::new());
    if let Some(v) = r.kw("span_name_filters") {
        let o = Origin::Kw("span_name_filters");
        let d = v
            .cast::<PyDict>()
            .map_err(|_| ConfigError(format!("{o} must be a dict with 'include'/'exclude'")))?;
        for (k, val) in d.iter() {
            let k: String = k.extract().unwrap_or_default();
            match k.as_str() {
                "include" => include_names = parse_matchers(&val, &o)?,
                "exclude" => exclude_names = parse_matchers(&val, &o)?,
                other => return err(format!("{o}: unknown key {other:?} (use include/exclude)")),
            }
        }
    }

    let run_id = r.string("run_id", &["HH_RUN_ID"])?;
    let dataset_id = r.string("dataset_id", &["HH_DATASET_ID"])?;
    let datapoint_id = r.string("datapoint_id", &["HH_DATAPOINT_ID"])?;
    let json_kw = |k: &'static str| r.kw(k).map(|v| crate::serialize::to_json(&v));

    let config = Config {
        mode,
        exporter,
        api_key,
        project,
        source,
        session_name,
        session_id,
        session_id_given,
        server_url,
        test_mode,
        verbose,
        disable_batch,
        otlp_endpoint,
        otlp_headers,
        protocol,
        gzip,
        file_path,
        file_max_bytes: 256 * 1024 * 1024,
        batch: BatchConfig {
            max_queue_size,
            max_export_batch_size,
            schedule_delay,
            export_timeout,
            max_retries,
        },
        shutdown_timeout,
        set_global,
        service_name,
        resource_attributes,
        max_attributes,
        max_events,
        max_links,
        max_attribute_bytes,
        trust,
        baggage_secret,
        baggage_allowlist,
        include_names,
        exclude_names,
        run_id,
        dataset_id,
        datapoint_id,
        session_inputs: json_kw("inputs"),
        session_metadata: json_kw("metadata"),
        user_properties: json_kw("user_properties"),
    };
    Ok(Parsed {
        config,
        unknown,
        ignored_legacy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_list_percent_decodes() {
        let v = parse_kv_list("a=b%20c, x-key = 1%2C2 ,", &Origin::Env("T".into())).unwrap();
        assert_eq!(
            v,
            vec![("a".into(), "b c".into()), ("x-key".into(), "1,2".into())]
        );
        assert!(parse_kv_list("novalue", &Origin::Env("T".into())).is_err());
    }

    #[test]
    fn percent_decode_keeps_malformed() {
        assert_eq!(percent_decode("%ZZ%4"), "%ZZ%4");
        assert_eq!(percent_decode("%41%42"), "AB");
    }

    #[test]
    fn urls_are_validated() {
        assert_eq!(validate_url("https://x.io/", "u").unwrap(), "https://x.io");
        assert!(validate_url("ftp://x.io", "u").is_err());
        assert!(validate_url("not a url", "u").is_err());
        assert!(validate_url("http://", "u").is_err());
        assert_eq!(
            traces_endpoint("http://127.0.0.1:4318", "e", false).unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_endpoint("http://h:1/custom/path", "e", false).unwrap(),
            "http://h:1/custom/path"
        );
        assert_eq!(
            traces_endpoint("http://h:1/base/", "e", true).unwrap(),
            "http://h:1/base/v1/traces"
        );
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("x-api-key"));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name(""));
    }

    #[test]
    fn secret_is_hidden() {
        let s = Secret("hh_live_123".into());
        assert!(!format!("{s:?}").contains("hh_live"));
    }
}
