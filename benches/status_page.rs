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

// The integration tests' kit. The benchmark uses part of it, hence the allow.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/util/mod.rs"]
mod util;

#[path = "support/numbers.rs"]
mod numbers;
#[path = "support/prefill.rs"]
mod prefill;

use numbers::{env_usize, ms, quantile};

use util::fake_slack::FakeSlack;
use util::{Process, Scratch, config_text, event_alert, event_id};

/// The pages measured, by address.
const PAGES: [&str; 4] = ["/", "/ui/channels", "/ui/deliveries", "/ui/dead-letters"];

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
    prefill::prefill(
        &big.db(),
        n,
        sluice::clock::Clock::system().now_ms(),
        "python-api",
    )
    .await;
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
            ms(s50, 1),
            ms(quantile(s, 0.99), 1),
            ms(b50, 1),
            ms(quantile(b, 0.99), 1),
            b50.as_secs_f64() / s50.as_secs_f64()
        );
    }
}
