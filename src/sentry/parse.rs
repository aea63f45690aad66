//! Sentry Integration Platform payloads (`Sentry-Hook-Resource` + JSON body) → [`Alert`].
//!
//! The semantics of every field are described in the `sentry` module documentation.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::fields::{
    MAX_PROJECTS, UNKNOWN_PROJECT, UNTITLED, cap, count, event_id, first_line, http_url, id, level,
    link, one_line, project_from_api_url, project_ref, str_of, text, unix_seconds,
};
use super::lenient::{Lenient, Loose, from_body, from_value};
use super::payload::{Actor, Assignee, Data, Delivery, Event, Issue, ProjectRef};
use crate::alert::{Alert, Level};
use crate::issue::{IssueState, Status};

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
    let root: Box<Delivery> = document(body)?;
    let action = text(&root.action);
    let routed = |parsed: Result<Alert, Malformed>| parsed.map(|a| Parsed::Alert(Box::new(a)));
    let need_action = || {
        action
            .clone()
            .ok_or_else(|| Malformed("payload has no `action`".into()))
    };
    let data = &root.data;
    match resource.as_str() {
        "event_alert" | "error" => routed(occurrence(&resource, need_action()?, data, projects)),
        "issue" | "activity_alert" => routed(issue(
            &resource,
            need_action()?,
            data,
            &root.actor,
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

/// Reads `body`, which must be a JSON object, as a `T` (a [`Delivery`], a legacy delivery):
/// the parts of it no field of `T` names are checked but not kept.
pub(crate) fn document<'a, T: Lenient<'a>>(body: &'a [u8]) -> Result<Box<T>, Malformed> {
    match from_body(body) {
        Ok(Some(doc)) => Ok(doc),
        Ok(None) => Err(Malformed("body is not a JSON object".into())),
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
    /// ([`Exception::title`](super::payload::Exception::title)), else `message` / `logentry`;
    /// the caller supplies the final fallback.
    pub(crate) fn read(ev: &Event, projects: &ProjectMap) -> Self {
        let tags = ev.tags.0.clone();
        let environment = text(&ev.environment).or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "environment")
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
        let title = one_line(&ev.title)
            .or_else(|| ev.metadata.title())
            .or_else(|| ev.exception.title())
            .or_else(|| one_line(&ev.message))
            .or_else(|| one_line(&ev.logentry.formatted))
            .or_else(|| one_line(&ev.logentry.message));
        let level = level(&ev.level).or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "level")
                .and_then(|(_, v)| v.parse().ok())
        });
        EventFields {
            event_id: str_of(&ev.event_id)
                .or_else(|| str_of(&ev.id))
                .map(event_id),
            title,
            culprit: text(&ev.culprit),
            release: id(&ev.release),
            level,
            environment,
            tags,
            timestamp: unix_seconds(&ev.timestamp).or_else(|| unix_seconds(&ev.datetime)),
            project: project_from_api_url(&ev.url).or_else(|| project_ref(&ev.project, projects)),
        }
    }
}

/// `event_alert` (`data.event`) and `error` (`data.error`): one occurrence of an error.
fn occurrence(
    resource: &str,
    action: String,
    data: &Data,
    projects: &ProjectMap,
) -> Result<Alert, Malformed> {
    let (key, ev) = if resource == "error" {
        ("error", &data.error)
    } else {
        ("event", &data.event)
    };
    let ev =
        ev.0.as_deref()
            .ok_or_else(|| Malformed::missing(resource, &format!("data.{key}")))?;
    let fields = EventFields::read(ev, projects);
    let event_id = fields
        .event_id
        .ok_or_else(|| Malformed::missing(resource, &format!("data.{key}.event_id")))?;
    let project = fields.project.unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let title = fields.title.unwrap_or_else(|| UNTITLED.into());
    let issue_key = id(&ev.issue_id)
        .or_else(|| id(&ev.group_id))
        .unwrap_or_else(|| fingerprint(&project, &title, fields.culprit.as_deref()));
    let event_url = http_url(&ev.web_url);
    let issue_url = event_url.as_deref().map(issue_link);
    let rule = if resource == "event_alert" {
        one_line(&data.triggered_rule).or_else(|| one_line(&data.issue_alert.title))
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
fn built_issue_url<'a, 'b: 'a>(
    id: &str,
    urls: impl IntoIterator<Item = &'a Loose<'b>>,
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
        link(&page)
    })
}

