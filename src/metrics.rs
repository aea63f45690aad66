//! `/metrics` in the Prometheus text format. Every series Sluice exports is named and
//! documented here, in one place.
//!
//! Why not the `metrics` facade with `metrics-exporter-prometheus`: most of what is exported
//! is not measured in this process but read from the store at scrape time (the accounting is
//! exact only there, across restarts and replicas), so the exporter would serve as a text
//! formatter fed absolute values on each scrape; and its recorder is process-global, while
//! tests run several servers in one process that must not share counters. The format written
//! here is small: `# HELP`/`# TYPE` lines, label values escaped by `label`, and label sets
//! bounded (resources and dead-letter errors folded into known tokens).
//!
//! The delivery accounting is read from the store at scrape time rather than kept in process
//! memory, so it is exact across restarts (and, with a shared database, across replicas). Per
//! channel, at every moment:
//! `sluice_occurrences_routed_total = sluice_occurrences_posted_total
//!  + sluice_occurrences_pending + sluice_occurrences_dead + sluice_occurrences_muted`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::state::AppState;
use crate::store::{ChannelTotals, StoreError};

/// One exported series: name, type, help text, and how to read it from a channel's totals.
struct Series {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&ChannelTotals) -> u64,
}

/// The per-channel series, in output order.
const CHANNEL_SERIES: &[Series] = &[
    Series {
        name: "sluice_occurrences_routed_total",
        kind: "counter",
        help: "Occurrences (distinct Sentry events) routed to the channel.",
        value: |t| t.occurrences_routed,
    },
    Series {
        name: "sluice_occurrences_posted_total",
        kind: "counter",
        help: "Occurrences carried by messages Slack accepted (alerts, follow-ups, roll-ups).",
        value: |t| t.occurrences_posted,
    },
    Series {
        name: "sluice_occurrences_pending",
        kind: "gauge",
        help: "Occurrences waiting: in outbox messages or folded by a cooldown.",
        value: |t| t.occurrences_pending,
    },
    Series {
        name: "sluice_occurrences_dead",
        kind: "gauge",
        help: "Occurrences carried by dead letters (a replay queues them again: back to pending).",
        value: |t| t.occurrences_dead,
    },
    Series {
        name: "sluice_occurrences_muted",
        kind: "gauge",
        help: "Occurrences held by mutes, posted when the mute ends or a spike breaks through.",
        value: |t| t.occurrences_muted,
    },
    Series {
        name: "sluice_occurrences_folded_total",
        kind: "counter",
        help: "Occurrences that arrived within an issue's cooldown (posted later in a follow-up).",
        value: |t| t.occurrences_folded,
    },
    Series {
        name: "sluice_messages_rolled_up_total",
        kind: "counter",
        help: "Waiting messages folded into roll-up summaries.",
        value: |t| t.messages_rolled_up,
    },
    Series {
        name: "sluice_messages_posted_total",
        kind: "counter",
        help: "Messages Slack accepted.",
        value: |t| t.messages_posted,
    },
    Series {
        name: "sluice_outbox_messages",
        kind: "gauge",
        help: "Messages waiting in the outbox.",
        value: |t| t.messages_pending,
    },
];

/// Upper bounds (seconds) of the ingest latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The Sentry resources counted by name; any other (the header is not signed) is `other`,
/// so a sender cannot grow the label set.
const KNOWN_RESOURCES: [&str; 8] = [
    "event_alert",
    "error",
    "issue",
    "metric_alert",
    "comment",
    "installation",
    "activity_alert",
    "legacy",
];

