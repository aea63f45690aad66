//! The HTTP server's limits (`[server]`): header, body, idle and request timeouts, the body
//! size limit (refused as soon as a declared `Content-Length` is over it), the caps on
//! connections and concurrent webhooks, and `Sentry-Hook-Error` on every refusal.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sluice::clock::Clock;
use sluice::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

/// Bound on every wait for something the server should do within (much) less.
const WAIT: Duration = Duration::from_secs(10);

/// The standard test config with `keys` added to its `[server]` table (replacing the
/// standard config's own value of a key they set).
fn config_with_server(slack: &FakeSlack, scratch: &Scratch, keys: &str) -> Config {
    let set: Vec<&str> = keys
        .lines()
        .filter_map(|l| l.split('=').next())
        .map(str::trim)
        .collect();
    let text: String = config_text(slack, &scratch.db(), "")
        .lines()
        .filter(|l| !l.split('=').next().is_some_and(|k| set.contains(&k.trim())))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replace(
        "max_body_bytes = 65536\n",
        &format!("max_body_bytes = 65536\n{keys}\n"),
    );
    let path = scratch.write_config(&text);
    Config::load(&path).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one answer (head and `Content-Length` body) from `stream`, within [`WAIT`] of real
/// time.
async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin)) -> Raw {
    within(WAIT, "an answer", async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before an answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed in the answer's body");
            buf.extend_from_slice(&chunk[..n]);
        }
        Raw {
            status: status.parse().unwrap(),
            headers,
            body: String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
        }
    })
    .await
}

