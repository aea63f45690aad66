//! Behaviour every backend must have, run against each one.

use super::*;
use crate::alert::Level;
use crate::counts::DAY_MS;

/// [`super::open`] with the planner Sluice runs with: these tests check the store executing
/// storm control's plans.
async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    super::open(url, crate::storm::planner()).await
}

fn alert(issue: &str, event: Option<&str>) -> Alert {
    Alert {
        resource: if event.is_some() {
            "event_alert"
        } else {
            "issue"
        }
        .into(),
        action: if event.is_some() {
            "triggered"
        } else {
            "resolved"
        }
        .into(),
        issue_key: issue.into(),
        short_id: None,
        event_id: event.map(str::to_string),
        projects: vec!["checkout".into()],
        environment: Some("production".into()),
        level: Level::Error,
        title: "PaymentError".into(),
        culprit: None,
        release: None,
        issue_url: None,
        event_url: None,
        tags: vec![],
        timestamp: None,
        sentry_first_seen: None,
        sentry_count: event.is_none().then_some(99),
        rule: None,
        detail: None,
        state: None,
    }
}

fn target(channel: &str) -> Target {
    Target {
        channel: channel.into(),
        route: None,
        mention: None,
        cooldown_secs: 1800,
        digest: true,
        actions: None,
        comments: false,
        breakthrough: vec![10, 100, 1000],
    }
}

fn delivery(body: &str, at: i64, alert: Option<Alert>, channels: &[&str]) -> Delivery {
    use sha2::Digest;
    Delivery {
        body_sha256: sha2::Sha256::digest(body.as_bytes()).into(),
        resource: "event_alert".into(),
        request_id: None,
        received_at_ms: at,
        alert,
        targets: channels.iter().map(|c| target(c)).collect(),
    }
}

const T0: i64 = 1_763_800_000_000; // 2025-11-22

/// What a delivery came to once folded: the request path's answer, with what the fold queued
/// for it (the shape of the answer before ingest and fold were two steps, which these tests
/// assert on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingested {
    DuplicateDelivery,
    Stored {
        counted: bool,
        queued: usize,
        follow_up_due: bool,
    },
}

/// Ingests `d`, then folds the queue as the leader's fold loop does right after (on SQLite
/// the commit folded it already), and answers with what became of `d`.
async fn ingest(store: &dyn Store, d: Delivery) -> Result<Ingested, StoreError> {
    let body = d.body_sha256;
    let outcome = store.ingest(d).await?;
    let folded = fold_all(store).await;
    Ok(match outcome {
        IngestOutcome::DuplicateDelivery => Ingested::DuplicateDelivery,
        IngestOutcome::Stored {
            counted,
            queued,
            follow_up_due,
            ..
        } => {
            let f = folded.iter().find(|f| f.body_sha256 == body);
            Ingested::Stored {
                counted,
                queued: queued + f.map_or(0, |f| f.queued),
                follow_up_due: follow_up_due || f.is_some_and(|f| f.follow_up_due),
            }
        }
    })
}

/// Folds until the queue is empty; returns what each delivery came to, in fold order.
async fn fold_all(store: &dyn Store) -> Vec<Folded> {
    let mut all = Vec::new();
    loop {
        let report = store.fold(64).await.unwrap();
        let n = report.deliveries();
        all.extend(report.folded);
        if n < 64 {
            return all;
        }
    }
}

async fn dedupes_deliveries_and_events(store: &dyn Store) {
    let d = delivery("a", T0, Some(alert("1", Some("e1"))), &["x", "y"]);
    assert_eq!(
        ingest(store, d.clone()).await.unwrap(),
        Ingested::Stored {
            counted: true,
            queued: 2,
            follow_up_due: false
        }
    );
    assert!(store.is_known_delivery(&d.body_sha256).await.unwrap());
    assert!(
        !store
            .is_known_delivery(&delivery("never", T0, None, &[]).body_sha256)
            .await
            .unwrap()
    );
    assert_eq!(ingest(store, d).await.unwrap(), Ingested::DuplicateDelivery);
    // Same event, other body: stored, neither counted nor queued.
    let again = delivery("b", T0, Some(alert("1", Some("e1"))), &["x"]);
    assert_eq!(
        ingest(store, again).await.unwrap(),
        Ingested::Stored {
            counted: false,
            queued: 0,
            follow_up_due: false
        }
    );
    let stats = store.issue_stats("1", T0).await.unwrap();
    assert_eq!((stats.week(), stats.month()), (1, 1));
    assert_eq!(stats.first_seen_ms, Some(T0));
    assert_eq!(store.due_outbox(T0, 10).await.unwrap().len(), 2);
}

async fn counts_by_received_day(store: &dyn Store) {
    for (i, days_ago) in [0, 0, 3, 6, 7, 29, 30].into_iter().enumerate() {
        let d = delivery(
            &format!("c{i}"),
            T0 - days_ago * DAY_MS,
            Some(alert("2", Some(&format!("ev{i}")))),
            &[],
        );
        ingest(store, d).await.unwrap();
    }
    let stats = store.issue_stats("2", T0).await.unwrap();
    assert_eq!(stats.week(), 4);
    assert_eq!(stats.month(), 6);
    assert_eq!(stats.first_seen_ms, Some(T0 - 30 * DAY_MS));
    // A week later the old days have left the window.
    let later = store.issue_stats("2", T0 + 7 * DAY_MS).await.unwrap();
    assert_eq!(later.week(), 0);
}

async fn notices_update_the_issue_but_are_not_counted(store: &dyn Store) {
    let d = delivery("n", T0, Some(alert("3", None)), &["x"]);
    assert_eq!(
        ingest(store, d).await.unwrap(),
        Ingested::Stored {
            counted: false,
            queued: 1,
            follow_up_due: false
        }
    );
    let stats = store.issue_stats("3", T0).await.unwrap();
    assert_eq!((stats.month(), stats.sentry_count), (0, Some(99)));
}

