//! Which replica delivers. Every replica ingests; exactly one at a time, the leader, runs the
//! delivery worker (so per-channel limits and cooldowns hold across replicas), the digest
//! scheduler, the silence watchdog and pruning.
//!
//! With SQLite there is one process, and it always leads. With PostgreSQL the leader is the
//! replica holding a session-level advisory lock ([`LOCK_KEY`]) on a connection of its own:
//!
//! - Followers try to take the lock every [`POLL`]. When the leader dies, PostgreSQL ends its
//!   session and releases the lock; a follower takes it at its next try. When the leader's
//!   machine goes silent instead, the lock connection's TCP keepalive settings make PostgreSQL
//!   end the session within about 6 s.
//! - A follower that took the lock waits [`GRACE`] before it delivers: the longest an old
//!   leader needs to notice that it lost the lock.
//! - The leader checks its lock connection every [`CHECK`]. If a check fails or takes longer
//!   than [`CHECK_TIMEOUT`], it stops leading at once: its workers are cancelled, and the
//!   delivery worker sends nothing more after the send in flight. It competes again only once
//!   its workers have stopped, and a [`POLL`] later, so that a follower with a working
//!   connection gets the lock first.
//! - The leader also checks its store (the pool its workers use, and that writes commit)
//!   every [`POLL`]. When the store has failed for [`STORE_FAILURE_LIMIT`], it steps down and
//!   lets the lock go, so that a replica whose store works delivers instead. A replica whose
//!   store fails does not seek the lock.
//! - On shutdown the leader unlocks once its workers have stopped, so a follower takes over
//!   at its next try, and never while this process still delivers.
//!
//! A message in flight when the leader dies may be sent again by the next leader: delivery is
//! at least once. The takeover takes at most a [`POLL`] plus [`GRACE`] after PostgreSQL let
//! the lock go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::store::{FOLD_CHANNEL, QUEUED_CHANNEL, Store};

/// The advisory lock key of the leader ("sluice" in ASCII, then 1).
pub const LOCK_KEY: i64 = 0x736c_7569_6365_0001;

/// How often followers try to lead.
pub const POLL: Duration = Duration::from_secs(1);

/// How often the leader checks the connection that holds its lock.
pub const CHECK: Duration = Duration::from_millis(250);

/// A lock-connection check slower than this counts as a lost connection.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A new leader waits this long after taking the lock before it delivers: the longest an old
/// leader that lost the lock may take to notice ([`CHECK`] then [`CHECK_TIMEOUT`]).
pub const GRACE: Duration = Duration::from_millis(2250);

/// A leader whose store has failed this long steps down.
pub const STORE_FAILURE_LIMIT: Duration = Duration::from_secs(5);

/// How long a stepping-down leader waits for its workers before it aborts them.
pub const WORKERS_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Leadership for this process as it changes: `true` while it leads. `postgres_url` is the
/// database shared with other replicas; `None` (SQLite) leads from the start. `delivering` is
/// true while this process's leader workers run ([`run_while_leading`] clears it once they
/// have stopped); the lock is not sought again before. `store` is the one the workers use:
/// leadership is given up when it fails, and not sought while it does. `stop` gives the lead
/// up (cancel it once the leader's workers have stopped).
pub fn campaign(
    postgres_url: Option<String>,
    delivering: Arc<AtomicBool>,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(postgres_url.is_none());
    match postgres_url {
        None => {
            // Keep the sender until the end, so that leadership never looks withdrawn.
            tokio::spawn(async move {
                stop.cancelled().await;
                drop(tx);
            });
        }
        Some(url) => {
            tokio::spawn(hold_lock(url, tx, delivering, store, stop));
        }
    }
    rx
}

/// Takes the lock when it can and holds it while the connection answers, until `stop`.
async fn hold_lock(
    url: String,
    leading: watch::Sender<bool>,
    delivering: Arc<AtomicBool>,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        // Not while workers of an earlier lead still run: they would deliver beside the next.
        while delivering.load(Ordering::SeqCst) {
            if !pause(CHECK, &stop).await {
                return;
            }
        }
        // Not with a store that fails: a replica whose store works should lead.
        if !store_works(store.as_ref()).await {
            pause(POLL, &stop).await;
            continue;
        }
        let mut conn = match connect(&url).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "leader: cannot reach PostgreSQL; retrying");
                pause(POLL, &stop).await;
                continue;
            }
        };
        // Follower: try until the lock is ours.
        if !wait_for_lock(&mut conn, &stop).await || stop.is_cancelled() {
            return;
        }
        // Give an old leader that lost the lock time to notice and stop, then make sure the
        // lock (and the connection holding it) is still ours.
        if !pause(GRACE, &stop).await || !is_locked(&mut conn).await {
            continue;
        }
        tracing::info!("leader: this replica leads (delivers to Slack, runs the digest)");
        leading.send_replace(true);
        if !lead(conn, &leading, store.as_ref(), &stop).await {
            return;
        }
    }
}

