//! Several replicas on one PostgreSQL database: each ingests, one leads (delivers, runs the
//! digest), and when the leader dies another takes over without losing or doubling anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sluice::testing::ScratchPostgres;

use crate::digest::DAILY_DIGEST;
use crate::util::*;

/// SPEC §11 / issue 6: a follower takes over within this long.
const TAKEOVER: Duration = Duration::from_secs(10);

/// Starts `n` replicas of `text`, each with its own config file.
async fn replicas(text: &str, n: usize) -> (Vec<Process>, Vec<Scratch>) {
    let mut processes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..n {
        let dir = Scratch::new();
        processes.push(Process::start(text, &dir).await);
        dirs.push(dir);
    }
    (processes, dirs)
}

/// Waits until exactly one of `processes` says it leads; returns its index.
async fn leader_of(processes: &[&Process], within: Duration) -> usize {
    eventually(within, "a single leader", || async {
        let mut leaders = Vec::new();
        for (i, p) in processes.iter().enumerate() {
            if p.role().await.as_deref() == Some("leader") {
                leaders.push(i);
            }
        }
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    })
    .await
}

/// Ends the session holding the leader lock from the database side, as a network cut or a
/// PostgreSQL restart of that connection would.
async fn cut_the_leaders_lock_connection(db: &ScratchPostgres) {
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let cut: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND (classid::bigint << 32) | objid::bigint = $1",
    )
    .bind(sluice::leader::LOCK_KEY)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut, 1, "exactly one session holds the leader lock");
}

/// Posts `body` to the replica at `urls[first]`, or to the next one that answers, the way a
/// load balancer routes around a dead backend. A 202 (stored) or 200 (already stored, when
/// the first try was committed but its answer lost with the process) is an acknowledgement.
async fn deliver_anywhere(urls: &[String], first: usize, body: &[u8]) -> StatusCode {
    let mut next = first;
    eventually(Duration::from_secs(10), "a replica acknowledges", || {
        let url = urls[next % urls.len()].clone();
        next += 1;
        async move {
            let (status, _) = try_post_signed(&url, "event_alert", body, SECRET).await?;
            (status == StatusCode::ACCEPTED || status == StatusCode::OK).then_some(status)
        }
    })
    .await
}

