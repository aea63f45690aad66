use super::error::line_col;
use super::*;

/// The example from the product specification, verbatim.
const EXAMPLE: &str = r#"default_channel = "errors"

[server]
listen = "127.0.0.1:8080"

[sentry]
client_secrets = ["${SENTRY_CLIENT_SECRET}"]
max_clock_skew = "5m"
legacy_token = "${SLUICE_LEGACY_TOKEN}"   # optional

[sentry.projects]        # optional: numeric project id -> slug
"4505" = "checkout"

[storage]
url = "sqlite://sluice.db"     # embedded default; postgres://… for several replicas
retention_days = 90

[slack]
bot_token = "${SLACK_BOT_TOKEN}"          # optional: only for channels that name a slack_channel
api_base = "https://slack.com/api"

[channels.errors]
console = true                            # prints the message: for trying Sluice without Slack

[channels.checkout-prod]
webhook_url = "${SLACK_WEBHOOK_CHECKOUT_PROD}"
rate = "1/s"
burst = 3

[channels.checkout-staging]
slack_channel = "C0123456789"             # Web API: threads and in-place updates

[[routes]]
name = "checkout production"
project = "checkout*"
environment = "production"
level = ">=error"
channels = ["checkout-prod"]
cooldown = "30m"
mention = "<!subteam^S0123>"
mention_level = "fatal"

[[routes]]
name = "checkout staging"
project = "checkout*"
environment = ["staging", "dev*"]
channels = ["checkout-staging"]

[digest]
schedule = "0 9 * * MON"     # cron, in `timezone`
timezone = "Europe/Berlin"
top = 10
"#;

fn example_env(name: &str) -> Option<String> {
    match name {
        "SENTRY_CLIENT_SECRET" => Some("sentry-secret-1234".into()),
        "SLUICE_LEGACY_TOKEN" => Some("legacy-token-5678".into()),
        "SLACK_BOT_TOKEN" => Some("xoxb-bot-token-9999".into()),
        "SLACK_WEBHOOK_CHECKOUT_PROD" => {
            Some("https://hooks.slack.com/services/T0/B0/hooksecret".into())
        }
        _ => None,
    }
}

fn parse_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("routes.toml"), env)
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &|_| None)
}

fn error(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e,
    }
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    line_col(text, offset)
}

/// Asserts that `text` fails at the first occurrence of `at` with a message containing `words`.
#[track_caller]
fn assert_error_at(text: &str, at: &str, words: &str) {
    let e = error(text);
    assert_eq!(
        (e.line(), e.column()),
        position(text, at),
        "wrong position for {at:?}: {e}"
    );
    assert!(e.message().contains(words), "{e} does not say {words:?}");
    assert_eq!(
        e.to_string(),
        format!("routes.toml:{}:{}: {}", e.line(), e.column(), e.message())
    );
}

const MINIMAL: &str = "default_channel = \"errors\"\n[channels.errors]\nconsole = true\n";

