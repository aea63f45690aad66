//! The digest's numbers and its message: pure functions of what the store returns, so the
//! arithmetic and the layout are tested without a database.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::counts::{DAY_MS, sparkline, thousands};
use crate::slack::SlackMessage;
use crate::slack::message::{
    MAX_BLOCKS, MAX_FALLBACK_CHARS, MAX_HEADER_CHARS, MAX_SECTION_CHARS, escape, safe_link,
    sentry_text_truncated, truncate,
};
use crate::store::{ChannelActivity, ChannelDay, IssueInfo};

/// One service × environment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// Project slug.
    pub project: String,
    /// Environment (`""` when none).
    pub environment: String,
    /// Occurrences this week.
    pub this_week: u64,
    /// Occurrences the week before.
    pub last_week: u64,
}

/// One ranked issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopIssue {
    /// Issue key.
    pub issue_key: String,
    /// Title.
    pub title: String,
    /// Link to Sentry.
    pub issue_url: Option<String>,
    /// Occurrences this week.
    pub this_week: u64,
    /// Occurrences the week before.
    pub last_week: u64,
    /// This week per day, oldest first.
    pub daily: [u64; 7],
}

/// Everything one channel's digest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestReport {
    /// Channel name.
    pub channel: String,
    /// First UTC day of the week covered.
    pub first_day: i64,
    /// Occurrences this week and the week before.
    pub this_week: u64,
    /// Occurrences the week before.
    pub last_week: u64,
    /// Issues with occurrences this week.
    pub distinct_issues: usize,
    /// Of those, first seen this week.
    pub new_issues: usize,
    /// Issues of this channel resolved in Sentry this week.
    pub resolved: usize,
    /// Per service × environment, busiest first.
    pub services: Vec<ServiceRow>,
    /// Every issue with occurrences this week, busiest first (the message shows `top`).
    pub ranked: Vec<TopIssue>,
    /// How many of `ranked` the message lists.
    pub top: usize,
    /// Deliveries (occurrences and notices) routed to the channel this week.
    pub deliveries: u64,
    /// Occurrences folded by cooldowns this week.
    pub folded: u64,
    /// What Sluice did for the channel this week.
    pub activity: ChannelActivity,
}

/// `▲ 60%`, `▼ 25%`, `±0%`, or `new` when last week had none.
pub fn trend(this_week: u64, last_week: u64) -> String {
    if last_week == 0 {
        return if this_week == 0 {
            "±0%".into()
        } else {
            "new".into()
        };
    }
    let pct = ((this_week as f64 - last_week as f64) / last_week as f64 * 100.0).round() as i64;
    match pct {
        0 => "±0%".into(),
        p if p > 0 => format!("▲ {}%", thousands(p as u64)),
        p => format!("▼ {}%", thousands(p.unsigned_abs())),
    }
}

/// Computes the digest of the 7 UTC days before `period_end_ms`'s day, compared with the 7
/// before those. `days` must cover both weeks; `issues` the channel's issues.
pub fn build(
    channel: &str,
    period_end_ms: i64,
    top: usize,
    days: &[ChannelDay],
    issues: &[IssueInfo],
    activity: ChannelActivity,
) -> DigestReport {
    let end_day = crate::counts::day_of(period_end_ms);
    let first_day = end_day - 7;
    let (week_start_ms, week_end_ms) = (first_day * DAY_MS, end_day * DAY_MS);
    let info: HashMap<&str, &IssueInfo> =
        issues.iter().map(|i| (i.issue_key.as_str(), i)).collect();
    let Tally {
        per_issue,
        services,
        this_week,
        last_week,
        deliveries,
        folded,
    } = tally(days, &info, first_day);
    let mut ranked: Vec<TopIssue> = per_issue
        .into_values()
        .filter(|i| i.this_week > 0)
        .collect();
    ranked.sort_by(|a, b| {
        b.this_week
            .cmp(&a.this_week)
            .then(b.last_week.cmp(&a.last_week))
            .then(a.issue_key.cmp(&b.issue_key))
    });
    let in_week = |t: i64| (week_start_ms..week_end_ms).contains(&t);
    let new_issues = ranked
        .iter()
        .filter(|i| {
            info.get(i.issue_key.as_str())
                .is_some_and(|m| in_week(m.first_seen_ms))
        })
        .count();
    let resolved = issues
        .iter()
        .filter(|m| m.resolved_at_ms.is_some_and(in_week))
        .count();
    let mut services: Vec<ServiceRow> = services
        .into_values()
        .filter(|s| s.this_week + s.last_week > 0)
        .collect();
    services.sort_by(|a, b| {
        b.this_week
            .cmp(&a.this_week)
            .then(a.project.cmp(&b.project))
    });
    DigestReport {
        channel: channel.to_string(),
        first_day,
        this_week,
        last_week,
        distinct_issues: ranked.len(),
        new_issues,
        resolved,
        services,
        ranked,
        top,
        deliveries,
        folded,
        activity,
    }
}

