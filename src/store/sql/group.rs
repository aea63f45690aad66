//! Ingest and fold, the in-memory halves. For a group commit on the request path: which
//! deliveries of a group are new and counted (from what the claims returned), and the fold
//! queue rows of those that go on. For a fold batch: what the storm planner is asked, and the
//! rows each table gets from its plan. No SQL here: `ingest.rs` and `fold.rs` run the
//! statements, in this order of decisions, so that a batch ends exactly as if each delivery
//! had been applied alone, in order.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::to_json;
use crate::alert::Alert;
use crate::counts::day_of;
use crate::plan::{
    Action, FollowUpReason, IngestPlan, MuteState, PairState, PairUpdate, Routed, Spike,
};
use crate::routing::Target;
use crate::store::{Delivery, Folded, IngestOutcome, OutboxMessage, StoreError};

/// Which deliveries of `group` are new: those whose body the `deliveries` insert returned
/// (`inserted`); of equal bodies in the group, the first (the one that was inserted).
pub(super) fn new_deliveries(group: &[&Delivery], mut inserted: HashSet<Vec<u8>>) -> Vec<bool> {
    group
        .iter()
        .map(|d| inserted.remove(&d.body_sha256[..]))
        .collect()
}

/// A new delivery with an alert that goes on: not a repeat of a known event.
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    /// Index in the group.
    pub(super) index: usize,
    /// A new occurrence, counted: its event id is new (alerts without one are notices).
    pub(super) counted: bool,
}

/// The new deliveries whose alert goes on, in group order. `new_events` are the event ids the
/// `events` insert returned; of equal ids in the group, the first delivery counts and the
/// others stop here.
pub(super) fn live_deliveries(
    group: &[&Delivery],
    new_delivery: &[bool],
    mut new_events: HashSet<String>,
) -> Vec<Live> {
    let mut live = Vec::new();
    for (index, d) in group.iter().enumerate() {
        let Some(alert) = &d.alert else { continue };
        if !new_delivery[index] {
            continue;
        }
        let counted = match &alert.event_id {
            Some(id) if new_events.remove(id) => true,
            Some(_) => continue,
            None => false,
        };
        live.push(Live { index, counted });
    }
    live
}

/// The event ids of the new deliveries that carry one, sorted (the order the `events` insert
/// takes its row locks in), each with its delivery's index.
pub(super) fn event_claims<'a>(
    group: &[&'a Delivery],
    new_delivery: &[bool],
) -> Vec<(&'a str, usize)> {
    let mut claims: Vec<(&str, usize)> = (0..group.len())
        .filter(|&i| new_delivery[i])
        .filter_map(|i| {
            let id = group[i].alert.as_ref()?.event_id.as_deref()?;
            Some((id, i))
        })
        .collect();
    claims.sort();
    claims
}

/// A row for the issues table, from one delivery or merged from several.
pub(super) struct IssueRow<'a> {
    /// Whether title, level and project describe the issue (false for a comment on it, whose
    /// title is "Comment on …" and whose level is `info`).
    pub(super) describes: bool,
    pub(super) issue_key: &'a str,
    pub(super) project: &'a str,
    pub(super) title: &'a str,
    pub(super) culprit: Option<&'a str>,
    pub(super) level: &'static str,
    pub(super) short_id: Option<&'a str>,
    pub(super) issue_url: Option<&'a str>,
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
    pub(super) sentry_count: Option<i64>,
    pub(super) sentry_first_seen: Option<i64>,
    pub(super) resolved_at: Option<i64>,
    /// The state an issue notice reported (`None` for every other alert), with `at_ms` set.
    pub(super) state: Option<crate::issue::IssueState>,
}

