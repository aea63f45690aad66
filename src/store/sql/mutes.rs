//! Mutes ("Mute here", `sluice mute`): set, ended now, ended at expiry by the delivery
//! worker's pass, and read. Ending a mute that held occurrences queues its one follow-up
//! (decided by the store's [`Planner::mute_ended`]) in the same transaction that deletes the mute, so it is
//! queued exactly once. What a mute holds is written by group commit (`ingest.rs`).
//!
//! Every write takes the pair's lock first ([`Backend::lock_pairs`]), as ingest does, and its
//! first statement writes: on SQLite, where `sluice mute` may write while the service runs, a
//! transaction that read first could not then write.

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Row, Type};

use super::outbox::RELEASE_BATCH;
use super::{Backend, SqlStore, Value};
use crate::plan::Planner;
use crate::store::writer::WriteConn;
use crate::store::{Mute, StoreError};

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
    pub(super) async fn mute(
        &self,
        issue_key: &str,
        channel: &str,
        until_ms: i64,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if until_ms <= now_ms {
            return self.unmute(issue_key, channel, now_ms).await.map(|_| ());
        }
        let key = (issue_key.to_string(), channel.to_string());
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        DB::lock_pairs(&mut *tx, std::slice::from_ref(&key)).await?;
        // A mute whose time was up ends as at its expiry; a running one is moved.
        let ended = Self::end_mute(&mut tx, &key, now_ms, now_ms, &*self.planner).await?;
        sqlx::query(
            "INSERT INTO mutes (issue_key, channel, until_at, muted_by, muted_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (issue_key, channel) DO UPDATE SET
                until_at = excluded.until_at,
                muted_by = excluded.muted_by,
                muted_at = excluded.muted_at",
        )
        .bind(issue_key)
        .bind(channel)
        .bind(until_ms)
        .bind(by)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        // The messages show the mute.
        let refreshed = Self::queue_refresh_if_shown(&mut tx, issue_key, channel, now_ms).await?;
        if ended == Some(true) || refreshed {
            DB::announce_queued(&mut *tx).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(())
    }

    pub(super) async fn unmute(
        &self,
        issue_key: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = (issue_key.to_string(), channel.to_string());
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        DB::lock_pairs(&mut *tx, std::slice::from_ref(&key)).await?;
        let ended = Self::end_mute(&mut tx, &key, i64::MAX, now_ms, &*self.planner).await?;
        if ended == Some(true) {
            DB::announce_queued(&mut *tx).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(ended.is_some())
    }

    /// Ends every mute whose time is up at `now_ms`; returns how many follow-ups it queued.
    pub(super) async fn release_mutes(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut released = 0;
        loop {
            let (due, done) = self.release_some_mutes(now_ms).await?;
            released += done;
            if due < RELEASE_BATCH {
                return Ok(released);
            }
        }
    }

    /// Ends at most [`RELEASE_BATCH`] mutes whose time is up in one transaction; returns how
    /// many were due and how many follow-ups it queued.
    async fn release_some_mutes(&self, now_ms: i64) -> Result<(usize, usize), StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let due: Vec<(String, String)> = sqlx::query(
            "SELECT issue_key, channel FROM mutes WHERE until_at <= $1
             ORDER BY issue_key, channel LIMIT 200",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get("issue_key"), r.get("channel")))
        .collect();
        if due.is_empty() {
            tx.rollback().await?;
            w.committed();
            return Ok((0, 0));
        }
        DB::lock_pairs(&mut *tx, &due).await?;
        let mut queued = 0;
        for key in &due {
            // Moved meanwhile (`mute` again): it is not up any more, and stays.
            if Self::end_mute(&mut tx, key, now_ms, now_ms, &*self.planner).await? == Some(true) {
                queued += 1;
            }
        }
        tx.commit().await?;
        w.committed();
        Ok((due.len(), queued))
    }

    /// Deletes the mute of `key` if it ends by `ended_by` (Unix ms; [`i64::MAX`]: whenever
    /// it ends) and, if it held occurrences, queues the follow-up that carries them at
    /// `now_ms`, and a refresh of the messages that showed the mute. `None`: no such mute;
    /// `Some(queued)`: ended, and whether anything was queued.
    async fn end_mute(
        conn: &mut DB::Connection,
        key: &(String, String),
        ended_by: i64,
        now_ms: i64,
        planner: &dyn Planner,
    ) -> Result<Option<bool>, StoreError> {
        let (issue_key, channel) = key;
        let Some(row) = sqlx::query(
            "DELETE FROM mutes WHERE issue_key = $1 AND channel = $2 AND until_at <= $3
             RETURNING until_at, held, held_since",
        )
        .bind(issue_key)
        .bind(channel)
        .bind(ended_by)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let mute = Self::mute_state(&row);
        // The messages no longer show the mute.
        let refreshed = Self::queue_refresh_if_shown(conn, issue_key, channel, now_ms).await?;
        if mute.held == 0 {
            return Ok(Some(refreshed));
        }
        let pair = sqlx::query(
            "SELECT cooldown_secs, cooldown_until, folded, folded_since, window_count, spiked,
                    payload
             FROM issue_channels WHERE issue_key = $1 AND channel = $2",
        )
        .bind(issue_key)
        .bind(channel)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "mutes {issue_key} in {channel}: held occurrences of no stored alert"
            ))
        })?;
        let Some(follow_up) = planner.mute_ended(&Self::pair_state(&pair), &mute, now_ms) else {
            return Ok(Some(refreshed));
        };
        Self::queue_follow_up(conn, key, pair.get("payload"), follow_up, now_ms).await?;
        Ok(Some(true))
    }

    pub(super) async fn mutes(&self, now_ms: i64) -> Result<Vec<Mute>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.issue_key, m.channel, m.until_at, m.muted_by, m.held, i.title
             FROM mutes AS m LEFT JOIN issues AS i ON i.issue_key = m.issue_key
             WHERE m.until_at > $1 ORDER BY m.until_at, m.issue_key, m.channel",
        )
        .bind(now_ms)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(Self::decode_mute).collect())
    }

    pub(super) async fn mute_of(
        &self,
        issue_key: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<Option<Mute>, StoreError> {
        let row = sqlx::query(
            "SELECT m.issue_key, m.channel, m.until_at, m.muted_by, m.held, i.title
             FROM mutes AS m LEFT JOIN issues AS i ON i.issue_key = m.issue_key
             WHERE m.issue_key = $1 AND m.channel = $2 AND m.until_at > $3",
        )
        .bind(issue_key)
        .bind(channel)
        .bind(now_ms)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.as_ref().map(Self::decode_mute))
    }

    /// A [`Mute`] read back from `mutes` joined with the issue's `title`.
    fn decode_mute(r: &DB::Row) -> Mute {
        Mute {
            issue_key: r.get("issue_key"),
            channel: r.get("channel"),
            until_ms: r.get("until_at"),
            by: r.get("muted_by"),
            held: r.get::<i64, _>("held").max(0) as u64,
            title: r.get("title"),
        }
    }
}
