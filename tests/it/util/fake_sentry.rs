//! A fake Sentry web API on port 0, for the buttons: it records every request and answers like
//! Sentry — a change of an issue (`PUT /api/0/organizations/{org}/issues/{id}/`) with the
//! whole issue as it now is, the members list (`GET …/members/?query=email:…`) from the
//! members the test added, a comment (`POST …/issues/{id}/comments/`) with `201` — unless
//! told to fail: 5xx, 429, 401, 403 (with Sentry's `detail`), 404, or never answer, for every
//! path under a prefix, until [`FakeSentry::heal`].
//!
//! Like Sentry, it refuses a request without `Authorization: Bearer …` (401), reports an issue
//! archived for a while by when the archive ends (`statusDetails.ignoreUntil`, on the clock
//! it was started with), and refuses to assign an issue to a user who is not a member (400).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice::clock::Clock;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the fake fails requests under a path prefix ([`FakeSentry::fail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 {"detail":"Internal Error"}`: Sentry down.
    ServerError,
    /// `429` with `Retry-After: 1`.
    RateLimited,
    /// `401 {"detail":"Invalid token"}`: a revoked token.
    Unauthorized,
    /// `403 {"detail":"You do not have permission to perform this action."}`: a token
    /// without the scope.
    Forbidden,
    /// `404 {"detail":"The requested resource does not exist"}`: a deleted issue.
    NotFound,
    /// Accepts the request and never answers.
    Hang,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct SentryRequest {
    /// `PUT`, `GET`, `POST`.
    pub method: String,
    /// `/api/0/organizations/acme/issues/42/`.
    pub path: String,
    /// The raw query string (`query=email%3Aada%40example.com`), if any.
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body (`Null` when there is none).
    pub body: Value,
    /// When it arrived, on Tokio's clock.
    pub at: Instant,
    /// The status answered; `None` for a request left hanging.
    pub status: Option<u16>,
}

/// A member of the fake organization.
#[derive(Debug, Clone)]
struct Member {
    email: String,
    user_id: String,
    name: String,
}

struct Inner {
    clock: Clock,
    received: Mutex<Vec<SentryRequest>>,
    arrived: Notify,
    /// Path prefixes and how they fail; the latest matching one wins.
    faults: Mutex<Vec<(String, Fault)>>,
    members: Mutex<Vec<Member>>,
    /// Issues by id, as Sentry would serialize them now.
    issues: Mutex<HashMap<String, Value>>,
    comments: Mutex<u64>,
}

/// Handle to a running fake Sentry.
#[derive(Clone)]
pub struct FakeSentry {
    inner: Arc<Inner>,
    base: String,
}

impl FakeSentry {
    /// Starts the fake on a free loopback port, on the system's clock.
    pub async fn start() -> Self {
        Self::start_on_clock(Clock::system()).await
    }

    /// Starts the fake on `clock` (the end of a timed archive is reported on it).
    pub async fn start_on_clock(clock: Clock) -> Self {
        let inner = Arc::new(Inner {
            clock,
            received: Mutex::default(),
            arrived: Notify::new(),
            faults: Mutex::default(),
            members: Mutex::default(),
            issues: Mutex::default(),
            comments: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { inner, base }
    }

    /// `http://127.0.0.1:PORT`: the `sentry.api_base`.
    pub fn base(&self) -> String {
        self.base.clone()
    }

    /// Adds a member of the organization (any organization slug is the fake's).
    pub fn add_member(&self, email: &str, user_id: &str, name: &str) {
        self.inner.members.lock().unwrap().push(Member {
            email: email.to_string(),
            user_id: user_id.to_string(),
            name: name.to_string(),
        });
    }

    /// Fails every request whose path starts with `path_prefix` (`/api/0/` for all) with
    /// `fault`, until [`heal`](Self::heal). The latest matching fault wins.
    pub fn fail(&self, path_prefix: &str, fault: Fault) {
        self.inner
            .faults
            .lock()
            .unwrap()
            .push((path_prefix.to_string(), fault));
    }

    /// Answers normally again, everywhere. Requests left hanging stay hung.
    pub fn heal(&self) {
        self.inner.faults.lock().unwrap().clear();
    }

    /// Issue `id` as the fake would answer it now (`None` until a request changed it).
    pub fn issue(&self, id: &str) -> Option<Value> {
        self.inner.issues.lock().unwrap().get(id).cloned()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<SentryRequest> {
        self.inner.received.lock().unwrap().clone()
    }

    /// The requests whose path ends with `path_suffix` (`/issues/42/`, `/comments/`,
    /// `/members/`).
    pub fn requests_to(&self, path_suffix: &str) -> Vec<SentryRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(path_suffix))
            .collect()
    }

    /// Waits until at least `n` requests arrived, whatever the answer; panics after `timeout`
    /// of real time (Tokio's clock may be paused).
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<SentryRequest> {
        self.wait_until(timeout, |f| f.requests().len() >= n).await;
        self.requests()
    }

    /// Waits until at least `n` requests to paths ending with `path_suffix` arrived; panics
    /// after `timeout` of real time.
    pub async fn wait_requests_to(
        &self,
        path_suffix: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<SentryRequest> {
        self.wait_until(timeout, |f| f.requests_to(path_suffix).len() >= n)
            .await;
        self.requests_to(path_suffix)
    }

    /// Waits for `done`, looking again at each request that arrives (and every 100 ms);
    /// panics after `timeout` of real time.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            if done(self) {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                panic!(
                    "fake Sentry: condition not met within {timeout:?}; received {:#?}",
                    self.requests()
                );
            }
            tokio::select! {
                _ = arrived => {}
                _ = super::real_pause(left.min(Duration::from_millis(100))) => {}
            }
        }
    }
}

