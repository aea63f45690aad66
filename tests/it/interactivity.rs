//! Two-way Slack end to end: buttons on the message Slack received, clicks signed the way
//! Slack signs them on `POST /slack/interactions`, the calls a fake Sentry API received, the
//! replies the clicker got, and the messages rewritten in place when the issue changes.
//! Every test runs on Tokio's paused clock, held so that it moves only when the test says.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::clock::Clock;
use sluice::testing::ScratchPostgres;

use crate::util::clicks::{
    ADA, CHANNEL_ID, SIGNING_SECRET, click_body, element, slack_headers, two_way,
};
use crate::util::fake_sentry::{FakeSentry, Fault, SentryRequest};
use crate::util::fake_slack::{FakeSlack, Received};
use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);
/// 2025-11-22 00:00 UTC.
const T0: i64 = 1_763_769_600_000;

/// A running Sluice with a fake Slack (knowing Ada) and a fake Sentry (Ada is a member).
struct Rig {
    slack: FakeSlack,
    sentry: FakeSentry,
    server: TestServer,
    _scratch: Scratch,
}

impl Rig {
    async fn start(extra: &str) -> Self {
        let slack = FakeSlack::start().await;
        let sentry = FakeSentry::start().await;
        let scratch = Scratch::new();
        let text = two_way(config_text(&slack, &scratch.db(), extra), &sentry);
        Self::serve(slack, sentry, scratch, &text).await
    }

    async fn start_postgres(db: &ScratchPostgres) -> Self {
        let slack = FakeSlack::start().await;
        let sentry = FakeSentry::start().await;
        let text = two_way(config_text_postgres(&slack, db.url(), ""), &sentry);
        Self::serve(slack, sentry, Scratch::new(), &text).await
    }

    async fn serve(slack: FakeSlack, sentry: FakeSentry, scratch: Scratch, text: &str) -> Self {
        slack.add_user(ADA, "ada", "Ada Lovelace", Some("ada@example.com"));
        sentry.add_member("ada@example.com", "42", "Ada Lovelace");
        let path = scratch.write_config(text);
        let config = sluice::config::Config::load(&path).unwrap();
        let server = TestServer::start_on_clock(config, Clock::starting_at(T0)).await;
        Self {
            slack,
            sentry,
            server,
            _scratch: scratch,
        }
    }

    /// Delivers an occurrence of issue `issue` of project `python` and returns the message
    /// Slack received for it.
    async fn alert(&self, issue: &str, n: usize) -> Received {
        // Counted before the delivery: the worker may post it before the answer is read.
        let before = self.posted().len();
        self.server
            .accept_event(issue, &event_id(n), "python", "production")
            .await;
        eventually(WAIT, "the alert is posted", || async {
            let posted = self.posted();
            (posted.len() > before).then(|| posted.last().cloned().unwrap())
        })
        .await
    }

    /// Every `chat.postMessage` Slack accepted.
    fn posted(&self) -> Vec<Received> {
        self.slack
            .accepted()
            .into_iter()
            .filter(|r| r.path == "api/chat.postMessage")
            .collect()
    }

    /// Every `chat.update` Slack received.
    fn updates(&self) -> Vec<Received> {
        self.slack
            .received()
            .into_iter()
            .filter(|r| r.path == "api/chat.update")
            .collect()
    }

    /// Waits for the `n`-th `chat.update`.
    async fn wait_update(&self, n: usize) -> Received {
        eventually(WAIT, "the message is updated", || async {
            self.updates().get(n - 1).cloned()
        })
        .await
    }

    /// Ada clicks the element `action_id` (choosing `option` in a menu) on `message`.
    async fn click(&self, message: &Received, action_id: &str, option: Option<&str>) -> StatusCode {
        let body = click_body(
            &self.slack,
            message,
            action_id,
            option,
            &format!("trigger-{action_id}"),
            ADA,
        );
        self.post_click(&body, SIGNING_SECRET, self.now_secs())
            .await
    }

    async fn post_click(&self, body: &str, secret: &str, timestamp: i64) -> StatusCode {
        let headers = slack_headers(body, secret, timestamp);
        post(
            &self.server.url("/slack/interactions"),
            &headers,
            body.as_bytes(),
        )
        .await
        .0
    }

