//! Operating Sluice: hot reload, graceful shutdown, and Sluice reporting its own blind spots
//! (Sentry silence, dead letters) in `ops_channel`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

async fn metric(url: &str, series: &str) -> Option<String> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
}

async fn wait_metric(url: &str, series: &str, at_least: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let value = metric(url, series)
            .await
            .and_then(|v| v.parse::<u64>().ok());
        if value.is_some_and(|v| v >= at_least) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached {at_least} (last {value:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const MOVED: &str = r#"
[[routes]]
name = "moved"
project = "moving"
channels = ["frontend-prod"]
cooldown = "0s"
"#;

#[tokio::test]
async fn a_config_change_or_sighup_reloads_routes_and_a_broken_config_keeps_the_old() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let process = Process::start(&config_text(&slack, &scratch.db(), ""), &scratch).await;
    let metrics = process.url("/metrics");
    let first = event_alert("61", &format!("{:032x}", 0x61), "moving", "production");
    assert_eq!(
        process.deliver("event_alert", &first).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(slack.wait_accepted(1, WAIT).await[0].path, "hooks/errors");

    // A new route for the project: the changed file is noticed, and the next delivery follows it.
    let path = scratch.dir.path().join("routes.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{MOVED}")).unwrap();
    wait_metric(&metrics, "sluice_config_reloads_total{outcome=\"ok\"}", 1).await;
    let second = event_alert("62", &format!("{:032x}", 0x62), "moving", "production");
    assert_eq!(
        process.deliver("event_alert", &second).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        slack.wait_accepted(2, WAIT).await[1].path,
        "hooks/frontend-prod"
    );
    // SIGHUP reloads too, even when the file did not change.
    process.signal("HUP");
    wait_metric(&metrics, "sluice_config_reloads_total{outcome=\"ok\"}", 2).await;

    // A broken config is refused: the old routes keep serving, the process keeps running.
    std::fs::write(
        &path,
        format!("{text}{MOVED}\n[[routes]]\nlevel = \"loud\"\nchannels = [\"errors\"]\n"),
    )
    .unwrap();
    process.signal("HUP");
    wait_metric(
        &metrics,
        "sluice_config_reloads_total{outcome=\"error\"}",
        1,
    )
    .await;
    let third = event_alert("63", &format!("{:032x}", 0x63), "moving", "production");
    assert_eq!(
        process.deliver("event_alert", &third).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        slack.wait_accepted(3, WAIT).await[2].path,
        "hooks/frontend-prod"
    );
    assert_eq!(
        reqwest::get(process.url("/readyz")).await.unwrap().status(),
        StatusCode::OK
    );
    process.kill9();
}

#[tokio::test]
async fn sigterm_mid_storm_loses_nothing_acknowledged() {
    let slack = FakeSlack::start().await;
    // Slack is slow to accept: plenty is still waiting when SIGTERM comes.
    slack.rate_limit_every(2, 1);
    let scratch = Scratch::new();
    let text = config_text(&slack, &scratch.db(), "");
    let process = Process::start(&text, &scratch).await;
    let url = process.url("/sentry/webhook");
    let sender = tokio::spawn(async move {
        let mut acknowledged = 0;
        for i in 0..400 {
            let body = event_alert(
                &format!("{}", 800 + i % 20),
                &format!("{:032x}", 0x7e57_0000 + i),
                "front-end",
                "production",
            );
            // Stops at the first delivery not acknowledged (the server is going away).
            match try_post_signed(&url, "event_alert", &body, SECRET).await {
                Some((StatusCode::ACCEPTED, _)) => acknowledged += 1,
                _ => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.signal("TERM");
    let code = process.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "a graceful shutdown exits 0");
    let acknowledged = sender.await.unwrap_or(0) as u64;
    assert!(acknowledged > 0);

    // Everything acknowledged before the shutdown is there after the restart, and delivered.
    slack.rate_limit_every(0, 0);
    let restarted = Process::start(&text, &scratch).await;
    let store = scratch.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = store.channel_totals("frontend-prod").await.unwrap();
        assert_eq!(t.occurrences_routed, acknowledged, "{t:?}");
        if t.occurrences_pending == 0 {
            assert_eq!(t.occurrences_posted, acknowledged);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never drained: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    restarted.kill9();
}

#[tokio::test]
async fn sentry_silence_is_reported_and_so_is_the_recovery() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let extra = "[channels.ops]\nwebhook_url = \"{slack}/hooks/ops\"\n";
    let text = config_text(&slack, &scratch.db(), extra)
        .replace(
            "max_clock_skew = \"5m\"",
            "max_clock_skew = \"5m\"\nquiet_alert_after = \"1s\"",
        )
        .replace(
            "default_channel = \"errors\"",
            "default_channel = \"errors\"\nops_channel = \"ops\"",
        );
    let process = Process::start(&text, &scratch).await;
    let silence = slack.wait_accepted(1, WAIT).await;
    assert_eq!(silence[0].path, "hooks/ops");
    assert!(
        silence[0]
            .text()
            .contains("No verified delivery from Sentry"),
        "{}",
        silence[0].text()
    );
    // Not repeated while the silence lasts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(slack.received().len(), 1);

    let body = event_alert("91", &format!("{:032x}", 0x91), "front-end", "production");
    assert_eq!(
        process.deliver("event_alert", &body).await.0,
        StatusCode::ACCEPTED
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !slack
        .received()
        .iter()
        .any(|r| r.text().contains("resumed"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery notice: {:#?}",
            slack.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process.kill9();
}

#[tokio::test]
async fn the_first_dead_letter_of_a_channel_in_an_hour_is_reported() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let extra = "[channels.ops]\nwebhook_url = \"{slack}/hooks/ops\"\n";
    let text = config_text(&slack, &scratch.db(), extra).replace(
        "default_channel = \"errors\"",
        "default_channel = \"errors\"\nops_channel = \"ops\"",
    );
    let path = scratch.write_config(&text);
    let server = TestServer::start(sluice::config::Config::load(&path).unwrap()).await;
    slack.script([
        Reply::SlackError("channel_not_found"),
        Reply::SlackError("channel_not_found"),
    ]);
    for i in 0..2 {
        server
            .accept_event(
                &format!("{}", 95 + i),
                &format!("{:032x}", 0x95 + i),
                "front-end",
                "production",
            )
            .await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    while !slack.received().iter().any(|r| r.path == "hooks/ops") {
        assert!(
            std::time::Instant::now() < deadline,
            "no ops notice: {:#?}",
            slack.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops: Vec<_> = slack
        .received()
        .into_iter()
        .filter(|r| r.path == "hooks/ops")
        .collect();
    assert_eq!(ops.len(), 1, "one notice per channel per hour: {ops:#?}");
    assert!(
        ops[0].text().contains("#frontend-prod") && ops[0].text().contains("channel_not_found")
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_carry_every_series() {
    let slack = FakeSlack::start().await;
    slack.script([Reply::RateLimited {
        retry_after_secs: 1,
    }]);
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let body = event_alert("31", &format!("{:032x}", 0x31), "front-end", "production");
    assert_eq!(
        server.deliver("event_alert", &body).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(server.deliver("event_alert", &body).await.0, StatusCode::OK);
    assert_eq!(
        server.deliver("event_alert", b"nope").await.0,
        StatusCode::BAD_REQUEST
    );
    let unsigned = post(
        &server.url("/sentry/webhook"),
        &[("sentry-hook-resource", "error".to_string())],
        &body,
    )
    .await;
    assert_eq!(unsigned.0, StatusCode::UNAUTHORIZED);
    slack.wait_accepted(1, WAIT).await;
    wait_drained(&*scratch.store().await, "frontend-prod", WAIT).await;

    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sluice_webhooks_total{resource=\"event_alert\",outcome=\"stored\"} 1",
        "sluice_webhooks_total{resource=\"event_alert\",outcome=\"duplicate\"} 1",
        "sluice_webhooks_total{resource=\"event_alert\",outcome=\"malformed\"} 1",
        "sluice_webhooks_total{resource=\"error\",outcome=\"unauthorized\"} 1",
        "sluice_ingest_duration_seconds_count 4",
        "sluice_ingest_duration_seconds_bucket{le=\"+Inf\"} 4",
        "sluice_slack_requests_total{channel=\"frontend-prod\",status=\"rate_limited\"} 1",
        "sluice_slack_requests_total{channel=\"frontend-prod\",status=\"ok\"} 1",
        "sluice_slack_retries_total{channel=\"frontend-prod\",reason=\"retry_after\"} 1",
        "sluice_slack_retry_after_seconds_total{channel=\"frontend-prod\"} 1",
        "sluice_occurrences_routed_total{channel=\"frontend-prod\"} 1",
        "sluice_occurrences_posted_total{channel=\"frontend-prod\"} 1",
        "sluice_occurrences_pending{channel=\"frontend-prod\"} 0",
        "sluice_occurrences_dead_total{channel=\"frontend-prod\"} 0",
        "sluice_occurrences_folded_total{channel=\"frontend-prod\"} 0",
        "sluice_messages_rolled_up_total{channel=\"frontend-prod\"} 0",
        "sluice_messages_posted_total{channel=\"frontend-prod\"} 1",
        "sluice_outbox_messages{channel=\"frontend-prod\"} 0",
        "sluice_outbox_oldest_age_seconds{channel=\"frontend-prod\"} 0",
        "sluice_config_reloads_total{outcome=\"ok\"} 0",
        "sluice_config_reloads_total{outcome=\"error\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    for name in [
        "sluice_last_delivery_timestamp_seconds ",
        "sluice_build_info{version=",
        "# TYPE sluice_digest_last_success_timestamp_seconds gauge",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    server.stop().await;
}
