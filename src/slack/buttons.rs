//! The Block Kit of two-way messages — the actions block with Sluice's buttons and menus, and
//! the state line — and the way back: a click's `action_id`, value and `block_id` decoded into
//! the [`IssueAction`] on the issue it stands for. Both directions live here and nowhere else,
//! so that every element Sluice posts decodes to what it says.
//!
//! Encoding: the actions block's `block_id` is `sluice:` + issue key + `#` + 8 hex digits that
//! change with what the block shows. Slack asks for a new `block_id` on every version of an
//! updated message: its clients keep a select menu's choice per `block_id`, and would
//! otherwise show the last choice on the updated message. Each element's `action_id` is
//! `sluice:` + what it does; a menu's option values carry the choice (`minutes:60`, `3600`).

use serde_json::{Value, json};

use super::message::{MAX_SECTION_CHARS, sentry_text_truncated, short_time};
use crate::config::ActionKind;
use crate::issue::{Archive, IssueAction, IssueState, Status, is_sentry_issue};

/// The prefix of every Sluice `block_id` and `action_id`.
pub const PREFIX: &str = "sluice:";
/// `action_id` of the `Resolve` button.
pub const RESOLVE: &str = "sluice:resolve";
/// `action_id` of the `Resolve in next release` button.
pub const RESOLVE_NEXT_RELEASE: &str = "sluice:resolve_next_release";
/// `action_id` of the `Unresolve` button (on a resolved or archived issue).
pub const UNRESOLVE: &str = "sluice:unresolve";
/// `action_id` of the `Archive` menu; its option values are [`archive_value`]s.
pub const ARCHIVE: &str = "sluice:archive";
/// `action_id` of the `Assign to me` button.
pub const ASSIGN: &str = "sluice:assign";
/// `action_id` of the `Mute here` menu; its option values are seconds.
pub const MUTE: &str = "sluice:mute";
/// `action_id` of the `Unmute here` button (while the channel mutes the issue).
pub const UNMUTE: &str = "sluice:unmute";
/// `action_id` of the `Open in Sentry` link button (Slack reports its clicks too).
pub const OPEN: &str = "sluice:open";

/// Slack's limit on the characters of a `block_id`.
pub const MAX_BLOCK_ID_CHARS: usize = 255;
/// Slack's limit on the elements of an actions block.
pub const MAX_ACTIONS_ELEMENTS: usize = 25;

/// The choices of the `Archive` menu: label, and what it archives for.
pub const ARCHIVE_CHOICES: [(&str, Archive); 5] = [
    ("Until escalating", Archive::Escalating),
    ("For 1 hour", Archive::Minutes { minutes: 60 }),
    ("For 24 hours", Archive::Minutes { minutes: 1_440 }),
    ("For 7 days", Archive::Minutes { minutes: 10_080 }),
    ("Until 100 more events", Archive::Count { count: 100 }),
];

/// The choices of the `Mute here` menu: label, and seconds.
pub const MUTE_CHOICES: [(&str, u64); 3] =
    [("1 hour", 3_600), ("24 hours", 86_400), ("7 days", 604_800)];

/// The longest mute a click is taken for (90 days, in seconds); a longer value is not one
/// Sluice offered.
pub const MAX_MUTE_SECS: u64 = 90 * 86_400;

/// What a message's actions block offers, for one issue in one channel.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// The issue's key: Sentry's issue id, or Sluice's own (`fp:…`, `metric:…`), which gets
    /// no Sentry action.
    pub issue_key: &'a str,
    /// The actions the route and the configuration allow (in the order of
    /// [`ActionKind::ALL`]); empty: no actions block.
    pub actions: &'a [ActionKind],
    /// The issue's state, where known (`None`: open).
    pub state: Option<&'a IssueState>,
    /// The end of this channel's mute of the issue (Unix ms), while it lasts.
    pub muted_until_ms: Option<i64>,
    /// Whether the issue's project ships releases (the alert names one): only then can Sentry
    /// resolve it in the next release.
    pub has_release: bool,
    /// The issue's page in Sentry, for the `Open in Sentry` link button.
    pub open_url: Option<&'a str>,
}

/// What a click asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// An action on the issue.
    Action(IssueAction),
    /// The `Open in Sentry` link: Slack opened it; nothing to do.
    Open,
    /// Not an element Sluice posts (or a value it never offered).
    Unknown,
}

