//! Resolving the settings table (`super::settings`) into a validated `Config`:
//! explicit keyword > environment > default, every error naming the keyword or the
//! variable the bad value came from.

use super::model::{
    BatchConfig, Config, ExporterKind, MatchKind, Mode, NameMatcher, Protocol, RootSampler,
    Sampling, Secret, SpoolConfig, Trust,
};
use super::settings::{self, Kind, Setting, DEFAULT_FILE, DEFAULT_SERVER_URL, IGNORED_LEGACY_KEYS};
use super::value::RawValue;
use crate::engine::ids;
use crate::engine::propagation::baggage::{self, is_token, printable};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
#[derive(Clone, Debug)]
pub enum Origin {
    Kw(&'static str),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Kw(k) => write!(f, "keyword '{k}'"),
            Origin::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// A value found for a setting.
enum Found<'a> {
    Kw(&'a RawValue),
    /// An environment value, and whether it is in milliseconds.
    Env(String, bool),
}

/// What the parser reads: keywords (None values already left out) and the environment.
pub struct Input {
    pub kwargs: Vec<(String, RawValue)>,
    pub env: HashMap<String, String>,
}

#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    pub unknown: Vec<String>,
    pub ignored_legacy: Vec<String>,
}

struct Resolver<'a> {
    kw: HashMap<&'a str, &'a RawValue>,
    env: &'a HashMap<String, String>,
}

