//! Durable state behind one [`Store`] trait: deliveries and events seen (deduplication), issues
//! and their per-day counts, the outbox of Slack messages to send, what was sent, and dead
//! letters. The backend is chosen once at start from `storage.url`; callers only see the trait.
//!
//! The contract every backend keeps: [`Store::ingest`] commits the delivery, its claim on its
//! event id and, for a new occurrence or notice, its place in the fold queue with where
//! routing sent it, in one durable transaction before it returns `Ok`, so the HTTP layer can
//! acknowledge with a 2xx and nothing acknowledged is lost. It touches no row another delivery
//! shares, so replicas ingest side by side. [`Store::fold`] (the leader's fold loop,
//! `crate::fold`) then folds queued deliveries in batches into issues, counts, cooldowns,
//! mutes and outbox rows, each exactly once: a batch's rows leave the queue in the
//! transaction that writes their effects. On SQLite, one process and one writer, the
//! ingest transaction folds its deliveries itself and queues nothing.

pub(crate) mod postgres;
mod sql;
mod sqlite;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::counts::IssueStats;
use crate::plan::Planner;
use crate::routing::Target;

pub use postgres::{FOLD_CHANNEL, PostgresStore, QUEUED_CHANNEL};
pub use sql::{Backend, MAX_GROUP, SqlStore};
pub use sqlite::SqliteStore;

/// The store could not do what was asked; the HTTP layer answers 503 and the worker retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date at start.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `storage.url` names no backend this build supports.
    #[error("unsupported storage url `{0}` (expected sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    /// A stored row could not be decoded (written by an incompatible version?).
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// The shared transaction this delivery was part of failed to commit.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// One verified webhook delivery with everything derived from it, ready to commit.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// SHA-256 of the raw body: a delivery's identity (Sentry retries and replays repeat it).
    pub body_sha256: [u8; 32],
    /// `Sentry-Hook-Resource` (or `legacy`).
    pub resource: String,
    /// Sentry's `Request-ID` header, kept for tracing a delivery end to end.
    pub request_id: Option<String>,
    /// When Sluice received it, Unix ms.
    pub received_at_ms: i64,
    /// The normalised alert; `None` for a verified delivery that is not routed (installation,
    /// unknown resource).
    pub alert: Option<Alert>,
    /// Where the alert goes (from routing); empty when `alert` is `None`.
    pub targets: Vec<Target>,
}

/// What [`Store::ingest`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The same body was committed before: nothing was changed.
    DuplicateDelivery,
    /// New delivery, committed.
    Stored {
        /// It was a new occurrence and is counted (false for an event seen before, under
        /// another resource or in another delivery, and for notices that are not occurrences).
        counted: bool,
        /// It waits in the fold queue (a new occurrence, or a notice, on PostgreSQL): the fold
        /// loop must be told. False for an ignored delivery, a repeat of a known event, and
        /// on SQLite, where the group commit folds its deliveries itself.
        to_fold: bool,
        /// Folded in the commit (SQLite): outbox rows queued for Slack.
        queued: usize,
        /// Folded in the commit (SQLite): a follow-up is now due (see
        /// [`Folded::follow_up_due`]); the delivery worker must be told, as of queued rows.
        follow_up_due: bool,
    },
}

/// What one [`Store::fold`] batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Each delivery folded, in fold order.
    pub folded: Vec<Folded>,
}

impl FoldReport {
    /// Deliveries folded.
    pub fn deliveries(&self) -> usize {
        self.folded.len()
    }

    /// Outbox rows queued.
    pub fn queued(&self) -> usize {
        self.folded.iter().map(|f| f.queued).sum()
    }

    /// Whether the delivery worker must look again: rows were queued, or a cooldown now ends
    /// with a follow-up.
    pub fn wakes_worker(&self) -> bool {
        self.folded.iter().any(|f| f.queued > 0 || f.follow_up_due)
    }
}

/// What the fold did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// The delivery (its body's hash).
    pub body_sha256: [u8; 32],
    /// Outbox rows queued for Slack.
    pub queued: usize,
    /// It was the first occurrence folded into its issue's cooldown in a channel since the
    /// last message there: a follow-up is now due at the cooldown's end, which the delivery
    /// worker must be told of (it is, like of queued rows).
    pub follow_up_due: bool,
}

