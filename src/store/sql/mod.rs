//! The store for SQL databases, written once over sqlx's [`Database`] and run on each backend
//! (`sqlite.rs`, `postgres.rs`); [`Backend`] holds what differs between them. The SQL here is
//! the common dialect of SQLite and PostgreSQL (`$n` parameters, `ON CONFLICT`, `RETURNING`,
//! `CASE` rather than two-argument `MIN`/`MAX`).
//!
//! - `mod.rs`: [`SqlStore`], the committer task, and the [`Store`] impl, each method of which
//!   runs the inherent method of the same name in one of the files below.
//! - `ingest.rs`: group commit on the request path: claims of deliveries and events, and the
//!   fold queue rows of those that go on. No row another delivery shares.
//! - `fold.rs`: the fold, the SQL half (the leader's): a batch of the fold queue, the reads of
//!   issues, cooldowns and mutes, and one multi-row write per table.
//! - `group.rs`: ingest and fold, the in-memory halves: from what the claims and reads
//!   returned and what [`crate::plan::Planner::plan_ingest`] decided to the rows each table gets.
//! - `outbox.rs`: the outbox's life after ingest: due rows, sent, rescheduled, dead-lettered,
//!   rolled up; ended cooldowns; digests and ops notices queued.
//! - `mutes.rs`: mutes set, ended (now, or at expiry with their "held back" follow-up) and
//!   read.
//! - `queries.rs`: reads for messages, digests and metrics (issue stats, channel days, totals),
//!   and pruning.
//! - `status.rs`: the status page (the newest deliveries with what became of them in each
//!   channel, a channel's state now) and the dead letters, listed and replayed.
//!
//! **Group commit.** Deliveries are not committed one by one: a committer task takes every
//! delivery waiting at that moment (up to [`MAX_GROUP`]) and applies them in one transaction
//! with one fsync, answering each caller only after the commit. The group's decisions are
//! made in memory in delivery order (see `ingest.rs`), and each table gets one multi-row
//! write, so the number of database round trips per group does not grow with its size. A
//! failed group fails every delivery in it (each caller answers 503; nothing of the group was
//! acknowledged). A group that queued deliveries to fold is announced (on PostgreSQL, by a
//! `NOTIFY` sent after the commit, not in it: a `NOTIFY` in a transaction serialises every
//! committing transaction that sends one). Where [`Backend::FOLDS_AT_COMMIT`] (SQLite: one
//! process, one writer) the group commit folds its deliveries in its own transaction instead.
//!
//! **Several writers.** On PostgreSQL several replicas commit at once. Their group commits
//! only insert rows keyed by the delivery, its event id, or a sequence (the fold queue), so
//! they never wait for one another. The shared rows (issues, day counts, cooldowns, channel
//! counters) are written by the fold, on the leader; its one read-decide-write step, the
//! cooldown of an (issue, channel) pair, runs under [`Backend::lock_pairs`] against the other
//! writers of cooldowns (the release of ended cooldowns, mutes). Every multi-row write is
//! sorted by its key, so two transactions take row locks in the same order and cannot
//! deadlock.
//!
//! **Write transactions** all go through [`WriteConn::acquire`] and end with
//! [`WriteConn::committed`] (see `writer.rs`): a connection whose transaction failed is closed,
//! never reused.

mod fold;
mod group;
mod ingest;
mod interact;
mod mutes;
mod outbox;
mod queries;
mod status;

use async_trait::async_trait;
use sqlx::query_builder::Separated;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type,
};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::writer::{WriteConn, WriteHealth};
use super::{
    ChannelActivity, ChannelDay, ChannelNow, ChannelTotals, DeadLetter, DeadLetterFilter, Delivery,
    DeliveryCursor, DeliveryTrail, FoldBacklog, FoldReport, IngestOutcome, IssueInfo, OutboxItem,
    OutboxMessage, SlackThread, Store, StoreError,
};
use crate::counts::IssueStats;
use crate::plan::{Planner, RollUp};

/// Size of the probe row written while commits fail: more than a typical group commit
/// writes, so that a store with room for the probe has room for deliveries.
const PROBE_BYTES: usize = 256 * 1024;

/// Most deliveries committed in one transaction.
pub const MAX_GROUP: usize = 512;

/// Rows per multi-row statement: the widest row binds 13 values, and SQLite allows 32,766
/// bound values per statement, PostgreSQL 65,535.
const ROWS_PER_STATEMENT: usize = 512;

type Reply = oneshot::Sender<Result<IngestOutcome, StoreError>>;

