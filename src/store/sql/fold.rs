//! The fold, the SQL half: [`SqlStore::fold_batch`] and its statements. Reads a batch of the
//! fold queue (the oldest first), upserts the issues, reads and locks the cooldowns and mutes
//! its occurrences go to; then the storm planner decides in memory (`group.rs` turns its plan
//! into rows); then one multi-row write per table, and the batch leaves the queue in the same
//! transaction, so each delivery is folded exactly once. Only the leader folds, so the shared
//! rows written here (issues, day counts, cooldowns, channel counters) have one writer.

use std::collections::HashMap;

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::group::{self, FoldPayload, GroupRows, IssueRow, Live};
use super::{Backend, ROWS_PER_STATEMENT, SqlStore, Value, values};
use crate::plan::{MuteState, PairState, Planner, Routed};
use crate::store::{Delivery, FoldBacklog, FoldReport, Folded, StoreError};

/// A fold queue row as read.
struct Queued {
    id: i64,
    delivery: Delivery,
    counted: bool,
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
    /// Folds up to `limit` queued deliveries, oldest first, within the caller's transaction
    /// (see [`crate::store::Store::fold`]).
    pub(super) async fn fold_batch(
        conn: &mut DB::Connection,
        limit: u32,
        planner: &dyn Planner,
    ) -> Result<FoldReport, StoreError> {
        let batch = Self::read_fold_queue(conn, limit).await?;
        if batch.is_empty() {
            return Ok(FoldReport::default());
        }
        let group: Vec<&Delivery> = batch.iter().map(|q| &q.delivery).collect();
        let live: Vec<Live> = batch
            .iter()
            .enumerate()
            .map(|(index, q)| Live {
                index,
                counted: q.counted,
            })
            .collect();
        let folded = Self::fold_group(conn, &group, &live, planner).await?;
        let ids: Vec<i64> = batch.iter().map(|q| q.id).collect();
        Self::dequeue(conn, &ids).await?;
        Ok(FoldReport { folded })
    }

    /// Folds the `live` deliveries of `group` within the caller's transaction: the issues,
    /// the storm planner's decisions and the rows they imply. What became of each delivery of
    /// `group`, by its index (nothing, for one that is not live).
    pub(super) async fn fold_group(
        conn: &mut DB::Connection,
        group: &[&Delivery],
        live: &[Live],
        planner: &dyn Planner,
    ) -> Result<Vec<Folded>, StoreError> {
        Self::upsert_issues(conn, &group::issue_rows(group, live)).await?;
        // Issue notices and comments go where the issue's occurrences went.
        let earlier = Self::read_earlier_targets(conn, &group::followers(group, live)).await?;
        let followed = group::followed(group, live, &earlier);
        let routed = group::routed(group, live, &followed);
        // The cooldown and mute of every (issue, channel) an occurrence goes to, held until
        // commit.
        let pairs = group::occurrence_pairs(&routed);
        let stored = Self::read_cooldowns(conn, &pairs).await?;
        let mutes = Self::read_mutes(conn, &pairs).await?;
        // Decide, in order: outbox rows, folds, holds, spikes, and the counters they imply.
        let planned: Vec<Routed> = routed.iter().map(|r| r.planned()).collect();
        let plan = planner.plan_ingest(&planned, stored, mutes);
        let rows = GroupRows::build(group, live, &routed, plan)?;
        Self::write_group(conn, &rows).await?;
        Ok(rows.folded)
    }

