//! Structure-aware fuzzing of the payload parsers ([`parse`], [`parse_legacy`]) with bolero.
//!
//! Random bytes almost never get past `serde_json`, so every input here starts from a real
//! payload (`tests/fixtures/sentry/*.json`, plus a legacy plugin payload built from the
//! `event_alert` one) and a generated [`Plan`] mutates it: it picks fields the parsers read
//! (creating them when missing) or any node of the document, and replaces values with generated
//! strings, numbers, nulls, arrays and objects, deletes keys, nests values hundreds of levels
//! deep, turns values into strings (`"count": "3"`), copies subtrees elsewhere, and builds huge
//! strings from pieces that matter to the parser or to Slack (bidirectional and zero-width
//! characters, `<!channel>`, mrkdwn, URLs, times, level and action names). The document is then
//! encoded compactly, pretty, ASCII-only with `\uXXXX` escapes (as Sentry sends it), with a lone
//! or reversed surrogate escape, or cut short, and every body is parsed under every
//! `Sentry-Hook-Resource` value Sluice knows, one odd one, and as a legacy payload.
//!
//! What must hold, whatever the input ([`check_alert`], [`check_rendered`]): nothing panics; a
//! refusal or an ignored delivery says why in a bounded message; an alert keeps the promises of
//! the `sentry` module documentation (every string non-empty and at most 2,000 chars, one-line
//! titles and rules, at most 200 tags and 100 projects, links only `http(s)://host…` made of
//! RFC 3986 characters, times within years -9999..=9999, an event id exactly for occurrences);
//! and the Slack messages built from it (alert, follow-up, roll-up) stay within Slack's limits
//! and carry no raw `<`, `>` or invisible character outside Sluice's own links.
//!
//! `cargo nextest run` runs the target for a few seconds of random plans
//! ([`NORMAL_RUN`]; `BOLERO_RANDOM_TEST_TIME_MS` overrides it). A coverage-guided run, as CI
//! does it for 60 s, is libFuzzer on stable Rust: `--sanitizer NONE` (sanitizers need nightly)
//! and `--profile release` (cargo-bolero's default `fuzz` profile is not defined here):
//! `cargo bolero test --sanitizer NONE --profile release -T 60s
//! sentry::fuzz::mutated_payloads_keep_the_parsers_promises`. It keeps its corpus in
//! `src/sentry/__fuzz__/` (not committed).

use std::sync::LazyLock;
use std::time::Duration;

use bolero::generator::bolero_generator::TypeGenerator;
use bolero::produce;
use serde_json::{Map, Value, json};

use super::{Malformed, Parsed, ProjectMap, parse, parse_legacy};
use crate::alert::{Alert, Level};
use crate::counts::IssueStats;
use crate::routing::Target;
use crate::slack::message::tests::assert_within_slack_limits;
use crate::slack::message::{SlackMessage, is_invisible, safe_link};
use crate::slack::{render_alert, render_followup, render_rollup};

/// How long `cargo nextest run` (or `cargo test`) generates plans for.
const NORMAL_RUN: Duration = Duration::from_secs(3);

/// The real payloads every plan starts from, with the resource header each is delivered with.
const FIXTURES: &[(&str, &str)] = &[
    ("event_alert", "event_alert.triggered.json"),
    ("error", "error.created.json"),
    ("issue", "issue.created.json"),
    ("issue", "issue.created.2019-docs.json"),
    ("activity_alert", "activity_alert.triggered.json"),
    ("metric_alert", "metric_alert.resolved.json"),
    ("comment", "comment.created.json"),
    ("installation", "installation.created.json"),
];

/// Every body is parsed with each of these `Sentry-Hook-Resource` values.
const RESOURCES: &[&str] = &[
    "event_alert",
    "error",
    "issue",
    "activity_alert",
    "metric_alert",
    "comment",
    "installation",
    " Event_Alert\t",
];