async fn outbox_lifecycle_keeps_the_accounting(store: &dyn Store) {
    for i in 0..3 {
        let d = delivery(
            &format!("o{i}"),
            T0,
            Some(alert(&format!("4-{i}"), Some(&format!("o{i}")))),
            &["chan"],
        );
        ingest(store, d).await.unwrap();
    }
    let due = store.due_outbox(T0, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    store
        .mark_posted(due[0].id, T0 + 1, Some("1.1"), None)
        .await
        .unwrap();
    // A retry holds the whole channel until the retry time.
    store
        .reschedule(due[1].id, 1, T0 + 5_000, "HTTP 500")
        .await
        .unwrap();
    assert!(store.due_outbox(T0 + 4_999, 10).await.unwrap().is_empty());
    // A row queued while the channel is held waits too.
    let d = delivery(
        "o-late",
        T0 + 10,
        Some(alert("4-late", Some("o-late"))),
        &["chan"],
    );
    ingest(store, d).await.unwrap();
    assert!(store.due_outbox(T0 + 4_999, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 5_000));
    let due = store.due_outbox(T0 + 5_000, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert_eq!(due[0].attempts, 1);
    store
        .mark_posted(due[2].id, T0 + 5_001, None, None)
        .await
        .unwrap();
    store
        .dead_letter(
            due[1].id,
            2,
            T0 + 6_000,
            &crate::slack::Refusal::new("http_404", "HTTP 404: <html>Not Found</html>"),
        )
        .await
        .unwrap();
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!(
        totals,
        ChannelTotals {
            occurrences_routed: 4,
            occurrences_folded: 0,
            messages_rolled_up: 0,
            last_sent_ms: Some(T0 + 5_001),
            last_digest_ms: None,
            oldest_pending_ms: Some(T0),
            messages_posted: 2,
            occurrences_posted: 2,
            messages_pending: 1,
            occurrences_pending: 1,
            messages_dead: 1,
            occurrences_dead: 1,
            occurrences_muted: 0,
        }
    );
    let dead = store
        .dead_letters(&DeadLetterFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(dead[0].error, "HTTP 404: <html>Not Found</html>");
    assert_eq!(dead[0].reason, "http_404");
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(
        store.dead_letter_counts().await.unwrap(),
        vec![("chan".to_string(), "http_404".to_string(), 1)],
        "counted by the reason's code, not its text"
    );
}

async fn per_channel_batches_do_not_starve_other_channels(store: &dyn Store) {
    for i in 0..20 {
        let d = delivery(
            &format!("busy{i}"),
            T0,
            Some(alert(&format!("5-{i}"), Some(&format!("busy{i}")))),
            &["busy"],
        );
        ingest(store, d).await.unwrap();
    }
    let d = delivery("quiet", T0, Some(alert("6", Some("quiet"))), &["quiet"]);
    ingest(store, d).await.unwrap();
    let due = store.due_outbox(T0, 5).await.unwrap();
    assert_eq!(due.iter().filter(|i| i.channel == "busy").count(), 5);
    assert_eq!(due.iter().filter(|i| i.channel == "quiet").count(), 1);
}

async fn prune_drops_what_is_past_retention(store: &dyn Store) {
    let old = delivery("old", T0 - 100 * DAY_MS, Some(alert("7", Some("old"))), &[]);
    ingest(store, old.clone()).await.unwrap();
    let new = delivery("new", T0, Some(alert("7", Some("new"))), &[]);
    ingest(store, new.clone()).await.unwrap();
    assert!(store.prune(T0, 90).await.unwrap() >= 3);
    // The old delivery and event are forgotten; the recent ones are still duplicates.
    assert_eq!(
        ingest(store, new).await.unwrap(),
        Ingested::DuplicateDelivery
    );
    assert_eq!(
        ingest(store, old).await.unwrap(),
        Ingested::Stored {
            counted: true,
            queued: 0,
            follow_up_due: false
        }
    );
}

/// The log of what Slack accepted is pruned past the retention, and the channel's totals,
/// which are counters, keep what it held: the accounting stays exact.
async fn pruning_the_sent_log_keeps_the_accounting(store: &dyn Store) {
    let old_at = T0 - 100 * DAY_MS;
    for (body, issue, at) in [("s-old", "91", old_at), ("s-new", "92", T0)] {
        let d = delivery(body, at, Some(alert(issue, Some(body))), &["chan"]);
        ingest(store, d).await.unwrap();
        let due = store.due_outbox(at, 10).await.unwrap();
        store
            .mark_posted(due[0].id, at + 10, None, None)
            .await
            .unwrap();
    }
    let span = |t: i64| store.channel_activity("chan", t - DAY_MS, t + DAY_MS);
    assert_eq!(span(old_at).await.unwrap().messages_posted, 1);
    let before = store.channel_totals("chan").await.unwrap();
    store.prune(T0, 90).await.unwrap();
    assert_eq!(
        span(old_at).await.unwrap().messages_posted,
        0,
        "the old log is pruned"
    );
    assert_eq!(
        span(T0).await.unwrap().messages_posted,
        1,
        "the new is kept"
    );
    let after = store.channel_totals("chan").await.unwrap();
    assert_eq!(after, before, "the totals keep what the log held");
    assert_eq!(
        (
            after.occurrences_routed,
            after.messages_posted,
            after.occurrences_posted
        ),
        (2, 2, 2)
    );
    assert_eq!(after.last_sent_ms, Some(T0 + 10));
}

async fn cooldown_folds_repeats_and_releases_one_follow_up(store: &dyn Store) {
    // cooldown 1800 s: the first occurrence posts, the next three fold.
    for i in 0..4 {
        let d = delivery(
            &format!("cd{i}"),
            T0 + i * 1000,
            Some(alert("8", Some(&format!("cd{i}")))),
            &["chan"],
        );
        let outcome = ingest(store, d).await.unwrap();
        let expected_queued = usize::from(i == 0);
        assert_eq!(
            outcome,
            Ingested::Stored {
                counted: true,
                queued: expected_queued,
                follow_up_due: i == 1
            }
        );
    }
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!(totals.occurrences_routed, 4);
    assert_eq!(totals.occurrences_folded, 3);
    assert_eq!(totals.occurrences_pending, 4, "1 queued + 3 folded");
    // The worker must wake when the cooldown ends.
    let end = T0 + 1_800_000;
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0));
    let first = store.due_outbox(T0, 10).await.unwrap();
    store
        .mark_posted(first[0].id, T0 + 10, Some("1.5"), Some("C0CHAN"))
        .await
        .unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(end));
    assert_eq!(
        store.thread_ts("8", "chan").await.unwrap(),
        Some(crate::store::SlackThread {
            ts: "1.5".into(),
            channel_id: Some("C0CHAN".into())
        })
    );
    // Nothing before the end; one follow-up carrying all three at the end.
    assert_eq!(store.release_cooldowns(end - 1).await.unwrap(), 0);
    assert_eq!(store.release_cooldowns(end).await.unwrap(), 1);
    assert_eq!(store.release_cooldowns(end).await.unwrap(), 0);
    let due = store.due_outbox(end, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].occurrences, 3);
    match &due[0].message {
        OutboxMessage::FollowUp {
            folded, since_ms, ..
        } => assert_eq!((*folded, *since_ms), (3, T0 + 1000)),
        other => panic!("expected a follow-up, got {other:?}"),
    }
    // A new occurrence within the new cooldown folds again.
    let d = delivery(
        "cd-late",
        end + 5,
        Some(alert("8", Some("cd-late"))),
        &["chan"],
    );
    assert_eq!(
        ingest(store, d).await.unwrap(),
        Ingested::Stored {
            counted: true,
            queued: 0,
            follow_up_due: true
        }
    );
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!(
        totals.occurrences_routed,
        totals.occurrences_posted + totals.occurrences_pending + totals.occurrences_dead
    );
}

