//! Cooldown per issue and channel: the rule for one occurrence ([`cooldown`]), the plan for a
//! group of deliveries ([`plan_ingest`], which also holds the occurrences of a muted pair and
//! lets spikes break through) and the follow-up when a cooldown ends with occurrences folded
//! ([`follow_up`]). Pure: the store reads the state, runs these and writes what they return.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::breakthrough;
use crate::plan::{
    Action, FollowUp, FollowUpReason, IngestPlan, MuteState, PairKey, PairState, PairUpdate,
    Routed, Spike,
};

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

impl From<&PairState> for CooldownState {
    /// What [`cooldown`] decides from.
    fn from(pair: &PairState) -> CooldownState {
        CooldownState {
            cooldown_until_ms: pair.cooldown_until_ms,
            folded: pair.folded,
        }
    }
}

/// Decides, in order, what becomes of each routed alert of a group, exactly as if each had
/// been applied alone: `stored` holds the cooldown of every (issue, channel) pair an
/// occurrence goes to that has one (the others have none yet), `mutes` the mute of every
/// such pair that has one.
///
/// A muted occurrence (one arriving before its mute's end) is held; any other follows the
/// cooldown. A mute that ended is not ended here: the store releases it (see
/// [`mute_ended`](super::mute_ended)) and an occurrence after its end is decided as if there
/// were none. When one pair crosses several `breakthrough` thresholds within one group and
/// window, one spike goes out, for the highest.
pub fn plan_ingest(
    routed: &[Routed<'_>],
    stored: HashMap<PairKey, PairState>,
    mutes: HashMap<PairKey, MuteState>,
) -> IngestPlan {
    let mut planner = Planner {
        pairs: stored,
        mutes,
        plan: IngestPlan::default(),
        latest: HashMap::new(),
        spikes: HashMap::new(),
        held: BTreeSet::new(),
    };
    for (i, r) in routed.iter().enumerate() {
        if r.occurrence {
            planner.occurrence(i, r);
        } else {
            planner.plan.actions.push(Action::Queue { occurrences: 0 });
        }
    }
    planner.finish()
}

/// [`plan_ingest`] at work.
struct Planner {
    pairs: HashMap<PairKey, PairState>,
    mutes: HashMap<PairKey, MuteState>,
    plan: IngestPlan,
    /// Per pair, the index of the last routed alert about it.
    latest: HashMap<PairKey, usize>,
    /// Per pair, the index of the action carrying its spike in this group and window.
    spikes: HashMap<PairKey, usize>,
    /// The pairs whose mute held occurrences in this group.
    held: BTreeSet<PairKey>,
}

impl Planner {
    /// Decides occurrence `i`.
    fn occurrence(&mut self, i: usize, r: &Routed<'_>) {
        let key = (r.issue_key.to_string(), r.channel.to_string());
        self.plan
            .counts
            .entry(r.channel.to_string())
            .or_default()
            .routed += 1;
        let muted = self.mutes.get(&key).is_some_and(|m| m.holds_at(r.at_ms));
        let folded_before = self.pairs.get(&key).map_or(0, |p| p.folded);
        let action = if muted {
            self.hold(&key, r)
        } else {
            let state = self.pairs.get(&key).map(CooldownState::from);
            match cooldown(state, r.at_ms, Duration::from_secs(r.cooldown_secs)) {
                Decision::Fold => self.fold(&key, r),
                Decision::Post { carried } => {
                    let started = PairState::started(r.at_ms, r.cooldown_secs);
                    self.pairs.insert(key.clone(), started);
                    // A new window: a spike of the last one stays where it is.
                    self.spikes.remove(&key);
                    Action::Queue {
                        occurrences: 1 + carried,
                    }
                }
            }
        };
        if action == Action::Fold && folded_before == 0 {
            self.plan.follow_ups_due.push(i);
        }
        self.plan.actions.push(action);
        if let Action::Spike { .. } = action {
            self.coalesce(&key, i);
        }
        self.latest.insert(key, i);
    }

    /// Folds an occurrence within its pair's cooldown; a spike when that reaches a threshold.
    fn fold(&mut self, key: &PairKey, r: &Routed<'_>) -> Action {
        self.plan
            .counts
            .entry(r.channel.to_string())
            .or_default()
            .folded += 1;
        let pair = self.pairs.get_mut(key).expect("a fold has state");
        pair.folded += 1;
        pair.folded_since_ms = pair.folded_since_ms.or(Some(r.at_ms));
        pair.window += 1;
        let Some(threshold) = breakthrough(r.breakthrough, pair.window, pair.spiked, false) else {
            return Action::Fold;
        };
        let spike = Spike {
            threshold,
            occurrences: pair.folded,
            since_ms: pair.folded_since_ms.unwrap_or(r.at_ms),
        };
        pair.folded = 0;
        pair.folded_since_ms = None;
        pair.spiked = threshold;
        Action::Spike { spike, held: false }
    }

    /// Holds an occurrence of a muted pair; a spike (which takes the held and folded ones
    /// along, and leaves the mute in place) when that reaches the last threshold.
    fn hold(&mut self, key: &PairKey, r: &Routed<'_>) -> Action {
        self.plan
            .counts
            .entry(r.channel.to_string())
            .or_default()
            .held += 1;
        self.held.insert(key.clone());
        let pair = self
            .pairs
            .entry(key.clone())
            .or_insert_with(|| PairState::idle(r.cooldown_secs));
        let mute = self.mutes.get_mut(key).expect("a hold has a mute");
        mute.held += 1;
        mute.held_since_ms = mute.held_since_ms.or(Some(r.at_ms));
        pair.window += 1;
        let Some(threshold) = breakthrough(r.breakthrough, pair.window, pair.spiked, true) else {
            return Action::Hold;
        };
        let since_ms = [mute.held_since_ms, pair.folded_since_ms]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(r.at_ms);
        let spike = Spike {
            threshold,
            occurrences: mute.held + pair.folded,
            since_ms,
        };
        *mute = MuteState::until(mute.until_ms);
        pair.folded = 0;
        pair.folded_since_ms = None;
        pair.spiked = threshold;
        Action::Spike { spike, held: true }
    }

    /// Action `i` is a spike of `key`: an earlier spike of the pair in this group and window
    /// becomes a plain fold (or hold), its occurrences going with this one, for the higher
    /// threshold.
    fn coalesce(&mut self, key: &PairKey, i: usize) {
        let Some(j) = self.spikes.insert(key.clone(), i) else {
            return;
        };
        let Action::Spike {
            spike: earlier,
            held,
        } = self.plan.actions[j]
        else {
            unreachable!("`spikes` indexes spikes");
        };
        self.plan.actions[j] = if held { Action::Hold } else { Action::Fold };
        if let Action::Spike { spike, .. } = &mut self.plan.actions[i] {
            spike.occurrences += earlier.occurrences;
            spike.since_ms = spike.since_ms.min(earlier.since_ms);
        }
    }

    /// The plan, with the changed pairs and mutes.
    fn finish(self) -> IngestPlan {
        let Planner {
            pairs,
            mutes,
            mut plan,
            latest,
            held,
            ..
        } = self;
        plan.pairs = latest
            .into_iter()
            .map(|(key, latest)| {
                let state = pairs[&key];
                (key, PairUpdate { state, latest })
            })
            .collect();
        plan.mutes = held
            .into_iter()
            .map(|key| {
                let mute = mutes[&key];
                (key, mute)
            })
            .collect();
        plan
    }
}

/// Whether `pair`'s cooldown has ended at `now_ms` with occurrences folded, so a follow-up is
/// due (unless a mute holds the pair: then it waits for the mute's end). The store finds due
/// pairs with a query that asks the same.
pub fn follow_up_due(pair: &PairState, now_ms: i64) -> bool {
    pair.folded > 0 && pair.cooldown_until_ms <= now_ms
}

/// The follow-up of a pair whose cooldown ended at `now_ms` (see [`follow_up_due`]).
pub fn follow_up(pair: &PairState, now_ms: i64) -> FollowUp {
    FollowUp {
        folded: pair.folded,
        since_ms: pair.folded_since_ms.unwrap_or(now_ms),
        next: PairState::started(now_ms, pair.cooldown_secs),
        reason: FollowUpReason::CooldownEnded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ChannelCounts;

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
            breakthrough: &[],
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
        let plan = plan_ingest(&routed, HashMap::new(), HashMap::new());
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
                folded: 2,
                held: 0
            }
        );
        // Only the first fold since a message makes the pair's follow-up due.
        assert_eq!(plan.follow_ups_due, [1]);
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
            HashMap::new(),
        );
        assert_eq!(plan.actions, [Action::Fold]);
        assert!(plan.follow_ups_due.is_empty(), "it was due already");
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
                reason: FollowUpReason::CooldownEnded,
            }
        );
    }

    const THRESHOLDS: [u64; 3] = [10, 100, 1000];

    fn key() -> PairKey {
        ("a".to_string(), "c".to_string())
    }

    /// An occurrence of issue `a` in channel `c` at `at_ms`, cooldown 1 h, thresholds
    /// 10/100/1000.
    fn spiky(at_ms: i64) -> Routed<'static> {
        Routed {
            cooldown_secs: 3_600,
            breakthrough: &THRESHOLDS,
            ..occurrence("a", "c", at_ms)
        }
    }

    /// Applies `routed` one delivery at a time, as separate groups, keeping the state.
    fn one_by_one(
        routed: &[Routed<'_>],
        pairs: &mut HashMap<PairKey, PairState>,
        mutes: &mut HashMap<PairKey, MuteState>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for r in routed {
            let plan = plan_ingest(std::slice::from_ref(r), pairs.clone(), mutes.clone());
            pairs.extend(plan.pairs.into_iter().map(|(k, u)| (k, u.state)));
            mutes.extend(plan.mutes);
            actions.extend(plan.actions);
        }
        actions
    }

    /// While muted, occurrences are held (not queued, not folded) and notices still go; an
    /// occurrence after the mute's end is decided as if there were none, the held ones
    /// waiting for the store to release the mute.
    #[test]
    fn a_muted_pair_holds_its_occurrences_and_notices_still_go() {
        let notice = Routed {
            occurrence: false,
            ..occurrence("a", "c", 1_000)
        };
        let routed = [
            occurrence("a", "c", 0),
            notice,
            occurrence("a", "c", 2_000),
            occurrence("a", "c", 50_000),
        ];
        let mutes = HashMap::from([(key(), MuteState::until(50_000))]);
        let plan = plan_ingest(&routed, HashMap::new(), mutes);
        assert_eq!(
            plan.actions,
            [
                Action::Hold,
                Action::Queue { occurrences: 0 },
                Action::Hold,
                Action::Queue { occurrences: 1 },
            ]
        );
        assert_eq!(
            plan.counts["c"],
            ChannelCounts {
                routed: 3,
                folded: 0,
                held: 2
            }
        );
        let mute = plan.mutes[&key()];
        assert_eq!((mute.held, mute.held_since_ms), (2, Some(0)));
        let pair = plan.pairs[&key()];
        assert_eq!(
            (pair.state, pair.latest),
            (PairState::started(50_000, 60), 3)
        );
        // The end of the mute: one follow-up carrying the two held back.
        let ended = crate::storm::mute_ended(&pair.state, &mute, 60_000).expect("held two");
        assert_eq!(
            (ended.folded, ended.since_ms, ended.reason),
            (2, 0, FollowUpReason::MuteEnded)
        );
    }

    /// Within one cooldown, a spike goes out at 10, 100 and 1000 occurrences, each carrying
    /// what was folded since the last; the window is not restarted by a spike, and the
    /// cooldown's own follow-up carries only what was folded after the last spike.
    #[test]
    fn spikes_break_through_a_cooldown_at_each_threshold() {
        let routed: Vec<Routed> = (0..1_201).map(|i| spiky(i * 10)).collect();
        let (mut pairs, mut mutes) = (HashMap::new(), HashMap::new());
        let actions = one_by_one(&routed, &mut pairs, &mut mutes);
        assert_eq!(actions[0], Action::Queue { occurrences: 1 });
        let spikes: Vec<(usize, Spike)> = actions
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Action::Spike { spike, held: false } => Some((i, *spike)),
                _ => None,
            })
            .collect();
        let spike = |threshold, occurrences, since_ms| Spike {
            threshold,
            occurrences,
            since_ms,
        };
        assert_eq!(
            spikes,
            [
                (10, spike(10, 10, 10)),
                (100, spike(100, 90, 110)),
                (1000, spike(1000, 900, 1010)),
            ]
        );
        let state = pairs[&key()];
        assert_eq!(
            (state.window, state.spiked, state.folded),
            (1200, 1000, 200)
        );
        let end = follow_up(&state, 3_600_000);
        assert_eq!((end.folded, end.since_ms), (200, 10_010));
        assert_eq!((end.next.window, end.next.spiked), (0, 0), "a new window");
    }

    /// A group crossing two thresholds of one pair queues one spike, for the highest, in the
    /// place of the occurrence that reached it, carrying all folded until then.
    #[test]
    fn several_thresholds_in_one_group_make_one_spike_for_the_highest() {
        let stored = HashMap::from([(key(), PairState::started(0, 3_600))]);
        let routed: Vec<Routed> = (1..=150).map(|i| spiky(i * 10)).collect();
        let plan = plan_ingest(&routed, stored, HashMap::new());
        let spikes: Vec<usize> = (0..150)
            .filter(|&i| matches!(plan.actions[i], Action::Spike { .. }))
            .collect();
        assert_eq!(spikes, [99]);
        assert_eq!(
            plan.actions[99],
            Action::Spike {
                spike: Spike {
                    threshold: 100,
                    occurrences: 100,
                    since_ms: 10
                },
                held: false
            }
        );
        assert!(
            plan.actions[9] == Action::Fold,
            "the spike at 10 was folded in"
        );
        let state = plan.pairs[&key()].state;
        assert_eq!((state.folded, state.window, state.spiked), (50, 150, 100));
        assert_eq!(plan.counts["c"].folded, 150);
    }

    /// A mute is broken through only at the last threshold: the spike carries every held
    /// occurrence, and the mute stays, holding the next ones.
    #[test]
    fn a_mute_is_broken_through_only_at_the_last_threshold() {
        let routed: Vec<Routed> = (0..1_005).map(spiky).collect();
        let mut pairs = HashMap::new();
        let mut mutes = HashMap::from([(key(), MuteState::until(1_000_000))]);
        let actions = one_by_one(&routed, &mut pairs, &mut mutes);
        assert!(actions[..999].iter().all(|a| *a == Action::Hold));
        assert_eq!(
            actions[999],
            Action::Spike {
                spike: Spike {
                    threshold: 1000,
                    occurrences: 1000,
                    since_ms: 0
                },
                held: true
            }
        );
        assert!(actions[1000..].iter().all(|a| *a == Action::Hold));
        let mute = mutes[&key()];
        assert_eq!((mute.held, mute.held_since_ms), (5, Some(1000)));
        assert_eq!(pairs[&key()].spiked, 1000);
        let ended = crate::storm::mute_ended(&pairs[&key()], &mute, 2_000_000).unwrap();
        assert_eq!(ended.folded, 5);
    }
}