/// What differs between the databases [`SqlStore`] runs on.
#[async_trait]
pub trait Backend: Database {
    /// Holds the cooldown state of these (issue, channel) pairs for the rest of the
    /// transaction, so that no other writer decides for the same pair meanwhile. `pairs` is
    /// sorted, so every writer locks in the same order.
    async fn lock_pairs(
        conn: &mut Self::Connection,
        pairs: &[(String, String)],
    ) -> Result<(), sqlx::Error>;

    /// Tells a delivering replica elsewhere that rows were queued (within the transaction,
    /// so it is sent at commit). SQLite has one process, which wakes its worker itself.
    async fn announce_queued(conn: &mut Self::Connection) -> Result<(), sqlx::Error>;

    /// Tells the leader, wherever it runs, that deliveries wait to be folded (on its own, after
    /// the commit). SQLite has one process, which wakes its fold loop itself.
    async fn announce_fold(pool: &Pool<Self>) -> Result<(), sqlx::Error>;

    /// What ends the fold's read of its batch: a row lock on PostgreSQL (see `fold.rs`).
    const LOCK_ROWS: &'static str;

    /// Whether a group commit folds its own deliveries in its transaction instead of queueing
    /// them for the leader's fold loop: where one process is the only writer, the queue would
    /// only add a second transaction per group.
    const FOLDS_AT_COMMIT: bool;

    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// `head` (a statement up to `VALUES`), one `(…)` per row as `bind` pushes it, then `tail`.
fn values<DB: Backend, T>(
    head: &str,
    rows: &[T],
    bind: impl Fn(Separated<'_, DB, &'static str>, &T),
    tail: &str,
) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new(head);
    q.push_values(rows, bind);
    q.push(tail);
    q
}

/// A value sqlx can bind as a parameter on `DB`.
pub trait Bind<DB: Database>: for<'q> Encode<'q, DB> + Type<DB> + Send + 'static {}
impl<DB: Database, T: for<'q> Encode<'q, DB> + Type<DB> + Send + 'static> Bind<DB> for T {}

/// A value sqlx can bind and read back on `DB`.
pub trait Value<DB: Database>: Bind<DB> + for<'r> Decode<'r, DB> {}
impl<DB: Database, T: Bind<DB> + for<'r> Decode<'r, DB>> Value<DB> for T {}

/// A SQL database behind the [`Store`] trait.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    writer: Pool<DB>,
    reader: Pool<DB>,
    ingest: mpsc::Sender<(Delivery, Reply)>,
    health: WriteHealth,
    /// Storm control's decisions, asked within the transactions that act on them.
    planner: Arc<dyn Planner>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            ingest: self.ingest.clone(),
            health: self.health.clone(),
            planner: self.planner.clone(),
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// Closes the database: every later call fails (used at shutdown, and by tests to see
    /// what a failing store does).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Value<DB>,
    Option<i64>: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
    Vec<u8>: Value<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    /// A store over migrated pools: writes go through `writer`, reads that may lag a moment
    /// through `reader`. A writer connection whose transaction failed is closed when
    /// `replace_failed` (see [`WriteHealth::new`]); storm decisions are `planner`'s. Starts the
    /// committer task.
    pub(super) fn from_pools(
        writer: Pool<DB>,
        reader: Pool<DB>,
        replace_failed: bool,
        planner: Arc<dyn Planner>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        let health = WriteHealth::new(replace_failed);
        // One announcement pending at most: groups committed while one is sent share the next.
        let (to_fold, announcements) = mpsc::channel(1);
        tokio::spawn(Self::committer(
            writer.clone(),
            health.clone(),
            rx,
            to_fold,
            planner.clone(),
        ));
        tokio::spawn(Self::fold_announcer(writer.clone(), announcements));
        Self {
            writer,
            reader,
            ingest: tx,
            health,
            planner,
        }
    }

    /// Commits waiting deliveries in groups until every sender is gone; after a group that
    /// queued deliveries to fold, asks `to_fold` to announce them.
    async fn committer(
        pool: Pool<DB>,
        health: WriteHealth,
        mut rx: mpsc::Receiver<(Delivery, Reply)>,
        to_fold: mpsc::Sender<()>,
        planner: Arc<dyn Planner>,
    ) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
            let results = Self::commit_group(&pool, &health, &group, &*planner).await;
            let folds = results
                .iter()
                .any(|r| matches!(r, Ok(IngestOutcome::Stored { to_fold: true, .. })));
            if folds {
                // Full: an announcement is pending, and covers this group too.
                let _ = to_fold.try_send(());
            }
            for ((_, reply), result) in group.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    /// Sends the announcements the committer asks for, one at a time, until it is gone. A
    /// lost announcement only delays the fold until the leader's next poll.
    async fn fold_announcer(pool: Pool<DB>, mut asks: mpsc::Receiver<()>) {
        while asks.recv().await.is_some() {
            if let Err(err) = DB::announce_fold(&pool).await {
                tracing::debug!(error = %err, "store: fold announcement not sent");
            }
        }
    }

    /// One fold batch in one write transaction (see [`Store::fold`]).
    async fn fold(&self, limit: u32) -> Result<FoldReport, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let report = Self::fold_batch(&mut tx, limit, &*self.planner).await?;
        tx.commit().await?;
        w.committed();
        Ok(report)
    }

    /// One transaction for the whole group; one result per delivery, in order. A failure fails
    /// the whole group: nothing of it was committed, and every caller answers 503.
    async fn commit_group(
        pool: &Pool<DB>,
        health: &WriteHealth,
        group: &[(Delivery, Reply)],
        planner: &dyn Planner,
    ) -> Vec<Result<IngestOutcome, StoreError>> {
        let deliveries: Vec<&Delivery> = group.iter().map(|(d, _)| d).collect();
        let result = async {
            let mut w = WriteConn::acquire(pool, health).await?;
            let mut tx = w.begin().await?;
            let outcomes = Self::apply_group(&mut tx, &deliveries, planner).await?;
            tx.commit().await?;
            w.committed();
            Ok::<_, StoreError>(outcomes)
        }
        .await;
        match result {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => group
                .iter()
                .map(|_| Err(StoreError::Commit(e.to_string())))
                .collect(),
        }
    }

    /// Commits a transaction that needs room (a row with a [`PROBE_BYTES`] pad, deleted
    /// again): whether a group of deliveries could commit now. Run by [`Store::ping`] while
    /// writes fail.
    async fn probe_write(&self) -> Result<(), StoreError> {
        // Bytes that do not compress, so PostgreSQL's TOAST cannot make the row small.
        let pad: Vec<u8> = (0..PROBE_BYTES as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        sqlx::query("INSERT INTO store_probe (id, pad) VALUES (1, $1)")
            .bind(pad)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM store_probe")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        w.committed();
        Ok(())
    }
}

