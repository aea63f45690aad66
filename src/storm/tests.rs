//! The accounting invariant, on the planners alone: for any sequence of occurrences (issues,
//! channels, arrival times, cooldowns), interleaved with ended cooldowns, roll-ups and sends,
//! every channel keeps `routed = posted + queued (in messages) + folded (pending)`.
//!
//! The model below does what the store does with each plan (queue the messages, write the
//! pairs back, replace rolled-up rows), with plain collections instead of SQL.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::alert::{Alert, Level};

const ISSUES: [&str; 3] = ["i0", "i1", "i2"];
const CHANNELS: [&str; 2] = ["c0", "c1"];
/// Route cooldowns, seconds: none, short, and the default 30 minutes.
const COOLDOWNS: [u64; 4] = [0, 30, 60, 1_800];

/// One routed alert: issue, channel, ms since the previous one, cooldown, and whether it is a
/// new occurrence (otherwise a notice).
type Arrival = (usize, usize, i64, usize, bool);

#[derive(Debug, Clone)]
enum Step {
    /// One group commit of routed alerts, in delivery order.
    Ingest(Vec<Arrival>),
    /// Time passes (ms), then every ended cooldown with occurrences folded gets its follow-up.
    Release(i64),
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
        prop::bool::weighted(0.9),
    );
    prop_oneof![
        4 => prop::collection::vec(arrival, 1..16).prop_map(Step::Ingest),
        2 => (0..200_000i64).prop_map(Step::Release),
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
        for &(issue, channel, after_ms, cooldown, occurrence) in arrivals {
            self.now += after_ms;
            routed.push(Routed {
                issue_key: ISSUES[issue],
                channel: CHANNELS[channel],
                at_ms: self.now,
                cooldown_secs: COOLDOWNS[cooldown],
                occurrence,
            });
        }
        // The store reads the pairs an occurrence goes to; the others stay as they are.
        let stored = self
            .pairs
            .iter()
            .filter(|((issue, channel), _)| {
                routed
                    .iter()
                    .any(|r| r.occurrence && r.issue_key == issue && r.channel == channel)
            })
            .map(|(key, state)| (key.clone(), *state))
            .collect();
        let plan = plan_ingest(&routed, stored);
        prop_assert_eq!(plan.actions.len(), routed.len());
        let mut folds = [0u64; 2];
        let mut occurrences = [0u64; 2];
        for (r, action) in routed.iter().zip(&plan.actions) {
            let channel = channel_index(r.channel);
            occurrences[channel] += u64::from(r.occurrence);
            match *action {
                Action::Queue { occurrences } => {
                    prop_assert!(r.occurrence || occurrences == 0, "a notice carries nothing");
                    let mention = r.occurrence.then_some("@oncall");
                    let message = Message::Issue(issue_index(r.issue_key), mention);
                    self.queue(channel, occurrences, message);
                }
                Action::Fold => {
                    prop_assert!(r.occurrence, "a notice is never folded");
                    folds[channel] += 1;
                }
            }
        }
        for ((issue, channel), update) in plan.pairs {
            let latest = routed[update.latest];
            prop_assert_eq!((latest.issue_key, latest.channel), (&*issue, &*channel));
            self.pairs.insert((issue, channel), update.state);
        }
        for (channel, counts) in plan.counts {
            let channel = channel_index(&channel);
            prop_assert_eq!(counts.routed, occurrences[channel]);
            prop_assert_eq!(counts.folded, folds[channel]);
            self.routed[channel] += counts.routed;
        }
        Ok(())
    }

    fn release(&mut self, after_ms: i64) -> Result<(), TestCaseError> {
        self.now += after_ms;
        let mut due: Vec<(String, String)> = self
            .pairs
            .iter()
            .filter(|(_, state)| follow_up_due(state, self.now))
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

    /// `routed = posted + queued + folded`, per channel.
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
            prop_assert_eq!(
                self.routed[channel],
                self.posted[channel] + queued + folded,
                "channel {}: posted {}, queued {}, folded {}",
                name,
                self.posted[channel],
                queued,
                folded
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
                Step::RollUp(channel) => world.roll_up(*channel)?,
                Step::Post(channel) => world.post(*channel),
                Step::Digest(channel) => world.queue(*channel, 0, Message::Digest),
            }
            world.check()?;
        }
        // Once every cooldown has ended and everything is sent, all was posted.
        world.release(i64::from(u32::MAX))?;
        for channel in 0..CHANNELS.len() {
            while world.queue.iter().any(|q| q.channel == channel) {
                world.post(channel);
            }
        }
        world.check()?;
        prop_assert_eq!(world.routed, world.posted);
    }
}
