//! The delivery worker: drains the outbox to Slack, one loop per process.
//!
//! Each round first applies storm control: cooldowns that ended with occurrences folded get
//! their follow-up queued, and a channel whose backlog exceeds `max_backlog` has its waiting
//! messages rolled up into one (never of a channel whose send is in flight). Then it takes the
//! due rows (a bounded number per channel, oldest first) and starts one task per channel that
//! is not already being sent, which sends that channel's rows in order within its GCRA rate
//! limit (`rate`, `burst`): a channel out of slots is skipped until its next slot instead of
//! sleeping while other channels wait. Channels never wait for each other: the next round
//! starts as soon as any channel's task ends, so a Slack endpoint that hangs for the whole
//! `slack.timeout` delays only its own channel.
//!
//! Outcomes: accepted rows move to the sent log, permanent failures to the dead letters, and
//! retryable failures hold the whole channel until the retry time (`Retry-After` plus jitter,
//! or an exponential backoff with jitter) so that order is kept and Slack is not hammered. A
//! row is removed only after Slack accepted it, so delivery is at-least-once across crashes.
//!
//! Between rounds the worker sleeps until a channel's task ends, the next row or cooldown is
//! due, a channel's next rate slot, a new row is committed, or shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelTarget, Config};
use crate::slack::{
    Destination, Refusal, Retry, SendOutcome, SlackClient, render_followup, render_rollup,
};
use crate::state::AppState;
use crate::store::{OutboxItem, OutboxMessage, StoreError};
use crate::storm::{self, ChannelLimits};

mod issue;

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

/// Channel tasks in flight: each sends one channel's due rows, and returns what it achieved.
type InFlight = JoinSet<(String, Result<Progress, StoreError>)>;

