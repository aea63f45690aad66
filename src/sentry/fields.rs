//! Defensive accessors over the leaf values of a payload ([`Loose`]) shared by the payload
//! parsers: every one of them tolerates an absent value or one of the wrong type, and every
//! string they hand out is capped.

use super::lenient::Loose;
use super::parse::ProjectMap;
use crate::alert::Level;

/// Longest string (in chars) kept from a payload; longer ones are cut at a char boundary.
pub(crate) const MAX_CHARS: usize = 2_000;
/// Most tags kept from one event (Sentry itself keeps far fewer in practice).
pub(crate) const MAX_TAGS: usize = 200;
/// Most projects kept from one metric alert.
pub(crate) const MAX_PROJECTS: usize = 100;
/// Title used when a payload names nothing better: what Sentry itself shows for an event with
/// neither an exception nor a message.
pub(crate) const UNTITLED: &str = "<unlabeled event>";
/// Project slug used when a payload does not identify its project.
pub(crate) const UNKNOWN_PROJECT: &str = "unknown";

/// `s` cut to at most [`MAX_CHARS`] chars, on a char boundary.
pub(crate) fn cap(s: &str) -> String {
    match s.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => s.get(..end).unwrap_or_default().to_owned(),
        None => s.to_owned(),
    }
}

