//! The Slack app manifest.

use super::*;

/// The Slack app manifest asks for exactly the scopes Sluice calls for (chat.postMessage and
/// chat.update; users.info with the email for "Assign to me") and sends clicks to
/// `POST /slack/interactions`, which a running Sluice answers (401 to an unsigned click, not
/// 404: the route exists).
#[tokio::test]
async fn the_slack_app_manifest_asks_for_what_sluice_uses_and_points_at_its_endpoint() {
    let docs = yaml_docs(&read("slack-app-manifest.yaml"));
    let [manifest] = docs.as_slice() else {
        panic!("one document expected, got {}", docs.len());
    };
    let mut scopes = strings(&manifest["oauth_config"]["scopes"]["bot"]);
    scopes.sort();
    assert_eq!(scopes, ["chat:write", "users:read", "users:read.email"]);
    let interactivity = &manifest["settings"]["interactivity"];
    assert_eq!(interactivity["is_enabled"], Value::Bool(true));
    let url = scalar(&interactivity["request_url"]).unwrap();
    let path = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .unwrap_or_else(|| panic!("not an https URL: {url}"));

    let slack = crate::util::FakeSlack::start().await;
    let scratch = crate::util::Scratch::new();
    let text = crate::util::config_text(&slack, &scratch.db(), "").replacen(
        "[slack]\n",
        "[slack]\nsigning_secrets = [\"s3cret\"]\n",
        1,
    );
    let config = sluice::config::Config::load(&scratch.write_config(&text)).unwrap();
    let server = crate::util::TestServer::start(config).await;
    let (status, _) = crate::util::post(&server.url(&path), &[], b"payload=%7B%7D").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{path}");
    server.stop().await;
}