fn with_minimal(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// `extra` holds top-level keys, so it goes before the first table.
fn with_top(extra: &str) -> String {
    format!("{extra}{MINIMAL}")
}

/// The specification's example, parsed with every variable it names set.
pub(crate) fn spec_example() -> Config {
    parse_with(EXAMPLE, &example_env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_spec_example_parses() {
    let config = parse_with(EXAMPLE, &example_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, Path::new("routes.toml"));
    assert_eq!(config.default_channel, "errors");
    assert_eq!(config.ops_channel, "errors");
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    // SPEC §2 says 1 MiB; docs/configuration.md says why Sluice's default is larger.
    assert_eq!(config.server.max_body_bytes, 8 * 1_048_576);
    assert_eq!(
        config.sentry.client_secrets,
        [Secret::new("sentry-secret-1234")]
    );
    assert_eq!(
        config.sentry.client_secrets_exposed(),
        ["sentry-secret-1234"]
    );
    assert_eq!(config.sentry.max_clock_skew, Duration::from_secs(300));
    assert_eq!(
        config.sentry.legacy_token,
        Some(Secret::new("legacy-token-5678"))
    );
    assert_eq!(config.sentry.projects["4505"], "checkout");
    assert_eq!(config.storage.url.expose(), "sqlite://sluice.db");
    assert_eq!(config.storage.retention_days, 90);
    assert_eq!(
        config.slack.bot_token,
        Some(Secret::new("xoxb-bot-token-9999"))
    );
    assert_eq!(config.slack.api_base, "https://slack.com/api");
    assert_eq!(config.channels.len(), 3);
    assert_eq!(config.channels["errors"].target, ChannelTarget::Console);
    let prod = &config.channels["checkout-prod"];
    assert_eq!(
        prod.target,
        ChannelTarget::Webhook {
            url: Secret::new("https://hooks.slack.com/services/T0/B0/hooksecret")
        }
    );
    assert_eq!(
        (prod.rate, prod.burst, prod.max_backlog),
        (Rate::default(), 3, 20)
    );
    assert_eq!(
        config.channels["checkout-staging"].target,
        ChannelTarget::WebApi {
            channel: "C0123456789".into()
        }
    );
    assert_eq!(config.routes.len(), 2);
    let route = &config.routes[0];
    assert_eq!(route.name, "checkout production");
    assert_eq!(route.project.as_ref().unwrap().patterns(), ["checkout*"]);
    assert_eq!(
        route.environment.as_ref().unwrap().patterns(),
        ["production"]
    );
    assert_eq!(route.level, Some(LevelSpec::parse(">=error").unwrap()));
    assert_eq!(route.channels, ["checkout-prod"]);
    assert_eq!(route.cooldown, Duration::from_secs(1_800));
    assert_eq!(route.mention.as_deref(), Some("<!subteam^S0123>"));
    assert_eq!(
        route.mention_level,
        Some(LevelSpec::parse("fatal").unwrap())
    );
    assert!(route.digest && !route.continue_matching);
    assert_eq!(
        config.routes[1].environment.as_ref().unwrap().patterns(),
        ["staging", "dev*"]
    );
    assert_eq!(config.digest.schedule, "0 9 * * MON");
    assert_eq!(config.digest.timezone, "Europe/Berlin");
    assert_eq!(config.digest.top, 10);
}

#[test]
fn the_spec_example_without_environment_names_the_first_missing_variable() {
    let e = parse(EXAMPLE).unwrap_err();
    assert_eq!(
        (e.line(), e.column()),
        position(EXAMPLE, "\"${SENTRY_CLIENT_SECRET}")
    );
    assert!(
        e.message().contains("`SENTRY_CLIENT_SECRET` is not set"),
        "{e}"
    );
    assert!(e.message().contains("sentry.client_secrets[0]"), "{e}");
}

#[test]
fn defaults_apply() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.ops_channel, "errors");
    assert_eq!(config.server.listen, DEFAULT_LISTEN);
    assert_eq!(config.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(
        (
            config.server.header_timeout,
            config.server.body_timeout,
            config.server.request_timeout,
            config.server.idle_timeout,
        ),
        (
            Duration::from_secs(5),
            Duration::from_millis(500),
            Duration::from_millis(800),
            Duration::from_secs(75),
        )
    );
    assert_eq!(
        (
            config.server.max_connections,
            config.server.max_concurrent_requests
        ),
        (512, 64)
    );
    assert!(config.sentry.client_secrets.is_empty());
    assert_eq!(config.sentry.legacy_token, None);
    assert_eq!(config.sentry.max_clock_skew, Duration::from_secs(300));
    assert_eq!(config.sentry.quiet_alert_after, Duration::from_secs(86_400));
    assert!(config.sentry.projects.is_empty());
    assert_eq!(config.storage.url.expose(), DEFAULT_STORAGE_URL);
    assert_eq!(config.storage.retention_days, 90);
    assert_eq!(config.slack.bot_token, None);
    assert_eq!(config.slack.api_base, DEFAULT_SLACK_API_BASE);
    assert_eq!(config.slack.max_retry_age, Duration::from_secs(86_400));
    assert_eq!(config.slack.timeout, Duration::from_secs(10));
    assert_eq!(config.slack.retry_initial_backoff, Duration::from_secs(1));
    assert_eq!(config.slack.retry_max_backoff, Duration::from_secs(600));
    assert_eq!(config.slack.max_retry_after, Duration::from_secs(3_600));
    assert_eq!(config.digest.schedule, DEFAULT_DIGEST_SCHEDULE);
    assert_eq!(config.digest.timezone, "UTC");
    assert_eq!(config.digest.top, 10);
    assert!(config.routes.is_empty());
    let errors = config.channel("errors").unwrap();
    assert_eq!(
        (errors.rate, errors.burst, errors.max_backlog),
        (Rate::default(), 3, 20)
    );
}

#[test]
fn every_field_can_be_set() {
    let text = r##"
default_channel = "errors"
ops_channel = "ops"
[server]
listen = "0.0.0.0:9000"
max_body_bytes = 2048
header_timeout = "2s"
body_timeout = "3s"
request_timeout = "4s"
idle_timeout = "90s"
max_connections = 100
max_concurrent_requests = 7
[sentry]
client_secrets = "single"
max_clock_skew = "90s"
legacy_token = "tok"
quiet_alert_after = "12h"
[storage]
url = "postgres://sluice:pw@db:5432/sluice"
retention_days = 30
[slack]
bot_token = "xoxb-1"
api_base = "http://127.0.0.1:3000/api/"
max_retry_age = "2h"
timeout = "500ms"
retry_initial_backoff = "2s"
retry_max_backoff = "1m"
max_retry_after = "6h"
[channels.errors]
console = true
[channels.ops]
slack_channel = "#ops"
rate = "2/10s"
burst = 5
max_backlog = 7
[[routes]]
project = ["a", "b"]
environment = "prod"
level = ["warning", "fatal"]
tags = { region = "eu-*" }
title = "Timeout"
resource = ["issue", "error.created"]
channels = ["ops", "errors", "ops"]
continue = true
cooldown = "0s"
mention = "<!here>"
mention_level = ">=error"
digest = false
[digest]
schedule = "30 8 * * 1-5"
timezone = "America/New_York"
top = 3
"##;
    let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ops_channel, "ops");
    assert_eq!(
        (c.server.listen.as_str(), c.server.max_body_bytes),
        ("0.0.0.0:9000", 2048)
    );
    assert_eq!(
        (
            c.server.header_timeout,
            c.server.body_timeout,
            c.server.request_timeout,
            c.server.idle_timeout,
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(4),
            Duration::from_secs(90),
        )
    );
    assert_eq!(
        (c.server.max_connections, c.server.max_concurrent_requests),
        (100, 7)
    );
    assert_eq!(c.sentry.client_secrets, [Secret::new("single")]);
    assert_eq!(c.sentry.max_clock_skew, Duration::from_secs(90));
    assert_eq!(c.sentry.quiet_alert_after, Duration::from_secs(12 * 3_600));
    assert_eq!(c.storage.retention_days, 30);
    assert_eq!(c.slack.api_base, "http://127.0.0.1:3000/api");
    assert_eq!(c.slack.timeout, Duration::from_millis(500));
    assert_eq!(c.slack.retry_max_backoff, Duration::from_secs(60));
    assert_eq!(c.slack.max_retry_after, Duration::from_secs(6 * 3_600));
    let ops = &c.channels["ops"];
    assert_eq!(
        ops.rate,
        Rate {
            count: 2,
            per: Duration::from_secs(10)
        }
    );
    assert_eq!((ops.burst, ops.max_backlog), (5, 7));
    let route = &c.routes[0];
    assert_eq!(route.name, "route 1");
    assert_eq!(route.channels, ["ops", "errors"], "duplicates dropped");
    assert_eq!(route.tags.len(), 1);
    assert!(route.continue_matching && !route.digest);
    assert_eq!(route.cooldown, Duration::ZERO);
    assert_eq!(route.level.unwrap().to_string(), "warning, fatal");
    assert_eq!(route.mention_level.unwrap().to_string(), "error, fatal");
    assert_eq!(c.digest.timezone, "America/New_York");
    assert_eq!(c.digest.top, 3);
}

#[test]
fn env_vars_expand_with_defaults() {
    let text = r#"
default_channel = "${DEFAULT_CHANNEL:-errors}"
[server]
listen = "${HOST:-127.0.0.1}:${PORT}"
[sentry]
client_secrets = ["${S1}", "${S2:-}"]
legacy_token = "${LEGACY:-}"
[slack]
bot_token = "${BOT}"
[channels.errors]
console = true
[channels.ops]
webhook_url = "https://hooks.slack.com/${HOOK:-none}"
"#;
    let env = |name: &str| match name {
        "PORT" => Some("9090".to_string()),
        "S1" => Some("first".to_string()),
        "BOT" => Some(String::new()),
        _ => None,
    };
    let c = parse_with(text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.default_channel, "errors");
    assert_eq!(c.server.listen, "127.0.0.1:9090");
    assert_eq!(
        c.sentry.client_secrets,
        [Secret::new("first")],
        "empty secrets are dropped"
    );
    assert_eq!(c.sentry.legacy_token, None);
    assert_eq!(c.slack.bot_token, None, "an empty token counts as unset");
    assert_eq!(
        c.channels["ops"].target,
        ChannelTarget::Webhook {
            url: Secret::new("https://hooks.slack.com/none")
        }
    );
}

#[test]
fn a_missing_variable_is_named_with_its_position() {
    let text = with_minimal("[slack]\napi_base = \"https://${SLACK_HOST}/api\"\n");
    assert_error_at(
        &text,
        "\"https://${SLACK_HOST}",
        "environment variable `SLACK_HOST` is not set",
    );
    assert!(error(&text).message().contains("`slack.api_base`"));
}

#[test]
fn bad_expansion_syntax_is_reported() {
    let text = with_minimal("[slack]\napi_base = \"https://${SLACK_HOST\"\n");
    assert_error_at(&text, "\"https://${", "unterminated `${`");
}

#[test]
fn the_escape_gives_a_literal_dollar_brace() {
    let text =
        with_minimal("[[routes]]\nmention = 'costs $5 $${NOT_A_VAR}'\nchannels = [\"errors\"]\n");
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.routes[0].mention.as_deref(),
        Some("costs $5 ${NOT_A_VAR}")
    );
}

