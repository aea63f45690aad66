//! Sentry Integration Platform payloads (`Sentry-Hook-Resource` + JSON body) → [`Alert`].
//!
//! The semantics of every field are described in the `sentry` module documentation.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::fields::{
    MAX_PROJECTS, UNKNOWN_PROJECT, UNTITLED, at, cap, count, event_id, exception_title, first_line,
    http_url, id, level, metadata_title, one_line, project_from_api_url, project_ref, str_of, tags,
    text, unix_seconds,
};
use crate::alert::{Alert, Level};
use crate::issue::{Archive, IssueState, Status};

/// Maps Sentry's numeric project ids (as strings, `"4505"`) to project slugs (`"checkout"`):
/// `[sentry.projects]` in routes.toml. Used only where a payload names its project by id alone.
pub type ProjectMap = HashMap<String, String>;

/// The outcome of parsing a verified delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A notification to route.
    Alert(Box<Alert>),
    /// A well-formed delivery Sluice does not route (`installation.*`, resources it does not
    /// know yet). Acknowledged with `202 {"ignored": reason}` so Sentry keeps the integration
    /// enabled; the reason says why (`installation.created is not routed`).
    Ignored(String),
}

/// A delivery that is not JSON, or lacks a field its resource requires (answered with `400`).
/// The message names what is missing: `event_alert payload has no data.event.event_id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl Malformed {
    fn missing(resource: &str, what: &str) -> Self {
        Malformed(format!("{resource} payload has no {what}"))
    }
}

/// Parses one Integration Platform delivery. `resource` is the `Sentry-Hook-Resource` header
/// (`event_alert`, `error`, `issue`, `activity_alert`, `metric_alert`, `comment`, `installation`,
/// or anything newer), `body` the raw request body.
///
/// Never panics, whatever the input. See the `sentry` module documentation for what each
/// resource requires and how each field of the [`Alert`] is derived.
pub fn parse(resource: &str, body: &[u8], projects: &ProjectMap) -> Result<Parsed, Malformed> {
    let resource = resource.trim().to_ascii_lowercase();
    if resource.is_empty() {
        return Err(Malformed("no Sentry-Hook-Resource header".into()));
    }
    let root = json_object(body)?;
    let action = text(root.get("action"));
    let routed = |parsed: Result<Alert, Malformed>| parsed.map(|a| Parsed::Alert(Box::new(a)));
    let need_action = || {
        action
            .clone()
            .ok_or_else(|| Malformed("payload has no `action`".into()))
    };
    let data = root.get("data").unwrap_or(&Value::Null);
    match resource.as_str() {
        "event_alert" | "error" => routed(occurrence(&resource, need_action()?, data, projects)),
        "issue" | "activity_alert" => routed(issue(
            &resource,
            need_action()?,
            data,
            root.get("actor"),
            projects,
        )),
        "metric_alert" => routed(metric_alert(need_action()?, data, projects)),
        "comment" => routed(comment(need_action()?, &root, projects)),
        "installation" => Ok(Parsed::Ignored(match &action {
            Some(action) => format!("installation.{} is not routed", clip(action)),
            None => "installation is not routed".into(),
        })),
        other => Ok(Parsed::Ignored(format!(
            "unrecognised resource `{}`",
            clip(other)
        ))),
    }
}

/// Parses `body` as a JSON object.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Malformed("body is not a JSON object".into())),
        Err(e) => Err(Malformed(format!("body is not JSON: {e}"))),
    }
}

/// Short form of a header-supplied string for a message (the header is not signed).
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `"fp:"` + the first 16 hex chars of SHA-256 over `project \0 title \0 culprit` (an absent
/// culprit hashes like an empty one): the issue key of a payload that carries no issue id, so
/// that repeated occurrences of the same error still count against one issue.
pub fn fingerprint(project: &str, title: &str, culprit: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(project.as_bytes());
    hasher.update([0u8]);
    hasher.update(title.as_bytes());
    hasher.update([0u8]);
    hasher.update(culprit.unwrap_or_default().as_bytes());
    let digest = hasher.finalize();
    let mut key = String::from("fp:");
    key.push_str(&hex::encode(digest.get(..8).unwrap_or_default()));
    key
}

/// The fields an event object (`data.event`, `data.error`, the legacy `event`) carries.
pub(crate) struct EventFields {
    pub(crate) event_id: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) culprit: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) level: Option<Level>,
    pub(crate) environment: Option<String>,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) project: Option<String>,
}

