//! Storm control end to end: cooldowns with follow-ups (threaded in Web API channels),
//! mutes and their "held back" message, spikes breaking through a cooldown, roll-ups of a
//! backlog, the per-channel rate limit, and the accounting invariant through a storm with 429s
//! and a `kill -9` in the middle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sluice::clock::Clock;

use crate::util::fake_slack::Received;
use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);

/// Where the test clocks start: 2025-11-22 00:00 UTC.
const T0: i64 = 1_763_769_600_000;

/// On the test's clock: the follow-up goes out exactly when the cooldown ends, one second
/// after the first occurrence, with the four repeats; nothing else follows.
#[tokio::test(start_paused = true)]
async fn repeats_within_the_cooldown_become_one_follow_up() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let extra = r#"
[channels.cool]
webhook_url = "{slack}/hooks/cool"

[[routes]]
name = "cool"
project = "cool"
channels = ["cool"]
cooldown = "1s"
"#;
    let clock = Clock::starting_at(T0);
    let server = TestServer::start_on_clock(scratch.config(&slack, extra), clock).await;
    let start = tokio::time::Instant::now();
    for i in 0..5 {
        server
            .accept_event("700", &event_id(0x700 + i), "cool", "production")
            .await;
    }
    let got = slack.wait_accepted(1, WAIT).await;
    assert!(got[0].text().contains("heck is not defined"));
    assert_eq!(got[0].at, start, "the first message goes out at once");
    // The clock stands still: the follow-up can only go when the test moves it past the
    // cooldown, and the fake stamps it with the test's time.
    tokio::time::advance(Duration::from_millis(999)).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    let got = slack.wait_accepted(2, WAIT).await;
    let follow = got[1].text();
    assert!(follow.starts_with("+4 since "), "{follow}");
    assert!(follow.contains("7d: 5 · 30d: 5"), "{follow}");
    assert_eq!(
        got[1].at - start,
        Duration::from_secs(1),
        "the follow-up goes when the cooldown ends, not before or after"
    );
    // An hour later nothing else has been posted, and every occurrence is accounted for.
    server.advance_and_settle(Duration::from_secs(3600)).await;
    assert_eq!(slack.received().len(), 2, "nothing else is posted");
    let totals = scratch.store().await.channel_totals("cool").await.unwrap();
    assert_eq!(
        (
            totals.occurrences_routed,
            totals.occurrences_posted,
            totals.occurrences_pending,
            totals.occurrences_muted
        ),
        (5, 5, 0, 0)
    );
    server.stop().await;
}