#[test]
fn unknown_fields_are_named_with_what_was_expected() {
    let text = with_minimal("[server]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n");
    assert_error_at(&text, "max_body =", "unknown field `max_body`");
    let e = error(&text);
    assert!(
        e.message().contains("`listen`") && e.message().contains("`max_body_bytes`"),
        "{e}"
    );

    let text = with_minimal(
        "[[routes]]\nchannels = [\"errors\"]\nproject = \"x\"\nenvironments = \"prod\"\n",
    );
    assert_error_at(&text, "environments", "unknown field `environments`");
    assert!(error(&text).message().contains("`continue`"));

    assert_error_at(
        &with_top("colour = \"red\"\n"),
        "colour",
        "unknown field `colour`",
    );
    assert_error_at(
        "default_channel = \"errors\"\n[channels.errors]\nconsole = true\nwebhook = \"x\"\n",
        "webhook",
        "unknown field `webhook`",
    );
}

#[test]
fn deserialization_errors_name_the_key() {
    let text = with_minimal("[[routes]]\nchannels = [\"errors\"]\ncontinue = \"yes\"\n");
    assert_error_at(
        &text,
        "\"yes",
        "`routes[0].continue`: invalid type: a string, expected a boolean",
    );
    let text = with_minimal("burst = -1\n");
    assert_error_at(
        &text,
        "-1",
        "`channels.errors.burst`: invalid value: integer `-1`, expected a whole number",
    );
    let text = format!("[sentry]\nclient_secrets = []\n{MINIMAL}");
    assert_error_at(
        &text,
        "default_channel",
        "`sentry`: unknown field `default_channel`",
    );
    assert!(
        error(&text)
            .message()
            .contains("top-level keys must come before")
    );
}

