//! Ingest benchmark: `cargo bench --bench ingest`.
//!
//! Prints one table from one run on this machine. Every target runs as its own process, so the
//! RSS in the table is that process's peak (`VmHWM` from `/proc/<pid>/status`), not the
//! benchmark's. The load generator and the sink (the Slack stand-in every target posts to) run
//! in this process, on the same cores.
//!
//! The sink, the payloads, the signing and the child processes come from the integration tests'
//! kit (tests/it/util/, included below): the sink is their fake Slack, answering `ok`, or 429 or
//! 503 to every request for the rows that say so.
//!
//! - `ceiling`: a bare axum handler that verifies the HMAC, parses the payload and answers 202,
//!   with no store: the most any ingest path on this machine can do. It is this same binary,
//!   re-executed with `SLUICE_BENCH_ROLE=ceiling`.
//! - `sluice (sqlite)`: the release `sluice` binary (`sluice serve -c routes.toml`) with its
//!   SQLite store, its delivery worker posting to the sink.
//! - `alertmanager`: Prometheus Alertmanager (`/usr/bin/prometheus-alertmanager`, Debian's
//!   `prometheus-alertmanager` package) with a 10-route tree whose receivers are webhooks to the
//!   sink, fed the equivalent alert stream on `POST /api/v2/alerts`, one alert per request.
//!   Skipped, with a note, when the binary is absent.
//! - `naive python relay`: `benches/naive_relay.py`, what a user would otherwise write: verify,
//!   parse, pick a channel, POST to the sink synchronously, answer 202. Skipped when `python3`
//!   is absent.
//! - `sluice (postgres, 1 replica)`: the same binary and the same routes.toml as the SQLite row,
//!   except `[storage] url` names a fresh scratch PostgreSQL database
//!   (`sluice::testing::ScratchPostgres`, dropped after the row).
//! - `sluice (postgres, 3 replicas, round-robin)`: three `sluice serve` processes, each on its
//!   own loopback port with its own routes.toml (identical but for `listen`), sharing ONE fresh
//!   scratch database. There is no proxy: the load generator itself spreads the load, sending
//!   request *i* of the stream to replica *i* mod 3 (a simple round-robin on loopback), still
//!   64 requests in flight in all. Its RSS column is the SUM of the three processes' peaks;
//!   the per-process peaks are printed below the table. Every replica must answer `/readyz`
//!   with 200, and one of them must report `"role":"leader"`, before the load starts. Every
//!   PostgreSQL row also prints who used the cores during the load (from `/proc`): each
//!   replica, the PostgreSQL server (its postmaster and all its children, when it runs on this
//!   machine), this process (load generator and sink), and the rest of the machine.
//! - `sluice (postgres, 1 replica, capped)` and `sluice (postgres, 3 replicas, capped)`: the
//!   two rows above again, but each `sluice serve` in a cgroup of its own whose CPU bandwidth
//!   is capped at `BENCH_REPLICA_CPU` of a core (default 0.15: three replicas take 0.45 of the
//!   machine's cores, leaving the rest to PostgreSQL and the load generator, which run outside
//!   the caps). Two uncapped replicas on two shared cores cannot show scale-out; capped, each
//!   replica has a CPU budget of its own, as on a machine of its own. The cap is cgroup v2
//!   `cpu.max` or cgroup v1 `cpu.cfs_quota_us` (period 100 ms), whichever hierarchy has the
//!   `cpu` controller (`benches/support/cgroup.rs`); each replica is moved into its group
//!   right after it is spawned, before it is ready, and the groups are removed after the row.
//!   Both rows send the same deliveries, each to a fresh scratch database; the ratio
//!   "3 capped / 1 capped" is printed with its target, with the cap, and how often each
//!   replica was throttled during the load (the group's `cpu.stat`). During the three-replica
//!   load a connection of its own samples PostgreSQL's lock waits every 50 ms (`pg_locks` not
//!   granted, with the relation and the waiting statement; `benches/support/locks.rs`) and
//!   prints samples taken, samples with a waiter, the most waiters at once and what they
//!   waited for. Creating cgroups needs root: when not root, or when no hierarchy has the
//!   `cpu` controller, both rows say `not measured:` and why.
//!
//!   The scratch databases are created on `SLUICE_TEST_POSTGRES_URL` when it is set, else on a
//!   throwaway PostgreSQL server this process starts from the installed binaries and stops when
//!   it exits (`sluice::testing`), so no server needs to be running. The PostgreSQL rows are
//!   skipped, with a note, when neither is available.
//!
//! Every target gets its own deliveries (but the two capped rows, which get the same ones):
//! signed ~4 KB `event_alert` payloads built from the real fixture (for Alertmanager, one alert
//! of about the same size carrying the same fields), all distinct (distinct event ids over 200
//! issues, 5 projects × 2 environments), each sent exactly once, from 64 concurrent
//! connections. Any answer other than the target's success status is an
//! error. After the load on the SQLite and PostgreSQL rows, Sluice's delivery worker (the
//! leader's, with replicas) is given time to drain, the delivery accounting is read from
//! `/metrics` and checked against the load and the sink (every delivery stored once and routed
//! once; routed = posted + pending + dead; messages Sluice counts as posted = messages the sink
//! received), then the idle latency is measured: one delivery at a time, from sending the
//! webhook to the sink receiving the Slack request (round-robin over the replicas, too).
//!
//! - `sluice (sqlite, pre-filled)`: the SQLite row again, on a store pre-filled with
//!   `BENCH_PREFILL` (default 1,000,000) deliveries over the last 90 days, as a store with a
//!   full retention holds (`benches/support/prefill.rs`); its ratio to the empty store's row is
//!   printed.
//! - `storm` and `storm (postgres)`: 20,000 events of 50 issues into one channel with the
//!   default storm limits, on SQLite and on one PostgreSQL replica (where the leader's fold
//!   loop folds): what reaches Slack and how fast (at most burst 3 + 1/s), the accounting, the
//!   time from the storm's first request to Slack's first request (target 2 s), and the fold
//!   lag (`sluice_fold_lag_seconds`, read every 100 ms): its peak, and how long after the
//!   storm's last answer it is under 1 s again (target 5 s).
//!
//! Knobs (environment): `BENCH_REQUESTS` (default 10000), `BENCH_CONNECTIONS` (default 64),
//! `BENCH_ROWS` (the rows to run, as comma-separated substrings of their names,
//! case-insensitive, the storm runs being `storm` and `storm (postgres)`; default: all, e.g.
//! `BENCH_ROWS=capped cargo bench --bench ingest` runs the two capped rows only; ratios whose
//! rows did not run are left out), `BENCH_PREFILL` (default 1000000), `BENCH_REPLICA_CPU` (the
//! cap of each capped replica, in cores; default 0.15), `SLUICE_BIN` (the `sluice` binary;
//! default: the one `cargo bench` builds along with the benchmark, `CARGO_BIN_EXE_sluice`),
//! `ALERTMANAGER_BIN` (default `/usr/bin/prometheus-alertmanager`), `PYTHON` (default
//! `python3`), `SLUICE_TEST_POSTGRES_URL` (a PostgreSQL server to use instead of a throwaway
//! one).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sluice::testing::ScratchPostgres;
use tokio::net::TcpListener;

// The integration tests' kit: fake Slack, fixtures, signing, processes. The benchmark uses
// only part of it (none of the in-process server or the store helpers), hence the allow.
#[allow(dead_code)]
#[path = "../tests/it/util/mod.rs"]
mod util;

