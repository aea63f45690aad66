//! `sluice dead-letters` as a user runs it, against a running service: the list shows what
//! Slack refused, with Slack's error; `--replay` queues it again from another process, and the
//! running service (its leader, on PostgreSQL) sends it, on either backend.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice::config::Config;
use sluice::testing::ScratchPostgres;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);

/// The channel Slack refuses once in these tests.
const CHANNEL: &str = "frontend-prod";

/// Runs the real `sluice` binary with `args`, off the runtime's threads (the service under
/// test shares them); returns its exit code, stdout and stderr.
async fn sluice(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .env_remove("SLUICE_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The accounting series of `channel` in one look at `/metrics` (routed, posted, pending,
/// dead, muted), checked to add up: `routed == posted + pending + dead + muted`. `None` when
/// that scrape could not read the store (`sluice_store_up 0`: the series are left out).
async fn accounting(server: &TestServer, channel: &str) -> Option<[u64; 5]> {
    sluice::slack::transport::install_crypto_provider();
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    if text.lines().any(|l| l == "sluice_store_up 0") {
        return None;
    }
    let names = [
        "sluice_occurrences_routed_total",
        "sluice_occurrences_posted_total",
        "sluice_occurrences_pending",
        "sluice_occurrences_dead",
        "sluice_occurrences_muted",
    ];
    let mut terms = [0; 5];
    for (term, name) in terms.iter_mut().zip(names) {
        let series = format!("{name}{{channel=\"{channel}\"}} ");
        *term = text
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or_else(|| panic!("no {series}in {text}"));
    }
    let [routed, posted, pending, dead, muted] = terms;
    assert_eq!(routed, posted + pending + dead + muted, "{terms:?}");
    Some(terms)
}

/// The requests Slack received for [`CHANNEL`] that it accepted, or (`accepted` false) refused.
fn to_channel(slack: &FakeSlack, accepted: bool) -> Vec<fake_slack::Received> {
    slack
        .requests_to(&format!("hooks/{CHANNEL}"))
        .into_iter()
        .filter(|r| (r.reply == "Ok") == accepted)
        .collect()
}

/// Slack refuses the first message for [`CHANNEL`] with `channel_not_found` (then the channel
/// is fixed: it accepts what follows); the list shows the dead letter, a replay from the
/// command line queues it again, and the running service posts it.
async fn replay_through_a_running_service(slack: &FakeSlack, server: &TestServer, config: &Path) {
    let config = config.to_str().unwrap();
    let before = sluice::clock::Clock::system().now_ms();
    server
        .accept_event("1117540176", &event_id(0xdead), "front-end", "production")
        .await;
    eventually(WAIT, "the message is dead-lettered", || async {
        let [.., dead, _] = accounting(server, CHANNEL).await?;
        (dead == 1).then_some(())
    })
    .await;
    let refused = to_channel(slack, false);
    assert_eq!(refused.len(), 1, "{:#?}", slack.received());
    assert!(
        refused[0].reply.contains("channel_not_found"),
        "{refused:?}"
    );

    let (code, out, err) = sluice(&["dead-letters", "-c", config]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one dead letter: {out}");
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "ID",
            "CHANNEL",
            "DEAD",
            "AT",
            "KIND",
            "ERROR",
            "OCCURRENCES",
            "ISSUE"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[1..],
        [
            "#frontend-prod",
            row[2],
            "alert",
            "channel_not_found",
            "1",
            "1117540176",
            "ReferenceError:",
            "heck",
            "is",
            "not",
            "defined"
        ]
    );
    let dead_at: jiff::Timestamp = row[2].parse().unwrap_or_else(|e| panic!("{out}: {e}"));
    let after = sluice::clock::Clock::system().now_ms();
    assert!(
        (before / 1000 * 1000..=after).contains(&dead_at.as_millisecond()),
        "dead at {dead_at}, between {before} and {after}"
    );
    let (_, out, _) = sluice(&["dead-letters", "-c", config, "--channel", "errors"]).await;
    assert_eq!(out, "no dead letters in #errors\n");
    let (_, out, _) = sluice(&["dead-letters", "-c", config, "--since", "1h"]).await;
    assert_eq!(
        out.lines().count(),
        2,
        "dead-lettered within the hour: {out}"
    );

    let (code, out, err) = sluice(&[
        "dead-letters",
        "-c",
        config,
        "--replay",
        "--channel",
        CHANNEL,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let new_id = out
        .strip_prefix("queued 1 dead letter(s) in #frontend-prod again (new ids ")
        .and_then(|rest| rest.strip_suffix("); the running service sends them\n"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(new_id.parse::<i64>().is_ok_and(|id| id > 0), "{out}");

    let posted = eventually(WAIT, "the running service posts the replay", || async {
        to_channel(slack, true).into_iter().next()
    })
    .await;
    assert_eq!(posted.body, refused[0].body, "the same message, sent again");
    let terms = eventually(WAIT, "the replay is accounted as posted", || async {
        let terms = accounting(server, CHANNEL).await?;
        (terms[2] == 0).then_some(terms)
    })
    .await;
    assert_eq!(
        terms,
        [1, 1, 0, 0, 0],
        "routed, posted, pending, dead, muted"
    );
    let (code, out, _) = sluice(&["dead-letters", "-c", config]).await;
    assert_eq!((code, out.as_str()), (0, "no dead letters\n"));
    let (code, out, _) = sluice(&["dead-letters", "-c", config, "--replay"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "no dead letters: nothing queued\n")
    );
    assert_eq!(to_channel(slack, true).len(), 1, "posted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_through_a_running_service_on_sqlite() {
    let slack = FakeSlack::start().await;
    slack.script([Reply::SlackError("channel_not_found")]);
    let scratch = Scratch::new();
    let path = scratch.write_config(&config_text(&slack, &scratch.db(), ""));
    let server = TestServer::start(Config::load(&path).unwrap()).await;
    replay_through_a_running_service(&slack, &server, &path).await;
    server.stop().await;
}

/// On PostgreSQL the replay, written by another process, reaches the running leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_through_a_running_service_on_postgres() {
    let db = ScratchPostgres::new().await;
    let slack = FakeSlack::start().await;
    slack.script([Reply::SlackError("channel_not_found")]);
    let scratch = Scratch::new();
    let path = scratch.write_config(&config_text_postgres(&slack, db.url(), ""));
    let server = TestServer::start(Config::load(&path).unwrap()).await;
    replay_through_a_running_service(&slack, &server, &path).await;
    server.stop().await;
}

/// An unknown channel and a malformed `--since` are refused with what to write instead, and
/// nothing is queued; so are a zero `--limit` and `--limit` with `--replay` (clap's usage
/// errors, exit 2).
#[tokio::test]
async fn dead_letters_refuses_an_unknown_channel_and_a_malformed_since() {
    let scratch = Scratch::new();
    let config = scratch.write_store_config();
    let config = config.to_str().unwrap();
    for replay in [&[][..], &["--replay"][..]] {
        let args = [
            &["dead-letters", "-c", config, "--channel", "nowhere"],
            replay,
        ]
        .concat();
        let (code, out, err) = sluice(&args).await;
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert!(err.contains("no channel `nowhere`"), "{err}");
        assert!(
            err.contains("checkout-prod, errors"),
            "names the channels: {err}"
        );

        for bad in ["yesterday", "2025-11-22", "1.5h", "24"] {
            let args = [&["dead-letters", "-c", config, "--since", bad], replay].concat();
            let (code, out, err) = sluice(&args).await;
            assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
            assert!(
                err.starts_with(&format!(
                    "--since: `{bad}` is neither an RFC 3339 timestamp"
                )),
                "{err}"
            );
        }
        let future = "2999-01-01T00:00:00Z";
        let args = [&["dead-letters", "-c", config, "--since", future], replay].concat();
        let (code, _, err) = sluice(&args).await;
        assert_eq!(code, 1);
        assert_eq!(err, format!("--since: `{future}` is in the future\n"));
    }
    let (code, _, err) = sluice(&["dead-letters", "-c", config, "--limit", "0"]).await;
    assert_eq!(code, 2, "{err}");
    let limited = ["dead-letters", "-c", config, "--replay", "--limit", "5"];
    let (code, _, err) = sluice(&limited).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--limit"), "{err}");

    let (code, out, _) = sluice(&["dead-letters", "-c", config, "--since", "3d"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("no dead letters since "), "{out}");
}
