//! Sending a message to Slack through an incoming webhook, the Web API, or the console, and
//! turning Slack's answer into an explicit [`Retry`] decision.
//!
//! Only `200` (webhook) or `"ok": true` (Web API) is success. `429` (or `ratelimited`) waits
//! for `Retry-After`; 5xx, Slack's transient errors, timeouts and connection errors back off
//! and retry; every other error is permanent and carries Slack's error string.
//!
//! The same client asks Slack who clicked a button (`users.info`) and answers the clicker
//! privately (a click's `response_url`), classified the same way.

use std::io::Write;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::message::SlackMessage;

/// Where a channel's messages go.
#[derive(Clone)]
pub enum Destination {
    /// Printed to standard output: for trying Sluice without Slack.
    Console {
        /// Channel name, printed before the message.
        name: String,
    },
    /// A Slack incoming webhook URL (a secret: it is never logged).
    Webhook {
        /// The webhook URL.
        url: String,
    },
    /// `chat.postMessage` with a bot token.
    WebApi {
        /// Slack channel id (`C0123456789`) or name.
        channel: String,
        /// Bot token (`xoxb-…`; a secret: never logged).
        token: String,
        /// API base, `https://slack.com/api` unless overridden (tests point it at a fake).
        api_base: String,
    },
}

impl Destination {
    /// The same destination addressed to Slack's channel id `id` (`C0123456789`), as an
    /// earlier `chat.postMessage` answered it, when there is one: `chat.update` accepts only an
    /// id, while `slack_channel` may name the channel (`alerts`). Other destinations, and
    /// `None`, are returned unchanged.
    pub fn in_channel(&self, id: Option<&str>) -> Destination {
        match (self, id) {
            (
                Destination::WebApi {
                    token, api_base, ..
                },
                Some(id),
            ) => Destination::WebApi {
                channel: id.to_string(),
                token: token.clone(),
                api_base: api_base.clone(),
            },
            _ => self.clone(),
        }
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Console { name } => write!(f, "Console({name})"),
            Destination::Webhook { .. } => f.write_str("Webhook([redacted])"),
            Destination::WebApi { channel, .. } => write!(f, "WebApi({channel})"),
        }
    }
}

/// What to do after a failed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Slack asked us to wait (429 `Retry-After`): retry after at least this long.
    After(Duration),
    /// A transient failure (5xx, timeout, connection error): back off exponentially.
    Backoff(String),
    /// A permanent failure: dead-letter with its reason.
    Never(Refusal),
}

/// Why a message is dead-lettered: a stable code, and what was said, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short token: Slack's own error (`channel_not_found`, `invalid_token`), `http_<status>`
    /// when Slack answered none, or Sluice's (`max_retry_age`, `channel_not_configured`).
    /// Stored with the dead letter and used as the `error` label of
    /// `sluice_dead_letters`, so the label set stays small whatever a server answers.
    pub code: String,
    /// What was said: the token, or `HTTP 404: <body>`, or Sluice's sentence.
    pub detail: String,
}

impl Refusal {
    /// Sluice's own reason `code`, explained by `detail`.
    pub fn new(code: &str, detail: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            detail: detail.into(),
        }
    }

    /// Slack's error string from an answer: its token when it is one (then code and detail),
    /// else `http_<status>` with the text.
    fn answered(status: StatusCode, text: &str) -> Self {
        let token = text.trim();
        if is_token(token) {
            Self::new(token, token)
        } else {
            Self::new(
                &format!("http_{}", status.as_u16()),
                format!("HTTP {}: {}", status.as_u16(), slack_error(text)),
            )
        }
    }
}

/// Whether `s` looks like one of Slack's error tokens (`channel_not_found`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The result of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Slack accepted the message; the Web API also returns the message `ts` and the id of
    /// the channel it went to.
    Posted {
        /// Slack's message timestamp (Web API only), the handle for threads and updates.
        ts: Option<String>,
        /// The id of the channel Slack posted to (`C0123456789`; Web API only), whatever name
        /// the message was addressed to: `chat.update` accepts only an id.
        channel: Option<String>,
    },
    /// Slack did not accept it.
    Failed(Retry),
}

