//! What the benchmarks share: a SQLite store pre-filled with SQL, so that a benchmark can
//! measure Sluice on a store the size of a real retention, not only on an empty one.
//! Included by `benches/ingest.rs` and `benches/status_page.rs` with `#[path]`.

use sqlx::Connection;

const DAY_MS: i64 = 86_400_000;

/// Fills the SQLite database at `db` (migrated first) with `n` deliveries over the 90 days
/// before `now_ms`, all to `channel`: each with its event and its route there, one in five
/// queued and posted (carrying itself and the four repeats folded after it), the rest folded
/// by the cooldown, 5,000 issues, 1,000 dead letters (the first posted ones), and channel
/// counters that add up (routed = posted + dead).
pub async fn prefill(db: &std::path::Path, n: usize, now_ms: i64, channel: &str) {
    let url = format!("sqlite://{}", db.display());
    drop(
        sluice::store::open(&url, sluice::storm::planner())
            .await
            .expect("migrate the store"),
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let span = 90 * DAY_MS;
    let start = now_ms - span;
    let step = (span / n as i64).max(1);
    let last = n as i64 - 1;
    let statements = [
        format!(
            "CREATE TEMP TABLE gen AS WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {last})
             SELECT i, randomblob(32) AS h, {start} + i * {step} AS at FROM k"
        ),
        "INSERT INTO deliveries (body_sha256, resource, request_id, received_at, outcome, event_id,
                                 issue_key, project, environment)
         SELECT h, 'event_alert', printf('req-%d', i), at, 'stored', printf('%032x', i),
                CAST(i % 5000 AS TEXT), 'python', 'production' FROM gen"
            .into(),
        "INSERT INTO events (event_id, issue_key, seen_at)
         SELECT printf('%032x', i), CAST(i % 5000 AS TEXT), at FROM gen"
            .into(),
        format!(
            "INSERT INTO issues (issue_key, project, title, level, first_seen, last_seen)
             SELECT CAST(i AS TEXT), 'python', printf('ValueError: bad input #%d', i), 'error',
                    {start}, {now_ms} FROM gen WHERE i < 5000"
        ),
        format!(
            "INSERT INTO delivery_routes (body_sha256, channel, route, decision, received_at)
             SELECT h, '{channel}', 'bench',
                    CASE WHEN i % 5 = 0 THEN 'queued' ELSE 'folded' END, at FROM gen"
        ),
        format!(
            "INSERT INTO sent (id, channel, issue_key, occurrences, attempts, created_at, sent_at,
                               slack_ts, kind, delivery)
             SELECT i + 1, '{channel}', CAST(i % 5000 AS TEXT), 5, 1, at, at + 300,
                    printf('%d.%06d', at / 1000, i % 1000000), 'alert', h
             FROM gen WHERE i % 5 = 0 AND i >= 5000"
        ),
        format!(
            "INSERT INTO dead_letters (id, channel, issue_key, payload, occurrences, attempts,
                                       error, created_at, dead_at, kind, reason, delivery)
             SELECT i + 1, '{channel}', CAST(i % 5000 AS TEXT), '{{}}', 5, 1,
                    'channel_not_found', at, at + 300, 'alert', 'channel_not_found', h
             FROM gen WHERE i % 5 = 0 AND i < 5000"
        ),
        format!(
            "INSERT INTO channel_counters (channel, occurrences_routed, occurrences_folded,
                                           messages_posted, occurrences_posted, last_sent_at)
             SELECT '{channel}', {n}, {folded}, COUNT(*), COALESCE(SUM(occurrences), 0), MAX(sent_at) FROM sent",
            folded = n - n.div_ceil(5)
        ),
        // New outbox rows must not reuse the ids of the rows written above.
        format!(
            "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('outbox', {})",
            n + 1
        ),
        "DROP TABLE gen".into(),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }
    conn.close().await.unwrap();
}
