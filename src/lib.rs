//! Sluice receives Sentry webhooks, verifies and counts them, routes each error to the Slack
//! channels of `routes.toml`, and delivers the messages without ever losing one it
//! acknowledged.
//!
//! # Layout
//!
//! Data flows one way, top to bottom:
//!
//! - [`server`]: HTTP wiring (axum): the webhook endpoints, `/healthz`, `/readyz`,
//!   `/metrics`, `run()`.
//! - [`sentry`]: signature and timestamp checks, and parsing every payload shape into an
//!   [`alert::Alert`].
//! - [`alert`]: the one normalised record every later stage works on.
//! - [`config`]: `routes.toml`, parsed, `${VAR}`-expanded and validated with file:line:col
//!   errors.
//! - [`routing`]: which channels an alert goes to (ordered routes, globs, levels, tags, title).
//! - [`store`]: durable state behind the `Store` trait (SQLite or PostgreSQL): deduplication,
//!   day counts, issues, the outbox, sent log and dead letters.
//! - [`leader`]: which replica delivers when several share PostgreSQL (an advisory lock).
//! - [`counts`]: the 7-day and 30-day windows, the sparkline, number formatting.
//! - [`storm`]: storm control decisions: per-issue cooldowns, roll-ups, per-channel rate
//!   limits.
//! - [`digest`]: the weekly digest per channel: schedule, numbers, message, scheduler.
//! - [`outbox`]: the delivery worker draining the outbox to Slack, with retry decisions.
//! - [`prune`]: the hourly worker that drops counts and dedupe records past retention.
//! - [`slack`]: Block Kit message building (escaping, limits) and the transports.
//! - [`ops`]: Sluice watching itself: dead letters, Sentry silence and digest failures
//!   reported to `ops_channel`, rate limited.
//! - [`metrics`]: every exported Prometheus series, named and documented in one place.
//! - [`state`]: what handlers and workers share (store, live config, wake-up signal, clock).
//! - [`reload`]: hot reload of routes.toml on SIGHUP or file change (parse, validate, swap).
//! - [`cli`]: the `sluice` command line; `main.rs` only calls it.

pub mod alert;
pub mod cli;
pub mod config;
pub mod counts;
pub mod digest;
pub mod leader;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod prune;
pub mod reload;
pub mod routing;
pub mod sentry;
pub mod server;
pub mod slack;
pub mod state;
pub mod store;
pub mod storm;
#[doc(hidden)]
pub mod testing;

pub use server::{app, run};
