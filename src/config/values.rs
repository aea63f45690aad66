//! Value types of routes.toml that need parsing beyond TOML's own: secrets, durations, rates,
//! level filters, glob lists and cron schedules.

use std::fmt;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::alert::Level;

/// A value that must never be shown: a Sentry client secret, the legacy token, the Slack bot
/// token, an incoming-webhook URL (the URL is the credential) or a database URL.
///
/// `Debug` and `Display` print `[redacted]`; the value is reached only through
/// [`Secret::expose`], so every place that uses it is easy to find. It has no `Serialize`, so it
/// cannot end up in JSON output by accident. Its `==` is not constant-time: compare a token from
/// a request with a constant-time comparison, not with `==`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: for signing, authenticating or connecting, never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

const DURATION_HINT: &str =
    "expected a number and a unit (ms, s, m, h, d), e.g. \"90s\", \"30m\", \"1h30m\", \"7d\"";

/// Parses a duration as written in routes.toml: one or more `<integer><unit>` parts, units `ms`,
/// `s`, `m`, `h` and `d` (24 hours): `"500ms"`, `"90s"`, `"30m"`, `"1h30m"`, `"7d"`. `"0s"` is zero.
///
/// Fractions (`"1.5h"`) and a number without a unit are refused, so that `"30"` cannot mean
/// seconds to one reader and minutes to another. The error text never repeats the input (it may
/// come from an environment variable).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration ({DURATION_HINT})"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("invalid duration ({DURATION_HINT})"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| "duration is too long".to_string())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3_600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(format!("duration is missing its unit ({DURATION_HINT})")),
            _ => return Err(format!("unknown duration unit `{unit}` ({DURATION_HINT})")),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| "duration is too long".to_string())?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// Writes a duration the way [`parse_duration`] reads it: `"1h30m"`, `"500ms"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    let millis = d.subsec_millis();
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// A message rate: `count` messages per `per`, written `"1/s"`, `"20/m"`, `"100/h"` or with a
/// duration after the slash, `"2/10s"`.
///
/// Used as the sustained rate of a channel's GCRA limit (with the channel's `burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Messages allowed per `per`; at least 1.
    pub count: u32,
    /// The period; longer than zero.
    pub per: Duration,
}

impl Rate {
    /// Parses `"N/s"`, `"N/m"`, `"N/h"`, `"N/d"` or `"N/<duration>"` (`"2/10s"`).
    pub fn parse(s: &str) -> Result<Rate, String> {
        const HINT: &str = "expected `<count>/<period>`, e.g. \"1/s\", \"20/m\", \"2/10s\"";
        let Some((count, per)) = s.trim().split_once('/') else {
            return Err(format!("invalid rate ({HINT})"));
        };
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate: the count must be a whole number ({HINT})"))?;
        if count == 0 {
            return Err(format!(
                "invalid rate: the count must be at least 1 ({HINT})"
            ));
        }
        let per = per.trim();
        let per = match per {
            "s" | "m" | "h" | "d" => parse_duration(&format!("1{per}")),
            _ => parse_duration(per),
        }
        .map_err(|e| format!("invalid rate period: {e}"))?;
        if per.is_zero() {
            return Err(format!(
                "invalid rate: the period must be longer than zero ({HINT})"
            ));
        }
        Ok(Rate { count, per })
    }

    /// The time between two messages at the sustained rate (`per / count`): GCRA's emission
    /// interval.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

impl Default for Rate {
    /// One message per second: Slack's own limit for posting to one channel.
    fn default() -> Self {
        Rate {
            count: 1,
            per: Duration::from_secs(1),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{}/m", self.count),
            3_600 if self.per.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/{}", self.count, format_duration(self.per)),
        }
    }
}

/// A set of levels an alert's level is tested against, written as in routes.toml:
/// `">=error"`, `">warning"`, `"<=info"`, `"<error"`, `"=fatal"`, a bare name, or a list of
/// these (any entry may match).
///
/// In a route's `level` a bare name means exactly that level (`"error"` = `"=error"`); in
/// `mention_level` a bare name means that level or higher (`"error"` = `">=error"`), because a
/// mention threshold that silently skipped `fatal` would be the worse surprise. See
/// [`LevelSpec::parse`] and [`LevelSpec::parse_threshold`].
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelSpec {
    /// Bit `i` set = `Level::ALL[i]` matches.
    mask: u8,
}

impl LevelSpec {
    /// Parses one entry; a bare level name matches exactly that level.
    pub fn parse(s: &str) -> Result<LevelSpec, String> {
        Self::parse_with(s, "=")
    }