async fn a_rollup_replaces_the_backlog_atomically(store: &dyn Store) {
    for i in 0..5 {
        let d = delivery(
            &format!("ru{i}"),
            T0 + i,
            Some(alert(&format!("9-{}", i % 2), Some(&format!("ru{i}")))),
            &["chan"],
        );
        ingest(store, d).await.unwrap();
    }
    // Issue 9-0 and 9-1 each posted once; the rest folded by the cooldown.
    let items = store.channel_outbox("chan").await.unwrap();
    assert_eq!(items.len(), 2);
    let rollup = crate::storm::roll_up(&items);
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    assert!(
        !store
            .replace_with_rollup("chan", &[ids[0], 999_999], &rollup, T0)
            .await
            .unwrap(),
        "a vanished row aborts the roll-up"
    );
    assert_eq!(store.channel_outbox("chan").await.unwrap().len(), 2);
    // A message queued after the backlog was read stays, and goes out after the roll-up.
    let late = delivery(
        "ru-late",
        T0 + 9,
        Some(alert("9-late", Some("ru-late"))),
        &["chan"],
    );
    ingest(store, late).await.unwrap();
    assert!(
        store
            .replace_with_rollup("chan", &ids, &rollup, T0)
            .await
            .unwrap()
    );
    let after = store.channel_outbox("chan").await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].occurrences, 2);
    assert!(matches!(after[0].message, OutboxMessage::RollUp(_)));
    assert_eq!(after[1].issue_key, "9-late");
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!(totals.messages_rolled_up, 2);
    assert_eq!(totals.occurrences_routed, 6);
    assert_eq!(totals.occurrences_pending, 6);
}

async fn concurrent_deliveries_share_commits_and_each_gets_its_answer(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Every body twice: exactly one of each pair is stored.
            let d = delivery(
                &format!("gc{}", i / 2),
                T0,
                Some(alert(&format!("g{}", i % 7), Some(&format!("gc{}", i / 2)))),
                &[],
            );
            ingest(&*store, d).await.unwrap()
        }));
    }
    let mut stored = 0;
    let mut duplicates = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ingested::Stored { counted: true, .. } => stored += 1,
            Ingested::DuplicateDelivery => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((stored, duplicates), (100, 100));
    let mut total = 0;
    for g in 0..7 {
        total += store
            .issue_stats(&format!("g{g}"), T0)
            .await
            .unwrap()
            .week();
    }
    assert_eq!(total, 100);
}

async fn digest_inputs_follow_what_the_channel_received(store: &dyn Store) {
    let mut no_digest = target("chan");
    no_digest.digest = false;
    for i in 0..3 {
        let d = delivery(
            &format!("dg{i}"),
            T0 - i * DAY_MS,
            Some(alert("10", Some(&format!("dg{i}")))),
            &["chan"],
        );
        ingest(store, d).await.unwrap();
    }
    let mut quiet = delivery("dg-x", T0, Some(alert("11", Some("dg-x"))), &[]);
    quiet.targets = vec![no_digest];
    ingest(store, quiet).await.unwrap();
    let notice = delivery("dg-n", T0, Some(alert("10", None)), &["chan"]);
    ingest(store, notice).await.unwrap();
    let today = crate::counts::day_of(T0);
    let days = store.channel_days("chan", today - 14, today).await.unwrap();
    let occurrences: u64 = days.iter().map(|d| d.occurrences).sum();
    let folded: u64 = days.iter().map(|d| d.folded).sum();
    let notices: u64 = days.iter().map(|d| d.notices).sum();
    assert_eq!(
        (occurrences, notices),
        (3, 1),
        "a digest = false route is left out"
    );
    assert_eq!(folded, 2, "the two later arrivals were within the cooldown");
    assert!(
        days.iter()
            .all(|d| d.project == "checkout" && d.environment == "production")
    );
    let issues = store.channel_issues("chan", today - 14).await.unwrap();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].issue_key, "10");
    assert!(
        issues[0].resolved_at_ms.is_some(),
        "the notice was issue.resolved"
    );
}

async fn a_digest_period_is_queued_once(store: &dyn Store) {
    let message = OutboxMessage::Digest {
        period_end_ms: T0,
        message: crate::slack::SlackMessage {
            text: "Weekly error digest".into(),
            blocks: vec![],
        },
    };
    assert!(store.queue_digest("chan", T0, &message, T0).await.unwrap());
    assert!(
        !store
            .queue_digest("chan", T0, &message, T0 + 1)
            .await
            .unwrap()
    );
    assert!(store.queue_digest("other", T0, &message, T0).await.unwrap());
    assert!(
        store
            .queue_digest("chan", T0 + 7 * DAY_MS, &message, T0)
            .await
            .unwrap()
    );
    let due = store.due_outbox(T0 + 1, 10).await.unwrap();
    assert_eq!(due.iter().filter(|i| i.channel == "chan").count(), 2);
    store
        .mark_posted(due[0].id, T0 + 2, None, None)
        .await
        .unwrap();
    assert_eq!(
        store.channel_totals("chan").await.unwrap().last_digest_ms,
        Some(T0 + 2)
    );
}

