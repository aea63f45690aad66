//! Block Kit messages with a plain-text fallback, within Slack's limits, with every piece of
//! text that comes from Sentry escaped so that an error message can never ping `@channel`,
//! mention a user, forge a link, change the message's formatting or hide what it says behind
//! bidirectional or zero-width characters ([`sentry_text`]).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::buttons::{self, Offer, StateLine};
use crate::alert::{Alert, Level};
use crate::config::ActionKind;
use crate::counts::{IssueStats, thousands};
use crate::issue::{IssueState, Status};
use crate::plan::FollowUpReason;
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
/// escaped, `<!channel>`, `<@U123>` and `<http://evil|click>` are shown as text. For Sluice's
/// own text, which may use mrkdwn formatting on purpose; text that comes from Sentry goes
/// through [`sentry_text`], which also neutralises formatting and invisible characters.
pub fn escape(text: &str) -> String {
    escape_truncated(text, usize::MAX)
}

/// [`escape`], then cut to at most `max_chars` characters (ending in `…` when cut) without
/// splitting an escape sequence.
pub fn escape_truncated(text: &str, max_chars: usize) -> String {
    escape_in(text, max_chars)
}

/// Text from Sentry (titles, project slugs, comments…) for a mrkdwn field or the `text`
/// fallback: shown exactly as text, never applied. The characters that make text read as
/// something else ([`is_invisible`]) go; mrkdwn's formatting characters become look-alikes
/// that Slack gives no meaning: `*` → `∗`, `~` → `∼`, `` ` `` → `ˋ`, `_` → `ˍ` (except
/// between two letters or digits, where Slack never formats); and `&`, `<`, `>` are escaped
/// as by [`escape`].
pub fn sentry_text(text: &str) -> String {
    sentry_text_truncated(text, usize::MAX)
}

/// [`sentry_text`], cut to at most `max_chars` characters (ending in `…` when cut) without
/// splitting an escape sequence.
pub fn sentry_text_truncated(text: &str, max_chars: usize) -> String {
    escape_in(&neutralise(text, Field::Mrkdwn), max_chars)
}

/// [`sentry_text`] for text shown inside an inline code span (`` `…` ``), where Slack applies no
/// formatting: only backticks (which would end the span) are swapped for a look-alike, so
/// `handle_request` keeps its underscores.
pub fn escape_code(text: &str) -> String {
    escape_in(&neutralise(text, Field::Code), usize::MAX)
}

/// Sentry text for a `plain_text` object (headers, button labels): Slack shows it as it is,
/// so only the characters that make text read as something else ([`is_invisible`]) go, and
/// angle brackets become look-alikes (`‹ ›`) so that no client can ever read `<!channel>`.
pub fn plain(text: &str) -> String {
    neutralise(text, Field::Plain)
        .chars()
        .map(|c| match c {
            '<' => '‹',
            '>' => '›',
            c => c,
        })
        .collect()
}

/// Where a piece of Sentry text is shown, which decides what must be neutralised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A mrkdwn field or the `text` fallback: formatting characters apply.
    Mrkdwn,
    /// Inside an inline code span: only a backtick has a meaning.
    Code,
    /// A `plain_text` object: nothing has a meaning.
    Plain,
}

/// Whether `c` changes how text reads without being seen: the bidirectional controls
/// (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C: `rtl\u{202E}gnp.exe` displays as
/// `rtlexe.png`), zero-width and invisible characters (U+200B–U+200D, U+2060–U+2064, U+FEFF,
/// U+180E, the soft hyphen U+00AD), and control characters other than newline and tab.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{061C}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
            | '\u{180E}'
            | '\u{00AD}'
    ) || (c.is_control() && c != '\n' && c != '\t')
}

/// Removes the [`is_invisible`] characters and, for mrkdwn, swaps the formatting characters
/// for look-alikes that Slack gives no meaning (Slack has no escape for them, and anything
/// invisible inserted to break them up would be a spoofing tool itself): `*` → `∗` (U+2217),
/// `~` → `∼` (U+223C), `` ` `` → `ˋ` (U+02CB), and `_` → `ˍ` (U+02CD) except between two
/// letters or digits, where Slack never formats (so `user_id` stays searchable).
fn neutralise(text: &str, field: Field) -> String {
    let chars: Vec<char> = text.chars().filter(|&c| !is_invisible(c)).collect();
    let word = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|c| c.is_alphanumeric())
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match (field, c) {
            (Field::Plain, c) => c,
            (_, '`') => 'ˋ',
            (Field::Code, c) => c,
            (Field::Mrkdwn, '*') => '∗',
            (Field::Mrkdwn, '~') => '∼',
            (Field::Mrkdwn, '_') if !(word(i.checked_sub(1)) && word(Some(i + 1))) => 'ˍ',
            (_, c) => c,
        })
        .collect()
}

