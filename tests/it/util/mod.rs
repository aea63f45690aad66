//! Test harness: real payloads, signing, a Sluice server on port 0 (in-process or as the real
//! binary), and the fake Slack.

pub mod fake_slack;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sluice::config::Config;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fake_slack::{FakeSlack, Reply};

/// The client secret the test configs use.
pub const SECRET: &str = "test-client-secret";
/// A second, rotated secret: either one verifies.
pub const ROTATED_SECRET: &str = "rotated-client-secret";
/// The legacy plugin token of the test configs.
pub const LEGACY_TOKEN: &str = "legacy-token-123";

/// A fixture from ../shared/fixtures/sentry/, compacted as Sentry sends it (key order kept).
pub fn fixture(name: &str) -> Vec<u8> {
    serde_json::to_vec(&fixture_json(name)).unwrap()
}

/// A fixture as JSON, to edit before sending.
pub fn fixture_json(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/sentry")
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

    /// Writes the standard test config pointing at `slack` and loads it.
    pub fn config(&self, slack: &FakeSlack, extra: &str) -> Config {
        let path = self.write_config(&config_text(slack, &self.db(), extra));
        Config::load(&path).unwrap_or_else(|e| panic!("test config: {e}"))
    }

    /// Opens the store the server uses, to look at what it committed.
    pub async fn store(&self) -> std::sync::Arc<dyn sluice::store::Store> {
        sluice::store::open(&format!("sqlite://{}", self.db().display()))
            .await
            .unwrap()
    }
}

/// Sluice running in-process on a loopback port.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Serves `config` on 127.0.0.1:0.
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(sluice::server::run(listener, config, async move {
            token.cancelled().await
        }));
        Self { addr, stop, handle }
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

    /// POSTs a delivery signed with [`SECRET`].
    pub async fn deliver(&self, resource: &str, body: &[u8]) -> (StatusCode, Value) {
        post_signed(&self.url("/sentry/webhook"), resource, body, SECRET).await
    }

    /// Delivers an [`event_alert`] and asserts it was stored (202).
    pub async fn accept_event(&self, issue_id: &str, event_id: &str, project: &str, env: &str) {
        let body = event_alert(issue_id, event_id, project, env);
        let (status, reply) = self.deliver("event_alert", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    }
}

/// Waits (up to `timeout`) until nothing routed to `channel` is still pending — Slack having
/// accepted a message does not mean the worker has recorded it yet — and returns its totals.
pub async fn wait_drained(
    store: &dyn sluice::store::Store,
    channel: &str,
    timeout: Duration,
) -> sluice::store::ChannelTotals {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let totals = store.channel_totals(channel).await.unwrap();
        if totals.occurrences_pending == 0 && totals.messages_pending == 0 {
            return totals;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} never drained: {totals:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) until the store holds at least `n` dead letters; returns them.
pub async fn wait_dead_letters(
    store: &dyn sluice::store::Store,
    n: usize,
) -> Vec<sluice::store::DeadLetter> {
    for _ in 0..500 {
        let dead = store.dead_letters(100).await.unwrap();
        if dead.len() >= n {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} dead letters after 10 s");
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    try_post(
        url,
        &[
            ("content-type", "application/json".to_string()),
            ("sentry-hook-resource", resource.to_string()),
            ("sentry-hook-timestamp", now.to_string()),
            (
                "sentry-hook-signature",
                sluice::sentry::sign(body, secret.as_bytes()),
            ),
            ("request-id", "test-request".to_string()),
        ],
        body,
    )
    .await
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
    let mut v = fixture_json("event_alert.triggered.json");
    let event = &mut v["data"]["event"];
    event["issue_id"] = issue_id.into();
    event["event_id"] = event_id.into();
    event["environment"] = environment.into();
    event["url"] =
        format!("https://sentry.io/api/0/projects/test-org/{project}/events/{event_id}/").into();
    event["web_url"] =
        format!("https://sentry.io/organizations/test-org/issues/{issue_id}/events/{event_id}/")
            .into();
    serde_json::to_vec(&v).unwrap()
}

/// The real `sluice` binary, started with a config file; killable with SIGKILL.
pub struct Process {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `sluice serve -c config` listening on a free loopback port and waits until
    /// `/readyz` answers 200.
    pub async fn start(config_text: &str, scratch: &Scratch) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = config_text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let path = scratch.write_config(&text);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "-c"])
            .arg(&path)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let ready = format!("http://{addr}/readyz");
        sluice::slack::transport::install_crypto_provider();
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status() == StatusCode::OK
            {
                return Self { child, addr };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sluice did not become ready at {addr}");
    }

    /// Sends `signal` (`HUP`, `TERM`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (up to `timeout`) for the process to exit; returns its exit code.
    pub async fn wait_exit(mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "sluice did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What `/readyz` says this replica is (`leader` or `follower`); `None` when it does not
    /// answer 200.
    pub async fn role(&self) -> Option<String> {
        let reply = reqwest::get(self.url("/readyz")).await.ok()?;
        if reply.status() != StatusCode::OK {
            return None;
        }
        let body: Value = reply.json().await.ok()?;
        body["role"].as_str().map(str::to_string)
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// POSTs a delivery signed with [`SECRET`].
    pub async fn deliver(&self, resource: &str, body: &[u8]) -> (StatusCode, Value) {
        post_signed(
            &format!("http://{}/sentry/webhook", self.addr),
            resource,
            body,
            SECRET,
        )
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
/// channel), as if they had arrived `days_ago` days ago.
pub async fn seed_occurrences(store: &dyn sluice::store::Store, days_ago: i64, n: usize) {
    use sha2::Digest as _;
    const DAY_MS: i64 = 86_400_000;
    let now = sluice::state::now_ms();
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
            }],
        };
        store.ingest(&delivery).await.unwrap();
    }
}
