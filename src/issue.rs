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
    /// Forever (`archived_forever`, or an ignore with no condition Sluice can name).
    Forever,
    /// Until a moment, Unix ms: what Sentry reports for an issue archived for a while
    /// (`statusDetails.ignoreUntil`), since it keeps the end, not the length.
    UntilTime {
        /// Unix ms.
        until_ms: i64,
    },
}

impl Archive {
    /// How the Archive menu and the state line name it: `until escalating`, `for 1 hour`,
    /// `for 24 hours`, `for 7 days`, `for 90 minutes`, `until 100 more events`, `forever`,
    /// `until 2024-05-01 14:02` (UTC). Plain text: the caller escapes it for mrkdwn.
    pub fn label(&self) -> String {
        match *self {
            Archive::Escalating => "until escalating".into(),
            Archive::Minutes { minutes } => format!("for {}", span(minutes)),
            Archive::Count { count } => {
                format!("until {count} more {}", plural(count, "event"))
            }
            Archive::Forever => "forever".into(),
            Archive::UntilTime { until_ms } => format!("until {}", clock_time(until_ms, None)),
        }
    }
}

/// `1 hour`, `24 hours`, `7 days`, `90 minutes`: whole days past one day, else whole hours,
/// else minutes.
fn span(minutes: u64) -> String {
    const HOUR: u64 = 60;
    const DAY: u64 = 24 * HOUR;
    let (n, unit) = if minutes > DAY && minutes.is_multiple_of(DAY) {
        (minutes / DAY, "day")
    } else if minutes >= HOUR && minutes.is_multiple_of(HOUR) {
        (minutes / HOUR, "hour")
    } else {
        (minutes, "minute")
    };
    format!("{n} {}", plural(n, unit))
}

