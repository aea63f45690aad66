//! Click benchmark: `cargo bench --bench clicks`.
//!
//! How fast `POST /slack/interactions` answers a click while Sentry's API is healthy, down
//! (every request answered 500) or hanging (never answering), and how soon a click reaches
//! Sentry once Sentry comes back. Prints one table from one run on this machine.
//!
//! Each scenario runs the release `sluice` binary (`sluice serve`, SQLite) afresh, with the
//! integration tests' kit (tests/it/util/, included below): their fake Slack and fake Sentry
//! API on loopback, their routes.toml with two-way Slack on, and clicks built from the buttons
//! of the messages the fake Slack received, signed as Slack signs them. Before the clicks,
//! `MESSAGES` alerts are posted, so that each click is on a real Sluice message and the
//! interactions worker really calls Sentry (and is stuck on it, when Sentry hangs).
//!
//! The clicks (`BENCH_CLICKS`, default 1000) come from `BENCH_CONNECTIONS` (default 16)
//! concurrent connections, each from a different Slack user, so none is a repeat. The answer
//! time is from sending the request to reading Slack's status code; anything but `200` counts
//! as an error.
//!
//! Recovery: Sentry answers 500 for `BENCH_DOWN_SECS` (default 20) seconds after a click, then
//! heals; the line gives the time from healing to Sentry's first `200` to the click's `PUT`,
//! beside the retry wait the worker was in (from its last failed attempt to that `PUT`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

// The integration tests' kit. The benchmark uses part of it, hence the allow.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/util/mod.rs"]
mod util;

#[path = "support/numbers.rs"]
mod numbers;

use numbers::{env_usize, ms};

use util::clicks::{SIGNING_SECRET, click_body, slack_headers, two_way};
use util::fake_sentry::{FakeSentry, Fault};
use util::fake_slack::{FakeSlack, Received};
use util::{Process, Scratch, config_text, event_alert, event_id};

/// Alerts posted before the clicks; click `i` is on message `i % MESSAGES`.
const MESSAGES: usize = 20;
/// The p99 answer time the issue sets as the target.
const TARGET_P99: Duration = Duration::from_millis(300);

/// One running Sluice with its fakes and the messages it posted.
struct Target {
    slack: FakeSlack,
    sentry: FakeSentry,
    process: Process,
    messages: Vec<Received>,
    _scratch: Scratch,
}

/// Starts Sluice and posts [`MESSAGES`] alerts to its Web API channel.
async fn start() -> Target {
    let slack = FakeSlack::start().await;
    let sentry = FakeSentry::start().await;
    let scratch = Scratch::new();
    let text = two_way(config_text(&slack, &scratch.db(), ""), &sentry);
    let process = Process::start(&text, &scratch).await;
    for i in 0..MESSAGES {
        let body = event_alert(
            &format!("{}", 70_000 + i),
            &event_id(i),
            "python",
            "production",
        );
        let (status, reply) = process.deliver("event_alert", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let posted: Vec<Received> = slack
            .accepted()
            .into_iter()
            .filter(|r| r.path == "api/chat.postMessage")
            .collect();
        if posted.len() >= MESSAGES {
            break posted;
        }
        assert!(Instant::now() < deadline, "the alerts were not posted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Target {
        slack,
        sentry,
        process,
        messages,
        _scratch: scratch,
    }
}

/// Answer times of one scenario, sorted, and the answers that were not 200.
struct Answers {
    times: Vec<Duration>,
    errors: usize,
}

impl Answers {
    fn quantile(&self, q: f64) -> Duration {
        numbers::quantile(&self.times, q)
    }
}

/// Sends `n` clicks (Resolve, each from its own user) over `connections` connections.
async fn click_load(target: &Target, n: usize, connections: usize) -> Answers {
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            let message = &target.messages[i % target.messages.len()];
            let user = format!("U{i:08}");
            let trigger = format!("bench-{i}");
            click_body(
                &target.slack,
                message,
                "sluice:resolve",
                None,
                &trigger,
                &user,
            )
        })
        .collect();
    let bodies = Arc::new(bodies);
    let url = Arc::new(target.process.url("/slack/interactions"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, bodies, url, next) =
            (client.clone(), bodies.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let mut req = client.post(url.as_str()).body(body.clone());
                for (k, v) in slack_headers(body, SIGNING_SECRET, now) {
                    req = req.header(k, v);
                }
                let t = Instant::now();
                let answer = req.send().await;
                times.push(t.elapsed());
                if !matches!(answer, Ok(ref r) if r.status() == StatusCode::OK) {
                    errors += 1;
                }
            }
            (times, errors)
        }));
    }
    let mut answers = Answers {
        times: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let (times, errors) = task.await.unwrap();
        answers.times.extend(times);
        answers.errors += errors;
    }
    answers.times.sort();
    answers
}

