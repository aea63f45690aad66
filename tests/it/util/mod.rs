//! Test harness: real payloads, signing, a Sluice server on port 0 (in-process or as the real
//! binary), and the fake Slack.
//!
//! The one test kit: the benchmark (benches/ingest.rs) compiles this module too, for its Slack
//! stand-in, payloads, signing and processes. So nothing here may name the test binary's own
//! modules (`crate::…`, `super::` from this file).

pub mod clicks;
pub mod fake_sentry;
pub mod fake_slack;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sluice::clock::Clock;
use sluice::config::Config;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fake_slack::{FakeSlack, Reply};
pub use process::Process;

/// The client secret the test configs use.
pub const SECRET: &str = "test-client-secret";
/// A second, rotated secret: either one verifies.
pub const ROTATED_SECRET: &str = "rotated-client-secret";
/// The legacy plugin token of the test configs.
pub const LEGACY_TOKEN: &str = "legacy-token-123";

/// A fixture from tests/fixtures/sentry/, compacted as Sentry sends it (key order kept).
pub fn fixture(name: &str) -> Vec<u8> {
    serde_json::to_vec(&fixture_json(name)).unwrap()
}

/// A fixture as JSON, to edit before sending.
pub fn fixture_json(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sentry")
        .join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

/// The Sentry-Hook-Resource of a fixture file name (`issue.created.json` → `issue`).
pub fn resource_of(fixture: &str) -> &str {
    fixture.split('.').next().unwrap()
}

/// routes.toml for tests: every channel points at the fake Slack; `extra` is appended (its
/// `{slack}` is replaced by the fake's base URL).
pub fn config_text(slack: &FakeSlack, db: &Path, extra: &str) -> String {
    format!(
        r#"
default_channel = "errors"

[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
# Far above the 800 ms default: a debug build on a loaded CI machine is slow, and these tests
# are not about timeouts (http_limits.rs is).
request_timeout = "15s"
body_timeout = "5s"

[sentry]
client_secrets = ["{SECRET}", "{ROTATED_SECRET}"]
max_clock_skew = "5m"
legacy_token = "{LEGACY_TOKEN}"

[sentry.projects]
"4505" = "checkout"

[storage]
url = "sqlite://{db}"

[slack]
bot_token = "xoxb-test-token"
api_base = "{api}"
retry_initial_backoff = "50ms"
retry_max_backoff = "200ms"
timeout = "2s"

# Generous limits, so tests that are not about storm control can count every message.
[channels.errors]
webhook_url = "{errors}"
rate = "100/s"
burst = 100

[channels.frontend-prod]
webhook_url = "{frontend}"
rate = "100/s"
burst = 100

[channels.python-api]
slack_channel = "C0123456789"
rate = "100/s"
burst = 100

[[routes]]
name = "front-end production"
project = "front-end"
environment = "production"
channels = ["frontend-prod"]
mention = "<!subteam^S0123>"
mention_level = ">=error"
# Every occurrence posts here, so tests can count messages; storm tests set their own.
cooldown = "0s"

[[routes]]
name = "python via web api"
project = "python"
channels = ["python-api"]
{extra}
"#,
        db = db.display(),
        api = slack.api_base(),
        errors = slack.webhook_url("errors"),
        frontend = slack.webhook_url("frontend-prod"),
        extra = extra.replace("{slack}", &slack.base),
    )
}

/// `extra` for [`config_text`]: a `storm` channel, 10 messages a second after a burst of 3,
/// with roll-ups past 20 waiting, and a route with a 1 s cooldown for project `storm`.
pub const STORM_CHANNEL: &str = r#"
[channels.storm]
webhook_url = "{slack}/hooks/storm"
rate = "10/s"
burst = 3
max_backlog = 20

[[routes]]
name = "storm"
project = "storm"
channels = ["storm"]
cooldown = "1s"
"#;

/// [`config_text`] with `storage.url` set to a PostgreSQL database.
pub fn config_text_postgres(slack: &FakeSlack, url: &str, extra: &str) -> String {
    let placeholder = Path::new("/nonexistent/sluice.db");
    config_text(slack, placeholder, extra).replace(
        &format!("url = \"sqlite://{}\"", placeholder.display()),
        &format!("url = \"{url}\""),
    )
}

/// A scratch directory with a routes.toml and a database path.
pub struct Scratch {
    /// Holds the files until dropped.
    pub dir: TempDir,
}

impl Scratch {
    /// A new scratch directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The SQLite file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("sluice.db")
    }

    /// Writes routes.toml and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("routes.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes the routes.toml of the commands that act on the store (`mute`, `dead-letters`):
    /// this scratch's SQLite file and two console channels, `errors` and `checkout-prod`.
    pub fn write_store_config(&self) -> PathBuf {
        self.write_config(&format!(
            "default_channel = \"errors\"\n\
             [storage]\n\
             url = \"sqlite://{}\"\n\
             [channels.errors]\n\
             console = true\n\
             [channels.checkout-prod]\n\
             console = true\n",
            self.db().display()
        ))
    }

    /// Writes the standard test config pointing at `slack` and loads it.
    pub fn config(&self, slack: &FakeSlack, extra: &str) -> Config {
        let path = self.write_config(&config_text(slack, &self.db(), extra));
        Config::load(&path).unwrap_or_else(|e| panic!("test config: {e}"))
    }

    /// Opens the store the server uses, to look at what it committed.
    pub async fn store(&self) -> std::sync::Arc<dyn sluice::store::Store> {
        sluice::store::open(
            &format!("sqlite://{}", self.db().display()),
            sluice::storm::planner(),
        )
        .await
        .unwrap()
    }
}

/// Holds Tokio's paused clock still: while this lives, time moves only by
/// `tokio::time::advance`, never by itself.
///
/// A paused clock auto-advances to the next timer whenever the runtime has nothing to run,
/// and it has nothing to run while it waits for SQLite's worker thread or a socket: timers
/// would fire in the middle of a store call. A running `spawn_blocking` task stops that
/// (documented under "Preventing auto-advance" in `tokio::time::pause`), so this keeps one
/// running until dropped. Use it with `#[tokio::test(start_paused = true)]`.
pub struct HeldTime {
    release: Option<std::sync::mpsc::Sender<()>>,
}

impl HeldTime {
    /// Holds the clock from now on.
    pub fn hold() -> Self {
        let (release, held) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        Self {
            release: Some(release),
        }
    }
}

impl Drop for HeldTime {
    fn drop(&mut self) {
        drop(self.release.take());
    }
}

/// Sluice running in-process on a loopback port.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The clock it reads; deliveries are stamped with it.
    pub clock: Clock,
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Serves `config` on 127.0.0.1:0.
    pub async fn start(config: Config) -> Self {
        Self::start_on_clock(config, Clock::system()).await
    }

    /// Serves `config` on 127.0.0.1:0, reading `clock` (a test's, on Tokio's paused time).
    /// Returns once the delivery worker has done its first round: the workers started with it
    /// (digest scheduler, silence watchdog) have read the clock they count from.
    pub async fn start_on_clock(config: Config, clock: Clock) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(sluice::server::run_on_clock(
            listener,
            config,
            clock,
            async move { token.cancelled().await },
        ));
        let server = Self {
            addr,
            clock,
            stop,
            handle,
        };
        eventually(
            Duration::from_secs(10),
            "the delivery worker starts",
            || async {
                if server.handle.is_finished() {
                    return Some(());
                }
                let rounds = server
                    .metric("sluice_delivery_rounds_total")
                    .await
                    .unwrap_or(0.0);
                (rounds >= 1.0).then_some(())
            },
        )
        .await;
        if server.handle.is_finished() {
            panic!("the server stopped at start: {:?}", server.handle.await);
        }
        server
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap();
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a delivery signed with [`SECRET`], stamped with the server's clock.
    pub async fn deliver(&self, resource: &str, body: &[u8]) -> (StatusCode, Value) {
        let url = self.url("/sentry/webhook");
        let now = self.clock.now_ms() / 1000;
        try_post_signed_at(&url, resource, body, SECRET, now)
            .await
            .expect("request to sluice")
    }

    /// A number read from `/metrics` (`name` with its labels, as printed); `None` when absent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        sluice::slack::transport::install_crypto_provider();
        let text = reqwest::get(self.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Advances Tokio's (held) clock by `by`, at least the delivery worker's longest wait
    /// (2 s), and waits until the worker has done a round at the new time with no channel
    /// left in flight: whatever was due by then has been sent, and nothing more will be
    /// until the clock moves again or a delivery arrives.
    ///
    /// It first waits until every delivery is folded (the messages it queues are then in the
    /// outbox) and no channel is being sent: `slack.timeout` runs on this clock, so a jump past
    /// it would time out a send whose answer is on its way.
    pub async fn advance_and_settle(&self, by: Duration) {
        assert!(
            by >= Duration::from_secs(2),
            "advance at least one idle poll"
        );
        eventually(Duration::from_secs(10), "every delivery folded", || async {
            let pending = self.metric("sluice_fold_pending").await.unwrap_or(0.0);
            (pending == 0.0).then_some(())
        })
        .await;
        eventually(Duration::from_secs(10), "no send in flight", || async {
            let in_flight = self
                .metric("sluice_delivery_channels_in_flight")
                .await
                .unwrap_or(0.0);
            (in_flight == 0.0).then_some(())
        })
        .await;
        let rounds = self
            .metric("sluice_delivery_rounds_total")
            .await
            .unwrap_or(0.0);
        tokio::time::advance(by).await;
        eventually(
            Duration::from_secs(10),
            "the delivery worker settles",
            || async {
                let now = self
                    .metric("sluice_delivery_rounds_total")
                    .await
                    .unwrap_or(0.0);
                let in_flight = self
                    .metric("sluice_delivery_channels_in_flight")
                    .await
                    .unwrap_or(0.0);
                (now > rounds && in_flight == 0.0).then_some(())
            },
        )
        .await
    }

    /// Delivers an [`event_alert`] and asserts it was stored (202).
    pub async fn accept_event(&self, issue_id: &str, event_id: &str, project: &str, env: &str) {
        let body = event_alert(issue_id, event_id, project, env);
        let (status, reply) = self.deliver("event_alert", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    }
}

/// Waits `period` of real time, whatever Tokio's clock does (paused, held or not): the pause
/// between two looks of a test that waits for another thread or process, never a stand-in
/// for an event. (A blocked `recv_timeout` in a blocking task; while it runs, a paused clock
/// does not advance by itself either.)
pub async fn real_pause(period: Duration) {
    tokio::task::spawn_blocking(move || {
        let (_keep, never) = std::sync::mpsc::channel::<()>();
        let _ = never.recv_timeout(period);
    })
    .await
    .unwrap();
}

/// `fut`'s output, or a panic saying `what` once `timeout` of real time has passed, whatever
/// Tokio's clock does (a `tokio::time::timeout` would never fire on a held clock).
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
    // Ends at once when `cancel` is dropped, so that no blocking thread outlives the race.
    let timer = tokio::task::spawn_blocking(move || {
        let _ = cancelled.recv_timeout(timeout);
    });
    tokio::select! {
        out = fut => {
            drop(cancel);
            out
        }
        _ = timer => panic!("not within {timeout:?}: {what}"),
    }
}

/// Looks at `probe` until it returns `Some`, pausing [`real_pause`] 20 ms between looks; panics
/// with `what` after `timeout` of real time.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        real_pause(Duration::from_millis(20)).await;
    }
}