impl<'a> IssueRow<'a> {
    fn of(d: &'a Delivery) -> Self {
        let a = d.alert.as_ref().expect("live deliveries have an alert");
        Self {
            describes: a.resource != "comment",
            issue_key: &a.issue_key,
            project: a.project(),
            title: &a.title,
            culprit: a.culprit.as_deref(),
            level: a.level.as_str(),
            short_id: a.short_id.as_deref(),
            issue_url: a.issue_url.as_deref(),
            first_seen: d.received_at_ms,
            last_seen: d.received_at_ms,
            sentry_count: a.sentry_count.map(|c| c.min(i64::MAX as u64) as i64),
            sentry_first_seen: a.sentry_first_seen.map(|s| s.saturating_mul(1000)),
            resolved_at: (a.resource == "issue" && a.action == "resolved")
                .then_some(d.received_at_ms),
            state: a.state.clone().map(|mut s| {
                s.at_ms = s.at_ms.or(Some(d.received_at_ms));
                s
            }),
        }
    }

    /// A later delivery about the same issue: what the `ON CONFLICT` clause does, in memory.
    fn update(&mut self, later: Self) {
        if later.describes || !self.describes {
            self.describes |= later.describes;
            self.project = later.project;
            self.title = later.title;
            self.level = later.level;
        }
        self.culprit = later.culprit.or(self.culprit);
        self.short_id = later.short_id.or(self.short_id);
        self.issue_url = later.issue_url.or(self.issue_url);
        self.first_seen = self.first_seen.min(later.first_seen);
        self.last_seen = self.last_seen.max(later.last_seen);
        self.sentry_count = later.sentry_count.or(self.sentry_count);
        self.sentry_first_seen = later.sentry_first_seen.or(self.sentry_first_seen);
        self.resolved_at = later.resolved_at.or(self.resolved_at);
        self.state = match (self.state.take(), later.state) {
            (Some(earlier), Some(later)) => Some(merge_state(earlier, later)),
            (earlier, later) => later.or(earlier),
        };
    }
}

/// A later state of an issue over an earlier one, as the `ON CONFLICT` clause merges them: a
/// notice that credits no person (Sentry credits an integration for a click made through it)
/// and repeats the status keeps who made the change and when.
pub(super) fn merge_state(
    earlier: crate::issue::IssueState,
    mut later: crate::issue::IssueState,
) -> crate::issue::IssueState {
    if later.by.is_none() && later.status == earlier.status {
        later.by = earlier.by;
        later.at_ms = earlier.at_ms;
    }
    later
}

/// The `issues.status` column of a state.
pub(super) fn status_json(state: &crate::issue::IssueState) -> String {
    serde_json::to_string(&state.status).expect("a status serializes")
}

/// One row per issue of the live deliveries, merged in group order the way the upsert merges
/// them into the stored row; sorted by issue key.
pub(super) fn issue_rows<'a>(group: &[&'a Delivery], live: &[Live]) -> Vec<IssueRow<'a>> {
    let mut issues: BTreeMap<&str, IssueRow> = BTreeMap::new();
    for l in live {
        let row = IssueRow::of(group[l.index]);
        match issues.entry(row.issue_key) {
            Entry::Vacant(slot) => {
                slot.insert(row);
            }
            Entry::Occupied(mut slot) => slot.get_mut().update(row),
        }
    }
    issues.into_values().collect()
}

/// A live alert routed to one of its targets, in group order.
pub(super) struct RoutedAlert<'a> {
    /// Index of its delivery in the group.
    pub(super) delivery: usize,
    pub(super) received_at_ms: i64,
    pub(super) alert: &'a Alert,
    pub(super) target: &'a Target,
    pub(super) counted: bool,
    /// An issue notice that followed the issue's channels (not placed by a route).
    pub(super) followed: bool,
}

impl<'a> RoutedAlert<'a> {
    /// What the storm planner decides from.
    pub(super) fn planned(&self) -> Routed<'a> {
        Routed {
            issue_key: &self.alert.issue_key,
            channel: &self.target.channel,
            at_ms: self.received_at_ms,
            cooldown_secs: self.target.cooldown_secs,
            breakthrough: &self.target.breakthrough,
            occurrence: self.counted,
        }
    }
}

