//! A fake Slack on port 0: records every request and answers what the test told it to —
//! success, 429 with Retry-After, 503, or one of Slack's error strings — for both incoming
//! webhooks (`/hooks/{name}`) and the Web API (`/api/chat.postMessage`, `/api/chat.update`).
//! Like Slack, `chat.postMessage` answers with the channel's id (a name gets a stable id of
//! its own, [`FakeSlack::channel_id`]) and `chat.update` refuses a channel name with
//! `channel_not_found`.
//!
//! For clicks: `users.info` (GET or POST) answers from the users of
//! [`FakeSlack::add_user`] (`user_not_found` for others), and `/respond/{id}` stands for a
//! click's `response_url` ([`FakeSlack::response_url`]) and records what Sluice answered the
//! clicker ([`FakeSlack::responded`]). Both go through the same script, default reply and
//! refusals as every other request, and are recorded (`api/users.info` with the body
//! `{"user": ID}`, `respond/{id}`).
//!
//! The benchmark's Slack stand-in too: it counts without copying ([`FakeSlack::accepted_count`])
//! and answers every request 429 or 503 when told to ([`FakeSlack::set_default`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Success (`ok` for webhooks, `{"ok":true,"ts":…,"channel":"C…"}` for the Web API).
    Ok,
    /// HTTP 429 with `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 503 without `Retry-After` (Slack down), for webhooks and the Web API alike.
    ServerError,
    /// Slack's permanent error string: 404 + text for webhooks, `ok:false` for the Web API.
    SlackError(&'static str),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `hooks/NAME` or `api/METHOD`.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// How the fake answered.
    pub reply: String,
    /// The `ts` of the message a Web API request posted (`chat.postMessage` answered `ok`).
    pub ts: Option<String>,
}

impl Received {
    /// The message's text fallback.
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    /// Every n-th request (0 = never) is answered 429 with this Retry-After.
    rate_limit_every: Mutex<(u64, u64)>,
    requests: Mutex<u64>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    next_ts: Mutex<u64>,
    /// How long every answer takes.
    latency: Mutex<std::time::Duration>,
    /// Paths (`hooks/NAME`) whose requests are accepted and never answered.
    hung: Mutex<std::collections::HashSet<String>>,
    /// Paths whose every request is refused with this Slack error string.
    refused: Mutex<std::collections::HashMap<String, &'static str>>,
    /// The `user` objects `users.info` answers, by user id.
    users: Mutex<std::collections::HashMap<String, Value>>,
}

