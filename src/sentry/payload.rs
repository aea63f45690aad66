//! The shapes of Sentry's payloads, as far as the parsers read them: typed structs borrowing
//! from the body ([`lenient`](super::lenient)). Keys that are not listed here (stack traces,
//! breadcrumbs, contexts, request data: most of an event) are skipped while the body is read,
//! never built. What each field means for an [`Alert`](crate::alert::Alert) is in the `sentry`
//! module documentation.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{MapAccess, SeqAccess};

use super::fields::{
    MAX_TAGS, cap, count, first_line, one_line, project_ref, str_of, text, unix_seconds,
};
use super::lenient::{Lenient, List, Loose, Object, Seed, Skip, lenient_object};
use super::parse::ProjectMap;
use crate::issue::{Archive, Status};

lenient_object! {
    /// An Integration Platform delivery (`installation` and any other key unread).
    pub(crate) struct Delivery<'a> {
        "action" => action: Loose<'a>,
        "actor" => actor: Actor<'a>,
        "data" => data: Data<'a>,
    }
}

lenient_object! {
    /// Who made the change a delivery announces (the top-level `actor`).
    pub(crate) struct Actor<'a> {
        "type" => kind: Loose<'a>,
        "name" => name: Loose<'a>,
    }
}

lenient_object! {
    /// A delivery's `data`: what each resource reads from it.
    pub(crate) struct Data<'a> {
        /// `event_alert`: the event, and the rule that fired.
        "event" => event: Object<Event<'a>>,
        "triggered_rule" => triggered_rule: Loose<'a>,
        "issue_alert" => issue_alert: Titled<'a>,
        /// `error`: the event.
        "error" => error: Object<Event<'a>>,
        /// `issue` and `activity_alert`: the issue, and what happened to it.
        "issue" => issue: Object<Issue<'a>>,
        "resolution_type" => resolution_type: Loose<'a>,
        "assignee" => assignee: Assignee<'a>,
        "alert" => alert: Titled<'a>,
        "activity" => activity: Activity<'a>,
        /// `metric_alert`.
        "metric_alert" => metric_alert: Object<MetricAlert<'a>>,
        "description_title" => description_title: Loose<'a>,
        "description_text" => description_text: Loose<'a>,
        "web_url" => web_url: Loose<'a>,
        /// `comment`.
        "issue_id" => issue_id: Loose<'a>,
        "project_slug" => project_slug: Loose<'a>,
        "project_id" => project_id: Loose<'a>,
        "comment" => comment: Loose<'a>,
        "timestamp" => timestamp: Loose<'a>,
    }
}

lenient_object! {
    /// A legacy WebHooks plugin delivery (`src/sentry/legacy.rs`).
    pub(crate) struct LegacyDelivery<'a> {
        "id" => id: Loose<'a>,
        "project" => project: Loose<'a>,
        "project_slug" => project_slug: Loose<'a>,
        "level" => level: Loose<'a>,
        "culprit" => culprit: Loose<'a>,
        "message" => message: Loose<'a>,
        "url" => url: Loose<'a>,
        "triggering_rules" => triggering_rules: List<Loose<'a>>,
        "event" => event: Object<Event<'a>>,
    }
}

lenient_object! {
    /// An object read only for its `title` (`data.issue_alert`, `data.alert`).
    pub(crate) struct Titled<'a> {
        "title" => title: Loose<'a>,
    }
}

lenient_object! {
    /// An event (`data.event`, `data.error`, the legacy `event`), without its stack traces,
    /// breadcrumbs, contexts and request.
    pub(crate) struct Event<'a> {
        "event_id" => event_id: Loose<'a>,
        "id" => id: Loose<'a>,
        "issue_id" => issue_id: Loose<'a>,
        "group_id" => group_id: Loose<'a>,
        "title" => title: Loose<'a>,
        "metadata" => metadata: Metadata<'a>,
        "exception" => exception: Exception<'a>,
        "message" => message: Loose<'a>,
        "logentry" => logentry: LogEntry<'a>,
        "level" => level: Loose<'a>,
        "tags" => tags: Tags,
        "environment" => environment: Loose<'a>,
        "timestamp" => timestamp: Loose<'a>,
        "datetime" => datetime: Loose<'a>,
        "url" => url: Loose<'a>,
        "project" => project: Loose<'a>,
        "web_url" => web_url: Loose<'a>,
        "culprit" => culprit: Loose<'a>,
        "release" => release: Loose<'a>,
    }
}

