//! Tests of `sentry` against the real (documentation) payloads in `tests/fixtures/sentry/`,
//! hand-built legacy payloads, and property tests over arbitrary input.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::alert::{Alert, Level};
use crate::issue::{Archive, IssueState, Status};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentry/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Sentry sends compact JSON (`separators=(",", ":")`) in the file's key order; so do we.
fn compact_json(pretty: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(pretty).expect("fixture is JSON");
    serde_json::to_vec(&value).expect("serialises")
}

fn no_projects() -> ProjectMap {
    ProjectMap::new()
}

fn alert(resource: &str, name: &str) -> Alert {
    match parse(resource, &compact_json(&fixture(name)), &no_projects()) {
        Ok(Parsed::Alert(alert)) => *alert,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn every_fixture_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixtures directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "activity_alert.triggered.json",
            "comment.created.json",
            "error.created.json",
            "event_alert.triggered.json",
            "installation.created.json",
            "issue.created.2019-docs.json",
            "issue.created.json",
            "metric_alert.resolved.json",
        ],
        "a fixture was added: give it a test below"
    );
}

#[test]
fn compact_comment_fixture_matches_the_signed_vector() {
    let body = compact_json(&fixture("comment.created.json"));
    assert!(verify_signature(
        &body,
        "96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c38",
        &["test-client-secret"]
    ));
    // Verification is over the raw bytes: the pretty file itself does not verify.
    assert!(!verify_signature(
        &fixture("comment.created.json"),
        "96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c38",
        &["test-client-secret"]
    ));
}

#[test]
fn event_alert_triggered() {
    let a = alert("event_alert", "event_alert.triggered.json");
    assert_eq!(a.resource, "event_alert");
    assert_eq!(a.action, "triggered");
    assert_eq!(a.kind(), "event_alert.triggered");
    assert_eq!(a.issue_key, "1117540176");
    assert_eq!(
        a.event_id.as_deref(),
        Some("e4874d664c3540c1a32eab185f12c5ab")
    );
    assert!(a.is_occurrence());
    assert_eq!(a.projects, ["front-end"]);
    assert_eq!(a.level, Level::Error);
    assert_eq!(a.title, "ReferenceError: heck is not defined");
    assert_eq!(a.culprit.as_deref(), Some("?(<anonymous>)"));
    assert_eq!(a.release, None);
    assert_eq!(a.environment, None);
    assert_eq!(
        a.issue_url.as_deref(),
        Some("https://sentry.io/organizations/test-org/issues/1117540176/")
    );
    assert_eq!(
        a.event_url.as_deref(),
        Some(
            "https://sentry.io/organizations/test-org/issues/1117540176/events/e4874d664c3540c1a32eab185f12c5ab/"
        )
    );
    assert_eq!(a.rule.as_deref(), Some("Very Important Alert Rule!"));
    assert_eq!(a.timestamp, Some(1_566_248_777));
    assert_eq!(a.tags.len(), 9);
    assert_eq!(a.tag("browser"), Some("Chrome 75.0.3770"));
    assert_eq!(a.tag("url"), Some("https://null.jsbin.com/runner"));
    assert_eq!(
        (a.short_id, a.sentry_count, a.sentry_first_seen, a.detail),
        (None, None, None, None)
    );
}

#[test]
fn error_created() {
    let a = alert("error", "error.created.json");
    assert_eq!(a.kind(), "error.created");
    assert_eq!(a.issue_key, "1170820242");
    assert_eq!(
        a.event_id.as_deref(),
        Some("bb78c1407cea4519aa397afc059c793d")
    );
    assert_eq!(a.projects, ["front-end"]);
    assert_eq!(a.level, Level::Error);
    assert_eq!(a.title, "ReferenceError: blooopy is not defined");
    assert_eq!(a.culprit.as_deref(), Some("?(runner)"));
    assert_eq!(
        a.issue_url.as_deref(),
        Some("https://sentry.io/organizations/test-org/issues/1170820242/")
    );
    assert_eq!(
        a.event_url.as_deref(),
        Some(
            "https://sentry.io/organizations/test-org/issues/1170820242/events/bb78c1407cea4519aa397afc059c793d/"
        )
    );
    assert_eq!(a.rule, None);
    assert_eq!(a.timestamp, Some(1_566_248_317));
    assert_eq!(a.tag("level"), Some("error"));
}

#[test]
fn issue_created() {
    let a = alert("issue", "issue.created.json");
    assert_eq!(a.kind(), "issue.created");
    assert_eq!(a.issue_key, "1234567890");
    assert_eq!(a.event_id, None);
    assert!(!a.is_occurrence());
    assert_eq!(a.projects, ["python"]);
    assert_eq!(a.level, Level::Fatal);
    assert_eq!(
        a.title,
        "Error generated with event_id: 495d375a-1df6-45c0-9890-34dae8e1b6a4(Priority: HIGH)"
    );
    assert_eq!(
        a.culprit.as_deref(),
        Some("test-transaction-0-41e49cd3-7252-441f-8d27-63a9ad697b0a")
    );
    assert_eq!(a.short_id.as_deref(), Some("PYTHON-Y"));
    assert_eq!(a.sentry_count, Some(3));
    assert_eq!(a.sentry_first_seen, Some(1_762_808_160)); // 2025-11-10T20:56:00.679Z
    assert_eq!(a.timestamp, Some(1_762_808_160));
    assert_eq!(
        a.issue_url.as_deref(),
        Some("https://example-org.sentry.io/issues/1234567890/")
    );
    assert_eq!(a.event_url, None);
    assert_eq!((a.rule, a.detail, a.environment), (None, None, None));
    assert!(a.tags.is_empty());
}