impl EventFields {
    /// Reads an event object. `title` is `title`, else `metadata`, else the main exception
    /// ([`exception_title`]), else `message` / `logentry`; the caller supplies the final
    /// fallback.
    pub(crate) fn read(ev: &Value, projects: &ProjectMap) -> Self {
        let tags = tags(ev.get("tags"));
        let environment = text(ev.get("environment")).or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "environment")
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
        let title = one_line(ev.get("title"))
            .or_else(|| metadata_title(ev))
            .or_else(|| exception_title(ev))
            .or_else(|| one_line(ev.get("message")))
            .or_else(|| one_line(at(ev, &["logentry", "formatted"])))
            .or_else(|| one_line(at(ev, &["logentry", "message"])));
        let level = level(ev.get("level")).or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "level")
                .and_then(|(_, v)| v.parse().ok())
        });
        EventFields {
            event_id: str_of(ev.get("event_id"))
                .or_else(|| str_of(ev.get("id")))
                .map(event_id),
            title,
            culprit: text(ev.get("culprit")),
            release: id(ev.get("release")),
            level,
            environment,
            tags,
            timestamp: unix_seconds(ev.get("timestamp"))
                .or_else(|| unix_seconds(ev.get("datetime"))),
            project: project_from_api_url(ev.get("url"))
                .or_else(|| project_ref(ev.get("project"), projects)),
        }
    }
}

/// `event_alert` (`data.event`) and `error` (`data.error`): one occurrence of an error.
fn occurrence(
    resource: &str,
    action: String,
    data: &Value,
    projects: &ProjectMap,
) -> Result<Alert, Malformed> {
    let key = if resource == "error" {
        "error"
    } else {
        "event"
    };
    let ev = data
        .get(key)
        .filter(|ev| ev.is_object())
        .ok_or_else(|| Malformed::missing(resource, &format!("data.{key}")))?;
    let fields = EventFields::read(ev, projects);
    let event_id = fields
        .event_id
        .ok_or_else(|| Malformed::missing(resource, &format!("data.{key}.event_id")))?;
    let project = fields.project.unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let title = fields.title.unwrap_or_else(|| UNTITLED.into());
    let issue_key = id(ev.get("issue_id"))
        .or_else(|| id(ev.get("group_id")))
        .unwrap_or_else(|| fingerprint(&project, &title, fields.culprit.as_deref()));
    let event_url = http_url(ev.get("web_url"));
    let issue_url = event_url.as_deref().map(issue_link);
    let rule = if resource == "event_alert" {
        one_line(data.get("triggered_rule"))
            .or_else(|| one_line(at(data, &["issue_alert", "title"])))
    } else {
        None
    };
    Ok(Alert {
        resource: resource.to_owned(),
        action,
        issue_key,
        short_id: None,
        event_id: Some(event_id),
        projects: vec![project],
        environment: fields.environment,
        level: fields.level.unwrap_or(Level::Error),
        title,
        culprit: fields.culprit,
        release: fields.release,
        issue_url,
        event_url,
        tags: fields.tags,
        timestamp: fields.timestamp,
        sentry_first_seen: None,
        sentry_count: None,
        rule,
        detail: None,
        state: None,
    })
}

/// The issue page an event page belongs to: `…/issues/{id}/events/{event}/` → `…/issues/{id}/`.
/// Any other URL is returned as it is.
fn issue_link(event_url: &str) -> String {
    match event_url.find("/events/") {
        Some(cut)
            if event_url
                .get(..cut)
                .is_some_and(|head| head.contains("/issues/")) =>
        {
            format!("{}/", event_url.get(..cut).unwrap_or(event_url))
        }
        _ => event_url.to_owned(),
    }
}

