//! The delivery worker against the fake Slack: retries, Retry-After, dead letters, escaping,
//! and at-least-once delivery across a `kill -9`.

use std::time::Duration;

use reqwest::StatusCode;
use sluice::clock::Clock;
use tokio::time::Instant;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

/// Where the test clocks start: 2025-11-22 00:00 UTC.
const T0: i64 = 1_763_769_600_000;

/// On the test's clock: a 429's `Retry-After` holds the channel for exactly that long plus
/// its jitter (at most 10 %, plus 1 ms); the retry goes out when the hold ends, not before or
/// after.
#[tokio::test(start_paused = true)]
async fn a_429_waits_for_retry_after_then_delivers() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    slack.script([Reply::RateLimited {
        retry_after_secs: 3,
    }]);
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(scratch.config(&slack, ""), Clock::starting_at(T0)).await;
    let start = Instant::now();
    server
        .accept_event(
            "9",
            "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            "front-end",
            "production",
        )
        .await;
    assert_eq!(slack.wait_received(1, WAIT).await[0].at, start);
    let store = scratch.store().await;
    let retry_at = wait_rescheduled(&*store, T0).await;
    assert!(
        (3001..=3301).contains(&retry_at),
        "retry {retry_at} ms after a Retry-After of 3 s"
    );
    let retry_at = Duration::from_millis(retry_at as u64);
    server
        .advance_and_settle(retry_at - Duration::from_millis(1))
        .await;
    assert_eq!(
        slack.received().len(),
        1,
        "retried before Retry-After ended"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let got = slack.wait_accepted(1, WAIT).await;
    let all = slack.received();
    assert_eq!(all.len(), 2, "one 429, then the retry: {all:#?}");
    assert_eq!(all[1].at - start, retry_at, "retried when the hold ended");
    assert!(got[0].text().contains("heck is not defined"));
    server.stop().await;
}

/// Waits until the store holds the only waiting row for a retry later than `now` (Unix ms);
/// returns how long after `now` it is due.
async fn wait_rescheduled(store: &dyn sluice::store::Store, now: i64) -> i64 {
    eventually(WAIT, "the row rescheduled", || async {
        let due = store.next_due_at().await.unwrap()?;
        (due > now).then_some(due - now)
    })
    .await
}

/// On the test's clock: after each 5xx the row is retried after `retry_initial_backoff`
/// doubled per attempt (capped at `retry_max_backoff`) and scaled by a jitter in [0.5, 1]:
/// each retry goes out exactly when its backoff ends, within those bounds.
#[tokio::test(start_paused = true)]
async fn server_errors_back_off_and_retry_until_slack_accepts() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    slack.script([Reply::ServerError, Reply::ServerError, Reply::ServerError]);
    let scratch = Scratch::new();
    // Backoffs of 8 s, 16 s and 32 s at most: each retry is at least 4 s after the send
    // before, enough to look at the worker settled just before it.
    let text = config_text(&slack, &scratch.db(), "")
        .replace(
            "retry_initial_backoff = \"50ms\"",
            "retry_initial_backoff = \"8s\"",
        )
        .replace(
            "retry_max_backoff = \"200ms\"",
            "retry_max_backoff = \"60s\"",
        );
    let config = sluice::config::Config::load(&scratch.write_config(&text)).unwrap();
    let server = TestServer::start_on_clock(config, Clock::starting_at(T0)).await;
    let start = Instant::now();
    server
        .accept_event(
            "10",
            "ffffffffffffffffffffffffffffffff",
            "front-end",
            "production",
        )
        .await;
    assert_eq!(slack.wait_received(1, WAIT).await[0].at, start);
    let store = scratch.store().await;
    let mut sent_at = Duration::ZERO;
    for (attempt, ceiling) in [(1, 8_000), (2, 16_000), (3, 32_000)] {
        let now = T0 + sent_at.as_millis() as i64;
        let backoff = wait_rescheduled(&*store, now).await;
        assert!(
            (ceiling / 2..=ceiling).contains(&backoff),
            "attempt {attempt}: backoff {backoff} ms, not in [{}, {ceiling}]",
            ceiling / 2
        );
        let backoff = Duration::from_millis(backoff as u64);
        server
            .advance_and_settle(backoff - Duration::from_millis(1))
            .await;
        assert_eq!(
            slack.received().len(),
            attempt,
            "retried before the backoff ended"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let all = slack.wait_received(attempt + 1, WAIT).await;
        sent_at += backoff;
        assert_eq!(
            all[attempt].at - start,
            sent_at,
            "retry {attempt} when its backoff ended"
        );
    }
    let totals = wait_drained(&*store, "frontend-prod", WAIT).await;
    assert_eq!(totals.occurrences_posted, 1);
    assert_eq!(totals.messages_posted, 1);
    assert_eq!(slack.received().len(), 4, "three 5xx, then accepted");
    assert_eq!(slack.accepted().len(), 1);
    server.stop().await;
}

