//! HTTP wiring: the webhook endpoints, health, readiness and metrics, and the server's
//! lifecycle with the limits of `[server]`: body size, header, body, request and idle
//! timeouts, connections and concurrent webhooks (`server/conn.rs` serves the connections).
//!
//! Every non-2xx answer of a webhook endpoint carries its reason in `Sentry-Hook-Error`,
//! which Sentry shows in the integration's request log.
//!
//! The webhook handlers stay thin: read the bytes, verify, parse, route, make one store call,
//! answer. Slack is never called on the request path; a committed delivery wakes the delivery
//! worker instead.

mod conn;
mod interactions;
mod status_page;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Query, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::alert::Alert;
use crate::clock::Clock;
use crate::config::Config;
use crate::sentry::{self, Parsed};
use crate::state::AppState;
use crate::store::{self, Delivery, IngestOutcome};

use conn::Limits;

/// The response header Sentry shows in an integration's request log: every non-2xx answer
/// of the webhook endpoints carries a short reason in it (never a secret).
pub const HOOK_ERROR: &str = "sentry-hook-error";

/// Why a webhook was refused; each maps to one status code and an `outcome` of
/// `sluice_webhooks_total`, and the body and the `Sentry-Hook-Error` header name the reason
/// (never internals or secrets).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// 401: the signature (or legacy token) is missing or wrong, or the timestamp is outside
    /// `sentry.max_clock_skew`.
    #[error("{0}")]
    Unauthorized(String),
    /// 400: the body is not what its resource requires.
    #[error("{0}")]
    Malformed(String),
    /// 413: the body (or its declared `Content-Length`) is over `server.max_body_bytes`.
    #[error("the body is larger than server.max_body_bytes ({limit} bytes)")]
    TooLarge {
        /// `server.max_body_bytes`.
        limit: usize,
    },
    /// 408: the body stopped arriving for `server.body_timeout`.
    #[error("the request body stopped arriving (server.body_timeout)")]
    BodyTimeout,
    /// 503: no turn came free within `server.request_timeout`
    /// (`server.max_concurrent_requests` webhooks were being handled).
    #[error("too many webhooks at once: no turn within server.request_timeout ({})", crate::config::format_duration(*.0))]
    Overloaded(Duration),
    /// 503: no answer within `server.request_timeout`; the delivery may or may not be stored.
    #[error("no answer within server.request_timeout ({}); send it again", crate::config::format_duration(*.0))]
    TimedOut(Duration),
    /// 503: the store could not commit; Sentry (or the operator) should send it again.
    #[error("store unavailable: the delivery was not stored")]
    Unavailable(#[source] store::StoreError),
}

impl IngestError {
    /// The status code and the `outcome` label of `sluice_webhooks_total`.
    fn status_and_outcome(&self) -> (StatusCode, &'static str) {
        match self {
            IngestError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            IngestError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            IngestError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            IngestError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            IngestError::TimedOut(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let (status, outcome) = self.status_and_outcome();
        match &self {
            IngestError::Unavailable(err) => {
                tracing::error!(error = %err, "ingest: store failed; answered 503");
            }
            IngestError::Overloaded(_) | IngestError::TimedOut(_) => {
                tracing::warn!(reason = %self, "ingest: answered 503");
            }
            _ => {}
        }
        let mut response = error_response(status, &self.to_string());
        response.extensions_mut().insert(Outcome(outcome));
        response
    }
}

/// A JSON error answer `{"error": reason}` with the reason in `Sentry-Hook-Error` too.
fn error_response(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, axum::Json(json!({"error": reason}))).into_response();
    response
        .headers_mut()
        .insert(HOOK_ERROR, hook_error_value(reason));
    response
}

/// `reason` as a header value: printable ASCII only (anything else becomes `?`), at most
/// 200 characters.
fn hook_error_value(reason: &str) -> HeaderValue {
    let text: String = reason
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("refused"))
}

