//! Storm control: the decisions that keep a channel readable when Sentry fires thousands of
//! webhooks a minute, without losing count of a single occurrence.
//!
//! - **Cooldown** (per issue and channel, the route's `cooldown`): after a message, further
//!   occurrences within the cooldown are folded (counted, not posted); when it ends with
//!   occurrences folded, one follow-up says how many ([`cooldown`], [`plan_ingest`],
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
//! arrived) and return a plan of plain values, which the store turns into SQL in its own
//! transaction. This module imports neither the store nor the outbox.
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

pub use cooldown::{
    Action, ChannelCounts, CooldownState, Decision, FollowUp, IngestPlan, PairState, PairUpdate,
    Routed, cooldown, follow_up, follow_up_due, plan_ingest,
};
pub use limits::ChannelLimits;
pub use mute::{MuteState, Spike, breakthrough, mute_ended};

/// Why a follow-up goes out: what its message says first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum FollowUpReason {
    /// The cooldown ended with occurrences folded: `+37 since 14:02`.
    #[default]
    CooldownEnded,
    /// The occurrences within the cooldown (or mute) reached a `breakthrough` threshold: a
    /// spike, posted whatever the cooldown.
    Spike {
        /// The threshold crossed.
        threshold: u64,
    },
    /// A mute of the issue in the channel ended: `held back N`.
    MuteEnded,
}
pub use rollup::{
    Content, RollUp, RollUpPlan, RolledIssue, Waiting, over_backlog, plan_roll_up, roll_up,
};
