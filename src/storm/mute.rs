//! Mutes and breakthrough, the pure half: a mute of one issue in one channel holds its
//! occurrences (counted, not posted) until it ends, and then one follow-up says how many it
//! held back ([`mute_ended`]); a spike within a cooldown, or a mute, breaks through at the
//! route's `breakthrough` thresholds ([`breakthrough`]).
//!
//! Issue notices (resolved, assigned, comments) are not muted: a mute quiets the repeats of an
//! error, not news about it.

use crate::plan::{FollowUp, FollowUpReason, MuteState, PairState};

/// The threshold a pair breaks through when the occurrences of its window reach `window`,
/// having broken through `spiked` already in that window (0: none): the highest of
/// `thresholds` reached and above `spiked`, if any. While `muted`, only the last threshold
/// counts: a mute is broken through only by the biggest spike.
pub fn breakthrough(thresholds: &[u64], window: u64, spiked: u64, muted: bool) -> Option<u64> {
    let counted = match (muted, thresholds.last()) {
        (true, Some(last)) => std::slice::from_ref(last),
        (true, None) => &[],
        (false, _) => thresholds,
    };
    counted
        .iter()
        .copied()
        .filter(|&t| t <= window && t > spiked)
        .max()
}

/// The follow-up when a mute ends at `now_ms`, if it held anything: it carries the held
/// occurrences and those the pair's cooldown folded (their own follow-up waited for the
/// mute), and starts a new cooldown as long as the last. `None` when the mute held nothing:
/// it just ends, and folded occurrences keep waiting for the end of their cooldown.
pub fn mute_ended(pair: &PairState, mute: &MuteState, now_ms: i64) -> Option<FollowUp> {
    if mute.held == 0 {
        return None;
    }
    let since_ms = [mute.held_since_ms, pair.folded_since_ms]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now_ms);
    Some(FollowUp {
        folded: mute.held + pair.folded,
        since_ms,
        next: PairState::started(now_ms, pair.cooldown_secs),
        reason: FollowUpReason::MuteEnded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: [u64; 3] = [10, 100, 1000];

    #[test]
    fn thresholds_break_through_once_each_and_a_mute_only_at_the_last() {
        assert_eq!(breakthrough(&THRESHOLDS, 9, 0, false), None);
        assert_eq!(breakthrough(&THRESHOLDS, 10, 0, false), Some(10));
        assert_eq!(breakthrough(&THRESHOLDS, 11, 10, false), None, "once");
        assert_eq!(breakthrough(&THRESHOLDS, 100, 10, false), Some(100));
        assert_eq!(
            breakthrough(&THRESHOLDS, 150, 0, false),
            Some(100),
            "several crossed: the highest"
        );
        assert_eq!(breakthrough(&THRESHOLDS, 999, 0, true), None);
        assert_eq!(breakthrough(&THRESHOLDS, 1000, 100, true), Some(1000));
        assert_eq!(breakthrough(&THRESHOLDS, 5000, 1000, true), None);
        assert_eq!(breakthrough(&[], 5000, 0, false), None, "[] is off");
        assert_eq!(breakthrough(&[], 5000, 0, true), None);
    }

    #[test]
    fn a_mute_that_held_nothing_ends_without_a_message() {
        let pair = PairState {
            folded: 3,
            folded_since_ms: Some(500),
            ..PairState::started(0, 60)
        };
        assert_eq!(mute_ended(&pair, &MuteState::until(1_000), 2_000), None);
        let mute = MuteState {
            held: 5,
            held_since_ms: Some(700),
            ..MuteState::until(1_000)
        };
        assert_eq!(
            mute_ended(&pair, &mute, 2_000),
            Some(FollowUp {
                folded: 8,
                since_ms: 500,
                next: PairState::started(2_000, 60),
                reason: FollowUpReason::MuteEnded,
            })
        );
    }
}