/// Waits (up to `timeout`) until nothing routed to `channel` is still pending — Slack having
/// accepted a message does not mean the worker has recorded it yet — and returns its totals.
pub async fn wait_drained(
    store: &dyn sluice::store::Store,
    channel: &str,
    timeout: Duration,
) -> sluice::store::ChannelTotals {
    eventually(timeout, &format!("{channel} drained"), || async {
        let totals = store.channel_totals(channel).await.unwrap();
        (totals.occurrences_pending == 0 && totals.messages_pending == 0).then_some(totals)
    })
    .await
}

/// Waits (up to 10 s) until the store holds at least `n` dead letters; returns them.
pub async fn wait_dead_letters(
    store: &dyn sluice::store::Store,
    n: usize,
) -> Vec<sluice::store::DeadLetter> {
    eventually(
        Duration::from_secs(10),
        &format!("{n} dead letters"),
        || async {
            let dead = store.dead_letters(&Default::default(), 100).await.unwrap();
            (dead.len() >= n).then_some(dead)
        },
    )
    .await
}

/// POSTs `body` as Sentry would: resource header, timestamp, signature under `secret`.
pub async fn post_signed(
    url: &str,
    resource: &str,
    body: &[u8],
    secret: &str,
) -> (StatusCode, Value) {
    try_post_signed(url, resource, body, secret)
        .await
        .expect("request to sluice")
}