/// Waits (within [`WAIT`] of real time) until the server closes `stream`; returns what it
/// sent before.
async fn wait_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    within(WAIT, "the server closes the connection", async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// Reads the `100 Continue` a request with `Expect: 100-continue` gets once its handler
/// starts reading the body: the server has taken the request in hand (its turn, and the
/// start of its `request_timeout`) and waits for body bytes (its `body_timeout`).
async fn read_continue(stream: &mut (impl AsyncReadExt + Unpin)) {
    let interim = read_answer(stream).await;
    assert_eq!(interim.status, 100, "{interim:?}");
}

/// The head of a `POST /sentry/webhook` of `event_alert` declaring `length` body bytes.
fn webhook_head(length: usize) -> String {
    format!(
        "POST /sentry/webhook HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n\
         Sentry-Hook-Resource: event_alert\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// [`webhook_head`] asking for `100 Continue` before the body.
fn webhook_head_expecting_continue(length: usize) -> String {
    webhook_head(length).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n")
}

/// Where the test clocks start: 2025-11-22 00:00 UTC.
const T0: i64 = 1_763_769_600_000;
const MS: Duration = Duration::from_millis(1);

/// [`config_with_server`] served on the test's (held) clock.
async fn server_on_held_clock(slack: &FakeSlack, scratch: &Scratch, keys: &str) -> TestServer {
    let config = config_with_server(slack, scratch, keys);
    TestServer::start_on_clock(config, Clock::starting_at(T0)).await
}

/// Opens `n` connections that the server has accepted and started serving, all at the
/// current time on its clock (a request on a later connection, answered, shows that the
/// accept loop and the connections' tasks got to them first).
async fn open_connections(server: &TestServer, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(TcpStream::connect(server.addr).await.unwrap());
    }
    server.metric("sluice_http_connections").await;
    conns
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n";

/// Sends `req` and returns the status, the headers and the body (JSON when it is).
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let resp = req.send().await.expect("request to sluice");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A client (after installing the TLS crypto provider reqwest is built with).
fn client() -> reqwest::Client {
    sluice::slack::transport::install_crypto_provider();
    reqwest::Client::new()
}

/// `req` as Sentry signs it: resource, timestamp and signature of `body` under `secret`.
fn signed(url: &str, resource: &str, body: &[u8], secret: &str) -> reqwest::RequestBuilder {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    client()
        .post(url)
        .header("content-type", "application/json")
        .header("sentry-hook-resource", resource)
        .header("sentry-hook-timestamp", now.to_string())
        .header(
            "sentry-hook-signature",
            sluice::sentry::sign(body, secret.as_bytes()),
        )
        .body(body.to_vec())
}

/// On the test's clock: a connection whose first head is not complete `header_timeout`
/// (300 ms) after it opened is cut off then, though it trickles a byte every 100 ms; a twin
/// connection whose head completes 1 ms before is answered.
#[tokio::test(start_paused = true)]
async fn a_head_sent_one_byte_at_a_time_is_cut_off_after_the_header_timeout() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = server_on_held_clock(&slack, &scratch, "header_timeout = \"300ms\"").await;
    let mut conns = open_connections(&server, 2).await;
    let (mut cut, mut twin) = (conns.remove(0), conns.remove(0));
    // A byte at 0, 100 and 200 ms on both.
    for (i, byte) in HEALTHZ[..3].iter().enumerate() {
        if i > 0 {
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        cut.write_all(&[*byte]).await.unwrap();
        twin.write_all(&[*byte]).await.unwrap();
    }
    tokio::time::advance(Duration::from_millis(99)).await;
    twin.write_all(&HEALTHZ[3..]).await.unwrap();
    let answer = read_answer(&mut twin).await;
    assert_eq!(answer.status, 200, "a head complete at 299 ms is answered");
    tokio::time::advance(MS).await;
    let got = wait_closed(&mut cut).await;
    assert!(
        got.is_empty(),
        "the head was answered instead of cut off: {}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        server
            .metric("sluice_http_connections_closed_total{reason=\"header_timeout\"}")
            .await,
        Some(1.0)
    );
    server.stop().await;
}

/// On the test's clock: a kept-alive connection idle past the header timeout (300 ms) is
/// still served, and so it is 1 ms before the idle timeout (3 s); idle for the whole idle
/// timeout, it is closed.
#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_outlives_the_header_timeout_but_not_the_idle_timeout() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let keys = "header_timeout = \"300ms\"\nidle_timeout = \"3s\"";
    let server = server_on_held_clock(&slack, &scratch, keys).await;
    let idle = Duration::from_secs(3);
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_answer(&mut conn).await.status, 200);
    // Idle past the header timeout, well within the idle timeout: still served.
    tokio::time::advance(Duration::from_secs(1)).await;
    conn.write_all(HEALTHZ).await.unwrap();
    let second = read_answer(&mut conn).await;
    assert_eq!((second.status, second.body.as_str()), (200, "ok"));
    // Idle 1 ms short of the idle timeout: still served.
    tokio::time::advance(idle - MS).await;
    conn.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_answer(&mut conn).await.status, 200);
    // Then idle for the idle timeout: closed.
    tokio::time::advance(idle).await;
    assert!(wait_closed(&mut conn).await.is_empty());
    assert_eq!(
        server
            .metric("sluice_http_connections_closed_total{reason=\"idle_timeout\"}")
            .await,
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_before_any_body_is_sent() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    // 10 MiB declared against the test config's 64 KiB, and no body at all.
    conn.write_all(webhook_head(10 << 20).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut conn).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let reason = answer
        .header("sentry-hook-error")
        .expect("Sentry-Hook-Error");
    assert!(
        reason.contains("server.max_body_bytes (65536 bytes)"),
        "{reason}"
    );
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], reason);
    assert_eq!(
        server
            .metric("sluice_webhooks_total{resource=\"event_alert\",outcome=\"too_large\"}")
            .await,
        Some(1.0)
    );
    // The operator hears of it in ops_channel (default_channel, `errors`).
    slack.wait_until_path("hooks/errors", 1, WAIT).await;
    let notice = slack
        .received()
        .into_iter()
        .find(|r| r.path == "hooks/errors")
        .unwrap();
    assert!(
        notice.text().contains("10485760 bytes"),
        "{}",
        notice.text()
    );
    assert!(
        notice.text().contains("server.max_body_bytes"),
        "{}",
        notice.text()
    );
    server.stop().await;
}

/// `value` serialised as Sentry sends it: ASCII only, every other character a `\uXXXX`
/// escape (astral ones as a surrogate pair), as Python's `json.dumps` does by default.
fn ascii_json(value: &Value) -> Vec<u8> {
    let text = serde_json::to_string(value).unwrap();
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(out, "\\u{unit:04x}").unwrap();
            }
        }
    }
    out.into_bytes()
}