/// Every live alert with each of its targets, in group and target order: the routes' targets,
/// or for an alert that follows its issue, those `followed` holds for its delivery's index.
pub(super) fn routed<'a>(
    group: &[&'a Delivery],
    live: &[Live],
    followed: &'a HashMap<usize, Vec<Target>>,
) -> Vec<RoutedAlert<'a>> {
    live.iter()
        .flat_map(|l| {
            let d = group[l.index];
            let alert = d.alert.as_ref().expect("live deliveries have an alert");
            let follows = followed.get(&l.index);
            let targets = follows.unwrap_or(&d.targets);
            targets.iter().map(move |target| RoutedAlert {
                delivery: l.index,
                received_at_ms: d.received_at_ms,
                alert,
                target,
                counted: l.counted,
                followed: follows.is_some(),
            })
        })
        .collect()
}

/// The issues of the live alerts that follow their issue ([`crate::routing::follows_issue`]),
/// sorted: whose earlier channels are read.
pub(super) fn followers<'a>(group: &[&'a Delivery], live: &[Live]) -> Vec<&'a str> {
    live.iter()
        .filter_map(|l| group[l.index].alert.as_ref())
        .filter(|a| crate::routing::follows_issue(a))
        .map(|a| a.issue_key.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// For each live alert that follows its issue, by its delivery's index, where it goes: the
/// channels of `earlier` (issue → the route decisions its occurrences were sent with), when
/// the issue has any.
pub(super) fn followed(
    group: &[&Delivery],
    live: &[Live],
    earlier: &HashMap<String, Vec<Target>>,
) -> HashMap<usize, Vec<Target>> {
    live.iter()
        .filter_map(|l| {
            let alert = group[l.index].alert.as_ref()?;
            if !crate::routing::follows_issue(alert) {
                return None;
            }
            let targets = crate::routing::followed(alert, earlier.get(&alert.issue_key)?)?;
            Some((l.index, targets))
        })
        .collect()
}

/// The (issue, channel) pairs an occurrence goes to, sorted: whose cooldown is locked and read.
pub(super) fn occurrence_pairs(routed: &[RoutedAlert<'_>]) -> Vec<(String, String)> {
    routed
        .iter()
        .filter(|r| r.counted)
        .map(|r| (r.alert.issue_key.clone(), r.target.channel.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// (channel, day, issue, environment): a row of `channel_day_counts`.
pub(super) type ChannelDayKey<'a> = (&'a str, i64, &'a str, &'a str);

/// What a group adds to one `channel_day_counts` row.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChannelDayRow<'a> {
    pub(super) project: &'a str,
    pub(super) occurrences: i64,
    pub(super) folded: i64,
    pub(super) notices: i64,
}

/// The cooldown of an (issue, channel) pair to write back, with the alert its follow-up shows.
pub(super) struct CooldownRow {
    pub(super) cooldown_secs: i64,
    pub(super) cooldown_until: i64,
    pub(super) folded: i64,
    pub(super) folded_since: Option<i64>,
    pub(super) window_count: i64,
    pub(super) spiked: i64,
    pub(super) payload: String,
}

/// What a mute holds after a group, to write back (its end is not the group's to change).
pub(super) struct MuteRow {
    pub(super) held: i64,
    pub(super) held_since: Option<i64>,
}

/// A row for the outbox, in group order.
pub(super) struct NewOutbox<'a> {
    /// The delivery it was queued for (its body's hash).
    pub(super) delivery: &'a [u8; 32],
    pub(super) channel: &'a str,
    pub(super) issue_key: &'a str,
    /// `alert`, or `followup` for a spike.
    pub(super) kind: &'static str,
    pub(super) payload: String,
    pub(super) occurrences: i64,
    pub(super) now: i64,
}

/// A row for `delivery_routes`: where one delivery went in one channel.
pub(super) struct RouteRow<'a> {
    pub(super) delivery: &'a [u8; 32],
    pub(super) channel: &'a str,
    /// `None` for the default channel, or a notice that followed its issue's channels.
    pub(super) route: Option<&'a str>,
    /// `queued`, `folded` or `muted`.
    pub(super) decision: &'static str,
    pub(super) received_at: i64,
}

/// Everything a group writes, each table's rows sorted by their key (so that concurrent groups
/// lock rows in one order), and the answer to each delivery.
pub(super) struct GroupRows<'a> {
    /// What became of each delivery of the batch, in batch order.
    pub(super) folded: Vec<Folded>,
    /// (issue, day, environment) → occurrences.
    pub(super) day_counts: Vec<((&'a str, i64, &'a str), i64)>,
    pub(super) channel_days: Vec<(ChannelDayKey<'a>, ChannelDayRow<'a>)>,
    /// (issue, channel) → cooldown.
    pub(super) cooldowns: Vec<((String, String), CooldownRow)>,
    /// (issue, channel) → what its mute holds.
    pub(super) mutes: Vec<((String, String), MuteRow)>,
    /// In group order: row ids keep the order of arrival.
    pub(super) outbox: Vec<NewOutbox<'a>>,
    /// (delivery, channel) → where it went.
    pub(super) routes: Vec<RouteRow<'a>>,
    /// channel → (occurrences routed, occurrences folded).
    pub(super) counters: Vec<(String, (i64, i64))>,
}

