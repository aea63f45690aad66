//! Sentry's web API: the calls behind the buttons of Slack messages. Change an issue's status,
//! assign it, comment on it, and find the member behind an email address, with the token of
//! Sentry's internal integration (`sentry.api_token`, sent as `Authorization: Bearer …`).
//!
//! Every answer is classified the way the delivery worker classifies Slack's: [`ApiError::Retry`]
//! for what may pass (5xx, 429, a timeout, a connection error), [`ApiError::Refused`] for what
//! will not (401, 403, 404, any other 4xx or a redirect) with a short reason fit to show the
//! person who clicked. Each request is counted in `sluice_sentry_api_requests_total{endpoint,
//! status}` (see [`crate::metrics`]). The token never appears in a log line or an error.
//!
//! Endpoints (all under `{sentry.api_base}/api/0/organizations/{org}/`):
//!
//! | call | request | `endpoint` label |
//! |---|---|---|
//! | [`SentryApi::update_issue`] | `PUT issues/{id}/` `{"status":…}` | `issue_update` |
//! | [`SentryApi::assign`] | `PUT issues/{id}/` `{"assignedTo":"user:{id}"}` | `issue_update` |
//! | [`SentryApi::comment`] | `POST issues/{id}/comments/` `{"text":…}` | `comment` |
//! | [`SentryApi::find_member`] | `GET members/?query=email:{email}` | `members` |
//!
//! Sentry answers a change of one issue with the whole issue as it now is, so the state the
//! calls return is Sentry's own, read like the issue of a webhook (`status`, `substatus`,
//! `statusDetails`, `assignedTo`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::parse::{assignee, reported_status};
use crate::config::{Secret, SentryConfig};
use crate::issue::{Archive, IssueAction, IssueState, Status};
use crate::metrics::Registry;

/// Longest piece of Sentry's `detail` (in chars) kept in a refusal's reason.
const MAX_DETAIL_CHARS: usize = 200;

/// A client of Sentry's web API for one installation (one token, one base address).
#[derive(Debug, Clone)]
pub struct SentryApi {
    http: reqwest::Client,
    /// `sentry.api_base`, parsed.
    base: Url,
    /// `sentry.api_token`; its `Debug` is redacted, so this struct's is safe to log.
    token: Secret,
    /// How long one request may take (`sentry.api_timeout`), for the reason of a timeout.
    timeout: Duration,
    counters: Arc<Registry>,
}

/// A member of a Sentry organization, found by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's *user* id (`user.id`, what `assignedTo: "user:ID"` takes), not the
    /// membership's id.
    pub user_id: String,
    /// Their name (`user.name`, else the member's `name`, else the email).
    pub name: String,
}

/// Why a call did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// It may go through later: Sentry answered 5xx or 429, did not answer within
    /// `sentry.api_timeout`, or could not be reached. The text says which.
    #[error("{0}")]
    Retry(String),
    /// It will not go through as it is: retrying would not help.
    #[error("{reason}")]
    Refused {
        /// Sentry's HTTP status; 0 when Sluice refused it before asking Sentry (a call this
        /// client does not make, a token that cannot be sent).
        status: u16,
        /// A short reason for the person who clicked: `Sentry refused the token (401)`,
        /// `the integration lacks permission (403): You do not have permission to perform this
        /// action.`, `issue not found (404)`; Sentry's `detail` follows when it sent one,
        /// cut to 200 chars.
        reason: String,
    },
}

/// The API endpoint a request goes to: the `endpoint` label of the metric, and what a 404
/// means.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    IssueUpdate,
    Members,
    Comment,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::IssueUpdate => "issue_update",
            Endpoint::Members => "members",
            Endpoint::Comment => "comment",
        }
    }

    fn not_found(self) -> &'static str {
        match self {
            Endpoint::IssueUpdate | Endpoint::Comment => "issue not found (404)",
            Endpoint::Members => "organization not found (404)",
        }
    }
}

