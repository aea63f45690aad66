//! Operating Sluice: hot reload, graceful shutdown, and Sluice reporting its own blind spots
//! (Sentry silence, dead letters) in `ops_channel`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use sluice::clock::Clock;
use tokio::time::Instant;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

async fn metric(url: &str, series: &str) -> Option<String> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
}

async fn wait_metric(url: &str, series: &str, at_least: u64) {
    eventually(WAIT, &format!("{series} reaches {at_least}"), || async {
        let value = metric(url, series).await?.parse::<u64>().ok()?;
        (value >= at_least).then_some(())
    })
    .await
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
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
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
            counter.store(acknowledged, Ordering::SeqCst);
        }
        acknowledged
    });
    // SIGTERM once the storm is under way: acknowledged deliveries, and Slack busy with them.
    eventually(WAIT, "the storm under way", || async {
        let under_way = sent.load(Ordering::SeqCst) >= 50 && !slack.received().is_empty();
        under_way.then_some(())
    })
    .await;
    process.signal("TERM");
    let code = process.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "a graceful shutdown exits 0");
    let acknowledged = sender.await.unwrap_or(0);
    assert!(acknowledged > 0);

    // Everything acknowledged before the shutdown is there after the restart, and delivered.
    slack.rate_limit_every(0, 0);
    let restarted = Process::start(&text, &scratch).await;
    let store = scratch.store().await;
    let t = wait_drained(&*store, "frontend-prod", Duration::from_secs(30)).await;
    assert_eq!(t.occurrences_routed, acknowledged as u64, "{t:?}");
    assert_eq!(t.occurrences_posted, acknowledged as u64, "{t:?}");
    restarted.kill9();
}

/// Where the test clocks start: 2025-11-22 00:00 UTC.
const T0: i64 = 1_763_769_600_000;
/// `sentry.quiet_alert_after` of the silence test; the watchdog looks this often too (the
/// lesser of it and 30 s).
const QUIET: Duration = Duration::from_secs(20);
const MS: Duration = Duration::from_millis(1);

/// The standard test config with an `ops` channel as `ops_channel`, loaded; `sentry_extra`
/// is added to `[sentry]`.
fn ops_config(slack: &FakeSlack, scratch: &Scratch, sentry_extra: &str) -> sluice::config::Config {
    let extra = "[channels.ops]\nwebhook_url = \"{slack}/hooks/ops\"\n";
    let text = config_text(slack, &scratch.db(), extra)
        .replace(
            "max_clock_skew = \"5m\"",
            &format!("max_clock_skew = \"5m\"\n{sentry_extra}"),
        )
        .replace(
            "default_channel = \"errors\"",
            "default_channel = \"errors\"\nops_channel = \"ops\"",
        );
    sluice::config::Config::load(&scratch.write_config(&text)).unwrap()
}