/// A count for an `INTEGER`/`BIGINT` column.
fn sql_count(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

impl<'a> GroupRows<'a> {
    /// The rows for `plan`, the storm planner's decisions about `routed`, the alerts of the
    /// `live` deliveries of `group` (a fold batch, or a group commit on SQLite).
    pub(super) fn build(
        group: &[&'a Delivery],
        live: &[Live],
        routed: &[RoutedAlert<'a>],
        plan: IngestPlan,
    ) -> Result<Self, StoreError> {
        let payloads = routed
            .iter()
            .map(|r| {
                to_json(&OutboxMessage::Alert {
                    alert: r.alert.clone(),
                    target: r.target.clone(),
                })
            })
            .collect::<Result<Vec<String>, StoreError>>()?;
        let mut folded: Vec<Folded> = group
            .iter()
            .map(|d| Folded {
                body_sha256: d.body_sha256,
                queued: 0,
                follow_up_due: false,
            })
            .collect();
        let mut outbox = Vec::new();
        for ((r, action), payload) in routed.iter().zip(&plan.actions).zip(&payloads) {
            let (kind, payload, occurrences) = match *action {
                Action::Queue { occurrences } => ("alert", payload.clone(), occurrences),
                Action::Spike { spike, .. } => {
                    ("followup", spike_payload(r, spike)?, spike.occurrences)
                }
                Action::Fold | Action::Hold => continue,
            };
            outbox.push(NewOutbox {
                delivery: &group[r.delivery].body_sha256,
                channel: &r.target.channel,
                issue_key: &r.alert.issue_key,
                kind,
                payload,
                occurrences: sql_count(occurrences),
                now: r.received_at_ms,
            });
            folded[r.delivery].queued += 1;
        }
        for &i in &plan.follow_ups_due {
            folded[routed[i].delivery].follow_up_due = true;
        }
        Ok(GroupRows {
            folded,
            day_counts: day_counts(group, live),
            channel_days: channel_days(routed, &plan.actions),
            cooldowns: cooldown_rows(plan.pairs, &payloads),
            mutes: mute_rows(plan.mutes),
            outbox,
            routes: route_rows(group, routed, &plan.actions),
            counters: plan
                .counts
                .into_iter()
                .map(|(channel, c)| (channel, (sql_count(c.routed), sql_count(c.folded))))
                .collect(),
        })
    }
}

/// Where each routed alert went, one row per (delivery, channel), sorted by that key.
fn route_rows<'a>(
    group: &[&'a Delivery],
    routed: &[RoutedAlert<'a>],
    actions: &[Action],
) -> Vec<RouteRow<'a>> {
    let mut rows: BTreeMap<(&[u8; 32], &str), RouteRow<'a>> = BTreeMap::new();
    for (r, action) in routed.iter().zip(actions) {
        let delivery = &group[r.delivery].body_sha256;
        let channel = r.target.channel.as_str();
        rows.entry((delivery, channel)).or_insert(RouteRow {
            delivery,
            channel,
            route: r.target.route.as_deref().filter(|_| !r.followed),
            decision: match action {
                Action::Queue { .. } | Action::Spike { .. } => "queued",
                Action::Fold => "folded",
                Action::Hold => "muted",
            },
            received_at: r.received_at_ms,
        });
    }
    rows.into_values().collect()
}

/// The new deliveries with an alert that did not go on: repeats of an event seen before (in
/// another delivery, or earlier in the group), sorted.
pub(super) fn duplicates<'a>(
    group: &[&'a Delivery],
    new_delivery: &[bool],
    live: &[Live],
) -> Vec<&'a [u8; 32]> {
    let live: HashSet<usize> = live.iter().map(|l| l.index).collect();
    let mut bodies: Vec<&[u8; 32]> = (0..group.len())
        .filter(|&i| new_delivery[i] && group[i].alert.is_some() && !live.contains(&i))
        .map(|i| &group[i].body_sha256)
        .collect();
    bodies.sort();
    bodies
}

/// The follow-up of a spike that `r` brought about: the alert, and the occurrences it carries.
fn spike_payload(r: &RoutedAlert<'_>, spike: Spike) -> Result<String, StoreError> {
    to_json(&OutboxMessage::FollowUp {
        alert: r.alert.clone(),
        target: r.target.clone(),
        folded: spike.occurrences,
        since_ms: spike.since_ms,
        reason: FollowUpReason::Spike {
            threshold: spike.threshold,
        },
    })
}

/// The answer to each delivery of a group commit: a duplicate, or stored (counted if live and
/// a new occurrence; to be folded if live).
pub(super) fn outcomes(new_delivery: &[bool], live: &[Live]) -> Vec<IngestOutcome> {
    let mut outcomes: Vec<IngestOutcome> = new_delivery
        .iter()
        .map(|&new| {
            if new {
                IngestOutcome::Stored {
                    counted: false,
                    to_fold: false,
                    queued: 0,
                    follow_up_due: false,
                }
            } else {
                IngestOutcome::DuplicateDelivery
            }
        })
        .collect();
    for l in live {
        outcomes[l.index] = IngestOutcome::Stored {
            counted: l.counted,
            to_fold: true,
            queued: 0,
            follow_up_due: false,
        };
    }
    outcomes
}

/// The group's deliveries were folded in their commit (`folded`, by index): none waits for
/// the fold loop, and each answer says what its fold queued.
pub(super) fn folded_at_commit(outcomes: &mut [IngestOutcome], folded: &[Folded]) {
    for (outcome, f) in outcomes.iter_mut().zip(folded) {
        if let IngestOutcome::Stored {
            to_fold,
            queued,
            follow_up_due,
            ..
        } = outcome
        {
            *to_fold = false;
            *queued = f.queued;
            *follow_up_due = f.follow_up_due;
        }
    }
}

/// A delivery's alert and routed targets as a fold queue row's `payload` holds them.
#[derive(serde::Serialize)]
struct FoldPayloadRef<'a> {
    alert: &'a Alert,
    targets: &'a [Target],
}

/// A fold queue row's `payload`, read back.
#[derive(serde::Deserialize)]
pub(super) struct FoldPayload {
    pub(super) alert: Alert,
    pub(super) targets: Vec<Target>,
}

/// A row for the fold queue: a live delivery of a group commit.
pub(super) struct FoldRow<'a> {
    pub(super) delivery: &'a [u8; 32],
    pub(super) received_at: i64,
    pub(super) counted: bool,
    pub(super) payload: String,
}