/// Escapes `&`, `<`, `>` in already neutralised text and cuts it to `max_chars`.
fn escape_in(text: &str, max_chars: usize) -> String {
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

/// `url` if it is an http(s) URL Slack can link safely (a lowercase scheme, as the parser
/// writes it; no whitespace, `<`, `>` or `|`, which would break out of a `<url|label>` link),
/// else `None`.
pub fn safe_link(url: &str) -> Option<&str> {
    let http = url.starts_with("https://") || url.starts_with("http://");
    let clean = !url
        .chars()
        .any(|c| c.is_whitespace() || is_invisible(c) || matches!(c, '<' | '>' | '|'));
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

/// The header's level word (`ERROR`), or none for a Resolved notice or a resolved issue: the
/// level of an issue that was fixed (often `FATAL`) is not news, and shouting it reads like an
/// alarm.
fn level_word(alert: &Alert, resolved: bool) -> Option<String> {
    let notice = alert.resource == "issue" && alert.action == "resolved";
    (!notice && !resolved).then(|| alert.level.as_str().to_ascii_uppercase())
}

/// The emoji before the header: the level's, or a check mark once resolved.
fn header_emoji(alert: &Alert, level: Option<&String>) -> &'static str {
    match level {
        Some(_) => level_emoji(alert.level),
        None => ":white_check_mark:",
    }
}

/// What the message is about: the notice's prefix (or `prefix`, when given) and the title. A
/// comment's payload names its issue only by id, so the issue's title comes from the store
/// (when it holds one that is not itself the title of a comment on the issue).
fn headline(alert: &Alert, stats: &IssueStats, prefix: Option<&str>) -> String {
    let title = match prefix.or(notice_prefix(alert)) {
        Some(prefix) => format!("{prefix}: {}", alert.title),
        None => alert.title.clone(),
    };
    let comment_title = format!(" on issue {}", alert.issue_key);
    match stats.title.as_deref() {
        Some(issue) if alert.resource == "comment" && !issue.contains(&comment_title) => {
            format!("{title}: {issue}")
        }
        _ => title,
    }
}

/// The counts line: `7d: 412 · 30d: 1,204` with the sparkline, when the issue was first seen
/// and Sentry's lifetime count; `None` for metric alerts, which are not issues and have no
/// occurrences to count.
fn count_line(alert: &Alert, stats: &IssueStats) -> Option<String> {
    if alert.resource == "metric_alert" {
        return None;
    }
    let mut line = format!("`{}` {}", stats.summary(), stats.sparkline());
    // Sentry's `firstSeen` where it is known (the payload's, else the store's); Sluice's first
    // sight only when that is earlier (Sentry did not say, or a clock is off).
    let first = [
        alert.sentry_first_seen.map(|s| s.saturating_mul(1000)),
        stats.sentry_first_seen_ms,
        stats.first_seen_ms,
    ]
    .into_iter()
    .flatten()
    .min();
    if let Some(first) = first {
        line.push_str(&format!(" · first seen {}", format_time(first)));
    }
    if let Some(lifetime) = alert.sentry_count.or(stats.sentry_count) {
        line.push_str(&format!(" · Sentry lifetime: {}", thousands(lifetime)));
    }
    Some(line)
}

/// The link to the issue: the payload's (issue page, else event page), else the one the store
/// holds for the issue (Sentry sends some notices with none).
fn issue_link<'a>(alert: &'a Alert, stats: &'a IssueStats) -> Option<&'a str> {
    alert
        .issue_url
        .as_deref()
        .and_then(safe_link)
        .or_else(|| alert.event_url.as_deref().and_then(safe_link))
        .or_else(|| stats.issue_url.as_deref().and_then(safe_link))
}

/// An "Open in Sentry" button.
fn open_button(url: &str) -> Value {
    json!({
        "type": "actions",
        "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in Sentry"},
            "url": url
        }]
    })
}

/// How a message about an issue shows the issue's state and which buttons it carries: what
/// the channel and the store know when the message is built or updated.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The buttons allowed ([`Config::allowed_actions`](crate::config::Config::allowed_actions)
    /// of the route, in a Web API channel; empty elsewhere: no click could come back).
    pub actions: &'a [ActionKind],
    /// The issue's state as Sluice last learned it (`None`: nothing known, shown as open).
    pub state: Option<&'a IssueState>,
    /// The end of this channel's mute of the issue (Unix ms), if any; shown while it lasts.
    pub muted_until_ms: Option<i64>,
    /// Who set the mute, where known.
    pub muted_by: Option<&'a str>,
    /// Now (Unix ms): times of today show without their date, and an ended mute is not shown.
    pub now_ms: i64,
}

impl View<'static> {
    /// No buttons, no state, no mute: the message as Sluice posts it to an incoming webhook.
    pub fn plain(now_ms: i64) -> View<'static> {
        View {
            actions: &[],
            state: None,
            muted_until_ms: None,
            muted_by: None,
            now_ms,
        }
    }
}

/// Builds the message for one alert in one channel, with the issue's counts at send time:
/// [`render_issue`] without buttons or state.
pub fn render_alert(alert: &Alert, target: &Target, stats: &IssueStats) -> SlackMessage {
    render_issue(alert, target, stats, &View::plain(0))
}

/// Builds the message for one alert in one channel, with the issue's counts at send time and
/// what `view` says: the state line right under the header (and in the fallback text), and
/// the actions block, which replaces the lone `Open in Sentry` button when `view.actions`
/// allows any. A resolved issue's header shows a check mark instead of its level.
pub fn render_issue(
    alert: &Alert,
    target: &Target,
    stats: &IssueStats,
    view: &View,
) -> SlackMessage {
    render(alert, target, stats, view, &Extra::default())
}

/// The top-level message for a regression (`issue.unresolved` of a resolved issue), posted
/// in each channel that had the issue: `Regressed: …`, a link to the channel's `earlier`
/// message ([`permalink`]), the counts, and the buttons of `view`.
pub fn render_regression(
    alert: &Alert,
    target: &Target,
    stats: &IssueStats,
    view: &View,
    earlier: Option<&str>,
) -> SlackMessage {
    let extra = Extra {
        prefix: Some("Regressed"),
        earlier: earlier.and_then(safe_link),
    };
    render(alert, target, stats, view, &extra)
}

/// The link to a message in Slack: `https://slack.com/archives/{channel_id}/p{ts without the
/// dot}`, which Slack redirects to the message in its workspace.
pub fn permalink(channel_id: &str, ts: &str) -> String {
    format!(
        "https://slack.com/archives/{channel_id}/p{}",
        ts.replace('.', "")
    )
}

/// The body of an answer only the clicker sees (through the click's `response_url`), leaving
/// the message as it is. `text` is mrkdwn: text from Sentry in it must be escaped.
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "replace_original": false, "text": text})
}

/// What a regression adds to an issue's message.
#[derive(Default)]
struct Extra<'a> {
    /// A prefix for the headline instead of the notice's.
    prefix: Option<&'static str>,
    /// The permalink of the channel's earlier message about the issue (already checked).
    earlier: Option<&'a str>,
}

