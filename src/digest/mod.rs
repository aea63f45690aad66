//! The weekly digest: each channel's week in one Slack message, with the trend.
//!
//! - [`schedule`]: when digests are due (`digest.schedule` in `digest.timezone`, DST-safe).
//! - [`report`]: the numbers and the message, as pure functions of the store's rows.
//! - this module: building a channel's digest from the store, and the scheduler loop.
//!
//! **Exactly once.** A digest is identified by its channel and the scheduled instant it is
//! for. Queuing it records that run in the same transaction as its outbox row, so a period is
//! queued at most once, across restarts and replicas; the outbox then delivers it at least
//! once. (Slack offers no idempotency key: if the process dies between Slack accepting the
//! digest and the store recording that, it is posted again after the restart, the same window
//! every outbox message has.)
//!
//! **Catch-up.** The loop always looks at the latest scheduled instant at or before now: a
//! period missed while Sluice was down is queued at the next start (only the latest, and only
//! within a week of it), a period already queued is not.

pub mod report;
pub mod schedule;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::counts::{DAY_MS, day_of};
use crate::state::AppState;
use crate::store::{OutboxMessage, Store, StoreError};

pub use report::DigestReport;

/// How long after a failed build the scheduler tries again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Longest sleep of the scheduler loop (it re-reads the config at least this often).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// A period older than this is not caught up.
const CATCH_UP_WINDOW_MS: i64 = 7 * DAY_MS;

/// The channels that get a digest: those that receive a route with `digest` not false (the
/// default channel counts as such a route).
pub fn digest_channels(config: &Config) -> Vec<String> {
    let mut channels: BTreeSet<String> = config
        .routes
        .iter()
        .filter(|r| r.digest)
        .flat_map(|r| r.channels.iter().cloned())
        .collect();
    channels.insert(config.default_channel.clone());
    channels.into_iter().collect()
}

/// Builds `channel`'s digest for the period ending at `period_end_ms`.
pub async fn build(
    store: &dyn Store,
    config: &Config,
    channel: &str,
    period_end_ms: i64,
) -> Result<DigestReport, StoreError> {
    let end_day = day_of(period_end_ms);
    let days = store
        .channel_days(channel, end_day - 14, end_day - 1)
        .await?;
    let issues = store.channel_issues(channel, end_day - 14).await?;
    let activity = store
        .channel_activity(channel, (end_day - 7) * DAY_MS, end_day * DAY_MS)
        .await?;
    Ok(report::build(
        channel,
        period_end_ms,
        config.digest.top,
        &days,
        &issues,
        activity,
    ))
}

/// Queues the digest of every digest channel for the period ending at `period_end_ms`;
/// returns the channels newly queued (a period queued before is skipped).
pub async fn queue_period(
    state: &AppState,
    config: &Config,
    period_end_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let mut queued = Vec::new();
    for channel in digest_channels(config) {
        let report = build(&*state.store, config, &channel, period_end_ms).await?;
        let message = OutboxMessage::Digest {
            period_end_ms,
            message: report.render(),
        };
        if state
            .store
            .queue_digest(&channel, period_end_ms, &message, state.clock.now_ms())
            .await?
        {
            queued.push(channel);
        }
    }
    if !queued.is_empty() {
        state.wake.notify_one();
    }
    Ok(queued)
}

/// The scheduler: queues each period's digests when due, and a missed one at start. Runs
/// until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        let live = state.live.load_full();
        let config = &live.config;
        let (cron, tz) = match (config.digest.cron(), config.digest.time_zone()) {
            (Ok(c), Ok(t)) => (c, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "digest: schedule unusable; no digests");
                if sleep_or_stop(MAX_SLEEP, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let (now, woke) = (state.clock.now(), tokio::time::Instant::now());
        let mut wait = MAX_SLEEP;
        if let Some(latest) = schedule::latest_at_or_before(&cron, &tz, now) {
            let latest_ms = latest.as_millisecond();
            let within = now.as_millisecond() - latest_ms < CATCH_UP_WINDOW_MS;
            // A period before Sluice's first delivery was not missed: nothing ran then.
            let had_data =
                matches!(state.store.first_delivery_at().await, Ok(Some(t)) if t < latest_ms);
            if within && had_data {
                match queue_period(&state, config, latest_ms).await {
                    Ok(queued) => {
                        let late = now.as_millisecond() - latest_ms > 60_000;
                        for channel in &queued {
                            if late {
                                tracing::warn!(channel, period = %latest, "digest: a missed period is posted late");
                            } else {
                                tracing::info!(channel, period = %latest, "digest: queued");
                            }
                        }
                        if late && !queued.is_empty() {
                            let text = format!(
                                ":hourglass: The weekly digest due at {latest} was missed (Sluice was not running); it is posted now to {}.",
                                queued
                                    .iter()
                                    .map(|c| format!("#{c}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                            let subject = format!("digest-missed:{latest_ms}");
                            crate::ops::notify(&state, &subject, crate::ops::SILENCE_EVERY, &text)
                                .await;
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, period = %latest, "digest: failed; will retry");
                        let text = format!(
                            ":warning: The weekly digest for {latest} could not be built ({err}). Sluice retries every minute."
                        );
                        let subject = format!("digest:{latest_ms}");
                        crate::ops::notify(&state, &subject, crate::ops::SILENCE_EVERY, &text)
                            .await;
                        wait = RETRY_AFTER_FAILURE;
                    }
                }
            }
        }
        if let Some(next) = schedule::next_after(&cron, &tz, now) {
            let until =
                Duration::from_millis((next.as_millisecond() - now.as_millisecond()).max(0) as u64);
            wait = wait.min(until + Duration::from_millis(10));
        }
        // Measured from `now`, not from the end of this pass's store calls.
        if sleep_or_stop(wait.saturating_sub(woke.elapsed()), &shutdown).await {
            return;
        }
    }
}

/// Sleeps `d`; true if shutdown came first.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}
