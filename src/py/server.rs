//! The server side of the web integrations: one SERVER span per request that
//! continues the caller's trace and session. `ServerTracing.begin_wsgi(environ)` /
//! `begin_asgi(scope)` do the work of a request's start in one engine call (reading the
//! incoming context, the HTTP semantic-convention attributes, the span and its child
//! context); the middleware around them is Python (`honeytrace/integrations/`), so the
//! application always runs under Python frames. Nothing here raises into the
//! application for bad input: a failure to trace is contained (logged and counted) and
//! the request runs untraced.

use crate::engine::config::Trust;
use crate::engine::diag;
use crate::engine::span::SpanOptions;
use crate::py::boundary::{Degrade, Section};
use crate::py::bridge::bridge;
use crate::py::carrier;
use crate::py::handle::{default_handle, Handle};
use crate::py::otel::start_in;
use crate::py::parent::parent_of;
use crate::py::propagation::{extract_context, parse_trust};
use crate::py::pystr;
use crate::py::span::PySpan;
use crate::py::tracer::handle_of;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::KeyValue;
use pyo3::exceptions::PyException;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;
use std::borrow::Cow;
use std::sync::Arc;

/// Which requests to leave untraced: path prefixes, and compiled regular expressions
/// searched in the path (`HH_EXCLUDED_URLS` adds comma-separated prefixes).
struct Exclusions {
    prefixes: Vec<String>,
    regexes: Vec<Py<PyAny>>,
}

impl Exclusions {
    fn new(patterns: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut ex = Exclusions {
            prefixes: Vec::new(),
            regexes: Vec::new(),
        };
        if let Some(p) = patterns.filter(|p| !p.is_none()) {
            let py = p.py();
            // An `ExcludedUrls` from honeytrace.integrations: take its parts.
            if let (Ok(prefixes), Ok(regexes)) = (
                p.getattr(intern!(py, "_prefixes")),
                p.getattr(intern!(py, "_regexes")),
            ) {
                for x in prefixes.try_iter()? {
                    ex.prefixes.push(x?.extract()?);
                }
                for x in regexes.try_iter()? {
                    ex.regexes.push(x?.unbind());
                }
                return Ok(ex);
            }
            for x in p.try_iter()? {
                let x = x?;
                if let Ok(s) = x.cast::<PyString>() {
                    ex.prefixes.push(pystr::text(s).into_owned());
                } else if x.hasattr(intern!(py, "search"))? {
                    ex.regexes.push(x.unbind());
                } else {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "excluded_urls: expected path prefixes (str) or compiled regular expressions",
                    ));
                }
            }
        }
        if let Ok(env) = std::env::var("HH_EXCLUDED_URLS") {
            ex.prefixes.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        Ok(ex)
    }

    fn excludes(&self, py: Python<'_>, path: &str) -> bool {
        if self.prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            return true;
        }
        if self.regexes.is_empty() {
            return false;
        }
        let Some(_section) = Section::open() else {
            return false;
        };
        self.regexes.iter().any(|r| {
            r.bind(py)
                .call_method1(intern!(py, "search"), (path,))
                .is_ok_and(|m| !m.is_none())
        })
    }
}

/// The tracer for this request: the configured one while it is live, else the default.
fn active(explicit: Option<&Arc<Handle>>) -> Option<Arc<Handle>> {
    match explicit {
        Some(h) => h.core.is_live().then(|| h.clone()),
        None => default_handle().filter(|h| h.core.is_live()),
    }
}