#[test]
fn issue_created_2019_docs() {
    let a = alert("issue", "issue.created.2019-docs.json");
    assert_eq!(
        a.issue_key, "1170820242",
        "same key as the error.created of this issue"
    );
    assert_eq!(a.projects, ["front-end"]);
    assert_eq!(a.level, Level::Error);
    assert_eq!(a.title, "ReferenceError: blooopy is not defined");
    assert_eq!(a.culprit.as_deref(), Some("?(runner)"));
    assert_eq!(a.short_id.as_deref(), Some("FRONT-END-9"));
    assert_eq!(a.sentry_count, Some(1));
    assert_eq!(a.sentry_first_seen, Some(1_566_248_317));
    assert_eq!(
        a.issue_url, None,
        "permalink is null and there is no web_url"
    );
}

#[test]
fn activity_alert_triggered() {
    let a = alert("activity_alert", "activity_alert.triggered.json");
    assert_eq!(a.kind(), "activity_alert.triggered");
    assert_eq!(a.issue_key, "43");
    assert_eq!(a.event_id, None);
    assert_eq!(a.projects, ["error-gen"]);
    assert_eq!(a.level, Level::Warning);
    assert_eq!(a.title, "TypeError: you aren't my type");
    assert_eq!(a.short_id.as_deref(), Some("ERROR-GEN-R"));
    assert_eq!(a.sentry_count, Some(1));
    assert_eq!(
        a.issue_url.as_deref(),
        Some("https://sentry.io/organizations/acme/issues/43/")
    );
    assert_eq!(
        a.rule.as_deref(),
        Some("I'm keeping an eye on Seer \u{1F440}")
    );
    assert_eq!(
        a.detail.as_deref(),
        Some(
            "Synthetic test error deliberately fired by error-generator.sentry.dev in a batch of 24 against the error-gen project"
        )
    );
}

#[test]
fn metric_alert_resolved() {
    let a = alert("metric_alert", "metric_alert.resolved.json");
    assert_eq!(a.kind(), "metric_alert.resolved");
    assert_eq!(a.issue_key, "metric:7");
    assert_eq!(a.event_id, None);
    assert_eq!(a.projects, ["bar"]);
    assert_eq!(a.environment, None);
    assert_eq!(a.level, Level::Info);
    assert_eq!(a.title, "Resolved: Too many errors");
    assert_eq!(a.rule.as_deref(), Some("Too many errors"));
    assert_eq!(
        a.detail.as_deref(),
        Some("1000 events in the last 10 minutes\nFilter: level:error")
    );
    assert_eq!(
        a.issue_url.as_deref(),
        Some("https://sentry.io/organizations/baz/alerts/1/")
    );
    assert_eq!(a.timestamp, Some(1_600_000_000));
}

#[test]
fn metric_alert_levels_follow_the_action() {
    let mut v: Value = serde_json::from_slice(&fixture("metric_alert.resolved.json")).unwrap();
    for (action, level) in [
        ("critical", Level::Fatal),
        ("warning", Level::Warning),
        ("resolved", Level::Info),
        ("something_new", Level::Error),
    ] {
        v["action"] = json!(action);
        v["data"]["metric_alert"]["alert_rule"]["environment"] = json!("production");
        let Ok(Parsed::Alert(a)) = parse(
            "metric_alert",
            &serde_json::to_vec(&v).unwrap(),
            &no_projects(),
        ) else {
            panic!("{action}");
        };
        assert_eq!((a.action.as_str(), a.level), (action, level));
        assert_eq!(a.environment.as_deref(), Some("production"));
    }
}

#[test]
fn comment_created() {
    let a = alert("comment", "comment.created.json");
    assert_eq!(a.kind(), "comment.created");
    assert_eq!(a.issue_key, "100");
    assert_eq!(a.event_id, None);
    assert_eq!(a.projects, ["sentry"]);
    assert_eq!(a.level, Level::Info);
    assert_eq!(a.title, "Comment on issue 100 by colleen");
    assert_eq!(a.detail.as_deref(), Some("adding a comment"));
    assert_eq!(a.timestamp, Some(1_646_257_904));
    assert_eq!((a.issue_url, a.event_url), (None, None));
}

#[test]
fn installation_is_ignored() {
    let parsed = parse(
        "installation",
        &fixture("installation.created.json"),
        &no_projects(),
    );
    assert_eq!(
        parsed,
        Ok(Parsed::Ignored("installation.created is not routed".into()))
    );
}