/// Counters and histograms of this process (since it started). The delivery accounting is
/// not here: it lives in the store (see [`render`]).
#[derive(Debug, Default)]
pub struct Registry {
    /// `sluice_config_reloads_total{outcome="ok"}`: config reloads applied.
    pub reloads_ok: AtomicU64,
    /// `sluice_config_reloads_total{outcome="error"}`: config reloads refused.
    pub reloads_failed: AtomicU64,
    /// `sluice_webhooks_total{resource,outcome}`.
    webhooks: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// `sluice_ingest_duration_seconds`: cumulative bucket counts, sum (µs), count.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    /// `sluice_slack_requests_total{channel,status}`.
    slack_requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// `sluice_slack_interactions_total{action,outcome}`.
    slack_interactions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// `sluice_slack_retries_total{channel,reason}` and the Retry-After seconds waited.
    retries: Mutex<BTreeMap<(String, &'static str), u64>>,
    retry_after_millis: Mutex<BTreeMap<String, u64>>,
    /// `sluice_sentry_api_requests_total{endpoint,status}`.
    sentry_api_requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// `sluice_delivery_rounds_total`: rounds of the delivery worker (storm control, then
    /// the due rows handed to channel tasks). It stops increasing on a leader whose worker
    /// is stuck.
    pub delivery_rounds: AtomicU64,
    /// `sluice_delivery_channels_in_flight`: channels being sent right now.
    pub delivery_in_flight: AtomicU64,
    /// `sluice_fold_batches_total`: fold transactions committed (leader only; empty ones
    /// too: it counts the loop's turns).
    pub fold_batches: AtomicU64,
    /// `sluice_folded_deliveries_total`: deliveries folded by this process.
    pub folded: AtomicU64,
    /// `sluice_http_connections`: connections open now.
    pub http_connections: AtomicU64,
    /// `sluice_http_connection_limit_reached_total`: accepted connections that found
    /// `server.max_connections` reached (idle ones were closed to make room, or it waited).
    pub http_connection_limit_reached: AtomicU64,
    /// `sluice_http_connections_closed_total{reason}`: connections Sluice closed, by
    /// [`ConnectionClose`].
    http_connections_closed: [AtomicU64; ConnectionClose::ALL.len()],
}

/// Why Sluice closed a client connection (`sluice_http_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// `header_timeout`: no complete request head within `server.header_timeout`.
    HeaderTimeout,
    /// `idle_timeout`: a kept-alive connection sent nothing for `server.idle_timeout`.
    IdleTimeout,
    /// `shed`: an idle kept-alive connection closed to make room at `server.max_connections`.
    Shed,
}

impl ConnectionClose {
    const ALL: [ConnectionClose; 3] = [Self::HeaderTimeout, Self::IdleTimeout, Self::Shed];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Shed => "shed",
        }
    }
}

