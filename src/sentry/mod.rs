//! Sentry input: verifies webhook deliveries and normalises every payload shape into one
//! [`Alert`](crate::alert::Alert).
//!
//! - [`verify`] — `Sentry-Hook-Signature` (HMAC-SHA256 of the raw body, any of several secrets)
//!   and the optional `Sentry-Hook-Timestamp` skew check.
//! - [`parse`](mod@parse) — Integration Platform payloads, selected by `Sentry-Hook-Resource`.
//! - [`legacy`] — the legacy "WebHooks" plugin payload.
//! - `payload` and `lenient` — the typed structs both parsers read a body into, borrowing from
//!   it, and the lenient deserialization that fills them (see "How a body is read" below).
//! - [`api`] — Sentry's web API, for the buttons: change, assign and comment on an issue,
//!   find a member by email; answers classified as retry or refused.
//!
//! # What every payload must have
//!
//! The body must be a JSON object ([`Malformed`] `body is not JSON: …` / `body is not a JSON
//! object` otherwise). Routed resources also need a string `action` (`payload has no `action``);
//! the alert's `resource` is the header value (trimmed, lowercased) and its `action` the body's.
//! `installation.*` and resources Sluice does not know are [`Parsed::Ignored`] whatever else the
//! object holds, so a new Sentry resource is acknowledged (`202`) instead of failing: Sentry
//! disables integrations whose endpoint keeps failing. An unknown *action* of a known resource is
//! parsed like the known ones. An empty resource header is malformed.
//!
//! | resource | required | occurrence (`event_id`) | `issue_key` |
//! |---|---|---|---|
//! | `event_alert` | `data.event.event_id` | yes | `issue_id`, else [`fingerprint`] |
//! | `error` | `data.error.event_id` | yes | `issue_id`, else [`fingerprint`] |
//! | `issue` | `data.issue.id` | no | `data.issue.id` |
//! | `activity_alert` | `data.issue.id` | no | `data.issue.id` |
//! | `metric_alert` | `data.metric_alert.alert_rule.id` or `.id` | no | `metric:` + that id |
//! | `comment` | `data.issue_id` | no | `data.issue_id` |
//! | legacy plugin | `event.event_id` or `event.id` | yes | `id` (group), else [`fingerprint`] |
//!
//! Ids are accepted as strings or integers. Event ids are lowercased and a hyphenated UUID loses
//! its hyphens, so one event arriving in different payloads (`error.created`,
//! `event_alert.triggered`, legacy) has one id.
//!
//! # Fields
//!
//! - **Events** (`data.event`, `data.error`, legacy `event`): `title` = `title`, else
//!   `metadata.type: metadata.value` (either alone, else `metadata.title`), else the main
//!   exception as Sentry titles it (the last of `exception.values`: `type: value`, the type
//!   alone, `Error: value`; a synthetic one by its value), else `message`, else
//!   `logentry.formatted`/`logentry.message` (legacy: then the top-level `message`, then the
//!   culprit), else `<unlabeled event>` (Sentry's own words). `level` = `level`, else the
//!   `level` tag, else `error`. `environment` = `environment`, else the `environment` tag. `timestamp` = `timestamp` (float
//!   seconds), else `datetime` (RFC 3339). `event_url` = `web_url`; `issue_url` = `web_url` cut
//!   before `/events/` when that leaves an `…/issues/{id}/` page, else `web_url` itself. Project =
//!   the `{project}` of `url` (`/api/0/projects/{org}/{project}/events/…`), else the numeric
//!   `project` mapped through [`ProjectMap`], else that id as text, else `unknown` (legacy:
//!   `project_slug`, then `project`, first). `rule` = `data.triggered_rule` (else
//!   `data.issue_alert.title`) for `event_alert`; the legacy `triggering_rules` joined with `, `.
//! - **Issues** (`issue.*`, `activity_alert.*`): project = `issue.project.slug`, else its `id`
//!   mapped; `sentry_count` = `count`; `sentry_first_seen` = `firstSeen`; `timestamp` =
//!   `lastSeen`; `issue_url` = `web_url`, else `permalink`, else built from the organisation
//!   that `url` or `project_url` names (`https://host/organizations/{org}/issues/{id}/`,
//!   `https://{org}.sentry.io/issues/{id}/`); `short_id` = `shortId`; no environment (Sentry
//!   sends none). `detail`: `resolution: <data.resolution_type>` for
//!   `resolved`; `assigned to <name>` (name, else email; teams as `#team`) from `data.assignee`
//!   or `issue.assignedTo` for `assigned`. For `activity_alert`: `rule` = `data.alert.title`,
//!   `detail` = `data.activity.details.summary`, else `data.activity.type`.
//! - **Issue state** (`issue.resolved|ignored|archived|assigned|unresolved` only; `None` for
//!   every other alert): the status the action names (the serialized issue may lag behind the
//!   notice; `assigned` keeps the issue's `status`), resolved in the next release when
//!   `data.resolution_type` is `in_next_release` or `statusDetails.inNextRelease` is true; an
//!   archive's condition from `substatus` (`archived_until_escalating`, `archived_forever`),
//!   else `statusDetails` (`ignoreCount`, `ignoreDuration` minutes, `ignoreUntil`), else
//!   forever; the assignee as in `detail`; `by` = the top-level `actor.name` when
//!   `actor.type` is `user` (an integration, a rule or Sentry itself credit no person); no
//!   time (the store stamps the arrival). Names are kept to one line of 200 chars.
//! - **Metric alerts**: `projects` = `metric_alert.projects`, else `alert_rule.projects` (ids are
//!   mapped; duplicates dropped; at most 100); `environment` = `alert_rule.environment`; `title`
//!   = `data.description_title`, else `alert_rule.name`, else `metric_alert.title`; `rule` =
//!   `alert_rule.name`; `detail` = `data.description_text` with the literal two characters `\n`
//!   turned into a newline; `issue_url` = `data.web_url`; `level` = `fatal` for `critical`,
//!   `warning` for `warning`, `info` for `resolved`, `error` for any other action; `timestamp` =
//!   the first of `date_closed`, `date_detected`, `date_started`, `date_created`;
//!   `sentry_first_seen` = `date_started`.
//! - **Comments**: `projects` = `[data.project_slug]`; `title` = `Comment on issue {id} by
//!   {actor.name}` (`Comment edited …` / `Comment deleted …` for those actions); `detail` = the
//!   comment text; `level` = `info`; `timestamp` = `data.timestamp`.
//!
//! # Hostile input
//!
//! Strings are kept raw (Slack escaping happens when the message is built) but trimmed; empty
//! strings count as absent. Every string field is capped at 2,000 chars (cut on a char boundary,
//! without a marker); titles, rule and assignee names keep only their first non-empty line; at
//! most 200 tags are kept. Links are kept only if they are `http(s)://host…`, at most 2,000
//! chars and made of characters RFC 3986 allows (so never `<`, `>`, `|`, quotes or spaces).
//! Times outside years -9999..=9999 are dropped. Nothing in this module indexes or unwraps
//! payload data, and JSON nesting is bounded by serde_json's recursion limit (128).
//!
//! # How a body is read
//!
//! In one pass, into typed structs that name only the fields above (`payload.rs`); strings
//! borrow from the body unless they hold escapes. The rest (stack traces, breadcrumbs,
//! contexts: most of an event) is checked as JSON but never built. A body reads exactly as a
//! `serde_json::Value` of it would: a field of the wrong type is absent rather than an error,
//! the last of duplicate keys wins, a flat tags object keeps its keys in the order they first
//! appear, and a body a `Value` refuses (invalid UTF-8, a lone surrogate escape, nesting deeper
//! than 128, a number out of range, anywhere in the body) is refused with the same error.
//!
//! `fuzz.rs` checks all of this on mutated real payloads, and that the Slack messages built
//! from what is parsed stay within Slack's limits (docs/http-api.md says how to run it).

pub mod api;
mod fields;
pub mod legacy;
mod lenient;
pub mod parse;
mod payload;
pub mod verify;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

// Under `cargo bolero test` only: links the libFuzzer runtime into every binary of the package
// (see Cargo.toml).
#[cfg(fuzzing)]
use bolero as _;

pub use api::{ApiError, Member, SentryApi, org_from_issue_url};
pub use legacy::parse_legacy;
pub use parse::{Malformed, Parsed, ProjectMap, fingerprint, parse};
pub use verify::{TimestampError, check_timestamp, sign, verify_signature};
