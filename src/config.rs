//! routes.toml: the typed, validated configuration of the whole service (server, Sentry, storage,
//! Slack, channels, routes, digest), with `${VAR}` expansion and errors that point at
//! `file:line:col`.
//!
//! Loading goes: read → parse TOML → expand `${VAR}` in string values → deserialize into raw
//! structs (an unknown key is an error that lists the keys expected there) → validate and
//! resolve into [`Config`]. When several things are wrong, the error reported is the first in
//! the file.
//!
//! # Environment variables
//! Any string value (not a key, not a number) may use:
//! - `${VAR}`: the variable's value; an unset variable is an error that names it and points at
//!   the value. A variable set to the empty string is used as it is.
//! - `${VAR:-default}`: the default when `VAR` is unset *or empty* (shell convention);
//!   `${VAR:-}` gives an empty string, which for an optional secret (`legacy_token`,
//!   `bot_token`, an entry of `client_secrets`) means "not set".
//! - `$${`: a literal `${`. A `$` not followed by `{` is kept as it is.
//!
//! # Secrets
//! `sentry.client_secrets`, `sentry.legacy_token`, `slack.bot_token`, every `webhook_url` and
//! `storage.url` are [`Secret`]s: `Debug` shows `[redacted]` (the storage URL with its password
//! redacted). No error message shows a secret, a string value of the wrong type, or a value that
//! came from an environment variable (it says "the value of `${VAR}`" instead).

mod expand;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_spanned::Spanned;

pub use values::{GlobError, GlobList, LevelSpec, Rate, Secret, format_duration, parse_duration};

use expand::Expansions;

/// Default `server.listen`: loopback only, so a fresh install is not reachable from outside.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `server.max_body_bytes`: 1 MiB, far above any Sentry payload.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;
/// Default `storage.url`: an `SQLite` file in the working directory.
pub const DEFAULT_STORAGE_URL: &str = "sqlite://sluice.db";
/// Default `slack.api_base`.
pub const DEFAULT_SLACK_API_BASE: &str = "https://slack.com/api";
/// Default `digest.schedule`: Mondays at 09:00 in `digest.timezone`.
pub const DEFAULT_DIGEST_SCHEDULE: &str = "0 9 * * MON";
/// Default `digest.timezone`.
pub const DEFAULT_DIGEST_TIMEZONE: &str = "UTC";
/// Default route `cooldown` (also used for alerts no route matched): 30 minutes.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30 * 60);

/// The whole configuration, loaded from routes.toml, fully resolved and validated: every channel
/// a route names exists, every glob, regex, level, rate, duration, cron schedule and time zone
/// parsed. Cheap enough to clone; share it behind an `Arc` for reloads.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (shown in errors; reloads read it again).
    pub path: PathBuf,
    /// `default_channel` (required): the channel for alerts that no route matches.
    pub default_channel: String,
    /// `ops_channel`: where Sluice reports its own trouble (Sentry silence, dead letters, a missed
    /// digest). Default: `default_channel`.
    pub ops_channel: String,
    /// `[server]`: the HTTP listener.
    pub server: ServerConfig,
    /// `[sentry]`: webhook verification and project ids.
    pub sentry: SentryConfig,
    /// `[storage]`: the database.
    pub storage: StorageConfig,
    /// `[slack]`: Web API credentials and delivery retry policy.
    pub slack: SlackConfig,
    /// `[channels.NAME]`: every channel, by name. Never empty.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// `[[routes]]`, in file order (the order they are tried in).
    pub routes: Vec<RouteConfig>,
    /// `[digest]`: the weekly digest.
    pub digest: DigestConfig,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `listen`: `host:port` to bind. Default `"127.0.0.1:8080"` (loopback only; put
    /// `"0.0.0.0:8080"` behind a proxy or in a container).
    pub listen: String,
    /// `max_body_bytes`: largest request body accepted, in bytes; larger ones get `413`.
    /// Default 1 MiB (1,048,576 bytes), far above any Sentry payload.
    pub max_body_bytes: usize,
}

/// `[sentry]`: how webhooks are verified, and numeric project ids.
#[derive(Debug, Clone)]
pub struct SentryConfig {
    /// `client_secrets`: the integration's client secret(s); a delivery is accepted when its
    /// `Sentry-Hook-Signature` matches any one (several allow rotation). A string or a list.
    /// Empty values are dropped. Default: none, and with none every signed delivery is refused.
    pub client_secrets: Vec<Secret>,
    /// `max_clock_skew`: a `Sentry-Hook-Timestamp` further than this from now is refused
    /// (`401`). Default `"5m"`. Deduplication, not this, is the real replay defence.
    pub max_clock_skew: Duration,
    /// `legacy_token`: the `?token=` that `POST /sentry/legacy` requires. Unset or empty: the
    /// legacy endpoint is disabled.
    pub legacy_token: Option<Secret>,
    /// `quiet_alert_after`: with no verified delivery for this long, Sluice says so in
    /// `ops_channel` (Sentry disables integrations whose endpoint keeps failing). Default `"24h"`.
    pub quiet_alert_after: Duration,
    /// `[sentry.projects]`: numeric Sentry project id → project slug, for payloads that carry only
    /// the id. Default empty.
    pub projects: HashMap<String, String>,
}