/// The route decision in an `issue_channels` row's `payload` (the issue's latest alert there).
fn target_of(issue_key: &str, payload: &str) -> Result<crate::routing::Target, StoreError> {
    match serde_json::from_str(payload) {
        Ok(OutboxMessage::Alert { target, .. }) => Ok(target),
        _ => Err(StoreError::Corrupt(format!(
            "issue_channels {issue_key}: not an alert"
        ))),
    }
}

/// A message as stored in an outbox row's `payload`.
fn to_json(message: &OutboxMessage) -> Result<String, StoreError> {
    serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Every method runs the inherent method of the same name (inherent methods are found before
/// trait methods): ingest in `ingest.rs`, the outbox in `outbox.rs`, reads in `queries.rs`,
/// the status page and dead letters in `status.rs`.
#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Value<DB>,
    Option<i64>: Value<DB>,
    String: Value<DB>,
    Option<String>: Value<DB>,
    Vec<u8>: Value<DB>,
    Option<Vec<u8>>: Value<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        if self.health.failing() {
            self.probe_write().await?;
        }
        Ok(())
    }

    async fn ingest(&self, d: Delivery) -> Result<IngestOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ingest
            .send((d, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn is_known_delivery(&self, body_sha256: &[u8; 32]) -> Result<bool, StoreError> {
        self.is_known_delivery(body_sha256).await
    }

    async fn fold(&self, limit: u32) -> Result<FoldReport, StoreError> {
        self.fold(limit).await
    }

    async fn fold_backlog(&self) -> Result<FoldBacklog, StoreError> {
        self.fold_backlog().await
    }

    async fn release_cooldowns(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.release_cooldowns(now_ms).await
    }

    async fn mute(
        &self,
        issue_key: &str,
        channel: &str,
        until_ms: i64,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.mute(issue_key, channel, until_ms, by, now_ms).await
    }

    async fn unmute(
        &self,
        issue_key: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.unmute(issue_key, channel, now_ms).await
    }

    async fn mutes(&self, now_ms: i64) -> Result<Vec<super::Mute>, StoreError> {
        self.mutes(now_ms).await
    }

    async fn mute_of(
        &self,
        issue_key: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<Option<super::Mute>, StoreError> {
        self.mute_of(issue_key, channel, now_ms).await
    }

    async fn outbox_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.outbox_depths().await
    }

    async fn channel_outbox(&self, channel: &str) -> Result<Vec<OutboxItem>, StoreError> {
        self.channel_outbox(channel).await
    }

    async fn replace_with_rollup(
        &self,
        channel: &str,
        ids: &[i64],
        rollup: &RollUp,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.replace_with_rollup(channel, ids, rollup, now_ms).await
    }

    async fn thread_ts(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Option<SlackThread>, StoreError> {
        self.thread_ts(issue_key, channel).await
    }

    async fn issue_stats(&self, issue_key: &str, now_ms: i64) -> Result<IssueStats, StoreError> {
        self.issue_stats(issue_key, now_ms).await
    }

    async fn due_outbox(
        &self,
        now_ms: i64,
        per_channel: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.due_outbox(now_ms, per_channel).await
    }

    async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        self.next_due_at().await
    }

    async fn mark_posted(
        &self,
        id: i64,
        now_ms: i64,
        slack_ts: Option<&str>,
        slack_channel_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.mark_posted(id, now_ms, slack_ts, slack_channel_id)
            .await
    }

    async fn reschedule(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.reschedule(id, attempts, next_attempt_ms, error).await
    }

    async fn dead_letter(
        &self,
        id: i64,
        attempts: u32,
        now_ms: i64,
        why: &crate::slack::Refusal,
    ) -> Result<(), StoreError> {
        self.dead_letter(id, attempts, now_ms, why).await
    }

    async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters(filter, limit).await
    }

    async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.replay_dead_letters(filter, now_ms).await
    }

    async fn recent_deliveries(
        &self,
        before: Option<DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<DeliveryTrail>, StoreError> {
        self.recent_deliveries(before, limit).await
    }

    async fn channel_now(
        &self,
        channel: &str,
        now_ms: i64,
        since_ms: i64,
    ) -> Result<ChannelNow, StoreError> {
        self.channel_now(channel, now_ms, since_ms).await
    }

    async fn channel_days(
        &self,
        channel: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<ChannelDay>, StoreError> {
        self.channel_days(channel, from_day, to_day).await
    }

    async fn channel_issues(
        &self,
        channel: &str,
        from_day: i64,
    ) -> Result<Vec<IssueInfo>, StoreError> {
        self.channel_issues(channel, from_day).await
    }

    async fn channel_activity(
        &self,
        channel: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ChannelActivity, StoreError> {
        self.channel_activity(channel, from_ms, to_ms).await
    }

    async fn queue_digest(
        &self,
        channel: &str,
        period_end_ms: i64,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.queue_digest(channel, period_end_ms, message, now_ms)
            .await
    }

    async fn queue_notice(
        &self,
        subject: &str,
        every_ms: i64,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.queue_notice(subject, every_ms, channel, message, now_ms)
            .await
    }

    async fn resolve_notice(
        &self,
        subject: &str,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.resolve_notice(subject, channel, message, now_ms).await
    }

    async fn last_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        self.last_delivery_at().await
    }

    async fn first_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        self.first_delivery_at().await
    }

    async fn dead_letter_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.dead_letter_counts().await
    }

    async fn channel_totals(&self, channel: &str) -> Result<ChannelTotals, StoreError> {
        self.channel_totals(channel).await
    }

    async fn prune(&self, now_ms: i64, retention_days: u32) -> Result<u64, StoreError> {
        self.prune(now_ms, retention_days).await
    }

    async fn record_click(
        &self,
        click: &super::NewClick,
        now_ms: i64,
    ) -> Result<super::ClickRecorded, StoreError> {
        self.record_click(click, now_ms).await
    }

    async fn due_clicks(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<super::StoredClick>, StoreError> {
        self.due_clicks(now_ms, limit).await
    }

    async fn next_click_at(&self) -> Result<Option<i64>, StoreError> {
        self.next_click_at().await
    }

    async fn click_step(&self, id: i64, step: u32) -> Result<(), StoreError> {
        self.click_step(id, step).await
    }

    async fn retry_click(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.retry_click(id, attempts, next_attempt_ms, error).await
    }

    async fn finish_click(
        &self,
        id: i64,
        outcome: &str,
        failed: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.finish_click(id, outcome, failed, now_ms).await
    }

    async fn issue_message(
        &self,
        slack_channel_id: &str,
        ts: &str,
    ) -> Result<Option<super::IssueMessage>, StoreError> {
        self.issue_message(slack_channel_id, ts).await
    }

    async fn issue_messages(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Vec<super::IssueMessage>, StoreError> {
        self.issue_messages(issue_key, channel).await
    }

    async fn set_issue_state(
        &self,
        issue_key: &str,
        state: &crate::issue::IssueState,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.set_issue_state(issue_key, state, now_ms).await
    }
}
