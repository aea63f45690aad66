//! Block Kit messages with a plain-text fallback, within Slack's limits, with every piece of
//! text that comes from Sentry escaped so that an error message can never ping `@channel`,
//! mention a user or forge a link.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::alert::{Alert, Level};
use crate::counts::{IssueStats, thousands};
use crate::routing::Target;

/// Slack's limit on the characters of a header block's text.
pub const MAX_HEADER_CHARS: usize = 150;
/// Slack's limit on the characters of a section block's text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack's limit on blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Characters of the `text` fallback kept (Slack truncates at 40,000; notifications show far
/// less).
pub const MAX_FALLBACK_CHARS: usize = 3000;

/// A message ready for any transport: `text` is the fallback shown in notifications and by
/// clients that cannot render blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackMessage {
    /// Plain mrkdwn fallback; always carries the counts (`7d: 412 · 30d: 1,204`).
    pub text: String,
    /// Block Kit blocks.
    pub blocks: Vec<Value>,
}

/// Escapes the three characters Slack's mrkdwn gives meaning to (`&`, `<`, `>`): with them
/// escaped, `<!channel>`, `<@U123>` and `<http://evil|click>` are shown as text.
pub fn escape(text: &str) -> String {
    escape_truncated(text, usize::MAX)
}

/// [`escape`], then cut to at most `max_chars` characters (ending in `…` when cut) without
/// splitting an escape sequence.
pub fn escape_truncated(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut used = 0usize;
    let total: usize = text.chars().map(escaped_len).sum();
    let budget = if total <= max_chars {
        usize::MAX
    } else {
        max_chars.saturating_sub(1)
    };
    for c in text.chars() {
        let len = escaped_len(c);
        if used + len > budget {
            out.push('…');
            return out;
        }
        used += len;
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn escaped_len(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        _ => 1,
    }
}

/// Cuts text that needs no escaping (or is already escaped by us) to `max_chars`, ending in `…`.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `url` if it is an http(s) URL Slack can link safely (no whitespace, `<`, `>` or `|`, which
/// would break out of a `<url|label>` link), else `None`.
pub fn safe_link(url: &str) -> Option<&str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let http = lower.starts_with("https://") || lower.starts_with("http://");
    let clean = !url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '|'));
    (http && clean && url.len() <= 2000).then_some(url)
}

fn level_emoji(level: Level) -> &'static str {
    match level {
        Level::Fatal => ":boom:",
        Level::Error => ":red_circle:",
        Level::Warning => ":warning:",
        Level::Info => ":information_source:",
        Level::Debug => ":mag:",
    }
}

/// What happened, in words, for notices that are not a new occurrence.
fn notice_prefix(alert: &Alert) -> Option<&'static str> {
    match (alert.resource.as_str(), alert.action.as_str()) {
        ("issue", "created") => Some("New issue"),
        ("issue", "resolved") => Some("Resolved"),
        ("issue", "unresolved") => Some("Regressed"),
        ("issue", "assigned") => Some("Assigned"),
        ("issue", "ignored") | ("issue", "archived") => Some("Ignored"),
        // Sentry's metric alert titles already say `Critical:` / `Resolved:`, and comment
        // titles already say `Comment on issue …`.
        ("metric_alert", _) => Some("Metric alert"),
        ("activity_alert", _) => Some("Activity"),
        _ => None,
    }
}

