//! `/metrics` in the Prometheus text format. Every series Sluice exports is named and
//! documented here, in one place.
//!
//! The delivery accounting is read from the store at scrape time rather than kept in process
//! memory, so it is exact across restarts (and, with a shared database, across replicas). Per
//! channel, at every moment:
//! `sluice_occurrences_routed_total = sluice_occurrences_posted_total
//!  + sluice_occurrences_pending + sluice_occurrences_dead_total`.

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
        name: "sluice_occurrences_dead_total",
        kind: "counter",
        help: "Occurrences carried by dead-lettered messages.",
        value: |t| t.occurrences_dead,
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
    /// `sluice_slack_retries_total{channel,reason}` and the Retry-After seconds waited.
    retries: Mutex<BTreeMap<(String, &'static str), u64>>,
    retry_after_millis: Mutex<BTreeMap<String, u64>>,
}

impl Registry {
    /// One webhook answered with `outcome` (`stored`, `duplicate`, `ignored`, `malformed`,
    /// `unauthorized`, `unavailable`), after `took`.
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

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP sluice_webhooks_total Webhooks answered, by Sentry resource and outcome.\n# TYPE sluice_webhooks_total counter"
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
            "# HELP sluice_config_reloads_total Config reloads (SIGHUP or file change) by outcome, since start.\n# TYPE sluice_config_reloads_total counter\nsluice_config_reloads_total{{outcome=\"ok\"}} {}\nsluice_config_reloads_total{{outcome=\"error\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        );
    }
}

/// The `error` label of a dead letter: Slack's own error token as it is, Sluice's reasons as
/// one token each, anything else `other`.
fn error_label(error: &str) -> &str {
    if error.starts_with("gave up after") {
        "max_retry_age"
    } else if error.ends_with("is no longer configured") {
        "channel_not_configured"
    } else if !error.is_empty()
        && error.len() <= 64
        && error
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        error
    } else {
        "other"
    }
}

/// Escapes a label value (`\`, `"`, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every series for every configured channel.
pub async fn render(state: &AppState) -> Result<String, StoreError> {
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
    // Dead letters by channel and error: Slack's error strings are short tokens; Sluice's own
    // longer reasons are folded into one token each, so the label set stays small.
    let mut dead: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (channel, error, n) in state.store.dead_letter_counts().await? {
        *dead
            .entry((channel, error_label(&error).to_string()))
            .or_default() += n;
    }
    let _ = writeln!(
        out,
        "# HELP sluice_dead_letters_total Messages Slack refused for good (or given up on after slack.max_retry_age), by channel and error.\n# TYPE sluice_dead_letters_total counter"
    );
    for ((channel, error), n) in &dead {
        let _ = writeln!(
            out,
            "sluice_dead_letters_total{{channel=\"{}\",error=\"{}\"}} {n}",
            label(channel),
            label(error)
        );
    }
    let now = crate::state::now_ms();
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
    state.counters.render(&mut out);
    if let Some(last) = state.store.last_delivery_at().await? {
        let _ = writeln!(
            out,
            "# HELP sluice_last_delivery_timestamp_seconds When the latest verified Sentry delivery arrived (Unix seconds).\n# TYPE sluice_last_delivery_timestamp_seconds gauge\nsluice_last_delivery_timestamp_seconds {}",
            last / 1000
        );
    }
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_errors_become_few_labels() {
        assert_eq!(error_label("channel_not_found"), "channel_not_found");
        assert_eq!(
            error_label("gave up after 9 attempts over 86400s: HTTP 500"),
            "max_retry_age"
        );
        assert_eq!(
            error_label("channel `x` is no longer configured"),
            "channel_not_configured"
        );
        assert_eq!(error_label("HTTP 404: <html>…"), "other");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
