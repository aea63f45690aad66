//! `GET /` and `/ui/…`: the read-only status page (content in [`crate::status`]), off with
//! `server.status_page = false`, and behind `server.status_token` when one is set.
//!
//! With a token, a request gets the page when it carries `Authorization: Bearer <token>` or
//! the session cookie; `?token=<token>` once (the login form sends it) answers `303` to the
//! same page without the token in its address and sets the cookie (`HttpOnly`,
//! `SameSite=Strict`). The cookie holds an HMAC of the token, not the token. Anything else
//! gets `401` and the login form. Every answer says `Cache-Control: no-store`, and its
//! `Content-Security-Policy` allows no script at all.

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, REFERRER_POLICY,
    SET_COOKIE, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{KeyInit, Mac};
use maud::Markup;
use serde::Deserialize;

use crate::config::Secret;
use crate::state::AppState;
use crate::status::{self, html};
use crate::store::{DeadLetterFilter, StoreError};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "sluice_status";

/// The page's routes with their guard, or `None` when `server.status_page = false`.
pub fn routes(state: &AppState) -> Option<Router<AppState>> {
    let server = &state.live.load().config.server;
    if !server.status_page {
        return None;
    }
    let token = server.status_token.clone();
    if token.is_none() && !is_loopback(&server.listen) {
        tracing::warn!(
            listen = %server.listen,
            "status page: served on a non-loopback address without server.status_token; \
             whoever reaches it reads issue titles and channel names (set a token, or \
             server.status_page = false)"
        );
    }
    Some(
        Router::new()
            .route("/", get(overview))
            .route("/ui/channels", get(channels))
            .route("/ui/deliveries", get(deliveries))
            .route("/ui/dead-letters", get(dead_letters))
            .route("/ui/mutes", get(mutes))
            .layer(axum::middleware::from_fn_with_state(token, guard))
            .layer(axum::middleware::from_fn(headers)),
    )
}

/// Whether `listen` (`host:port`) binds only loopback.
fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What every answer of the page carries: not cached, no script, not framed, no referrer
/// (the login's address may hold the token).
async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// The session cookie's value for `token`: an HMAC, so the cookie never holds the token and
/// every comparison is between equal-length values.
fn session_value(token: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"sluice status page session");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the token.
fn is_token(given: &str, token: &Secret) -> bool {
    super::constant_time_eq(
        session_value(given).as_bytes(),
        session_value(token.expose()).as_bytes(),
    )
}

/// The session cookie's value among a request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

async fn guard(State(token): State<Option<Secret>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| is_token(b.trim(), &token)) {
        return next.run(req).await;
    }
    let expected = session_value(token.expose());
    if session_cookie(headers)
        .is_some_and(|c| super::constant_time_eq(c.as_bytes(), expected.as_bytes()))
    {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let Some((_, given)) = pairs.iter().find(|(k, _)| k == "token") else {
        return (StatusCode::UNAUTHORIZED, html::login(false)).into_response();
    };
    if !is_token(given, &token) {
        return (StatusCode::UNAUTHORIZED, html::login(true)).into_response();
    }
    // Signed in: the same page, without the token in its address (history, logs, referrers).
    let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "token").collect();
    let mut location = req.uri().path().to_string();
    if !rest.is_empty() {
        location.push('?');
        location.push_str(&serde_urlencoded::to_string(rest).unwrap_or_default());
    }
    let cookie = format!("{COOKIE_NAME}={expected}; Path=/; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, location), (SET_COOKIE, cookie)],
    )
        .into_response()
}

/// A page, or the header alone with `503` when the store cannot answer.
async fn page(state: &AppState, render: Result<Markup, StoreError>) -> Response {
    match render {
        Ok(markup) => markup.into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "status page: the store does not answer");
            let header = status::header(state).await;
            (StatusCode::SERVICE_UNAVAILABLE, html::unavailable(&header)).into_response()
        }
    }
}

async fn overview(State(state): State<AppState>) -> Response {
    let render = status::overview(&state).await.map(|o| html::overview(&o));
    page(&state, render).await
}

async fn channels(State(state): State<AppState>) -> Response {
    let header = status::header(&state).await;
    let render = status::channels(&state, header.now_ms)
        .await
        .map(|c| html::channels_page(&header, &c));
    page(&state, render).await
}

/// `?before=` of the deliveries list.
#[derive(Deserialize)]
struct DeliveriesQuery {
    before: Option<String>,
}

async fn deliveries(State(state): State<AppState>, Query(q): Query<DeliveriesQuery>) -> Response {
    let before = match q.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(param) => match status::cursor_from_param(param) {
            Some(cursor) => Some(cursor),
            None => {
                return (StatusCode::BAD_REQUEST, "`before` is not a page cursor").into_response();
            }
        },
    };
    let header = status::header(&state).await;
    let render = status::deliveries(&state, before)
        .await
        .map(|p| html::deliveries_page(&header, &p));
    page(&state, render).await
}

/// `?channel=&before=` of the dead-letter list.
#[derive(Deserialize)]
struct DeadLettersQuery {
    channel: Option<String>,
    before: Option<i64>,
}

async fn dead_letters(
    State(state): State<AppState>,
    Query(q): Query<DeadLettersQuery>,
) -> Response {
    let filter = DeadLetterFilter {
        channel: q.channel.filter(|c| !c.is_empty()),
        since_ms: None,
        before_id: q.before,
    };
    let header = status::header(&state).await;
    let render = status::dead_letters(&state, &filter)
        .await
        .map(|p| html::dead_letters_page(&header, &p, &filter));
    page(&state, render).await
}

async fn mutes(State(state): State<AppState>) -> Response {
    let header = status::header(&state).await;
    let render = state
        .store
        .mutes(header.now_ms)
        .await
        .map(|m| html::mutes_page(&header, &m));
    page(&state, render).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_count_as_internal() {
        for listen in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"] {
            assert!(is_loopback(listen), "{listen}");
        }
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.5:8080",
            "sluice.internal:80",
        ] {
            assert!(!is_loopback(listen), "{listen}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_is_not_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; sluice_status=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        assert_ne!(session_value("hunter2"), "hunter2");
        assert!(!session_value("hunter2").contains("hunter2"));
        assert!(is_token("hunter2", &Secret::new("hunter2")));
        assert!(!is_token("hunter", &Secret::new("hunter2")));
    }
}
