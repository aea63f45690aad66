//! The command line: `serve`, `check`, `route`, `digest`, `sign`, `mute`, `unmute`,
//! `mutes` (in `cli/mutes.rs`) and `dead-letters` (in `cli/dead_letters.rs`). `main.rs` only
//! calls [`main`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::alert::{Alert, Level};
use crate::clock::Clock;
use crate::config::Config;
use crate::counts::{DAY_MS, IssueStats};
use crate::routing::Router;
use crate::sentry::{self, Parsed};
use crate::slack::render_alert;

mod dead_letters;
mod mutes;
mod shared;

/// Sluice routes Sentry webhooks to Slack channels, with counts and storm control.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Path of routes.toml.
    #[arg(
        short = 'c',
        long = "config",
        env = "SLUICE_CONFIG",
        default_value = "routes.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ConfigArg),
    /// Validate the configuration; exit 0, or 1 with `file:line:col: message`.
    Check(ConfigArg),
    /// Print the routes and channels an error would reach.
    Route(RouteArgs),
    /// Build the weekly digest now (the 7 days ending today) and post it, or print it.
    Digest {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this channel (default: every channel that gets a digest).
        #[arg(long)]
        channel: Option<String>,
        /// Print the digest instead of posting it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the Sentry-Hook-Signature of a body, for trying the service with curl; with
    /// `--slack`, the two headers Slack signs an interaction with (`curl -H @headers`).
    Sign {
        /// The integration's client secret (with `--slack`: the Slack app's signing secret).
        #[arg(long)]
        secret: String,
        /// Sign as Slack signs a request to `POST /slack/interactions`, timestamped now:
        /// prints `X-Slack-Request-Timestamp` and `X-Slack-Signature` header lines.
        #[arg(long)]
        slack: bool,
        /// File holding the exact body to send (`curl --data-binary @FILE`).
        file: PathBuf,
    },
    /// Mute an issue in a channel for a while: its occurrences there are counted, not posted,
    /// and one message says how many when the mute ends.
    Mute(mutes::MuteArgs),
    /// End an issue's mute in a channel now; what it held back is posted.
    Unmute(mutes::UnmuteArgs),
    /// List the active mutes.
    Mutes(ConfigArg),
    /// List the messages Slack refused for good, newest first; with `--replay`, queue them
    /// again for the running service to send.
    DeadLetters(dead_letters::DeadLettersArgs),
}