    fn now_secs(&self) -> i64 {
        self.server.clock.now_ms() / 1000
    }

    /// Sentry's webhook `issue.<action>` about `issue`, with `extra` merged into its issue.
    async fn issue_notice(&self, issue: &str, action: &str, status: &str, extra: Value) {
        let mut issue_json = json!({
            "id": issue, "shortId": "PYTHON-1", "title": "ValueError: bad input",
            "culprit": "app.handler", "level": "error", "status": status,
            "project": {"id": "2", "slug": "python", "name": "python"},
            "permalink": format!("https://test-org.sentry.io/issues/{issue}/"),
            "count": "3", "firstSeen": "2025-11-21T10:00:00Z", "lastSeen": "2025-11-22T00:00:00Z",
            "statusDetails": {}, "assignedTo": null,
        });
        if let (Some(base), Some(more)) = (issue_json.as_object_mut(), extra.as_object()) {
            base.extend(more.clone());
        }
        let body = json!({
            "action": action,
            "installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},
            "data": {"issue": issue_json},
            "actor": {"type": "user", "id": 7, "name": "Grace Hopper"},
        });
        let (status, reply) = self
            .server
            .deliver("issue", &serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    }
}

/// Waits for Sentry's first request `method path` (`path` without the query) that got an
/// answer.
async fn wait_request(
    sentry: &FakeSentry,
    method: &str,
    path: &str,
    timeout: Duration,
) -> SentryRequest {
    eventually(timeout, &format!("{method} {path}"), || async {
        sentry
            .requests()
            .into_iter()
            .find(|r| r.method == method && r.path == path && r.status.is_some())
    })
    .await
}

/// Waits for the first reply to the click `trigger` (on its `response_url`).
async fn wait_response(slack: &FakeSlack, trigger: &str, timeout: Duration) -> Value {
    eventually(timeout, &format!("a reply to {trigger}"), || async {
        slack.responded(trigger).first().cloned()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn resolve_resolves_in_sentry_names_the_clicker_and_updates_the_message() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let message = rig.alert("1001", 1).await;
    assert_eq!(
        rig.click(&message, "sluice:resolve", None).await,
        StatusCode::OK
    );

    let put = wait_request(
        &rig.sentry,
        "PUT",
        "/api/0/organizations/test-org/issues/1001/",
        WAIT,
    )
    .await;
    assert_eq!(put.body, json!({"status": "resolved"}));
    assert_eq!(
        put.authorization.as_deref(),
        Some("Bearer sntrys-test-token")
    );
    let comment = wait_request(
        &rig.sentry,
        "POST",
        "/api/0/organizations/test-org/issues/1001/comments/",
        WAIT,
    )
    .await;
    assert!(
        comment.body["text"]
            .as_str()
            .unwrap()
            .contains("Ada Lovelace"),
        "{}",
        comment.body
    );

    let updated = rig.wait_update(1).await;
    assert_eq!(updated.body["ts"], message.ts.clone().unwrap());
    assert_eq!(updated.body["channel"], CHANNEL_ID);
    assert!(
        updated.text().contains("Resolved by Ada Lovelace"),
        "{}",
        updated.text()
    );
    // A resolved issue offers Unresolve, not Resolve.
    element(&updated, "sluice:unresolve");
    assert_eq!(rig.posted().len(), 1, "nothing new is posted");
    assert_eq!(
        rig.server
            .metric("sluice_slack_interactions_total{action=\"resolve\",outcome=\"done\"}")
            .await,
        Some(1.0)
    );
    rig.server.stop().await;
}

/// Unresolve, offered once resolved, reopens the issue in Sentry, and the message offers
/// Resolve again; the clicks on one issue are carried out in the order they came.
#[tokio::test(start_paused = true)]
async fn unresolve_reopens_what_was_resolved() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let message = rig.alert("1501", 1).await;
    assert_eq!(
        rig.click(&message, "sluice:resolve", None).await,
        StatusCode::OK
    );
    let mut resolved = rig.wait_update(1).await;
    // A rewritten message keeps its ts.
    resolved.ts = message.ts.clone();
    assert_eq!(
        rig.click(&resolved, "sluice:unresolve", None).await,
        StatusCode::OK
    );
    let issue = "/api/0/organizations/test-org/issues/1501/";
    let reopened = eventually(WAIT, "the issue is reopened", || async {
        rig.sentry
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.path == issue && r.status == Some(200))
            .nth(1)
    })
    .await;
    assert_eq!(reopened.body, json!({"status": "unresolved"}));
    let updated = eventually(WAIT, "the message offers Resolve again", || async {
        rig.updates()
            .into_iter()
            .skip(1)
            .find(|u| !u.text().contains("Resolved by"))
    })
    .await;
    element(&updated, "sluice:resolve");
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn archive_sends_each_choice_the_way_sentry_takes_it() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let cases = [
        (
            "escalating",
            json!({"status": "ignored", "substatus": "archived_until_escalating"}),
        ),
        (
            "minutes:60",
            json!({"status": "ignored", "statusDetails": {"ignoreDuration": 60}}),
        ),
        (
            "minutes:1440",
            json!({"status": "ignored", "statusDetails": {"ignoreDuration": 1440}}),
        ),
        (
            "minutes:10080",
            json!({"status": "ignored", "statusDetails": {"ignoreDuration": 10080}}),
        ),
        (
            "count:100",
            json!({"status": "ignored", "statusDetails": {"ignoreCount": 100}}),
        ),
    ];
    for (i, (choice, expected)) in cases.iter().enumerate() {
        let issue = format!("{}", 2001 + i);
        let message = rig.alert(&issue, 100 + i).await;
        let body = click_body(
            &rig.slack,
            &message,
            "sluice:archive",
            Some(choice),
            &format!("trigger-{i}"),
            ADA,
        );
        assert_eq!(
            rig.post_click(&body, SIGNING_SECRET, rig.now_secs()).await,
            StatusCode::OK
        );
        let put = wait_request(
            &rig.sentry,
            "PUT",
            &format!("/api/0/organizations/test-org/issues/{issue}/"),
            WAIT,
        )
        .await;
        assert_eq!(&put.body, expected, "{choice}");
    }
    let updated = rig.wait_update(1).await;
    assert!(
        updated.text().contains("Archived until escalating"),
        "{}",
        updated.text()
    );
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn assign_to_me_finds_the_clicker_in_sentry_by_email() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let message = rig.alert("3001", 1).await;
    assert_eq!(
        rig.click(&message, "sluice:assign", None).await,
        StatusCode::OK
    );
    let members = wait_request(
        &rig.sentry,
        "GET",
        "/api/0/organizations/test-org/members/",
        WAIT,
    )
    .await;
    assert_eq!(
        members.query.as_deref(),
        Some("query=email%3Aada%40example.com")
    );
    let put = wait_request(
        &rig.sentry,
        "PUT",
        "/api/0/organizations/test-org/issues/3001/",
        WAIT,
    )
    .await;
    assert_eq!(put.body, json!({"assignedTo": "user:42"}));
    let updated = rig.wait_update(1).await;
    assert!(updated.text().contains("Assigned to"), "{}", updated.text());

    // Someone Sentry does not know: told so, nothing assigned.
    rig.slack
        .add_user("U0BOB", "bob", "Bob", Some("bob@example.com"));
    let other = rig.alert("3002", 2).await;
    let body = click_body(
        &rig.slack,
        &other,
        "sluice:assign",
        None,
        "trigger-bob",
        ADA,
    )
    .replace(ADA, "U0BOB");
    assert_eq!(
        rig.post_click(&body, SIGNING_SECRET, rig.now_secs()).await,
        StatusCode::OK
    );
    let reply = wait_response(&rig.slack, "trigger-bob", WAIT).await;
    assert_eq!(reply["response_type"], "ephemeral");
    assert!(
        reply["text"].as_str().unwrap().contains("bob@example.com"),
        "{reply}"
    );
    assert!(rig.sentry.requests_to("/issues/3002/").is_empty());
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_signatures_get_401_malformed_bodies_400_and_nothing_is_done() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let message = rig.alert("4001", 1).await;
    let body = click_body(
        &rig.slack,
        &message,
        "sluice:resolve",
        None,
        "trigger-x",
        ADA,
    );
    let now = rig.now_secs();
    assert_eq!(
        rig.post_click(&body, "another-secret", now).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        rig.post_click(&body, SIGNING_SECRET, now - 301).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        rig.post_click(&body, SIGNING_SECRET, now + 301).await,
        StatusCode::UNAUTHORIZED
    );
    let unsigned = post(&rig.server.url("/slack/interactions"), &[], body.as_bytes())
        .await
        .0;
    assert_eq!(unsigned, StatusCode::UNAUTHORIZED);
    let junk = "payload=%7Bnot+json";
    assert_eq!(
        rig.post_click(junk, SIGNING_SECRET, now).await,
        StatusCode::BAD_REQUEST
    );
    // Just inside the window is fine.
    assert_eq!(
        rig.post_click(&body, SIGNING_SECRET, now - 299).await,
        StatusCode::OK
    );
    wait_request(
        &rig.sentry,
        "PUT",
        "/api/0/organizations/test-org/issues/4001/",
        WAIT,
    )
    .await;
    assert_eq!(
        rig.sentry.requests_to("/issues/4001/").len(),
        1,
        "only the signed click acted"
    );
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_click_that_arrives_twice_or_a_double_click_acts_once() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    // Sentry is slow to come: the clicks pile up while the first is pending.
    rig.sentry
        .fail("/api/0/organizations/test-org/issues/", Fault::ServerError);
    let message = rig.alert("5001", 1).await;
    let first = click_body(
        &rig.slack,
        &message,
        "sluice:resolve",
        None,
        "trigger-1",
        ADA,
    );
    let second = click_body(
        &rig.slack,
        &message,
        "sluice:resolve",
        None,
        "trigger-2",
        ADA,
    );
    for body in [&first, &first, &second] {
        assert_eq!(
            rig.post_click(body, SIGNING_SECRET, rig.now_secs()).await,
            StatusCode::OK
        );
    }
    rig.sentry.wait_requests(1, WAIT).await;
    rig.sentry.heal();
    rig.server.advance_and_settle(Duration::from_secs(60)).await;
    rig.wait_update(1).await;
    let resolved: Vec<_> = rig
        .sentry
        .requests_to("/issues/5001/")
        .into_iter()
        .filter(|r| r.method == "PUT" && r.status == Some(200))
        .collect();
    assert_eq!(resolved.len(), 1, "resolved once");
    assert_eq!(
        rig.sentry.requests_to("/issues/5001/comments/").len(),
        1,
        "one comment"
    );
    assert_eq!(
        rig.server
            .metric("sluice_slack_interactions_total{action=\"resolve\",outcome=\"repeat\"}")
            .await,
        Some(2.0)
    );
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sentry_down_then_back_the_click_goes_through_within_one_retry_interval() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    rig.sentry
        .fail("/api/0/organizations/test-org/issues/", Fault::ServerError);
    let message = rig.alert("6001", 1).await;
    assert_eq!(
        rig.click(&message, "sluice:resolve", None).await,
        StatusCode::OK
    );
    // The clicker hears that Sluice keeps trying.
    let reply = wait_response(&rig.slack, "trigger-sluice:resolve", WAIT).await;
    assert!(
        reply["text"].as_str().unwrap().contains("keeps trying"),
        "{reply}"
    );
    // Down for ten minutes: retried, never given up.
    for _ in 0..20 {
        rig.server.advance_and_settle(Duration::from_secs(30)).await;
    }
    let failed = rig.sentry.requests_to("/issues/6001/").len();
    assert!(failed >= 10, "retried while down: {failed}");
    rig.sentry.heal();
    let back = tokio::time::Instant::now();
    rig.server
        .advance_and_settle(sluice::interactions::RETRY_MAX)
        .await;
    let ok = rig
        .sentry
        .requests_to("/issues/6001/")
        .into_iter()
        .find(|r| r.method == "PUT" && r.status == Some(200))
        .expect("resolved once Sentry is back");
    assert!(ok.at - back <= sluice::interactions::RETRY_MAX);
    rig.wait_update(1).await;
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sentry_refusing_is_not_retried_and_the_clicker_is_told_why() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    rig.sentry
        .fail("/api/0/organizations/test-org/issues/", Fault::Forbidden);
    let message = rig.alert("7001", 1).await;
    assert_eq!(
        rig.click(&message, "sluice:resolve", None).await,
        StatusCode::OK
    );
    let reply = wait_response(&rig.slack, "trigger-sluice:resolve", WAIT).await;
    assert_eq!(reply["response_type"], "ephemeral");
    assert!(reply["text"].as_str().unwrap().contains("403"), "{reply}");
    rig.server
        .advance_and_settle(Duration::from_secs(600))
        .await;
    assert_eq!(
        rig.sentry.requests_to("/issues/7001/").len(),
        1,
        "not retried"
    );
    assert!(
        rig.updates().is_empty(),
        "the message still tells the truth: unchanged"
    );
    assert_eq!(
        rig.server
            .metric("sluice_slack_interactions_total{action=\"resolve\",outcome=\"refused\"}")
            .await,
        Some(1.0)
    );
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_click_on_a_message_sluice_did_not_post_gets_an_ephemeral_reply() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let mut message = rig.alert("8001", 1).await;
    message.ts = Some("1111111111.000001".into());
    assert_eq!(
        rig.click(&message, "sluice:resolve", None).await,
        StatusCode::OK
    );
    let reply = wait_response(&rig.slack, "trigger-sluice:resolve", WAIT).await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("not a Sluice action"),
        "{reply}"
    );
    assert!(rig.sentry.requests().is_empty());
    rig.server.stop().await;
}