#[test]
fn toml_syntax_errors_have_positions() {
    let text = "default_channel = \"errors\"\n[channels.errors]\nconsole = tru\n";
    let e = error(text);
    assert_eq!(e.line(), 3, "{e}");
    assert!(!e.message().contains('\n'), "one line: {e:?}");
}

#[test]
fn wrong_types_are_reported_without_the_value() {
    let text = with_minimal("[channels.x]\nconsole = true\nburst = \"many-secret-words\"\n");
    assert_error_at(&text, "\"many-secret-words", "invalid type");
    assert!(!error(&text).to_string().contains("many-secret-words"));
}

#[test]
fn bad_values_point_at_themselves() {
    let route =
        |body: &str| with_minimal(&format!("[[routes]]\nchannels = [\"errors\"]\n{body}\n"));
    assert_error_at(
        &route("project = [\"ok\", \"bad[\"]"),
        "\"bad[",
        "invalid glob `bad[`",
    );
    assert_error_at(&route("environment = \"{a,b\""), "\"{a,b", "invalid glob");
    assert_error_at(
        &route("tags = { region = \"[\" }"),
        "\"[\"",
        "`routes[0].tags.region`: invalid glob",
    );
    assert_error_at(
        &route("resource = [\"issue\", \"a[\"]"),
        "\"a[\"",
        "invalid glob",
    );
    assert_error_at(
        &route("title = \"(unclosed\""),
        "\"(unclosed",
        "invalid regex: unclosed group",
    );
    assert_error_at(&route("level = \">=loud\""), "\">=loud", "invalid level");
    assert_error_at(
        &route("level = [\"error\", \"<debug\"]"),
        "\"<debug",
        "matches no level",
    );
    assert_error_at(&route("level = []"), "[]", "must not be an empty list");
    assert_error_at(&route("project = []"), "[]", "must not be an empty list");
    assert_error_at(
        &route("cooldown = \"30\""),
        "\"30\"",
        "`routes[0].cooldown`: duration is missing its unit",
    );
    assert_error_at(
        &route("mention = \"<!here>\"\nmention_level = \"huge\""),
        "\"huge",
        "invalid level",
    );
    assert_error_at(
        &route("mention_level = \"error\""),
        "\"error\"\n",
        "no `mention`",
    );
    assert_error_at(&route("name = \"\""), "\"\"", "must not be empty");

    let channel = |body: &str| with_minimal(&format!("[channels.x]\nconsole = true\n{body}\n"));
    assert_error_at(
        &channel("rate = \"fast\""),
        "\"fast",
        "`channels.x.rate`: invalid rate",
    );
    assert_error_at(&channel("rate = \"0/s\""), "\"0/s", "at least 1");
    assert_error_at(
        &channel("burst = 0"),
        "0\n",
        "`channels.x.burst` must be at least 1",
    );
    assert_error_at(
        &channel("max_backlog = 0"),
        "0\n",
        "`channels.x.max_backlog` must be at least 1",
    );

    let digest = |body: &str| with_minimal(&format!("[digest]\n{body}\n"));
    assert_error_at(
        &digest("schedule = \"0 9 * *\""),
        "\"0 9",
        "not a valid 5-field cron",
    );
    assert_error_at(
        &digest("schedule = \"0 0 9 * * MON\""),
        "\"0 0 9",
        "6 fields",
    );
    assert_error_at(
        &digest("schedule = \"61 9 * * MON\""),
        "\"61",
        "not a valid 5-field cron",
    );
    assert_error_at(
        &digest("schedule = \"0 9 * * FUNDAY\""),
        "\"0 9",
        "not a valid 5-field cron",
    );
    assert_error_at(
        &digest("schedule = \"0 0 31 2 *\""),
        "\"0 0 31",
        "never fires",
    );
    assert_error_at(
        &digest("timezone = \"Mars/Olympus\""),
        "\"Mars",
        "unknown time zone `Mars/Olympus`",
    );
    assert_error_at(&digest("top = 0"), "0\n", "`digest.top` must be at least 1");

    assert_error_at(
        &with_minimal("[server]\nlisten = \"8080\""),
        "\"8080",
        "host:port",
    );
    assert_error_at(
        &with_minimal("[server]\nmax_body_bytes = 0"),
        "0",
        "at least 1",
    );
    for key in ["max_connections", "max_concurrent_requests"] {
        assert_error_at(
            &with_minimal(&format!("[server]\n{key} = 0")),
            "0",
            &format!("`server.{key}` must be at least 1"),
        );
    }
    for key in [
        "header_timeout",
        "body_timeout",
        "request_timeout",
        "idle_timeout",
    ] {
        assert_error_at(
            &with_minimal(&format!("[server]\n{key} = \"0s\"")),
            "\"0s",
            &format!("`server.{key}` must be longer than zero"),
        );
    }
    assert_error_at(
        &with_minimal("[server]\nbody_timeout = \"10s\"\nrequest_timeout = \"2s\""),
        "\"2s",
        "`server.request_timeout` (2s) must be at least `server.body_timeout` (10s)",
    );
    // The default request timeout is shorter than this body timeout: the error points at it.
    assert_error_at(
        &with_minimal("[server]\nbody_timeout = \"1m\""),
        "\"1m",
        "must be at least `server.body_timeout` (1m)",
    );
    assert_error_at(
        &with_minimal("[sentry]\nmax_clock_skew = \"0s\""),
        "\"0s",
        "longer than zero",
    );
    assert_error_at(
        &with_minimal("[sentry.projects]\nchk = \"checkout\""),
        "chk",
        "numeric Sentry project ids",
    );
    assert_error_at(
        &with_minimal("[storage]\nretention_days = 0"),
        "0",
        "at least 1",
    );
    assert_error_at(
        &with_minimal("[storage]\nurl = \"mysql://x\""),
        "\"mysql",
        "`storage.url` must start with",
    );
    assert_error_at(
        &with_minimal("[slack]\napi_base = \"ftp://x\""),
        "\"ftp",
        "`slack.api_base` must be an http(s) URL, got `ftp://x`",
    );
    assert_error_at(
        &with_minimal("[slack]\nmax_retry_after = \"0s\""),
        "\"0s",
        "`slack.max_retry_after` must be longer than zero",
    );
    assert_error_at(
        &with_minimal("[slack]\nretry_initial_backoff = \"1h\"\nretry_max_backoff = \"1m\""),
        "\"1m",
        "must not be shorter",
    );
}