async fn ops_notices_are_limited_per_subject_and_resolved_once(store: &dyn Store) {
    let hour = 3_600_000;
    let message = OutboxMessage::Notice {
        message: crate::slack::SlackMessage {
            text: "silence".into(),
            blocks: vec![],
        },
    };
    let queue = |subject: &'static str, at: i64| {
        let message = message.clone();
        async move {
            store
                .queue_notice(subject, hour, "ops", &message, at)
                .await
                .unwrap()
        }
    };
    assert!(queue("sentry-silence", T0).await);
    assert!(
        !queue("sentry-silence", T0 + hour - 1).await,
        "within the hour"
    );
    assert!(queue("dead-letter:x", T0 + 1).await, "another subject");
    assert!(queue("sentry-silence", T0 + hour).await, "an hour later");
    assert!(
        store
            .resolve_notice("sentry-silence", "ops", &message, T0 + hour + 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .resolve_notice("sentry-silence", "ops", &message, T0 + hour + 2)
            .await
            .unwrap(),
        "resolved once"
    );
    assert!(
        queue("sentry-silence", T0 + hour + 3).await,
        "a new silence is reported at once"
    );
    let queued = store.due_outbox(T0 + 2 * hour, 50).await.unwrap();
    assert_eq!(queued.len(), 5, "{queued:#?}");
    assert!(
        queued
            .iter()
            .all(|i| i.channel == "ops" && i.occurrences == 0)
    );
}

async fn a_comment_does_not_rename_its_issue(store: &dyn Store) {
    let comment = |body: &str, issue: &str| {
        let mut a = alert(issue, None);
        a.resource = "comment".into();
        a.action = "created".into();
        a.title = format!("Comment on issue {issue} by colleen");
        a.level = Level::Info;
        delivery(body, T0, Some(a), &[])
    };
    let title =
        |issue: &'static str| async move { store.issue_stats(issue, T0).await.unwrap().title };
    ingest(
        store,
        delivery("event", T0, Some(alert("7", Some("e7"))), &[]),
    )
    .await
    .unwrap();
    ingest(store, comment("comment", "7")).await.unwrap();
    assert_eq!(title("7").await.as_deref(), Some("PaymentError"));
    // Known only from a comment, then described: the description names it.
    ingest(store, comment("comment-first", "8")).await.unwrap();
    ingest(
        store,
        delivery("event-8", T0, Some(alert("8", Some("e8"))), &[]),
    )
    .await
    .unwrap();
    assert_eq!(title("8").await.as_deref(), Some("PaymentError"));
}

/// `n` occurrences of `issue` routed to `chan`, one a second from `at`, each through `target`
/// (changed by `adjust`); returns the outcomes.
async fn occurrences(
    store: &dyn Store,
    issue: &str,
    at: i64,
    n: i64,
    adjust: impl Fn(&mut Target),
) -> Vec<Ingested> {
    let mut outcomes = Vec::new();
    for i in 0..n {
        let event = format!("{issue}-{at}-{i}");
        let mut d = delivery(
            &event,
            at + i * 1000,
            Some(alert(issue, Some(&event))),
            &["chan"],
        );
        d.targets.iter_mut().for_each(&adjust);
        outcomes.push(ingest(store, d).await.unwrap());
    }
    outcomes
}

/// `routed = posted + pending + dead + muted`, for `chan`; returns its totals.
async fn accounted(store: &dyn Store) -> ChannelTotals {
    let t = store.channel_totals("chan").await.unwrap();
    assert_eq!(
        t.occurrences_routed,
        t.occurrences_posted + t.occurrences_pending + t.occurrences_dead + t.occurrences_muted,
        "{t:?}"
    );
    t
}

/// The follow-ups waiting for `chan`: reason, occurrences carried, since when.
async fn follow_ups(store: &dyn Store) -> Vec<(crate::plan::FollowUpReason, u64, i64)> {
    let waiting = store.channel_outbox("chan").await.unwrap();
    waiting
        .iter()
        .filter_map(|item| match &item.message {
            OutboxMessage::FollowUp {
                folded,
                since_ms,
                reason,
                ..
            } => {
                assert_eq!(item.occurrences, *folded);
                Some((*reason, *folded, *since_ms))
            }
            _ => None,
        })
        .collect()
}

async fn a_mute_holds_occurrences_and_its_end_releases_them_once(store: &dyn Store) {
    use crate::plan::FollowUpReason::MuteEnded;
    let end = T0 + 60_000;
    store
        .mute("m1", "chan", end, Some("Ada Lovelace"), T0)
        .await
        .unwrap();
    let mute = Mute {
        issue_key: "m1".into(),
        channel: "chan".into(),
        until_ms: end,
        by: Some("Ada Lovelace".into()),
        held: 0,
        title: None,
    };
    assert_eq!(store.mutes(T0).await.unwrap(), std::slice::from_ref(&mute));
    assert_eq!(store.mute_of("m1", "chan", T0).await.unwrap(), Some(mute));
    assert_eq!(store.mute_of("m1", "other", T0).await.unwrap(), None);
    assert_eq!(
        store.next_due_at().await.unwrap(),
        Some(end),
        "wakes at its end"
    );
    let outcomes = occurrences(store, "m1", T0 + 1000, 5, |_| {}).await;
    let held = Ingested::Stored {
        counted: true,
        queued: 0,
        follow_up_due: false,
    };
    assert_eq!(outcomes, [held; 5], "counted, not posted");
    let totals = accounted(store).await;
    assert_eq!(
        (totals.occurrences_muted, totals.occurrences_pending),
        (5, 0)
    );
    let listed = store.mutes(T0 + 5_000).await.unwrap();
    assert_eq!(
        (listed[0].held, listed[0].title.as_deref()),
        (5, Some("PaymentError"))
    );
    assert_eq!(store.release_cooldowns(end - 1).await.unwrap(), 0);
    assert_eq!(store.release_cooldowns(end).await.unwrap(), 1);
    assert_eq!(
        store.release_cooldowns(end).await.unwrap(),
        0,
        "exactly once"
    );
    assert_eq!(follow_ups(store).await, [(MuteEnded, 5, T0 + 1000)]);
    assert!(store.mutes(end).await.unwrap().is_empty());
    assert_eq!(store.mute_of("m1", "chan", end).await.unwrap(), None);
    let totals = accounted(store).await;
    assert_eq!(
        (totals.occurrences_muted, totals.occurrences_pending),
        (0, 5)
    );
    // The message at the end of the mute starts a cooldown: the next occurrence folds.
    let after = occurrences(store, "m1", end + 1000, 1, |_| {}).await;
    let first_fold = Ingested::Stored {
        counted: true,
        queued: 0,
        follow_up_due: true,
    };
    assert_eq!(after, [first_fold], "its follow-up is now due");
    assert_eq!(accounted(store).await.occurrences_folded, 1);
}

