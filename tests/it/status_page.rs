//! The status page (`GET /`, `/ui/…`) as a person sees it: loaded in headless Chromium from a
//! running Sluice with data in it (a channel with messages pending, a dead letter, a hostile
//! title), behind its token; and the same answers over plain HTTP for what a browser hides
//! (status codes, headers, the page turned off).
//!
//! Chromium is Debian's `chromium` package, which `.ci/run` installs when it is missing. Without
//! it the browser tests fail and say what to install; they never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use scraper::{Html, Selector};
use sluice::testing::ScratchPostgres;

use crate::util::fake_slack::FakeSlack;
use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "status-token-7d1f";
/// A title that would run if the page put Sentry's text in unescaped.
const HOSTILE: &str = "<script>document.title='pwned'</script><b>bold</b> & more";

/// Channels for the page: `slow` sends one message an hour (so two of three wait), `gone` is
/// refused by Slack for good.
const EXTRA: &str = r#"
[channels.slow]
webhook_url = "{slack}/hooks/slow"
rate = "1/h"
burst = 1

[channels.gone]
webhook_url = "{slack}/hooks/gone"

[[routes]]
name = "slow service"
project = "slow"
channels = ["slow"]

[[routes]]
name = "gone service"
project = "gone"
channels = ["gone"]
"#;

/// The installed Chromium, or a failure that says how to install it.
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "the status page's browser tests need Chromium: install Debian's `chromium` package \
         (`apt-get install chromium`; .ci/run does it when it is missing)"
    );
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each time: no cookie is kept
/// from one call to the next) and returns its standard output.
fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The DOM of `url` once Chromium has loaded it (and run any script it would run), as HTML.
fn dom(url: &str) -> String {
    headless(url, &["--dump-dom"])
}

