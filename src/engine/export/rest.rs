//! HoneyHive REST calls (session start, event updates), run as jobs on the export
//! thread so `init` never waits on the network. Failures are counted (stats
//! `api_calls_failed`) and logged with a rate limit; spans are exported regardless.

use super::http::{agent, send_with_retry};
use super::sink::{ExportControl, Stats};
use crate::engine::config::Secret;
use crate::engine::diag;
use std::time::{Duration, SystemTime};

pub const CLIENT_PACKAGE: &str = "honeytrace";
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone)]
pub enum Job {
    /// `POST /session/start`; `session_id` is the id our spans already carry.
    SessionStart {
        body: serde_json::Value,
        session_id: String,
    },
    /// `PUT /events` (enrich_session / enrich_span(event_id=...)).
    UpdateEvent { body: serde_json::Value },
}

pub struct RestClient {
    agent: ureq::Agent,
    server_url: String,
    bearer: String,
    max_retries: u32,
}

/// The `hh-client-*` identification headers (also sent with OTLP in cloud mode).
pub fn client_headers() -> Vec<(String, String)> {
    vec![
        ("hh-client-version".into(), CLIENT_VERSION.into()),
        ("hh-client-language".into(), "python".into()),
        ("hh-client-package".into(), CLIENT_PACKAGE.into()),
    ]
}

impl RestClient {
    pub fn new(
        server_url: &str,
        key: &Secret,
        connect_timeout: Duration,
        max_retries: u32,
    ) -> Self {
        RestClient {
            agent: agent(connect_timeout),
            server_url: server_url.to_string(),
            bearer: format!("Bearer {}", key.expose()),
            max_retries: max_retries.min(3),
        }
    }

    fn headers(&self) -> Vec<(String, String)> {
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut h = vec![
            ("authorization".into(), self.bearer.clone()),
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
            ("hh-client-timestamp".into(), ts.to_string()),
        ];
        h.extend(client_headers());
        h
    }

    pub fn run(&mut self, job: &Job, ctl: &dyn ExportControl) {
        Stats::add(&ctl.stats().api_calls, 1);
        diag::injected_panic(diag::Fault::ApiCall);
        let (method, path, body, what) = match job {
            Job::SessionStart { body, .. } => ("POST", "/session/start", body, "session start"),
            Job::UpdateEvent { body } => ("PUT", "/events", body, "event update"),
        };
        let url = format!("{}{}", self.server_url, path);
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => {
                Stats::add(&ctl.stats().api_calls_failed, 1);
                diag::warn_limited("api-failed", &format!("HoneyHive {what}: {e}"));
                return;
            }
        };
        let headers = self.headers();
        match send_with_retry(
            &self.agent,
            method,
            &url,
            &headers,
            &bytes,
            self.max_retries,
            ctl,
        ) {
            Ok(resp) => {
                if let Job::SessionStart { session_id, .. } = job {
                    let returned = serde_json::from_slice::<serde_json::Value>(&resp)
                        .ok()
                        .and_then(|v| v.get("session_id")?.as_str().map(str::to_string));
                    if let Some(r) = returned {
                        if !r.eq_ignore_ascii_case(session_id) {
                            diag::log(
                                diag::WARNING,
                                &format!(
                                    "HoneyHive answered session start with session {r}, but spans carry {session_id}; keeping {session_id}"
                                ),
                            );
                        }
                    }
                }
            }
            Err(e) => {
                Stats::add(&ctl.stats().api_calls_failed, 1);
                ctl.stats().set_error(&e.message);
                diag::warn_limited(
                    "api-failed",
                    &format!("HoneyHive {what} failed: {e}; spans are still exported"),
                );
            }
        }
    }
}
