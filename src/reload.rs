//! Hot reload of `routes.toml`, on SIGHUP and when the file changes (checked every 2 s):
//! parse → validate → swap. A config that fails to load is refused with its
//! `file:line:col: message` in the log and a metric, and the old config keeps serving.
//!
//! Routing, channels, storm limits, the digest and the Slack settings take effect for the
//! next delivery or send; the outbox keeps what it holds. `[server]` (the listen address,
//! body limit, timeouts and connection limits) and `storage.url` are read once at start: a
//! change to them is logged as needing a restart.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::state::{AppState, Live};

/// How often the file is compared with what was last loaded.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Runs until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let path = state.live.load().config.path.clone();
    let mut loaded = std::fs::read(&path).ok();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let why = tokio::select! {
            _ = hangup => "SIGHUP",
            _ = tokio::time::sleep(POLL_EVERY) => {
                let now = std::fs::read(&path).ok();
                if now.is_none() || now == loaded {
                    continue;
                }
                "file changed"
            }
            _ = shutdown.cancelled() => return,
        };
        loaded = std::fs::read(&path).ok();
        reload(&state, &path, why);
    }
}

/// Loads `path` and swaps it in, or keeps the old config and says why.
pub fn reload(state: &AppState, path: &Path, why: &str) -> bool {
    match Config::load(path) {
        Ok(config) => {
            let old = state.live.load();
            for (what, changed) in [
                ("[server]", old.config.server != config.server),
                (
                    "storage.url",
                    old.config.storage.url.expose() != config.storage.url.expose(),
                ),
            ] {
                if changed {
                    tracing::warn!(
                        setting = what,
                        "config: this change takes effect only after a restart"
                    );
                }
            }
            let routes = config.routes.len();
            let channels = config.channels.len();
            state
                .live
                .store(Arc::new(Live::new(config, state.clock.now_ms())));
            state.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(why, routes, channels, "config: reloaded");
            true
        }
        Err(err) => {
            state
                .counters
                .reloads_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(why, error = %err, "config: reload refused; the old config keeps serving");
            false
        }
    }
}