impl SentryConfig {
    /// The client secrets' values, for signature verification only (any one matching is
    /// enough). Empty when none is configured, in which case every signed delivery is refused.
    pub fn client_secrets_exposed(&self) -> Vec<&str> {
        self.client_secrets.iter().map(Secret::expose).collect()
    }
}

/// `[storage]`: the database.
#[derive(Clone)]
pub struct StorageConfig {
    /// `url`: `sqlite://FILE` (embedded, one process) or `postgres://…` (several replicas).
    /// Default `"sqlite://sluice.db"`. A secret, since it may hold a password; see
    /// [`StorageConfig::redacted_url`] for display.
    pub url: Secret,
    /// `retention_days`: day counts older than this many days are pruned. Default 90; at least 30
    /// would keep the month column right, so at least 1 is enforced and 30+ is advised.
    pub retention_days: u32,
}

impl StorageConfig {
    /// The URL with any password (and any query string, which may carry one) replaced by
    /// `[redacted]`: `postgres://sluice:[redacted]@db/sluice`.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose())
    }
}

/// A database URL fit for messages and logs: the password of `user:password@` and the whole
/// query string (which may carry `password=`) are replaced by `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, _)) => (url, "?[redacted]"),
        None => (url, ""),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:[redacted]@{host}{path}{query}")
        }
        None => format!("{scheme}://{authority}{path}{query}"),
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.redacted_url())
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

/// `[slack]`: Web API credentials and the delivery retry policy.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// `bot_token`: the bot token (`xoxb-…`) for channels that name a `slack_channel`. Unset or
    /// empty: no Web API channel may be configured.
    pub bot_token: Option<Secret>,
    /// `api_base`: the Web API base URL, without a trailing `/`. Default
    /// `"https://slack.com/api"`; tests point it at a fake Slack.
    pub api_base: String,
    /// `max_retry_age`: how long a message is retried after 5xx, time-outs and connection
    /// errors before it is dead-lettered. Default `"24h"`.
    pub max_retry_age: Duration,
    /// `timeout`: per-request time-out for calls to Slack. Default `"10s"`.
    pub timeout: Duration,
    /// `retry_initial_backoff`: wait after the first 5xx/time-out; doubles each attempt (with
    /// jitter) up to `retry_max_backoff`. Default `"1s"`.
    pub retry_initial_backoff: Duration,
    /// `retry_max_backoff`: the longest wait between two attempts. Default `"10m"`.
    pub retry_max_backoff: Duration,
}

/// `[channels.NAME]`: one Slack destination and its storm limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    /// The table's name (`NAME`), as routes refer to it.
    pub name: String,
    /// Where messages go: exactly one of `console = true`, `webhook_url` or `slack_channel`.
    pub target: ChannelTarget,
    /// `rate`: sustained message rate of the channel's GCRA limit. Default `"1/s"`, Slack's own
    /// limit per channel.
    pub rate: Rate,
    /// `burst`: messages that may go out at once before `rate` applies. Default 3, at least 1.
    pub burst: u32,
    /// `max_backlog`: when more messages than this wait for the channel, they are rolled up
    /// into one summary. Default 20, at least 1.
    pub max_backlog: u32,
}

/// Where a channel's messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelTarget {
    /// `console = true`: print messages to standard output (for trying Sluice without Slack).
    Console,
    /// `webhook_url`: a Slack incoming webhook. The URL is the credential, hence a secret.
    Webhook {
        /// The incoming-webhook URL (http(s)).
        url: Secret,
    },
    /// `slack_channel`: the Web API (`chat.postMessage`, `chat.update`, threads), with
    /// `slack.bot_token`.
    WebApi {
        /// Channel id (`C0123456789`) or name the bot posts to.
        channel: String,
    },
}