/// Wait used when a 429 carries no usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

pub use crate::config::DEFAULT_MAX_RETRY_AFTER;

/// Who a Slack user is (`users.info`): what the state line and Sentry's comment call them,
/// and the email that finds them among Sentry's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    /// Their email (`user.profile.email`; only with the `users:read.email` scope).
    pub email: Option<String>,
    /// Their full name (`user.real_name`, else `user.profile.real_name`), where set.
    pub real_name: Option<String>,
    /// Their handle (`user.name`).
    pub name: String,
}

/// Web API error strings that are worth retrying (Slack's own transient failures).
const TRANSIENT_API_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// A shared HTTP client for all channels.
#[derive(Debug, Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    /// A longer `Retry-After` is cut to this (and logged).
    max_retry_after: Duration,
}

impl SlackClient {
    /// A client with the `[slack]` settings `timeout` and `max_retry_after`.
    pub fn from_config(slack: &crate::config::SlackConfig) -> Self {
        let mut client = Self::new(slack.timeout);
        client.max_retry_after = slack.max_retry_after;
        client
    }

    /// A client whose every request gives up after `timeout`, honouring a `Retry-After` of up
    /// to [`DEFAULT_MAX_RETRY_AFTER`].
    pub fn new(timeout: Duration) -> Self {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        Self {
            http,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }

    /// Sends `message` to `dest` once and classifies the answer. `thread_ts` makes it a
    /// thread reply where the destination supports threads (the Web API).
    pub async fn send(
        &self,
        dest: &Destination,
        message: &SlackMessage,
        thread_ts: Option<&str>,
    ) -> SendOutcome {
        match dest {
            Destination::Console { name } => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "[#{name}] {}", message.text);
                let _ = out.flush();
                SendOutcome::Posted {
                    ts: None,
                    channel: None,
                }
            }
            Destination::Webhook { url } => {
                let body = json!({"text": message.text, "blocks": message.blocks});
                let request = self.http.post(url).json(&body);
                send(request, self.max_retry_after, classify_webhook).await
            }
            Destination::WebApi {
                channel,
                token,
                api_base,
            } => {
                let mut body = json!({
                    "channel": channel,
                    "text": message.text,
                    "blocks": message.blocks,
                    "unfurl_links": false,
                });
                if let Some(ts) = thread_ts {
                    body["thread_ts"] = ts.into();
                }
                self.web_api(api_base, "chat.postMessage", token, &body)
                    .await
            }
        }
    }

    /// Replaces the message `ts` in a Web API channel (`chat.update`); other destinations
    /// cannot update and answer `Posted` without sending anything.
    pub async fn update(
        &self,
        dest: &Destination,
        ts: &str,
        message: &SlackMessage,
    ) -> SendOutcome {
        match dest {
            Destination::WebApi {
                channel,
                token,
                api_base,
            } => {
                let body = json!({
                    "channel": channel,
                    "ts": ts,
                    "text": message.text,
                    "blocks": message.blocks,
                });
                self.web_api(api_base, "chat.update", token, &body).await
            }
            _ => SendOutcome::Posted {
                ts: None,
                channel: None,
            },
        }
    }

    /// Who `user_id` is (`users.info` with the bot token: `GET {api_base}/users.info?user=…`).
    /// Errors are classified like a message's: `ok: false` (`user_not_found`,
    /// `missing_scope`…) is [`Retry::Never`] with Slack's error.
    pub async fn user_info(
        &self,
        api_base: &str,
        token: &str,
        user_id: &str,
    ) -> Result<SlackUser, Retry> {
        let query = serde_urlencoded::to_string([("user", user_id)])
            .expect("a pair of strings always encodes");
        let url = format!("{}/users.info?{query}", api_base.trim_end_matches('/'));
        let request = self.http.get(url).bearer_auth(token);
        let answer = exchange(request, self.max_retry_after).await?;
        let body = web_api_answer(answer.status, answer.retry_after, &answer.text)?;
        let user = &body["user"];
        let text = |v: &Value| {
            v.as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let name = text(&user["name"]).ok_or_else(|| {
            Retry::Never(Refusal::new(
                "invalid_response",
                "users.info answered without a user name",
            ))
        })?;
        Ok(SlackUser {
            email: text(&user["profile"]["email"]),
            real_name: text(&user["real_name"]).or_else(|| text(&user["profile"]["real_name"])),
            name,
        })
    }

    /// Posts `body` (an [`ephemeral`](super::message::ephemeral) reply, say) to a click's
    /// `response_url`. `200` is [`SendOutcome::Posted`]; an answer in the Web API's shape is
    /// read like one (`ok: false` → Slack's error); otherwise it is classified like a
    /// webhook's. The URL comes from a signed Slack request, and is never logged.
    pub async fn respond(&self, response_url: &str, body: &Value) -> SendOutcome {
        let request = self.http.post(response_url).json(body);
        send(request, self.max_retry_after, classify_response_url).await
    }

    async fn web_api(
        &self,
        api_base: &str,
        method: &str,
        token: &str,
        body: &Value,
    ) -> SendOutcome {
        let url = format!("{}/{method}", api_base.trim_end_matches('/'));
        let request = self.http.post(url).bearer_auth(token).json(body);
        send(request, self.max_retry_after, classify_web_api).await
    }
}