    /// The oldest `limit` rows of the fold queue (locked on PostgreSQL, so that a second
    /// folder during a change of leader waits, then skips what the first folded).
    async fn read_fold_queue(
        conn: &mut DB::Connection,
        limit: u32,
    ) -> Result<Vec<Queued>, StoreError> {
        // The one piece put in is a constant of the backend's.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT id, body_sha256, received_at, counted, payload FROM fold_queue
             ORDER BY id LIMIT $1{}",
            DB::LOCK_ROWS
        ));
        let rows = sqlx::query(sql)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get("id");
                let corrupt = |why: String| StoreError::Corrupt(format!("fold_queue {id}: {why}"));
                let body: Vec<u8> = r.get("body_sha256");
                let body_sha256: [u8; 32] = body
                    .try_into()
                    .map_err(|_| corrupt("not a SHA-256".into()))?;
                let FoldPayload { alert, targets } =
                    serde_json::from_str(&r.get::<String, _>("payload"))
                        .map_err(|e| corrupt(e.to_string()))?;
                Ok(Queued {
                    id,
                    counted: r.get::<i64, _>("counted") != 0,
                    delivery: Delivery {
                        body_sha256,
                        resource: alert.resource.clone(),
                        request_id: None,
                        received_at_ms: r.get("received_at"),
                        alert: Some(alert),
                        targets,
                    },
                })
            })
            .collect()
    }

    /// Removes the folded rows from the queue.
    async fn dequeue(conn: &mut DB::Connection, ids: &[i64]) -> Result<(), StoreError> {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM fold_queue WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Deliveries waiting for the fold, and the oldest one's arrival (read off the writer).
    pub(super) async fn fold_backlog(&self) -> Result<FoldBacklog, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM fold_queue")
            .fetch_one(&self.reader)
            .await?;
        Ok(FoldBacklog {
            pending: r.get::<i64, _>("n").max(0) as u64,
            oldest_ms: r.get("oldest"),
        })
    }

    /// Issue metadata, one row per issue. A comment (`described = 0`) does not rename the
    /// issue; the first delivery that describes an issue known only from comments does.
    async fn upsert_issues(
        conn: &mut DB::Connection,
        issues: &[IssueRow<'_>],
    ) -> Result<(), StoreError> {
        for chunk in issues.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO issues (issue_key, project, title, culprit, level, short_id, issue_url,
                                     first_seen, last_seen, sentry_count, sentry_first_seen, resolved_at,
                                     described, status, assignee, state_by, state_at) ",
                chunk,
                |mut b, row| {
                    b.push_bind(row.issue_key.to_string())
                        .push_bind(row.project.to_string())
                        .push_bind(row.title.to_string())
                        .push_bind(row.culprit.map(str::to_string))
                        .push_bind(row.level)
                        .push_bind(row.short_id.map(str::to_string))
                        .push_bind(row.issue_url.map(str::to_string))
                        .push_bind(row.first_seen)
                        .push_bind(row.last_seen)
                        .push_bind(row.sentry_count)
                        .push_bind(row.sentry_first_seen)
                        .push_bind(row.resolved_at)
                        .push_bind(i64::from(row.describes));
                    let state = row.state.as_ref();
                    b.push_bind(state.map(group::status_json))
                        .push_bind(state.and_then(|s| s.assignee.clone()))
                        .push_bind(state.and_then(|s| s.by.clone()))
                        .push_bind(state.and_then(|s| s.at_ms));
                },
                " ON CONFLICT (issue_key) DO UPDATE SET
                    project = CASE WHEN excluded.described = 1 OR issues.described = 0
                              THEN excluded.project ELSE issues.project END,
                    title = CASE WHEN excluded.described = 1 OR issues.described = 0
                            THEN excluded.title ELSE issues.title END,
                    culprit = COALESCE(excluded.culprit, issues.culprit),
                    level = CASE WHEN excluded.described = 1 OR issues.described = 0
                            THEN excluded.level ELSE issues.level END,
                    described = CASE WHEN excluded.described = 1 THEN 1 ELSE issues.described END,
                    short_id = COALESCE(excluded.short_id, issues.short_id),
                    issue_url = COALESCE(excluded.issue_url, issues.issue_url),
                    first_seen = CASE WHEN excluded.first_seen < issues.first_seen
                                  THEN excluded.first_seen ELSE issues.first_seen END,
                    last_seen = CASE WHEN excluded.last_seen > issues.last_seen
                                 THEN excluded.last_seen ELSE issues.last_seen END,
                    sentry_count = COALESCE(excluded.sentry_count, issues.sentry_count),
                    sentry_first_seen = COALESCE(excluded.sentry_first_seen, issues.sentry_first_seen),
                    resolved_at = COALESCE(excluded.resolved_at, issues.resolved_at),
                    previous_status = CASE WHEN excluded.status IS NULL
                                      OR excluded.status = issues.status
                                      THEN issues.previous_status ELSE issues.status END,
                    status = COALESCE(excluded.status, issues.status),
                    assignee = CASE WHEN excluded.status IS NULL THEN issues.assignee
                               ELSE excluded.assignee END,
                    state_by = CASE WHEN excluded.status IS NULL THEN issues.state_by
                               WHEN excluded.state_by IS NULL AND excluded.status = issues.status
                               THEN issues.state_by ELSE excluded.state_by END,
                    state_at = CASE WHEN excluded.status IS NULL THEN issues.state_at
                               WHEN excluded.state_by IS NULL AND excluded.status = issues.status
                               THEN issues.state_at ELSE excluded.state_at END",
            );
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Locks the cooldowns of `pairs` (sorted) for the rest of the transaction and reads those
    /// that exist.
    async fn read_cooldowns(
        conn: &mut DB::Connection,
        pairs: &[(String, String)],
    ) -> Result<HashMap<(String, String), PairState>, StoreError> {
        DB::lock_pairs(&mut *conn, pairs).await?;
        let mut stored = HashMap::new();
        for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
            let mut q = Self::rows_of_pairs(
                "SELECT issue_key, channel, cooldown_secs, cooldown_until, folded, folded_since,
                        window_count, spiked
                 FROM issue_channels",
                chunk,
            );
            for r in q.build().fetch_all(&mut *conn).await? {
                stored.insert((r.get("issue_key"), r.get("channel")), Self::pair_state(&r));
            }
        }
        Ok(stored)
    }

    /// The route decision of every channel each of `issues` (sorted) was posted in.
    async fn read_earlier_targets(
        conn: &mut DB::Connection,
        issues: &[&str],
    ) -> Result<HashMap<String, Vec<crate::routing::Target>>, StoreError> {
        let mut earlier: HashMap<String, Vec<crate::routing::Target>> = HashMap::new();
        for chunk in issues.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT issue_key, channel, payload FROM issue_channels WHERE issue_key IN (",
            );
            let mut sep = q.separated(", ");
            for issue in chunk {
                sep.push_bind(issue.to_string());
            }
            q.push(") ORDER BY issue_key, channel");
            for r in q.build().fetch_all(&mut *conn).await? {
                let issue: String = r.get("issue_key");
                let target = super::target_of(&issue, &r.get::<String, _>("payload"))?;
                earlier.entry(issue).or_default().push(target);
            }
        }
        Ok(earlier)
    }

    /// `select` (a table keyed by issue and channel) limited to the rows of `pairs`:
    /// `… WHERE (issue_key, channel) IN (($1, $2), …)`.
    fn rows_of_pairs(select: &str, pairs: &[(String, String)]) -> QueryBuilder<DB> {
        let mut q = QueryBuilder::<DB>::new(select);
        q.push(" WHERE (issue_key, channel) IN (");
        let mut sep = q.separated(", ");
        for (issue, channel) in pairs {
            sep.push("(")
                .push_bind_unseparated(issue.clone())
                .push_unseparated(", ")
                .push_bind_unseparated(channel.clone())
                .push_unseparated(")");
        }
        q.push(")");
        q
    }

    /// Reads the mutes of `pairs` (sorted, locked by [`Self::read_cooldowns`]), ended or not:
    /// the planner holds only what arrives before a mute's end.
    async fn read_mutes(
        conn: &mut DB::Connection,
        pairs: &[(String, String)],
    ) -> Result<HashMap<(String, String), MuteState>, StoreError> {
        let mut mutes = HashMap::new();
        for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
            let mut q = Self::rows_of_pairs(
                "SELECT issue_key, channel, until_at, held, held_since FROM mutes",
                chunk,
            );
            for r in q.build().fetch_all(&mut *conn).await? {
                mutes.insert((r.get("issue_key"), r.get("channel")), Self::mute_state(&r));
            }
        }
        Ok(mutes)
    }

    /// Writes what was decided: one multi-row statement per table, each sorted by its key.
    async fn write_group(
        conn: &mut DB::Connection,
        rows: &GroupRows<'_>,
    ) -> Result<(), StoreError> {
        for chunk in rows.day_counts.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO day_counts (issue_key, day, environment, count) ",
                chunk,
                |mut b, ((issue, day, env), n)| {
                    b.push_bind(issue.to_string())
                        .push_bind(*day)
                        .push_bind(env.to_string())
                        .push_bind(*n);
                },
                " ON CONFLICT (issue_key, day, environment) DO UPDATE SET count = day_counts.count + excluded.count",
            );
            q.build().execute(&mut *conn).await?;
        }
        for chunk in rows.channel_days.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO channel_day_counts (channel, day, issue_key, environment, project,
                                                 occurrences, folded, notices) ",
                chunk,
                |mut b, ((channel, day, issue, env), row)| {
                    b.push_bind(channel.to_string())
                        .push_bind(*day)
                        .push_bind(issue.to_string())
                        .push_bind(env.to_string())
                        .push_bind(row.project.to_string())
                        .push_bind(row.occurrences)
                        .push_bind(row.folded)
                        .push_bind(row.notices);
                },
                " ON CONFLICT (channel, day, issue_key, environment) DO UPDATE SET
                    occurrences = channel_day_counts.occurrences + excluded.occurrences,
                    folded = channel_day_counts.folded + excluded.folded,
                    notices = channel_day_counts.notices + excluded.notices,
                    project = excluded.project",
            );
            q.build().execute(&mut *conn).await?;
        }
        Self::write_cooldowns_and_outbox(conn, rows).await?;
        Self::write_trail(conn, rows).await?;
        Self::write_counters(conn, rows).await?;
        Ok(())
    }

    /// The changed cooldowns, then the outbox rows in group order.
    async fn write_cooldowns_and_outbox(
        conn: &mut DB::Connection,
        rows: &GroupRows<'_>,
    ) -> Result<(), StoreError> {
        for chunk in rows.cooldowns.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO issue_channels (issue_key, channel, cooldown_secs, cooldown_until, folded,
                                             folded_since, window_count, spiked, payload) ",
                chunk,
                |mut b, ((issue, channel), row)| {
                    b.push_bind(issue.clone())
                        .push_bind(channel.clone())
                        .push_bind(row.cooldown_secs)
                        .push_bind(row.cooldown_until)
                        .push_bind(row.folded)
                        .push_bind(row.folded_since)
                        .push_bind(row.window_count)
                        .push_bind(row.spiked)
                        .push_bind(row.payload.clone());
                },
                " ON CONFLICT (issue_key, channel) DO UPDATE SET
                    cooldown_secs = excluded.cooldown_secs,
                    cooldown_until = excluded.cooldown_until,
                    folded = excluded.folded,
                    folded_since = excluded.folded_since,
                    window_count = excluded.window_count,
                    spiked = excluded.spiked,
                    payload = excluded.payload",
            );
            q.build().execute(&mut *conn).await?;
        }
        // What the mutes hold; their rows exist (read under the pair locks), and their ends
        // are left as they are.
        for chunk in rows.mutes.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "WITH h (issue_key, channel, held, held_since) AS (",
                chunk,
                |mut b, ((issue, channel), row)| {
                    b.push_bind(issue.clone())
                        .push_bind(channel.clone())
                        .push_bind(row.held)
                        .push_bind(row.held_since);
                },
                ") UPDATE mutes SET held = h.held, held_since = h.held_since FROM h
                   WHERE mutes.issue_key = h.issue_key AND mutes.channel = h.channel",
            );
            q.build().execute(&mut *conn).await?;
        }
        for chunk in rows.outbox.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO outbox (delivery, channel, issue_key, kind, payload, occurrences,
                                     created_at, next_attempt_at) ",
                chunk,
                |mut b, row| {
                    b.push_bind(row.delivery.to_vec())
                        .push_bind(row.channel.to_string())
                        .push_bind(row.issue_key.to_string())
                        .push_bind(row.kind)
                        .push_bind(row.payload.clone())
                        .push_bind(row.occurrences)
                        .push_bind(row.now)
                        .push_bind(row.now);
                },
                "",
            );
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The trail of the batch's deliveries for the status page: where each went.
    async fn write_trail(
        conn: &mut DB::Connection,
        rows: &GroupRows<'_>,
    ) -> Result<(), StoreError> {
        for chunk in rows.routes.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO delivery_routes (body_sha256, channel, route, decision, received_at) ",
                chunk,
                |mut b, row| {
                    b.push_bind(row.delivery.to_vec())
                        .push_bind(row.channel.to_string())
                        .push_bind(row.route.map(str::to_string))
                        .push_bind(row.decision)
                        .push_bind(row.received_at);
                },
                "",
            );
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Last, the per-channel counters: every group of every replica updates these few rows,
    /// so their row locks are taken as late, and held as briefly, as the transaction allows.
    async fn write_counters(
        conn: &mut DB::Connection,
        rows: &GroupRows<'_>,
    ) -> Result<(), StoreError> {
        for chunk in rows.counters.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO channel_counters (channel, occurrences_routed, occurrences_folded) ",
                chunk,
                |mut b, (channel, (routed, folded))| {
                    b.push_bind(channel.clone())
                        .push_bind(*routed)
                        .push_bind(*folded);
                },
                " ON CONFLICT (channel) DO UPDATE SET
                    occurrences_routed = channel_counters.occurrences_routed + excluded.occurrences_routed,
                    occurrences_folded = channel_counters.occurrences_folded + excluded.occurrences_folded",
            );
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// A stored cooldown, from an `issue_channels` row with `cooldown_secs`, `cooldown_until`,
    /// `folded`, `folded_since`, `window_count` and `spiked`.
    pub(super) fn pair_state(r: &DB::Row) -> PairState {
        PairState {
            cooldown_secs: r.get::<i64, _>("cooldown_secs").max(0) as u64,
            cooldown_until_ms: r.get("cooldown_until"),
            folded: r.get::<i64, _>("folded").max(0) as u64,
            folded_since_ms: r.get("folded_since"),
            window: r.get::<i64, _>("window_count").max(0) as u64,
            spiked: r.get::<i64, _>("spiked").max(0) as u64,
        }
    }

    /// A stored mute, from a `mutes` row with `until_at`, `held` and `held_since`.
    pub(super) fn mute_state(r: &DB::Row) -> MuteState {
        MuteState {
            until_ms: r.get("until_at"),
            held: r.get::<i64, _>("held").max(0) as u64,
            held_since_ms: r.get("held_since"),
        }
    }
}
