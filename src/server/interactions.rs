//! `POST /slack/interactions`: Slack's button clicks and menu choices.
//!
//! The request path only verifies, parses and commits: Slack gives 3 seconds, and nothing a
//! click triggers (Sentry's API, `users.info`, replies) runs here. The committed click is
//! carried out by the leader's interactions worker (`crate::interactions`).
//!
//! Answers: `200` once the click is committed (also for a repeat of one, which changes
//! nothing, and for the `Open in Sentry` link, which needs nothing); `401` for a missing,
//! wrong or stale (over 5 minutes) `X-Slack-Signature`; `400` for a body that is not a
//! `block_actions` interaction; `404` when `slack.signing_secrets` is not set; `503` when the
//! store cannot commit (Slack shows the clicker an error, and nothing was done).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::slack::buttons::{Decoded, decode};
use crate::slack::interaction::{self, Click};
use crate::slack::signing;
use crate::state::AppState;
use crate::store::{ClickRecorded, NewClick};

/// The handler of `POST /slack/interactions`.
pub(super) async fn slack_interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let live = state.live.load();
    let secrets: Vec<&str> = live
        .config
        .slack
        .signing_secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    if secrets.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "Slack interactivity is not enabled: set slack.signing_secrets\n",
        )
            .into_response();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let now_unix = state.clock.now_ms().div_euclid(1000);
    let verified = signing::verify(
        &secrets,
        header("x-slack-request-timestamp"),
        &body,
        header("x-slack-signature"),
        now_unix,
    );
    if let Err(err) = verified {
        tracing::warn!(reason = err.label(), "slack: interaction refused: {err}");
        state.counters.slack_interaction("unknown", "unauthorized");
        return (StatusCode::UNAUTHORIZED, format!("{err}\n")).into_response();
    }
    let click = match interaction::parse(&body) {
        Ok(click) => click,
        Err(err) => {
            tracing::warn!("slack: {err}");
            state.counters.slack_interaction("unknown", "malformed");
            return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response();
        }
    };
    let label = match decode(&click.action_id, click.value.as_deref()) {
        Decoded::Action(action) => action.label(),
        // Slack opened the link itself.
        Decoded::Open => return StatusCode::OK.into_response(),
        Decoded::Unknown => "unknown",
    };
    record(&state, click, label).await
}

/// Commits the click and answers.
async fn record(state: &AppState, click: Click, label: &'static str) -> Response {
    let new = NewClick {
        trigger_id: click.trigger_id.clone(),
        pending_key: pending_key(&click),
        payload: serde_json::to_string(&click).expect("a click serializes"),
    };
    match state.store.record_click(&new, state.clock.now_ms()).await {
        Ok(ClickRecorded::New) => {
            tracing::info!(action = label, user = %click.user_id, "slack: click committed");
            state.counters.slack_interaction(label, "accepted");
            state.clicks.notify_one();
            StatusCode::OK.into_response()
        }
        Ok(ClickRecorded::Repeat) => {
            tracing::info!(action = label, user = %click.user_id, "slack: repeated click; acted once");
            state.counters.slack_interaction(label, "repeat");
            StatusCode::OK.into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "slack: could not commit a click");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the click could not be stored: {err}\n"),
            )
                .into_response()
        }
    }
}

/// The same person asking the same of the same message: a second click while the first is
/// pending is a repeat.
fn pending_key(click: &Click) -> String {
    [
        click.user_id.as_str(),
        click.channel_id.as_deref().unwrap_or_default(),
        click.message_ts.as_deref().unwrap_or_default(),
        click.block_id.as_str(),
        click.action_id.as_str(),
        click.value.as_deref().unwrap_or_default(),
    ]
    .join("\u{1f}")
}
