//! Cooldown per issue and channel: the rule for one occurrence ([`cooldown`]), the plan for a
//! group of deliveries ([`plan_ingest`]) and the follow-up when a cooldown ends with
//! occurrences folded ([`follow_up`]). Pure: the store reads the state, runs these and writes
//! what they return.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

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

/// Cooldown state of one issue in one channel, as [`cooldown`] needs it.
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

/// The longest cooldown kept, in seconds: its length in milliseconds still fits an `i64`.
const MAX_COOLDOWN_SECS: u64 = i64::MAX as u64 / 1000;

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
        }
    }

    /// What [`cooldown`] decides from.
    pub fn decision_state(&self) -> CooldownState {
        CooldownState {
            cooldown_until_ms: self.cooldown_until_ms,
            folded: self.folded,
        }
    }
}

/// One alert routed to one channel, as [`plan_ingest`] sees it.
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
    /// A new occurrence of the issue (an event seen for the first time). False for a notice
    /// (resolved, assigned, a comment, a metric alert, a repeat without an event id): always
    /// queued, standing for no occurrence, and outside the cooldown.
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
}

/// The storm decisions for a group of deliveries.
///
/// Per channel, `counts.routed` equals the occurrences of the `Queue` actions plus the growth
/// of the pairs' `folded`: nothing is lost from the accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestPlan {
    /// One action per routed alert, in the same order.
    pub actions: Vec<Action>,
    /// The pairs whose cooldown changed, by (issue, channel) in sorted order (the order the
    /// store writes, and locks, them in).
    pub pairs: BTreeMap<(String, String), PairUpdate>,
    /// Per channel, in sorted order: the occurrences routed and folded.
    pub counts: BTreeMap<String, ChannelCounts>,
}

/// Decides, in order, what becomes of each routed alert of a group, exactly as if each had
/// been applied alone: `stored` holds the cooldown of every (issue, channel) pair an
/// occurrence goes to that has one (the others have none yet).
pub fn plan_ingest(
    routed: &[Routed<'_>],
    mut stored: HashMap<(String, String), PairState>,
) -> IngestPlan {
    let mut plan = IngestPlan::default();
    let mut latest: HashMap<(String, String), usize> = HashMap::new();
    for (i, r) in routed.iter().enumerate() {
        if !r.occurrence {
            plan.actions.push(Action::Queue { occurrences: 0 });
            continue;
        }
        let counts = plan.counts.entry(r.channel.to_string()).or_default();
        counts.routed += 1;
        let key = (r.issue_key.to_string(), r.channel.to_string());
        let state = stored.get(&key).map(PairState::decision_state);
        let cooldown_length = Duration::from_secs(r.cooldown_secs);
        match cooldown(state, r.at_ms, cooldown_length) {
            Decision::Fold => {
                counts.folded += 1;
                let pair = stored.get_mut(&key).expect("a fold has state");
                pair.folded += 1;
                pair.folded_since_ms = pair.folded_since_ms.or(Some(r.at_ms));
                plan.actions.push(Action::Fold);
            }
            Decision::Post { carried } => {
                stored.insert(key.clone(), PairState::started(r.at_ms, r.cooldown_secs));
                plan.actions.push(Action::Queue {
                    occurrences: 1 + carried,
                });
            }
        }
        latest.insert(key, i);
    }
    plan.pairs = latest
        .into_iter()
        .map(|(key, latest)| {
            let state = stored[&key];
            (key, PairUpdate { state, latest })
        })
        .collect();
    plan
}

/// A cooldown that ended with occurrences folded: one follow-up message for them, and the
/// pair's next state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowUp {
    /// Occurrences the follow-up stands for.
    pub folded: u64,
    /// When the first of them arrived, Unix ms.
    pub since_ms: i64,
    /// The pair's state after it: nothing folded, and a new cooldown as long as the last.
    pub next: PairState,
}

/// Whether `pair`'s cooldown has ended at `now_ms` with occurrences folded, so a follow-up is
/// due. (The store finds due pairs with a query that asks the same.)
pub fn follow_up_due(pair: &PairState, now_ms: i64) -> bool {
    pair.folded > 0 && pair.cooldown_until_ms <= now_ms
}

/// The follow-up of a pair whose cooldown ended at `now_ms` (see [`follow_up_due`]).
pub fn follow_up(pair: &PairState, now_ms: i64) -> FollowUp {
    FollowUp {
        folded: pair.folded,
        since_ms: pair.folded_since_ms.unwrap_or(now_ms),
        next: PairState::started(now_ms, pair.cooldown_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

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

    fn occurrence<'a>(issue_key: &'a str, channel: &'a str, at_ms: i64) -> Routed<'a> {
        Routed {
            issue_key,
            channel,
            at_ms,
            cooldown_secs: 60,
            occurrence: true,
        }
    }

    /// A group decides as deliveries applied one by one would: the first occurrence of a pair
    /// is queued, repeats within its cooldown fold, a notice is queued carrying nothing, and
    /// the first occurrence after the cooldown carries the folded ones along.
    #[test]
    fn a_group_folds_repeats_and_carries_them_past_the_cooldown() {
        let notice = Routed {
            occurrence: false,
            ..occurrence("a", "c", 20_000)
        };
        let routed = [
            occurrence("a", "c", 0),
            occurrence("a", "c", 10_000),
            notice,
            occurrence("b", "c", 30_000),
            occurrence("a", "c", 59_999),
            occurrence("a", "c", 60_000),
        ];
        let plan = plan_ingest(&routed, HashMap::new());
        assert_eq!(
            plan.actions,
            [
                Action::Queue { occurrences: 1 },
                Action::Fold,
                Action::Queue { occurrences: 0 },
                Action::Queue { occurrences: 1 },
                Action::Fold,
                Action::Queue { occurrences: 3 },
            ]
        );
        assert_eq!(
            plan.counts["c"],
            ChannelCounts {
                routed: 5,
                folded: 2
            }
        );
        let a = plan.pairs[&("a".to_string(), "c".to_string())];
        assert_eq!(a.latest, 5);
        assert_eq!(a.state, PairState::started(60_000, 60));
        assert_eq!(plan.pairs[&("b".to_string(), "c".to_string())].latest, 3);
    }

    /// A stored cooldown folds, and the pair keeps the newest alert for its follow-up.
    #[test]
    fn a_stored_cooldown_folds_and_its_follow_up_carries_the_fold() {
        let stored = PairState {
            folded: 2,
            folded_since_ms: Some(5_000),
            ..PairState::started(0, 60)
        };
        let key = ("a".to_string(), "c".to_string());
        let plan = plan_ingest(
            &[occurrence("a", "c", 30_000)],
            HashMap::from([(key.clone(), stored)]),
        );
        assert_eq!(plan.actions, [Action::Fold]);
        let state = plan.pairs[&key].state;
        assert_eq!((state.folded, state.folded_since_ms), (3, Some(5_000)));
        assert!(!follow_up_due(&state, 59_999));
        assert!(follow_up_due(&state, 60_000));
        assert_eq!(
            follow_up(&state, 70_000),
            FollowUp {
                folded: 3,
                since_ms: 5_000,
                next: PairState::started(70_000, 60),
            }
        );
    }
}
