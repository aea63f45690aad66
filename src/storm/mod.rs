//! Storm control: the decisions that keep a channel readable when Sentry fires thousands of
//! webhooks a minute, without losing count of a single occurrence.
//!
//! - **Cooldown** (per issue and channel, the route's `cooldown`): after a message, further
//!   occurrences within the cooldown are folded (counted, not posted); when it ends with
//!   occurrences folded, one follow-up says how many ([`cooldown()`], [`plan_ingest`],
//!   [`follow_up`]).
//! - **Mute** (per issue and channel, until a time): occurrences are held (counted, not
//!   posted); when the mute ends having held some, one follow-up says how many
//!   ([`MuteState`], [`mute_ended`]). Notices about the issue are not muted.
//! - **Breakthrough** (the route's `breakthrough` thresholds): when the occurrences since a
//!   pair's last message reach a threshold, a spike follow-up goes out whatever the
//!   cooldown; a mute is broken through only at the last threshold ([`breakthrough`]).
//! - **Roll-up** (per channel, `max_backlog`): when more messages wait than that, they are
//!   replaced by one summary ([`plan_roll_up`]).
//! - **Rate limit** (per channel, `rate` and `burst`): a GCRA limiter in the delivery worker
//!   ([`ChannelLimits`]).
//!
//! Cooldowns and roll-ups are pure planners: they take plain values (what is stored, what
//! arrived) and return a plan of plain values ([`crate::plan`]), which the store turns into SQL
//! in its own transaction: the store is opened with [`StormPlanner`] and asks it there. This
//! module imports neither the store nor the outbox, and the store does not import it.
//!
//! Every folded, held or rolled-up occurrence stays in the accounting: a follow-up or roll-up
//! carries the occurrences it stands for, so per channel
//! `routed = posted + pending + dead + muted` holds at every moment (`tests.rs` checks the
//! planners keep it for any sequence of occurrences, mutes and thresholds).

mod cooldown;
mod limits;
mod mute;
mod rollup;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

pub use cooldown::{CooldownState, Decision, cooldown, follow_up, follow_up_due, plan_ingest};
pub use limits::ChannelLimits;
pub use mute::{breakthrough, mute_ended};
pub use rollup::{over_backlog, plan_roll_up, roll_up};

use crate::plan::{FollowUp, IngestPlan, MuteState, PairKey, PairState, Planner, Routed};

/// Storm control's rules as the store's [`Planner`]: [`plan_ingest`], [`follow_up`] and
/// [`mute_ended`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StormPlanner;

impl Planner for StormPlanner {
    fn plan_ingest(
        &self,
        routed: &[Routed<'_>],
        stored: HashMap<PairKey, PairState>,
        mutes: HashMap<PairKey, MuteState>,
    ) -> IngestPlan {
        plan_ingest(routed, stored, mutes)
    }

    fn follow_up(&self, pair: &PairState, now_ms: i64) -> FollowUp {
        follow_up(pair, now_ms)
    }

    fn mute_ended(&self, pair: &PairState, mute: &MuteState, now_ms: i64) -> Option<FollowUp> {
        mute_ended(pair, mute, now_ms)
    }
}

/// The planner a store is opened with: storm control's rules.
pub fn planner() -> Arc<dyn Planner> {
    Arc::new(StormPlanner)
}