#[test]
fn good_cron_schedules_and_zones_pass() {
    for schedule in [
        "0 9 * * MON",
        "*/15 * * * *",
        "0 8 1 * *",
        "30 7 * * mon-fri",
        "0 0 29 2 *",
    ] {
        let text = with_minimal(&format!(
            "[digest]\nschedule = \"{schedule}\"\ntimezone = \"Asia/Kolkata\"\n"
        ));
        parse(&text).unwrap_or_else(|e| panic!("{schedule}: {e}"));
    }
}

#[test]
fn the_digest_schedule_and_zone_are_usable() {
    let text = with_minimal("[digest]\nschedule = \"0 9 * * MON\"\ntimezone = \"Europe/Berlin\"\n");
    let digest = parse(&text).unwrap().digest;
    let tz = digest.time_zone().unwrap();
    // Friday 2024-03-29 12:00 in Berlin: the next run is Monday 2024-04-01 09:00 (after DST).
    let start = jiff::civil::date(2024, 3, 29)
        .at(12, 0, 0, 0)
        .to_zoned(tz)
        .unwrap();
    let next = digest
        .cron()
        .unwrap()
        .find_next_occurrence(&start, false)
        .unwrap();
    assert_eq!(next.to_string(), "2024-04-01T09:00:00+02:00[Europe/Berlin]");
    assert!(parse_cron("0 9 * * *").is_ok());
    assert_eq!(parse_cron("0 9 * *").unwrap_err(), "it has 4 fields, not 5");
}