/// Every request: recorded, then failed as told, or answered like Sentry.
async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = SentryRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
        status: None,
    };
    let fault = inner
        .faults
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(prefix, _)| request.path.starts_with(prefix.as_str()))
        .map(|(_, fault)| *fault);
    if fault == Some(Fault::Hang) {
        record(&inner, request);
        return std::future::pending().await;
    }
    let (status, answer) = match fault {
        Some(fault) => failure(fault),
        None => answer(&inner, &request, &query),
    };
    request.status = Some(status.as_u16());
    record(&inner, request);
    let mut response = (status, axum::Json(answer)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

fn record(inner: &Inner, request: SentryRequest) {
    inner.received.lock().unwrap().push(request);
    inner.arrived.notify_waiters();
}

/// The answer to a fault.
fn failure(fault: Fault) -> (StatusCode, Value) {
    let (status, detail) = match fault {
        Fault::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "Internal Error"),
        Fault::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "You are attempting to use this endpoint too frequently. Limit is 40 requests in 1 seconds",
        ),
        Fault::Unauthorized => (StatusCode::UNAUTHORIZED, "Invalid token"),
        Fault::Forbidden => (
            StatusCode::FORBIDDEN,
            "You do not have permission to perform this action.",
        ),
        Fault::NotFound => (
            StatusCode::NOT_FOUND,
            "The requested resource does not exist",
        ),
        Fault::Hang => unreachable!("a hung request is never answered"),
    };
    (status, json!({ "detail": detail }))
}

/// Sentry's answer to a request no fault touches.
fn answer(
    inner: &Inner,
    request: &SentryRequest,
    query: &HashMap<String, String>,
) -> (StatusCode, Value) {
    if !request
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer ") && a.len() > "Bearer ".len())
    {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"detail": "Authentication credentials were not provided."}),
        );
    }
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("PUT", ["api", "0", "organizations", _, "issues", id]) => {
            update_issue(inner, id, &request.body)
        }
        ("POST", ["api", "0", "organizations", _, "issues", id, "comments"]) => {
            let n = {
                let mut n = inner.comments.lock().unwrap();
                *n += 1;
                *n
            };
            (
                StatusCode::CREATED,
                json!({
                    "id": n.to_string(), "type": "note", "issue": id,
                    "data": {"text": request.body["text"]},
                    "dateCreated": iso(inner.clock.now_ms()), "user": null,
                }),
            )
        }
        ("GET", ["api", "0", "organizations", _, "members"]) => {
            (StatusCode::OK, members(inner, query.get("query")))
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({"detail": "The requested resource does not exist"}),
        ),
    }
}

/// `PUT …/issues/{id}/`: applies the change and answers with the issue as it now is.
fn update_issue(inner: &Inner, id: &str, asked: &Value) -> (StatusCode, Value) {
    let assignee = match asked.get("assignedTo") {
        None => None,
        Some(Value::Null) => Some(Value::Null),
        Some(Value::String(s)) if s.is_empty() => Some(Value::Null),
        Some(to) => match assigned_member(inner, to) {
            Some(member) => Some(member),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"assignedTo": ["Unknown actor input"]}),
                );
            }
        },
    };
    let mut issues = inner.issues.lock().unwrap();
    let issue = issues.entry(id.to_string()).or_insert_with(|| {
        json!({
            "id": id, "shortId": format!("CHECKOUT-{id}"), "title": "Error: boom",
            "status": "unresolved", "substatus": "ongoing", "statusDetails": {},
            "assignedTo": null, "project": {"id": "4505", "slug": "checkout"},
        })
    });
    if let Some(status) = asked.get("status").and_then(Value::as_str) {
        let (status, substatus, details) = status_of(status, asked, inner.clock.now_ms());
        issue["status"] = json!(status);
        issue["substatus"] = substatus;
        issue["statusDetails"] = details;
    }
    if let Some(assignee) = assignee {
        issue["assignedTo"] = assignee;
    }
    (StatusCode::OK, issue.clone())
}

