//! Validation: resolves the raw structs of `raw.rs` into the typed [`Config`], checking every
//! value (globs, regexes, levels, rates, durations, cron, time zone, URLs, channel references)
//! and collecting every error with its span; the first in the file is reported.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde_spanned::Spanned;

use super::expand::Expansions;
use super::raw::{
    RawChannel, RawConfig, RawDigest, RawRoute, RawSentry, RawServer, RawSlack, RawStorage,
    SpannedList,
};
use super::values::{
    GlobList, LevelSpec, Rate, Secret, format_duration, parse_cron, parse_duration,
};
use super::{
    ChannelConfig, ChannelTarget, Config, DEFAULT_BODY_TIMEOUT, DEFAULT_COOLDOWN,
    DEFAULT_DIGEST_SCHEDULE, DEFAULT_DIGEST_TIMEZONE, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SLACK_API_BASE, DEFAULT_STORAGE_URL,
    DigestConfig, RouteConfig, SentryConfig, ServerConfig, SlackConfig, StorageConfig,
};

/// Resolves `raw` into a [`Config`] loaded from `path`; on failure, the first error in the
/// file as (byte offset, message). `expansions` says which values came from the environment,
/// so that messages never show them.
pub(super) fn resolve(
    raw: RawConfig,
    expansions: &Expansions,
    path: &Path,
) -> Result<Config, (usize, String)> {
    let mut check = Check {
        expansions,
        errors: Vec::new(),
    };
    let config = check.resolve(raw, path);
    match check.errors.into_iter().min_by_key(|(span, _)| span.start) {
        Some((span, message)) => Err((span.start, message)),
        None => Ok(config),
    }
}