/// The actions block of `offer`: Sluice's buttons and menus, and the `Open in Sentry` link,
/// within Slack's limits. `None` when it would carry no action (nothing allowed, or an issue
/// key too long for a `block_id`): the caller then shows the lone link button, if any.
///
/// An open issue offers `Resolve` (and `Resolve in next release` where the project ships
/// releases), the `Archive` menu and `Assign to me`; a resolved or archived one offers
/// `Unresolve`. Sentry actions only for a Sentry issue id. `Mute here` (a menu) or, while
/// muted, `Unmute here` for any issue.
pub fn actions_block(offer: &Offer) -> Option<Value> {
    let block_id = block_id(offer)?;
    let mut elements = sentry_elements(offer);
    if offer.actions.contains(&ActionKind::Mute) {
        elements.push(match offer.muted_until_ms {
            Some(_) => button("Unmute here", UNMUTE, None),
            None => select(MUTE, "Mute here", mute_options()),
        });
    }
    if elements.is_empty() {
        return None;
    }
    if let Some(url) = offer.open_url {
        elements.push(json!({
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in Sentry"},
            "action_id": OPEN,
            "url": url
        }));
    }
    elements.truncate(MAX_ACTIONS_ELEMENTS);
    Some(json!({"type": "actions", "block_id": block_id, "elements": elements}))
}

/// The elements that act through Sentry's API, as the issue's state calls for.
fn sentry_elements(offer: &Offer) -> Vec<Value> {
    let allowed = |kind| offer.actions.contains(&kind) && is_sentry_issue(offer.issue_key);
    let status = offer.state.map(|s| s.status).unwrap_or_default();
    let mut elements = Vec::new();
    match status {
        Status::Unresolved => {
            if allowed(ActionKind::Resolve) {
                elements.push(button("Resolve", RESOLVE, Some("primary")));
                if offer.has_release {
                    elements.push(button(
                        "Resolve in next release",
                        RESOLVE_NEXT_RELEASE,
                        None,
                    ));
                }
            }
            if allowed(ActionKind::Archive) {
                elements.push(select(ARCHIVE, "Archive", archive_options()));
            }
            if allowed(ActionKind::Assign) {
                elements.push(button("Assign to me", ASSIGN, None));
            }
        }
        Status::Resolved { .. } if allowed(ActionKind::Resolve) => {
            elements.push(button("Unresolve", UNRESOLVE, None));
        }
        Status::Archived { .. } if allowed(ActionKind::Archive) => {
            elements.push(button("Unresolve", UNRESOLVE, None));
        }
        Status::Resolved { .. } | Status::Archived { .. } => {}
    }
    elements
}

/// `sluice:{key}#{tag}`, where the tag changes with what the block shows; `None` when the key
/// does not fit Slack's 255 characters.
fn block_id(offer: &Offer) -> Option<String> {
    let state = offer
        .state
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .unwrap_or_default();
    let shown = format!(
        "{state}|{:?}|{:?}|{}|{}",
        offer.muted_until_ms,
        offer.actions,
        offer.has_release,
        offer.open_url.unwrap_or_default()
    );
    // FNV-1a: stable across runs and builds, unlike the std hasher, so that snapshots hold.
    let tag = shown.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let id = format!("{PREFIX}{}#{tag:08x}", offer.issue_key);
    (!offer.issue_key.is_empty() && id.chars().count() <= MAX_BLOCK_ID_CHARS).then_some(id)
}

/// The issue key of a Sluice `block_id` (`sluice:1117540176#0a1b2c3d`, or without the tag);
/// `None` for a block Sluice did not build.
pub fn issue_key_of(block_id: &str) -> Option<&str> {
    let rest = block_id.strip_prefix(PREFIX)?;
    let key = match rest.rsplit_once('#') {
        Some((key, tag))
            if tag.len() == 8
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            key
        }
        _ => rest,
    };
    (!key.is_empty()).then_some(key)
}