/// Sentry says the issue changed (someone resolved it in Sentry): every message about it is
/// rewritten in place, nothing new is posted; then it regresses: a new message links the old.
async fn sentry_side_change_and_regression(rig: Rig) {
    let first = rig.alert("9001", 1).await;
    rig.issue_notice("9001", "resolved", "resolved", json!({}))
        .await;
    let updated = rig.wait_update(1).await;
    assert_eq!(updated.body["ts"], first.ts.clone().unwrap());
    assert!(
        updated.text().contains("Resolved by Grace Hopper"),
        "{}",
        updated.text()
    );
    element(&updated, "sluice:unresolve");
    assert_eq!(
        rig.posted().len(),
        1,
        "the notice updates, it does not post"
    );

    rig.issue_notice(
        "9001",
        "unresolved",
        "unresolved",
        json!({"substatus": "regressed"}),
    )
    .await;
    let regression = eventually(WAIT, "the regression is posted", || async {
        rig.posted().get(1).cloned()
    })
    .await;
    assert!(
        regression.text().contains("Regressed"),
        "{}",
        regression.text()
    );
    let old_ts = first.ts.clone().unwrap().replace('.', "");
    assert!(
        regression.body.to_string().contains(&format!(
            "https://slack.com/archives/{CHANNEL_ID}/p{old_ts}"
        )),
        "links the earlier message: {}",
        regression.body
    );
    element(&regression, "sluice:resolve");
    let reopened = rig.wait_update(2).await;
    element(&reopened, "sluice:resolve");
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_sentry_side_change_updates_the_message_and_a_regression_posts_anew_on_sqlite() {
    let _held = HeldTime::hold();
    sentry_side_change_and_regression(Rig::start("").await).await;
}

/// On real time: the leader's campaign on PostgreSQL polls its advisory lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentry_side_change_updates_the_message_and_a_regression_posts_anew_on_postgres() {
    let db = ScratchPostgres::new().await;
    sentry_side_change_and_regression(Rig::start_postgres(&db).await).await;
}