/// `issue.*` and `activity_alert.*`: a notice about an issue (`data.issue`), not an occurrence.
/// `actor` is the delivery's top-level `actor`: who made the change.
fn issue(
    resource: &str,
    action: String,
    data: &Data,
    actor: &Actor,
    projects: &ProjectMap,
) -> Result<Alert, Malformed> {
    let issue = data
        .issue
        .0
        .as_deref()
        .ok_or_else(|| Malformed::missing(resource, "data.issue"))?;
    let issue_key = id(&issue.id).ok_or_else(|| Malformed::missing(resource, "data.issue.id"))?;
    let project = issue
        .project
        .slug(projects)
        .unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let title = one_line(&issue.title)
        .or_else(|| issue.metadata.title())
        .unwrap_or_else(|| UNTITLED.into());
    let issue_url = http_url(&issue.web_url)
        .or_else(|| http_url(&issue.permalink))
        .or_else(|| built_issue_url(&issue_key, [&issue.url, &issue.project_url]));
    let (rule, detail, state) = if resource == "activity_alert" {
        (
            one_line(&data.alert.title),
            text(&data.activity.details.summary).or_else(|| text(&data.activity.kind)),
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
        short_id: text(&issue.short_id),
        event_id: None,
        projects: vec![project],
        environment: None,
        level: level(&issue.level).unwrap_or(Level::Error),
        title,
        culprit: text(&issue.culprit),
        release: None,
        issue_url,
        event_url: None,
        tags: Vec::new(),
        timestamp: unix_seconds(&issue.last_seen),
        sentry_first_seen: unix_seconds(&issue.first_seen),
        sentry_count: count(&issue.count),
        rule,
        detail,
        state,
    })
}

