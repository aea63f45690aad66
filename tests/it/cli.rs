//! The command line as a user runs it: `check`, `route`, `sign`, `mute`, `mutes`, `unmute`.

use std::process::Command;

use crate::util::*;

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo_file(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_routes_toml_is_valid() {
    let (code, out, err) = sluice(&["check", "-c", &repo_file("routes.toml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn check_points_at_the_error_and_never_prints_a_secret() {
    let scratch = Scratch::new();
    let path = scratch.write_config(
        "default_channel = \"errors\"\n\
         [sentry]\n\
         client_secrets = [\"s3cr3t-value-do-not-print\"]\n\
         [channels.errors]\n\
         console = true\n\
         [[routes]]\n\
         project = \"checkout\"\n\
         channels = [\"nowhere\"]\n",
    );
    let (code, out, err) = sluice(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let expected = format!("{}:8:", path.display());
    assert!(err.starts_with(&expected), "expected {expected}… got {err}");
    assert!(err.contains("nowhere"), "{err}");
    assert!(!err.contains("s3cr3t-value-do-not-print") && !out.contains("s3cr3t"));
}

#[test]
fn a_missing_environment_variable_is_named() {
    let scratch = Scratch::new();
    let path = scratch.write_config(
        "default_channel = \"errors\"\n\
         [channels.errors]\n\
         webhook_url = \"${SLUICE_TEST_SURELY_UNSET_VAR}\"\n",
    );
    let (code, _, err) = sluice(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("SLUICE_TEST_SURELY_UNSET_VAR"), "{err}");
    assert!(err.contains(":3:"), "{err}");
}

#[test]
fn sign_matches_the_reference_vector() {
    // The derived vector of tests/fixtures/sentry/README.md.
    let scratch = Scratch::new();
    let body = scratch.dir.path().join("comment.json");
    std::fs::write(&body, fixture("comment.created.json")).unwrap();
    let (code, out, _) = sluice(&[
        "sign",
        "--secret",
        "test-client-secret",
        body.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "96cdc9cf43fb8349fd0371e078193b23054c58993ee61e858f3bc6cb1ee23c38"
    );
}

/// `sign --slack` prints the two headers Slack sends, and Sluice's own check accepts them.
#[test]
fn sign_slack_prints_headers_that_sluice_accepts() {
    let scratch = Scratch::new();
    let body = scratch.dir.path().join("click.form");
    std::fs::write(&body, "payload=%7B%22type%22%3A%22block_actions%22%7D").unwrap();
    let (code, out, err) = sluice(&[
        "sign",
        "--slack",
        "--secret",
        "s3cret",
        body.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let header = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let timestamp = header("X-Slack-Request-Timestamp");
    let signature = header("X-Slack-Signature");
    let now: i64 = timestamp.parse().unwrap();
    let raw = std::fs::read(&body).unwrap();
    sluice::slack::signing::verify(&["s3cret"], &timestamp, &raw, &signature, now).unwrap();
    assert!(sluice::slack::signing::verify(&["other"], &timestamp, &raw, &signature, now).is_err());
}

#[test]
fn route_shows_where_an_error_goes() {
    let config = repo_file("routes.toml");
    let (code, out, err) = sluice(&[
        "route",
        "-c",
        &config,
        "--project",
        "checkout-api",
        "--environment",
        "production",
        "--level",
        "fatal",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("checkout production -> checkout-prod"),
        "{out}"
    );
    assert!(out.contains("<!subteam^S0123>"), "{out}");

    let (code, out, _) = sluice(&[
        "route",
        "-c",
        &config,
        "--project",
        "checkout",
        "--environment",
        "staging",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("-> checkout-staging"), "{out}");

    let (code, out, _) = sluice(&[
        "route",
        "-c",
        &config,
        "--project",
        "billing",
        "--environment",
        "production",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("(default_channel) -> errors"), "{out}");
}

#[test]
fn route_with_a_payload_prints_the_slack_message() {
    let scratch = Scratch::new();
    let payload = scratch.dir.path().join("event.json");
    std::fs::write(&payload, fixture("event_alert.triggered.json")).unwrap();
    let (code, out, err) = sluice(&[
        "route",
        "-c",
        &repo_file("routes.toml"),
        "--payload",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("-> errors"), "{out}");
    assert!(out.contains("\"blocks\""), "{out}");
    assert!(out.contains("7d: 1 · 30d: 1"), "{out}");
    assert!(out.contains("heck is not defined"), "{out}");
}

/// `sluice …` as [`sluice`] runs it, by login `user` (`$USER`, who a mute is by).
fn sluice_as(user: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_CONFIG")
        .env("USER", user)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice mute`, `mutes` and `unmute` against the configured store: the mute holds what is
/// committed meanwhile, the list shows it, and unmute queues the "held back" message once.
#[tokio::test]
async fn mute_mutes_and_unmute_act_on_the_configured_store() {
    let scratch = Scratch::new();
    let config = scratch.write_store_config();
    let config = config.to_str().unwrap();
    let mute = |channel: &str, duration: &str| {
        let args = [
            "mute",
            "-c",
            config,
            "--issue",
            "4242",
            "--channel",
            channel,
        ];
        sluice_as("ada", &[&args[..], &["--for", duration]].concat())
    };
    let (code, _, err) = mute("nowhere", "24h");
    assert_eq!(code, 1);
    assert!(err.contains("no channel `nowhere`"), "{err}");
    assert!(
        err.contains("checkout-prod, errors"),
        "names the channels: {err}"
    );
    for bad in ["0s", "1.5h", "24"] {
        let (code, _, err) = mute("errors", bad);
        assert_eq!(code, 1, "--for {bad}");
        assert!(err.starts_with("--for: "), "{err}");
    }
    let (code, out, _) = sluice_as("ada", &["mutes", "-c", config]);
    assert_eq!((code, out.as_str()), (0, "no active mutes\n"));

    let (code, out, err) = mute("errors", "24h");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("muted issue 4242 in #errors until "),
        "{out}"
    );
    assert!(out.contains("(for 1d)"), "{out}");
    let store = scratch.store().await;
    seed_occurrences(&*store, sluice::clock::Clock::system().now_ms(), 0, 2).await;
    let (code, out, _) = sluice_as("ada", &["mutes", "-c", config]);
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["ISSUE", "CHANNEL", "UNTIL", "BY", "HELD", "TITLE"]
    );
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[1][..2], ["4242", "#errors"]);
    assert_eq!(lines[1][4..7], ["UTC", "ada", "2"], "{out}");

    let unmute = [
        "unmute",
        "-c",
        config,
        "--issue",
        "4242",
        "--channel",
        "errors",
    ];
    let (code, out, _) = sluice_as("ada", &unmute);
    assert_eq!(code, 0);
    assert!(
        out.contains("the 2 occurrence(s) it held back will be posted"),
        "{out}"
    );
    let (_, out, _) = sluice_as("ada", &unmute);
    assert_eq!(out, "issue 4242 was not muted in #errors\n");
    let (_, out, _) = sluice_as("ada", &["mutes", "-c", config]);
    assert_eq!(out, "no active mutes\n");
    let waiting = store.channel_outbox("errors").await.unwrap();
    let held_back: Vec<u64> = waiting
        .iter()
        .filter_map(|item| match item.message {
            sluice::store::OutboxMessage::FollowUp { folded, reason, .. } => {
                assert_eq!(reason, sluice::plan::FollowUpReason::MuteEnded);
                Some(folded)
            }
            _ => None,
        })
        .collect();
    assert_eq!(held_back, [2], "queued once, for the service to post");
}