#[tokio::test(start_paused = true)]
async fn mute_here_holds_back_occurrences_and_says_how_many_when_it_ends() {
    let _held = HeldTime::hold();
    let rig = Rig::start("").await;
    let message = rig.alert("10001", 1).await;
    assert_eq!(
        rig.click(&message, "sluice:mute", Some("3600")).await,
        StatusCode::OK
    );
    let updated = rig.wait_update(1).await;
    assert!(updated.text().contains("Muted here"), "{}", updated.text());
    element(&updated, "sluice:unmute");
    assert!(rig.sentry.requests().is_empty(), "a mute is Sluice's own");
    for n in 2..=6 {
        rig.server
            .accept_event("10001", &event_id(n), "python", "production")
            .await;
    }
    rig.server
        .advance_and_settle(Duration::from_secs(1800))
        .await;
    assert_eq!(rig.posted().len(), 1, "muted: nothing posted");
    rig.server
        .advance_and_settle(Duration::from_secs(1800))
        .await;
    let ended = eventually(WAIT, "the mute's end is posted", || async {
        rig.posted().get(1).cloned()
    })
    .await;
    assert!(ended.text().contains("held back 5"), "{}", ended.text());
    // The message no longer says it is muted.
    let unmuted = eventually(WAIT, "the message drops its mute", || async {
        rig.updates()
            .into_iter()
            .rev()
            .find(|u| u.body["ts"] == message.ts.clone().unwrap().as_str())
            .filter(|u| !u.text().contains("Muted here"))
    })
    .await;
    element(&unmuted, "sluice:mute");
    rig.server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn comments_become_replies_in_the_issues_thread() {
    let _held = HeldTime::hold();
    // The route names an environment, which comments do not carry: they follow the issue.
    let rig = Rig::start("environment = \"production\"\ncomments = true\n").await;
    let first = rig.alert("11001", 1).await;
    let body = json!({
        "action": "created",
        "installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},
        "data": {"comment": "looking into it", "project_slug": "python", "comment_id": 1,
                 "issue_id": 11001, "timestamp": "2025-11-22T00:00:01Z"},
        "actor": {"type": "user", "id": 1, "name": "colleen"},
    });
    let (status, _) = rig
        .server
        .deliver("comment", &serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let reply = eventually(WAIT, "the comment is posted", || async {
        rig.posted().get(1).cloned()
    })
    .await;
    assert_eq!(reply.body["thread_ts"], first.ts.clone().unwrap());
    assert!(
        reply.body.to_string().contains("looking into it"),
        "{}",
        reply.body
    );
    rig.server.stop().await;
}

/// `kill -9` of the real process after it answered the click and while Sentry has not
/// answered it: the restarted process carries the click out, once; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_survives_kill_9_between_the_answer_and_sentry_and_acts_once() {
    let slack = FakeSlack::start().await;
    let sentry = FakeSentry::start().await;
    slack.add_user(ADA, "ada", "Ada Lovelace", Some("ada@example.com"));
    let scratch = Scratch::new();
    let text = two_way(config_text(&slack, &scratch.db(), ""), &sentry);
    let first = Process::start(&text, &scratch).await;
    let (status, reply) = first
        .deliver(
            "event_alert",
            &event_alert("12001", &event_id(1), "python", "production"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let message = eventually(WAIT, "the alert is posted", || async {
        slack
            .accepted()
            .into_iter()
            .find(|r| r.path == "api/chat.postMessage")
    })
    .await;
    // Sentry takes the request and never answers: the click is in flight when the process dies.
    sentry.fail("/api/0/organizations/test-org/issues/", Fault::Hang);
    let body = click_body(
        &slack,
        &message,
        "sluice:resolve",
        None,
        "trigger-kill",
        ADA,
    );
    let now = Clock::system().now_ms() / 1000;
    let headers = slack_headers(&body, SIGNING_SECRET, now);
    let (status, _) = post(&first.url("/slack/interactions"), &headers, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    sentry.wait_requests_to("/issues/12001/", 1, WAIT).await;
    first.kill9();

    sentry.heal();
    let second = Process::start(&text, &scratch).await;
    let comment = "/api/0/organizations/test-org/issues/12001/comments/";
    wait_request(&sentry, "POST", comment, WAIT).await;
    // Time for a second action or comment to show up, were there one.
    real_pause(Duration::from_secs(2)).await;
    let answered = |method: &str, path: &str| {
        sentry
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path && r.status == Some(200))
            .count()
    };
    assert_eq!(
        answered("PUT", "/api/0/organizations/test-org/issues/12001/"),
        1
    );
    assert_eq!(sentry.requests_to("comments/").len(), 1, "one comment");
    drop(second);
}