async fn mutes_are_moved_ended_now_and_ended_quietly(store: &dyn Store) {
    use crate::plan::FollowUpReason::MuteEnded;
    // A mute that held nothing ends without a message.
    store
        .mute("quiet", "chan", T0 + 1000, None, T0)
        .await
        .unwrap();
    assert_eq!(store.release_cooldowns(T0 + 1000).await.unwrap(), 0);
    assert!(store.mutes(T0).await.unwrap().is_empty(), "the row is gone");
    // Moving a mute keeps what it held.
    store
        .mute("moved", "chan", T0 + 10_000, None, T0)
        .await
        .unwrap();
    occurrences(store, "moved", T0 + 1, 2, |_| {}).await;
    store
        .mute("moved", "chan", T0 + 5_000, Some("cli"), T0 + 3_000)
        .await
        .unwrap();
    let moved = store
        .mute_of("moved", "chan", T0 + 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((moved.until_ms, moved.held), (T0 + 5_000, 2));
    assert_eq!(moved.by.as_deref(), Some("cli"));
    // Unmute ends it now, queueing its message in the same transaction, once.
    assert!(store.unmute("moved", "chan", T0 + 4_000).await.unwrap());
    assert!(!store.unmute("moved", "chan", T0 + 4_001).await.unwrap());
    assert_eq!(store.release_cooldowns(T0 + 9_000).await.unwrap(), 0);
    assert_eq!(follow_ups(store).await, [(MuteEnded, 2, T0 + 1)]);
    // A new mute over one whose time was up (not yet released) ends the old one first.
    store
        .mute("again", "chan", T0 + 20_000, None, T0)
        .await
        .unwrap();
    occurrences(store, "again", T0 + 10_000, 1, |_| {}).await;
    store
        .mute("again", "chan", T0 + 90_000, None, T0 + 30_000)
        .await
        .unwrap();
    let again = store
        .mute_of("again", "chan", T0 + 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.until_ms, again.held), (T0 + 90_000, 0));
    assert_eq!(follow_ups(store).await.len(), 2);
    // A mute "until" now or earlier is an unmute.
    store
        .mute("again", "chan", T0, None, T0 + 30_000)
        .await
        .unwrap();
    assert!(store.mutes(T0 + 30_000).await.unwrap().is_empty());
    accounted(store).await;
}