/// What Sentry's issue serializer reports after a status change: `status`, `substatus`,
/// `statusDetails` (an archive for a while by its end, `ignoreUntil`).
fn status_of(status: &str, asked: &Value, now_ms: i64) -> (&'static str, Value, Value) {
    let details = &asked["statusDetails"];
    match status {
        "resolved" | "resolvedInNextRelease" => {
            let next = status == "resolvedInNextRelease" || details["inNextRelease"] == true;
            let details = if next {
                json!({"inNextRelease": true, "actor": null})
            } else {
                json!({})
            };
            ("resolved", Value::Null, details)
        }
        "ignored" => {
            let snooze = |count: Value, until: Value| {
                json!({"ignoreCount": count, "ignoreUntil": until, "ignoreUserCount": null,
                       "ignoreUserWindow": null, "ignoreWindow": null, "actor": null})
            };
            if let Some(minutes) = details["ignoreDuration"].as_i64() {
                let until = iso(now_ms + minutes * 60_000);
                (
                    "ignored",
                    json!("archived_until_condition_met"),
                    snooze(Value::Null, json!(until)),
                )
            } else if let Some(count) = details["ignoreCount"].as_u64() {
                (
                    "ignored",
                    json!("archived_until_condition_met"),
                    snooze(json!(count), Value::Null),
                )
            } else {
                let substatus = asked["substatus"]
                    .as_str()
                    .unwrap_or("archived_forever")
                    .to_string();
                ("ignored", json!(substatus), json!({}))
            }
        }
        _ => ("unresolved", json!("ongoing"), json!({})),
    }
}

/// The member `assignedTo: "user:ID"` names, serialized as Sentry's `assignedTo`.
fn assigned_member(inner: &Inner, to: &Value) -> Option<Value> {
    let user_id = to.as_str()?.strip_prefix("user:")?;
    let members = inner.members.lock().unwrap();
    let m = members.iter().find(|m| m.user_id == user_id)?;
    Some(json!({"type": "user", "id": m.user_id, "name": m.name, "email": m.email}))
}

/// `GET …/members/`: the members, only those with the email of a `query=email:…`.
fn members(inner: &Inner, query: Option<&String>) -> Value {
    let email = query.and_then(|q| q.strip_prefix("email:"));
    let members = inner.members.lock().unwrap();
    let list: Vec<Value> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| email.is_none_or(|e| m.email.eq_ignore_ascii_case(e)))
        .map(|(i, m)| {
            json!({
                "id": (1000 + i).to_string(), "email": m.email, "name": m.name,
                "role": "member", "orgRole": "member", "pending": false, "expired": false,
                "user": {
                    "id": m.user_id, "name": m.name, "username": m.email, "email": m.email,
                    "emails": [{"id": m.user_id, "email": m.email, "is_verified": true}],
                },
            })
        })
        .collect();
    Value::Array(list)
}

/// An RFC 3339 UTC time, as Sentry writes them.
fn iso(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .unwrap()
        .to_string()
}

#[cfg(test)]
mod tests {
    // The benchmark compiles this kit too, without running its tests: every `use` is inside
    // a test, so that none is unused there.

    /// 2024-05-01 14:02:00 UTC.
    const NOW_MS: i64 = 1_714_572_120_000;

    /// Sluice's own Sentry client, pointed at `fake`.
    fn api(fake: &super::FakeSentry, timeout: &str) -> sluice::sentry::SentryApi {
        let text = format!(
            "default_channel = \"c\"\n[channels.c]\nconsole = true\n[sentry]\n\
             api_token = \"sntrys_fake\"\napi_base = \"{}\"\napi_timeout = \"{timeout}\"\n",
            fake.base()
        );
        let config =
            sluice::config::Config::parse(&text, std::path::Path::new("routes.toml"), &|_| None)
                .unwrap();
        let counters = std::sync::Arc::new(sluice::metrics::Registry::default());
        sluice::sentry::SentryApi::from_config(&config.sentry, counters).unwrap()
    }

