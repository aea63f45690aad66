//! The accounting invariant, on the planners alone: for any sequence of occurrences (issues,
//! channels, arrival times, cooldowns, breakthrough thresholds), interleaved with mutes set
//! and ended, ended cooldowns, roll-ups and sends, every channel keeps
//! `routed = posted + queued (in messages) + folded (pending) + held (muted)`.
//!
//! The model below does what the store does with each plan (queue the messages, write the
//! pairs and mutes back, end mutes, replace rolled-up rows), with plain collections instead
//! of SQL.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::alert::{Alert, Level};
use crate::plan::*;

const ISSUES: [&str; 3] = ["i0", "i1", "i2"];
const CHANNELS: [&str; 2] = ["c0", "c1"];
/// Route cooldowns, seconds: none, short, and the default 30 minutes.
const COOLDOWNS: [u64; 4] = [0, 30, 60, 1_800];
/// Route `breakthrough` thresholds: off, and lists small enough for a test to reach.
const THRESHOLDS: [&[u64]; 4] = [&[], &[2, 5], &[3], &[2, 4, 8]];

/// One routed alert: issue, channel, ms since the previous one, cooldown, thresholds, and
/// whether it is a new occurrence (otherwise a notice).
type Arrival = (usize, usize, i64, usize, usize, bool);

#[derive(Debug, Clone)]
enum Step {
    /// One group commit of routed alerts, in delivery order.
    Ingest(Vec<Arrival>),
    /// Time passes (ms), then every ended mute that held occurrences, and every ended
    /// cooldown with occurrences folded, gets its follow-up.
    Release(i64),
    /// The issue is muted in the channel for this long (ms), from now.
    Mute(usize, usize, i64),
    /// The issue's mute in the channel ends now.
    Unmute(usize, usize),
    /// The channel's backlog is rolled up.
    RollUp(usize),
    /// Slack accepts the channel's oldest waiting message.
    Post(usize),
    /// A digest is queued for the channel (never rolled up, carries no occurrence).
    Digest(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let arrival = (
        0..ISSUES.len(),
        0..CHANNELS.len(),
        0..40_000i64,
        0..COOLDOWNS.len(),
        0..THRESHOLDS.len(),
        prop::bool::weighted(0.9),
    );
    // A burst: one issue in one channel, many times, close together (spikes, held ones).
    let burst = (
        0..ISSUES.len(),
        0..CHANNELS.len(),
        0..COOLDOWNS.len(),
        0..THRESHOLDS.len(),
        1..20usize,
        0..2_000i64,
    )
        .prop_map(|(i, c, cooldown, thresholds, n, gap)| {
            vec![(i, c, gap, cooldown, thresholds, true); n]
        });
    prop_oneof![
        4 => prop::collection::vec(arrival, 1..16).prop_map(Step::Ingest),
        2 => burst.prop_map(Step::Ingest),
        2 => (0..200_000i64).prop_map(Step::Release),
        2 => (0..ISSUES.len(), 0..CHANNELS.len(), 1..600_000i64)
            .prop_map(|(i, c, ms)| Step::Mute(i, c, ms)),
        1 => (0..ISSUES.len(), 0..CHANNELS.len()).prop_map(|(i, c)| Step::Unmute(i, c)),
        1 => (0..CHANNELS.len()).prop_map(Step::RollUp),
        2 => (0..CHANNELS.len()).prop_map(Step::Post),
        1 => (0..CHANNELS.len()).prop_map(Step::Digest),
    ]
}

/// What a waiting message is, in the model.
#[derive(Debug, Clone)]
enum Message {
    /// An alert or follow-up about an issue (index into `ISSUES`), with its route's mention.
    Issue(usize, Option<&'static str>),
    RollUp(RollUp),
    Digest,
}

#[derive(Debug, Clone)]
struct Queued {
    id: i64,
    channel: usize,
    occurrences: u64,
    queued_at_ms: i64,
    message: Message,
}

/// The store, as plain collections.
struct World {
    now: i64,
    next_id: i64,
    alerts: Vec<Alert>,
    pairs: HashMap<(String, String), PairState>,
    mutes: HashMap<(String, String), MuteState>,
    queue: Vec<Queued>,
    routed: [u64; 2],
    posted: [u64; 2],
}

fn alert(issue_key: &str) -> Alert {
    Alert {
        resource: "event_alert".into(),
        action: "triggered".into(),
        issue_key: issue_key.into(),
        short_id: None,
        event_id: None,
        projects: vec!["checkout".into()],
        environment: None,
        level: Level::Error,
        title: format!("Error in {issue_key}"),
        culprit: None,
        release: None,
        issue_url: None,
        event_url: None,
        tags: vec![],
        timestamp: None,
        sentry_first_seen: None,
        sentry_count: None,
        rule: None,
        detail: None,
        state: None,
    }
}

fn channel_index(name: &str) -> usize {
    CHANNELS
        .iter()
        .position(|c| *c == name)
        .expect("a known channel")
}

fn issue_index(name: &str) -> usize {
    ISSUES
        .iter()
        .position(|i| *i == name)
        .expect("a known issue")
}

impl World {
    fn new() -> World {
        World {
            now: 1_763_800_000_000,
            next_id: 1,
            alerts: ISSUES.iter().map(|i| alert(i)).collect(),
            pairs: HashMap::new(),
            mutes: HashMap::new(),
            queue: Vec::new(),
            routed: [0; 2],
            posted: [0; 2],
        }
    }