/// What the element `action_id` (with its `value`: a menu's chosen option) stands for.
pub fn decode(action_id: &str, value: Option<&str>) -> Decoded {
    let action = match action_id {
        RESOLVE => IssueAction::Resolve,
        RESOLVE_NEXT_RELEASE => IssueAction::ResolveInNextRelease,
        UNRESOLVE => IssueAction::Unresolve,
        ASSIGN => IssueAction::AssignToMe,
        UNMUTE => IssueAction::Unmute,
        OPEN => return Decoded::Open,
        ARCHIVE => match value.and_then(parse_archive) {
            Some(archive) => IssueAction::Archive { archive },
            None => return Decoded::Unknown,
        },
        MUTE => match value.and_then(|v| v.parse::<u64>().ok()) {
            Some(secs @ 1..=MAX_MUTE_SECS) => IssueAction::Mute { secs },
            _ => return Decoded::Unknown,
        },
        _ => return Decoded::Unknown,
    };
    Decoded::Action(action)
}

/// The option value of an `Archive` menu choice: `escalating`, `minutes:60`, `count:100`,
/// `forever`; `None` for a moment (`UntilTime`), which the menu does not offer.
pub fn archive_value(archive: Archive) -> Option<String> {
    match archive {
        Archive::Escalating => Some("escalating".into()),
        Archive::Minutes { minutes } => Some(format!("minutes:{minutes}")),
        Archive::Count { count } => Some(format!("count:{count}")),
        Archive::Forever => Some("forever".into()),
        Archive::UntilTime { .. } => None,
    }
}

/// The inverse of [`archive_value`]; zero minutes or events is no archive.
fn parse_archive(value: &str) -> Option<Archive> {
    let positive = |n: &str| n.parse::<u64>().ok().filter(|&n| n > 0);
    match value.split_once(':') {
        None if value == "escalating" => Some(Archive::Escalating),
        None if value == "forever" => Some(Archive::Forever),
        Some(("minutes", n)) => positive(n).map(|minutes| Archive::Minutes { minutes }),
        Some(("count", n)) => positive(n).map(|count| Archive::Count { count }),
        _ => None,
    }
}

fn button(text: &str, action_id: &str, style: Option<&str>) -> Value {
    let mut button = json!({
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id
    });
    if let Some(style) = style {
        button["style"] = style.into();
    }
    button
}

fn select(action_id: &str, placeholder: &str, options: Vec<Value>) -> Value {
    json!({
        "type": "static_select",
        "action_id": action_id,
        "placeholder": {"type": "plain_text", "text": placeholder},
        "options": options
    })
}

fn option(text: &str, value: String) -> Value {
    json!({"text": {"type": "plain_text", "text": text}, "value": value})
}

fn archive_options() -> Vec<Value> {
    ARCHIVE_CHOICES
        .iter()
        .filter_map(|&(label, archive)| archive_value(archive).map(|v| option(label, v)))
        .collect()
}

fn mute_options() -> Vec<Value> {
    MUTE_CHOICES
        .iter()
        .map(|&(label, secs)| option(label, secs.to_string()))
        .collect()
}

/// The state line of a message: the issue's state (`:white_check_mark: Resolved by Ada
/// Lovelace · 14:02`) and this channel's mute (`:mute: Muted here until 15:02 by ada`), each
/// escaped; nothing for an open, unassigned, unmuted issue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateLine {
    /// `(emoji, mrkdwn text)`, in order.
    parts: Vec<(&'static str, String)>,
}

impl StateLine {
    /// The line for `state` and a mute of the issue in this channel until `muted_until_ms`
    /// (shown while it lasts, with who set it where known), at `now_ms`. Names come from
    /// Sentry and Slack and are escaped like all text from Sentry.
    pub fn new(
        state: Option<&IssueState>,
        muted_until_ms: Option<i64>,
        muted_by: Option<&str>,
        now_ms: i64,
    ) -> StateLine {
        let mut parts = Vec::new();
        if let Some(state) = state
            && let Some(line) = state.line(now_ms)
        {
            let emoji = match state.status {
                Status::Resolved { .. } => ":white_check_mark:",
                Status::Archived { .. } => ":zzz:",
                Status::Unresolved => ":bust_in_silhouette:",
            };
            parts.push((emoji, sentry_text_truncated(&line, 500)));
        }
        if let Some(until) = muted_until_ms.filter(|&until| until > now_ms) {
            let mut text = format!("Muted here until {}", short_time(until, now_ms));
            if let Some(by) = muted_by {
                text.push_str(" by ");
                text.push_str(&sentry_text_truncated(by, 200));
            }
            parts.push((":mute:", text));
        }
        StateLine { parts }
    }

