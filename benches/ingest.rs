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
//!   with 200, and one of them must report `"role":"leader"`, before the load starts.
//!
//!   The scratch databases are created on `SLUICE_TEST_POSTGRES_URL` when it is set, else on a
//!   throwaway PostgreSQL server this process starts from the installed binaries and stops when
//!   it exits (`sluice::testing`), so no server needs to be running. Both PostgreSQL rows are
//!   skipped, with a note, when neither is available.
//!
//! Every target gets its own deliveries: signed ~4 KB `event_alert` payloads built from the real
//! fixture (for Alertmanager, one alert of about the same size carrying the same fields), all
//! distinct (distinct event ids over 200 issues, 5 projects × 2 environments), each sent exactly
//! once, from 64 concurrent connections. Any answer other than the target's success status is an
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
//!
//! Knobs (environment): `BENCH_REQUESTS` (default 10000), `BENCH_CONNECTIONS` (default 64),
//! `SLUICE_BIN` (the `sluice` binary; default: the one `cargo bench` builds along with the
//! benchmark, `CARGO_BIN_EXE_sluice`), `ALERTMANAGER_BIN` (default `/usr/bin/prometheus-alertmanager`),
//! `PYTHON` (default `python3`), `SLUICE_TEST_POSTGRES_URL` (a PostgreSQL server to use
//! instead of a throwaway one).

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

#[path = "support/numbers.rs"]
mod numbers;
#[path = "support/prefill.rs"]
mod prefill;

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

/// The PostgreSQL rows' names.
const PG_1: &str = "sluice (postgres, 1 replica)";
const PREFILLED: &str = "sluice (sqlite, pre-filled)";
const PG_3: &str = "sluice (postgres, 3 replicas, round-robin)";

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
        name: "ceiling",
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
    let name = "sluice (sqlite)";
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

