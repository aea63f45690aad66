//! The legacy Sentry "WebHooks" plugin payload (`POST /sentry/legacy`) → [`Alert`].
//!
//! Shape, from `src/sentry/plugins/sentry_webhooks/plugin.py` (`get_group_data`) in
//! getsentry/sentry: `{"id": "<group id>", "project": slug, "project_name", "project_slug",
//! "logger", "level", "culprit", "message", "url": "<issue URL>", "triggering_rules": [...],
//! "event": {<event data>, "event_id", "id", "tags": [[k, v], ...]}}`. It has no resource header
//! and no `action`: the alert's resource is `legacy`, its action `triggered`.

use super::fields::{
    UNKNOWN_PROJECT, UNTITLED, cap, first_line, http_url, id, level, one_line, project_ref, text,
};
use super::parse::{EventFields, Malformed, ProjectMap, document, fingerprint};
use super::payload::LegacyDelivery;
use crate::alert::{Alert, Level};

/// Parses a legacy WebHooks plugin delivery into an occurrence (`resource` `legacy`, `action`
/// `triggered`). `event.event_id` (or `event.id`) is required: without it the event cannot be
/// deduplicated. Never panics, whatever the input.
pub fn parse_legacy(body: &[u8], projects: &ProjectMap) -> Result<Alert, Malformed> {
    let root: Box<LegacyDelivery> = document(body)?;
    let ev = root
        .event
        .0
        .as_deref()
        .ok_or_else(|| Malformed("legacy payload has no `event` object".into()))?;
    let fields = EventFields::read(ev, projects);
    let event_id = fields
        .event_id
        .ok_or_else(|| Malformed("legacy payload has no event.event_id or event.id".into()))?;
    let project = text(&root.project_slug)
        .or_else(|| project_ref(&root.project, projects))
        .or(fields.project)
        .unwrap_or_else(|| UNKNOWN_PROJECT.into());
    let culprit = text(&root.culprit).or(fields.culprit);
    let title = fields
        .title
        .or_else(|| one_line(&root.message))
        .or_else(|| culprit.as_deref().and_then(first_line))
        .unwrap_or_else(|| UNTITLED.into());
    let issue_key =
        id(&root.id).unwrap_or_else(|| fingerprint(&project, &title, culprit.as_deref()));
    let rules: Vec<String> = root
        .triggering_rules
        .0
        .iter()
        .filter_map(one_line)
        .collect();
    Ok(Alert {
        resource: "legacy".into(),
        action: "triggered".into(),
        issue_key,
        short_id: None,
        event_id: Some(event_id),
        projects: vec![project],
        environment: fields.environment,
        level: level(&root.level).or(fields.level).unwrap_or(Level::Error),
        title,
        culprit,
        release: fields.release,
        issue_url: http_url(&root.url),
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
