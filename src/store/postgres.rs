//! The PostgreSQL backend, for several replicas sharing one database.
//!
//! Every replica ingests through its own committer (group commit, as on SQLite); their
//! transactions run side by side, so the cooldown of an (issue, channel) pair is decided under
//! a transaction-level advisory lock on that pair ([`Backend::lock_pairs`]). Which replica
//! delivers to Slack is decided elsewhere (`crate::leader`).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use super::StoreError;
use super::sql::{Backend, SqlStore};

/// PostgreSQL behind the [`Store`](super::Store) trait.
pub type PostgresStore = SqlStore<Postgres>;

/// The `NOTIFY` channel on which replicas announce queued Slack messages to the leader.
pub const QUEUED_CHANNEL: &str = "sluice_outbox";

/// Connections per replica: the committer, the delivery worker, readers and `/metrics`.
const POOL_SIZE: u32 = 10;

#[async_trait]
impl Backend for Postgres {
    /// `pg_advisory_xact_lock` on each pair (two 32-bit keys: the hashes of issue and
    /// channel; a hash collision only serialises two pairs more than needed), in the order
    /// given, released at commit or rollback. Two ingest groups about one issue are also
    /// serialised by the upsert of its `issues` row; these locks are what keep the leader's
    /// `release_cooldowns`, which does not touch that row, from racing a fold.
    async fn lock_pairs(
        conn: &mut PgConnection,
        pairs: &[(String, String)],
    ) -> Result<(), sqlx::Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        let (issues, channels): (Vec<&str>, Vec<&str>) =
            pairs.iter().map(|(i, c)| (i.as_str(), c.as_str())).unzip();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(a, b) FROM (
                SELECT DISTINCT hashtext(i) AS a, hashtext(c) AS b
                FROM UNNEST($1::text[], $2::text[]) AS p(i, c)
                ORDER BY a, b) AS keys",
        )
        .bind(issues)
        .bind(channels)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn announce_queued(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Connection options for `url`, named so that `pg_stat_activity` shows which are Sluice's.
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url)?.application_name("sluice"))
}

impl SqlStore<Postgres> {
    /// Connects to `url` (`postgres://…`), runs the migrations (under sqlx's migration lock,
    /// so replicas starting together do not race) and starts the committer task.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect_options(url)?)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self::from_pools(pool.clone(), pool))
    }
}