/// How far behind the fold is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldBacklog {
    /// Deliveries waiting to be folded.
    pub pending: u64,
    /// When the oldest of them was received, Unix ms.
    pub oldest_ms: Option<i64>,
}

/// What an outbox row asks the delivery worker to post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxMessage {
    /// A full message for one alert.
    Alert {
        /// The alert as received.
        alert: Alert,
        /// The route decision that put it in this channel (mention, route name).
        target: Target,
    },
    /// The end of a cooldown: how many occurrences were folded since the last message.
    FollowUp {
        /// The newest folded alert.
        alert: Alert,
        /// The route decision.
        target: Target,
        /// Occurrences folded.
        folded: u64,
        /// When the first of them arrived (Unix ms).
        since_ms: i64,
        /// Why it goes out (end of cooldown, spike, end of a mute); rows queued before this
        /// field existed read as the end of a cooldown.
        #[serde(default)]
        reason: crate::plan::FollowUpReason,
    },
    /// Many waiting messages folded into one summary.
    RollUp(crate::plan::RollUp),
    /// Rewrite every message posted about the row's issue in the row's channel with its
    /// current state, counts and buttons (`chat.update`), after a click changed the state.
    Refresh,
    /// A message from Sluice about itself (to `ops_channel`).
    Notice {
        /// The message.
        message: crate::slack::SlackMessage,
    },
    /// A weekly digest, rendered when its period closed.
    Digest {
        /// The scheduled time it is for (Unix ms).
        period_end_ms: i64,
        /// The message.
        message: crate::slack::SlackMessage,
    },
}

impl OutboxMessage {
    /// The stored `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            OutboxMessage::Alert { .. } => "alert",
            OutboxMessage::FollowUp { .. } => "followup",
            OutboxMessage::RollUp(_) => "rollup",
            OutboxMessage::Digest { .. } => "digest",
            OutboxMessage::Notice { .. } => "notice",
            OutboxMessage::Refresh => "refresh",
        }
    }

    /// Whether storm control may fold this message into a roll-up (alerts and follow-ups,
    /// and earlier roll-ups); digests and notices are always posted as they are.
    pub fn is_storm_traffic(&self) -> bool {
        matches!(
            self,
            OutboxMessage::Alert { .. } | OutboxMessage::FollowUp { .. } | OutboxMessage::RollUp(_)
        )
    }
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// Row id; also the order of arrival within a channel.
    pub id: i64,
    /// Channel name (a key of `[channels]`).
    pub channel: String,
    /// Issue the message is about.
    pub issue_key: String,
    /// What to post.
    pub message: OutboxMessage,
    /// Occurrences this message represents (0 for notices that are not occurrences).
    pub occurrences: u64,
    /// When it was queued, Unix ms.
    pub created_at_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
}

impl<'a> From<&'a OutboxItem> for crate::plan::Waiting<'a> {
    /// The row as roll-up sees it (see [`crate::plan::RollUpPlan`]).
    fn from(item: &'a OutboxItem) -> Self {
        use crate::plan::Content;
        let content = match &item.message {
            OutboxMessage::Alert { alert, target } => Content::Issue {
                issue_key: &item.issue_key,
                alert,
                mention: target.mention.as_deref(),
            },
            OutboxMessage::FollowUp { alert, .. } => Content::Issue {
                issue_key: &item.issue_key,
                alert,
                mention: None,
            },
            OutboxMessage::RollUp(rollup) => Content::RollUp(rollup),
            OutboxMessage::Digest { .. }
            | OutboxMessage::Notice { .. }
            | OutboxMessage::Refresh => Content::Other,
        };
        crate::plan::Waiting {
            id: item.id,
            occurrences: item.occurrences,
            queued_at_ms: item.created_at_ms,
            content,
        }
    }
}

