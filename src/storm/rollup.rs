//! Roll-up per channel: when more messages wait than the channel's `max_backlog`, the alerts,
//! follow-ups and earlier roll-ups among them are replaced by one summary. Pure: the delivery
//! worker reads the backlog, asks [`plan_roll_up`], and the store swaps the rows.

use std::collections::HashMap;

use crate::plan::{Content, RollUp, RollUpPlan, RolledIssue, Waiting};

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