#[derive(Debug, Args)]
struct RouteArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Project slug (service).
    #[arg(long, required_unless_present = "payload")]
    project: Option<String>,
    /// Environment.
    #[arg(long, conflicts_with = "payload")]
    environment: Option<String>,
    /// Level (debug, info, warning, error, fatal).
    #[arg(long, default_value = "error", conflicts_with = "payload")]
    level: Level,
    /// A tag, `key=value`; may be repeated.
    #[arg(long = "tag", value_parser = parse_tag, conflicts_with = "payload")]
    tags: Vec<(String, String)>,
    /// A real Sentry payload (JSON file): also prints the Slack message it would produce.
    #[arg(long, conflicts_with = "project")]
    payload: Option<PathBuf>,
    /// The payload's Sentry-Hook-Resource; guessed from the body when absent.
    #[arg(long, requires = "payload")]
    resource: Option<String>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args.config),
        Command::Check(args) => match Config::load(&args.config) {
            Ok(config) => {
                println!(
                    "{}: OK ({} routes, {} channels)",
                    args.config.display(),
                    config.routes.len(),
                    config.channels.len()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        },
        Command::Route(args) => finish(route(&args)),
        Command::Digest {
            config,
            channel,
            dry_run,
        } => finish(digest(&config.config, channel.as_deref(), dry_run)),
        Command::Mute(args) => finish(mutes::mute(&args)),
        Command::Unmute(args) => finish(mutes::unmute(&args)),
        Command::Mutes(args) => finish(mutes::list(&args.config)),
        Command::DeadLetters(args) => finish(dead_letters::run(&args)),
        Command::Sign {
            secret,
            slack,
            file,
        } => match std::fs::read(&file) {
            Ok(body) if slack => {
                let now = crate::clock::Clock::system().now_ms() / 1000;
                println!("X-Slack-Request-Timestamp: {now}");
                println!(
                    "X-Slack-Signature: {}",
                    crate::slack::signing::sign(&secret, now, &body)
                );
                ExitCode::SUCCESS
            }
            Ok(body) => {
                println!("{}", sentry::sign(&body, secret.as_bytes()));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}: {err}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// Sets up logging from `SLUICE_LOG` (default `info`) and `SLUICE_LOG_FORMAT=json`, to stderr
/// (stdout belongs to console channels).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(path: &Path) -> ExitCode {
    init_tracing();
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
        crate::server::run(listener, config, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "sluice: stopped with an error");
            eprintln!("sluice: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("sluice: shutting down");
}

/// `sluice digest`: builds each digest now; prints it (`--dry-run`) or posts it directly.
fn digest(path: &Path, only: Option<&str>, dry_run: bool) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let channels = crate::digest::digest_channels(&config);
    let channels: Vec<String> = match only {
        Some(c) if channels.iter().any(|x| x == c) => vec![c.to_string()],
        Some(c) if config.channels.contains_key(c) => return Err(no_digest_reason(&config, c)),
        Some(c) => return Err(format!("no channel `{c}` in {}", path.display())),
        None => channels,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let store = crate::store::open(config.storage.url.expose(), crate::storm::planner())
            .await
            .map_err(|e| e.to_string())?;
        let client = crate::slack::SlackClient::from_config(&config.slack);
        let mut out = String::new();
        let mut failed = Vec::new();
        // The 7 days ending today: a scheduled digest covers the 7 days before its run day.
        let period_end = (Clock::system().now_ms() / DAY_MS + 1) * DAY_MS;
        for channel in channels {
            let report = crate::digest::build(&*store, &config, &channel, period_end)
                .await
                .map_err(|e| e.to_string())?;
            let message = report.render();
            if dry_run {
                out.push_str(&message.text);
                out.push_str("\n\n");
                continue;
            }
            let Some(dest) = crate::outbox::destination(&config, &channel) else {
                continue;
            };
            match client.send(&dest, &message, None).await {
                crate::slack::SendOutcome::Posted { .. } => {
                    out.push_str(&format!("posted the digest to #{channel}\n"));
                }
                crate::slack::SendOutcome::Failed(why) => {
                    failed.push(format!("#{channel}: {why:?}"));
                }
            }
        }
        if failed.is_empty() {
            Ok(out)
        } else {
            Err(format!("{out}could not post: {}", failed.join("; ")))
        }
    })
}

/// Why configured channel `channel` gets no digest: the routes to it all say `digest = false`,
/// or no route sends to it at all (and it is not `default_channel`).
fn no_digest_reason(config: &Config, channel: &str) -> String {
    let routes: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| r.channels.iter().any(|c| c == channel))
        .map(|r| r.name.as_str())
        .collect();
    if routes.is_empty() {
        format!(
            "channel `{channel}` gets no digest: no route sends to it and it is not \
             default_channel (a digest covers what routes sent to a channel)"
        )
    } else {
        format!(
            "channel `{channel}` gets no digest: every route to it says digest = false ({})",
            routes.join(", ")
        )
    }
}

/// Guesses the Sentry-Hook-Resource of a saved payload from its shape.
fn guess_resource(body: &[u8]) -> Option<&'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = &value["data"];
    [
        ("event", "event_alert"),
        ("error", "error"),
        ("metric_alert", "metric_alert"),
        ("installation", "installation"),
        ("comment", "comment"),
        ("activity", "activity_alert"),
        ("issue", "issue"),
    ]
    .into_iter()
    .find(|(key, _)| !data[*key].is_null())
    .map(|(_, resource)| resource)
    .or_else(|| (!value["project_slug"].is_null()).then_some("legacy"))
}