/// A message Slack refused for good, kept with Slack's error string.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its id (the outbox row's): what `sluice dead-letters` lists and replays.
    pub id: i64,
    /// What kind of message it was (`alert`, `followup`, `digest`, `notice`, …).
    pub kind: String,
    /// The issue's title, when the store knows the issue.
    pub title: Option<String>,
    /// Channel name.
    pub channel: String,
    /// Issue the message was about.
    pub issue_key: String,
    /// Occurrences it represented.
    pub occurrences: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The reason's code (`channel_not_found`, `http_404`, `max_retry_age`, …): see
    /// [`crate::slack::Refusal`].
    pub reason: String,
    /// Slack's error string (`channel_not_found`, `invalid_payload`, `max_retry_age exceeded: …`).
    pub error: String,
    /// When it was dead-lettered, Unix ms.
    pub dead_at_ms: i64,
}

/// Which dead letters to list or replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this channel's.
    pub channel: Option<String>,
    /// Only those dead-lettered at or after this time, Unix ms.
    pub since_ms: Option<i64>,
    /// Paging: only those with a smaller id (the list is newest first).
    pub before_id: Option<i64>,
}

/// Where one delivery went in one channel, and what became of it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRoute {
    /// Channel name.
    pub channel: String,
    /// The route that sent it there (`None` for the default channel, or an issue notice
    /// that followed the issue's channels).
    pub route: Option<String>,
    /// What became of it.
    pub fate: Fate,
}

/// What became of one delivery in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Its message waits in the outbox.
    Pending,
    /// Slack accepted its message.
    Posted {
        /// When, Unix ms.
        at_ms: i64,
        /// Slack's ts of the message (Web API channels).
        slack_ts: Option<String>,
    },
    /// It arrived within the issue's cooldown in the channel: counted, and carried by the
    /// follow-up at the cooldown's end.
    Folded,
    /// Its message was folded into a roll-up summary during a backlog.
    RolledUp,
    /// A mute of the issue in the channel held it back.
    Muted,
    /// Slack refused its message for good.
    Dead {
        /// Slack's error.
        error: String,
    },
}

/// One delivery as the status page shows it: what arrived, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTrail {
    /// The paging cursor of this delivery.
    pub cursor: DeliveryCursor,
    /// `Sentry-Hook-Resource` (or `legacy`).
    pub resource: String,
    /// Sentry's `Request-ID` header.
    pub request_id: Option<String>,
    /// `stored`, `ignored` (verified, not routed), or `duplicate` (an event seen before in
    /// another delivery: not counted or posted again).
    pub outcome: String,
    /// Sentry's event id, for an event.
    pub event_id: Option<String>,
    /// The issue, for an alert.
    pub issue_key: Option<String>,
    /// The project (service) slug.
    pub project: Option<String>,
    /// The environment.
    pub environment: Option<String>,
    /// The issue's title, when the store knows the issue.
    pub title: Option<String>,
    /// It waits for the leader's fold: stored, not yet counted, and its channels not yet
    /// written.
    pub folding: bool,
    /// Its channels, in channel order; empty when it was routed nowhere (or still waits for
    /// the fold).
    pub routes: Vec<DeliveryRoute>,
}

/// Where a page of deliveries starts: newest first, ties broken by the body's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryCursor {
    /// When it was received, Unix ms.
    pub received_at_ms: i64,
    /// SHA-256 of its body.
    pub body_sha256: [u8; 32],
}

/// A channel's state now, for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelNow {
    /// The accounting terms and message counts.
    pub totals: ChannelTotals,
    /// The channel waits (Slack's Retry-After, or backoff) until this time, Unix ms, when it
    /// is later than now.
    pub held_until_ms: Option<i64>,
    /// Messages Slack accepted since the given time (the start of the UTC day).
    pub posted_since: u64,
}

