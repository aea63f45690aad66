//! Counting: per issue per UTC day, across restarts.

use std::time::Duration;

use reqwest::StatusCode;

use crate::util::*;

#[tokio::test]
async fn counts_survive_a_restart() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    for i in 0..3 {
        let body = event_alert(
            "300",
            &format!("{:032x}", 0x300 + i),
            "front-end",
            "production",
        );
        assert_eq!(
            server.deliver("event_alert", &body).await.0,
            StatusCode::ACCEPTED
        );
    }
    slack.wait_accepted(3, Duration::from_secs(10)).await;
    server.stop().await;

    let server = TestServer::start(scratch.config(&slack, "")).await;
    server
        .accept_event("300", &format!("{:032x}", 0x399), "front-end", "production")
        .await;
    // A replay of a delivery from before the restart is still a duplicate.
    let old = event_alert("300", &format!("{:032x}", 0x300), "front-end", "production");
    assert_eq!(server.deliver("event_alert", &old).await.0, StatusCode::OK);
    let got = slack.wait_accepted(4, Duration::from_secs(10)).await;
    assert!(
        got[3].text().contains("7d: 4 · 30d: 4"),
        "{}",
        got[3].text()
    );
    server.stop().await;
}
