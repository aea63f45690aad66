//! The status page and dead-letter replay, on every backend: a delivery's trail through its
//! channels, paging, a channel's state now, and dead letters listed and replayed with the
//! accounting kept.

use super::*;

/// The delivery's hash, as the store keys it.
fn body(name: &str) -> [u8; 32] {
    delivery(name, T0, None, &[]).body_sha256
}

/// The trail of the delivery with body `name` (it must be among the newest 100).
async fn trail(store: &dyn Store, name: &str) -> DeliveryTrail {
    store
        .recent_deliveries(None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.cursor.body_sha256 == body(name))
        .unwrap_or_else(|| panic!("no trail of {name}"))
}

/// (channel, fate) of each route of the delivery `name`.
async fn fates(store: &dyn Store, name: &str) -> Vec<(String, Fate)> {
    trail(store, name)
        .await
        .routes
        .into_iter()
        .map(|r| (r.channel, r.fate))
        .collect()
}

/// `routed = posted + pending + dead + muted` in `channel`; returns its totals.
async fn balanced(store: &dyn Store, channel: &str) -> ChannelTotals {
    let t = store.channel_totals(channel).await.unwrap();
    assert_eq!(
        t.occurrences_routed,
        t.occurrences_posted + t.occurrences_pending + t.occurrences_dead + t.occurrences_muted,
        "{channel}: {t:?}"
    );
    t
}

/// The waiting row of `channel` queued for the delivery `name`'s issue.
async fn waiting(store: &dyn Store, channel: &str, issue: &str) -> OutboxItem {
    store
        .channel_outbox(channel)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.issue_key == issue)
        .unwrap_or_else(|| panic!("nothing waits for {issue} in {channel}"))
}

pub(super) async fn a_delivery_s_trail_follows_its_messages(store: &dyn Store) {
    let mut d = delivery(
        "t1",
        T0,
        Some(alert("s1", Some("s1-e1"))),
        &["beta", "alpha"],
    );
    d.request_id = Some("req-1".into());
    d.targets[1].route = Some("payments".into());
    ingest(store, d.clone()).await.unwrap();
    let t = trail(store, "t1").await;
    assert_eq!(
        t,
        DeliveryTrail {
            cursor: DeliveryCursor {
                received_at_ms: T0,
                body_sha256: d.body_sha256,
            },
            resource: "event_alert".into(),
            request_id: Some("req-1".into()),
            outcome: "stored".into(),
            event_id: Some("s1-e1".into()),
            issue_key: Some("s1".into()),
            project: Some("checkout".into()),
            environment: Some("production".into()),
            title: Some("PaymentError".into()),
            folding: false,
            routes: vec![
                DeliveryRoute {
                    channel: "alpha".into(),
                    route: Some("payments".into()),
                    fate: Fate::Pending,
                },
                DeliveryRoute {
                    channel: "beta".into(),
                    route: None,
                    fate: Fate::Pending,
                },
            ],
        },
        "routes in channel order"
    );
    // The same body again changes nothing; the same event in another body is a duplicate.
    assert_eq!(ingest(store, d).await.unwrap(), Ingested::DuplicateDelivery);
    let again = delivery(
        "t1-again",
        T0 + 1,
        Some(alert("s1", Some("s1-e1"))),
        &["alpha"],
    );
    ingest(store, again).await.unwrap();
    let dup = trail(store, "t1-again").await;
    assert_eq!(
        (
            dup.outcome.as_str(),
            dup.event_id.as_deref(),
            dup.routes.len()
        ),
        ("duplicate", Some("s1-e1"), 0),
        "a repeated event is neither counted nor routed"
    );
    let ignored = delivery("t-install", T0 + 2, None, &[]);
    ingest(store, ignored).await.unwrap();
    let ignored = trail(store, "t-install").await;
    assert_eq!(
        (ignored.outcome.as_str(), ignored.issue_key, ignored.routes),
        ("ignored", None, vec![])
    );
    assert_eq!(store.recent_deliveries(None, 100).await.unwrap().len(), 3);

    // Slack accepts it in alpha and refuses it for good in beta.
    let alpha = waiting(store, "alpha", "s1").await;
    let beta = waiting(store, "beta", "s1").await;
    store
        .mark_posted(alpha.id, T0 + 50, Some("1700.01"), Some("C0ALPHA"))
        .await
        .unwrap();
    let refusal = crate::slack::Refusal::new("channel_not_found", "channel_not_found");
    store
        .dead_letter(beta.id, 3, T0 + 60, &refusal)
        .await
        .unwrap();
    assert_eq!(
        fates(store, "t1").await,
        [
            (
                "alpha".to_string(),
                Fate::Posted {
                    at_ms: T0 + 50,
                    slack_ts: Some("1700.01".into())
                }
            ),
            (
                "beta".to_string(),
                Fate::Dead {
                    error: "channel_not_found".into()
                }
            ),
        ]
    );
    // A repeat within the cooldown is folded in both.
    let repeat = delivery(
        "t2",
        T0 + 1000,
        Some(alert("s1", Some("s1-e2"))),
        &["alpha", "beta"],
    );
    ingest(store, repeat).await.unwrap();
    assert_eq!(
        fates(store, "t2").await,
        [
            ("alpha".to_string(), Fate::Folded),
            ("beta".to_string(), Fate::Folded)
        ]
    );
    // An issue notice goes where the issue went, placed by no route.
    let notice = delivery("t3", T0 + 2000, Some(alert("s1", None)), &["elsewhere"]);
    ingest(store, notice).await.unwrap();
    let pending = |channel: &str| DeliveryRoute {
        channel: channel.into(),
        route: None,
        fate: Fate::Pending,
    };
    assert_eq!(
        trail(store, "t3").await.routes,
        [pending("alpha"), pending("beta")]
    );
}