/// Handle to a running fake Slack.
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl FakeSlack {
    /// Starts the fake on a free loopback port; it answers `Ok` until told otherwise.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        *inner.default.lock().unwrap() = Some(Reply::Ok);
        let app = Router::new()
            .route("/hooks/{name}", post(webhook))
            .route("/api/users.info", get(users_info).post(users_info))
            .route("/api/{method}", post(web_api))
            .route("/respond/{id}", post(respond))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { inner, base }
    }

    /// The webhook URL of channel `name`.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base)
    }

    /// The channel id the fake answers for a `chat.postMessage` to `channel`, as Slack does:
    /// an id stays itself, a name (`alerts`, `#alerts`) gets a stable id of its own.
    pub fn channel_id(channel: &str) -> String {
        if is_channel_id(channel) {
            return channel.to_string();
        }
        // FNV-1a: stable across runs, unlike the std hasher.
        let hash = channel
            .trim_start_matches('#')
            .bytes()
            .fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
        format!("C{hash:010X}")
    }

    /// The Web API base URL.
    pub fn api_base(&self) -> String {
        format!("{}/api", self.base)
    }

    /// A click's `response_url` in this fake: what Sluice posts there is recorded under
    /// `respond/{id}`.
    pub fn response_url(&self, id: &str) -> String {
        format!("{}/respond/{id}", self.base)
    }

    /// Adds a workspace member that `users.info` knows: Slack's `user` object with `name`,
    /// `real_name` and `profile.email` (absent when `None`, as without the
    /// `users:read.email` scope).
    pub fn add_user(&self, id: &str, name: &str, real_name: &str, email: Option<&str>) {
        let mut profile = json!({"real_name": real_name, "display_name": name});
        if let Some(email) = email {
            profile["email"] = email.into();
        }
        let user = json!({
            "id": id,
            "team_id": "T0123456789",
            "name": name,
            "real_name": real_name,
            "deleted": false,
            "is_bot": false,
            "profile": profile
        });
        self.inner
            .users
            .lock()
            .unwrap()
            .insert(id.to_string(), user);
    }

    /// The bodies Sluice posted to [`response_url`](Self::response_url)`(id)`, in order,
    /// whatever the answer.
    pub fn responded(&self, id: &str) -> Vec<Value> {
        self.requests_to(&format!("respond/{id}"))
            .into_iter()
            .map(|r| r.body)
            .collect()
    }

    /// Every request to `path` (`api/users.info`, `respond/x`, `hooks/NAME`), in order.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Answers the next requests with `replies`, in order, then with the default again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// Answers every request not scripted with `reply`.
    pub fn set_default(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    /// Answers every `n`-th request with 429 and `Retry-After: retry_after_secs`.
    pub fn rate_limit_every(&self, n: u64, retry_after_secs: u64) {
        *self.inner.rate_limit_every.lock().unwrap() = (n, retry_after_secs);
    }

    /// Takes `latency` to answer every request from now on, like a slow Slack.
    pub fn set_latency(&self, latency: std::time::Duration) {
        *self.inner.latency.lock().unwrap() = latency;
    }

    /// Never answers requests to `path` (`hooks/NAME`), like an endpoint that accepts the
    /// connection and hangs; they are recorded with the reply `Hung`.
    pub fn hang(&self, path: &str) {
        self.inner.hung.lock().unwrap().insert(path.to_string());
    }

    /// Refuses every request to `path` (`hooks/NAME`) with Slack's permanent `error`, whatever
    /// the script says; other paths are answered as before.
    pub fn refuse(&self, path: &str, error: &'static str) {
        self.inner
            .refused
            .lock()
            .unwrap()
            .insert(path.to_string(), error);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Requests that the fake accepted (answered `Ok`).
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.reply == "Ok")
            .collect()
    }

    /// How many requests arrived so far, whatever the answer.
    pub fn received_count(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }

    /// How many requests the fake accepted (answered `Ok`) so far; [`accepted`](Self::accepted)
    /// without copying them.
    pub fn accepted_count(&self) -> usize {
        let received = self.inner.received.lock().unwrap();
        received.iter().filter(|r| r.reply == "Ok").count()
    }

    /// Waits until at least `n` requests were accepted, or panics after `timeout`.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        if !self.until_accepted(n, timeout).await {
            self.not_met(timeout);
        }
        self.accepted()
    }

    /// [`wait_accepted`](Self::wait_accepted) that does not panic: whether `n` requests were
    /// accepted within `timeout` (of real time).
    pub async fn until_accepted(&self, n: usize, timeout: Duration) -> bool {
        self.reached(timeout, |f| f.accepted_count() >= n).await
    }

    /// Waits until at least `n` requests arrived, whatever the answer, or panics after
    /// `timeout`.
    pub async fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |f| f.received_count() >= n).await;
        self.received()
    }

    /// Waits until at least `n` requests to `path` arrived, whatever the answer, or panics
    /// after `timeout`.
    pub async fn wait_until_path(&self, path: &str, n: usize, timeout: Duration) {
        self.wait_until(timeout, |f| {
            f.received().iter().filter(|r| r.path == path).count() >= n
        })
        .await;
    }

    /// Waits for `done`, looking again at each request that arrives; panics after `timeout`
    /// of real time (Tokio's clock may be paused).
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Self) -> bool) {
        if !self.reached(timeout, done).await {
            self.not_met(timeout);
        }
    }

    /// Panics: what the fake was waiting for did not happen within `timeout`.
    fn not_met(&self, timeout: Duration) -> ! {
        panic!(
            "fake Slack: condition not met within {timeout:?}; received {:#?}",
            self.received()
        );
    }

    /// Whether `done` holds within `timeout` of real time, looking again at each request that
    /// arrives (and every 100 ms).
    async fn reached(&self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::select! {
                _ = arrived => {}
                _ = super::real_pause(left.min(Duration::from_millis(100))) => {}
            }
        }
    }

    fn next_reply(&self) -> Reply {
        let count = {
            let mut n = self.inner.requests.lock().unwrap();
            *n += 1;
            *n
        };
        let (every, retry_after_secs) = *self.inner.rate_limit_every.lock().unwrap();
        if every > 0 && count.is_multiple_of(every) {
            return Reply::RateLimited { retry_after_secs };
        }
        self.inner
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| self.inner.default.lock().unwrap().clone())
            .unwrap_or(Reply::Ok)
    }
}