/// [`post_signed`], with `None` when no answer came (the server went away).
pub async fn try_post_signed(
    url: &str,
    resource: &str,
    body: &[u8],
    secret: &str,
) -> Option<(StatusCode, Value)> {
    let now = Clock::system().now_ms() / 1000;
    try_post_signed_at(url, resource, body, secret, now).await
}

/// [`try_post_signed`] with `Sentry-Hook-Timestamp` set to `now` (Unix seconds).
pub async fn try_post_signed_at(
    url: &str,
    resource: &str,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Option<(StatusCode, Value)> {
    let mut headers = signed_headers(resource, body, secret);
    headers.push(("sentry-hook-timestamp", now.to_string()));
    headers.push(("request-id", "test-request".to_string()));
    try_post(url, &headers, body).await
}

/// The headers that make `body` a Sentry delivery of `resource`: content type, resource and
/// `Sentry-Hook-Signature` (HMAC-SHA256 under `secret`). No timestamp or request id.
pub fn signed_headers(resource: &str, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_string()),
        ("sentry-hook-resource", resource.to_string()),
        (
            "sentry-hook-signature",
            sluice::sentry::sign(body, secret.as_bytes()),
        ),
    ]
}

/// POSTs `body` with exactly `headers`.
pub async fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> (StatusCode, Value) {
    try_post(url, headers, body)
        .await
        .expect("request to sluice")
}

