//! Group commit on the request path: [`SqlStore::apply_group`] and its statements. Claims
//! (inserts that return what they inserted, so that two replicas cannot both claim a delivery
//! or an event), then the fold queue rows of the deliveries that go on. Nothing here reads or
//! writes a row that another delivery shares: the leader folds the queue (`fold.rs`).

use std::collections::HashSet;

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::group;
use super::{Backend, ROWS_PER_STATEMENT, SqlStore, Value, values};
use crate::plan::Planner;
use crate::store::{Delivery, IngestOutcome, StoreError};

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
    /// Commits a group of deliveries on the request path with a fixed number of statements,
    /// whatever its size, touching no row another delivery shares: each delivery's own row,
    /// its event id's claim, and for those that go on, a fold queue row (on SQLite, where
    /// [`Backend::FOLDS_AT_COMMIT`], their fold instead). Decisions are made in memory in
    /// delivery order, exactly as if each delivery had been applied alone.
    pub(super) async fn apply_group(
        conn: &mut DB::Connection,
        group: &[&Delivery],
        planner: &dyn Planner,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        // Deliveries seen before, or earlier in this group, are duplicates; events seen before
        // (or earlier in this group) are not counted or posted again.
        let inserted = Self::claim_deliveries(conn, group).await?;
        let new_delivery = group::new_deliveries(group, inserted);
        let new_events = Self::claim_events(conn, group, &new_delivery).await?;
        let live = group::live_deliveries(group, &new_delivery, new_events);
        let mut outcomes = group::outcomes(&new_delivery, &live);
        if DB::FOLDS_AT_COMMIT {
            let folded = Self::fold_group(conn, group, &live, planner).await?;
            group::folded_at_commit(&mut outcomes, &folded);
        } else {
            Self::queue_folds(conn, &group::fold_rows(group, &live)?).await?;
        }
        Self::mark_duplicates(conn, &group::duplicates(group, &new_delivery, &live)).await?;
        Ok(outcomes)
    }

    /// Inserts the group's deliveries (sorted by body, the order their row locks are taken
    /// in), with what their alert is about; returns the bodies that were new. A repeat of an
    /// event is found out later: [`Self::write_trail`] marks it.
    async fn claim_deliveries(
        conn: &mut DB::Connection,
        group: &[&Delivery],
    ) -> Result<HashSet<Vec<u8>>, StoreError> {
        let mut by_body: Vec<&Delivery> = group.to_vec();
        by_body.sort_by_key(|d| d.body_sha256);
        let mut inserted = HashSet::new();
        for chunk in by_body.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO deliveries (body_sha256, resource, request_id, received_at, outcome,
                                         event_id, issue_key, project, environment) ",
                chunk,
                |mut b, d| {
                    let a = d.alert.as_ref();
                    b.push_bind(d.body_sha256.to_vec())
                        .push_bind(d.resource.clone())
                        .push_bind(d.request_id.clone())
                        .push_bind(d.received_at_ms)
                        .push_bind(if a.is_some() { "stored" } else { "ignored" })
                        .push_bind(a.and_then(|a| a.event_id.clone()))
                        .push_bind(a.map(|a| a.issue_key.clone()))
                        .push_bind(a.map(|a| a.project().to_string()))
                        .push_bind(a.and_then(|a| a.environment.clone()));
                },
                " ON CONFLICT DO NOTHING RETURNING body_sha256",
            );
            for row in q.build().fetch_all(&mut *conn).await? {
                inserted.insert(row.get::<Vec<u8>, _>(0));
            }
        }
        Ok(inserted)
    }

    /// Inserts the event ids of the new deliveries; returns those that were new.
    async fn claim_events(
        conn: &mut DB::Connection,
        group: &[&Delivery],
        new_delivery: &[bool],
    ) -> Result<HashSet<String>, StoreError> {
        let claims = group::event_claims(group, new_delivery);
        let mut new_events = HashSet::new();
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO events (event_id, issue_key, seen_at) ",
                chunk,
                |mut b, &(event_id, i)| {
                    let a = group[i].alert.as_ref().expect("claims have an alert");
                    b.push_bind(event_id.to_string())
                        .push_bind(a.issue_key.clone())
                        .push_bind(group[i].received_at_ms);
                },
                " ON CONFLICT DO NOTHING RETURNING event_id",
            );
            for row in q.build().fetch_all(&mut *conn).await? {
                new_events.insert(row.get::<String, _>(0));
            }
        }
        Ok(new_events)
    }

    /// Appends the live deliveries to the fold queue, in group order.
    async fn queue_folds(
        conn: &mut DB::Connection,
        rows: &[group::FoldRow<'_>],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = values(
                "INSERT INTO fold_queue (body_sha256, received_at, counted, payload) ",
                chunk,
                |mut b, row| {
                    b.push_bind(row.delivery.to_vec())
                        .push_bind(row.received_at)
                        .push_bind(i64::from(row.counted))
                        .push_bind(row.payload.clone());
                },
                "",
            );
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Marks the new deliveries that repeat an event seen before (`outcome` = `duplicate`):
    /// their own rows, for the status page.
    async fn mark_duplicates(
        conn: &mut DB::Connection,
        bodies: &[&[u8; 32]],
    ) -> Result<(), StoreError> {
        for chunk in bodies.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET outcome = 'duplicate' WHERE body_sha256 IN (",
            );
            let mut sep = q.separated(", ");
            for body in chunk {
                sep.push_bind(body.to_vec());
            }
            q.push(")");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}