/// The web page of issue `id`, built from another Sentry URL of the same organisation: Sentry
/// sends `issue.*` notices that no user triggered with `permalink: null`, and older payloads
/// have no `web_url`. The organisation comes from the first URL (in `urls` order) that names
/// it, in its path (`…/organizations/{org}/…`, `…/api/0/organizations/{org}/…`,
/// `…/api/0/projects/{org}/…`: `https://host/organizations/{org}/issues/{id}/`) or in its host
/// (`https://{org}.sentry.io/issues/…`: `https://{org}.sentry.io/issues/{id}/`).
fn built_issue_url<'a>(
    id: &str,
    urls: impl IntoIterator<Item = Option<&'a Value>>,
) -> Option<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    urls.into_iter().find_map(|url| {
        let url = http_url(url)?;
        let (scheme, rest) = url.split_once("://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let page = match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("organizations"), Some(org), ..) => {
                format!("{scheme}://{host}/organizations/{org}/issues/{id}/")
            }
            (Some("api"), Some("0"), Some("organizations" | "projects"), Some(org)) => {
                format!("{scheme}://{host}/organizations/{org}/issues/{id}/")
            }
            (Some("issues"), ..) => format!("{scheme}://{host}/issues/{id}/"),
            _ => return None,
        };
        http_url(Some(&Value::String(page)))
    })
}

/// `issue.*` and `activity_alert.*`: a notice about an issue (`data.issue`), not an occurrence.
/// `actor` is the delivery's top-level `actor`: who made the change.
fn issue(
    resource: &str,
    action: String,
    data: &Value,
    actor: Option<&Value>,
    projects: &ProjectMap,
) -> Result<Alert, Malformed> {
    let issue = data
        .get("issue")
        .filter(|issue| issue.is_object())
        .ok_or_else(|| Malformed::missing(resource, "data.issue"))?;
    let issue_key =
        id(issue.get("id")).ok_or_else(|| Malformed::missing(resource, "data.issue.id"))?;
    let project = issue.get("project");
    let project = text(project.and_then(|p| p.get("slug")))
        .or_else(|| project_ref(project.and_then(|p| p.get("id")), projects))
        .or_else(|| project_ref(project, projects))
        .unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let title = one_line(issue.get("title"))
        .or_else(|| metadata_title(issue))
        .unwrap_or_else(|| UNTITLED.into());
    let issue_url = http_url(issue.get("web_url"))
        .or_else(|| http_url(issue.get("permalink")))
        .or_else(|| built_issue_url(&issue_key, [issue.get("url"), issue.get("project_url")]));
    let (rule, detail, state) = if resource == "activity_alert" {
        (
            one_line(at(data, &["alert", "title"])),
            text(at(data, &["activity", "details", "summary"]))
                .or_else(|| text(at(data, &["activity", "type"]))),
            None,
        )
    } else {
        (
            None,
            issue_detail(&action, data, issue),
            notice_state(&action, data, issue, actor),
        )
    };
    Ok(Alert {
        resource: resource.to_owned(),
        action,
        issue_key,
        short_id: text(issue.get("shortId")),
        event_id: None,
        projects: vec![project],
        environment: None,
        level: level(issue.get("level")).unwrap_or(Level::Error),
        title,
        culprit: text(issue.get("culprit")),
        release: None,
        issue_url,
        event_url: None,
        tags: Vec::new(),
        timestamp: unix_seconds(issue.get("lastSeen")),
        sentry_first_seen: unix_seconds(issue.get("firstSeen")),
        sentry_count: count(issue.get("count")),
        rule,
        detail,
        state,
    })
}

/// What an issue lifecycle notice adds: how it was resolved, or who it was assigned to.
fn issue_detail(action: &str, data: &Value, issue: &Value) -> Option<String> {
    match action {
        "resolved" => {
            text(data.get("resolution_type")).map(|how| cap(&format!("resolution: {how}")))
        }
        "assigned" => assignee(data.get("assignee"))
            .or_else(|| assignee(issue.get("assignedTo")))
            .map(|who| cap(&format!("assigned to {who}"))),
        _ => None,
    }
}

/// Longest name (in chars) kept in an [`IssueState`]: a state line holds two of them, and
/// people's and teams' names are far shorter.
const MAX_NAME_CHARS: usize = 200;