/// Per-channel totals of what Sluice did, for accounting and metrics. The invariant:
/// `occurrences_routed == occurrences_posted + occurrences_pending + occurrences_dead
/// + occurrences_muted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelTotals {
    /// Occurrences routed to the channel, ever.
    pub occurrences_routed: u64,
    /// Messages Slack accepted.
    pub messages_posted: u64,
    /// Occurrences carried by accepted messages.
    pub occurrences_posted: u64,
    /// Messages waiting in the outbox.
    pub messages_pending: u64,
    /// Occurrences waiting: in outbox messages, or folded by a cooldown and waiting for the
    /// follow-up.
    pub occurrences_pending: u64,
    /// Occurrences that arrived within a cooldown, ever (posted later in follow-ups).
    pub occurrences_folded: u64,
    /// Messages folded into roll-ups, ever.
    pub messages_rolled_up: u64,
    /// When Slack last accepted a message for the channel, Unix ms.
    pub last_sent_ms: Option<i64>,
    /// When Slack last accepted a digest for the channel, Unix ms.
    pub last_digest_ms: Option<i64>,
    /// When the oldest message still waiting for the channel was queued, Unix ms.
    pub oldest_pending_ms: Option<i64>,
    /// Messages dead-lettered.
    pub messages_dead: u64,
    /// Occurrences carried by dead-lettered messages.
    pub occurrences_dead: u64,
    /// Occurrences held by mutes and not yet posted (the message at a mute's end, or a spike
    /// breaking through it, carries them).
    pub occurrences_muted: u64,
}

/// A mute of one issue in one channel ("Mute here", `sluice mute`): its occurrences there are
/// counted, not posted, until `until_ms`; then one message says how many it held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    /// Issue key.
    pub issue_key: String,
    /// Channel name (a key of `[channels]`).
    pub channel: String,
    /// When it ends, Unix ms.
    pub until_ms: i64,
    /// Who set it (a Slack user's name, or `cli`/the login of whoever ran `sluice mute`).
    pub by: Option<String>,
    /// Occurrences it holds back so far.
    pub held: u64,
    /// The issue's title, when the store knows the issue.
    pub title: Option<String>,
}

/// What a channel received of one issue in one environment on one UTC day (routes with
/// `digest = true` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDay {
    /// Issue key.
    pub issue_key: String,
    /// UTC day number.
    pub day: i64,
    /// Project slug.
    pub project: String,
    /// Environment (`""` when the payload named none).
    pub environment: String,
    /// Occurrences routed to the channel.
    pub occurrences: u64,
    /// Of those, folded by a cooldown.
    pub folded: u64,
    /// Issue notices routed to the channel.
    pub notices: u64,
}

/// What the store knows of an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueInfo {
    /// Issue key.
    pub issue_key: String,
    /// Latest title.
    pub title: String,
    /// Latest level name.
    pub level: String,
    /// Link to the issue.
    pub issue_url: Option<String>,
    /// When Sluice first saw it, Unix ms.
    pub first_seen_ms: i64,
    /// When Sentry last reported it resolved, Unix ms.
    pub resolved_at_ms: Option<i64>,
}

/// Where a full message about an issue sits in a Web API channel: the root of its follow-ups'
/// thread and the message `chat.update` rewrites with new counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackThread {
    /// Slack's `ts` of the message.
    pub ts: String,
    /// The id of the channel it is in (`C0123456789`), as `chat.postMessage` answered:
    /// `chat.update` accepts only an id, and `slack_channel` may be a name. `None` for a message
    /// posted before Sluice kept it (the configured channel is used then).
    pub channel_id: Option<String>,
}

/// A click to commit: what `POST /slack/interactions` received, before anything is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClick {
    /// Slack's `trigger_id`: the same request delivered twice carries the same one.
    pub trigger_id: String,
    /// The person, issue, action and choice: a second click of the same while the first is
    /// pending is a repeat too.
    pub pending_key: String,
    /// The click as JSON ([`crate::slack::interaction::Click`]).
    pub payload: String,
}

/// What [`Store::record_click`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickRecorded {
    /// Committed: the interactions worker will carry it out.
    New,
    /// The same click (or the same action, still pending) was committed before: nothing done.
    Repeat,
}

/// A committed click still to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClick {
    /// Row id.
    pub id: i64,
    /// The click as JSON.
    pub payload: String,
    /// How far it got: 0 = the action is still to be done, 1 = done, its comment to add.
    pub step: u32,
    /// Failed attempts of the current step.
    pub attempts: u32,
    /// When it was committed, Unix ms.
    pub received_at_ms: i64,
}