lenient_object! {
    /// An event's or an issue's `metadata`.
    pub(crate) struct Metadata<'a> {
        "type" => kind: Loose<'a>,
        "value" => value: Loose<'a>,
        "title" => title: Loose<'a>,
    }
}

impl Metadata<'_> {
    /// A title from Sentry's `metadata`: `type: value`, either alone, or `metadata.title`.
    pub(crate) fn title(&self) -> Option<String> {
        let kind = str_of(&self.kind).and_then(|s| s.lines().next());
        let value = str_of(&self.value).and_then(first_line);
        match (kind, value) {
            (Some(kind), Some(value)) => first_line(&format!("{kind}: {value}")),
            (Some(kind), None) => first_line(kind),
            (None, Some(value)) => Some(value),
            (None, None) => one_line(&self.title),
        }
    }
}

lenient_object! {
    /// An event's `logentry`.
    pub(crate) struct LogEntry<'a> {
        "formatted" => formatted: Loose<'a>,
        "message" => message: Loose<'a>,
    }
}

/// An event's `exception`: `{"values": [...]}`, or a bare array (the older form). Only its main
/// exception is kept, the last entry that is an object (Sentry's own choice); stack traces are
/// skipped.
#[derive(Debug, Default)]
pub(crate) struct Exception<'a>(pub(crate) Option<Box<ExceptionValue<'a>>>);

impl<'de> Lenient<'de> for Exception<'de> {
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        LastObject::from_seq(seq).map(|last| Exception(last.0))
    }

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        ExceptionValues::from_map(map).map(|e| Exception(e.values.0))
    }
}

impl Exception<'_> {
    /// A title from the event's main exception, as Sentry builds it: `{type}: {value}` with the
    /// first line of the value; the type alone when there is no value; `Error` as the type when
    /// the SDK sent none. A synthetic exception (`mechanism.synthetic`, made up by an SDK around
    /// a crash) has a meaningless type, so only its value is used.
    pub(crate) fn title(&self) -> Option<String> {
        let main = self.0.as_deref()?;
        let value = str_of(&main.value).and_then(first_line);
        let synthetic = main.mechanism.synthetic.as_bool() == Some(true);
        let kind = str_of(&main.kind).and_then(first_line);
        match (synthetic, kind, value) {
            (true, _, value) => value,
            (false, None, None) => None,
            (false, kind, None) => kind,
            (false, kind, Some(value)) => {
                first_line(&format!("{}: {value}", kind.as_deref().unwrap_or("Error")))
            }
        }
    }
}

lenient_object! {
    /// The object form of `exception`.
    struct ExceptionValues<'a> {
        "values" => values: LastObject<ExceptionValue<'a>>,
    }
}

lenient_object! {
    /// One exception of `exception.values` (its `stacktrace` skipped).
    pub(crate) struct ExceptionValue<'a> {
        "type" => kind: Loose<'a>,
        "value" => value: Loose<'a>,
        "mechanism" => mechanism: Mechanism<'a>,
    }
}

lenient_object! {
    /// An exception's `mechanism`.
    pub(crate) struct Mechanism<'a> {
        "synthetic" => synthetic: Loose<'a>,
    }
}

/// The last entry of an array that is an object; `None` for anything else.
#[derive(Debug)]
struct LastObject<T>(Option<Box<T>>);

impl<T> Default for LastObject<T> {
    fn default() -> Self {
        LastObject(None)
    }
}

impl<'de, T: Lenient<'de>> Lenient<'de> for LastObject<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut last = None;
        while let Some(Object(item)) = seq.next_element_seed(Seed::<Object<T>>::new())? {
            if item.is_some() {
                last = item;
            }
        }
        Ok(LastObject(last))
    }
}

/// Event tags: Sentry's `[["key", "value"], …]`, also `[{"key": …, "value": …}, …]` and a flat
/// `{"key": "value"}` object. Entries that are not a pair of strings (or have an empty key) are
/// skipped; at most [`MAX_TAGS`] are kept, in payload order (in a flat object, the order in which
/// keys first appear, each with its last value, as a `serde_json` map with `preserve_order`
/// kept them).
#[derive(Debug, Default)]
pub(crate) struct Tags(pub(crate) Vec<(String, String)>);