    /// Parses one entry; a bare level name matches that level and every higher one.
    pub fn parse_threshold(s: &str) -> Result<LevelSpec, String> {
        Self::parse_with(s, ">=")
    }

    fn parse_with(s: &str, bare: &str) -> Result<LevelSpec, String> {
        let s = s.trim();
        let (op, name) = [">=", "<=", ">", "<", "="]
            .iter()
            .find_map(|op| s.strip_prefix(op).map(|rest| (*op, rest)))
            .unwrap_or((bare, s));
        let level: Level = name.parse().map_err(|_| {
            "invalid level: expected a level (debug, info, warning, error, fatal), optionally \
             after one of >=, >, <=, <, =, e.g. \">=error\""
                .to_string()
        })?;
        let spec = LevelSpec::from_levels(Level::ALL.into_iter().filter(|l| match op {
            ">=" => *l >= level,
            "<=" => *l <= level,
            ">" => *l > level,
            "<" => *l < level,
            _ => *l == level,
        }));
        if spec.is_empty() {
            return Err(format!("level `{op}{level}` matches no level"));
        }
        Ok(spec)
    }

    /// The spec that matches exactly the given levels.
    pub fn from_levels(levels: impl IntoIterator<Item = Level>) -> LevelSpec {
        let mut mask = 0;
        for level in levels {
            mask |= 1 << Self::index(level);
        }
        LevelSpec { mask }
    }

    /// Matches a level either spec matches (a list in routes.toml).
    pub fn union(self, other: LevelSpec) -> LevelSpec {
        LevelSpec {
            mask: self.mask | other.mask,
        }
    }

    /// Whether an alert of this level matches.
    pub fn matches(&self, level: Level) -> bool {
        self.mask & (1 << Self::index(level)) != 0
    }

    /// Whether no level matches.
    pub fn is_empty(&self) -> bool {
        self.mask == 0
    }

    /// The matching levels, lowest first.
    pub fn levels(&self) -> impl Iterator<Item = Level> + '_ {
        Level::ALL.into_iter().filter(|l| self.matches(*l))
    }

    fn index(level: Level) -> usize {
        Level::ALL
            .iter()
            .position(|l| *l == level)
            .expect("Level::ALL lists every level")
    }
}

impl fmt::Debug for LevelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.levels()).finish()
    }
}

impl fmt::Display for LevelSpec {
    /// The matching levels, comma-separated: `error, fatal`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.levels().map(Level::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// One or more glob patterns compiled into one matcher; a text matches if any pattern matches.
///
/// Globs are case-sensitive and match the whole text; `*` matches any run of characters
/// (including `/` and `.`), `?` one character, `[abc]` a class, `{a,b}` alternatives, `\` escapes.
#[derive(Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    set: GlobSet,
}

/// A pattern of a [`GlobList`] did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// Index of the bad pattern in the list given to [`GlobList::new`].
    pub index: usize,
    /// What is wrong with it, without the pattern itself.
    pub reason: String,
}

impl GlobList {
    /// Compiles the patterns; the error names the first bad one by index.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Result<Self, GlobError> {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        let mut builder = GlobSetBuilder::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let glob = GlobBuilder::new(pattern)
                .case_insensitive(false)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| GlobError {
                    index,
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| GlobError {
            index: 0,
            reason: e.kind().to_string(),
        })?;
        Ok(GlobList { patterns, set })
    }

    /// Whether any pattern matches the whole of `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.set.is_match(text)
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Debug for GlobList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

