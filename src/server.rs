//! The server side of the web integrations, in the engine: one SERVER span per request
//! that continues the caller's trace and session.
//!
//! - `HoneyTraceWSGIMiddleware`: the whole WSGI middleware (Flask, Django, any WSGI app).
//!   The span stays open, and current while the body is produced, until the server
//!   closes the response body, so streamed responses are covered.
//! - `AsgiTracing.begin(scope)`: the synchronous part of the ASGI middleware (the
//!   Python coroutine around it only attaches, awaits the app and ends the request).
//!
//! Per request this is one Rust call instead of a dozen Python ones: reading the
//! incoming context, the HTTP semantic-convention attributes, the span and the child
//! context. Nothing here raises into the application for bad input: a failure to trace
//! is contained (logged and counted) and the request runs untraced.

use crate::config::Trust;
use crate::context::{bridge, parent_of};
use crate::diag;
use crate::propagation::{extract_context, parse_trust};
use crate::span::PySpan;
use crate::tracer::{default_core, Core, TracerCore};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::KeyValue;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

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
                    ex.prefixes.push(crate::pystr::text(s).into_owned());
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
        self.regexes.iter().any(|r| {
            r.bind(py)
                .call_method1(intern!(py, "search"), (path,))
                .map(|m| !m.is_none())
                .unwrap_or(false)
        })
    }
}

