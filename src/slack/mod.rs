//! Slack output and input: building messages ([`message`], with the buttons and state line of
//! [`buttons`]), sending them ([`transport`]), and reading the clicks Slack sends back
//! ([`signing`] checks a request is Slack's, [`interaction`] reads it).
//!
//! Building is pure (an [`Alert`](crate::alert::Alert) plus its counts in, Block Kit JSON out) so
//! that it can be pinned with snapshots; sending classifies every Slack answer into an explicit
//! retry decision ([`transport::Retry`]) that the outbox worker stores and acts on.

pub mod buttons;
pub mod interaction;
pub mod message;
pub mod signing;
pub mod transport;

pub use message::{
    SlackMessage, View, ephemeral, permalink, render_alert, render_followup, render_issue,
    render_regression, render_rollup,
};
pub use transport::{Destination, Refusal, Retry, SendOutcome, SlackClient, SlackUser};
