//! Sluice watching its own blind spots, and saying so in `ops_channel`: a dead letter (the
//! first per channel per hour), Sentry silence (no verified delivery for
//! `sentry.quiet_alert_after`, repeated at most daily, with a recovery notice), and a digest
//! that could not be built. Every notice is rate limited per subject, so a broken Slack
//! channel cannot make Sluice loop on its own reports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::slack::SlackMessage;
use crate::slack::message::escape;
use crate::state::{AppState, now_ms};
use crate::store::OutboxMessage;

/// Dead letters of one channel are reported at most this often.
pub const DEAD_LETTER_EVERY: Duration = Duration::from_secs(3600);
/// The silence notice repeats at most this often while the silence lasts.
pub const SILENCE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the silence watchdog looks.
const SILENCE_CHECK: Duration = Duration::from_secs(30);

/// When each subject was last reported.
#[derive(Debug, Default)]
pub struct Notices {
    last: Mutex<HashMap<String, Instant>>,
}

impl Notices {
    /// True (and remembered) if `subject` was not reported within `every`.
    fn due(&self, subject: &str, every: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get(subject) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                last.insert(subject.to_string(), now);
                true
            }
        }
    }

    /// Forgets `subject`, so the next report of it goes out at once.
    fn clear(&self, subject: &str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(subject);
    }
}

/// Queues `text` for `ops_channel` unless `subject` was reported within `every`. Best effort:
/// a store that cannot queue it is logged.
pub async fn notify(state: &AppState, subject: &str, every: Duration, text: &str) {
    if !state.notices.due(subject, every) {
        return;
    }
    let channel = state.live.load().config.ops_channel.clone();
    let message = OutboxMessage::Notice {
        message: SlackMessage {
            text: escape(text),
            blocks: vec![
                json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(text)}}),
            ],
        },
    };
    match state.store.enqueue(&channel, &message, now_ms()).await {
        Ok(()) => state.wake.notify_one(),
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

/// The Sentry silence watchdog: runs until `shutdown`.
pub async fn watch_silence(state: AppState, shutdown: CancellationToken) {
    let started = now_ms();
    let mut silent = false;
    loop {
        let quiet_after = state.live.load().config.sentry.quiet_alert_after;
        match state.store.last_delivery_at().await {
            Ok(last) => {
                // Before the first delivery ever, the silence counts from this start.
                let since = last.unwrap_or(started);
                let quiet_ms = now_ms() - since;
                if quiet_ms >= quiet_after.as_millis() as i64 {
                    silent = true;
                    let text = format!(
                        ":mute: No verified delivery from Sentry for {} (since {}). Sentry disables integrations whose endpoint keeps failing: check the integration's webhook URL and client secret.",
                        crate::config::format_duration(Duration::from_millis(quiet_ms as u64)),
                        jiff::Timestamp::from_millisecond(since)
                            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                            .unwrap_or_default()
                    );
                    notify(&state, "sentry-silence", SILENCE_EVERY, &text).await;
                } else if silent {
                    silent = false;
                    state.notices.clear("sentry-silence");
                    notify(
                        &state,
                        "sentry-recovered",
                        Duration::ZERO,
                        ":white_check_mark: Sentry deliveries have resumed.",
                    )
                    .await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "ops: cannot read the last delivery time"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SILENCE_CHECK.min(quiet_after)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_reported_once_per_interval() {
        let n = Notices::default();
        assert!(n.due("a", Duration::from_secs(3600)));
        assert!(!n.due("a", Duration::from_secs(3600)));
        assert!(n.due("b", Duration::from_secs(3600)));
        assert!(n.due("a", Duration::ZERO));
        n.clear("b");
        assert!(n.due("b", Duration::from_secs(3600)));
    }
}