/// `[[routes]]`: one route. An alert matches when every matcher the route sets matches; a route
/// with no matchers matches everything.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `name`: shown by `sluice route` and in logs. Default `"route N"` (N = 1-based position).
    pub name: String,
    /// `project`: glob or list of globs; matches if any of the alert's projects matches any.
    pub project: Option<GlobList>,
    /// `environment`: glob or list of globs on the alert's environment. An alert without an
    /// environment never matches a route that sets this.
    pub environment: Option<GlobList>,
    /// `level`: `">=error"`, `">warning"`, `"<=info"`, `"<error"`, `"=fatal"`, a bare name
    /// (exactly that level) or a list of these (any may match).
    pub level: Option<LevelSpec>,
    /// `tags = { key = "glob" }` (or a list of globs): every listed tag must be present on the
    /// alert and match. In file order.
    pub tags: Vec<(String, GlobList)>,
    /// `title`: a regex searched (not anchored) in the alert's title; case-sensitive unless it
    /// starts with `(?i)`.
    pub title: Option<Regex>,
    /// `resource`: globs, each matched against the alert's resource (`"issue"`) or kind
    /// (`"issue.resolved"`).
    pub resource: Option<GlobList>,
    /// `channels` (required, non-empty): channel names, each defined under `[channels]`.
    pub channels: Vec<String>,
    /// `continue`: when true, matching goes on after this route (so an alert may reach the
    /// channels of several routes). Default false: the first match wins.
    pub continue_matching: bool,
    /// `cooldown`: after a message for an issue in a channel, further occurrences within this
    /// long are counted, not posted. Default `"30m"`; `"0s"` posts every occurrence (still
    /// subject to the channel's rate).
    pub cooldown: Duration,
    /// `mention`: text added to the message when this route matches, e.g. `"<!subteam^S0123>"`.
    pub mention: Option<String>,
    /// `mention_level`: the mention is added only for these levels. Same syntax as `level`,
    /// except that a bare name means that level or higher (`"error"` = `">=error"`). Default: all
    /// levels. Requires `mention`.
    pub mention_level: Option<LevelSpec>,
    /// `digest`: whether issues routed here count in the channels' weekly digest. Default true.
    pub digest: bool,
}

/// `[digest]`: the weekly digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestConfig {
    /// `schedule`: 5-field cron (minute hour day-of-month month day-of-week; names like `MON`
    /// allowed), read in `timezone`. Default `"0 9 * * MON"`.
    pub schedule: String,
    /// `timezone`: IANA time zone name for `schedule`. Default `"UTC"`. Validated with
    /// `jiff::tz::TimeZone::get`.
    pub timezone: String,
    /// `top`: how many issues the digest lists. Default 10, at least 1.
    pub top: usize,
}

impl DigestConfig {
    /// `schedule`, parsed (see [`parse_cron`]). Always `Ok` for a config from
    /// [`Config::load`] or [`Config::parse`].
    pub fn cron(&self) -> Result<croner::Cron, String> {
        parse_cron(&self.schedule)
    }

    /// `timezone`, resolved from the system's time zone database. Always `Ok` for a config from
    /// [`Config::load`] or [`Config::parse`] (unless the database changes underneath).
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone, String> {
        jiff::tz::TimeZone::get(&self.timezone).map_err(|e| e.to_string())
    }
}

/// A config that could not be loaded: where and why. `Display` is `file:line:col: message`
/// (`file: message` when the file could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    line: usize,
    column: usize,
    message: String,
}

impl ConfigError {
    /// The config file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 1-based line of the offending value; 0 when the file could not be read.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column (in characters) of the offending value; 0 when the file could not be read.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong and what was expected; never contains a secret or an expanded variable.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn at(source: &str, file: &Path, offset: usize, message: String) -> ConfigError {
        let (line, column) = line_col(source, offset);
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Config {
    /// Reads `path`, expands `${VAR}` from the process environment, parses and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `path` is only used in errors and kept in
    /// [`Config::path`]. `env` looks up variables for `${VAR}` (injected so tests need no
    /// process environment).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let toml_error = |e: toml::de::Error| {
            let offset = e.span().map_or(0, |s| s.start);
            ConfigError::at(text, path, offset, sanitize_toml_message(e.message()))
        };
        let mut document = toml::de::DeTable::parse(text).map_err(toml_error)?;
        let (expansions, expand_errors) = expand::expand_document(document.get_mut(), env);
        // Kept to name the key of a deserialization error (toml's error has no public key path).
        let expanded = document.clone();
        let raw = RawConfig::deserialize(toml::de::Deserializer::from(document));
        // Expansion errors and a deserialization error are independent of each other (the
        // latter only looks at types and keys), so report whichever comes first in the file.
        let mut errors: Vec<(usize, String)> = expand_errors
            .into_iter()
            .map(|e| (e.span.start, e.message))
            .collect();
        let raw = match raw {
            Ok(raw) => Some(raw),
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let mut message = sanitize_toml_message(e.message());
                let key = key_path_at(expanded.get_ref(), offset);
                if !key.is_empty() {
                    let top_level = ["default_channel", "ops_channel"]
                        .iter()
                        .any(|k| message.starts_with(&format!("unknown field `{k}`")));
                    if top_level {
                        message.push_str(
                            " (top-level keys must come before the first `[table]` header)",
                        );
                    }
                    message = format!("`{key}`: {message}");
                }
                errors.push((offset, message));
                None
            }
        };
        if let Some((offset, message)) = errors.into_iter().min_by_key(|(offset, _)| *offset) {
            return Err(ConfigError::at(text, path, offset, message));
        }
        let raw = raw.expect("no error, so the document deserialized");
        let mut check = Check {
            expansions: &expansions,
            errors: Vec::new(),
        };
        let config = check.resolve(raw, path);
        match check.errors.into_iter().min_by_key(|(span, _)| span.start) {
            Some((span, message)) => Err(ConfigError::at(text, path, span.start, message)),
            None => Ok(config),
        }
    }

    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.get(name)
    }
}