#[tokio::test]
async fn an_event_of_escaped_non_ascii_text_over_1_mib_is_accepted_by_default() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    // The default limit: the test config's 64 KiB taken out.
    let text = config_text(&slack, &scratch.db(), "").replace("max_body_bytes = 65536\n", "");
    let config = Config::load(&scratch.write_config(&text)).unwrap();
    assert_eq!(config.server.max_body_bytes, 8 << 20);
    let server = TestServer::start(config).await;

    let event_id = event_id(0x1a7);
    let mut event: Value =
        serde_json::from_slice(&event_alert("7001", &event_id, "front-end", "production")).unwrap();
    event["data"]["event"]["title"] = "数据库连接失败 😀 café".into();
    // About 0.7 MB of UTF-8 (CJK, emoji, accents) that Sentry sends as about 1.4 MB.
    event["data"]["event"]["extra"] =
        serde_json::json!({ "log": "数据库连接失败 😀 café ".repeat(22_000) });
    let body = ascii_json(&event);
    assert!(body.is_ascii());
    assert!(body.len() > 1_400_000, "{} bytes", body.len());

    let (status, headers, reply) = send(signed(
        &server.url("/sentry/webhook"),
        "event_alert",
        &body,
        SECRET,
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply} {headers:?}");
    let got = slack.wait_accepted(1, WAIT).await;
    assert!(
        got[0].text().contains("数据库连接失败 😀 café"),
        "{}",
        got[0].text()
    );
    server.stop().await;
}

#[tokio::test]
async fn every_refusal_of_a_webhook_carries_sentry_hook_error() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server = TestServer::start(scratch.config(&slack, "")).await;
    let webhook = server.url("/sentry/webhook");
    let event = event_alert("7002", &event_id(0x7002), "front-end", "production");
    let client = client();

    let mut refusals = vec![
        (
            "wrong signature",
            send(signed(&webhook, "event_alert", &event, "not-the-secret")).await,
        ),
        (
            "no signature",
            send(client.post(&webhook).body(event.clone())).await,
        ),
        (
            "not JSON",
            send(signed(&webhook, "event_alert", b"{not json", SECRET)).await,
        ),
        (
            "declared too large",
            send(signed(&webhook, "event_alert", &vec![b' '; 70_000], SECRET)).await,
        ),
        ("GET", send(client.get(&webhook)).await),
        (
            "legacy, wrong token",
            send(
                client
                    .post(server.url("/sentry/legacy?token=wrong"))
                    .body(event.clone()),
            )
            .await,
        ),
    ];
    // A chunked body (no Content-Length) over the limit, refused once it has read too much.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let head = webhook_head(0).replace("Content-Length: 0", "Transfer-Encoding: chunked");
    let chunk = vec![b' '; 70_000];
    let mut request = head.into_bytes();
    request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    request.extend_from_slice(&chunk);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let _ = conn.write_all(&request).await;
    let chunked = read_answer(&mut conn).await;
    assert_eq!(chunked.status, 413, "{chunked:?}");
    let mut chunked_headers = HeaderMap::new();
    for (k, v) in &chunked.headers {
        chunked_headers.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    refusals.push((
        "chunked too large",
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            chunked_headers,
            serde_json::from_str(&chunked.body).unwrap(),
        ),
    ));

    let statuses: Vec<u16> = refusals.iter().map(|(_, (s, _, _))| s.as_u16()).collect();
    assert_eq!(statuses, [401, 401, 400, 413, 405, 401, 413]);
    for (what, (status, headers, body)) in &refusals {
        let reason = headers
            .get("sentry-hook-error")
            .unwrap_or_else(|| panic!("{what} ({status}): no Sentry-Hook-Error in {headers:?}"))
            .to_str()
            .unwrap();
        assert!(!reason.is_empty(), "{what}");
        for secret in [SECRET, ROTATED_SECRET, LEGACY_TOKEN] {
            assert!(!reason.contains(secret), "{what}: {reason}");
        }
        assert_eq!(body["error"], reason, "{what}: the body says the same");
    }
    server.stop().await;

    // 503: a store that cannot commit.
    let store = sluice::store::SqliteStore::open(
        &format!("sqlite://{}", scratch.db().display()),
        sluice::storm::planner(),
    )
    .await
    .unwrap();
    store.close().await;
    let state =
        sluice::state::AppState::new(std::sync::Arc::new(store), scratch.config(&slack, ""));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, sluice::server::app(state))
            .await
            .unwrap();
    });
    let (status, headers, _) = send(signed(
        &format!("http://{addr}/sentry/webhook"),
        "event_alert",
        &event,
        SECRET,
    ))
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers["sentry-hook-error"],
        "store unavailable: the delivery was not stored"
    );
}