    /// Whether there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The context block (`None` when empty): one element per part.
    pub fn block(&self) -> Option<Value> {
        let elements: Vec<Value> = self
            .parts
            .iter()
            .map(|(emoji, text)| {
                let text = super::message::truncate(&format!("{emoji} {text}"), MAX_SECTION_CHARS);
                json!({"type": "mrkdwn", "text": text})
            })
            .collect();
        (!elements.is_empty()).then(|| json!({"type": "context", "elements": elements}))
    }

    /// The line for the `text` fallback, without emoji: `Resolved by Ada · 14:02 · Muted here
    /// until 15:02`.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://sentry.io/organizations/acme/issues/1117540176/";
    /// 2025-11-22 14:02 UTC.
    const NOW: i64 = 1_763_820_120_000;

    fn states() -> Vec<Option<IssueState>> {
        let with = |status| {
            Some(IssueState {
                status,
                by: Some("Ada Lovelace".into()),
                at_ms: Some(NOW),
                assignee: Some("Ada".into()),
            })
        };
        vec![
            None,
            with(Status::Unresolved),
            with(Status::Resolved {
                in_next_release: false,
            }),
            with(Status::Resolved {
                in_next_release: true,
            }),
            with(Status::Archived {
                archive: Archive::Escalating,
            }),
        ]
    }