/// A channel's day counts summed over the week from `first_day` and the week before it.
#[derive(Default)]
struct Tally<'a> {
    per_issue: HashMap<&'a str, TopIssue>,
    services: BTreeMap<(&'a str, &'a str), ServiceRow>,
    this_week: u64,
    last_week: u64,
    /// Deliveries this week: occurrences and notices.
    deliveries: u64,
    folded: u64,
}

/// Sums `days` into a [`Tally`] of the week starting `first_day` and the week before; `info`
/// names the issues.
fn tally<'a>(
    days: &'a [ChannelDay],
    info: &HashMap<&str, &IssueInfo>,
    first_day: i64,
) -> Tally<'a> {
    let this = |d: &ChannelDay| (first_day..first_day + 7).contains(&d.day);
    let last = |d: &ChannelDay| (first_day - 7..first_day).contains(&d.day);
    let mut t = Tally::default();
    for d in days.iter().filter(|d| this(d) || last(d)) {
        let row = t
            .services
            .entry((d.project.as_str(), d.environment.as_str()))
            .or_insert_with(|| ServiceRow {
                project: d.project.clone(),
                environment: d.environment.clone(),
                this_week: 0,
                last_week: 0,
            });
        let issue = t.per_issue.entry(d.issue_key.as_str()).or_insert_with(|| {
            let meta = info.get(d.issue_key.as_str());
            TopIssue {
                issue_key: d.issue_key.clone(),
                title: meta.map_or_else(|| d.issue_key.clone(), |m| m.title.clone()),
                issue_url: meta.and_then(|m| m.issue_url.clone()),
                this_week: 0,
                last_week: 0,
                daily: [0; 7],
            }
        });
        if this(d) {
            t.this_week += d.occurrences;
            t.deliveries += d.occurrences + d.notices;
            t.folded += d.folded;
            row.this_week += d.occurrences;
            issue.this_week += d.occurrences;
            issue.daily[(d.day - first_day) as usize] += d.occurrences;
        } else {
            t.last_week += d.occurrences;
            row.last_week += d.occurrences;
            issue.last_week += d.occurrences;
        }
    }
    t
}