#[test]
fn unknown_resources_are_ignored_even_without_action() {
    assert_eq!(
        parse("seer", br#"{"action":"created","data":{}}"#, &no_projects()),
        Ok(Parsed::Ignored("unrecognised resource `seer`".into()))
    );
    assert_eq!(
        parse("preprod_artifact", b"{}", &no_projects()),
        Ok(Parsed::Ignored(
            "unrecognised resource `preprod_artifact`".into()
        ))
    );
    let long = "x".repeat(1000);
    let Ok(Parsed::Ignored(reason)) = parse(&long, b"{}", &no_projects()) else {
        panic!()
    };
    assert!(
        reason.len() < 100,
        "the unsigned header is clipped in the reason"
    );
}

#[test]
fn resource_header_is_trimmed_and_case_folded() {
    let body = compact_json(&fixture("error.created.json"));
    let Ok(Parsed::Alert(a)) = parse(" Error ", &body, &no_projects()) else {
        panic!()
    };
    assert_eq!(a.resource, "error");
}

fn malformed(resource: &str, body: &[u8]) -> String {
    match parse(resource, body, &no_projects()) {
        Err(Malformed(msg)) => msg,
        other => panic!(
            "{resource} {:?}: expected Malformed, got {other:?}",
            String::from_utf8_lossy(body)
        ),
    }
}

#[test]
fn malformed_payloads_name_what_is_missing() {
    assert!(malformed("error", b"not json").starts_with("body is not JSON: "));
    assert!(malformed("error", b"").starts_with("body is not JSON: "));
    assert_eq!(malformed("error", b"[1,2]"), "body is not a JSON object");
    assert_eq!(
        malformed("installation", b"\"x\""),
        "body is not a JSON object"
    );
    assert_eq!(malformed("error", b"{}"), "payload has no `action`");
    assert_eq!(
        malformed("error", br#"{"action":7}"#),
        "payload has no `action`"
    );
    assert_eq!(
        malformed("", br#"{"action":"created"}"#),
        "no Sentry-Hook-Resource header"
    );
    assert_eq!(
        malformed("error", br#"{"action":"created"}"#),
        "error payload has no data.error"
    );
    assert_eq!(
        malformed(
            "event_alert",
            br#"{"action":"triggered","data":{"event":{"title":"x"}}}"#
        ),
        "event_alert payload has no data.event.event_id"
    );
    assert_eq!(
        malformed(
            "event_alert",
            br#"{"action":"triggered","data":{"event":[]}}"#
        ),
        "event_alert payload has no data.event"
    );
    assert_eq!(
        malformed(
            "issue",
            br#"{"action":"created","data":{"issue":{"title":"x"}}}"#
        ),
        "issue payload has no data.issue.id"
    );
    assert_eq!(
        malformed("activity_alert", br#"{"action":"triggered","data":{}}"#),
        "activity_alert payload has no data.issue"
    );
    assert_eq!(
        malformed(
            "metric_alert",
            br#"{"action":"critical","data":{"metric_alert":{}}}"#
        ),
        "metric_alert payload has no data.metric_alert.alert_rule.id or data.metric_alert.id"
    );
    assert_eq!(
        malformed("metric_alert", br#"{"action":"critical","data":null}"#),
        "metric_alert payload has no data.metric_alert"
    );
    assert_eq!(
        malformed(
            "comment",
            br#"{"action":"created","data":{"comment":"hi"}}"#
        ),
        "comment payload has no data.issue_id"
    );
}

#[test]
fn minimal_event_falls_back_to_fingerprint_and_project_map() {
    let body = br#"{"action":"created","data":{"error":{"event_id":"E4874D66-4C35-40C1-A32E-AB185F12C5AB","project":4505,"metadata":{"type":"KeyError","value":"'x'\nmore"},"tags":[["environment","production"],["level","warning"]],"datetime":"2019-08-19T21:06:17.677000Z","web_url":"javascript:alert(1)"}}}"#;
    let projects = ProjectMap::from([("4505".to_string(), "checkout".to_string())]);
    let Ok(Parsed::Alert(a)) = parse("error", body, &projects) else {
        panic!()
    };
    assert_eq!(
        a.event_id.as_deref(),
        Some("e4874d664c3540c1a32eab185f12c5ab")
    );
    assert_eq!(a.projects, ["checkout"]);
    assert_eq!(a.title, "KeyError: 'x'");
    assert_eq!(a.issue_key, fingerprint("checkout", "KeyError: 'x'", None));
    assert_eq!(a.environment.as_deref(), Some("production"));
    assert_eq!(a.level, Level::Warning);
    assert_eq!(a.timestamp, Some(1_566_248_777));
    assert_eq!(
        (a.issue_url, a.event_url),
        (None, None),
        "only http(s) links"
    );

    // Unmapped id: the id itself; no project at all: `unknown`; no title: `<unlabeled event>`,
    // as Sentry writes it.
    let Ok(Parsed::Alert(a)) = parse("error", body, &no_projects()) else {
        panic!()
    };
    assert_eq!(a.projects, ["4505"]);
    let body = br#"{"action":"created","data":{"error":{"event_id":"abc","issue_id":17}}}"#;
    let Ok(Parsed::Alert(a)) = parse("error", body, &no_projects()) else {
        panic!()
    };
    assert_eq!(
        (a.projects[0].as_str(), a.title.as_str()),
        ("unknown", "<unlabeled event>")
    );
    assert_eq!(a.issue_key, "17");
    assert_eq!(a.level, Level::Error);
}

#[test]
fn titles_are_one_line_and_strings_capped() {
    let huge = "é".repeat(5_000);
    let body = serde_json::to_vec(&json!({
        "action": "triggered",
        "data": {"event": {
            "event_id": "1",
            "title": format!("\n  first line  \nsecond line"),
            "culprit": huge,
            "release": huge,
            "environment": huge,
            "tags": [[huge, huge]],
            "web_url": format!("https://sentry.io/{huge}"),
        }, "triggered_rule": huge}
    }))
    .unwrap();
    let Ok(Parsed::Alert(a)) = parse("event_alert", &body, &no_projects()) else {
        panic!()
    };
    assert_eq!(a.title, "first line");
    for s in [&a.culprit, &a.release, &a.environment, &a.rule] {
        assert_eq!(s.as_deref().map(|s| s.chars().count()), Some(2_000));
    }
    assert_eq!(a.tags[0].0.chars().count(), 2_000);
    assert_eq!(a.event_url, None, "over-long URLs are dropped, not cut");
}

#[test]
fn issue_resolved_and_assigned_carry_detail() {
    let mut v: Value = serde_json::from_slice(&fixture("issue.created.json")).unwrap();
    v["action"] = json!("resolved");
    v["data"]["resolution_type"] = json!("in_next_release");
    let Ok(Parsed::Alert(a)) = parse("issue", &serde_json::to_vec(&v).unwrap(), &no_projects())
    else {
        panic!()
    };
    assert_eq!(a.kind(), "issue.resolved");
    assert_eq!(a.detail.as_deref(), Some("resolution: in_next_release"));

    v["action"] = json!("assigned");
    v["data"]["issue"]["assignedTo"] =
        json!({"type": "user", "id": "1", "name": "Ada Lovelace", "email": "ada@example.com"});
    let Ok(Parsed::Alert(a)) = parse("issue", &serde_json::to_vec(&v).unwrap(), &no_projects())
    else {
        panic!()
    };
    assert_eq!(a.detail.as_deref(), Some("assigned to Ada Lovelace"));

    v["data"]["assignee"] = json!({"type": "team", "name": "payments"});
    let Ok(Parsed::Alert(a)) = parse("issue", &serde_json::to_vec(&v).unwrap(), &no_projects())
    else {
        panic!()
    };
    assert_eq!(a.detail.as_deref(), Some("assigned to #payments"));

    v["action"] = json!("archived");
    let Ok(Parsed::Alert(a)) = parse("issue", &serde_json::to_vec(&v).unwrap(), &no_projects())
    else {
        panic!()
    };
    assert_eq!((a.kind().as_str(), a.detail), ("issue.archived", None));
}

#[test]
fn issue_project_by_id_uses_the_map() {
    let body =
        br#"{"action":"created","data":{"issue":{"id":5,"project":{"id":"4505"},"count":12}}}"#;
    let projects = ProjectMap::from([("4505".to_string(), "checkout".to_string())]);
    let Ok(Parsed::Alert(a)) = parse("issue", body, &projects) else {
        panic!()
    };
    assert_eq!(
        (a.issue_key.as_str(), a.projects[0].as_str()),
        ("5", "checkout")
    );
    assert_eq!(a.sentry_count, Some(12));
    assert_eq!(a.title, "<unlabeled event>");
}

fn legacy_payload() -> Value {
    // Built from `get_group_data` in getsentry/sentry src/sentry/plugins/sentry_webhooks/plugin.py.
    json!({
        "id": "1117540176",
        "project": "front-end",
        "project_name": "Front End",
        "project_slug": "front-end",
        "logger": null,
        "level": "error",
        "culprit": "?(<anonymous>)",
        "message": "ReferenceError: heck is not defined",
        "url": "https://sentry.io/organizations/test-org/issues/1117540176/?referrer=webhooks_plugin",
        "triggering_rules": ["Very Important Alert Rule!", "Another"],
        "event": {
            "event_id": "e4874d664c3540c1a32eab185f12c5ab",
            "id": "e4874d664c3540c1a32eab185f12c5ab",
            "level": "error",
            "environment": "production",
            "release": "front-end@1.2.3",
            "timestamp": 1566248777.677,
            "title": "ReferenceError: heck is not defined",
            "metadata": {"type": "ReferenceError", "value": "heck is not defined"},
            "tags": [["environment", "production"], ["level", "error"], ["browser", "Chrome 75.0.3770"]],
            "project": 1
        }
    })
}

#[test]
fn legacy_payload_is_normalised() {
    let a = parse_legacy(
        &serde_json::to_vec(&legacy_payload()).unwrap(),
        &no_projects(),
    )
    .unwrap();
    assert_eq!(a.kind(), "legacy.triggered");
    assert_eq!(a.issue_key, "1117540176");
    assert_eq!(
        a.event_id.as_deref(),
        Some("e4874d664c3540c1a32eab185f12c5ab")
    );
    assert_eq!(a.projects, ["front-end"]);
    assert_eq!(a.environment.as_deref(), Some("production"));
    assert_eq!(a.level, Level::Error);
    assert_eq!(a.title, "ReferenceError: heck is not defined");
    assert_eq!(a.culprit.as_deref(), Some("?(<anonymous>)"));
    assert_eq!(a.release.as_deref(), Some("front-end@1.2.3"));
    assert_eq!(
        a.issue_url.as_deref(),
        Some(
            "https://sentry.io/organizations/test-org/issues/1117540176/?referrer=webhooks_plugin"
        )
    );
    assert_eq!(
        a.rule.as_deref(),
        Some("Very Important Alert Rule!, Another")
    );
    assert_eq!(a.timestamp, Some(1_566_248_777));
    assert_eq!(a.tag("browser"), Some("Chrome 75.0.3770"));

    // The same event as event_alert.triggered has the same issue key and event id.
    let b = alert("event_alert", "event_alert.triggered.json");
    assert_eq!((&a.issue_key, &a.event_id), (&b.issue_key, &b.event_id));
}

#[test]
fn legacy_fallbacks() {
    let mut v = legacy_payload();
    let ev = v["event"].as_object_mut().unwrap();
    for key in ["event_id", "title", "metadata", "environment"] {
        ev.remove(key);
    }
    let obj = v.as_object_mut().unwrap();
    for key in ["id", "project_slug", "project", "message"] {
        obj.remove(key);
    }
    let projects = ProjectMap::from([("1".to_string(), "web".to_string())]);
    let a = parse_legacy(&serde_json::to_vec(&v).unwrap(), &projects).unwrap();
    assert_eq!(
        a.event_id.as_deref(),
        Some("e4874d664c3540c1a32eab185f12c5ab"),
        "event.id"
    );
    assert_eq!(a.projects, ["web"], "event.project mapped");
    assert_eq!(a.title, "?(<anonymous>)", "culprit as last resort");
    assert_eq!(
        a.environment.as_deref(),
        Some("production"),
        "environment tag"
    );
    assert_eq!(
        a.issue_key,
        fingerprint("web", "?(<anonymous>)", Some("?(<anonymous>)"))
    );
}

#[test]
fn legacy_malformed() {
    let m = |v: Value| {
        parse_legacy(&serde_json::to_vec(&v).unwrap(), &no_projects())
            .unwrap_err()
            .0
    };
    assert_eq!(
        m(json!({"id": "1"})),
        "legacy payload has no `event` object"
    );
    assert_eq!(
        m(json!({"id": "1", "event": {"title": "x"}})),
        "legacy payload has no event.event_id or event.id"
    );
    assert_eq!(m(json!([])), "body is not a JSON object");
    assert!(
        parse_legacy(b"\xff\xfe", &no_projects())
            .unwrap_err()
            .0
            .starts_with("body is not JSON")
    );
}

// ---- property tests -------------------------------------------------------------------------

const RESOURCES: &[&str] = &[
    "event_alert",
    "error",
    "issue",
    "activity_alert",
    "metric_alert",
    "comment",
    "installation",
    "something_else",
];

/// Keys the parsers look at, so that arbitrary objects reach deep code paths.
const KEYS: &[&str] = &[
    "action",
    "data",
    "event",
    "error",
    "issue",
    "metric_alert",
    "alert_rule",
    "event_id",
    "id",
    "issue_id",
    "group_id",
    "title",
    "message",
    "metadata",
    "type",
    "value",
    "culprit",
    "level",
    "release",
    "environment",
    "tags",
    "timestamp",
    "datetime",
    "url",
    "web_url",
    "permalink",
    "project",
    "projects",
    "slug",
    "count",
    "firstSeen",
    "lastSeen",
    "shortId",
    "assignedTo",
    "assignee",
    "name",
    "email",
    "resolution_type",
    "description_title",
    "description_text",
    "triggered_rule",
    "issue_alert",
    "alert",
    "activity",
    "details",
    "summary",
    "comment",
    "project_slug",
    "actor",
    "date_closed",
    "date_started",
    "logentry",
    "formatted",
    "triggering_rules",
    "key",
];

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[0-9]{1,20}",
        Just("https://sentry.io/api/0/projects/o/p/events/1/".to_string()),
        Just("https://sentry.io/organizations/o/issues/1/events/2/".to_string()),
        Just("2019-08-19T21:06:17.677000Z".to_string()),
        Just("/api/0/projects/".to_string()),
        Just("/events/".to_string()),
        Just("\\n\n\r".to_string()),
        Just("critical".to_string()),
        Just("resolved".to_string()),
        Just("assigned".to_string()),
        Just("team".to_string()),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,6}"],
                    inner
                ),
                0..8
            )
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A payload-shaped object: `{"action": …, "data": {<resource key>: <arbitrary>…}, …}`.
fn arb_payload() -> impl Strategy<Value = Value> {
    (
        prop_oneof![arb_string().prop_map(Value::from), arb_json()],
        prop::collection::vec((prop::sample::select(KEYS), arb_json()), 0..6),
        prop::collection::vec((prop::sample::select(KEYS), arb_json()), 0..4),
    )
        .prop_map(|(action, data, top)| {
            let mut root: serde_json::Map<String, Value> =
                top.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            root.insert("action".into(), action);
            root.insert(
                "data".into(),
                Value::Object(data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
            );
            Value::Object(root)
        })
}

/// Mutates a fixture: replaces the value at a random path with arbitrary JSON (or, where the
/// path runs out of containers, the innermost value reached).
fn mutate(value: &mut Value, path: &[usize], new: Value) {
    let Some((step, rest)) = path.split_first() else {
        *value = new;
        return;
    };
    let len = match value {
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if len == 0 {
        *value = new;
        return;
    }
    let child = match value {
        Value::Object(map) => map.values_mut().nth(step % len),
        Value::Array(items) => items.get_mut(step % len),
        _ => None,
    };
    if let Some(child) = child {
        mutate(child, rest, new);
    }
}

const FIXTURE_RESOURCES: &[(&str, &str)] = &[
    ("event_alert", "event_alert.triggered.json"),
    ("error", "error.created.json"),
    ("issue", "issue.created.json"),
    ("issue", "issue.created.2019-docs.json"),
    ("activity_alert", "activity_alert.triggered.json"),
    ("metric_alert", "metric_alert.resolved.json"),
    ("comment", "comment.created.json"),
    ("installation", "installation.created.json"),
];

/// What every parsed alert must satisfy, whatever the input.
fn check_invariants(a: &Alert) -> Result<(), TestCaseError> {
    prop_assert!(!a.projects.is_empty());
    prop_assert!(!a.issue_key.is_empty());
    prop_assert!(!a.title.is_empty() && !a.title.contains(['\n', '\r']));
    let strings = [&a.resource, &a.action, &a.issue_key, &a.title]
        .into_iter()
        .chain(a.projects.iter())
        .chain(
            [
                &a.short_id,
                &a.event_id,
                &a.environment,
                &a.culprit,
                &a.release,
                &a.rule,
                &a.detail,
            ]
            .into_iter()
            .flatten(),
        )
        .chain(a.tags.iter().flat_map(|(k, v)| [k, v]));
    for s in strings {
        prop_assert!(s.chars().count() <= 2_000);
    }
    for url in [&a.issue_url, &a.event_url].into_iter().flatten() {
        prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
        prop_assert!(!url.contains(['<', '>', '|', ' ']));
    }
    prop_assert!(a.tags.len() <= 200);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), r in prop::sample::select(RESOURCES)) {
        let _ = parse(r, &body, &no_projects());
        let _ = parse_legacy(&body, &no_projects());
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json(), r in prop::sample::select(RESOURCES)) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(Parsed::Alert(a)) = parse(r, &body, &no_projects()) {
            check_invariants(&a)?;
        }
        if let Ok(a) = parse_legacy(&body, &no_projects()) {
            check_invariants(&a)?;
        }
    }

    #[test]
    fn payload_shaped_json_never_panics(v in arb_payload(), r in prop::sample::select(RESOURCES)) {
        let body = serde_json::to_vec(&v).unwrap();
        let projects = ProjectMap::from([("1".to_string(), "mapped".to_string())]);
        if let Ok(Parsed::Alert(a)) = parse(r, &body, &projects) {
            check_invariants(&a)?;
            prop_assert_eq!(a.resource.as_str(), r);
        }
        let mut legacy = v.clone();
        if let Some(obj) = legacy.as_object_mut() {
            let event = obj.get("data").cloned().unwrap_or_default();
            obj.insert("event".into(), event);
        }
        if let Ok(a) = parse_legacy(&serde_json::to_vec(&legacy).unwrap(), &projects) {
            check_invariants(&a)?;
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..FIXTURE_RESOURCES.len(),
        path in prop::collection::vec(any::<usize>(), 1..6),
        new in arb_json(),
    ) {
        let (resource, name) = FIXTURE_RESOURCES[which];
        let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
        mutate(&mut v, &path, new);
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(Parsed::Alert(a)) = parse(resource, &body, &no_projects()) {
            check_invariants(&a)?;
        }
        if let Ok(a) = parse_legacy(&body, &no_projects()) {
            check_invariants(&a)?;
        }
    }
}

/// The payload is read into typed structs (`payload.rs`), not a `Value` tree, and reads as a
/// `Value` did: the last of duplicate keys wins, a field of the wrong type is absent, escaped
/// strings and keys read unescaped.
#[test]
fn payloads_read_as_a_value_tree_read_them() {
    let body = br#"{"action":"created","action":"triggered","data":{"event":{"event_id":"gone"},
        "event":{"ev\u0065nt_id":"E1","title":7,"title":["x"],"metadata":"KeyError",
        "exception":{"values":[{"type":"Key\"Error\"","value":"'x'","stacktrace":{"frames":[{"vars":{"a":[1,{"b":null}]}}]}}]},
        "tags":"env=prod","level":{"a":1},"environment":"prod","environment":null,
        "timestamp":"soon","datetime":1566248777.5,"project":{"id":4505},"release":1.5,"culprit":false,
        "breadcrumbs":{"values":[{"message":"\ud83d\ude00","data":{"n":-0.0}}]}}}}"#;
    let projects = ProjectMap::from([("4505".to_string(), "checkout".to_string())]);
    let Ok(Parsed::Alert(a)) = parse("event_alert", body, &projects) else {
        panic!()
    };
    assert_eq!(a.action, "triggered");
    assert_eq!(a.event_id.as_deref(), Some("e1"));
    assert_eq!(a.title, "Key\"Error\": 'x'");
    assert_eq!(
        (a.level, a.environment, a.release, a.culprit),
        (Level::Error, None, None, None)
    );
    assert!(a.tags.is_empty());
    assert_eq!(a.timestamp, Some(1_566_248_777));
    assert_eq!(a.projects, ["unknown"], "an object is not a project id");

    let body = br#"{"action":"resolved","actor":{"type":"user","name":"Ada"},"actor":"Ada",
        "data":{"issue":{"id":"9","project":{"slug":"web"},"project":{"id":4505},"count":[3]}}}"#;
    let Ok(Parsed::Alert(a)) = parse("issue", body, &projects) else {
        panic!()
    };
    assert_eq!((a.projects[0].as_str(), a.sentry_count), ("checkout", None));
    assert_eq!(state_of(&a).by, None, "the last actor is a string");
}

