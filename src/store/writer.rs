//! Write transactions that never leave a connection in doubt, and the store's write health.
//!
//! A write transaction that fails (a statement or the `COMMIT` itself) can leave its session in
//! a state sqlx does not know about: SQLite rolls some failed transactions back by itself
//! (`SQLITE_FULL`, `SQLITE_IOERR`), so sqlx's queued `ROLLBACK` fails and its transaction depth
//! stays at 1; the next `begin` then opens a *savepoint* inside a transaction that is never
//! committed, and every later "commit" only releases it. Deliveries were acknowledged with
//! `202` and lost at the next restart. So a connection goes back to the pool only after its
//! transaction ended cleanly; after any failure it is closed, and the pool opens a fresh
//! session for the next writer. (Not an in-memory SQLite database: it lives in its one
//! connection, so there sqlx's rollback is all there is.)
//!
//! [`WriteHealth`] remembers whether the last write transaction failed. While it did,
//! `/readyz` answers 503 unless a probe transaction commits (see `SqlStore::ping`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Database, Pool, Transaction};

/// Whether the store's last write transaction failed; shared by every writer of one store.
#[derive(Debug, Clone)]
pub struct WriteHealth {
    failing: Arc<AtomicBool>,
    /// Close a connection whose transaction failed (false only for an in-memory SQLite
    /// database, which lives in its one connection: closing it would lose every row).
    replace_failed: bool,
}

impl WriteHealth {
    /// Health for a store whose failed connections are closed when `replace_failed`.
    pub fn new(replace_failed: bool) -> Self {
        Self {
            failing: Arc::default(),
            replace_failed,
        }
    }

    /// True from a failed write transaction until the next one commits.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    fn set(&self, failing: bool) {
        if self.failing.swap(failing, Ordering::SeqCst) != failing {
            if failing {
                tracing::error!(
                    "store: a write transaction failed; refusing to report ready until one commits"
                );
            } else {
                tracing::info!("store: write transactions commit again");
            }
        }
    }
}

/// A connection taken from the writer pool for one transaction.
///
/// Begin with [`WriteConn::begin`], and after `tx.commit()` succeeded call
/// [`WriteConn::committed`]. Dropped otherwise (an error returned early, a failed commit, a
/// cancelled future), it closes the connection instead of returning it to the pool, and marks
/// the store's writes as failing.
pub struct WriteConn<DB: Database> {
    conn: PoolConnection<DB>,
    health: WriteHealth,
    clean: bool,
}

impl<DB: Database> WriteConn<DB> {
    /// Takes a connection from `pool` for one write transaction.
    pub async fn acquire(pool: &Pool<DB>, health: &WriteHealth) -> Result<Self, sqlx::Error> {
        let conn = pool.acquire().await.inspect_err(|_| health.set(true))?;
        Ok(Self {
            conn,
            health: health.clone(),
            clean: false,
        })
    }

    /// Begins the transaction on this connection.
    pub async fn begin(&mut self) -> Result<Transaction<'_, DB>, sqlx::Error> {
        (&mut self.conn).begin().await
    }

    /// The transaction committed (or was rolled back without error): the connection may go
    /// back to the pool, and writes are healthy.
    pub fn committed(mut self) {
        self.clean = true;
        self.health.set(false);
    }
}

impl<DB: Database> Drop for WriteConn<DB> {
    fn drop(&mut self) {
        if !self.clean {
            if self.health.replace_failed {
                self.conn.close_on_drop();
            }
            self.health.set(true);
        }
    }
}
