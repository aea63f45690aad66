//! Sluice receives Sentry webhooks, verifies and counts them, routes each error to the Slack
//! channels of `routes.toml`, and delivers the messages without ever losing one it
//! acknowledged.
//!
//! # Layout
//!
//! Data flows one way, top to bottom:
//!
//! - [`server`]: HTTP wiring (axum): the webhook endpoints, `/healthz`, `/readyz`,
//!   `/metrics`, `run()`; `server::interactions` takes Slack's clicks
//!   (`POST /slack/interactions`: verify, parse, commit); `server::status_page` serves the
//!   status page (`GET /`, `/ui/…`) behind its token; `server::conn` serves connections
//!   with the header, idle and connection-count limits.
//! - [`status`]: the status page's content, read from the live config and a few bounded store
//!   reads, and its HTML (`status::html`, maud).
//! - [`sentry`]: signature and timestamp checks, parsing every payload shape into an
//!   [`alert::Alert`], and `sentry::api`, the client of Sentry's web API (resolve, archive,
//!   assign, comment).
//! - [`issue`]: an issue's state in Sentry (status, assignee, who changed it) and the actions
//!   people take on it from Slack, as plain values.
//! - [`alert`]: the one normalised record every later stage works on.
//! - [`config`]: `routes.toml`, parsed, `${VAR}`-expanded and validated with file:line:col
//!   errors: the public types in `config/mod.rs`, the file as written in `raw.rs`, validation
//!   in `validate.rs`, value parsers in `values.rs`, `ConfigError` in `error.rs`.
//! - [`routing`]: which channels an alert goes to (ordered routes, globs, levels, tags, title).
//! - [`store`]: durable state behind the `Store` trait (SQLite or PostgreSQL): deduplication,
//!   the fold queue, day counts, issues and their state, the outbox, sent log, dead letters,
//!   ops notices, posted messages, clicks and mutes. `store/sql/` is the one SQL
//!   implementation (`mod.rs` the committer and trait impl, `ingest.rs` the request path's
//!   group commit, `fold.rs` the fold, `group.rs` the in-memory halves of both, `outbox.rs`
//!   the outbox's life, `mutes.rs` mutes, `interact.rs` clicks and posted messages,
//!   `queries.rs` reads and pruning, `status.rs` the status page's reads and dead-letter
//!   replay); `store::writer` keeps a failed write transaction from leaving its connection in
//!   doubt. It executes storm control's plans, asking the [`plan::Planner`] it was opened
//!   with inside the transaction that acts on the answer; it does not import [`storm`].
//! - [`fold`]: the leader's fold loop: folds what the request path appended into counts,
//!   storm decisions and outbox rows, in batches, each exactly once (PostgreSQL; on SQLite
//!   the group commit folds its own deliveries).
//! - [`leader`]: which replica delivers when several share PostgreSQL (an advisory lock).
//! - [`counts`]: the 7-day and 30-day windows, the sparkline, number formatting.
//! - [`plan`]: storm control's plans as plain values (a pair's cooldown and mute, the alerts
//!   routed to it, the plan for a group, follow-ups, roll-ups) and the `Planner` trait: the
//!   language [`storm`] decides in and [`store`] executes.
//! - [`storm`]: storm control decisions: per-issue cooldowns, mutes, breakthrough spikes and
//!   roll-ups as pure planners over [`plan`]'s values (`StormPlanner` is the store's planner;
//!   it imports neither the store nor the outbox), per-channel rate limits.
//! - [`digest`]: the weekly digest per channel: schedule, numbers, message, scheduler.
//! - [`outbox`]: the delivery worker draining the outbox to Slack, with retry decisions;
//!   `outbox::issue` sends what is about an issue's message (buttons, state line, in-place
//!   rewrites, regressions, comments in threads).
//! - [`interactions`]: the leader's worker that carries out committed clicks against Sentry's
//!   API (or mutes), durably, with retries, replying to the clicker.
//! - [`prune`]: the hourly worker that drops counts, dedupe records, posted-message records
//!   and carried-out clicks past retention.
//! - [`slack`]: Block Kit message building (escaping, limits; the buttons and state line of
//!   `buttons`) and the transports; Slack's request signing and click payloads (`signing`,
//!   `interaction`).
//! - [`ops`]: Sluice watching itself: dead letters, Sentry silence and digest failures
//!   reported to `ops_channel`, rate limited.
//! - [`metrics`]: every exported Prometheus series, named and documented in one place.
//! - [`state`]: what handlers and workers share (store, live config, wake-up signals, clock).
//! - [`clock`]: the one clock of wall time and timers, which tests run on Tokio's paused time.
//! - [`reload`]: hot reload of routes.toml on SIGHUP or file change (parse, validate, swap).
//! - [`cli`]: the `sluice` command line (`cli/mutes.rs`: `mute`, `unmute`, `mutes`;
//!   `cli/dead_letters.rs`: `dead-letters`; `cli/shared.rs`: what those share);
//!   `main.rs` only calls it.

pub mod alert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counts;
pub mod digest;
pub mod fold;
pub mod interactions;
pub mod issue;
pub mod leader;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod plan;
pub mod prune;
pub mod reload;
pub mod routing;
pub mod sentry;
pub mod server;
pub mod slack;
pub mod state;
pub mod status;
pub mod store;
pub mod storm;
#[doc(hidden)]
pub mod testing;

pub use server::{app, run};
