//! HTTP wiring: the webhook endpoints, health, readiness and metrics, and the server's
//! lifecycle.
//!
//! The webhook handlers stay thin: read the bytes, verify, parse, route, make one store call,
//! answer. Slack is never called on the request path; a committed delivery wakes the delivery
//! worker instead.

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alert::Alert;
use crate::config::Config;
use crate::sentry::{self, Parsed};
use crate::state::{AppState, now_ms};
use crate::store::{self, Delivery, IngestOutcome};

/// Why a webhook was refused; each maps to one status code, and the body names the reason
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
    /// 503: the store could not commit; Sentry (or the operator) should send it again.
    #[error("store unavailable: the delivery was not stored")]
    Unavailable(#[source] store::StoreError),
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = match &self {
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngestError::Unavailable(err) => {
                tracing::error!(error = %err, "ingest: store failed; answered 503");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, axum::Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// The router with every endpoint; tests serve it on port 0.
pub fn app(state: AppState) -> Router {
    let max_body = state.live.load().config.server.max_body_bytes;
    Router::new()
        .route("/sentry/webhook", post(sentry_webhook))
        .route("/sentry/legacy", post(sentry_legacy))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves on `listener` with the delivery worker running beside it until `shutdown`
/// completes; then stops accepting, finishes in-flight requests and the worker's round.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let url = config.storage.url.expose().to_string();
    let store = store::open(&url).await?;
    let state = AppState::new(store, config);
    let stop = CancellationToken::new();
    let shared = store::is_postgres(&url).then_some(url);
    // The lock is let go only after the leader's workers have stopped, so that a follower
    // never starts delivering while this process still does.
    let release = CancellationToken::new();
    let leading = crate::leader::campaign(shared.clone(), state.leading.clone(), release.clone());
    let leader = tokio::spawn(crate::leader::run_while_leading(
        state.clone(),
        leading,
        shared,
        stop.clone(),
    ));
    let reloader = tokio::spawn(crate::reload::run(state.clone(), stop.clone()));
    tracing::info!(addr = %listener.local_addr()?, "sluice: listening");
    let serve_stop = stop.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = serve_stop.cancelled() => {}
            }
        })
        .await?;
    stop.cancel();
    leader.await?;
    release.cancel();
    reloader.await?;
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => {
            let role = if state.leading.load(std::sync::atomic::Ordering::SeqCst) {
                "leader"
            } else {
                "follower"
            };
            axum::Json(serde_json::json!({ "status": "ready", "role": role })).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "readyz: store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match crate::metrics::render(&state).await {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "metrics: store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An answer and its outcome label for `sluice_webhooks_total`.
type Answer = Result<(Response, &'static str), IngestError>;

/// Records the answer in the metrics and returns it.
fn record(
    state: &AppState,
    resource: &str,
    started: Instant,
    answer: Answer,
) -> Result<Response, IngestError> {
    let outcome = match &answer {
        Ok((_, outcome)) => outcome,
        Err(IngestError::Unauthorized(_)) => "unauthorized",
        Err(IngestError::Malformed(_)) => "malformed",
        Err(IngestError::Unavailable(_)) => "unavailable",
    };
    state.counters.webhook(resource, outcome, started.elapsed());
    answer.map(|(response, _)| response)
}

async fn sentry_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, IngestError> {
    let started = Instant::now();
    let resource = header(&headers, "sentry-hook-resource")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let answer = handle_webhook(&state, &headers, &body).await;
    record(&state, &resource, started, answer)
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
        now_ms() / 1000,
        config.sentry.max_clock_skew.as_secs(),
    )
    .map_err(|e| IngestError::Unauthorized(format!("Sentry-Hook-Timestamp: {e}")))?;
    let resource = header(headers, "sentry-hook-resource")
        .ok_or_else(|| IngestError::Malformed("missing Sentry-Hook-Resource header".into()))?;
    let parsed = sentry::parse(resource, body, &config.sentry.projects)
        .map_err(|e| IngestError::Malformed(e.to_string()))?;
    let request_id = header(headers, "request-id").map(str::to_string);
    match parsed {
        Parsed::Alert(alert) => {
            commit(
                state,
                &live.router,
                body,
                resource,
                request_id,
                Some(*alert),
            )
            .await
        }
        Parsed::Ignored(reason) => {
            let outcome = store_delivery(state, body, resource, request_id, None, vec![]).await?;
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
    headers: HeaderMap,
    Query(query): Query<LegacyQuery>,
    body: Bytes,
) -> Result<Response, IngestError> {
    let started = Instant::now();
    let answer = handle_legacy(&state, &headers, query, &body).await;
    record(&state, "legacy", started, answer)
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
    let alert = sentry::parse_legacy(body, &live.config.sentry.projects)
        .map_err(|e| IngestError::Malformed(e.to_string()))?;
    let request_id = header(headers, "request-id").map(str::to_string);
    commit(state, &live.router, body, "legacy", request_id, Some(alert)).await
}

/// Routes a parsed alert, commits it, and answers.
async fn commit(
    state: &AppState,
    router: &crate::routing::Router,
    body: &[u8],
    resource: &str,
    request_id: Option<String>,
    alert: Option<Alert>,
) -> Answer {
    let targets = alert.as_ref().map(|a| router.route(a)).unwrap_or_default();
    let issue = alert.as_ref().map(|a| a.issue_key.clone());
    let channels: Vec<&str> = targets.iter().map(|t| t.channel.as_str()).collect();
    let channels = channels.join(",");
    let routes: Vec<&str> = targets
        .iter()
        .map(|t| t.route.as_deref().unwrap_or("(default_channel)"))
        .collect();
    let routes = routes.join(",");
    let rid = request_id.clone();
    let outcome = store_delivery(state, body, resource, request_id, alert, targets).await?;
    match outcome {
        IngestOutcome::DuplicateDelivery => {
            tracing::info!(
                request_id = rid,
                resource,
                issue,
                "ingest: duplicate delivery"
            );
            let response =
                (StatusCode::OK, axum::Json(json!({"status": "duplicate"}))).into_response();
            Ok((response, "duplicate"))
        }
        IngestOutcome::Stored { counted, queued } => {
            if queued > 0 {
                state.wake.notify_one();
            }
            tracing::info!(
                request_id = rid,
                resource,
                issue,
                routes,
                channels,
                counted,
                queued,
                "ingest: stored"
            );
            let response = (
                StatusCode::ACCEPTED,
                axum::Json(json!({"status": "stored", "counted": counted, "queued": queued})),
            )
                .into_response();
            Ok((response, "stored"))
        }
    }
}

async fn store_delivery(
    state: &AppState,
    body: &[u8],
    resource: &str,
    request_id: Option<String>,
    alert: Option<Alert>,
    targets: Vec<crate::routing::Target>,
) -> Result<IngestOutcome, IngestError> {
    let delivery = Delivery {
        body_sha256: Sha256::digest(body).into(),
        resource: resource.to_string(),
        request_id,
        received_at_ms: now_ms(),
        alert,
        targets,
    };
    state
        .store
        .ingest(&delivery)
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