/// The reply recorded for a request to a hung path: none.
#[derive(Debug)]
struct Hung;

/// Picks the reply for a request and records both.
fn answer(inner: &Arc<Inner>, path: String, headers: &HeaderMap, body: &Bytes) -> Reply {
    answer_with_ts(inner, path, headers, body).0
}

/// [`answer`], with the `ts` of the message when it posts one (`chat.postMessage`, ok).
fn answer_with_ts(
    inner: &Arc<Inner>,
    path: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Reply, Option<String>) {
    let fake = FakeSlack {
        inner: inner.clone(),
        base: String::new(),
    };
    let refused = inner.refused.lock().unwrap().get(&path).copied();
    let reply = match refused {
        Some(error) => Reply::SlackError(error),
        None => as_slack_would(&path, body, fake.next_reply()),
    };
    let ts = (path == "api/chat.postMessage" && matches!(reply, Reply::Ok)).then(|| {
        let mut n = inner.next_ts.lock().unwrap();
        *n += 1;
        format!("1700000000.{:06}", *n)
    });
    record(inner, path, headers, body, &reply, ts.clone());
    (reply, ts)
}

/// What real Slack answers whatever the script says: `chat.update` accepts only a channel id,
/// so one addressed to a channel name is refused with `channel_not_found`.
fn as_slack_would(path: &str, body: &Bytes, reply: Reply) -> Reply {
    if path != "api/chat.update" || !matches!(reply, Reply::Ok) {
        return reply;
    }
    let body = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    if !body["channel"].as_str().is_some_and(is_channel_id) {
        return Reply::SlackError("channel_not_found");
    }
    reply
}

/// Whether `s` looks like a Slack conversation id (`C0123456789`, `G…`, `D…`): channel names
/// are lowercase.
fn is_channel_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(['C', 'G', 'D'])
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn record(
    inner: &Arc<Inner>,
    path: String,
    headers: &HeaderMap,
    body: &Bytes,
    reply: &dyn std::fmt::Debug,
    ts: Option<String>,
) {
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    inner.received.lock().unwrap().push(Received {
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        at: Instant::now(),
        reply: format!("{reply:?}"),
        ts,
    });
    inner.arrived.notify_waiters();
}

/// The reply to a request on `path` after the set latency; never, for a hung path (recorded
/// as such).
async fn answer_or_hang(
    inner: &Arc<Inner>,
    path: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    if inner.hung.lock().unwrap().contains(&path) {
        record(inner, path, headers, body, &Hung, None);
        return std::future::pending().await;
    }
    let reply = answer(inner, path, headers, body);
    let latency = *inner.latency.lock().unwrap();
    tokio::time::sleep(latency).await;
    reply
}

async fn webhook(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = answer_or_hang(&inner, format!("hooks/{name}"), &headers, &body).await;
    match reply {
        Reply::Ok => (StatusCode::OK, "ok").into_response(),
        Reply::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            "rate_limited",
        )
            .into_response(),
        Reply::ServerError => {
            (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").into_response()
        }
        Reply::SlackError(error) => (StatusCode::NOT_FOUND, error).into_response(),
    }
}

async fn web_api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (reply, ts) = answer_with_ts(&inner, format!("api/{method}"), &headers, &body);
    let latency = *inner.latency.lock().unwrap();
    tokio::time::sleep(latency).await;
    match reply {
        Reply::Ok => {
            // chat.update answers the ts it was given.
            let ts = ts.or_else(|| {
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["ts"]
                    .as_str()
                    .map(str::to_string)
            });
            let asked = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["channel"]
                .as_str()
                .map(FakeSlack::channel_id)
                .unwrap_or_default();
            axum::Json(json!({"ok": true, "ts": ts, "channel": asked})).into_response()
        }
        failure => web_api_failure(failure),
    }
}