/// The fold queue rows of the live deliveries, in group order (their ids keep it).
pub(super) fn fold_rows<'a>(
    group: &[&'a Delivery],
    live: &[Live],
) -> Result<Vec<FoldRow<'a>>, StoreError> {
    live.iter()
        .map(|l| {
            let d = group[l.index];
            let alert = d.alert.as_ref().expect("live deliveries have an alert");
            let payload = serde_json::to_string(&FoldPayloadRef {
                alert,
                targets: &d.targets,
            })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(FoldRow {
                delivery: &d.body_sha256,
                received_at: d.received_at_ms,
                counted: l.counted,
                payload,
            })
        })
        .collect()
}

/// Occurrences per issue, UTC day and environment (`""` for none).
fn day_counts<'a>(group: &[&'a Delivery], live: &[Live]) -> Vec<((&'a str, i64, &'a str), i64)> {
    let mut counts: BTreeMap<(&str, i64, &str), i64> = BTreeMap::new();
    for l in live.iter().filter(|l| l.counted) {
        let d = group[l.index];
        let alert = d.alert.as_ref().expect("live deliveries have an alert");
        let env = alert.environment.as_deref().unwrap_or("");
        *counts
            .entry((&alert.issue_key, day_of(d.received_at_ms), env))
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

/// What each channel received per day, issue and environment, for routes with `digest = true`:
/// occurrences (and of those, folded) and notices.
fn channel_days<'a>(
    routed: &[RoutedAlert<'a>],
    actions: &[Action],
) -> Vec<(ChannelDayKey<'a>, ChannelDayRow<'a>)> {
    let mut days: BTreeMap<ChannelDayKey, ChannelDayRow> = BTreeMap::new();
    for (r, action) in routed.iter().zip(actions) {
        if !r.target.digest {
            continue;
        }
        let env = r.alert.environment.as_deref().unwrap_or("");
        let key = (
            r.target.channel.as_str(),
            day_of(r.received_at_ms),
            r.alert.issue_key.as_str(),
            env,
        );
        let row = days.entry(key).or_insert(ChannelDayRow {
            project: r.alert.project(),
            occurrences: 0,
            folded: 0,
            notices: 0,
        });
        match (r.counted, action) {
            // Notices (resolved, assigned, metric alerts, comments) are always posted.
            (false, _) => row.notices += 1,
            // Folded by a cooldown or held by a mute: counted, posted later in a follow-up.
            (true, Action::Fold | Action::Hold | Action::Spike { .. }) => {
                row.occurrences += 1;
                row.folded += 1;
            }
            (true, Action::Queue { .. }) => row.occurrences += 1,
        }
    }
    days.into_iter().collect()
}

/// The changed cooldowns as rows, each keeping the payload of the last alert about its pair.
fn cooldown_rows(
    pairs: BTreeMap<(String, String), PairUpdate>,
    payloads: &[String],
) -> Vec<((String, String), CooldownRow)> {
    pairs
        .into_iter()
        .map(|(key, PairUpdate { state, latest })| {
            let PairState {
                cooldown_secs,
                cooldown_until_ms,
                folded,
                folded_since_ms,
                window,
                spiked,
            } = state;
            let row = CooldownRow {
                cooldown_secs: cooldown_secs as i64,
                cooldown_until: cooldown_until_ms,
                folded: sql_count(folded),
                folded_since: folded_since_ms,
                window_count: sql_count(window),
                spiked: sql_count(spiked),
                payload: payloads[latest].clone(),
            };
            (key, row)
        })
        .collect()
}

/// The mutes that held occurrences, as rows.
fn mute_rows(mutes: BTreeMap<(String, String), MuteState>) -> Vec<((String, String), MuteRow)> {
    mutes
        .into_iter()
        .map(|(key, mute)| {
            let row = MuteRow {
                held: sql_count(mute.held),
                held_since: mute.held_since_ms,
            };
            (key, row)
        })
        .collect()
}