/// What is not read is still checked as JSON, as parsing it into a `Value` checked it: the
/// same error, at the same place.
#[test]
fn unread_parts_must_still_be_json() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let bodies: [Vec<u8>; 4] = [
        br#"{"action":"triggered","data":{"event":{"event_id":"1","extra":"\ud83d"}}}"#.to_vec(),
        b"{\"action\":\"triggered\",\"data\":{\"event\":{\"event_id\":\"1\",\"extra\":\"\xff\"}}}"
            .to_vec(),
        format!(r#"{{"action":"triggered","data":{{"event":{{"event_id":"1","extra":{deep}}}}}}}"#)
            .into_bytes(),
        br#"{"action":"triggered","data":{"event":{"event_id":"1","extra":1e999}}}"#.to_vec(),
    ];
    for body in &bodies {
        let refused = serde_json::from_slice::<Value>(body).expect_err("not JSON");
        assert_eq!(
            malformed("event_alert", body),
            format!("body is not JSON: {refused}"),
            "the same error as a Value"
        );
        assert!(parse_legacy(body, &no_projects()).is_err());
    }
}

/// An event without `title` or `metadata` is titled as Sentry titles it: from its main
/// exception (the last of `exception.values`), else its message.
#[test]
fn events_without_a_title_are_titled_like_sentry() {
    let title = |event: Value| {
        let mut event = event;
        event["event_id"] = json!("e4874d664c3540c1a32eab185f12c5ab");
        let body =
            serde_json::to_vec(&json!({"action": "created", "data": {"error": event}})).unwrap();
        match parse("error", &body, &no_projects()) {
            Ok(Parsed::Alert(a)) => a.title,
            other => panic!("{other:?}"),
        }
    };
    let chained = json!({"exception": {"values": [
        {"type": "KeyError", "value": "'user'"},
        {"type": "ValueError", "value": "bad input\nsecond line", "module": "app"},
    ]}, "message": "ignored while there is an exception"});
    assert_eq!(title(chained), "ValueError: bad input");
    assert_eq!(
        title(json!({"exception": {"values": [{"type": "TypeError"}]}})),
        "TypeError"
    );
    assert_eq!(
        title(json!({"exception": {"values": [{"value": "no type"}]}})),
        "Error: no type"
    );
    assert_eq!(
        title(json!({"exception": [{"type": "OldShape", "value": "bare array"}]})),
        "OldShape: bare array"
    );
    assert_eq!(
        title(json!({"exception": {"values": [
            {"type": "EXC_BAD_ACCESS", "value": "crash", "mechanism": {"synthetic": true}}
        ]}})),
        "crash"
    );
    assert_eq!(
        title(
            json!({"logentry": {"formatted": "Payment failed for 42", "message": "Payment failed for %s"}})
        ),
        "Payment failed for 42"
    );
    assert_eq!(
        title(json!({"logentry": {"message": "Payment failed for %s"}})),
        "Payment failed for %s"
    );
    assert_eq!(
        title(json!({"exception": {"values": []}})),
        "<unlabeled event>"
    );
    assert_eq!(title(json!({})), "<unlabeled event>");
}