#[path = "support/cgroup.rs"]
mod cgroup;
#[path = "support/locks.rs"]
mod locks;
#[path = "support/numbers.rs"]
mod numbers;
#[path = "support/prefill.rs"]
mod prefill;

use cgroup::{CpuCaps, CpuGroup, CpuTimes, Throttling};
use locks::LockSampler;
use numbers::{env_usize, ms};

use util::process::free_port;
use util::{FakeSlack, Process, Reply, SECRET};

/// Environment variable that turns this binary into one of its helper processes.
const ROLE_ENV: &str = "SLUICE_BENCH_ROLE";

// ---------------------------------------------------------------------------------------------
// Workload

/// One HTTP request of the load: body and headers, cheap to clone.
#[derive(Clone)]
struct Request {
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

/// The fields of the i-th event of the stream, shared by the Sentry and Alertmanager forms.
struct EventSpec {
    project: String,
    environment: &'static str,
    issue: String,
    event_id: String,
}

fn event_spec(i: usize, tag: &str) -> EventSpec {
    EventSpec {
        project: format!("service-{}", i % 5),
        environment: if (i / 5).is_multiple_of(2) {
            "production"
        } else {
            "staging"
        },
        issue: format!("{}", 1_000_000 + i % 200),
        event_id: format!("{tag}{:0>width$x}", i, width = 32 - tag.len()),
    }
}

/// The fixture every delivery is made from, read once.
fn template() -> Value {
    util::fixture_json("event_alert.triggered.json")
}

/// The fixture with the i-th event's fields filled in.
fn sentry_payload(template: &Value, s: &EventSpec) -> Value {
    util::event_alert_json(template, &s.issue, &s.event_id, &s.project, s.environment)
}

/// `n` distinct signed `event_alert` deliveries. `tag` prefixes the event ids, so deliveries
/// built with different tags never collide.
fn sentry_deliveries(n: usize, tag: &str) -> Vec<Request> {
    signed_deliveries((0..n).map(|i| event_spec(i, tag)))
}

/// Deliveries for the idle-latency probe: project `idle-probe`, each its own fresh issue.
fn probe_deliveries(n: usize) -> Vec<Request> {
    signed_deliveries((0..n).map(|i| EventSpec {
        project: "idle-probe".into(),
        issue: format!("{}", 9_000_000 + i),
        ..event_spec(i, "b")
    }))
}

fn signed_deliveries(specs: impl Iterator<Item = EventSpec>) -> Vec<Request> {
    let template = template();
    specs
        .map(|spec| {
            let body = serde_json::to_vec(&sentry_payload(&template, &spec)).unwrap();
            Request {
                headers: util::signed_headers("event_alert", &body, SECRET),
                body: body.into(),
            }
        })
        .collect()
}

/// `n` distinct Alertmanager alerts, one per request (`POST /api/v2/alerts` takes a JSON array),
/// carrying the same event as labels (`alertname`, `project`, `environment`, `issue`,
/// `event_id`, `level`) and annotations (title, culprit, links, and the event itself as text,
/// cut so the request is about the size of the Sentry delivery).
fn alertmanager_alerts(n: usize, tag: &str, target_size: usize) -> Vec<Request> {
    let template = template();
    let starts_at = jiff::Timestamp::now().to_string();
    let alert = |i: usize, detail_chars: Option<usize>| -> Vec<u8> {
        let s = event_spec(i, tag);
        let v = sentry_payload(&template, &s);
        let e = &v["data"]["event"];
        let mut detail = e.to_string();
        if let Some(k) = detail_chars {
            detail.truncate(detail.floor_char_boundary(k));
        }
        serde_json::to_vec(&json!([{
            "labels": {
                "alertname": "SentryEventAlert",
                "project": s.project,
                "environment": s.environment,
                "issue": s.issue,
                "event_id": s.event_id,
                "level": e["level"],
            },
            "annotations": {
                "title": e["title"],
                "culprit": e["culprit"],
                "url": e["url"],
                "web_url": e["web_url"],
                "event": detail,
            },
            "startsAt": starts_at,
            "generatorURL": e["web_url"],
        }]))
        .unwrap()
    };
    // Find how much of the event text fits in `target_size`, once.
    let full = alert(0, None).len();
    let mut k = full.saturating_sub(full.saturating_sub(target_size) * 2);
    while k > 0 && alert(0, Some(k)).len() > target_size {
        k -= 16;
    }
    (0..n)
        .map(|i| Request {
            body: alert(i, Some(k)).into(),
            headers: vec![("content-type", "application/json".into())],
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Target processes

/// How long a target may take to answer its readiness check.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Peak resident set size of `process` so far, in MiB (`VmHWM`).
fn peak_rss_mib(process: &Process) -> f64 {
    proc_status_kib(process.pid(), "VmHWM:").map_or(f64::NAN, |kib| kib / 1024.0)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A free loopback address for a target to listen on.
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------------------
// The ceiling: a helper mode of this binary

/// `SLUICE_BENCH_ROLE=ceiling`: verify + parse + 202, nothing else, on `SLUICE_BENCH_LISTEN`.
fn ceiling_main() {
    async fn handler(headers: HeaderMap, body: Bytes) -> StatusCode {
        let sig = headers
            .get("sentry-hook-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !sluice::sentry::verify_signature(&body, sig, &[SECRET]) {
            return StatusCode::UNAUTHORIZED;
        }
        match sluice::sentry::parse("event_alert", &body, &Default::default()) {
            Ok(_) => StatusCode::ACCEPTED,
            Err(_) => StatusCode::BAD_REQUEST,
        }
    }
    let listen = std::env::var("SLUICE_BENCH_LISTEN").expect("SLUICE_BENCH_LISTEN");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await.unwrap();
            let app = Router::new()
                .route("/sentry/webhook", post(handler))
                .route("/healthz", get(|| async { "ok" }));
            axum::serve(listener, app).await.unwrap()
        })
}

// ---------------------------------------------------------------------------------------------
// Load generator

struct Run {
    requests: usize,
    errors: usize,
    /// Non-success answers by status (`"timeout"`, `"connect"` … for transport errors).
    error_kinds: BTreeMap<String, usize>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        numbers::quantile(&self.latencies, p)
    }
    fn max(&self) -> Duration {
        *self.latencies.last().unwrap()
    }
}

/// Sends every request exactly once, over `connections` concurrent connections (one task per
/// connection, each sending its next request when the previous one is answered). The latency
/// of a request is from starting to send it to having the answer's status. An answer is a
/// success only when `ok(status)`.
async fn load(
    url: &str,
    work: Vec<Request>,
    connections: usize,
    ok: fn(StatusCode) -> bool,
) -> Run {
    load_round_robin(&[url.to_string()], work, connections, ok).await
}

/// [`load`] spread over several targets: request `i` of `work` goes to `urls[i % urls.len()]`,
/// whichever task sends it, so every target gets every n-th request of the stream.
async fn load_round_robin(
    urls: &[String],
    work: Vec<Request>,
    connections: usize,
    ok: fn(StatusCode) -> bool,
) -> Run {
    let work = Arc::new(work);
    let urls = Arc::new(urls.to_vec());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, work, next, urls) = (client.clone(), work.clone(), next.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = BTreeMap::<String, usize>::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = work.get(i) else { break };
                let mut req = client.post(&urls[i % urls.len()]).body(r.body.clone());
                for (k, v) in &r.headers {
                    req = req.header(*k, v);
                }
                let t = Instant::now();
                let resp = req.send().await;
                lat.push(t.elapsed());
                let kind = match resp {
                    Ok(resp) if ok(resp.status()) => continue,
                    Ok(resp) => resp.status().as_u16().to_string(),
                    Err(e) if e.is_timeout() => "timeout".into(),
                    Err(e) if e.is_connect() => "connect".into(),
                    Err(_) => "transport".into(),
                };
                *errors.entry(kind).or_default() += 1;
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut error_kinds = BTreeMap::new();
    for t in tasks {
        let (lat, errors) = t.await.unwrap();
        latencies.extend(lat);
        for (k, v) in errors {
            *error_kinds.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Run {
        requests: latencies.len(),
        errors: error_kinds.values().sum(),
        error_kinds,
        elapsed,
        latencies,
    }
}

// ---------------------------------------------------------------------------------------------
// Sections: one function per target

struct Bench {
    n: usize,
    connections: usize,
    dir: tempfile::TempDir,
    /// The Slack stand-in every target posts to.
    sink: FakeSlack,
    /// Size of one Sentry delivery, in bytes.
    delivery_size: usize,
}

/// One row of the table: a measured run, or why the target was skipped.
struct Row {
    name: &'static str,
    result: Result<Measured, String>,
}

struct Measured {
    run: Run,
    /// Peak RSS of the target process, MiB.
    rss_mib: f64,
}

impl Bench {
    /// Requests the sink accepted so far.
    fn accepted(&self) -> u64 {
        self.sink.accepted_count() as u64
    }
}

/// The rows' names (that `BENCH_ROWS` picks from; the storm run is `storm`).
const CEILING: &str = "ceiling";
const SQLITE: &str = "sluice (sqlite)";
const PREFILLED: &str = "sluice (sqlite, pre-filled)";
const PG_1: &str = "sluice (postgres, 1 replica)";
const PG_3: &str = "sluice (postgres, 3 replicas, round-robin)";
const PG_1_CAPPED: &str = "sluice (postgres, 1 replica, capped)";
const PG_3_CAPPED: &str = "sluice (postgres, 3 replicas, capped)";
const ALERTMANAGER: &str = "alertmanager";
const NAIVE: &str = "naive python relay";
const SLACK_429: &str = "sluice, Slack 429";
const SLACK_503: &str = "sluice, Slack 503";
const STORM: &str = "storm";
const STORM_PG: &str = "storm (postgres)";

fn is_202(s: StatusCode) -> bool {
    s == StatusCode::ACCEPTED
}

fn is_2xx(s: StatusCode) -> bool {
    s.is_success()
}

async fn run_ceiling(b: &Bench) -> Row {
    let result = async {
        let addr = free_addr();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, "ceiling")
            .env("SLUICE_BENCH_LISTEN", addr.to_string());
        let log = b.dir.path().join("ceiling.log");
        let mut proc = Process::spawn("ceiling", cmd, addr, Some(&log))?;
        proc.wait_ready("/healthz", READY_WITHIN).await?;
        let url = proc.url("/sentry/webhook");
        let run = load(&url, sentry_deliveries(b.n, "c"), b.connections, is_202).await;
        Ok(Measured {
            run,
            rss_mib: peak_rss_mib(&proc),
        })
    }
    .await;
    Row {
        name: CEILING,
        result,
    }
}

/// The `sluice` binary: `SLUICE_BIN`, else the one `cargo bench` built along with this
/// benchmark (`CARGO_BIN_EXE_sluice`).
fn sluice_bin() -> PathBuf {
    std::env::var_os("SLUICE_BIN").map_or_else(util::process::sluice_bin, PathBuf::from)
}

/// The `storage.url` of a fresh SQLite file in `dir`.
fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sluice.db").display())
}

/// The benchmark's routes.toml, on any free loopback port (see `util::process::sluice_command`).
fn sluice_config(sink_base: &str, storage_url: &str, extra: &str) -> String {
    format!(
        r#"
default_channel = "errors"
[server]
listen = "127.0.0.1:0"
[sentry]
client_secrets = ["{SECRET}"]
[storage]
url = "{storage_url}"
[channels.errors]
webhook_url = "{sink_base}/hooks/errors"
[channels.prod]
webhook_url = "{sink_base}/hooks/prod"
# Only for the idle-latency probe (project "idle-probe"): no storm limits, so the probe times
# the pipeline, not the rate limiter. The load never matches it.
[channels.probe]
webhook_url = "{sink_base}/hooks/probe"
rate = "1000/s"
burst = 1000
[[routes]]
name = "idle probe"
project = "idle-probe"
channels = ["probe"]
cooldown = "0s"
{extra}
[[routes]]
environment = "production"
channels = ["prod"]
"#
    )
}

/// Spawns the release `sluice` binary with its config, log and (SQLite) database in `dir`, at
/// its default log level; `storage_url` is the database (`None`: a fresh SQLite file in `dir`).
/// Does not wait for it.
fn spawn_sluice(
    b: &Bench,
    name: &str,
    dir: &Path,
    storage_url: Option<&str>,
    extra: &str,
) -> Result<Process, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let storage_url = storage_url.map_or_else(|| sqlite_url(dir), str::to_string);
    let text = sluice_config(&b.sink.base, &storage_url, extra);
    let bin = sluice_bin();
    eprintln!("bench: {name}: sluice binary {}", bin.display());
    let (cmd, addr) = util::process::sluice_command(&bin, &text, dir);
    Process::spawn(name, cmd, addr, Some(&dir.join("sluice.log")))
}

/// Starts the release `sluice` binary on a fresh SQLite database in `dir`; returns it once
/// `/readyz` answers 200.
async fn start_sluice(b: &Bench, dir: &Path, extra: &str) -> Result<Process, String> {
    let mut proc = spawn_sluice(b, "sluice", dir, None, extra)?;
    proc.wait_ready("/readyz", READY_WITHIN).await?;
    Ok(proc)
}

async fn run_sluice(b: &Bench) -> (Row, Option<Followup>) {
    let name = SQLITE;
    let result = async {
        let proc = start_sluice(b, &b.dir.path().join("sluice"), "").await?;
        let url = proc.url("/sentry/webhook");
        let before = b.accepted();
        let run = load(&url, sentry_deliveries(b.n, "a"), b.connections, is_202).await;
        let rss_mib = peak_rss_mib(&proc);
        let followup = drain_and_probe(b, name, &[proc.url("")], before, Vec::new()).await;
        Ok((Measured { run, rss_mib }, followup))
    }
    .await;
    split_followup(name, result)
}

/// The `sluice (sqlite)` row again, on a store pre-filled with `prefilled` deliveries over the
/// 90 days before now (a full retention; see `benches/support/prefill.rs`) to the channel the
/// load goes to: does ingest slow as the store grows?
async fn run_sluice_prefilled(b: &Bench, prefilled: usize) -> Row {
    let result = async {
        let dir = b.dir.path().join("prefilled");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let now = sluice::clock::Clock::system().now_ms();
        prefill::prefill(&dir.join("sluice.db"), prefilled, now, "prod").await;
        eprintln!(
            "bench: {PREFILLED}: {prefilled} deliveries written in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let proc = start_sluice(b, &dir, "").await?;
        let url = proc.url("/sentry/webhook");
        let run = load(&url, sentry_deliveries(b.n, "p"), b.connections, is_202).await;
        Ok(Measured {
            run,
            rss_mib: peak_rss_mib(&proc),
        })
    }
    .await;
    Row {
        name: PREFILLED,
        result,
    }
}

/// A row and its follow-up from one result.
fn split_followup(
    name: &'static str,
    result: Result<(Measured, Followup), String>,
) -> (Row, Option<Followup>) {
    match result {
        Ok((m, followup)) => (
            Row {
                name,
                result: Ok(m),
            },
            Some(followup),
        ),
        Err(e) => (
            Row {
                name,
                result: Err(e),
            },
            None,
        ),
    }
}

/// A fresh scratch database on the PostgreSQL server the tests use (`SLUICE_TEST_POSTGRES_URL`,
/// else a throwaway server of this process's own), or why there is none (the PostgreSQL rows
/// are then skipped; nothing here panics the benchmark).
async fn scratch_postgres() -> Result<ScratchPostgres, String> {
    match tokio::time::timeout(Duration::from_secs(60), ScratchPostgres::try_new()).await {
        Ok(result) => result.map_err(|e| format!("skipped: {e}")),
        Err(_) => Err("skipped: PostgreSQL did not answer within 60 s".to_string()),
    }
}

/// How one PostgreSQL row runs.
struct PgRun<'a> {
    name: &'static str,
    replicas: usize,
    /// Prefix of the deliveries' event ids (the two capped rows share one: the same
    /// deliveries, each row on its own fresh database).
    tag: &'static str,
    /// Each replica in a cgroup of its own with this CPU cap; `None`: uncapped.
    caps: Option<&'a CpuCaps>,
    /// Samples PostgreSQL's lock waits during the load.
    sample_locks: bool,
}

/// How often the lock sampler polls `pg_locks`.
const LOCK_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// `row.replicas` `sluice serve` processes sharing one fresh scratch PostgreSQL database, each
/// on its own loopback port (and, capped, each in its own cgroup, put there right after it is
/// spawned, before it is ready); the load goes to them round-robin.
async fn run_sluice_postgres(b: &Bench, row: PgRun<'_>) -> (Row, Option<Followup>) {
    let result = async {
        // Declared before the processes, so dropped (DROP DATABASE) after they are killed
        // (and their groups removed).
        let db = scratch_postgres().await?;
        let mut replicas = spawn_replicas(b, &row, db.url())?;
        let (procs, groups) = (&mut replicas.procs, &replicas.groups);
        for proc in procs.iter_mut() {
            proc.wait_ready("/readyz", READY_WITHIN).await?;
        }
        let mut notes = vec![wait_for_leader(procs).await?];
        let bases: Vec<String> = procs.iter().map(|p| p.url("")).collect();
        let urls: Vec<String> = bases
            .iter()
            .map(|base| format!("{base}/sentry/webhook"))
            .collect();
        let work = sentry_deliveries(b.n, row.tag);
        let throttled_before = throttling(groups)?;
        let sampler = match row.sample_locks {
            true => Some(LockSampler::start(db.url(), LOCK_SAMPLE_EVERY).await),
            false => None,
        };
        let pids: Vec<u32> = procs
            .iter()
            .map(Process::pid)
            .chain([std::process::id()])
            .collect();
        let postmaster = locks::postmaster_pid(db.url()).await;
        let cpu_before = CpuTimes::now(&pids, postmaster.as_ref().ok().copied());
        let before = b.accepted();
        let run = load_round_robin(&urls, work, b.connections, is_202).await;
        notes.push(cpu_note(cpu_before, &pids, postmaster));
        let lock_waits = match sampler {
            Some(Ok(sampler)) => Some(sampler.finish().await),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        match lock_waits {
            Some(Ok(waits)) => notes.extend(waits.lines()),
            Some(Err(e)) => notes.push(format!("lock waits not measured: {e}")),
            None => {}
        }
        if let Some(caps) = row.caps {
            notes.push(cap_note(caps, groups, &throttled_before)?);
        }
        let peaks: Vec<f64> = procs.iter().map(peak_rss_mib).collect();
        if row.replicas > 1 {
            notes.push(format!(
                "peak RSS per replica (the table shows their sum): {} MiB",
                peaks
                    .iter()
                    .map(|p| format!("{p:.1}"))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ));
        }
        let followup = drain_and_probe(b, row.name, &bases, before, notes).await;
        for proc in procs.iter_mut() {
            proc.check_running()?;
        }
        let rss_mib = peaks.iter().sum();
        Ok((Measured { run, rss_mib }, followup))
    }
    .await;
    split_followup(row.name, result)
}

/// The processes of a PostgreSQL row and their cgroups (none uncapped). The processes are
/// dropped (killed) first, then the groups (removed).
struct Replicas {
    procs: Vec<Process>,
    groups: Vec<CpuGroup>,
}

/// Spawns the row's replicas on the database `url`, all before waiting for any, so they start
/// (and migrate) together; capped, each is moved into its own new group right after it is
/// spawned.
fn spawn_replicas(b: &Bench, row: &PgRun<'_>, url: &str) -> Result<Replicas, String> {
    let mut out = Replicas {
        procs: Vec::new(),
        groups: Vec::new(),
    };
    for r in 1..=row.replicas {
        let dir = b
            .dir
            .path()
            .join(format!("{}{}-replica-{r}", row.tag, row.replicas));
        let group = row
            .caps
            .map(CpuCaps::group)
            .transpose()
            .map_err(not_measured)?;
        let name = format!("sluice replica {r}");
        let mut proc = spawn_sluice(b, &name, &dir, Some(url), "")?;
        if let Some(group) = &group
            && let Err(e) = group.add(proc.pid())
        {
            // A process that already exited cannot be moved: say that, not the cgroup.
            proc.check_running()?;
            return Err(not_measured(e));
        }
        out.procs.push(proc);
        out.groups.extend(group);
    }
    Ok(out)
}

/// `not measured: why`, for what keeps a capped row from running capped.
fn not_measured(why: String) -> String {
    format!("not measured: {why}")
}

/// Waits until every replica answers `/readyz` with a role and one of them leads (runs the
/// delivery worker): ready is not leading. Returns the note saying who is what.
async fn wait_for_leader(procs: &[Process]) -> Result<String, String> {
    let start = Instant::now();
    let roles = loop {
        let mut roles = Vec::new();
        for proc in procs {
            roles.push(proc.role().await);
        }
        let leaders = roles.iter().flatten().filter(|r| *r == "leader").count();
        if leaders >= 1 && roles.iter().all(Option::is_some) {
            break roles;
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "no replica leads after 15 s: /readyz roles {roles:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let roles: Vec<String> = roles.into_iter().flatten().collect();
    let leaders = roles.iter().filter(|r| *r == "leader").count();
    Ok(format!(
        "/readyz before the load (after {:.2} s): {}{}",
        start.elapsed().as_secs_f64(),
        roles
            .iter()
            .enumerate()
            .map(|(i, r)| format!("replica {} {r}", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
        if leaders == 1 {
            String::new()
        } else {
            format!(" -- {leaders} LEADERS")
        }
    ))
}

/// Who used the machine's cores from `before` to now: the replicas (the first pids of `pids`),
/// this process (the last: load generator, sink), the PostgreSQL server (the `postmaster` and
/// its children, when it runs on this machine) and the rest of the machine.
fn cpu_note(
    before: Result<CpuTimes, String>,
    pids: &[u32],
    postmaster: Result<u32, String>,
) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let used = match (
        before,
        CpuTimes::now(pids, postmaster.as_ref().ok().copied()),
    ) {
        (Ok(before), Ok(now)) => now.since(&before, cores),
        (Err(e), _) | (_, Err(e)) => return format!("CPU use during the load not measured: {e}"),
    };
    let (replicas, this) = used.procs.split_at(used.procs.len() - 1);
    let mut rest = used.machine - used.procs.iter().sum::<f64>();
    let (postgres, others) = match (used.tree, postmaster) {
        (Some(pg), _) => {
            rest -= pg;
            (
                format!("PostgreSQL (all its processes) {pg:.2} + "),
                "other processes",
            )
        }
        (None, Err(e)) => (
            format!("(PostgreSQL on its own not measured: {e}) "),
            "PostgreSQL, other processes",
        ),
        (None, Ok(_)) => (String::new(), "PostgreSQL, other processes"),
    };
    format!(
        "CPU used during the load, in cores of {cores}: machine {:.2} = replicas {} + {postgres}this process (load generator, sink) {:.2} + the rest ({others}) {:.2}",
        used.machine,
        replicas
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(" + "),
        this[0],
        rest
    )
}

/// The throttling counters of every group, now.
fn throttling(groups: &[CpuGroup]) -> Result<Vec<Throttling>, String> {
    groups.iter().map(CpuGroup::throttling).collect()
}

/// What the caps were and how much they held the replicas back during the load (from the
/// groups' `cpu.stat`, against `before`, read just before the load).
fn cap_note(caps: &CpuCaps, groups: &[CpuGroup], before: &[Throttling]) -> Result<String, String> {
    let during: Vec<String> = throttling(groups)?
        .into_iter()
        .zip(before)
        .enumerate()
        .map(|(i, (now, before))| {
            let t = now.since(*before);
            format!(
                "replica {} throttled in {} of {} periods ({:.1} s held back)",
                i + 1,
                t.throttled,
                t.periods,
                t.throttled_for.as_secs_f64()
            )
        })
        .collect();
    Ok(format!(
        "each replica capped at {} core ({}); during the load: {}",
        caps.cores(),
        caps.describe(),
        during.join(", ")
    ))
}

/// What followed the load on a Sluice row: the drain, the accounting check and the idle
/// latency.
struct Followup {
    target: &'static str,
    drained_after: Duration,
    delivered_by_load: u64,
    accounting: Result<Accounting, String>,
    latencies: Vec<Duration>,
    /// Probe deliveries answered with anything but 202.
    probe_errors: usize,
    notes: Vec<String>,
}

/// The delivery accounting of the load's channels (`errors` and `prod`) from `/metrics`,
/// read once the worker drained.
struct Accounting {
    /// `sluice_webhooks_total{resource="event_alert",outcome="stored"}`, summed over the
    /// replicas (a per-process counter).
    stored: u64,
    /// `sluice_webhooks_total` with any other outcome, summed over the replicas.
    not_stored: u64,
    /// The rest is read from the store, the same from every replica.
    routed: u64,
    posted: u64,
    pending: u64,
    dead: u64,
    folded: u64,
    rolled_up: u64,
    messages_posted: u64,
    /// Channels where routed != posted + pending + dead.
    broken: Vec<String>,
}

/// The value of the series `name{labels}` in a Prometheus text page, 0 when absent.
fn metric(text: &str, name: &str, labels: &str) -> u64 {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn read_accounting(bases: &[String]) -> Result<Accounting, String> {
    let mut pages = Vec::new();
    for base in bases {
        let resp = reqwest::get(format!("{base}/metrics"))
            .await
            .map_err(|e| format!("{base}/metrics: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{base}/metrics answered {}", resp.status()));
        }
        pages.push(resp.text().await.map_err(|e| e.to_string())?);
    }
    let mut a = Accounting {
        stored: 0,
        not_stored: 0,
        routed: 0,
        posted: 0,
        pending: 0,
        dead: 0,
        folded: 0,
        rolled_up: 0,
        messages_posted: 0,
        broken: Vec::new(),
    };
    for page in &pages {
        for line in page.lines() {
            let Some(rest) = line.strip_prefix("sluice_webhooks_total{") else {
                continue;
            };
            let n = rest
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0);
            if rest.starts_with(r#"resource="event_alert",outcome="stored"}"#) {
                a.stored += n;
            } else {
                a.not_stored += n;
            }
        }
    }
    let page = &pages[0];
    for channel in ["errors", "prod"] {
        let labels = format!("channel=\"{channel}\"");
        let term = |name: &str| metric(page, name, &labels);
        let (routed, posted, pending, dead) = (
            term("sluice_occurrences_routed_total"),
            term("sluice_occurrences_posted_total"),
            term("sluice_occurrences_pending"),
            term("sluice_occurrences_dead"),
        );
        if routed != posted + pending + dead {
            a.broken.push(channel.to_string());
        }
        a.routed += routed;
        a.posted += posted;
        a.pending += pending;
        a.dead += dead;
        a.folded += term("sluice_occurrences_folded_total");
        a.rolled_up += term("sluice_messages_rolled_up_total");
        a.messages_posted += term("sluice_messages_posted_total");
    }
    Ok(a)
}

/// Waits for Sluice's worker to deliver what the load queued: until the sink has one message
/// per delivery, or has received nothing for 5 s (storm control holds back and rolls up
/// messages), at most 60 s. Then reads the delivery accounting from every replica's
/// `/metrics`, and sends 30 probe deliveries one at a time (round-robin over `bases`) and
/// times each from sending the webhook to the sink receiving the Slack request.
async fn drain_and_probe(
    b: &Bench,
    target: &'static str,
    bases: &[String],
    sink_before: u64,
    notes: Vec<String>,
) -> Followup {
    let want = sink_before + b.n as u64;
    let drain_start = Instant::now();
    let (mut last_count, mut last_arrival) = (b.accepted(), drain_start);
    while b.accepted() < want
        && last_arrival.elapsed() < Duration::from_secs(5)
        && drain_start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if b.accepted() != last_count {
            (last_count, last_arrival) = (b.accepted(), Instant::now());
        }
    }
    let drained_after = last_arrival.duration_since(drain_start);
    let delivered_by_load = b.accepted() - sink_before;
    let accounting = read_accounting(bases).await;
    let mut latencies = Vec::new();
    let mut probe_errors = 0;
    let client = reqwest::Client::new();
    for (i, d) in probe_deliveries(30).into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let before = b.sink.accepted_count();
        let url = format!("{}/sentry/webhook", bases[i % bases.len()]);
        let mut req = client.post(url).body(d.body);
        for (k, v) in &d.headers {
            req = req.header(*k, v);
        }
        let t = Instant::now();
        match req.send().await {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {}
            _ => {
                probe_errors += 1;
                continue;
            }
        }
        // At most 10 s: a probe that never reaches Slack is timed at that.
        b.sink
            .until_accepted(before + 1, Duration::from_secs(10))
            .await;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Followup {
        target,
        drained_after,
        delivered_by_load,
        accounting,
        latencies,
        probe_errors,
        notes,
    }
}

const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";

/// Alertmanager's config: a 10-route tree (5 projects × 2 environments), each route its own
/// webhook receiver on the sink, plus the root's default receiver.
fn alertmanager_config(sink_base: &str) -> String {
    let mut routes = String::new();
    let mut receivers = format!(
        "  - name: default\n    webhook_configs:\n      - url: '{sink_base}/hooks/default'\n        send_resolved: false\n"
    );
    for p in 0..5 {
        for env in ["production", "staging"] {
            let name = format!("service-{p}-{env}");
            routes.push_str(&format!(
                "    - receiver: {name}\n      matchers: ['project=\"service-{p}\"', 'environment=\"{env}\"']\n"
            ));
            receivers.push_str(&format!(
                "  - name: {name}\n    webhook_configs:\n      - url: '{sink_base}/hooks/{name}'\n        send_resolved: false\n"
            ));
        }
    }
    format!(
        "route:\n  receiver: default\n  group_by: ['project', 'environment', 'issue']\n  group_wait: 1s\n  group_interval: 5s\n  repeat_interval: 4h\n  routes:\n{routes}receivers:\n{receivers}"
    )
}

async fn run_alertmanager(b: &Bench) -> (Row, Option<String>) {
    let name = ALERTMANAGER;
    let bin = std::env::var("ALERTMANAGER_BIN").unwrap_or_else(|_| ALERTMANAGER_BIN.into());
    if !Path::new(&bin).exists() {
        let note = format!("skipped: {bin} not found (apt-get install prometheus-alertmanager)");
        return (
            Row {
                name,
                result: Err(note),
            },
            None,
        );
    }
    let result = async {
        let dir = b.dir.path().join("alertmanager");
        std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, alertmanager_config(&b.sink.base)).map_err(|e| e.to_string())?;
        let addr = free_addr();
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=");
        let log = dir.join("alertmanager.log");
        let mut proc = Process::spawn(name, cmd, addr, Some(&log))?;
        proc.wait_ready("/-/ready", READY_WITHIN).await?;
        let url = proc.url("/api/v2/alerts");
        let work = alertmanager_alerts(b.n, "m", b.delivery_size);
        let size = work[0].body.len();
        let before = b.accepted();
        let run = load(&url, work, b.connections, is_2xx).await;
        let rss_mib = peak_rss_mib(&proc);
        // Let its first group_wait pass, to show the route tree reaches the sink.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let notes = format!(
            "alertmanager: one alert of {size} B per request; {} grouped notifications reached the sink within 2 s after the load",
            b.accepted() - before
        );
        Ok((Measured { run, rss_mib }, notes))
    }
    .await;
    match result {
        Ok((m, notes)) => (
            Row {
                name,
                result: Ok(m),
            },
            Some(notes),
        ),
        Err(e) => (
            Row {
                name,
                result: Err(e),
            },
            None,
        ),
    }
}

async fn run_naive(b: &Bench) -> Row {
    let name = NAIVE;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/naive_relay.py");
    let result = async {
        let addr = free_addr();
        let mut cmd = Command::new(&python);
        cmd.arg(script)
            .arg(addr.port().to_string())
            .arg(&b.sink.base)
            .env("SENTRY_CLIENT_SECRET", SECRET);
        let log = b.dir.path().join("naive.log");
        let mut proc =
            Process::spawn(name, cmd, addr, Some(&log)).map_err(|e| format!("skipped: {e}"))?;
        proc.wait_ready("/healthz", READY_WITHIN).await?;
        let url = proc.url("/sentry/webhook");
        let run = load(&url, sentry_deliveries(b.n, "n"), b.connections, is_202).await;
        Ok(Measured {
            run,
            rss_mib: peak_rss_mib(&proc),
        })
    }
    .await;
    Row { name, result }
}

// ---------------------------------------------------------------------------------------------
// Report

/// Sluice ingesting the same kind of load while the sink (Slack) answers every request with
/// `reply`: ingest must not slow down, whatever Slack does.
async fn run_sluice_with_slack(b: &Bench, name: &'static str, reply: Reply, tag: &str) -> Row {
    let result = async {
        let proc = start_sluice(b, &b.dir.path().join(tag), "").await?;
        b.sink.set_default(reply);
        let url = proc.url("/sentry/webhook");
        let run = load(&url, sentry_deliveries(b.n, tag), b.connections, is_202).await;
        Ok(Measured {
            run,
            rss_mib: peak_rss_mib(&proc),
        })
    }
    .await;
    b.sink.set_default(Reply::Ok);
    Row { name, result }
}

/// The storm run's results.
struct Storm {
    /// `storm` (SQLite) or `storm (postgres)`.
    name: &'static str,
    events: usize,
    issues: usize,
    errors: usize,
    messages: usize,
    max_per_second: usize,
    terms: Vec<(String, String)>,
    /// From the first request of the storm to Slack's first request.
    first_message: Option<Duration>,
    /// How the load ran (its length), and the fold lag sampled during and after it.
    load_took: Duration,
    lag: LagSamples,
}

/// `sluice_fold_lag_seconds`, read from `/metrics` every 100 ms.
#[derive(Default)]
struct LagSamples {
    /// The largest lag seen.
    max_seconds: f64,
    /// Samples read.
    samples: usize,
    /// From the end of the load to the first sample under 1 s (`None`: not within 30 s).
    under_1s_after: Option<Duration>,
}

/// Samples the fold lag at `metrics_url` every 100 ms until `stop`; then, from the end of the
/// load, until it is under 1 s (at most 30 s more).
async fn sample_fold_lag(
    metrics_url: String,
    stop: tokio_util::sync::CancellationToken,
) -> LagSamples {
    let client = reqwest::Client::new();
    let mut lag = LagSamples::default();
    let read = |client: reqwest::Client, url: String| async move {
        let text = client.get(url).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix("sluice_fold_lag_seconds ")?
                .parse::<f64>()
                .ok()
        })
    };
    let mut ended: Option<Instant> = None;
    loop {
        if ended.is_none() && stop.is_cancelled() {
            ended = Some(Instant::now());
        }
        if let Some(seconds) = read(client.clone(), metrics_url.clone()).await {
            lag.samples += 1;
            lag.max_seconds = lag.max_seconds.max(seconds);
            if let Some(end) = ended
                && seconds < 1.0
            {
                lag.under_1s_after = Some(end.elapsed());
                return lag;
            }
        }
        if ended.is_some_and(|end| end.elapsed() > Duration::from_secs(30)) {
            return lag;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 20,000 events of 50 issues into one channel with the default storm limits (1/s, burst 3,
/// max_backlog 20, cooldown 30m): what reaches Slack, how fast, and the accounting terms. On
/// SQLite (`postgres` false) each group commit folds its own deliveries; on PostgreSQL the
/// leader's fold loop folds them, so there the fold lag says whether it keeps up.
async fn run_storm(b: &Bench, postgres: bool) -> Result<Storm, String> {
    const EVENTS: usize = 20_000;
    const ISSUES: usize = 50;
    let extra = r#"
[channels.storm]
webhook_url = "SINK/hooks/storm"
[[routes]]
name = "storm"
project = "storm"
channels = ["storm"]
"#
    .replace("SINK", &b.sink.base);
    // Dropped after the run (and the process before it): the scratch database goes too.
    let db = if postgres {
        Some(scratch_postgres().await?)
    } else {
        None
    };
    let (dir, name) = match &db {
        Some(_) => (b.dir.path().join("storm-postgres"), STORM_PG),
        None => (b.dir.path().join("storm"), STORM),
    };
    let mut proc = spawn_sluice(b, name, &dir, db.as_ref().map(|d| d.url()), &extra)?;
    proc.wait_ready("/readyz", READY_WITHIN).await?;
    wait_for_leader(std::slice::from_ref(&proc)).await?;
    let start = b.sink.received_count();
    let requests = signed_deliveries((0..EVENTS).map(|i| EventSpec {
        project: "storm".into(),
        environment: "production",
        issue: format!("{}", 7_000_000 + i % ISSUES),
        event_id: format!("5707{i:028x}"),
    }));
    let url = proc.url("/sentry/webhook");
    let load_ended = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(sample_fold_lag(proc.url("/metrics"), load_ended.clone()));
    let started = Instant::now();
    let run = load(&url, requests, b.connections, is_202).await;
    let load_took = started.elapsed();
    load_ended.cancel();
    let lag = sampler.await.map_err(|e| e.to_string())?;
    // Let the worker work through what is due (follow-ups wait for the 30 min cooldown).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let received = &b.sink.received()[start..];
    let messages = received.iter().filter(|r| r.path == "hooks/storm").count();
    let first_message = received
        .iter()
        .find(|r| r.path == "hooks/storm")
        .map(|r| r.at.into_std().saturating_duration_since(started));
    let max_per_second = util::max_in_window(received, "hooks/storm", Duration::from_secs(1));
    let metrics = reqwest::get(proc.url("/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let terms = metrics
        .lines()
        .filter_map(|l| l.split_once("{channel=\"storm\"} "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    drop(proc);
    drop(db);
    Ok(Storm {
        name,
        events: EVENTS,
        issues: ISSUES,
        errors: run.errors,
        messages,
        max_per_second,
        terms,
        first_message,
        load_took,
        lag,
    })
}

fn print_storm(storm: &Result<Storm, String>) {
    let s = match storm {
        Ok(s) => s,
        Err(e) => return println!("storm run: skipped: {e}"),
    };
    let term = |name: &str| {
        s.terms
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (routed, posted, pending, dead) = (
        term("sluice_occurrences_routed_total"),
        term("sluice_occurrences_posted_total"),
        term("sluice_occurrences_pending"),
        term("sluice_occurrences_dead"),
    );
    println!(
        "{}: {} events of {} issues into one channel (rate 1/s, burst 3, max_backlog 20, cooldown 30m), {} ingest errors",
        s.name, s.events, s.issues, s.errors
    );
    println!(
        "{}: Slack received {} requests, at most {} within any 1 s (limit: burst 3 + 1/s)",
        s.name, s.messages, s.max_per_second
    );
    println!(
        "{}: routed {routed} = posted {posted} + pending {pending} + dead {dead}: {} ({} unaccounted); folded by cooldown {}, messages rolled up {}",
        s.name,
        if routed == posted + pending + dead {
            "holds"
        } else {
            "BROKEN"
        },
        routed as i64 - (posted + pending + dead) as i64,
        term("sluice_occurrences_folded_total"),
        term("sluice_messages_rolled_up_total"),
    );
    let within = |d: Option<Duration>, limit: Duration, what: &str| match d {
        Some(d) => format!(
            "{} ms ({what} <= {} s: {})",
            ms(d, 0),
            limit.as_secs(),
            if d <= limit { "met" } else { "NOT met" }
        ),
        None => format!("not seen ({what} <= {} s: NOT met)", limit.as_secs()),
    };
    println!(
        "{}: first Slack message {} after the first event, {}",
        s.name,
        within(s.first_message, Duration::from_secs(2), "target"),
        format_args!("the load took {} ms", ms(s.load_took, 0))
    );
    println!(
        "{}: fold lag at most {:.1} s over {} samples (every 100 ms); under 1 s {} after the storm's end",
        s.name,
        s.lag.max_seconds,
        s.lag.samples,
        within(s.lag.under_1s_after, Duration::from_secs(5), "target"),
    );
}

fn print_table(b: &Bench, rows: &[Row]) {
    println!();
    println!(
        "ingest benchmark: {} distinct signed event_alert deliveries of {} B per target, {} connections, {} cores",
        b.n,
        b.delivery_size,
        b.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(20);
    println!(
        "{:<w$} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "target", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "RSS MiB"
    );
    for row in rows {
        match &row.result {
            Ok(m) => println!(
                "{:<w$} {:>9.0} {:>8} {:>8} {:>8} {:>7} {:>8.1}",
                row.name,
                m.run.rps(),
                ms(m.run.pct(0.5), 2),
                ms(m.run.pct(0.99), 2),
                ms(m.run.max(), 2),
                m.run.errors,
                m.rss_mib
            ),
            Err(note) => println!("{:<w$} {note}", row.name),
        }
    }
    for row in rows {
        if let Ok(m) = &row.result
            && m.run.errors > 0
        {
            let kinds: Vec<String> = m
                .run
                .error_kinds
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            println!("errors of {}: {}", row.name, kinds.join(", "));
        }
    }
}

/// The ratios between the rows, with their targets. A ratio of rows that `BENCH_ROWS` left out
/// is not printed; one of rows that did not run says why. `cap` describes the CPU cap of the
/// capped rows, when they ran capped.
fn print_ratios(rows: &[Row], cap: Option<&str>) {
    let row = |name: &str| rows.iter().find(|r| r.name == name);
    let ratio = |label: &str, num: &str, den: &str, target: Option<f64>, extra: &str| {
        let (Some(n), Some(d)) = (row(num), row(den)) else {
            return;
        };
        match (&n.result, &d.result) {
            (Ok(n), Ok(d)) => {
                let ratio = n.run.rps() / d.run.rps();
                let goal = target.map_or(String::new(), |t| {
                    format!(
                        "   (target >= {t:.1}: {})",
                        if ratio >= t { "met" } else { "NOT met" }
                    )
                });
                println!("{label:<20} {ratio:>6.2}x{goal}{extra}");
            }
            (Err(e), _) => println!("{label:<20}    n/a   ({num}: {e})"),
            (_, Err(e)) => println!("{label:<20}    n/a   ({den}: {e})"),
        }
    };
    ratio("Pre-filled/empty", PREFILLED, SQLITE, Some(0.9), "");
    ratio("Sluice/ceiling", SQLITE, CEILING, Some(0.6), "");
    ratio("Sluice/Alertmanager", SQLITE, ALERTMANAGER, Some(1.7), "");
    ratio("Sluice/naive", SQLITE, NAIVE, None, "");
    // Uncapped, the replicas share the two cores with PostgreSQL and the load: the capped
    // rows below are the measure of what a replica adds.
    ratio("Postgres 3/1 replica", PG_3, PG_1, None, "   (uncapped)");
    ratio("Postgres 1/sqlite", PG_1, SQLITE, Some(0.8), "");
    ratio("Postgres 3/sqlite", PG_3, SQLITE, None, "");
    let cap = cap.map_or(String::new(), |cap| format!("; {cap}"));
    ratio(
        "3 capped / 1 capped",
        PG_3_CAPPED,
        PG_1_CAPPED,
        Some(2.5),
        &cap,
    );
    if let Some(m) = row(SQLITE).and_then(|r| r.result.as_ref().ok()) {
        let p99 = m.run.pct(0.99).as_secs_f64() * 1000.0;
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "Sluice p99 ack {p99:.2} ms (target <= 10 ms: {}), peak RSS {:.1} MiB (target <= 64 MiB: {})",
            verdict(p99 <= 10.0),
            m.rss_mib,
            verdict(m.rss_mib <= 64.0)
        );
    }
}

fn print_followup(b: &Bench, f: &Followup) {
    let t = f.target;
    let last = if f.drained_after.is_zero() {
        "none after the load ended (waited 5 s)".to_string()
    } else {
        format!(
            "the last {:.1} s after the load ended",
            f.drained_after.as_secs_f64()
        )
    };
    println!(
        "{t}: the worker sent {} Slack messages for the {} deliveries (storm control holds back and rolls up), {last}",
        f.delivered_by_load, b.n
    );
    match &f.accounting {
        Ok(a) => {
            let n = b.n as u64;
            let ok = a.stored == n
                && a.not_stored == 0
                && a.routed == n
                && a.broken.is_empty()
                && a.messages_posted == f.delivered_by_load;
            println!(
                "{t}: accounting {}: stored {} of {n} deliveries ({} other outcomes); routed {} = posted {} + pending {} + dead {}{} (folded {}, rolled up {}); messages posted {} / sink received {}",
                if ok { "OK" } else { "MISMATCH" },
                a.stored,
                a.not_stored,
                a.routed,
                a.posted,
                a.pending,
                a.dead,
                if a.broken.is_empty() {
                    String::new()
                } else {
                    format!(" BROKEN for {}", a.broken.join(", "))
                },
                a.folded,
                a.rolled_up,
                a.messages_posted,
                f.delivered_by_load
            );
        }
        Err(e) => println!("{t}: accounting not read: {e}"),
    }
    for note in &f.notes {
        println!("{t}: {note}");
    }
    let l = &f.latencies;
    let errors = if f.probe_errors > 0 {
        format!(", {} probes NOT answered 202", f.probe_errors)
    } else {
        String::new()
    };
    if l.is_empty() {
        println!("{t}: idle latency not measured{errors}");
        return;
    }
    println!(
        "{t}: idle webhook -> Slack request latency over {} deliveries: p50 {} ms, max {} ms{errors}",
        l.len(),
        ms(l[l.len() / 2], 2),
        ms(*l.last().unwrap(), 2)
    );
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("ceiling") {
        return ceiling_main();
    }
    // `cargo bench` passes `--bench`; arguments are ignored.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench_main());
}

/// `BENCH_ROWS`: the rows to run, as comma-separated substrings of their names
/// (case-insensitive); unset or empty: every row.
struct Selection(Vec<String>);

impl Selection {
    fn from_env() -> Self {
        let text = std::env::var("BENCH_ROWS").unwrap_or_default();
        Self(
            text.split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// Whether the row `name` runs.
    fn wants(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.0.is_empty() || self.0.iter().any(|s| name.contains(s.as_str()))
    }
}

/// What the rows measured, for the report.
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    followups: Vec<Followup>,
    /// Alertmanager's note, when it ran.
    am_note: Option<String>,
    /// The storm runs (SQLite, PostgreSQL), when selected.
    storms: Vec<Result<Storm, String>>,
    /// The capped rows' cap, when they ran capped.
    cap: Option<String>,
}

impl Results {
    fn push(&mut self, (row, followup): (Row, Option<Followup>)) {
        self.rows.push(row);
        self.followups.extend(followup);
    }
}

/// The CPU cap of each replica of the capped rows: `BENCH_REPLICA_CPU` cores (default 0.15),
/// or why the rows cannot be capped.
fn replica_caps() -> Result<CpuCaps, String> {
    let cores = match std::env::var("BENCH_REPLICA_CPU") {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("BENCH_REPLICA_CPU={v:?} is not a number of cores"))?,
        Err(_) => 0.15,
    };
    CpuCaps::detect(cores)
}

/// The PostgreSQL rows, uncapped then capped (1 replica, then 3).
async fn run_postgres_rows(b: &Bench, only: &Selection, out: &mut Results) {
    for (name, replicas, tag) in [(PG_1, 1, "e"), (PG_3, 3, "f")] {
        if only.wants(name) {
            let row = PgRun {
                name,
                replicas,
                tag,
                caps: None,
                sample_locks: false,
            };
            out.push(run_sluice_postgres(b, row).await);
        }
    }
    if !(only.wants(PG_1_CAPPED) || only.wants(PG_3_CAPPED)) {
        return;
    }
    let caps = replica_caps();
    if let Ok(caps) = &caps {
        out.cap = Some(format!(
            "{} core per replica ({})",
            caps.cores(),
            caps.describe()
        ));
    }
    for (name, replicas) in [(PG_1_CAPPED, 1), (PG_3_CAPPED, 3)] {
        if !only.wants(name) {
            continue;
        }
        out.push(match &caps {
            Ok(caps) => {
                let row = PgRun {
                    name,
                    replicas,
                    tag: "g",
                    caps: Some(caps),
                    sample_locks: replicas > 1,
                };
                run_sluice_postgres(b, row).await
            }
            Err(why) => (
                Row {
                    name,
                    result: Err(not_measured(why.clone())),
                },
                None,
            ),
        });
    }
}

/// Every selected row, one target at a time, each stopped before the next starts.
async fn run_rows(b: &Bench, only: &Selection) -> Results {
    let mut out = Results::default();
    if only.wants(CEILING) {
        out.rows.push(run_ceiling(b).await);
    }
    if only.wants(SQLITE) {
        out.push(run_sluice(b).await);
    }
    if only.wants(PREFILLED) {
        let prefilled = env_usize("BENCH_PREFILL", 1_000_000);
        out.rows.push(run_sluice_prefilled(b, prefilled).await);
    }
    run_postgres_rows(b, only, &mut out).await;
    if only.wants(ALERTMANAGER) {
        let (row, note) = run_alertmanager(b).await;
        out.rows.push(row);
        out.am_note = note;
    }
    if only.wants(NAIVE) {
        out.rows.push(run_naive(b).await);
    }
    if only.wants(SLACK_429) {
        let throttled = Reply::RateLimited {
            retry_after_secs: 1,
        };
        out.rows
            .push(run_sluice_with_slack(b, SLACK_429, throttled, "t").await);
    }
    if only.wants(SLACK_503) {
        out.rows
            .push(run_sluice_with_slack(b, SLACK_503, Reply::ServerError, "d").await);
    }
    if only.wants(STORM) {
        out.storms.push(run_storm(b, false).await);
    }
    if only.wants(STORM_PG) {
        out.storms.push(run_storm(b, true).await);
    }
    out
}

async fn bench_main() {
    sluice::slack::transport::install_crypto_provider();
    let sink = FakeSlack::start().await;
    let b = Bench {
        n: env_usize("BENCH_REQUESTS", 10_000),
        connections: env_usize("BENCH_CONNECTIONS", 64),
        dir: tempfile::tempdir().unwrap(),
        sink,
        delivery_size: sentry_deliveries(1, "s")[0].body.len(),
    };
    let out = run_rows(&b, &Selection::from_env()).await;

    print_table(&b, &out.rows);
    print_ratios(&out.rows, out.cap.as_deref());
    for followup in &out.followups {
        print_followup(&b, followup);
    }
    if let Some(note) = &out.am_note {
        println!("{note}");
    }
    for storm in &out.storms {
        print_storm(storm);
    }
}