impl<'de> Lenient<'de> for Tags {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut tags = Vec::new();
        while tags.len() < MAX_TAGS {
            match seq.next_element_seed(Seed::<Tag>::new())? {
                Some(tag) => tags.extend(tag.pair()),
                None => return Ok(Tags(tags)),
            }
        }
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Tags(tags))
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, Loose<'de>)> = Vec::new();
        let mut seen: HashMap<Cow<'de, str>, usize> = HashMap::new();
        while let Some(key) = map.next_key_seed(Seed::<Loose>::new())? {
            let value = map.next_value_seed(Seed::<Loose>::new())?;
            let Loose::Str(key) = key else { continue };
            match seen.get(&key).and_then(|&at| entries.get_mut(at)) {
                Some(entry) => entry.1 = value,
                None => {
                    seen.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
        }
        let tags = entries
            .iter()
            .filter_map(|(key, value)| {
                let key = key.trim();
                (!key.is_empty()).then_some((cap(key), cap(value.as_str()?)))
            })
            .take(MAX_TAGS)
            .collect();
        Ok(Tags(tags))
    }
}

/// One entry of a tags array: `["key", "value"]` or `{"key": …, "value": …}`.
#[derive(Debug, Default)]
struct Tag<'a> {
    key: Loose<'a>,
    value: Loose<'a>,
}

impl Tag<'_> {
    /// The tag, if its key is a non-empty string and its value a string.
    fn pair(&self) -> Option<(String, String)> {
        let key = str_of(&self.key)?;
        let value = self.value.as_str()?;
        Some((cap(key), cap(value)))
    }
}

impl<'de> Lenient<'de> for Tag<'de> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let Some(key) = seq.next_element_seed(Seed::<Loose>::new())? else {
            return Ok(Tag::default());
        };
        let Some(value) = seq.next_element_seed(Seed::<Loose>::new())? else {
            return Ok(Tag::default());
        };
        if seq.next_element::<Skip>()?.is_some() {
            while seq.next_element::<Skip>()?.is_some() {}
            return Ok(Tag::default());
        }
        Ok(Tag { key, value })
    }

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        TagObject::from_map(map).map(|tag| Tag {
            key: tag.key,
            value: tag.value,
        })
    }
}

lenient_object! {
    /// The object form of a tag.
    struct TagObject<'a> {
        "key" => key: Loose<'a>,
        "value" => value: Loose<'a>,
    }
}

lenient_object! {
    /// A serialized Sentry issue: a webhook's `data.issue`, or the issue the API answers a
    /// change with.
    pub(crate) struct Issue<'a> {
        "id" => id: Loose<'a>,
        "project" => project: ProjectRef<'a>,
        "title" => title: Loose<'a>,
        "metadata" => metadata: Metadata<'a>,
        "web_url" => web_url: Loose<'a>,
        "permalink" => permalink: Loose<'a>,
        "url" => url: Loose<'a>,
        "project_url" => project_url: Loose<'a>,
        "shortId" => short_id: Loose<'a>,
        "level" => level: Loose<'a>,
        "culprit" => culprit: Loose<'a>,
        "lastSeen" => last_seen: Loose<'a>,
        "firstSeen" => first_seen: Loose<'a>,
        "count" => count: Loose<'a>,
        "assignedTo" => assigned_to: Assignee<'a>,
        "status" => status: Loose<'a>,
        "substatus" => substatus: Loose<'a>,
        "statusDetails" => status_details: StatusDetails<'a>,
    }
}

lenient_object! {
    /// An issue's `statusDetails`.
    pub(crate) struct StatusDetails<'a> {
        "inNextRelease" => in_next_release: Loose<'a>,
        "inUpcomingRelease" => in_upcoming_release: Loose<'a>,
        "ignoreCount" => ignore_count: Loose<'a>,
        "ignoreDuration" => ignore_duration: Loose<'a>,
        "ignoreUntil" => ignore_until: Loose<'a>,
    }
}