/// Sentry sends `issue.*` notices that no user triggered with `permalink: null`, and older
/// payloads carry no `web_url`: the issue page is built from the organisation another URL of
/// the payload names.
#[test]
fn an_issue_without_a_permalink_gets_its_page_from_other_urls() {
    let url_of = |edit: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&fixture("issue.created.json")).unwrap();
        v["action"] = json!("resolved");
        let issue = v["data"]["issue"].as_object_mut().unwrap();
        issue.remove("web_url");
        issue.insert("permalink".into(), Value::Null);
        edit(&mut v);
        match parse("issue", &serde_json::to_vec(&v).unwrap(), &no_projects()) {
            Ok(Parsed::Alert(a)) => a.issue_url,
            other => panic!("{other:?}"),
        }
    };
    // `url`: the API address, /api/0/organizations/{org}/issues/{id}/.
    assert_eq!(
        url_of(&|_| {}).as_deref(),
        Some("https://sentry.io/organizations/example-org/issues/1234567890/")
    );
    // `project_url` on an organisation subdomain.
    assert_eq!(
        url_of(&|v| {
            v["data"]["issue"].as_object_mut().unwrap().remove("url");
        })
        .as_deref(),
        Some("https://example-org.sentry.io/issues/1234567890/")
    );
    // `project_url` with the organisation in the path (self-hosted).
    assert_eq!(
        url_of(&|v| {
            v["data"]["issue"].as_object_mut().unwrap().remove("url");
            v["data"]["issue"]["project_url"] =
                json!("https://sentry.example.com/organizations/acme/issues/?project=2");
        })
        .as_deref(),
        Some("https://sentry.example.com/organizations/acme/issues/1234567890/")
    );
    // Nothing names the organisation: no link (the store's is used when the message is sent).
    assert_eq!(
        url_of(&|v| {
            let issue = v["data"]["issue"].as_object_mut().unwrap();
            issue.remove("url");
            issue.remove("project_url");
        }),
        None
    );
    // A hostile URL builds nothing.
    assert_eq!(
        url_of(&|v| {
            v["data"]["issue"]["url"] = json!("javascript:alert(1)//organizations/x/");
            v["data"]["issue"]
                .as_object_mut()
                .unwrap()
                .remove("project_url");
        }),
        None
    );
}