pub(super) async fn muted_and_rolled_up_deliveries_say_so(store: &dyn Store) {
    store
        .mute("s2", "alpha", T0 + 60_000, None, T0)
        .await
        .unwrap();
    let held = delivery(
        "m1",
        T0 + 1,
        Some(alert("s2", Some("m1"))),
        &["alpha", "beta"],
    );
    ingest(store, held).await.unwrap();
    assert_eq!(
        fates(store, "m1").await,
        [
            ("alpha".to_string(), Fate::Muted),
            ("beta".to_string(), Fate::Pending)
        ]
    );
    // A backlog in gamma is rolled up: its deliveries' messages are gone into the summary,
    // also once the summary is posted.
    for i in 0..3 {
        let d = delivery(
            &format!("r{i}"),
            T0 + 10 + i,
            Some(alert(&format!("s3-{i}"), Some(&format!("r{i}")))),
            &["gamma"],
        );
        ingest(store, d).await.unwrap();
    }
    let items = store.channel_outbox("gamma").await.unwrap();
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    let rollup = crate::storm::roll_up(&items[..2]);
    assert!(
        store
            .replace_with_rollup("gamma", &ids[..2], &rollup, T0 + 20)
            .await
            .unwrap()
    );
    for name in ["r0", "r1"] {
        assert_eq!(
            fates(store, name).await,
            [("gamma".to_string(), Fate::RolledUp)]
        );
    }
    assert_eq!(
        fates(store, "r2").await,
        [("gamma".to_string(), Fate::Pending)]
    );
    let summary = store.channel_outbox("gamma").await.unwrap()[0].id;
    store
        .mark_posted(summary, T0 + 30, None, None)
        .await
        .unwrap();
    assert_eq!(
        fates(store, "r0").await,
        [("gamma".to_string(), Fate::RolledUp)]
    );
    balanced(store, "gamma").await;
}

pub(super) async fn deliveries_page_newest_first_without_overlap(store: &dyn Store) {
    // Seven deliveries, some received in the same millisecond (ordered by their hash then).
    let times = [T0, T0 + 5, T0 + 5, T0 + 5, T0 + 9, T0 + 9, T0 + 20];
    let mut expected: Vec<DeliveryCursor> = Vec::new();
    for (i, at) in times.into_iter().enumerate() {
        let name = format!("p{i}");
        let d = delivery(&name, at, Some(alert("pg", Some(&name))), &[]);
        expected.push(DeliveryCursor {
            received_at_ms: at,
            body_sha256: d.body_sha256,
        });
        ingest(store, d).await.unwrap();
    }
    expected.sort_by_key(|c| std::cmp::Reverse((c.received_at_ms, c.body_sha256)));
    let mut seen: Vec<DeliveryCursor> = Vec::new();
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store.recent_deliveries(before, 3).await.unwrap();
        pages.push(page.len());
        let Some(last) = page.last() else { break };
        before = Some(last.cursor);
        seen.extend(page.iter().map(|t| t.cursor));
    }
    assert_eq!(pages, [3, 3, 1, 0]);
    assert_eq!(seen, expected, "every delivery once, newest first");
}