/// A full message about an issue that Slack accepted in a Web API channel.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueMessage {
    /// The Slack channel id it is in.
    pub slack_channel_id: String,
    /// Its Slack `ts`.
    pub ts: String,
    /// The configured channel's name.
    pub channel: String,
    /// The issue.
    pub issue_key: String,
    /// What it showed (an [`OutboxMessage::Alert`]).
    pub message: OutboxMessage,
    /// When it was posted, Unix ms.
    pub posted_at_ms: i64,
}

/// What Sluice did for a channel within a time span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelActivity {
    /// Messages Slack accepted.
    pub messages_posted: u64,
    /// Occurrences carried by roll-up summaries Slack accepted.
    pub rolled_up_occurrences: u64,
    /// Messages dead-lettered.
    pub dead_letters: u64,
}

/// All durable state. Implementations must be safe to share between the HTTP handlers and the
/// background workers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers if the database answers and, after a write transaction failed, if a probe
    /// transaction commits again (for `/readyz`: not ready while commits fail).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commits a delivery in one durable transaction, or nothing: the delivery, its claim on
    /// its event id, and (a new occurrence, or a notice) its place in the fold queue with its
    /// routed targets. A body seen before changes nothing; an event id seen before is not
    /// queued again, so it is never counted or posted twice. No row another delivery shares
    /// is written: replicas ingest side by side. On SQLite (one process, one writer) the
    /// group commit instead folds its deliveries itself, as [`Store::fold`] would, in the
    /// same transaction.
    async fn ingest(&self, delivery: Delivery) -> Result<IngestOutcome, StoreError>;

    /// Folds up to `limit` queued deliveries, oldest first, in one transaction that also
    /// removes them from the queue (each is folded exactly once): issue metadata, day counts,
    /// and per channel the storm decisions. An occurrence within its issue's cooldown in a
    /// channel is folded (counted, no message) instead of queued, one of a muted issue there
    /// is held (counted, no message, until the mute ends), and one that brings the
    /// occurrences since the last message to a `breakthrough` threshold queues a spike
    /// follow-up (see [`crate::plan::Planner::plan_ingest`]). Issue notices are never folded or held.
    /// Run by the leader only (`crate::fold`).
    async fn fold(&self, limit: u32) -> Result<FoldReport, StoreError>;

    /// Deliveries waiting for the fold, and the oldest one's arrival.
    async fn fold_backlog(&self) -> Result<FoldBacklog, StoreError>;

    /// Whether a delivery with this body was committed before, read off the writer (it may
    /// lag a commit in flight): lets the webhook answer a retry without parsing or routing
    /// it. [`Store::ingest`] stays the judge of what is a duplicate.
    async fn is_known_delivery(&self, body_sha256: &[u8; 32]) -> Result<bool, StoreError>;

    /// Ends every mute whose time is up at `now_ms`, queueing the follow-up of each that held
    /// occurrences back ("held back N", starting a new cooldown); then queues a follow-up for
    /// every issue and channel whose cooldown ended with occurrences folded (unless a mute
    /// holds it: its follow-up waits for the mute's end), and starts a new cooldown for it.
    /// Returns how many follow-ups were queued.
    async fn release_cooldowns(&self, now_ms: i64) -> Result<usize, StoreError>;

    /// Mutes `issue_key` in `channel` until `until_ms`: sets a mute, or moves the end of the
    /// one in place (longer or shorter, keeping what it held), recording `by` and `now_ms`.
    /// A mute whose time was up is ended first, as at its expiry; an `until_ms` not after
    /// `now_ms` ends the mute now, as [`Store::unmute`] does. The mute is a row: it survives
    /// restarts and holds on every replica.
    async fn mute(
        &self,
        issue_key: &str,
        channel: &str,
        until_ms: i64,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Ends the mute of `issue_key` in `channel` now, queueing its "held back N" follow-up in
    /// the same transaction if it held any (exactly once: the mute is gone with it). Returns
    /// whether there was a mute.
    async fn unmute(&self, issue_key: &str, channel: &str, now_ms: i64)
    -> Result<bool, StoreError>;

    /// The mutes active at `now_ms`, the soonest to end first.
    async fn mutes(&self, now_ms: i64) -> Result<Vec<Mute>, StoreError>;

    /// The mute of `issue_key` in `channel` active at `now_ms`, if any (for a message's "Muted
    /// here until …" line).
    async fn mute_of(
        &self,
        issue_key: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<Option<Mute>, StoreError>;

    /// Messages waiting per channel.
    async fn outbox_depths(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Every waiting row of `channel`, oldest first.
    async fn channel_outbox(&self, channel: &str) -> Result<Vec<OutboxItem>, StoreError>;

    /// Replaces the waiting rows `ids` of `channel` by one roll-up row, atomically; does
    /// nothing (returns false) if any of them is gone (sent meanwhile).
    async fn replace_with_rollup(
        &self,
        channel: &str,
        ids: &[i64],
        rollup: &crate::plan::RollUp,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Where the last full message about `issue_key` in `channel` sits (Web API): the thread
    /// for follow-ups and the message they update in place.
    async fn thread_ts(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Option<SlackThread>, StoreError>;

    /// Counts of one issue in the 30 days ending on the UTC day of `now_ms`.
    async fn issue_stats(&self, issue_key: &str, now_ms: i64) -> Result<IssueStats, StoreError>;

    /// Outbox rows due at `now_ms`, oldest first, at most `per_channel` of each channel (so a
    /// busy channel cannot starve the others).
    async fn due_outbox(
        &self,
        now_ms: i64,
        per_channel: u32,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// When the earliest outbox row becomes due, the earliest cooldown with folded
    /// occurrences ends (of a pair no mute holds) or the earliest mute ends, Unix ms, if any.
    async fn next_due_at(&self) -> Result<Option<i64>, StoreError>;

    /// Slack accepted row `id`: move it to the sent log (with Slack's `ts` where the Web API
    /// gave one; for a full alert message it becomes the issue's thread in that channel, kept
    /// with `slack_channel_id`, the channel id Slack answered).
    async fn mark_posted(
        &self,
        id: i64,
        now_ms: i64,
        slack_ts: Option<&str>,
        slack_channel_id: Option<&str>,
    ) -> Result<(), StoreError>;

    /// A retryable failure of row `id`: record the attempt and the error, and hold the row's
    /// whole channel (every waiting row of it) until `next_attempt_ms`, so that messages keep
    /// their order and a `Retry-After` holds for the channel, also across restarts.
    async fn reschedule(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// A permanent failure: move row `id` to the dead letters with its reason (code and
    /// Slack's words).
    async fn dead_letter(
        &self,
        id: i64,
        attempts: u32,
        now_ms: i64,
        why: &crate::slack::Refusal,
    ) -> Result<(), StoreError>;

    /// Dead letters matching `filter`, newest (largest id) first, at most `limit`.
    async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Queues the dead letters matching `filter` (its `before_id` ignored) again as new
    /// outbox rows due now, in the order they were first queued, and removes them from the
    /// dead letters, in one transaction: their occurrences move from dead to pending. Returns
    /// the new outbox rows' ids. A channel held by Slack's `Retry-After` (or backoff) keeps its
    /// hold: its replayed rows wait for it like its other rows. On PostgreSQL the commit
    /// announces the rows to the delivering replica.
    async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError>;

    /// The newest deliveries received before `before` (all, when `None`), newest first, at
    /// most `limit`, each with where it was routed and what became of it there. Reads only
    /// the page's rows, whatever the store's size.
    async fn recent_deliveries(
        &self,
        before: Option<DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<DeliveryTrail>, StoreError>;

    /// `channel`'s state at `now_ms`: its totals, when its hold ends, and what Slack accepted
    /// since `since_ms`.
    async fn channel_now(
        &self,
        channel: &str,
        now_ms: i64,
        since_ms: i64,
    ) -> Result<ChannelNow, StoreError>;

    /// What `channel` received per issue, environment and day, for days `from_day..=to_day`.
    async fn channel_days(
        &self,
        channel: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<ChannelDay>, StoreError>;

    /// Issues `channel` received anything of since `from_day`.
    async fn channel_issues(
        &self,
        channel: &str,
        from_day: i64,
    ) -> Result<Vec<IssueInfo>, StoreError>;

    /// Messages posted, roll-ups and dead letters of `channel` in `from_ms..to_ms`.
    async fn channel_activity(
        &self,
        channel: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ChannelActivity, StoreError>;

    /// Queues the digest of `channel` for the period ending at `period_end_ms`, with its run
    /// record, atomically; returns false (and queues nothing) when that period's digest was
    /// queued before. The outbox then delivers it at least once.
    async fn queue_digest(
        &self,
        channel: &str,
        period_end_ms: i64,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Queues `message` for `channel` as the notice about `subject`, unless that subject was
    /// reported less than `every_ms` before `now_ms`; the report is recorded in the same
    /// transaction, so the limit holds across restarts and replicas. Returns whether it was
    /// queued.
    async fn queue_notice(
        &self,
        subject: &str,
        every_ms: i64,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// If `subject` was reported (and not resolved since), forgets it and queues `message` for
    /// `channel` (its resolution: "deliveries resumed"), atomically; returns whether it did.
    async fn resolve_notice(
        &self,
        subject: &str,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// When the latest verified delivery arrived, Unix ms.
    async fn last_delivery_at(&self) -> Result<Option<i64>, StoreError>;

    /// When the first delivery still on record arrived, Unix ms.
    async fn first_delivery_at(&self) -> Result<Option<i64>, StoreError>;

    /// Dead letters per channel and reason code, most first.
    async fn dead_letter_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError>;

    /// Posted, pending, dead and muted totals of one channel.
    async fn channel_totals(&self, channel: &str) -> Result<ChannelTotals, StoreError>;

    /// Commits a verified click (the interactions worker carries it out), unless it is a
    /// repeat: the same `trigger_id`, or the same `pending_key` still pending.
    async fn record_click(
        &self,
        click: &NewClick,
        now_ms: i64,
    ) -> Result<ClickRecorded, StoreError>;

    /// Pending clicks due at `now_ms`, oldest first, at most `limit`.
    async fn due_clicks(&self, now_ms: i64, limit: u32) -> Result<Vec<StoredClick>, StoreError>;

    /// When the earliest pending click is due, Unix ms.
    async fn next_click_at(&self) -> Result<Option<i64>, StoreError>;

    /// Click `id` finished step `step - 1`: record it (so a restart does not repeat it) and
    /// reset its attempts.
    async fn click_step(&self, id: i64, step: u32) -> Result<(), StoreError>;

    /// A retryable failure of click `id`: try again at `next_attempt_ms`.
    async fn retry_click(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Click `id` is over: done, or `failed` (refused for good); `outcome` says how. Its
    /// action may be clicked again from now on.
    async fn finish_click(
        &self,
        id: i64,
        outcome: &str,
        failed: bool,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The message Sluice posted at `ts` in Slack channel `slack_channel_id`, if it did.
    async fn issue_message(
        &self,
        slack_channel_id: &str,
        ts: &str,
    ) -> Result<Option<IssueMessage>, StoreError>;

    /// Every message posted about `issue_key` in `channel`, oldest first.
    async fn issue_messages(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Vec<IssueMessage>, StoreError>;

    /// Sets the issue's state (from a click Sentry carried out) and queues a
    /// [`OutboxMessage::Refresh`] for every channel with messages about it, atomically;
    /// returns those channels.
    async fn set_issue_state(
        &self,
        issue_key: &str,
        state: &crate::issue::IssueState,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes day buckets, seen events and deliveries, posted messages (no longer updated in
    /// place) and carried-out clicks older than `retention_days` before `now_ms`; returns the
    /// rows deleted.
    async fn prune(&self, now_ms: i64, retention_days: u32) -> Result<u64, StoreError>;
}

/// Whether `url` names a PostgreSQL database (several replicas may share it).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the backend `url` names and brings its schema up to date; its storm decisions are
/// `planner`'s (Sluice runs with [`crate::storm::planner`]).
pub async fn open(url: &str, planner: Arc<dyn Planner>) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, planner).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(PostgresStore::open(url, planner).await?))
    } else {
        Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)))
    }
}

#[cfg(test)]
mod tests;