/// An `issue.*` notice shaped like Sentry's `workflow_notification`: `data` with the
/// serialized issue added as `data.issue`, and the top-level `actor` who made the change
/// (`{"type":"user",…}`, or `{"type":"application",…}` for an integration, a rule or Sentry).
fn notice(action: &str, issue: Value, mut data: Value, actor: Value) -> Alert {
    data["issue"] = issue;
    let body = json!({
        "action": action,
        "installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},
        "data": data,
        "actor": actor,
    });
    match parse("issue", &serde_json::to_vec(&body).unwrap(), &no_projects()) {
        Ok(Parsed::Alert(a)) => *a,
        other => panic!("{other:?}"),
    }
}

fn sentry_issue(status: &str, substatus: Value, details: Value) -> Value {
    json!({
        "id": "42", "shortId": "CHECKOUT-1", "title": "Error: boom",
        "project": {"id": "4505", "slug": "checkout"},
        "status": status, "substatus": substatus, "statusDetails": details,
        "assignedTo": null,
    })
}

fn ada() -> Value {
    json!({"type": "user", "id": 1, "name": "Ada Lovelace"})
}

fn integration() -> Value {
    json!({"type": "application", "id": "sentry", "name": "Sentry"})
}

fn state_of(a: &Alert) -> &crate::issue::IssueState {
    a.state
        .as_ref()
        .unwrap_or_else(|| panic!("no state: {a:?}"))
}

