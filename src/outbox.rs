//! The delivery worker: drains the outbox to Slack, one loop per process.
//!
//! Each round first applies storm control: cooldowns that ended with occurrences folded get
//! their follow-up queued, and a channel whose backlog exceeds `max_backlog` has its waiting
//! messages rolled up into one. Then it takes the due rows (a bounded number per channel,
//! oldest first) and sends each channel's rows in order, channels side by side, each within
//! its GCRA rate limit (`rate`, `burst`): a channel out of slots is skipped until its next
//! slot instead of sleeping while other channels wait.
//!
//! Outcomes: accepted rows move to the sent log, permanent failures to the dead letters, and
//! retryable failures hold the whole channel until the retry time (`Retry-After` plus jitter,
//! or an exponential backoff with jitter) so that order is kept and Slack is not hammered. A
//! row is removed only after Slack accepted it, so delivery is at-least-once across crashes.
//!
//! Between rounds the worker sleeps until the next row or cooldown is due, a channel's next
//! rate slot, a new row is committed, or shutdown.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelTarget, Config};
use crate::slack::{
    Destination, Retry, SendOutcome, SlackClient, SlackMessage, render_alert, render_followup,
    render_rollup,
};
use crate::state::{AppState, now_ms};
use crate::store::{OutboxItem, OutboxMessage, StoreError};
use crate::storm::{self, ChannelLimits};

/// Rows of one channel taken per round.
const PER_CHANNEL_BATCH: u32 = 50;
/// Longest sleep between rounds when nothing is due (rows committed by another process are
/// noticed at least this often).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Pause after the store failed, before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Delay before retry number `attempt` (1-based) after a transient failure: `initial` doubled
/// per attempt, capped at `max`, then scaled by a jitter factor in `[0.5, 1.0]` ("equal
/// jitter") so that retries of many rows do not arrive in lockstep.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = initial.saturating_mul(2u32.saturating_pow(exp)).min(max);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Wait after a 429: Slack's `Retry-After` plus up to 10% (at most 1 s) of jitter, never less
/// than what Slack asked for.
pub fn after_retry_after(retry_after: Duration, jitter: f64) -> Duration {
    let extra = retry_after.mul_f64(0.1).min(Duration::from_secs(1));
    retry_after + extra.mul_f64(jitter.clamp(0.0, 1.0)) + Duration::from_millis(1)
}

/// Where a configured channel's messages go.
pub fn destination(config: &Config, channel: &str) -> Option<Destination> {
    let ch = config.channels.get(channel)?;
    Some(match &ch.target {
        ChannelTarget::Console => Destination::Console {
            name: channel.to_string(),
        },
        ChannelTarget::Webhook { url } => Destination::Webhook {
            url: url.expose().to_string(),
        },
        ChannelTarget::WebApi { channel: id } => Destination::WebApi {
            channel: id.clone(),
            token: config
                .slack
                .bot_token
                .as_ref()
                .map(|t| t.expose().to_string())
                .unwrap_or_default(),
            api_base: config.slack.api_base.clone(),
        },
    })
}

