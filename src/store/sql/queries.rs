//! Reads for messages, digests and metrics (an issue's counts, what a channel received per
//! day, its activity and totals, dead letters per error), and pruning past retention.

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Row, Type};

use super::{Backend, SqlStore, Value};
use crate::counts::{DAY_MS, IssueStats, MONTH_DAYS, day_of};
use crate::store::writer::WriteConn;
use crate::store::{ChannelActivity, ChannelDay, ChannelTotals, IssueInfo, StoreError};

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
    pub(super) async fn issue_stats(
        &self,
        issue_key: &str,
        now_ms: i64,
    ) -> Result<IssueStats, StoreError> {
        let today = day_of(now_ms);
        let rows = sqlx::query(
            "SELECT day, CAST(SUM(count) AS BIGINT) AS n FROM day_counts
             WHERE issue_key = $1 AND day > $2 AND day <= $3 GROUP BY day",
        )
        .bind(issue_key)
        .bind(today - MONTH_DAYS as i64)
        .bind(today)
        .fetch_all(&self.reader)
        .await?;
        let days = rows
            .iter()
            .map(|r| (r.get::<i64, _>("day"), r.get::<i64, _>("n").max(0) as u64));
        let daily = IssueStats::from_days(today, days);
        let meta = sqlx::query(
            "SELECT first_seen, sentry_count, sentry_first_seen, title, issue_url,
                    status, previous_status, assignee, state_by, state_at
             FROM issues WHERE issue_key = $1",
        )
        .bind(issue_key)
        .fetch_optional(&self.reader)
        .await?;
        Ok(IssueStats {
            daily,
            first_seen_ms: meta.as_ref().map(|r| r.get::<i64, _>("first_seen")),
            sentry_count: meta
                .as_ref()
                .and_then(|r| r.get::<Option<i64>, _>("sentry_count"))
                .map(|c| c.max(0) as u64),
            sentry_first_seen_ms: meta
                .as_ref()
                .and_then(|r| r.get::<Option<i64>, _>("sentry_first_seen")),
            title: meta.as_ref().map(|r| r.get::<String, _>("title")),
            issue_url: meta
                .as_ref()
                .and_then(|r| r.get::<Option<String>, _>("issue_url")),
            state: meta.as_ref().and_then(issue_state),
            previous_status: meta
                .as_ref()
                .and_then(|r| r.get::<Option<String>, _>("previous_status"))
                .and_then(|s| serde_json::from_str(&s).ok()),
        })
    }

    pub(super) async fn channel_days(
        &self,
        channel: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<ChannelDay>, StoreError> {
        let rows = sqlx::query(
            "SELECT issue_key, day, project, environment, occurrences, folded, notices
             FROM channel_day_counts WHERE channel = $1 AND day >= $2 AND day <= $3",
        )
        .bind(channel)
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.reader)
        .await?;
        let n = |r: &DB::Row, col: &str| r.get::<i64, _>(col).max(0) as u64;
        Ok(rows
            .iter()
            .map(|r| ChannelDay {
                issue_key: r.get("issue_key"),
                day: r.get("day"),
                project: r.get("project"),
                environment: r.get("environment"),
                occurrences: n(r, "occurrences"),
                folded: n(r, "folded"),
                notices: n(r, "notices"),
            })
            .collect())
    }

    pub(super) async fn channel_issues(
        &self,
        channel: &str,
        from_day: i64,
    ) -> Result<Vec<IssueInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT issue_key, title, level, issue_url, first_seen, resolved_at FROM issues
             WHERE issue_key IN (SELECT issue_key FROM channel_day_counts
                                 WHERE channel = $1 AND day >= $2)",
        )
        .bind(channel)
        .bind(from_day)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| IssueInfo {
                issue_key: r.get("issue_key"),
                title: r.get("title"),
                level: r.get("level"),
                issue_url: r.get("issue_url"),
                first_seen_ms: r.get("first_seen"),
                resolved_at_ms: r.get("resolved_at"),
            })
            .collect())
    }

    pub(super) async fn channel_activity(
        &self,
        channel: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ChannelActivity, StoreError> {
        let row = sqlx::query(
            "SELECT
                (SELECT COUNT(*) FROM sent
                  WHERE channel = $1 AND sent_at >= $2 AND sent_at < $3) AS posted,
                (SELECT CAST(COALESCE(SUM(occurrences), 0) AS BIGINT) FROM sent
                  WHERE channel = $1 AND kind = 'rollup' AND sent_at >= $2 AND sent_at < $3)
                  AS rolled,
                (SELECT COUNT(*) FROM dead_letters
                  WHERE channel = $1 AND dead_at >= $2 AND dead_at < $3) AS dead",
        )
        .bind(channel)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(&self.reader)
        .await?;
        let n = |col: &str| row.get::<i64, _>(col).max(0) as u64;
        Ok(ChannelActivity {
            messages_posted: n("posted"),
            rolled_up_occurrences: n("rolled"),
            dead_letters: n("dead"),
        })
    }

    pub(super) async fn last_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(received_at) AS t FROM deliveries")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    pub(super) async fn first_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MIN(received_at) AS t FROM deliveries")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    pub(super) async fn is_known_delivery(
        &self,
        body_sha256: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS known FROM deliveries WHERE body_sha256 = $1")
            .bind(body_sha256.to_vec())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.is_some())
    }

    pub(super) async fn dead_letter_counts(
        &self,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, reason, COUNT(*) AS n FROM dead_letters
             GROUP BY channel, reason ORDER BY n DESC, channel, reason",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("channel"),
                    r.get("reason"),
                    r.get::<i64, _>("n").max(0) as u64,
                )
            })
            .collect())
    }

    pub(super) async fn channel_totals(&self, channel: &str) -> Result<ChannelTotals, StoreError> {
        let row = sqlx::query(
            "SELECT
                (SELECT COALESCE(MAX(messages_posted), 0) FROM channel_counters
                  WHERE channel = $1) AS mp,
                (SELECT COALESCE(MAX(occurrences_posted), 0) FROM channel_counters
                  WHERE channel = $1) AS op,
                (SELECT COUNT(*) FROM outbox WHERE channel = $1) AS mw,
                (SELECT CAST(COALESCE(SUM(occurrences), 0) AS BIGINT) FROM outbox WHERE channel = $1)
                  + (SELECT CAST(COALESCE(SUM(folded), 0) AS BIGINT) FROM issue_channels
                     WHERE channel = $1 AND folded > 0)
                  AS ow,
                (SELECT COUNT(*) FROM dead_letters WHERE channel = $1) AS md,
                (SELECT CAST(COALESCE(SUM(occurrences), 0) AS BIGINT) FROM dead_letters WHERE channel = $1) AS od,
                (SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM mutes WHERE channel = $1) AS om,
                (SELECT COALESCE(MAX(occurrences_routed), 0) FROM channel_counters
                  WHERE channel = $1) AS routed,
                (SELECT COALESCE(MAX(occurrences_folded), 0) FROM channel_counters
                  WHERE channel = $1) AS folded,
                (SELECT COALESCE(MAX(messages_rolled_up), 0) FROM channel_counters
                  WHERE channel = $1) AS rolled,
                (SELECT MAX(last_sent_at) FROM channel_counters WHERE channel = $1) AS last_sent,
                (SELECT MAX(last_digest_at) FROM channel_counters WHERE channel = $1)
                  AS last_digest,
                (SELECT MIN(created_at) FROM outbox WHERE channel = $1) AS oldest",
        )
        .bind(channel)
        .fetch_one(&self.writer)
        .await?;
        let n = |col: &str| row.get::<i64, _>(col).max(0) as u64;
        Ok(ChannelTotals {
            occurrences_routed: n("routed"),
            messages_posted: n("mp"),
            occurrences_posted: n("op"),
            messages_pending: n("mw"),
            occurrences_pending: n("ow"),
            occurrences_folded: n("folded"),
            messages_rolled_up: n("rolled"),
            last_sent_ms: row.get::<Option<i64>, _>("last_sent"),
            last_digest_ms: row.get::<Option<i64>, _>("last_digest"),
            oldest_pending_ms: row.get::<Option<i64>, _>("oldest"),
            messages_dead: n("md"),
            occurrences_dead: n("od"),
            occurrences_muted: n("om"),
        })
    }

    pub(super) async fn prune(&self, now_ms: i64, retention_days: u32) -> Result<u64, StoreError> {
        let cutoff_ms = now_ms - i64::from(retention_days) * DAY_MS;
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let mut deleted = 0;
        deleted += sqlx::query("DELETE FROM day_counts WHERE day < $1")
            .bind(day_of(cutoff_ms))
            .execute(&mut *tx)
            .await
            .map(|r| DB::rows_affected(&r))?;
        deleted += sqlx::query("DELETE FROM channel_day_counts WHERE day < $1")
            .bind(day_of(cutoff_ms))
            .execute(&mut *tx)
            .await
            .map(|r| DB::rows_affected(&r))?;
        deleted += sqlx::query("DELETE FROM events WHERE seen_at < $1")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await
            .map(|r| DB::rows_affected(&r))?;
        // Messages older than the retention are no longer rewritten when their issue
        // changes; clicks carried out that long ago are history.
        for sql in [
            // A delivery's routes go with it (found through the delivery's index).
            "DELETE FROM delivery_routes WHERE body_sha256 IN
                (SELECT body_sha256 FROM deliveries WHERE received_at < $1)",
            "DELETE FROM deliveries WHERE received_at < $1",
            // What Slack accepted: its totals live on in channel_counters.
            "DELETE FROM sent WHERE sent_at < $1",
            "DELETE FROM issue_messages WHERE posted_at < $1",
            "DELETE FROM clicks WHERE state <> 'pending' AND received_at < $1",
        ] {
            deleted += sqlx::query(sql)
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await
                .map(|r| DB::rows_affected(&r))?;
        }
        tx.commit().await?;
        w.committed();
        Ok(deleted)
    }
}

/// The issue's state from its `issues` row, if a notice or click ever set it (a status that
/// does not decode, from a newer version, reads as never set).
pub(super) fn issue_state<R: Row>(row: &R) -> Option<crate::issue::IssueState>
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let status: Option<String> = row.get("status");
    Some(crate::issue::IssueState {
        status: serde_json::from_str(&status?).ok()?,
        assignee: row.get("assignee"),
        by: row.get("state_by"),
        at_ms: row.get("state_at"),
    })
}