/// The state an issue lifecycle notice reports (`issue.resolved`, `ignored`, `archived`,
/// `assigned`, `unresolved`; `None` for any other action):
///
/// - status: the action's own for `resolved` (in the next release when `data.resolution_type`
///   or the issue says so), `ignored`/`archived` and `unresolved`, since the serialized issue
///   may lag behind the change it announces; the issue's for `assigned` ([`reported_status`]).
///   An archive's condition always comes from the issue ([`archive_of`]).
/// - assignee: `data.assignee`, else `issue.assignedTo` (see [`assignee`]).
/// - by: the delivery's `actor.name` when `actor.type` is `user`; `None` when Sentry credits an
///   application (an integration acting through its token, a rule, Sentry itself).
/// - at: `None`; the store stamps the time the notice arrived.
fn notice_state(
    action: &str,
    data: &Value,
    issue: &Value,
    actor: Option<&Value>,
) -> Option<IssueState> {
    let reported = reported_status(issue);
    let status = match action {
        "resolved" => {
            let by_release = str_of(data.get("resolution_type")) == Some("in_next_release");
            let in_next_release = match reported {
                Some(Status::Resolved { in_next_release }) => in_next_release || by_release,
                _ => by_release,
            };
            Status::Resolved { in_next_release }
        }
        "ignored" | "archived" => Status::Archived {
            archive: archive_of(issue),
        },
        "unresolved" => Status::Unresolved,
        "assigned" => reported.unwrap_or_default(),
        _ => return None,
    };
    let by = actor
        .filter(|actor| str_of(actor.get("type")) == Some("user"))
        .and_then(|actor| one_line(actor.get("name")))
        .map(|name| name_cap(&name));
    Some(IssueState {
        status,
        assignee: assignee(data.get("assignee"))
            .or_else(|| assignee(issue.get("assignedTo")))
            .map(|name| name_cap(&name)),
        by,
        at_ms: None,
    })
}

/// The status a serialized Sentry issue reports: a webhook's `data.issue`, or the issue the
/// API answers a change with. `status` `resolved` (in the next release when
/// `statusDetails.inNextRelease` or `inUpcomingRelease` is true), `resolvedInNextRelease`,
/// `ignored`/`archived` (with [`archive_of`]), `unresolved`. `None` without a `status`, or
/// for a transient one (`pending_deletion`, `pending_merge`, `reprocessing`).
pub(crate) fn reported_status(issue: &Value) -> Option<Status> {
    let details = issue.get("statusDetails").unwrap_or(&Value::Null);
    let flag = |key: &str| details.get(key).and_then(Value::as_bool) == Some(true);
    match str_of(issue.get("status"))? {
        "resolved" => Some(Status::Resolved {
            in_next_release: flag("inNextRelease") || flag("inUpcomingRelease"),
        }),
        "resolvedInNextRelease" => Some(Status::Resolved {
            in_next_release: true,
        }),
        "ignored" | "archived" => Some(Status::Archived {
            archive: archive_of(issue),
        }),
        "unresolved" => Some(Status::Unresolved),
        _ => None,
    }
}

/// How long an archived issue stays archived: `substatus` `archived_until_escalating` or
/// `archived_forever`; else (`archived_until_condition_met`, or no substatus) the first of
/// `statusDetails.ignoreCount` (events still to come), `ignoreDuration` (minutes; the answer of
/// Sentry's bulk update), `ignoreUntil` (when it ends); with none of them, forever.
fn archive_of(issue: &Value) -> Archive {
    match str_of(issue.get("substatus")) {
        Some("archived_until_escalating") => return Archive::Escalating,
        Some("archived_forever") => return Archive::Forever,
        _ => {}
    }
    let details = issue.get("statusDetails").unwrap_or(&Value::Null);
    let positive = |key: &str| count(details.get(key)).filter(|n| *n > 0);
    if let Some(count) = positive("ignoreCount") {
        Archive::Count { count }
    } else if let Some(minutes) = positive("ignoreDuration") {
        Archive::Minutes { minutes }
    } else if let Some(secs) = unix_seconds(details.get("ignoreUntil")) {
        Archive::UntilTime {
            until_ms: secs.saturating_mul(1000),
        }
    } else {
        Archive::Forever
    }
}

/// `name` cut to [`MAX_NAME_CHARS`] chars, on a char boundary.
fn name_cap(name: &str) -> String {
    name.chars().take(MAX_NAME_CHARS).collect()
}

/// An assignee's display name: `name`, else `email`, else `username`/`slug`; teams as `#name`.
pub(crate) fn assignee(v: Option<&Value>) -> Option<String> {
    let v = v?;
    if let Some(name) = str_of(Some(v)) {
        return first_line(name);
    }
    let name = ["name", "email", "username", "slug"]
        .iter()
        .find_map(|key| str_of(v.get(*key)).and_then(first_line))?;
    if str_of(v.get("type")) == Some("team") && !name.starts_with('#') {
        Some(format!("#{name}"))
    } else {
        Some(name)
    }
}