/// Runs the delivery worker until `shutdown`; a round in progress finishes first (each send
/// is bounded by `slack.timeout`).
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let client = SlackClient::new(state.live.load().config.slack.timeout);
    let limits = std::sync::Arc::new(Mutex::new(ChannelLimits::default()));
    saturate_recent_channels(&state, &limits).await;
    // Channels out of rate slots, and when their next slot comes.
    let mut limited: HashMap<String, Instant> = HashMap::new();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let now = Instant::now();
        limited.retain(|_, until| *until > now);
        let progressed = match round(&state, &client, &limits, &mut limited, &shutdown).await {
            Ok(n) => n > 0,
            Err(err) => {
                tracing::error!(error = %err, "outbox: store unavailable, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(STORE_RETRY) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        if progressed {
            continue;
        }
        let mut wait = IDLE_POLL;
        if let Ok(Some(due)) = state.store.next_due_at().await {
            let until_due = due - now_ms();
            // Rows already due wait only on a rate limit (handled below).
            if until_due > 0 {
                wait = wait.min(Duration::from_millis(until_due as u64));
            }
        }
        if let Some(slot) = limited.values().min() {
            wait = wait.min(slot.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("outbox: delivery worker stopped");
}

/// A channel that sent within its refill time before this start gets no fresh burst.
async fn saturate_recent_channels(state: &AppState, limits: &Mutex<ChannelLimits>) {
    let live = state.live.load_full();
    let now = now_ms();
    for channel in live.config.channels.keys() {
        let Ok(totals) = state.store.channel_totals(channel).await else {
            continue;
        };
        let refill = ChannelLimits::refill_time(&live.config, channel).as_millis() as i64;
        if totals.last_sent_ms.is_some_and(|t| now - t < refill) {
            limits.lock().await.saturate(&live.config, channel);
        }
    }
}

/// Follow-ups for ended cooldowns, then roll-ups of long backlogs.
async fn storm_control(state: &AppState, config: &Config) -> Result<(), StoreError> {
    let now = now_ms();
    let released = state.store.release_cooldowns(now).await?;
    if released > 0 {
        tracing::debug!(released, "outbox: cooldowns ended; follow-ups queued");
    }
    for (channel, depth) in state.store.outbox_depths().await? {
        let Some(ch) = config.channels.get(&channel) else {
            continue;
        };
        if depth <= u64::from(ch.max_backlog) {
            continue;
        }
        // Digests and notices are never folded into a roll-up.
        let items: Vec<OutboxItem> = state
            .store
            .channel_outbox(&channel)
            .await?
            .into_iter()
            .filter(|i| i.message.is_storm_traffic())
            .collect();
        if items.len() < 2 {
            continue;
        }
        let rollup = storm::roll_up(&items);
        let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        if state
            .store
            .replace_with_rollup(&channel, &ids, &rollup, now)
            .await?
        {
            tracing::info!(
                channel,
                messages = ids.len(),
                occurrences = rollup.occurrences,
                issues = rollup.issues.len(),
                "outbox: backlog rolled up"
            );
        }
    }
    Ok(())
}

/// One round: storm control, then sends what is due; returns the number of rows that
/// reached a final state (posted or dead-lettered).
async fn round(
    state: &AppState,
    client: &SlackClient,
    limits: &std::sync::Arc<Mutex<ChannelLimits>>,
    limited: &mut HashMap<String, Instant>,
    stop: &CancellationToken,
) -> Result<usize, StoreError> {
    let live = state.live.load_full();
    // A failure here (say, one unreadable row) must not stop the messages already queued.
    if let Err(err) = storm_control(state, &live.config).await {
        tracing::error!(error = %err, "outbox: storm control failed; delivering what is queued");
    }
    let due = state.store.due_outbox(now_ms(), PER_CHANNEL_BATCH).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut by_channel: BTreeMap<String, Vec<OutboxItem>> = BTreeMap::new();
    for item in due {
        if !limited.contains_key(&item.channel) {
            by_channel
                .entry(item.channel.clone())
                .or_default()
                .push(item);
        }
    }
    let mut tasks = JoinSet::new();
    for (channel, items) in by_channel {
        let (state, client, limits) = (state.clone(), client.clone(), limits.clone());
        let stop = stop.clone();
        tasks.spawn(async move {
            let result = deliver_channel(&state, &client, &limits, &channel, items, &stop).await;
            (channel, result)
        });
    }
    let mut done = 0;
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((channel, Ok(progress))) => {
                done += progress.done;
                if let Some(wait) = progress.rate_limited_for {
                    limited.insert(channel, Instant::now() + wait);
                }
            }
            Ok((_, Err(err))) => first_err = first_err.or(Some(err)),
            Err(join_err) => tracing::error!(error = %join_err, "outbox: channel task failed"),
        }
    }
    match first_err {
        Some(err) if done == 0 => Err(err),
        _ => Ok(done),
    }
}

/// What one channel's turn achieved.
struct Progress {
    /// Rows that reached a final state.
    done: usize,
    /// The channel ran out of rate slots; the next comes after this long.
    rate_limited_for: Option<Duration>,
}

/// Renders a row as it should look now (counts are read at send time).
async fn render(state: &AppState, item: &OutboxItem, now: i64) -> Result<SlackMessage, StoreError> {
    Ok(match &item.message {
        OutboxMessage::Alert { alert, target } => {
            let stats = state.store.issue_stats(&item.issue_key, now).await?;
            render_alert(alert, target, &stats)
        }
        OutboxMessage::FollowUp {
            alert,
            folded,
            since_ms,
            ..
        } => {
            let stats = state.store.issue_stats(&item.issue_key, now).await?;
            render_followup(alert, *folded, *since_ms, now, &stats)
        }
        OutboxMessage::RollUp(rollup) => render_rollup(rollup, now),
        OutboxMessage::Digest { message, .. } | OutboxMessage::Notice { message } => {
            message.clone()
        }
    })
}

/// Sends one channel's due rows in order, within its rate limit; stops at the first
/// retryable failure (the store then holds the channel until the retry time), and before the
/// next send once `stop` is cancelled: a replica that lost the lead must not go on sending
/// beside the new leader.
async fn deliver_channel(
    state: &AppState,
    client: &SlackClient,
    limits: &Mutex<ChannelLimits>,
    channel: &str,
    items: Vec<OutboxItem>,
    stop: &CancellationToken,
) -> Result<Progress, StoreError> {
    let mut progress = Progress {
        done: 0,
        rate_limited_for: None,
    };
    for item in items {
        if stop.is_cancelled() {
            break;
        }
        let live = state.live.load_full();
        let config = &live.config;
        let now = now_ms();
        let attempts = item.attempts + 1;
        let Some(dest) = destination(config, channel) else {
            let error = format!("channel `{channel}` is no longer configured");
            dead_letter(state, channel, &item, item.attempts, &error).await?;
            progress.done += 1;
            continue;
        };
        if let Err(wait) = limits.lock().await.try_acquire(config, channel) {
            progress.rate_limited_for = Some(wait);
            break;
        }
        let message = render(state, &item, now).await?;
        let thread_ts = match &item.message {
            OutboxMessage::FollowUp { .. } => {
                state.store.thread_ts(&item.issue_key, channel).await?
            }
            _ => None,
        };
        let outcome = client.send(&dest, &message, thread_ts.as_deref()).await;
        let now = now_ms();
        state.counters.slack_request(
            channel,
            match &outcome {
                SendOutcome::Posted { .. } => "ok",
                SendOutcome::Failed(Retry::After(_)) => "rate_limited",
                SendOutcome::Failed(Retry::Backoff(_)) => "transient_error",
                SendOutcome::Failed(Retry::Never(_)) => "permanent_error",
            },
        );
        match outcome {
            SendOutcome::Posted { ts } => {
                state.store.mark_posted(item.id, now, ts.as_deref()).await?;
                tracing::info!(
                    channel,
                    issue = %item.issue_key,
                    kind = item.message.kind(),
                    occurrences = item.occurrences,
                    attempts,
                    latency_ms = now - item.created_at_ms,
                    "outbox: posted"
                );
                progress.done += 1;
                if let (Some(root), OutboxMessage::FollowUp { alert, target, .. }) =
                    (&thread_ts, &item.message)
                {
                    update_original(
                        state, client, limits, &dest, channel, root, alert, target, &item,
                    )
                    .await?;
                }
            }
            SendOutcome::Failed(Retry::Never(error)) => {
                dead_letter(state, channel, &item, attempts, &error).await?;
                progress.done += 1;
            }
            SendOutcome::Failed(retry) => {
                let jitter = rand::rng().random::<f64>();
                let retry_after = match &retry {
                    Retry::After(after) => Some(*after),
                    _ => None,
                };
                let (wait, reason) = match retry {
                    Retry::After(after) => (
                        after_retry_after(after, jitter),
                        format!("rate limited (Retry-After {}s)", after.as_secs_f64()),
                    ),
                    Retry::Backoff(reason) => (
                        backoff(
                            attempts,
                            config.slack.retry_initial_backoff,
                            config.slack.retry_max_backoff,
                            jitter,
                        ),
                        reason,
                    ),
                    Retry::Never(_) => unreachable!("handled above"),
                };
                let age = Duration::from_millis((now - item.created_at_ms).max(0) as u64);
                if age + wait > config.slack.max_retry_age {
                    let error = format!(
                        "gave up after {attempts} attempts over {}s: {reason}",
                        age.as_secs()
                    );
                    dead_letter(state, channel, &item, attempts, &error).await?;
                    progress.done += 1;
                    continue;
                }
                state.counters.retry(channel, retry_after);
                tracing::warn!(
                    channel,
                    issue = %item.issue_key,
                    attempts,
                    retry_in_ms = wait.as_millis() as u64,
                    %reason,
                    "outbox: send failed, will retry"
                );
                state
                    .store
                    .reschedule(item.id, attempts, now + wait.as_millis() as i64, &reason)
                    .await?;
                break;
            }
        }
    }
    Ok(progress)
}

/// Moves a row to the dead letters with Slack's error string, logs it, and reports it to
/// `ops_channel` (rate limited).
async fn dead_letter(
    state: &AppState,
    channel: &str,
    item: &OutboxItem,
    attempts: u32,
    error: &str,
) -> Result<(), StoreError> {
    tracing::warn!(
        channel,
        issue = %item.issue_key,
        kind = item.message.kind(),
        attempts,
        error,
        "outbox: dead letter"
    );
    state
        .store
        .dead_letter(item.id, attempts, now_ms(), error)
        .await?;
    crate::ops::dead_letter(state, channel, item.message.kind(), error).await;
    Ok(())
}

/// After a threaded follow-up, updates the original message in place with the new counts.
/// Best effort: the follow-up itself already carries them, so a failed or rate-limited update
/// is logged and not retried.
#[allow(clippy::too_many_arguments)]
async fn update_original(
    state: &AppState,
    client: &SlackClient,
    limits: &Mutex<ChannelLimits>,
    dest: &Destination,
    channel: &str,
    root_ts: &str,
    alert: &crate::alert::Alert,
    target: &crate::routing::Target,
    item: &OutboxItem,
) -> Result<(), StoreError> {
    if limits
        .lock()
        .await
        .try_acquire(&state.live.load().config, channel)
        .is_err()
    {
        tracing::debug!(channel, issue = %item.issue_key, "outbox: no rate slot to update the original message");
        return Ok(());
    }
    let stats = state.store.issue_stats(&item.issue_key, now_ms()).await?;
    let updated = render_alert(alert, target, &stats);
    if let SendOutcome::Failed(why) = client.update(dest, root_ts, &updated).await {
        tracing::warn!(channel, issue = %item.issue_key, ?why, "outbox: could not update the original message");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(1), s(600), 1.0), s(1));
        assert_eq!(backoff(2, s(1), s(600), 1.0), s(2));
        assert_eq!(backoff(5, s(1), s(600), 1.0), s(16));
        assert_eq!(backoff(40, s(1), s(600), 1.0), s(600));
        assert_eq!(backoff(3, s(1), s(600), 0.0), s(2));
    }

    #[test]
    fn retry_after_is_never_shortened() {
        let d = after_retry_after(Duration::from_secs(30), 0.0);
        assert!(d >= Duration::from_secs(30));
        let d = after_retry_after(Duration::from_secs(30), 1.0);
        assert!(d <= Duration::from_secs(31) + Duration::from_millis(1));
    }

    proptest! {
        #[test]
        fn backoff_stays_within_bounds_and_grows(
            attempt in 1u32..100,
            initial_ms in 1u64..10_000,
            max_ms in 1u64..1_000_000,
            jitter in 0.0f64..=1.0,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = Duration::from_millis(max_ms);
            let d = backoff(attempt, initial, max, jitter);
            prop_assert!(d <= max);
            prop_assert!(d >= initial.min(max) / 2);
            // The ceiling of attempt n+1 is never below that of attempt n.
            prop_assert!(backoff(attempt + 1, initial, max, 1.0) >= backoff(attempt, initial, max, 1.0));
        }
    }
}