impl SentryApi {
    /// A client for `[sentry]`, counting its requests in `counters`; `None` without an
    /// `api_token` (no Sentry button is offered then). Requests give up after `api_timeout`
    /// and do not follow redirects (a redirect is refused with a reason that names
    /// `sentry.api_base`: following one would drop the token or turn a `PUT` into a `GET`).
    pub fn from_config(config: &SentryConfig, counters: Arc<Registry>) -> Option<SentryApi> {
        let token = config
            .api_token
            .clone()
            .filter(|t| !t.expose().trim().is_empty())?;
        let base = match Url::parse(&config.api_base) {
            Ok(base) => base,
            Err(err) => {
                tracing::error!(error = %err, "sentry.api_base is not a URL; Sentry buttons are off");
                return None;
            }
        };
        crate::slack::transport::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.api_timeout)
            .connect_timeout(config.api_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        Some(SentryApi {
            http,
            base,
            token,
            timeout: config.api_timeout,
            counters,
        })
    }

    /// Changes issue `issue_id`'s status as `action` asks: `PUT issues/{id}/` with
    ///
    /// - `Resolve`: `{"status":"resolved"}`
    /// - `ResolveInNextRelease`: `{"status":"resolved","statusDetails":{"inNextRelease":true}}`
    /// - `Unresolve`: `{"status":"unresolved"}`
    /// - `Archive`: `{"status":"ignored", …}` with `"substatus":"archived_until_escalating"`,
    ///   `"statusDetails":{"ignoreDuration":MINUTES}`, `"statusDetails":{"ignoreCount":N}` or
    ///   `"substatus":"archived_forever"`.
    ///
    /// Returns the state Sentry answers with: its status (else the one `action` implies) and
    /// its assignee; `by` and `at_ms` are left to the caller. `AssignToMe` ([`assign`]), the
    /// mutes (Sluice's own) and `Archive::UntilTime` (Sentry takes a length, not an end) are
    /// refused with status 0, without a request.
    ///
    /// [`assign`]: SentryApi::assign
    pub async fn update_issue(
        &self,
        org: &str,
        issue_id: &str,
        action: &IssueAction,
    ) -> Result<IssueState, ApiError> {
        let Some((body, implied)) = status_change(action) else {
            return Err(ApiError::Refused {
                status: 0,
                reason: format!("`{}` is not a change Sentry's API makes", action.label()),
            });
        };
        let url = self.url(org, &["issues", issue_id])?;
        let answer = self
            .send(Endpoint::IssueUpdate, Method::PUT, url, Some(&body))
            .await?;
        Ok(answered_state(answer.as_ref(), implied))
    }

    /// Assigns issue `issue_id` to the Sentry user `user_id` (a [`Member::user_id`]):
    /// `PUT issues/{id}/` `{"assignedTo":"user:{user_id}"}`. Returns the state Sentry answers
    /// with (its status, else unresolved; its assignee).
    pub async fn assign(
        &self,
        org: &str,
        issue_id: &str,
        user_id: &str,
    ) -> Result<IssueState, ApiError> {
        let url = self.url(org, &["issues", issue_id])?;
        let body = json!({ "assignedTo": format!("user:{user_id}") });
        let answer = self
            .send(Endpoint::IssueUpdate, Method::PUT, url, Some(&body))
            .await?;
        Ok(answered_state(answer.as_ref(), Status::Unresolved))
    }

    /// Adds a comment to issue `issue_id`: `POST issues/{id}/comments/` `{"text":…}`.
    pub async fn comment(&self, org: &str, issue_id: &str, text: &str) -> Result<(), ApiError> {
        let url = self.url(org, &["issues", issue_id, "comments"])?;
        let body = json!({ "text": text });
        self.send(Endpoint::Comment, Method::POST, url, Some(&body))
            .await?;
        Ok(())
    }

    /// The member of `org` with `email` (compared without regard to case, against the
    /// member's email, the user's and the user's other verified addresses): `GET members/`
    /// with `query=email:{email}`. `None` when no member has it, or only an invitation not yet
    /// accepted (it has no user to assign to).
    pub async fn find_member(&self, org: &str, email: &str) -> Result<Option<Member>, ApiError> {
        let mut url = self.url(org, &["members"])?;
        url.query_pairs_mut()
            .append_pair("query", &format!("email:{email}"));
        let answer = self.send(Endpoint::Members, Method::GET, url, None).await?;
        let members = answer
            .as_ref()
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(members.iter().find_map(|m| member_with(m, email)))
    }