/// toml/serde messages quote offending string values (`invalid type: string "…", expected …`);
/// such a value may be a secret or come from the environment, so drop it. Rust type names
/// become words a user knows.
fn sanitize_toml_message(message: &str) -> String {
    let quoted = Regex::new(r#"string "(?:[^"\\]|\\.)*""#).expect("valid regex");
    let mut message = quoted.replace_all(message, "a string").into_owned();
    for (rust, words) in [
        ("expected u32", "expected a whole number of at least 0"),
        ("expected usize", "expected a whole number of at least 0"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected a list"),
    ] {
        if let Some(rest) = message.strip_suffix(rust) {
            message = format!("{rest}{words}");
        }
    }
    message.trim_end().to_string()
}

/// The dotted path (`channels.errors.burst`, `routes[1].level`) of the value at `offset`, or of
/// the table holding the key at `offset` (for unknown keys); empty when it is the top level.
/// A full search: a `[table]`'s span covers only its header, not the keys below it.
fn key_path_at(table: &toml::de::DeTable<'_>, offset: usize) -> String {
    fn in_value(
        value: &Spanned<toml::de::DeValue<'_>>,
        offset: usize,
        path: &str,
    ) -> Option<String> {
        match value.get_ref() {
            toml::de::DeValue::Table(table) => in_table(table, offset, path),
            toml::de::DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| in_value(item, offset, &format!("{path}[{i}]"))),
            _ => None,
        }
        .or_else(|| value.span().contains(&offset).then(|| path.to_string()))
    }
    fn in_table(table: &toml::de::DeTable<'_>, offset: usize, path: &str) -> Option<String> {
        table.iter().find_map(|(key, value)| {
            if key.span().contains(&offset) {
                return Some(path.to_string());
            }
            let path = if path.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{path}.{}", key.get_ref())
            };
            in_value(value, offset, &path)
        })
    }
    in_table(table, offset, "").unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Raw, as-written structs: every field optional and spanned, so validation can point at it.

/// A string or a list of strings, each with its span.
struct StrOrList(Vec<Spanned<String>>);

/// What `StrOrList` deserializes from before the single string gets its span.
enum StrOrSeq {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for StrOrSeq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrSeq;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrSeq, E> {
                Ok(StrOrSeq::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrOrSeq, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(StrOrSeq::Many(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for StrOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<StrOrSeq>::deserialize(deserializer)?;
        let span = spanned.span();
        Ok(StrOrList(match spanned.into_inner() {
            StrOrSeq::One(s) => vec![Spanned::new(span, s)],
            StrOrSeq::Many(items) => items,
        }))
    }
}

/// A spanned `StrOrList`: the span of the whole value, for "must not be empty".
type SpannedList = Spanned<StrOrList>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_channel: Option<Spanned<String>>,
    ops_channel: Option<Spanned<String>>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    sentry: RawSentry,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    slack: RawSlack,
    #[serde(default)]
    channels: BTreeMap<Spanned<String>, Spanned<RawChannel>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    digest: RawDigest,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSentry {
    client_secrets: Option<StrOrList>,
    max_clock_skew: Option<Spanned<String>>,
    legacy_token: Option<Spanned<String>>,
    quiet_alert_after: Option<Spanned<String>>,
    #[serde(default)]
    projects: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: Option<Spanned<String>>,
    retention_days: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    bot_token: Option<Spanned<String>>,
    api_base: Option<Spanned<String>>,
    max_retry_age: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retry_initial_backoff: Option<Spanned<String>>,
    retry_max_backoff: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    console: Option<Spanned<bool>>,
    webhook_url: Option<Spanned<String>>,
    slack_channel: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    burst: Option<Spanned<u32>>,
    max_backlog: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<Spanned<String>>,
    project: Option<SpannedList>,
    environment: Option<SpannedList>,
    level: Option<SpannedList>,
    tags: Option<BTreeMap<Spanned<String>, SpannedList>>,
    title: Option<Spanned<String>>,
    resource: Option<SpannedList>,
    channels: Option<SpannedList>,
    #[serde(rename = "continue")]
    continue_matching: Option<bool>,
    cooldown: Option<Spanned<String>>,
    mention: Option<Spanned<String>>,
    mention_level: Option<SpannedList>,
    digest: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    schedule: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    top: Option<Spanned<usize>>,
}

// ---------------------------------------------------------------------------------------------
// Validation: resolve raw into typed config, collecting every error with its span; the caller
// reports the first in the file.

struct Check<'a> {
    expansions: &'a Expansions,
    errors: Vec<(Range<usize>, String)>,
}

impl Check<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push((span, message.into()));
    }

    /// A non-secret value for a message: `` `value` ``, or, when it came from the environment,
    /// "the value of `${VAR}`" (the value itself is never shown).
    fn show(&self, value: &Spanned<String>) -> String {
        match self.expansions.vars_at.get(&value.span().start) {
            Some(vars) => {
                let vars: Vec<String> = vars.iter().map(|v| format!("`${{{v}}}`")).collect();
                format!("the value of {}", vars.join(" and "))
            }
            None => format!("`{}`", value.get_ref()),
        }
    }

    fn duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.error(value.span(), format!("`{key}`: {e}"));
                default
            }
        }
    }

    /// A duration that must be longer than zero.
    fn positive_duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(key, value, default);
        if let Some(value) = value
            && d.is_zero()
        {
            self.error(value.span(), format!("`{key}` must be longer than zero"));
            return default;
        }
        d
    }

    /// A secret: empty counts as unset (so `${VAR:-}` can leave it out).
    fn secret(value: Option<Spanned<String>>) -> Option<Secret> {
        value
            .map(Spanned::into_inner)
            .filter(|s| !s.trim().is_empty())
            .map(Secret::new)
    }

    fn http_url(&mut self, key: &str, value: &Spanned<String>, secret: bool) -> bool {
        if is_http_url(value.get_ref()) {
            return true;
        }
        if secret {
            self.error(
                value.span(),
                format!("`{key}` must be an http(s) URL (the value is not shown: it is a secret)"),
            );
        } else {
            self.error(
                value.span(),
                format!("`{key}` must be an http(s) URL, got {}", self.show(value)),
            );
        }
        false
    }

    fn at_least_one<T: Copy + Into<u64>>(
        &mut self,
        key: &str,
        value: &Option<Spanned<T>>,
        default: T,
    ) -> T {
        match value {
            None => default,
            Some(v) if (*v.get_ref()).into() >= 1 => *v.get_ref(),
            Some(v) => {
                self.error(v.span(), format!("`{key}` must be at least 1"));
                default
            }
        }
    }

    fn resolve(&mut self, raw: RawConfig, path: &Path) -> Config {
        let server = self.server(raw.server);
        let sentry = self.sentry(raw.sentry);
        let storage = self.storage(raw.storage);
        let slack = self.slack(raw.slack);
        let channels = self.channels(raw.channels, &slack);

        let default_channel = match &raw.default_channel {
            Some(name) => {
                self.channel_ref("default_channel", name, &channels);
                name.get_ref().clone()
            }
            None => {
                self.error(
                    0..0,
                    "missing `default_channel`: the channel for alerts that no route matches \
                     (e.g. `default_channel = \"errors\"` with a `[channels.errors]` table)",
                );
                String::new()
            }
        };
        let ops_channel = match &raw.ops_channel {
            Some(name) => {
                self.channel_ref("ops_channel", name, &channels);
                name.get_ref().clone()
            }
            None => default_channel.clone(),
        };
        if channels.is_empty() && raw.default_channel.is_some() {
            let span = raw.default_channel.as_ref().map_or(0..0, Spanned::span);
            self.error(
                span,
                "no channels defined: add at least one `[channels.NAME]` table (`console = true`, \
                 `webhook_url` or `slack_channel`)",
            );
        }

        let mut routes = Vec::with_capacity(raw.routes.len());
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        for (i, route) in raw.routes.into_iter().enumerate() {
            let span = route.span();
            let name_span = route
                .get_ref()
                .name
                .as_ref()
                .map_or(span.clone(), Spanned::span);
            let route = self.route(i, route, &channels);
            if names
                .insert(route.name.clone(), name_span.clone())
                .is_some()
            {
                self.error(
                    name_span,
                    format!("route name `{}` is used by an earlier route", route.name),
                );
            }
            routes.push(route);
        }

        let digest = self.digest(raw.digest);
        Config {
            path: path.to_path_buf(),
            default_channel,
            ops_channel,
            server,
            sentry,
            storage,
            slack,
            channels,
            routes,
            digest,
        }
    }

    fn channel_ref(
        &mut self,
        key: &str,
        name: &Spanned<String>,
        channels: &BTreeMap<String, ChannelConfig>,
    ) {
        // With no channel at all, one "no channels defined" error says it better.
        if !channels.is_empty() && !channels.contains_key(name.get_ref()) {
            let defined: Vec<&str> = channels.keys().map(String::as_str).collect();
            self.error(
                name.span(),
                format!(
                    "`{key}` names channel {}, which has no `[channels.…]` table (defined: {})",
                    self.show(name),
                    defined.join(", ")
                ),
            );
        }
    }

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let listen = match raw.listen {
            Some(listen) => {
                if !is_host_port(listen.get_ref()) {
                    self.error(
                        listen.span(),
                        format!(
                            "`server.listen` must be `host:port` (e.g. \"127.0.0.1:8080\", \
                             \"[::]:8080\"), got {}",
                            self.show(&listen)
                        ),
                    );
                }
                listen.into_inner()
            }
            None => DEFAULT_LISTEN.to_string(),
        };
        let max_body_bytes = match raw.max_body_bytes {
            Some(v) if *v.get_ref() == 0 => {
                self.error(v.span(), "`server.max_body_bytes` must be at least 1");
                DEFAULT_MAX_BODY_BYTES
            }
            Some(v) => v.into_inner(),
            None => DEFAULT_MAX_BODY_BYTES,
        };
        ServerConfig {
            listen,
            max_body_bytes,
        }
    }

    fn sentry(&mut self, raw: RawSentry) -> SentryConfig {
        let client_secrets = raw
            .client_secrets
            .map(|list| list.0)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| Self::secret(Some(s)))
            .collect();
        let max_clock_skew = self.positive_duration(
            "sentry.max_clock_skew",
            &raw.max_clock_skew,
            Duration::from_secs(300),
        );
        let quiet_alert_after = self.positive_duration(
            "sentry.quiet_alert_after",
            &raw.quiet_alert_after,
            Duration::from_secs(24 * 3_600),
        );
        let mut projects = HashMap::new();
        for (id, slug) in raw.projects {
            if id.get_ref().is_empty() || !id.get_ref().bytes().all(|b| b.is_ascii_digit()) {
                self.error(
                    id.span(),
                    format!(
                        "`[sentry.projects]` keys are numeric Sentry project ids (e.g. \
                         `\"4505\" = \"checkout\"`), got `{}`",
                        id.get_ref()
                    ),
                );
            }
            if slug.get_ref().trim().is_empty() {
                self.error(
                    slug.span(),
                    "`[sentry.projects]`: the project slug must not be empty",
                );
            }
            projects.insert(id.into_inner(), slug.into_inner());
        }
        SentryConfig {
            client_secrets,
            max_clock_skew,
            legacy_token: Self::secret(raw.legacy_token),
            quiet_alert_after,
            projects,
        }
    }

    fn storage(&mut self, raw: RawStorage) -> StorageConfig {
        let url = match raw.url {
            Some(url) => {
                let scheme = url.get_ref().split_once(':').map(|(s, _)| s);
                if !matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
                    self.error(
                        url.span(),
                        "`storage.url` must start with `sqlite:` (e.g. \"sqlite://sluice.db\") or \
                         `postgres://` (the value is not shown: it may hold a password)",
                    );
                }
                Secret::new(url.into_inner())
            }
            None => Secret::new(DEFAULT_STORAGE_URL),
        };
        let retention_days = self.at_least_one("storage.retention_days", &raw.retention_days, 90);
        StorageConfig {
            url,
            retention_days,
        }
    }

    fn slack(&mut self, raw: RawSlack) -> SlackConfig {
        let api_base = match raw.api_base {
            Some(base) => {
                self.http_url("slack.api_base", &base, false);
                base.into_inner().trim_end_matches('/').to_string()
            }
            None => DEFAULT_SLACK_API_BASE.to_string(),
        };
        let max_retry_age = self.positive_duration(
            "slack.max_retry_age",
            &raw.max_retry_age,
            Duration::from_secs(24 * 3_600),
        );
        let timeout =
            self.positive_duration("slack.timeout", &raw.timeout, Duration::from_secs(10));
        let retry_initial_backoff = self.positive_duration(
            "slack.retry_initial_backoff",
            &raw.retry_initial_backoff,
            Duration::from_secs(1),
        );
        let retry_max_backoff = self.positive_duration(
            "slack.retry_max_backoff",
            &raw.retry_max_backoff,
            Duration::from_secs(600),
        );
        if retry_max_backoff < retry_initial_backoff {
            let span = raw
                .retry_max_backoff
                .as_ref()
                .or(raw.retry_initial_backoff.as_ref())
                .map_or(0..0, Spanned::span);
            self.error(
                span,
                format!(
                    "`slack.retry_max_backoff` ({}) must not be shorter than \
                     `slack.retry_initial_backoff` ({})",
                    format_duration(retry_max_backoff),
                    format_duration(retry_initial_backoff)
                ),
            );
        }
        SlackConfig {
            bot_token: Self::secret(raw.bot_token),
            api_base,
            max_retry_age,
            timeout,
            retry_initial_backoff,
            retry_max_backoff,
        }
    }

    fn channels(
        &mut self,
        raw: BTreeMap<Spanned<String>, Spanned<RawChannel>>,
        slack: &SlackConfig,
    ) -> BTreeMap<String, ChannelConfig> {
        let mut channels = BTreeMap::new();
        for (name, channel) in raw {
            // The name's span is in the `[channels.NAME]` header: the place to point at for a
            // table-wide problem.
            let span = name.span();
            let channel = channel.into_inner();
            let name = name.into_inner();
            let key = |field: &str| format!("channels.{name}.{field}");

            let mut targets = Vec::new();
            if let Some(console) = &channel.console
                && *console.get_ref()
            {
                targets.push(("console", console.span(), ChannelTarget::Console));
            }
            // A second destination is reported as such, not checked on its own.
            if let Some(url) = channel.webhook_url {
                if targets.is_empty() {
                    self.http_url(&key("webhook_url"), &url, true);
                }
                let span = url.span();
                targets.push((
                    "webhook_url",
                    span,
                    ChannelTarget::Webhook {
                        url: Secret::new(url.into_inner()),
                    },
                ));
            }
            if let Some(slack_channel) = channel.slack_channel {
                if !targets.is_empty() {
                } else if slack_channel.get_ref().trim().is_empty() {
                    self.error(
                        slack_channel.span(),
                        format!("`{}` must not be empty", key("slack_channel")),
                    );
                } else if slack.bot_token.is_none() {
                    self.error(
                        slack_channel.span(),
                        format!(
                            "`{}` posts through the Slack Web API, which needs `slack.bot_token`",
                            key("slack_channel")
                        ),
                    );
                }
                let span = slack_channel.span();
                targets.push((
                    "slack_channel",
                    span,
                    ChannelTarget::WebApi {
                        channel: slack_channel.into_inner(),
                    },
                ));
            }
            let target = match targets.len() {
                0 => {
                    self.error(
                        span,
                        format!(
                            "channel `{name}` needs a destination: exactly one of `console = true`, \
                             `webhook_url` or `slack_channel`"
                        ),
                    );
                    ChannelTarget::Console
                }
                1 => targets.pop().expect("one target").2,
                _ => {
                    let (second, second_span, _) = &targets[1];
                    self.error(
                        second_span.clone(),
                        format!(
                            "channel `{name}` sets both `{}` and `{second}`: exactly one of \
                             `console = true`, `webhook_url` or `slack_channel` is allowed",
                            targets[0].0
                        ),
                    );
                    ChannelTarget::Console
                }
            };

            let rate = match &channel.rate {
                Some(rate) => Rate::parse(rate.get_ref()).unwrap_or_else(|e| {
                    self.error(rate.span(), format!("`{}`: {e}", key("rate")));
                    Rate::default()
                }),
                None => Rate::default(),
            };
            let burst = self.at_least_one(&key("burst"), &channel.burst, 3);
            let max_backlog = self.at_least_one(&key("max_backlog"), &channel.max_backlog, 20);
            channels.insert(
                name.clone(),
                ChannelConfig {
                    name,
                    target,
                    rate,
                    burst,
                    max_backlog,
                },
            );
        }
        channels
    }

    /// Compiles a glob list, or records an error at the bad pattern.
    fn globs(&mut self, key: &str, list: SpannedList) -> Option<GlobList> {
        let span = list.span();
        let items = list.into_inner().0;
        if items.is_empty() {
            self.error(
                span,
                format!("`{key}` must not be an empty list (leave it out to match everything)"),
            );
            return None;
        }
        match GlobList::new(items.iter().map(|s| s.get_ref().clone())) {
            Ok(globs) => Some(globs),
            Err(e) => {
                let bad = &items[e.index];
                self.error(
                    bad.span(),
                    format!("`{key}`: invalid glob {}: {}", self.show(bad), e.reason),
                );
                None
            }
        }
    }

    fn levels(&mut self, key: &str, list: SpannedList, threshold: bool) -> Option<LevelSpec> {
        let span = list.span();
        let items = list.into_inner().0;
        if items.is_empty() {
            self.error(span, format!("`{key}` must not be an empty list"));
            return None;
        }
        let mut spec = LevelSpec::default();
        for item in &items {
            let parsed = if threshold {
                LevelSpec::parse_threshold(item.get_ref())
            } else {
                LevelSpec::parse(item.get_ref())
            };
            match parsed {
                Ok(s) => spec = spec.union(s),
                Err(e) => {
                    self.error(item.span(), format!("`{key}`: {e}"));
                    return None;
                }
            }
        }
        Some(spec)
    }

    fn route(
        &mut self,
        index: usize,
        route: Spanned<RawRoute>,
        channels: &BTreeMap<String, ChannelConfig>,
    ) -> RouteConfig {
        let route_span = route.span();
        let raw = route.into_inner();
        let name = match &raw.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                self.error(name.span(), "route `name` must not be empty");
                format!("route {}", index + 1)
            }
            Some(name) => name.get_ref().clone(),
            None => format!("route {}", index + 1),
        };
        let key = |field: &str| format!("routes[{index}].{field}");

        let project = raw.project.and_then(|l| self.globs(&key("project"), l));
        let environment = raw
            .environment
            .and_then(|l| self.globs(&key("environment"), l));
        let resource = raw.resource.and_then(|l| self.globs(&key("resource"), l));
        let level = raw.level.and_then(|l| self.levels(&key("level"), l, false));
        let mut tags = Vec::new();
        for (tag, globs) in raw.tags.unwrap_or_default() {
            if let Some(globs) = self.globs(&key(&format!("tags.{}", tag.get_ref())), globs) {
                tags.push((tag.into_inner(), globs));
            }
        }
        let title = raw
            .title
            .and_then(|title| match Regex::new(title.get_ref()) {
                Ok(re) => Some(re),
                Err(e) => {
                    self.error(
                        title.span(),
                        format!("`{}`: invalid regex: {}", key("title"), regex_reason(&e)),
                    );
                    None
                }
            });

        let mut route_channels: Vec<String> = Vec::new();
        match raw.channels {
            None => self.error(
                route_span,
                format!(
                    "route `{name}` has no `channels`: name at least one channel, e.g. \
                     `channels = [\"errors\"]`"
                ),
            ),
            Some(list) => {
                let span = list.span();
                let items = list.into_inner().0;
                if items.is_empty() {
                    self.error(
                        span,
                        format!("route `{name}`: `channels` must name at least one channel"),
                    );
                }
                for channel in items {
                    self.channel_ref(&key("channels"), &channel, channels);
                    if !route_channels.contains(channel.get_ref()) {
                        route_channels.push(channel.into_inner());
                    }
                }
            }
        }

        let cooldown = self.duration(&key("cooldown"), &raw.cooldown, DEFAULT_COOLDOWN);
        let mention = match raw.mention {
            Some(m) if m.get_ref().trim().is_empty() => {
                self.error(m.span(), format!("`{}` must not be empty", key("mention")));
                None
            }
            Some(m) => Some(m.into_inner()),
            None => None,
        };
        let mention_level = match raw.mention_level {
            Some(list) => {
                let span = list.span();
                let spec = self.levels(&key("mention_level"), list, true);
                if mention.is_none() {
                    self.error(
                        span,
                        format!(
                            "route `{name}` sets `mention_level` but no `mention`: add \
                             `mention = \"<!subteam^…>\"` or remove `mention_level`"
                        ),
                    );
                }
                spec
            }
            None => None,
        };

        RouteConfig {
            name,
            project,
            environment,
            level,
            tags,
            title,
            resource,
            channels: route_channels,
            continue_matching: raw.continue_matching.unwrap_or(false),
            cooldown,
            mention,
            mention_level,
            digest: raw.digest.unwrap_or(true),
        }
    }

    fn digest(&mut self, raw: RawDigest) -> DigestConfig {
        let schedule = match raw.schedule {
            Some(schedule) => {
                if let Err(e) = parse_cron(schedule.get_ref()) {
                    self.error(
                        schedule.span(),
                        format!(
                            "`digest.schedule` is not a valid 5-field cron expression ({e}); \
                             expected minute hour day-of-month month day-of-week, e.g. \
                             \"0 9 * * MON\""
                        ),
                    );
                }
                schedule.into_inner()
            }
            None => DEFAULT_DIGEST_SCHEDULE.to_string(),
        };
        let timezone = match raw.timezone {
            Some(tz) => {
                if jiff::tz::TimeZone::get(tz.get_ref()).is_err() {
                    self.error(
                        tz.span(),
                        format!(
                            "`digest.timezone`: unknown time zone {} (expected an IANA name such \
                             as \"UTC\" or \"Europe/Berlin\")",
                            self.show(&tz)
                        ),
                    );
                }
                tz.into_inner()
            }
            None => DEFAULT_DIGEST_TIMEZONE.to_string(),
        };
        let top = match raw.top {
            Some(top) if *top.get_ref() == 0 => {
                self.error(top.span(), "`digest.top` must be at least 1");
                10
            }
            Some(top) => top.into_inner(),
            None => 10,
        };
        DigestConfig {
            schedule,
            timezone,
            top,
        }
    }
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week; no seconds, no
/// year; names such as `MON` and `JAN` allowed) exactly as `digest.schedule` is validated, and
/// checks that it fires at all (`"0 0 31 2 *"` never does). Day-of-month and day-of-week combine
/// with OR, as in Vixie cron. The error says what is wrong without repeating the expression.
pub fn parse_cron(schedule: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!("it has {fields} fields, not 5"));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| e.to_string().trim_end_matches('.').to_string())?;
    let start = jiff::Timestamp::UNIX_EPOCH.to_zoned(jiff::tz::TimeZone::UTC);
    match cron.find_next_occurrence(&start, false) {
        Ok(_) => Ok(cron),
        Err(_) => Err("it never fires".to_string()),
    }
}

/// The one-line reason of a regex error (its `Display` spans several lines with a caret).
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => "the regex is too big".to_string(),
        _ => {
            let text = e.to_string();
            text.lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or(text.lines().last().unwrap_or("invalid regex"))
                .to_string()
        }
    }
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn is_host_port(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['[', ']', ':', '/', ' '])
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
pub(crate) mod tests;
