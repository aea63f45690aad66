//! routes.toml as written: serde structs with every field optional and spanned (so that
//! validation can point at any value), and [`read`], which parses the text, expands `${VAR}`
//! and deserializes it. An unknown key is an error that lists the keys expected there.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_spanned::Spanned;

use super::error::{key_path_at, sanitize_toml_message};
use super::expand::{self, Expansions};

/// Parses `text`, expands `${VAR}` through `env` and deserializes the result; on failure, the
/// first error in the file as (byte offset, message). Expansion errors and a deserialization
/// error are independent of each other (the latter only looks at types and keys), so whichever
/// comes first in the file is reported.
pub(super) fn read(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(RawConfig, Expansions), (usize, String)> {
    let mut document = toml::de::DeTable::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        (offset, sanitize_toml_message(e.message()))
    })?;
    let (expansions, expand_errors) = expand::expand_document(document.get_mut(), env);
    // Kept to name the key of a deserialization error (toml's error has no public key path).
    let expanded = document.clone();
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(document));
    let mut errors: Vec<(usize, String)> = expand_errors
        .into_iter()
        .map(|e| (e.span.start, e.message))
        .collect();
    if let Err(e) = &raw {
        errors.push(deserialize_error(e, expanded.get_ref()));
    }
    match errors.into_iter().min_by_key(|(offset, _)| *offset) {
        Some(first) => Err(first),
        None => Ok((
            raw.expect("no error, so the document deserialized"),
            expansions,
        )),
    }
}

/// A deserialization error as (byte offset, message), the message naming the key's path.
fn deserialize_error(e: &toml::de::Error, document: &toml::de::DeTable<'_>) -> (usize, String) {
    let offset = e.span().map_or(0, |s| s.start);
    let mut message = sanitize_toml_message(e.message());
    let key = key_path_at(document, offset);
    if !key.is_empty() {
        let top_level = ["default_channel", "ops_channel"]
            .iter()
            .any(|k| message.starts_with(&format!("unknown field `{k}`")));
        if top_level {
            message.push_str(" (top-level keys must come before the first `[table]` header)");
        }
        message = format!("`{key}`: {message}");
    }
    (offset, message)
}

/// A string or a list of strings, each with its span.
pub(super) struct StrOrList(pub(super) Vec<Spanned<String>>);

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
pub(super) type SpannedList = Spanned<StrOrList>;

/// The whole file, as written ([`Config`](super::Config) documents each key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) default_channel: Option<Spanned<String>>,
    pub(super) ops_channel: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) sentry: RawSentry,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) slack: RawSlack,
    #[serde(default)]
    pub(super) channels: BTreeMap<Spanned<String>, Spanned<RawChannel>>,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub(super) digest: RawDigest,
}

/// `[server]`, as written ([`ServerConfig`](super::ServerConfig) documents each key).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) max_body_bytes: Option<Spanned<usize>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    pub(super) body_timeout: Option<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_concurrent_requests: Option<Spanned<usize>>,
    pub(super) status_page: Option<Spanned<bool>>,
    pub(super) status_token: Option<Spanned<String>>,
}

/// `[sentry]`, as written ([`SentryConfig`](super::SentryConfig) documents each key).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSentry {
    pub(super) client_secrets: Option<StrOrList>,
    pub(super) max_clock_skew: Option<Spanned<String>>,
    pub(super) legacy_token: Option<Spanned<String>>,
    pub(super) quiet_alert_after: Option<Spanned<String>>,
    pub(super) api_token: Option<Spanned<String>>,
    pub(super) api_base: Option<Spanned<String>>,
    pub(super) organization: Option<Spanned<String>>,
    pub(super) api_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) projects: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[storage]`, as written ([`StorageConfig`](super::StorageConfig) documents each key).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) url: Option<Spanned<String>>,
    pub(super) retention_days: Option<Spanned<u32>>,
}

/// `[slack]`, as written ([`SlackConfig`](super::SlackConfig) documents each key).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlack {
    pub(super) bot_token: Option<Spanned<String>>,
    pub(super) signing_secrets: Option<StrOrList>,
    pub(super) api_base: Option<Spanned<String>>,
    pub(super) max_retry_age: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retry_initial_backoff: Option<Spanned<String>>,
    pub(super) retry_max_backoff: Option<Spanned<String>>,
    pub(super) max_retry_after: Option<Spanned<String>>,
}

/// One `[channels.NAME]` table, as written ([`ChannelConfig`](super::ChannelConfig)).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    pub(super) console: Option<Spanned<bool>>,
    pub(super) webhook_url: Option<Spanned<String>>,
    pub(super) slack_channel: Option<Spanned<String>>,
    pub(super) rate: Option<Spanned<String>>,
    pub(super) burst: Option<Spanned<u32>>,
    pub(super) max_backlog: Option<Spanned<u32>>,
}

/// One `[[routes]]` table, as written ([`RouteConfig`](super::RouteConfig)).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<Spanned<String>>,
    pub(super) project: Option<SpannedList>,
    pub(super) environment: Option<SpannedList>,
    pub(super) level: Option<SpannedList>,
    pub(super) tags: Option<BTreeMap<Spanned<String>, SpannedList>>,
    pub(super) title: Option<Spanned<String>>,
    pub(super) resource: Option<SpannedList>,
    pub(super) channels: Option<SpannedList>,
    #[serde(rename = "continue")]
    pub(super) continue_matching: Option<bool>,
    pub(super) cooldown: Option<Spanned<String>>,
    pub(super) mention: Option<Spanned<String>>,
    pub(super) mention_level: Option<SpannedList>,
    pub(super) digest: Option<bool>,
    pub(super) actions: Option<SpannedList>,
    pub(super) comments: Option<bool>,
    pub(super) breakthrough: Option<Spanned<Vec<Spanned<u64>>>>,
}

/// `[digest]`, as written ([`DigestConfig`](super::DigestConfig) documents each key).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDigest {
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) top: Option<Spanned<usize>>,
}