impl Issue<'_> {
    /// The status the issue reports: `status` `resolved` (in the next release when
    /// `statusDetails.inNextRelease` or `inUpcomingRelease` is true), `resolvedInNextRelease`,
    /// `ignored`/`archived` (with [`Issue::archive`]), `unresolved`. `None` without a `status`,
    /// or for a transient one (`pending_deletion`, `pending_merge`, `reprocessing`).
    pub(crate) fn reported_status(&self) -> Option<Status> {
        let details = &self.status_details;
        let flag = |v: &Loose| v.as_bool() == Some(true);
        match str_of(&self.status)? {
            "resolved" => Some(Status::Resolved {
                in_next_release: flag(&details.in_next_release)
                    || flag(&details.in_upcoming_release),
            }),
            "resolvedInNextRelease" => Some(Status::Resolved {
                in_next_release: true,
            }),
            "ignored" | "archived" => Some(Status::Archived {
                archive: self.archive(),
            }),
            "unresolved" => Some(Status::Unresolved),
            _ => None,
        }
    }

    /// How long an archived issue stays archived: `substatus` `archived_until_escalating` or
    /// `archived_forever`; else (`archived_until_condition_met`, or no substatus) the first of
    /// `statusDetails.ignoreCount` (events still to come), `ignoreDuration` (minutes; the answer
    /// of Sentry's bulk update), `ignoreUntil` (when it ends); with none of them, forever.
    pub(crate) fn archive(&self) -> Archive {
        match str_of(&self.substatus) {
            Some("archived_until_escalating") => return Archive::Escalating,
            Some("archived_forever") => return Archive::Forever,
            _ => {}
        }
        let details = &self.status_details;
        let positive = |v: &Loose| count(v).filter(|n| *n > 0);
        if let Some(count) = positive(&details.ignore_count) {
            Archive::Count { count }
        } else if let Some(minutes) = positive(&details.ignore_duration) {
            Archive::Minutes { minutes }
        } else if let Some(secs) = unix_seconds(&details.ignore_until) {
            Archive::UntilTime {
                until_ms: secs.saturating_mul(1000),
            }
        } else {
            Archive::Forever
        }
    }
}

/// A project named by slug or id: an object `{"slug", "id"}` (`issue.project`, the entries of a
/// metric alert's `projects`) or the slug or id alone.
#[derive(Debug, Default)]
pub(crate) struct ProjectRef<'a> {
    alone: Loose<'a>,
    object: ProjectObject<'a>,
}

lenient_object! {
    /// The object form of a project reference.
    struct ProjectObject<'a> {
        "slug" => slug: Loose<'a>,
        "id" => id: Loose<'a>,
    }
}

impl<'de> Lenient<'de> for ProjectRef<'de> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        ProjectObject::from_map(map).map(|object| ProjectRef {
            alone: Loose::Other,
            object,
        })
    }

    fn from_scalar(alone: Loose<'de>) -> Self {
        ProjectRef {
            alone,
            object: ProjectObject::default(),
        }
    }
}

impl ProjectRef<'_> {
    /// The project's slug: `slug`, else the `id` mapped through `projects`, else the slug or
    /// id sent alone (mapped too).
    pub(crate) fn slug(&self, projects: &ProjectMap) -> Option<String> {
        text(&self.object.slug)
            .or_else(|| project_ref(&self.object.id, projects))
            .or_else(|| project_ref(&self.alone, projects))
    }
}

/// Who an issue is assigned to: a name alone, or `{"type", "name", "email", "username",
/// "slug"}` (`data.assignee`, `issue.assignedTo`).
#[derive(Debug, Default)]
pub(crate) struct Assignee<'a> {
    alone: Loose<'a>,
    object: AssigneeObject<'a>,
}

lenient_object! {
    /// The object form of an assignee.
    struct AssigneeObject<'a> {
        "type" => kind: Loose<'a>,
        "name" => name: Loose<'a>,
        "email" => email: Loose<'a>,
        "username" => username: Loose<'a>,
        "slug" => slug: Loose<'a>,
    }
}

impl<'de> Lenient<'de> for Assignee<'de> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        AssigneeObject::from_map(map).map(|object| Assignee {
            alone: Loose::Other,
            object,
        })
    }

    fn from_scalar(alone: Loose<'de>) -> Self {
        Assignee {
            alone,
            object: AssigneeObject::default(),
        }
    }
}

impl Assignee<'_> {
    /// The assignee's display name: `name`, else `email`, else `username`/`slug`; teams as
    /// `#name`.
    pub(crate) fn name(&self) -> Option<String> {
        if let Some(name) = str_of(&self.alone) {
            return first_line(name);
        }
        let o = &self.object;
        let name = [&o.name, &o.email, &o.username, &o.slug]
            .into_iter()
            .find_map(|v| str_of(v).and_then(first_line))?;
        if str_of(&o.kind) == Some("team") && !name.starts_with('#') {
            Some(format!("#{name}"))
        } else {
            Some(name)
        }
    }
}