#[tokio::test]
async fn killing_the_leader_mid_storm_loses_and_doubles_nothing() {
    const EVENTS: usize = 1_500;
    const ISSUES: usize = 30;
    let db = ScratchPostgres::new().await;
    let slack = FakeSlack::start().await;
    slack.rate_limit_every(7, 1);
    let text = config_text_postgres(&slack, db.url(), &format!("{STORM_CHANNEL}{DAILY_DIGEST}"));
    // Today's 00:00 UTC digest was missed: the first leader posts it at start.
    let store = sluice::store::open(db.url(), sluice::storm::planner())
        .await
        .unwrap();
    seed_occurrences(&*store, sluice::clock::Clock::system().now_ms(), 2, 3).await;

    let (processes, _dirs) = replicas(&text, 3).await;
    let all: Vec<&Process> = processes.iter().collect();
    let first_leader = leader_of(&all, TAKEOVER).await;
    let urls: Arc<Vec<String>> = Arc::new(all.iter().map(|p| p.url("/sentry/webhook")).collect());
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..EVENTS)
            .map(|i| {
                let issue = format!("{}", 60_000 + i % ISSUES);
                event_alert(&issue, &event_id(0x6_0000 + i), "storm", "production")
            })
            .collect(),
    );

    // The storm, spread round-robin over the replicas by 12 senders.
    let mut senders = Vec::new();
    for s in 0..12 {
        let (urls, bodies) = (urls.clone(), bodies.clone());
        senders.push(tokio::spawn(async move {
            let mut acknowledged = 0;
            for i in (s..EVENTS).step_by(12) {
                deliver_anywhere(&urls, i % urls.len(), &bodies[i]).await;
                acknowledged += 1;
            }
            acknowledged
        }));
    }
    // Mid-storm, once the leader has sent something, kill it.
    eventually(Duration::from_secs(30), "the leader delivers", || async {
        let posted = store.channel_totals("storm").await.unwrap().messages_posted;
        (posted >= 5).then_some(())
    })
    .await;
    let mut processes = processes;
    let leader = processes.remove(first_leader);
    leader.kill9();
    let killed_at = Instant::now();
    let survivors: Vec<&Process> = processes.iter().collect();
    let next = leader_of(&survivors, TAKEOVER).await;
    let takeover = killed_at.elapsed();
    assert!(takeover < TAKEOVER, "took {takeover:?}");

    let mut acknowledged = 0;
    for s in senders {
        acknowledged += s.await.unwrap();
    }
    assert_eq!(acknowledged, EVENTS);

    // Every acknowledged occurrence counted exactly once, and all of it delivered.
    let totals = wait_drained(&*store, "storm", Duration::from_secs(90)).await;
    assert_eq!(totals.occurrences_routed, EVENTS as u64, "{totals:?}");
    assert_eq!(totals.occurrences_posted, EVENTS as u64, "{totals:?}");
    assert_eq!(totals.occurrences_dead, 0, "{totals:?}");
    let mut week = 0;
    for issue in 0..ISSUES {
        let key = format!("{}", 60_000 + issue);
        week += store
            .issue_stats(&key, sluice::clock::Clock::system().now_ms())
            .await
            .unwrap()
            .week();
    }
    assert_eq!(week, EVENTS as u64, "counted once each");
    assert!(
        totals.occurrences_folded > 0 && totals.messages_rolled_up > 0,
        "storm control did not engage: {totals:?}"
    );

    // Never above the channel's rate, across both leaders: a burst of 3, then 10/s, so at most
    // 13 within any second (one more for edges measured at the receiver).
    let max = max_in_window(&slack.received(), "hooks/storm", Duration::from_secs(1));
    assert!(max <= 14, "{max} requests within one second");

    // One digest per channel and period, although both leaders ran the catch-up.
    let digests = || {
        let mut per_channel = std::collections::BTreeMap::<String, usize>::new();
        for r in slack.accepted() {
            if let Some(rest) = r.text().strip_prefix("Weekly error digest · #") {
                let channel = rest.split_whitespace().next().unwrap_or_default();
                *per_channel.entry(channel.to_string()).or_default() += 1;
            }
        }
        per_channel
    };
    // Both leaders ran the catch-up at their start, long before the storm drained; each
    // digest queued is sent before its channel drains.
    eventually(Duration::from_secs(20), "a digest", || {
        std::future::ready(digests().contains_key("errors").then_some(()))
    })
    .await;
    for channel in ["errors", "frontend-prod", "python-api", "storm"] {
        wait_drained(&*store, channel, Duration::from_secs(20)).await;
    }
    // Delivery is at least once: every message Slack accepted is one the store recorded as
    // posted, except that the one send a channel had in flight at the kill may have gone out
    // twice (the new leader cannot know Slack took it). Each channel sends one message at a
    // time, so each has at most one more than the store posted; a digest, once per channel
    // and period although both leaders ran the catch-up, is twice only as that one resend.
    let digests = digests();
    let accepted = slack.accepted();
    for (channel, sent_here) in [
        ("errors", "hooks/errors"),
        ("frontend-prod", "hooks/frontend-prod"),
        ("storm", "hooks/storm"),
        ("python-api", "api/chat.postMessage"),
    ] {
        let got = accepted.iter().filter(|r| r.path == sent_here).count() as u64;
        let posted = store.channel_totals(channel).await.unwrap().messages_posted;
        assert!(
            (posted..=posted + 1).contains(&got),
            "{channel}: Slack accepted {got} messages, the store posted {posted}"
        );
        let twice = digests.get(channel).copied().unwrap_or(0);
        assert!(
            twice <= 1 || (twice == 2 && got == posted + 1),
            "{channel}: the digest was posted {twice} times; Slack accepted {got}, the store posted {posted}"
        );
    }

    // The new leader says so, on /readyz and /metrics; the other replica follows.
    let metrics = |p: &Process| {
        let url = p.url("/metrics");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    assert!(
        metrics(survivors[next])
            .await
            .contains("\nsluice_leader 1\n")
    );
    assert!(
        metrics(survivors[1 - next])
            .await
            .contains("\nsluice_leader 0\n")
    );
    assert_eq!(
        survivors[1 - next].role().await.as_deref(),
        Some("follower")
    );
}

