//! Slack's interactivity requests (`POST /slack/interactions`): a form-encoded body whose one
//! field, `payload`, is the JSON of a `block_actions` interaction, read into a [`Click`].
//!
//! Only what acting on a click needs is kept: who clicked, on which message, which element
//! (its `action_id`, `block_id` and value), and the `response_url` to answer the clicker
//! privately. Everything else Slack sends (the whole message, the app's token, the client's
//! state) is ignored. The signature is checked before this runs ([`super::signing`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One click on a Sluice message, as Slack reported it. Stored as JSON by the interactions
/// worker until the action behind it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    /// Slack's `trigger_id`: unique per interaction, so a request Slack retried carries the
    /// same one.
    pub trigger_id: String,
    /// The workspace (`team.id`, else `user.team_id`).
    pub team_id: Option<String>,
    /// Who clicked (`user.id`, `U0123456789`): what `users.info` is asked about.
    pub user_id: String,
    /// Their Slack handle (`user.username`, else the legacy `user.name`, else the id): for
    /// the state line and the Sentry comment until `users.info` names them better.
    pub user_name: String,
    /// The channel of the message (`container.channel_id`, else `channel.id`).
    pub channel_id: Option<String>,
    /// The message's `ts` (`container.message_ts`, else `message.ts`).
    pub message_ts: Option<String>,
    /// Where to answer the clicker (ephemeral replies), valid for 30 minutes.
    pub response_url: Option<String>,
    /// The element's `action_id` (`sluice:resolve` …).
    pub action_id: String,
    /// The `block_id` of the block the element is in (`sluice:` + issue key …).
    pub block_id: String,
    /// A button's `value`, or the chosen option's `selected_option.value` for a select menu or
    /// an overflow menu.
    pub value: Option<String>,
    /// When Slack saw the click (`action_ts`, `1548426417.840180`).
    pub action_ts: Option<String>,
}

/// A body that is not a `block_actions` interaction: answered `400`. The message says what is
/// wrong, for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed interaction: {0}")]
pub struct Malformed(pub String);

/// The JSON of a `block_actions` payload, as far as Sluice reads it.
#[derive(Deserialize)]
struct Payload {
    trigger_id: String,
    user: User,
    #[serde(default)]
    team: Option<Id>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    channel: Option<Id>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    response_url: Option<String>,
    actions: Vec<Action>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    message_ts: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    ts: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    block_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    selected_option: Option<SelectedOption>,
    #[serde(default)]
    action_ts: Option<String>,
}

#[derive(Deserialize)]
struct SelectedOption {
    value: String,
}

/// Reads a request body (`application/x-www-form-urlencoded`, with the interaction's JSON in
/// `payload`) into the [`Click`] of its first action. Anything but a `block_actions` payload
/// with at least one action, a user and a `trigger_id` is [`Malformed`].
pub fn parse(body: &[u8]) -> Result<Click, Malformed> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| Malformed(format!("the body is not form-encoded: {e}")))?;
    let payload = fields
        .into_iter()
        .find_map(|(k, v)| (k == "payload").then_some(v))
        .ok_or_else(|| Malformed("the body has no `payload` field".into()))?;
    let json: Value = serde_json::from_str(&payload)
        .map_err(|e| Malformed(format!("`payload` is not JSON: {e}")))?;
    match json.get("type").and_then(Value::as_str) {
        Some("block_actions") => {}
        Some(other) => {
            return Err(Malformed(format!(
                "a `{}` payload, not `block_actions`",
                other.chars().take(64).collect::<String>()
            )));
        }
        None => return Err(Malformed("`payload` has no `type`".into())),
    }
    let payload: Payload = serde_json::from_value(json)
        .map_err(|e| Malformed(format!("not a block_actions payload: {e}")))?;
    click(payload)
}

