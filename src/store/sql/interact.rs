//! Two-way Slack in the store: the clicks `POST /slack/interactions` committed and their
//! progress, every message posted about an issue (for in-place updates), the issue's state
//! set from a click, and the channels an issue was posted in (where its notices go).

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Row, Type};

use super::{Backend, SqlStore, Value, to_json};
use crate::issue::IssueState;
use crate::store::writer::WriteConn;
use crate::store::{ClickRecorded, IssueMessage, NewClick, OutboxMessage, StoreError, StoredClick};

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
    pub(super) async fn record_click(
        &self,
        click: &NewClick,
        now_ms: i64,
    ) -> Result<ClickRecorded, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        // Either unique key refusing the row (the same trigger, or the same action pending)
        // makes it a repeat: nothing is inserted and nothing else changes.
        let inserted = sqlx::query(
            "INSERT INTO clicks (trigger_id, pending_key, payload, received_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(click.trigger_id.as_str())
        .bind(click.pending_key.as_str())
        .bind(click.payload.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let new = DB::rows_affected(&inserted) == 1;
        if new {
            DB::announce_queued(&mut *tx).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(if new {
            ClickRecorded::New
        } else {
            ClickRecorded::Repeat
        })
    }

    pub(super) async fn due_clicks(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredClick>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, payload, step, attempts, received_at FROM clicks
             WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredClick {
                id: r.get("id"),
                payload: r.get("payload"),
                step: r.get::<i64, _>("step").clamp(0, u32::MAX as i64) as u32,
                attempts: r.get::<i64, _>("attempts").clamp(0, u32::MAX as i64) as u32,
                received_at_ms: r.get("received_at"),
            })
            .collect())
    }

    pub(super) async fn next_click_at(&self) -> Result<Option<i64>, StoreError> {
        let row =
            sqlx::query("SELECT MIN(next_attempt_at) AS t FROM clicks WHERE state = 'pending'")
                .fetch_one(&self.writer)
                .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    /// Runs one statement on a click row in its own transaction.
    async fn update_click(
        &self,
        sql: &'static str,
        binds: ClickBinds<'_>,
    ) -> Result<(), StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        sqlx::query(sql)
            .bind(binds.a)
            .bind(binds.b)
            .bind(binds.text.map(str::to_string))
            .bind(binds.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        w.committed();
        Ok(())
    }

    pub(super) async fn click_step(&self, id: i64, step: u32) -> Result<(), StoreError> {
        self.update_click(
            "UPDATE clicks SET step = $1, attempts = $2, last_error = $3 WHERE id = $4",
            ClickBinds {
                a: i64::from(step),
                b: 0,
                text: None,
                id,
            },
        )
        .await
    }

    pub(super) async fn retry_click(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.update_click(
            "UPDATE clicks SET attempts = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4",
            ClickBinds {
                a: i64::from(attempts),
                b: next_attempt_ms,
                text: Some(error),
                id,
            },
        )
        .await
    }

    pub(super) async fn finish_click(
        &self,
        id: i64,
        outcome: &str,
        failed: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.update_click(
            "UPDATE clicks SET state = CASE WHEN $1 = 1 THEN 'failed' ELSE 'done' END,
                               done_at = $2, outcome = $3, pending_key = NULL
             WHERE id = $4",
            ClickBinds {
                a: i64::from(failed),
                b: now_ms,
                text: Some(outcome),
                id,
            },
        )
        .await
    }

    pub(super) async fn issue_message(
        &self,
        slack_channel_id: &str,
        ts: &str,
    ) -> Result<Option<IssueMessage>, StoreError> {
        let row = sqlx::query(
            "SELECT slack_channel_id, ts, channel, issue_key, payload, posted_at
             FROM issue_messages WHERE slack_channel_id = $1 AND ts = $2",
        )
        .bind(slack_channel_id)
        .bind(ts)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(decode_message).transpose()
    }

    pub(super) async fn issue_messages(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Vec<IssueMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT slack_channel_id, ts, channel, issue_key, payload, posted_at
             FROM issue_messages WHERE issue_key = $1 AND channel = $2 ORDER BY posted_at, ts",
        )
        .bind(issue_key)
        .bind(channel)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(decode_message).collect()
    }

    pub(super) async fn set_issue_state(
        &self,
        issue_key: &str,
        state: &IssueState,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let status = super::group::status_json(state);
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        sqlx::query(
            "UPDATE issues SET
                previous_status = CASE WHEN status = $1 THEN previous_status ELSE status END,
                status = $1, assignee = $2, state_by = $3, state_at = $4
             WHERE issue_key = $5",
        )
        .bind(status)
        .bind(state.assignee.clone())
        .bind(state.by.clone())
        .bind(state.at_ms.unwrap_or(now_ms))
        .bind(issue_key)
        .execute(&mut *tx)
        .await?;
        let channels: Vec<String> = sqlx::query(
            "SELECT DISTINCT channel FROM issue_messages WHERE issue_key = $1 ORDER BY channel",
        )
        .bind(issue_key)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get("channel"))
        .collect();
        let payload = to_json(&OutboxMessage::Refresh)?;
        for channel in &channels {
            Self::insert_outbox(&mut tx, channel, issue_key, "refresh", &payload, 0, now_ms)
                .await?;
        }
        if !channels.is_empty() {
            DB::announce_queued(&mut *tx).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(channels)
    }

    /// Queues a [`OutboxMessage::Refresh`] of the issue's messages in `channel`, if Sluice
    /// posted any there (a mute of it began or ended); returns whether it did.
    pub(super) async fn queue_refresh_if_shown(
        conn: &mut DB::Connection,
        issue_key: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let payload = to_json(&OutboxMessage::Refresh)?;
        let queued = sqlx::query(
            "INSERT INTO outbox (channel, issue_key, kind, payload, occurrences, created_at,
                                 next_attempt_at)
             SELECT $1, $2, 'refresh', $3, 0, $4, $4
             WHERE EXISTS (SELECT 1 FROM issue_messages WHERE issue_key = $2 AND channel = $1)",
        )
        .bind(channel)
        .bind(issue_key)
        .bind(payload)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        Ok(DB::rows_affected(&queued) > 0)
    }
}

/// The values a click update binds, in order: `$1`, `$2`, `$3`, and the click's id as `$4`.
struct ClickBinds<'a> {
    a: i64,
    b: i64,
    text: Option<&'a str>,
    id: i64,
}

/// An `issue_messages` row read back.
fn decode_message<R: Row>(r: &R) -> Result<IssueMessage, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + Type<R::Database>,
{
    let payload: String = r.get("payload");
    let message = serde_json::from_str(&payload).map_err(|e| {
        StoreError::Corrupt(format!("issue_messages {}: {e}", r.get::<String, _>("ts")))
    })?;
    Ok(IssueMessage {
        slack_channel_id: r.get("slack_channel_id"),
        ts: r.get("ts"),
        channel: r.get("channel"),
        issue_key: r.get("issue_key"),
        message,
        posted_at_ms: r.get("posted_at"),
    })
}
