//! The delivery worker against the fake Slack: retries, Retry-After, dead letters, escaping,
//! and at-least-once delivery across a `kill -9`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_429_waits_for_retry_after_then_delivers() {
    let slack = FakeSlack::start().await;
    slack.script([Reply::RateLimited {
        retry_after_secs: 1,
    }]);
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    server
        .accept_event(
            "9",
            "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            "front-end",
            "production",
        )
        .await;
    let got = slack.wait_accepted(1, WAIT).await;
    let all = slack.received();
    assert_eq!(all.len(), 2, "one 429, then the retry: {all:#?}");
    let waited = all[1].at - all[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before Retry-After"
    );
    assert!(got[0].text().contains("heck is not defined"));
    server.stop().await;
}

#[tokio::test]
async fn server_errors_back_off_and_retry_until_slack_accepts() {
    let slack = FakeSlack::start().await;
    slack.script([Reply::ServerError, Reply::ServerError, Reply::ServerError]);
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    server
        .accept_event(
            "10",
            "ffffffffffffffffffffffffffffffff",
            "front-end",
            "production",
        )
        .await;
    slack.wait_accepted(1, WAIT).await;
    let all = slack.received();
    assert_eq!(all.len(), 4);
    // Backoff grows: 50 ms doubling per attempt, each scaled by a jitter in [0.5, 1], so the
    // first gap is 25-50 ms and the third 100-200 ms.
    let gap = |i: usize| all[i + 1].at - all[i].at;
    assert!(gap(0) >= Duration::from_millis(25), "{:?}", gap(0));
    assert!(gap(2) >= gap(0), "{:?} then {:?}", gap(0), gap(2));
    let totals = wait_drained(&*scratch.store().await, "frontend-prod", WAIT).await;
    assert_eq!(totals.occurrences_posted, 1);
    assert_eq!(totals.messages_posted, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_with_slacks_error() {
    let slack = FakeSlack::start().await;
    slack.script([Reply::SlackError("channel_not_found")]);
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
