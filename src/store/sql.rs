//! The embedded SQLite backend: one file in WAL mode.
//!
//! Writes go through a single connection (SQLite allows one writer at a time; queueing in
//! process is cheaper than spinning on `SQLITE_BUSY`), reads through a small pool.
//! `synchronous = FULL`: every commit is fsynced before it returns, so an acknowledged
//! delivery survives a power cut, not only a process crash.
//!
//! **Group commit.** Deliveries are not committed one by one: a committer task takes every
//! delivery waiting at that moment (up to [`MAX_GROUP`]) and applies them in one transaction
//! with one fsync, answering each caller only after the commit. The group's decisions are
//! made in memory in delivery order (see `apply_group`), and each table gets one multi-row
//! write, so the number of database round trips per group does not grow with its size. A
//! failed group fails every delivery in it (each caller answers 503; nothing of the group was
//! acknowledged).

//! The store for SQL databases, written once over sqlx's [`Database`] and run on each backend
//! (`sqlite.rs`, `postgres.rs`); [`Backend`] holds what differs between them. The SQL here is
//! the common dialect of SQLite and PostgreSQL (`$n` parameters, `ON CONFLICT`, `RETURNING`,
//! `CASE` rather than two-argument `MIN`/`MAX`).
//!
//! **Group commit.** Deliveries are not committed one by one: a committer task takes every
//! delivery waiting at that moment (up to [`MAX_GROUP`]) and applies them in one transaction
//! with one fsync, answering each caller only after the commit. The group's decisions are
//! made in memory in delivery order (see `apply_group`), and each table gets one multi-row
//! write, so the number of database round trips per group does not grow with its size. A
//! failed group fails every delivery in it (each caller answers 503; nothing of the group was
//! acknowledged).
//!
//! **Several writers.** On PostgreSQL several replicas commit at once. Counters are updated
//! with `x = x + excluded.x`, so concurrent groups add up; the one read-decide-write step, the
//! cooldown of an (issue, channel) pair, runs under [`Backend::lock_pairs`]. Every multi-row
//! write is sorted by its key, so two groups take row locks in the same order and cannot
//! deadlock.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use tokio::sync::{mpsc, oneshot};

use super::{
    ChannelActivity, ChannelDay, ChannelTotals, DeadLetter, Delivery, IngestOutcome, IssueInfo,
    OutboxItem, OutboxMessage, Store, StoreError,
};
use crate::counts::{DAY_MS, IssueStats, MONTH_DAYS, day_of};
use crate::storm::{self, CooldownState, Decision, RollUp};

/// Most ended cooldowns released in one transaction (the `LIMIT` in `release_some_cooldowns`).
const RELEASE_BATCH: usize = 200;

/// Most deliveries committed in one transaction.
pub const MAX_GROUP: usize = 512;

