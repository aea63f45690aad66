//! The weekly digest end to end: catch-up of a missed period at start, exactly once across a
//! restart, and `sluice digest --dry-run`.

use std::time::Duration;

use crate::util::*;

pub const DAILY_DIGEST: &str = r#"
[digest]
schedule = "0 0 * * *"
timezone = "UTC"
top = 5
"#;

#[tokio::test]
async fn a_missed_digest_is_posted_at_start_and_only_once() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    seed_occurrences(&*scratch.store().await, 2, 3).await;
    // Sluice was down at today's 00:00 UTC: the digest of that period is posted at start.
    let server = TestServer::start(scratch.config(&slack, DAILY_DIGEST)).await;
    // Besides the digests, the seeded occurrences' alert and follow-up and a missed-digest
    // notice arrive, in no fixed order.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let digest = loop {
        let got = slack.accepted();
        if let Some(d) = got
            .iter()
            .find(|r| r.text().starts_with("Weekly error digest · #errors"))
        {
            break d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no digest: {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
    let digests = || {
        slack
            .received()
            .iter()
            .filter(|r| r.text().starts_with("Weekly error digest"))
            .count()
    };
    // One per digest channel (errors, frontend-prod, python-api).
    while digests() < 3 {
        assert!(std::time::Instant::now() < deadline, "fewer than 3 digests");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;

    // A restart right after posting does not post it again.
    let server = TestServer::start(scratch.config(&slack, DAILY_DIGEST)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(digests(), 3, "a digest was posted twice");
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

#[tokio::test]
async fn a_fresh_install_posts_no_digest_for_periods_before_it_existed() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, DAILY_DIGEST)).await;
    server
        .accept_event("1", &format!("{:032x}", 0xf4e54), "front-end", "production")
        .await;
    slack.wait_accepted(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        slack
            .received()
            .iter()
            .all(|r| !r.text().starts_with("Weekly error digest")),
        "a digest for a period before the first delivery"
    );
    server.stop().await;
}

#[tokio::test]
async fn digest_dry_run_prints_a_readable_digest() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let path = scratch.write_config(&config_text(&slack, &scratch.db(), ""));
    seed_occurrences(&*scratch.store().await, 0, 4).await;
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
    seed_occurrences(&*scratch.store().await, 1, 2).await;
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
