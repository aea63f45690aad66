//! `POST /sentry/webhook` and `/sentry/legacy`: every status code of the contract, and that a
//! refused delivery leaves nothing behind.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sluice::clock::Clock;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

/// Where the test clocks start: 2025-11-22 00:00 UTC.
const T0: i64 = 1_763_769_600_000;

#[tokio::test(start_paused = true)]
async fn every_fixture_is_accepted_and_routed_end_to_end() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(scratch.config(&slack, ""), Clock::starting_at(T0)).await;

    let routed = [
        "event_alert.triggered.json",
        "error.created.json",
        "issue.created.json",
        "issue.created.2019-docs.json",
        "metric_alert.resolved.json",
        "activity_alert.triggered.json",
        "comment.created.json",
    ];
    for name in routed {
        let (status, body) = server.deliver(resource_of(name), &fixture(name)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
        assert_eq!(body["status"], "stored", "{name}: {body}");
    }
    let (status, body) = server
        .deliver("installation", &fixture("installation.created.json"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(body["ignored"].as_str().is_some(), "{body}");

    let got = slack.wait_accepted(routed.len(), WAIT).await;
    let texts: Vec<&str> = got.iter().map(|r| r.text()).collect();
    let find = |needle: &str| {
        got.iter()
            .find(|r| r.text().contains(needle))
            .unwrap_or_else(|| panic!("no message contains {needle:?}: {texts:#?}"))
    };
    // Occurrences carry their counts.
    let heck = find("heck is not defined");
    assert_eq!(heck.path, "hooks/errors");
    assert!(heck.text().contains("7d: 1 · 30d: 1"), "{}", heck.text());
    let bloopy = find("[ERROR] ReferenceError: blooopy is not defined —");
    assert!(bloopy.text().contains("7d: 1 · 30d: 1"));
    // Issue notices show Sentry's lifetime count; the `python` project goes to the Web API.
    let python = find("New issue: Error generated with event_id");
    assert_eq!(python.path, "api/chat.postMessage");
    assert_eq!(python.body["channel"], "C0123456789");
    assert_eq!(
        python.authorization.as_deref(),
        Some("Bearer xoxb-test-token")
    );
    assert!(
        serde_json::to_string(&python.body["blocks"])
            .unwrap()
            .contains("Sentry lifetime: 3"),
        "{}",
        python.body
    );
    find("Metric alert: Resolved: Too many errors");
    find("Activity: TypeError: you aren't my type");
    find("Comment on issue 100 by colleen");
    // Nothing more than one message per routed delivery, then or later.
    server.advance_and_settle(Duration::from_secs(60)).await;
    assert_eq!(slack.received().len(), routed.len());
    server.stop().await;
}

#[tokio::test]
async fn refusals_answer_their_code_and_store_nothing() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let url = server.url("/sentry/webhook");
    let body = event_alert(
        "42",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "front-end",
        "production",
    );
    let sig = sluice::sentry::sign(&body, SECRET.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let resource = ("sentry-hook-resource", "event_alert".to_string());

    // 401: no signature, a wrong one, a signature of other bytes, a stale timestamp.
    let (status, reply) = post(&url, std::slice::from_ref(&resource), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("Sentry-Hook-Signature")
    );
    let wrong = sluice::sentry::sign(&body, b"not-the-secret");
    let (status, _) = post(
        &url,
        &[resource.clone(), ("sentry-hook-signature", wrong)],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut tampered = body.clone();
    *tampered.last_mut().unwrap() = b' ';
    let (status, _) = post(
        &url,
        &[resource.clone(), ("sentry-hook-signature", sig.clone())],
        &tampered,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = post(
        &url,
        &[
            resource.clone(),
            ("sentry-hook-signature", sig.clone()),
            ("sentry-hook-timestamp", (now - 3600).to_string()),
        ],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        reply["error"].as_str().unwrap().contains("Timestamp"),
        "{reply}"
    );

    // 400: not JSON; JSON without the event its resource requires. The body says why.
    let (status, reply) = server.deliver("event_alert", b"{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["error"].as_str().unwrap().contains("JSON"), "{reply}");
    let no_event = serde_json::to_vec(&json!({"action": "triggered", "data": {}})).unwrap();
    let (status, reply) = server.deliver("event_alert", &no_event).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"].as_str().unwrap().contains("event"),
        "{reply}"
    );

    // 413: over server.max_body_bytes (64 KiB in the test config).
    let huge = vec![b' '; 70_000];
    let (status, _) = server.deliver("event_alert", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The rotated secret verifies too. Nothing refused above was stored or counted: this,
    // the first accepted copy, counts 1.
    let (status, _) = post_signed(&url, "event_alert", &body, ROTATED_SECRET).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // (The 413 is also reported in ops_channel, `errors`: see http_limits.rs.)
    slack.wait_until_path("hooks/frontend-prod", 1, WAIT).await;
    let got: Vec<_> = slack
        .accepted()
        .into_iter()
        .filter(|r| r.path == "hooks/frontend-prod")
        .collect();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].text().contains("7d: 1 · 30d: 1"),
        "{}",
        got[0].text()
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_delivery_answers_200_and_is_not_counted_again() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(scratch.config(&slack, ""), Clock::starting_at(T0)).await;
    let body = event_alert(
        "7",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "front-end",
        "production",
    );
    let (status, _) = server.deliver("event_alert", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for _ in 0..3 {
        let (status, reply) = server.deliver("event_alert", &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply["status"], "duplicate");
    }
    let second = event_alert(
        "7",
        "cccccccccccccccccccccccccccccccc",
        "front-end",
        "production",
    );
    assert_eq!(
        server.deliver("event_alert", &second).await.0,
        StatusCode::ACCEPTED
    );
    let got = slack.wait_accepted(2, WAIT).await;
    server.advance_and_settle(Duration::from_secs(60)).await;
    assert_eq!(slack.received().len(), 2, "a duplicate was posted");
    // The second occurrence shows 2, not 5.
    assert!(
        got[1].text().contains("7d: 2 · 30d: 2"),
        "{}",
        got[1].text()
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_same_event_as_error_and_event_alert_counts_once() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(scratch.config(&slack, ""), Clock::starting_at(T0)).await;
    // One Sentry event, delivered once as event_alert.triggered and once as error.created.
    let alert = fixture_json("event_alert.triggered.json");
    let mut error = fixture_json("error.created.json");
    error["data"]["error"] = alert["data"]["event"].clone();
    let (status, first) = server
        .deliver("event_alert", &serde_json::to_vec(&alert).unwrap())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["counted"], true);
    let (status, second) = server
        .deliver("error", &serde_json::to_vec(&error).unwrap())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a new delivery is stored");
    assert_eq!(
        second["counted"], false,
        "but the event is not counted twice"
    );

    let stats = scratch
        .store()
        .await
        .issue_stats("1117540176", server.clock.now_ms())
        .await
        .unwrap();
    assert_eq!((stats.week(), stats.month()), (1, 1));
    slack.wait_accepted(1, WAIT).await;
    server.advance_and_settle(Duration::from_secs(60)).await;
    assert_eq!(slack.received().len(), 1, "the event was posted twice");
    server.stop().await;
}

#[tokio::test]
async fn the_legacy_plugin_needs_its_token() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let body = serde_json::to_vec(&json!({
        "id": "555",
        "project": "front-end",
        "project_name": "Front End",
        "project_slug": "front-end",
        "logger": null,
        "level": "fatal",
        "culprit": "app/checkout.py in pay",
        "message": "PaymentError: card declined",
        "url": "https://sentry.io/organizations/test-org/issues/555/?referrer=webhooks_plugin",
        "triggering_rules": ["all errors"],
        "event": {
            "event_id": "dddddddddddddddddddddddddddddddd",
            "environment": "production",
            "release": "shop@2.0.1",
            "tags": [["environment", "production"], ["level", "fatal"]]
        }
    }))
    .unwrap();
    let (status, _) = post(&server.url("/sentry/legacy?token=wrong"), &[], &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(&server.url("/sentry/legacy"), &[], &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = post(
        &server.url(&format!("/sentry/legacy?token={LEGACY_TOKEN}")),
        &[],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let got = slack.wait_accepted(1, WAIT).await;
    assert_eq!(got[0].path, "hooks/frontend-prod");
    assert!(
        got[0].text().starts_with("<!subteam^S0123> [FATAL]"),
        "{}",
        got[0].text()
    );
    assert!(got[0].text().contains("7d: 1 · 30d: 1"));
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    sluice::slack::transport::install_crypto_provider();
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_store_that_cannot_commit_answers_503_never_2xx() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    // A store whose database was closed: every commit fails.
    let store = sluice::store::SqliteStore::open(
        &format!("sqlite://{}", scratch.db().display()),
        sluice::storm::planner(),
    )
    .await
    .unwrap();
    store.close().await;
    let state =
        sluice::state::AppState::new(std::sync::Arc::new(store), scratch.config(&slack, ""));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, sluice::server::app(state))
            .await
            .unwrap();
    });
    let body = event_alert(
        "5",
        "55555555555555555555555555555555",
        "front-end",
        "production",
    );
    let (status, reply) = post_signed(
        &format!("http://{addr}/sentry/webhook"),
        "event_alert",
        &body,
        SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply["error"].as_str().unwrap().contains("not stored"),
        "{reply}"
    );
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}
