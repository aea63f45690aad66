//! Roll-up as plain values: a summary standing for many waiting messages ([`RollUp`]), the
//! waiting messages as the planner sees them ([`Waiting`]) and the swap to make
//! ([`RollUpPlan`]).

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

/// A roll-up to make: the rows it replaces and the summary that takes their place. The
/// summary stands for exactly the occurrences of the rows it replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct RollUpPlan {
    /// The outbox rows folded into the summary, oldest first.
    pub replaces: Vec<i64>,
    /// The summary.
    pub rollup: RollUp,
}
