//! Storm control's plans as plain values, and the [`Planner`] that makes them.
//!
//! [`storm`](crate::storm) decides and [`store`](crate::store) executes; both speak in the
//! types of this module and neither imports the other. The store reads a pair's state inside
//! its transaction, asks the [`Planner`] it was opened with, and writes what the plan says in
//! the same transaction, so a decision is never made on a state another writer changed.
//!
//! - [`pair`]: an (issue, channel) pair's cooldown and mute, the alerts routed to it, the plan
//!   for a group of them and the follow-ups.
//! - [`rollup`]: a channel's waiting messages and the summary that replaces them.

pub mod pair;
pub mod rollup;

use std::collections::HashMap;

pub use pair::{
    Action, ChannelCounts, FollowUp, IngestPlan, MuteState, PairKey, PairState, PairUpdate, Routed,
    Spike,
};
pub use rollup::{Content, RollUp, RollUpPlan, RolledIssue, Waiting};

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

/// The storm decisions the store asks for inside its transactions (implemented by
/// [`storm::StormPlanner`](crate::storm::StormPlanner)). Pure: the answers depend on the
/// arguments alone.
pub trait Planner: Send + Sync + std::fmt::Debug {
    /// What becomes of each routed alert of a group, in order, exactly as if each had been
    /// applied alone: `stored` holds the cooldown of every pair an occurrence goes to that has
    /// one, `mutes` the mute of every such pair that has one.
    fn plan_ingest(
        &self,
        routed: &[Routed<'_>],
        stored: HashMap<PairKey, PairState>,
        mutes: HashMap<PairKey, MuteState>,
    ) -> IngestPlan;

    /// The follow-up of a pair whose cooldown ended at `now_ms` with occurrences folded.
    fn follow_up(&self, pair: &PairState, now_ms: i64) -> FollowUp;

    /// The follow-up when `mute` of `pair` ends at `now_ms`, if it held anything.
    fn mute_ended(&self, pair: &PairState, mute: &MuteState, now_ms: i64) -> Option<FollowUp>;
}