async fn spikes_break_through_a_cooldown_and_only_the_last_through_a_mute(store: &dyn Store) {
    use crate::plan::FollowUpReason::{CooldownEnded, MuteEnded, Spike};
    // Cooldown 30 min, thresholds 10/100/1000: the alert, and a spike at the 10th repeat.
    let outcomes = occurrences(store, "s1", T0, 12, |_| {}).await;
    let queued: Vec<usize> = outcomes
        .iter()
        .map(|o| match o {
            Ingested::Stored { queued, .. } => *queued,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(queued, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(
        follow_ups(store).await,
        [(Spike { threshold: 10 }, 10, T0 + 1000)]
    );
    assert_eq!(accounted(store).await.occurrences_pending, 12);
    // The cooldown's own follow-up carries only what was folded after the spike.
    let end = T0 + 1_800_000;
    assert_eq!(store.release_cooldowns(end).await.unwrap(), 1);
    assert_eq!(follow_ups(store).await[1], (CooldownEnded, 1, T0 + 11_000));
    // Muted, thresholds 2 and 3: only 3 breaks through, carrying the held ones; the mute
    // stays and holds the next.
    store
        .mute("s2", "chan", T0 + 60_000, None, T0)
        .await
        .unwrap();
    occurrences(store, "s2", T0, 4, |t| t.breakthrough = vec![2, 3]).await;
    assert_eq!(
        follow_ups(store).await[2..],
        [(Spike { threshold: 3 }, 3, T0)]
    );
    let mute = store
        .mute_of("s2", "chan", T0 + 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mute.held, 1);
    assert_eq!(accounted(store).await.occurrences_muted, 1);
    assert_eq!(store.release_cooldowns(T0 + 60_000).await.unwrap(), 1);
    assert_eq!(follow_ups(store).await[3..], [(MuteEnded, 1, T0 + 3_000)]);
    assert_eq!(accounted(store).await.occurrences_muted, 0);
}

/// A click acts once: a repeat of its trigger, or of the same action while it is pending, is
/// not committed again; once it is over, the same action may be clicked anew. Its steps and
/// retries are recorded; carried-out clicks are pruned after the retention.
async fn clicks_are_committed_once_and_carried_out_in_recorded_steps(store: &dyn Store) {
    use crate::store::{ClickRecorded, NewClick};
    let click = |trigger: &str, key: &str| NewClick {
        trigger_id: trigger.into(),
        pending_key: key.into(),
        payload: format!("{{\"trigger\":\"{trigger}\"}}"),
    };
    assert_eq!(
        store
            .record_click(&click("t1", "ada|resolve"), T0)
            .await
            .unwrap(),
        ClickRecorded::New
    );
    assert_eq!(
        store
            .record_click(&click("t1", "ada|resolve"), T0)
            .await
            .unwrap(),
        ClickRecorded::Repeat
    );
    assert_eq!(
        store
            .record_click(&click("t2", "ada|resolve"), T0)
            .await
            .unwrap(),
        ClickRecorded::Repeat
    );
    assert_eq!(
        store
            .record_click(&click("t3", "bob|resolve"), T0)
            .await
            .unwrap(),
        ClickRecorded::New
    );
    let due = store.due_clicks(T0, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    let (first, second) = (&due[0], &due[1]);
    assert_eq!(
        (first.step, first.attempts, first.received_at_ms),
        (0, 0, T0)
    );

    store
        .retry_click(first.id, 1, T0 + 5_000, "HTTP 503")
        .await
        .unwrap();
    assert_eq!(store.due_clicks(T0 + 1_000, 10).await.unwrap().len(), 1);
    assert_eq!(store.next_click_at().await.unwrap(), Some(T0));
    store.click_step(first.id, 1).await.unwrap();
    let again = store.due_clicks(T0 + 5_000, 10).await.unwrap();
    let first = again.iter().find(|c| c.id == first.id).unwrap();
    assert_eq!((first.step, first.attempts), (1, 0));

    store
        .finish_click(first.id, "done", false, T0 + 6_000)
        .await
        .unwrap();
    store
        .finish_click(second.id, "refused", true, T0 + 6_000)
        .await
        .unwrap();
    assert!(store.due_clicks(i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(store.next_click_at().await.unwrap(), None);
    // Over: the same action may be clicked again; the old trigger still may not.
    assert_eq!(
        store
            .record_click(&click("t4", "ada|resolve"), T0 + 7_000)
            .await
            .unwrap(),
        ClickRecorded::New
    );
    assert_eq!(
        store
            .record_click(&click("t1", "ada|resolve"), T0 + 7_000)
            .await
            .unwrap(),
        ClickRecorded::Repeat
    );

    store.prune(T0 + 91 * DAY_MS, 90).await.unwrap();
    assert_eq!(
        store.due_clicks(i64::MAX, 10).await.unwrap().len(),
        1,
        "a pending click is kept"
    );
    assert_eq!(
        store
            .record_click(&click("t1", "x"), T0 + 91 * DAY_MS)
            .await
            .unwrap(),
        ClickRecorded::New,
        "done clicks are pruned"
    );
}

/// A full message Slack accepted in a Web API channel is kept with its ts and what it
/// showed; a state change from a click queues a rewrite of each channel's messages.
async fn posted_issue_messages_are_kept_and_a_state_change_rewrites_them(store: &dyn Store) {
    use crate::issue::{IssueState, Status};
    ingest(
        store,
        delivery("m1", T0, Some(alert("31", Some("m1"))), &["web", "hook"]),
    )
    .await
    .unwrap();
    for item in store.due_outbox(T0, 10).await.unwrap() {
        let (ts, id) = match item.channel.as_str() {
            "web" => (Some("1700000000.000001"), Some("C0WEB")),
            _ => (None, None),
        };
        store.mark_posted(item.id, T0, ts, id).await.unwrap();
    }
    let kept = store.issue_messages("31", "web").await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].ts.as_str(), kept[0].slack_channel_id.as_str()),
        ("1700000000.000001", "C0WEB")
    );
    assert!(
        matches!(&kept[0].message, OutboxMessage::Alert { alert, .. } if alert.issue_key == "31")
    );
    assert_eq!(
        store
            .issue_message("C0WEB", "1700000000.000001")
            .await
            .unwrap(),
        Some(kept[0].clone())
    );
    assert!(
        store.issue_messages("31", "hook").await.unwrap().is_empty(),
        "no ts, nothing to update"
    );

    let resolved = IssueState {
        status: Status::Resolved {
            in_next_release: false,
        },
        by: Some("Ada Lovelace".into()),
        ..IssueState::default()
    };
    assert_eq!(
        store
            .set_issue_state("31", &resolved, T0 + 1_000)
            .await
            .unwrap(),
        ["web"]
    );
    let due = store.due_outbox(T0 + 1_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].channel.as_str(), due[0].issue_key.as_str()),
        ("web", "31")
    );
    assert_eq!(due[0].message, OutboxMessage::Refresh);
    let stats = store.issue_stats("31", T0 + 1_000).await.unwrap();
    let state = stats.state.unwrap();
    assert_eq!(
        (state.status, state.by.as_deref(), state.at_ms),
        (resolved.status, Some("Ada Lovelace"), Some(T0 + 1_000))
    );
    assert_eq!(stats.previous_status, None, "never told before");

    store.prune(T0 + 91 * DAY_MS, 90).await.unwrap();
    assert!(
        store.issue_messages("31", "web").await.unwrap().is_empty(),
        "old messages are not updated any more"
    );
}

/// Runs every behaviour against stores made by `open` (a fresh, empty store per call).
async fn conformance<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    dedupes_deliveries_and_events(&*open().await).await;
    counts_by_received_day(&*open().await).await;
    notices_update_the_issue_but_are_not_counted(&*open().await).await;
    outbox_lifecycle_keeps_the_accounting(&*open().await).await;
    per_channel_batches_do_not_starve_other_channels(&*open().await).await;
    prune_drops_what_is_past_retention(&*open().await).await;
    pruning_the_sent_log_keeps_the_accounting(&*open().await).await;
    cooldown_folds_repeats_and_releases_one_follow_up(&*open().await).await;
    a_rollup_replaces_the_backlog_atomically(&*open().await).await;
    concurrent_deliveries_share_commits_and_each_gets_its_answer(open().await).await;
    digest_inputs_follow_what_the_channel_received(&*open().await).await;
    a_digest_period_is_queued_once(&*open().await).await;
    ops_notices_are_limited_per_subject_and_resolved_once(&*open().await).await;
    a_comment_does_not_rename_its_issue(&*open().await).await;
    a_mute_holds_occurrences_and_its_end_releases_them_once(&*open().await).await;
    mutes_are_moved_ended_now_and_ended_quietly(&*open().await).await;
    spikes_break_through_a_cooldown_and_only_the_last_through_a_mute(&*open().await).await;
    clicks_are_committed_once_and_carried_out_in_recorded_steps(&*open().await).await;
    posted_issue_messages_are_kept_and_a_state_change_rewrites_them(&*open().await).await;
    status::a_delivery_s_trail_follows_its_messages(&*open().await).await;
    status::muted_and_rolled_up_deliveries_say_so(&*open().await).await;
    status::deliveries_page_newest_first_without_overlap(&*open().await).await;
    status::channel_now_shows_the_hold_and_the_day_s_posts(&*open().await).await;
    status::dead_letters_are_listed_by_filter(&*open().await).await;
    status::replay_queues_dead_letters_again_with_the_accounting_kept(&*open().await).await;
    status::pruned_deliveries_take_their_trail_along(&*open().await).await;
}