/// `replicas` `sluice serve` processes sharing one fresh scratch PostgreSQL database, each on
/// its own loopback port; the load goes to them round-robin.
async fn run_sluice_postgres(
    b: &Bench,
    name: &'static str,
    replicas: usize,
    tag: &str,
) -> (Row, Option<Followup>) {
    let result = async {
        // Declared before the processes, so dropped (DROP DATABASE) after they are killed.
        let db = scratch_postgres().await?;
        // Spawn them all before waiting for any, so they start (and migrate) together.
        let mut procs = Vec::new();
        for r in 1..=replicas {
            let dir = b.dir.path().join(format!("{tag}-replica-{r}"));
            let name = format!("sluice replica {r}");
            procs.push(spawn_sluice(b, &name, &dir, Some(db.url()), "")?);
        }
        for proc in &mut procs {
            proc.wait_ready("/readyz", READY_WITHIN).await?;
        }
        let bases: Vec<String> = procs.iter().map(|p| p.url("")).collect();
        // Ready is not leading: wait until one replica leads (runs the delivery worker).
        let start = Instant::now();
        let roles = loop {
            let mut roles = Vec::new();
            for proc in &procs {
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
        let mut notes = vec![format!(
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
        )];
        let urls: Vec<String> = bases
            .iter()
            .map(|base| format!("{base}/sentry/webhook"))
            .collect();
        let before = b.accepted();
        let run = load_round_robin(&urls, sentry_deliveries(b.n, tag), b.connections, is_202).await;
        let peaks: Vec<f64> = procs.iter().map(peak_rss_mib).collect();
        if replicas > 1 {
            notes.push(format!(
                "peak RSS per replica (the table shows their sum): {} MiB",
                peaks
                    .iter()
                    .map(|p| format!("{p:.1}"))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ));
        }
        let followup = drain_and_probe(b, name, &bases, before, notes).await;
        for proc in &mut procs {
            proc.check_running()?;
        }
        Ok((
            Measured {
                run,
                rss_mib: peaks.iter().sum(),
            },
            followup,
        ))
    }
    .await;
    split_followup(name, result)
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
    let name = "alertmanager";
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
    let name = "naive python relay";
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
    events: usize,
    issues: usize,
    errors: usize,
    messages: usize,
    max_per_second: usize,
    terms: Vec<(String, String)>,
}

/// 20,000 events of 50 issues into one channel with the default storm limits (1/s, burst 3,
/// max_backlog 20, cooldown 30m): what reaches Slack, how fast, and the accounting terms.
async fn run_storm(b: &Bench) -> Result<Storm, String> {
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
    let proc = start_sluice(b, &b.dir.path().join("storm"), &extra).await?;
    let start = b.sink.received_count();
    let requests = signed_deliveries((0..EVENTS).map(|i| EventSpec {
        project: "storm".into(),
        environment: "production",
        issue: format!("{}", 7_000_000 + i % ISSUES),
        event_id: format!("5707{i:028x}"),
    }));
    let url = proc.url("/sentry/webhook");
    let run = load(&url, requests, b.connections, is_202).await;
    // Let the worker work through what is due (follow-ups wait for the 30 min cooldown).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let received = &b.sink.received()[start..];
    let messages = received.iter().filter(|r| r.path == "hooks/storm").count();
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
    Ok(Storm {
        events: EVENTS,
        issues: ISSUES,
        errors: run.errors,
        messages,
        max_per_second,
        terms,
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
        "storm: {} events of {} issues into one channel (rate 1/s, burst 3, max_backlog 20, cooldown 30m), {} ingest errors",
        s.events, s.issues, s.errors
    );
    println!(
        "storm: Slack received {} requests, at most {} within any 1 s (limit: burst 3 + 1/s)",
        s.messages, s.max_per_second
    );
    println!(
        "storm: routed {routed} = posted {posted} + pending {pending} + dead {dead}: {} ({} unaccounted); folded by cooldown {}, messages rolled up {}",
        if routed == posted + pending + dead {
            "holds"
        } else {
            "BROKEN"
        },
        routed as i64 - (posted + pending + dead) as i64,
        term("sluice_occurrences_folded_total"),
        term("sluice_messages_rolled_up_total"),
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

fn print_ratios(rows: &[Row]) {
    let rps = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .and_then(|r| r.result.as_ref().ok())
            .map(|m| m.run.rps())
    };
    let Some(sluice) = rps("sluice (sqlite)") else {
        println!("no ratios: sluice did not run");
        return;
    };
    match rps(PREFILLED) {
        Some(full) => {
            let ratio = full / sluice;
            println!(
                "{:<20} {ratio:>6.2}x   (target >= 0.9: {})",
                "Pre-filled/empty",
                if ratio >= 0.9 { "met" } else { "NOT met" }
            );
        }
        None => println!(
            "{:<20}    n/a   (the pre-filled row did not run)",
            "Pre-filled/empty"
        ),
    }
    for (label, other, target) in [
        ("Sluice/ceiling", "ceiling", Some(0.6)),
        ("Sluice/Alertmanager", "alertmanager", Some(1.7)),
        ("Sluice/naive", "naive python relay", None),
    ] {
        match rps(other) {
            Some(o) => {
                let ratio = sluice / o;
                let goal = target.map_or(String::new(), |t| {
                    format!(
                        "   (target >= {t:.1}: {})",
                        if ratio >= t { "met" } else { "NOT met" }
                    )
                });
                println!("{label:<20} {ratio:>6.2}x{goal}");
            }
            None => println!("{label:<20}    n/a   ({other} did not run)"),
        }
    }
    let pg1 = rps(PG_1);
    let pg3 = rps(PG_3);
    match (pg3, pg1) {
        (Some(three), Some(one)) => {
            let ratio = three / one;
            println!(
                "{:<20} {ratio:>6.2}x   (target >= 2.0: {})",
                "Postgres 3/1 replica",
                if ratio >= 2.0 { "met" } else { "NOT met" }
            );
        }
        _ => println!(
            "{:<20}    n/a   (a PostgreSQL row did not run)",
            "Postgres 3/1 replica"
        ),
    }
    for (label, pg) in [("Postgres 1/sqlite", pg1), ("Postgres 3/sqlite", pg3)] {
        match pg {
            Some(pg) => println!("{label:<20} {:>6.2}x", pg / sluice),
            None => println!("{label:<20}    n/a   (did not run)"),
        }
    }
    if let Some(m) = rows
        .iter()
        .find(|r| r.name == "sluice (sqlite)")
        .and_then(|r| r.result.as_ref().ok())
    {
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
    // One target at a time, each stopped before the next starts.
    let mut rows = vec![run_ceiling(&b).await];
    let mut followups = Vec::new();
    let (row, followup) = run_sluice(&b).await;
    rows.push(row);
    followups.extend(followup);
    rows.push(run_sluice_prefilled(&b, env_usize("BENCH_PREFILL", 1_000_000)).await);
    for (row, followup) in [
        run_sluice_postgres(&b, PG_1, 1, "e").await,
        run_sluice_postgres(&b, PG_3, 3, "f").await,
    ] {
        rows.push(row);
        followups.extend(followup);
    }
    let (am_row, am_note) = run_alertmanager(&b).await;
    rows.push(am_row);
    rows.push(run_naive(&b).await);
    let throttled = Reply::RateLimited {
        retry_after_secs: 1,
    };
    rows.push(run_sluice_with_slack(&b, "sluice, Slack 429", throttled, "t").await);
    rows.push(run_sluice_with_slack(&b, "sluice, Slack 503", Reply::ServerError, "d").await);
    let storm = run_storm(&b).await;

    print_table(&b, &rows);
    print_ratios(&rows);
    for followup in &followups {
        print_followup(&b, followup);
    }
    if let Some(note) = am_note {
        println!("{note}");
    }
    print_storm(&storm);
}