/// The [`Click`] of a payload's first action (a message's actions block sends one at a time).
fn click(payload: Payload) -> Result<Click, Malformed> {
    let Payload {
        trigger_id,
        user,
        team,
        container,
        channel,
        message,
        response_url,
        actions,
    } = payload;
    let action = actions
        .into_iter()
        .next()
        .ok_or_else(|| Malformed("`actions` is empty".into()))?;
    let container = container.unwrap_or(Container {
        message_ts: None,
        channel_id: None,
    });
    let user_name = user
        .username
        .or(user.name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| user.id.clone());
    Ok(Click {
        trigger_id,
        team_id: team.map(|t| t.id).or(user.team_id),
        user_id: user.id,
        user_name,
        channel_id: container.channel_id.or(channel.map(|c| c.id)),
        message_ts: container.message_ts.or(message.and_then(|m| m.ts)),
        response_url,
        action_id: action.action_id,
        block_id: action.block_id,
        value: action
            .value
            .or(action.selected_option.map(|option| option.value)),
        action_ts: action.action_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A click on a button, shaped like the example of Slack's `block_actions` reference
    /// (trimmed of the message's blocks), on a message in a channel.
    fn button_payload() -> Value {
        json!({
            "type": "block_actions",
            "team": {"id": "T9TK3CUKW", "domain": "example"},
            "user": {
                "id": "UA8RXUSPL",
                "username": "jtorrance",
                "name": "jtorrance",
                "team_id": "T9TK3CUKW"
            },
            "api_app_id": "AABA1ABCD",
            "token": "9s8d9as89d8as9d8as989",
            "container": {
                "type": "message",
                "message_ts": "1548261231.000200",
                "channel_id": "CBR2V3XEX",
                "is_ephemeral": false
            },
            "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
            "channel": {"id": "CBR2V3XEX", "name": "review-updates"},
            "message": {
                "bot_id": "BAH5CA16Z",
                "type": "message",
                "text": "This content can't be displayed.",
                "user": "UAJ2RU415",
                "ts": "1548261231.000200",
                "blocks": []
            },
            "state": {"values": {}},
            "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
            "actions": [{
                "action_id": "sluice:resolve",
                "block_id": "sluice:1117540176",
                "text": {"type": "plain_text", "text": "Resolve", "emoji": true},
                "value": "resolve",
                "style": "primary",
                "type": "button",
                "action_ts": "1548426417.840180"
            }]
        })
    }

    fn form(payload: &Value) -> Vec<u8> {
        serde_urlencoded::to_string([("payload", payload.to_string())])
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn a_button_click_is_read() {
        let click = parse(&form(&button_payload())).unwrap();
        assert_eq!(
            click,
            Click {
                trigger_id: "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3".into(),
                team_id: Some("T9TK3CUKW".into()),
                user_id: "UA8RXUSPL".into(),
                user_name: "jtorrance".into(),
                channel_id: Some("CBR2V3XEX".into()),
                message_ts: Some("1548261231.000200".into()),
                response_url: Some(
                    "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209"
                        .into()
                ),
                action_id: "sluice:resolve".into(),
                block_id: "sluice:1117540176".into(),
                value: Some("resolve".into()),
                action_ts: Some("1548426417.840180".into()),
            }
        );
        // Stored as JSON and read back unchanged.
        let stored = serde_json::to_string(&click).unwrap();
        assert_eq!(serde_json::from_str::<Click>(&stored).unwrap(), click);
    }

    /// A select menu's (or an overflow's) value is its chosen option's.
    #[test]
    fn a_menu_choice_is_read() {
        let mut payload = button_payload();
        payload["actions"] = json!([{
            "type": "static_select",
            "action_id": "sluice:archive",
            "block_id": "sluice:1117540176",
            "selected_option": {
                "text": {"type": "plain_text", "text": "For 24 hours", "emoji": true},
                "value": "minutes:1440"
            },
            "placeholder": {"type": "plain_text", "text": "Archive", "emoji": true},
            "action_ts": "1548426417.840180"
        }]);
        let click = parse(&form(&payload)).unwrap();
        assert_eq!(click.action_id, "sluice:archive");
        assert_eq!(click.value.as_deref(), Some("minutes:1440"));
        payload["actions"][0]["type"] = json!("overflow");
        assert_eq!(parse(&form(&payload)).unwrap(), click);
    }

    /// The fields Slack duplicates are read from either place; a user with no handle is named
    /// by id.
    #[test]
    fn duplicated_fields_fall_back() {
        let mut payload = button_payload();
        let top = payload.as_object_mut().unwrap();
        top.remove("container");
        top.remove("team");
        let user = top["user"].as_object_mut().unwrap();
        user.remove("username");
        user.remove("name");
        let click = parse(&form(&payload)).unwrap();
        assert_eq!(click.channel_id.as_deref(), Some("CBR2V3XEX"));
        assert_eq!(click.message_ts.as_deref(), Some("1548261231.000200"));
        assert_eq!(click.team_id.as_deref(), Some("T9TK3CUKW"));
        assert_eq!(click.user_name, "UA8RXUSPL");
        // The legacy `name` serves when there is no `username`.
        payload["user"]["name"] = json!("jack");
        assert_eq!(parse(&form(&payload)).unwrap().user_name, "jack");
    }

    #[test]
    fn other_payload_types_are_malformed_and_say_which() {
        for kind in ["view_submission", "interactive_message", "shortcut"] {
            let mut payload = button_payload();
            payload["type"] = json!(kind);
            let err = parse(&form(&payload)).unwrap_err();
            assert!(err.to_string().contains(kind), "{err}");
        }
    }

    #[test]
    fn bodies_that_are_not_a_click_are_malformed() {
        let mut no_actions = button_payload();
        no_actions["actions"] = json!([]);
        let mut no_user = button_payload();
        no_user.as_object_mut().unwrap().remove("user");
        let mut no_block = button_payload();
        no_block["actions"][0]
            .as_object_mut()
            .unwrap()
            .remove("block_id");
        let mut no_type = button_payload();
        no_type.as_object_mut().unwrap().remove("type");
        let bodies = [
            form(&no_actions),
            form(&no_user),
            form(&no_block),
            form(&no_type),
            b"".to_vec(),
            b"token=abc&team_id=T1".to_vec(),
            b"payload=not%20json".to_vec(),
            b"payload=%5B%5D".to_vec(),
            button_payload().to_string().into_bytes(),
            b"payload=%ff%fe".to_vec(),
        ];
        for body in bodies {
            assert!(parse(&body).is_err(), "{}", String::from_utf8_lossy(&body));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse(&body);
        }
    }
}
