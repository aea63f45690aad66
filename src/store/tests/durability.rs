//! What the store does when commits fail: a full disk (SQLite), a failing `COMMIT` and a
//! connection dropped mid-commit (PostgreSQL). The contract: an error for every delivery not
//! durably committed, `ping` (so `/readyz`) failing while commits fail, everything working
//! again once the cause is gone, and every acknowledged delivery still there after a restart.

use sqlx::Connection;

use super::*;

/// A delivery of its own event for issue `full`, with a long title so the store fills fast.
fn filler(i: usize) -> Delivery {
    let mut a = alert("full", Some(&format!("event-{i}")));
    a.title = format!("{i} {}", "x".repeat(1500));
    delivery(&format!("filler-{i}"), T0, Some(a), &["chan"])
}

/// Ingests `range`; returns which deliveries were acknowledged.
async fn ingest_all(
    store: &dyn Store,
    range: std::ops::Range<usize>,
) -> Vec<Result<usize, String>> {
    let mut answers = Vec::new();
    for i in range {
        answers.push(
            store
                .ingest(filler(i))
                .await
                .map(|_| i)
                .map_err(|e| e.to_string()),
        );
    }
    answers
}

/// After the store reopens: every acknowledged delivery is there (a duplicate now) and was
/// counted once.
async fn assert_all_kept(store: &dyn Store, acked: &[usize]) {
    for &i in acked {
        assert_eq!(
            store.ingest(filler(i)).await.unwrap(),
            IngestOutcome::DuplicateDelivery,
            "acknowledged delivery {i} was lost"
        );
    }
    fold_all(store).await;
    let stats = store.issue_stats("full", T0).await.unwrap();
    assert_eq!(stats.week(), acked.len() as u64, "counted once each");
    let totals = store.channel_totals("chan").await.unwrap();
    assert_eq!(totals.occurrences_routed, acked.len() as u64);
}

/// A SQLite file that cannot grow (`max_page_count`, as a full disk): once a commit fails,
/// every later delivery fails too until room returns, `ping` fails meanwhile, and nothing
/// acknowledged is lost, also across a restart.
#[tokio::test]
async fn sqlite_full_disk_fails_every_delivery_until_room_returns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("full.db").display());
    SqliteStore::open(&url, crate::storm::planner())
        .await
        .unwrap()
        .close()
        .await;
    // Ballast that takes the room the store may grow into; deleting it is "space returns".
    let mut side = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE ballast (b BLOB NOT NULL)")
        .execute(&mut side)
        .await
        .unwrap();
    sqlx::query("INSERT INTO ballast VALUES (zeroblob(2000000))")
        .execute(&mut side)
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut side)
        .await
        .unwrap();
    let limit = (pages + 16).to_string();
    let store = SqliteStore::open_with(&url, crate::storm::planner(), |o| {
        o.pragma("max_page_count", limit)
    })
    .await
    .unwrap();

    // Fill until a commit fails.
    let mut acked = Vec::new();
    let mut i = 0;
    loop {
        assert!(i < 2000, "the store never filled up");
        match store.ingest(filler(i)).await {
            Ok(_) => acked.push(i),
            Err(_) => break,
        }
        i += 1;
    }
    assert!(!acked.is_empty());
    // Still full: every delivery is refused, none acknowledged, and the store is not ready.
    for answer in ingest_all(&store, i + 1..i + 21).await {
        assert!(answer.is_err(), "acknowledged on a full store: {answer:?}");
    }
    assert!(store.ping().await.is_err(), "ready while commits fail");

    // Room returns: deliveries commit again, and the store is ready again.
    sqlx::query("DELETE FROM ballast")
        .execute(&mut side)
        .await
        .unwrap();
    side.close().await.unwrap();
    store.ping().await.expect("ready once room returned");
    for answer in ingest_all(&store, 3000..3020).await {
        acked.push(answer.expect("commits once room returned"));
    }
    store.close().await;

    let store = SqliteStore::open(&url, crate::storm::planner())
        .await
        .unwrap();
    assert_all_kept(&store, &acked).await;
}

