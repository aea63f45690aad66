//! The two-way half of delivery: what a row about a Sentry issue becomes in Slack at send time.
//!
//! - In a Web API channel an issue message carries its state line and the buttons the route
//!   and the configuration allow ([`view`]); elsewhere it is plain.
//! - An issue notice (`issue.resolved|ignored|assigned|unresolved`) for a channel that already
//!   shows the issue posts nothing new: it rewrites each of the issue's messages there in place
//!   ([`refresh`]), and so does a [`OutboxMessage::Refresh`] row (a click changed the state). A
//!   regression (reopened after resolved) also posts a new message linking the last one.
//! - With the route's `comments = true`, a Sentry comment goes into the issue's thread.

use crate::alert::Alert;
use crate::config::{ActionKind, Config};
use crate::counts::IssueStats;
use crate::issue::Status;
use crate::routing::Target;
use crate::slack::message::{View, permalink, render_issue, render_regression};
use crate::slack::{Destination, Retry, SendOutcome, SlackClient, SlackMessage};
use crate::state::AppState;
use crate::store::{IssueMessage, OutboxItem, OutboxMessage, StoreError};

/// What sending one row did: Slack's answer to the row's message, and the thread it went to.
pub(super) struct Sent {
    /// Slack's answer: `Posted` carries the `ts` and channel id of a new message, if one was
    /// posted (a refresh posts none).
    pub(super) outcome: SendOutcome,
    /// The thread root the message was posted in, if any: a reply is not the issue's
    /// message in the channel (no thread root, never updated in place).
    pub(super) thread_ts: Option<String>,
    /// Whether a posted message is the issue's message in the channel: kept with its `ts`
    /// as the thread root and rewritten when the issue's state changes (not a comment).
    pub(super) is_issue_message: bool,
}

impl Sent {
    /// A message posted at the top of the channel about the issue.
    fn issue_message(outcome: SendOutcome) -> Self {
        Self {
            outcome,
            thread_ts: None,
            is_issue_message: true,
        }
    }

    /// Nothing new was posted (messages were rewritten in place), or it failed.
    fn nothing_new(outcome: SendOutcome) -> Self {
        Self {
            outcome,
            thread_ts: None,
            is_issue_message: false,
        }
    }
}

/// A channel's mute of an issue, as its messages show it.
pub(super) struct MuteShown {
    until_ms: i64,
    by: Option<String>,
}

/// The buttons of a message about `alert` from `target`'s route in a channel reached through
/// `dest`: none outside Web API channels (a click could not reach Sluice), and none for a
/// metric alert (no Sentry issue to act on, no occurrences a mute would hold).
pub(super) fn actions(
    config: &Config,
    dest: &Destination,
    alert: &Alert,
    target: &Target,
) -> Vec<ActionKind> {
    match dest {
        Destination::WebApi { .. } if alert.resource != "metric_alert" => {
            config.allowed_actions(target.actions.as_deref())
        }
        _ => Vec::new(),
    }
}

/// How an issue message looks beyond its alert: the state line and the buttons.
pub(super) fn view<'a>(
    actions: &'a [ActionKind],
    stats: &'a IssueStats,
    mute: Option<&'a MuteShown>,
    now_ms: i64,
) -> View<'a> {
    View {
        actions,
        state: stats.state.as_ref(),
        muted_until_ms: mute.map(|m| m.until_ms),
        muted_by: mute.and_then(|m| m.by.as_deref()),
        now_ms,
    }
}

/// The channel's active mute of the issue, if any.
pub(super) async fn mute_shown(
    state: &AppState,
    issue_key: &str,
    channel: &str,
    now_ms: i64,
) -> Result<Option<MuteShown>, StoreError> {
    Ok(state
        .store
        .mute_of(issue_key, channel, now_ms)
        .await?
        .map(|m| MuteShown {
            until_ms: m.until_ms,
            by: m.by,
        }))
}

/// An issue message as it should look now: its alert with the issue's counts, state, mute
/// and buttons.
pub(super) async fn render_now(
    state: &AppState,
    dest: &Destination,
    channel: &str,
    alert: &Alert,
    target: &Target,
    now_ms: i64,
) -> Result<SlackMessage, StoreError> {
    let stats = state.store.issue_stats(&alert.issue_key, now_ms).await?;
    let mute = mute_shown(state, &alert.issue_key, channel, now_ms).await?;
    let actions = actions(&state.live.load().config, dest, alert, target);
    let mut view = view(&actions, &stats, mute.as_ref(), now_ms);
    if alert.state.is_some() {
        // A notice's headline says what changed already (`Resolved: …`).
        view.state = None;
    }
    Ok(render_issue(alert, target, &stats, &view))
}