/// Answer times with Sentry in `fault` (`None`: healthy).
async fn scenario(fault: Option<Fault>, n: usize, connections: usize) -> Answers {
    let target = start().await;
    if let Some(fault) = fault {
        target.sentry.fail("/api/0/", fault);
    }
    let answers = click_load(&target, n, connections).await;
    target.process.kill9();
    answers
}

/// What the recovery run measured.
struct Recovery {
    down_for: Duration,
    /// From Sentry healing to the click's first answered `PUT`.
    reached_after: Duration,
    /// From the last failed attempt to that `PUT`: the retry wait in effect when Sentry
    /// healed.
    retry_wait: Duration,
}

/// One click while Sentry is down for `down_for`, then healed: how soon the click reaches it.
async fn recovery(down_for: Duration) -> Result<Recovery, String> {
    let target = start().await;
    target.sentry.fail("/api/0/", Fault::ServerError);
    let answers = click_load(&target, 1, 1).await;
    if answers.errors > 0 {
        return Err("the click was not answered 200".into());
    }
    tokio::time::sleep(down_for).await;
    target.sentry.heal();
    let healed = tokio::time::Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let reached = loop {
        let ok = target
            .sentry
            .requests()
            .into_iter()
            .find(|r| r.method == "PUT" && r.status == Some(200));
        if let Some(ok) = ok {
            break ok.at;
        }
        if Instant::now() > deadline {
            return Err("the click did not reach Sentry within 120 s of it healing".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let last_failed = target
        .sentry
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.status != Some(200) && r.at <= healed)
        .map(|r| r.at)
        .max()
        .ok_or("no failed attempt while Sentry was down")?;
    target.process.kill9();
    Ok(Recovery {
        down_for,
        reached_after: reached.saturating_duration_since(healed),
        retry_wait: reached.saturating_duration_since(last_failed),
    })
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
    let n = env_usize("BENCH_CLICKS", 1000);
    let connections = env_usize("BENCH_CONNECTIONS", 16);
    let down = Duration::from_secs(env_usize("BENCH_DOWN_SECS", 20) as u64);
    let rows = [
        ("healthy", None),
        ("down (500)", Some(Fault::ServerError)),
        ("hanging", Some(Fault::Hang)),
    ];
    println!(
        "\n{n} clicks over {connections} connections; answer time of POST /slack/interactions\n"
    );
    println!("| Sentry API | answered 200 | errors | p50 ms | p99 ms | max ms | p99 < 300 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (name, fault) in rows {
        let a = scenario(fault, n, connections).await;
        let p99 = a.quantile(0.99);
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            a.times.len() - a.errors,
            a.errors,
            ms(a.quantile(0.5), 1),
            ms(p99, 1),
            ms(*a.times.last().unwrap(), 1),
            if p99 < TARGET_P99 { "yes" } else { "NO" },
        );
    }
    println!();
    match recovery(down).await {
        Ok(r) => println!(
            "Recovery: Sentry down for {:.0} s after the click, then healed: the click reached Sentry \
             {:.1} s later, at the worker's next retry, {:.1} s after its last failed attempt \
             (retry waits are capped at {} s).",
            r.down_for.as_secs_f64(),
            r.reached_after.as_secs_f64(),
            r.retry_wait.as_secs_f64(),
            sluice::interactions::RETRY_MAX.as_secs()
        ),
        Err(e) => println!("Recovery: not measured: {e}"),
    }
}