    /// `{base}/api/0/organizations/{org}/{segments…}/`, each segment percent-encoded.
    fn url(&self, org: &str, segments: &[&str]) -> Result<Url, ApiError> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.path_segments_mut()
            .map_err(|()| ApiError::Refused {
                status: 0,
                reason: "sentry.api_base is not a web address".into(),
            })?
            .pop_if_empty()
            .extend(["api", "0", "organizations", org])
            .extend(segments)
            .push("");
        Ok(url)
    }

    /// Sends one request, counts it, and classifies the answer. A success's body is handed
    /// back when it is JSON (`None` otherwise: the change was made all the same).
    async fn send(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Err(self.unanswered(endpoint, err)),
        };
        let status = response.status();
        self.counters
            .sentry_api_request(endpoint.label(), status.as_str());
        let body = response
            .bytes()
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        if status.is_success() {
            Ok(body)
        } else {
            Err(refusal(endpoint, status, body.as_ref()))
        }
    }

    /// A request Sentry did not answer: counted as `timeout` or `error`, retried (unless it
    /// could not even be built, which no retry mends).
    fn unanswered(&self, endpoint: Endpoint, err: reqwest::Error) -> ApiError {
        let err = err.without_url();
        if err.is_builder() {
            self.counters.sentry_api_request(endpoint.label(), "error");
            return ApiError::Refused {
                status: 0,
                reason: "the request could not be built (is sentry.api_token one line?)".into(),
            };
        }
        if err.is_timeout() {
            self.counters
                .sentry_api_request(endpoint.label(), "timeout");
            return ApiError::Retry(format!(
                "Sentry did not answer within {}",
                crate::config::format_duration(self.timeout)
            ));
        }
        self.counters.sentry_api_request(endpoint.label(), "error");
        let kind = if err.is_connect() {
            "could not connect to Sentry"
        } else {
            "the request to Sentry failed"
        };
        ApiError::Retry(format!("{kind}: {err}"))
    }
}

/// The body of a status change and the status it implies; `None` for what is not one.
fn status_change(action: &IssueAction) -> Option<(Value, Status)> {
    Some(match *action {
        IssueAction::Resolve => (
            json!({"status": "resolved"}),
            Status::Resolved {
                in_next_release: false,
            },
        ),
        IssueAction::ResolveInNextRelease => (
            json!({"status": "resolved", "statusDetails": {"inNextRelease": true}}),
            Status::Resolved {
                in_next_release: true,
            },
        ),
        IssueAction::Unresolve => (json!({"status": "unresolved"}), Status::Unresolved),
        IssueAction::Archive { archive } => {
            let body = match archive {
                Archive::Escalating => {
                    json!({"status": "ignored", "substatus": "archived_until_escalating"})
                }
                Archive::Minutes { minutes } => {
                    json!({"status": "ignored", "statusDetails": {"ignoreDuration": minutes}})
                }
                Archive::Count { count } => {
                    json!({"status": "ignored", "statusDetails": {"ignoreCount": count}})
                }
                Archive::Forever => {
                    json!({"status": "ignored", "substatus": "archived_forever"})
                }
                Archive::UntilTime { .. } => return None,
            };
            (body, Status::Archived { archive })
        }
        IssueAction::AssignToMe | IssueAction::Mute { .. } | IssueAction::Unmute => return None,
    })
}

/// The state in Sentry's answer to a change (the issue as it now is): its status, else
/// `implied`; its assignee.
fn answered_state(answer: Option<&Value>, implied: Status) -> IssueState {
    let answer = answer.filter(|a| a.is_object());
    IssueState {
        status: answer.and_then(reported_status).unwrap_or(implied),
        assignee: answer.and_then(|a| assignee(a.get("assignedTo"))),
        by: None,
        at_ms: None,
    }
}

/// The member `m` of a members list, if it has `email` and a user.
fn member_with(m: &Value, email: &str) -> Option<Member> {
    let user = m.get("user").filter(|u| u.is_object())?;
    let same = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(email.trim()))
    };
    let other_emails = user
        .get("emails")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let has = same(m.get("email"))
        || same(user.get("email"))
        || other_emails.iter().any(|e| same(e.get("email")));
    if !has {
        return None;
    }
    let user_id = match user.get("id")? {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let name = [user.get("name"), m.get("name")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::trim)
        .find(|n| !n.is_empty())
        .unwrap_or(email.trim())
        .to_owned();
    Some(Member { user_id, name })
}