/// Runs the delivery worker until `shutdown`; sends in flight finish first (each is bounded
/// by `slack.timeout`).
///
/// Each channel is sent by a task of its own, and a new round starts whenever a channel's
/// task ends, a row is committed or a timer fires, without waiting for the other channels: a
/// channel whose Slack endpoint hangs delays only itself.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let client = SlackClient::from_config(&state.live.load().config.slack);
    let limits = std::sync::Arc::new(Mutex::new(ChannelLimits::default()));
    saturate_recent_channels(&state, &limits).await;
    // Channels held back (out of rate slots, or their last turn failed), and until when.
    let mut limited: HashMap<String, Instant> = HashMap::new();
    let mut in_flight = InFlight::new();
    let mut busy: HashSet<String> = HashSet::new();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // The round's one reading of the clock: the next wake is measured from it, so time
        // that passes during the round's store calls cannot leave a row that fell due
        // meanwhile waiting for the idle poll.
        let (now, now_ms) = (Instant::now(), state.clock.now_ms());
        limited.retain(|_, until| *until > now);
        if let Err(err) = round(
            &state,
            &client,
            &limits,
            &limited,
            &mut busy,
            &mut in_flight,
            &shutdown,
        )
        .await
        {
            tracing::error!(error = %err, "outbox: store unavailable, retrying");
            tokio::select! {
                _ = tokio::time::sleep(STORE_RETRY) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        state
            .counters
            .delivery_rounds
            .fetch_add(1, Ordering::Relaxed);
        let in_flight_now = in_flight.len() as u64;
        state
            .counters
            .delivery_in_flight
            .store(in_flight_now, Ordering::Relaxed);
        let wait = idle_wait(&state, &limited, now, now_ms).await;
        tokio::select! {
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                channel_done(joined, &mut busy, &mut limited);
                let in_flight_now = in_flight.len() as u64;
                state.counters.delivery_in_flight.store(in_flight_now, Ordering::Relaxed);
            }
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep_until(now + wait.max(Duration::from_millis(1))) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Each channel task stops before its next send once `shutdown` is cancelled.
    while let Some(joined) = in_flight.join_next().await {
        channel_done(joined, &mut busy, &mut limited);
    }
    tracing::info!("outbox: delivery worker stopped");
}

/// How long after the round that began at `now` (`now_ms` on the wall clock) to wait for
/// something to do: until the next row or cooldown is due, or a held channel's time comes,
/// at most [`IDLE_POLL`].
async fn idle_wait(
    state: &AppState,
    limited: &HashMap<String, Instant>,
    now: Instant,
    now_ms: i64,
) -> Duration {
    let mut wait = IDLE_POLL;
    if let Ok(Some(due)) = state.store.next_due_at().await {
        let until_due = due - now_ms;
        // Rows already due wait only on a rate limit or a busy channel (handled elsewhere).
        if until_due > 0 {
            wait = wait.min(Duration::from_millis(until_due as u64));
        }
    }
    if let Some(slot) = limited.values().min() {
        wait = wait.min(slot.saturating_duration_since(now));
    }
    wait
}

/// A channel task ended: the channel may be sent again, after its next rate slot, or after
/// [`STORE_RETRY`] when its turn failed on the store.
fn channel_done(
    joined: Result<(String, Result<Progress, StoreError>), tokio::task::JoinError>,
    busy: &mut HashSet<String>,
    limited: &mut HashMap<String, Instant>,
) {
    match joined {
        Ok((channel, Ok(progress))) => {
            if let Some(wait) = progress.rate_limited_for {
                limited.insert(channel.clone(), Instant::now() + wait);
            }
            busy.remove(&channel);
        }
        Ok((channel, Err(err))) => {
            tracing::error!(channel, error = %err, "outbox: store failed during a channel's turn");
            limited.insert(channel.clone(), Instant::now() + STORE_RETRY);
            busy.remove(&channel);
        }
        Err(join_err) => {
            // A panicked task: its channel stays busy (not sent again by this worker) rather
            // than risk sending its rows twice; the panic is a bug to report.
            tracing::error!(error = %join_err, "outbox: channel task failed");
        }
    }
}

/// A channel that sent within its refill time before this start gets no fresh burst.
async fn saturate_recent_channels(state: &AppState, limits: &Mutex<ChannelLimits>) {
    let live = state.live.load_full();
    let now = state.clock.now_ms();
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

/// Follow-ups for ended cooldowns, then roll-ups of long backlogs (not of a channel being
/// sent: a row in flight must not also be rolled up).
async fn storm_control(
    state: &AppState,
    config: &Config,
    busy: &HashSet<String>,
) -> Result<(), StoreError> {
    let now = state.clock.now_ms();
    let released = state.store.release_cooldowns(now).await?;
    if released > 0 {
        tracing::debug!(released, "outbox: cooldowns ended; follow-ups queued");
    }
    for (channel, depth) in state.store.outbox_depths().await? {
        let Some(ch) = config.channels.get(&channel) else {
            continue;
        };
        if !storm::over_backlog(depth, ch.max_backlog) || busy.contains(&channel) {
            continue;
        }
        // Digests and notices are never folded into a roll-up.
        let waiting = state.store.channel_outbox(&channel).await?;
        let Some(plan) = storm::plan_roll_up(&waiting) else {
            continue;
        };
        if state
            .store
            .replace_with_rollup(&channel, &plan.replaces, &plan.rollup, now)
            .await?
        {
            tracing::info!(
                channel,
                messages = plan.replaces.len(),
                occurrences = plan.rollup.occurrences,
                issues = plan.rollup.issues.len(),
                "outbox: backlog rolled up"
            );
        }
    }
    Ok(())
}

/// One round: storm control, then a task for each channel with rows due that is neither
/// being sent nor held back.
async fn round(
    state: &AppState,
    client: &SlackClient,
    limits: &std::sync::Arc<Mutex<ChannelLimits>>,
    limited: &HashMap<String, Instant>,
    busy: &mut HashSet<String>,
    in_flight: &mut InFlight,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let live = state.live.load_full();
    // A failure here (say, one unreadable row) must not stop the messages already queued.
    if let Err(err) = storm_control(state, &live.config, busy).await {
        tracing::error!(error = %err, "outbox: storm control failed; delivering what is queued");
    }
    let due = state
        .store
        .due_outbox(state.clock.now_ms(), PER_CHANNEL_BATCH)
        .await?;
    let mut by_channel: BTreeMap<String, Vec<OutboxItem>> = BTreeMap::new();
    for item in due {
        if !limited.contains_key(&item.channel) && !busy.contains(&item.channel) {
            by_channel
                .entry(item.channel.clone())
                .or_default()
                .push(item);
        }
    }
    for (channel, items) in by_channel {
        let (state, client, limits) = (state.clone(), client.clone(), limits.clone());
        let stop = stop.clone();
        busy.insert(channel.clone());
        in_flight.spawn(async move {
            let result = deliver_channel(&state, &client, &limits, &channel, items, &stop).await;
            (channel, result)
        });
    }
    Ok(())
}

/// What one channel's turn achieved.
struct Progress {
    /// Rows that reached a final state.
    done: usize,
    /// The channel ran out of rate slots; the next comes after this long.
    rate_limited_for: Option<Duration>,
}

/// Sends a row that is not about one issue's message (a follow-up, roll-up, digest or
/// notice) as it was queued, with counts read now; a follow-up goes into the issue's thread
/// where it has one.
async fn send_as_queued(
    state: &AppState,
    client: &SlackClient,
    dest: &Destination,
    channel: &str,
    item: &OutboxItem,
    now: i64,
) -> Result<issue::Sent, StoreError> {
    let (message, thread) = match &item.message {
        OutboxMessage::FollowUp {
            alert,
            folded,
            since_ms,
            reason,
            ..
        } => {
            let stats = state.store.issue_stats(&item.issue_key, now).await?;
            let thread = state.store.thread_ts(&item.issue_key, channel).await?;
            let message = render_followup(alert, *folded, *since_ms, now, &stats, *reason);
            (message, thread)
        }
        OutboxMessage::RollUp(rollup) => (render_rollup(rollup, now), None),
        OutboxMessage::Digest { message, .. } | OutboxMessage::Notice { message } => {
            (message.clone(), None)
        }
        OutboxMessage::Alert { .. } | OutboxMessage::Refresh => {
            unreachable!("issue::send sends every row about an issue's message")
        }
    };
    // A thread reply goes to the channel id Slack answered for the original message.
    let dest = dest.in_channel(thread.as_ref().and_then(|t| t.channel_id.as_deref()));
    let thread_ts = thread.map(|t| t.ts);
    let outcome = client.send(&dest, &message, thread_ts.as_deref()).await;
    Ok(issue::Sent {
        outcome,
        thread_ts,
        is_issue_message: false,
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
        let now = state.clock.now_ms();
        let attempts = item.attempts + 1;
        let Some(dest) = destination(config, channel) else {
            let why = Refusal::new(
                "channel_not_configured",
                format!("channel `{channel}` is no longer configured"),
            );
            dead_letter(state, channel, &item, item.attempts, &why).await?;
            progress.done += 1;
            continue;
        };
        if let Err(wait) = limits.lock().await.try_acquire(config, channel) {
            progress.rate_limited_for = Some(wait);
            break;
        }
        let sent = match issue::send(state, client, &dest, channel, &item, now).await? {
            Some(sent) => sent,
            None => send_as_queued(state, client, &dest, channel, &item, now).await?,
        };
        let issue::Sent {
            outcome,
            thread_ts,
            is_issue_message,
        } = sent;
        let now = state.clock.now_ms();
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
            SendOutcome::Posted {
                ts,
                channel: channel_id,
            } => {
                let posted = Posted {
                    ts,
                    channel_id,
                    thread_ts,
                    is_issue_message,
                    attempts,
                };
                record_posted(state, client, limits, &dest, channel, &item, posted).await?;
                progress.done += 1;
            }
            SendOutcome::Failed(retry) => {
                if after_failure(state, config, channel, &item, attempts, now, retry).await? {
                    // Held until the retry: the rows behind it wait, in order.
                    break;
                }
                progress.done += 1;
            }
        }
    }
    Ok(progress)
}

/// What Slack answered for a message it took, and what Sluice knows of it.
struct Posted {
    /// The message's `ts`, if Slack gave one (Web API).
    ts: Option<String>,
    /// The channel id Slack answered with.
    channel_id: Option<String>,
    /// The thread the message went to, if any.
    thread_ts: Option<String>,
    /// Whether it is the issue's message in the channel (not a comment or a thread reply).
    is_issue_message: bool,
    /// Attempts made, this one included.
    attempts: u32,
}

/// Records that Slack took `item` (keeping its `ts` where it is the issue's message), logs
/// it, and after a follow-up in a thread updates the original message in place.
async fn record_posted(
    state: &AppState,
    client: &SlackClient,
    limits: &Mutex<ChannelLimits>,
    dest: &Destination,
    channel: &str,
    item: &OutboxItem,
    posted: Posted,
) -> Result<(), StoreError> {
    let now = state.clock.now_ms();
    // An alert row's `ts` is kept as the issue's message only when it is one (not a
    // comment, not a thread reply).
    let keep = posted.is_issue_message || !matches!(item.message, OutboxMessage::Alert { .. });
    let (ts, channel_id) = match keep {
        true => (posted.ts, posted.channel_id),
        false => (None, None),
    };
    state
        .store
        .mark_posted(item.id, now, ts.as_deref(), channel_id.as_deref())
        .await?;
    tracing::info!(
        channel,
        issue = %item.issue_key,
        kind = item.message.kind(),
        occurrences = item.occurrences,
        attempts = posted.attempts,
        latency_ms = now - item.created_at_ms,
        "outbox: posted"
    );
    if let (Some(root), OutboxMessage::FollowUp { alert, target, .. }) =
        (&posted.thread_ts, &item.message)
    {
        // `chat.update` needs the channel id: the one Slack just answered.
        let dest = dest.in_channel(channel_id.as_deref());
        update_original(state, client, limits, &dest, channel, root, alert, target).await?;
    }
    Ok(())
}

/// A failed send of `item` at `now_ms`. A retryable failure is rescheduled after Slack's
/// `Retry-After` or a backoff (with jitter), which holds the channel until then: `true`. A
/// permanent one, or a retry that would pass `slack.max_retry_age`, is dead-lettered: `false`.
async fn after_failure(
    state: &AppState,
    config: &Config,
    channel: &str,
    item: &OutboxItem,
    attempts: u32,
    now_ms: i64,
    retry: Retry,
) -> Result<bool, StoreError> {
    let jitter = rand::rng().random::<f64>();
    let (wait, retry_after, reason) = match retry {
        Retry::After(after) => (
            after_retry_after(after, jitter),
            Some(after),
            format!("rate limited (Retry-After {}s)", after.as_secs_f64()),
        ),
        Retry::Backoff(reason) => (
            backoff(
                attempts,
                config.slack.retry_initial_backoff,
                config.slack.retry_max_backoff,
                jitter,
            ),
            None,
            reason,
        ),
        Retry::Never(why) => {
            dead_letter(state, channel, item, attempts, &why).await?;
            return Ok(false);
        }
    };
    let age = Duration::from_millis((now_ms - item.created_at_ms).max(0) as u64);
    if age + wait > config.slack.max_retry_age {
        let why = Refusal::new(
            "max_retry_age",
            format!(
                "gave up after {attempts} attempts over {}s: {reason}",
                age.as_secs()
            ),
        );
        dead_letter(state, channel, item, attempts, &why).await?;
        return Ok(false);
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
        .reschedule(item.id, attempts, now_ms + wait.as_millis() as i64, &reason)
        .await?;
    Ok(true)
}

/// Moves a row to the dead letters with its reason, logs it, and reports it to
/// `ops_channel` (rate limited).
async fn dead_letter(
    state: &AppState,
    channel: &str,
    item: &OutboxItem,
    attempts: u32,
    why: &Refusal,
) -> Result<(), StoreError> {
    tracing::warn!(
        channel,
        issue = %item.issue_key,
        kind = item.message.kind(),
        attempts,
        reason = why.code,
        error = why.detail,
        "outbox: dead letter"
    );
    state
        .store
        .dead_letter(item.id, attempts, state.clock.now_ms(), why)
        .await?;
    crate::ops::dead_letter(state, channel, item.message.kind(), &why.detail).await;
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
) -> Result<(), StoreError> {
    if limits
        .lock()
        .await
        .try_acquire(&state.live.load().config, channel)
        .is_err()
    {
        tracing::debug!(channel, issue = %alert.issue_key, "outbox: no rate slot to update the original message");
        return Ok(());
    }
    let now = state.clock.now_ms();
    let updated = issue::render_now(state, dest, channel, alert, target, now).await?;
    if let SendOutcome::Failed(why) = client.update(dest, root_ts, &updated).await {
        tracing::warn!(channel, issue = %alert.issue_key, ?why, "outbox: could not update the original message");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::SlackMessage;
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

    /// A round that read the clock before a row fell due, and got to its sleep after (its
    /// store calls took a while), goes round again when the row is due, measured from the
    /// round: here at once, not an idle poll later.
    #[tokio::test]
    async fn the_wait_after_a_round_is_measured_from_the_rounds_reading_of_the_clock() {
        const T: i64 = 1_763_769_600_000;
        let config = crate::config::Config::parse(
            "default_channel = \"c\"\n[channels.c]\nconsole = true\n",
            std::path::Path::new("routes.toml"),
            &|_| None,
        )
        .unwrap();
        let store = crate::store::open("sqlite::memory:", crate::storm::planner())
            .await
            .unwrap();
        // The round read T; the clock reads T + 1.5 s by the time it computes its wait.
        let clock = crate::clock::Clock::starting_at(T + 1500);
        let state = AppState::with_clock(store, config, clock);
        let notice = OutboxMessage::Notice {
            message: SlackMessage {
                text: "x".into(),
                blocks: vec![],
            },
        };
        assert!(
            state
                .store
                .queue_notice("s", 0, "c", &notice, T)
                .await
                .unwrap()
        );
        let id = state.store.channel_outbox("c").await.unwrap()[0].id;
        state
            .store
            .reschedule(id, 1, T + 1000, "HTTP 500")
            .await
            .unwrap();
        let round = Instant::now();
        let wait = idle_wait(&state, &HashMap::new(), round, T).await;
        assert_eq!(
            wait,
            Duration::from_secs(1),
            "due 1 s after the round's reading"
        );
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