/// Where the parsers look (see the `sentry` module documentation); `@` stands for each of the
/// event objects `data.event`, `data.error` and the legacy `event`.
const FIELDS: &[&str] = &[
    "action",
    "actor.name",
    "@",
    "@.event_id",
    "@.id",
    "@.issue_id",
    "@.group_id",
    "@.title",
    "@.metadata.type",
    "@.metadata.value",
    "@.metadata.title",
    "@.exception",
    "@.exception.values",
    "@.message",
    "@.logentry.formatted",
    "@.logentry.message",
    "@.level",
    "@.tags",
    "@.environment",
    "@.timestamp",
    "@.datetime",
    "@.url",
    "@.project",
    "@.web_url",
    "@.culprit",
    "@.release",
    "data.triggered_rule",
    "data.issue_alert.title",
    "data.issue",
    "data.issue.id",
    "data.issue.project",
    "data.issue.project.slug",
    "data.issue.project.id",
    "data.issue.title",
    "data.issue.metadata.type",
    "data.issue.web_url",
    "data.issue.permalink",
    "data.issue.url",
    "data.issue.project_url",
    "data.issue.shortId",
    "data.issue.level",
    "data.issue.culprit",
    "data.issue.lastSeen",
    "data.issue.firstSeen",
    "data.issue.count",
    "data.issue.assignedTo",
    "data.issue.assignedTo.name",
    "data.resolution_type",
    "data.assignee",
    "data.assignee.email",
    "data.assignee.type",
    "data.alert.title",
    "data.activity.details.summary",
    "data.activity.type",
    "data.metric_alert",
    "data.metric_alert.id",
    "data.metric_alert.alert_rule.id",
    "data.metric_alert.alert_rule.name",
    "data.metric_alert.alert_rule.environment",
    "data.metric_alert.alert_rule.projects",
    "data.metric_alert.projects",
    "data.metric_alert.title",
    "data.metric_alert.date_closed",
    "data.metric_alert.date_detected",
    "data.metric_alert.date_started",
    "data.metric_alert.date_created",
    "data.description_title",
    "data.description_text",
    "data.web_url",
    "data.issue_id",
    "data.project_slug",
    "data.project_id",
    "data.comment",
    "data.timestamp",
    "id",
    "project",
    "project_slug",
    "level",
    "culprit",
    "message",
    "url",
    "triggering_rules",
];

/// The event objects `@` in [`FIELDS`] stands for.
const EVENT_OBJECTS: &[&str] = &["data.event", "data.error", "event"];

/// Strings that mean something to the parser or to Slack, the pieces generated text is made of.
const PIECES: &[&str] = &[
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "  padded  ",
    "line one\nline two",
    "\\n",
    "\u{202E}gnp.exe",
    "\u{200B}",
    "\u{FEFF}",
    "\u{2066}x\u{2069}",
    "\u{00AD}",
    "\u{0}",
    "\u{1b}[31m",
    "\u{2028}",
    "😀",
    "é",
    "\u{10FFFF}",
    "\u{FFFD}",
    "İß",
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<#C123|general>",
    "<https://evil.example|click>",
    "&amp;",
    "&",
    "<",
    ">",
    "|",
    "*bold*",
    "_it_",
    "~s~",
    "`code`",
    ":boom:",
    "https://sentry.io/organizations/acme/issues/1234567890/",
    "https://sentry.io/organizations/acme/issues/1/events/e4874d664c3540c1a32eab185f12c5ab/",
    "https://sentry.io/api/0/projects/acme/front-end/events/e4874d664c3540c1a32eab185f12c5ab/",
    "https://sentry.io/api/0/organizations/acme/issues/1/",
    "https://acme.sentry.io/issues/?project=2",
    "http://x/events/",
    "/events/",
    "/issues/",
    "/api/0/projects/",
    "https://",
    "https:///x",
    "HTTPS://SENTRY.IO/",
    "javascript:alert(1)",
    "https://a.b/x|y",
    "e4874d664c3540c1a32eab185f12c5ab",
    "E4874D66-4C35-40C1-A32E-AB185F12C5AB",
    "-",
    "0",
    "-1",
    "1566248777.677",
    "1e308",
    "NaN",
    "18446744073709551616",
    "253402207200",
    "253402300800",
    "2019-08-19T20:58:37.391000Z",
    "2019-08-19T20:58:37",
    "+10000-01-01T00:00:00Z",
    "-009999-01-01T00:00:00Z",
    "debug",
    "info",
    "warning",
    "error",
    "fatal",
    "critical",
    "LOUD",
    "created",
    "resolved",
    "assigned",
    "ignored",
    "unresolved",
    "triggered",
    "updated",
    "deleted",
    "event_alert",
    "metric_alert",
    "installation",
    "team",
    "user",
    "id",
    "slug",
    "name",
    "email",
    "type",
    "value",
    "title",
    "key",
    "values",
    "mechanism",
    "synthetic",
    "environment",
    "level",
];

/// How one generated input changes a real payload before it is parsed.
#[derive(Debug, Clone, TypeGenerator)]
struct Plan {
    /// Which of the fixtures (modulo their number; one more for the legacy payload).
    seed: u8,
    /// Changes, applied in order.
    #[generator(produce::<Vec<Mutation>>().with().len(0usize..12))]
    mutations: Vec<Mutation>,
    /// How the changed document becomes bytes.
    encoding: Encoding,
    /// One more `Sentry-Hook-Resource` value to parse the body with.
    header: Text,
    /// The body's `action`: one of [`ACTIONS`] (modulo their number), before the mutations.
    action: Option<u8>,
}

/// The actions Sentry sends, which pick what an alert says (`resolved`, `assigned`…).
const ACTIONS: &[&str] = &[
    "created",
    "resolved",
    "assigned",
    "ignored",
    "archived",
    "unresolved",
    "triggered",
    "critical",
    "warning",
    "updated",
    "deleted",
];

