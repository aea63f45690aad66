//! The outbox after ingest: rows due and their fate (sent, rescheduled with the channel held,
//! dead-lettered), roll-ups replacing a backlog, follow-ups for ended cooldowns (decided by
//! [`Planner::follow_up`](crate::plan::Planner::follow_up); ended mutes are released first, in `mutes.rs`), Web API threads, and digests and ops notices queued with their
//! once-only records.

use std::collections::HashSet;

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Row, Type};

use super::{Backend, SqlStore, Value, to_json};
use crate::plan::{FollowUp, RollUp};
use crate::store::writer::WriteConn;
use crate::store::{OutboxItem, OutboxMessage, SlackThread, StoreError};

/// Most ended cooldowns released in one transaction (the `LIMIT` in `release_some_cooldowns`).
pub(super) const RELEASE_BATCH: usize = 200;

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
    pub(super) async fn release_cooldowns(&self, now_ms: i64) -> Result<usize, StoreError> {
        // Ended mutes first: the cooldown follow-ups they held back are then due.
        let mut released = self.release_mutes(now_ms).await?;
        loop {
            let (due, done) = self.release_some_cooldowns(now_ms).await?;
            released += done;
            if due < RELEASE_BATCH {
                return Ok(released);
            }
        }
    }

    /// Releases at most [`RELEASE_BATCH`] ended cooldowns in one transaction (so the pair
    /// locks it holds stay few); returns how many were due and how many it released. A pair
    /// a mute holds waits for the mute's end.
    async fn release_some_cooldowns(&self, now_ms: i64) -> Result<(usize, usize), StoreError> {
        const DUE: &str = "SELECT issue_key, channel, cooldown_secs, cooldown_until, folded,
                                  folded_since, window_count, spiked, payload
             FROM issue_channels AS ic WHERE folded > 0 AND cooldown_until <= $1
               AND NOT EXISTS (SELECT 1 FROM mutes AS m
                               WHERE m.issue_key = ic.issue_key AND m.channel = ic.channel
                                 AND m.until_at > $1)
             ORDER BY issue_key, channel LIMIT 200";
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let due: Vec<(String, String)> = sqlx::query(DUE)
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
        let found = due.len();
        // Lock, then read again: a delivery may have folded one more meanwhile.
        DB::lock_pairs(&mut *tx, &due).await?;
        let due: HashSet<(String, String)> = due.into_iter().collect();
        let rows = sqlx::query(DUE).bind(now_ms).fetch_all(&mut *tx).await?;
        let mut released = 0;
        for r in &rows {
            let key: (String, String) = (r.get("issue_key"), r.get("channel"));
            if !due.contains(&key) {
                continue;
            }
            released += 1;
            let follow_up = self.planner.follow_up(&Self::pair_state(r), now_ms);
            Self::queue_follow_up(&mut tx, &key, r.get("payload"), follow_up, now_ms).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok((found, released))
    }

    /// Queues the follow-up of the pair `(issue_key, channel)`, whose stored alert is
    /// `payload`, and writes the pair's next cooldown.
    pub(super) async fn queue_follow_up(
        conn: &mut DB::Connection,
        (issue_key, channel): &(String, String),
        payload: String,
        follow_up: FollowUp,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let OutboxMessage::Alert { alert, target } = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("issue_channels {issue_key}: {e}")))?
        else {
            return Err(StoreError::Corrupt(format!(
                "issue_channels {issue_key}: not an alert"
            )));
        };
        let message = OutboxMessage::FollowUp {
            alert,
            target,
            folded: follow_up.folded,
            since_ms: follow_up.since_ms,
            reason: follow_up.reason,
        };
        let occurrences = follow_up.folded.min(i64::MAX as u64) as i64;
        let payload = to_json(&message)?;
        Self::insert_outbox(
            conn,
            channel,
            issue_key,
            message.kind(),
            &payload,
            occurrences,
            now_ms,
        )
        .await?;
        let next = follow_up.next;
        sqlx::query(
            "UPDATE issue_channels SET folded = $1, folded_since = $2, cooldown_until = $3,
                                       window_count = $6, spiked = $7
             WHERE issue_key = $4 AND channel = $5",
        )
        .bind(next.folded.min(i64::MAX as u64) as i64)
        .bind(next.folded_since_ms)
        .bind(next.cooldown_until_ms)
        .bind(issue_key)
        .bind(channel)
        .bind(next.window.min(i64::MAX as u64) as i64)
        .bind(next.spiked.min(i64::MAX as u64) as i64)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    pub(super) async fn outbox_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT channel, COUNT(*) AS n FROM outbox GROUP BY channel")
            .fetch_all(&self.writer)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("channel"), r.get::<i64, _>("n").max(0) as u64))
            .collect())
    }

    pub(super) async fn channel_outbox(
        &self,
        channel: &str,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, channel, issue_key, payload, occurrences, created_at, attempts
             FROM outbox WHERE channel = $1 ORDER BY id",
        )
        .bind(channel)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(Self::decode_outbox).collect()
    }

    pub(super) async fn replace_with_rollup(
        &self,
        channel: &str,
        ids: &[i64],
        rollup: &RollUp,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let mut next_attempt = now_ms;
        let mut attempts = 0i64;
        for id in ids {
            let row = sqlx::query(
                "DELETE FROM outbox WHERE id = $1 AND channel = $2
                 RETURNING next_attempt_at, attempts",
            )
            .bind(id)
            .bind(channel)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                w.committed();
                return Ok(false);
            };
            next_attempt = next_attempt.max(row.get("next_attempt_at"));
            attempts = attempts.max(row.get("attempts"));
        }
        let message = OutboxMessage::RollUp(rollup.clone());
        // The roll-up takes the place (the id) of the oldest message it replaces, so that it
        // goes out before anything queued after that one. It stands for no one delivery (its
        // `delivery` is NULL): the deliveries of the rows it replaced were rolled up.
        sqlx::query(
            "INSERT INTO outbox (id, channel, issue_key, kind, payload, occurrences, created_at,
                                 next_attempt_at, attempts)
             VALUES ($1, $2, '', $3, $4, $5, $6, $7, $8)",
        )
        .bind(ids.iter().min().copied())
        .bind(channel)
        .bind(message.kind())
        .bind(to_json(&message)?)
        .bind(rollup.occurrences.min(i64::MAX as u64) as i64)
        .bind(rollup.since_ms)
        .bind(next_attempt)
        .bind(attempts)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO channel_counters (channel, messages_rolled_up) VALUES ($1, $2)
             ON CONFLICT (channel) DO UPDATE SET
                messages_rolled_up = channel_counters.messages_rolled_up + excluded.messages_rolled_up",
        )
        .bind(channel)
        .bind(ids.len() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        w.committed();
        Ok(true)
    }

    pub(super) async fn thread_ts(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Option<SlackThread>, StoreError> {
        let row = sqlx::query(
            "SELECT slack_ts, slack_channel_id FROM issue_channels
             WHERE issue_key = $1 AND channel = $2",
        )
        .bind(issue_key)
        .bind(channel)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.and_then(|r| {
            Some(SlackThread {
                ts: r.get::<Option<String>, _>("slack_ts")?,
                channel_id: r.get("slack_channel_id"),
            })
        }))
    }

    pub(super) async fn due_outbox(
        &self,
        now_ms: i64,
        per_channel: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, channel, issue_key, payload, occurrences, created_at, attempts
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY channel ORDER BY id) AS rn
                   FROM outbox WHERE next_attempt_at <= $1
                     AND NOT EXISTS (SELECT 1 FROM channel_counters AS held
                                     WHERE held.channel = outbox.channel
                                       AND held.held_until > $1)) AS numbered
             WHERE rn <= $2 ORDER BY id",
        )
        .bind(now_ms)
        .bind(i64::from(per_channel))
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(Self::decode_outbox).collect()
    }

    pub(super) async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(t) AS t FROM (
                SELECT MIN(CASE WHEN held.held_until > o.next_attempt_at THEN held.held_until
                                ELSE o.next_attempt_at END) AS t
                FROM outbox AS o LEFT JOIN channel_counters AS held ON held.channel = o.channel
                UNION ALL
                SELECT MIN(cooldown_until) AS t FROM issue_channels AS ic
                WHERE folded > 0
                  AND NOT EXISTS (SELECT 1 FROM mutes AS m
                                  WHERE m.issue_key = ic.issue_key AND m.channel = ic.channel)
                UNION ALL
                SELECT MIN(until_at) AS t FROM mutes) AS due",
        )
        .fetch_one(&self.writer)
        .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    pub(super) async fn mark_posted(
        &self,
        id: i64,
        now_ms: i64,
        slack_ts: Option<&str>,
        slack_channel_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        sqlx::query(
            "INSERT INTO sent (id, channel, issue_key, kind, occurrences, attempts, created_at,
                               sent_at, slack_ts, delivery)
             SELECT id, channel, issue_key, kind, occurrences, attempts + 1, created_at, $1, $2,
                    delivery
             FROM outbox WHERE id = $3",
        )
        .bind(now_ms)
        .bind(slack_ts)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // The channel's posted totals, in the same commit (the accounting reads these, not
        // `sent`). `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join's.
        sqlx::query(
            "INSERT INTO channel_counters (channel, messages_posted, occurrences_posted,
                                           last_sent_at, last_digest_at)
             SELECT channel, 1, occurrences, $1, CASE WHEN kind = 'digest' THEN $1 END
             FROM outbox WHERE id = $2
             ON CONFLICT (channel) DO UPDATE SET
                messages_posted = channel_counters.messages_posted + 1,
                occurrences_posted = channel_counters.occurrences_posted
                                     + excluded.occurrences_posted,
                last_sent_at = CASE WHEN channel_counters.last_sent_at > excluded.last_sent_at
                               THEN channel_counters.last_sent_at ELSE excluded.last_sent_at END,
                last_digest_at = COALESCE(excluded.last_digest_at, channel_counters.last_digest_at)",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let (Some(ts), Some(channel_id)) = (slack_ts, slack_channel_id) {
            // Every full message about an issue, for in-place updates of its state.
            sqlx::query(
                "INSERT INTO issue_messages (slack_channel_id, ts, channel, issue_key, payload,
                                             posted_at)
                 SELECT $1, $2, channel, issue_key, payload, $3 FROM outbox
                 WHERE id = $4 AND kind = 'alert' AND issue_key <> ''
                 ON CONFLICT DO NOTHING",
            )
            .bind(channel_id)
            .bind(ts)
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if slack_ts.is_some() {
            sqlx::query(
                "UPDATE issue_channels SET slack_ts = $1, slack_channel_id = $2
                 WHERE (issue_key, channel) =
                       (SELECT issue_key, channel FROM outbox WHERE id = $3 AND kind = 'alert')",
            )
            .bind(slack_ts)
            .bind(slack_channel_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        w.committed();
        Ok(())
    }

    pub(super) async fn reschedule(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let channel: Option<String> = sqlx::query(
            "UPDATE outbox SET attempts = $1, last_error = $2 WHERE id = $3 RETURNING channel",
        )
        .bind(i64::from(attempts))
        .bind(error)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get("channel"));
        if let Some(channel) = channel {
            // The hold is the channel's, read by `due_outbox`: rows queued meanwhile, by any
            // replica, wait for it too.
            sqlx::query(
                "INSERT INTO channel_counters (channel, held_until) VALUES ($1, $2)
                 ON CONFLICT (channel) DO UPDATE SET
                    held_until = CASE WHEN excluded.held_until > channel_counters.held_until
                                      THEN excluded.held_until
                                      ELSE channel_counters.held_until END",
            )
            .bind(&channel)
            .bind(next_attempt_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(())
    }

    pub(super) async fn dead_letter(
        &self,
        id: i64,
        attempts: u32,
        now_ms: i64,
        why: &crate::slack::Refusal,
    ) -> Result<(), StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (id, channel, issue_key, kind, payload, occurrences,
                                       attempts, error, reason, created_at, dead_at, delivery)
             SELECT id, channel, issue_key, kind, payload, occurrences, $1, $2, $5,
                    created_at, $3, delivery
             FROM outbox WHERE id = $4",
        )
        .bind(i64::from(attempts))
        .bind(&why.detail)
        .bind(now_ms)
        .bind(id)
        .bind(&why.code)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        w.committed();
        Ok(())
    }

    pub(super) async fn queue_digest(
        &self,
        channel: &str,
        period_end_ms: i64,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let new = sqlx::query(
            "INSERT INTO digest_runs (channel, period_end, queued_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(channel)
        .bind(period_end_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map(|r| DB::rows_affected(&r))?
            == 1;
        if new {
            Self::queue_unbound_row(&mut tx, channel, message, now_ms).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(new)
    }

    pub(super) async fn queue_notice(
        &self,
        subject: &str,
        every_ms: i64,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let due = sqlx::query(
            "INSERT INTO ops_notices (subject, reported_at) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET reported_at = excluded.reported_at
             WHERE ops_notices.reported_at <= $3",
        )
        .bind(subject)
        .bind(now_ms)
        .bind(now_ms.saturating_sub(every_ms))
        .execute(&mut *tx)
        .await
        .map(|r| DB::rows_affected(&r))?
            == 1;
        if due {
            Self::queue_unbound_row(&mut tx, channel, message, now_ms).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(due)
    }

    pub(super) async fn resolve_notice(
        &self,
        subject: &str,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let reported = sqlx::query("DELETE FROM ops_notices WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map(|r| DB::rows_affected(&r))?
            == 1;
        if reported {
            Self::queue_unbound_row(&mut tx, channel, message, now_ms).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(reported)
    }

    /// Queues `message` for `channel` as a row that stands for no occurrence and no issue (a
    /// notice or a digest).
    async fn queue_unbound_row(
        conn: &mut DB::Connection,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let payload = to_json(message)?;
        Self::insert_outbox(conn, channel, "", message.kind(), &payload, 0, now_ms).await
    }

    /// Queues one outbox row, due now.
    pub(super) async fn insert_outbox(
        conn: &mut DB::Connection,
        channel: &str,
        issue_key: &str,
        kind: &str,
        payload: &str,
        occurrences: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO outbox (channel, issue_key, kind, payload, occurrences, created_at,
                                 next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(channel)
        .bind(issue_key)
        .bind(kind)
        .bind(payload)
        .bind(occurrences)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// An outbox row read back.
    pub(super) fn decode_outbox(r: &DB::Row) -> Result<OutboxItem, StoreError> {
        let payload: String = r.get("payload");
        let message: OutboxMessage = serde_json::from_str(&payload).map_err(|e| {
            StoreError::Corrupt(format!("outbox row {}: {e}", r.get::<i64, _>("id")))
        })?;
        Ok(OutboxItem {
            id: r.get("id"),
            channel: r.get("channel"),
            issue_key: r.get("issue_key"),
            message,
            occurrences: r.get::<i64, _>("occurrences").max(0) as u64,
            created_at_ms: r.get("created_at"),
            attempts: r.get::<i64, _>("attempts").clamp(0, u32::MAX as i64) as u32,
        })
    }
}