/// Tries the lock on `conn` every [`POLL`] until it is ours, or the connection fails (the
/// caller then finds it not locked). `false` when `stop` ended the wait.
async fn wait_for_lock(conn: &mut PgConnection, stop: &CancellationToken) -> bool {
    loop {
        let tried = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut *conn),
        )
        .await;
        match tried {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {
                if !pause(POLL, stop).await {
                    return false;
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "leader: lock connection failed; reconnecting");
                return true;
            }
            Err(_) => {
                tracing::warn!("leader: lock connection timed out; reconnecting");
                return true;
            }
        }
    }
}

/// Leads while `conn`, which holds the lock, answers and the store works: checks both, and
/// steps down (`leading` false) when either fails. `false` when it stepped down for `stop`
/// (the lock released), `true` when it stepped down for a failure and may seek the lock again.
async fn lead(
    mut conn: PgConnection,
    leading: &watch::Sender<bool>,
    store: &dyn Store,
    stop: &CancellationToken,
) -> bool {
    let mut store_checked = Instant::now();
    let mut store_failing_since: Option<Instant> = None;
    loop {
        if !pause(CHECK, stop).await {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK_KEY)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
            leading.send_replace(false);
            tracing::info!("leader: stepped down for shutdown");
            return false;
        }
        let checked =
            tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&mut conn)).await;
        if !matches!(checked, Ok(Ok(_))) {
            leading.send_replace(false);
            tracing::error!("leader: lost the lock connection; stopped delivering");
            // Let the lock go for sure, and give a follower with a working connection the
            // first try.
            drop(conn);
            pause(POLL, stop).await;
            return true;
        }
        if store_checked.elapsed() >= POLL {
            store_checked = Instant::now();
            if store_works(store).await {
                store_failing_since = None;
            } else if store_failing_since.get_or_insert(store_checked).elapsed()
                >= STORE_FAILURE_LIMIT
            {
                leading.send_replace(false);
                tracing::error!(
                    "leader: the store has failed for {}s; stepped down so that another replica delivers",
                    STORE_FAILURE_LIMIT.as_secs()
                );
                let _ = tokio::time::timeout(
                    CHECK_TIMEOUT,
                    sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(LOCK_KEY)
                        .execute(&mut conn),
                )
                .await;
                drop(conn);
                pause(POLL, stop).await;
                return true;
            }
        }
    }
}

/// Whether the store answers and commits, within [`CHECK_TIMEOUT`].
async fn store_works(store: &dyn Store) -> bool {
    match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "leader: the store fails");
            false
        }
        Err(_) => {
            tracing::warn!("leader: the store does not answer");
            false
        }
    }
}

/// Whether the last `pg_try_advisory_lock` left the lock with this session (a try that timed
/// out or failed on the way back may still have taken it).
async fn is_locked(conn: &mut PgConnection) -> bool {
    let held = tokio::time::timeout(
        CHECK_TIMEOUT,
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                 AND pid = pg_backend_pid() AND granted
                 AND objsubid = 1 AND (classid::bigint << 32) | objid::bigint = $1)",
        )
        .bind(LOCK_KEY)
        .fetch_one(conn),
    )
    .await;
    matches!(held, Ok(Ok(true)))
}