/// On PostgreSQL ingest appends, and counts nothing by itself: a new occurrence and a notice
/// wait in the fold queue (a repeat of their event and an ignored delivery do not), and the
/// fold takes them in order, in batches of the size asked for, each once.
#[tokio::test]
async fn postgres_deliveries_wait_for_the_fold_and_are_folded_once() {
    let db = crate::testing::ScratchPostgres::new().await;
    let store = &*open(db.url()).await.unwrap();
    let first = delivery("q1", T0, Some(alert("q", Some("eq1"))), &["chan"]);
    let notice = delivery("q2", T0 + 5, Some(alert("q", None)), &["chan"]);
    let repeat = delivery("q3", T0 + 7, Some(alert("q", Some("eq1"))), &["chan"]);
    let ignored = delivery("q4", T0 + 9, None, &[]);
    let mut answers = Vec::new();
    for d in [first.clone(), notice.clone(), repeat, ignored] {
        answers.push(store.ingest(d).await.unwrap());
    }
    let stored = |counted, to_fold| IngestOutcome::Stored {
        counted,
        to_fold,
        queued: 0,
        follow_up_due: false,
    };
    assert_eq!(
        answers,
        [
            stored(true, true),
            stored(false, true),
            stored(false, false),
            stored(false, false)
        ]
    );
    let backlog = store.fold_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.oldest_ms), (2, Some(T0)));
    // The status page tells what waits for the fold (channels not yet written).
    let waiting = |trails: Vec<DeliveryTrail>| -> Vec<(bool, usize)> {
        trails
            .iter()
            .rev()
            .map(|t| (t.folding, t.routes.len()))
            .collect()
    };
    let trails = store.recent_deliveries(None, 10).await.unwrap();
    assert_eq!(
        waiting(trails),
        [(true, 0), (true, 0), (false, 0), (false, 0)]
    );
    assert_eq!(
        store.channel_totals("chan").await.unwrap(),
        ChannelTotals::default()
    );
    assert_eq!(store.issue_stats("q", T0).await.unwrap().week(), 0);
    let one = store.fold(1).await.unwrap();
    assert_eq!(one.folded.len(), 1);
    assert_eq!(
        (one.folded[0].body_sha256, one.folded[0].queued),
        (first.body_sha256, 1)
    );
    let backlog = store.fold_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.oldest_ms), (1, Some(T0 + 5)));
    let rest = store.fold(10).await.unwrap();
    assert_eq!(rest.folded.len(), 1);
    assert_eq!(rest.folded[0].body_sha256, notice.body_sha256);
    assert!(
        store.fold(10).await.unwrap().folded.is_empty(),
        "folded once"
    );
    assert_eq!(store.fold_backlog().await.unwrap(), FoldBacklog::default());
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!((totals.occurrences_routed, totals.messages_pending), (1, 2));
    assert_eq!(store.issue_stats("q", T0).await.unwrap().week(), 1);
    let trails = store.recent_deliveries(None, 10).await.unwrap();
    assert_eq!(
        waiting(trails),
        [(false, 1), (false, 1), (false, 0), (false, 0)]
    );
}

/// On SQLite the group commit folds its own deliveries: the answer says what it queued,
/// nothing waits for the fold loop, and the counts are there at once.
#[tokio::test]
async fn sqlite_group_commits_fold_their_own_deliveries() {
    let store = &*open("sqlite::memory:").await.unwrap();
    let first = delivery("s1", T0, Some(alert("s", Some("es1"))), &["chan"]);
    let repeat = delivery("s2", T0 + 1_000, Some(alert("s", Some("es2"))), &["chan"]);
    let answers = [
        store.ingest(first).await.unwrap(),
        store.ingest(repeat).await.unwrap(),
    ];
    let stored = |queued, follow_up_due| IngestOutcome::Stored {
        counted: true,
        to_fold: false,
        queued,
        follow_up_due,
    };
    // The first posts; the second falls in its cooldown, which now ends with a follow-up.
    assert_eq!(answers, [stored(1, false), stored(0, true)]);
    assert_eq!(store.fold_backlog().await.unwrap(), FoldBacklog::default());
    assert_eq!(store.issue_stats("s", T0).await.unwrap().week(), 2);
    assert_eq!(accounted(store).await.occurrences_routed, 2);
    assert!(store.fold(10).await.unwrap().folded.is_empty());
}

/// A replica that stops before anyone folded what it acknowledged leaves it in the queue: the
/// next leader folds it, once.
#[tokio::test]
async fn postgres_deliveries_left_unfolded_at_a_crash_are_folded_after_the_restart() {
    let db = crate::testing::ScratchPostgres::new().await;
    let url = db.url().to_string();
    let first = open(&url).await.unwrap();
    for i in 0..3 {
        let event = format!("crash-{i}");
        let d = delivery(
            &event,
            T0 + i,
            Some(alert("crash", Some(&event))),
            &["chan"],
        );
        first.ingest(d).await.unwrap();
    }
    drop(first);
    let second = open(&url).await.unwrap();
    assert_eq!(second.fold_backlog().await.unwrap().pending, 3);
    assert_eq!(second.issue_stats("crash", T0).await.unwrap().week(), 0);
    assert_eq!(fold_all(&*second).await.len(), 3);
    assert_eq!(second.issue_stats("crash", T0).await.unwrap().week(), 3);
    assert_eq!(accounted(&*second).await.occurrences_routed, 3);
}

/// A mute is a row: it holds after a restart, and ends with its message then.
#[tokio::test]
async fn a_mute_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let first = open(&url).await.unwrap();
    first
        .mute("r", "chan", T0 + 60_000, None, T0)
        .await
        .unwrap();
    occurrences(&*first, "r", T0, 2, |_| {}).await;
    drop(first);
    let second = open(&url).await.unwrap();
    occurrences(&*second, "r", T0 + 10_000, 1, |_| {}).await;
    assert_eq!(accounted(&*second).await.occurrences_muted, 3);
    assert_eq!(second.release_cooldowns(T0 + 60_000).await.unwrap(), 1);
    assert_eq!(follow_ups(&*second).await[0].1, 3);
}

#[tokio::test]
async fn a_digest_queued_before_a_restart_is_not_queued_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let message = OutboxMessage::Digest {
        period_end_ms: T0,
        message: crate::slack::SlackMessage {
            text: "Weekly error digest".into(),
            blocks: vec![],
        },
    };
    let first = open(&url).await.unwrap();
    assert!(first.queue_digest("chan", T0, &message, T0).await.unwrap());
    drop(first);
    let second = open(&url).await.unwrap();
    assert!(!second.queue_digest("chan", T0, &message, T0).await.unwrap());
}