/// The error of a non-2xx answer.
fn refusal(endpoint: Endpoint, status: StatusCode, body: Option<&Value>) -> ApiError {
    let code = status.as_u16();
    let detail = body.and_then(detail);
    let with_detail = |what: String| match &detail {
        Some(detail) => format!("{what}: {detail}"),
        None => what,
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return ApiError::Retry(with_detail("Sentry is rate limiting (429)".into()));
    }
    if status.is_server_error() {
        return ApiError::Retry(with_detail(format!("Sentry answered {code}")));
    }
    let what = match code {
        401 => "Sentry refused the token (401)".to_owned(),
        403 => "the integration lacks permission (403)".to_owned(),
        404 => endpoint.not_found().to_owned(),
        300..=399 => format!("Sentry answered a redirect ({code}): check sentry.api_base"),
        _ => format!("Sentry refused the request ({code})"),
    };
    ApiError::Refused {
        status: code,
        reason: with_detail(what),
    }
}

/// Sentry's explanation of an error: `detail` (a string, or an object with a `message`), on
/// one line, cut to [`MAX_DETAIL_CHARS`].
fn detail(body: &Value) -> Option<String> {
    let detail = body.get("detail")?;
    let text = detail
        .as_str()
        .or_else(|| detail.get("message").and_then(Value::as_str))?;
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return None;
    }
    Some(match line.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", line.get(..cut).unwrap_or_default()),
        None => line,
    })
}

/// The organization an issue's web page names: `https://{org}.sentry.io/issues/1/`,
/// `https://sentry.io/organizations/{org}/issues/1/`, a self-hosted
/// `https://sentry.example.com/organizations/{org}/issues/1/`, or an API address
/// (`…/api/0/organizations/{org}/…`, `…/api/0/projects/{org}/…`). Never a region host alone
/// (`sentry.io`, `www.`, `us.`, `de.sentry.io`); `None` when nothing names one, or the name is
/// not a slug (letters, digits, `-`, `_`).
pub fn org_from_issue_url(url: &str) -> Option<String> {
    let url = Url::parse(url.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let mut segments = url.path_segments()?.filter(|s| !s.is_empty());
    let in_path = match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("organizations"), Some(org), ..) => Some(org),
        (Some("api"), Some("0"), Some("organizations" | "projects"), Some(org)) => Some(org),
        _ => None,
    };
    if let Some(org) = in_path {
        return is_slug(org).then(|| org.to_owned());
    }
    let host = url.host_str()?;
    let org = host.strip_suffix(".sentry.io")?;
    let region = matches!(org, "www" | "us" | "de" | "eu");
    (!region && !org.contains('.') && is_slug(org)).then(|| org.to_owned())
}

