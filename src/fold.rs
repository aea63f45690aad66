//! The fold loop, one per leader: folds the deliveries that the request path appended to the
//! store's fold queue into issues, day counts, storm decisions (cooldown, mute, breakthrough)
//! and outbox rows, in batches of up to [`BATCH`] deliveries, one transaction each
//! ([`crate::store::Store::fold`]).
//!
//! Why a loop of its own: the request path then writes no row that another delivery shares, so
//! replicas ingest side by side without waiting for each other's row locks, and the decisions
//! that need one writer (a cooldown's "fold or post?") have one. A batch leaves the queue in
//! the transaction that writes its effects, so a leader killed mid-batch leaves it whole for
//! the next leader: nothing is folded twice or lost.
//!
//! On SQLite (one process, one writer) each group commit folds its own deliveries instead
//! (`Backend::FOLDS_AT_COMMIT` in `store/sql`), so the loop finds the queue empty there.
//!
//! It is woken by this process's webhooks, by the announcements of other replicas (PostgreSQL
//! `NOTIFY`, see [`crate::leader`]), and at least every [`IDLE_POLL`]. After a batch that queued
//! messages (or made a follow-up due) it wakes the delivery worker, so the messages it renders
//! show counts that include every occurrence folded before them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Most deliveries folded in one transaction.
pub const BATCH: u32 = 1024;
/// Longest wait between folds when nothing woke the loop (an announcement lost while the
/// leader's listener reconnected is picked up this late at most).
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after the store failed, before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Folds until the queue is empty, then waits to be woken; until `shutdown`, when it folds
/// what the last requests queued (a single process restarts with counts that are up to
/// date; a replica handing over leaves the next leader less to do). A batch in flight at
/// shutdown commits or rolls back whole.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        let wait = match drain(&state).await {
            Ok(()) => IDLE_POLL,
            Err(err) => {
                tracing::error!(error = %err, "fold: store unavailable, retrying");
                STORE_RETRY
            }
        };
        tokio::select! {
            _ = state.fold.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if let Err(err) = drain(&state).await {
        tracing::warn!(error = %err, "fold: stopped with deliveries left to fold");
    }
    tracing::info!("fold: stopped");
}

/// Folds batches until one comes back short of [`BATCH`] (the queue is empty, or holds only
/// what arrived meanwhile: the next wake-up takes it).
async fn drain(state: &AppState) -> Result<(), crate::store::StoreError> {
    loop {
        let report = state.store.fold(BATCH).await?;
        let counters = &state.counters;
        counters.fold_batches.fetch_add(1, Ordering::Relaxed);
        counters
            .folded
            .fetch_add(report.deliveries() as u64, Ordering::Relaxed);
        if report.wakes_worker() {
            state.wake.notify_one();
        }
        if report.deliveries() > 0 {
            tracing::debug!(
                deliveries = report.deliveries(),
                queued = report.queued(),
                "fold: batch committed"
            );
        }
        if report.deliveries() < BATCH as usize {
            return Ok(());
        }
    }
}
