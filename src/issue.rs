//! A Sentry issue's state as Sluice last learned it (status, assignee, who changed it), and
//! the actions on-call people take on an issue from Slack.
//!
//! Both are plain values: the Sentry parser fills [`IssueState`] from issue notices, the store
//! keeps it per issue, Slack messages show it as their state line, and the interactions
//! worker turns an [`IssueAction`] into Sentry API calls (or a mute, which is Sluice's own).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long an issue is archived for, as Sentry's `Archive` menu offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "until", rename_all = "snake_case")]
pub enum Archive {
    /// Until Sentry sees it escalate (`substatus: archived_until_escalating`).
    Escalating,
    /// For this many minutes (`statusDetails.ignoreDuration`).
    Minutes {
        /// Minutes.
        minutes: u64,
    },
    /// Until this many more events (`statusDetails.ignoreCount`).
    Count {
        /// Events.
        count: u64,
    },
    /// Forever (`archived_forever`, or an ignore with no condition).
    Forever,
}

/// An issue's status in Sentry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Open (also: regressed, escalating, new, ongoing).
    #[default]
    Unresolved,
    /// Resolved; `in_next_release` when resolved in the next release.
    Resolved {
        /// Resolved in the next release.
        #[serde(default)]
        in_next_release: bool,
    },
    /// Archived (Sentry's `ignored`), with its condition.
    Archived {
        /// Until when.
        archive: Archive,
    },
}

/// What Sluice knows of an issue's state: what its messages' state line shows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IssueState {
    /// The status.
    pub status: Status,
    /// Who it is assigned to (a person's name or email, or `#team`), if anyone.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Who made the last change, where known: a Slack user who clicked, or the Sentry user
    /// in the notice (`None` when Sentry credits an application or a rule).
    #[serde(default)]
    pub by: Option<String>,
    /// When the change happened, Unix ms.
    #[serde(default)]
    pub at_ms: Option<i64>,
}

/// What a person asked for from a Slack message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum IssueAction {
    /// Resolve the issue in Sentry.
    Resolve,
    /// Resolve it in the next release.
    ResolveInNextRelease,
    /// Reopen it (offered on a resolved or archived issue).
    Unresolve,
    /// Archive it.
    Archive {
        /// Until when.
        archive: Archive,
    },
    /// Assign it to the Sentry member with the clicker's email.
    AssignToMe,
    /// Mute it in this channel for a while (Sluice's own; no API call).
    Mute {
        /// For how long, whole seconds.
        secs: u64,
    },
    /// End this channel's mute of it now.
    Unmute,
}

impl IssueAction {
    /// The label of `sluice_slack_interactions_total{action}`.
    pub fn label(&self) -> &'static str {
        match self {
            IssueAction::Resolve => "resolve",
            IssueAction::ResolveInNextRelease => "resolve_next_release",
            IssueAction::Unresolve => "unresolve",
            IssueAction::Archive { .. } => "archive",
            IssueAction::AssignToMe => "assign",
            IssueAction::Mute { .. } => "mute",
            IssueAction::Unmute => "unmute",
        }
    }

    /// Whether it calls Sentry's API (all but mute and unmute).
    pub fn calls_sentry(&self) -> bool {
        !matches!(self, IssueAction::Mute { .. } | IssueAction::Unmute)
    }

    /// A mute's length.
    pub fn mute_for(&self) -> Option<Duration> {
        match self {
            IssueAction::Mute { secs } => Some(Duration::from_secs(*secs)),
            _ => None,
        }
    }
}

/// Whether `issue_key` is a Sentry issue id (the API can act on it), not one of Sluice's own
/// keys for payloads without one (`fp:…`, `metric:…`).
pub fn is_sentry_issue(issue_key: &str) -> bool {
    !issue_key.is_empty() && issue_key.bytes().all(|b| b.is_ascii_digit())
}
