//! Clicks as Slack sends them: the two-way Slack configuration, `block_actions` payloads made
//! from the buttons of a message the fake Slack received, signed the way Slack signs them.
//! Shared by the integration tests and the click benchmark.

use serde_json::{Value, json};

use super::fake_sentry::FakeSentry;
use super::fake_slack::{FakeSlack, Received};

/// The Slack app's signing secret in these tests.
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The Web API channel of route "python via web api" in [`super::config_text`].
pub const CHANNEL_ID: &str = "C0123456789";
/// The clicker of most tests.
pub const ADA: &str = "U0ADA";

/// [`config_text`] with interactivity on: the signing secret, Sentry's API at `sentry`.
pub fn two_way(text: String, sentry: &FakeSentry) -> String {
    text.replacen(
        "[slack]\n",
        &format!("[slack]\nsigning_secrets = [\"{SIGNING_SECRET}\"]\n"),
        1,
    )
    .replacen(
        "[sentry]\n",
        &format!(
            "[sentry]\napi_token = \"sntrys-test-token\"\napi_base = \"{}\"\n\
             organization = \"test-org\"\napi_timeout = \"2s\"\n",
            sentry.base()
        ),
        1,
    )
}

/// The headers Slack sends with an interaction: content type, timestamp, v0 signature.
pub fn slack_headers(body: &str, secret: &str, timestamp: i64) -> Vec<(&'static str, String)> {
    vec![
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("x-slack-request-timestamp", timestamp.to_string()),
        (
            "x-slack-signature",
            sluice::slack::signing::sign(secret, timestamp, body.as_bytes()),
        ),
    ]
}

/// The element `action_id` of `message`'s blocks, with its block's id.
pub fn element(message: &Received, action_id: &str) -> (Value, String) {
    for block in message.body["blocks"].as_array().into_iter().flatten() {
        for el in block["elements"].as_array().into_iter().flatten() {
            if el["action_id"] == action_id {
                return (el.clone(), block["block_id"].as_str().unwrap().to_string());
            }
        }
    }
    panic!("no element {action_id} in {}", message.body["blocks"]);
}

/// The form body Slack POSTs when `user` clicks `action_id` on `message` (choosing the option
/// with value `option` of a menu): a `block_actions` payload as Slack documents it, built from
/// the element Slack received.
pub fn click_body(
    slack: &FakeSlack,
    message: &Received,
    action_id: &str,
    option: Option<&str>,
    trigger: &str,
    user: &str,
) -> String {
    let (el, block_id) = element(message, action_id);
    let ts = message.ts.clone().expect("the message was posted");
    let mut action = json!({
        "action_id": action_id,
        "block_id": block_id,
        "type": el["type"],
        "action_ts": "1763769601.000100",
    });
    match option {
        Some(value) => {
            let options = el["options"].as_array().expect("a menu");
            let chosen = options
                .iter()
                .find(|o| o["value"] == value)
                .unwrap_or_else(|| panic!("no option {value} in {el}"));
            action["selected_option"] = chosen.clone();
        }
        None => {
            action["text"] = el["text"].clone();
            action["value"] = el["value"].clone();
        }
    }
    let payload = json!({
        "type": "block_actions",
        "team": {"id": "T0TEAM", "domain": "acme"},
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL_ID, "is_ephemeral": false},
        "trigger_id": trigger,
        "channel": {"id": CHANNEL_ID, "name": "python-alerts"},
        "message": {"type": "message", "ts": ts, "text": message.text(), "blocks": message.body["blocks"]},
        "response_url": slack.response_url(trigger),
        "actions": [action],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}