/// `host[:port]`, with IPv6 literals in brackets.
fn split_host(host: &str) -> (String, Option<String>) {
    let (name, port) = if host.starts_with('[') {
        match host.find("]:") {
            Some(i) => (&host[..=i], Some(&host[i + 2..])),
            None => (host, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    (name.to_string(), port.map(String::from))
}

fn get_text(d: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> Option<String> {
    d.get_item(key)
        .ok()
        .flatten()
        .and_then(|v| carrier::text(&v))
        .filter(|s| !s.is_empty())
}

/// Set the response status on a server span (errors from 500 up, as the HTTP
/// semantic conventions say for servers).
fn set_status_code(span: &PySpan, code: i64) {
    let mut kvs = vec![KeyValue::new("http.response.status_code", code)];
    if code >= 500 {
        kvs.push(KeyValue::new("error.type", code.to_string()));
    }
    span.set_many(kvs);
    if code >= 500 {
        span.set_status_now(Status::error(format!("HTTP {code}")));
    }
}

/// Name the span after its route template once the framework has matched it.
fn set_route(span: &PySpan, method: &str, route: &str) {
    let name = format!("{method} {route}");
    let route = route.to_string();
    span.with_span(|s| {
        s.update_name(name);
        s.set_attribute(KeyValue::new("http.route", route));
    });
}

/// An exception escaping the application: an `exception` event, `error.type` and an
/// ERROR status; a cancellation (not an `Exception`) is marked, not an error.
pub fn record_server_error(span: &PySpan, exc: &Bound<'_, PyAny>) {
    if !span.is_recording_now() {
        return;
    }
    if exc.is_instance_of::<PyException>() {
        let qual = exc
            .get_type()
            .qualname()
            .map_or_else(|_| "Exception".into(), |q| q.to_string());
        span.record_exception_event(exc, None, None, None, true);
        span.set_many(vec![KeyValue::new("error.type", qual)]);
        span.set_error_status_for(exc);
    } else {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.cancelled", true)]);
    }
}

/// Start the SERVER span of a request whose incoming context is `ctx`.
fn start_server_span(
    py: Python<'_>,
    handle: &Arc<Handle>,
    ctx: &Bound<'_, PyAny>,
    method: &str,
    attrs: Vec<KeyValue>,
) -> PyResult<PySpan> {
    let b = bridge(py)?;
    let parent = parent_of(b, ctx);
    let mut opts = SpanOptions::new(Cow::Owned(method.to_string()), SpanKind::Server);
    opts.attributes = attrs;
    start_in(handle, &handle.core.scope, ctx, &parent, opts)
}

/// The request attributes both servers have: method, scheme (default http), path, query.
fn request_attributes(
    method: &str,
    scheme: Option<String>,
    path: &str,
    query: Option<String>,
) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(10);
    a.push(KeyValue::new("http.request.method", method.to_string()));
    a.push(KeyValue::new(
        "url.scheme",
        scheme.unwrap_or_else(|| "http".into()),
    ));
    a.push(KeyValue::new("url.path", path.to_string()));
    if let Some(q) = query {
        a.push(KeyValue::new("url.query", q));
    }
    a
}

// ---------------------------------------------------------------------------------
// WSGI

fn wsgi_attributes(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    method: &str,
    path: &str,
) -> Vec<KeyValue> {
    let mut a = request_attributes(
        method,
        get_text(env, intern!(py, "wsgi.url_scheme")),
        path,
        get_text(env, intern!(py, "QUERY_STRING")),
    );
    let host = get_text(env, intern!(py, "HTTP_HOST"))
        .or_else(|| get_text(env, intern!(py, "SERVER_NAME")));
    if let Some(host) = host {
        let (name, port) = split_host(&host);
        let port = port
            .filter(|p| !p.is_empty())
            .or_else(|| get_text(env, intern!(py, "SERVER_PORT")));
        a.push(KeyValue::new("server.address", name));
        if let Some(p) = port.and_then(|p| p.parse::<i64>().ok()) {
            a.push(KeyValue::new("server.port", p));
        }
    }
    if let Some(c) = get_text(env, intern!(py, "REMOTE_ADDR")) {
        a.push(KeyValue::new("client.address", c));
    }
    if let Some(ua) = get_text(env, intern!(py, "HTTP_USER_AGENT")) {
        a.push(KeyValue::new("user_agent.original", ua));
    }
    if let Some(proto) = get_text(env, intern!(py, "SERVER_PROTOCOL")) {
        if let Some(v) = proto.strip_prefix("HTTP/") {
            a.push(KeyValue::new("network.protocol.version", v.to_string()));
        }
    }
    a
}

// ---------------------------------------------------------------------------------
// ASGI

fn asgi_attributes(
    py: Python<'_>,
    scope: &Bound<'_, PyDict>,
    method: &str,
    path: &str,
) -> Vec<KeyValue> {
    let mut a = request_attributes(
        method,
        get_text(scope, intern!(py, "scheme")),
        path,
        get_text(scope, intern!(py, "query_string")),
    );
    let pair = |key: &Bound<'_, PyString>| -> Option<(Option<String>, Option<i64>)> {
        // `(host, port)` as the ASGI spec has it; anything else is not read (its
        // methods would be user code).
        let v = scope.get_item(key).ok().flatten()?;
        let at = |i: usize| match v.cast::<PyTuple>() {
            Ok(t) => t.get_item(i).ok(),
            Err(_) => v.cast::<PyList>().ok()?.get_item(i).ok(),
        };
        if !(v.is_instance_of::<PyTuple>() || v.is_instance_of::<PyList>()) {
            return None;
        }
        let host = at(0).and_then(|h| carrier::text(&h));
        let port = at(1)
            .filter(pyo3::types::PyAnyMethods::is_exact_instance_of::<PyInt>)
            .and_then(|p| p.extract::<i64>().ok());
        Some((host, port))
    };
    if let Some((host, port)) = pair(intern!(py, "server")) {
        if let Some(h) = host {
            a.push(KeyValue::new("server.address", h));
        }
        if let Some(p) = port {
            a.push(KeyValue::new("server.port", p));
        }
    }
    if let Some((Some(client), _)) = pair(intern!(py, "client")) {
        a.push(KeyValue::new("client.address", client));
    }
    if let Ok(Some(headers)) = scope.get_item(intern!(py, "headers")) {
        if let Some(ua) = carrier::header(&headers, "user-agent") {
            a.push(KeyValue::new("user_agent.original", ua));
        }
    }
    if let Some(v) = get_text(scope, intern!(py, "http_version")) {
        a.push(KeyValue::new("network.protocol.version", v));
    }
    a
}

/// The engine side of the WSGI and ASGI middleware (configuration resolved once).
#[pyclass(module = "honeytrace._core", name = "ServerTracing", frozen)]
pub struct ServerTracing {
    handle: Option<Arc<Handle>>,
    excluded: Exclusions,
    trust: Option<Trust>,
}

impl Degrade for ServerTracing {
    fn degraded() -> Self {
        ServerTracing {
            handle: None,
            excluded: Exclusions {
                prefixes: Vec::new(),
                regexes: Vec::new(),
            },
            trust: None,
        }
    }
}

enum Protocol {
    Wsgi,
    Asgi,
}

impl ServerTracing {
    /// Begin a request: None when it is not to be traced (excluded, no live tracer,
    /// or tracing it failed, which is logged and counted).
    fn begin(
        &self,
        py: Python<'_>,
        carrier: &Bound<'_, PyAny>,
        proto: &Protocol,
    ) -> Option<ServerRequest> {
        match self.try_begin(py, carrier, proto) {
            Ok(r) => r,
            Err(e) => {
                diag::count(&diag::COUNTERS.internal_errors);
                diag::warn_limited("server-begin", &format!("request not traced: {e}"));
                None
            }
        }
    }

    fn try_begin(
        &self,
        py: Python<'_>,
        carrier: &Bound<'_, PyAny>,
        proto: &Protocol,
    ) -> PyResult<Option<ServerRequest>> {
        let Ok(d) = carrier.cast::<PyDict>() else {
            return Ok(None);
        };
        let (path_key, method_key) = match proto {
            Protocol::Wsgi => (intern!(py, "PATH_INFO"), intern!(py, "REQUEST_METHOD")),
            Protocol::Asgi => {
                if get_text(d, intern!(py, "type")).as_deref() != Some("http") {
                    return Ok(None);
                }
                (intern!(py, "path"), intern!(py, "method"))
            }
        };
        let Some(handle) = active(self.handle.as_ref()) else {
            return Ok(None);
        };
        let path = get_text(d, path_key).unwrap_or_else(|| "/".into());
        if self.excluded.excludes(py, &path) {
            return Ok(None);
        }
        let method = get_text(d, method_key).unwrap_or_else(|| "GET".into());
        let b = bridge(py)?;
        let ctx = extract_context(py, carrier, None, Some(&handle), self.trust, None, false)?;
        let attrs = match proto {
            Protocol::Wsgi => wsgi_attributes(py, d, &method, &path),
            Protocol::Asgi => asgi_attributes(py, d, &method, &path),
        };
        let span = Bound::new(py, start_server_span(py, &handle, &ctx, &method, attrs)?)?;
        crate::py::span::started(&span, Some(&ctx));
        let child = b.child(&ctx, span.as_any(), None)?;
        Ok(Some(ServerRequest {
            span: span.unbind(),
            context: child.unbind(),
            carrier: carrier.clone().unbind(),
            method,
        }))
    }
}

#[honeytrace_macros::methods]
impl ServerTracing {
    #[new]
    #[pyo3(signature = (tracer=None, *, excluded_urls=None, trust=None))]
    fn new(
        tracer: Option<&Bound<'_, PyAny>>,
        excluded_urls: Option<&Bound<'_, PyAny>>,
        trust: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(ServerTracing {
            handle: handle_of(tracer),
            excluded: Exclusions::new(excluded_urls)?,
            trust: parse_trust(trust)?,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for r in &self.excluded.regexes {
            visit.call(r)?;
        }
        Ok(())
    }

    /// Whether requests use an explicit trust policy (not the tracer's).
    #[getter]
    fn has_trust(&self) -> bool {
        self.trust.is_some()
    }

    /// True when `span` (FastAPI's own server span) is a live honeytrace span of the
    /// tracer this middleware would use: the request is already traced.
    fn owns(&self, span: &Bound<'_, PyAny>) -> bool {
        let Ok(s) = span.cast::<PySpan>() else {
            return false;
        };
        let s = s.get();
        if !s.is_recording_now() {
            return false;
        }
        match (&s.handle, active(self.handle.as_ref())) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, &b),
            _ => false,
        }
    }

    /// Begin a WSGI request (its context not attached). None: not traced.
    fn begin_wsgi(&self, py: Python<'_>, environ: &Bound<'_, PyAny>) -> Option<ServerRequest> {
        self.begin(py, environ, &Protocol::Wsgi)
    }

    /// Begin an ASGI HTTP request (its context not attached). None: not traced.
    fn begin_asgi(&self, py: Python<'_>, scope: &Bound<'_, PyAny>) -> Option<ServerRequest> {
        self.begin(py, scope, &Protocol::Asgi)
    }
}

/// One traced request.
#[pyclass(module = "honeytrace._core", name = "ServerRequest", frozen)]
pub struct ServerRequest {
    span: Py<PySpan>,
    /// The context to attach while the application runs.
    context: Py<PyAny>,
    /// The WSGI environ or the ASGI scope.
    carrier: Py<PyAny>,
    method: String,
}

impl ServerRequest {
    /// A WSGI status line (`"200 OK"`), and the route a werkzeug app matched.
    fn observe_wsgi(&self, py: Python<'_>, status: &Bound<'_, PyAny>) {
        let span = self.span.get();
        if let Some(code) = carrier::text(status)
            .and_then(|s| s.split(' ').next().and_then(|c| c.parse::<i64>().ok()))
        {
            set_status_code(span, code);
        }
        let Some(_section) = Section::open() else {
            return;
        };
        // Flask and other werkzeug apps keep the request (with its matched rule) in the
        // environ while the response starts.
        let rule = self
            .carrier
            .bind(py)
            .cast::<PyDict>()
            .ok()
            .and_then(|d| d.get_item(intern!(py, "werkzeug.request")).ok().flatten())
            .filter(|r| !r.is_none())
            .and_then(|r| r.getattr(intern!(py, "url_rule")).ok())
            .filter(|r| !r.is_none())
            .and_then(|r| r.getattr(intern!(py, "rule")).ok())
            .and_then(|r| carrier::text(&r));
        if let Some(rule) = rule {
            set_route(span, &self.method, &rule);
        }
    }

    /// An ASGI message: the response status, and the route Starlette matched.
    fn observe_asgi(&self, py: Python<'_>, m: &Bound<'_, PyDict>) {
        if get_text(m, intern!(py, "type")).as_deref() != Some("http.response.start") {
            return;
        }
        let span = self.span.get();
        let code = m
            .get_item(intern!(py, "status"))
            .ok()
            .flatten()
            .and_then(|s| s.extract::<i64>().ok())
            .unwrap_or(200);
        set_status_code(span, code);
        let Some(_section) = Section::open() else {
            return;
        };
        let route = self
            .carrier
            .bind(py)
            .cast::<PyDict>()
            .ok()
            .and_then(|d| d.get_item(intern!(py, "route")).ok().flatten())
            .filter(|r| !r.is_none())
            .and_then(|r| r.getattr(intern!(py, "path")).ok())
            .and_then(|p| carrier::text(&p));
        if let Some(route) = route {
            set_route(span, &self.method, &route);
        }
    }
}

#[honeytrace_macros::methods]
impl ServerRequest {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.span)?;
        visit.call(&self.context)?;
        visit.call(&self.carrier)?;
        Ok(())
    }

    #[getter]
    fn span(&self, py: Python<'_>) -> Py<PyAny> {
        self.span.clone_ref(py).into_any()
    }

    #[getter]
    fn context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    /// What the response started with: a WSGI status line or an ASGI message.
    fn observe(&self, py: Python<'_>, what: &Bound<'_, PyAny>) {
        if let Ok(m) = what.cast::<PyDict>() {
            self.observe_asgi(py, m);
        } else {
            self.observe_wsgi(py, what);
        }
    }

    /// An exception escaped the application (recorded; the span stays open).
    fn record(&self, exc: &Bound<'_, PyAny>) {
        if exc.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            record_server_error(self.span.get(), exc);
        }
    }

    /// The request is over (the span ends once).
    fn end(&self) {
        self.span.get().end_at(None);
    }
}
