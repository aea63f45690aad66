//! Rate limit per channel (`rate` and `burst`): a GCRA limiter the delivery worker asks before
//! each send.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{Quota, RateLimiter};

use crate::clock::LimiterClock;
use crate::config::Config;

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    LimiterClock,
    governor::middleware::NoOpMiddleware<<LimiterClock as Clock>::Instant>,
>;

/// Per-channel GCRA limiters (`rate`, `burst`), rebuilt for a channel when its settings
/// change.
#[derive(Default)]
pub struct ChannelLimits {
    limiters: HashMap<String, ((u32, Duration, u32), Limiter)>,
    clock: LimiterClock,
}

impl ChannelLimits {
    /// Uses up `channel`'s whole burst now, so its next send waits one interval. Called at
    /// start for a channel that sent recently: the limiter lives in memory, and without this a
    /// restart would grant a fresh burst on top of the sends just before it.
    pub fn saturate(&mut self, config: &Config, channel: &str) {
        let burst = config.channels.get(channel).map_or(1, |c| c.burst);
        for _ in 0..burst {
            if self.try_acquire(config, channel).is_err() {
                break;
            }
        }
    }

    /// How long a full burst of `channel` takes to refill: a send within this long before a
    /// restart still counts against the limit.
    pub fn refill_time(config: &Config, channel: &str) -> Duration {
        config.channels.get(channel).map_or(Duration::ZERO, |c| {
            (c.rate.per / c.rate.count.max(1)) * c.burst
        })
    }

    /// Takes one send slot of `channel` if there is one now; otherwise returns how long until
    /// the next slot.
    pub fn try_acquire(&mut self, config: &Config, channel: &str) -> Result<(), Duration> {
        let Some(ch) = config.channels.get(channel) else {
            return Ok(());
        };
        let key = (ch.rate.count, ch.rate.per, ch.burst);
        let entry = self
            .limiters
            .entry(channel.to_string())
            .or_insert_with(|| (key, RateLimiter::direct_with_clock(quota(key), self.clock)));
        if entry.0 != key {
            *entry = (key, RateLimiter::direct_with_clock(quota(key), self.clock));
        }
        entry
            .1
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

fn quota((count, per, burst): (u32, Duration, u32)) -> Quota {
    let period = (per / count.max(1)).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: &str, burst: u32) -> Config {
        let text = format!(
            "default_channel = \"c\"\n[channels.c]\nconsole = true\nrate = \"{rate}\"\nburst = {burst}\n"
        );
        Config::parse(&text, std::path::Path::new("t.toml"), &|_| None).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_grants_a_burst_then_one_slot_per_interval() {
        let config = config("10/s", 3);
        let mut limits = ChannelLimits::default();
        for _ in 0..3 {
            assert!(limits.try_acquire(&config, "c").is_ok());
        }
        let ms = Duration::from_millis;
        assert_eq!(limits.try_acquire(&config, "c"), Err(ms(100)));
        tokio::time::advance(ms(99)).await;
        assert_eq!(limits.try_acquire(&config, "c"), Err(ms(1)));
        tokio::time::advance(ms(1)).await;
        assert_eq!(limits.try_acquire(&config, "c"), Ok(()));
        assert_eq!(limits.try_acquire(&config, "c"), Err(ms(100)));
        // Unknown channels are not limited.
        assert!(limits.try_acquire(&config, "other").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_channel_has_no_burst_left() {
        let config = config("1/s", 5);
        let mut limits = ChannelLimits::default();
        limits.saturate(&config, "c");
        assert!(limits.try_acquire(&config, "c").is_err());
        assert_eq!(
            ChannelLimits::refill_time(&config, "c"),
            Duration::from_secs(5)
        );
    }
}