/// The tracer named at construction (a HoneyHiveTracer or its core), if any.
fn core_of(tracer: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Arc<Core>>> {
    let Some(t) = tracer.filter(|t| !t.is_none()) else {
        return Ok(None);
    };
    let tc = match t.cast::<TracerCore>() {
        Ok(c) => c.clone(),
        Err(_) => t.getattr("_core")?.cast_into::<TracerCore>()?,
    };
    Ok(Some(tc.get().core.clone()))
}

/// The tracer for this request: the configured one while it is live, else the default.
fn active(explicit: &Option<Arc<Core>>) -> Option<Arc<Core>> {
    match explicit {
        Some(c) => c.is_live().then(|| c.clone()),
        None => default_core().filter(|c| c.is_live()),
    }
}

fn text_of(v: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(s) = v.cast::<PyString>() {
        return Some(crate::pystr::text(s).into_owned());
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Some(b.as_bytes().iter().map(|&c| c as char).collect());
    }
    None
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
        .and_then(|v| text_of(&v))
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
pub fn record_server_error(py: Python<'_>, span: &PySpan, exc: &Bound<'_, PyAny>) {
    if !span.is_recording_now() {
        return;
    }
    if exc.is_instance_of::<PyException>() {
        let ty = exc.get_type();
        let qual = ty
            .qualname()
            .map(|q| q.to_string())
            .unwrap_or_else(|_| "Exception".into());
        let short = ty
            .name()
            .map(|q| q.to_string())
            .unwrap_or_else(|_| qual.clone());
        let message = exc.str().map(|s| s.to_string()).unwrap_or_default();
        span.record_exception_event(py, exc, None, true);
        span.set_many(vec![KeyValue::new("error.type", qual)]);
        span.set_status_now(Status::error(format!("{short}: {message}")));
    } else {
        span.set_many(vec![KeyValue::new("honeyhive_metadata.cancelled", true)]);
    }
}

/// Start the SERVER span of a request whose incoming context is `ctx`.
fn start_server_span(
    py: Python<'_>,
    core: &Arc<Core>,
    ctx: &Bound<'_, PyAny>,
    method: &str,
    attrs: Vec<KeyValue>,
) -> PyResult<PySpan> {
    let b = bridge(py)?;
    let parent = parent_of(b, ctx);
    core.start_kv(
        py,
        &core.scope,
        Cow::Owned(method.to_string()),
        ctx,
        parent,
        SpanKind::Server,
        attrs,
        Vec::new(),
        None,
        true,
        true,
    )
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

/// WSGI middleware: a SERVER span per request, continuing the caller's trace and
/// session (with the tracer's trust policy, or `trust=`). Excluded paths, and requests
/// while no tracer is live, pass through untraced.
///
/// ```python
/// app.wsgi_app = HoneyTraceWSGIMiddleware(app.wsgi_app, tracer)
/// ```
#[pyclass(
    module = "honeytrace.integrations",
    name = "HoneyTraceWSGIMiddleware",
    frozen
)]
pub struct WsgiMiddleware {
    #[pyo3(get)]
    app: Py<PyAny>,
    core: Option<Arc<Core>>,
    excluded: Exclusions,
    trust: Option<Trust>,
}

struct Begun {
    span: Py<PySpan>,
    ctx: Py<PyAny>,
    token: Py<PyAny>,
    method: String,
}

impl WsgiMiddleware {
    fn begin(&self, py: Python<'_>, environ: &Bound<'_, PyAny>) -> PyResult<Option<Begun>> {
        let Some(core) = active(&self.core) else {
            return Ok(None);
        };
        let Ok(env) = environ.cast::<PyDict>() else {
            return Ok(None);
        };
        let path = get_text(env, intern!(py, "PATH_INFO")).unwrap_or_else(|| "/".into());
        if self.excluded.excludes(py, &path) {
            return Ok(None);
        }
        let method = get_text(env, intern!(py, "REQUEST_METHOD")).unwrap_or_else(|| "GET".into());
        let b = bridge(py)?;
        let ctx = extract_context(py, environ, None, Some(&core), self.trust, None)?;
        let attrs = wsgi_attributes(py, env, &method, &path);
        let span = Bound::new(py, start_server_span(py, &core, &ctx, &method, attrs)?)?;
        let child = b.child(&ctx, span.as_any(), None)?;
        let token = b.attach(&child)?;
        Ok(Some(Begun {
            span: span.unbind(),
            ctx: child.unbind(),
            token: token.unbind(),
            method,
        }))
    }
}

#[pymethods]
impl WsgiMiddleware {
    #[new]
    #[pyo3(signature = (app, tracer=None, *, excluded_urls=None, trust=None))]
    fn new(
        app: Py<PyAny>,
        tracer: Option<&Bound<'_, PyAny>>,
        excluded_urls: Option<&Bound<'_, PyAny>>,
        trust: Option<&str>,
    ) -> PyResult<Self> {
        Ok(WsgiMiddleware {
            app,
            core: core_of(tracer)?,
            excluded: Exclusions::new(excluded_urls)?,
            trust: parse_trust(trust)?,
        })
    }

    fn __call__(
        &self,
        py: Python<'_>,
        environ: &Bound<'_, PyAny>,
        start_response: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let begun = diag::shield(
            "wsgi middleware",
            || None,
            || match self.begin(py, environ) {
                Ok(b) => b,
                Err(e) => {
                    diag::warn_limited("wsgi-begin", &format!("request not traced: {e}"));
                    None
                }
            },
        );
        let Some(begun) = begun else {
            return Ok(self.app.bind(py).call1((environ, start_response))?.unbind());
        };
        let b = bridge(py)?;
        let wrapped = Py::new(
            py,
            WsgiStartResponse {
                inner: start_response.clone().unbind(),
                span: begun.span.clone_ref(py),
                environ: environ.clone().unbind(),
                method: begun.method,
            },
        )?;
        let result = self.app.bind(py).call1((environ, wrapped));
        b.detach(begun.token.bind(py));
        match result {
            Ok(body) => Ok(Py::new(
                py,
                WsgiBody {
                    inner: body.unbind(),
                    state: Mutex::new(BodyState {
                        iter: None,
                        ended: false,
                    }),
                    span: begun.span,
                    ctx: begun.ctx,
                },
            )?
            .into_any()),
            Err(e) => {
                let span = begun.span.get();
                record_server_error(py, span, e.value(py).as_any());
                span.end_at(None);
                Err(e)
            }
        }
    }
}

/// The `start_response` the application sees: records the status (and the route a
/// werkzeug-based framework matched) on the span, then calls the server's.
#[pyclass(module = "honeytrace._core", name = "_StartResponse", frozen)]
pub struct WsgiStartResponse {
    inner: Py<PyAny>,
    span: Py<PySpan>,
    environ: Py<PyAny>,
    method: String,
}

#[pymethods]
impl WsgiStartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        diag::shield("wsgi start_response", || (), || self.observe(py, status));
        let inner = self.inner.bind(py);
        Ok(match exc_info {
            Some(e) => inner.call1((status, headers, e))?,
            None => inner.call1((status, headers))?,
        }
        .unbind())
    }
}

