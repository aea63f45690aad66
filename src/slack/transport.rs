//! Sending a message to Slack through an incoming webhook, the Web API, or the console, and
//! turning Slack's answer into an explicit [`Retry`] decision.
//!
//! Only `200` (webhook) or `"ok": true` (Web API) is success. `429` (or `ratelimited`) waits
//! for `Retry-After`; 5xx, Slack's transient errors, timeouts and connection errors back off
//! and retry; every other error is permanent and carries Slack's error string.

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
    /// A permanent failure: dead-letter with Slack's error string.
    Never(String),
}

/// The result of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Slack accepted the message; the Web API also returns the message `ts`.
    Posted {
        /// Slack's message timestamp (Web API only), the handle for threads and updates.
        ts: Option<String>,
    },
    /// Slack did not accept it.
    Failed(Retry),
}

/// Wait used when a 429 carries no usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

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
}

impl SlackClient {
    /// A client whose every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        Self { http }
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
                SendOutcome::Posted { ts: None }
            }
            Destination::Webhook { url } => {
                let body = json!({"text": message.text, "blocks": message.blocks});
                send(self.http.post(url).json(&body), classify_webhook).await
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
            _ => SendOutcome::Posted { ts: None },
        }
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
        send(request, classify_web_api).await
    }
}

/// Sends `request` and reads Slack's answer with `classify` (status, Retry-After, body); a
/// request that got no answer (connection error, timeout) is retried with backoff.
async fn send(
    request: reqwest::RequestBuilder,
    classify: fn(StatusCode, Option<Duration>, &str) -> SendOutcome,
) -> SendOutcome {
    match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            classify(status, retry_after, &text)
        }
        Err(err) => SendOutcome::Failed(Retry::Backoff(describe(err))),
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

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
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
        SendOutcome::Posted { ts: None }
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        SendOutcome::Failed(Retry::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)))
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        SendOutcome::Failed(Retry::Backoff(format!(
            "HTTP {}: {}",
            status.as_u16(),
            slack_error(body)
        )))
    } else {
        SendOutcome::Failed(Retry::Never(slack_error(body)))
    }
}

/// Classifies a Web API (`chat.postMessage`) answer.
pub fn classify_web_api(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> SendOutcome {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return SendOutcome::Failed(Retry::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)));
    }
    if status.is_server_error() {
        return SendOutcome::Failed(Retry::Backoff(format!(
            "HTTP {}: {}",
            status.as_u16(),
            slack_error(body)
        )));
    }
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let Some(parsed) = parsed else {
        return if status.is_success() {
            SendOutcome::Failed(Retry::Backoff("response is not JSON".into()))
        } else {
            SendOutcome::Failed(Retry::Never(format!(
                "HTTP {}: {}",
                status.as_u16(),
                slack_error(body)
            )))
        };
    };
    if parsed["ok"].as_bool() == Some(true) {
        return SendOutcome::Posted {
            ts: parsed["ts"].as_str().map(str::to_string),
        };
    }
    let error = parsed["error"]
        .as_str()
        .unwrap_or("unknown_error")
        .to_string();
    if error == "ratelimited" {
        SendOutcome::Failed(Retry::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)))
    } else if TRANSIENT_API_ERRORS.contains(&error.as_str()) {
        SendOutcome::Failed(Retry::Backoff(error))
    } else {
        SendOutcome::Failed(Retry::Never(slack_error(&error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_answers() {
        assert_eq!(
            classify_webhook(StatusCode::OK, None, "ok"),
            SendOutcome::Posted { ts: None }
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
            SendOutcome::Failed(Retry::Never("channel_not_found".into()))
        );
        assert_eq!(
            classify_webhook(StatusCode::FORBIDDEN, None, "invalid_token\n"),
            SendOutcome::Failed(Retry::Never("invalid_token".into()))
        );
    }

    #[test]
    fn web_api_answers() {
        assert_eq!(
            classify_web_api(StatusCode::OK, None, r#"{"ok":true,"ts":"1.2"}"#),
            SendOutcome::Posted {
                ts: Some("1.2".into())
            }
        );
        assert_eq!(
            classify_web_api(
                StatusCode::OK,
                None,
                r#"{"ok":false,"error":"channel_not_found"}"#
            ),
            SendOutcome::Failed(Retry::Never("channel_not_found".into()))
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
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
