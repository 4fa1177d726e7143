//! The HTTP API (JSON): sites and their detection mode, incidents (with their alerts,
//! assets, lifecycle actions and exports), alerts (and marking one as normal), the asset
//! inventory, baselines (and relearning a device or channel) and the audit trail. Every
//! request needs `Authorization: Bearer <token>` (the scheme in any case) with a token from
//! `[api] tokens`; changes need the `write` scope. Refusals are counted
//! (`mamori_api_refused_total{reason}`) and tokens never appear in logs. Reference:
//! docs/collector.md, "HTTP API".
//!
//! The API may face a hostile network, so its own connection loop bounds what a client can
//! hold: connections (`max_connections`), time to send headers (`header_timeout_seconds`) and
//! a body (`body_timeout_seconds`), body size ([`MAX_BODY_BYTES`]), and failed
//! authentications per source address (`auth_failures_per_minute`, `lockout.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::admission::{AcceptBackoff, Source};
use crate::audit::{AuditAction, AuditEntry, check_reason};
use crate::config::{ApiSection, seconds};
use crate::detection::{AcceptFailure, DetectionControl, Mode, OnChange, describe_scope};
use crate::incident::{Criticality, IncidentDetail, IncidentStatus};
use crate::incidents::{self, Action, Change, ChangeKind};
use crate::lockout::Lockout;
use crate::stats::{self, IntakeStats};
use crate::store::{AlertQuery, AuditQuery, IncidentQuery, StoreError, StoreHandle};

/// Cap on a request body (the API's bodies are small JSON documents); beyond it `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Cap on a request's header block (hyper's read buffer).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// At shutdown, how long a request in progress may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The API server's bounds, from `[api]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub auth_failures_per_minute: u32,
    pub max_tracked_addresses: usize,
}

impl ApiLimits {
    pub fn new(a: &ApiSection) -> ApiLimits {
        ApiLimits {
            max_connections: usize::try_from(a.max_connections).unwrap_or(1).max(1),
            header_timeout: seconds(a.header_timeout_seconds),
            body_timeout: seconds(a.body_timeout_seconds),
            auth_failures_per_minute: a.auth_failures_per_minute,
            max_tracked_addresses: usize::try_from(a.max_tracked_addresses).unwrap_or(4096),
        }
    }
}

/// What the handlers share.
pub struct ApiState {
    pub store: Arc<StoreHandle>,
    pub control: DetectionControl,
    /// (name, token, may write).
    pub tokens: Vec<(String, String, bool)>,
    pub on_change: Option<OnChange>,
    pub stats: Arc<IntakeStats>,
    /// Who exports incidents (the STIX identity).
    pub producer: crate::export::stix::Producer,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("ApiState")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// Who is calling.
#[derive(Clone, Debug)]
struct Caller {
    name: String,
    write: bool,
}

/// An error answered as `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            _ => {
                tracing::error!(error = %e, "API: storage error");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "storage error".into())
            }
        }
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such {what}"))
}

fn bad_request(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why.into())
}