/// The value as a trimmed, non-empty string slice (not capped).
pub(crate) fn str_of<'v>(v: &'v Loose<'_>) -> Option<&'v str> {
    v.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// The value as a trimmed, non-empty, capped string.
pub(crate) fn text(v: &Loose<'_>) -> Option<String> {
    str_of(v).map(cap)
}

/// An identifier sent either as a string or as an integer (Sentry does both).
pub(crate) fn id(v: &Loose<'_>) -> Option<String> {
    match v {
        Loose::Str(_) => text(v),
        Loose::Num(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative count sent either as a string (`"count": "3"`) or as an integer.
pub(crate) fn count(v: &Loose<'_>) -> Option<u64> {
    match v {
        Loose::Num(n) => n.as_u64(),
        Loose::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Unix seconds from a number (`1566248777.677`), a numeric string, or an RFC 3339 /
/// ISO 8601 string (`2019-08-19T20:58:37.391000Z`, `…+00:00`; no offset means UTC). Fractions
/// are truncated towards the past; values outside years -9999..=9999 are dropped.
pub(crate) fn unix_seconds(v: &Loose<'_>) -> Option<i64> {
    let secs = match v {
        Loose::Num(n) => match n.as_i64() {
            Some(i) => i,
            None => float_seconds(n.as_f64()?)?,
        },
        Loose::Str(s) => {
            let s = s.trim();
            if let Ok(ts) = s.parse::<jiff::Timestamp>() {
                ts.as_second()
            } else if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
                dt.to_zoned(jiff::tz::TimeZone::UTC)
                    .ok()?
                    .timestamp()
                    .as_second()
            } else if let Ok(f) = s.parse::<f64>() {
                float_seconds(f)?
            } else {
                return None;
            }
        }
        _ => return None,
    };
    jiff::Timestamp::from_second(secs).ok().map(|_| secs)
}

fn float_seconds(f: f64) -> Option<i64> {
    // The bound keeps the cast exact; `from_second` above enforces jiff's real range.
    (f.is_finite() && f.abs() < 1e15).then(|| f.floor() as i64)
}

/// An `http://` or `https://` link with a host, made only of characters RFC 3986 allows
/// ([`link`]); anything else is `None`.
pub(crate) fn http_url(v: &Loose<'_>) -> Option<String> {
    link(str_of(v)?)
}

/// `url` if it is an `http://` or `https://` link with a host, made only of characters RFC 3986
/// allows (so nothing that could break out of a Slack `<url|text>` link). Anything else is
/// `None`; an over-long URL is dropped rather than cut, since a cut URL is a broken link.
/// The scheme comes back in lowercase (RFC 3986 §3.1: schemes are case-insensitive, lowercase
/// is canonical), the form Slack's `<url|text>` links are documented with.
pub(crate) fn link(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() || url.len() > MAX_CHARS {
        return None;
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https://", url.get(8..)?)
    } else if lower.starts_with("http://") {
        ("http://", url.get(7..)?)
    } else {
        return None;
    };
    let has_host = rest
        .chars()
        .next()
        .is_some_and(|c| !matches!(c, '/' | '?' | '#'));
    let clean = url
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b));
    (has_host && clean).then(|| format!("{scheme}{rest}"))
}

/// The level Sentry named, if it is one Sluice knows (callers default to `error`).
pub(crate) fn level(v: &Loose<'_>) -> Option<Level> {
    str_of(v).and_then(|s| s.parse().ok())
}

/// The first non-empty line of `s`, trimmed and capped: titles are one line.
pub(crate) fn first_line(s: &str) -> Option<String> {
    s.split(['\n', '\r'])
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(cap)
}

/// The first non-empty line of a string value, trimmed and capped (titles, names).
pub(crate) fn one_line(v: &Loose<'_>) -> Option<String> {
    str_of(v).and_then(first_line)
}

/// A project reference: a numeric id (number or digit string) mapped through `[sentry.projects]`
/// when the map names it, otherwise the slug or id as sent.
pub(crate) fn project_ref(v: &Loose<'_>, projects: &ProjectMap) -> Option<String> {
    let raw = id(v)?;
    Some(projects.get(&raw).map_or(raw, |slug| cap(slug)))
}

/// The project slug in an API URL `…/api/0/projects/{org}/{project}/…`.
pub(crate) fn project_from_api_url(url: &Loose<'_>) -> Option<String> {
    const MARKER: &str = "/api/0/projects/";
    let url = str_of(url)?;
    let rest = url.get(url.find(MARKER)? + MARKER.len()..)?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let mut segments = rest.split('/');
    let org = segments.next()?;
    let project = segments.next()?.trim();
    (!org.is_empty() && !project.is_empty()).then(|| cap(project))
}

/// Normalises an event id so the same event matches whatever payload carried it: lowercase,
/// and a hyphenated UUID loses its hyphens (`E4874D66-4C35-…` → `e4874d664c35…`), as Sentry
/// itself prints event ids.
pub(crate) fn event_id(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    let compact: String = lower.chars().filter(|&c| c != '-').collect();
    if compact.len() == 32 && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        compact
    } else {
        cap(&lower)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::sentry::lenient::from_value;

    #[test]
    fn cap_cuts_on_char_boundaries() {
        let long = "é".repeat(MAX_CHARS + 5);
        let capped = cap(&long);
        assert_eq!(capped.chars().count(), MAX_CHARS);
        assert_eq!(cap("short"), "short");
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_clean() {
        let ok = |s: &str| http_url(&Loose::Str(s.into()));
        assert_eq!(
            ok("https://sentry.io/x/").as_deref(),
            Some("https://sentry.io/x/")
        );
        // The scheme comes back lowercase (the fuzzer's find: `<HTTPS://…|…>` rendered as a
        // link the message checks did not recognise); the rest is kept as written.
        assert_eq!(ok("HTTP://sentry.io").as_deref(), Some("http://sentry.io"));
        assert_eq!(
            ok("HTTPS://SENTRY.IO/").as_deref(),
            Some("https://SENTRY.IO/")
        );
        for bad in [
            "javascript:alert(1)",
            "ftp://x",
            "https://",
            "https:///path",
            "https://a.b/<!channel>",
            "https://a.b/x|y",
            "https://a b",
            "http:",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
        assert_eq!(http_url(&Loose::Num(1.into())), None);
        assert_eq!(ok(&format!("https://a.b/{}", "x".repeat(MAX_CHARS))), None);
    }

    #[test]
    fn times_parse_from_numbers_and_strings() {
        let t = |v: Value| unix_seconds(&from_value(&v));
        assert_eq!(t(json!(1566248777.677)), Some(1566248777));
        assert_eq!(t(json!(1566248777)), Some(1566248777));
        assert_eq!(t(json!("2019-08-19T21:06:17.677000Z")), Some(1566248777));
        assert_eq!(
            t(json!("2025-11-10T20:56:00.679000+00:00")),
            Some(1762808160)
        );
        assert_eq!(t(json!("2019-08-19T21:06:17")), Some(1566248777));
        assert_eq!(t(json!("1566248777.9")), Some(1566248777));
        assert_eq!(t(json!(1e300)), None);
        assert_eq!(t(json!(i64::MAX)), None);
        assert_eq!(t(json!("yesterday")), None);
        assert_eq!(t(json!(null)), None);
    }

    #[test]
    fn api_url_names_the_project() {
        let p = |s: &str| project_from_api_url(&Loose::Str(s.into()));
        assert_eq!(
            p("https://sentry.io/api/0/projects/test-org/front-end/events/e48/").as_deref(),
            Some("front-end")
        );
        assert_eq!(p("https://sentry.io/api/0/projects/org/").as_deref(), None);
        assert_eq!(
            p("https://sentry.io/api/0/projects/org/p?x=1").as_deref(),
            Some("p")
        );
        assert_eq!(p("https://sentry.io/api/0/issues/1/"), None);
    }

    #[test]
    fn event_ids_are_normalised() {
        assert_eq!(
            event_id("E4874D66-4C35-40C1-A32E-AB185F12C5AB"),
            "e4874d664c3540c1a32eab185f12c5ab"
        );
        assert_eq!(event_id("not-a-uuid"), "not-a-uuid");
    }
}