fn format_time(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Builds the message for one alert in one channel, with the issue's counts at send time.
pub fn render_alert(alert: &Alert, target: &Target, stats: &IssueStats) -> SlackMessage {
    let level = alert.level.as_str().to_ascii_uppercase();
    let header_title = match notice_prefix(alert) {
        Some(prefix) => format!("{prefix}: {}", alert.title),
        None => alert.title.clone(),
    };
    // Header blocks are plain_text, where Slack parses no mentions or links; angle brackets
    // are still swapped for look-alikes so no client can ever read `<!channel>` there.
    let header = truncate(
        &format!(
            "{} {level} {}",
            level_emoji(alert.level),
            header_title.replace('<', "‹").replace('>', "›")
        ),
        MAX_HEADER_CHARS,
    );

    let mut where_parts = vec![format!("*{}*", escape(alert.project()))];
    if let Some(env) = &alert.environment {
        where_parts.push(escape(env));
    }
    if let Some(release) = &alert.release {
        where_parts.push(format!("release {}", escape(release)));
    }
    let where_line = where_parts.join(" · ");

    let counts = stats.summary();
    let mut count_line = format!("`{counts}` {}", stats.sparkline());
    if let Some(first) = stats.first_seen_ms {
        count_line.push_str(&format!(" · first seen {}", format_time(first)));
    }
    if let Some(lifetime) = alert.sentry_count.or(stats.sentry_count) {
        count_line.push_str(&format!(" · Sentry lifetime: {}", thousands(lifetime)));
    }

    let link = alert
        .issue_url
        .as_deref()
        .and_then(safe_link)
        .or_else(|| alert.event_url.as_deref().and_then(safe_link));

    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": header, "emoji": true}
    })];
    if let Some(mention) = &target.mention {
        blocks.push(section(mention));
    }
    let mut body = where_line.clone();
    if let Some(culprit) = &alert.culprit {
        body.push_str(&format!("\n`{}`", escape(&culprit.replace('`', "'"))));
    }
    blocks.push(section(&truncate(&body, MAX_SECTION_CHARS)));
    if let Some(detail) = &alert.detail {
        blocks.push(section(&escape_truncated(detail, MAX_SECTION_CHARS)));
    }
    blocks.push(section(&truncate(&count_line, MAX_SECTION_CHARS)));

    let mut context = Vec::new();
    if let Some(short_id) = &alert.short_id {
        context.push(escape(short_id));
    }
    if let Some(rule) = &alert.rule {
        context.push(format!("rule: {}", escape(rule)));
    }
    if let Some(route) = &target.route {
        context.push(format!("route: {}", escape(route)));
    }
    if !context.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": truncate(&context.join(" · "), MAX_SECTION_CHARS)}]
        }));
    }
    if let Some(url) = link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": {"type": "plain_text", "text": "Open in Sentry"},
                "url": url
            }]
        }));
    }
    blocks.truncate(MAX_BLOCKS);

    let mut text = String::new();
    if let Some(mention) = &target.mention {
        text.push_str(mention);
        text.push(' ');
    }
    text.push_str(&format!(
        "[{level}] {} — {where_line} — {counts} {}",
        escape_truncated(&header_title, 500),
        stats.sparkline()
    ));
    if let Some(url) = link {
        text.push_str(&format!(" — <{url}|Open in Sentry>"));
    }
    SlackMessage {
        text: truncate(&text, MAX_FALLBACK_CHARS),
        blocks,
    }
}

/// `14:02` when `since_ms` is on the UTC day of `now_ms`, else `2026-11-21 14:02`; UTC.
fn short_time(since_ms: i64, now_ms: i64) -> String {
    let fmt = if crate::counts::day_of(since_ms) == crate::counts::day_of(now_ms) {
        "%H:%M"
    } else {
        "%Y-%m-%d %H:%M"
    };
    jiff::Timestamp::from_millisecond(since_ms)
        .map(|t| t.strftime(fmt).to_string())
        .unwrap_or_default()
}

/// The follow-up after a cooldown: `+37 since 14:02 · 7d: 412 · 30d: 1,204` (times UTC),
/// without the route's mention (the original message already paged).
pub fn render_followup(
    alert: &Alert,
    folded: u64,
    since_ms: i64,
    now_ms: i64,
    stats: &IssueStats,
) -> SlackMessage {
    let headline = format!(
        "+{} since {} · {} {}",
        thousands(folded),
        short_time(since_ms, now_ms),
        stats.summary(),
        stats.sparkline()
    );
    let what = format!(
        "[{}] {} — {}{}",
        alert.level.as_str().to_ascii_uppercase(),
        escape_truncated(&alert.title, 500),
        escape(alert.project()),
        alert
            .environment
            .as_deref()
            .map(|e| format!(" · {}", escape(e)))
            .unwrap_or_default()
    );
    let mut blocks = vec![
        section(&format!("*{headline}*")),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&what, MAX_SECTION_CHARS)}]}),
    ];
    let link = alert.issue_url.as_deref().and_then(safe_link);
    if let Some(url) = link {
        blocks.push(json!({
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in Sentry"}, "url": url}]
        }));
    }
    let mut text = format!("{headline} — {what}");
    if let Some(url) = link {
        text.push_str(&format!(" — <{url}|Open in Sentry>"));
    }
    SlackMessage {
        text: truncate(&text, MAX_FALLBACK_CHARS),
        blocks,
    }
}