/// Whether `s` is an organization slug: letters, digits, `-`, `_`.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method as HttpMethod, StatusCode as HttpStatus, Uri};
    use axum::response::{IntoResponse, Response};

    use super::*;

    const TOKEN: &str = "sntrys_test-token-value";

    /// One request the test server received.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        query: Option<String>,
        authorization: Option<String>,
        body: Value,
    }

    /// How the test server answers a request: a status and a JSON body, or never.
    type Answer = Option<(u16, Value)>;

    /// A Sentry stand-in on a free loopback port that records every request and answers
    /// with `reply`.
    async fn server(
        reply: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let reply = Arc::new(reply);
        let app = axum::Router::new().fallback(
            move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
                let log = log.clone();
                let reply = reply.clone();
                async move {
                    let request = Seen {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        query: uri.query().map(str::to_owned),
                        authorization: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    };
                    log.lock().unwrap().push(request.clone());
                    match reply(&request) {
                        Some((status, body)) => respond(status, body),
                        None => std::future::pending().await,
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, seen)
    }

    fn respond(status: u16, body: Value) -> Response {
        (HttpStatus::from_u16(status).unwrap(), axum::Json(body)).into_response()
    }

    fn config(base: &str, timeout: Duration) -> SentryConfig {
        let mut config = crate::config::Config::parse(
            "default_channel = \"c\"\n[channels.c]\nconsole = true\n",
            std::path::Path::new("routes.toml"),
            &|_| None,
        )
        .unwrap()
        .sentry;
        config.api_token = Some(Secret::new(TOKEN));
        config.api_base = base.to_owned();
        config.api_timeout = timeout;
        config
    }

    fn client(base: &str) -> (SentryApi, Arc<Registry>) {
        let counters = Arc::new(Registry::default());
        let api = SentryApi::from_config(&config(base, Duration::from_secs(5)), counters.clone())
            .expect("a token is configured");
        (api, counters)
    }

    /// Sentry's answer to a change: the issue as it now is, with the status asked for.
    fn issue_answer(request: &Seen) -> Answer {
        let asked = &request.body;
        let mut issue = json!({
            "id": "42", "shortId": "CHECKOUT-1", "status": "unresolved",
            "substatus": "ongoing", "statusDetails": {}, "assignedTo": null,
        });
        if let Some(status) = asked.get("status") {
            issue["status"] = status.clone();
            issue["substatus"] = asked.get("substatus").cloned().unwrap_or(Value::Null);
            issue["statusDetails"] = asked.get("statusDetails").cloned().unwrap_or(json!({}));
        }
        if let Some(to) = asked.get("assignedTo").and_then(Value::as_str) {
            let id = to.trim_start_matches("user:");
            issue["assignedTo"] = json!({"type": "user", "id": id, "name": "Ada Lovelace"});
        }
        Some((200, issue))
    }

    fn metrics(counters: &Registry) -> String {
        let mut out = String::new();
        counters.render(&mut out);
        out
    }

    #[tokio::test]
    async fn each_status_change_sends_sentry_its_request() {
        let (base, seen) = server(issue_answer).await;
        let (api, counters) = client(&base);
        let archived = |archive| Status::Archived { archive };
        let cases = [
            (
                IssueAction::Resolve,
                json!({"status": "resolved"}),
                Status::Resolved {
                    in_next_release: false,
                },
            ),
            (
                IssueAction::ResolveInNextRelease,
                json!({"status": "resolved", "statusDetails": {"inNextRelease": true}}),
                Status::Resolved {
                    in_next_release: true,
                },
            ),
            (
                IssueAction::Unresolve,
                json!({"status": "unresolved"}),
                Status::Unresolved,
            ),
            (
                IssueAction::Archive {
                    archive: Archive::Escalating,
                },
                json!({"status": "ignored", "substatus": "archived_until_escalating"}),
                archived(Archive::Escalating),
            ),
            (
                IssueAction::Archive {
                    archive: Archive::Minutes { minutes: 1440 },
                },
                json!({"status": "ignored", "statusDetails": {"ignoreDuration": 1440}}),
                archived(Archive::Minutes { minutes: 1440 }),
            ),
            (
                IssueAction::Archive {
                    archive: Archive::Count { count: 100 },
                },
                json!({"status": "ignored", "statusDetails": {"ignoreCount": 100}}),
                archived(Archive::Count { count: 100 }),
            ),
            (
                IssueAction::Archive {
                    archive: Archive::Forever,
                },
                json!({"status": "ignored", "substatus": "archived_forever"}),
                archived(Archive::Forever),
            ),
        ];
        for (i, (action, body, status)) in cases.iter().enumerate() {
            let state = api.update_issue("acme", "42", action).await.unwrap();
            assert_eq!(state.status, *status, "{action:?}");
            assert_eq!((state.by, state.at_ms), (None, None));
            let request = seen.lock().unwrap()[i].clone();
            assert_eq!(request.method, "PUT");
            assert_eq!(request.path, "/api/0/organizations/acme/issues/42/");
            assert_eq!(request.query, None);
            assert_eq!(
                request.authorization.as_deref(),
                Some("Bearer sntrys_test-token-value")
            );
            assert_eq!(request.body, *body, "{action:?}");
        }
        assert!(
            metrics(&counters).contains(
                "sluice_sentry_api_requests_total{endpoint=\"issue_update\",status=\"200\"} 7"
            ),
            "{}",
            metrics(&counters)
        );
    }

    #[tokio::test]
    async fn the_state_returned_is_sentrys() {
        // Sentry answers with the issue as it now is: a resolve that Sentry turned into a
        // resolve in the next release (a project setting), assigned to someone.
        let (base, _) = server(|_| {
            Some((
                200,
                json!({"status": "resolved", "statusDetails": {"inNextRelease": true},
                       "assignedTo": {"type": "team", "id": "3", "name": "payments"}}),
            ))
        })
        .await;
        let (api, _) = client(&base);
        let state = api
            .update_issue("acme", "42", &IssueAction::Resolve)
            .await
            .unwrap();
        assert_eq!(
            state,
            IssueState {
                status: Status::Resolved {
                    in_next_release: true
                },
                assignee: Some("#payments".into()),
                by: None,
                at_ms: None,
            }
        );
        // An answer that is not an issue: the state the change implies.
        let (base, _) = server(|_| Some((200, json!("ok")))).await;
        let (api, _) = client(&base);
        let state = api
            .update_issue(
                "acme",
                "42",
                &IssueAction::Archive {
                    archive: Archive::Count { count: 100 },
                },
            )
            .await
            .unwrap();
        assert_eq!(
            state.status,
            Status::Archived {
                archive: Archive::Count { count: 100 }
            }
        );
    }

    #[tokio::test]
    async fn assign_to_me_finds_the_member_by_email_then_assigns_the_user() {
        let (base, seen) = server(|request| {
            if request.method == "GET" {
                Some((
                    200,
                    json!([
                        {"id": "900", "email": "ada@example.com.evil", "name": "Not Ada",
                         "user": {"id": "8", "name": "Not Ada", "email": "ada@example.com.evil"}},
                        {"id": "901", "email": "Ada@Example.com", "name": "Ada",
                         "user": {"id": "7", "name": "Ada Lovelace", "email": "Ada@Example.com"}},
                    ]),
                ))
            } else {
                issue_answer(request)
            }
        })
        .await;
        let (api, counters) = client(&base);
        let member = api
            .find_member("acme", "ada@example.com")
            .await
            .unwrap()
            .expect("Ada is a member");
        assert_eq!(
            member,
            Member {
                user_id: "7".into(),
                name: "Ada Lovelace".into()
            }
        );
        let state = api.assign("acme", "42", &member.user_id).await.unwrap();
        assert_eq!(state.assignee.as_deref(), Some("Ada Lovelace"));
        assert_eq!(state.status, Status::Unresolved);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/api/0/organizations/acme/members/");
        assert_eq!(
            seen[0].query.as_deref(),
            Some("query=email%3Aada%40example.com")
        );
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some("Bearer sntrys_test-token-value")
        );
        assert_eq!(seen[1].method, "PUT");
        assert_eq!(seen[1].path, "/api/0/organizations/acme/issues/42/");
        assert_eq!(seen[1].body, json!({"assignedTo": "user:7"}));
        let text = metrics(&counters);
        assert!(
            text.contains(
                "sluice_sentry_api_requests_total{endpoint=\"members\",status=\"200\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn no_member_with_the_email_is_none() {
        let (base, _) = server(|_| {
            Some((
                200,
                json!([
                    // An invitation not yet accepted has no user to assign to.
                    {"id": "902", "email": "ada@example.com", "name": "ada@example.com",
                     "user": null, "pending": true},
                    {"id": "903", "email": "grace@example.com",
                     "user": {"id": "9", "name": "Grace", "email": "grace@example.com",
                              "emails": [{"id": "1", "email": "g@example.com", "is_verified": true}]}},
                ]),
            ))
        })
        .await;
        let (api, _) = client(&base);
        assert_eq!(
            api.find_member("acme", "ada@example.com").await.unwrap(),
            None
        );
        // A user's other address finds them too.
        assert_eq!(
            api.find_member("acme", "G@example.com").await.unwrap(),
            Some(Member {
                user_id: "9".into(),
                name: "Grace".into()
            })
        );
    }

    #[tokio::test]
    async fn comment_posts_the_text() {
        let (base, seen) = server(|_| Some((201, json!({"id": "1", "type": "note"})))).await;
        let (api, counters) = client(&base);
        api.comment("acme", "42", "Resolved from Slack by Ada Lovelace")
            .await
            .unwrap();
        let request = seen.lock().unwrap()[0].clone();
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            "/api/0/organizations/acme/issues/42/comments/"
        );
        assert_eq!(
            request.body,
            json!({"text": "Resolved from Slack by Ada Lovelace"})
        );
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer sntrys_test-token-value")
        );
        assert!(
            metrics(&counters).contains(
                "sluice_sentry_api_requests_total{endpoint=\"comment\",status=\"201\"} 1"
            )
        );
    }

    /// The error of one update against a server that answers `status` with `body`.
    async fn error_for(status: u16, body: Value) -> ApiError {
        let (base, _) = server(move |_| Some((status, body.clone()))).await;
        let (api, counters) = client(&base);
        let err = api
            .update_issue("acme", "42", &IssueAction::Resolve)
            .await
            .unwrap_err();
        let text = metrics(&counters);
        assert!(
            text.contains(&format!(
                "sluice_sentry_api_requests_total{{endpoint=\"issue_update\",status=\"{status}\"}} 1"
            )),
            "{text}"
        );
        assert!(!err.to_string().contains(TOKEN));
        err
    }

    #[tokio::test]
    async fn answers_are_classified_as_retry_or_refused() {
        assert_eq!(
            error_for(500, json!({"detail": "Internal Error"})).await,
            ApiError::Retry("Sentry answered 500: Internal Error".into())
        );
        assert_eq!(
            error_for(503, Value::Null).await,
            ApiError::Retry("Sentry answered 503".into())
        );
        assert_eq!(
            error_for(429, json!({"detail": "You are attempting to use this endpoint too frequently."}))
                .await,
            ApiError::Retry(
                "Sentry is rate limiting (429): You are attempting to use this endpoint too frequently."
                    .into()
            )
        );
        assert_eq!(
            error_for(
                403,
                json!({"detail": "You do not have permission to perform this action."})
            )
            .await,
            ApiError::Refused {
                status: 403,
                reason: "the integration lacks permission (403): You do not have permission to \
                         perform this action."
                    .into()
            }
        );
        assert_eq!(
            error_for(401, json!({"detail": "Invalid token"})).await,
            ApiError::Refused {
                status: 401,
                reason: "Sentry refused the token (401): Invalid token".into()
            }
        );
        assert_eq!(
            error_for(
                404,
                json!({"detail": "The requested resource does not exist"})
            )
            .await,
            ApiError::Refused {
                status: 404,
                reason: "issue not found (404): The requested resource does not exist".into()
            }
        );
        assert_eq!(
            error_for(409, Value::Null).await,
            ApiError::Refused {
                status: 409,
                reason: "Sentry refused the request (409)".into()
            }
        );
        assert_eq!(
            error_for(302, Value::Null).await,
            ApiError::Refused {
                status: 302,
                reason: "Sentry answered a redirect (302): check sentry.api_base".into()
            }
        );
        // A long detail on several lines: one line, cut.
        let long = format!("first\nsecond {}", "x".repeat(400));
        let ApiError::Refused { reason, .. } =
            error_for(400, json!({"detail": {"code": "bad", "message": long}})).await
        else {
            panic!()
        };
        assert!(reason.starts_with("Sentry refused the request (400): first second xxx"));
        assert!(reason.ends_with("x…"), "{reason}");
        assert_eq!(
            reason.chars().count(),
            "Sentry refused the request (400): ".len() + 201
        );
    }

    /// A Sentry that never answers is retried once `api_timeout` has passed. Real time: the
    /// client waits on a real socket, which Tokio's paused clock does not drive; the timeout is
    /// short, and only the classification is asserted, not the timing.
    #[tokio::test]
    async fn a_hanging_sentry_is_retried_after_the_timeout() {
        let (base, seen) = server(|_| None).await;
        let counters = Arc::new(Registry::default());
        let api =
            SentryApi::from_config(&config(&base, Duration::from_millis(200)), counters.clone())
                .unwrap();
        let err = api.comment("acme", "42", "hello").await.unwrap_err();
        assert_eq!(
            err,
            ApiError::Retry("Sentry did not answer within 200ms".into())
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "the request did arrive");
        assert!(metrics(&counters).contains(
            "sluice_sentry_api_requests_total{endpoint=\"comment\",status=\"timeout\"} 1"
        ));
    }

    #[tokio::test]
    async fn an_unreachable_sentry_is_retried() {
        // A port nothing listens on: bind one, then close it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let (api, counters) = client(&base);
        let err = api
            .find_member("acme", "ada@example.com")
            .await
            .unwrap_err();
        let ApiError::Retry(reason) = &err else {
            panic!("{err:?}")
        };
        assert!(
            reason.starts_with("could not connect to Sentry"),
            "{reason}"
        );
        assert!(
            !reason.contains(TOKEN) && !reason.contains("ada@example.com"),
            "{reason}"
        );
        assert!(
            metrics(&counters).contains(
                "sluice_sentry_api_requests_total{endpoint=\"members\",status=\"error\"} 1"
            )
        );
    }

    #[tokio::test]
    async fn what_is_not_a_status_change_is_refused_without_a_request() {
        let (base, seen) = server(issue_answer).await;
        let (api, _) = client(&base);
        for action in [
            IssueAction::AssignToMe,
            IssueAction::Mute { secs: 3600 },
            IssueAction::Unmute,
            IssueAction::Archive {
                archive: Archive::UntilTime { until_ms: 0 },
            },
        ] {
            let err = api.update_issue("acme", "42", &action).await.unwrap_err();
            assert!(
                matches!(err, ApiError::Refused { status: 0, .. }),
                "{action:?}: {err:?}"
            );
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn no_token_no_client_and_the_token_stays_secret() {
        let counters = Arc::new(Registry::default());
        let mut c = config("https://sentry.io", Duration::from_secs(1));
        let api = SentryApi::from_config(&c, counters.clone()).unwrap();
        assert!(!format!("{api:?}").contains(TOKEN));
        c.api_token = None;
        assert!(SentryApi::from_config(&c, counters.clone()).is_none());
        c.api_token = Some(Secret::new("  "));
        assert!(SentryApi::from_config(&c, counters).is_none());
    }

    #[tokio::test]
    async fn ids_are_one_path_segment_and_a_base_path_is_kept() {
        let (base, seen) = server(issue_answer).await;
        let (api, _) = client(&format!("{base}/sentry"));
        api.update_issue("acme", "4/../2", &IssueAction::Resolve)
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap()[0].path,
            "/sentry/api/0/organizations/acme/issues/4%2F..%2F2/"
        );
    }

    #[test]
    fn the_organization_comes_from_the_issue_link() {
        let org = |url: &str| org_from_issue_url(url);
        assert_eq!(
            org("https://acme.sentry.io/issues/1/").as_deref(),
            Some("acme")
        );
        assert_eq!(
            org("https://sentry.io/organizations/acme/issues/1/").as_deref(),
            Some("acme")
        );
        assert_eq!(
            org("https://sentry.example.com/organizations/acme-eu/issues/1/?project=2").as_deref(),
            Some("acme-eu")
        );
        assert_eq!(
            org("https://sentry.io/api/0/organizations/acme/issues/1/").as_deref(),
            Some("acme")
        );
        assert_eq!(
            org("https://us.sentry.io/api/0/projects/acme/checkout/").as_deref(),
            Some("acme")
        );
        // The path wins over the host.
        assert_eq!(
            org("https://other.sentry.io/organizations/acme/issues/1/").as_deref(),
            Some("acme")
        );
        // Region and bare hosts name no organization.
        for url in [
            "https://sentry.io/issues/1/",
            "https://www.sentry.io/issues/1/",
            "https://us.sentry.io/issues/1/",
            "https://de.sentry.io/issues/1/",
            "https://o1.ingest.sentry.io/issues/1/",
            "https://sentry.example.com/issues/1/",
            "https://acme.sentry.io.evil.com/issues/1/",
            "https://sentry.io/organizations/ac%20me/issues/1/",
            "ftp://acme.sentry.io/issues/1/",
            "not a url",
            "",
        ] {
            assert_eq!(org(url), None, "{url}");
        }
    }
}
