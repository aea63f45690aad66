//! The weekly digest end to end: catch-up of a missed period at start, exactly once across a
//! restart, and `sluice digest --dry-run`.

use std::time::Duration;

use sluice::clock::Clock;
use tokio::time::Instant;

use crate::util::fake_slack::Received;
use crate::util::*;

pub const DAILY_DIGEST: &str = r#"
[digest]
schedule = "0 0 * * *"
timezone = "UTC"
top = 5
"#;

/// 2025-11-22 00:00 UTC, a period end of [`DAILY_DIGEST`].
const MIDNIGHT: i64 = 1_763_769_600_000;
const HOUR: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(15);

/// The digests the fake Slack received.
fn digests(slack: &FakeSlack) -> Vec<Received> {
    slack
        .received()
        .into_iter()
        .filter(|r| r.text().starts_with("Weekly error digest"))
        .collect()
}

/// Waits until the fake Slack received `n` digests; returns them.
async fn wait_digests(slack: &FakeSlack, n: usize) -> Vec<Received> {
    eventually(WAIT, &format!("{n} digests"), || {
        let got = digests(slack);
        std::future::ready((got.len() >= n).then_some(got))
    })
    .await
}

/// Sluice was down at today's 00:00 UTC: started at 09:00, it posts that period's digest at
/// once, one per digest channel, and neither a restart nor the hours after post it again.
#[tokio::test(start_paused = true)]
async fn a_missed_digest_is_posted_at_start_and_only_once() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let clock = Clock::starting_at(MIDNIGHT + 9 * 3_600_000);
    seed_occurrences(&*scratch.store().await, clock.now_ms(), 2, 3).await;
    let server = TestServer::start_on_clock(scratch.config(&slack, DAILY_DIGEST), clock).await;
    let start = Instant::now();
    // Besides the digests, the seeded occurrences' alert and follow-up and a missed-digest
    // notice arrive, in no fixed order. One digest per digest channel (errors, frontend-prod,
    // python-api), all at start.
    let got = wait_digests(&slack, 3).await;
    assert!(got.iter().all(|d| d.at == start), "{got:#?}");
    let digest = got
        .iter()
        .find(|r| r.text().starts_with("Weekly error digest · #errors"))
        .unwrap_or_else(|| panic!("no digest for #errors: {got:#?}"));
    assert_eq!(digest.path, "hooks/errors");
    assert!(
        digest
            .text()
            .contains("3 events (new vs 0 the week before) · 1 issue"),
        "{}",
        digest.text()
    );
    assert!(
        digest.text().contains("front-end · staging"),
        "{}",
        digest.text()
    );
    server.stop().await;

    // A restart right after posting does not post it again, nor do the scheduler's hourly
    // looks after it.
    let server = TestServer::start_on_clock(scratch.config(&slack, DAILY_DIGEST), clock).await;
    for _ in 0..3 {
        server.advance_and_settle(HOUR).await;
    }
    assert_eq!(digests(&slack).len(), 3, "a digest was posted twice");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_digest_last_success_timestamp_seconds{channel=\"errors\"}"),
        "{metrics}"
    );
    server.stop().await;
}

/// Installed at 09:00 with its first delivery: the period that ended at 00:00 was before
/// Sluice existed, so no digest for it, neither at start nor in the hours after.
#[tokio::test(start_paused = true)]
async fn a_fresh_install_posts_no_digest_for_periods_before_it_existed() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let clock = Clock::starting_at(MIDNIGHT + 9 * 3_600_000);
    let server = TestServer::start_on_clock(scratch.config(&slack, DAILY_DIGEST), clock).await;
    server
        .accept_event("1", &format!("{:032x}", 0xf4e54), "front-end", "production")
        .await;
    slack.wait_accepted(1, WAIT).await;
    for _ in 0..3 {
        server.advance_and_settle(HOUR).await;
    }
    let got = digests(&slack);
    assert!(
        got.is_empty(),
        "a digest for a period before the first delivery: {got:#?}"
    );
    assert_eq!(slack.received().len(), 1);
    server.stop().await;
}

/// Started a minute before midnight: the digest of the period ending at midnight goes out
/// when the scheduler wakes for it (the scheduled instant plus its 10 ms margin), not a
/// millisecond before; the next one exactly a day later, and none in between.
#[tokio::test(start_paused = true)]
async fn the_digest_is_posted_when_its_period_ends_and_once_per_period() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let clock = Clock::starting_at(MIDNIGHT - 60_000);
    let server = TestServer::start_on_clock(scratch.config(&slack, DAILY_DIGEST), clock).await;
    let start = Instant::now();
    server
        .accept_event("2", &format!("{:032x}", 0xd16e), "front-end", "production")
        .await;
    slack.wait_accepted(1, WAIT).await;
    // The scheduler wakes 10 ms after the scheduled instant (src/digest/mod.rs).
    let due = Duration::from_secs(60) + Duration::from_millis(10);
    server
        .advance_and_settle(due - Duration::from_millis(1))
        .await;
    let early = digests(&slack);
    assert!(
        early.is_empty(),
        "a digest before its period ended: {early:#?}"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let first = wait_digests(&slack, 3).await;
    assert!(first.iter().all(|d| d.at - start == due), "{first:#?}");
    let frontend = first
        .iter()
        .find(|d| d.path == "hooks/frontend-prod")
        .unwrap_or_else(|| panic!("no digest for #frontend-prod: {first:#?}"));
    assert!(frontend.text().contains("1 event"), "{}", frontend.text());
    // The scheduler looks again at least hourly (here at 12:00 and 23:00, its wake-ups being
    // measured from when it looked): not one more digest until the next period ends.
    server.advance_and_settle(12 * HOUR).await;
    server.advance_and_settle(11 * HOUR).await;
    server
        .advance_and_settle(HOUR - Duration::from_millis(1))
        .await;
    assert_eq!(digests(&slack).len(), 3, "a digest was posted twice");
    tokio::time::advance(Duration::from_millis(1)).await;
    let both = wait_digests(&slack, 6).await;
    let day = Duration::from_secs(86_400);
    assert!(
        both[3..].iter().all(|d| d.at - start == due + day),
        "{both:#?}"
    );
    server.advance_and_settle(HOUR).await;
    assert_eq!(digests(&slack).len(), 6, "a digest was posted twice");
    server.stop().await;
}

#[tokio::test]
async fn digest_dry_run_prints_a_readable_digest() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let path = scratch.write_config(&config_text(&slack, &scratch.db(), ""));
    seed_occurrences(&*scratch.store().await, Clock::system().now_ms(), 0, 4).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["digest", "--dry-run", "--channel", "errors", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("Weekly error digest · #errors"),
        "{stdout}"
    );
    assert!(stdout.contains("4 events"), "{stdout}");
    assert!(
        stdout.contains("1. ReferenceError: heck is not defined"),
        "{stdout}"
    );
    assert!(slack.received().is_empty(), "--dry-run posts nothing");

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["digest", "--dry-run", "--channel", "nope", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no channel `nope`"));
}

#[tokio::test]
async fn digest_without_dry_run_posts_to_the_channel() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let path = scratch.write_config(&config_text(&slack, &scratch.db(), ""));
    seed_occurrences(&*scratch.store().await, Clock::system().now_ms(), 1, 2).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["digest", "--channel", "errors", "-c"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("posted the digest to #errors"));
    let got = slack.wait_accepted(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "hooks/errors");
    assert!(
        got[0].text().starts_with("Weekly error digest · #errors"),
        "{}",
        got[0].text()
    );
    assert!(got[0].text().contains("2 events"), "{}", got[0].text());
}
