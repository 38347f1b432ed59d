//! Every setting of `HoneyHiveTracer.init(...)`, declared once.
//!
//! The table drives the parser (`super::parse`), the configuration table in the README
//! (`markdown_table`, written by `tools/settings_table.py`, checked by
//! `tests/test_config.py`), and
//! the list of keywords Python accepts. A setting is read from its keyword, else from
//! the first of its environment variables that is set, else it takes its default.

use std::fmt::Write as _;

/// How a setting's value is read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// Text that is never shown (logs, errors, `repr`).
    Secret,
    /// True/False; in the environment `true/false/1/0/yes/no/on/off`.
    Bool,
    /// A whole number within `min..=max` (larger values are clamped to `max`).
    Count { min: u64, max: u64 },
    /// Seconds (keyword and `env`) or milliseconds (`env_ms`), at least `min_ms`.
    Seconds { min_ms: u64 },
    /// An http(s) URL.
    Url,
    /// One of the listed words (case-insensitive).
    Choice(&'static [&'static str]),
    /// `{"k": "v"}`, or `k=v,k2=v2` text (percent-decoded).
    Pairs,
    /// A list of strings, or comma-separated text.
    List,
    /// `{"include": [...], "exclude": [...]}` of span-name matchers.
    Filters,
    /// Any JSON-able value (sent to HoneyHive as is).
    Json,
    /// A Python callable (kept by the Python layer).
    Callable,
}

#[derive(Debug)]
pub struct Setting {
    pub key: &'static str,
    /// Environment variables in order of precedence (values in seconds for `Seconds`).
    pub env: &'static [&'static str],
    /// Environment variables in milliseconds (the OpenTelemetry ones), after `env`.
    pub env_ms: &'static [&'static str],
    pub kind: Kind,
    /// The default as the docs show it.
    pub default: &'static str,
    pub doc: &'static str,
}

const fn s(
    key: &'static str,
    env: &'static [&'static str],
    kind: Kind,
    default: &'static str,
    doc: &'static str,
) -> Setting {
    Setting {
        key,
        env,
        env_ms: &[],
        kind,
        default,
        doc,
    }
}

pub const DEFAULT_SERVER_URL: &str = "https://api.dp1.us.honeyhive.ai";
pub const DEFAULT_FILE: &str = ".honeytrace/traces.jsonl";
pub const DEFAULT_MAX_QUEUE_SIZE: u64 = 16_384;
const MIB: u64 = 1024 * 1024;
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 64 * MIB;
pub const DEFAULT_BATCH_BYTES: u64 = 4 * MIB;
pub const DEFAULT_ATTRIBUTE_BYTES: u64 = 64 * 1024;
const EXPORTERS: &[&str] = &["otlp", "file", "console", "memory", "none"];
const PROTOCOLS: &[&str] = &["http/protobuf", "http/json"];
const COMPRESSIONS: &[&str] = &["gzip", "none"];
const TRUST: &[&str] = &["continue", "restart", "ignore"];
const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "session",
];

