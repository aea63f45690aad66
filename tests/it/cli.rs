//! The command line as a user runs it: `check`, `route`, `sign`.

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