/// A PostgreSQL `COMMIT` that fails (a deferred constraint trigger that refuses while told
/// to): the same contract as a full disk.
#[tokio::test]
async fn postgres_failing_commits_fail_every_delivery_until_they_succeed() {
    let db = crate::testing::ScratchPostgres::new().await;
    let store = PostgresStore::open(db.url(), crate::storm::planner())
        .await
        .unwrap();
    let mut side = sqlx::PgConnection::connect(db.url()).await.unwrap();
    for sql in [
        "CREATE TABLE refuse_commits (on_ BOOLEAN NOT NULL)",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM refuse_commits) THEN
             RAISE EXCEPTION 'could not extend file: No space left on device';
           END IF;
           RETURN NULL;
         END $$",
        "CREATE CONSTRAINT TRIGGER refuse_deliveries AFTER INSERT ON deliveries
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()",
        "CREATE CONSTRAINT TRIGGER refuse_probe AFTER INSERT ON store_probe
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(sql).execute(&mut side).await.unwrap();
    }
    let mut acked: Vec<usize> = ingest_all(&store, 0..10)
        .await
        .into_iter()
        .map(|a| a.unwrap())
        .collect();

    sqlx::query("INSERT INTO refuse_commits VALUES (true)")
        .execute(&mut side)
        .await
        .unwrap();
    for answer in ingest_all(&store, 10..30).await {
        assert!(answer.is_err(), "acknowledged a failed commit: {answer:?}");
    }
    assert!(store.ping().await.is_err(), "ready while commits fail");

    sqlx::query("DELETE FROM refuse_commits")
        .execute(&mut side)
        .await
        .unwrap();
    store.ping().await.expect("ready once commits succeed");
    for answer in ingest_all(&store, 30..40).await {
        acked.push(answer.expect("commits succeed again"));
    }
    store.close().await;
    let store = PostgresStore::open(db.url(), crate::storm::planner())
        .await
        .unwrap();
    assert_all_kept(&store, &acked).await;
}

/// PostgreSQL ends the store's sessions (a restart, a failover, a proxy) between and during
/// commits: the deliveries that fail are refused, the store reconnects, and every
/// acknowledged one is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropped_connections_lose_no_acknowledged_delivery() {
    let db = crate::testing::ScratchPostgres::new().await;
    let store = Arc::new(
        PostgresStore::open(db.url(), crate::storm::planner())
            .await
            .unwrap(),
    );
    let mut side = sqlx::PgConnection::connect(db.url()).await.unwrap();
    // Sessions are ended while deliveries commit, in rounds until one ending fell mid-commit
    // (on a busy machine a round's kills may all fall between commits).
    let (mut acked, mut failed, mut kills) = (Vec::new(), 0, 0);
    for round in 0..5 {
        let writer = {
            let store = store.clone();
            let first = round * 1000;
            tokio::spawn(async move { ingest_all(store.as_ref(), first..first + 400).await })
        };
        let mut round_kills = 0;
        while !writer.is_finished() && round_kills < 20 {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'sluice'",
            )
            .fetch_all(&mut side)
            .await
            .unwrap();
            round_kills += usize::from(!killed.is_empty());
            tokio::task::yield_now().await;
        }
        kills += round_kills;
        for answer in writer.await.unwrap() {
            match answer {
                Ok(n) => acked.push(n),
                Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            break;
        }
    }
    assert!(kills > 0, "no session was ended");
    assert!(
        failed > 0,
        "no delivery failed in 5 rounds: the sessions were never ended mid-commit"
    );
    // It works again without a restart.
    for answer in ingest_all(store.as_ref(), 10_000..10_005).await {
        acked.push(answer.expect("commits after reconnecting"));
    }
    store.ping().await.expect("ready after reconnecting");
    store.close().await;
    let store = PostgresStore::open(db.url(), crate::storm::planner())
        .await
        .unwrap();
    assert_all_kept(&store, &acked).await;
}