/// Prints a command's output (exit 0) or its error (exit 1).
fn finish(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => {
            write_stdout(&out);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`sluice route … | head`) is not an error.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// What `sluice route` prints.
fn route(args: &RouteArgs) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    let config = Config::load(&args.config.config).map_err(|e| e.to_string())?;
    let router = Router::new(&config);
    let alert = match &args.payload {
        Some(path) => match payload_alert(path, args.resource.as_deref(), &config)? {
            Parsed::Alert(alert) => *alert,
            Parsed::Ignored(reason) => return Ok(format!("ignored: {reason}\n")),
        },
        None => flag_alert(args),
    };
    let targets = router.route(&alert);
    for target in &targets {
        let _ = writeln!(
            out,
            "{} -> {}{}",
            target.route.as_deref().unwrap_or("(default_channel)"),
            target.channel,
            target
                .mention
                .as_deref()
                .map(|m| format!(" (mention {m})"))
                .unwrap_or_default()
        );
    }
    if args.payload.is_some() {
        // Counts as if this were the first occurrence Sluice saw, today.
        let now = Clock::system().now_ms();
        let stats = IssueStats {
            daily: IssueStats::from_days(
                now / DAY_MS,
                alert.is_occurrence().then_some((now / DAY_MS, 1)),
            ),
            first_seen_ms: Some(now),
            sentry_count: alert.sentry_count,
            ..Default::default()
        };
        for target in &targets {
            let message = render_alert(&alert, target, &stats);
            let json = json!({"channel": target.channel, "message": message});
            let pretty = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
            let _ = writeln!(out, "{pretty}");
        }
    }
    Ok(out)
}

/// What `sluice route --payload` reads from the file at `path`: the payload parsed under
/// `resource` (guessed from the body when not given; `legacy` for the WebHooks plugin).
fn payload_alert(
    path: &std::path::Path,
    resource: Option<&str>,
    config: &Config,
) -> Result<Parsed, String> {
    let body = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let resource = match resource {
        Some(r) => r,
        None => guess_resource(&body).ok_or_else(|| {
            format!(
                "{}: cannot tell the resource; pass --resource",
                path.display()
            )
        })?,
    };
    let parsed = if resource == "legacy" {
        sentry::parse_legacy(&body, &config.sentry.projects).map(|a| Parsed::Alert(Box::new(a)))
    } else {
        sentry::parse(resource, &body, &config.sentry.projects)
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

/// The alert `sluice route` routes without `--payload`: an event of the flags' project,
/// environment, level and tags.
fn flag_alert(args: &RouteArgs) -> Alert {
    Alert {
        resource: "event_alert".into(),
        action: "triggered".into(),
        issue_key: "cli".into(),
        short_id: None,
        event_id: None,
        projects: vec![args.project.clone().unwrap_or_default()],
        environment: args.environment.clone(),
        level: args.level,
        title: "(sluice route)".into(),
        culprit: None,
        release: None,
        issue_url: None,
        event_url: None,
        tags: args.tags.clone(),
        timestamp: None,
        sentry_first_seen: None,
        sentry_count: None,
        rule: None,
        detail: None,
        state: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sluice digest --channel C` says why C gets no digest, truthfully for both causes.
    #[test]
    fn digest_for_a_channel_without_one_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            r#"
default_channel = "errors"

[channels.errors]
console = true

[channels.unrouted]
console = true

[channels.quiet]
console = true

[[routes]]
name = "quiet route"
project = "quiet"
channels = ["quiet"]
digest = false
"#,
        )
        .unwrap();
        let err = digest(&path, Some("unrouted"), true).unwrap_err();
        assert!(err.contains("no route sends to it"), "{err}");
        assert!(!err.contains("digest = false"), "{err}");
        let err = digest(&path, Some("quiet"), true).unwrap_err();
        assert!(
            err.contains("every route to it says digest = false (quiet route)"),
            "{err}"
        );
    }
}
