//! Sluice watching its own blind spots, and saying so in `ops_channel`: a dead letter (the
//! first per channel per hour), Sentry silence (no verified delivery for
//! `sentry.quiet_alert_after`, repeated at most daily, with a recovery notice), a webhook
//! refused as too large (the first per hour), and a digest that could not be built. Every notice is rate limited per subject, so a broken Slack
//! channel cannot make Sluice loop on its own reports. When each subject was last reported
//! lives in the store, committed with the notice itself, so the limits hold across restarts
//! and a new leader neither repeats a notice nor loses a recovery.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::slack::SlackMessage;
use crate::slack::message::escape;
use crate::state::AppState;
use crate::store::OutboxMessage;

/// Dead letters of one channel are reported at most this often.
pub const DEAD_LETTER_EVERY: Duration = Duration::from_secs(3600);
/// The silence notice repeats at most this often while the silence lasts.
pub const SILENCE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the silence watchdog looks.
const SILENCE_CHECK: Duration = Duration::from_secs(30);
/// The subject of the Sentry silence notice; recorded while a silence is reported and not yet
/// followed by a recovery notice.
const SILENCE: &str = "sentry-silence";

/// A notice for `ops_channel` saying `text`.
fn notice(text: &str) -> OutboxMessage {
    OutboxMessage::Notice {
        message: SlackMessage {
            text: escape(text),
            blocks: vec![
                json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(text)}}),
            ],
        },
    }
}

/// Queues `text` for `ops_channel` unless `subject` was reported within `every`. Best effort:
/// a store that cannot queue it is logged.
pub async fn notify(state: &AppState, subject: &str, every: Duration, text: &str) {
    let channel = state.live.load().config.ops_channel.clone();
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    match state
        .store
        .queue_notice(
            subject,
            every_ms,
            &channel,
            &notice(text),
            state.clock.now_ms(),
        )
        .await
    {
        Ok(true) => state.wake.notify_one(),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, subject, "ops: could not queue a notice"),
    }
}

/// Reports a dead letter of `channel` (the first per channel per hour). Dead letters of
/// notices are not reported, so a broken `ops_channel` cannot loop.
pub async fn dead_letter(state: &AppState, channel: &str, kind: &str, error: &str) {
    if kind == "notice" {
        return;
    }
    let text = format!(
        ":warning: Slack refused a message for #{channel} for good: `{error}`. It is kept as a dead letter; further dead letters of this channel within the hour are not reported here."
    );
    notify(
        state,
        &format!("dead-letter:{channel}"),
        DEAD_LETTER_EVERY,
        &text,
    )
    .await;
}

/// Webhooks refused as too large are reported at most this often.
pub const TOO_LARGE_EVERY: Duration = Duration::from_secs(3600);

/// Reports a webhook refused with `413` (the first per hour): Sentry does not retry it and
/// counts the refusal toward disabling the integration, so the limit should be raised.
/// `bytes` is the declared or received size, when known.
pub async fn body_too_large(state: &AppState, path: &str, bytes: Option<u64>, limit: usize) {
    let size = bytes.map_or_else(
        || "more than the limit".to_string(),
        |b| format!("{b} bytes"),
    );
    let text = format!(
        ":warning: Sluice refused a webhook to `{path}` of {size}: larger than `server.max_body_bytes` ({limit} bytes), answered `413`. Sentry does not send it again and counts refusals toward disabling the integration: raise `server.max_body_bytes` (and any proxy's body limit). Further refusals within the hour are counted in `sluice_webhooks_total{{outcome=\"too_large\"}}`, not reported here."
    );
    notify(state, "body-too-large", TOO_LARGE_EVERY, &text).await;
}