/// Issues listed by name in a roll-up; the rest are counted in "+N more".
pub const ROLLUP_LISTED: usize = 10;

/// The summary of a rolled-up backlog: `23 issues, 1,402 events in the last 4 minutes`, the
/// top issues, `+N more`.
pub fn render_rollup(rollup: &crate::storm::RollUp, now_ms: i64) -> SlackMessage {
    let secs = ((now_ms - rollup.since_ms).max(0) / 1000) as u64;
    let span = if secs < 120 {
        format!("{secs} seconds")
    } else if secs < 2 * 3600 {
        format!("{} minutes", secs / 60)
    } else {
        format!("{} hours", secs / 3600)
    };
    let n = rollup.issues.len();
    let headline = format!(
        "{} {}, {} {} in the last {span}",
        thousands(n as u64),
        if n == 1 { "issue" } else { "issues" },
        thousands(rollup.occurrences),
        if rollup.occurrences == 1 {
            "event"
        } else {
            "events"
        },
    );
    let mut lines = Vec::new();
    for issue in rollup.issues.iter().take(ROLLUP_LISTED) {
        let title = escape_truncated(&issue.title, 150);
        let title = match issue.issue_url.as_deref().and_then(safe_link) {
            Some(url) => format!("<{url}|{title}>"),
            None => title,
        };
        lines.push(format!(
            "• *{}* × [{}] {} — {}{}",
            thousands(issue.occurrences),
            issue.level.as_str().to_ascii_uppercase(),
            title,
            escape(&issue.project),
            issue
                .environment
                .as_deref()
                .map(|e| format!(" · {}", escape(e)))
                .unwrap_or_default()
        ));
    }
    if n > ROLLUP_LISTED {
        lines.push(format!("+{} more", thousands((n - ROLLUP_LISTED) as u64)));
    }
    let list = lines.join("\n");
    let mentions = rollup.mentions.join(" ");
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!(":rotating_light: {headline}"), MAX_HEADER_CHARS), "emoji": true}}),
        section(&truncate(&list, MAX_SECTION_CHARS)),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{} messages rolled up to keep this channel readable", thousands(rollup.messages))}]}),
    ];
    let mut text = format!("{headline}\n{list}");
    if !mentions.is_empty() {
        blocks.insert(1, section(&mentions));
        text = format!("{mentions} {text}");
    }
    SlackMessage {
        text: truncate(&text, MAX_FALLBACK_CHARS),
        blocks,
    }
}

fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_alert() -> Alert {
        Alert {
            resource: "event_alert".into(),
            action: "triggered".into(),
            issue_key: "1117540176".into(),
            short_id: Some("FRONT-END-9".into()),
            event_id: Some("e4874d664c3540c1a32eab185f12c5ab".into()),
            projects: vec!["front-end".into()],
            environment: Some("production".into()),
            level: Level::Error,
            title: "ReferenceError: heck is not defined".into(),
            culprit: Some("?(<anonymous>)".into()),
            release: Some("web@1.4.2".into()),
            issue_url: Some("https://sentry.io/organizations/test-org/issues/1117540176/".into()),
            event_url: None,
            tags: vec![],
            timestamp: Some(1_566_248_777),
            sentry_first_seen: None,
            sentry_count: None,
            rule: Some("Very Important Alert Rule!".into()),
            detail: None,
        }
    }

    fn target(mention: Option<&str>) -> Target {
        Target {
            channel: "checkout-prod".into(),
            route: Some("checkout production".into()),
            mention: mention.map(str::to_string),
            cooldown_secs: 1800,
            digest: true,
        }
    }

    fn stats() -> IssueStats {
        let mut daily = vec![0; 30];
        daily[0] = 700;
        daily[23..].copy_from_slice(&[10, 0, 50, 80, 100, 72, 100]);
        IssueStats {
            daily,
            first_seen_ms: Some(1_763_000_000_000),
            sentry_count: Some(4021),
        }
    }

    #[test]
    fn message_carries_counts_link_and_mention() {
        let msg = render_alert(&sample_alert(), &target(Some("<!subteam^S0123>")), &stats());
        assert!(
            msg.text.starts_with("<!subteam^S0123> [ERROR] "),
            "{}",
            msg.text
        );
        assert!(msg.text.contains("7d: 412 · 30d: 1,112"), "{}", msg.text);
        assert!(msg.text.contains(
            "<https://sentry.io/organizations/test-org/issues/1117540176/|Open in Sentry>"
        ));
        insta::assert_json_snapshot!("event_alert_message", msg);
    }

    #[test]
    fn sentry_text_cannot_ping_or_forge_links() {
        let mut alert = sample_alert();
        alert.title = "<!channel> <@U123> <https://evil.example|click> & more".into();
        alert.culprit = Some("<!here>".into());
        alert.projects = vec!["<!everyone>".into()];
        alert.detail = Some("<!channel>".into());
        let msg = render_alert(&alert, &target(None), &stats());
        let all = serde_json::to_string(&msg).unwrap();
        for forbidden in [
            "<!channel>",
            "<!here>",
            "<!everyone>",
            "<@U123>",
            "<https://evil",
        ] {
            assert!(!all.contains(forbidden), "{forbidden} leaked into {all}");
        }
        assert!(msg.text.contains("&lt;!channel&gt;"));
    }

    #[test]
    fn non_http_links_are_dropped() {
        let mut alert = sample_alert();
        alert.issue_url = Some("javascript:alert(1)".into());
        alert.event_url = Some("https://x.example/a|b>".into());
        let msg = render_alert(&alert, &target(None), &stats());
        let all = serde_json::to_string(&msg).unwrap();
        assert!(!all.contains("javascript:"));
        assert!(!all.contains("Open in Sentry"));
    }

    #[test]
    fn long_text_is_truncated_within_slack_limits() {
        let mut alert = sample_alert();
        alert.title = "x".repeat(10_000);
        alert.detail = Some("<".repeat(10_000));
        alert.culprit = Some("y".repeat(10_000));
        let msg = render_alert(&alert, &target(None), &stats());
        assert!(msg.blocks.len() <= MAX_BLOCKS);
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.chars().count() <= MAX_HEADER_CHARS);
        assert!(header.ends_with('…'));
        for block in &msg.blocks {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= MAX_SECTION_CHARS);
            }
        }
        assert!(msg.text.chars().count() <= MAX_FALLBACK_CHARS);
        assert!(msg.text.contains("7d: 412 · 30d: 1,112"));
    }

    /// The message every real fixture produces, pinned.
    #[test]
    fn every_fixture_renders_as_pinned() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/sentry/");
        for name in [
            "event_alert.triggered",
            "error.created",
            "issue.created",
            "issue.created.2019-docs",
            "metric_alert.resolved",
            "activity_alert.triggered",
            "comment.created",
        ] {
            let body = std::fs::read(format!("{dir}{name}.json")).unwrap();
            let resource = name.split('.').next().unwrap();
            let parsed = crate::sentry::parse(resource, &body, &Default::default()).unwrap();
            let crate::sentry::Parsed::Alert(alert) = parsed else {
                panic!("{name} is routed");
            };
            let msg = render_alert(&alert, &target(None), &stats());
            assert!(
                msg.text.contains("7d: 412 · 30d: 1,112"),
                "{name}: {}",
                msg.text
            );
            insta::assert_json_snapshot!(format!("fixture_{name}"), msg);
        }
    }

    proptest! {
        #[test]
        fn escaping_never_leaves_a_raw_angle_bracket(s in ".{0,300}", max in 1usize..400) {
            let out = escape_truncated(&s, max);
            prop_assert!(!out.contains('<') && !out.contains('>'));
            prop_assert!(out.chars().count() <= max.max(1));
            // No escape sequence is ever split by the cut.
            let cut = out.trim_end_matches('…');
            if let Some(amp) = cut.rfind('&') {
                let rest = &cut[amp..];
                prop_assert!(rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"));
            }
        }
    }
}
