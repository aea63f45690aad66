//! The one clock every timestamp and timer reads: the wall time stored with deliveries,
//! cooldowns, retries and digests, and the monotonic time of rate limits and timeouts.
//!
//! Both move with Tokio's clock, so a test that pauses Tokio's time (`start_paused`,
//! `tokio::time::advance`) controls all of them at once: [`Clock::starting_at`] reads a chosen
//! wall time at the start and moves only as Tokio's time does. Timers are Tokio's
//! (`tokio::time::sleep`), which follow the paused clock by themselves. In production
//! [`Clock::system`] reads the system's wall clock, so a corrected system time is seen at
//! once.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall time and monotonic time for one process; cheap to clone.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system's wall clock. `Some((ms, at))`: the wall time was `ms` at Tokio's
    /// instant `at`.
    origin: Option<(i64, Instant)>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self { origin: None }
    }

    /// A clock that reads `start_ms` (Unix ms) now and then moves with Tokio's clock: under
    /// paused time, only as far as the test advances it.
    pub fn starting_at(start_ms: i64) -> Self {
        Self {
            origin: Some((start_ms, Instant::now())),
        }
    }

    /// Now, as Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self.origin {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Some((start_ms, at)) => start_ms + at.elapsed().as_millis() as i64,
        }
    }

    /// Now, as a timestamp (for schedules in a time zone).
    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.now_ms()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// Now, on the monotonic clock of timers and rate limits.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

/// The clock of the per-channel rate limiters (`governor`): Tokio's monotonic clock, so a
/// paused test clock holds the limiters too.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimiterClock;

impl governor::clock::Clock for LimiterClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

impl governor::clock::ReasonablyRealtime for LimiterClock {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_test_clock_moves_only_with_tokio_time() {
        let clock = Clock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ms(), 1_001_500);
        assert_eq!(clock.now().as_millisecond(), 1_001_500);
    }
}