fn date(day: i64) -> String {
    jiff::Timestamp::from_millisecond(day * DAY_MS)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Most service rows shown; the rest are summed into one line.
const MAX_SERVICE_ROWS: usize = 15;

impl DigestReport {
    /// Whether the week had nothing to report.
    pub fn is_quiet(&self) -> bool {
        self.this_week == 0 && self.deliveries == 0 && self.resolved == 0
    }

    /// `2026-11-15 – 2026-11-21 (UTC)`.
    fn span(&self) -> String {
        format!(
            "{} – {} (UTC)",
            date(self.first_day),
            date(self.first_day + 6)
        )
    }

    fn summary(&self) -> String {
        format!(
            "{} events ({} vs {} the week before) · {} {} · {} new · {} resolved in Sentry",
            thousands(self.this_week),
            trend(self.this_week, self.last_week),
            thousands(self.last_week),
            thousands(self.distinct_issues as u64),
            if self.distinct_issues == 1 {
                "issue"
            } else {
                "issues"
            },
            thousands(self.new_issues as u64),
            thousands(self.resolved as u64),
        )
    }

    /// The service × environment table, monospaced.
    fn table(&self) -> String {
        let width = self
            .services
            .iter()
            .take(MAX_SERVICE_ROWS)
            .map(|s| s.project.chars().count() + s.environment.chars().count() + 3)
            .max()
            .unwrap_or(0)
            .clamp("service · env".chars().count(), 48);
        let mut out = format!(
            "{:<width$} {:>9} {:>9}  trend\n",
            "service · env", "this week", "last week"
        );
        for s in self.services.iter().take(MAX_SERVICE_ROWS) {
            let name = if s.environment.is_empty() {
                s.project.clone()
            } else {
                format!("{} · {}", s.project, s.environment)
            };
            out.push_str(&format!(
                "{:<width$} {:>9} {:>9}  {}\n",
                truncate(&name, width),
                thousands(s.this_week),
                thousands(s.last_week),
                trend(s.this_week, s.last_week)
            ));
        }
        if self.services.len() > MAX_SERVICE_ROWS {
            let rest = &self.services[MAX_SERVICE_ROWS..];
            out.push_str(&format!(
                "{:<width$} {:>9} {:>9}\n",
                format!("+{} more", rest.len()),
                thousands(rest.iter().map(|s| s.this_week).sum()),
                thousands(rest.iter().map(|s| s.last_week).sum()),
            ));
        }
        out
    }

    /// Lines of the top-issues list, within `budget` characters, ending in "+N more
    /// issues" when not all fit or `top` cuts the list.
    fn top_lines(&self, budget: usize, linked: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let mut used = 0;
        let reserve = 40; // room for the "+N more issues" line
        for (n, issue) in self.ranked.iter().take(self.top).enumerate() {
            let title = sentry_text_truncated(&issue.title, 120);
            let title = match issue.issue_url.as_deref().and_then(safe_link) {
                Some(url) if linked => format!("<{url}|{title}>"),
                Some(url) => format!("{title} {url}"),
                None => title,
            };
            let line = format!(
                "{}. {} — *{}* this week, {} last week, {} {}",
                n + 1,
                title,
                thousands(issue.this_week),
                thousands(issue.last_week),
                trend(issue.this_week, issue.last_week),
                sparkline(&issue.daily)
            );
            if used + line.chars().count() + 1 + reserve > budget {
                break;
            }
            used += line.chars().count() + 1;
            lines.push(line);
        }
        let more = self.ranked.len() - lines.len();
        if more > 0 {
            lines.push(format!(
                "+{} more {}",
                thousands(more as u64),
                if more == 1 { "issue" } else { "issues" }
            ));
        }
        lines
    }

    fn activity_line(&self) -> String {
        format!(
            "Sluice this week: {} deliveries received · {} messages posted · {} occurrences folded by cooldowns · {} by roll-ups · {} dead {}",
            thousands(self.deliveries),
            thousands(self.activity.messages_posted),
            thousands(self.folded),
            thousands(self.activity.rolled_up_occurrences),
            thousands(self.activity.dead_letters),
            if self.activity.dead_letters == 1 {
                "letter"
            } else {
                "letters"
            },
        )
    }

    /// The Slack message; its text fallback starts with `Weekly error digest` and reads well
    /// in a terminal too (`sluice digest --dry-run` prints it).
    pub fn render(&self) -> SlackMessage {
        let title = format!("Weekly error digest · #{} · {}", self.channel, self.span());
        if self.is_quiet() {
            let text = format!("{title}: a quiet week, no errors.");
            return SlackMessage {
                blocks: vec![
                    json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(&text)}}),
                ],
                text,
            };
        }
        let summary = self.summary();
        let table = self.table();
        let activity = self.activity_line();
        let top_linked = self.top_lines(MAX_SECTION_CHARS - 20, true);
        let blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("Weekly error digest · #{}", self.channel), MAX_HEADER_CHARS)}}),
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": self.span()}]}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&summary, MAX_SECTION_CHARS)}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("*By service × environment*\n```{}```", escape(&table)), MAX_SECTION_CHARS)}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("*Top issues*\n{}", top_linked.join("\n")), MAX_SECTION_CHARS)}}),
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&activity, MAX_SECTION_CHARS)}]}),
        ];
        debug_assert!(blocks.len() <= MAX_BLOCKS);
        // The fallback: plain lines, links as text so a terminal shows them.
        let head = format!(
            "{title}\n{summary}\n\nBy service × environment\n{}\nTop issues\n",
            escape(&table)
        );
        let budget =
            MAX_FALLBACK_CHARS.saturating_sub(head.chars().count() + activity.chars().count() + 4);
        let top_plain = self.top_lines(budget, false).join("\n").replace('*', "");
        let text = format!("{head}{top_plain}\n\n{activity}");
        SlackMessage {
            text: truncate(&text, MAX_FALLBACK_CHARS),
            blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: i64 = 20_410 * DAY_MS + 8 * 3_600_000; // a Monday, 08:00 UTC

    fn day(issue: &str, days_before_end: i64, project: &str, env: &str, n: u64) -> ChannelDay {
        ChannelDay {
            issue_key: issue.into(),
            day: 20_410 - days_before_end,
            project: project.into(),
            environment: env.into(),
            occurrences: n,
            folded: n / 2,
            notices: 0,
        }
    }

    fn info(issue: &str, first_seen_days_before: i64, resolved: bool) -> IssueInfo {
        IssueInfo {
            issue_key: issue.into(),
            title: format!("Error {issue}"),
            level: "error".into(),
            issue_url: Some(format!(
                "https://sentry.io/organizations/acme/issues/{issue}/"
            )),
            first_seen_ms: (20_410 - first_seen_days_before) * DAY_MS,
            resolved_at_ms: resolved.then_some((20_410 - 2) * DAY_MS),
        }
    }

    fn sample() -> DigestReport {
        let days = vec![
            day("a", 1, "checkout", "production", 300),
            day("a", 3, "checkout", "production", 112),
            day("a", 9, "checkout", "production", 250),
            day("b", 2, "checkout", "staging", 40),
            day("b", 10, "checkout", "staging", 80),
            day("c", 7, "search", "production", 5),
            day("old", 20, "search", "production", 1000), // outside both weeks
            day("d", 8, "search", "production", 9),       // last week only
        ];
        let issues = vec![
            info("a", 30, false),
            info("b", 3, true),
            info("c", 7, false),
            info("d", 8, false),
        ];
        build(
            "checkout-prod",
            END,
            10,
            &days,
            &issues,
            ChannelActivity {
                messages_posted: 12,
                rolled_up_occurrences: 30,
                dead_letters: 1,
            },
        )
    }

    #[test]
    fn trend_arithmetic() {
        assert_eq!(trend(412, 250), "▲ 65%");
        assert_eq!(trend(40, 80), "▼ 50%");
        assert_eq!(trend(5, 0), "new");
        assert_eq!(trend(0, 0), "±0%");
        assert_eq!(trend(100, 100), "±0%");
        assert_eq!(trend(0, 9), "▼ 100%");
    }

    #[test]
    fn weeks_totals_ranking_new_and_resolved() {
        let r = sample();
        assert_eq!(r.this_week, 300 + 112 + 40 + 5);
        assert_eq!(r.last_week, 250 + 80 + 9);
        assert_eq!(r.distinct_issues, 3, "d had nothing this week");
        let order: Vec<&str> = r.ranked.iter().map(|i| i.issue_key.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!((r.ranked[0].this_week, r.ranked[0].last_week), (412, 250));
        assert_eq!(r.ranked[0].daily, [0, 0, 0, 0, 112, 0, 300]);
        assert_eq!(
            r.new_issues, 2,
            "b (3 days ago) and c (7 days ago, the first day)"
        );
        assert_eq!(r.resolved, 1);
        assert_eq!(r.services[0].project, "checkout");
        assert_eq!(r.services[0].this_week, 412);
        assert_eq!(r.folded, 150 + 56 + 20 + 2);
    }

    #[test]
    fn the_message_is_pinned() {
        let msg = sample().render();
        assert!(msg.text.starts_with("Weekly error digest"));
        insta::assert_json_snapshot!("digest_message", msg);
        insta::assert_snapshot!("digest_text", msg.text);
    }

    #[test]
    fn a_quiet_week_says_so_in_one_line() {
        let r = build("quiet", END, 10, &[], &[], ChannelActivity::default());
        let msg = r.render();
        assert!(msg.text.starts_with("Weekly error digest · #quiet"));
        assert!(msg.text.ends_with("a quiet week, no errors."));
        assert!(!msg.text.contains('\n'));
    }

    #[test]
    fn three_hundred_issues_stay_within_slacks_limits() {
        let days: Vec<ChannelDay> = (0..300)
            .map(|i| {
                day(
                    &format!("issue-{i:03}"),
                    1 + i % 7,
                    &format!("svc-{}", i % 40),
                    "production",
                    1000 - i as u64,
                )
            })
            .collect();
        let issues: Vec<IssueInfo> = (0..300)
            .map(|i| {
                let mut m = info(&format!("issue-{i:03}"), 60, false);
                m.title = format!("{} <!channel> {}", "VeryLongErrorName".repeat(8), i);
                m
            })
            .collect();
        let r = build("busy", END, 300, &days, &issues, ChannelActivity::default());
        let msg = r.render();
        assert!(msg.blocks.len() <= MAX_BLOCKS);
        for b in &msg.blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                let limit = if b["type"] == "header" {
                    MAX_HEADER_CHARS
                } else {
                    MAX_SECTION_CHARS
                };
                assert!(t.chars().count() <= limit, "{} chars", t.chars().count());
            }
        }
        assert!(msg.text.chars().count() <= MAX_FALLBACK_CHARS);
        let top = msg.blocks[4]["text"]["text"].as_str().unwrap();
        assert!(top.contains(" more issues"), "{top}");
        assert!(top.starts_with("*Top issues*\n1. "));
        assert!(!serde_json::to_string(&msg).unwrap().contains("<!channel>"));
        assert!(msg.text.contains("more issues"));
        assert!(
            msg.text.contains("+25 more"),
            "services beyond 15 are summed"
        );
    }
}