/// The `outcome` of `sluice_webhooks_total` a webhook handler gave its answer.
#[derive(Debug, Clone, Copy)]
struct Outcome(&'static str);

/// `server.max_body_bytes`, for the handlers' `413` message.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// What the webhook endpoints' guard needs: see [`webhook_guard`].
#[derive(Clone)]
struct Guard {
    state: AppState,
    max_body: usize,
    request_timeout: Duration,
    /// `server.max_concurrent_requests` turns.
    turns: Arc<Semaphore>,
}

/// The router with every endpoint; tests serve it on port 0. The webhook endpoints answer
/// `413` as soon as a declared `Content-Length` is over `server.max_body_bytes`, wait for one
/// of `server.max_concurrent_requests` turns, and answer within `server.request_timeout`
/// (`503` past it), a body that pauses `server.body_timeout` getting `408`.
pub fn app(state: AppState) -> Router {
    let server = state.live.load().config.server.clone();
    let guard = Guard {
        state: state.clone(),
        max_body: server.max_body_bytes,
        request_timeout: server.request_timeout,
        turns: Arc::new(Semaphore::new(server.max_concurrent_requests)),
    };
    let webhooks = Router::new()
        .route("/sentry/webhook", post(sentry_webhook))
        .route("/sentry/legacy", post(sentry_legacy))
        .layer(DefaultBodyLimit::max(server.max_body_bytes))
        .layer(Extension(BodyLimit(server.max_body_bytes)))
        .layer(RequestBodyTimeoutLayer::new(server.body_timeout))
        .layer(axum::middleware::from_fn_with_state(guard, webhook_guard));
    let status_page = status_page::routes(&state).unwrap_or_default();
    Router::new()
        .merge(webhooks)
        .merge(status_page)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/slack/interactions",
            post(interactions::slack_interactions),
        )
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The request id header: Sentry's `Request-ID` when it sends one, else a UUID Sluice makes;
/// the answer carries it back.
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The span every log line of a request is in: method, path and request id, so one
/// delivery's lines can be found together (and matched with Sentry's request log).
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// Serves on `listener` with the delivery worker running beside it until `shutdown`
/// completes; then stops accepting, finishes in-flight requests and the worker's round.
/// Connections are limited by `[server]` (see `server/conn.rs`).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_on_clock(listener, config, Clock::system(), shutdown).await
}

/// [`run`] on `clock` (a test's, on Tokio's paused time).
pub async fn run_on_clock(
    listener: TcpListener,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let url = config.storage.url.expose().to_string();
    let limits = Limits::from(&config.server);
    let open_files = conn::raise_open_files_limit(limits.max_connections);
    let store = store::open(&url, crate::storm::planner()).await?;
    let state = AppState::with_clock(store, config, clock);
    let stop = CancellationToken::new();
    let shared = store::is_postgres(&url).then_some(url);
    // The lock is let go only after the leader's workers have stopped, so that a follower
    // never starts delivering while this process still does.
    let release = CancellationToken::new();
    let leading = crate::leader::campaign(
        shared.clone(),
        state.leading.clone(),
        state.store.clone(),
        release.clone(),
    );
    let leader = tokio::spawn(crate::leader::run_while_leading(
        state.clone(),
        leading,
        shared,
        stop.clone(),
    ));
    let reloader = tokio::spawn(crate::reload::run(state.clone(), stop.clone()));
    tracing::info!(
        addr = %listener.local_addr()?,
        max_connections = limits.max_connections,
        open_files_limit = open_files,
        "sluice: listening"
    );
    let serve_stop = CancellationToken::new();
    let trigger = serve_stop.clone();
    let stopped = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = stopped.cancelled() => {}
        }
        trigger.cancel();
    });
    let counters = state.counters.clone();
    conn::serve(listener, app(state), limits, counters, serve_stop).await;
    stop.cancel();
    leader.await?;
    release.cancel();
    reloader.await?;
    Ok(())
}