#[test]
fn issue_resolved_carries_the_state_and_who_resolved_it() {
    let a = notice(
        "resolved",
        sentry_issue("resolved", Value::Null, json!({})),
        json!({"resolution_type": "now"}),
        ada(),
    );
    assert_eq!(
        a.state,
        Some(IssueState {
            status: Status::Resolved {
                in_next_release: false
            },
            assignee: None,
            by: Some("Ada Lovelace".into()),
            at_ms: None,
        })
    );
}

#[test]
fn issue_resolved_wins_over_a_lagging_issue_and_knows_the_next_release() {
    // The serialized issue may still say `unresolved`: the notice is about the change.
    let a = notice(
        "resolved",
        sentry_issue("unresolved", json!("ongoing"), json!({})),
        json!({"resolution_type": "in_next_release"}),
        integration(),
    );
    let s = state_of(&a);
    assert_eq!(
        s.status,
        Status::Resolved {
            in_next_release: true
        }
    );
    assert_eq!(s.by, None, "an application is not a person");
    // From the issue's statusDetails alone.
    let a = notice(
        "resolved",
        sentry_issue("resolved", Value::Null, json!({"inNextRelease": true})),
        json!({"resolution_type": "with_commit"}),
        ada(),
    );
    assert_eq!(
        state_of(&a).status,
        Status::Resolved {
            in_next_release: true
        }
    );
}