pub(super) async fn channel_now_shows_the_hold_and_the_day_s_posts(store: &dyn Store) {
    for i in 0..3 {
        let name = format!("n{i}");
        let d = delivery(
            &name,
            T0,
            Some(alert(&format!("cn-{i}"), Some(&name))),
            &["chan"],
        );
        ingest(store, d).await.unwrap();
    }
    let due = store.due_outbox(T0, 10).await.unwrap();
    let day_start = T0 + 1_000;
    store
        .mark_posted(due[0].id, T0 + 500, None, None)
        .await
        .unwrap();
    store
        .mark_posted(due[1].id, T0 + 1_500, None, None)
        .await
        .unwrap();
    // Slack asked for a minute's wait.
    store
        .reschedule(due[2].id, 1, T0 + 60_000, "rate_limited")
        .await
        .unwrap();
    let now = store
        .channel_now("chan", T0 + 2_000, day_start)
        .await
        .unwrap();
    assert_eq!(
        now,
        ChannelNow {
            totals: store.channel_totals("chan").await.unwrap(),
            held_until_ms: Some(T0 + 60_000),
            posted_since: 1,
        }
    );
    assert_eq!(now.totals.messages_posted, 2);
    let later = store.channel_now("chan", T0 + 60_000, T0).await.unwrap();
    assert_eq!(
        (later.held_until_ms, later.posted_since),
        (None, 2),
        "a hold that ended is not shown"
    );
    assert_eq!(
        store.channel_now("quiet", T0, T0).await.unwrap(),
        ChannelNow::default()
    );
}

/// Dead-letters one message for each of `(name, channel, at)`; returns their ids.
async fn kill(store: &dyn Store, letters: &[(&str, &str, i64)]) -> Vec<i64> {
    let mut ids = Vec::new();
    for &(name, channel, at) in letters {
        let d = delivery(name, T0, Some(alert(name, Some(name))), &[channel]);
        ingest(store, d).await.unwrap();
        let row = waiting(store, channel, name).await;
        let refusal = crate::slack::Refusal::new("invalid_blocks", "invalid_blocks");
        store.dead_letter(row.id, 1, at, &refusal).await.unwrap();
        ids.push(row.id);
    }
    ids
}

pub(super) async fn dead_letters_are_listed_by_filter(store: &dyn Store) {
    let ids = kill(
        store,
        &[
            ("d1", "a", T0 + 10),
            ("d2", "b", T0 + 20),
            ("d3", "a", T0 + 30),
            ("d4", "b", T0 + 40),
        ],
    )
    .await;
    // A notice, about no issue.
    let notice = OutboxMessage::Notice {
        message: crate::slack::SlackMessage {
            text: "Sentry is silent".into(),
            blocks: vec![],
        },
    };
    assert!(
        store
            .queue_notice("silence", 0, "a", &notice, T0)
            .await
            .unwrap()
    );
    let row = store.channel_outbox("a").await.unwrap()[0].id;
    let refusal = crate::slack::Refusal::new("not_in_channel", "not_in_channel");
    store.dead_letter(row, 1, T0 + 50, &refusal).await.unwrap();

    let list = |filter: DeadLetterFilter, limit| async move {
        let letters = store.dead_letters(&filter, limit).await.unwrap();
        letters.iter().map(|l| l.id).collect::<Vec<i64>>()
    };
    let all = store
        .dead_letters(&DeadLetterFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|l| l.id).collect::<Vec<_>>(),
        [row, ids[3], ids[2], ids[1], ids[0]],
        "newest first"
    );
    assert_eq!(
        (
            all[0].kind.as_str(),
            all[0].title.as_deref(),
            all[0].issue_key.as_str()
        ),
        ("notice", None, "")
    );
    assert_eq!(
        (
            all[1].kind.as_str(),
            all[1].title.as_deref(),
            all[1].error.as_str()
        ),
        ("alert", Some("PaymentError"), "invalid_blocks")
    );
    assert_eq!((all[1].channel.as_str(), all[1].dead_at_ms), ("b", T0 + 40));
    let a = || DeadLetterFilter {
        channel: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(list(a(), 10).await, [row, ids[2], ids[0]]);
    let since = DeadLetterFilter {
        since_ms: Some(T0 + 30),
        ..Default::default()
    };
    assert_eq!(list(since, 10).await, [row, ids[3], ids[2]], "at or after");
    let page = DeadLetterFilter {
        before_id: Some(ids[3]),
        ..Default::default()
    };
    assert_eq!(list(page, 2).await, [ids[2], ids[1]]);
    let a_page = DeadLetterFilter {
        before_id: Some(ids[2]),
        ..a()
    };
    assert_eq!(list(a_page, 10).await, [ids[0]]);
    // A replay of a's letters queues them in the order they were first queued, the notice
    // (no issue, no delivery) as it was.
    assert_eq!(
        store
            .replay_dead_letters(&a(), T0 + 100)
            .await
            .unwrap()
            .len(),
        3
    );
    let kinds: Vec<(String, &str)> = store
        .channel_outbox("a")
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.issue_key, i.message.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("d1".to_string(), "alert"),
            ("d3".to_string(), "alert"),
            (String::new(), "notice")
        ]
    );
    assert_eq!(
        list(DeadLetterFilter::default(), 10).await,
        [ids[3], ids[1]]
    );
}