/// Sends a row about an issue (an alert, issue notice, comment or refresh) the way its kind
/// and channel call for; `None` for the other rows, which the caller sends as they are.
pub(super) async fn send(
    state: &AppState,
    client: &SlackClient,
    dest: &Destination,
    channel: &str,
    item: &OutboxItem,
    now_ms: i64,
) -> Result<Option<Sent>, StoreError> {
    let web_api = matches!(dest, Destination::WebApi { .. });
    match &item.message {
        OutboxMessage::Refresh => Ok(Some(Sent::nothing_new(
            refresh(state, client, dest, channel, &item.issue_key, now_ms).await?,
        ))),
        OutboxMessage::Alert { alert, target } if alert.state.is_some() && web_api => {
            notice(state, client, dest, channel, alert, target, now_ms).await
        }
        OutboxMessage::Alert { alert, target } if alert.resource == "comment" && web_api => {
            let thread = match target.comments {
                true => state.store.thread_ts(&alert.issue_key, channel).await?,
                false => None,
            };
            // A comment is no issue message of its own: no buttons, and never updated.
            let stats = state.store.issue_stats(&alert.issue_key, now_ms).await?;
            let message = crate::slack::render_alert(alert, target, &stats);
            let dest = dest.in_channel(thread.as_ref().and_then(|t| t.channel_id.as_deref()));
            let thread_ts = thread.map(|t| t.ts);
            let outcome = client.send(&dest, &message, thread_ts.as_deref()).await;
            Ok(Some(Sent {
                outcome,
                thread_ts,
                is_issue_message: false,
            }))
        }
        OutboxMessage::Alert { alert, target } => {
            let message = render_now(state, dest, channel, alert, target, now_ms).await?;
            Ok(Some(Sent::issue_message(
                client.send(dest, &message, None).await,
            )))
        }
        _ => Ok(None),
    }
}

/// An issue notice in a Web API channel: where the channel shows the issue already, its
/// messages are rewritten in place and, for a regression, a new message links the last one;
/// where it does not, the notice is posted as a message of its own.
async fn notice(
    state: &AppState,
    client: &SlackClient,
    dest: &Destination,
    channel: &str,
    alert: &Alert,
    target: &Target,
    now_ms: i64,
) -> Result<Option<Sent>, StoreError> {
    let earlier = state
        .store
        .issue_messages(&alert.issue_key, channel)
        .await?;
    let Some(last) = earlier.last() else {
        let message = render_now(state, dest, channel, alert, target, now_ms).await?;
        return Ok(Some(Sent::issue_message(
            client.send(dest, &message, None).await,
        )));
    };
    // The earlier messages first: retried as a whole (it is idempotent) until they are
    // updated, and only then the regression's own message, posted once.
    let updated = refresh(state, client, dest, channel, &alert.issue_key, now_ms).await?;
    if !matches!(updated, SendOutcome::Posted { .. }) {
        return Ok(Some(Sent::nothing_new(updated)));
    }
    let stats = state.store.issue_stats(&alert.issue_key, now_ms).await?;
    let regressed = alert.action == "unresolved"
        && matches!(stats.previous_status, Some(Status::Resolved { .. }));
    if !regressed {
        return Ok(Some(Sent::nothing_new(updated)));
    }
    let mute = mute_shown(state, &alert.issue_key, channel, now_ms).await?;
    let actions = actions(&state.live.load().config, dest, alert, target);
    let link = permalink(&last.slack_channel_id, &last.ts);
    let message = render_regression(
        alert,
        target,
        &stats,
        &view(&actions, &stats, mute.as_ref(), now_ms),
        Some(&link),
    );
    let dest = dest.in_channel(Some(&last.slack_channel_id));
    Ok(Some(Sent::issue_message(
        client.send(&dest, &message, None).await,
    )))
}

/// Rewrites every message about `issue_key` in `channel` with the issue's current counts,
/// state, mute and buttons (`chat.update`). A message Slack refuses for good (deleted, too
/// old to edit) is skipped and logged; a retryable failure stops here and is returned, and
/// the whole refresh is tried again later (rewriting a message twice changes nothing).
pub(super) async fn refresh(
    state: &AppState,
    client: &SlackClient,
    dest: &Destination,
    channel: &str,
    issue_key: &str,
    now_ms: i64,
) -> Result<SendOutcome, StoreError> {
    let messages = state.store.issue_messages(issue_key, channel).await?;
    let stats = state.store.issue_stats(issue_key, now_ms).await?;
    let mute = mute_shown(state, issue_key, channel, now_ms).await?;
    let config = state.live.load();
    for m in &messages {
        let OutboxMessage::Alert { alert, target } = &m.message else {
            continue;
        };
        let actions = actions(&config.config, dest, alert, target);
        let message = render_issue(
            alert,
            target,
            &stats,
            &view(&actions, &stats, mute.as_ref(), now_ms),
        );
        match update(client, dest, m, &message).await {
            SendOutcome::Failed(Retry::Never(why)) => {
                tracing::warn!(channel, issue = issue_key, ts = %m.ts, reason = why.code, "outbox: a message could not be updated; skipped");
            }
            SendOutcome::Failed(retry) => return Ok(SendOutcome::Failed(retry)),
            SendOutcome::Posted { .. } => {}
        }
    }
    Ok(SendOutcome::Posted {
        ts: None,
        channel: None,
    })
}

/// `chat.update` of one stored message, in the channel Slack posted it to.
async fn update(
    client: &SlackClient,
    dest: &Destination,
    m: &IssueMessage,
    message: &SlackMessage,
) -> SendOutcome {
    client
        .update(&dest.in_channel(Some(&m.slack_channel_id)), &m.ts, message)
        .await
}