/// `metric_alert.critical|warning|resolved`: a metric alert rule changed state.
fn metric_alert(action: String, data: &Value, projects: &ProjectMap) -> Result<Alert, Malformed> {
    const R: &str = "metric_alert";
    let alert = data
        .get("metric_alert")
        .filter(|a| a.is_object())
        .ok_or_else(|| Malformed::missing(R, "data.metric_alert"))?;
    let rule = alert.get("alert_rule").unwrap_or(&Value::Null);
    let key = id(rule.get("id"))
        .or_else(|| id(alert.get("id")))
        .ok_or_else(|| {
            Malformed::missing(R, "data.metric_alert.alert_rule.id or data.metric_alert.id")
        })?;
    let mut slugs = project_list(alert.get("projects"), projects);
    if slugs.is_empty() {
        slugs = project_list(rule.get("projects"), projects);
    }
    if slugs.is_empty() {
        slugs.push(UNKNOWN_PROJECT.into());
    }
    let rule_name = one_line(rule.get("name"));
    let level = match action.as_str() {
        "critical" => Level::Fatal,
        "warning" => Level::Warning,
        "resolved" => Level::Info,
        _ => Level::Error,
    };
    Ok(Alert {
        resource: R.to_owned(),
        action,
        issue_key: cap(&format!("metric:{key}")),
        short_id: None,
        event_id: None,
        projects: slugs,
        environment: text(rule.get("environment")),
        level,
        title: one_line(data.get("description_title"))
            .or_else(|| rule_name.clone())
            .or_else(|| one_line(alert.get("title")))
            .unwrap_or_else(|| UNTITLED.into()),
        culprit: None,
        release: None,
        issue_url: http_url(data.get("web_url")),
        event_url: None,
        tags: Vec::new(),
        timestamp: [
            "date_closed",
            "date_detected",
            "date_started",
            "date_created",
        ]
        .iter()
        .find_map(|key| unix_seconds(alert.get(*key))),
        sentry_first_seen: unix_seconds(alert.get("date_started")),
        sentry_count: None,
        rule: rule_name,
        detail: str_of(data.get("description_text")).map(|d| cap(&d.replace("\\n", "\n"))),
        state: None,
    })
}

/// Project references of a metric alert: slugs, or ids mapped through `projects`; duplicates
/// dropped, at most [`MAX_PROJECTS`].
fn project_list(v: Option<&Value>, projects: &ProjectMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in v
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if out.len() >= MAX_PROJECTS {
            break;
        }
        let slug = match item {
            Value::Object(_) => {
                text(item.get("slug")).or_else(|| project_ref(item.get("id"), projects))
            }
            _ => project_ref(Some(item), projects),
        };
        if let Some(slug) = slug.filter(|s| !out.contains(s)) {
            out.push(slug);
        }
    }
    out
}

/// `comment.created|updated|deleted`: a comment on an issue.
fn comment(
    action: String,
    root: &Map<String, Value>,
    projects: &ProjectMap,
) -> Result<Alert, Malformed> {
    const R: &str = "comment";
    let data = root.get("data").unwrap_or(&Value::Null);
    let issue_id =
        id(data.get("issue_id")).ok_or_else(|| Malformed::missing(R, "data.issue_id"))?;
    let project = text(data.get("project_slug"))
        .or_else(|| project_ref(data.get("project_id"), projects))
        .unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let verb = match action.as_str() {
        "created" => "Comment".to_owned(),
        "updated" => "Comment edited".to_owned(),
        "deleted" => "Comment deleted".to_owned(),
        other => format!("Comment {}", clip(other)),
    };
    let author = root
        .get("actor")
        .and_then(|actor| one_line(actor.get("name")));
    let title = match author {
        Some(author) => format!("{verb} on issue {issue_id} by {author}"),
        None => format!("{verb} on issue {issue_id}"),
    };
    Ok(Alert {
        resource: R.to_owned(),
        action,
        issue_key: issue_id,
        short_id: None,
        event_id: None,
        projects: vec![project],
        environment: None,
        level: Level::Info,
        title: first_line(&title).unwrap_or_else(|| UNTITLED.into()),
        culprit: None,
        release: None,
        issue_url: None,
        event_url: None,
        tags: Vec::new(),
        timestamp: unix_seconds(data.get("timestamp")),
        sentry_first_seen: None,
        sentry_count: None,
        rule: None,
        detail: text(data.get("comment")),
        state: None,
    })
}