#[test]
fn channels_are_checked() {
    assert_error_at(
        &with_minimal("[[routes]]\nchannels = [\"errors\", \"nope\"]\n"),
        "\"nope",
        "names channel `nope`, which has no `[channels.…]` table (defined: errors)",
    );
    assert_error_at(
        "default_channel = \"missing\"\n[channels.errors]\nconsole = true\n",
        "\"missing",
        "`default_channel` names channel `missing`",
    );
    assert_error_at(
        &with_top("ops_channel = \"ops\"\n"),
        "\"ops",
        "`ops_channel` names channel `ops`",
    );
    assert_error_at(
        "default_channel = \"errors\"\n",
        "\"errors",
        "no channels defined",
    );
    assert_error_at(
        "[channels.errors]\nconsole = true\n",
        "[channels",
        "missing `default_channel`",
    );
    assert_error_at(
        &with_minimal("[[routes]]\nproject = \"x\"\n"),
        "[[routes]]",
        "route `route 1` has no `channels`",
    );
    assert_error_at(
        &with_minimal("[[routes]]\nname = \"r\"\nchannels = []\n"),
        "[]",
        "must name at least one channel",
    );
    assert_error_at(
        &with_minimal("[channels.x]\nrate = \"1/s\"\n"),
        "x]",
        "channel `x` needs a destination",
    );
    assert_error_at(
        &with_minimal("[channels.x]\nconsole = false\n"),
        "x]",
        "needs a destination",
    );
    assert_error_at(
        &with_minimal("[channels.x]\nconsole = true\nslack_channel = \"C1\"\n"),
        "\"C1",
        "sets both `console` and `slack_channel`",
    );
    assert_error_at(
        &with_minimal("[channels.x]\nslack_channel = \"C1\"\n"),
        "\"C1",
        "needs `slack.bot_token`",
    );
    assert_error_at(
        &with_minimal("[channels.x]\nwebhook_url = \"hooks.slack.com/T/B/secret-part\"\n"),
        "\"hooks",
        "`channels.x.webhook_url` must be an http(s) URL",
    );
    let text = with_minimal(
        "[[routes]]\nname = \"a\"\nchannels = [\"errors\"]\n[[routes]]\nname = \"a\"\nchannels = [\"errors\"]\n",
    );
    let e = error(&text);
    assert_eq!(
        (e.line(), e.column()),
        line_col(&text, text.rfind("\"a\"").unwrap())
    );
    assert!(
        e.message()
            .contains("route name `a` is used by an earlier route"),
        "{e}"
    );
}