/// Wraps both webhook endpoints: answers `413` at once for a declared `Content-Length` over
/// the limit (before any of the body is read), takes a turn and bounds the whole request by
/// `server.request_timeout`, sets `Sentry-Hook-Error` on every non-2xx answer (also those
/// of axum and the layers), counts the answer in `sluice_webhooks_total`, and reports a `413`
/// to `ops_channel`.
async fn webhook_guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let resource = if path == "/sentry/legacy" {
        "legacy".to_string()
    } else {
        header(req.headers(), "sentry-hook-resource")
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let declared =
        header(req.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    let response = match declared {
        Some(n) if n > guard.max_body as u64 => IngestError::TooLarge {
            limit: guard.max_body,
        }
        .into_response(),
        _ => guarded(&guard, started, req, next).await,
    };
    let response = with_hook_error(response);
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .map_or("other", |o| o.0);
    guard
        .state
        .counters
        .webhook(&resource, outcome, started.elapsed());
    if outcome == "too_large" {
        let (state, limit) = (guard.state.clone(), guard.max_body);
        tokio::spawn(async move {
            crate::ops::body_too_large(&state, &path, declared, limit).await;
        });
    }
    response
}

/// Runs the handler in one of the turns, all within `server.request_timeout` of `started`.
async fn guarded(guard: &Guard, started: Instant, req: Request, next: Next) -> Response {
    let deadline = started + guard.request_timeout;
    let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline, guard.turns.acquire()).await else {
        return IngestError::Overloaded(guard.request_timeout).into_response();
    };
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => IngestError::TimedOut(guard.request_timeout).into_response(),
    }
}

/// A non-2xx answer that did not come from a handler (axum's own `405`, a rejection) gets the
/// JSON error body and `Sentry-Hook-Error` every webhook refusal has.
fn with_hook_error(response: Response) -> Response {
    let status = response.status();
    if status.is_success() || response.headers().contains_key(HOOK_ERROR) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let reason = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed: Sentry webhooks are POSTed",
        _ => status.canonical_reason().unwrap_or("refused"),
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.insert(HOOK_ERROR, hook_error_value(reason));
    let body = serde_json::to_vec(&json!({"error": reason})).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

/// The body, or why it could not be read: over the limit (`413`), stalled past
/// `server.body_timeout` (`408`), or cut off (`400`).
fn read_body(body: Result<Bytes, BytesRejection>, limit: BodyLimit) -> Result<Bytes, IngestError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return IngestError::TooLarge { limit: limit.0 };
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
        while let Some(err) = cause {
            if err.is::<tower_http::timeout::TimeoutError>() {
                return IngestError::BodyTimeout;
            }
            cause = err.source();
        }
        IngestError::Malformed(format!(
            "could not read the body: {}",
            rejection.body_text()
        ))
    })
}