/// `word`, with an `s` unless `n` is 1.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// A moment in UTC: `14:02` when it falls on the UTC day of `now_ms`, else
/// `2024-05-01 14:02` (always the latter without `now_ms`).
fn clock_time(unix_ms: i64, now_ms: Option<i64>) -> String {
    let same_day =
        now_ms.is_some_and(|now| crate::counts::day_of(now) == crate::counts::day_of(unix_ms));
    let format = if same_day { "%H:%M" } else { "%Y-%m-%d %H:%M" };
    jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_else(|_| "an unknown time".into())
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

impl IssueState {
    /// The state line of the issue's messages, in plain text (the caller escapes it for
    /// mrkdwn): what happened, by whom, when (UTC, `14:02` on the day of `now_ms`, else
    /// `2024-05-01 14:02`), then the assignee, joined with ` · `:
    /// `Resolved by Ada Lovelace · 14:02 · Assigned to Ada Lovelace`,
    /// `Resolved in the next release`, `Archived until escalating`, `Archived for 24 hours`,
    /// `Archived until 100 more events`, `Archived until 16:00`, `Archived` (forever),
    /// `Assigned to #payments`. `None` for an open issue assigned to no one: nothing to say.
    pub fn line(&self, now_ms: i64) -> Option<String> {
        let status = match self.status {
            Status::Unresolved => None,
            Status::Resolved {
                in_next_release: false,
            } => Some("Resolved".to_owned()),
            Status::Resolved {
                in_next_release: true,
            } => Some("Resolved in the next release".to_owned()),
            Status::Archived {
                archive: Archive::Forever,
            } => Some("Archived".to_owned()),
            Status::Archived {
                archive: Archive::UntilTime { until_ms },
            } => Some(format!(
                "Archived until {}",
                clock_time(until_ms, Some(now_ms))
            )),
            Status::Archived { archive } => Some(format!("Archived {}", archive.label())),
        };
        let mut parts = Vec::new();
        if let Some(mut status) = status {
            if let Some(by) = &self.by {
                status.push_str(" by ");
                status.push_str(by);
            }
            parts.push(status);
            if let Some(at_ms) = self.at_ms {
                parts.push(clock_time(at_ms, Some(now_ms)));
            }
        }
        if let Some(who) = &self.assignee {
            parts.push(format!("Assigned to {who}"));
        }
        (!parts.is_empty()).then(|| parts.join(" · "))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-05-01 14:02:00 UTC.
    const AT: i64 = 1_714_572_120_000;
    const HOUR_MS: i64 = 3_600_000;

    fn state(status: Status) -> IssueState {
        IssueState {
            status,
            ..IssueState::default()
        }
    }

    fn archived(archive: Archive) -> IssueState {
        state(Status::Archived { archive })
    }

    #[test]
    fn archive_labels_name_the_menu_choices() {
        let label = |a: Archive| a.label();
        assert_eq!(label(Archive::Escalating), "until escalating");
        assert_eq!(label(Archive::Minutes { minutes: 60 }), "for 1 hour");
        assert_eq!(label(Archive::Minutes { minutes: 1440 }), "for 24 hours");
        assert_eq!(label(Archive::Minutes { minutes: 10_080 }), "for 7 days");
        assert_eq!(label(Archive::Minutes { minutes: 2880 }), "for 2 days");
        assert_eq!(label(Archive::Minutes { minutes: 90 }), "for 90 minutes");
        assert_eq!(label(Archive::Minutes { minutes: 1 }), "for 1 minute");
        assert_eq!(
            label(Archive::Count { count: 100 }),
            "until 100 more events"
        );
        assert_eq!(label(Archive::Count { count: 1 }), "until 1 more event");
        assert_eq!(label(Archive::Forever), "forever");
        assert_eq!(
            label(Archive::UntilTime { until_ms: AT }),
            "until 2024-05-01 14:02"
        );
    }

    #[test]
    fn an_open_unassigned_issue_has_no_state_line() {
        assert_eq!(IssueState::default().line(AT), None);
        // Who reopened it is not news on its own.
        let reopened = IssueState {
            by: Some("Ada".into()),
            at_ms: Some(AT),
            ..IssueState::default()
        };
        assert_eq!(reopened.line(AT), None);
    }

    #[test]
    fn resolved_says_by_whom_and_when() {
        let mut s = IssueState {
            status: Status::Resolved {
                in_next_release: false,
            },
            by: Some("Ada Lovelace".into()),
            at_ms: Some(AT),
            assignee: None,
        };
        assert_eq!(
            s.line(AT + HOUR_MS).as_deref(),
            Some("Resolved by Ada Lovelace · 14:02")
        );
        // Another UTC day: the date too.
        assert_eq!(
            s.line(AT + 12 * HOUR_MS).as_deref(),
            Some("Resolved by Ada Lovelace · 2024-05-01 14:02")
        );
        s.assignee = Some("Ada".into());
        assert_eq!(
            s.line(AT).as_deref(),
            Some("Resolved by Ada Lovelace · 14:02 · Assigned to Ada")
        );
        s.status = Status::Resolved {
            in_next_release: true,
        };
        s.by = None;
        s.at_ms = None;
        assert_eq!(
            s.line(AT).as_deref(),
            Some("Resolved in the next release · Assigned to Ada")
        );
    }

    #[test]
    fn archived_names_its_condition() {
        let line = |s: IssueState| s.line(AT);
        assert_eq!(
            line(archived(Archive::Escalating)).as_deref(),
            Some("Archived until escalating")
        );
        assert_eq!(
            line(archived(Archive::Minutes { minutes: 1440 })).as_deref(),
            Some("Archived for 24 hours")
        );
        assert_eq!(
            line(archived(Archive::Count { count: 100 })).as_deref(),
            Some("Archived until 100 more events")
        );
        assert_eq!(
            line(archived(Archive::Forever)).as_deref(),
            Some("Archived")
        );
        assert_eq!(
            line(archived(Archive::UntilTime {
                until_ms: AT + 2 * HOUR_MS
            }))
            .as_deref(),
            Some("Archived until 16:02")
        );
        assert_eq!(
            line(archived(Archive::UntilTime {
                until_ms: AT + 24 * HOUR_MS
            }))
            .as_deref(),
            Some("Archived until 2024-05-02 14:02")
        );
        let by = IssueState {
            by: Some("Grace".into()),
            at_ms: Some(AT),
            ..archived(Archive::Minutes { minutes: 60 })
        };
        assert_eq!(
            line(by).as_deref(),
            Some("Archived for 1 hour by Grace · 14:02")
        );
    }

    #[test]
    fn an_open_assigned_issue_shows_its_assignee() {
        let s = IssueState {
            assignee: Some("#team-checkout".into()),
            ..IssueState::default()
        };
        assert_eq!(s.line(AT).as_deref(), Some("Assigned to #team-checkout"));
    }

    #[test]
    fn the_new_archive_choice_round_trips_through_json() {
        let status = Status::Archived {
            archive: Archive::UntilTime { until_ms: AT },
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"status":"archived","archive":{"until":"until_time","until_ms":1714572120000}}"#
        );
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    }
}