/// One change: what to change, and how.
#[derive(Debug, Clone, TypeGenerator)]
struct Mutation {
    place: Place,
    op: Op,
}

/// What a mutation changes.
#[derive(Debug, Clone, TypeGenerator)]
enum Place {
    /// One of [`FIELDS`] (modulo their number), created with its parents when missing.
    Field(u16),
    /// Any node of the document, in pre-order (modulo their number).
    Node(u16),
}

/// How a mutation changes its place.
#[derive(Debug, Clone, TypeGenerator)]
enum Op {
    /// Replace the value.
    Set(Json),
    /// Replace the value with a string (what most fields are).
    SetText(Text),
    /// Remove the key (or array element).
    Delete,
    /// Wrap the value in this many (modulo 150) arrays or objects, as far as [`MAX_DEPTH`]
    /// allows.
    Nest { depth: u8, array: bool },
    /// The value as text: a string as it is, anything else as its JSON (`3` → `"3"`).
    Stringify,
    /// A copy of another node (modulo their number) of the document.
    Copy(u16),
}

/// A generated JSON value; nesting comes from [`Op::Nest`] and [`Op::Copy`].
#[derive(Debug, Clone, TypeGenerator)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Text),
    Array(#[generator(produce::<Vec<Scalar>>().with().len(0usize..6))] Vec<Scalar>),
    Object(
        #[generator(produce::<Vec<(Text, Scalar)>>().with().len(0usize..6))] Vec<(Text, Scalar)>,
    ),
}

/// An array element or object member of a generated [`Json`].
#[derive(Debug, Clone, TypeGenerator)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(Text),
    /// `{"key": …, "value": …}`, `{"type": …, "value": …}`, `{"slug": …, "id": …}`…: the objects
    /// tags, exceptions, assignees and projects are made of.
    Pair {
        first: u8,
        second: u8,
        a: Text,
        b: Text,
    },
}

/// A generated string.
#[derive(Debug, Clone, TypeGenerator)]
enum Text {
    /// One of [`PIECES`] (modulo their number).
    Piece(u8),
    /// Any characters.
    Raw(String),
    /// Pieces and raw text joined.
    Mix(#[generator(produce::<Vec<(u8, String)>>().with().len(1usize..6))] Vec<(u8, String)>),
    /// A piece repeated (modulo 6,000) times: past every cap.
    Repeat { piece: u8, times: u16 },
}

/// How the document becomes the request body.
#[derive(Debug, Clone, TypeGenerator)]
enum Encoding {
    /// `serde_json::to_vec`, as Sluice's tests send it.
    Compact,
    /// Indented.
    Pretty,
    /// ASCII-only: every other character as `\uXXXX`, astral ones as surrogate pairs, as
    /// Sentry sends it (`ensure_ascii`).
    Ascii,
    /// ASCII-only, with a surrogate escape put at the start of a string (modulo their number).
    Surrogate { string: u16, kind: SurrogateKind },
    /// Compact, cut after this many bytes (modulo the length).
    Cut(u16),
}

/// What surrogate escape [`Encoding::Surrogate`] puts in.
#[derive(Debug, Clone, Copy, TypeGenerator)]
enum SurrogateKind {
    /// `\ud83d` alone.
    LoneHigh,
    /// `\ude00` alone.
    LoneLow,
    /// `\ude00\ud83d`.
    Reversed,
    /// `\ud83d\ude00`, a valid pair (😀).
    Pair,
}

/// One step of a path into a document.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The fixtures, parsed once; the last is the legacy payload.
static SEEDS: LazyLock<Vec<(&'static str, Value)>> = LazyLock::new(|| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentry/");
    let mut seeds: Vec<(&str, Value)> = FIXTURES
        .iter()
        .map(|(resource, name)| {
            let bytes = std::fs::read(format!("{dir}{name}")).expect("fixture");
            (
                *resource,
                serde_json::from_slice(&bytes).expect("fixture is JSON"),
            )
        })
        .collect();
    let legacy = legacy_payload(&seeds[0].1);
    seeds.push(("legacy", legacy));
    seeds
});

/// The legacy WebHooks plugin payload for the `event_alert` fixture's event (its shape is
/// `get_group_data` in getsentry/sentry's `sentry_webhooks/plugin.py`).
fn legacy_payload(event_alert: &Value) -> Value {
    let event = event_alert["data"]["event"].clone();
    json!({
        "id": event["issue_id"].clone(),
        "project": "front-end",
        "project_name": "Front End",
        "project_slug": "front-end",
        "logger": null,
        "level": event["level"].clone(),
        "culprit": event["culprit"].clone(),
        "message": event["title"].clone(),
        "url": "https://sentry.io/organizations/test-org/issues/1117540176/?referrer=webhooks_plugin",
        "triggering_rules": [event_alert["data"]["triggered_rule"].clone()],
        "event": event,
    })
}

