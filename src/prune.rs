//! The pruning worker: deletes day buckets, seen events and seen deliveries older than
//! `storage.retention_days`, at start and then hourly, so the store stays bounded.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often pruning runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        let retention = state.live.load().config.storage.retention_days;
        match state.store.prune(state.clock.now_ms(), retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, retention_days = retention, "prune: deleted old rows"),
            Err(err) => tracing::warn!(error = %err, "prune: failed; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}
