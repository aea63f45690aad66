//! Routing: which channels an [`Alert`] goes to, by the `[[routes]]` of routes.toml.
//!
//! Routes are tried in file order. The first route that matches wins, unless it says
//! `continue = true`, in which case matching goes on and later matching routes add their
//! channels too. An alert that no route matches goes to `default_channel`.
//!
//! A route matches when every matcher it sets matches (a route with none matches everything):
//! - `project`: any of the alert's projects matches any of the globs;
//! - `environment`: the alert's environment matches any glob. An alert *without* an environment
//!   does not match a route that sets `environment` (it falls through to later routes or the
//!   default channel), so "production only" never catches events of unknown origin;
//! - `level`: the alert's level is in the spec;
//! - `tags`: every listed tag is present on the alert and matches its glob(s);
//! - `title`: the regex is found somewhere in the title (not anchored);
//! - `resource`: any glob matches the alert's resource (`issue`) or kind (`issue.resolved`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::config::{ActionKind, Config, DEFAULT_BREAKTHROUGH, DEFAULT_COOLDOWN, RouteConfig};

/// The routes of one [`Config`], ready to match. Building it is infallible because the config
/// was validated (globs, regexes and level specs are compiled at load time).
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<RouteConfig>,
    default_channel: String,
}

/// One channel an alert goes to, and what the route that sent it there says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Channel name (a key of `[channels]`).
    pub channel: String,
    /// Name of the route that chose this channel; `None` when no route matched and the alert
    /// went to `default_channel`.
    pub route: Option<String>,
    /// The route's `mention`, when it has one and its `mention_level` admits the alert's level.
    pub mention: Option<String>,
    /// The route's `cooldown` in seconds (default 30 minutes, also for the default channel):
    /// further occurrences of the issue in this channel within it are counted, not posted.
    pub cooldown_secs: u64,
    /// Whether the alert counts in this channel's weekly digest (the route's `digest`; true for
    /// the default channel).
    pub digest: bool,
    /// The route's `actions`: which buttons its messages carry (`None`: all the configuration
    /// allows). Stored with the message, so rows queued before this field existed read `None`.
    #[serde(default)]
    pub actions: Option<Vec<ActionKind>>,
    /// The route's `comments`: Sentry comments go to the issue's thread.
    #[serde(default)]
    pub comments: bool,
    /// The route's `breakthrough` thresholds (occurrences within a cooldown that let a spike
    /// through).
    #[serde(default = "default_breakthrough")]
    pub breakthrough: Vec<u64>,
}

fn default_breakthrough() -> Vec<u64> {
    DEFAULT_BREAKTHROUGH.to_vec()
}

impl Router {
    /// Takes the routes and default channel of `config`.
    pub fn new(config: &Config) -> Router {
        Router {
            routes: config.routes.clone(),
            default_channel: config.default_channel.clone(),
        }
    }

    /// The routes, in the order they are tried.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// The routes that match `alert`, in route order, honouring `continue`: the first match,
    /// plus the following matches as long as each matching route before them said
    /// `continue = true`. Empty when none matches (the alert then goes to the default channel).
    pub fn matching_routes(&self, alert: &Alert) -> Vec<&RouteConfig> {
        let mut matched = Vec::new();
        for route in &self.routes {
            if route_matches(route, alert) {
                matched.push(route);
                if !route.continue_matching {
                    break;
                }
            }
        }
        matched
    }

    /// The names of [`Router::matching_routes`], for `sluice route` output.
    pub fn matching_route_names(&self, alert: &Alert) -> Vec<&str> {
        self.matching_routes(alert)
            .into_iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    /// The channels `alert` goes to, in route order, each channel at most once (the first
    /// matching route that names it decides its mention, cooldown and digest). No route
    /// matched: the default channel alone, with `route: None`. Never empty.
    pub fn route(&self, alert: &Alert) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        for route in self.matching_routes(alert) {
            let mention = route
                .mention
                .as_ref()
                .filter(|_| {
                    route
                        .mention_level
                        .is_none_or(|spec| spec.matches(alert.level))
                })
                .cloned();
            for channel in &route.channels {
                if targets.iter().any(|t| &t.channel == channel) {
                    continue;
                }
                targets.push(Target {
                    channel: channel.clone(),
                    route: Some(route.name.clone()),
                    mention: mention.clone(),
                    cooldown_secs: route.cooldown.as_secs(),
                    digest: route.digest,
                    actions: route.actions.clone(),
                    comments: route.comments,
                    breakthrough: route.breakthrough.clone(),
                });
            }
        }
        if targets.is_empty() {
            targets.push(self.default_target());
        }
        targets
    }