/// A permanent error is dead-lettered at once and never retried, however long Sluice runs.
#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_dead_lettered_with_slacks_error() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    slack.script([Reply::SlackError("channel_not_found")]);
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(scratch.config(&slack, ""), Clock::starting_at(T0)).await;
    server
        .accept_event(
            "11",
            "11111111111111111111111111111111",
            "front-end",
            "production",
        )
        .await;
    slack.wait_received(1, WAIT).await;
    let store = scratch.store().await;
    let dead = wait_dead_letters(&*store, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "channel_not_found");
    assert_eq!(dead[0].channel, "frontend-prod");
    assert_eq!(dead[0].occurrences, 1);
    // Hours later (a retry would have come within `retry_max_backoff`, 200 ms here).
    for _ in 0..3 {
        server.advance_and_settle(Duration::from_secs(3600)).await;
    }
    // (The dead letter is also reported to ops_channel, here the errors channel.)
    assert_eq!(
        slack
            .received()
            .iter()
            .filter(|r| r.path == "hooks/frontend-prod")
            .count(),
        1,
        "a permanent error must not be retried"
    );
    let totals = wait_drained(&*store, "frontend-prod", WAIT).await;
    assert_eq!(totals.occurrences_dead, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_web_api_error_string_is_dead_lettered() {
    let slack = FakeSlack::start().await;
    slack.script([Reply::SlackError("not_in_channel")]);
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let (status, _) = server
        .deliver("issue", &fixture("issue.created.json"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    slack.wait_received(1, WAIT).await;
    let store = scratch.store().await;
    let dead = wait_dead_letters(&*store, 1).await;
    assert_eq!(dead[0].error, "not_in_channel");
    assert_eq!(dead[0].channel, "python-api");
    server.stop().await;
}

#[tokio::test]
async fn an_error_titled_channel_pings_nobody() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let mut v = fixture_json("event_alert.triggered.json");
    v["data"]["event"]["title"] =
        "<!channel> <@U024BE7LH> <https://evil.example|log in> & co".into();
    v["data"]["event"]["culprit"] = "<!here>".into();
    let (status, _) = server
        .deliver("event_alert", &serde_json::to_vec(&v).unwrap())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = slack.wait_accepted(1, WAIT).await;
    let sent = serde_json::to_string(&got[0].body).unwrap();
    for raw in [
        "<!channel>",
        "<!here>",
        "<@U024BE7LH>",
        "<https://evil.example",
    ] {
        assert!(!sent.contains(raw), "{raw} reached Slack unescaped: {sent}");
    }
    assert!(
        got[0].text().contains("&lt;!channel&gt;"),
        "{}",
        got[0].text()
    );
    server.stop().await;
}

/// Sentry sends `issue.*` notices without `permalink` (and older ones without `web_url`): the
/// notice still links the issue, with the page Sluice stored from an earlier event, and
/// says when Sentry first saw the issue.
#[tokio::test]
async fn an_issue_notice_without_a_link_links_what_sluice_stored() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let issue = "1170820242";
    server
        .accept_event(issue, &event_id(0x4242), "front-end", "production")
        .await;
    slack.wait_accepted(1, WAIT).await;
    let mut resolved = fixture_json("issue.created.2019-docs.json");
    resolved["action"] = "resolved".into();
    let (status, _) = server
        .deliver("issue", &serde_json::to_vec(&resolved).unwrap())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = slack.wait_accepted(2, WAIT).await;
    let notice = &got[1];
    let url = format!("https://sentry.io/organizations/test-org/issues/{issue}/");
    assert!(
        notice
            .text()
            .starts_with("Resolved: ReferenceError: blooopy"),
        "{}",
        notice.text()
    );
    assert!(
        notice.text().ends_with(&format!("<{url}|Open in Sentry>")),
        "{}",
        notice.text()
    );
    let sent = serde_json::to_string(&notice.body).unwrap();
    assert!(sent.contains("first seen 2019-08-19 20:58 UTC"), "{sent}");
    server.stop().await;
}

#[tokio::test]
async fn kill_9_while_slack_is_down_loses_nothing() {
    let slack = FakeSlack::start().await;
    slack.set_default(Reply::ServerError);
    let scratch = Scratch::new();
    let text = config_text(&slack, &scratch.db(), "");
    let first = Process::start(&text, &scratch).await;
    let mut ids = vec![];
    for i in 0..5 {
        let event_id = format!("{:032x}", 0xabc000 + i);
        let body = event_alert("77", &event_id, "front-end", "production");
        assert_eq!(
            first.deliver("event_alert", &body).await.0,
            StatusCode::ACCEPTED
        );
        ids.push(event_id);
    }
    slack.wait_received(1, WAIT).await;
    first.kill9();
    assert!(slack.accepted().is_empty());

    slack.set_default(Reply::Ok);
    let second = Process::start(&text, &scratch).await;
    let got = slack.wait_accepted(5, WAIT).await;
    assert_eq!(got.len(), 5);
    // Every message carries the counts of all five acknowledged occurrences.
    assert!(
        got.iter().all(|r| r.text().contains("7d: 5 · 30d: 5")),
        "{:#?}",
        got
    );
    let totals = wait_drained(&*scratch.store().await, "frontend-prod", WAIT).await;
    assert_eq!(totals.occurrences_posted, 5);
    second.kill9();
}

/// A channel whose webhook accepts the connection and never answers holds only itself: while
/// its one send is still waiting for its (60 s) timeout, another channel posts every message.
#[tokio::test]
async fn a_hung_channel_does_not_hold_the_other_channels() {
    let slack = FakeSlack::start().await;
    slack.hang("hooks/errors");
    let scratch = Scratch::new();
    let text =
        config_text(&slack, &scratch.db(), "").replace("timeout = \"2s\"", "timeout = \"60s\"");
    let path = scratch.write_config(&text);
    let server = TestServer::start(sluice::config::Config::load(&path).unwrap()).await;
    // Project `other` has no route: it goes to the default channel, `errors`, which hangs.
    server
        .accept_event("1", &event_id(0), "other", "production")
        .await;
    slack.wait_until_path("hooks/errors", 1, WAIT).await;
    for n in 1..=10 {
        server
            .accept_event("2", &event_id(n), "front-end", "production")
            .await;
    }
    let posted = slack.wait_accepted(10, WAIT).await;
    assert!(posted.iter().all(|r| r.path == "hooks/frontend-prod"));
    let hung: Vec<_> = slack
        .received()
        .into_iter()
        .filter(|r| r.path == "hooks/errors")
        .collect();
    assert_eq!(
        hung.len(),
        1,
        "the hung send is still the only one: {hung:#?}"
    );
    // No graceful stop: it would wait out the hung send's timeout.
}