/// The message of [`render_issue`] and [`render_regression`].
fn render(
    alert: &Alert,
    target: &Target,
    stats: &IssueStats,
    view: &View,
    extra: &Extra,
) -> SlackMessage {
    let resolved = view
        .state
        .is_some_and(|s| matches!(s.status, Status::Resolved { .. }));
    let level = level_word(alert, resolved);
    let headline = headline(alert, stats, extra.prefix);
    let header = header_text(alert, level.as_ref(), &headline);
    let state_line = StateLine::new(view.state, view.muted_until_ms, view.muted_by, view.now_ms);
    let where_line = where_line(alert);
    let count_line = count_line(alert, stats);
    let link = issue_link(alert, stats);

    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": header, "emoji": true}
    })];
    blocks.extend(state_line.block());
    if let Some(mention) = &target.mention {
        blocks.push(section(mention));
    }
    let mut body = where_line.clone();
    if let Some(culprit) = &alert.culprit {
        body.push_str(&format!("\n`{}`", escape_code(culprit)));
    }
    blocks.push(section(&truncate(&body, MAX_SECTION_CHARS)));
    if let Some(detail) = &alert.detail {
        blocks.push(section(&sentry_text_truncated(detail, MAX_SECTION_CHARS)));
    }
    if let Some(earlier) = extra.earlier {
        blocks.push(section(&format!("Earlier: <{earlier}|previous message>")));
    }
    if let Some(line) = &count_line {
        blocks.push(section(&truncate(line, MAX_SECTION_CHARS)));
    }
    if let Some(context) = context_line(alert, target) {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    }
    let offer = Offer {
        issue_key: &alert.issue_key,
        actions: view.actions,
        state: view.state,
        muted_until_ms: view.muted_until_ms.filter(|&until| until > view.now_ms),
        has_release: alert.release.is_some(),
        open_url: link,
    };
    blocks.extend(buttons::actions_block(&offer).or_else(|| link.map(open_button)));
    blocks.truncate(MAX_BLOCKS);
    let mut head = String::new();
    if let Some(mention) = &target.mention {
        head.push_str(mention);
        head.push(' ');
    }
    if let Some(level) = &level {
        head.push_str(&format!("[{level}] "));
    }
    head.push_str(&sentry_text_truncated(&headline, 500));
    if !state_line.is_empty() {
        head.push_str(&format!(" — {}", state_line.text()));
    }
    head.push_str(&format!(" — {where_line}"));
    let counts = count_line.map(|_| format!("{} {}", stats.summary(), stats.sparkline()));
    SlackMessage {
        text: fallback(&head, &fallback_tail(counts, extra.earlier, link)),
        blocks,
    }
}

/// The end of an issue message's fallback text, which is never cut: ` — 7d: 412 · 30d: 1,204
/// ▁▂ — Earlier: <…|previous message> — <…|Open in Sentry>`, each part where there is one.
fn fallback_tail(counts: Option<String>, earlier: Option<&str>, link: Option<&str>) -> String {
    let mut tail = String::new();
    if let Some(counts) = counts {
        tail.push_str(&format!(" — {counts}"));
    }
    if let Some(earlier) = earlier {
        tail.push_str(&format!(" — Earlier: <{earlier}|previous message>"));
    }
    if let Some(url) = link {
        tail.push_str(&format!(" — <{url}|Open in Sentry>"));
    }
    tail
}

/// The header's text: emoji, level word (if any) and headline, cut to Slack's limit.
fn header_text(alert: &Alert, level: Option<&String>, headline: &str) -> String {
    let emoji = header_emoji(alert, level);
    let parts = [
        Some(emoji),
        level.map(String::as_str),
        Some(&plain(headline)),
    ];
    truncate(
        &parts.into_iter().flatten().collect::<Vec<_>>().join(" "),
        MAX_HEADER_CHARS,
    )
}

/// Where the error happened: `*project* · environment · release 1.2`.
fn where_line(alert: &Alert) -> String {
    let mut where_parts = vec![format!("*{}*", sentry_text(alert.project()))];
    if let Some(env) = &alert.environment {
        where_parts.push(sentry_text(env));
    }
    if let Some(release) = &alert.release {
        where_parts.push(format!("release {}", sentry_text(release)));
    }
    where_parts.join(" · ")
}

/// The fallback text: `head` cut (ending in `…`) to leave room for `tail`, so that at most
/// [`MAX_FALLBACK_CHARS`] are sent and the tail (the counts and the link) is never cut: a cut
/// link shows as raw `<https://…` and the fallback promises the counts.
fn fallback(head: &str, tail: &str) -> String {
    let room = MAX_FALLBACK_CHARS.saturating_sub(tail.chars().count());
    let mut text = truncate(head, room);
    text.push_str(tail);
    truncate(&text, MAX_FALLBACK_CHARS)
}

/// The context line: short id, alert rule, route.
fn context_line(alert: &Alert, target: &Target) -> Option<String> {
    let mut context = Vec::new();
    if let Some(short_id) = &alert.short_id {
        context.push(sentry_text(short_id));
    }
    if let Some(rule) = &alert.rule {
        context.push(format!("rule: {}", sentry_text(rule)));
    }
    if let Some(route) = &target.route {
        context.push(format!("route: {}", escape(route)));
    }
    (!context.is_empty()).then(|| truncate(&context.join(" · "), MAX_SECTION_CHARS))
}

/// `14:02` when `since_ms` is on the UTC day of `now_ms`, else `2026-11-21 14:02`; UTC.
pub(crate) fn short_time(since_ms: i64, now_ms: i64) -> String {
    let fmt = if crate::counts::day_of(since_ms) == crate::counts::day_of(now_ms) {
        "%H:%M"
    } else {
        "%Y-%m-%d %H:%M"
    };
    jiff::Timestamp::from_millisecond(since_ms)
        .map(|t| t.strftime(fmt).to_string())
        .unwrap_or_default()
}

/// A follow-up, without the route's mention (the original message already paged), saying
/// first why it goes out (times UTC):
/// - the end of a cooldown: `+37 since 14:02 · 7d: 412 · 30d: 1,204`;
/// - a spike ([`FollowUpReason::Spike`]): `Spike: 100 events in the cooldown · +37 since
///   14:02 · 7d: …`;
/// - the end of a mute: `Mute ended: held back 37 since 14:02 · 7d: …`.
pub fn render_followup(
    alert: &Alert,
    folded: u64,
    since_ms: i64,
    now_ms: i64,
    stats: &IssueStats,
    reason: FollowUpReason,
) -> SlackMessage {
    let since = format!(
        "since {} · {} {}",
        short_time(since_ms, now_ms),
        stats.summary(),
        stats.sparkline()
    );
    let folded = thousands(folded);
    let (emoji, headline) = match reason {
        FollowUpReason::CooldownEnded => (None, format!("+{folded} {since}")),
        FollowUpReason::Spike { threshold } => (
            Some(":chart_with_upwards_trend:"),
            format!(
                "Spike: {} events in the cooldown · +{folded} {since}",
                thousands(threshold)
            ),
        ),
        FollowUpReason::MuteEnded => (
            Some(":loud_sound:"),
            format!("Mute ended: held back {folded} {since}"),
        ),
    };
    let what = format!(
        "[{}] {} — {}{}",
        alert.level.as_str().to_ascii_uppercase(),
        sentry_text_truncated(&alert.title, 500),
        sentry_text(alert.project()),
        alert
            .environment
            .as_deref()
            .map(|e| format!(" · {}", sentry_text(e)))
            .unwrap_or_default()
    );
    let lead = match emoji {
        Some(emoji) => format!("{emoji} *{headline}*"),
        None => format!("*{headline}*"),
    };
    let mut blocks = vec![
        section(&lead),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&what, MAX_SECTION_CHARS)}]}),
    ];
    let link = issue_link(alert, stats);
    if let Some(url) = link {
        blocks.push(open_button(url));
    }
    let tail = link
        .map(|url| format!(" — <{url}|Open in Sentry>"))
        .unwrap_or_default();
    SlackMessage {
        text: fallback(&format!("{headline} — {what}"), &tail),
        blocks,
    }
}