/// The lock connection. Its server-side TCP settings make PostgreSQL end the session, and so
/// release the lock, within about 6 s of this host going silent (dead machine, cut network),
/// instead of the kernel's default of two hours; a follower then takes over.
async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    let options = crate::store::postgres::connect_options(url)
        .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?
        .options([
            ("tcp_keepalives_idle", "3"),
            ("tcp_keepalives_interval", "1"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "6000"),
        ]);
    tokio::time::timeout(CHECK_TIMEOUT * 2, PgConnection::connect_with(&options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// Waits `period`; false when `stop` came first.
async fn pause(period: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = stop.cancelled() => false,
    }
}

/// Runs the leader's workers while `leading` says so, until `stop`; their state lives in the
/// store, so a replica that leads again (or another) carries on where they were.
pub async fn run_while_leading(
    state: AppState,
    mut leading: watch::Receiver<bool>,
    postgres_url: Option<String>,
    stop: CancellationToken,
) {
    loop {
        // Wait for the lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
        state.leading.store(true, Ordering::SeqCst);
        let term = stop.child_token();
        let mut workers = vec![
            tokio::spawn(crate::fold::run(state.clone(), term.clone())),
            tokio::spawn(crate::outbox::run(state.clone(), term.clone())),
            tokio::spawn(crate::interactions::run(state.clone(), term.clone())),
            tokio::spawn(crate::prune::run(state.clone(), term.clone())),
            tokio::spawn(crate::digest::run(state.clone(), term.clone())),
            tokio::spawn(crate::ops::watch_silence(state.clone(), term.clone())),
        ];
        if let Some(url) = &postgres_url {
            workers.push(tokio::spawn(wake_on_announcements(
                url.clone(),
                state.clone(),
                term.clone(),
            )));
        }
        // Lead until told otherwise.
        let mut campaign_over = false;
        loop {
            tokio::select! {
                changed = leading.changed() => match changed {
                    Ok(()) if *leading.borrow() => continue,
                    Ok(()) => break,
                    // The campaign is gone (it only ends at shutdown): stop leading.
                    Err(_) => {
                        campaign_over = true;
                        break;
                    }
                },
                _ = stop.cancelled() => break,
            }
        }
        term.cancel();
        for mut worker in workers {
            if tokio::time::timeout(WORKERS_STOP_TIMEOUT, &mut worker)
                .await
                .is_err()
            {
                tracing::warn!("leader: a worker did not stop in time; aborted");
                worker.abort();
            }
        }
        state.leading.store(false, Ordering::SeqCst);
        if stop.is_cancelled() || campaign_over {
            return;
        }
    }
}

/// Wakes the fold loop whenever any replica commits deliveries to fold, and the delivery and
/// interactions workers whenever one commits messages to send or a click, so that they run at
/// once rather than at their next poll.
async fn wake_on_announcements(url: String, state: AppState, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let listener = async {
            let options = crate::store::postgres::connect_options(&url)
                .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
            let mut listener =
                PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(options)).await?;
            listener.listen_all([QUEUED_CHANNEL, FOLD_CHANNEL]).await?;
            loop {
                if listener.recv().await?.channel() == FOLD_CHANNEL {
                    state.fold.notify_one();
                } else {
                    state.wake.notify_one();
                    state.clicks.notify_one();
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            result = listener => if let Err(err) = result {
                tracing::warn!(error = %err, "leader: announcements lost; reconnecting");
                // The workers still poll; wake them in case something arrived meanwhile.
                state.fold.notify_one();
                state.wake.notify_one();
                state.clicks.notify_one();
                pause(POLL, &stop).await;
            },
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to `within` for `rx` to say `leads`.
    async fn wait_for(rx: &mut watch::Receiver<bool>, leads: bool, within: Duration) {
        tokio::time::timeout(within, rx.wait_for(|l| *l == leads))
            .await
            .unwrap_or_else(|_| panic!("leadership did not become {leads} within {within:?}"))
            .unwrap();
    }

    /// A leader whose store fails (its pool closed) while its lock connection still works
    /// steps down, lets the lock go to a replica whose store works, and does not seek it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_store_fails_steps_down_for_a_healthy_replica() {
        let db = crate::testing::ScratchPostgres::new().await;
        let url = db.url().to_string();
        let store_a = crate::store::PostgresStore::open(&url, crate::storm::planner())
            .await
            .unwrap();
        let store_b = crate::store::PostgresStore::open(&url, crate::storm::planner())
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let mut a = campaign(
            Some(url.clone()),
            Arc::default(),
            Arc::new(store_a.clone()),
            stop.clone(),
        );
        wait_for(&mut a, true, Duration::from_secs(10)).await;
        let mut b = campaign(Some(url), Arc::default(), Arc::new(store_b), stop.clone());
        // B follows while A's store works.
        assert!(
            tokio::time::timeout(POLL * 3, b.wait_for(|l| *l))
                .await
                .is_err(),
            "two leaders"
        );
        store_a.close().await;
        wait_for(&mut a, false, STORE_FAILURE_LIMIT + Duration::from_secs(5)).await;
        wait_for(&mut b, true, POLL * 3 + GRACE).await;
        assert!(
            tokio::time::timeout(POLL * 3, a.wait_for(|l| *l))
                .await
                .is_err(),
            "a replica whose store fails took the lead back"
        );
        stop.cancel();
    }
}
