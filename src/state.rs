//! What the HTTP handlers and the background workers share: the store, the live configuration
//! (swapped whole on reload), the wake-up signals of the workers, and the clock.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Config;
use crate::routing::Router;
use crate::store::Store;

/// A validated configuration with its routing table prebuilt: swapped as one value, so a
/// delivery never sees routes of one config and channels of another.
pub struct Live {
    /// The configuration.
    pub config: Config,
    /// Routes compiled from it.
    pub router: Router,
    /// When it was loaded (at start, or by the reload that put it in force), Unix ms.
    pub loaded_at_ms: i64,
}

impl Live {
    /// Compiles the router for `config`, loaded at `loaded_at_ms`.
    pub fn new(config: Config, loaded_at_ms: i64) -> Self {
        let router = Router::new(&config);
        Self {
            config,
            router,
            loaded_at_ms,
        }
    }
}

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// The configuration in force.
    pub live: Arc<ArcSwap<Live>>,
    /// Wakes the delivery worker when new outbox rows were committed.
    pub wake: Arc<Notify>,
    /// Wakes the fold loop when deliveries were committed to fold.
    pub fold: Arc<Notify>,
    /// Wakes the interactions worker when a click was committed.
    pub clicks: Arc<Notify>,
    /// Process counters exported on `/metrics`.
    pub counters: Arc<crate::metrics::Registry>,
    /// The one clock every timestamp and timer of this process reads.
    pub clock: Clock,
    /// Whether this replica leads (runs delivery, digest, watchdog, pruning); see
    /// [`crate::leader`]. Set by the leader supervisor; `false` until it starts.
    pub leading: Arc<AtomicBool>,
}

impl AppState {
    /// State for `config` over `store`, on the system clock.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self::with_clock(store, config, Clock::system())
    }

    /// State for `config` over `store`, reading `clock` (a test's).
    pub fn with_clock(store: Arc<dyn Store>, config: Config, clock: Clock) -> Self {
        Self {
            clock,
            store,
            live: Arc::new(ArcSwap::from_pointee(Live::new(config, clock.now_ms()))),
            wake: Arc::new(Notify::new()),
            fold: Arc::new(Notify::new()),
            clicks: Arc::new(Notify::new()),
            counters: Arc::default(),
            leading: Arc::default(),
        }
    }
}