/// How the Web API answers a request it does not accept.
fn web_api_failure(reply: Reply) -> Response {
    match reply {
        Reply::Ok => unreachable!("an accepted request is answered by its handler"),
        Reply::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            axum::Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response(),
        Reply::ServerError => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Reply::SlackError(error) => {
            axum::Json(json!({"ok": false, "error": error})).into_response()
        }
    }
}

/// `users.info`: the user asked for (`?user=` or a form body's `user`), from the users of
/// [`FakeSlack::add_user`]; recorded as `api/users.info` with the body `{"user": ID}`.
async fn users_info(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = |raw: &[u8]| {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
            .unwrap_or_default()
            .into_iter()
            .find_map(|(k, v)| (k == "user").then_some(v))
    };
    let user = fields(query.unwrap_or_default().as_bytes()).or_else(|| fields(&body));
    let asked = Bytes::from(json!({ "user": user }).to_string());
    let reply = answer(&inner, "api/users.info".into(), &headers, &asked);
    let latency = *inner.latency.lock().unwrap();
    tokio::time::sleep(latency).await;
    if !matches!(reply, Reply::Ok) {
        return web_api_failure(reply);
    }
    let known = user.and_then(|id| inner.users.lock().unwrap().get(&id).cloned());
    match known {
        Some(user) => axum::Json(json!({"ok": true, "user": user})).into_response(),
        None => axum::Json(json!({"ok": false, "error": "user_not_found"})).into_response(),
    }
}

/// A click's `response_url`: records the JSON posted to `respond/{id}` and answers like
/// Slack (`{"ok":true}`, or `{"ok":false,"error":…}` with 404 when refused).
async fn respond(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = answer_or_hang(&inner, format!("respond/{id}"), &headers, &body).await;
    match reply {
        Reply::Ok => axum::Json(json!({"ok": true})).into_response(),
        Reply::SlackError(error) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error": error})),
        )
            .into_response(),
        other => web_api_failure(other),
    }
}

/// The fake's click-side endpoints, through Sluice's own client.
// The imports are inside the test: the benchmark compiles this file too, without its tests.
#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn users_info_and_response_urls_answer_like_slack() {
        use std::time::Duration;

        use serde_json::json;
        use sluice::slack::transport::{Refusal, Retry, SendOutcome, SlackClient, SlackUser};

        use super::{FakeSlack, Reply};

        let fake = FakeSlack::start().await;
        fake.add_user("U1", "ada", "Ada Lovelace", Some("ada@example.com"));
        fake.add_user("U2", "grace", "Grace Hopper", None);
        let client = SlackClient::new(Duration::from_secs(5));
        let api = fake.api_base();
        assert_eq!(
            client.user_info(&api, "xoxb-1", "U1").await,
            Ok(SlackUser {
                email: Some("ada@example.com".into()),
                real_name: Some("Ada Lovelace".into()),
                name: "ada".into(),
            })
        );
        assert_eq!(
            client.user_info(&api, "xoxb-1", "U2").await.unwrap().email,
            None
        );
        assert_eq!(
            client.user_info(&api, "xoxb-1", "U3").await,
            Err(Retry::Never(Refusal::new(
                "user_not_found",
                "user_not_found"
            )))
        );
        fake.script([Reply::ServerError]);
        assert!(matches!(
            client.user_info(&api, "xoxb-1", "U1").await,
            Err(Retry::Backoff(_))
        ));
        let asked = fake.requests_to("api/users.info");
        assert_eq!(asked.len(), 4);
        assert_eq!(asked[0].body, json!({"user": "U1"}));
        assert_eq!(asked[0].authorization.as_deref(), Some("Bearer xoxb-1"));

        let reply = json!({"response_type": "ephemeral", "text": "done"});
        let url = fake.response_url("click-1");
        let posted = SendOutcome::Posted {
            ts: None,
            channel: None,
        };
        assert_eq!(client.respond(&url, &reply).await, posted);
        fake.refuse("respond/click-1", "expired_url");
        assert_eq!(
            client.respond(&url, &reply).await,
            SendOutcome::Failed(Retry::Never(Refusal::new("expired_url", "expired_url")))
        );
        assert_eq!(fake.responded("click-1"), [reply.clone(), reply]);
        assert!(fake.responded("click-2").is_empty());
    }
}
