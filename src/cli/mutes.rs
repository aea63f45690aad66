//! `sluice mute`, `sluice unmute`, `sluice mutes`: mutes from the command line. They act on the
//! store the configuration names (`storage.url`), the one a running service uses, on either
//! backend: a mute is a row, so the service (every replica) sees it at once, and the message
//! that ends a mute is queued for the service's delivery worker.

use std::path::Path;

use clap::Args;

use super::ConfigArg;
use super::shared::{columns, config_with, with_store};
use crate::clock::Clock;
use crate::config::{Config, format_duration, parse_duration};
use crate::store::Mute;

/// `sluice mute`.
#[derive(Debug, Args)]
pub(super) struct MuteArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The issue: Sentry's issue id (the number in its URL).
    #[arg(long)]
    issue: String,
    /// The channel (a key of `[channels]` in routes.toml).
    #[arg(long)]
    channel: String,
    /// For how long, e.g. `1h`, `24h`, `7d` (units ms, s, m, h, d).
    #[arg(long = "for", value_name = "DURATION")]
    duration: String,
}

/// `sluice unmute`.
#[derive(Debug, Args)]
pub(super) struct UnmuteArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The issue: Sentry's issue id.
    #[arg(long)]
    issue: String,
    /// The channel (a key of `[channels]`).
    #[arg(long)]
    channel: String,
}

/// Who a mute from the command line is by: the login running it, else `cli`.
fn by() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "cli".to_string())
}

/// A Unix ms instant as `2025-11-22 14:02 UTC`.
fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// `sluice mute`: mutes the issue in the channel from now for `--for`.
pub(super) fn mute(args: &MuteArgs) -> Result<String, String> {
    let config = config_with(&args.config.config, &args.channel)?;
    let duration = parse_duration(&args.duration).map_err(|e| format!("--for: {e}"))?;
    if duration.is_zero() {
        return Err("--for: a mute must last longer than 0s".to_string());
    }
    let issue = args.issue.trim();
    if issue.is_empty() {
        return Err("--issue: empty".to_string());
    }
    let now = Clock::system().now_ms();
    let until = now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
    let by = by();
    with_store(&config, async |store| {
        store
            .mute(issue, &args.channel, until, Some(&by), now)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(format!(
        "muted issue {issue} in #{} until {} (for {}): its occurrences there are counted, \
         not posted; one message says how many when the mute ends\n",
        args.channel,
        utc(until),
        format_duration(duration)
    ))
}

/// `sluice unmute`: ends the mute now; what it held back is posted.
pub(super) fn unmute(args: &UnmuteArgs) -> Result<String, String> {
    let config = config_with(&args.config.config, &args.channel)?;
    let (issue, channel) = (args.issue.trim(), args.channel.as_str());
    let now = Clock::system().now_ms();
    let (mute, ended) = with_store(&config, async |store| {
        let mute = store.mute_of(issue, channel, now).await;
        let ended = store.unmute(issue, channel, now).await;
        Ok((
            mute.map_err(|e| e.to_string())?,
            ended.map_err(|e| e.to_string())?,
        ))
    })?;
    Ok(match mute {
        Some(m) if m.held > 0 => format!(
            "unmuted issue {issue} in #{channel}; the {} occurrence(s) it held back will be posted\n",
            m.held
        ),
        _ if ended => format!("unmuted issue {issue} in #{channel}\n"),
        _ => format!("issue {issue} was not muted in #{channel}\n"),
    })
}

/// `sluice mutes`: the active mutes, the soonest to end first.
pub(super) fn list(path: &Path) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let now = Clock::system().now_ms();
    let mutes = with_store(&config, async |store| {
        store.mutes(now).await.map_err(|e| e.to_string())
    })?;
    Ok(table(&mutes))
}

/// The mutes as a table: issue, channel, until (UTC), by, held, title.
fn table(mutes: &[Mute]) -> String {
    if mutes.is_empty() {
        return "no active mutes\n".to_string();
    }
    let rows: Vec<[String; 6]> = mutes
        .iter()
        .map(|m| {
            [
                m.issue_key.clone(),
                format!("#{}", m.channel),
                utc(m.until_ms),
                m.by.clone().unwrap_or_else(|| "-".into()),
                m.held.to_string(),
                m.title.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["ISSUE", "CHANNEL", "UNTIL", "BY", "HELD", "TITLE"].map(String::from);
    columns(&head, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_says_when_there_is_nothing() {
        assert_eq!(table(&[]), "no active mutes\n");
        let mute = Mute {
            issue_key: "4242".into(),
            channel: "checkout-prod".into(),
            until_ms: 1_763_820_120_000,
            by: Some("ada".into()),
            held: 37,
            title: Some("PaymentError".into()),
        };
        let text = table(&[mute]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ISSUE  CHANNEL         UNTIL                 BY   HELD  TITLE",
                "4242   #checkout-prod  2025-11-22 14:02 UTC  ada  37    PaymentError",
            ]
        );
    }
}
