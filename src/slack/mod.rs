//! Slack output: building messages ([`message`]) and sending them ([`transport`]).
//!
//! Building is pure (an [`Alert`](crate::alert::Alert) plus its counts in, Block Kit JSON out) so
//! that it can be pinned with snapshots; sending classifies every Slack answer into an explicit
//! retry decision ([`transport::Retry`]) that the outbox worker stores and acts on.

pub mod message;
pub mod transport;

pub use message::{SlackMessage, render_alert, render_followup, render_rollup};
pub use transport::{Destination, Refusal, Retry, SendOutcome, SlackClient};