pub(super) async fn replay_queues_dead_letters_again_with_the_accounting_kept(store: &dyn Store) {
    let old = kill(
        store,
        &[
            ("x1", "chan", T0 + 10),
            ("x2", "other", T0 + 20),
            ("x3", "chan", T0 + 30),
        ],
    )
    .await;
    let before = balanced(store, "chan").await;
    assert_eq!(
        (before.occurrences_dead, before.occurrences_pending),
        (2, 0)
    );
    let now = T0 + 1_000;
    let chan = DeadLetterFilter {
        channel: Some("chan".into()),
        // Ignored by a replay.
        before_id: Some(old[0]),
        ..Default::default()
    };
    let ids = store.replay_dead_letters(&chan, now).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0] < ids[1] && ids[0] > old[2],
        "new rows, in their first order"
    );
    let after = balanced(store, "chan").await;
    assert_eq!(
        (after.occurrences_dead, after.messages_dead),
        (0, 0),
        "{after:?}"
    );
    assert_eq!(
        (after.occurrences_pending, after.messages_pending),
        (before.occurrences_pending + 2, 2)
    );
    assert_eq!(after.occurrences_routed, before.occurrences_routed);
    // Due now, from scratch, and the same messages as before.
    assert!(store.due_outbox(now - 1, 10).await.unwrap().is_empty());
    let due = store.due_outbox(now, 10).await.unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        due.iter()
            .map(|i| (
                i.issue_key.as_str(),
                i.attempts,
                i.created_at_ms,
                i.occurrences
            ))
            .collect::<Vec<_>>(),
        [("x1", 0, now, 1), ("x3", 0, now, 1)]
    );
    assert!(
        matches!(&due[0].message, OutboxMessage::Alert { alert, .. } if alert.issue_key == "x1")
    );
    assert_eq!(
        fates(store, "x1").await,
        [("chan".to_string(), Fate::Pending)]
    );
    // The other channel's letter stays; a second replay finds nothing.
    let left = store
        .dead_letters(&DeadLetterFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|l| l.id).collect::<Vec<_>>(), [old[1]]);
    assert!(
        store
            .replay_dead_letters(&chan, now)
            .await
            .unwrap()
            .is_empty()
    );
    // Posted this time.
    store
        .mark_posted(ids[0], now + 5, Some("9.9"), None)
        .await
        .unwrap();
    assert_eq!(
        fates(store, "x1").await,
        [(
            "chan".to_string(),
            Fate::Posted {
                at_ms: now + 5,
                slack_ts: Some("9.9".into())
            }
        )]
    );
    balanced(store, "chan").await;
    balanced(store, "other").await;
}

pub(super) async fn pruned_deliveries_take_their_trail_along(store: &dyn Store) {
    let old = delivery(
        "old",
        T0 - 100 * DAY_MS,
        Some(alert("po", Some("po"))),
        &["chan"],
    );
    ingest(store, old.clone()).await.unwrap();
    store.prune(T0, 90).await.unwrap();
    assert!(store.recent_deliveries(None, 10).await.unwrap().is_empty());
    // The same body once more is a new delivery, routed anew.
    assert!(matches!(
        ingest(store, old).await.unwrap(),
        Ingested::Stored { .. }
    ));
    let routes = trail(store, "old").await.routes;
    assert_eq!(routes.len(), 1);
}