    /// Where an alert goes when no route matches.
    fn default_target(&self) -> Target {
        Target {
            channel: self.default_channel.clone(),
            route: None,
            mention: None,
            cooldown_secs: DEFAULT_COOLDOWN.as_secs(),
            digest: true,
            actions: None,
            comments: false,
            breakthrough: default_breakthrough(),
        }
    }
}

/// Whether `alert` goes where its issue's earlier messages went rather than by the routes: an
/// issue notice (but `issue.created`, which is news) or a comment carries no environment to
/// route by.
pub fn follows_issue(alert: &Alert) -> bool {
    match alert.resource.as_str() {
        "issue" => alert.action != "created",
        "comment" => true,
        _ => false,
    }
}

/// Where an alert that [`follows_issue`] goes, given the route decisions of the channels the
/// issue's occurrences were sent to (`earlier`): those channels, without the route's mention
/// (the occurrence paged already) but for a reopening, which is news when it is a regression.
/// `None` for an issue never posted, which the routes place.
pub fn followed(alert: &Alert, earlier: &[Target]) -> Option<Vec<Target>> {
    if earlier.is_empty() {
        return None;
    }
    let pages = alert.resource == "issue" && alert.action == "unresolved";
    Some(
        earlier
            .iter()
            .map(|t| Target {
                mention: t.mention.clone().filter(|_| pages),
                ..t.clone()
            })
            .collect(),
    )
}

impl Target {
    /// The cooldown as a `Duration`.
    pub fn cooldown(&self) -> Duration {
        Duration::from_secs(self.cooldown_secs)
    }
}

