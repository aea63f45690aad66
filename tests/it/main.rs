//! End-to-end tests: the real server on port 0 against a fake Slack, fed the real Sentry
//! payloads from ../shared/fixtures/sentry/.

mod cli;
mod counting;
mod delivery;
mod deploy;
mod digest;
mod ingest;
mod ops;
mod replicas;
mod storm;
mod util;