    /// The fake answers Sluice's client the way Sentry does.
    #[tokio::test]
    async fn the_fake_answers_like_sentry() {
        use std::time::Duration;

        use sluice::clock::Clock;
        use sluice::issue::{Archive, IssueAction, Status};
        use sluice::sentry::{ApiError, Member};

        use super::FakeSentry;

        let fake = FakeSentry::start_on_clock(Clock::starting_at(NOW_MS)).await;
        fake.add_member("ada@example.com", "7", "Ada Lovelace");
        let api = api(&fake, "300ms");
        let archive = IssueAction::Archive {
            archive: Archive::Minutes { minutes: 60 },
        };
        let state = api.update_issue("acme", "42", &archive).await.unwrap();
        // Sentry reports a timed archive by its end.
        assert!(matches!(
            state.status,
            Status::Archived {
                archive: Archive::UntilTime { until_ms }
            } if (NOW_MS + 3_600_000..NOW_MS + 3_660_000).contains(&until_ms)
        ));
        let member = api.find_member("acme", "ADA@example.com").await.unwrap();
        assert_eq!(
            member,
            Some(Member {
                user_id: "7".into(),
                name: "Ada Lovelace".into()
            })
        );
        let state = api.assign("acme", "42", "7").await.unwrap();
        assert_eq!(state.assignee.as_deref(), Some("Ada Lovelace"));
        assert_eq!(fake.issue("42").unwrap()["assignedTo"]["id"], "7");
        assert!(matches!(
            api.assign("acme", "42", "99").await,
            Err(ApiError::Refused { status: 400, .. })
        ));
        api.comment("acme", "42", "Archived from Slack by Ada")
            .await
            .unwrap();
        let comments = fake
            .wait_requests_to("/comments/", 1, Duration::from_secs(5))
            .await;
        assert_eq!(comments[0].body["text"], "Archived from Slack by Ada");
        assert_eq!(comments[0].status, Some(201));
        let members = fake.requests_to("/members/");
        assert_eq!(members[0].method, "GET");
        assert_eq!(
            members[0].query.as_deref(),
            Some("query=email%3AADA%40example.com")
        );
        let first = &fake.requests()[0];
        assert_eq!(first.path, "/api/0/organizations/acme/issues/42/");
        assert_eq!(first.authorization.as_deref(), Some("Bearer sntrys_fake"));
        assert!(first.at <= comments[0].at);
    }

    /// The fake fails as told, under a path prefix, until healed.
    #[tokio::test]
    async fn the_fake_fails_as_told_until_healed() {
        use std::time::Duration;

        use sluice::issue::{IssueAction, Status};
        use sluice::sentry::ApiError;

        use super::{FakeSentry, Fault};

        let fake = FakeSentry::start().await;
        let api = api(&fake, "300ms");
        for (fault, status) in [
            (Fault::ServerError, 500),
            (Fault::RateLimited, 429),
            (Fault::Unauthorized, 401),
            (Fault::Forbidden, 403),
            (Fault::NotFound, 404),
        ] {
            fake.fail("/api/0/organizations/acme/issues/", fault);
            let err = api
                .update_issue("acme", "42", &IssueAction::Resolve)
                .await
                .unwrap_err();
            let retried = matches!(err, ApiError::Retry(_));
            assert_eq!(retried, matches!(status, 429 | 500), "{fault:?}: {err:?}");
            assert_eq!(fake.requests().last().unwrap().status, Some(status));
        }
        let forbidden = {
            fake.fail("/api/0/", Fault::Forbidden);
            api.comment("acme", "42", "x").await.unwrap_err()
        };
        assert_eq!(
            forbidden.to_string(),
            "the integration lacks permission (403): You do not have permission to perform this action."
        );
        fake.fail("/api/0/", Fault::Hang);
        assert!(matches!(
            api.update_issue("acme", "42", &IssueAction::Resolve).await,
            Err(ApiError::Retry(_))
        ));
        assert_eq!(fake.requests().last().unwrap().status, None);
        fake.heal();
        let state = api
            .update_issue("acme", "42", &IssueAction::Resolve)
            .await
            .unwrap();
        assert_eq!(
            state.status,
            Status::Resolved {
                in_next_release: false
            }
        );
        let all = fake.wait_requests(1, Duration::from_secs(1)).await;
        assert_eq!(all.len(), fake.requests().len());
    }

    #[tokio::test]
    async fn a_request_without_a_token_is_refused() {
        use serde_json::json;

        use super::FakeSentry;

        let fake = FakeSentry::start().await;
        sluice::slack::transport::install_crypto_provider();
        let response = reqwest::Client::new()
            .put(format!(
                "{}/api/0/organizations/acme/issues/1/",
                fake.base()
            ))
            .json(&json!({"status": "resolved"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(fake.requests()[0].authorization, None);
    }
}
