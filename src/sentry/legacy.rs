//! The legacy Sentry "WebHooks" plugin payload (`POST /sentry/legacy`) → [`Alert`].
//!
//! Shape, from `src/sentry/plugins/sentry_webhooks/plugin.py` (`get_group_data`) in
//! getsentry/sentry: `{"id": "<group id>", "project": slug, "project_name", "project_slug",
//! "logger", "level", "culprit", "message", "url": "<issue URL>", "triggering_rules": [...],
//! "event": {<event data>, "event_id", "id", "tags": [[k, v], ...]}}`. It has no resource header
//! and no `action`: the alert's resource is `legacy`, its action `triggered`.

use serde_json::Value;

use super::fields::{
    UNKNOWN_PROJECT, UNTITLED, cap, first_line, http_url, id, level, one_line, project_ref, text,
};
use super::parse::{EventFields, Malformed, ProjectMap, fingerprint, json_object};
use crate::alert::{Alert, Level};

/// Parses a legacy WebHooks plugin delivery into an occurrence (`resource` `legacy`, `action`
/// `triggered`). `event.event_id` (or `event.id`) is required: without it the event cannot be
/// deduplicated. Never panics, whatever the input.
pub fn parse_legacy(body: &[u8], projects: &ProjectMap) -> Result<Alert, Malformed> {
    let root = Value::Object(json_object(body)?);
    let ev = root
        .get("event")
        .filter(|ev| ev.is_object())
        .ok_or_else(|| Malformed("legacy payload has no `event` object".into()))?;
    let fields = EventFields::read(ev, projects);
    let event_id = fields
        .event_id
        .ok_or_else(|| Malformed("legacy payload has no event.event_id or event.id".into()))?;
    let project = text(root.get("project_slug"))
        .or_else(|| project_ref(root.get("project"), projects))
        .or(fields.project)
        .unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let culprit = text(root.get("culprit")).or(fields.culprit);
    let title = fields
        .title
        .or_else(|| one_line(root.get("message")))
        .or_else(|| culprit.as_deref().and_then(first_line))
        .unwrap_or_else(|| UNTITLED.into());
    let issue_key =
        id(root.get("id")).unwrap_or_else(|| fingerprint(&project, &title, culprit.as_deref()));
    let rules: Vec<String> = root
        .get("triggering_rules")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().filter_map(|r| one_line(Some(r))).collect())
        .unwrap_or_default();
    Ok(Alert {
        resource: "legacy".into(),
        action: "triggered".into(),
        issue_key,
        short_id: None,
        event_id: Some(event_id),
        projects: vec![project],
        environment: fields.environment,
        level: level(root.get("level"))
            .or(fields.level)
            .unwrap_or(Level::Error),
        title,
        culprit,
        release: fields.release,
        issue_url: http_url(root.get("url")),
        event_url: None,
        tags: fields.tags,
        timestamp: fields.timestamp,
        sentry_first_seen: None,
        sentry_count: None,
        rule: (!rules.is_empty()).then(|| cap(&rules.join(", "))),
        detail: None,
        state: None,
    })
}