impl PartialEq for GlobList {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("30m"), Ok(secs(1_800)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("24h"), Ok(secs(86_400)));
        assert_eq!(parse_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(secs(5_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(secs(7 * 86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("1m1s500ms"),
            Ok(Duration::from_millis(61_500))
        );
    }

    #[test]
    fn bad_durations_are_refused_without_echoing_the_input() {
        for bad in [
            "",
            "30",
            "1.5h",
            "h",
            "-5m",
            "5 minutes",
            "5x",
            "m5",
            "99999999999999999999s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(!err.is_empty());
            if bad.len() > 2 {
                assert!(!err.contains(bad), "{err:?} repeats {bad:?}");
            }
        }
        assert!(parse_duration("30").unwrap_err().contains("unit"));
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown duration unit `x`")
        );
        assert!(parse_duration("213503982334602d").is_err());
    }

    #[test]
    fn durations_round_trip_through_format() {
        for s in ["0s", "500ms", "90s", "1m30s", "1h30m", "7d", "1d1h1m1s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn rates_parse() {
        let rate = |count, secs| Rate {
            count,
            per: Duration::from_secs(secs),
        };
        assert_eq!(Rate::parse("1/s"), Ok(rate(1, 1)));
        assert_eq!(Rate::parse("20/m"), Ok(rate(20, 60)));
        assert_eq!(Rate::parse("100/h"), Ok(rate(100, 3_600)));
        assert_eq!(Rate::parse("2/10s"), Ok(rate(2, 10)));
        assert_eq!(Rate::parse(" 3 / 1m30s "), Ok(rate(3, 90)));
        assert_eq!(Rate::default(), rate(1, 1));
        assert_eq!(rate(4, 1).interval(), Duration::from_millis(250));
        assert_eq!(rate(20, 60).to_string(), "20/m");
        assert_eq!(rate(2, 10).to_string(), "2/10s");
    }

    #[test]
    fn bad_rates_are_refused() {
        for bad in [
            "", "1", "0/s", "-1/s", "1.5/s", "1/", "1/x", "1/0s", "a/s", "1/s/s",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn level_specs_parse() {
        use Level::*;
        let levels = |s: &str| LevelSpec::parse(s).unwrap().levels().collect::<Vec<_>>();
        assert_eq!(levels(">=error"), [Error, Fatal]);
        assert_eq!(levels(">warning"), [Error, Fatal]);
        assert_eq!(levels("<=info"), [Debug, Info]);
        assert_eq!(levels("<error"), [Debug, Info, Warning]);
        assert_eq!(levels("=fatal"), [Fatal]);
        assert_eq!(levels("fatal"), [Fatal]);
        assert_eq!(levels("error"), [Error]);
        assert_eq!(levels(">= warn"), [Warning, Error, Fatal]);
        let threshold = |s: &str| {
            LevelSpec::parse_threshold(s)
                .unwrap()
                .levels()
                .collect::<Vec<_>>()
        };
        assert_eq!(threshold("error"), [Error, Fatal]);
        assert_eq!(threshold("=error"), [Error]);
        assert_eq!(threshold("<warning"), [Debug, Info]);
    }

    #[test]
    fn bad_level_specs_are_refused() {
        for bad in [
            "", "loud", ">>error", "=>error", ">fatal", "<debug", "error+",
        ] {
            assert!(LevelSpec::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            LevelSpec::parse(">fatal")
                .unwrap_err()
                .contains("matches no level")
        );
    }

    #[test]
    fn level_spec_union_and_display() {
        let spec = LevelSpec::parse("warning")
            .unwrap()
            .union(LevelSpec::parse("fatal").unwrap());
        assert!(spec.matches(Level::Warning) && spec.matches(Level::Fatal));
        assert!(!spec.matches(Level::Error));
        assert_eq!(spec.to_string(), "warning, fatal");
    }

    #[test]
    fn globs_are_case_sensitive_and_star_crosses_everything() {
        let globs = GlobList::new(["checkout*", "api-{eu,us}", "web?"]).unwrap();
        assert!(globs.is_match("checkout"));
        assert!(globs.is_match("checkout-worker/eu.1"));
        assert!(globs.is_match("api-eu"));
        assert!(globs.is_match("web1"));
        assert!(!globs.is_match("Checkout"));
        assert!(!globs.is_match("my-checkout"));
        assert!(!globs.is_match("api-asia"));
        assert!(!globs.is_match("web12"));
        assert_eq!(globs.patterns(), ["checkout*", "api-{eu,us}", "web?"]);
    }

    #[test]
    fn bad_glob_names_its_index() {
        let err = GlobList::new(["ok*", "bad[", "x"]).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(!err.reason.contains("bad["));
    }

    proptest::proptest! {
        #[test]
        fn any_duration_round_trips(millis in 0u64..10_000_000_000_000) {
            let d = Duration::from_millis(millis);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
            let _ = Rate::parse(&s);
            let _ = LevelSpec::parse(&s);
            let _ = GlobList::new([s.as_str()]);
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }
}