/// What an issue lifecycle notice adds: how it was resolved, or who it was assigned to.
fn issue_detail(action: &str, data: &Data, issue: &Issue) -> Option<String> {
    match action {
        "resolved" => text(&data.resolution_type).map(|how| cap(&format!("resolution: {how}"))),
        "assigned" => assignee_of(data, issue).map(|who| cap(&format!("assigned to {who}"))),
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
///   may lag behind the change it announces; the issue's for `assigned`
///   ([`Issue::reported_status`]). An archive's condition always comes from the issue
///   ([`Issue::archive`]).
/// - assignee: `data.assignee`, else `issue.assignedTo` (see [`Assignee::name`]).
/// - by: the delivery's `actor.name` when `actor.type` is `user`; `None` when Sentry credits an
///   application (an integration acting through its token, a rule, Sentry itself).
/// - at: `None`; the store stamps the time the notice arrived.
fn notice_state(action: &str, data: &Data, issue: &Issue, actor: &Actor) -> Option<IssueState> {
    let reported = issue.reported_status();
    let status = match action {
        "resolved" => {
            let by_release = str_of(&data.resolution_type) == Some("in_next_release");
            let in_next_release = match reported {
                Some(Status::Resolved { in_next_release }) => in_next_release || by_release,
                _ => by_release,
            };
            Status::Resolved { in_next_release }
        }
        "ignored" | "archived" => Status::Archived {
            archive: issue.archive(),
        },
        "unresolved" => Status::Unresolved,
        "assigned" => reported.unwrap_or_default(),
        _ => return None,
    };
    let by = (str_of(&actor.kind) == Some("user"))
        .then(|| one_line(&actor.name))
        .flatten()
        .map(|name| name_cap(&name));
    Some(IssueState {
        status,
        assignee: assignee_of(data, issue).map(|name| name_cap(&name)),
        by,
        at_ms: None,
    })
}

/// The assignee a notice names: `data.assignee`, else `issue.assignedTo`.
fn assignee_of(data: &Data, issue: &Issue) -> Option<String> {
    data.assignee.name().or_else(|| issue.assigned_to.name())
}

/// The status a serialized Sentry issue held as a `Value` reports (the issue Sentry's API
/// answers a change with): see [`Issue::reported_status`].
pub(crate) fn reported_status(issue: &Value) -> Option<Status> {
    from_value::<Issue>(issue).reported_status()
}

/// `name` cut to [`MAX_NAME_CHARS`] chars, on a char boundary.
fn name_cap(name: &str) -> String {
    name.chars().take(MAX_NAME_CHARS).collect()
}

/// An assignee's display name, from a `Value` (an issue's `assignedTo` in an answer of
/// Sentry's API): see [`Assignee::name`].
pub(crate) fn assignee(v: Option<&Value>) -> Option<String> {
    from_value::<Assignee>(v?).name()
}

/// `metric_alert.critical|warning|resolved`: a metric alert rule changed state.
fn metric_alert(action: String, data: &Data, projects: &ProjectMap) -> Result<Alert, Malformed> {
    const R: &str = "metric_alert";
    let alert = data
        .metric_alert
        .0
        .as_deref()
        .ok_or_else(|| Malformed::missing(R, "data.metric_alert"))?;
    let rule = &alert.alert_rule;
    let key = id(&rule.id).or_else(|| id(&alert.id)).ok_or_else(|| {
        Malformed::missing(R, "data.metric_alert.alert_rule.id or data.metric_alert.id")
    })?;
    let mut slugs = project_list(&alert.projects.0, projects);
    if slugs.is_empty() {
        slugs = project_list(&rule.projects.0, projects);
    }
    if slugs.is_empty() {
        slugs.push(UNKNOWN_PROJECT.into());
    }
    let rule_name = one_line(&rule.name);
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
        environment: text(&rule.environment),
        level,
        title: one_line(&data.description_title)
            .or_else(|| rule_name.clone())
            .or_else(|| one_line(&alert.title))
            .unwrap_or_else(|| UNTITLED.into()),
        culprit: None,
        release: None,
        issue_url: http_url(&data.web_url),
        event_url: None,
        tags: Vec::new(),
        timestamp: [
            &alert.date_closed,
            &alert.date_detected,
            &alert.date_started,
            &alert.date_created,
        ]
        .into_iter()
        .find_map(unix_seconds),
        sentry_first_seen: unix_seconds(&alert.date_started),
        sentry_count: None,
        rule: rule_name,
        detail: str_of(&data.description_text).map(|d| cap(&d.replace("\\n", "\n"))),
        state: None,
    })
}

/// Project references of a metric alert: slugs, or ids mapped through `projects`; duplicates
/// dropped, at most [`MAX_PROJECTS`].
fn project_list(items: &[ProjectRef], projects: &ProjectMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if out.len() >= MAX_PROJECTS {
            break;
        }
        if let Some(slug) = item.slug(projects).filter(|s| !out.contains(s)) {
            out.push(slug);
        }
    }
    out
}

/// `comment.created|updated|deleted`: a comment on an issue.
fn comment(action: String, root: &Delivery, projects: &ProjectMap) -> Result<Alert, Malformed> {
    const R: &str = "comment";
    let data = &root.data;
    let issue_id = id(&data.issue_id).ok_or_else(|| Malformed::missing(R, "data.issue_id"))?;
    let project = text(&data.project_slug)
        .or_else(|| project_ref(&data.project_id, projects))
        .unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let verb = match action.as_str() {
        "created" => "Comment".to_owned(),
        "updated" => "Comment edited".to_owned(),
        "deleted" => "Comment deleted".to_owned(),
        other => format!("Comment {}", clip(other)),
    };
    let author = one_line(&root.actor.name);
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
        timestamp: unix_seconds(&data.timestamp),
        sentry_first_seen: None,
        sentry_count: None,
        rule: None,
        detail: text(&data.comment),
        state: None,
    })
}
