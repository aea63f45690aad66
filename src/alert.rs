//! The normalised record every stage after signature verification works on.
//!
//! The parser (`sentry`) turns each Sentry payload shape into one [`Alert`]; routing, counting,
//! storage and Slack rendering only ever see this type, so a new payload shape changes only the
//! parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Severity of an alert, ordered `debug < info < warning < error < fatal` as in Sentry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Sentry's `debug`.
    Debug,
    /// Sentry's `info` (also `log`).
    Info,
    /// Sentry's `warning` (also `warn`).
    Warning,
    /// Sentry's `error`: the default when a payload names no level.
    Error,
    /// Sentry's `fatal` (also `critical`).
    Fatal,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Debug,
        Level::Info,
        Level::Warning,
        Level::Error,
        Level::Fatal,
    ];

    /// The lowercase name Sentry uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of Sentry's level names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level `{0}` (expected debug, info, warning, error or fatal)")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" | "trace" => Ok(Level::Debug),
            "info" | "log" | "sample" => Ok(Level::Info),
            "warning" | "warn" => Ok(Level::Warning),
            "error" => Ok(Level::Error),
            "fatal" | "critical" => Ok(Level::Fatal),
            other => Err(UnknownLevel(other.to_string())),
        }
    }
}

/// One normalised Sentry notification: an occurrence of an error, an issue lifecycle notice, a
/// metric alert or a comment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Sentry's resource (`event_alert`, `error`, `issue`, `metric_alert`, `comment`), or
    /// `legacy` for the legacy WebHooks plugin.
    pub resource: String,
    /// Sentry's action (`triggered`, `created`, `resolved`, …).
    pub action: String,
    /// Stable key of the issue this belongs to: Sentry's issue id where the payload has one,
    /// otherwise `fp:` + a hash of project, title and culprit (see `sentry::fingerprint`), or
    /// `metric:` + the metric alert id.
    pub issue_key: String,
    /// Sentry's short id (`FRONT-END-9`), where known.
    pub short_id: Option<String>,
    /// The Sentry event id: set only for payloads that carry one occurrence (`error`,
    /// `event_alert`, legacy). An alert with an event id is counted; one without is not.
    pub event_id: Option<String>,
    /// Project slugs (services). Never empty: a project that cannot be identified is `unknown`.
    /// Metric alerts may name several; the first is the primary one.
    pub projects: Vec<String>,
    /// Sentry environment (`production`, `staging`, …), where the payload names one.
    pub environment: Option<String>,
    /// Severity; `error` where the payload names none.
    pub level: Level,
    /// One-line title (`ReferenceError: heck is not defined`).
    pub title: String,
    /// Where it happened (function or transaction), where known.
    pub culprit: Option<String>,
    /// Release, where known.
    pub release: Option<String>,
    /// Link to the issue (or metric alert) in Sentry's web UI; http(s) only.
    pub issue_url: Option<String>,
    /// Link to this event in Sentry's web UI; http(s) only.
    pub event_url: Option<String>,
    /// Event tags in payload order.
    pub tags: Vec<(String, String)>,
    /// When the event happened (or the issue was last seen), Unix seconds.
    pub timestamp: Option<i64>,
    /// When Sentry first saw the issue, Unix seconds, where the payload says.
    pub sentry_first_seen: Option<i64>,
    /// Sentry's own lifetime count of the issue, where the payload carries it.
    pub sentry_count: Option<u64>,
    /// Name of the Sentry alert rule that fired (issue alert, metric alert, activity alert or
    /// the legacy plugin's triggering rules).
    pub rule: Option<String>,
    /// Free text that belongs with the notice: a comment's body, a metric alert's description,
    /// who an issue was assigned to.
    pub detail: Option<String>,
    /// The issue's state after an issue notice (`issue.resolved|ignored|assigned|unresolved`):
    /// what the messages about it show from now on. `None` for every other alert.
    #[serde(default)]
    pub state: Option<crate::issue::IssueState>,
}

impl Alert {
    /// The primary project slug.
    pub fn project(&self) -> &str {
        self.projects
            .first()
            .map(String::as_str)
            .unwrap_or("unknown")
    }

    /// `resource.action`, as in Sentry's `Sentry-Hook-Resource` plus the body's `action`.
    pub fn kind(&self) -> String {
        format!("{}.{}", self.resource, self.action)
    }

    /// Whether this alert is one occurrence of an error (and so is counted).
    pub fn is_occurrence(&self) -> bool {
        self.event_id.is_some()
    }

    /// The value of tag `key`, if the event carries it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_like_sentry() {
        assert!(Level::Debug < Level::Info);
        assert!(Level::Info < Level::Warning);
        assert!(Level::Warning < Level::Error);
        assert!(Level::Error < Level::Fatal);
    }

    #[test]
    fn level_names_parse_with_aliases() {
        assert_eq!("warn".parse::<Level>().unwrap(), Level::Warning);
        assert_eq!("FATAL".parse::<Level>().unwrap(), Level::Fatal);
        assert_eq!("critical".parse::<Level>().unwrap(), Level::Fatal);
        assert!("loud".parse::<Level>().is_err());
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>().unwrap(), level);
        }
    }
}