#[test]
fn issue_ignored_and_archived_name_the_condition() {
    let archive = |action: &str, status: &str, substatus: Value, details: Value| {
        let a = notice(
            action,
            sentry_issue(status, substatus, details),
            json!({}),
            ada(),
        );
        match state_of(&a).status {
            Status::Archived { archive } => archive,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        archive(
            "ignored",
            "ignored",
            json!("archived_until_escalating"),
            json!({})
        ),
        Archive::Escalating
    );
    assert_eq!(
        archive("archived", "ignored", json!("archived_forever"), json!({})),
        Archive::Forever
    );
    // The issue serializer's shape: a count still to come, the end of a snooze.
    let condition = json!("archived_until_condition_met");
    assert_eq!(
        archive(
            "ignored",
            "ignored",
            condition.clone(),
            json!({"ignoreCount": 100, "ignoreUntil": null, "ignoreUserCount": null,
                   "ignoreUserWindow": null, "ignoreWindow": null, "actor": null})
        ),
        Archive::Count { count: 100 }
    );
    assert_eq!(
        archive(
            "ignored",
            "ignored",
            condition.clone(),
            json!({"ignoreCount": null, "ignoreUntil": "2024-05-02T14:02:00.123456Z"})
        ),
        Archive::UntilTime {
            until_ms: 1_714_658_520_000
        }
    );
    // Sentry's bulk update answers with the length asked for.
    assert_eq!(
        archive(
            "ignored",
            "ignored",
            condition,
            json!({"ignoreDuration": 60, "ignoreUntil": "2024-05-01T15:02:00Z"})
        ),
        Archive::Minutes { minutes: 60 }
    );
    // An issue that still says `unresolved`, or says nothing of the condition: archived.
    assert_eq!(
        archive("ignored", "unresolved", Value::Null, json!({})),
        Archive::Forever
    );
    assert_eq!(
        archive("ignored", "ignored", Value::Null, Value::Null),
        Archive::Forever
    );
}

#[test]
fn issue_assigned_keeps_the_status_and_names_the_assignee() {
    let issue = sentry_issue("ignored", json!("archived_until_escalating"), json!({}));
    let a = notice(
        "assigned",
        issue.clone(),
        json!({"assignee": {"type": "user", "name": "Grace Hopper", "email": "grace@example.com", "id": 2}}),
        ada(),
    );
    assert_eq!(
        a.state,
        Some(IssueState {
            status: Status::Archived {
                archive: Archive::Escalating
            },
            assignee: Some("Grace Hopper".into()),
            by: Some("Ada Lovelace".into()),
            at_ms: None,
        })
    );
    let team = notice(
        "assigned",
        issue.clone(),
        json!({"assignee": {"type": "team", "name": "payments", "id": 3}}),
        ada(),
    );
    assert_eq!(state_of(&team).assignee.as_deref(), Some("#payments"));
    // Only the issue's `assignedTo`, on another notice.
    let mut assigned = sentry_issue("resolved", Value::Null, json!({}));
    assigned["assignedTo"] = json!({"type": "user", "id": "2", "name": "Grace Hopper"});
    let resolved = notice("resolved", assigned, json!({}), integration());
    assert_eq!(
        state_of(&resolved).assignee.as_deref(),
        Some("Grace Hopper")
    );
    // No status at all: open.
    let mut bare = issue;
    bare.as_object_mut().unwrap().remove("status");
    let a = notice("assigned", bare, json!({}), ada());
    assert_eq!(state_of(&a).status, Status::Unresolved);
}

#[test]
fn issue_unresolved_reopens_whatever_the_issue_says() {
    let a = notice(
        "unresolved",
        sentry_issue("resolved", Value::Null, json!({})),
        json!({}),
        integration(),
    );
    assert_eq!(
        a.state,
        Some(IssueState::default()),
        "open, unassigned, credited to no one"
    );
}

#[test]
fn only_issue_lifecycle_notices_carry_a_state() {
    assert_eq!(alert("issue", "issue.created.json").state, None);
    assert_eq!(alert("issue", "issue.created.2019-docs.json").state, None);
    assert_eq!(
        alert("activity_alert", "activity_alert.triggered.json").state,
        None
    );
    assert_eq!(
        alert("event_alert", "event_alert.triggered.json").state,
        None
    );
    let other = notice(
        "unassigned",
        sentry_issue("unresolved", Value::Null, json!({})),
        json!({}),
        ada(),
    );
    assert_eq!(other.state, None);
}

#[test]
fn state_names_are_one_line_and_short() {
    let long = format!("Ada\nLovelace{}", "x".repeat(500));
    let a = notice(
        "assigned",
        sentry_issue("unresolved", Value::Null, json!({})),
        json!({"assignee": {"type": "user", "name": long}}),
        json!({"type": "user", "name": format!("  {}", "y".repeat(500))}),
    );
    let s = state_of(&a);
    assert_eq!(s.assignee.as_deref(), Some("Ada"));
    assert_eq!(s.by.as_ref().map(|b| b.chars().count()), Some(200));
    // A user without a name is credited to no one rather than to an empty string.
    let nameless = notice(
        "resolved",
        sentry_issue("resolved", Value::Null, json!({})),
        json!({}),
        json!({"type": "user", "id": 7, "name": ""}),
    );
    assert_eq!(state_of(&nameless).by, None);
}