impl WsgiStartResponse {
    fn observe(&self, py: Python<'_>, status: &Bound<'_, PyAny>) {
        let span = self.span.get();
        if let Some(code) =
            text_of(status).and_then(|s| s.split(' ').next().and_then(|c| c.parse::<i64>().ok()))
        {
            set_status_code(span, code);
        }
        // Flask and other werkzeug apps keep the request (with its matched rule) in the
        // environ while the response starts.
        let rule = self
            .environ
            .bind(py)
            .cast::<PyDict>()
            .ok()
            .and_then(|d| d.get_item(intern!(py, "werkzeug.request")).ok().flatten())
            .filter(|r| !r.is_none())
            .and_then(|r| r.getattr(intern!(py, "url_rule")).ok())
            .filter(|r| !r.is_none())
            .and_then(|r| r.getattr(intern!(py, "rule")).ok())
            .and_then(|r| text_of(&r));
        if let Some(rule) = rule {
            set_route(span, &self.method, &rule);
        }
    }
}

struct BodyState {
    iter: Option<Py<PyAny>>,
    ended: bool,
}

/// The response body handed to the server: the request's context is current while
/// each chunk is produced, and the span ends when the server closes the body.
#[pyclass(module = "honeytrace._core", name = "_ResponseBody", frozen)]
pub struct WsgiBody {
    inner: Py<PyAny>,
    state: Mutex<BodyState>,
    span: Py<PySpan>,
    ctx: Py<PyAny>,
}

impl WsgiBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, BodyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl WsgiBody {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let it = {
            let st = self.lock();
            st.iter.as_ref().map(|i| i.clone_ref(py))
        };
        let it = match it {
            Some(it) => it,
            None => {
                let it = self.inner.bind(py).try_iter()?.into_any().unbind();
                self.lock().iter = Some(it.clone_ref(py));
                it
            }
        };
        let b = bridge(py)?;
        let token = b.attach(self.ctx.bind(py))?;
        // SAFETY: attached; PyIter_Next returns a new reference, or NULL at the end
        // (no exception) or on error (exception set).
        let next = unsafe { pyo3::ffi::PyIter_Next(it.as_ptr()) };
        let out = if next.is_null() {
            match PyErr::take(py) {
                Some(e) => Err(e),
                None => Ok(None),
            }
        } else {
            // SAFETY: a new reference from PyIter_Next.
            Ok(Some(unsafe { Bound::from_owned_ptr(py, next) }.unbind()))
        };
        b.detach(token.as_any());
        if let Err(e) = &out {
            record_server_error(py, self.span.get(), e.value(py).as_any());
        }
        out
    }

    /// Close the application's body, then end the span (once).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.bind(py);
        let closed = match inner.getattr(intern!(py, "close")) {
            Ok(close) => close.call0().map(|_| ()),
            Err(_) => Ok(()),
        };
        let first = {
            let mut st = self.lock();
            !std::mem::replace(&mut st.ended, true)
        };
        if first {
            if let Err(e) = &closed {
                record_server_error(py, self.span.get(), e.value(py).as_any());
            }
            self.span.get().end_at(None);
        }
        closed
    }
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
        let v = scope
            .get_item(key)
            .ok()
            .flatten()
            .filter(|v| !v.is_none())?;
        let host = v
            .get_item(0)
            .ok()
            .and_then(|h| text_of(&h).or_else(|| h.str().ok().map(|s| s.to_string())));
        let port = v.get_item(1).ok().and_then(|p| p.extract::<i64>().ok());
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
        if let Ok(iter) = headers.try_iter() {
            for item in iter.flatten() {
                let (Ok(k), Ok(v)) = (item.get_item(0), item.get_item(1)) else {
                    continue;
                };
                let is_ua = k
                    .cast::<PyBytes>()
                    .map(|k| k.as_bytes().eq_ignore_ascii_case(b"user-agent"))
                    .unwrap_or(false);
                if is_ua {
                    if let Some(ua) = text_of(&v) {
                        a.push(KeyValue::new("user_agent.original", ua));
                    }
                    break;
                }
            }
        }
    }
    if let Some(v) = get_text(scope, intern!(py, "http_version")) {
        a.push(KeyValue::new("network.protocol.version", v));
    }
    a
}

/// The engine side of the ASGI middleware (configuration resolved once).
#[pyclass(module = "honeytrace._core", name = "AsgiTracing", frozen)]
pub struct AsgiTracing {
    core: Option<Arc<Core>>,
    excluded: Exclusions,
    trust: Option<Trust>,
}