/// Three occurrences of one issue, 1 s cooldown, in a Web API channel whose `slack_channel`
/// is `slack_channel`: the first message at once, then, exactly when the cooldown ends, the
/// thread reply and the in-place update of the original; nothing else in the next hour.
/// Returns the three requests Slack received.
async fn threaded_follow_up(slack_channel: &str) -> Vec<Received> {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let extra = format!(
        r#"
[channels.threaded]
slack_channel = "{slack_channel}"

[[routes]]
name = "threaded"
project = "threaded"
channels = ["threaded"]
cooldown = "1s"
"#
    );
    let server =
        TestServer::start_on_clock(scratch.config(&slack, &extra), Clock::starting_at(T0)).await;
    let start = tokio::time::Instant::now();
    for i in 0..3 {
        let body = event_alert("800", &event_id(0x800 + i), "threaded", "production");
        assert_eq!(
            server.deliver("event_alert", &body).await.0,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(slack.wait_accepted(1, WAIT).await[0].at, start);
    tokio::time::advance(Duration::from_millis(999)).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    let got = slack.wait_accepted(3, WAIT).await;
    for reply in &got[1..] {
        assert_eq!(reply.at - start, Duration::from_secs(1), "{}", reply.path);
    }
    let refused: Vec<_> = slack
        .received()
        .into_iter()
        .filter(|r| r.reply != "Ok")
        .collect();
    assert!(refused.is_empty(), "Slack refused {refused:#?}");
    assert_eq!(got[0].path, "api/chat.postMessage");
    assert!(got[0].body.get("thread_ts").is_none());
    let root_ts = "1700000000.000001";
    assert_eq!(got[1].path, "api/chat.postMessage");
    assert_eq!(got[1].body["thread_ts"], root_ts, "{}", got[1].body);
    assert!(got[1].text().starts_with("+2 since "), "{}", got[1].text());
    assert_eq!(got[2].path, "api/chat.update");
    assert_eq!(got[2].body["ts"], root_ts);
    assert!(
        got[2].text().contains("7d: 3 · 30d: 3"),
        "{}",
        got[2].text()
    );
    server.advance_and_settle(Duration::from_secs(3600)).await;
    assert_eq!(slack.received().len(), 3, "nothing else is posted");
    server.stop().await;
    got
}

#[tokio::test(start_paused = true)]
async fn web_api_follow_ups_reply_in_thread_and_update_the_original() {
    let got = threaded_follow_up("C0THREAD").await;
    assert_eq!(got[1].body["channel"], "C0THREAD");
    assert_eq!(got[2].body["channel"], "C0THREAD");
}

/// `slack_channel` may name the channel, but Slack's `chat.update` accepts only an id: the
/// thread reply and the in-place update go to the id `chat.postMessage` answered.
#[tokio::test(start_paused = true)]
async fn a_channel_configured_by_name_has_its_original_updated_in_place() {
    let got = threaded_follow_up("alerts").await;
    let id = FakeSlack::channel_id("alerts");
    assert_eq!(got[0].body["channel"], "alerts");
    assert_eq!(got[1].body["channel"], id.as_str(), "{}", got[1].body);
    assert_eq!(got[2].body["channel"], id.as_str());
}

/// The accounting series of `channel` in `/metrics`: routed, posted, pending, dead, muted.
async fn accounting(server: &TestServer, channel: &str) -> [u64; 5] {
    let mut terms = [0; 5];
    let names = [
        "sluice_occurrences_routed_total",
        "sluice_occurrences_posted_total",
        "sluice_occurrences_pending",
        "sluice_occurrences_dead",
        "sluice_occurrences_muted",
    ];
    for (term, name) in terms.iter_mut().zip(names) {
        let series = format!("{name}{{channel=\"{channel}\"}}");
        let value = server.metric(&series).await;
        *term = value.unwrap_or_else(|| panic!("no {series}")) as u64;
    }
    let [routed, posted, pending, dead, muted] = terms;
    assert_eq!(routed, posted + pending + dead + muted, "{terms:?}");
    terms
}

/// On the test's clock: an issue muted in a channel (as `sluice mute` does it, through the
/// store) posts nothing for five occurrences, which `/metrics` shows as muted; exactly when
/// the mute ends, one message says it held back five; nothing else follows.
#[tokio::test(start_paused = true)]
async fn a_mute_holds_occurrences_and_says_how_many_when_it_ends() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let extra = r#"
[channels.muted]
webhook_url = "{slack}/hooks/muted"

[[routes]]
name = "muted"
project = "muted"
channels = ["muted"]
"#;
    let server =
        TestServer::start_on_clock(scratch.config(&slack, extra), Clock::starting_at(T0)).await;
    let start = tokio::time::Instant::now();
    let hour = Duration::from_secs(3600);
    let store = scratch.store().await;
    store
        .mute("1100", "muted", T0 + 3_600_000, Some("cli"), T0)
        .await
        .unwrap();
    for i in 0..5 {
        server
            .accept_event("1100", &event_id(0x1100 + i), "muted", "production")
            .await;
    }
    server
        .advance_and_settle(hour - Duration::from_secs(2))
        .await;
    assert!(slack.received().is_empty(), "a muted issue posts nothing");
    assert_eq!(accounting(&server, "muted").await, [5, 0, 0, 0, 5]);
    tokio::time::advance(Duration::from_secs(2)).await;
    let got = slack.wait_accepted(1, WAIT).await;
    let text = got[0].text();
    assert!(text.contains("Mute ended: held back 5 since"), "{text}");
    assert!(text.contains("7d: 5 · 30d: 5"), "{text}");
    assert_eq!(got[0].at - start, hour, "sent when the mute ends");
    server.advance_and_settle(hour).await;
    assert_eq!(slack.received().len(), 1, "nothing else is posted");
    assert_eq!(accounting(&server, "muted").await, [5, 5, 0, 0, 0]);
    assert!(store.mutes(T0 + 7_200_000).await.unwrap().is_empty());
    server.stop().await;
}

/// On the test's clock, cooldown 30 min and the default thresholds: of 12 occurrences the
/// first is posted, the 11th (the 10th within the cooldown) posts a spike carrying ten, and
/// the last waits for the end of the cooldown; `/metrics` accounts for each at every step.
#[tokio::test(start_paused = true)]
async fn a_spike_breaks_through_the_cooldown() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let extra = r#"
[channels.spiky]
webhook_url = "{slack}/hooks/spiky"

[[routes]]
name = "spiky"
project = "spiky"
channels = ["spiky"]
cooldown = "30m"
"#;
    let server =
        TestServer::start_on_clock(scratch.config(&slack, extra), Clock::starting_at(T0)).await;
    for i in 0..12 {
        server
            .accept_event("1200", &event_id(0x1200 + i), "spiky", "production")
            .await;
    }
    let got = slack.wait_accepted(2, WAIT).await;
    assert!(got[0].text().contains("heck is not defined"));
    let spike = got[1].text();
    assert!(
        spike.contains("Spike: 10 events in the cooldown · +10 since"),
        "{spike}"
    );
    server.advance_and_settle(Duration::from_secs(2)).await;
    assert_eq!(slack.received().len(), 2);
    assert_eq!(accounting(&server, "spiky").await, [12, 11, 1, 0, 0]);
    // The cooldown's own follow-up carries only what was folded after the spike.
    server.advance_and_settle(Duration::from_secs(1800)).await;
    let got = slack.wait_accepted(3, WAIT).await;
    assert!(got[2].text().starts_with("+1 since "), "{}", got[2].text());
    assert_eq!(accounting(&server, "spiky").await, [12, 12, 0, 0, 0]);
    server.stop().await;
}