/// Issues listed by name in a roll-up; the rest are counted in "+N more".
pub const ROLLUP_LISTED: usize = 10;

/// The summary of a rolled-up backlog: `23 issues, 1,402 events in the last 4 minutes`, the
/// top issues, `+N more`.
pub fn render_rollup(rollup: &crate::plan::RollUp, now_ms: i64) -> SlackMessage {
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
    // Whole lines only, so that no link is cut in half (Slack would show its raw `<https://…`);
    // a line too long for what room is left loses its link and is cut, and the rest are
    // counted in "+N more". The room left over is for the headline and that line, so the
    // fallback text holds the whole list too.
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for issue in rollup.issues.iter().take(ROLLUP_LISTED) {
        let room = (MAX_SECTION_CHARS - ROLLUP_ROOM).saturating_sub(used);
        if room < 40 {
            break;
        }
        let mut line = rollup_line(issue, true);
        if line.chars().count() >= room {
            line = truncate(&rollup_line(issue, false), room - 1);
        }
        used += line.chars().count() + 1;
        lines.push(line);
    }
    if n > lines.len() {
        lines.push(format!("+{} more", thousands((n - lines.len()) as u64)));
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

/// Characters of a roll-up's section kept free of listed issues: room for the `+N more` line
/// in the section, and for the headline in the fallback text.
const ROLLUP_ROOM: usize = 200;

/// One issue of a roll-up: `• *7* × [ERROR] <url|title> — project · env`; the title is
/// linked when `linked` and the link is safe.
fn rollup_line(issue: &crate::plan::RolledIssue, linked: bool) -> String {
    let title = sentry_text_truncated(&issue.title, 150);
    let title = match issue.issue_url.as_deref().and_then(safe_link) {
        Some(url) if linked => format!("<{url}|{title}>"),
        _ => title,
    };
    format!(
        "• *{}* × [{}] {} — {}{}",
        thousands(issue.occurrences),
        issue.level.as_str().to_ascii_uppercase(),
        title,
        sentry_text(&issue.project),
        issue
            .environment
            .as_deref()
            .map(|e| format!(" · {}", sentry_text(e)))
            .unwrap_or_default()
    )
}

fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}})
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Slack's limits on what it accepts, checked on a built message: at most [`MAX_BLOCKS`]
    /// blocks, [`MAX_HEADER_CHARS`] in a header, [`MAX_SECTION_CHARS`] in a section or a context
    /// element, 75 in a button label, 3,000 in a button URL, 255 in a `block_id` or an
    /// `action_id`, 25 elements in an actions block, 100 options in a menu with labels of 75
    /// and values of 150 (Slack refuses the whole message otherwise), and Sluice's own
    /// [`MAX_FALLBACK_CHARS`] for the fallback text.
    pub(crate) fn assert_within_slack_limits(msg: &SlackMessage) {
        let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
        assert!(
            msg.blocks.len() <= MAX_BLOCKS,
            "{} blocks",
            msg.blocks.len()
        );
        assert!(
            msg.text.chars().count() <= MAX_FALLBACK_CHARS,
            "fallback of {} chars",
            msg.text.chars().count()
        );
        for block in &msg.blocks {
            let limit = match block["type"].as_str() {
                Some("header") => MAX_HEADER_CHARS,
                _ => MAX_SECTION_CHARS,
            };
            let text = chars(&block["text"]["text"]);
            assert!(text <= limit, "{} block of {text} chars", block["type"]);
            assert!(chars(&block["block_id"]) <= 255, "block_id too long");
            let elements = block["elements"]
                .as_array()
                .map_or(&[][..], |e| e.as_slice());
            if block["type"] == "actions" {
                assert!(elements.len() <= 25, "{} elements", elements.len());
            }
            for element in elements {
                let (text, limit) = match element["type"].as_str() {
                    Some("button") => (chars(&element["text"]["text"]), 75),
                    Some("static_select") => (chars(&element["placeholder"]["text"]), 150),
                    _ => (chars(&element["text"]), MAX_SECTION_CHARS),
                };
                assert!(text <= limit, "{} element of {text} chars", element["type"]);
                assert!(chars(&element["url"]) <= 3000, "URL too long");
                assert!(chars(&element["action_id"]) <= 255, "action_id too long");
                assert!(chars(&element["value"]) <= 2000, "value too long");
                let options = element["options"]
                    .as_array()
                    .map_or(&[][..], |o| o.as_slice());
                assert!(options.len() <= 100, "{} options", options.len());
                for option in options {
                    assert!(
                        chars(&option["text"]["text"]) <= 75,
                        "option label too long"
                    );
                    assert!(chars(&option["value"]) <= 150, "option value too long");
                }
            }
        }
    }

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
            state: None,
        }
    }

    fn target(mention: Option<&str>) -> Target {
        Target {
            channel: "checkout-prod".into(),
            route: Some("checkout production".into()),
            mention: mention.map(str::to_string),
            cooldown_secs: 1800,
            digest: true,
            actions: None,
            comments: false,
            breakthrough: vec![10, 100, 1000],
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
            ..Default::default()
        }
    }

    /// A fixture parsed, with `edit` applied to its JSON first.
    fn fixture_alert(name: &str, edit: impl FnOnce(&mut Value)) -> Alert {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentry/");
        let mut json: Value =
            serde_json::from_slice(&std::fs::read(format!("{path}{name}.json")).unwrap()).unwrap();
        edit(&mut json);
        let body = serde_json::to_vec(&json).unwrap();
        let resource = name.split('.').next().unwrap();
        match crate::sentry::parse(resource, &body, &Default::default()).unwrap() {
            crate::sentry::Parsed::Alert(alert) => *alert,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// Every string in a message: text, block texts, button URLs.
    fn all_text(msg: &SlackMessage) -> String {
        serde_json::to_string(msg).unwrap()
    }

    /// Sentry sends `issue.*` notices that nobody triggered with `permalink: null` (and older
    /// ones without `web_url`): the link is built from the payload's other URLs.
    #[test]
    fn an_issue_notice_without_a_permalink_links_the_issue() {
        let alert = fixture_alert("issue.created", |v| {
            v["action"] = json!("resolved");
            let issue = v["data"]["issue"].as_object_mut().unwrap();
            issue.remove("web_url");
            issue.insert("permalink".into(), Value::Null);
        });
        let msg = render_alert(&alert, &target(None), &stats());
        let url = "https://sentry.io/organizations/example-org/issues/1234567890/";
        assert!(
            msg.text.ends_with(&format!("<{url}|Open in Sentry>")),
            "{}",
            msg.text
        );
        assert_eq!(msg.blocks.last().unwrap()["elements"][0]["url"], url);
        insta::assert_json_snapshot!("issue_resolved_without_permalink", msg);
    }

    /// A notice whose payload has no URL at all (the 2019 payload, comments) links the issue
    /// page the store holds.
    #[test]
    fn a_notice_without_any_url_links_what_the_store_knows() {
        let stored = "https://sentry.io/organizations/acme/issues/1170820242/";
        let with_url = IssueStats {
            issue_url: Some(stored.into()),
            ..stats()
        };
        for name in ["issue.created.2019-docs", "comment.created"] {
            let alert = fixture_alert(name, |v| v["action"] = json!("created"));
            assert_eq!(alert.issue_url, None, "{name}");
            let without = render_alert(&alert, &target(None), &stats());
            assert!(!all_text(&without).contains("Open in Sentry"), "{name}");
            let msg = render_alert(&alert, &target(None), &with_url);
            assert!(
                msg.text.contains(&format!("<{stored}|Open in Sentry>")),
                "{name}: {}",
                msg.text
            );
            assert_eq!(msg.blocks.last().unwrap()["elements"][0]["url"], stored);
            let followup = render_followup(&alert, 3, 0, 0, &with_url, COOLDOWN);
            assert!(followup.text.contains(stored), "{}", followup.text);
        }
    }

    /// A comment's payload names its issue by id only; the message names it by title.
    #[test]
    fn a_comment_names_its_issue() {
        let alert = fixture_alert("comment.created", |_| {});
        let known = IssueStats {
            title: Some("ReferenceError: heck is not defined".into()),
            ..stats()
        };
        let msg = render_alert(&alert, &target(None), &known);
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(
            header
                .ends_with("Comment on issue 100 by colleen: ReferenceError: heck is not defined"),
            "{header}"
        );
        assert!(msg.text.contains("ReferenceError: heck"), "{}", msg.text);
        insta::assert_json_snapshot!("comment_on_a_known_issue", msg);
        // A store whose title is this comment's own adds nothing.
        let own = IssueStats {
            title: Some("Comment on issue 100 by colleen".into()),
            ..stats()
        };
        let msg = render_alert(&alert, &target(None), &own);
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(
            header.ends_with("Comment on issue 100 by colleen"),
            "{header}"
        );
    }

    /// "first seen" is Sentry's `firstSeen` where Sentry sent one, not when Sluice first saw
    /// the issue (for a notice, the moment the notice arrived).
    #[test]
    fn first_seen_is_sentrys() {
        // firstSeen 2025-11-10T20:56; Sluice first saw it on 2025-11-13.
        let alert = fixture_alert("issue.created", |v| v["action"] = json!("assigned"));
        let msg = render_alert(&alert, &target(None), &stats());
        let all = all_text(&msg);
        assert!(all.contains("first seen 2025-11-10 20:56 UTC"), "{all}");
        // Known to the store only (a comment on the issue).
        let alert = fixture_alert("comment.created", |_| {});
        let known = IssueStats {
            sentry_first_seen_ms: Some(1_700_000_000_000),
            ..stats()
        };
        let all = all_text(&render_alert(&alert, &target(None), &known));
        assert!(all.contains("first seen 2023-11-14 22:13 UTC"), "{all}");
    }

    /// The issue's level is not news once it is resolved: no `FATAL` on a Resolved notice.
    #[test]
    fn a_resolved_notice_has_no_level() {
        let alert = fixture_alert("issue.created", |v| v["action"] = json!("resolved"));
        assert_eq!(alert.level, Level::Fatal);
        let msg = render_alert(&alert, &target(None), &stats());
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(
            header.starts_with(":white_check_mark: Resolved: Error generated"),
            "{header}"
        );
        assert!(!all_text(&msg).contains("FATAL"), "{}", all_text(&msg));
        assert!(msg.text.starts_with("Resolved: "), "{}", msg.text);
        // Other notices keep it.
        let alert = fixture_alert("issue.created", |v| v["action"] = json!("assigned"));
        let msg = render_alert(&alert, &target(None), &stats());
        assert!(msg.text.starts_with("[FATAL] Assigned: "), "{}", msg.text);
    }

    /// A metric alert is no issue with occurrences: no `7d: 0 · 30d: 0` on it.
    #[test]
    fn a_metric_alert_shows_no_counts() {
        let alert = fixture_alert("metric_alert.resolved", |_| {});
        let msg = render_alert(&alert, &target(None), &IssueStats::default());
        let all = all_text(&msg);
        for counts in ["7d:", "30d:", "▁"] {
            assert!(!all.contains(counts), "{counts} in {all}");
        }
        assert!(msg.text.contains("Too many errors"), "{}", msg.text);
    }

    /// mrkdwn formatting characters from Sentry are shown, not applied.
    #[test]
    fn sentry_text_cannot_format_the_message() {
        let mut alert = sample_alert();
        alert.title = "*bold* _italic_ ~strike~ `code` KeyError: 'user_id'".into();
        alert.projects = vec!["*evil*".into()];
        alert.environment = Some("_prod_".into());
        alert.culprit = Some("app.`handle_request`".into());
        let msg = render_alert(&alert, &target(None), &stats());
        assert!(
            msg.text.contains(
                "∗bold∗ ˍitalicˍ ∼strike∼ ˋcodeˋ KeyError: 'user_id' — *∗evil∗* · ˍprodˍ"
            ),
            "{}",
            msg.text
        );
        let body = msg.blocks[1]["text"]["text"].as_str().unwrap();
        assert_eq!(
            body,
            "*∗evil∗* · ˍprodˍ · release web@1.4.2\n`app.ˋhandle_requestˋ`"
        );
        // The plain-text header shows the title as it is.
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.ends_with("*bold* _italic_ ~strike~ `code` KeyError: 'user_id'"));
    }

    /// Bidirectional controls and zero-width characters never reach Slack: an error title
    /// cannot display as something else (`invoice\u{202E}gnp.exe` as `invoiceexe.png`).
    #[test]
    fn sentry_text_cannot_hide_or_reorder_characters() {
        let mut alert = sample_alert();
        alert.title = "invoice\u{202E}gnp.exe\u{200B} \u{2066}x\u{2069}\u{FEFF}\u{200F}".into();
        alert.projects = vec!["front\u{200D}end\u{061C}".into()];
        alert.detail = Some("a\u{2060}b\u{200E}".into());
        alert.culprit = Some("f\u{202D}n".into());
        let msg = render_alert(&alert, &target(None), &stats());
        let all = all_text(&msg);
        assert!(!all.chars().any(is_invisible), "{all:?}");
        assert!(
            msg.text.contains("invoicegnp.exe x — *frontend*"),
            "{}",
            msg.text
        );
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.ends_with("invoicegnp.exe x"), "{header:?}");
        let rollup = render_followup(&alert, 2, 0, 0, &stats(), COOLDOWN);
        assert!(!all_text(&rollup).chars().any(is_invisible));
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
        assert_within_slack_limits(&msg);
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.ends_with('…'));
        assert!(msg.text.contains("7d: 412 · 30d: 1,112"));
    }

    /// The message every real fixture produces, pinned.
    #[test]
    fn every_fixture_renders_as_pinned() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentry/");
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
            // A metric alert is not an issue with occurrences: it shows no counts.
            assert_eq!(
                msg.text.contains("7d: 412 · 30d: 1,112"),
                alert.resource != "metric_alert",
                "{name}: {}",
                msg.text
            );
            insta::assert_json_snapshot!(format!("fixture_{name}"), msg);
        }
    }

    /// 14:02 UTC on the day the follow-up is sent, and an hour after it.
    const SINCE_MS: i64 = 1_763_820_120_000;
    const NOW_MS: i64 = SINCE_MS + 3_600_000;

    /// The follow-up after a cooldown, as Slack receives it: the count since the first
    /// folded occurrence (its time alone on the same UTC day, with the date on another), the
    /// counts, and the link, without the route's mention.
    #[test]
    fn the_followup_is_pinned() {
        let alert = sample_alert();
        let msg = render_followup(&alert, 1_337, SINCE_MS, NOW_MS, &stats(), COOLDOWN);
        assert!(
            msg.text
                .starts_with("+1,337 since 14:02 · 7d: 412 · 30d: 1,112"),
            "{}",
            msg.text
        );
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("followup_message", msg);
        let msg = render_followup(&alert, 2, SINCE_MS - 86_400_000, NOW_MS, &stats(), COOLDOWN);
        assert!(
            msg.text.starts_with("+2 since 2025-11-21 14:02 · "),
            "{}",
            msg.text
        );
    }

    /// An issue of a roll-up.
    fn rolled(n: usize, url: Option<String>) -> crate::plan::RolledIssue {
        crate::plan::RolledIssue {
            issue_key: format!("{}", 1_117_540_176 + n),
            title: format!("TypeError: item {n} is <undefined> & *broken*"),
            project: if n.is_multiple_of(2) {
                "front-end"
            } else {
                "checkout"
            }
            .into(),
            environment: (!n.is_multiple_of(3)).then(|| "production".into()),
            level: if n == 0 { Level::Fatal } else { Level::Error },
            occurrences: 120 - 10 * n as u64,
            messages: 4,
            issue_url: url,
        }
    }

    /// A roll-up, as Slack receives it: the headline, the mentions the folded messages would
    /// have carried, the ten busiest issues (linked) and `+N more`.
    #[test]
    fn the_rollup_is_pinned() {
        let issues: Vec<_> = (0..12)
            .map(|n| {
                let url = format!(
                    "https://sentry.io/organizations/acme/issues/{}/",
                    1_117_540_176 + n
                );
                rolled(n, (n != 1).then_some(url))
            })
            .collect();
        let rollup = crate::plan::RollUp {
            issues,
            messages: 31,
            occurrences: 780,
            since_ms: NOW_MS - 4 * 60_000,
            mentions: vec!["<!subteam^S0123>".into()],
        };
        let msg = render_rollup(&rollup, NOW_MS);
        assert!(
            msg.text
                .starts_with("<!subteam^S0123> 12 issues, 780 events in the last 4 minutes"),
            "{}",
            msg.text
        );
        assert!(msg.text.ends_with("\n+2 more"), "{}", msg.text);
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("rollup_message", msg);
    }

    /// Issues whose links are long fill a roll-up's section: it lists whole lines, never a
    /// link cut in half (which Slack shows as raw `<https://…`); the issues that no longer fit
    /// with their link are listed without it, and those that do not fit at all are counted.
    #[test]
    fn a_rollup_never_cuts_a_link() {
        let long = format!(
            "https://sentry.io/organizations/acme/issues/{}/",
            "9".repeat(1_900)
        );
        let issues: Vec<_> = (0..10).map(|n| rolled(n, Some(long.clone()))).collect();
        let rollup = crate::plan::RollUp {
            issues,
            messages: 10,
            occurrences: 75,
            since_ms: NOW_MS - 60_000,
            mentions: Vec::new(),
        };
        let msg = render_rollup(&rollup, NOW_MS);
        assert_within_slack_limits(&msg);
        let list = msg.blocks[1]["text"]["text"].as_str().unwrap();
        for text in [list, msg.text.as_str()] {
            assert_eq!(text.matches('<').count(), 1, "one whole link: {text}");
            assert!(text.contains(&format!("<{long}|TypeError: item 0 is")));
            let listed = (0..10)
                .filter(|n| text.contains(&format!("item {n} is &lt;undefined&gt;")))
                .count();
            assert!(listed > 1, "{text}");
            assert!(
                text.ends_with(&format!("\n+{} more", 10 - listed)),
                "{text}"
            );
        }
    }

    /// A fallback text too long for Slack is cut before its counts and its link, which always
    /// arrive whole: a project name of 2,000 `&` (10,000 chars once escaped) cut both before.
    #[test]
    fn a_long_fallback_keeps_its_counts_and_link() {
        let mut alert = sample_alert();
        alert.projects = vec!["&".repeat(2_000)];
        let url = "https://sentry.io/organizations/test-org/issues/1117540176/";
        let msg = render_alert(&alert, &target(None), &stats());
        assert_within_slack_limits(&msg);
        assert!(
            msg.text.ends_with(&format!(
                "… — 7d: 412 · 30d: 1,112 {} — <{url}|Open in Sentry>",
                stats().sparkline()
            )),
            "{}",
            msg.text
        );
        let msg = render_followup(&alert, 3, SINCE_MS, NOW_MS, &stats(), COOLDOWN);
        assert_within_slack_limits(&msg);
        assert!(
            msg.text.ends_with(&format!("… — <{url}|Open in Sentry>")),
            "{}",
            msg.text
        );
    }

    /// The reason of a follow-up at the end of a cooldown.
    const COOLDOWN: FollowUpReason = FollowUpReason::CooldownEnded;

    /// Everything of a Web API channel: every button.
    const ALL: [ActionKind; 4] = ActionKind::ALL;

    /// A view at [`NOW_MS`] with every button.
    fn two_way(state: Option<&IssueState>) -> View<'_> {
        View {
            actions: &ALL,
            state,
            muted_until_ms: None,
            muted_by: None,
            now_ms: NOW_MS,
        }
    }

    /// The `action_id`s of a message's actions block.
    fn action_ids(msg: &SlackMessage) -> Vec<String> {
        let actions = msg
            .blocks
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("an actions block");
        actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action_id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// A plain view renders exactly today's message, whatever state the alert carries.
    #[test]
    fn a_plain_view_is_the_message_as_before() {
        let mut alert = fixture_alert("issue.created", |v| v["action"] = json!("resolved"));
        alert.state = Some(IssueState {
            status: Status::Resolved {
                in_next_release: false,
            },
            ..IssueState::default()
        });
        let plain = render_issue(&alert, &target(None), &stats(), &View::plain(NOW_MS));
        assert_eq!(plain, render_alert(&alert, &target(None), &stats()));
        let sample = sample_alert();
        let msg = render_issue(&sample, &target(None), &stats(), &View::plain(NOW_MS));
        assert_eq!(
            msg.blocks.last().unwrap()["elements"][0]["text"]["text"],
            "Open in Sentry"
        );
        assert!(msg.blocks.last().unwrap().get("block_id").is_none());
    }

    /// An open issue in a Web API channel: every button, and no state line.
    #[test]
    fn an_open_issue_with_every_button_is_pinned() {
        let msg = render_issue(&sample_alert(), &target(None), &stats(), &two_way(None));
        assert_eq!(
            action_ids(&msg),
            [
                "sluice:resolve",
                "sluice:resolve_next_release",
                "sluice:archive",
                "sluice:assign",
                "sluice:mute",
                "sluice:open"
            ]
        );
        assert!(
            !msg.blocks
                .iter()
                .any(|b| b["type"] == "actions" && b["elements"].as_array().unwrap().len() == 1)
        );
        // Text and everything above the buttons is the message without buttons.
        let plain = render_alert(&sample_alert(), &target(None), &stats());
        assert_eq!(msg.text, plain.text);
        assert_eq!(
            msg.blocks[..msg.blocks.len() - 1],
            plain.blocks[..plain.blocks.len() - 1]
        );
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("two_way_open_issue", msg);
    }

    /// Resolved by a person: a check mark instead of the level, the state line under the
    /// header and in the fallback, and `Unresolve`.
    #[test]
    fn a_resolved_issue_is_pinned() {
        let state = IssueState {
            status: Status::Resolved {
                in_next_release: false,
            },
            by: Some("Ada Lovelace".into()),
            at_ms: Some(SINCE_MS),
            assignee: None,
        };
        let msg = render_issue(
            &sample_alert(),
            &target(None),
            &stats(),
            &two_way(Some(&state)),
        );
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(
            header,
            ":white_check_mark: ReferenceError: heck is not defined"
        );
        assert_eq!(
            msg.blocks[1]["elements"][0]["text"],
            ":white_check_mark: Resolved by Ada Lovelace · 14:02"
        );
        assert!(
            msg.text.starts_with(
                "ReferenceError: heck is not defined — Resolved by Ada Lovelace · 14:02 — *front-end*"
            ),
            "{}",
            msg.text
        );
        assert_eq!(
            action_ids(&msg),
            ["sluice:unresolve", "sluice:mute", "sluice:open"]
        );
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("two_way_resolved", msg);
    }

    #[test]
    fn an_archived_issue_is_pinned() {
        let state = IssueState {
            status: Status::Archived {
                archive: crate::issue::Archive::Escalating,
            },
            ..IssueState::default()
        };
        let msg = render_issue(
            &sample_alert(),
            &target(None),
            &stats(),
            &two_way(Some(&state)),
        );
        assert!(
            msg.text.starts_with(
                "[ERROR] ReferenceError: heck is not defined — Archived until escalating — "
            ),
            "{}",
            msg.text
        );
        assert_eq!(
            msg.blocks[1]["elements"][0]["text"],
            ":zzz: Archived until escalating"
        );
        assert_eq!(
            action_ids(&msg),
            ["sluice:unresolve", "sluice:mute", "sluice:open"]
        );
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("two_way_archived_until_escalating", msg);
    }

    /// Assigned (still open): the state line names the assignee; the buttons stay.
    #[test]
    fn an_assigned_issue_is_pinned() {
        let state = IssueState {
            assignee: Some("#team-checkout".into()),
            ..IssueState::default()
        };
        let msg = render_issue(
            &sample_alert(),
            &target(Some("<!subteam^S0123>")),
            &stats(),
            &two_way(Some(&state)),
        );
        assert_eq!(
            msg.blocks[1]["elements"][0]["text"],
            ":bust_in_silhouette: Assigned to #team-checkout"
        );
        assert!(
            msg.text
                .contains("heck is not defined — Assigned to #team-checkout — "),
            "{}",
            msg.text
        );
        assert_eq!(action_ids(&msg).len(), 6);
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("two_way_assigned", msg);
    }

    /// Muted here: the state line says until when and by whom, and `Unmute here` replaces the
    /// menu; once the mute has ended neither shows.
    #[test]
    fn a_muted_issue_is_pinned() {
        let view = View {
            muted_until_ms: Some(NOW_MS + 3_600_000),
            muted_by: Some("ada"),
            ..two_way(None)
        };
        let msg = render_issue(&sample_alert(), &target(None), &stats(), &view);
        assert_eq!(
            msg.blocks[1]["elements"][0]["text"],
            ":mute: Muted here until 16:02 by ada"
        );
        assert!(
            msg.text.contains(" — Muted here until 16:02 by ada — "),
            "{}",
            msg.text
        );
        assert!(action_ids(&msg).contains(&"sluice:unmute".to_string()));
        assert!(!action_ids(&msg).contains(&"sluice:mute".to_string()));
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("two_way_muted_here", msg);
        let ended = View {
            now_ms: NOW_MS + 3_600_000,
            ..view
        };
        let msg = render_issue(&sample_alert(), &target(None), &stats(), &ended);
        assert!(!all_text(&msg).contains("Muted"));
        assert!(action_ids(&msg).contains(&"sluice:mute".to_string()));
    }

    /// A spike gets through a cooldown marked as one.
    #[test]
    fn the_spike_followup_is_pinned() {
        let spike = FollowUpReason::Spike { threshold: 100 };
        let msg = render_followup(&sample_alert(), 37, SINCE_MS, NOW_MS, &stats(), spike);
        assert!(
            msg.text.starts_with(
                "Spike: 100 events in the cooldown · +37 since 14:02 · 7d: 412 · 30d: 1,112"
            ),
            "{}",
            msg.text
        );
        let lead = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(
            lead.starts_with(":chart_with_upwards_trend: *Spike: 100 events"),
            "{lead}"
        );
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("followup_spike", msg);
    }

    /// The end of a mute says how many occurrences it held back.
    #[test]
    fn the_mute_ended_followup_is_pinned() {
        let ended = FollowUpReason::MuteEnded;
        let msg = render_followup(&sample_alert(), 37, SINCE_MS, NOW_MS, &stats(), ended);
        assert!(
            msg.text
                .starts_with("Mute ended: held back 37 since 14:02 · 7d: 412 · 30d: 1,112"),
            "{}",
            msg.text
        );
        assert!(all_text(&msg).contains("*Mute ended: held back 37 since 14:02"));
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("followup_mute_ended", msg);
        // None held back is never sent, but renders.
        let msg = render_followup(&sample_alert(), 0, SINCE_MS, NOW_MS, &stats(), ended);
        assert!(
            msg.text.starts_with("Mute ended: held back 0 since"),
            "{}",
            msg.text
        );
    }

    /// A regression is a new message that links the channel's earlier one.
    #[test]
    fn the_regression_is_pinned() {
        let alert = fixture_alert("issue.created", |v| v["action"] = json!("unresolved"));
        let earlier = permalink("C0123456789", "1700000000.000100");
        assert_eq!(
            earlier,
            "https://slack.com/archives/C0123456789/p1700000000000100"
        );
        let state = IssueState::default();
        let msg = render_regression(
            &alert,
            &target(Some("<!subteam^S0123>")),
            &stats(),
            &two_way(Some(&state)),
            Some(&earlier),
        );
        let header = msg.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.starts_with(":boom: FATAL Regressed: "), "{header}");
        let earlier_section = format!("Earlier: <{earlier}|previous message>");
        assert!(
            msg.blocks
                .iter()
                .any(|b| b["text"]["text"] == earlier_section.as_str())
        );
        assert!(
            msg.text.contains(&format!(" — {earlier_section}")),
            "{}",
            msg.text
        );
        assert!(
            msg.text.starts_with("<!subteam^S0123> [FATAL] Regressed: "),
            "{}",
            msg.text
        );
        assert_eq!(action_ids(&msg)[0], "sluice:resolve");
        assert_within_slack_limits(&msg);
        insta::assert_json_snapshot!("regression", msg);
        // An event alert's regression says so too; an unsafe link is left out.
        let msg = render_regression(
            &sample_alert(),
            &target(None),
            &stats(),
            &View::plain(NOW_MS),
            Some("javascript:x"),
        );
        assert!(
            msg.text.starts_with("[ERROR] Regressed: ReferenceError"),
            "{}",
            msg.text
        );
        assert!(!all_text(&msg).contains("Earlier"));
    }

    /// Every message kind, with long text from Sentry in every field, stays within Slack's
    /// limits.
    #[test]
    fn every_two_way_message_is_within_slack_limits() {
        let mut alert = sample_alert();
        alert.title = "x".repeat(10_000);
        alert.detail = Some("<".repeat(10_000));
        alert.projects = vec!["&".repeat(2_000)];
        let long = "y".repeat(2_000);
        let states = [
            IssueState::default(),
            IssueState {
                status: Status::Resolved {
                    in_next_release: true,
                },
                by: Some(long.clone()),
                at_ms: Some(SINCE_MS),
                assignee: Some(long.clone()),
            },
            IssueState {
                status: Status::Archived {
                    archive: crate::issue::Archive::Count { count: 100 },
                },
                by: Some(long.clone()),
                ..IssueState::default()
            },
        ];
        let earlier = permalink("C0123456789", "1700000000.000100");
        for state in &states {
            let view = View {
                muted_until_ms: Some(NOW_MS + 1),
                muted_by: Some(&long),
                ..two_way(Some(state))
            };
            for msg in [
                render_issue(&alert, &target(Some("<!here>")), &stats(), &view),
                render_regression(&alert, &target(None), &stats(), &view, Some(&earlier)),
            ] {
                assert_within_slack_limits(&msg);
                assert!(msg.text.ends_with("|Open in Sentry>"), "{}", msg.text);
            }
        }
        for reason in [
            COOLDOWN,
            FollowUpReason::Spike {
                threshold: u64::MAX,
            },
            FollowUpReason::MuteEnded,
        ] {
            let msg = render_followup(&alert, u64::MAX, SINCE_MS, NOW_MS, &stats(), reason);
            assert_within_slack_limits(&msg);
        }
    }

    #[test]
    fn an_ephemeral_reply_leaves_the_message() {
        assert_eq!(
            ephemeral("Not a Sluice action"),
            json!({"response_type": "ephemeral", "replace_original": false, "text": "Not a Sluice action"})
        );
    }

    proptest! {
        #[test]
        fn escaping_never_leaves_a_raw_angle_bracket(s in ".{0,300}", max in 1usize..400) {
            let out = sentry_text_truncated(&s, max);
            prop_assert!(!out.contains('<') && !out.contains('>'));
            prop_assert!(!out.contains(['*', '~', '`']) && !out.chars().any(is_invisible));
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