impl Registry {
    /// One webhook answered with `outcome` (`stored`, `duplicate`, `ignored`, `malformed`,
    /// `unauthorized`, `unavailable`, `too_large`, `timeout`, `overloaded`, `other`), after
    /// `took`.
    pub fn webhook(&self, resource: &str, outcome: &'static str, took: Duration) {
        let resource = KNOWN_RESOURCES
            .iter()
            .find(|r| **r == resource)
            .copied()
            .unwrap_or("other");
        *self
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((resource, outcome))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sluice closed a client connection for `why`.
    pub fn connection_closed(&self, why: ConnectionClose) {
        self.http_connections_closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One request to Slack for `channel` ended with `status` (`ok`, `rate_limited`,
    /// `transient_error`, `permanent_error`).
    pub fn slack_request(&self, channel: &str, status: &'static str) {
        *self
            .slack_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((channel.to_string(), status))
            .or_default() += 1;
    }

    /// A click on a Sluice button (`action`: `resolve`, `archive`, …, or `unknown`) came to
    /// `outcome`: at the endpoint `unauthorized`, `malformed`, `repeat` or `accepted`; in the
    /// worker `done`, `refused` (Sentry said no: 401/403/404…), `no_member` (no Sentry member
    /// with the clicker's email), `retry` (Sentry down; tried again), `gave_up` (Sentry did
    /// not take it in time), `not_sluice` (not a button on a Sluice message) or `corrupt` (an
    /// unreadable stored click).
    pub fn slack_interaction(&self, action: &'static str, outcome: &'static str) {
        *self
            .slack_interactions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((action, outcome))
            .or_default() += 1;
    }

    /// A send to `channel` will be retried: after Slack's `Retry-After` (`Some`) or a backoff.
    pub fn retry(&self, channel: &str, retry_after: Option<Duration>) {
        let reason = if retry_after.is_some() {
            "retry_after"
        } else {
            "backoff"
        };
        *self
            .retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((channel.to_string(), reason))
            .or_default() += 1;
        if let Some(wait) = retry_after {
            *self
                .retry_after_millis
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(channel.to_string())
                .or_default() += wait.as_millis() as u64;
        }
    }

    /// One request to Sentry's API (`endpoint`: `issue_update`, `members`, `comment`) ended
    /// with `status`: Sentry's HTTP status code (`200`, `403`, `503`), or `timeout` or `error`
    /// when it did not answer. The label set stays bounded: status codes are three digits.
    pub fn sentry_api_request(&self, endpoint: &'static str, status: &str) {
        *self
            .sentry_api_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint, status.to_string()))
            .or_default() += 1;
    }

    /// Writes the process's series (the store's are written by [`render`]). Longer than most
    /// functions here because it is a list: each series once, in the order `/metrics` shows
    /// them, with its help text beside the value it reads.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP sluice_delivery_rounds_total Rounds of the delivery worker (leader only); flat on a leader means it is stuck.\n# TYPE sluice_delivery_rounds_total counter\nsluice_delivery_rounds_total {}",
            self.delivery_rounds.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_delivery_channels_in_flight Channels whose messages are being sent now.\n# TYPE sluice_delivery_channels_in_flight gauge\nsluice_delivery_channels_in_flight {}",
            self.delivery_in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_fold_batches_total Fold transactions committed (leader only), empty ones included.\n# TYPE sluice_fold_batches_total counter\nsluice_fold_batches_total {}\n# HELP sluice_folded_deliveries_total Deliveries folded into counts, cooldowns and messages by this replica.\n# TYPE sluice_folded_deliveries_total counter\nsluice_folded_deliveries_total {}",
            self.fold_batches.load(Ordering::Relaxed),
            self.folded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_webhooks_total Webhooks answered, by Sentry resource and outcome (stored, duplicate, ignored, malformed, unauthorized, unavailable, too_large, timeout, overloaded, other).\n# TYPE sluice_webhooks_total counter"
        );
        for ((resource, outcome), n) in self
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_webhooks_total{{resource=\"{resource}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_ingest_duration_seconds Time from a webhook's arrival to its answer.\n# TYPE sluice_ingest_duration_seconds histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "sluice_ingest_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sluice_ingest_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nsluice_ingest_duration_seconds_sum {}\nsluice_ingest_duration_seconds_count {count}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP sluice_slack_requests_total Requests to Slack by channel and result (ok, rate_limited, transient_error, permanent_error).\n# TYPE sluice_slack_requests_total counter"
        );
        for ((channel, status), n) in self
            .slack_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_slack_requests_total{{channel=\"{}\",status=\"{status}\"}} {n}",
                label(channel)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_slack_interactions_total Clicks on Sluice's Slack buttons by action and outcome.\n# TYPE sluice_slack_interactions_total counter"
        );
        for ((action, outcome), n) in self
            .slack_interactions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_slack_interactions_total{{action=\"{action}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_slack_retries_total Sends scheduled for a retry, by channel and reason (retry_after, backoff).\n# TYPE sluice_slack_retries_total counter"
        );
        for ((channel, reason), n) in self
            .retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_slack_retries_total{{channel=\"{}\",reason=\"{reason}\"}} {n}",
                label(channel)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_slack_retry_after_seconds_total Seconds Slack asked Sluice to wait (Retry-After), by channel.\n# TYPE sluice_slack_retry_after_seconds_total counter"
        );
        for (channel, ms) in self
            .retry_after_millis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_slack_retry_after_seconds_total{{channel=\"{}\"}} {}",
                label(channel),
                *ms as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_sentry_api_requests_total Requests to Sentry's API by endpoint (issue_update, members, comment) and status (the HTTP status code, or timeout, error).\n# TYPE sluice_sentry_api_requests_total counter"
        );
        for ((endpoint, status), n) in self
            .sentry_api_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_sentry_api_requests_total{{endpoint=\"{endpoint}\",status=\"{}\"}} {n}",
                label(status)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_config_reloads_total Config reloads (SIGHUP or file change) by outcome, since start.\n# TYPE sluice_config_reloads_total counter\nsluice_config_reloads_total{{outcome=\"ok\"}} {}\nsluice_config_reloads_total{{outcome=\"error\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP sluice_http_connections Client connections open now.\n# TYPE sluice_http_connections gauge\nsluice_http_connections {}\n# HELP sluice_http_connection_limit_reached_total Connections accepted while server.max_connections were open.\n# TYPE sluice_http_connection_limit_reached_total counter\nsluice_http_connection_limit_reached_total {}\n# HELP sluice_http_connections_closed_total Connections Sluice closed, by reason (header_timeout, idle_timeout, shed).\n# TYPE sluice_http_connections_closed_total counter",
            self.http_connections.load(Ordering::Relaxed),
            self.http_connection_limit_reached.load(Ordering::Relaxed),
        );
        for why in ConnectionClose::ALL {
            let _ = writeln!(
                out,
                "sluice_http_connections_closed_total{{reason=\"{}\"}} {}",
                why.label(),
                self.http_connections_closed[why as usize].load(Ordering::Relaxed)
            );
        }
    }
}

/// How long the oldest delivery not yet folded has waited at `now_ms`, in seconds (0 when
/// none waits).
pub fn fold_lag_seconds(backlog: &crate::store::FoldBacklog, now_ms: i64) -> f64 {
    backlog
        .oldest_ms
        .map_or(0.0, |oldest| (now_ms - oldest).max(0) as f64 / 1000.0)
}

/// Escapes a label value (`\`, `"`, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every series. The process's own series are always there; the ones read from the
/// store only while it answers, and `sluice_store_up` says which: a scrape during a store
/// outage still shows the outage (and the webhooks answered `503`).
pub async fn render(state: &AppState) -> String {
    let mut out = String::new();
    let store_up = match store_series(state).await {
        Ok(text) => {
            out.push_str(&text);
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics: the store does not answer; its series are left out");
            false
        }
    };
    state.counters.render(&mut out);
    let _ = writeln!(
        out,
        "# HELP sluice_store_up 1 when the store answered this scrape's reads, 0 when it did not (its series are then missing).\n# TYPE sluice_store_up gauge\nsluice_store_up {}",
        u8::from(store_up)
    );
    let _ = writeln!(
        out,
        "# HELP sluice_leader 1 while this replica leads (delivers to Slack, runs the digest), 0 on a follower.\n# TYPE sluice_leader gauge\nsluice_leader {}",
        u8::from(state.leading.load(std::sync::atomic::Ordering::SeqCst))
    );
    let _ = writeln!(
        out,
        "# HELP sluice_build_info Build information.\n# TYPE sluice_build_info gauge\nsluice_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// The series read from the store: the per-channel accounting, digests, dead letters, the
/// oldest waiting message and the last delivery.
async fn store_series(state: &AppState) -> Result<String, StoreError> {
    let live = state.live.load_full();
    let mut totals = Vec::new();
    for channel in live.config.channels.keys() {
        totals.push((channel.clone(), state.store.channel_totals(channel).await?));
    }
    let mut out = String::new();
    for series in CHANNEL_SERIES {
        let _ = writeln!(out, "# HELP {} {}", series.name, series.help);
        let _ = writeln!(out, "# TYPE {} {}", series.name, series.kind);
        for (channel, t) in &totals {
            let _ = writeln!(
                out,
                "{}{{channel=\"{}\"}} {}",
                series.name,
                label(channel),
                (series.value)(t)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_digest_last_success_timestamp_seconds When Slack last accepted the channel's weekly digest (Unix seconds).\n# TYPE sluice_digest_last_success_timestamp_seconds gauge"
    );
    for (channel, t) in &totals {
        if let Some(ms) = t.last_digest_ms {
            let _ = writeln!(
                out,
                "sluice_digest_last_success_timestamp_seconds{{channel=\"{}\"}} {}",
                label(channel),
                ms / 1000
            );
        }
    }
    // Dead letters by channel and reason code: Slack's error token, `http_<status>`, or
    // Sluice's own (see `slack::Refusal`), stored with each dead letter.
    let dead = state.store.dead_letter_counts().await?;
    let _ = writeln!(
        out,
        "# HELP sluice_dead_letters Dead letters: messages Slack refused for good (or given up on after slack.max_retry_age) and not replayed, by channel and error.\n# TYPE sluice_dead_letters gauge"
    );
    for (channel, error, n) in &dead {
        let _ = writeln!(
            out,
            "sluice_dead_letters{{channel=\"{}\",error=\"{}\"}} {n}",
            label(channel),
            label(error)
        );
    }
    let now = state.clock.now_ms();
    let _ = writeln!(
        out,
        "# HELP sluice_outbox_oldest_age_seconds Age of the oldest message waiting for the channel.\n# TYPE sluice_outbox_oldest_age_seconds gauge"
    );
    for (channel, t) in &totals {
        let age = t
            .oldest_pending_ms
            .map_or(0, |created| (now - created).max(0) / 1000);
        let _ = writeln!(
            out,
            "sluice_outbox_oldest_age_seconds{{channel=\"{}\"}} {age}",
            label(channel)
        );
    }
    let backlog = state.store.fold_backlog().await?;
    let _ = writeln!(
        out,
        "# HELP sluice_fold_pending Deliveries stored and not yet folded into counts and messages.\n# TYPE sluice_fold_pending gauge\nsluice_fold_pending {}\n# HELP sluice_fold_lag_seconds How long the oldest delivery not yet folded has waited (0 when none waits).\n# TYPE sluice_fold_lag_seconds gauge\nsluice_fold_lag_seconds {}",
        backlog.pending,
        fold_lag_seconds(&backlog, now)
    );
    if let Some(last) = state.store.last_delivery_at().await? {
        let _ = writeln!(
            out,
            "# HELP sluice_last_delivery_timestamp_seconds When the latest verified Sentry delivery arrived (Unix seconds).\n# TYPE sluice_last_delivery_timestamp_seconds gauge\nsluice_last_delivery_timestamp_seconds {}",
            last / 1000
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that stops answering leaves `/metrics` answering: the process's series, and
    /// `sluice_store_up 0` instead of the accounting.
    #[tokio::test]
    async fn metrics_answer_while_the_store_is_down() {
        let config = crate::config::Config::parse(
            "default_channel = \"c\"\n[channels.c]\nconsole = true\n",
            std::path::Path::new("routes.toml"),
            &|_| None,
        )
        .unwrap();
        let store = crate::store::SqliteStore::open("sqlite::memory:", crate::storm::planner())
            .await
            .unwrap();
        let state = AppState::new(std::sync::Arc::new(store.clone()), config);
        let up = render(&state).await;
        assert!(up.contains("\nsluice_store_up 1\n"), "{up}");
        assert!(
            up.contains("sluice_occurrences_routed_total{channel=\"c\"} 0"),
            "{up}"
        );
        store.close().await;
        let down = render(&state).await;
        assert!(down.contains("\nsluice_store_up 0\n"), "{down}");
        assert!(!down.contains("sluice_occurrences_routed_total"), "{down}");
        assert!(down.contains("sluice_delivery_rounds_total 0"), "{down}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