/// On the test's clock: a webhook whose body stalls holds the only turn until
/// `body_timeout` (1 s) has passed, then gets 408, and the delivery waiting for the turn is
/// served.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_gets_408_and_holds_the_only_turn_until_then() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let keys = "max_concurrent_requests = 1\nbody_timeout = \"1s\"";
    let server = server_on_held_clock(&slack, &scratch, keys).await;
    // A: declares 100 bytes and sends none; once it has its 100 Continue, it has the turn.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(webhook_head_expecting_continue(100).as_bytes())
        .await
        .unwrap();
    read_continue(&mut stalled).await;
    // B: a good delivery, which must wait for A's turn.
    let body = event_alert("7003", &event_id(0x7003), "front-end", "production");
    let url = server.url("/sentry/webhook");
    let now = server.clock.now_ms() / 1000;
    let mut waiting = tokio::spawn(async move {
        try_post_signed_at(&url, "event_alert", &body, SECRET, now)
            .await
            .expect("request to sluice")
    });
    tokio::time::advance(Duration::from_secs(1) - MS).await;
    tokio::time::advance(MS).await;
    // The clock stands at 1 s: A's answer comes now, and B's only after it.
    let answer = tokio::select! {
        biased;
        answer = read_answer(&mut stalled) => answer,
        done = &mut waiting => panic!("B was answered while A held the only turn: {done:?}"),
    };
    assert_eq!(answer.status, 408, "{answer:?}");
    let reason = answer
        .header("sentry-hook-error")
        .expect("Sentry-Hook-Error");
    assert!(reason.contains("server.body_timeout"), "{reason}");
    let (status, reply) = within(WAIT, "B's answer", waiting).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(
        server
            .metric("sluice_webhooks_total{resource=\"event_alert\",outcome=\"timeout\"}")
            .await,
        Some(1.0)
    );
    server.stop().await;
}

/// On the test's clock: a body trickling a byte every 100 ms never stalls for the body
/// timeout, but the whole request is cut off at `request_timeout` (1 s) with 503; a twin
/// request whose body completes 1 ms before is answered as usual.
#[tokio::test(start_paused = true)]
async fn a_body_trickling_past_the_request_timeout_gets_503() {
    let _held = HeldTime::hold();
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let keys = "body_timeout = \"1s\"\nrequest_timeout = \"1s\"";
    let server = server_on_held_clock(&slack, &scratch, keys).await;
    let length = 1000;
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    let mut twin = TcpStream::connect(server.addr).await.unwrap();
    for conn in [&mut trickle, &mut twin] {
        let head = webhook_head_expecting_continue(length);
        conn.write_all(head.as_bytes()).await.unwrap();
        read_continue(conn).await;
    }
    // Both in hand at 0 ms; a byte each at 100, 200, … 900 ms.
    for _ in 0..9 {
        tokio::time::advance(Duration::from_millis(100)).await;
        trickle.write_all(b" ").await.unwrap();
        twin.write_all(b" ").await.unwrap();
    }
    tokio::time::advance(Duration::from_millis(99)).await;
    twin.write_all(&vec![b' '; length - 9]).await.unwrap();
    let answered = read_answer(&mut twin).await;
    assert_eq!(
        answered.status, 401,
        "a body complete at 999 ms is read and judged (unsigned): {answered:?}"
    );
    tokio::time::advance(MS).await;
    let answer = read_answer(&mut trickle).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    let reason = answer
        .header("sentry-hook-error")
        .expect("Sentry-Hook-Error");
    assert!(reason.contains("server.request_timeout (1s)"), "{reason}");
    assert_eq!(
        server
            .metric("sluice_webhooks_total{resource=\"event_alert\",outcome=\"timeout\"}")
            .await,
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn at_max_connections_idle_connections_make_room_for_a_new_one() {
    let slack = FakeSlack::start().await;
    let scratch = Scratch::new();
    let server =
        TestServer::start(config_with_server(&slack, &scratch, "max_connections = 2")).await;
    // Two kept-alive connections, idle after one request each: every place is taken.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        conn.write_all(HEALTHZ).await.unwrap();
        assert_eq!(read_answer(&mut conn).await.status, 200);
        idle.push(conn);
    }
    // A new client is served: the idle ones are closed to make room.
    let mut fresh = TcpStream::connect(server.addr).await.unwrap();
    fresh.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_answer(&mut fresh).await.status, 200);
    for conn in &mut idle {
        assert!(wait_closed(conn).await.is_empty());
    }
    drop(fresh);
    assert_eq!(
        server
            .metric("sluice_http_connections_closed_total{reason=\"shed\"}")
            .await,
        Some(2.0)
    );
    assert!(
        server
            .metric("sluice_http_connection_limit_reached_total")
            .await
            .is_some_and(|n| n >= 1.0)
    );
    server.stop().await;
}