/// What came back for a request: status, `Retry-After` (cut to the setting) and body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    text: String,
}

/// Sends `request` and reads the answer; a request that got none (connection error, timeout)
/// is retried with backoff.
async fn exchange(
    request: reqwest::RequestBuilder,
    max_retry_after: Duration,
) -> Result<Answer, Retry> {
    let resp = request
        .send()
        .await
        .map_err(|err| Retry::Backoff(describe(err)))?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers(), max_retry_after);
    let text = resp.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        retry_after,
        text,
    })
}

/// Sends `request` and reads Slack's answer with `classify` (status, Retry-After cut to
/// `max_retry_after`, body).
async fn send(
    request: reqwest::RequestBuilder,
    max_retry_after: Duration,
    classify: fn(StatusCode, Option<Duration>, &str) -> SendOutcome,
) -> SendOutcome {
    match exchange(request, max_retry_after).await {
        Ok(answer) => classify(answer.status, answer.retry_after, &answer.text),
        Err(retry) => SendOutcome::Failed(retry),
    }
}

/// Installs the process-wide rustls crypto provider (ring) that every HTTPS client in this
/// process uses; call it before building any `reqwest::Client`. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest error without its URL (a webhook URL is a secret).
fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connection error"
    } else if err.is_body() || err.is_decode() {
        "bad response body"
    } else {
        "request error"
    };
    let inner = err.without_url().to_string();
    format!("{kind}: {inner}")
}

/// Slack's `Retry-After` (seconds), cut to `max` with a warning: a wait of days (a broken proxy,
/// a typo on Slack's side) would stall the channel far past `slack.max_retry_age`.
fn retry_after(headers: &reqwest::header::HeaderMap, max: Duration) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    if !(secs.is_finite() && secs >= 0.0) {
        return None;
    }
    let asked = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    if asked > max {
        tracing::warn!(
            retry_after_secs = secs,
            max_retry_after_secs = max.as_secs_f64(),
            "slack: Retry-After is longer than slack.max_retry_after; waiting that long instead"
        );
        return Some(max);
    }
    Some(asked)
}

/// Slack's error string from a body, cut to a sane length for storage and logs.
fn slack_error(text: &str) -> String {
    let trimmed = text.trim();
    let s = if trimmed.is_empty() {
        "empty response"
    } else {
        trimmed
    };
    s.chars().take(200).collect()
}

/// Classifies an incoming-webhook answer.
pub fn classify_webhook(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> SendOutcome {
    if status == StatusCode::OK {
        SendOutcome::Posted {
            ts: None,
            channel: None,
        }
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        SendOutcome::Failed(Retry::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)))
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        SendOutcome::Failed(Retry::Backoff(format!(
            "HTTP {}: {}",
            status.as_u16(),
            slack_error(body)
        )))
    } else {
        SendOutcome::Failed(Retry::Never(Refusal::answered(status, body)))
    }
}