#[test]
fn the_first_error_in_the_file_is_reported() {
    let text = "default_channel = \"errors\"\n[channels.errors]\nconsole = true\nburst = 0\n\
                [[routes]]\nchannels = [\"nope\"]\n[digest]\ntimezone = \"Nowhere/Land\"\n";
    assert_error_at(text, "0\n", "burst");
    // An unknown key before a missing variable: the unknown key is reported.
    let text =
        "default_channel = \"errors\"\nbogus = 1\n[channels.errors]\nwebhook_url = \"${NOPE}\"\n";
    assert_error_at(text, "bogus", "unknown field `bogus`");
    let text = "default_channel = \"${NOPE}\"\nbogus = 1\n[channels.errors]\nconsole = true\n";
    assert_error_at(text, "\"${NOPE}", "`NOPE` is not set");
}

#[test]
fn expanded_values_never_appear_in_errors() {
    let env = |name: &str| match name {
        "HOOK" => Some("not-a-url-SECRETVALUE".to_string()),
        "CHAN" => Some("SECRETCHANNEL".to_string()),
        "ZONE" => Some("SECRET/ZONE".to_string()),
        "BASE" => Some("SECRETBASE".to_string()),
        _ => None,
    };
    let cases = [
        "[channels.x]\nwebhook_url = \"${HOOK}\"\n",
        "ops_channel = \"${CHAN}\"\n",
        "[digest]\ntimezone = \"${ZONE}\"\n",
        "[slack]\napi_base = \"${BASE}\"\n",
        "[[routes]]\nchannels = [\"${CHAN}\"]\n",
        "[[routes]]\nchannels = [\"errors\"]\nproject = \"${CHAN}[\"\n",
    ];
    for case in cases {
        let e = parse_with(&with_minimal(case), &env).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SECRET"), "{case}: {text}");
    }
    let e = parse_with(&with_top("ops_channel = \"${CHAN}\"\n"), &env).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(e.message().contains("the value of `${CHAN}`"), "{e}");
}

