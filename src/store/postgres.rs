//! The PostgreSQL backend, for several replicas sharing one database.
//!
//! Every replica ingests through its own committer (group commit, as on SQLite); their
//! transactions run side by side, so the cooldown of an (issue, channel) pair is decided under
//! a transaction-level advisory lock on that pair ([`Backend::lock_pairs`]). Which replica
//! delivers to Slack is decided elsewhere (`crate::leader`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use super::StoreError;
use super::sql::{Backend, SqlStore};
use crate::plan::Planner;

/// PostgreSQL behind the [`Store`](super::Store) trait.
pub type PostgresStore = SqlStore<Postgres>;

/// The `NOTIFY` channel on which replicas announce queued Slack messages to the leader.
pub const QUEUED_CHANNEL: &str = "sluice_outbox";

/// The `NOTIFY` channel on which replicas announce deliveries waiting to be folded.
pub const FOLD_CHANNEL: &str = "sluice_fold";

/// Connections per replica: the committer, the delivery worker, readers and `/metrics`.
const POOL_SIZE: u32 = 10;

#[async_trait]
impl Backend for Postgres {
    /// `pg_advisory_xact_lock` on each pair (two 32-bit keys: the hashes of issue and
    /// channel; a hash collision only serialises two pairs more than needed), in the order
    /// given, released at commit or rollback: they keep the leader's `release_cooldowns` and
    /// mutes from racing a fold of the same pair (and a fold of an old leader, during a
    /// change of leader, from racing the new one's).
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

    /// Outside any ingest transaction: a `NOTIFY` takes a database-wide lock from its
    /// transaction's commit to its end, which would make every replica's group commits take
    /// turns.
    async fn announce_fold(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(FOLD_CHANNEL)
            .execute(pool)
            .await?;
        Ok(())
    }

    const LOCK_ROWS: &'static str = " FOR UPDATE";

    /// Replicas append; the leader folds.
    const FOLDS_AT_COMMIT: bool = false;

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
    /// so replicas starting together do not race) and starts the committer task; storm
    /// decisions are `planner`'s.
    pub async fn open(url: &str, planner: Arc<dyn Planner>) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| Box::pin(disable_nagle(conn)))
            .connect_with(connect_options(url)?)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self::from_pools(pool.clone(), pool, true, planner))
    }
}

/// Turns Nagle's algorithm off on a TCP connection to the server.
///
/// sqlx 0.9.0 leaves it on (launchbadge/sqlx#4335, fixed after that release). A statement
/// larger than one TCP segment then has its last segment held back until the server ACKs the
/// previous one, which a Linux server delays by up to 40 ms: a group commit's multi-row
/// statements took 20 ms each instead of 0.4 ms, and one replica ingested a third of what it
/// does over a Unix socket. sqlx does not expose the socket, so it is found by its address:
/// the server reports the session's client and server ports, and the one socket of this
/// process with that local and peer port is it. Nothing is found (and nothing changed) over a
/// Unix socket, or through a NAT that rewrites ports; the connection then only stays slower.
async fn disable_nagle(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let (client, server): (Option<i32>, Option<i32>) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(&mut *conn)
            .await?;
    if let (Some(client), Some(server)) = (client, server) {
        let (Ok(client), Ok(server)) = (u16::try_from(client), u16::try_from(server)) else {
            return Ok(());
        };
        if !set_nodelay_on(client, server) {
            tracing::debug!(client, server, "postgres: socket not found; Nagle stays on");
        }
    }
    Ok(())
}

/// Sets `TCP_NODELAY` on this process's TCP socket from local port `local` to remote port
/// `remote`; whether one was found.
#[cfg(target_os = "linux")]
fn set_nodelay_on(local: u16, remote: u16) -> bool {
    use std::os::fd::BorrowedFd;
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for two getsockname-style calls and one
        // setsockopt. If another thread closes it meanwhile, those calls fail with EBADF; if
        // the number is reused at once, the address check below does not match.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let port = |addr: std::io::Result<socket2::SockAddr>| {
            addr.ok().and_then(|a| a.as_socket()).map(|a| a.port())
        };
        if port(socket.local_addr()) == Some(local) && port(socket.peer_addr()) == Some(remote) {
            return socket.set_tcp_nodelay(true).is_ok();
        }
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn set_nodelay_on(_local: u16, _remote: u16) -> bool {
    false
}
