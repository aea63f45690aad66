//! What PostgreSQL does during a run: its postmaster's pid (for its CPU time, when it runs on
//! this machine), and its lock waits, by sampling: a connection of its own polls `pg_locks`
//! (the locks not granted, held by backends of the run's database, joined to `pg_class` and
//! `pg_stat_activity`) at a fixed interval until stopped. Waits shorter than the interval can
//! fall between two samples; the summary says how many samples it took. Included by
//! `benches/ingest.rs` with `#[path]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::task::JoinHandle;

/// One row per lock a backend of this database waits for: the waiter, what it waits for, and
/// the statement it runs (shortened).
const WAITING: &str = "
    SELECT l.pid, l.locktype, l.mode, c.relname::text, left(a.query, 200)
    FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid
    LEFT JOIN pg_class c ON c.oid = l.relation
    WHERE NOT l.granted AND a.datname = current_database() AND l.pid <> pg_backend_pid()";

/// What the sampling saw.
#[derive(Debug, Default)]
pub struct LockWaits {
    /// Samples taken (queries answered).
    pub samples: usize,
    /// Samples that failed (the query errored); not counted in `samples`.
    pub failed: usize,
    /// Samples in which at least one backend waited for a lock.
    pub with_waiter: usize,
    /// The most backends waiting in one sample.
    pub max_waiters: usize,
    /// `locktype mode [on relation]` -> in how many samples some backend waited so.
    pub kinds: BTreeMap<String, usize>,
    /// The waiting statements (whitespace collapsed, first 200 characters) -> in how many
    /// samples.
    pub statements: BTreeMap<String, usize>,
    /// How often it sampled.
    pub every: Duration,
}

/// A sampler running in a task of its own; [`finish`](Self::finish) stops it.
pub struct LockSampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<LockWaits>,
}

impl LockSampler {
    /// Connects to `url` (the database the run writes to) and samples every `every` until
    /// [`finish`](Self::finish); an error when it cannot connect.
    pub async fn start(url: &str, every: Duration) -> Result<Self, String> {
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| format!("the lock sampler cannot connect: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut waits = LockWaits {
                every,
                ..LockWaits::default()
            };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopped.load(Ordering::Relaxed) {
                tick.tick().await;
                match sample(&mut conn).await {
                    Ok(rows) => waits.add(&rows),
                    Err(_) => waits.failed += 1,
                }
            }
            let _ = conn.close().await;
            waits
        });
        Ok(Self { stop, task })
    }

    /// Stops sampling (after the sample under way) and returns what it saw.
    pub async fn finish(self) -> Result<LockWaits, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| format!("the lock sampler failed: {e}"))
    }
}

/// The pid of the postmaster of the server at `url`, when that server runs on this machine:
/// the parent of the backend serving a connection of its own.
pub async fn postmaster_pid(url: &str) -> Result<u32, String> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat"));
    let _ = conn.close().await;
    let stat =
        stat.map_err(|_| format!("its backend {backend} is not a process of this machine"))?;
    // `pid (comm) state ppid ...`: the parent is the second field after the name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| format!("/proc/{backend}/stat: no parent pid"))
}

/// One waiting lock: pid, lock type, mode, relation, statement.
type Waiting = (i32, String, String, Option<String>, Option<String>);

async fn sample(conn: &mut PgConnection) -> Result<Vec<Waiting>, sqlx::Error> {
    sqlx::query_as::<_, Waiting>(WAITING)
        .fetch_all(&mut *conn)
        .await
}

impl LockWaits {
    /// Counts one sample's rows.
    fn add(&mut self, rows: &[Waiting]) {
        self.samples += 1;
        let mut waiters: Vec<i32> = rows.iter().map(|r| r.0).collect();
        waiters.sort_unstable();
        waiters.dedup();
        if waiters.is_empty() {
            return;
        }
        self.with_waiter += 1;
        self.max_waiters = self.max_waiters.max(waiters.len());
        let mut kinds: Vec<String> = rows
            .iter()
            .map(|(_, locktype, mode, relation, _)| match relation {
                Some(rel) => format!("{locktype} {mode} on {rel}"),
                None => format!("{locktype} {mode}"),
            })
            .collect();
        let mut statements: Vec<String> = rows
            .iter()
            .map(|r| {
                r.4.as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        for list in [&mut kinds, &mut statements] {
            list.sort_unstable();
            list.dedup();
        }
        for kind in kinds {
            *self.kinds.entry(kind).or_default() += 1;
        }
        for statement in statements {
            *self.statements.entry(statement).or_default() += 1;
        }
    }

    /// The summary, one line each: the counts, then what was waited for, then by which
    /// statements (the last two only when something waited).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "lock waits (pg_locks not granted, sampled every {} ms during the load): {} samples, {} with a waiter, at most {} waiting at once{}",
            self.every.as_millis(),
            self.samples,
            self.with_waiter,
            self.max_waiters,
            if self.failed > 0 {
                format!(", {} samples FAILED", self.failed)
            } else {
                String::new()
            }
        )];
        let list = |map: &BTreeMap<String, usize>| {
            map.iter()
                .map(|(k, n)| format!("{k} ({n} samples)"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !self.kinds.is_empty() {
            lines.push(format!("locks waited for: {}", list(&self.kinds)));
            lines.push(format!("waiting statements: {}", list(&self.statements)));
        }
        lines
    }
}
