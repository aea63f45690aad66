//! Payload parsing benchmark: `cargo bench --bench parse`.
//!
//! Parses each real payload under `tests/fixtures/sentry/` (with the `Sentry-Hook-Resource` its
//! name starts with), the legacy plugin payload built from the `event_alert` one, and a large
//! `event_alert` (the fixture with its stack trace and breadcrumbs grown to about 100 KB, as
//! a deep JavaScript or Python stack sends), each as compact JSON as Sentry sends it,
//! `BENCH_PARSES` times (default 20,000; the large one a tenth of that) after a warm-up of a
//! tenth as many, and prints the mean time per parse and the body's size. No store, no network:
//! only `sluice::sentry::parse` / `parse_legacy`.
//!
//! `BENCH_ONLY=<name>` (a row's name, `event_alert.triggered`) parses that payload alone, for a
//! profiler. Instruction counts are repeatable where times are not: run under
//! `valgrind --tool=callgrind --toggle-collect='sluice::sentry::parse::parse'
//! --toggle-collect='sluice::sentry::legacy::parse_legacy'`, the total `Ir` divided by the
//! number of parses including the warm-up (1.1 × the row's `parses`) is the instructions of one
//! parse.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::sentry::{ProjectMap, parse, parse_legacy};

/// The service's allocator (src/main.rs), so that allocations cost here what they cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Only `env_usize` is used here, hence the allow.
#[allow(dead_code)]
#[path = "support/numbers.rs"]
mod numbers;

use numbers::env_usize;

/// One payload to parse: its row name, its resource header (`None`: a legacy plugin payload)
/// and its body.
struct Payload {
    name: String,
    resource: Option<String>,
    body: Vec<u8>,
}

/// Parses every payload (or `BENCH_ONLY`'s) and prints a row for each.
fn main() {
    let parses = env_usize("BENCH_PARSES", 20_000);
    let only = std::env::var("BENCH_ONLY").ok();
    let projects = ProjectMap::from([("1".to_owned(), "jsbin".to_owned())]);
    println!(
        "{:<32} {:>9} {:>9} {:>12}",
        "payload", "bytes", "parses", "µs/parse"
    );
    for payload in payloads() {
        if only.as_ref().is_some_and(|only| *only != payload.name) {
            continue;
        }
        let n = if payload.body.len() > 50_000 {
            (parses / 10).max(1)
        } else {
            parses
        };
        let per_parse = time(n, || match &payload.resource {
            Some(resource) => drop(black_box(parse(resource, &payload.body, &projects))),
            None => drop(black_box(parse_legacy(&payload.body, &projects))),
        });
        println!(
            "{:<32} {:>9} {:>9} {:>12.2}",
            payload.name,
            payload.body.len(),
            n,
            per_parse.as_secs_f64() * 1e6
        );
    }
}

/// The mean time of `n` calls of `f`, after a warm-up of a tenth as many.
fn time(n: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// The fixtures, the legacy payload and the large `event_alert`.
fn payloads() -> Vec<Payload> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sentry");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/sentry")
        .map(|entry| entry.expect("fixture").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let resource = name.split('.').next().unwrap_or_default().to_owned();
        let json: Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture"))
            .expect("a fixture is JSON");
        out.push(Payload {
            name,
            resource: Some(resource),
            body: serde_json::to_vec(&json).expect("JSON"),
        });
    }
    let event_alert: Value = serde_json::from_slice(
        &std::fs::read(dir.join("event_alert.triggered.json")).expect("fixture"),
    )
    .expect("JSON");
    let legacy = json!({
        "id": "1170820242",
        "project": "jsbin",
        "project_slug": "jsbin",
        "level": "error",
        "culprit": "?(runner)",
        "message": "ReferenceError: heck is not defined",
        "url": "https://sentry.io/organizations/acme/issues/1170820242/",
        "triggering_rules": ["Send a notification for new issues"],
        "event": event_alert["data"]["event"],
    });
    out.push(Payload {
        name: "legacy (from event_alert)".into(),
        resource: None,
        body: serde_json::to_vec(&legacy).expect("JSON"),
    });
    out.push(Payload {
        name: "event_alert (large)".into(),
        resource: Some("event_alert".into()),
        body: serde_json::to_vec(&grown(event_alert, 100_000)).expect("JSON"),
    });
    out
}

/// `event_alert` with its stack frames repeated and breadcrumbs added until its JSON is at
/// least `bytes` long.
fn grown(mut event_alert: Value, bytes: usize) -> Value {
    let event = &mut event_alert["data"]["event"];
    let frames = event["exception"]["values"][0]["stacktrace"]["frames"]
        .as_array()
        .cloned()
        .expect("the fixture has stack frames");
    let mut crumbs = Vec::new();
    let mut i = 0;
    while serde_json::to_vec(&*event).expect("JSON").len() < bytes {
        if let Some(list) = event["exception"]["values"][0]["stacktrace"]["frames"].as_array_mut() {
            list.extend(frames.iter().cloned());
        }
        for _ in 0..20 {
            i += 1;
            crumbs.push(json!({
                "timestamp": 1_566_248_770.0 + f64::from(i),
                "type": "http",
                "category": "xhr",
                "level": "info",
                "data": {"method": "GET", "url": format!("https://api.example.com/items/{i}"), "status_code": 200},
                "message": format!("GET /items/{i} \"ok\""),
            }));
        }
        event["breadcrumbs"] = json!({"values": crumbs});
    }
    event_alert
}