/// The Sentry silence watchdog: runs until `shutdown`.
pub async fn watch_silence(state: AppState, shutdown: CancellationToken) {
    let started = state.clock.now_ms();
    loop {
        let looked = tokio::time::Instant::now();
        let quiet_after = state.live.load().config.sentry.quiet_alert_after;
        match state.store.last_delivery_at().await {
            Ok(last) => {
                // Before the first delivery ever, the silence counts from this start.
                let since = last.unwrap_or(started);
                let quiet_ms = state.clock.now_ms() - since;
                if quiet_ms >= quiet_after.as_millis() as i64 {
                    let text = silence_text(quiet_ms, since);
                    notify(&state, SILENCE, SILENCE_EVERY, &text).await;
                } else {
                    report_recovery(&state).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "ops: cannot read the last delivery time"),
        }
        tokio::select! {
            // A look every period, however long the store took to answer this one.
            _ = tokio::time::sleep_until(looked + SILENCE_CHECK.min(quiet_after)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The silence notice: no verified delivery for `quiet_ms`, since `since_ms` (Unix ms).
fn silence_text(quiet_ms: i64, since_ms: i64) -> String {
    format!(
        ":mute: No verified delivery from Sentry for {} (since {}). Sentry disables integrations whose endpoint keeps failing: check the integration's webhook URL and client secret.",
        crate::config::format_duration(Duration::from_millis(quiet_ms.max(0) as u64)),
        jiff::Timestamp::from_millisecond(since_ms)
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default()
    )
}

/// Deliveries arrive: if a silence was reported (by this process or another leader before
/// it), says that they resumed, once.
async fn report_recovery(state: &AppState) {
    let channel = state.live.load().config.ops_channel.clone();
    let text = ":white_check_mark: Sentry deliveries have resumed.";
    match state
        .store
        .resolve_notice(SILENCE, &channel, &notice(text), state.clock.now_ms())
        .await
    {
        Ok(true) => state.wake.notify_one(),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "ops: could not queue the recovery notice"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::slack::message::tests::assert_within_slack_limits;

    /// 2025-11-22 14:02 UTC.
    const T: i64 = 1_763_820_120_000;

    async fn state() -> AppState {
        let config = Config::parse(
            "default_channel = \"errors\"\nops_channel = \"ops\"\n\
             [channels.errors]\nconsole = true\n[channels.ops]\nconsole = true\n",
            std::path::Path::new("routes.toml"),
            &|_| None,
        )
        .unwrap();
        let store = crate::store::open("sqlite::memory:", crate::storm::planner())
            .await
            .unwrap();
        AppState::with_clock(store, config, Clock::starting_at(T))
    }

    /// The notices waiting for `ops_channel`, oldest first: what Slack will receive.
    async fn queued(state: &AppState) -> Vec<SlackMessage> {
        let items = state.store.channel_outbox("ops").await.unwrap();
        items
            .into_iter()
            .map(|item| match item.message {
                OutboxMessage::Notice { message } => message,
                other => panic!("not a notice: {other:?}"),
            })
            .collect()
    }

    /// Every notice Sluice sends about itself, as Slack receives it in `ops_channel`.
    #[tokio::test]
    async fn the_notices_are_pinned() {
        let state = state().await;
        dead_letter(&state, "checkout-prod", "alert", "channel_not_found").await;
        body_too_large(&state, "/sentry/webhook", Some(2_500_000), 1_048_576).await;
        let quiet = 24 * 3_600_000 + 120_000;
        let text = silence_text(quiet, T - quiet);
        notify(&state, SILENCE, SILENCE_EVERY, &text).await;
        report_recovery(&state).await;
        let names = [
            "notice_dead_letter",
            "notice_body_too_large",
            "notice_sentry_silence",
            "notice_sentry_resumed",
        ];
        let notices = queued(&state).await;
        assert_eq!(notices.len(), names.len(), "{notices:?}");
        for (name, msg) in names.into_iter().zip(&notices) {
            assert_within_slack_limits(msg);
            insta::assert_json_snapshot!(name, msg);
        }
    }

    /// What a notice quotes (a Slack error, a channel name) is escaped: it cannot ping or link.
    #[tokio::test]
    async fn a_notice_quotes_as_text() {
        let state = state().await;
        dead_letter(
            &state,
            "<!here>",
            "alert",
            "<!channel> <https://evil.example|x>",
        )
        .await;
        let all = serde_json::to_string(&queued(&state).await).unwrap();
        for forbidden in ["<!here>", "<!channel>", "<https://evil"] {
            assert!(!all.contains(forbidden), "{forbidden} in {all}");
        }
        assert!(all.contains("#&lt;!here&gt;"), "{all}");
    }
}