/// Classifies a Web API (`chat.postMessage`, `chat.update`) answer.
pub fn classify_web_api(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> SendOutcome {
    match web_api_answer(status, retry_after, body) {
        Ok(parsed) => SendOutcome::Posted {
            ts: parsed["ts"].as_str().map(str::to_string),
            channel: parsed["channel"].as_str().map(str::to_string),
        },
        Err(retry) => SendOutcome::Failed(retry),
    }
}

/// Classifies the answer to a post to a click's `response_url`: Web API shaped (`{"ok":…}`)
/// answers like [`classify_web_api`], others like [`classify_webhook`].
pub fn classify_response_url(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> SendOutcome {
    let web_api_shaped = serde_json::from_str::<Value>(body).is_ok_and(|v| v["ok"].is_boolean());
    if web_api_shaped {
        classify_web_api(status, retry_after, body)
    } else {
        classify_webhook(status, retry_after, body)
    }
}

/// A Web API answer's JSON when it says `"ok": true`, else what to do about it: 429 or
/// `ratelimited` waits, 5xx and Slack's transient errors back off, a success that is not JSON
/// backs off, and every other error is permanent with Slack's error string.
fn web_api_answer(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> Result<Value, Retry> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Retry::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)));
    }
    if status.is_server_error() {
        return Err(Retry::Backoff(format!(
            "HTTP {}: {}",
            status.as_u16(),
            slack_error(body)
        )));
    }
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let Some(parsed) = parsed else {
        return Err(if status.is_success() {
            Retry::Backoff("response is not JSON".into())
        } else {
            Retry::Never(Refusal::new(
                &format!("http_{}", status.as_u16()),
                format!("HTTP {}: {}", status.as_u16(), slack_error(body)),
            ))
        });
    };
    if parsed["ok"].as_bool() == Some(true) {
        return Ok(parsed);
    }
    let error = parsed["error"]
        .as_str()
        .unwrap_or("unknown_error")
        .to_string();
    Err(if error == "ratelimited" {
        Retry::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
    } else if TRANSIENT_API_ERRORS.contains(&error.as_str()) {
        Retry::Backoff(error)
    } else {
        Retry::Never(Refusal::answered(status, &error))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_answers() {
        assert_eq!(
            classify_webhook(StatusCode::OK, None, "ok"),
            SendOutcome::Posted {
                ts: None,
                channel: None
            }
        );
        assert_eq!(
            classify_webhook(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(7)),
                ""
            ),
            SendOutcome::Failed(Retry::After(Duration::from_secs(7)))
        );
        assert!(matches!(
            classify_webhook(StatusCode::BAD_GATEWAY, None, "upstream"),
            SendOutcome::Failed(Retry::Backoff(_))
        ));
        assert_eq!(
            classify_webhook(StatusCode::NOT_FOUND, None, "channel_not_found"),
            SendOutcome::Failed(Retry::Never(Refusal::new(
                "channel_not_found",
                "channel_not_found"
            )))
        );
        assert_eq!(
            classify_webhook(StatusCode::FORBIDDEN, None, "invalid_token\n"),
            SendOutcome::Failed(Retry::Never(Refusal::new("invalid_token", "invalid_token")))
        );
    }

    #[test]
    fn web_api_answers() {
        assert_eq!(
            classify_web_api(StatusCode::OK, None, r#"{"ok":true,"ts":"1.2"}"#),
            SendOutcome::Posted {
                ts: Some("1.2".into()),
                channel: None
            }
        );
        assert_eq!(
            classify_web_api(
                StatusCode::OK,
                None,
                r#"{"ok":false,"error":"channel_not_found"}"#
            ),
            SendOutcome::Failed(Retry::Never(Refusal::new(
                "channel_not_found",
                "channel_not_found"
            )))
        );
        assert_eq!(
            classify_web_api(
                StatusCode::OK,
                Some(Duration::from_secs(3)),
                r#"{"ok":false,"error":"ratelimited"}"#
            ),
            SendOutcome::Failed(Retry::After(Duration::from_secs(3)))
        );
        assert_eq!(
            classify_web_api(
                StatusCode::OK,
                None,
                r#"{"ok":false,"error":"internal_error"}"#
            ),
            SendOutcome::Failed(Retry::Backoff("internal_error".into()))
        );
        assert!(matches!(
            classify_web_api(StatusCode::SERVICE_UNAVAILABLE, None, "down"),
            SendOutcome::Failed(Retry::Backoff(_))
        ));
    }

    #[test]
    fn retry_after_parses_seconds_and_ignores_garbage() {
        let max = DEFAULT_MAX_RETRY_AFTER;
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "30".parse().unwrap());
        assert_eq!(retry_after(&h, max), Some(Duration::from_secs(30)));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, max), None);
        h.insert("retry-after", "1e400".parse().unwrap());
        assert_eq!(retry_after(&h, max), None);
    }

    /// `slack.max_retry_after` caps Slack's wait; a longer setting honours a longer wait.
    #[test]
    fn retry_after_is_capped_by_the_setting() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7200".parse().unwrap());
        let hour = Duration::from_secs(3_600);
        assert_eq!(retry_after(&h, hour), Some(hour));
        assert_eq!(retry_after(&h, 3 * hour), Some(Duration::from_secs(7_200)));
        h.insert("retry-after", "99999999999999999999".parse().unwrap());
        assert_eq!(retry_after(&h, 3 * hour), Some(3 * hour));
    }

    /// A Web API answer names the channel id Slack posted to, whatever name was asked for.
    #[test]
    fn web_api_answer_carries_the_channel_id() {
        assert_eq!(
            classify_web_api(
                StatusCode::OK,
                None,
                r#"{"ok":true,"channel":"C0123456789","ts":"1700000000.000100"}"#
            ),
            SendOutcome::Posted {
                ts: Some("1700000000.000100".into()),
                channel: Some("C0123456789".into())
            }
        );
        let named = Destination::WebApi {
            channel: "alerts".into(),
            token: "xoxb-1".into(),
            api_base: "http://127.0.0.1:1/api".into(),
        };
        let Destination::WebApi { channel, .. } = named.in_channel(Some("C0123456789")) else {
            panic!("still a Web API destination");
        };
        assert_eq!(channel, "C0123456789");
        let Destination::WebApi { channel, .. } = named.in_channel(None) else {
            panic!("still a Web API destination");
        };
        assert_eq!(channel, "alerts");
    }

    /// A stand-in for Slack's `users.info` and a click's `response_url` on port 0: the users
    /// `U1` (all fields) and `U2` (no email, no real name), Slack down for `U5`; `respond/ok`
    /// records the body it got, `respond/expired` refuses like Slack.
    async fn slack_stand_in() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
        use axum::extract::{Path, Query};
        use axum::http::HeaderMap;
        use axum::routing::{get, post};
        let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let users_info = |Query(q): Query<std::collections::HashMap<String, String>>,
                          headers: HeaderMap| async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            let body = match (auth, q.get("user").map(String::as_str)) {
                (Some("Bearer xoxb-1"), Some("U1")) => json!({"ok": true, "user": {
                    "id": "U1", "name": "ada", "real_name": "Ada Lovelace",
                    "profile": {"email": "ada@example.com", "real_name": "Ada Lovelace"}}}),
                (Some("Bearer xoxb-1"), Some("U2")) => {
                    json!({"ok": true, "user": {"id": "U2", "name": "grace", "profile": {}}})
                }
                (Some("Bearer xoxb-1"), Some("U5")) => {
                    return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})));
                }
                (Some("Bearer xoxb-1"), _) => json!({"ok": false, "error": "user_not_found"}),
                _ => json!({"ok": false, "error": "not_authed"}),
            };
            (StatusCode::OK, axum::Json(body))
        };
        let seen = posted.clone();
        let respond = move |Path(id): Path<String>, axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                match id.as_str() {
                    "ok" => (StatusCode::OK, "ok".to_string()),
                    _ => (
                        StatusCode::NOT_FOUND,
                        json!({"ok": false, "error": "expired_url"}).to_string(),
                    ),
                }
            }
        };
        let app = axum::Router::new()
            .route("/api/users.info", get(users_info))
            .route("/respond/{id}", post(respond));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, posted)
    }

    /// `users.info` names the clicker: email and full name where Slack has them.
    #[tokio::test]
    async fn user_info_reads_slacks_user() {
        let (base, _) = slack_stand_in().await;
        let client = SlackClient::new(Duration::from_secs(5));
        let api = format!("{base}/api/");
        assert_eq!(
            client.user_info(&api, "xoxb-1", "U1").await,
            Ok(SlackUser {
                email: Some("ada@example.com".into()),
                real_name: Some("Ada Lovelace".into()),
                name: "ada".into(),
            })
        );
        assert_eq!(
            client.user_info(&api, "xoxb-1", "U2").await,
            Ok(SlackUser {
                email: None,
                real_name: None,
                name: "grace".into(),
            })
        );
        assert_eq!(
            client.user_info(&api, "xoxb-1", "U404").await,
            Err(Retry::Never(Refusal::new(
                "user_not_found",
                "user_not_found"
            )))
        );
        assert_eq!(
            client.user_info(&api, "xoxb-2", "U1").await,
            Err(Retry::Never(Refusal::new("not_authed", "not_authed")))
        );
        assert!(matches!(
            client.user_info(&api, "xoxb-1", "U5").await,
            Err(Retry::Backoff(_))
        ));
        // Nobody listening: retried.
        assert!(matches!(
            client
                .user_info("http://127.0.0.1:1/api", "xoxb-1", "U1")
                .await,
            Err(Retry::Backoff(_))
        ));
    }

    /// An answer to the clicker goes to the click's `response_url` as JSON.
    #[tokio::test]
    async fn respond_posts_to_the_response_url() {
        let (base, posted) = slack_stand_in().await;
        let client = SlackClient::new(Duration::from_secs(5));
        let body = super::super::message::ephemeral("Not a Sluice action");
        assert_eq!(
            client.respond(&format!("{base}/respond/ok"), &body).await,
            SendOutcome::Posted {
                ts: None,
                channel: None
            }
        );
        assert_eq!(
            client.respond(&format!("{base}/respond/gone"), &body).await,
            SendOutcome::Failed(Retry::Never(Refusal::new("expired_url", "expired_url")))
        );
        assert_eq!(*posted.lock().unwrap(), vec![body.clone(), body]);
    }

    #[test]
    fn response_url_answers() {
        assert_eq!(
            classify_response_url(StatusCode::OK, None, r#"{"ok":true}"#),
            SendOutcome::Posted {
                ts: None,
                channel: None
            }
        );
        assert_eq!(
            classify_response_url(StatusCode::OK, None, "ok"),
            SendOutcome::Posted {
                ts: None,
                channel: None
            }
        );
        assert_eq!(
            classify_response_url(StatusCode::NOT_FOUND, None, "used_url"),
            SendOutcome::Failed(Retry::Never(Refusal::new("used_url", "used_url")))
        );
        assert!(matches!(
            classify_response_url(StatusCode::BAD_GATEWAY, None, ""),
            SendOutcome::Failed(Retry::Backoff(_))
        ));
    }

    /// A permanent failure without Slack's error token says what came back.
    #[test]
    fn a_permanent_failure_names_the_http_status() {
        assert_eq!(
            classify_webhook(StatusCode::NOT_FOUND, None, ""),
            SendOutcome::Failed(Retry::Never(Refusal::new(
                "http_404",
                "HTTP 404: empty response"
            )))
        );
        assert_eq!(
            classify_webhook(StatusCode::GONE, None, "<html>Gone</html>"),
            SendOutcome::Failed(Retry::Never(Refusal::new(
                "http_410",
                "HTTP 410: <html>Gone</html>"
            )))
        );
        assert_eq!(
            classify_webhook(StatusCode::NOT_FOUND, None, "no_service\n"),
            SendOutcome::Failed(Retry::Never(Refusal::new("no_service", "no_service")))
        );
    }
}
