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
//!
//! # Files
//! - `mod.rs`: the public types, their defaults, and [`Config::load`] / [`Config::parse`].
//! - `raw.rs`: the file as written (serde structs, every value spanned) and reading it.
//! - `expand.rs`: `${VAR}` expansion on the parsed document.
//! - `validate.rs`: resolving the raw structs into [`Config`], collecting errors with spans.
//! - `values.rs`: value types that need parsing (secrets, durations, rates, levels, globs,
//!   cron schedules).
//! - `error.rs`: [`ConfigError`] and the wording of TOML's own errors.

mod error;
mod expand;
mod raw;
mod validate;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

pub use error::ConfigError;
pub use values::{
    GlobError, GlobList, LevelSpec, Rate, Secret, format_duration, parse_cron, parse_duration,
};

/// Default `server.listen`: loopback only, so a fresh install is not reachable from outside.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `server.max_body_bytes`: 8 MiB. Sentry accepts events of up to about 1 MB, and its
/// webhooks are ASCII-only JSON: every non-ASCII character is sent as a `\uXXXX` escape, so
/// text grows up to 3× on the wire (6 bytes for a 2-byte accent, 12 for a 4-byte emoji) and
/// control characters up to 6×. 8 MiB holds the largest event Sentry stores after escaping,
/// with the webhook's own wrapping around it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1_048_576;
/// Default `server.header_timeout`: 5 s for a request's head to arrive. Sentry sends its
/// head at once and gives up after about 1 s, so only slow or hostile clients need more.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `server.body_timeout`: a body that pauses 500 ms is not coming (Sentry sends it at
/// once and gives up after about 1 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `server.request_timeout`: 800 ms, well under the second Sentry waits, so Sentry's
/// request log shows Sluice's `503` and its reason rather than its own timeout. A delivery
/// already handed to the store when it fires is still committed and posted (the commit does
/// not depend on the request that waits for it); one that was not is not stored.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(800);
/// Default `server.idle_timeout`: 75 s, longer than the idle timeout of the proxies and load
/// balancers usually put in front (nginx's upstream `keepalive_timeout` and AWS ALB's idle
/// timeout are 60 s), so a proxy never sends a webhook on a connection Sluice is closing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default `server.max_connections`: 512, below the usual default limit of 1,024 open files
/// with room for the database, Slack and log files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default `server.max_concurrent_requests`: 64 webhooks handled at once; more wait for a
/// turn (within `request_timeout`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;
/// Default `storage.url`: an `SQLite` file in the working directory.
pub const DEFAULT_STORAGE_URL: &str = "sqlite://sluice.db";
/// Default `slack.api_base`.
pub const DEFAULT_SLACK_API_BASE: &str = "https://slack.com/api";
/// Default `sentry.api_base`.
pub const DEFAULT_SENTRY_API_BASE: &str = "https://sentry.io";
/// Default `slack.max_retry_after`: the longest `Retry-After` honoured, one hour.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);
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
    /// `max_body_bytes`: largest request body accepted, in bytes; larger ones get `413`, at
    /// once when the declared `Content-Length` is larger. Default 8 MiB
    /// ([`DEFAULT_MAX_BODY_BYTES`] says why).
    pub max_body_bytes: usize,
    /// `header_timeout`: how long a client has to send a request's head (request line and
    /// headers): from the connection's opening for its first request, from the head's first
    /// byte for later ones. Past it the connection is closed. Default 5 s.
    pub header_timeout: Duration,
    /// `body_timeout`: the longest pause while a request body arrives; past it the webhook
    /// gets `408`. Default 500 ms ([`DEFAULT_BODY_TIMEOUT`]).
    pub body_timeout: Duration,
    /// `request_timeout`: the longest a webhook may take from its head to its answer, waiting
    /// for a turn under `max_concurrent_requests` included; past it the answer is `503`.
    /// At least `body_timeout`. Default 800 ms ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// `idle_timeout`: how long a kept-alive connection may wait for its next request before
    /// it is closed. Default 75 s ([`DEFAULT_IDLE_TIMEOUT`] says why).
    pub idle_timeout: Duration,
    /// `max_connections`: connections open at once. At the limit, idle kept-alive connections
    /// are closed to make room, and new ones wait for a free place. Keep it well below the
    /// process's open-files limit. Default 512.
    pub max_connections: usize,
    /// `max_concurrent_requests`: webhooks handled at once; more wait for a turn, within
    /// `request_timeout`. Each one holds its body in memory. Default 64.
    pub max_concurrent_requests: usize,
    /// `status_page`: serve the read-only status page on `GET /` and `/ui/…` (on `listen`,
    /// so bind `listen` to an internal interface, or set `status_token`). Default `true`.
    pub status_page: bool,
    /// `status_token`: when set, the status page asks for it: an `Authorization: Bearer`
    /// header, or `?token=` once, which sets a session cookie. Unset or empty: no token.
    pub status_token: Option<Secret>,
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
    /// `api_token`: the token of Sentry's internal integration (Issue & Event read/write,
    /// Member read), for the buttons that act on Sentry issues. Unset or empty: no Sentry
    /// button is shown.
    pub api_token: Option<Secret>,
    /// `api_base`: Sentry's web address, without a trailing `/`. Default `"https://sentry.io"`;
    /// self-hosted Sentry, or a test double.
    pub api_base: String,
    /// `organization`: the organization slug for API calls about an issue whose link names
    /// none (`https://acme.sentry.io/…` and `…/organizations/acme/…` name one).
    pub organization: Option<String>,
    /// `api_timeout`: how long one Sentry API request may take before it is retried. Default
    /// `"10s"`.
    pub api_timeout: Duration,
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
    /// `signing_secrets`: the Slack app's signing secrets (several during a rotation: any one
    /// matching is enough). Set: `POST /slack/interactions` takes clicks and messages carry
    /// buttons. Unset or empty: no buttons, and the endpoint answers `404`.
    pub signing_secrets: Vec<Secret>,
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
    /// `max_retry_after`: the longest `Retry-After` Sluice honours after a 429; a longer one
    /// is cut to this and logged at `warn`, so that a broken answer cannot stall a channel for
    /// days. Default `"1h"`. Read at start.
    pub max_retry_after: Duration,
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
    /// `actions`: the buttons on this route's messages in Web API channels. `None` (not set):
    /// every one the configuration allows; `Some([])`: none.
    pub actions: Option<Vec<ActionKind>>,
    /// `comments`: Sentry comments on an issue are posted as replies in its thread (Web API
    /// channels). Default false.
    pub comments: bool,
    /// `breakthrough`: occurrences within a cooldown at which a spike follow-up goes out
    /// anyway, ascending; a mute is broken through only at the last. Default
    /// [`DEFAULT_BREAKTHROUGH`]; `[]` turns it off.
    pub breakthrough: Vec<u64>,
}