    fn queue(&mut self, channel: usize, occurrences: u64, message: Message) {
        self.queue.push(Queued {
            id: self.next_id,
            channel,
            occurrences,
            queued_at_ms: self.now,
            message,
        });
        self.next_id += 1;
    }

    fn ingest(&mut self, arrivals: &[Arrival]) -> Result<(), TestCaseError> {
        let mut routed = Vec::new();
        for &(issue, channel, after_ms, cooldown, thresholds, occurrence) in arrivals {
            self.now += after_ms;
            routed.push(Routed {
                issue_key: ISSUES[issue],
                channel: CHANNELS[channel],
                at_ms: self.now,
                cooldown_secs: COOLDOWNS[cooldown],
                breakthrough: THRESHOLDS[thresholds],
                occurrence,
            });
        }
        // The store reads the pairs and mutes an occurrence goes to; the others stay as they
        // are.
        let read = |key: &(String, String)| {
            routed
                .iter()
                .any(|r| r.occurrence && r.issue_key == key.0 && r.channel == key.1)
        };
        let stored = self.pairs.iter().filter(|(k, _)| read(k));
        let stored = stored.map(|(k, s)| (k.clone(), *s)).collect();
        let mutes = self.mutes.iter().filter(|(k, _)| read(k));
        let mutes = mutes.map(|(k, m)| (k.clone(), *m)).collect();
        let plan = plan_ingest(&routed, stored, mutes);
        prop_assert_eq!(plan.actions.len(), routed.len());
        let (folds, holds) = self.apply_actions(&routed, &plan.actions)?;
        for ((issue, channel), update) in plan.pairs {
            let latest = routed[update.latest];
            prop_assert_eq!((latest.issue_key, latest.channel), (&*issue, &*channel));
            self.pairs.insert((issue, channel), update.state);
        }
        for (key, mute) in plan.mutes {
            let before = self.mutes.get(&key).expect("only stored mutes hold");
            prop_assert_eq!(mute.until_ms, before.until_ms, "ingest never moves a mute");
            self.mutes.insert(key, mute);
        }
        for (channel, counts) in plan.counts {
            let channel = channel_index(&channel);
            let occurrences = routed
                .iter()
                .filter(|r| r.occurrence && channel_index(r.channel) == channel)
                .count() as u64;
            prop_assert_eq!(counts.routed, occurrences);
            prop_assert_eq!(
                (counts.folded, counts.held),
                (folds[channel], holds[channel])
            );
            self.routed[channel] += counts.routed;
        }
        Ok(())
    }