/// Whether every matcher `route` sets matches `alert`.
pub fn route_matches(route: &RouteConfig, alert: &Alert) -> bool {
    if let Some(globs) = &route.project
        && !alert.projects.iter().any(|p| globs.is_match(p))
    {
        return false;
    }
    if let Some(globs) = &route.environment {
        match &alert.environment {
            Some(env) if globs.is_match(env) => {}
            _ => return false,
        }
    }
    if let Some(spec) = &route.level
        && !spec.matches(alert.level)
    {
        return false;
    }
    for (key, globs) in &route.tags {
        match alert.tag(key) {
            Some(value) if globs.is_match(value) => {}
            _ => return false,
        }
    }
    if let Some(title) = &route.title
        && !title.is_match(&alert.title)
    {
        return false;
    }
    if let Some(globs) = &route.resource
        && !globs.is_match(&alert.resource)
        && !globs.is_match(&alert.kind())
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::alert::Level;

    const CHANNELS: &str = r#"
default_channel = "errors"
[channels.errors]
console = true
[channels.a]
console = true
[channels.b]
console = true
[channels.c]
console = true
"#;

    fn router(routes: &str) -> Router {
        let text = format!("{CHANNELS}\n{routes}");
        let config = Config::parse(&text, Path::new("routes.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        Router::new(&config)
    }

    fn alert() -> Alert {
        Alert {
            resource: "event_alert".into(),
            action: "triggered".into(),
            issue_key: "1".into(),
            short_id: None,
            event_id: Some("e1".into()),
            projects: vec!["checkout".into()],
            environment: Some("production".into()),
            level: Level::Error,
            title: "ReferenceError: heck is not defined".into(),
            culprit: None,
            release: None,
            issue_url: None,
            event_url: None,
            tags: vec![
                ("region".into(), "eu-west-1".into()),
                ("browser".into(), "Chrome".into()),
            ],
            timestamp: None,
            sentry_first_seen: None,
            sentry_count: None,
            rule: None,
            detail: None,
            state: None,
        }
    }

    fn channels(router: &Router, alert: &Alert) -> Vec<String> {
        router.route(alert).into_iter().map(|t| t.channel).collect()
    }

    #[test]
    fn no_match_goes_to_the_default_channel() {
        let r = router("[[routes]]\nproject = \"billing\"\nchannels = [\"a\"]\n");
        assert_eq!(
            r.route(&alert()),
            [Target {
                channel: "errors".into(),
                route: None,
                mention: None,
                cooldown_secs: 1_800,
                digest: true,
                actions: None,
                comments: false,
                breakthrough: vec![10, 100, 1000],
            }]
        );
        assert!(r.matching_routes(&alert()).is_empty());
        assert_eq!(router("").route(&alert())[0].channel, "errors");
    }

    #[test]
    fn a_route_without_matchers_matches_everything() {
        let r = router("[[routes]]\nchannels = [\"a\"]\n");
        assert_eq!(channels(&r, &alert()), ["a"]);
        assert_eq!(r.matching_route_names(&alert()), ["route 1"]);
    }

    #[test]
    fn first_match_wins() {
        let r = router(
            "[[routes]]\nname = \"one\"\nchannels = [\"a\"]\n\
             [[routes]]\nname = \"two\"\nchannels = [\"b\"]\n",
        );
        assert_eq!(channels(&r, &alert()), ["a"]);
        assert_eq!(r.matching_route_names(&alert()), ["one"]);
    }

    #[test]
    fn continue_goes_on_and_each_channel_appears_once() {
        let r = router(
            "[[routes]]\nname = \"one\"\ncontinue = true\nchannels = [\"a\", \"b\"]\ncooldown = \"5m\"\n\
             [[routes]]\nname = \"skipped\"\nproject = \"billing\"\nchannels = [\"c\"]\n\
             [[routes]]\nname = \"two\"\ncontinue = true\nchannels = [\"b\", \"c\"]\ncooldown = \"1h\"\n\
             [[routes]]\nname = \"three\"\nchannels = [\"errors\"]\n\
             [[routes]]\nname = \"after the stop\"\nchannels = [\"a\"]\n",
        );
        let targets = r.route(&alert());
        let got: Vec<(&str, Option<&str>, u64)> = targets
            .iter()
            .map(|t| (t.channel.as_str(), t.route.as_deref(), t.cooldown_secs))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Some("one"), 300),
                ("b", Some("one"), 300),
                ("c", Some("two"), 3_600),
                ("errors", Some("three"), 1_800),
            ]
        );
        assert_eq!(r.matching_route_names(&alert()), ["one", "two", "three"]);
    }

    #[test]
    fn continue_with_no_later_match_keeps_only_the_routes_channels() {
        let r = router(
            "[[routes]]\ncontinue = true\nchannels = [\"a\"]\n\
             [[routes]]\nproject = \"billing\"\nchannels = [\"b\"]\n",
        );
        assert_eq!(channels(&r, &alert()), ["a"]);
    }

    #[test]
    fn project_globs_match_any_of_the_alerts_projects() {
        let r = router("[[routes]]\nproject = [\"billing\", \"check*\"]\nchannels = [\"a\"]\n");
        assert_eq!(channels(&r, &alert()), ["a"]);
        let mut other = alert();
        other.projects = vec!["search".into(), "checkout-api".into()];
        assert_eq!(channels(&r, &other), ["a"]);
        other.projects = vec!["Checkout".into()];
        assert_eq!(channels(&r, &other), ["errors"], "globs are case-sensitive");
        other.projects = vec!["mycheckout".into()];
        assert_eq!(
            channels(&r, &other),
            ["errors"],
            "globs match the whole slug"
        );
    }

    #[test]
    fn environment_globs_and_a_missing_environment() {
        let r = router("[[routes]]\nenvironment = [\"staging\", \"dev*\"]\nchannels = [\"a\"]\n");
        let mut a = alert();
        a.environment = Some("dev-eu".into());
        assert_eq!(channels(&r, &a), ["a"]);
        a.environment = Some("production".into());
        assert_eq!(channels(&r, &a), ["errors"]);
        a.environment = None;
        assert_eq!(
            channels(&r, &a),
            ["errors"],
            "no environment never matches an environment filter"
        );
        let any = router("[[routes]]\nenvironment = \"*\"\nchannels = [\"a\"]\n");
        assert_eq!(channels(&any, &a), ["errors"], "not even `*`");
    }

    #[test]
    fn level_ranges_and_lists() {
        let cases = [
            (">=error", [false, false, false, true, true]),
            (">warning", [false, false, false, true, true]),
            ("<=info", [true, true, false, false, false]),
            ("<error", [true, true, true, false, false]),
            ("=fatal", [false, false, false, false, true]),
            ("fatal", [false, false, false, false, true]),
            ("error", [false, false, false, true, false]),
        ];
        for (spec, expected) in cases {
            let r = router(&format!(
                "[[routes]]\nlevel = \"{spec}\"\nchannels = [\"a\"]\n"
            ));
            for (level, want) in Level::ALL.into_iter().zip(expected) {
                let mut a = alert();
                a.level = level;
                let got = channels(&r, &a) == ["a"];
                assert_eq!(got, want, "level {spec} vs {level}");
            }
        }
        let r = router("[[routes]]\nlevel = [\"debug\", \">=error\"]\nchannels = [\"a\"]\n");
        let hits: Vec<Level> = Level::ALL
            .into_iter()
            .filter(|l| {
                let mut a = alert();
                a.level = *l;
                channels(&r, &a) == ["a"]
            })
            .collect();
        assert_eq!(hits, [Level::Debug, Level::Error, Level::Fatal]);
    }

    #[test]
    fn tags_must_all_be_present_and_match() {
        let r = router(
            "[[routes]]\ntags = { region = \"eu-*\", browser = [\"Chrome\", \"Firefox\"] }\nchannels = [\"a\"]\n",
        );
        assert_eq!(channels(&r, &alert()), ["a"]);
        let mut a = alert();
        a.tags = vec![("region".into(), "eu-west-1".into())];
        assert_eq!(channels(&r, &a), ["errors"], "a missing tag does not match");
        a.tags = vec![
            ("region".into(), "us-east-1".into()),
            ("browser".into(), "Chrome".into()),
        ];
        assert_eq!(channels(&r, &a), ["errors"]);
    }

    #[test]
    fn title_regex_searches_unanchored() {
        let r = router("[[routes]]\ntitle = 'heck is (not )?defined'\nchannels = [\"a\"]\n");
        assert_eq!(channels(&r, &alert()), ["a"]);
        let r = router("[[routes]]\ntitle = '^heck'\nchannels = [\"a\"]\n");
        assert_eq!(channels(&r, &alert()), ["errors"]);
        let r = router("[[routes]]\ntitle = '(?i)REFERENCEERROR'\nchannels = [\"a\"]\n");
        assert_eq!(channels(&r, &alert()), ["a"]);
    }

    #[test]
    fn resource_matches_resource_or_kind() {
        let by_resource = router("[[routes]]\nresource = [\"issue\"]\nchannels = [\"a\"]\n");
        let by_kind = router("[[routes]]\nresource = [\"issue.resolved\"]\nchannels = [\"a\"]\n");
        let by_glob = router(
            "[[routes]]\nresource = [\"metric_alert.*\", \"issue.created\"]\nchannels = [\"a\"]\n",
        );
        let mut a = alert();
        a.resource = "issue".into();
        a.action = "resolved".into();
        assert_eq!(channels(&by_resource, &a), ["a"]);
        assert_eq!(channels(&by_kind, &a), ["a"]);
        assert_eq!(channels(&by_glob, &a), ["errors"]);
        a.action = "created".into();
        assert_eq!(channels(&by_kind, &a), ["errors"]);
        assert_eq!(channels(&by_glob, &a), ["a"]);
        a.resource = "metric_alert".into();
        a.action = "critical".into();
        assert_eq!(channels(&by_glob, &a), ["a"]);
        assert_eq!(channels(&by_resource, &alert()), ["errors"]);
    }

    #[test]
    fn all_matchers_must_match() {
        let r = router(
            "[[routes]]\nproject = \"checkout\"\nenvironment = \"production\"\nlevel = \">=error\"\n\
             title = \"Reference\"\nchannels = [\"a\"]\n",
        );
        assert_eq!(channels(&r, &alert()), ["a"]);
        let mut a = alert();
        a.level = Level::Warning;
        assert_eq!(channels(&r, &a), ["errors"]);
    }

    #[test]
    fn mention_and_mention_level() {
        let r = router(
            "[[routes]]\ncontinue = true\nchannels = [\"a\"]\nmention = \"<!subteam^S1>\"\nmention_level = \"fatal\"\n\
             [[routes]]\ncontinue = true\nchannels = [\"b\"]\nmention = \"<!here>\"\n\
             [[routes]]\nchannels = [\"c\"]\nmention = \"<@U1>\"\nmention_level = \"warning\"\n",
        );
        let mentions = |level| {
            let mut a = alert();
            a.level = level;
            r.route(&a)
                .into_iter()
                .map(|t| t.mention)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            mentions(Level::Error),
            [None, Some("<!here>".into()), Some("<@U1>".into())],
            "a bare mention_level is a threshold: warning admits error"
        );
        assert_eq!(
            mentions(Level::Fatal),
            [
                Some("<!subteam^S1>".into()),
                Some("<!here>".into()),
                Some("<@U1>".into())
            ]
        );
        assert_eq!(mentions(Level::Info), [None, Some("<!here>".into()), None]);
    }

    #[test]
    fn digest_flag_and_cooldown_come_from_the_route() {
        let r = router("[[routes]]\nchannels = [\"a\"]\ndigest = false\ncooldown = \"0s\"\n");
        let t = &r.route(&alert())[0];
        assert!(!t.digest);
        assert_eq!(t.cooldown(), Duration::ZERO);
    }

    /// The example routes.toml of the product specification.
    #[test]
    fn the_spec_example_routes() {
        let config = crate::config::tests::spec_example();
        let r = Router::new(&config);
        let one = |project: &str, env: Option<&str>, level| {
            let mut a = alert();
            a.projects = vec![project.into()];
            a.environment = env.map(Into::into);
            a.level = level;
            let t = r.route(&a).remove(0);
            (t.channel, t.route, t.mention)
        };
        let s = |s: &str| Some(s.to_string());
        assert_eq!(
            one("checkout", s("production").as_deref(), Level::Error),
            ("checkout-prod".into(), s("checkout production"), None)
        );
        assert_eq!(
            one("checkout-api", Some("production"), Level::Fatal),
            (
                "checkout-prod".into(),
                s("checkout production"),
                s("<!subteam^S0123>")
            )
        );
        assert_eq!(
            one("checkout", Some("production"), Level::Warning),
            ("errors".into(), None, None),
            "a production warning matches neither route"
        );
        assert_eq!(
            one("checkout", Some("dev-42"), Level::Info),
            ("checkout-staging".into(), s("checkout staging"), None)
        );
        assert_eq!(
            one("checkout", None, Level::Fatal),
            ("errors".into(), None, None)
        );
        assert_eq!(
            one("search", Some("production"), Level::Fatal),
            ("errors".into(), None, None)
        );
    }

    #[test]
    fn targets_round_trip_through_json() {
        let t = router("[[routes]]\nchannels = [\"a\"]\n").route(&alert());
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Target>>(&json).unwrap(), t);
    }

    /// Issue notices (but `issue.created`) and comments follow the issue's earlier channels,
    /// without paging again, except a reopening; an issue never posted goes by the routes.
    #[test]
    fn notices_and_comments_follow_the_issue_and_only_a_reopening_pages() {
        let notice = |resource: &str, action: &str| Alert {
            resource: resource.into(),
            action: action.into(),
            event_id: None,
            ..alert()
        };
        assert!(!follows_issue(&alert()));
        assert!(!follows_issue(&notice("issue", "created")));
        assert!(!follows_issue(&notice("metric_alert", "critical")));
        for (resource, action) in [
            ("issue", "resolved"),
            ("issue", "assigned"),
            ("comment", "created"),
        ] {
            assert!(
                follows_issue(&notice(resource, action)),
                "{resource}.{action}"
            );
        }
        let earlier = [Target {
            channel: "oncall".into(),
            route: Some("checkout".into()),
            mention: Some("<!subteam^S1>".into()),
            cooldown_secs: 60,
            digest: true,
            actions: None,
            comments: true,
            breakthrough: vec![10],
        }];
        let resolved = followed(&notice("issue", "resolved"), &earlier).unwrap();
        assert_eq!(resolved[0].mention, None);
        assert_eq!(
            (resolved[0].channel.as_str(), resolved[0].comments),
            ("oncall", true)
        );
        let reopened = followed(&notice("issue", "unresolved"), &earlier).unwrap();
        assert_eq!(reopened[0].mention.as_deref(), Some("<!subteam^S1>"));
        assert_eq!(followed(&notice("issue", "resolved"), &[]), None);
    }
}