/// Project ids the parsers may map, one of them to a hostile slug.
static PROJECTS: LazyLock<ProjectMap> = LazyLock::new(|| {
    ProjectMap::from([
        ("1".to_string(), "front-end".to_string()),
        ("2".to_string(), "<!channel> *checkout*\u{202E}".to_string()),
        ("0".to_string(), "x".repeat(3_000)),
    ])
});

impl Text {
    fn build(&self) -> String {
        let piece = |i: &u8| PIECES[usize::from(*i) % PIECES.len()];
        match self {
            Text::Piece(i) => piece(i).to_string(),
            Text::Raw(s) => s.clone(),
            Text::Mix(parts) => parts
                .iter()
                .map(|(i, raw)| format!("{}{raw}", piece(i)))
                .collect(),
            Text::Repeat { piece: i, times } => piece(i).repeat(usize::from(*times) % 6_000),
        }
    }
}

impl Scalar {
    fn build(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Float(f) => Value::from(*f),
            Scalar::Text(t) => Value::String(t.build()),
            Scalar::Pair {
                first,
                second,
                a,
                b,
            } => {
                let key = |i: &u8| PIECES[usize::from(*i) % PIECES.len()].to_string();
                let mut map = Map::new();
                map.insert(key(first), Value::String(a.build()));
                map.insert(key(second), Value::String(b.build()));
                Value::Object(map)
            }
        }
    }
}

impl Json {
    fn build(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::UInt(u) => Value::from(*u),
            Json::Float(f) => Value::from(*f),
            Json::Text(t) => Value::String(t.build()),
            Json::Array(items) => Value::Array(items.iter().map(Scalar::build).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.build(), v.build()))
                    .collect(),
            ),
        }
    }
}