    /// Queues what the actions queue; returns the folds and holds per channel.
    fn apply_actions(
        &mut self,
        routed: &[Routed<'_>],
        actions: &[Action],
    ) -> Result<([u64; 2], [u64; 2]), TestCaseError> {
        let mut folds = [0u64; 2];
        let mut holds = [0u64; 2];
        for (r, action) in routed.iter().zip(actions) {
            let channel = channel_index(r.channel);
            let key = (r.issue_key.to_string(), r.channel.to_string());
            let muted = self.mutes.get(&key).is_some_and(|m| m.holds_at(r.at_ms));
            let issue = issue_index(r.issue_key);
            match *action {
                Action::Queue { occurrences } => {
                    prop_assert!(r.occurrence || occurrences == 0, "a notice carries nothing");
                    prop_assert!(!r.occurrence || !muted, "a muted occurrence is not posted");
                    let mention = r.occurrence.then_some("@oncall");
                    self.queue(channel, occurrences, Message::Issue(issue, mention));
                }
                Action::Fold => {
                    prop_assert!(r.occurrence && !muted, "only an unmuted occurrence folds");
                    folds[channel] += 1;
                }
                Action::Hold => {
                    prop_assert!(r.occurrence && muted, "only a muted occurrence is held");
                    holds[channel] += 1;
                }
                Action::Spike { spike, held } => {
                    prop_assert!(r.occurrence && held == muted);
                    prop_assert!(r.breakthrough.contains(&spike.threshold));
                    prop_assert!(!muted || r.breakthrough.last() == Some(&spike.threshold));
                    prop_assert!(spike.occurrences > 0 && spike.since_ms <= r.at_ms);
                    if held {
                        holds[channel] += 1
                    } else {
                        folds[channel] += 1
                    }
                    self.queue(channel, spike.occurrences, Message::Issue(issue, None));
                }
            }
        }
        Ok((folds, holds))
    }

    /// Ends the mute of `key` (now, or at its end), queueing what it held back.
    fn end_mute(&mut self, key: &(String, String)) -> Result<(), TestCaseError> {
        let Some(mute) = self.mutes.remove(key) else {
            return Ok(());
        };
        let Some(pair) = self.pairs.get(key) else {
            prop_assert_eq!(mute.held, 0, "held occurrences have a pair");
            return Ok(());
        };
        if let Some(ended) = mute_ended(pair, &mute, self.now) {
            prop_assert_eq!(ended.folded, mute.held + pair.folded);
            prop_assert_eq!(ended.reason, FollowUpReason::MuteEnded);
            self.pairs.insert(key.clone(), ended.next);
            let message = Message::Issue(issue_index(&key.0), None);
            self.queue(channel_index(&key.1), ended.folded, message);
        } else {
            prop_assert_eq!(mute.held, 0);
        }
        Ok(())
    }

    /// `sluice mute` for `ms` from now: a mute whose time was up ends first.
    fn mute(&mut self, issue: usize, channel: usize, ms: i64) -> Result<(), TestCaseError> {
        let key = (ISSUES[issue].to_string(), CHANNELS[channel].to_string());
        if self.mutes.get(&key).is_some_and(|m| m.until_ms <= self.now) {
            self.end_mute(&key)?;
        }
        let until_ms = self.now + ms;
        let mute = self.mutes.entry(key).or_insert(MuteState::until(until_ms));
        mute.until_ms = until_ms;
        Ok(())
    }

    fn release(&mut self, after_ms: i64) -> Result<(), TestCaseError> {
        self.now += after_ms;
        let mut ended: Vec<(String, String)> = self
            .mutes
            .iter()
            .filter(|(_, m)| m.until_ms <= self.now)
            .map(|(key, _)| key.clone())
            .collect();
        ended.sort();
        for key in ended {
            self.end_mute(&key)?;
        }
        let mut due: Vec<(String, String)> = self
            .pairs
            .iter()
            .filter(|(_, state)| follow_up_due(state, self.now))
            .filter(|(key, _)| !self.mutes.contains_key(*key))
            .map(|(key, _)| key.clone())
            .collect();
        due.sort();
        for key in due {
            let follow_up = follow_up(&self.pairs[&key], self.now);
            prop_assert!(follow_up.folded > 0);
            prop_assert_eq!(follow_up.next.folded, 0);
            prop_assert!(follow_up.since_ms <= self.now);
            self.pairs.insert(key.clone(), follow_up.next);
            let message = Message::Issue(issue_index(&key.0), None);
            self.queue(channel_index(&key.1), follow_up.folded, message);
        }
        Ok(())
    }

    fn roll_up(&mut self, channel: usize) -> Result<(), TestCaseError> {
        let waiting: Vec<Waiting<'_>> = self
            .queue
            .iter()
            .filter(|q| q.channel == channel)
            .map(|q| Waiting {
                id: q.id,
                occurrences: q.occurrences,
                queued_at_ms: q.queued_at_ms,
                content: match &q.message {
                    Message::Issue(issue, mention) => Content::Issue {
                        issue_key: ISSUES[*issue],
                        alert: &self.alerts[*issue],
                        mention: *mention,
                    },
                    Message::RollUp(r) => Content::RollUp(r),
                    Message::Digest => Content::Other,
                },
            })
            .collect();
        let storm_rows = waiting.iter().filter(|w| w.is_storm_traffic()).count();
        let Some(plan) = plan_roll_up(waiting) else {
            prop_assert!(storm_rows < 2);
            return Ok(());
        };
        prop_assert_eq!(plan.replaces.len(), storm_rows);
        let replaced: Vec<Queued> = self
            .queue
            .iter()
            .filter(|q| plan.replaces.contains(&q.id))
            .cloned()
            .collect();
        prop_assert_eq!(
            plan.rollup.occurrences,
            replaced.iter().map(|q| q.occurrences).sum::<u64>()
        );
        prop_assert!(
            replaced
                .iter()
                .all(|q| !matches!(q.message, Message::Digest))
        );
        let issue_total: u64 = plan.rollup.issues.iter().map(|i| i.occurrences).sum();
        prop_assert_eq!(issue_total, plan.rollup.occurrences);
        // The roll-up takes the place of the oldest row it replaces, as the store does.
        let first = self
            .queue
            .iter()
            .position(|q| q.id == plan.replaces[0])
            .expect("replaced rows wait");
        let rolled = Queued {
            id: plan.replaces[0],
            channel,
            occurrences: plan.rollup.occurrences,
            queued_at_ms: plan.rollup.since_ms,
            message: Message::RollUp(plan.rollup),
        };
        self.queue.retain(|q| !plan.replaces.contains(&q.id));
        self.queue.insert(first.min(self.queue.len()), rolled);
        Ok(())
    }

    fn post(&mut self, channel: usize) {
        if let Some(i) = self.queue.iter().position(|q| q.channel == channel) {
            let sent = self.queue.remove(i);
            self.posted[channel] += sent.occurrences;
        }
    }

    /// `routed = posted + queued + folded + held`, per channel.
    fn check(&self) -> Result<(), TestCaseError> {
        for (channel, name) in CHANNELS.iter().enumerate() {
            let queued: u64 = self
                .queue
                .iter()
                .filter(|q| q.channel == channel)
                .map(|q| q.occurrences)
                .sum();
            let folded: u64 = self
                .pairs
                .iter()
                .filter(|((_, c), _)| c == name)
                .map(|(_, state)| state.folded)
                .sum();
            let held: u64 = self
                .mutes
                .iter()
                .filter(|((_, c), _)| c == name)
                .map(|(_, mute)| mute.held)
                .sum();
            prop_assert_eq!(
                self.routed[channel],
                self.posted[channel] + queued + folded + held,
                "channel {}: posted {}, queued {}, folded {}, held {}",
                name,
                self.posted[channel],
                queued,
                folded,
                held
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_planners_keep_every_occurrence_in_the_accounting(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let mut world = World::new();
        for step in &steps {
            match step {
                Step::Ingest(arrivals) => world.ingest(arrivals)?,
                Step::Release(after_ms) => world.release(*after_ms)?,
                Step::Mute(issue, channel, ms) => world.mute(*issue, *channel, *ms)?,
                Step::Unmute(issue, channel) => {
                    let key = (ISSUES[*issue].to_string(), CHANNELS[*channel].to_string());
                    world.end_mute(&key)?;
                }
                Step::RollUp(channel) => world.roll_up(*channel)?,
                Step::Post(channel) => world.post(*channel),
                Step::Digest(channel) => world.queue(*channel, 0, Message::Digest),
            }
            world.check()?;
        }
        // Once every mute and cooldown has ended and everything is sent, all was posted.
        world.release(i64::from(u32::MAX))?;
        prop_assert!(world.mutes.is_empty());
        for channel in 0..CHANNELS.len() {
            while world.queue.iter().any(|q| q.channel == channel) {
                world.post(channel);
            }
        }
        world.check()?;
        prop_assert_eq!(world.routed, world.posted);
    }
}