/// On the test's clock: while Slack's `Retry-After` holds the channel, the backlog builds up
/// past `max_backlog` and is rolled up; when the hold ends (exactly `Retry-After` plus its
/// jitter after the 429) the roll-up goes out first, with whatever queued after it.
#[tokio::test(start_paused = true)]
async fn a_backlog_past_max_backlog_is_rolled_up_into_one_summary() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    // The first send is rate limited for 2 s: meanwhile the backlog builds up.
    slack.script([Reply::RateLimited {
        retry_after_secs: 2,
    }]);
    let scratch = Scratch::new();
    let extra = r#"
[channels.busy]
webhook_url = "{slack}/hooks/busy"
max_backlog = 3

[[routes]]
name = "busy"
project = "busy"
channels = ["busy"]
mention = "<!subteam^SBUSY>"
"#;
    let server =
        TestServer::start_on_clock(scratch.config(&slack, extra), Clock::starting_at(T0)).await;
    let start = tokio::time::Instant::now();
    server
        .accept_event("900", &event_id(0x900), "busy", "production")
        .await;
    let limited = slack.wait_received(1, WAIT).await;
    assert_eq!(limited[0].at, start);
    for i in 1..10 {
        server
            .accept_event(
                &format!("9{i:02}"),
                &event_id(0x900 + i),
                "busy",
                "production",
            )
            .await;
    }
    // Storm control keeps the held channel's backlog at most `max_backlog` long.
    let store = scratch.store().await;
    eventually(WAIT, "the backlog rolled up", || async {
        let depths = store.outbox_depths().await.unwrap();
        let depth = depths.iter().find(|(c, _)| c == "busy").map_or(0, |d| d.1);
        (depth <= 3).then_some(())
    })
    .await;
    // The channel is held until Retry-After (2 s) plus up to 10 % of jitter, plus 1 ms.
    let held = store
        .next_due_at()
        .await
        .unwrap()
        .expect("the channel is held")
        - T0;
    assert!((2001..=2201).contains(&held), "held for {held} ms");
    let held = Duration::from_millis(held as u64);
    server
        .advance_and_settle(held - Duration::from_millis(1))
        .await;
    assert_eq!(
        slack.received().len(),
        1,
        "sent while Slack's Retry-After held the channel"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    wait_drained(&*store, "busy", WAIT).await;
    let accepted = slack.accepted();
    for message in &accepted {
        assert_eq!(message.at - start, held, "sent when the hold ended");
    }
    // The roll-up takes the place of the oldest message it replaced: it goes out first.
    let text = accepted[0].text();
    // The backlog (more than 3 waiting) went out as one summary; a message queued after the
    // last roll-up, when the backlog was short again, may follow on its own.
    let rolled = text
        .split_once(" issues, ")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("not a roll-up: {text}"));
    assert!(rolled >= 4, "{text}");
    assert!(
        text.contains(&format!("{rolled} issues, {rolled} events in the last")),
        "{text}"
    );
    assert!(
        text.starts_with("<!subteam^SBUSY>"),
        "the mention is kept: {text}"
    );
    assert_eq!(text.matches("• ").count(), rolled, "{text}");
    assert!(
        accepted.len() <= 1 + (10 - rolled),
        "{} messages",
        accepted.len()
    );
    assert!(accepted.len() < 10, "storm control did not fold anything");
    let totals = store.channel_totals("busy").await.unwrap();
    assert!(totals.messages_rolled_up >= rolled as u64);
    assert_eq!(
        (totals.occurrences_posted, totals.occurrences_routed),
        (10, 10)
    );
    server.advance_and_settle(Duration::from_secs(3600)).await;
    assert_eq!(
        slack.received().len(),
        1 + accepted.len(),
        "nothing else is posted"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_storm_with_429s_and_a_kill_9_keeps_every_occurrence_accounted_for() {
    const EVENTS: usize = 2_000;
    const ISSUES: usize = 40;
    let slack = FakeSlack::start().await;
    slack.rate_limit_every(7, 1);
    let scratch = Scratch::new();
    let text = config_text(&slack, &scratch.db(), STORM_CHANNEL);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..EVENTS)
            .map(|i| {
                event_alert(
                    &format!("{}", 50_000 + i % ISSUES),
                    &event_id(0x5_0000 + i),
                    "storm",
                    "production",
                )
            })
            .collect(),
    );
    // Half the storm into one process, killed with -9 mid-storm; the rest into its successor.
    let mut acknowledged = 0;
    for half in [0..EVENTS / 2, EVENTS / 2..EVENTS] {
        let process = Process::start(&text, &scratch).await;
        let addr = process.addr;
        let mut tasks = Vec::new();
        for chunk in half.collect::<Vec<_>>().chunks(EVENTS / 2 / 16) {
            let (bodies, chunk) = (bodies.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in chunk {
                    let url = format!("http://{addr}/sentry/webhook");
                    let (status, _) = post_signed(&url, "event_alert", &bodies[i], SECRET).await;
                    assert_eq!(status, StatusCode::ACCEPTED);
                    ok += 1;
                }
                ok
            }));
        }
        for t in tasks {
            acknowledged += t.await.unwrap();
        }
        process.kill9();
    }
    assert_eq!(acknowledged, EVENTS);
    assert!(!slack.received().is_empty());

    // A final process drains everything, with nothing more arriving.
    let last = Process::start(&text, &scratch).await;
    let store = scratch.store().await;
    let totals = wait_drained(&*store, "storm", Duration::from_secs(60)).await;
    // Every acknowledged occurrence is accounted for, exactly.
    assert_eq!(totals.occurrences_routed, EVENTS as u64);
    assert_eq!(totals.occurrences_dead, 0, "{totals:?}");
    assert_eq!(totals.occurrences_posted, EVENTS as u64, "{totals:?}");
    // Storm control kept the channel readable.
    let received = slack.received();
    let storm: Vec<_> = received
        .iter()
        .filter(|r| r.path == "hooks/storm")
        .collect();
    assert!(
        storm.len() < EVENTS / 5,
        "{} requests for {EVENTS} events",
        storm.len()
    );
    assert!(
        totals.occurrences_folded > 0 && totals.messages_rolled_up > 0,
        "{totals:?}"
    );
    // Never above the channel's rate: GCRA allows `burst` at once, then 10/s. Within any
    // window of 1 s that is at most 3 + 10, one more for edges measured at the receiver.
    let max = max_in_window(&received, "hooks/storm", Duration::from_secs(1));
    assert!(max <= 14, "{max} requests within one second");
    // /metrics shows the same terms.
    let metrics = reqwest::get(format!("http://{}/metrics", last.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: HashMap<&str, &str> = metrics
        .lines()
        .filter(|l| l.contains("channel=\"storm\""))
        .filter_map(|l| l.split_once("{channel=\"storm\"} "))
        .collect();
    assert_eq!(
        series["sluice_occurrences_routed_total"],
        EVENTS.to_string()
    );
    assert_eq!(
        series["sluice_occurrences_posted_total"],
        EVENTS.to_string()
    );
    assert_eq!(series["sluice_occurrences_pending"], "0");
    assert_eq!(series["sluice_occurrences_dead"], "0");
    assert_eq!(series["sluice_occurrences_muted"], "0");
    last.kill9();
}
