//! The status page and the dead letters: the newest deliveries, each with where it was routed
//! and what became of it there; a channel's state now; dead letters listed, and replayed into
//! the outbox.
//!
//! A delivery's trail is three things written by ingest and kept up by the outbox's moves:
//! the `deliveries` row (what arrived), its `delivery_routes` (per channel: queued, folded or
//! muted) and, for a queued one, the message row that carries its body's hash in `delivery`,
//! in `outbox`, `sent` or `dead_letters` (in none: a roll-up replaced it). A page reads only
//! its own rows, by index, whatever the store's size: one query for the deliveries, one for
//! their routes, one for their messages.

use std::collections::HashMap;

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::{Backend, ROWS_PER_STATEMENT, SqlStore, Value};
use crate::store::writer::WriteConn;
use crate::store::{
    ChannelNow, DeadLetter, DeadLetterFilter, DeliveryCursor, DeliveryRoute, DeliveryTrail, Fate,
    StoreError,
};

/// A delivery's body hash, the key of its trail.
type Body = [u8; 32];

/// A dead letter taken out to be queued again.
struct Letter {
    id: i64,
    channel: String,
    issue_key: String,
    kind: String,
    payload: String,
    occurrences: i64,
    delivery: Option<Vec<u8>>,
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
    Option<Vec<u8>>: Value<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    pub(super) async fn recent_deliveries(
        &self,
        before: Option<DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<DeliveryTrail>, StoreError> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT d.body_sha256, d.resource, d.request_id, d.received_at, d.outcome,
                    d.event_id, d.issue_key, d.project, d.environment, i.title,
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM fold_queue AS f
                                           WHERE f.body_sha256 = d.body_sha256)
                         THEN 1 ELSE 0 END AS BIGINT) AS folding
             FROM deliveries AS d LEFT JOIN issues AS i ON i.issue_key = d.issue_key",
        );
        if let Some(c) = before {
            q.push(" WHERE (d.received_at, d.body_sha256) < (")
                .push_bind(c.received_at_ms)
                .push(", ")
                .push_bind(c.body_sha256.to_vec())
                .push(")");
        }
        q.push(" ORDER BY d.received_at DESC, d.body_sha256 DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.reader).await?;
        let mut trails = rows
            .iter()
            .map(Self::decode_trail)
            .collect::<Result<Vec<_>, _>>()?;
        let bodies: Vec<Body> = trails.iter().map(|t| t.cursor.body_sha256).collect();
        let mut routes = self.routes_of(&bodies).await?;
        let messages = self.messages_of(&bodies).await?;
        for trail in &mut trails {
            let body = trail.cursor.body_sha256;
            for (channel, route, decision) in routes.remove(&body).unwrap_or_default() {
                let fate = match decision.as_str() {
                    "folded" => Fate::Folded,
                    "muted" => Fate::Muted,
                    "queued" => messages
                        .get(&(body, channel.clone()))
                        .cloned()
                        .unwrap_or(Fate::RolledUp),
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "delivery_routes: unknown decision `{other}`"
                        )));
                    }
                };
                trail.routes.push(DeliveryRoute {
                    channel,
                    route,
                    fate,
                });
            }
        }
        Ok(trails)
    }

    /// A [`DeliveryTrail`] without its routes, from a `deliveries` row joined with the issue's
    /// `title`.
    fn decode_trail(r: &DB::Row) -> Result<DeliveryTrail, StoreError> {
        Ok(DeliveryTrail {
            cursor: DeliveryCursor {
                received_at_ms: r.get("received_at"),
                body_sha256: body_of(r.get("body_sha256"))?,
            },
            resource: r.get("resource"),
            request_id: r.get("request_id"),
            outcome: r.get("outcome"),
            event_id: r.get("event_id"),
            issue_key: r.get("issue_key"),
            project: r.get("project"),
            environment: r.get("environment"),
            title: r.get("title"),
            folding: r.get::<i64, _>("folding") != 0,
            routes: Vec::new(),
        })
    }

    /// The routes of `bodies`, per delivery in channel order: (channel, route, decision).
    async fn routes_of(
        &self,
        bodies: &[Body],
    ) -> Result<HashMap<Body, Vec<(String, Option<String>, String)>>, StoreError> {
        let mut routes: HashMap<Body, Vec<_>> = HashMap::new();
        for chunk in bodies.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT body_sha256, channel, route, decision FROM delivery_routes
                 WHERE body_sha256 IN ",
            );
            push_list(&mut q, chunk);
            q.push(" ORDER BY body_sha256, channel");
            for r in q.build().fetch_all(&self.reader).await? {
                routes
                    .entry(body_of(r.get("body_sha256"))?)
                    .or_default()
                    .push((r.get("channel"), r.get("route"), r.get("decision")));
            }
        }
        Ok(routes)
    }

    /// What became of the messages queued for `bodies`, by (delivery, channel): waiting in the
    /// outbox, sent, or dead-lettered.
    async fn messages_of(
        &self,
        bodies: &[Body],
    ) -> Result<HashMap<(Body, String), Fate>, StoreError> {
        let mut fates = HashMap::new();
        for chunk in bodies.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT id, delivery, channel, 'pending' AS fate, CAST(NULL AS BIGINT) AS at,
                        CAST(NULL AS TEXT) AS detail
                 FROM outbox WHERE delivery IN ",
            );
            push_list(&mut q, chunk);
            q.push(
                " UNION ALL SELECT id, delivery, channel, 'posted', sent_at, slack_ts
                 FROM sent WHERE delivery IN ",
            );
            push_list(&mut q, chunk);
            q.push(
                " UNION ALL SELECT id, delivery, channel, 'dead', dead_at, error
                 FROM dead_letters WHERE delivery IN ",
            );
            push_list(&mut q, chunk);
            // The newest message wins: a body seen again after its delivery was pruned may
            // still have its old message in `sent`.
            q.push(" ORDER BY id");
            for r in q.build().fetch_all(&self.reader).await? {
                let fate = match r.get::<String, _>("fate").as_str() {
                    "pending" => Fate::Pending,
                    "posted" => Fate::Posted {
                        at_ms: r.get::<Option<i64>, _>("at").unwrap_or_default(),
                        slack_ts: r.get("detail"),
                    },
                    _ => Fate::Dead {
                        error: r.get::<Option<String>, _>("detail").unwrap_or_default(),
                    },
                };
                fates.insert((body_of(r.get("delivery"))?, r.get("channel")), fate);
            }
        }
        Ok(fates)
    }

    pub(super) async fn channel_now(
        &self,
        channel: &str,
        now_ms: i64,
        since_ms: i64,
    ) -> Result<ChannelNow, StoreError> {
        let totals = self.channel_totals(channel).await?;
        let row = sqlx::query(
            "SELECT
                (SELECT MAX(held_until) FROM channel_counters WHERE channel = $1) AS held,
                (SELECT COUNT(*) FROM sent WHERE channel = $1 AND sent_at >= $2) AS posted",
        )
        .bind(channel)
        .bind(since_ms)
        .fetch_one(&self.reader)
        .await?;
        Ok(ChannelNow {
            totals,
            held_until_ms: row
                .get::<Option<i64>, _>("held")
                .filter(|&until| until > now_ms),
            posted_since: row.get::<i64, _>("posted").max(0) as u64,
        })
    }

    pub(super) async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT dl.id, dl.kind, dl.channel, dl.issue_key, dl.occurrences, dl.attempts,
                    dl.error, dl.reason, dl.dead_at, i.title
             FROM dead_letters AS dl LEFT JOIN issues AS i ON i.issue_key = dl.issue_key
             WHERE 1 = 1",
        );
        push_filter(&mut q, filter, "dl.");
        if let Some(before) = filter.before_id {
            q.push(" AND dl.id < ").push_bind(before);
        }
        q.push(" ORDER BY dl.id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.reader).await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                id: r.get("id"),
                kind: r.get("kind"),
                title: r.get("title"),
                channel: r.get("channel"),
                issue_key: r.get("issue_key"),
                occurrences: r.get::<i64, _>("occurrences").max(0) as u64,
                attempts: r.get::<i64, _>("attempts").clamp(0, u32::MAX as i64) as u32,
                error: r.get("error"),
                reason: r.get("reason"),
                dead_at_ms: r.get("dead_at"),
            })
            .collect())
    }

    /// Takes the matching dead letters out first (the transaction's first statement writes,
    /// as `sluice` may run beside the service on SQLite; and on PostgreSQL only what was taken
    /// out is queued, whatever is dead-lettered meanwhile), then queues them again in id order:
    /// new rows, so new ids, after everything already waiting. Rows of a channel held by
    /// Slack's `Retry-After` (`channel_counters.held_until`) wait for the hold like every row
    /// of it; the hold is left as it is.
    pub(super) async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut w = WriteConn::acquire(&self.writer, &self.health).await?;
        let mut tx = w.begin().await?;
        let mut q = QueryBuilder::<DB>::new("DELETE FROM dead_letters WHERE 1 = 1");
        push_filter(&mut q, filter, "");
        q.push(" RETURNING id, channel, issue_key, kind, payload, occurrences, delivery");
        let mut letters: Vec<Letter> = q
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Letter {
                id: r.get("id"),
                channel: r.get("channel"),
                issue_key: r.get("issue_key"),
                kind: r.get("kind"),
                payload: r.get("payload"),
                occurrences: r.get("occurrences"),
                delivery: r.get("delivery"),
            })
            .collect();
        letters.sort_by_key(|l| l.id);
        let mut ids = Vec::with_capacity(letters.len());
        for chunk in letters.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO outbox (channel, issue_key, kind, payload, occurrences, created_at,
                                     attempts, next_attempt_at, delivery) ",
            );
            q.push_values(chunk, |mut b, l| {
                b.push_bind(l.channel.clone())
                    .push_bind(l.issue_key.clone())
                    .push_bind(l.kind.clone())
                    .push_bind(l.payload.clone())
                    .push_bind(l.occurrences)
                    .push_bind(now_ms)
                    .push_bind(0i64)
                    .push_bind(now_ms)
                    .push_bind(l.delivery.clone());
            });
            q.push(" RETURNING id");
            for r in q.build().fetch_all(&mut *tx).await? {
                ids.push(r.get::<i64, _>("id"));
            }
        }
        // Ids are handed out in insertion order.
        ids.sort_unstable();
        if !ids.is_empty() {
            DB::announce_queued(&mut *tx).await?;
        }
        tx.commit().await?;
        w.committed();
        Ok(ids)
    }
}

/// `($1, $2, …)`: the bodies bound as a list for `IN`.
fn push_list<DB: Backend>(q: &mut QueryBuilder<DB>, bodies: &[Body])
where
    Vec<u8>: Value<DB>,
{
    q.push("(");
    let mut sep = q.separated(", ");
    for body in bodies {
        sep.push_bind(body.to_vec());
    }
    q.push(")");
}

/// ` AND …` for the channel and `since_ms` of `filter` (its `before_id` is the caller's), on
/// the `dead_letters` columns named with `prefix`.
fn push_filter<DB: Backend>(q: &mut QueryBuilder<DB>, filter: &DeadLetterFilter, prefix: &str)
where
    i64: Value<DB>,
    String: Value<DB>,
{
    if let Some(channel) = &filter.channel {
        q.push(format_args!(" AND {prefix}channel = "))
            .push_bind(channel.clone());
    }
    if let Some(since) = filter.since_ms {
        q.push(format_args!(" AND {prefix}dead_at >= "))
            .push_bind(since);
    }
}

/// A stored body hash as the 32 bytes it must be.
fn body_of(bytes: Vec<u8>) -> Result<Body, StoreError> {
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| StoreError::Corrupt(format!("a body hash of {} bytes", b.len())))
}
