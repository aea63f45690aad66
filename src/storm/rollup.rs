//! Roll-up per channel: when more messages wait than the channel's `max_backlog`, the alerts,
//! follow-ups and earlier roll-ups among them are replaced by one summary. Pure: the delivery
//! worker reads the backlog, asks [`plan_roll_up`], and the store swaps the rows.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Level};

/// One issue in a roll-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledIssue {
    /// Issue key.
    pub issue_key: String,
    /// Title of its newest alert.
    pub title: String,
    /// Primary project.
    pub project: String,
    /// Environment, if any.
    pub environment: Option<String>,
    /// Highest level seen among the folded messages.
    pub level: Level,
    /// Occurrences folded.
    pub occurrences: u64,
    /// Messages folded.
    pub messages: u64,
    /// Link to the issue.
    pub issue_url: Option<String>,
}

/// A summary standing for many waiting messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollUp {
    /// Issues, most occurrences first.
    pub issues: Vec<RolledIssue>,
    /// Messages folded into this one.
    pub messages: u64,
    /// Occurrences they carried.
    pub occurrences: u64,
    /// When the oldest of them was queued (Unix ms).
    pub since_ms: i64,
    /// The route mentions the folded messages would have carried, once each: a page is never
    /// lost to a roll-up.
    #[serde(default)]
    pub mentions: Vec<String>,
}

/// A message waiting for a channel, as roll-up sees it (the store's outbox rows convert into
/// this).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waiting<'a> {
    /// The outbox row.
    pub id: i64,
    /// Occurrences it stands for.
    pub occurrences: u64,
    /// When it was queued, Unix ms.
    pub queued_at_ms: i64,
    /// What it says.
    pub content: Content<'a>,
}

/// What a waiting message says, as far as roll-up cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Content<'a> {
    /// A full message (`mention`: its route's mention, if any) or a follow-up (no mention)
    /// about issue `issue_key`, showing `alert`.
    Issue {
        /// The issue the row is about.
        issue_key: &'a str,
        /// The alert it shows.
        alert: &'a Alert,
        /// The route's mention a full message carries.
        mention: Option<&'a str>,
    },
    /// An earlier roll-up.
    RollUp(&'a RollUp),
    /// A digest or a notice from Sluice: never rolled up, and it carries no occurrence.
    Other,
}

impl Waiting<'_> {
    /// Whether roll-up may fold this message (alerts, follow-ups and earlier roll-ups).
    pub fn is_storm_traffic(&self) -> bool {
        !matches!(self.content, Content::Other)
    }
}

/// Folds waiting messages into one summary. Earlier roll-ups are merged in, so a channel
/// never holds more than one. Digests and notices are not folded (and not counted) here;
/// callers leave them out (see [`plan_roll_up`]).
pub fn roll_up<'a, W: Into<Waiting<'a>>>(items: impl IntoIterator<Item = W>) -> RollUp {
    let items: Vec<Waiting<'a>> = items.into_iter().map(Into::into).collect();
    let mut by_issue: HashMap<String, RolledIssue> = HashMap::new();
    let mut messages = 0;
    let mut mentions: Vec<String> = Vec::new();
    let mut mention = |m: &str| {
        if !mentions.iter().any(|known| known == m) {
            mentions.push(m.to_string());
        }
    };
    let mut add = |issue: RolledIssue| {
        by_issue
            .entry(issue.issue_key.clone())
            .and_modify(|e| {
                e.occurrences += issue.occurrences;
                e.messages += issue.messages;
                e.level = e.level.max(issue.level);
                e.title.clone_from(&issue.title);
            })
            .or_insert(issue);
    };
    for item in &items {
        match item.content {
            Content::Other => {}
            Content::RollUp(r) => {
                messages += r.messages;
                r.mentions.iter().for_each(|m| mention(m));
                r.issues.iter().cloned().for_each(&mut add);
            }
            Content::Issue {
                issue_key,
                alert,
                mention: route_mention,
            } => {
                messages += 1;
                route_mention.into_iter().for_each(&mut mention);
                add(RolledIssue {
                    issue_key: issue_key.to_string(),
                    title: alert.title.clone(),
                    project: alert.project().to_string(),
                    environment: alert.environment.clone(),
                    level: alert.level,
                    occurrences: item.occurrences,
                    messages: 1,
                    issue_url: alert.issue_url.clone(),
                });
            }
        }
    }
    let mut issues: Vec<RolledIssue> = by_issue.into_values().collect();
    issues.sort_by(|a, b| {
        b.occurrences
            .cmp(&a.occurrences)
            .then(b.level.cmp(&a.level))
            .then(a.issue_key.cmp(&b.issue_key))
    });
    RollUp {
        occurrences: items
            .iter()
            .filter(|i| i.is_storm_traffic())
            .map(|i| i.occurrences)
            .sum(),
        messages,
        since_ms: items.iter().map(|i| i.queued_at_ms).min().unwrap_or(0),
        issues,
        mentions,
    }
}

/// Whether a channel with `depth` messages waiting (of every kind) is over its `max_backlog`,
/// so its backlog should be rolled up.
pub fn over_backlog(depth: u64, max_backlog: u32) -> bool {
    depth > u64::from(max_backlog)
}

/// A roll-up to make: the rows it replaces and the summary that takes their place. The
/// summary stands for exactly the occurrences of the rows it replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct RollUpPlan {
    /// The outbox rows folded into the summary, oldest first.
    pub replaces: Vec<i64>,
    /// The summary.
    pub rollup: RollUp,
}

/// The roll-up of a channel's waiting messages (oldest first): its alerts, follow-ups and
/// earlier roll-ups become one summary; digests and notices stay as they are. `None` when
/// fewer than two messages would fold, as nothing would be gained.
pub fn plan_roll_up<'a, W: Into<Waiting<'a>>>(
    waiting: impl IntoIterator<Item = W>,
) -> Option<RollUpPlan> {
    let items: Vec<Waiting<'a>> = waiting
        .into_iter()
        .map(Into::into)
        .filter(Waiting::is_storm_traffic)
        .collect();
    if items.len() < 2 {
        return None;
    }
    Some(RollUpPlan {
        replaces: items.iter().map(|i| i.id).collect(),
        rollup: roll_up(items),
    })
}