/// On the test's clock: no delivery for `quiet_alert_after` (20 s) is reported at the
/// watchdog's look when it has lasted that long, not a millisecond before; not repeated
/// while the silence lasts; and the first look after a delivery says deliveries resumed.
#[tokio::test(start_paused = true)]
async fn sentry_silence_is_reported_and_so_is_the_recovery() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let config = ops_config(&slack, &scratch, "quiet_alert_after = \"20s\"");
    let server = TestServer::start_on_clock(config, Clock::starting_at(T0)).await;
    let start = Instant::now();
    server.advance_and_settle(QUIET - MS).await;
    assert_eq!(slack.received().len(), 0, "silence reported early");
    tokio::time::advance(MS).await;
    let silence = slack.wait_accepted(1, WAIT).await;
    assert_eq!(silence[0].path, "hooks/ops");
    assert_eq!(
        silence[0].at - start,
        QUIET,
        "reported when the silence reached 20 s"
    );
    assert!(
        silence[0]
            .text()
            .contains("No verified delivery from Sentry"),
        "{}",
        silence[0].text()
    );
    // Not repeated while the silence lasts: three more looks.
    for _ in 0..3 {
        server.advance_and_settle(QUIET).await;
    }
    assert_eq!(slack.received().len(), 1, "{:#?}", slack.received());

    // A delivery between two looks (at 90 s; they come at 80 s and 100 s): the next look says
    // deliveries resumed.
    server.advance_and_settle(QUIET / 2).await;
    server
        .accept_event("91", &format!("{:032x}", 0x91), "front-end", "production")
        .await;
    slack.wait_accepted(2, WAIT).await;
    server.advance_and_settle(QUIET / 2 - MS).await;
    let resumed = || {
        slack
            .received()
            .into_iter()
            .filter(|r| r.text().contains("resumed"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        resumed().len(),
        0,
        "recovery reported before the watchdog looked"
    );
    tokio::time::advance(MS).await;
    slack.wait_accepted(3, WAIT).await;
    let notice = resumed();
    assert_eq!(notice.len(), 1, "{:#?}", slack.received());
    assert_eq!(notice[0].path, "hooks/ops");
    assert_eq!(
        notice[0].at - start,
        5 * QUIET,
        "at the first look after the delivery"
    );
    server.stop().await;
}

/// On the test's clock: a channel's dead letters are reported once per hour: two at start
/// make one notice, one 59 minutes later none, one at 60 minutes the second notice.
#[tokio::test(start_paused = true)]
async fn the_first_dead_letter_of_a_channel_in_an_hour_is_reported() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(ops_config(&slack, &scratch, ""), Clock::starting_at(T0)).await;
    let start = Instant::now();
    slack.refuse("hooks/frontend-prod", "channel_not_found");
    let store = scratch.store().await;
    let dead_letter = |n: usize| {
        let (server, store) = (&server, &store);
        async move {
            server
                .accept_event(
                    &format!("{}", 95 + n),
                    &format!("{:032x}", 0x95 + n),
                    "front-end",
                    "production",
                )
                .await;
            wait_dead_letters(&**store, n + 1).await;
        }
    };
    let ops = || {
        slack
            .received()
            .into_iter()
            .filter(|r| r.path == "hooks/ops")
            .collect::<Vec<_>>()
    };
    dead_letter(0).await;
    dead_letter(1).await;
    slack.wait_until_path("hooks/ops", 1, WAIT).await;
    let first = ops();
    assert_eq!(first[0].at, start);
    assert!(
        first[0].text().contains("#frontend-prod") && first[0].text().contains("channel_not_found"),
        "{}",
        first[0].text()
    );
    server
        .advance_and_settle(Duration::from_secs(59 * 60))
        .await;
    dead_letter(2).await;
    server.advance_and_settle(Duration::from_secs(60)).await;
    assert_eq!(
        ops().len(),
        1,
        "one notice per channel per hour: {:#?}",
        ops()
    );
    dead_letter(3).await;
    slack.wait_until_path("hooks/ops", 2, WAIT).await;
    assert_eq!(ops()[1].at - start, Duration::from_secs(3600));
    server.advance_and_settle(Duration::from_secs(60)).await;
    assert_eq!(ops().len(), 2, "{:#?}", ops());
    assert_eq!(
        slack
            .received()
            .iter()
            .filter(|r| r.path == "hooks/frontend-prod")
            .count(),
        4
    );
    server.stop().await;
}

/// Every series on `/metrics`, after a 429 whose retry the test's clock lets through.
#[tokio::test(start_paused = true)]
async fn metrics_carry_every_series() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    slack.script([Reply::RateLimited {
        retry_after_secs: 1,
    }]);
    let scratch = Scratch::new();
    let server =
        TestServer::start_on_clock(scratch.config(&slack, ""), Clock::starting_at(T0)).await;
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
    slack.wait_received(1, WAIT).await;
    // Past the Retry-After (1 s, plus at most 0.1 s of jitter).
    server.advance_and_settle(Duration::from_secs(2)).await;
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
        "sluice_occurrences_dead{channel=\"frontend-prod\"} 0",
        "sluice_occurrences_muted{channel=\"frontend-prod\"} 0",
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
