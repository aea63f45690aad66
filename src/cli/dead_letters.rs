//! `sluice dead-letters`: the messages Slack refused for good, listed or queued again. Like
//! `sluice mute`, it acts on the store the configuration names (`storage.url`), the one a
//! running service uses, on either backend: a replay writes new outbox rows, and the store
//! write announces them, so the running service's delivery worker (the leader's, with
//! replicas) sends them; no restart, no HTTP call to the service.

use std::fmt::Write;

use clap::Args;

use super::ConfigArg;
use super::shared::{columns, config_with, with_store};
use crate::clock::Clock;
use crate::config::{Config, parse_duration};
use crate::store::{DeadLetter, DeadLetterFilter};

/// How many dead letters the list shows unless told otherwise.
const DEFAULT_LIMIT: u32 = 50;

/// `sluice dead-letters`.
#[derive(Debug, Args)]
pub(super) struct DeadLettersArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this channel's (a key of `[channels]` in routes.toml).
    #[arg(long)]
    channel: Option<String>,
    /// Only those dead-lettered since this time: an RFC 3339 timestamp
    /// (`2025-11-22T14:00:00Z`) or a duration ago (`2h`, `3d`; units ms, s, m, h, d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// List at most this many, the newest.
    #[arg(
        long,
        default_value_t = DEFAULT_LIMIT,
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with = "replay"
    )]
    limit: u32,
    /// Queue them again (all that `--channel` and `--since` select) as new messages, for the
    /// running service to send, and remove them from the dead letters.
    #[arg(long)]
    replay: bool,
}

/// `sluice dead-letters [--replay]`: lists the dead letters, or queues them again.
pub(super) fn run(args: &DeadLettersArgs) -> Result<String, String> {
    let path = &args.config.config;
    let config = match &args.channel {
        Some(channel) => config_with(path, channel)?,
        None => Config::load(path).map_err(|e| e.to_string())?,
    };
    let now = Clock::system().now_ms();
    let since_ms = args
        .since
        .as_deref()
        .map(|since| parse_since(since, now).map_err(|e| format!("--since: {e}")))
        .transpose()?;
    let filter = DeadLetterFilter {
        channel: args.channel.clone(),
        since_ms,
        before_id: None,
    };
    if args.replay {
        let ids = with_store(&config, async |store| {
            store
                .replay_dead_letters(&filter, now)
                .await
                .map_err(|e| e.to_string())
        })?;
        return Ok(replayed(&ids, &filter));
    }
    // One more than shown, to tell whether the list was cut.
    let fetch = args.limit.saturating_add(1);
    let mut dead = with_store(&config, async |store| {
        store
            .dead_letters(&filter, fetch)
            .await
            .map_err(|e| e.to_string())
    })?;
    let cut = dead.len() > args.limit as usize;
    dead.truncate(args.limit as usize);
    let mut out = table(&dead, &filter);
    if cut {
        let _ = writeln!(
            out,
            "(the newest {} shown; there are more: raise --limit, or narrow with --channel or \
             --since)",
            args.limit
        );
    }
    Ok(out)
}

/// `--since`: an RFC 3339 timestamp, or a duration before `now_ms`; Unix ms.
fn parse_since(since: &str, now_ms: i64) -> Result<i64, String> {
    let since = since.trim();
    if let Ok(at) = since.parse::<jiff::Timestamp>() {
        let ms = at.as_millisecond();
        if ms > now_ms {
            return Err(format!("`{since}` is in the future"));
        }
        return Ok(ms);
    }
    match parse_duration(since) {
        Ok(ago) => {
            let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
            Ok(now_ms.saturating_sub(ago))
        }
        Err(why) => Err(format!(
            "`{since}` is neither an RFC 3339 timestamp (e.g. 2025-11-22T14:00:00Z) nor a \
             duration ago: {why}"
        )),
    }
}

/// A Unix ms instant as RFC 3339 in UTC, to the second: `2025-11-22T14:02:03Z`.
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// What the filter selects, for messages: ` in #channel since 2025-11-22T14:00:00Z`.
fn scope(filter: &DeadLetterFilter) -> String {
    let mut out = String::new();
    if let Some(channel) = &filter.channel {
        let _ = write!(out, " in #{channel}");
    }
    if let Some(since) = filter.since_ms {
        let _ = write!(out, " since {}", rfc3339(since));
    }
    out
}