/// Equal in a time that tells nothing of the tokens: both are hashed first (so neither the
/// length nor a matching prefix shows), and the digests are compared without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    let diff = x
        .iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110, 11.1) and may be followed by several spaces.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    // Every token is compared, so the time does not tell which one matched.
    let caller = presented.and_then(|p| {
        let mut found = None;
        for (name, t, write) in &state.tokens {
            if same(t.as_bytes(), p.as_bytes()) && found.is_none() {
                found = Some(Caller {
                    name: name.clone(),
                    write: *write,
                });
            }
        }
        found
    });
    let Some(caller) = caller else {
        stats::add(&state.stats.api.unauthorized, 1);
        tracing::debug!(path = req.uri().path(), "API: no valid token");
        let mut resp = ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is needed".into(),
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    };
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if changes && !caller.write {
        stats::add(&state.stats.api.forbidden, 1);
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("token {:?} may only read", caller.name),
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Reads a request's body whole within `body_timeout` and [`MAX_BODY_BYTES`] (after
/// authentication, so an unknown client never makes the collector wait for its body).
async fn read_body(
    State((state, body_timeout)): State<(Arc<ApiState>, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(body_timeout, Limited::new(body, MAX_BODY_BYTES).collect());
    let body = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Err(_) => {
            stats::add(&state.stats.api.body_timeout, 1);
            return ApiError(StatusCode::REQUEST_TIMEOUT, "request body too slow".into())
                .into_response();
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            stats::add(&state.stats.api.too_large, 1);
            return ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
        Ok(Err(_)) => return bad_request("cannot read the request body").into_response(),
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await
}

/// The API's routes: every request authenticated first, then its body read (bounded).
pub fn router(state: Arc<ApiState>, limits: &ApiLimits) -> Router {
    Router::new()
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{site}/mode", put(set_mode))
        .route(
            "/api/v1/sites/{site}/exercise",
            put(set_exercise).delete(end_exercise),
        )
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/incidents/{id}/actions", post(incident_action))
        .route("/api/v1/incidents/{id}/stix", get(incident_stix))
        .route("/api/v1/incidents/{id}/report.md", get(incident_markdown))
        .route("/api/v1/incidents/{id}/report.html", get(incident_html))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/normal", post(mark_normal))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/sites/{site}/relearn", post(relearn))
        .route("/api/v1/quarantine", get(list_quarantine))
        .route("/api/v1/assets", get(list_assets))
        .route("/api/v1/assets/{site}/{ip}", put(annotate_asset))
        .route("/api/v1/baselines/{site}", get(baseline))
        .layer(middleware::from_fn_with_state(
            (Arc::clone(&state), limits.body_timeout),
            read_body,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ))
        .with_state(state)
}

/// One connection's requests, in front of the router: a source locked out after too many
/// failed authentications is answered `429` before anything else, and the router's `401`s
/// are counted against its source.
#[derive(Clone, Debug)]
struct Gate {
    app: hyper_util::service::TowerToHyperService<Router>,
    lockout: Arc<Lockout>,
    source: Source,
    stats: Arc<IntakeStats>,
    activity: Arc<Activity>,
}

/// What a connection did since its last answer, so that hyper's header timeout (which also
/// runs while a keep-alive connection idles) is counted only for slow headers.
#[derive(Debug, Default)]
struct Activity {
    /// Bytes came in since the last answer: a request begun.
    partial: std::sync::atomic::AtomicBool,
    /// Requests answered on this connection.
    answered: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn answered(&self) {
        use std::sync::atomic::Ordering;
        self.partial.store(false, Ordering::Relaxed);
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Headers begun and not finished, or a connection that never sent a request.
    fn slow_headers(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.partial.load(Ordering::Relaxed) || self.answered.load(Ordering::Relaxed) == 0
    }
}

/// The TCP stream, noting in [`Activity`] when bytes come in.
struct Watched {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity
                .partial
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Gate {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Err(wait) = self.lockout.check(self.source, Instant::now()) {
            stats::add(&self.stats.api.locked_out, 1);
            self.activity.answered();
            return Box::pin(std::future::ready(Ok(locked_out(wait))));
        }
        let answer = self.app.call(req);
        let (lockout, source) = (Arc::clone(&self.lockout), self.source);
        let activity = Arc::clone(&self.activity);
        Box::pin(async move {
            let resp = answer.await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                lockout.failed(source, Instant::now());
            }
            activity.answered();
            Ok(resp)
        })
    }
}

/// `429` with the seconds left in the source's window.
fn locked_out(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = ApiError(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed authentications from this address; retry later".into(),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp
}

/// Serves the API on `listener` until `stop` turns true, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    limits: ApiLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stats = Arc::clone(&state.stats);
    let app = hyper_util::service::TowerToHyperService::new(router(state, &limits));
    let lockout = Arc::new(Lockout::new(
        limits.auth_failures_per_minute,
        limits.max_tracked_addresses,
        Arc::clone(&stats),
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = AcceptBackoff::api(Arc::clone(&stats));
    let mut paused_until: Option<tokio::time::Instant> = None;
    loop {
        let resume = paused_until.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            _ = crate::intake::stopped(&mut stop) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep_until(resume), if paused_until.is_some() => {
                paused_until = None;
            }
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((tcp, peer)) => {
                    backoff.succeeded();
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        stats::add(&stats.api.too_many_connections, 1);
                        tracing::debug!(%peer, "API: max_connections open; connection closed");
                        continue;
                    };
                    let gate = Gate {
                        app: app.clone(),
                        lockout: Arc::clone(&lockout),
                        source: Source::of(peer.ip()),
                        stats: Arc::clone(&stats),
                        activity: Arc::default(),
                    };
                    tasks.spawn(connection(tcp, gate, limits.header_timeout, stop.clone(), slot));
                }
                Err(e) => {
                    let pause = backoff.failed(&e);
                    paused_until = Some(tokio::time::Instant::now() + pause);
                }
            },
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !tasks.is_empty() {
        if tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .is_err()
        {
            tasks.shutdown().await;
        }
    }
}

/// One API connection: HTTP/1.1 with keep-alive, headers within `header_timeout` (hyper's
/// timer, which also closes a keep-alive connection idle that long: not counted).
async fn connection(
    tcp: tokio::net::TcpStream,
    gate: Gate,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let stats = Arc::clone(&gate.stats);
    let activity = Arc::clone(&gate.activity);
    let tcp = Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), gate);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = crate::intake::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() && activity.slow_headers() {
            stats::add(&stats.api.header_timeout, 1);
            tracing::debug!("API: request headers too slow; connection closed");
        } else if e.is_timeout() {
            tracing::debug!("API: keep-alive connection idle; closed");
        } else {
            tracing::debug!(error = %e, "API connection ended with an error");
        }
    }
}