    /// Every subset of the actions, in order.
    fn subsets() -> Vec<Vec<ActionKind>> {
        (0..16u8)
            .map(|mask| {
                ActionKind::ALL
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, a)| a)
                    .collect()
            })
            .collect()
    }

    fn offer<'a>(
        actions: &'a [ActionKind],
        state: Option<&'a IssueState>,
        muted: bool,
    ) -> Offer<'a> {
        Offer {
            issue_key: "1117540176",
            actions,
            state,
            muted_until_ms: muted.then_some(NOW + 3_600_000),
            has_release: true,
            open_url: Some(URL),
        }
    }

    /// What each element of a block stands for: `(action_id, value)` for a button, one per
    /// option for a menu.
    fn clicks(block: &Value) -> Vec<(String, Option<String>)> {
        let mut clicks = Vec::new();
        for element in block["elements"].as_array().unwrap() {
            let id = element["action_id"].as_str().unwrap().to_string();
            match element["options"].as_array() {
                Some(options) => {
                    for option in options {
                        let value = option["value"].as_str().unwrap().to_string();
                        clicks.push((id.clone(), Some(value)));
                    }
                }
                None => clicks.push((id, element["value"].as_str().map(str::to_string))),
            }
        }
        clicks
    }

    fn chars(v: &Value) -> usize {
        v.as_str().map_or(0, |s| s.chars().count())
    }

    /// Slack's limits on an actions block and its elements.
    fn assert_within_limits(block: &Value) {
        assert!(chars(&block["block_id"]) <= MAX_BLOCK_ID_CHARS);
        let elements = block["elements"].as_array().unwrap();
        assert!(!elements.is_empty() && elements.len() <= MAX_ACTIONS_ELEMENTS);
        for e in elements {
            assert!(chars(&e["action_id"]) <= 255);
            match e["type"].as_str().unwrap() {
                "button" => {
                    assert!(chars(&e["text"]["text"]) <= 75);
                    assert!(chars(&e["value"]) <= 2000);
                    assert!(chars(&e["url"]) <= 3000);
                }
                "static_select" => {
                    assert!(chars(&e["placeholder"]["text"]) <= 150);
                    let options = e["options"].as_array().unwrap();
                    assert!(!options.is_empty() && options.len() <= 100);
                    for o in options {
                        assert!(chars(&o["text"]["text"]) <= 75);
                        assert!(chars(&o["value"]) <= 150);
                    }
                }
                "overflow" => {
                    let n = e["options"].as_array().unwrap().len();
                    assert!((2..=5).contains(&n));
                }
                other => panic!("unexpected element {other}"),
            }
        }
    }

    /// Every element the builder emits, in every state, decodes to what it says, and its
    /// block names the issue.
    #[test]
    fn every_element_round_trips() {
        for actions in subsets() {
            for state in states() {
                for muted in [false, true] {
                    let offer = offer(&actions, state.as_ref(), muted);
                    let Some(block) = actions_block(&offer) else {
                        continue;
                    };
                    assert_within_limits(&block);
                    let block_id = block["block_id"].as_str().unwrap();
                    assert_eq!(issue_key_of(block_id), Some("1117540176"));
                    for (id, value) in clicks(&block) {
                        let decoded = decode(&id, value.as_deref());
                        let expected = match (id.as_str(), value.as_deref()) {
                            (OPEN, _) => Decoded::Open,
                            (RESOLVE, _) => Decoded::Action(IssueAction::Resolve),
                            (RESOLVE_NEXT_RELEASE, _) => {
                                Decoded::Action(IssueAction::ResolveInNextRelease)
                            }
                            (UNRESOLVE, _) => Decoded::Action(IssueAction::Unresolve),
                            (ASSIGN, _) => Decoded::Action(IssueAction::AssignToMe),
                            (UNMUTE, _) => Decoded::Action(IssueAction::Unmute),
                            (ARCHIVE, Some(v)) => {
                                let archive = ARCHIVE_CHOICES
                                    .iter()
                                    .find(|(_, a)| archive_value(*a).as_deref() == Some(v))
                                    .unwrap()
                                    .1;
                                Decoded::Action(IssueAction::Archive { archive })
                            }
                            (MUTE, Some(v)) => Decoded::Action(IssueAction::Mute {
                                secs: v.parse().unwrap(),
                            }),
                            other => panic!("unexpected element {other:?}"),
                        };
                        assert_eq!(decoded, expected, "{id} {value:?}");
                    }
                }
            }
        }
    }

    fn ids(block: &Value) -> Vec<&str> {
        block["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action_id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_elements_fit_the_state() {
        let all = ActionKind::ALL;
        let open = actions_block(&offer(&all, None, false)).unwrap();
        assert_eq!(
            ids(&open),
            [RESOLVE, RESOLVE_NEXT_RELEASE, ARCHIVE, ASSIGN, MUTE, OPEN]
        );
        let muted = actions_block(&offer(&all, None, true)).unwrap();
        assert_eq!(
            ids(&muted),
            [RESOLVE, RESOLVE_NEXT_RELEASE, ARCHIVE, ASSIGN, UNMUTE, OPEN]
        );
        let states = states();
        for state in &states[2..] {
            let block = actions_block(&offer(&all, state.as_ref(), false)).unwrap();
            assert_eq!(ids(&block), [UNRESOLVE, MUTE, OPEN], "{state:?}");
        }
        // Unresolve is offered where the action that closed the issue is allowed.
        let resolved = states[2].as_ref();
        let archived = states[4].as_ref();
        let archive_only = [ActionKind::Archive];
        assert!(actions_block(&offer(&archive_only, resolved, false)).is_none());
        let block = actions_block(&offer(&archive_only, archived, false)).unwrap();
        assert_eq!(ids(&block), [UNRESOLVE, OPEN]);
        // No release: no "Resolve in next release".
        let mut no_release = offer(&all, None, false);
        no_release.has_release = false;
        let block = actions_block(&no_release).unwrap();
        assert_eq!(ids(&block), [RESOLVE, ARCHIVE, ASSIGN, MUTE, OPEN]);
        assert_eq!(block["elements"][0]["style"], "primary");
    }

    /// Sluice's own issue keys get no Sentry action; a mute still works on them.
    #[test]
    fn sentry_actions_only_for_a_sentry_issue() {
        let all = ActionKind::ALL;
        let mut fp = offer(&all, None, false);
        fp.issue_key = "fp:0123456789abcdef";
        let block = actions_block(&fp).unwrap();
        assert_eq!(ids(&block), [MUTE, OPEN]);
        assert_eq!(
            issue_key_of(block["block_id"].as_str().unwrap()),
            Some("fp:0123456789abcdef")
        );
        let sentry_only = [ActionKind::Resolve, ActionKind::Assign];
        fp.actions = &sentry_only;
        assert!(actions_block(&fp).is_none());
        // Nothing allowed: no block at all.
        assert!(actions_block(&offer(&[], None, false)).is_none());
    }

    /// A key too long for a `block_id` gets no actions block (a click could not name it).
    #[test]
    fn a_key_too_long_for_a_block_id_gets_none() {
        let all = ActionKind::ALL;
        let long = format!("metric:{}", "9".repeat(300));
        let mut o = offer(&all, None, false);
        o.issue_key = &long;
        assert!(actions_block(&o).is_none());
        let fits = "1".repeat(MAX_BLOCK_ID_CHARS - PREFIX.len() - 9);
        o.issue_key = &fits;
        let block = actions_block(&o).unwrap();
        assert_eq!(chars(&block["block_id"]), MAX_BLOCK_ID_CHARS);
        assert_eq!(
            issue_key_of(block["block_id"].as_str().unwrap()),
            Some(fits.as_str())
        );
    }

    /// The `block_id` changes with what the block shows (Slack's clients keep menu choices per
    /// `block_id`), and stays put while nothing changes.
    #[test]
    fn the_block_id_changes_with_the_state() {
        let all = ActionKind::ALL;
        let id = |o: &Offer| actions_block(o).unwrap()["block_id"].clone();
        let states = states();
        let open = id(&offer(&all, None, false));
        assert_eq!(open, id(&offer(&all, None, false)));
        assert_ne!(open, id(&offer(&all, None, true)));
        assert_ne!(open, id(&offer(&all, states[2].as_ref(), false)));
        assert_ne!(
            id(&offer(&all, states[2].as_ref(), false)),
            id(&offer(&all, states[3].as_ref(), false))
        );
    }

    #[test]
    fn block_ids_of_others_name_no_issue() {
        assert_eq!(issue_key_of("sluice:42"), Some("42"));
        assert_eq!(issue_key_of("sluice:42#0123abcd"), Some("42"));
        assert_eq!(issue_key_of("sluice:fp:ab#cd"), Some("fp:ab#cd"));
        for other in [
            "",
            "sluice:",
            "sluice:#0123abcd",
            "actions1",
            "=qXel",
            "SLUICE:42",
        ] {
            assert_eq!(issue_key_of(other), None, "{other:?}");
        }
    }

    #[test]
    fn values_never_offered_are_unknown() {
        for (id, value) in [
            ("sluice:archive", None),
            ("sluice:archive", Some("minutes:0")),
            ("sluice:archive", Some("count:-1")),
            ("sluice:archive", Some("weeks:2")),
            ("sluice:archive", Some("")),
            ("sluice:mute", None),
            ("sluice:mute", Some("0")),
            ("sluice:mute", Some("99999999999")),
            ("sluice:mute", Some("1h")),
            ("sluice:delete", None),
            ("approve", Some("yes")),
            ("", None),
        ] {
            assert_eq!(decode(id, value), Decoded::Unknown, "{id} {value:?}");
        }
        assert_eq!(
            decode(ARCHIVE, Some("forever")),
            Decoded::Action(IssueAction::Archive {
                archive: Archive::Forever
            })
        );
    }

    #[test]
    fn the_state_line_says_state_and_mute() {
        let states = states();
        let resolved = StateLine::new(states[2].as_ref(), None, None, NOW);
        assert_eq!(
            resolved.text(),
            "Resolved by Ada Lovelace · 14:02 · Assigned to Ada"
        );
        assert_eq!(
            resolved.block().unwrap()["elements"][0]["text"],
            ":white_check_mark: Resolved by Ada Lovelace · 14:02 · Assigned to Ada"
        );
        let muted = StateLine::new(None, Some(NOW + 3_600_000), Some("grace"), NOW);
        assert_eq!(muted.text(), "Muted here until 15:02 by grace");
        // A mute that ended is not shown; nothing to say is no block.
        let ended = StateLine::new(None, Some(NOW), Some("grace"), NOW);
        assert!(ended.is_empty() && ended.block().is_none());
        // Names cannot ping or format.
        let evil = IssueState {
            status: Status::Resolved {
                in_next_release: false,
            },
            by: Some("<!channel> *x*".into()),
            ..IssueState::default()
        };
        let line = StateLine::new(Some(&evil), Some(NOW + 1), Some("<@U1>"), NOW);
        assert_eq!(
            line.text(),
            "Resolved by &lt;!channel&gt; ∗x∗ · Muted here until 14:02 by &lt;@U1&gt;"
        );
    }
}
