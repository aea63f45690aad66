//! The embedded SQLite backend: one file in WAL mode, for one process.
//!
//! Writes go through a single connection (SQLite allows one writer at a time; queueing in
//! process is cheaper than spinning on `SQLITE_BUSY`), reads through a small pool.
//! `synchronous = FULL`: every commit is fsynced before it returns, so an acknowledged
//! delivery survives a power cut, not only a process crash.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;
use super::sql::{Backend, SqlStore};
use crate::plan::Planner;

/// SQLite behind the [`Store`](super::Store) trait.
pub type SqliteStore = SqlStore<Sqlite>;

#[async_trait]
impl Backend for Sqlite {
    /// One connection writes, so cooldown decisions are already serialised.
    async fn lock_pairs(
        _conn: &mut SqliteConnection,
        _pairs: &[(String, String)],
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn announce_queued(_conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn announce_fold(_pool: &sqlx::Pool<Sqlite>) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// One connection writes: the batch is the writer's alone.
    const LOCK_ROWS: &'static str = "";

    /// One process writes, through one connection: nobody to take turns with, and a fold
    /// transaction beside each group commit cost a fifth of ingest (docs/performance.md).
    const FOLDS_AT_COMMIT: bool = true;

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or
    /// `sqlite::memory:`), runs the migrations and starts the committer task; storm decisions
    /// are `planner`'s.
    pub async fn open(url: &str, planner: Arc<dyn Planner>) -> Result<Self, StoreError> {
        Self::open_with(url, planner, |options| options).await
    }

    /// Like [`open`](Self::open), with the connection options changed by `adjust` first (a
    /// test sets `max_page_count` to see what a full disk does).
    pub async fn open_with(
        url: &str,
        planner: Arc<dyn Planner>,
        adjust: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let options = adjust(options);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        // An in-memory database exists per connection: read through the writer there.
        let reader = if memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self::from_pools(writer, reader, !memory, planner))
    }
}