#[tokio::test]
async fn sqlite_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let url = format!("sqlite://{}", dir.path().join(format!("s{i}.db")).display());
        async move { open(&url).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn sqlite_memory_store() {
    conformance(|| async { open("sqlite::memory:").await.unwrap() }).await;
}

#[tokio::test]
async fn postgres_store() {
    let scratch = std::sync::Mutex::new(Vec::new());
    conformance(|| async {
        let db = crate::testing::ScratchPostgres::new().await;
        let store = open(db.url()).await.unwrap();
        scratch.lock().unwrap().push(db);
        store
    })
    .await;
}

/// Managed databases often require TLS: `sslmode=require` in the URL gives an encrypted
/// session.
#[tokio::test]
async fn postgres_over_tls() {
    use sqlx::Connection;
    let db = crate::testing::ScratchPostgres::new().await;
    let url = format!("{}?sslmode=require", db.url());
    let store = open(&url).await.unwrap();
    let d = delivery("tls", T0, Some(alert("tls", Some("e-tls"))), &["chan"]);
    assert!(matches!(
        store.ingest(d).await.unwrap(),
        IngestOutcome::Stored { counted: true, .. }
    ));
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let encrypted: Option<bool> = sqlx::query_scalar(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = current_database() AND a.application_name = 'sluice'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        encrypted,
        Some(true),
        "the store's sessions are not encrypted"
    );
}

/// Nagle's algorithm would hold each multi-row statement's last segment for the server's
/// delayed ACK (up to 40 ms a statement): the store's connections have it off.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn postgres_connections_send_without_delay() {
    use sqlx::Connection;
    use std::os::fd::BorrowedFd;
    let db = crate::testing::ScratchPostgres::new().await;
    let store = open(db.url()).await.unwrap();
    for i in 0..20 {
        let event = format!("n{i}");
        let d = delivery(
            &format!("nagle-{i}"),
            T0,
            Some(alert("n", Some(&event))),
            &["chan"],
        );
        store.ingest(d).await.unwrap();
    }
    // The store's sessions, as the server sees them: their client ports are our local ports.
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let ports: Vec<i32> = sqlx::query_scalar(
        "SELECT client_port FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'sluice'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ports.is_empty(), "the store has no session");
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: only inspected; a descriptor closed meanwhile makes the calls fail.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        if local.is_some_and(|l| ports.contains(&i32::from(l.port()))) {
            assert!(
                socket.tcp_nodelay().unwrap(),
                "a store connection with Nagle on"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, ports.len(), "every session of the store was found");
}

/// Several replicas commit into one PostgreSQL at once, and two of them fold at once (an old
/// leader and a new one overlapping): every occurrence is counted once and an issue's cooldown
/// holds across them (one message and one spike per threshold crossed, the rest folded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_commit_side_by_side() {
    let db = crate::testing::ScratchPostgres::new().await;
    let replicas = [
        open(db.url()).await.unwrap(),
        open(db.url()).await.unwrap(),
        open(db.url()).await.unwrap(),
    ];
    // Waves of deliveries for one issue, each wave spread over the replicas at once.
    let mut tasks: Vec<tokio::task::JoinHandle<IngestOutcome>> = Vec::new();
    for i in 0..300u32 {
        if i % 30 == 0 {
            for t in tasks.drain(..) {
                let outcome = t.await.unwrap();
                assert!(matches!(
                    outcome,
                    IngestOutcome::Stored { counted: true, .. }
                ));
            }
        }
        let store = replicas[i as usize % 3].clone();
        tasks.push(tokio::spawn(async move {
            let event = format!("e{i}");
            let d = delivery(
                &format!("body-{i}"),
                T0 + i64::from(i),
                Some(alert("storm", Some(&event))),
                &["chan"],
            );
            store.ingest(d).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            IngestOutcome::Stored { counted: true, .. }
        ));
    }
    let store = &replicas[0];
    assert_eq!(store.fold_backlog().await.unwrap().pending, 300);
    assert_eq!(
        store
            .channel_totals("chan")
            .await
            .unwrap()
            .occurrences_routed,
        0,
        "ingest counts nothing by itself"
    );
    let (one, two) = tokio::join!(fold_all(&*replicas[1]), fold_all(&*replicas[2]));
    let mut folded: Vec<[u8; 32]> = one.iter().chain(&two).map(|f| f.body_sha256).collect();
    folded.sort();
    folded.dedup();
    assert_eq!(
        (one.len() + two.len(), folded.len()),
        (300, 300),
        "each folded once"
    );
    assert_eq!(store.fold_backlog().await.unwrap(), FoldBacklog::default());
    assert_eq!(store.issue_stats("storm", T0).await.unwrap().week(), 300);
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!(totals.occurrences_routed, 300);
    assert_eq!(
        totals.messages_pending, 3,
        "one message and the spikes at 10 and 100, the rest folded"
    );
    assert_eq!(totals.occurrences_folded, 299);
    assert_eq!(totals.occurrences_pending, 300);
}

/// A mute set through one replica holds what another commits, and the leader's release
/// queues its message once.
#[tokio::test]
async fn postgres_a_mute_holds_across_replicas() {
    let db = crate::testing::ScratchPostgres::new().await;
    let (a, b) = (open(db.url()).await.unwrap(), open(db.url()).await.unwrap());
    a.mute("x", "chan", T0 + 60_000, Some("ada"), T0)
        .await
        .unwrap();
    occurrences(&*b, "x", T0, 3, |_| {}).await;
    assert_eq!(accounted(&*a).await.occurrences_muted, 3);
    assert_eq!(b.mutes(T0).await.unwrap()[0].held, 3);
    let (ra, rb) = tokio::join!(
        a.release_cooldowns(T0 + 60_000),
        b.release_cooldowns(T0 + 60_000)
    );
    assert_eq!(ra.unwrap() + rb.unwrap(), 1, "released once");
    assert_eq!(follow_ups(&*a).await.len(), 1);
}

#[tokio::test]
async fn unknown_backends_are_refused_without_leaking_passwords() {
    let err = match open("mysql://u:hunter2@h/db?password=hunter2").await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("mysql is not a backend"),
    };
    assert!(!err.contains("hunter2"), "{err}");
}

mod durability;
mod status;
