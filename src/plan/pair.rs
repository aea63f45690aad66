//! The state of one (issue, channel) pair and what the planner decides for it: the cooldown
//! ([`PairState`]), the mute ([`MuteState`]), an alert routed to the pair ([`Routed`]), the plan
//! for a group ([`IngestPlan`]) and the follow-up that ends a cooldown or a mute
//! ([`FollowUp`]).

use std::collections::BTreeMap;

use super::FollowUpReason;

/// The longest cooldown kept, in seconds: its length in milliseconds still fits an `i64`.
const MAX_COOLDOWN_SECS: u64 = i64::MAX as u64 / 1000;

/// An (issue, channel) pair.
pub type PairKey = (String, String);

/// The whole stored cooldown of one issue in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairState {
    /// Length of the cooldown the last message started, whole seconds (the route's `cooldown`
    /// then, at most [`i64::MAX`] ms): a follow-up starts another one as long.
    pub cooldown_secs: u64,
    /// Occurrences before this instant (Unix ms) are folded.
    pub cooldown_until_ms: i64,
    /// Occurrences folded and not yet posted.
    pub folded: u64,
    /// When the first of the folded occurrences arrived (Unix ms); `None` while none is.
    pub folded_since_ms: Option<i64>,
    /// Occurrences since the message that started the current window (a full message, or
    /// the follow-up at the end of a cooldown or of a mute; a spike does not start one):
    /// folded, held by a mute, or carried by a spike. The `breakthrough` thresholds are
    /// compared with it.
    pub window: u64,
    /// The highest `breakthrough` threshold a spike went out for in this window; 0: none.
    pub spiked: u64,
}

impl PairState {
    /// A cooldown of `cooldown_secs` starting at `now_ms`, with nothing folded: the state right
    /// after a message.
    pub fn started(now_ms: i64, cooldown_secs: u64) -> PairState {
        let cooldown_secs = cooldown_secs.min(MAX_COOLDOWN_SECS);
        PairState {
            cooldown_secs,
            cooldown_until_ms: now_ms.saturating_add(cooldown_secs as i64 * 1000),
            folded: 0,
            folded_since_ms: None,
            window: 0,
            spiked: 0,
        }
    }

    /// The state of a pair that has had no message yet (a mute held its first occurrences):
    /// no cooldown runs, and the end of the mute starts one of `cooldown_secs`.
    pub fn idle(cooldown_secs: u64) -> PairState {
        PairState {
            cooldown_until_ms: i64::MIN,
            ..PairState::started(0, cooldown_secs)
        }
    }
}

/// One alert routed to one channel, as [`Planner::plan_ingest`](super::Planner::plan_ingest) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed<'a> {
    /// The issue it is about.
    pub issue_key: &'a str,
    /// The channel it is routed to.
    pub channel: &'a str,
    /// When its delivery arrived, Unix ms.
    pub at_ms: i64,
    /// The route's cooldown, whole seconds; 0 never folds.
    pub cooldown_secs: u64,
    /// The route's `breakthrough` thresholds, ascending; empty: no spike breaks through.
    pub breakthrough: &'a [u64],
    /// A new occurrence of the issue (an event seen for the first time). False for a notice
    /// (resolved, assigned, a comment, a metric alert, a repeat without an event id): always
    /// queued, standing for no occurrence, outside the cooldown and never muted.
    pub occurrence: bool,
}

/// What becomes of one routed alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Queue a message standing for `occurrences`: 0 for a notice; for an occurrence, 1 plus
    /// those folded before it whose follow-up had not gone out.
    Queue {
        /// Occurrences the message stands for.
        occurrences: u64,
    },
    /// Within its pair's cooldown: counted, no message; the follow-up will carry it.
    Fold,
    /// Its pair is muted: counted and held, no message; the message at the end of the mute
    /// will carry it.
    Hold,
    /// Folded (or, `held`, held by a mute), and it brought its pair's window to a
    /// `breakthrough` threshold: queue a spike follow-up, in its place, carrying what was
    /// folded and held so far (this occurrence among them).
    Spike {
        /// The spike.
        spike: Spike,
        /// Whether the pair was muted (the spike broke through the mute).
        held: bool,
    },
}

/// The cooldown of one (issue, channel) pair after a group, to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairUpdate {
    /// The new state.
    pub state: PairState,
    /// Index (into the routed alerts) of the last alert about the pair: the one its
    /// follow-up shows.
    pub latest: usize,
}

/// Occurrences of a group routed to one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    /// Occurrences routed to the channel.
    pub routed: u64,
    /// Of those, folded by a cooldown.
    pub folded: u64,
    /// Of those, held by a mute.
    pub held: u64,
}

/// The storm decisions for a group of deliveries.
///
/// Per channel, `counts.routed` equals the occurrences of the messages queued (`Queue`
/// actions and spikes) plus the growth of the pairs' `folded` and of the mutes' `held`:
/// nothing is lost from the accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestPlan {
    /// One action per routed alert, in the same order.
    pub actions: Vec<Action>,
    /// The pairs whose cooldown changed, by (issue, channel) in sorted order (the order the
    /// store writes, and locks, them in).
    pub pairs: BTreeMap<(String, String), PairUpdate>,
    /// The mutes whose held occurrences changed, by (issue, channel) in sorted order.
    pub mutes: BTreeMap<(String, String), MuteState>,
    /// Per channel, in sorted order: the occurrences routed, folded and held.
    pub counts: BTreeMap<String, ChannelCounts>,
    /// The folds (by action index) that made their pair's follow-up due: the first fold since
    /// the pair's last message. The delivery worker must hear of them, or it would wait for
    /// its idle poll instead of the cooldown's end.
    pub follow_ups_due: Vec<usize>,
}

/// A cooldown (or a mute) that ended with occurrences folded (or held): one follow-up
/// message for them, and the pair's next state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowUp {
    /// Occurrences the follow-up stands for.
    pub folded: u64,
    /// When the first of them arrived, Unix ms.
    pub since_ms: i64,
    /// The pair's state after it: nothing folded, and a new cooldown as long as the last.
    pub next: PairState,
    /// Why it goes out.
    pub reason: FollowUpReason,
}

/// The stored mute of one issue in one channel, as the planners need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuteState {
    /// The mute holds occurrences that arrive before this instant (Unix ms).
    pub until_ms: i64,
    /// Occurrences held and not yet posted.
    pub held: u64,
    /// When the first of them arrived (Unix ms); `None` while none is.
    pub held_since_ms: Option<i64>,
}

impl MuteState {
    /// A mute until `until_ms` holding nothing yet.
    pub fn until(until_ms: i64) -> MuteState {
        MuteState {
            until_ms,
            held: 0,
            held_since_ms: None,
        }
    }

    /// Whether it holds an occurrence arriving at `at_ms`.
    pub fn holds_at(&self, at_ms: i64) -> bool {
        at_ms < self.until_ms
    }
}

/// A spike: the occurrences of a pair within its window reached a `breakthrough` threshold,
/// so one follow-up goes out for what was folded (or held) so far, whatever the cooldown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spike {
    /// The threshold reached.
    pub threshold: u64,
    /// Occurrences the spike follow-up carries (those folded or held and not yet posted,
    /// the one that reached the threshold among them).
    pub occurrences: u64,
    /// When the first of them arrived, Unix ms.
    pub since_ms: i64,
}