/// The paths of every node of `v` (the root first), in pre-order.
fn nodes(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(Step::Key(key.clone()));
                nodes(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                nodes(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The `n`-th (modulo their number) node of `doc`.
fn node_path(doc: &Value, n: u16) -> Vec<Step> {
    let mut out = Vec::new();
    nodes(doc, &mut Vec::new(), &mut out);
    out.swap_remove(usize::from(n) % out.len())
}

/// The `n`-th (modulo their number) of [`FIELDS`], `@` expanded to each of [`EVENT_OBJECTS`].
fn field_path(n: u16) -> Vec<Step> {
    static ALL: LazyLock<Vec<String>> = LazyLock::new(|| {
        FIELDS
            .iter()
            .flat_map(|f| match f.strip_prefix('@') {
                Some(rest) => EVENT_OBJECTS.iter().map(|o| format!("{o}{rest}")).collect(),
                None => vec![f.to_string()],
            })
            .collect()
    });
    ALL[usize::from(n) % ALL.len()]
        .split('.')
        .map(|key| Step::Key(key.to_string()))
        .collect()
}

/// The value at `path`, creating it (as `null`, with objects for its parents, replacing
/// whatever was there) when `create`; `None` where the path does not lead anywhere.
fn slot<'a>(doc: &'a mut Value, path: &[Step], create: bool) -> Option<&'a mut Value> {
    let Some((step, rest)) = path.split_first() else {
        return Some(doc);
    };
    let child = match step {
        Step::Key(key) => {
            if create && !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            let map = doc.as_object_mut()?;
            if create {
                Some(map.entry(key.clone()).or_insert(Value::Null))
            } else {
                map.get_mut(key)
            }
        }
        Step::Index(i) => doc.as_array_mut()?.get_mut(*i),
    }?;
    slot(child, rest, create)
}

/// Removes the node at `path` from its parent (the root is replaced by `null`).
fn delete(doc: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        *doc = Value::Null;
        return;
    };
    match (slot(doc, parent, false), last) {
        (Some(Value::Object(map)), Step::Key(key)) => {
            map.shift_remove(key);
        }
        (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// The deepest a mutated document gets: past serde_json's nesting limit of 128 (so that
/// the parsers' refusal of a deeper body is exercised), and shallow enough that cloning and
/// dropping the document stay within a test thread's stack. Unbounded, repeated nests made
/// documents thousands of levels deep, whose recursive clone overflowed the stack of a
/// debug build replaying the fuzzer's corpus.
const MAX_DEPTH: usize = 200;

/// How many levels of arrays and objects `v` is (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Applies one mutation to `doc`.
fn apply(doc: &mut Value, m: &Mutation) {
    let (path, create) = match m.place {
        Place::Field(n) => (field_path(n), true),
        Place::Node(n) => (node_path(doc, n), false),
    };
    if let Op::Delete = m.op {
        delete(doc, &path);
        return;
    }
    let copied = match m.op {
        Op::Copy(n) => {
            let from = node_path(doc, n);
            slot(doc, &from, false)
                .filter(|v| path.len() + depth(v) <= MAX_DEPTH)
                .map(|v| v.clone())
        }
        _ => None,
    };
    let Some(target) = slot(doc, &path, create) else {
        return;
    };
    match &m.op {
        Op::Set(json) => *target = json.build(),
        Op::SetText(text) => *target = Value::String(text.build()),
        Op::Delete => {}
        Op::Nest {
            depth: levels,
            array,
        } => {
            let room = MAX_DEPTH.saturating_sub(path.len() + depth(target));
            for _ in 0..(usize::from(*levels) % 150).min(room) {
                let inner = target.take();
                *target = if *array {
                    Value::Array(vec![inner])
                } else {
                    Value::Object(Map::from_iter([("value".to_string(), inner)]))
                };
            }
        }
        Op::Stringify => {
            if !target.is_string() {
                *target = Value::String(target.to_string());
            }
        }
        Op::Copy(_) => {
            if let Some(copy) = copied {
                *target = copy;
            }
        }
    }
}

/// The body `doc` is sent as.
fn encode(doc: &Value, encoding: &Encoding) -> Vec<u8> {
    let compact = serde_json::to_string(doc).expect("a Value serialises");
    match encoding {
        Encoding::Compact => compact.into_bytes(),
        Encoding::Pretty => serde_json::to_vec_pretty(doc).expect("a Value serialises"),
        Encoding::Ascii => ascii(&compact).into_bytes(),
        Encoding::Surrogate { string, kind } => {
            let mut body = ascii(&compact);
            let escape = match kind {
                SurrogateKind::LoneHigh => "\\ud83d",
                SurrogateKind::LoneLow => "\\ude00",
                SurrogateKind::Reversed => "\\ude00\\ud83d",
                SurrogateKind::Pair => "\\ud83d\\ude00",
            };
            // A quote after `{`, `[`, `,` or `:` opens a string (a quote inside one is `\"`).
            let opening: Vec<usize> = body
                .match_indices(['{', '[', ',', ':'])
                .map(|(i, _)| i + 1)
                .filter(|&i| body.as_bytes().get(i) == Some(&b'"'))
                .collect();
            if !opening.is_empty() {
                let at = opening[usize::from(*string) % opening.len()] + 1;
                body.insert_str(at, escape);
            }
            body.into_bytes()
        }
        Encoding::Cut(n) => {
            let mut body = compact.into_bytes();
            body.truncate(usize::from(*n) % (body.len() + 1));
            body
        }
    }
}

/// Compact JSON with every non-ASCII character escaped (astral ones as surrogate pairs).
fn ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Runs one plan: builds the body, parses it every way, checks every outcome.
fn run(plan: &Plan) {
    let (own, seed) = &SEEDS[usize::from(plan.seed) % SEEDS.len()];
    let mut doc = seed.clone();
    if let (Some(action), Some(map)) = (plan.action, doc.as_object_mut()) {
        let action = ACTIONS[usize::from(action) % ACTIONS.len()];
        map.insert("action".into(), Value::String(action.into()));
    }
    for m in &plan.mutations {
        apply(&mut doc, m);
    }
    let body = encode(&doc, &plan.encoding);
    let header = plan.header.build();
    let headers = RESOURCES
        .iter()
        .copied()
        .chain([*own, header.as_str()])
        .filter(|r| *r != "legacy");
    for resource in headers {
        let outcome = parse(resource, &body, &PROJECTS);
        check_outcome(resource, &outcome);
        if let Ok(Parsed::Alert(alert)) = &outcome {
            check_rendered(alert);
        }
    }
    match parse_legacy(&body, &PROJECTS) {
        Ok(alert) => {
            check_alert("legacy", &alert);
            check_rendered(&alert);
        }
        Err(Malformed(why)) => assert!(!why.is_empty() && why.chars().count() <= 300, "{why}"),
    }
}

/// What a parse under `resource` may return.
fn check_outcome(resource: &str, outcome: &Result<Parsed, Malformed>) {
    let normalised = resource.trim().to_ascii_lowercase();
    match outcome {
        Ok(Parsed::Alert(alert)) => check_alert(&normalised, alert),
        Ok(Parsed::Ignored(why)) => {
            let routed = [
                "event_alert",
                "error",
                "issue",
                "activity_alert",
                "metric_alert",
                "comment",
            ];
            assert!(
                !routed.contains(&normalised.as_str()),
                "{resource} ignored: {why}"
            );
            assert!(why.chars().count() <= 120, "{why}");
        }
        Err(Malformed(why)) => assert!(!why.is_empty() && why.chars().count() <= 300, "{why}"),
    }
}

/// Whether `s` is a string the parser may keep: non-empty and capped.
fn kept(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 2_000
}

/// The promises of the `sentry` module documentation for an alert parsed under `resource`.
fn check_alert(resource: &str, a: &Alert) {
    assert_eq!(a.resource, resource);
    assert!(kept(&a.action), "action {:?}", a.action);
    assert!(kept(&a.issue_key), "issue_key {:?}", a.issue_key);
    assert!(
        kept(&a.title) && !a.title.contains(['\n', '\r']) && a.title.trim_start() == a.title,
        "title {:?}",
        a.title
    );
    assert!(!a.projects.is_empty() && a.projects.len() <= 100);
    for project in &a.projects {
        assert!(kept(project), "project {project:?}");
    }
    let optional = [
        ("short_id", &a.short_id),
        ("event_id", &a.event_id),
        ("environment", &a.environment),
        ("culprit", &a.culprit),
        ("release", &a.release),
        ("rule", &a.rule),
        ("detail", &a.detail),
    ];
    for (name, value) in optional {
        if let Some(s) = value {
            assert!(
                kept(s),
                "{name} of {} chars: {:?}",
                s.chars().count(),
                excerpt(s, 0)
            );
        }
    }
    if let Some(rule) = &a.rule {
        assert!(!rule.contains(['\n', '\r']), "rule {rule:?}");
    }
    assert!(a.tags.len() <= 200);
    for (k, v) in &a.tags {
        assert!(kept(k) && v.chars().count() <= 2_000, "tag {k:?}");
    }
    for url in [&a.issue_url, &a.event_url].into_iter().flatten() {
        check_link(url);
    }
    for t in [a.timestamp, a.sentry_first_seen].into_iter().flatten() {
        assert!(jiff::Timestamp::from_second(t).is_ok(), "time {t}");
    }
    let occurrence = matches!(resource, "event_alert" | "error" | "legacy");
    assert_eq!(a.is_occurrence(), occurrence, "event_id {:?}", a.event_id);
    if let Some(id) = &a.event_id {
        assert!(
            !id.bytes().any(|b| b.is_ascii_uppercase()),
            "event_id {id:?}"
        );
    }
    match resource {
        "metric_alert" => {
            assert!(a.issue_key.starts_with("metric:"));
            let level = match a.action.as_str() {
                "critical" => Level::Fatal,
                "warning" => Level::Warning,
                "resolved" => Level::Info,
                _ => Level::Error,
            };
            assert_eq!(a.level, level);
        }
        "comment" => assert_eq!(a.level, Level::Info),
        _ => {}
    }
}

/// A link the parser keeps: `http(s)://host…`, at most 2,000 chars of RFC 3986 characters,
/// one Slack links safely.
fn check_link(url: &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    assert!(
        rest.is_some_and(|r| !r.is_empty() && !r.starts_with(['/', '?', '#'])),
        "link {url:?}"
    );
    assert!(url.len() <= 2_000, "link of {} bytes", url.len());
    assert!(
        url.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b)),
        "link {url:?}"
    );
    assert_eq!(safe_link(url), Some(url));
}

/// The messages built from `alert` stay within Slack's limits and show Sentry's text as text.
fn check_rendered(alert: &Alert) {
    let target = Target {
        channel: "errors".into(),
        route: Some("everything".into()),
        mention: None,
        cooldown_secs: 1800,
        digest: true,
        actions: None,
        comments: false,
        breakthrough: vec![10, 100, 1000],
    };
    let stats = IssueStats {
        daily: vec![3; 30],
        first_seen_ms: Some(1_763_000_000_000),
        sentry_count: Some(12_345),
        title: Some(alert.title.clone()),
        issue_url: Some("https://sentry.io/organizations/acme/issues/1/".into()),
        ..IssueStats::default()
    };
    let now = 1_764_000_000_000;
    let (spike, mute_ended) = (
        crate::plan::FollowUpReason::Spike { threshold: 100 },
        crate::plan::FollowUpReason::MuteEnded,
    );
    // The buttons and state line of a Web API channel, with the state (and its names) that
    // the payload carried.
    let two_way = crate::slack::View {
        actions: &crate::config::ActionKind::ALL,
        state: alert.state.as_ref(),
        muted_until_ms: Some(now + 60_000),
        muted_by: alert.state.as_ref().and_then(|s| s.by.as_deref()),
        now_ms: now,
    };
    let rolled = crate::plan::RolledIssue {
        issue_key: alert.issue_key.clone(),
        title: alert.title.clone(),
        project: alert.project().to_string(),
        environment: alert.environment.clone(),
        level: alert.level,
        occurrences: 7,
        messages: 2,
        issue_url: alert.issue_url.clone(),
    };
    let rollup = crate::plan::RollUp {
        issues: vec![rolled; 12],
        messages: 24,
        occurrences: 84,
        since_ms: now - 240_000,
        mentions: Vec::new(),
    };
    for msg in [
        render_alert(alert, &target, &IssueStats::default()),
        render_alert(alert, &target, &stats),
        render_followup(alert, 37, now - 3_600_000, now, &stats, Default::default()),
        render_followup(alert, 37, now - 3_600_000, now, &stats, spike),
        render_followup(alert, 0, now - 3_600_000, now, &stats, mute_ended),
        crate::slack::render_issue(alert, &target, &stats, &two_way),
        render_rollup(&rollup, now),
    ] {
        assert_within_slack_limits(&msg);
        assert_shown_as_text(&msg);
    }
}

/// No `<`, `>` or invisible character in any text of `msg` but Sluice's own links
/// (`<https://…|Open in Sentry>`, `<https://…|title>` in a roll-up), whose URLs are safe.
fn assert_shown_as_text(msg: &SlackMessage) {
    let mut texts = vec![msg.text.clone()];
    for block in &msg.blocks {
        texts.extend(block["text"]["text"].as_str().map(str::to_string));
        for element in block["elements"].as_array().into_iter().flatten() {
            texts.extend(element["text"].as_str().map(str::to_string));
            texts.extend(element["text"]["text"].as_str().map(str::to_string));
            if let Some(url) = element["url"].as_str() {
                assert_eq!(safe_link(url), Some(url));
            }
        }
    }
    for text in texts {
        let shown = without_links(&text);
        if let Some(at) = shown.find(|c| matches!(c, '<' | '>') || is_invisible(c)) {
            panic!("raw markup or invisible text: {:?}", excerpt(&shown, at));
        }
    }
}

/// Up to 80 bytes of `text` on either side of byte `at`, for a short failure message.
fn excerpt(text: &str, at: usize) -> &str {
    let start = text.floor_char_boundary(at.saturating_sub(80));
    let end = text.ceil_char_boundary((at + 80).min(text.len()));
    &text[start..end]
}

/// `text` without its `<url|label>` links, each of whose URL must be safe.
fn without_links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<http") {
        out.push_str(&rest[..start]);
        let link = &rest[start + 1..];
        let Some(end) = link.find('>') else {
            return format!("{out}{}", &rest[start..]);
        };
        let (url, label) = link[..end].split_once('|').unwrap_or((&link[..end], ""));
        assert_eq!(safe_link(url), Some(url), "unsafe link");
        out.push_str(label);
        rest = &link[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The index in [`field_path`]'s numbering of the field `path` (`data.issue.count`).
fn field(path: &str) -> u16 {
    (0..u16::MAX)
        .find(|&n| {
            let keys: Vec<String> = field_path(n)
                .into_iter()
                .filter_map(|s| match s {
                    Step::Key(k) => Some(k),
                    Step::Index(_) => None,
                })
                .collect();
            keys.join(".") == path
        })
        .expect("a known field")
}

/// The index of `piece` in [`PIECES`].
fn piece(piece: &str) -> u8 {
    let at = PIECES.iter().position(|p| *p == piece).expect("a piece");
    u8::try_from(at).expect("fewer than 256 pieces")
}

/// Random mutation plans over the real payloads (see the module documentation).
#[test]
fn mutated_payloads_keep_the_parsers_promises() {
    bolero::check!()
        .with_type::<Plan>()
        .with_test_time(NORMAL_RUN)
        .for_each(run);
}

/// Every seed, unchanged and in every encoding, passes the checks: the harness accepts what
/// the parsers are known to handle.
#[test]
fn the_unchanged_seeds_pass() {
    for seed in 0..SEEDS.len() {
        for encoding in [Encoding::Compact, Encoding::Pretty, Encoding::Ascii] {
            run(&Plan {
                seed: seed as u8,
                mutations: Vec::new(),
                encoding,
                header: Text::Piece(0),
                action: None,
            });
        }
    }
}

/// The mutations and encodings do what they say, so the fuzzer explores what it claims to.
#[test]
fn mutations_and_encodings_do_what_they_say() {
    let mut doc = json!({"data": {"issue": {"id": 5, "count": 3}}, "list": [1, 2]});
    let at = |place: Place, op: Op| Mutation { place, op };
    // `data.issue.count` is one of the fields; `data.event.title` is created with its parents.
    apply(
        &mut doc,
        &at(Place::Field(field("data.issue.count")), Op::Stringify),
    );
    apply(
        &mut doc,
        &at(
            Place::Field(field("data.event.title")),
            Op::Set(Json::Text(Text::Repeat { piece: 0, times: 3 })),
        ),
    );
    apply(
        &mut doc,
        &at(
            Place::Field(field("data.issue.id")),
            Op::Nest {
                depth: 2,
                array: true,
            },
        ),
    );
    // Node 0 is the root; its last node is the array's `2`.
    let last = u16::try_from({
        let mut all = Vec::new();
        nodes(&doc, &mut Vec::new(), &mut all);
        all.len() - 1
    })
    .unwrap();
    apply(&mut doc, &at(Place::Node(last), Op::Delete));
    assert_eq!(
        doc,
        json!({"data": {"issue": {"id": [[5]], "count": "3"}, "event": {"title": ""}}, "list": [1]})
    );

    let doc = json!({"a": "é😀"});
    assert_eq!(
        encode(&doc, &Encoding::Ascii),
        br#"{"a":"\u00e9\ud83d\ude00"}"#
    );
    let lone = Encoding::Surrogate {
        string: 1,
        kind: SurrogateKind::LoneHigh,
    };
    assert_eq!(encode(&doc, &lone), br#"{"a":"\ud83d\u00e9\ud83d\ude00"}"#);
    assert!(serde_json::from_slice::<Value>(&encode(&doc, &lone)).is_err());
    let pair = Encoding::Surrogate {
        string: 1,
        kind: SurrogateKind::Pair,
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&encode(&doc, &pair)).unwrap(),
        json!({"a": "😀é😀"})
    );
    assert_eq!(encode(&doc, &Encoding::Cut(4)), br#"{"a""#);
}

/// Found by the alert invariants: `resolution: ` plus a `resolution_type` of 2,000 chars made
/// an `issue.resolved` detail of 2,012, past the 2,000 every string of an alert is capped at.
#[test]
fn a_long_resolution_type_is_capped() {
    assert_eq!(FIXTURES[2], ("issue", "issue.created.json"));
    assert_eq!(ACTIONS[1], "resolved");
    run(&Plan {
        seed: 2,
        mutations: vec![Mutation {
            place: Place::Field(field("data.resolution_type")),
            op: Op::SetText(Text::Repeat {
                piece: piece("é"),
                times: 2_000,
            }),
        }],
        encoding: Encoding::Compact,
        header: Text::Piece(0),
        action: Some(1),
    });
    let mut doc = SEEDS[2].1.clone();
    doc["action"] = json!("resolved");
    doc["data"]["resolution_type"] = json!("é".repeat(2_000));
    let body = encode(&doc, &Encoding::Compact);
    let Ok(Parsed::Alert(alert)) = parse("issue", &body, &PROJECTS) else {
        panic!("issue.resolved is routed");
    };
    let detail = alert.detail.expect("a resolution");
    assert!(detail.starts_with("resolution: éé"), "{detail}");
    assert_eq!(detail.chars().count(), 2_000);
}

/// Found by the fuzzer in CI: an issue URL of `HTTPS://SENTRY.IO/` was kept and linked as
/// `<HTTPS://…|Open in Sentry>`, a link with a scheme Slack documents in lowercase only. The
/// parser now writes the scheme in lowercase, and the renderer links only lowercase schemes.
#[test]
fn an_uppercase_scheme_is_linked_in_lowercase() {
    assert_eq!(FIXTURES[0].0, "event_alert");
    let url = Text::Piece(piece("HTTPS://SENTRY.IO/"));
    for name in ["data.event.web_url", "data.event.url", "data.web_url"] {
        run(&Plan {
            seed: 0,
            mutations: vec![Mutation {
                place: Place::Field(field(name)),
                op: Op::SetText(url.clone()),
            }],
            encoding: Encoding::Compact,
            header: Text::Piece(0),
            action: None,
        });
    }
    let mut doc = SEEDS[0].1.clone();
    doc["data"]["event"]["web_url"] = json!("HTTPS://SENTRY.IO/");
    let body = encode(&doc, &Encoding::Compact);
    let Ok(Parsed::Alert(alert)) = parse("event_alert", &body, &PROJECTS) else {
        panic!("an event alert is routed");
    };
    assert_eq!(alert.event_url.as_deref(), Some("https://SENTRY.IO/"));
}

/// Found replaying the fuzzer's corpus in a debug build: forty nests of 149 levels at one
/// place made a document about 6,000 levels deep, whose clone overflowed the test's stack.
/// Nests and copies now stop at [`MAX_DEPTH`], still past serde_json's limit of 128, so the
/// parsers' refusal of a too-deep body stays exercised.
#[test]
fn repeated_nests_stop_at_the_depth_limit() {
    let nest = Mutation {
        place: Place::Field(field("data.issue.id")),
        op: Op::Nest {
            depth: 149,
            array: false,
        },
    };
    let copy = Mutation {
        place: Place::Field(field("data.issue.title")),
        op: Op::Copy(3),
    };
    let mut doc = SEEDS[2].1.clone();
    for m in std::iter::repeat_n([nest.clone(), copy.clone()], 20).flatten() {
        apply(&mut doc, &m);
        assert!(depth(&doc) <= MAX_DEPTH, "{}", depth(&doc));
    }
    assert_eq!(depth(&doc["data"]["issue"]["id"]), MAX_DEPTH - 3);
    run(&Plan {
        seed: 2,
        mutations: vec![nest; 40],
        encoding: Encoding::Compact,
        header: Text::Piece(0),
        action: None,
    });
}