#[tokio::test]
async fn a_leader_that_loses_its_lock_connection_steps_down_and_leadership_recovers() {
    let db = ScratchPostgres::new().await;
    let slack = FakeSlack::start().await;
    let text = config_text_postgres(&slack, db.url(), "");
    let (processes, _dirs) = replicas(&text, 2).await;
    let all: Vec<&Process> = processes.iter().collect();
    let first = leader_of(&all, TAKEOVER).await;

    cut_the_leaders_lock_connection(&db).await;

    // The old leader steps down (it waits a poll before it competes again), someone leads
    // again within the takeover time, and both replicas keep serving.
    let stepped_down = std::cell::Cell::new(false);
    eventually(
        TAKEOVER,
        "the leader steps down and one leads again",
        || async {
            let roles = [all[0].role().await, all[1].role().await];
            assert!(roles.iter().all(Option::is_some), "{roles:?}");
            stepped_down.set(stepped_down.get() | (roles[first].as_deref() == Some("follower")));
            let leaders = roles
                .iter()
                .filter(|r| r.as_deref() == Some("leader"))
                .count();
            (stepped_down.get() && leaders == 1).then_some(())
        },
    )
    .await;
    let now_leading = leader_of(&all, TAKEOVER).await;

    // And the new leader delivers.
    let body = event_alert("77", &event_id(0x77), "front-end", "production");
    assert_eq!(
        all[1 - now_leading].deliver("event_alert", &body).await.0,
        StatusCode::ACCEPTED
    );
    slack.wait_accepted(1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_hands_over_at_the_next_poll() {
    let db = ScratchPostgres::new().await;
    let slack = FakeSlack::start().await;
    let text = config_text_postgres(&slack, db.url(), "");
    let (mut processes, _dirs) = replicas(&text, 2).await;
    let first = leader_of(&processes.iter().collect::<Vec<_>>(), TAKEOVER).await;
    let leader = processes.remove(first);
    leader.signal("TERM");
    assert_eq!(leader.wait_exit(Duration::from_secs(20)).await, Some(0));
    // A deploy's rolling restart: the follower leads within a poll (1 s) and the grace a new
    // leader gives an old one (2.25 s), and delivers.
    leader_of(&[&processes[0]], Duration::from_secs(5)).await;
    let body = event_alert("78", &event_id(0x78), "front-end", "production");
    assert_eq!(
        processes[0].deliver("event_alert", &body).await.0,
        StatusCode::ACCEPTED
    );
    slack.wait_accepted(1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lock_mid_round_stops_sending_at_once() {
    // Fewer than the channel's max_backlog (20), so that nothing is rolled up.
    const MESSAGES: usize = 15;
    let db = ScratchPostgres::new().await;
    let slack = FakeSlack::start().await;
    // A slow Slack: the round of 15 messages takes 6 s.
    slack.set_latency(Duration::from_millis(400));
    let text = config_text_postgres(&slack, db.url(), "");
    let (processes, _dirs) = replicas(&text, 2).await;
    let all: Vec<&Process> = processes.iter().collect();
    leader_of(&all, TAKEOVER).await;
    for i in 0..MESSAGES {
        let body = event_alert("91", &event_id(0x9100 + i), "front-end", "production");
        assert_eq!(
            all[i % 2].deliver("event_alert", &body).await.0,
            StatusCode::ACCEPTED
        );
    }
    let sent = || {
        slack
            .received()
            .iter()
            .filter(|r| r.path == "hooks/frontend-prod")
            .count()
    };
    slack
        .wait_until_path("hooks/frontend-prod", 3, Duration::from_secs(20))
        .await;
    cut_the_leaders_lock_connection(&db).await;

    // The next leader sends the rest; the old one sent nothing after its send in flight.
    let store = sluice::store::open(db.url(), sluice::storm::planner())
        .await
        .unwrap();
    let totals = wait_drained(&*store, "frontend-prod", Duration::from_secs(60)).await;
    assert_eq!(totals.occurrences_posted, MESSAGES as u64, "{totals:?}");
    assert_eq!(totals.messages_posted, MESSAGES as u64, "{totals:?}");
    assert!(
        sent() <= MESSAGES + 1,
        "Slack got {} messages for {MESSAGES}: the old leader kept sending",
        sent()
    );
}

/// `/readyz` of `process` as JSON.
async fn readyz(process: &Process) -> serde_json::Value {
    reqwest::get(process.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A replica stores what Sentry sends while no replica folds (the leader is stuck: its lock is
/// held and it does nothing); the deliveries wait, counted nowhere yet, `/readyz` says how
/// many; when the lock comes free the replica leads, folds them, each once, and posts.
#[tokio::test]
async fn deliveries_wait_for_a_leader_and_the_next_one_folds_them() {
    let db = ScratchPostgres::new().await;
    let slack = FakeSlack::start().await;
    let mut stuck = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(sluice::leader::LOCK_KEY)
        .execute(&mut stuck)
        .await
        .unwrap();
    let text = config_text_postgres(&slack, db.url(), "");
    let dir = Scratch::new();
    let replica = Process::start(&text, &dir).await;
    for n in 0..3 {
        let body = event_alert("79", &event_id(0x790 + n), "checkout", "production");
        let (status, answer) = replica.deliver("event_alert", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["counted"], true, "{answer}");
    }
    let ready = readyz(&replica).await;
    assert_eq!(ready["role"], "follower", "{ready}");
    assert_eq!(ready["fold"]["pending"], 3, "{ready}");
    assert!(
        ready["fold"]["lag_seconds"].as_f64().unwrap() >= 0.0,
        "{ready}"
    );
    assert_eq!(
        slack.received_count(),
        0,
        "nothing folds or posts without a leader"
    );

    <sqlx::PgConnection as sqlx::Connection>::close(stuck)
        .await
        .unwrap();
    leader_of(&[&replica], TAKEOVER).await;
    // One message (the first occurrence; the others fall in its cooldown), and every
    // occurrence counted once.
    slack.wait_accepted(1, Duration::from_secs(10)).await;
    let folded = eventually(Duration::from_secs(10), "the queue folded", || async {
        let ready = readyz(&replica).await;
        (ready["fold"]["pending"] == 0).then_some(ready)
    })
    .await;
    assert_eq!(folded["fold"]["lag_seconds"], 0.0, "{folded}");
    let store = sluice::store::open(db.url(), sluice::storm::planner())
        .await
        .unwrap();
    let stats = store.issue_stats("79", sluice::clock::Clock::system().now_ms());
    assert_eq!(stats.await.unwrap().week(), 3);
    let totals = store.channel_totals("errors").await.unwrap();
    assert_eq!(totals.occurrences_routed, 3);
}
