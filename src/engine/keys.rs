//! Attribute keys the engine writes or reads, named once.

use opentelemetry::Key;

pub const SESSION_ID: Key = Key::from_static_str("honeyhive.session_id");
pub const PROJECT: Key = Key::from_static_str("honeyhive.project");
pub const SOURCE: Key = Key::from_static_str("honeyhive.source");
pub const PARENT_ID: Key = Key::from_static_str("honeyhive.parent_id");
pub const OTEL_SESSION_ID: Key = Key::from_static_str("session.id");
pub const TL_SESSION_ID: Key = Key::from_static_str("traceloop.association.properties.session_id");
pub const TL_PROJECT: Key = Key::from_static_str("traceloop.association.properties.project");
pub const TL_SOURCE: Key = Key::from_static_str("traceloop.association.properties.source");
pub const TL_PARENT_ID: Key = Key::from_static_str("traceloop.association.properties.parent_id");
/// A `session.id` set by other code that lost to the span's session (kept here).
pub const FRAMEWORK_SESSION_ID: Key =
    Key::from_static_str("honeyhive_metadata.framework_session_id");
pub const EVENT_TYPE: Key = Key::from_static_str("honeyhive_event_type");
pub const DURATION_MS: Key = Key::from_static_str("honeyhive_duration_ms");
pub const RUN_ID: Key = Key::from_static_str("honeyhive_metadata.run_id");
pub const DATASET_ID: Key = Key::from_static_str("honeyhive_metadata.dataset_id");
pub const DATAPOINT_ID: Key = Key::from_static_str("honeyhive_metadata.datapoint_id");

pub const OUTPUT: Key = Key::from_static_str("honeyhive_outputs.result");
pub const ERROR: Key = Key::from_static_str("honeyhive_error");
pub const ERROR_TYPE: Key = Key::from_static_str("honeyhive_error_type");