/// Rows per multi-row statement: the widest row binds 12 values, and SQLite allows 32,766
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

    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
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
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            ingest: self.ingest.clone(),
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
    /// through `reader`. Starts the committer task.
    pub(super) fn from_pools(writer: Pool<DB>, reader: Pool<DB>) -> Self {
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(Self::committer(writer.clone(), rx));
        Self {
            writer,
            reader,
            ingest: tx,
        }
    }

    /// Commits waiting deliveries in groups until every sender is gone.
    async fn committer(pool: Pool<DB>, mut rx: mpsc::Receiver<(Delivery, Reply)>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
            let results = Self::commit_group(&pool, &group).await;
            for ((_, reply), result) in group.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    /// One transaction for the whole group; one result per delivery, in order. A failure fails
    /// the whole group: nothing of it was committed, and every caller answers 503.
    async fn commit_group(
        pool: &Pool<DB>,
        group: &[(Delivery, Reply)],
    ) -> Vec<Result<IngestOutcome, StoreError>> {
        let deliveries: Vec<&Delivery> = group.iter().map(|(d, _)| d).collect();
        let result = async {
            let mut tx = pool.begin().await?;
            let outcomes = Self::apply_group(&mut tx, &deliveries).await?;
            tx.commit().await?;
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

    /// Applies a group of deliveries with a fixed number of statements, whatever its size: the
    /// decisions (duplicate? new event? cooldown?) are made in memory from a few reads, in
    /// delivery order, exactly as if each delivery had been applied alone; then every table gets
    /// one multi-row write.
    async fn apply_group(
        conn: &mut DB::Connection,
        group: &[&Delivery],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        // 1. Deliveries seen before, or earlier in this group, are duplicates.
        let mut new_delivery = vec![false; group.len()];
        let mut inserted: HashSet<Vec<u8>> = HashSet::new();
        let mut by_body: Vec<usize> = (0..group.len()).collect();
        by_body.sort_by_key(|&i| group[i].body_sha256);
        for chunk in by_body.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO deliveries (body_sha256, resource, request_id, received_at, outcome) ",
            );
            q.push_values(chunk, |mut b, &i| {
                let d = group[i];
                b.push_bind(d.body_sha256.to_vec())
                    .push_bind(d.resource.clone())
                    .push_bind(d.request_id.clone())
                    .push_bind(d.received_at_ms)
                    .push_bind(outcome_label(d));
            });
            q.push(" ON CONFLICT DO NOTHING RETURNING body_sha256");
            for row in q.build().fetch_all(&mut *conn).await? {
                inserted.insert(row.get::<Vec<u8>, _>(0));
            }
        }
        for (i, d) in group.iter().enumerate() {
            // The first of equal bodies in the group is the one that was inserted.
            new_delivery[i] = inserted.remove(&d.body_sha256[..]);
        }

        // 2. Events seen before (or earlier in this group) are not counted or posted again.
        let mut with_event: Vec<(&str, usize)> = (0..group.len())
            .filter(|&i| new_delivery[i])
            .filter_map(|i| {
                let id = group[i].alert.as_ref()?.event_id.as_deref()?;
                Some((id, i))
            })
            .collect();
        with_event.sort();
        let mut new_events: HashSet<String> = HashSet::new();
        for chunk in with_event.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                sqlx::QueryBuilder::<DB>::new("INSERT INTO events (event_id, issue_key, seen_at) ");
            q.push_values(chunk, |mut b, &(event_id, i)| {
                let a = group[i].alert.as_ref().expect("filtered");
                b.push_bind(event_id.to_string())
                    .push_bind(a.issue_key.clone())
                    .push_bind(group[i].received_at_ms);
            });
            q.push(" ON CONFLICT DO NOTHING RETURNING event_id");
            for row in q.build().fetch_all(&mut *conn).await? {
                new_events.insert(row.get::<String, _>(0));
            }
        }
        // Which deliveries go on: new, routed, and not a repeat of a known event.
        let mut counted = vec![false; group.len()];
        let mut live: Vec<usize> = Vec::new();
        for (i, d) in group.iter().enumerate() {
            let Some(alert) = &d.alert else { continue };
            if !new_delivery[i] {
                continue;
            }
            match &alert.event_id {
                Some(id) if new_events.remove(id) => counted[i] = true,
                Some(_) => continue,
                None => {}
            }
            live.push(i);
        }

        // 3. Issue metadata: one row per issue, the group's deliveries merged in order the
        // way the upsert below merges them into the stored row.
        let mut issues: BTreeMap<&str, IssueRow> = BTreeMap::new();
        for &i in &live {
            let row = IssueRow::of(group[i]);
            match issues.entry(row.issue_key) {
                Entry::Vacant(slot) => {
                    slot.insert(row);
                }
                Entry::Occupied(mut slot) => slot.get_mut().update(row),
            }
        }
        let issues: Vec<IssueRow> = issues.into_values().collect();
        for chunk in issues.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO issues (issue_key, project, title, culprit, level, short_id, issue_url,
                                     first_seen, last_seen, sentry_count, sentry_first_seen, resolved_at) ",
            );
            q.push_values(chunk, |mut b, row| {
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
                    .push_bind(row.resolved_at);
            });
            q.push(
                " ON CONFLICT (issue_key) DO UPDATE SET
                    project = excluded.project,
                    title = excluded.title,
                    culprit = COALESCE(excluded.culprit, issues.culprit),
                    level = excluded.level,
                    short_id = COALESCE(excluded.short_id, issues.short_id),
                    issue_url = COALESCE(excluded.issue_url, issues.issue_url),
                    first_seen = CASE WHEN excluded.first_seen < issues.first_seen
                                  THEN excluded.first_seen ELSE issues.first_seen END,
                    last_seen = CASE WHEN excluded.last_seen > issues.last_seen
                                 THEN excluded.last_seen ELSE issues.last_seen END,
                    sentry_count = COALESCE(excluded.sentry_count, issues.sentry_count),
                    sentry_first_seen = COALESCE(excluded.sentry_first_seen, issues.sentry_first_seen),
                    resolved_at = COALESCE(excluded.resolved_at, issues.resolved_at)",
            );
            q.build().execute(&mut *conn).await?;
        }

        // 4. The cooldown state of every (issue, channel) an occurrence goes to.
        let mut pairs: HashMap<(String, String), PairState> = HashMap::new();
        let wanted: Vec<(String, String)> = live
            .iter()
            .filter(|&&i| counted[i])
            .flat_map(|&i| {
                let d = group[i];
                let key = &d.alert.as_ref().expect("live").issue_key;
                d.targets
                    .iter()
                    .map(move |t| (key.clone(), t.channel.clone()))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        DB::lock_pairs(&mut *conn, &wanted).await?;
        for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "SELECT issue_key, channel, cooldown_secs, cooldown_until, folded, folded_since, payload
                 FROM issue_channels WHERE (issue_key, channel) IN (",
            );
            let mut sep = q.separated(", ");
            for (issue, channel) in chunk {
                sep.push("(")
                    .push_bind_unseparated(issue.clone())
                    .push_unseparated(", ")
                    .push_bind_unseparated(channel.clone())
                    .push_unseparated(")");
            }
            q.push(")");
            for r in q.build().fetch_all(&mut *conn).await? {
                pairs.insert(
                    (r.get("issue_key"), r.get("channel")),
                    PairState {
                        cooldown_secs: r.get("cooldown_secs"),
                        cooldown_until: r.get("cooldown_until"),
                        folded: r.get("folded"),
                        folded_since: r.get("folded_since"),
                        payload: r.get("payload"),
                        changed: false,
                    },
                );
            }
        }

        // 5. Decide, in order: outbox rows, folds, and the counters they imply.
        let mut outcomes: Vec<IngestOutcome> = (0..group.len())
            .map(|i| {
                if new_delivery[i] {
                    IngestOutcome::Stored {
                        counted: false,
                        queued: 0,
                    }
                } else {
                    IngestOutcome::DuplicateDelivery
                }
            })
            .collect();
        let mut outbox: Vec<NewOutbox> = Vec::new();
        // (issue, day, environment) -> occurrences
        let mut day_counts: HashMap<(&str, i64, &str), i64> = HashMap::new();
        // (channel, day, issue, environment) -> (project, occurrences, folded, notices)
        type ChannelDayKey<'a> = (&'a str, i64, &'a str, &'a str);
        let mut channel_days: HashMap<ChannelDayKey, (&str, i64, i64, i64)> = HashMap::new();
        // channel -> (routed, folded)
        let mut counters: HashMap<&str, (i64, i64)> = HashMap::new();
        for &i in &live {
            let d = group[i];
            let alert = d.alert.as_ref().expect("live");
            let now = d.received_at_ms;
            let day = day_of(now);
            let env = alert.environment.as_deref().unwrap_or("");
            let is_counted = counted[i];
            if is_counted {
                *day_counts.entry((&alert.issue_key, day, env)).or_default() += 1;
            }
            let mut queued = 0;
            for target in &d.targets {
                let payload = to_json(&OutboxMessage::Alert {
                    alert: alert.clone(),
                    target: target.clone(),
                })?;
                let channel_day = target.digest.then(|| {
                    channel_days
                        .entry((&target.channel, day, &alert.issue_key, env))
                        .or_insert((alert.project(), 0, 0, 0))
                });
                if !is_counted {
                    // Notices (resolved, assigned, metric alerts, comments) are always posted.
                    if let Some(cd) = channel_day {
                        cd.3 += 1;
                    }
                    outbox.push(NewOutbox {
                        channel: &target.channel,
                        issue_key: &alert.issue_key,
                        payload,
                        occurrences: 0,
                        now,
                    });
                    queued += 1;
                    continue;
                }
                let counter = counters.entry(&target.channel).or_default();
                counter.0 += 1;
                let key = (alert.issue_key.clone(), target.channel.clone());
                let state = pairs.get(&key).map(|p| CooldownState {
                    cooldown_until_ms: p.cooldown_until,
                    folded: p.folded.max(0) as u64,
                });
                let cooldown_secs = target.cooldown_secs.min(i64::MAX as u64 / 1000) as i64;
                match storm::cooldown(state, now, Duration::from_secs(target.cooldown_secs)) {
                    Decision::Fold => {
                        counter.1 += 1;
                        if let Some(cd) = channel_day {
                            cd.1 += 1;
                            cd.2 += 1;
                        }
                        let p = pairs.get_mut(&key).expect("a fold has state");
                        p.folded += 1;
                        p.folded_since = p.folded_since.or(Some(now));
                        p.payload = payload;
                        p.changed = true;
                    }
                    Decision::Post { carried } => {
                        if let Some(cd) = channel_day {
                            cd.1 += 1;
                        }
                        outbox.push(NewOutbox {
                            channel: &target.channel,
                            issue_key: &alert.issue_key,
                            payload: payload.clone(),
                            occurrences: 1 + carried as i64,
                            now,
                        });
                        queued += 1;
                        pairs.insert(
                            key,
                            PairState {
                                cooldown_secs,
                                cooldown_until: now.saturating_add(cooldown_secs * 1000),
                                folded: 0,
                                folded_since: None,
                                payload,
                                changed: true,
                            },
                        );
                    }
                }
            }
            outcomes[i] = IngestOutcome::Stored {
                counted: is_counted,
                queued,
            };
        }

        // 6. Write what was decided: one multi-row statement per table.
        let day_counts: BTreeMap<_, _> = day_counts.into_iter().collect();
        let day_counts: Vec<_> = day_counts.into_iter().collect();
        for chunk in day_counts.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO day_counts (issue_key, day, environment, count) ",
            );
            q.push_values(chunk, |mut b, ((issue, day, env), n)| {
                b.push_bind(issue.to_string())
                    .push_bind(*day)
                    .push_bind(env.to_string())
                    .push_bind(*n);
            });
            q.push(" ON CONFLICT (issue_key, day, environment) DO UPDATE SET count = day_counts.count + excluded.count");
            q.build().execute(&mut *conn).await?;
        }
        let channel_days: BTreeMap<_, _> = channel_days.into_iter().collect();
        let channel_days: Vec<_> = channel_days.into_iter().collect();
        for chunk in channel_days.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO channel_day_counts (channel, day, issue_key, environment, project,
                                                 occurrences, folded, notices) ",
            );
            q.push_values(
                chunk,
                |mut b, ((channel, day, issue, env), (project, occ, folded, notices))| {
                    b.push_bind(channel.to_string())
                        .push_bind(*day)
                        .push_bind(issue.to_string())
                        .push_bind(env.to_string())
                        .push_bind(project.to_string())
                        .push_bind(*occ)
                        .push_bind(*folded)
                        .push_bind(*notices);
                },
            );
            q.push(
                " ON CONFLICT (channel, day, issue_key, environment) DO UPDATE SET
                    occurrences = channel_day_counts.occurrences + excluded.occurrences,
                    folded = channel_day_counts.folded + excluded.folded,
                    notices = channel_day_counts.notices + excluded.notices,
                    project = excluded.project",
            );
            q.build().execute(&mut *conn).await?;
        }
        let changed: BTreeMap<_, _> = pairs.into_iter().filter(|(_, p)| p.changed).collect();
        let changed: Vec<_> = changed.into_iter().collect();
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO issue_channels (issue_key, channel, cooldown_secs, cooldown_until, folded,
                                             folded_since, payload) ",
            );
            q.push_values(chunk, |mut b, ((issue, channel), p)| {
                b.push_bind(issue.clone())
                    .push_bind(channel.clone())
                    .push_bind(p.cooldown_secs)
                    .push_bind(p.cooldown_until)
                    .push_bind(p.folded)
                    .push_bind(p.folded_since)
                    .push_bind(p.payload.clone());
            });
            q.push(
                " ON CONFLICT (issue_key, channel) DO UPDATE SET
                    cooldown_secs = excluded.cooldown_secs,
                    cooldown_until = excluded.cooldown_until,
                    folded = excluded.folded,
                    folded_since = excluded.folded_since,
                    payload = excluded.payload",
            );
            q.build().execute(&mut *conn).await?;
        }
        for chunk in outbox.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO outbox (channel, issue_key, kind, payload, occurrences, created_at,
                                     next_attempt_at) ",
            );
            q.push_values(chunk, |mut b, row| {
                b.push_bind(row.channel.to_string())
                    .push_bind(row.issue_key.to_string())
                    .push_bind("alert")
                    .push_bind(row.payload.clone())
                    .push_bind(row.occurrences)
                    .push_bind(row.now)
                    .push_bind(row.now);
            });
            q.build().execute(&mut *conn).await?;
        }
        // Last, the per-channel counters: every group of every replica updates these few rows,
        // so their row locks are taken as late, and held as briefly, as the transaction allows.
        let counters: BTreeMap<_, _> = counters.into_iter().collect();
        let counters: Vec<_> = counters.into_iter().collect();
        for chunk in counters.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO channel_counters (channel, occurrences_routed, occurrences_folded) ",
            );
            q.push_values(chunk, |mut b, (channel, (routed, folded))| {
                b.push_bind(channel.to_string())
                    .push_bind(*routed)
                    .push_bind(*folded);
            });
            q.push(
                " ON CONFLICT (channel) DO UPDATE SET
                    occurrences_routed = channel_counters.occurrences_routed + excluded.occurrences_routed,
                    occurrences_folded = channel_counters.occurrences_folded + excluded.occurrences_folded",
            );
            q.build().execute(&mut *conn).await?;
        }
        if !outbox.is_empty() {
            DB::announce_queued(&mut *conn).await?;
        }
        Ok(outcomes)
    }

    async fn insert_outbox(
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

    /// Releases at most [`RELEASE_BATCH`] ended cooldowns in one transaction (so the pair
    /// locks it holds stay few); returns how many were due and how many it released.
    async fn release_some_cooldowns(&self, now_ms: i64) -> Result<(usize, usize), StoreError> {
        const DUE: &str = "SELECT issue_key, channel, cooldown_secs, folded, folded_since, payload
             FROM issue_channels WHERE folded > 0 AND cooldown_until <= $1
             ORDER BY issue_key, channel LIMIT 200";
        let mut tx = self.writer.begin().await?;
        let due: Vec<(String, String)> = sqlx::query(DUE)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get("issue_key"), r.get("channel")))
            .collect();
        if due.is_empty() {
            return Ok((0, 0));
        }
        let found = due.len();
        // Lock, then read again: a delivery may have folded one more meanwhile.
        DB::lock_pairs(&mut *tx, &due).await?;
        let due: HashSet<(String, String)> = due.into_iter().collect();
        let rows = sqlx::query(DUE).bind(now_ms).fetch_all(&mut *tx).await?;
        let mut released = 0;
        for r in &rows {
            let issue_key: String = r.get("issue_key");
            let channel: String = r.get("channel");
            if !due.contains(&(issue_key.clone(), channel.clone())) {
                continue;
            }
            released += 1;
            let folded = r.get::<i64, _>("folded");
            let payload: String = r.get("payload");
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
                folded: folded.max(0) as u64,
                since_ms: r.get::<Option<i64>, _>("folded_since").unwrap_or(now_ms),
            };
            Self::insert_outbox(
                &mut tx,
                &channel,
                &issue_key,
                message.kind(),
                &to_json(&message)?,
                folded,
                now_ms,
            )
            .await?;
            sqlx::query(
                "UPDATE issue_channels SET folded = 0, folded_since = NULL,
                    cooldown_until = $1 + cooldown_secs * 1000
                 WHERE issue_key = $2 AND channel = $3",
            )
            .bind(now_ms)
            .bind(&issue_key)
            .bind(&channel)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok((found, released))
    }

    fn decode_outbox(r: &DB::Row) -> Result<OutboxItem, StoreError> {
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

fn outcome_label(delivery: &Delivery) -> &'static str {
    match &delivery.alert {
        None => "ignored",
        Some(_) => "stored",
    }
}