impl<'a> Resolver<'a> {
    fn setting(key: &str) -> CResult<&'static Setting> {
        settings::find(key).ok_or_else(|| ConfigError(format!("internal: no setting {key}")))
    }

    fn env_first(&self, names: &'static [&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|n| {
            self.env
                .get(*n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*n, v.trim().to_string()))
        })
    }

    fn find(&self, key: &str) -> CResult<Option<(Found<'a>, Origin)>> {
        let st = Self::setting(key)?;
        if let Some(v) = self.kw.get(st.key) {
            return Ok(Some((Found::Kw(v), Origin::Kw(st.key))));
        }
        if let Some((n, v)) = self.env_first(st.env) {
            return Ok(Some((Found::Env(v, false), Origin::Env(n))));
        }
        if let Some((n, v)) = self.env_first(st.env_ms) {
            return Ok(Some((Found::Env(v, true), Origin::Env(n))));
        }
        Ok(None)
    }

    fn text_with_origin(&self, key: &str) -> CResult<Option<(String, Origin)>> {
        match self.find(key)? {
            None => Ok(None),
            Some((Found::Env(s, _), o)) => Ok(Some((s, o))),
            Some((Found::Kw(RawValue::Str(s)), o)) => Ok(Some((s.clone(), o))),
            Some((Found::Kw(v), o)) => err(format!("{o} must be a string, got {}", v.describe())),
        }
    }

    fn text(&self, key: &str) -> CResult<Option<String>> {
        Ok(self.text_with_origin(key)?.map(|(s, _)| s))
    }

    /// A secret sent in an HTTP header: one with a line break or another control
    /// character would make every request fail (or split the header), so it is refused
    /// here, naming where it came from and never the value.
    fn secret(&self, key: &str) -> CResult<Option<Secret>> {
        let Some((s, o)) = self.text_with_origin(key)? else {
            return Ok(None);
        };
        let s = s.trim();
        if s.chars().any(char::is_control) {
            return err(format!(
                "{o} contains a line break or another control character, which an HTTP header cannot carry (check how it was set; the value is not shown)"
            ));
        }
        Ok(Some(Secret(s.to_string())).filter(|s| !s.0.is_empty()))
    }

    fn boolean(&self, key: &str) -> CResult<Option<bool>> {
        match self.find(key)? {
            None => Ok(None),
            Some((Found::Kw(RawValue::Bool(b)), _)) => Ok(Some(*b)),
            Some((Found::Kw(RawValue::Str(s)), o)) => parse_bool(s, &o).map(Some),
            Some((Found::Env(s, _), o)) => parse_bool(&s, &o).map(Some),
            Some((Found::Kw(_), o)) => err(format!("{o} must be True or False")),
        }
    }

    fn count(&self, key: &str) -> CResult<Option<u64>> {
        let st = Self::setting(key)?;
        let Kind::Count { min, max } = st.kind else {
            return err(format!("internal: {key} is not a count"));
        };
        let (n, o) = match self.find(key)? {
            None => return Ok(None),
            Some((Found::Kw(RawValue::Int(i)), o)) => (i128::from(*i), o),
            Some((Found::Kw(RawValue::BigInt(_)), o)) => {
                return err(format!("{o} is out of range (at most {max})"))
            }
            Some((Found::Kw(_), o)) => return err(format!("{o} must be a whole number")),
            Some((Found::Env(s, _), o)) => match s.parse::<i128>() {
                Ok(i) => (i, o),
                Err(_) => return err(format!("{o} must be a whole number, got {s:?}")),
            },
        };
        if n < 0 {
            return err(format!("{o} must not be negative, got {n}"));
        }
        if n < i128::from(min) {
            return err(format!("{key} must be at least {min} (from {o})"));
        }
        Ok(Some(u64::try_from(n).unwrap_or(max).min(max)))
    }

    fn seconds(&self, key: &str) -> CResult<Option<Duration>> {
        let st = Self::setting(key)?;
        let Kind::Seconds { min_ms } = st.kind else {
            return err(format!("internal: {key} is not a duration"));
        };
        let (secs, o) = match self.find(key)? {
            None => return Ok(None),
            Some((Found::Kw(RawValue::Int(i)), o)) => (*i as f64, o),
            Some((Found::Kw(RawValue::Float(f)), o)) => (*f, o),
            Some((Found::Kw(_), o)) => return err(format!("{o} must be a number of seconds")),
            Some((Found::Env(s, ms), o)) => match s.parse::<f64>() {
                Ok(v) if ms => (v / 1000.0, o),
                Ok(v) => (v, o),
                Err(_) => {
                    let unit = if ms { "milliseconds" } else { "seconds" };
                    return err(format!("{o} must be a number of {unit}, got {s:?}"));
                }
            },
        };
        if !secs.is_finite() || secs < 0.0 {
            return err(format!("{o} must be a non-negative number, got {secs}"));
        }
        // At most a day: a longer wait is a mistake, and it keeps every deadline finite.
        let d = Duration::try_from_secs_f64(secs.min(86_400.0)).unwrap_or(Duration::ZERO);
        if d < Duration::from_millis(min_ms) {
            return err(format!("{key} must be greater than 0 (from {o})"));
        }
        Ok(Some(d))
    }

    fn choice(&self, key: &str) -> CResult<Option<(String, Origin)>> {
        Ok(self
            .text_with_origin(key)?
            .map(|(s, o)| (s.trim().to_ascii_lowercase(), o)))
    }

    fn pairs(&self, key: &str) -> CResult<Vec<(String, String)>> {
        match self.find(key)? {
            None => Ok(Vec::new()),
            Some((Found::Env(s, _), o)) => parse_kv_list(&s, &o),
            Some((Found::Kw(v), o)) => pairs_of(v, &o),
        }
    }

    fn list(&self, key: &str) -> CResult<Option<Vec<String>>> {
        match self.find(key)? {
            None => Ok(None),
            Some((Found::Env(s, _), _)) => Ok(Some(split_commas(&s))),
            Some((Found::Kw(RawValue::Str(s)), _)) => Ok(Some(split_commas(s))),
            Some((Found::Kw(RawValue::List(items)), o)) => items
                .iter()
                .map(|i| match i {
                    RawValue::Str(s) => Ok(s.clone()),
                    _ => err(format!("{o} must be a list of strings")),
                })
                .collect::<CResult<Vec<String>>>()
                .map(Some),
            Some((Found::Kw(_), o)) => err(format!("{o} must be a list of strings")),
        }
    }

    fn json(&self, key: &str) -> CResult<Option<serde_json::Value>> {
        match self.find(key)? {
            None => Ok(None),
            Some((Found::Kw(RawValue::Json(v)), _)) => Ok(Some(v.clone())),
            Some((Found::Kw(RawValue::Str(s)), _)) => {
                Ok(Some(serde_json::Value::String(s.clone())))
            }
            Some((Found::Env(s, _), _)) => Ok(Some(serde_json::Value::String(s))),
            Some((Found::Kw(v), o)) => err(format!("{o}: cannot use a {}", v.describe())),
        }
    }
}