#[pymethods]
impl AsgiTracing {
    #[new]
    #[pyo3(signature = (tracer=None, *, excluded_urls=None, trust=None))]
    fn new(
        tracer: Option<&Bound<'_, PyAny>>,
        excluded_urls: Option<&Bound<'_, PyAny>>,
        trust: Option<&str>,
    ) -> PyResult<Self> {
        Ok(AsgiTracing {
            core: core_of(tracer)?,
            excluded: Exclusions::new(excluded_urls)?,
            trust: parse_trust(trust)?,
        })
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
        match (&s.core, active(&self.core)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, &b),
            _ => false,
        }
    }

    /// Begin an HTTP request: None when it is not to be traced (not HTTP, excluded, no
    /// live tracer, or tracing it failed, which is logged and counted).
    fn begin(&self, py: Python<'_>, scope: &Bound<'_, PyAny>) -> Option<AsgiRequest> {
        diag::shield(
            "asgi middleware",
            || None,
            || match self.try_begin(py, scope) {
                Ok(r) => r,
                Err(e) => {
                    diag::warn_limited("asgi-begin", &format!("request not traced: {e}"));
                    None
                }
            },
        )
    }
}

impl AsgiTracing {
    fn try_begin(&self, py: Python<'_>, scope: &Bound<'_, PyAny>) -> PyResult<Option<AsgiRequest>> {
        let Ok(d) = scope.cast::<PyDict>() else {
            return Ok(None);
        };
        if get_text(d, intern!(py, "type")).as_deref() != Some("http") {
            return Ok(None);
        }
        let Some(core) = active(&self.core) else {
            return Ok(None);
        };
        let path = get_text(d, intern!(py, "path")).unwrap_or_else(|| "/".into());
        if self.excluded.excludes(py, &path) {
            return Ok(None);
        }
        let method = get_text(d, intern!(py, "method")).unwrap_or_else(|| "GET".into());
        let b = bridge(py)?;
        let ctx = extract_context(py, scope, None, Some(&core), self.trust, None)?;
        let attrs = asgi_attributes(py, d, &method, &path);
        let span = Bound::new(py, start_server_span(py, &core, &ctx, &method, attrs)?)?;
        let child = b.child(&ctx, span.as_any(), None)?;
        Ok(Some(AsgiRequest {
            span: span.unbind(),
            context: child.unbind(),
            scope: scope.clone().unbind(),
            method,
        }))
    }
}

/// One traced ASGI request.
#[pyclass(module = "honeytrace._core", name = "AsgiRequest", frozen)]
pub struct AsgiRequest {
    span: Py<PySpan>,
    /// The context to attach while the application runs.
    #[pyo3(get)]
    context: Py<PyAny>,
    scope: Py<PyAny>,
    method: String,
}

#[pymethods]
impl AsgiRequest {
    #[getter]
    fn span(&self, py: Python<'_>) -> Py<PySpan> {
        self.span.clone_ref(py)
    }

    /// The `send` the application sees: the response status (and the route Starlette
    /// matched) go on the span; returns the server's own awaitable.
    fn wrap_send(slf: PyRef<'_, Self>, send: Py<PyAny>) -> AsgiSend {
        AsgiSend {
            request: slf.into(),
            inner: send,
        }
    }

    fn fail(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) {
        diag::shield(
            "asgi failure",
            || (),
            || record_server_error(py, self.span.get(), exc),
        );
    }

    fn end(&self) {
        self.span.get().end_at(None);
    }
}

impl AsgiRequest {
    fn observe(&self, py: Python<'_>, message: &Bound<'_, PyAny>) {
        let Ok(m) = message.cast::<PyDict>() else {
            return;
        };
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
        let route = self
            .scope
            .bind(py)
            .cast::<PyDict>()
            .ok()
            .and_then(|d| d.get_item(intern!(py, "route")).ok().flatten())
            .filter(|r| !r.is_none())
            .and_then(|r| r.getattr(intern!(py, "path")).ok())
            .and_then(|p| text_of(&p));
        if let Some(route) = route {
            set_route(span, &self.method, &route);
        }
    }
}

#[pyclass(module = "honeytrace._core", name = "_Send", frozen)]
pub struct AsgiSend {
    request: Py<AsgiRequest>,
    inner: Py<PyAny>,
}

#[pymethods]
impl AsgiSend {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        diag::shield(
            "asgi send",
            || (),
            || self.request.get().observe(py, message),
        );
        Ok(self.inner.bind(py).call1((message,))?.unbind())
    }
}