async fn sites(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(json!({ "sites": state.control.status() }))
}

#[derive(Deserialize)]
struct ModeBody {
    mode: Mode,
}

async fn set_mode(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(site): Path<String>,
    Json(body): Json<ModeBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = state
        .control
        .set_mode(&site, body.mode)
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    tracing::info!(site, mode = ?body.mode, by = caller.name, "site mode set through the API");
    Ok(Json(json!(status)))
}

#[derive(Deserialize)]
struct ExerciseBody {
    /// How long the drill lasts from now.
    seconds: f64,
}

async fn set_exercise(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(site): Path<String>,
    Json(body): Json<ExerciseBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !(body.seconds.is_finite() && body.seconds > 0.0 && body.seconds <= 7.0 * 86_400.0) {
        return Err(bad_request("seconds must be in (0, 604800]"));
    }
    let until = now_ms() + (body.seconds * 1000.0) as u64;
    let status = state
        .control
        .exercise(&site, Some(until))
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e))?;
    tracing::info!(
        site,
        by = caller.name,
        seconds = body.seconds,
        "exercise started"
    );
    Ok(Json(json!(status)))
}

async fn end_exercise(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = state
        .control
        .exercise(&site, None)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e))?;
    Ok(Json(json!(status)))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    site: Option<String>,
    /// Comma-separated statuses.
    status: Option<String>,
    incident: Option<i64>,
    limit: Option<u32>,
}

fn limit(q: &ListQuery) -> Result<u32, ApiError> {
    match q.limit {
        None => Ok(100),
        Some(n) if (1..=10_000).contains(&n) => Ok(n),
        Some(_) => Err(bad_request("limit must be between 1 and 10000")),
    }
}

async fn list_incidents(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut statuses = Vec::new();
    for s in q
        .status
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        statuses.push(
            IncidentStatus::parse(s).ok_or_else(|| bad_request(format!("unknown status {s:?}")))?,
        );
    }
    let query = IncidentQuery {
        site: q.site.clone(),
        statuses,
        limit: limit(&q)?,
    };
    let incidents = state.store.call(move |s| s.incidents(&query)).await?;
    Ok(Json(json!({ "incidents": incidents })))
}

async fn detail(state: &ApiState, id: i64) -> Result<IncidentDetail, ApiError> {
    let found = state
        .store
        .call(move |s| {
            let Some(incident) = s.incident(id)? else {
                return Ok(None);
            };
            let mut alerts = s.alerts(&AlertQuery {
                incident_id: Some(id),
                limit: 10_000,
                ..AlertQuery::default()
            })?;
            alerts.sort_by_key(|a| (a.alert.ts, a.id));
            let assets = s
                .assets(Some(&incident.site))?
                .into_iter()
                .filter(|a| incident.assets.contains(&a.ip.to_string()))
                .collect();
            Ok(Some(IncidentDetail {
                incident,
                alerts,
                assets,
            }))
        })
        .await?;
    found.ok_or_else(|| not_found("incident"))
}