/// The default `breakthrough` thresholds of a route.
pub const DEFAULT_BREAKTHROUGH: [u64; 3] = [10, 100, 1000];

/// A button a route may put on its messages (`actions = [...]`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// `Resolve` (and, once resolved, `Unresolve`): Sentry's API.
    Resolve,
    /// `Archive` with a menu of how long: Sentry's API.
    Archive,
    /// `Assign to me`: Sentry's API.
    Assign,
    /// `Mute here`: Sluice's own, no API.
    Mute,
}

impl ActionKind {
    /// Every action, in the order the buttons appear.
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Resolve,
        ActionKind::Archive,
        ActionKind::Assign,
        ActionKind::Mute,
    ];

    /// The name in routes.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Resolve => "resolve",
            ActionKind::Archive => "archive",
            ActionKind::Assign => "assign",
            ActionKind::Mute => "mute",
        }
    }

    /// Whether the action calls Sentry's API (and so needs `sentry.api_token`).
    pub fn needs_sentry(self) -> bool {
        self != ActionKind::Mute
    }
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

impl Config {
    /// Reads `path`, expands `${VAR}` from the process environment, parses and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `path` is only used in errors and kept in
    /// [`Config::path`]. `env` looks up variables for `${VAR}` (injected so tests need no
    /// process environment). When several things are wrong, the error is the first in the file.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let at = |(offset, message)| ConfigError::at(text, path, offset, message);
        let (raw, expansions) = raw::read(text, env).map_err(at)?;
        validate::resolve(raw, &expansions, path).map_err(at)
    }

    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.get(name)
    }

    /// The buttons a message about a Sentry issue may carry in a Web API channel, given the
    /// route's `actions` (`None`: all): none without `slack.signing_secrets` (no click could
    /// reach Sluice), and no Sentry action without `sentry.api_token`.
    pub fn allowed_actions(&self, route_actions: Option<&[ActionKind]>) -> Vec<ActionKind> {
        if self.slack.signing_secrets.is_empty() {
            return Vec::new();
        }
        let wanted = route_actions.unwrap_or(&ActionKind::ALL);
        ActionKind::ALL
            .into_iter()
            .filter(|a| wanted.contains(a))
            .filter(|a| !a.needs_sentry() || self.sentry.api_token.is_some())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