/// The validation in progress: every error found so far, with its span.
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
        let (default_channel, ops_channel) =
            self.default_channels(&raw.default_channel, &raw.ops_channel, &channels);
        let routes = self.routes(raw.routes, &channels);
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

    /// `default_channel` (required) and `ops_channel` (default: `default_channel`), each
    /// naming a defined channel.
    fn default_channels(
        &mut self,
        default_channel: &Option<Spanned<String>>,
        ops_channel: &Option<Spanned<String>>,
        channels: &BTreeMap<String, ChannelConfig>,
    ) -> (String, String) {
        let default_name = match default_channel {
            Some(name) => {
                self.channel_ref("default_channel", name, channels);
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
        let ops_name = match ops_channel {
            Some(name) => {
                self.channel_ref("ops_channel", name, channels);
                name.get_ref().clone()
            }
            None => default_name.clone(),
        };
        if channels.is_empty()
            && let Some(name) = default_channel
        {
            self.error(
                name.span(),
                "no channels defined: add at least one `[channels.NAME]` table (`console = true`, \
                 `webhook_url` or `slack_channel`)",
            );
        }
        (default_name, ops_name)
    }

    /// Every `[[routes]]` table, in file order; a name used by an earlier route is an error.
    fn routes(
        &mut self,
        raw: Vec<Spanned<RawRoute>>,
        channels: &BTreeMap<String, ChannelConfig>,
    ) -> Vec<RouteConfig> {
        let mut routes = Vec::with_capacity(raw.len());
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        for (i, route) in raw.into_iter().enumerate() {
            let span = route.span();
            let name_span = route
                .get_ref()
                .name
                .as_ref()
                .map_or(span.clone(), Spanned::span);
            let route = self.route(i, route, channels);
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
        routes
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
        let max_body_bytes = self.count_at_least_one(
            "server.max_body_bytes",
            raw.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        );
        let body_timeout = self.positive_duration(
            "server.body_timeout",
            &raw.body_timeout,
            DEFAULT_BODY_TIMEOUT,
        );
        let request_timeout = self.positive_duration(
            "server.request_timeout",
            &raw.request_timeout,
            DEFAULT_REQUEST_TIMEOUT,
        );
        if request_timeout < body_timeout
            && let Some(value) = raw.request_timeout.as_ref().or(raw.body_timeout.as_ref())
        {
            self.error(
                value.span(),
                format!(
                    "`server.request_timeout` ({}) must be at least `server.body_timeout` ({})",
                    format_duration(request_timeout),
                    format_duration(body_timeout)
                ),
            );
        }
        ServerConfig {
            listen,
            max_body_bytes,
            header_timeout: self.positive_duration(
                "server.header_timeout",
                &raw.header_timeout,
                DEFAULT_HEADER_TIMEOUT,
            ),
            body_timeout,
            request_timeout,
            idle_timeout: self.positive_duration(
                "server.idle_timeout",
                &raw.idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
            ),
            max_connections: self.count_at_least_one(
                "server.max_connections",
                raw.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            ),
            max_concurrent_requests: self.count_at_least_one(
                "server.max_concurrent_requests",
                raw.max_concurrent_requests,
                DEFAULT_MAX_CONCURRENT_REQUESTS,
            ),
            status_page: raw.status_page.is_none_or(Spanned::into_inner),
            status_token: Self::secret(raw.status_token),
        }
    }

    /// A count that must be at least 1, or `default` when unset.
    fn count_at_least_one(
        &mut self,
        key: &str,
        value: Option<Spanned<usize>>,
        default: usize,
    ) -> usize {
        match value {
            Some(v) if *v.get_ref() == 0 => {
                self.error(v.span(), format!("`{key}` must be at least 1"));
                default
            }
            Some(v) => v.into_inner(),
            None => default,
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
        let api_base = match raw.api_base {
            Some(base) => {
                self.http_url("sentry.api_base", &base, false);
                base.into_inner().trim_end_matches('/').to_string()
            }
            None => super::DEFAULT_SENTRY_API_BASE.to_string(),
        };
        let organization = match raw.organization {
            Some(org) if !is_slug(org.get_ref()) => {
                self.error(
                    org.span(),
                    format!(
                        "`sentry.organization` is an organization slug (letters, digits, `-`, \
                         `_`), got {}",
                        self.show(&org)
                    ),
                );
                None
            }
            Some(org) => Some(org.into_inner()),
            None => None,
        };
        let api_timeout = self.positive_duration(
            "sentry.api_timeout",
            &raw.api_timeout,
            Duration::from_secs(10),
        );
        SentryConfig {
            client_secrets,
            max_clock_skew,
            legacy_token: Self::secret(raw.legacy_token),
            quiet_alert_after,
            projects,
            api_token: Self::secret(raw.api_token),
            api_base,
            organization,
            api_timeout,
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
        let max_retry_after = self.positive_duration(
            "slack.max_retry_after",
            &raw.max_retry_after,
            super::DEFAULT_MAX_RETRY_AFTER,
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
        let signing_secrets = raw
            .signing_secrets
            .map(|list| list.0)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| Self::secret(Some(s)))
            .collect();
        SlackConfig {
            bot_token: Self::secret(raw.bot_token),
            signing_secrets,
            api_base,
            max_retry_age,
            timeout,
            retry_initial_backoff,
            retry_max_backoff,
            max_retry_after,
        }
    }

    fn channels(
        &mut self,
        raw: BTreeMap<Spanned<String>, Spanned<RawChannel>>,
        slack: &SlackConfig,
    ) -> BTreeMap<String, ChannelConfig> {
        let mut channels = BTreeMap::new();
        for (name, channel) in raw {
            let channel = self.channel(name, channel.into_inner(), slack);
            channels.insert(channel.name.clone(), channel);
        }
        channels
    }

    /// One `[channels.NAME]` table.
    fn channel(
        &mut self,
        name: Spanned<String>,
        mut raw: RawChannel,
        slack: &SlackConfig,
    ) -> ChannelConfig {
        // The name's span is in the `[channels.NAME]` header: the place to point at for a
        // table-wide problem.
        let span = name.span();
        let name = name.into_inner();
        let key = |field: &str| format!("channels.{name}.{field}");
        let target = self.channel_target(&name, span, &mut raw, slack);
        let rate = match &raw.rate {
            Some(rate) => Rate::parse(rate.get_ref()).unwrap_or_else(|e| {
                self.error(rate.span(), format!("`{}`: {e}", key("rate")));
                Rate::default()
            }),
            None => Rate::default(),
        };
        let burst = self.at_least_one(&key("burst"), &raw.burst, 3);
        let max_backlog = self.at_least_one(&key("max_backlog"), &raw.max_backlog, 20);
        ChannelConfig {
            name,
            target,
            rate,
            burst,
            max_backlog,
        }
    }

    /// Where channel `name` posts: exactly one of `console = true`, `webhook_url` and
    /// `slack_channel`. None is an error at `span` (the table's header), a second one an error
    /// at its value.
    fn channel_target(
        &mut self,
        name: &str,
        span: Range<usize>,
        raw: &mut RawChannel,
        slack: &SlackConfig,
    ) -> ChannelTarget {
        let mut targets = self.destinations(name, raw, slack);
        match targets.len() {
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
        }
    }

    /// The destinations channel `name` sets, in that order, each with its key and span. The
    /// first is checked; a second one is reported as such by the caller, not checked on its own.
    fn destinations(
        &mut self,
        name: &str,
        raw: &mut RawChannel,
        slack: &SlackConfig,
    ) -> Vec<(&'static str, Range<usize>, ChannelTarget)> {
        let key = |field: &str| format!("channels.{name}.{field}");
        let mut targets = Vec::new();
        if let Some(console) = &raw.console
            && *console.get_ref()
        {
            targets.push(("console", console.span(), ChannelTarget::Console));
        }
        if let Some(url) = raw.webhook_url.take() {
            if targets.is_empty() {
                self.http_url(&key("webhook_url"), &url, true);
            }
            let span = url.span();
            let url = Secret::new(url.into_inner());
            targets.push(("webhook_url", span, ChannelTarget::Webhook { url }));
        }
        if let Some(slack_channel) = raw.slack_channel.take() {
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
            let channel = slack_channel.into_inner();
            targets.push(("slack_channel", span, ChannelTarget::WebApi { channel }));
        }
        targets
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
            .and_then(|title| self.regex(&key("title"), &title));
        let route_channels =
            self.route_channels(&name, &key("channels"), route_span, raw.channels, channels);
        let cooldown = self.duration(&key("cooldown"), &raw.cooldown, DEFAULT_COOLDOWN);
        let (mention, mention_level) = self.mention(&name, index, raw.mention, raw.mention_level);
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
            actions: raw.actions.and_then(|l| self.actions(&key("actions"), l)),
            comments: raw.comments.unwrap_or(false),
            breakthrough: self.breakthrough(&key("breakthrough"), raw.breakthrough),
        }
    }

    /// A route's `actions`: names of [`ActionKind`](crate::config::ActionKind)s, each at most once.
    fn actions(&mut self, key: &str, list: SpannedList) -> Option<Vec<super::ActionKind>> {
        use super::ActionKind;
        let mut actions = Vec::new();
        let mut ok = true;
        for item in list.into_inner().0 {
            match ActionKind::ALL
                .into_iter()
                .find(|a| a.as_str() == item.get_ref())
            {
                Some(a) if !actions.contains(&a) => actions.push(a),
                Some(_) => {}
                None => {
                    ok = false;
                    self.error(
                        item.span(),
                        format!(
                            "`{key}`: unknown action {} (expected resolve, archive, assign or \
                             mute)",
                            self.show(&item)
                        ),
                    );
                }
            }
        }
        ok.then_some(actions)
    }

    /// A route's `breakthrough`: positive thresholds, strictly ascending.
    fn breakthrough(&mut self, key: &str, raw: Option<Spanned<Vec<Spanned<u64>>>>) -> Vec<u64> {
        let Some(list) = raw else {
            return super::DEFAULT_BREAKTHROUGH.to_vec();
        };
        let mut thresholds: Vec<u64> = Vec::new();
        for t in list.into_inner() {
            let v = *t.get_ref();
            if v == 0 || thresholds.last().is_some_and(|&last| v <= last) {
                self.error(
                    t.span(),
                    format!(
                        "`{key}`: thresholds are positive and ascending (e.g. [10, 100, 1000]), \
                         got {v}"
                    ),
                );
                continue;
            }
            thresholds.push(v);
        }
        thresholds
    }

    /// A regex, or an error at it (with the one-line reason).
    fn regex(&mut self, key: &str, value: &Spanned<String>) -> Option<Regex> {
        match Regex::new(value.get_ref()) {
            Ok(re) => Some(re),
            Err(e) => {
                self.error(
                    value.span(),
                    format!("`{key}`: invalid regex: {}", regex_reason(&e)),
                );
                None
            }
        }
    }

    /// A route's `channels` (required, at least one, each defined), without repeats.
    fn route_channels(
        &mut self,
        name: &str,
        key: &str,
        route_span: Range<usize>,
        list: Option<SpannedList>,
        channels: &BTreeMap<String, ChannelConfig>,
    ) -> Vec<String> {
        let mut route_channels: Vec<String> = Vec::new();
        let Some(list) = list else {
            self.error(
                route_span,
                format!(
                    "route `{name}` has no `channels`: name at least one channel, e.g. \
                     `channels = [\"errors\"]`"
                ),
            );
            return route_channels;
        };
        let span = list.span();
        let items = list.into_inner().0;
        if items.is_empty() {
            self.error(
                span,
                format!("route `{name}`: `channels` must name at least one channel"),
            );
        }
        for channel in items {
            self.channel_ref(key, &channel, channels);
            if !route_channels.contains(channel.get_ref()) {
                route_channels.push(channel.into_inner());
            }
        }
        route_channels
    }

    /// A route's `mention` (not empty) and `mention_level` (which requires `mention`).
    fn mention(
        &mut self,
        name: &str,
        index: usize,
        mention: Option<Spanned<String>>,
        mention_level: Option<SpannedList>,
    ) -> (Option<String>, Option<LevelSpec>) {
        let key = |field: &str| format!("routes[{index}].{field}");
        let mention = match mention {
            Some(m) if m.get_ref().trim().is_empty() => {
                self.error(m.span(), format!("`{}` must not be empty", key("mention")));
                None
            }
            Some(m) => Some(m.into_inner()),
            None => None,
        };
        let Some(list) = mention_level else {
            return (mention, None);
        };
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
        (mention, spec)
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

/// Whether `s` is a Sentry organization slug.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