/// What `--replay` prints: how many were queued again, and their new outbox ids.
fn replayed(ids: &[i64], filter: &DeadLetterFilter) -> String {
    if ids.is_empty() {
        return format!("no dead letters{}: nothing queued\n", scope(filter));
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!(
        "queued {} dead letter(s){} again (new ids {}); the running service sends them\n",
        ids.len(),
        scope(filter),
        list.join(", ")
    )
}

/// The dead letters as a table: id, channel, time (UTC), kind, Slack's error, occurrences,
/// and the issue (key and title when known); or a line saying there are none.
fn table(dead: &[DeadLetter], filter: &DeadLetterFilter) -> String {
    if dead.is_empty() {
        return format!("no dead letters{}\n", scope(filter));
    }
    let head = [
        "ID",
        "CHANNEL",
        "DEAD AT",
        "KIND",
        "ERROR",
        "OCCURRENCES",
        "ISSUE",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = dead
        .iter()
        .map(|d| {
            let issue = match (d.issue_key.as_str(), &d.title) {
                ("", _) => "-".to_string(),
                (key, Some(title)) => format!("{key} {title}"),
                (key, None) => key.to_string(),
            };
            [
                d.id.to_string(),
                format!("#{}", d.channel),
                rfc3339(d.dead_at_ms),
                d.kind.clone(),
                d.error.clone(),
                d.occurrences.to_string(),
                issue,
            ]
        })
        .collect();
    columns(&head, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_820_123_000; // 2025-11-22T14:02:03Z

    fn dead(id: i64, issue_key: &str, title: Option<&str>) -> DeadLetter {
        DeadLetter {
            id,
            kind: "alert".into(),
            title: title.map(String::from),
            channel: "checkout-prod".into(),
            issue_key: issue_key.into(),
            occurrences: 3,
            attempts: 1,
            reason: "channel_not_found".into(),
            error: "channel_not_found".into(),
            dead_at_ms: NOW,
        }
    }

    #[test]
    fn since_takes_a_timestamp_or_a_duration_ago() {
        assert_eq!(parse_since("2025-11-22T14:02:03Z", NOW), Ok(NOW));
        assert_eq!(parse_since("2025-11-22T15:02:03+01:00", NOW), Ok(NOW));
        assert_eq!(parse_since("2h", NOW), Ok(NOW - 2 * 3_600_000));
        assert_eq!(parse_since(" 3d ", NOW), Ok(NOW - 3 * 86_400_000));
        let err = parse_since("yesterday", NOW).unwrap_err();
        assert!(
            err.contains("`yesterday` is neither an RFC 3339 timestamp"),
            "{err}"
        );
        assert!(
            err.contains("unit"),
            "says what a duration looks like: {err}"
        );
        let err = parse_since("2025-11-23T00:00:00Z", NOW).unwrap_err();
        assert!(err.contains("in the future"), "{err}");
        assert!(
            parse_since("2025-11-22", NOW).is_err(),
            "a date alone is ambiguous"
        );
    }

    #[test]
    fn the_table_lines_up_and_says_when_there_is_nothing() {
        let all = DeadLetterFilter::default();
        assert_eq!(table(&[], &all), "no dead letters\n");
        let narrowed = DeadLetterFilter {
            channel: Some("errors".into()),
            since_ms: Some(NOW),
            before_id: None,
        };
        assert_eq!(
            table(&[], &narrowed),
            "no dead letters in #errors since 2025-11-22T14:02:03Z\n"
        );
        let rows = [dead(12, "4242", Some("PaymentError")), dead(7, "", None)];
        let lines: Vec<String> = table(&rows, &all).lines().map(String::from).collect();
        assert_eq!(
            lines,
            [
                "ID  CHANNEL         DEAD AT               KIND   ERROR              OCCURRENCES  ISSUE",
                "12  #checkout-prod  2025-11-22T14:02:03Z  alert  channel_not_found  3            4242 PaymentError",
                "7   #checkout-prod  2025-11-22T14:02:03Z  alert  channel_not_found  3            -",
            ]
        );
    }

    #[test]
    fn a_replay_says_how_many_and_their_new_ids() {
        let filter = DeadLetterFilter {
            channel: Some("errors".into()),
            ..Default::default()
        };
        assert_eq!(
            replayed(&[], &filter),
            "no dead letters in #errors: nothing queued\n"
        );
        assert_eq!(
            replayed(&[41, 42], &filter),
            "queued 2 dead letter(s) in #errors again (new ids 41, 42); the running service \
             sends them\n"
        );
    }
}