pub static SETTINGS: &[Setting] = &[
    s("api_key", &["HH_API_KEY", "HONEYHIVE_API_KEY"], Kind::Secret, "",
      "HoneyHive key; selects HoneyHive cloud mode. Never shown in `repr`, logs, errors or spans."),
    s("ingestion_api_key", &["HH_INGESTION_API_KEY"], Kind::Secret, "",
      "A HoneyHive ingestion key; used instead of `api_key` when both are given."),
    s("project", &["HH_PROJECT"], Kind::Text, "",
      "Project name, stamped on every span (`honeyhive.project`)."),
    s("source", &["HH_SOURCE"], Kind::Text, "`dev`",
      "Environment name (`honeyhive.source`)."),
    s("session_name", &["HH_SESSION_NAME", "SESSION_NAME"], Kind::Text, "the script's file name",
      "Session name sent at session start."),
    s("session_id", &["HH_SESSION_ID", "SESSION_ID"], Kind::Text, "a new UUID4",
      "Session of this tracer's spans. Must be a UUID in HoneyHive cloud mode."),
    s("server_url", &["HH_API_URL", "HH_SERVER_URL", "HONEYHIVE_SERVER_URL"], Kind::Url,
      "`https://api.dp1.us.honeyhive.ai`", "HoneyHive API base URL."),
    s("test_mode", &["HH_TEST_MODE"], Kind::Bool, "`False`",
      "In memory, no network at all; read spans with `tracer.finished_spans()`."),
    s("sampler", &["HH_SAMPLER", "OTEL_TRACES_SAMPLER"], Kind::Choice(SAMPLERS), "`parentbased_always_on`",
      "OpenTelemetry's samplers (`always_on`, `always_off`, `traceidratio`, `parentbased_*`), or `session`: keep or drop whole sessions, alike in every service."),
    s("sampler_arg", &["HH_SAMPLER_ARG", "OTEL_TRACES_SAMPLER_ARG"], Kind::Text, "`1.0`",
      "The ratio kept by `traceidratio` and `session` samplers, 0 to 1."),
    s("openinference", &["HH_OPENINFERENCE"], Kind::Bool, "`True` (`False` for HoneyHive cloud)",
      "Also write the OpenInference attributes Arize Phoenix and MLflow read: span kind, `input.value`/`output.value`, `user.id`."),
    s("verbose", &["HH_VERBOSE"], Kind::Bool, "`False`",
      "Debug logging on the `honeytrace` logger."),
    s("disable_batch", &["HH_DISABLE_BATCH"], Kind::Bool, "`False`",
      "Export each span as soon as it ends (still from the background thread)."),
    s("disable_tracing", &["OTEL_SDK_DISABLED", "HH_DISABLE_TRACING"], Kind::Bool, "`False`",
      "A no-op tracer: nothing recorded, nothing exported."),
    s("exporter", &["HH_EXPORTER", "OTEL_TRACES_EXPORTER"], Kind::Choice(EXPORTERS),
      "chosen from the rest", "`otlp`, `file`, `console`, `memory` or `none`; or several, as a list or `otlp,console` (`file` and `console` get a copy of what goes to the first or to `otlp`)."),
    s("otlp_endpoint",
      &["HH_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
      Kind::Url, "",
      "OTLP/HTTP traces URL; a bare host gets `/v1/traces` (always, for `OTEL_EXPORTER_OTLP_ENDPOINT`). The `OTEL_*` variables come after an API key."),
    s("otlp_headers",
      &["HH_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"],
      Kind::Pairs, "", "Extra headers: a dict, or `k=v,k2=v2` (percent-decoded)."),
    s("otlp_protocol",
      &["HH_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"],
      Kind::Choice(PROTOCOLS), "`http/protobuf`", "`http/protobuf` or `http/json`."),
    s("otlp_compression",
      &["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"],
      Kind::Choice(COMPRESSIONS), "`none` (`gzip` for HoneyHive cloud)", "`gzip` or `none`."),
    s("file_path", &["HH_FILE_PATH"], Kind::Text, "`.honeytrace/traces.jsonl`",
      "The local trace file (relative to the working directory)."),
    s("file_max_bytes", &["HH_FILE_MAX_BYTES"], Kind::Count { min: 4096, max: 1 << 40 },
      "`268435456` (256 MiB)",
      "Size past which the trace file is renamed aside (with a timestamp and process id) and a new one started."),
    s("file_keep", &["HH_FILE_KEEP"], Kind::Count { min: 1, max: 100_000 }, "`10`",
      "Renamed-aside trace files kept; the oldest beyond this are deleted (logged)."),
    s("max_queue_size", &["HH_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"],
      Kind::Count { min: 1, max: 1 << 24 }, "`16384`",
      "Spans held for export; beyond it spans are dropped and counted."),
    s("max_queue_bytes", &["HH_MAX_QUEUE_BYTES"],
      Kind::Count { min: 1024, max: 1 << 40 }, "`67108864` (64 MiB)",
      "Bytes of finished spans held for export, queued and in flight; beyond it spans are dropped and counted."),
    s("batch_size",
      &["HH_BATCH_SIZE", "HH_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
      Kind::Count { min: 1, max: 1 << 24 }, "`512`", "Spans per export request."),
    s("batch_bytes", &["HH_BATCH_BYTES"],
      Kind::Count { min: 1024, max: 1 << 30 }, "`4194304` (4 MiB)",
      "Bytes of spans per export request, as held in the queue (a larger span goes alone); keeps requests under collectors' size limits and bounds the request buffer."),
    Setting {
        key: "flush_interval",
        env: &["HH_FLUSH_INTERVAL"],
        env_ms: &["OTEL_BSP_SCHEDULE_DELAY"],
        kind: Kind::Seconds { min_ms: 0 },
        default: "`1.0` s",
        doc: "Longest wait before a partial batch goes out.",
    },
    Setting {
        key: "export_timeout",
        env: &["HH_EXPORT_TIMEOUT"],
        env_ms: &[
            "OTEL_BSP_EXPORT_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ],
        kind: Kind::Seconds { min_ms: 1 },
        default: "`10` s",
        doc: "Budget for one batch, retries included.",
    },
    s("spool", &["HH_SPOOL"], Kind::Bool, "`True`",
      "OTLP and HoneyHive: batches that cannot be delivered within `export_timeout` and the retries (collector down, 5xx, 429, timeouts), or still queued at the shutdown deadline, go to a disk spool and are sent when the collector answers again, by this process or the next one with the same destination."),
    s("spool_dir", &["HH_SPOOL_DIR"], Kind::Text,
      "`$XDG_CACHE_HOME/honeytrace/spool`, else `~/.cache/honeytrace/spool`",
      "Where the spool lives (one subdirectory per destination; created 0700, files 0600)."),
    s("spool_max_bytes", &["HH_SPOOL_MAX_BYTES"], Kind::Count { min: 1024, max: 1 << 40 },
      "`268435456` (256 MiB)", "Bytes the spool holds per destination; the oldest batches beyond it are deleted and counted (`spool_dropped`)."),
    s("spool_max_files", &["HH_SPOOL_MAX_FILES"], Kind::Count { min: 1, max: 1_000_000 },
      "`10000`", "Batches the spool holds per destination; the oldest beyond it are deleted and counted."),
    Setting {
        key: "spool_max_age",
        env: &["HH_SPOOL_MAX_AGE"],
        env_ms: &[],
        kind: Kind::Seconds { min_ms: 1 },
        default: "`86400` s (a day)",
        doc: "Spooled batches older than this are deleted and counted instead of sent.",
    },
    s("max_retries", &["HH_MAX_RETRIES"], Kind::Count { min: 0, max: 100 }, "`5`",
      "Retries on 429/502/503/504 and network errors (exponential backoff with jitter, `Retry-After` honoured)."),
    Setting {
        key: "shutdown_timeout",
        env: &["HH_SHUTDOWN_TIMEOUT"],
        env_ms: &[],
        kind: Kind::Seconds { min_ms: 0 },
        default: "`5` s",
        doc: "Deadline of `shutdown()` and of the exit hook.",
    },
    s("set_global", &[], Kind::Bool, "`None`",
      "`None`/`True`: become OpenTelemetry's global provider if none is set; `False`: stay isolated."),
    s("service_name", &["OTEL_SERVICE_NAME", "HH_SERVICE_NAME"], Kind::Text,
      "project, else `unknown_service:python`", "Resource `service.name`."),
    s("resource_attributes", &["OTEL_RESOURCE_ATTRIBUTES"], Kind::Pairs, "",
      "Extra resource attributes (the keyword's entries are added to the variable's)."),
    s("max_attributes", &["HH_MAX_ATTRIBUTES", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"],
      Kind::Count { min: 0, max: u32::MAX as u64 }, "`1024`", "Attributes per span."),
    s("max_events", &["HH_MAX_EVENTS", "OTEL_SPAN_EVENT_COUNT_LIMIT"],
      Kind::Count { min: 0, max: u32::MAX as u64 }, "`1024`", "Events per span."),
    s("max_links", &["HH_MAX_LINKS", "OTEL_SPAN_LINK_COUNT_LIMIT"],
      Kind::Count { min: 0, max: u32::MAX as u64 }, "`128`", "Links per span."),
    s("max_attribute_bytes", &["HH_MAX_ATTRIBUTE_BYTES"], Kind::Count { min: 64, max: 64 * MIB },
      "`65536`",
      "Budget of one captured value (inputs, outputs, enrichment); longer values are cut with a marker, JSON stays valid."),
    s("redact", &[], Kind::Callable, "",
      "A callable `redact(key, value)` that sees every captured value first, and every entry inside captured dicts (process-wide)."),
    s("trust", &["HH_TRUST", "HH_INCOMING_TRUST"], Kind::Choice(TRUST), "`continue`",
      "Incoming context: `continue`, `restart` (new trace linked to the caller) or `ignore`."),
    s("baggage_secret", &["HH_BAGGAGE_SECRET"], Kind::Secret, "",
      "Shared secret (16+ characters): the session, project and source sent on are signed with the time; unsigned, forged or stale incoming ones are ignored."),
    Setting {
        key: "baggage_max_age",
        env: &["HH_BAGGAGE_MAX_AGE"],
        env_ms: &[],
        kind: Kind::Seconds { min_ms: 1000 },
        default: "`300` s",
        doc: "With `baggage_secret`: how long a signature is accepted after it was made (bounds replay).",
    },
    s("exit_hooks", &["HH_EXIT_HOOKS"], Kind::Bool, "`True`",
      "Deliver what is queued when the process ends by `os._exit` (multiprocessing, Celery children) or SIGTERM, chained onto the app's handler (process-wide)."),
    s("propagate_threads", &["HH_PROPAGATE_THREADS"], Kind::Bool, "`False`",
      "Carry the context into threads, `ThreadPoolExecutor` and `run_in_executor`."),
    s("propagate_processes", &["HH_PROPAGATE_PROCESSES"], Kind::Bool, "`False`",
      "Carry the trace and session into each task of a `ProcessPoolExecutor` or `multiprocessing.Pool` (any start method)."),
    s("instrument_celery", &["HH_INSTRUMENT_CELERY"], Kind::Bool, "`False`",
      "Carry the trace and session with every Celery task (publish to worker), with a CONSUMER span per task run."),
    s("instrument_http", &["HH_INSTRUMENT_HTTP"], Kind::Bool, "`False`",
      "Propagate on `requests`/`httpx` calls (CLIENT spans + headers)."),
    s("baggage_hosts", &["HH_BAGGAGE_HOSTS"], Kind::List, "every host",
      "Hosts allowed to receive baggage (the session) from `instrument_http`."),
    s("baggage_allowlist", &["HH_BAGGAGE_ALLOWLIST"], Kind::List, "empty",
      "Baggage keys copied onto spans as `baggage.<key>` (incoming baggage is untrusted)."),
    s("span_name_filters", &[], Kind::Filters, "",
      "`{\"include\": [...], \"exclude\": [...]}`; entries are prefixes or `{\"type\": \"prefix\"|\"exact\"|\"suffix\"|\"contains\", \"value\": ...}`."),
    s("run_id", &["HH_RUN_ID"], Kind::Text, "", "Evaluation run id (`honeyhive_metadata.run_id`)."),
    s("dataset_id", &["HH_DATASET_ID"], Kind::Text, "",
      "Evaluation dataset id (`honeyhive_metadata.dataset_id`)."),
    s("datapoint_id", &["HH_DATAPOINT_ID"], Kind::Text, "",
      "Evaluation datapoint id (`honeyhive_metadata.datapoint_id`)."),
    s("inputs", &[], Kind::Json, "", "Session inputs, sent with the HoneyHive session start."),
    s("metadata", &[], Kind::Json, "", "Session metadata, sent with the HoneyHive session start."),
    s("user_properties", &[], Kind::Json, "",
      "User properties, sent with the HoneyHive session start."),
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

pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

fn code_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration table of the docs, generated from `SETTINGS`.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| keyword | environment | default | meaning |\n|---|---|---|---|\n");
    for st in SETTINGS {
        let mut env = code_list(st.env);
        if !st.env_ms.is_empty() {
            if !env.is_empty() {
                env.push_str(" (s), ");
            }
            env.push_str(&code_list(st.env_ms));
            env.push_str(" (ms)");
        }
        let cell = |v: &str| {
            if v.is_empty() {
                "—".to_string()
            } else {
                v.replace('|', "\\|")
            }
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            st.key,
            cell(&env),
            cell(st.default),
            cell(st.doc)
        );
    }
    let _ = writeln!(
        out,
        "\nAccepted for HoneyHive compatibility, without effect (a warning says so): {}.",
        code_list(IGNORED_LEGACY_KEYS)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for st in SETTINGS {
            assert!(seen.insert(st.key), "duplicate setting {}", st.key);
            assert!(!st.doc.is_empty(), "{} has no doc", st.key);
            assert!(!IGNORED_LEGACY_KEYS.contains(&st.key));
        }
        assert!(markdown_table().contains("| `max_queue_bytes` |"));
    }
}