fn to_json(message: &OutboxMessage) -> Result<String, StoreError> {
    serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Cooldown state of one issue in one channel while a group is applied.
struct PairState {
    cooldown_secs: i64,
    cooldown_until: i64,
    folded: i64,
    folded_since: Option<i64>,
    payload: String,
    /// Changed by this group, so written back.
    changed: bool,
}

/// A row for the outbox, in group order.
struct NewOutbox<'a> {
    channel: &'a str,
    issue_key: &'a str,
    payload: String,
    occurrences: i64,
    now: i64,
}

/// A row for the issues table, from one delivery or merged from several.
struct IssueRow<'a> {
    issue_key: &'a str,
    project: &'a str,
    title: &'a str,
    culprit: Option<&'a str>,
    level: &'static str,
    short_id: Option<&'a str>,
    issue_url: Option<&'a str>,
    first_seen: i64,
    last_seen: i64,
    sentry_count: Option<i64>,
    sentry_first_seen: Option<i64>,
    resolved_at: Option<i64>,
}

impl<'a> IssueRow<'a> {
    fn of(d: &'a Delivery) -> Self {
        let a = d.alert.as_ref().expect("live deliveries have an alert");
        Self {
            issue_key: &a.issue_key,
            project: a.project(),
            title: &a.title,
            culprit: a.culprit.as_deref(),
            level: a.level.as_str(),
            short_id: a.short_id.as_deref(),
            issue_url: a.issue_url.as_deref(),
            first_seen: d.received_at_ms,
            last_seen: d.received_at_ms,
            sentry_count: a.sentry_count.map(|c| c.min(i64::MAX as u64) as i64),
            sentry_first_seen: a.sentry_first_seen.map(|s| s.saturating_mul(1000)),
            resolved_at: (a.resource == "issue" && a.action == "resolved")
                .then_some(d.received_at_ms),
        }
    }