fn split_commas(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn scalar_text(v: &RawValue) -> Option<String> {
    match v {
        RawValue::Str(s) | RawValue::BigInt(s) => Some(s.clone()),
        RawValue::Int(i) => Some(i.to_string()),
        RawValue::Float(f) => Some(f.to_string()),
        RawValue::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

fn pairs_of(v: &RawValue, o: &Origin) -> CResult<Vec<(String, String)>> {
    match v {
        RawValue::Str(s) => parse_kv_list(s, o),
        RawValue::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                let RawValue::Str(k) = k else {
                    return err(format!("{o}: keys must be strings"));
                };
                let v = scalar_text(v)
                    .ok_or_else(|| ConfigError(format!("{o}: the value of {k:?} must be text")))?;
                Ok((k.clone(), v))
            })
            .collect(),
        _ => err(format!("{o} must be a dict or a 'k=v,k2=v2' string")),
    }
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
        Some("http" | "https") => {}
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
    baggage::percent_decode(s).into_owned()
}

/// `k1=v1,k2=v2` as used by `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`.
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

fn matcher(v: &RawValue, o: &Origin) -> CResult<NameMatcher> {
    match v {
        RawValue::Str(s) => Ok(NameMatcher {
            kind: MatchKind::Prefix,
            value: s.clone(),
        }),
        RawValue::Map(entries) => {
            let get = |name: &str| {
                entries.iter().find_map(|(k, v)| match (k, v) {
                    (RawValue::Str(k), RawValue::Str(v)) if k == name => Some(v.clone()),
                    _ => None,
                })
            };
            let value = get("value")
                .ok_or_else(|| ConfigError(format!("{o}: a filter needs a string 'value'")))?;
            let kind = match get("type").as_deref().unwrap_or("prefix") {
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
            Ok(NameMatcher { kind, value })
        }
        _ => err(format!("{o}: each filter is a string or a dict")),
    }
}

fn filters(v: &RawValue) -> CResult<(Vec<NameMatcher>, Vec<NameMatcher>)> {
    let o = Origin::Kw("span_name_filters");
    let RawValue::Map(entries) = v else {
        return err(format!("{o} must be a dict with 'include'/'exclude'"));
    };
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for (k, val) in entries {
        let RawValue::List(items) = val else {
            return err(format!("{o}: include/exclude must be lists"));
        };
        let parsed = items
            .iter()
            .map(|i| matcher(i, &o))
            .collect::<CResult<Vec<_>>>()?;
        match k {
            RawValue::Str(k) if k == "include" => include = parsed,
            RawValue::Str(k) if k == "exclude" => exclude = parsed,
            other => {
                return err(format!(
                    "{o}: unknown key {} (use include/exclude)",
                    scalar_text(other).unwrap_or_else(|| other.describe())
                ))
            }
        }
    }
    Ok((include, exclude))
}

fn exporter_kind(name: &str, o: &Origin) -> CResult<ExporterKind> {
    Ok(match name {
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

/// `exporter`: one name, a comma-separated list (`otlp,console`, as
/// `OTEL_TRACES_EXPORTER` allows) or a list of names. Returns the main exporter (the
/// OTLP one when listed, else the first: it decides the mode) and the others, which
/// get a copy of every batch (only `file` and `console` may be others).
fn exporter_list(r: &Resolver<'_>) -> CResult<Option<(ExporterKind, Vec<ExporterKind>)>> {
    let (names, o) = match r.find("exporter")? {
        None => return Ok(None),
        Some((Found::Env(s, _), o)) => (split_commas(&s), o),
        Some((Found::Kw(RawValue::Str(s)), o)) => (split_commas(s), o),
        Some((Found::Kw(RawValue::List(items)), o)) => (
            items
                .iter()
                .map(|i| match i {
                    RawValue::Str(s) => Ok(s.trim().to_string()),
                    _ => err(format!("{o} must be a name or a list of names")),
                })
                .collect::<CResult<Vec<String>>>()?,
            o,
        ),
        Some((Found::Kw(_), o)) => return err(format!("{o} must be a name or a list of names")),
    };
    let mut kinds: Vec<ExporterKind> = Vec::new();
    for n in &names {
        let k = exporter_kind(&n.to_ascii_lowercase(), &o)?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let Some(&first) = kinds.first() else {
        return err(format!(
            "{o} names no exporter; use otlp, file, console, memory or none"
        ));
    };
    if kinds.len() == 1 {
        return Ok(Some((first, Vec::new())));
    }
    for alone in [ExporterKind::None, ExporterKind::Memory] {
        if kinds.contains(&alone) {
            return err(format!(
                "{o} combines {} with other exporters; it can only be used alone",
                if alone == ExporterKind::None {
                    "none"
                } else {
                    "memory"
                }
            ));
        }
    }
    let main = if kinds.contains(&ExporterKind::Otlp) {
        ExporterKind::Otlp
    } else {
        first
    };
    Ok(Some((
        main,
        kinds.into_iter().filter(|k| *k != main).collect(),
    )))
}

/// The mode, the main exporter and the others, from `exporter`, `test_mode`, the
/// endpoints and the API key.
#[allow(clippy::type_complexity)]
fn destination(
    r: &Resolver<'_>,
    test_mode: bool,
    disabled: bool,
    has_key: bool,
    server_url: &str,
) -> CResult<(Mode, ExporterKind, Option<String>, Vec<ExporterKind>)> {
    let (exporter, extra) = match exporter_list(r)? {
        None => (None, Vec::new()),
        Some((main, extra)) => (Some(main), extra),
    };
    let (mode, kind, endpoint) =
        main_destination(r, exporter, test_mode, disabled, has_key, server_url)?;
    let extra = if matches!(mode, Mode::Disabled) || kind == ExporterKind::None {
        Vec::new()
    } else {
        extra
    };
    Ok((mode, kind, endpoint, extra))
}

fn main_destination(
    r: &Resolver<'_>,
    exporter: Option<ExporterKind>,
    test_mode: bool,
    disabled: bool,
    has_key: bool,
    server_url: &str,
) -> CResult<(Mode, ExporterKind, Option<String>)> {
    // HH_OTLP_ENDPOINT or the keyword beat an API key; the OTEL_* variables do not.
    let (explicit, late) = match r.text_with_origin("otlp_endpoint")? {
        None => (None, None),
        Some((url, o)) => {
            let what = format!("otlp_endpoint (from {o})");
            match o {
                Origin::Env("OTEL_EXPORTER_OTLP_ENDPOINT") => {
                    (None, Some(traces_endpoint(&url, &what, true)?))
                }
                Origin::Env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") => {
                    (None, Some(traces_endpoint(&url, &what, false)?))
                }
                _ => (Some(traces_endpoint(&url, &what, false)?), None),
            }
        }
    };
    let fixed = |kind: ExporterKind| -> (Mode, ExporterKind, Option<String>) {
        let mode = match kind {
            ExporterKind::File => Mode::File,
            ExporterKind::Console => Mode::Console,
            ExporterKind::Memory => Mode::Memory,
            ExporterKind::None | ExporterKind::Otlp => Mode::None,
        };
        (mode, kind, None)
    };
    if disabled {
        return Ok((Mode::Disabled, ExporterKind::None, None));
    }
    if test_mode {
        return match exporter.unwrap_or(ExporterKind::Memory) {
            ExporterKind::Otlp => err(
                "test_mode sends nothing over the network, so exporter='otlp' conflicts with it",
            ),
            kind => Ok(fixed(kind)),
        };
    }
    match exporter {
        None | Some(ExporterKind::Otlp) => {
            if let Some(e) = explicit {
                Ok((Mode::Otlp, ExporterKind::Otlp, Some(e)))
            } else if has_key {
                Ok((
                    Mode::Cloud,
                    ExporterKind::Otlp,
                    Some(format!("{server_url}/opentelemetry/v1/traces")),
                ))
            } else if let Some(e) = late {
                Ok((Mode::Otlp, ExporterKind::Otlp, Some(e)))
            } else if exporter.is_some() {
                err("exporter='otlp' needs otlp_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or an api_key")
            } else {
                Ok((Mode::File, ExporterKind::File, None))
            }
        }
        Some(kind) => Ok(fixed(kind)),
    }
}

fn session(r: &Resolver<'_>, mode: Mode) -> CResult<(String, bool)> {
    let Some(s) = r.text("session_id")? else {
        return Ok((ids::uuid4(), false));
    };
    let s = s.trim().to_string();
    if mode == Mode::Cloud {
        if !ids::is_uuid(&s) {
            return err(format!(
                "session_id {s:?} is not a UUID; HoneyHive needs a UUID such as {}",
                ids::uuid4()
            ));
        }
        return Ok((s.to_ascii_lowercase(), true));
    }
    // Outside HoneyHive cloud, any printable text, as for an incoming session id.
    if !printable(&s, 256) {
        return err("session_id must be 1 to 256 printable characters");
    }
    Ok((s, true))
}

fn otlp_headers(r: &Resolver<'_>) -> CResult<Vec<(String, Secret)>> {
    let mut out = Vec::new();
    for (k, v) in r.pairs("otlp_headers")? {
        if !is_token(&k) {
            return err(format!(
                "otlp_headers: {k:?} is not a valid HTTP header name"
            ));
        }
        if v.bytes().any(|c| c == b'\r' || c == b'\n') {
            return err(format!(
                "otlp_headers: the value of {k:?} contains a line break"
            ));
        }
        out.push((k, Secret(v)));
    }
    Ok(out)
}

fn protocol(r: &Resolver<'_>) -> CResult<Protocol> {
    Ok(match r.choice("otlp_protocol")? {
        None => Protocol::HttpProtobuf,
        Some((s, o)) => match s.as_str() {
            "http/protobuf" | "protobuf" => Protocol::HttpProtobuf,
            "http/json" | "json" => Protocol::HttpJson,
            "grpc" => return err(format!(
                "{o} is 'grpc', which honeytrace does not speak; use http/protobuf (port 4318 on a collector)"
            )),
            other => return err(format!("{o} is {other:?}; use http/protobuf or http/json")),
        },
    })
}

fn batch(r: &Resolver<'_>) -> CResult<BatchConfig> {
    let size = |k: &str, d: u64| -> CResult<usize> {
        Ok(usize::try_from(r.count(k)?.unwrap_or(d)).unwrap_or(usize::MAX))
    };
    let max_queue_size = size("max_queue_size", settings::DEFAULT_MAX_QUEUE_SIZE)?;
    let max_queue_bytes = size("max_queue_bytes", settings::DEFAULT_MAX_QUEUE_BYTES)?;
    let mut max_export_batch_size = size("batch_size", 512)?;
    let max_export_batch_bytes = size("batch_bytes", settings::DEFAULT_BATCH_BYTES)?;
    if max_export_batch_size > max_queue_size {
        return err(format!(
            "batch_size ({max_export_batch_size}) must not exceed max_queue_size ({max_queue_size})"
        ));
    }
    let mut schedule_delay = r
        .seconds("flush_interval")?
        .unwrap_or(Duration::from_secs(1));
    if r.boolean("disable_batch")?.unwrap_or(false) {
        // Export each span as soon as it ends, still from the background thread.
        max_export_batch_size = 1;
        schedule_delay = Duration::ZERO;
    }
    Ok(BatchConfig {
        max_queue_size,
        max_queue_bytes,
        max_export_batch_size,
        max_export_batch_bytes,
        schedule_delay,
        export_timeout: r
            .seconds("export_timeout")?
            .unwrap_or(Duration::from_secs(10)),
        attempt_timeout: r
            .seconds("shutdown_timeout")?
            .unwrap_or(Duration::from_secs(5))
            .max(Duration::from_secs(1)),
        max_retries: u32::try_from(r.count("max_retries")?.unwrap_or(5)).unwrap_or(100),
        openinference: false,
    })
}

/// The sampler from `sampler` and `sampler_arg` (OpenTelemetry's names and variables).
fn sampling(r: &Resolver<'_>) -> CResult<Sampling> {
    let name = match r.choice("sampler")? {
        None => return Ok(Sampling::DEFAULT),
        Some((s, o)) => {
            if !settings::find("sampler").is_some_and(|st| match st.kind {
                Kind::Choice(names) => names.contains(&s.as_str()),
                _ => false,
            }) {
                return err(format!(
                    "{o} is {s:?}; use always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, \
                     parentbased_traceidratio or session"
                ));
            }
            s
        }
    };
    let bound = || -> CResult<u128> {
        let ratio = match r.find("sampler_arg")? {
            None => 1.0,
            Some((Found::Kw(RawValue::Int(i)), _)) => *i as f64,
            Some((Found::Kw(RawValue::Float(f)), _)) => *f,
            Some((found @ (Found::Kw(RawValue::Str(_)) | Found::Env(..)), o)) => {
                let s = match found {
                    Found::Env(s, _) => s,
                    Found::Kw(RawValue::Str(s)) => s.clone(),
                    Found::Kw(_) => String::new(),
                };
                s.trim().parse::<f64>().map_err(|_| {
                    ConfigError(format!("{o} must be a number from 0 to 1, got {s:?}"))
                })?
            }
            Some((Found::Kw(_), o)) => return err(format!("{o} must be a number from 0 to 1")),
        };
        if !(0.0..=1.0).contains(&ratio) {
            return err(format!("sampler_arg must be from 0 to 1, got {ratio}"));
        }
        // ratio × 2^64, as OpenTelemetry's TraceIdRatioBased rounds it.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok((ratio * 18_446_744_073_709_551_616.0).round() as u128)
    };
    let (root, parent_based) = match name.as_str() {
        "always_on" => (RootSampler::AlwaysOn, false),
        "always_off" => (RootSampler::AlwaysOff, false),
        "traceidratio" => (RootSampler::TraceIdRatio(bound()?), false),
        "parentbased_always_on" => (RootSampler::AlwaysOn, true),
        "parentbased_always_off" => (RootSampler::AlwaysOff, true),
        "parentbased_traceidratio" => (RootSampler::TraceIdRatio(bound()?), true),
        _ => (RootSampler::Session(bound()?), false),
    };
    Ok(Sampling { root, parent_based })
}

fn limit(r: &Resolver<'_>, key: &str, default: u32) -> CResult<u32> {
    Ok(r.count(key)?
        .map_or(default, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

fn check_kinds(r: &Resolver<'_>) -> CResult<()> {
    for (k, v) in &r.kw {
        let Some(st) = settings::find(k) else {
            continue;
        };
        let o = Origin::Kw(st.key);
        match (st.kind, v) {
            (Kind::Callable, RawValue::Callable) => {}
            (Kind::Callable, _) => {
                return err(format!(
                    "{o} must be a callable redact(key, value) -> value"
                ))
            }
            (Kind::Filters, v) => {
                filters(v)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Resolve every setting. Errors are configuration errors, raised by `init`.
#[allow(clippy::too_many_lines)] // one line per field of `Config`: splitting would scatter it
pub fn parse(input: &Input) -> CResult<Parsed> {
    let mut unknown = Vec::new();
    let mut ignored_legacy = Vec::new();
    for (k, _) in &input.kwargs {
        if IGNORED_LEGACY_KEYS.contains(&k.as_str()) {
            ignored_legacy.push(k.clone());
        } else if settings::find(k).is_none() {
            unknown.push(k.clone());
        }
    }
    let r = Resolver {
        kw: input.kwargs.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        env: &input.env,
    };
    check_kinds(&r)?;

    let test_mode = r.boolean("test_mode")?.unwrap_or(false);
    let disabled = r.boolean("disable_tracing")?.unwrap_or(false);
    let api_key = match r.secret("ingestion_api_key")? {
        Some(k) => Some(k),
        None => r.secret("api_key")?,
    };
    let project = r.text("project")?;
    if let Some(p) = &project {
        if p.trim().is_empty() || p.chars().any(char::is_control) {
            return err("project must be a non-empty name without control characters");
        }
    }
    let source = r.text("source")?.unwrap_or_else(|| "dev".to_string());
    if source.chars().any(char::is_control) {
        // It is sent as the x-source header.
        return err("source must not contain control characters");
    }
    let server_url = match r.text_with_origin("server_url")? {
        None => DEFAULT_SERVER_URL.to_string(),
        Some((s, o)) => validate_url(&s, &format!("server_url (from {o})"))?,
    };
    let (mode, exporter, otlp_endpoint, extra_exporters) =
        destination(&r, test_mode, disabled, api_key.is_some(), &server_url)?;
    let (session_id, session_id_given) = session(&r, mode)?;
    // OTLP's default is no compression; HoneyHive cloud (over the internet) gets gzip.
    let gzip = match r.choice("otlp_compression")? {
        None => mode == Mode::Cloud,
        Some((s, o)) => match s.as_str() {
            "gzip" => true,
            "none" | "" => false,
            other => return err(format!("{o} is {other:?}; use gzip or none")),
        },
    };
    let file_path =
        if exporter == ExporterKind::File || extra_exporters.contains(&ExporterKind::File) {
            let p = PathBuf::from(
                r.text("file_path")?
                    .unwrap_or_else(|| DEFAULT_FILE.to_string()),
            );
            Some(if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map_or_else(|_| p.clone(), |d| d.join(&p))
            })
        } else {
            None
        };
    let spool = spool(&r, exporter)?;
    let mut resource_attributes = match r.env_first(&["OTEL_RESOURCE_ATTRIBUTES"]) {
        Some((n, v)) => parse_kv_list(&v, &Origin::Env(n))?,
        None => Vec::new(),
    };
    if let Some(v) = r.kw.get("resource_attributes") {
        resource_attributes.extend(pairs_of(v, &Origin::Kw("resource_attributes"))?);
    }
    // OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES (OTel spec).
    let service_name = r
        .text("service_name")?
        .or_else(|| {
            resource_attributes
                .iter()
                .rev()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| project.clone())
        .unwrap_or_else(|| "unknown_service:python".to_string());
    let trust = match r.choice("trust")? {
        None => Trust::Continue,
        Some((v, o)) => Trust::parse(&v)
            .ok_or_else(|| ConfigError(format!("{o} is {v:?}; use continue, restart or ignore")))?,
    };
    let baggage_secret = r.secret("baggage_secret")?;
    if baggage_secret.as_ref().is_some_and(|s| s.0.len() < 16) {
        return err("baggage_secret must be at least 16 characters");
    }
    let baggage_max_age = r
        .seconds("baggage_max_age")?
        .unwrap_or(Duration::from_secs(300));
    let (include_names, exclude_names) = match r.kw.get("span_name_filters") {
        Some(v) => filters(v)?,
        None => (Vec::new(), Vec::new()),
    };
    let max_attribute_bytes = usize::try_from(
        r.count("max_attribute_bytes")?
            .unwrap_or(settings::DEFAULT_ATTRIBUTE_BYTES),
    )
    .unwrap_or(usize::MAX);

    let sampling = sampling(&r)?;
    // HoneyHive reads its own attributes: the copies would double what is sent there.
    let openinference = r.boolean("openinference")?.unwrap_or(mode != Mode::Cloud);
    let mut batch = batch(&r)?;
    batch.openinference = openinference;
    let config = Config {
        mode,
        exporter,
        extra_exporters,
        api_key,
        project,
        source,
        session_name: r.text("session_name")?,
        session_id,
        session_id_given,
        server_url,
        test_mode,
        verbose: r.boolean("verbose")?.unwrap_or(false),
        openinference,
        sampling,
        disable_batch: r.boolean("disable_batch")?.unwrap_or(false),
        otlp_endpoint,
        otlp_headers: otlp_headers(&r)?,
        protocol: protocol(&r)?,
        gzip,
        file_path,
        file_max_bytes: r.count("file_max_bytes")?.unwrap_or(256 * 1024 * 1024),
        file_keep: r.count("file_keep")?.unwrap_or(10),
        spool,
        batch,
        shutdown_timeout: r
            .seconds("shutdown_timeout")?
            .unwrap_or(Duration::from_secs(5)),
        set_global: r.boolean("set_global")?,
        service_name,
        resource_attributes,
        max_attributes: limit(&r, "max_attributes", 1024)?,
        max_events: limit(&r, "max_events", 1024)?,
        max_links: limit(&r, "max_links", 128)?,
        max_attribute_bytes,
        trust,
        baggage_secret,
        baggage_max_age,
        baggage_allowlist: r.list("baggage_allowlist")?.unwrap_or_default(),
        include_names,
        exclude_names,
        run_id: r.text("run_id")?,
        dataset_id: r.text("dataset_id")?,
        datapoint_id: r.text("datapoint_id")?,
        session_inputs: r.json("inputs")?,
        session_metadata: r.json("metadata")?,
        user_properties: r.json("user_properties")?,
        exit_hooks: r.boolean("exit_hooks")?.unwrap_or(true),
        propagate_threads: r.boolean("propagate_threads")?.unwrap_or(false),
        propagate_processes: r.boolean("propagate_processes")?.unwrap_or(false),
        instrument_http: r.boolean("instrument_http")?.unwrap_or(false),
        instrument_celery: r.boolean("instrument_celery")?.unwrap_or(false),
        baggage_hosts: r
            .list("baggage_hosts")?
            .map(|hs| hs.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
    };
    Ok(Parsed {
        config,
        unknown,
        ignored_legacy,
    })
}

/// The spool's settings; None when it is off or the destination is not OTLP.
fn spool(r: &Resolver, exporter: ExporterKind) -> CResult<Option<SpoolConfig>> {
    let on = r.boolean("spool")?.unwrap_or(true);
    let dir = r.text("spool_dir")?;
    let max_bytes = r.count("spool_max_bytes")?.unwrap_or(256 * 1024 * 1024);
    let max_files = r.count("spool_max_files")?.unwrap_or(10_000);
    let max_age = r
        .seconds("spool_max_age")?
        .unwrap_or(Duration::from_secs(86_400));
    if !on || exporter != ExporterKind::Otlp {
        return Ok(None);
    }
    let dir = match dir {
        Some(d) if d.chars().any(char::is_control) => {
            return err("spool_dir must not contain control characters")
        }
        Some(d) => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map_or_else(|_| p.clone(), |c| c.join(&p))
            }
        }
        None => default_spool_dir(),
    };
    Ok(Some(SpoolConfig {
        dir,
        max_bytes,
        max_files,
        max_age,
    }))
}

/// `$XDG_CACHE_HOME/honeytrace/spool`, else `~/.cache/honeytrace/spool`, else (no home)
/// `.honeytrace/spool` under the working directory.
fn default_spool_dir() -> PathBuf {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = nonempty("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")));
    match cache {
        Some(c) => c.join("honeytrace").join("spool"),
        None => std::env::current_dir()
            .unwrap_or_default()
            .join(".honeytrace")
            .join("spool"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_env(env: &[(&str, &str)], kw: Vec<(&str, RawValue)>) -> CResult<Parsed> {
        parse(&Input {
            kwargs: kw.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        })
    }

    #[test]
    fn defaults_resolve() {
        let p = parse_env(&[], vec![]).unwrap();
        assert_eq!(p.config.mode, Mode::File);
        assert_eq!(p.config.batch.max_queue_size, 16_384);
        assert_eq!(p.config.batch.max_queue_bytes, 64 * 1024 * 1024);
        assert!(!p.config.propagate_threads);
    }

    #[test]
    fn one_rule_for_flags() {
        let off = parse_env(
            &[],
            vec![("propagate_threads", RawValue::Str("false".into()))],
        );
        assert!(!off.unwrap().config.propagate_threads);
        let on = parse_env(&[("HH_PROPAGATE_THREADS", "yes")], vec![]);
        assert!(on.unwrap().config.propagate_threads);
        assert!(parse_env(&[("HH_INSTRUMENT_HTTP", "maybe")], vec![]).is_err());
    }

    #[test]
    fn errors_name_their_source() {
        let e = parse_env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")], vec![]).unwrap_err();
        assert!(e.0.contains("OTEL_BSP_MAX_QUEUE_SIZE"), "{e}");
        let e = parse_env(&[], vec![("max_queue_size", RawValue::Int(0))]).unwrap_err();
        assert!(e.0.contains("at least 1"), "{e}");
        let e = parse_env(&[], vec![("flush_interval", RawValue::Float(f64::NAN))]).unwrap_err();
        assert!(e.0.contains("flush_interval"), "{e}");
        let big = parse_env(
            &[],
            vec![("max_queue_size", RawValue::BigInt("1".repeat(40)))],
        );
        assert!(big.is_err());
    }

    #[test]
    fn otel_endpoint_comes_after_the_key() {
        let p = parse_env(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
            vec![("api_key", RawValue::Str("k".into()))],
        )
        .unwrap();
        assert_eq!(p.config.mode, Mode::Cloud);
        let p = parse_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")], vec![]).unwrap();
        assert_eq!(
            p.config.otlp_endpoint.as_deref(),
            Some("http://c:4318/v1/traces")
        );
    }

    #[test]
    fn kv_list_percent_decodes() {
        let v = parse_kv_list("a=b%20c, x-key = 1%2C2 ,", &Origin::Env("T")).unwrap();
        assert_eq!(
            v,
            vec![("a".into(), "b c".into()), ("x-key".into(), "1,2".into())]
        );
        assert!(parse_kv_list("novalue", &Origin::Env("T")).is_err());
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
        assert!(is_token("x-api-key"));
        assert!(!is_token("bad header"));
        assert!(!is_token(""));
    }

    #[test]
    fn secret_is_hidden() {
        let s = Secret("hh_live_123".into());
        assert!(!format!("{s:?}").contains("hh_live"));
    }
}
