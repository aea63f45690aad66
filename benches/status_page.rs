//! Status page benchmark: `cargo bench --bench status_page`.
//!
//! How long the status page takes to answer, from sending `GET` to the last byte, on a store
//! with a few deliveries and on one pre-filled with `BENCH_DELIVERIES` (default 1,000,000)
//! deliveries spread over 90 days (a realistic retention), each page `BENCH_GETS` (default
//! 100) times in a row on one connection. Prints one table from one run on this machine, with
//! the ratio of the two stores' medians.
//!
//! Each store is served by the release `sluice serve` (SQLite) with the integration tests'
//! routes.toml (tests/it/util/, included below). The pre-filled store is written with SQL
//! straight into a migrated database: every delivery with its event and its route to the
//! Web API channel `python-api`, one in five queued and posted (carrying itself and the four
//! repeats folded after it), the rest folded by the cooldown, 5,000 issues, 1,000 dead
//! letters, and channel counters that add up, so the page reads what a real store of that
//! size holds.

use std::time::{Duration, Instant};

use sqlx::Connection;

// The integration tests' kit. The benchmark uses part of it, hence the allow.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/util/mod.rs"]
mod util;

use util::fake_slack::FakeSlack;
use util::{Process, Scratch, config_text, event_alert, event_id};

const DAY_MS: i64 = 86_400_000;

/// The pages measured, by address.
const PAGES: [&str; 4] = ["/", "/ui/channels", "/ui/deliveries", "/ui/dead-letters"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills the migrated SQLite database at `db` with `n` deliveries over the 90 days before
/// `now_ms` (see the module's doc).
async fn prefill(db: &std::path::Path, n: usize, now_ms: i64) {
    let url = format!("sqlite://{}", db.display());
    drop(sluice::store::open(&url).await.expect("migrate the store"));
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
        "INSERT INTO delivery_routes (body_sha256, channel, route, decision, received_at)
         SELECT h, 'python-api', 'python via web api',
                CASE WHEN i % 5 = 0 THEN 'queued' ELSE 'folded' END, at FROM gen"
            .into(),
        "INSERT INTO sent (id, channel, issue_key, occurrences, attempts, created_at, sent_at,
                           slack_ts, kind, delivery)
         SELECT i + 1, 'python-api', CAST(i % 5000 AS TEXT), 5, 1, at, at + 300,
                printf('%d.%06d', at / 1000, i % 1000000), 'alert', h
         FROM gen WHERE i % 5 = 0 AND i >= 5000"
            .into(),
        "INSERT INTO dead_letters (id, channel, issue_key, payload, occurrences, attempts, error,
                                   created_at, dead_at, kind, reason, delivery)
         SELECT i + 1, 'python-api', CAST(i % 5000 AS TEXT), '{}', 5, 1, 'channel_not_found',
                at, at + 300, 'alert', 'channel_not_found', h
         FROM gen WHERE i % 5 = 0 AND i < 5000"
            .into(),
        format!(
            "INSERT INTO channel_counters (channel, occurrences_routed, occurrences_folded,
                                           messages_posted, occurrences_posted, last_sent_at)
             SELECT 'python-api', {n}, {folded}, COUNT(*), SUM(occurrences), MAX(sent_at) FROM sent",
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

/// Answer times of `GET path`, `gets` times in a row, sorted; panics on anything but 200.
async fn measure(
    client: &reqwest::Client,
    process: &Process,
    path: &str,
    gets: usize,
) -> Vec<Duration> {
    let url = format!("http://{}{path}", process.addr);
    let mut times = Vec::with_capacity(gets);
    for _ in 0..gets {
        let t = Instant::now();
        let res = client.get(&url).send().await.unwrap();
        let status = res.status();
        let body = res.bytes().await.unwrap();
        times.push(t.elapsed());
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    times.sort();
    times
}

fn quantile(times: &[Duration], q: f64) -> Duration {
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times[i.min(times.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Serves the store of `scratch` and measures every page.
async fn run_store(
    slack: &FakeSlack,
    scratch: &Scratch,
    fresh: bool,
    gets: usize,
) -> Vec<Vec<Duration>> {
    let process = Process::start(&config_text(slack, &scratch.db(), ""), scratch).await;
    let client = reqwest::Client::new();
    if fresh {
        // A few deliveries, so that the small store's page has rows too.
        for i in 0..20 {
            let body = event_alert(
                &format!("{}", 100 + i % 5),
                &event_id(i),
                "python",
                "production",
            );
            let status = util::try_post_signed_at(
                &format!("http://{}/sentry/webhook", process.addr),
                "event_alert",
                &body,
                util::SECRET,
                sluice::clock::Clock::system().now_ms() / 1000,
            )
            .await
            .unwrap()
            .0;
            assert!(status.is_success(), "{status}");
        }
    }
    let mut out = Vec::new();
    for path in PAGES {
        measure(&client, &process, path, 3).await; // warm the page cache
        out.push(measure(&client, &process, path, gets).await);
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; arguments are ignored.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench_main());
}

async fn bench_main() {
    sluice::slack::transport::install_crypto_provider();
    let n = env_usize("BENCH_DELIVERIES", 1_000_000);
    let gets = env_usize("BENCH_GETS", 100);
    let slack = FakeSlack::start().await;

    let small = Scratch::new();
    let small_times = run_store(&slack, &small, true, gets).await;

    let big = Scratch::new();
    let t = Instant::now();
    prefill(&big.db(), n, sluice::clock::Clock::system().now_ms()).await;
    let filled_in = t.elapsed();
    let size = std::fs::metadata(big.db()).map(|m| m.len()).unwrap_or(0);
    let big_times = run_store(&slack, &big, false, gets).await;

    println!(
        "\nStatus page answer times, SQLite, release build, {gets} GETs per page in a row \
         (store of {n} deliveries: {:.0} MiB, filled in {:.1} s)\n",
        size as f64 / 1048576.0,
        filled_in.as_secs_f64()
    );
    println!(
        "| page | 20 deliveries p50 ms | p99 ms | {n} deliveries p50 ms | p99 ms | p50 ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for ((path, s), b) in PAGES.iter().zip(&small_times).zip(&big_times) {
        let (s50, b50) = (quantile(s, 0.5), quantile(b, 0.5));
        println!(
            "| `{path}` | {} | {} | {} | {} | {:.2}× |",
            ms(s50),
            ms(quantile(s, 0.99)),
            ms(b50),
            ms(quantile(b, 0.99)),
            b50.as_secs_f64() / s50.as_secs_f64()
        );
    }
}