async fn incident(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<i64>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(detail(&state, id).await?))
}

#[derive(Deserialize)]
struct ActionBody {
    action: String,
    #[serde(default)]
    note: Option<String>,
}

async fn incident_action(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Json(body): Json<ActionBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let action = match body.action.as_str() {
        "acknowledge" => Action::Acknowledge,
        "resolve" => Action::Resolve,
        "reopen" => Action::Reopen,
        "note" => Action::Note,
        other => {
            return Err(bad_request(format!(
                "unknown action {other:?} (acknowledge, resolve, reopen, note)"
            )));
        }
    };
    let who = caller.name.clone();
    let now = now_ms();
    let done = state
        .store
        .call(move |s| {
            let Some(mut inc) = s.incident(id)? else {
                return Ok(Err(not_found("incident")));
            };
            if let Err(why) = incidents::act(&mut inc, &action, &who, body.note.as_deref(), now) {
                return Ok(Err(ApiError(StatusCode::CONFLICT, why.into())));
            }
            s.save_incident(&inc)?;
            let open = s.open_incident_counts()?;
            Ok(Ok((inc, action, open)))
        })
        .await??;
    let (inc, action, open) = done;
    state.stats.set_open_incidents(&open);
    tracing::info!(incident = id, by = caller.name, action = ?action, "incident updated through the API");
    if let Some(hook) = &state.on_change {
        hook(&Change {
            incident: inc.clone(),
            what: match action {
                Action::Reopen => ChangeKind::Reopened,
                _ => ChangeKind::Updated,
            },
        });
    }
    Ok(Json(json!(inc)))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn typed(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn incident_stix(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let d = detail(&state, id).await?;
    let bundle = crate::export::stix::bundle(&d, &state.producer, now_ms());
    Ok(typed(
        "application/stix+json;version=2.1",
        serde_json::to_string_pretty(&bundle).unwrap_or_default(),
    ))
}

async fn incident_markdown(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let d = detail(&state, id).await?;
    Ok(typed(
        "text/markdown; charset=utf-8",
        crate::export::report::markdown(&d),
    ))
}

async fn incident_html(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let d = detail(&state, id).await?;
    Ok(typed(
        "text/html; charset=utf-8",
        crate::export::report::html(&d),
    ))
}

async fn list_alerts(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = AlertQuery {
        site: q.site.clone(),
        incident_id: q.incident,
        limit: limit(&q)?,
    };
    let alerts = state.store.call(move |s| s.alerts(&query)).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

/// Lines of agents' batches that were not events, newest first (`?site=`, `?limit=`).
async fn list_quarantine(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (site, limit) = (q.site.clone(), limit(&q)?);
    let lines = state
        .store
        .call(move |s| s.quarantined(site.as_deref(), limit))
        .await?;
    Ok(Json(json!({ "quarantine": lines })))
}

async fn list_assets(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let site = q.site.clone();
    let assets = state.store.call(move |s| s.assets(site.as_deref())).await?;
    Ok(Json(json!({ "assets": assets })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetBody {
    #[serde(default)]
    criticality: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

async fn annotate_asset(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((site, ip)): Path<(String, String)>,
    Json(body): Json<AssetBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| bad_request(format!("{ip:?} is not an IP address")))?;
    let criticality = body
        .criticality
        .as_deref()
        .map(|c| {
            Criticality::parse(c).ok_or_else(|| {
                bad_request(format!(
                    "unknown criticality {c:?} (low, medium, high, critical)"
                ))
            })
        })
        .transpose()?;
    if body.description.as_ref().is_some_and(|d| d.len() > 2000) {
        return Err(bad_request("description: at most 2000 bytes"));
    }
    let asset = state
        .control
        .annotate(&site, ip, criticality, body.description)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?
        .ok_or_else(|| not_found("asset"))?;
    tracing::info!(site, %ip, by = caller.name, "asset annotated through the API");
    Ok(Json(json!(asset)))
}

async fn baseline(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
) -> Result<Response, ApiError> {
    let all = state.store.latest_baselines().await?;
    let json = all
        .into_iter()
        .find(|(s, _)| *s == site)
        .map(|(_, j)| j)
        .ok_or_else(|| not_found("baseline for this site"))?;
    Ok(typed("application/json", json))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalBody {
    /// Why this is normal: required, it goes to the audit trail.
    reason: String,
}

/// "This is normal": the site's detector and stored baseline take the alert's finding in,
/// the alert is marked accepted and the audit trail records who, when and why.
async fn mark_normal(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Json(body): Json<NormalBody>,
) -> Result<Json<AuditEntry>, ApiError> {
    let reason = check_reason(&body.reason).map_err(bad_request)?;
    let stored = state
        .store
        .call(move |s| s.alert(id))
        .await?
        .ok_or_else(|| not_found("alert"))?;
    if let Some(audit) = stored.accepted_audit_id {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("alert {id} is marked as normal already (audit entry {audit})"),
        ));
    }
    let entry = state
        .control
        .accept(&stored.site, id, stored.alert, &caller.name, &reason)
        .await
        .map_err(|e| {
            let status = match &e {
                AcceptFailure::Site(_) => StatusCode::CONFLICT,
                AcceptFailure::Refused(mamori_models::detect::AcceptError::NotInBaseline {
                    ..
                }) => StatusCode::CONFLICT,
                AcceptFailure::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
                AcceptFailure::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                AcceptFailure::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            ApiError(status, e.to_string())
        })?;
    Ok(Json(entry))
}

/// The audit trail, newest first (`?site=`, `?limit=`).
async fn list_audit(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = AuditQuery {
        site: q.site.clone(),
        limit: limit(&q)?,
    };
    let entries = state.store.call(move |s| s.audit(&query)).await?;
    Ok(Json(json!({ "audit": entries })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    client: IpAddr,
    server: IpAddr,
    unit: u8,
    func: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelearnBody {
    /// A device: everything it does as client or server.
    #[serde(default)]
    asset: Option<IpAddr>,
    /// One client's use of one function on one unit of one server.
    #[serde(default)]
    channel: Option<ChannelBody>,
    /// Event time to learn for (default: the site's learning period).
    #[serde(default)]
    seconds: Option<f64>,
    /// Why (kept in the audit trail).
    #[serde(default)]
    reason: Option<String>,
}

/// Learns one device or channel of a detecting site again, from its next event.
async fn relearn(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(site): Path<String>,
    Json(body): Json<RelearnBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use mamori_models::detect::Scope;
    let (scope, what) = match (body.asset, body.channel) {
        (Some(ip), None) => (Scope::Asset(ip), json!({ "asset": ip })),
        (None, Some(c)) => (
            Scope::Channel {
                client: c.client,
                server: c.server,
                unit: c.unit,
                func: c.func,
            },
            json!({ "channel": { "client": c.client, "server": c.server, "unit": c.unit, "func": c.func } }),
        ),
        _ => return Err(bad_request("give either asset or channel")),
    };
    if let Some(s) = body.seconds
        && !(s.is_finite() && (1.0..=366.0 * 86_400.0).contains(&s))
    {
        return Err(bad_request("seconds must be in [1, 31622400]"));
    }
    let reason = match body.reason.as_deref() {
        Some(r) => check_reason(r).map_err(bad_request)?,
        None => String::new(),
    };
    if !state.control.status().iter().any(|s| s.site == site) {
        return Err(not_found("site"));
    }
    let status = state
        .control
        .relearn(&site, scope, body.seconds)
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    let entry = AuditEntry {
        id: 0,
        site: site.clone(),
        action: AuditAction::Relearn,
        alert_id: None,
        detector: String::new(),
        kind: String::new(),
        subject: describe_scope(&scope),
        who: caller.name.clone(),
        unix_ms: now_ms(),
        reason,
        changes: json!({ "scope": what, "seconds": body.seconds }),
    };
    let id = state.store.call(move |s| s.record_audit(&entry)).await?;
    tracing::info!(
        site,
        scope = describe_scope(&scope),
        by = caller.name,
        audit = id,
        "relearning requested through the API"
    );
    Ok(Json(json!({ "site": status, "audit_id": id })))
}