lenient_object! {
    /// An `activity_alert`'s `data.activity`.
    pub(crate) struct Activity<'a> {
        "type" => kind: Loose<'a>,
        "details" => details: ActivityDetails<'a>,
    }
}

lenient_object! {
    /// `data.activity.details`.
    pub(crate) struct ActivityDetails<'a> {
        "summary" => summary: Loose<'a>,
    }
}

lenient_object! {
    /// A metric alert (`data.metric_alert`).
    pub(crate) struct MetricAlert<'a> {
        "id" => id: Loose<'a>,
        "alert_rule" => alert_rule: AlertRule<'a>,
        "projects" => projects: List<ProjectRef<'a>>,
        "title" => title: Loose<'a>,
        "date_closed" => date_closed: Loose<'a>,
        "date_detected" => date_detected: Loose<'a>,
        "date_started" => date_started: Loose<'a>,
        "date_created" => date_created: Loose<'a>,
    }
}

lenient_object! {
    /// A metric alert's `alert_rule`.
    pub(crate) struct AlertRule<'a> {
        "id" => id: Loose<'a>,
        "name" => name: Loose<'a>,
        "environment" => environment: Loose<'a>,
        "projects" => projects: List<ProjectRef<'a>>,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::sentry::lenient::from_value;

    fn tags(v: &Value) -> Vec<(String, String)> {
        from_value::<Tags>(v).0
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn tags_accept_pairs_and_objects_and_skip_the_rest() {
        let v = json!([["a", "1"], ["b"], [1, "x"], {"key": "c", "value": "3"}, "d", ["", "e"], ["f", 2], ["g", "7", "x"]]);
        assert_eq!(tags(&v), pairs(&[("a", "1"), ("c", "3")]));
        assert_eq!(tags(&json!({"k": "v", "n": 1})), pairs(&[("k", "v")]));
        let many: Vec<Value> = (0..500).map(|i| json!([format!("k{i}"), "v"])).collect();
        assert_eq!(tags(&Value::Array(many)).len(), MAX_TAGS);
        assert!(tags(&json!("a=b")).is_empty());
    }

    #[test]
    fn flat_tags_keep_the_order_keys_first_appear_with_their_last_value() {
        let body = br#"{"tags": {"z": "1", "a": "2", " ": "3", "z": "4", "m": 5, "m": "6"}}"#;
        let event = crate::sentry::lenient::from_body::<Event>(body)
            .unwrap()
            .unwrap();
        assert_eq!(event.tags.0, pairs(&[("z", "4"), ("a", "2"), ("m", "6")]));
    }

    #[test]
    fn the_main_exception_is_the_last_object() {
        let title = |v: Value| from_value::<Exception>(&v).title();
        let chained = json!({"values": [
            {"type": "KeyError", "value": "'x'"},
            {"type": "ValueError", "value": "bad\nmore", "stacktrace": {"frames": [{}, {}]}},
            "not an exception",
        ]});
        assert_eq!(title(chained).as_deref(), Some("ValueError: bad"));
        assert_eq!(
            title(json!([{"value": "no type"}])).as_deref(),
            Some("Error: no type")
        );
        assert_eq!(
            title(json!({"values": {"values": [{"type": "Nested"}]}})),
            None
        );
        let synthetic =
            json!([{"type": "Crash", "value": "segv", "mechanism": {"synthetic": true}}]);
        assert_eq!(title(synthetic).as_deref(), Some("segv"));
    }

    #[test]
    fn assignees_and_projects_read_alone_or_as_objects() {
        let name = |v: Value| from_value::<Assignee>(&v).name();
        assert_eq!(name(json!(" Ada \n")).as_deref(), Some("Ada"));
        assert_eq!(
            name(json!({"type": "team", "slug": "payments"})).as_deref(),
            Some("#payments")
        );
        assert_eq!(
            name(json!({"email": "a@b.c", "name": ""})).as_deref(),
            Some("a@b.c")
        );
        assert_eq!(name(json!(7)), None);
        let projects = ProjectMap::from([("4505".to_owned(), "checkout".to_owned())]);
        let slug = |v: Value| from_value::<ProjectRef>(&v).slug(&projects);
        assert_eq!(slug(json!(4505)).as_deref(), Some("checkout"));
        assert_eq!(slug(json!({"id": "4505"})).as_deref(), Some("checkout"));
        assert_eq!(
            slug(json!({"slug": "web", "id": 1})).as_deref(),
            Some("web")
        );
        assert_eq!(slug(json!([4505])), None);
    }
}
