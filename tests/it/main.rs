//! End-to-end tests: the real server on port 0 against a fake Slack, fed the real Sentry
//! payloads from tests/fixtures/sentry/.

mod cli;
mod counting;
mod dead_letters;
mod delivery;
mod deploy;
mod digest;
mod durability;
mod http_limits;
mod ingest;
mod interactivity;
mod ops;
mod replicas;
mod status_page;
mod storm;
mod util;