    /// A later delivery about the same issue: what the `ON CONFLICT` clause does, in memory.
    fn update(&mut self, later: Self) {
        self.project = later.project;
        self.title = later.title;
        self.level = later.level;
        self.culprit = later.culprit.or(self.culprit);
        self.short_id = later.short_id.or(self.short_id);
        self.issue_url = later.issue_url.or(self.issue_url);
        self.first_seen = self.first_seen.min(later.first_seen);
        self.last_seen = self.last_seen.max(later.last_seen);
        self.sentry_count = later.sentry_count.or(self.sentry_count);
        self.sentry_first_seen = later.sentry_first_seen.or(self.sentry_first_seen);
        self.resolved_at = later.resolved_at.or(self.resolved_at);
    }
}

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
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn ingest(&self, d: &Delivery) -> Result<IngestOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ingest
            .send((d.clone(), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn release_cooldowns(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut released = 0;
        loop {
            let (due, done) = self.release_some_cooldowns(now_ms).await?;
            released += done;
            if due < RELEASE_BATCH {
                return Ok(released);
            }
        }
    }

    async fn outbox_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT channel, COUNT(*) AS n FROM outbox GROUP BY channel")
            .fetch_all(&self.writer)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("channel"), r.get::<i64, _>("n").max(0) as u64))
            .collect())
    }

    async fn channel_outbox(&self, channel: &str) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, channel, issue_key, payload, occurrences, created_at, attempts
             FROM outbox WHERE channel = $1 ORDER BY id",
        )
        .bind(channel)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(Self::decode_outbox).collect()
    }

    async fn replace_with_rollup(
        &self,
        channel: &str,
        ids: &[i64],
        rollup: &RollUp,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
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
                return Ok(false);
            };
            next_attempt = next_attempt.max(row.get("next_attempt_at"));
            attempts = attempts.max(row.get("attempts"));
        }
        let message = OutboxMessage::RollUp(rollup.clone());
        // The roll-up takes the place (the id) of the oldest message it replaces, so that it
        // goes out before anything queued after that one.
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
        Ok(true)
    }

    async fn thread_ts(
        &self,
        issue_key: &str,
        channel: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT slack_ts FROM issue_channels WHERE issue_key = $1 AND channel = $2",
        )
        .bind(issue_key)
        .bind(channel)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.and_then(|r| r.get::<Option<String>, _>("slack_ts")))
    }

    async fn issue_stats(&self, issue_key: &str, now_ms: i64) -> Result<IssueStats, StoreError> {
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
        let meta = sqlx::query("SELECT first_seen, sentry_count FROM issues WHERE issue_key = $1")
            .bind(issue_key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(IssueStats {
            daily,
            first_seen_ms: meta.as_ref().map(|r| r.get::<i64, _>("first_seen")),
            sentry_count: meta
                .and_then(|r| r.get::<Option<i64>, _>("sentry_count"))
                .map(|c| c.max(0) as u64),
        })
    }

    async fn due_outbox(
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

    async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(t) AS t FROM (
                SELECT MIN(CASE WHEN held.held_until > o.next_attempt_at THEN held.held_until
                                ELSE o.next_attempt_at END) AS t
                FROM outbox AS o LEFT JOIN channel_counters AS held ON held.channel = o.channel
                UNION ALL
                SELECT MIN(cooldown_until) AS t FROM issue_channels WHERE folded > 0) AS due",
        )
        .fetch_one(&self.writer)
        .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    async fn mark_posted(
        &self,
        id: i64,
        now_ms: i64,
        slack_ts: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO sent (id, channel, issue_key, kind, occurrences, attempts, created_at,
                               sent_at, slack_ts)
             SELECT id, channel, issue_key, kind, occurrences, attempts + 1, created_at, $1, $2
             FROM outbox WHERE id = $3",
        )
        .bind(now_ms)
        .bind(slack_ts)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if slack_ts.is_some() {
            sqlx::query(
                "UPDATE issue_channels SET slack_ts = $1
                 WHERE (issue_key, channel) =
                       (SELECT issue_key, channel FROM outbox WHERE id = $2 AND kind = 'alert')",
            )
            .bind(slack_ts)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reschedule(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
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
        Ok(())
    }

    async fn dead_letter(
        &self,
        id: i64,
        attempts: u32,
        now_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (id, channel, issue_key, kind, payload, occurrences,
                                       attempts, error, created_at, dead_at)
             SELECT id, channel, issue_key, kind, payload, occurrences, $1, $2, created_at, $3
             FROM outbox WHERE id = $4",
        )
        .bind(i64::from(attempts))
        .bind(error)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, issue_key, occurrences, attempts, error, dead_at
             FROM dead_letters ORDER BY dead_at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                channel: r.get("channel"),
                issue_key: r.get("issue_key"),
                occurrences: r.get::<i64, _>("occurrences").max(0) as u64,
                attempts: r.get::<i64, _>("attempts").clamp(0, u32::MAX as i64) as u32,
                error: r.get("error"),
                dead_at_ms: r.get("dead_at"),
            })
            .collect())
    }

    async fn channel_days(
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

    async fn channel_issues(
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

    async fn channel_activity(
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

    async fn queue_digest(
        &self,
        channel: &str,
        period_end_ms: i64,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
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
            Self::insert_outbox(
                &mut tx,
                channel,
                "",
                message.kind(),
                &to_json(message)?,
                0,
                now_ms,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn enqueue(
        &self,
        channel: &str,
        message: &OutboxMessage,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        Self::insert_outbox(
            &mut conn,
            channel,
            "",
            message.kind(),
            &to_json(message)?,
            0,
            now_ms,
        )
        .await
    }

    async fn last_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(received_at) AS t FROM deliveries")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    async fn first_delivery_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MIN(received_at) AS t FROM deliveries")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get::<Option<i64>, _>("t"))
    }

    async fn dead_letter_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, error, COUNT(*) AS n FROM dead_letters
             GROUP BY channel, error ORDER BY n DESC, channel, error",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("channel"),
                    r.get("error"),
                    r.get::<i64, _>("n").max(0) as u64,
                )
            })
            .collect())
    }

    async fn channel_totals(&self, channel: &str) -> Result<ChannelTotals, StoreError> {
        let row = sqlx::query(
            "SELECT
                (SELECT COUNT(*) FROM sent WHERE channel = $1) AS mp,
                (SELECT CAST(COALESCE(SUM(occurrences), 0) AS BIGINT) FROM sent WHERE channel = $1) AS op,
                (SELECT COUNT(*) FROM outbox WHERE channel = $1) AS mw,
                (SELECT CAST(COALESCE(SUM(occurrences), 0) AS BIGINT) FROM outbox WHERE channel = $1)
                  + (SELECT CAST(COALESCE(SUM(folded), 0) AS BIGINT) FROM issue_channels WHERE channel = $1)
                  AS ow,
                (SELECT COUNT(*) FROM dead_letters WHERE channel = $1) AS md,
                (SELECT CAST(COALESCE(SUM(occurrences), 0) AS BIGINT) FROM dead_letters WHERE channel = $1) AS od,
                (SELECT COALESCE(MAX(occurrences_routed), 0) FROM channel_counters
                  WHERE channel = $1) AS routed,
                (SELECT COALESCE(MAX(occurrences_folded), 0) FROM channel_counters
                  WHERE channel = $1) AS folded,
                (SELECT COALESCE(MAX(messages_rolled_up), 0) FROM channel_counters
                  WHERE channel = $1) AS rolled,
                (SELECT MAX(sent_at) FROM sent WHERE channel = $1) AS last_sent,
                (SELECT MAX(sent_at) FROM sent WHERE channel = $1 AND kind = 'digest')
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
        })
    }

    async fn prune(&self, now_ms: i64, retention_days: u32) -> Result<u64, StoreError> {
        let cutoff_ms = now_ms - i64::from(retention_days) * DAY_MS;
        let mut tx = self.writer.begin().await?;
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
        deleted += sqlx::query("DELETE FROM deliveries WHERE received_at < $1")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await
            .map(|r| DB::rows_affected(&r))?;
        tx.commit().await?;
        Ok(deleted)
    }
}