/// A handler's answer as a response that carries its outcome for [`webhook_guard`].
fn respond(answer: Answer) -> Response {
    match answer {
        Ok((mut response, outcome)) => {
            response.extensions_mut().insert(Outcome(outcome));
            response
        }
        Err(err) => err.into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let ready = async {
        state.store.ping().await?;
        state.store.fold_backlog().await
    };
    match ready.await {
        Ok(backlog) => {
            let role = if state.leading.load(std::sync::atomic::Ordering::SeqCst) {
                "leader"
            } else {
                "follower"
            };
            // How far behind the leader's fold is: reported, not a reason to take this
            // replica out of the load balancer (it still stores what Sentry sends).
            let fold = serde_json::json!({
                "pending": backlog.pending,
                "lag_seconds": crate::metrics::fold_lag_seconds(&backlog, state.clock.now_ms()),
            });
            axum::Json(serde_json::json!({ "status": "ready", "role": role, "fold": fold }))
                .into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "readyz: store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(&state).await;
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An answer and its outcome label for `sluice_webhooks_total`.
type Answer = Result<(Response, &'static str), IngestError>;

async fn sentry_webhook(
    State(state): State<AppState>,
    Extension(limit): Extension<BodyLimit>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = match read_body(body, limit) {
        Ok(body) => handle_webhook(&state, &headers, &body).await,
        Err(err) => Err(err),
    };
    respond(answer)
}

async fn handle_webhook(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Answer {
    let live = state.live.load_full();
    let config = &live.config;
    let signature = header(headers, "sentry-hook-signature")
        .ok_or_else(|| IngestError::Unauthorized("missing Sentry-Hook-Signature header".into()))?;
    if !sentry::verify_signature(body, signature, &config.sentry.client_secrets_exposed()) {
        return Err(IngestError::Unauthorized(
            "Sentry-Hook-Signature does not match the body under any configured client secret"
                .into(),
        ));
    }
    sentry::check_timestamp(
        header(headers, "sentry-hook-timestamp"),
        state.clock.now_ms() / 1000,
        config.sentry.max_clock_skew.as_secs(),
    )
    .map_err(|e| IngestError::Unauthorized(format!("Sentry-Hook-Timestamp: {e}")))?;
    let resource = header(headers, "sentry-hook-resource")
        .ok_or_else(|| IngestError::Malformed("missing Sentry-Hook-Resource header".into()))?;
    let body_sha256: [u8; 32] = Sha256::digest(body).into();
    if known(state, &body_sha256).await {
        return Ok(duplicate(resource));
    }
    let parsed = sentry::parse(resource, body, &config.sentry.projects)
        .map_err(|e| IngestError::Malformed(e.to_string()))?;
    let request_id = header(headers, "request-id").map(str::to_string);
    match parsed {
        Parsed::Alert(alert) => {
            commit(
                state,
                &live.router,
                body_sha256,
                resource,
                request_id,
                Some(*alert),
            )
            .await
        }
        Parsed::Ignored(reason) => {
            let outcome =
                store_delivery(state, body_sha256, resource, request_id, None, vec![]).await?;
            tracing::info!(resource, %reason, ?outcome, "ingest: ignored");
            let response =
                (StatusCode::ACCEPTED, axum::Json(json!({"ignored": reason}))).into_response();
            Ok((response, "ignored"))
        }
    }
}

/// Query of the legacy WebHooks plugin endpoint.
#[derive(Debug, Deserialize)]
struct LegacyQuery {
    token: Option<String>,
}

async fn sentry_legacy(
    State(state): State<AppState>,
    Extension(limit): Extension<BodyLimit>,
    headers: HeaderMap,
    Query(query): Query<LegacyQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = match read_body(body, limit) {
        Ok(body) => handle_legacy(&state, &headers, query, &body).await,
        Err(err) => Err(err),
    };
    respond(answer)
}

async fn handle_legacy(
    state: &AppState,
    headers: &HeaderMap,
    query: LegacyQuery,
    body: &Bytes,
) -> Answer {
    let live = state.live.load_full();
    let Some(expected) = &live.config.sentry.legacy_token else {
        return Err(IngestError::Unauthorized(
            "the legacy endpoint is disabled (no sentry.legacy_token configured)".into(),
        ));
    };
    let given = query.token.unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
        return Err(IngestError::Unauthorized("missing or wrong token".into()));
    }
    let body_sha256: [u8; 32] = Sha256::digest(body).into();
    if known(state, &body_sha256).await {
        return Ok(duplicate("legacy"));
    }
    let alert = sentry::parse_legacy(body, &live.config.sentry.projects)
        .map_err(|e| IngestError::Malformed(e.to_string()))?;
    let request_id = header(headers, "request-id").map(str::to_string);
    commit(
        state,
        &live.router,
        body_sha256,
        "legacy",
        request_id,
        Some(alert),
    )
    .await
}

/// Whether this body was committed before (a Sentry retry, a replay): such a delivery is
/// answered without parsing or routing it. A store that cannot say is asked again by the
/// commit, which decides.
async fn known(state: &AppState, body_sha256: &[u8; 32]) -> bool {
    state
        .store
        .is_known_delivery(body_sha256)
        .await
        .unwrap_or(false)
}

/// The answer to a delivery seen before.
fn duplicate(resource: &str) -> (Response, &'static str) {
    tracing::info!(resource, "ingest: duplicate delivery");
    let response = (StatusCode::OK, axum::Json(json!({"status": "duplicate"}))).into_response();
    (response, "duplicate")
}

/// Routes a parsed alert, commits it, and answers.
async fn commit(
    state: &AppState,
    router: &crate::routing::Router,
    body_sha256: [u8; 32],
    resource: &str,
    request_id: Option<String>,
    alert: Option<Alert>,
) -> Answer {
    // Issue notices and comments follow the issue's earlier messages instead, decided in the
    // store's transaction (`routing::follows_issue`).
    let targets = alert.as_ref().map(|a| router.route(a)).unwrap_or_default();
    let issue = alert.as_ref().map(|a| a.issue_key.clone());
    let channels: Vec<&str> = targets.iter().map(|t| t.channel.as_str()).collect();
    let channels = channels.join(",");
    let routes: Vec<&str> = targets
        .iter()
        .map(|t| t.route.as_deref().unwrap_or("(default_channel)"))
        .collect();
    let routes = routes.join(",");
    let outcome = store_delivery(state, body_sha256, resource, request_id, alert, targets).await?;
    match outcome {
        IngestOutcome::DuplicateDelivery => Ok(duplicate(resource)),
        IngestOutcome::Stored {
            counted,
            to_fold,
            queued,
            follow_up_due,
        } => {
            // The fold loop (this process's, if it leads; the leader's hears of it from the
            // store) folds it into counts, cooldowns and messages.
            if to_fold {
                state.fold.notify_one();
            }
            // Folded in the commit (SQLite): new rows, or a cooldown that now ends with a
            // follow-up, make the worker's next wake sooner than it planned.
            if queued > 0 || follow_up_due {
                state.wake.notify_one();
            }
            tracing::info!(resource, issue, routes, channels, counted, "ingest: stored");
            let response = (
                StatusCode::ACCEPTED,
                axum::Json(json!({"status": "stored", "counted": counted})),
            )
                .into_response();
            Ok((response, "stored"))
        }
    }
}

async fn store_delivery(
    state: &AppState,
    body_sha256: [u8; 32],
    resource: &str,
    request_id: Option<String>,
    alert: Option<Alert>,
    targets: Vec<crate::routing::Target>,
) -> Result<IngestOutcome, IngestError> {
    let delivery = Delivery {
        body_sha256,
        resource: resource.to_string(),
        request_id,
        received_at_ms: state.clock.now_ms(),
        alert,
        targets,
    };
    state
        .store
        .ingest(delivery)
        .await
        .map_err(IngestError::Unavailable)
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn state() -> AppState {
        let config = Config::parse(
            "default_channel = \"c\"\n[sentry]\nclient_secrets = [\"s\"]\n[channels.c]\nconsole = true\n",
            std::path::Path::new("routes.toml"),
            &|_| None,
        )
        .unwrap();
        AppState::new(
            store::open("sqlite::memory:", crate::storm::planner())
                .await
                .unwrap(),
            config,
        )
    }

    fn webhook(body: &'static [u8], request_id: Option<&str>) -> Request {
        let mut req = Request::post("/sentry/webhook")
            .header("content-type", "application/json")
            .header("sentry-hook-resource", "installation")
            .header("sentry-hook-signature", sentry::sign(body, b"s"));
        if let Some(id) = request_id {
            req = req.header("request-id", id);
        }
        req.body(Body::from(body)).unwrap()
    }

    /// Every log line of a request carries its request id: Sentry's `Request-ID`, or one
    /// Sluice made and answered with.
    #[tokio::test]
    async fn every_log_line_of_a_request_names_its_request_id() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = app(state().await);
        let body = br#"{"action":"created","data":{"installation":{"uuid":"x"}}}"#;
        let answer = app
            .clone()
            .oneshot(webhook(body, Some("sentry-req-42")))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        assert_eq!(answer.headers()["request-id"], "sentry-req-42");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let ignored: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ingest: ignored"))
            .collect();
        assert_eq!(ignored.len(), 1, "{text}");
        assert!(ignored[0].contains("request_id=sentry-req-42"), "{text}");

        // Without one, Sluice makes one up and answers with it.
        let answer = app.oneshot(webhook(b"{}", None)).await.unwrap();
        let made = answer.headers()["request-id"].to_str().unwrap().to_string();
        assert_eq!(made.len(), 36, "a UUID: {made}");
    }
}
