//! Storm control: the decisions that keep a channel readable when Sentry fires thousands of
//! webhooks a minute, without losing count of a single occurrence.
//!
//! - **Cooldown** (per issue and channel, the route's `cooldown`): after a message, further
//!   occurrences within the cooldown are folded (counted, not posted); when it ends with
//!   occurrences folded, one follow-up says how many ([`cooldown`]).
//! - **Roll-up** (per channel, `max_backlog`): when more messages wait than that, they are
//!   replaced by one summary ([`roll_up`]).
//! - **Rate limit** (per channel, `rate` and `burst`): a GCRA limiter in the delivery worker
//!   ([`ChannelLimits`]).
//!
//! Every folded or rolled-up occurrence stays in the accounting: a follow-up or roll-up
//! carries the occurrences it stands for, so per channel
//! `routed = posted + pending + dead` holds at every moment.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::alert::Level;
use crate::config::Config;
use crate::store::{OutboxItem, OutboxMessage};

/// What to do with one occurrence routed to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Post a message now; it also stands for `carried` occurrences folded earlier whose
    /// follow-up had not gone out yet.
    Post {
        /// Folded occurrences this message takes along.
        carried: u64,
    },
    /// Within the cooldown: count it and wait for the follow-up.
    Fold,
}

/// Cooldown state of one issue in one channel, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownState {
    /// Occurrences before this instant (Unix ms) are folded.
    pub cooldown_until_ms: i64,
    /// Occurrences folded and not yet posted.
    pub folded: u64,
}

/// The cooldown decision for an occurrence at `now_ms`. `state` is `None` for the first
/// occurrence of the issue in the channel; a zero cooldown never folds.
pub fn cooldown(state: Option<CooldownState>, now_ms: i64, cooldown: Duration) -> Decision {
    match state {
        Some(s) if !cooldown.is_zero() && now_ms < s.cooldown_until_ms => Decision::Fold,
        Some(s) => Decision::Post { carried: s.folded },
        None => Decision::Post { carried: 0 },
    }
}

/// One issue in a roll-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledIssue {
    /// Issue key.
    pub issue_key: String,
    /// Title of its newest alert.
    pub title: String,
    /// Primary project.
    pub project: String,
    /// Environment, if any.
    pub environment: Option<String>,
    /// Highest level seen among the folded messages.
    pub level: Level,
    /// Occurrences folded.
    pub occurrences: u64,
    /// Messages folded.
    pub messages: u64,
    /// Link to the issue.
    pub issue_url: Option<String>,
}

/// A summary standing for many waiting messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollUp {
    /// Issues, most occurrences first.
    pub issues: Vec<RolledIssue>,
    /// Messages folded into this one.
    pub messages: u64,
    /// Occurrences they carried.
    pub occurrences: u64,
    /// When the oldest of them was queued (Unix ms).
    pub since_ms: i64,
    /// The route mentions the folded messages would have carried, once each: a page is never
    /// lost to a roll-up.
    #[serde(default)]
    pub mentions: Vec<String>,
}

/// Folds waiting messages into one summary. Earlier roll-ups are merged in, so a channel
/// never holds more than one. Digests and notices are not folded (and not counted) here.
pub fn roll_up(items: &[OutboxItem]) -> RollUp {
    let mut by_issue: HashMap<String, RolledIssue> = HashMap::new();
    let mut messages = 0;
    let mut mentions: Vec<String> = Vec::new();
    let mut mention = |m: &Option<String>| {
        if let Some(m) = m
            && !mentions.contains(m)
        {
            mentions.push(m.clone());
        }
    };
    let mut add = |issue: RolledIssue| {
        by_issue
            .entry(issue.issue_key.clone())
            .and_modify(|e| {
                e.occurrences += issue.occurrences;
                e.messages += issue.messages;
                e.level = e.level.max(issue.level);
                e.title.clone_from(&issue.title);
            })
            .or_insert(issue);
    };
    for item in items {
        match &item.message {
            // Not storm traffic; callers leave these out.
            OutboxMessage::Digest { .. } | OutboxMessage::Notice { .. } => {}
            OutboxMessage::RollUp(r) => {
                messages += r.messages;
                for m in &r.mentions {
                    mention(&Some(m.clone()));
                }
                for issue in &r.issues {
                    add(issue.clone());
                }
            }
            OutboxMessage::Alert { alert, .. } | OutboxMessage::FollowUp { alert, .. } => {
                messages += 1;
                if let OutboxMessage::Alert { target, .. } = &item.message {
                    mention(&target.mention);
                }
                add(RolledIssue {
                    issue_key: item.issue_key.clone(),
                    title: alert.title.clone(),
                    project: alert.project().to_string(),
                    environment: alert.environment.clone(),
                    level: alert.level,
                    occurrences: item.occurrences,
                    messages: 1,
                    issue_url: alert.issue_url.clone(),
                });
            }
        }
    }
    let mut issues: Vec<RolledIssue> = by_issue.into_values().collect();
    issues.sort_by(|a, b| {
        b.occurrences
            .cmp(&a.occurrences)
            .then(b.level.cmp(&a.level))
            .then(a.issue_key.cmp(&b.issue_key))
    });
    RollUp {
        occurrences: items
            .iter()
            .filter(|i| i.message.is_storm_traffic())
            .map(|i| i.occurrences)
            .sum(),
        messages,
        since_ms: items.iter().map(|i| i.created_at_ms).min().unwrap_or(0),
        issues,
        mentions,
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// Per-channel GCRA limiters (`rate`, `burst`), rebuilt for a channel when its settings
/// change.
#[derive(Default)]
pub struct ChannelLimits {
    limiters: HashMap<String, ((u32, Duration, u32), Limiter)>,
    clock: DefaultClock,
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
            .or_insert_with(|| (key, RateLimiter::direct(quota(key))));
        if entry.0 != key {
            *entry = (key, RateLimiter::direct(quota(key)));
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

    const MIN: Duration = Duration::from_secs(60);

    fn config(rate: &str, burst: u32) -> Config {
        let text = format!(
            "default_channel = \"c\"\n[channels.c]\nconsole = true\nrate = \"{rate}\"\nburst = {burst}\n"
        );
        Config::parse(&text, std::path::Path::new("t.toml"), &|_| None).unwrap()
    }

    #[test]
    fn the_limiter_grants_a_burst_then_one_slot_per_interval() {
        let config = config("10/s", 3);
        let mut limits = ChannelLimits::default();
        for _ in 0..3 {
            assert!(limits.try_acquire(&config, "c").is_ok());
        }
        let wait = limits.try_acquire(&config, "c").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Unknown channels are not limited.
        assert!(limits.try_acquire(&config, "other").is_ok());
    }

    #[test]
    fn a_saturated_channel_has_no_burst_left() {
        let config = config("1/s", 5);
        let mut limits = ChannelLimits::default();
        limits.saturate(&config, "c");
        assert!(limits.try_acquire(&config, "c").is_err());
        assert_eq!(
            ChannelLimits::refill_time(&config, "c"),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn first_occurrence_posts_and_repeats_fold_until_the_cooldown_ends() {
        assert_eq!(cooldown(None, 0, MIN), Decision::Post { carried: 0 });
        let s = CooldownState {
            cooldown_until_ms: 60_000,
            folded: 4,
        };
        assert_eq!(cooldown(Some(s), 59_999, MIN), Decision::Fold);
        assert_eq!(
            cooldown(Some(s), 60_000, MIN),
            Decision::Post { carried: 4 }
        );
        assert_eq!(
            cooldown(Some(s), 0, Duration::ZERO),
            Decision::Post { carried: 4 }
        );
    }
}