/// The text a person reads in the elements `selector` picks, whitespace collapsed.
fn texts(doc: &Html, selector: &str) -> Vec<String> {
    let sel = Selector::parse(selector).unwrap();
    doc.select(&sel)
        .map(|e| e.text().collect::<String>())
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A Sentry event alert of `project` whose issue is titled `title`.
fn titled_event(issue: &str, n: usize, project: &str, title: &str) -> Vec<u8> {
    let template = fixture_json("event_alert.triggered.json");
    let mut v = event_alert_json(&template, issue, &event_id(n), project, "production");
    v["data"]["event"]["title"] = title.into();
    v["data"]["event"]["metadata"]["value"] = title.into();
    serde_json::to_vec(&v).unwrap()
}

/// A running Sluice with a token on its page, three messages for `slow` (one posted, two
/// pending), one dead letter in `gone`, and a delivery with a hostile title.
async fn sluice_with_data(slack: &FakeSlack, scratch: &Scratch) -> TestServer {
    slack.refuse("hooks/gone", "channel_not_found");
    let text = config_text(slack, &scratch.db(), EXTRA).replacen(
        "[server]\n",
        &format!("[server]\nstatus_token = \"{TOKEN}\"\n"),
        1,
    );
    let config = sluice::config::Config::load(&scratch.write_config(&text)).unwrap();
    let server = TestServer::start(config).await;
    for (i, issue) in ["901", "902", "903"].into_iter().enumerate() {
        server
            .accept_event(issue, &event_id(0x900 + i), "slow", "production")
            .await;
    }
    let body = titled_event("904", 0x904, "gone", HOSTILE);
    assert_eq!(
        server.deliver("event_alert", &body).await.0,
        StatusCode::ACCEPTED
    );
    let store = scratch.store().await;
    eventually(WAIT, "the refused message is dead-lettered", || async {
        let dead = store.channel_totals("gone").await.unwrap().messages_dead;
        (dead == 1).then_some(())
    })
    .await;
    slack.wait_until_path("hooks/slow", 1, WAIT).await;
    server
}

#[tokio::test]
async fn a_browser_sees_pending_counts_dead_letters_and_escaped_titles_behind_the_token() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = sluice_with_data(&slack, &scratch).await;

    // Without the token: the wall, and nothing of the page.
    let url = server.url("/");
    let wall = tokio::task::spawn_blocking(move || dom(&url))
        .await
        .unwrap();
    let wall = Html::parse_document(&wall);
    assert_eq!(texts(&wall, "#token-wall").len(), 1, "{}", wall.html());
    assert!(texts(&wall, "tr[data-channel]").is_empty());
    assert!(!wall.html().contains("channel_not_found"));

    // With it once: the page (Chromium follows the redirect that sets the cookie).
    let url = server.url(&format!("/?token={TOKEN}"));
    let (page, screenshot) = tokio::task::spawn_blocking(move || {
        // `SLUICE_STATUS_SCREENSHOT=$PWD/docs/status-page.png` keeps it: how the screenshot in
        // docs/operations.md is made.
        let shot = std::env::var_os("SLUICE_STATUS_SCREENSHOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("sluice-status-{}.png", std::process::id()))
            });
        headless(
            &url,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1400,1100",
            ],
        );
        (dom(&url), shot)
    })
    .await
    .unwrap();
    let page = Html::parse_document(&page);
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "Chromium took a screenshot of the page"
    );
    if std::env::var_os("SLUICE_STATUS_SCREENSHOT").is_none() {
        let _ = std::fs::remove_file(&screenshot);
    }
    assert!(texts(&page, "#token-wall").is_empty(), "{}", page.html());
    assert_eq!(
        texts(&page, "tr[data-channel='slow'] td.pending"),
        ["2"],
        "two of slow's three messages wait for its rate"
    );
    assert_eq!(
        texts(&page, "tr.dead-letter td.error"),
        ["channel_not_found"]
    );
    // The hostile title is text on the page, and it never ran.
    assert!(
        texts(&page, "tr.delivery .title")
            .iter()
            .any(|t| t.contains("<script>document.title='pwned'</script><b>bold</b> & more")),
        "{:?}",
        texts(&page, "tr.delivery .title")
    );
    assert_eq!(texts(&page, "title"), ["Status · Sluice"]);
    assert!(
        texts(&page, "td b").is_empty(),
        "no markup from Sentry is rendered"
    );
    // Each delivery says where it went: slow's first posted, the others pending.
    let routes = texts(&page, "tr.delivery ul.routes li");
    assert_eq!(
        routes.iter().filter(|r| r.contains("pending")).count(),
        2,
        "{routes:?}"
    );
    assert_eq!(
        routes.iter().filter(|r| r.contains("posted")).count(),
        1,
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("gone (route gone service): dead: channel_not_found")),
        "{routes:?}"
    );
    // No secret anywhere.
    let html = page.html();
    for secret in [TOKEN, "xoxb-test-token", &slack.webhook_url("gone"), SECRET] {
        assert!(!html.contains(secret), "the page shows a secret: {secret}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_token_is_asked_for_and_the_page_can_be_turned_off() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = sluice_with_data(&slack, &scratch).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| client.get(server.url(path)).send();

    let wall = get("/ui/dead-letters").await.unwrap();
    assert_eq!(wall.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wall.headers()["cache-control"], "no-store");
    let wrong = get("/?token=nope").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("not the one configured")
    );

    // The login: a redirect to the same page without the token, with the session cookie.
    let login = get(&format!("/ui/dead-letters?channel=gone&token={TOKEN}"))
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/ui/dead-letters?channel=gone");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie does not hold the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = client
        .get(server.url("/ui/dead-letters?channel=gone"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(page.text().await.unwrap().contains("channel_not_found"));
    let bearer = client
        .get(server.url("/ui/channels"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    server.stop().await;

    // `status_page = false`: no page at all, the webhooks unchanged.
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let text = config_text(&slack, &scratch.db(), "").replacen(
        "[server]\n",
        "[server]\nstatus_page = false\n",
        1,
    );
    let config = sluice::config::Config::load(&scratch.write_config(&text)).unwrap();
    let off = TestServer::start(config).await;
    for path in ["/", "/ui/channels", "/ui/deliveries"] {
        let res = reqwest::get(off.url(path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    off.accept_event("1", &event_id(1), "python", "production")
        .await;
    off.stop().await;
}

#[tokio::test]
async fn deliveries_are_paged_without_overlap_on_sqlite() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    pages_without_overlap(TestServer::start(scratch.config(&slack, "")).await).await;
}

#[tokio::test]
async fn deliveries_are_paged_without_overlap_on_postgres() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let db = ScratchPostgres::new().await;
    let path = scratch.write_config(&config_text_postgres(&slack, db.url(), ""));
    let config = sluice::config::Config::load(&path).unwrap();
    pages_without_overlap(TestServer::start(config).await).await;
}

/// `PAGE_ROWS + 5` deliveries: the first page shows the newest `PAGE_ROWS` and links to the
/// second, which shows the other 5; a malformed cursor is refused.
async fn pages_without_overlap(server: TestServer) {
    let total = sluice::status::PAGE_ROWS as usize + 5;
    for n in 0..total {
        server
            .accept_event(
                &format!("{}", 5000 + n),
                &event_id(0x5000 + n),
                "python",
                "production",
            )
            .await;
    }
    let first = reqwest::get(server.url("/ui/deliveries"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = Html::parse_document(&first);
    let rows = texts(&doc, "tr.delivery");
    assert_eq!(rows.len(), sluice::status::PAGE_ROWS as usize);
    let next = Selector::parse("a[href^='/ui/deliveries?before=']").unwrap();
    let href = doc
        .select(&next)
        .next()
        .expect("a link to older deliveries")
        .attr("href")
        .unwrap()
        .to_string();
    let second = reqwest::get(server.url(&href))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc2 = Html::parse_document(&second);
    let older = texts(&doc2, "tr.delivery");
    assert_eq!(older.len(), 5);
    let issues = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                r.split("issue ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (a, b) = (issues(&rows), issues(&older));
    assert!(
        a.iter().all(|i| !b.contains(i)),
        "pages overlap: {a:?} {b:?}"
    );
    let mut all: Vec<String> = a.into_iter().chain(b).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "every delivery is on one page");
    assert_eq!(
        reqwest::get(server.url("/ui/deliveries?before=junk"))
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}