/// [`post`], with `None` when no answer came.
pub async fn try_post(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(StatusCode, Value)> {
    sluice::slack::transport::install_crypto_provider();
    let mut req = reqwest::Client::new().post(url).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status();
    let text = resp.text().await.ok()?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some((status, json))
}

/// An `event_alert` body for `issue_id` with a distinct `event_id` in `project`/`environment`.
pub fn event_alert(issue_id: &str, event_id: &str, project: &str, environment: &str) -> Vec<u8> {
    let template = fixture_json("event_alert.triggered.json");
    let v = event_alert_json(&template, issue_id, event_id, project, environment);
    serde_json::to_vec(&v).unwrap()
}

/// [`event_alert`] as JSON, made from `template` (the `event_alert.triggered.json` fixture,
/// read once by a caller that makes many).
pub fn event_alert_json(
    template: &Value,
    issue_id: &str,
    event_id: &str,
    project: &str,
    environment: &str,
) -> Value {
    let mut v = template.clone();
    let event = &mut v["data"]["event"];
    event["issue_id"] = issue_id.into();
    event["event_id"] = event_id.into();
    event["environment"] = environment.into();
    event["url"] =
        format!("https://sentry.io/api/0/projects/test-org/{project}/events/{event_id}/").into();
    event["web_url"] =
        format!("https://sentry.io/organizations/test-org/issues/{issue_id}/events/{event_id}/")
            .into();
    v
}

/// A Sentry event id (32 hex digits) made from `n`.
pub fn event_id(n: usize) -> String {
    format!("{n:032x}")
}

/// Most requests the fake saw for `path` within any window of `window`.
pub fn max_in_window(received: &[fake_slack::Received], path: &str, window: Duration) -> usize {
    let times: Vec<_> = received
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.at)
        .collect();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Commits `n` occurrences of one front-end staging issue, routed to `errors` (a digest
/// channel), as if they had arrived `days_ago` days before `now` (Unix ms), and folds them as
/// the leader would.
pub async fn seed_occurrences(store: &dyn sluice::store::Store, now: i64, days_ago: i64, n: usize) {
    use sha2::Digest as _;
    const DAY_MS: i64 = 86_400_000;
    for i in 0..n {
        let body = event_alert(
            "4242",
            &format!("{:032x}", 0xd16e57 + i),
            "front-end",
            "staging",
        );
        let alert = match sluice::sentry::parse("event_alert", &body, &Default::default()).unwrap()
        {
            sluice::sentry::Parsed::Alert(a) => *a,
            _ => unreachable!(),
        };
        let delivery = sluice::store::Delivery {
            body_sha256: sha2::Sha256::digest(&body).into(),
            resource: "event_alert".into(),
            request_id: None,
            received_at_ms: now - days_ago * DAY_MS,
            alert: Some(alert),
            targets: vec![sluice::routing::Target {
                channel: "errors".into(),
                route: None,
                mention: None,
                cooldown_secs: 1800,
                digest: true,
                actions: None,
                comments: false,
                breakthrough: vec![10, 100, 1000],
            }],
        };
        store.ingest(delivery).await.unwrap();
    }
    while store.fold(1024).await.unwrap().deliveries() > 0 {}
}