/// Every secret field holds a distinctive value; none may show in `Debug` of the config, nor in
/// any error the same file produces when something else is wrong.
#[test]
fn secrets_never_show() {
    const MARK: &str = "S3CR3T";
    let text = r#"
default_channel = "errors"
[sentry]
client_secrets = ["S3CR3T-client-a", "${CLIENT_B}"]
legacy_token = "S3CR3T-legacy"
[storage]
url = "postgres://user:S3CR3T-db@db:5432/sluice?password=S3CR3T-q"
[slack]
bot_token = "${BOT}"
[channels.errors]
webhook_url = "https://hooks.slack.com/services/S3CR3T-hook"
[channels.api]
slack_channel = "C1"
"#;
    let env = |name: &str| match name {
        "CLIENT_B" => Some(format!("{MARK}-client-b")),
        "BOT" => Some(format!("xoxb-{MARK}-bot")),
        _ => None,
    };
    let config = parse_with(text, &env).unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains(MARK), "{debug}");
    assert!(debug.contains("[redacted]"));
    assert_eq!(
        config.storage.redacted_url(),
        "postgres://user:[redacted]@db:5432/sluice?[redacted]"
    );
    assert_eq!(config.sentry.client_secrets[1].expose(), "S3CR3T-client-b");

    // Break the file in many ways, each after the secrets; no error may carry one.
    let breakages = [
        "[digest]\ntop = 0\n",
        "[digest]\nschedule = \"nope\"\n",
        "bogus = 1\n",
        "[[routes]]\nchannels = [\"none\"]\n",
        "[storage]\n",
        "[channels.bad]\nwebhook_url = \"S3CR3T-not-a-url\"\n",
        "[channels.bad2]\nwebhook_url = [\"S3CR3T-in-a-list\"]\n",
        "[channels.bad3]\nwebhook_url = \"${NOT_SET}\"\n",
    ];
    for extra in breakages {
        let broken = format!("{text}{extra}");
        if let Err(e) = parse_with(&broken, &env) {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(MARK), "{extra}: {shown}");
        }
    }
    // Secrets of the wrong type or shape, right where they are written.
    let wrong = [
        "[sentry]\nlegacy_token = [\"S3CR3T-x\"]\n",
        "[sentry]\nclient_secrets = [1, \"S3CR3T-y\"]\n",
        "[slack]\nbot_token = { token = \"S3CR3T-z\" }\n",
        "[storage]\nurl = \"S3CR3T-w\"\n",
        "[storage]\nurl = 5\nx = \"S3CR3T-v\"\n",
        "[channels.x]\nwebhook_url = \"http:// S3CR3T\"\n",
    ];
    for extra in wrong {
        let e = error(&with_minimal(extra));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(MARK), "{extra}: {shown}");
    }
}

#[test]
fn storage_urls_redact_passwords() {
    let storage = |url: &str| StorageConfig {
        url: Secret::new(url),
        retention_days: 90,
    };
    assert_eq!(
        storage("sqlite://sluice.db").redacted_url(),
        "sqlite://sluice.db"
    );
    assert_eq!(
        storage("postgres://db/sluice").redacted_url(),
        "postgres://db/sluice"
    );
    assert_eq!(
        storage("postgres://u:p@db/x").redacted_url(),
        "postgres://u:[redacted]@db/x"
    );
    assert_eq!(
        storage("postgres://u@db").redacted_url(),
        "postgres://u:[redacted]@db"
    );
    assert_eq!(
        format!("{:?}", storage("postgres://u:hunter2@db")),
        "StorageConfig { url: \"postgres://u:[redacted]@db\", retention_days: 90 }"
    );
}

#[test]
fn line_col_counts_characters() {
    let text = "a\nbé c\n";
    assert_eq!(line_col(text, 0), (1, 1));
    assert_eq!(line_col(text, 2), (2, 1));
    assert_eq!(line_col(text, text.find('c').unwrap()), (2, 4));
    assert_eq!(line_col(text, 99), (3, 1));
}

#[test]
fn load_reads_the_file_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.path, path);
    let missing = dir.path().join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!((e.line(), e.column()), (0, 0));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
}
