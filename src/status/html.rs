//! The status page as HTML (maud: the markup is checked at compile time and every value put
//! in it is escaped, so a title from Sentry shows `<script>` as text). No script: every link
//! and the token form work without JavaScript.

use maud::{DOCTYPE, Markup, html};

use super::{ChannelRow, Header, Overview, Page, cursor_to_param};
use crate::store::{
    ChannelTotals, DeadLetter, DeadLetterFilter, DeliveryCursor, DeliveryTrail, Fate, Mute,
};

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1c1d; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.6em 0 .4em; }
nav a { margin-right: 1em; } .muted { color: #616061; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25em .5em;
  text-align: left; vertical-align: top; } th { background: #f6f6f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #007a5a; } .bad { color: #b3261e; font-weight: 600; } .warn { color: #8a5a00; }
ul.routes { margin: 0; padding-left: 1em; } code { font-size: 12px; }
";

/// `ms` as `2026-12-02 00:50:12 UTC`.
fn at(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The dead-letter list's address for `channel`, from `before`.
fn dead_letters_href(channel: Option<&str>, before: Option<i64>) -> String {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(c) = channel {
        query.push(("channel", c.to_string()));
    }
    if let Some(id) = before {
        query.push(("before", id.to_string()));
    }
    match serde_urlencoded::to_string(&query) {
        Ok(q) if !q.is_empty() => format!("/ui/dead-letters?{q}"),
        _ => "/ui/dead-letters".to_string(),
    }
}

/// The frame of every page: title, header, navigation, then `body`.
fn frame(header: &Header, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Sluice" }
                style { (STYLE) }
            }
            body {
                h1 { "Sluice" }
                p #role {
                    @if header.leading {
                        span.ok { "This replica leads" } " (delivers to Slack, runs the digest)"
                    } @else {
                        span.warn { "This replica is a standby" } " (another replica leads, or none yet)"
                    }
                    " · config loaded " (at(header.config_loaded_ms))
                    " · " (header.routes) " routes · store "
                    @if header.store_up { span.ok { "answers" } } @else { span.bad { "does not answer" } }
                    " · " span.muted { "at " (at(header.now_ms)) }
                }
                nav {
                    a href="/" { "Overview" }
                    a href="/ui/channels" { "Channels" }
                    a href="/ui/deliveries" { "Deliveries" }
                    a href="/ui/dead-letters" { "Dead letters" }
                    a href="/ui/mutes" { "Mutes" }
                }
                (body)
            }
        }
    }
}

/// `GET /`: every part, the first page of each list.
pub fn overview(o: &Overview) -> Markup {
    let body = html! {
        (channels_table(&o.channels))
        (deliveries_table(&o.deliveries))
        (dead_letters_table(&o.dead_letters, &DeadLetterFilter::default()))
        (mutes_table(&o.mutes))
    };
    frame(&o.header, "Status", body)
}

/// `GET /ui/channels`.
pub fn channels_page(header: &Header, channels: &[ChannelRow]) -> Markup {
    frame(header, "Channels", channels_table(channels))
}

/// `GET /ui/deliveries`.
pub fn deliveries_page(header: &Header, page: &Page<DeliveryTrail, DeliveryCursor>) -> Markup {
    frame(header, "Deliveries", deliveries_table(page))
}

/// `GET /ui/dead-letters`.
pub fn dead_letters_page(
    header: &Header,
    page: &Page<DeadLetter, i64>,
    filter: &DeadLetterFilter,
) -> Markup {
    frame(header, "Dead letters", dead_letters_table(page, filter))
}

/// `GET /ui/mutes`.
pub fn mutes_page(header: &Header, mutes: &[Mute]) -> Markup {
    frame(header, "Mutes", mutes_table(mutes))
}

/// Any page while the store does not answer: the header says so.
pub fn unavailable(header: &Header) -> Markup {
    let body = html! {
        h2 { "The store does not answer" }
        p { "Deliveries get 503 until it does; Sentry's retries and the outbox lose nothing already committed. "
            "See " code { "/readyz" } " and the logs." }
    };
    frame(header, "Store unavailable", body)
}

/// The token wall: a form that sends `?token=` (which sets the session cookie).
pub fn login(wrong: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · Sluice" }
                style { (STYLE) }
            }
            body {
                h1 { "Sluice" }
                p #token-wall { "This status page needs its token (" code { "server.status_token" } ")." }
                @if wrong { p.bad { "That token is not the one configured." } }
                form method="get" action="/" {
                    label { "Token " input type="password" name="token" autocomplete="current-password"; }
                    " " button type="submit" { "Open" }
                }
            }
        }
    }
}

fn channels_table(channels: &[ChannelRow]) -> Markup {
    html! {
        h2 #channels { "Channels" }
        table {
            thead { tr {
                th { "Channel" } th { "Posts to" } th { "Rate" } th { "Pending" } th { "Held until" }
                th { "Posted today" } th { "Dead letters" } th { "Last digest" }
                th { "Routed = posted + pending + dead + muted" }
            } }
            tbody {
                @for c in channels {
                    tr data-channel=(c.name) {
                        td { (c.name) }
                        td { (c.destination) }
                        td { (c.rate) ", burst " (c.burst) }
                        td.n.pending { (c.now.totals.messages_pending) }
                        td { @match c.now.held_until_ms {
                            Some(ms) => span.warn { (at(ms)) },
                            None => span.muted { "not held" },
                        } }
                        td.n { (c.now.posted_since) }
                        td.n { @if c.now.totals.messages_dead > 0 {
                            a.bad href=(dead_letters_href(Some(&c.name), None)) { (c.now.totals.messages_dead) }
                        } @else { "0" } }
                        td { @match c.now.totals.last_digest_ms {
                            Some(ms) => (at(ms)),
                            None => span.muted { "none yet" },
                        } }
                        td { (accounting(&c.now.totals)) }
                    }
                }
            }
        }
    }
}

/// The accounting terms of a channel, and whether they add up.
fn accounting(t: &ChannelTotals) -> Markup {
    let accounted =
        t.occurrences_posted + t.occurrences_pending + t.occurrences_dead + t.occurrences_muted;
    html! {
        (t.occurrences_routed) " = " (t.occurrences_posted) " + " (t.occurrences_pending)
        " + " (t.occurrences_dead) " + " (t.occurrences_muted) " "
        @if accounted == t.occurrences_routed {
            span.ok { "✓" }
        } @else {
            span.bad { "off by " (t.occurrences_routed.abs_diff(accounted)) }
        }
    }
}

fn deliveries_table(page: &Page<DeliveryTrail, DeliveryCursor>) -> Markup {
    html! {
        h2 #deliveries { "Last deliveries" }
        @if page.rows.is_empty() {
            p.muted { "None received yet." }
        } @else {
            table {
                thead { tr {
                    th { "Received" } th { "Issue" } th { "Service / environment" }
                    th { "Event, request" } th { "Went to" }
                } }
                tbody {
                    @for d in &page.rows {
                        tr.delivery {
                            td { (at(d.cursor.received_at_ms)) br; span.muted { (d.resource) } }
                            td {
                                @if let Some(title) = &d.title { span.title { (title) } br; }
                                @if let Some(key) = &d.issue_key { span.muted { "issue " (key) } }
                            }
                            td {
                                (d.project.as_deref().unwrap_or("–")) " / "
                                (d.environment.as_deref().unwrap_or("–"))
                            }
                            td {
                                @if let Some(id) = &d.event_id { code { (id) } br; }
                                @if let Some(id) = &d.request_id { span.muted { "request " code { (id) } } }
                            }
                            td { (routes(d)) }
                        }
                    }
                }
            }
            @if let Some(next) = &page.next {
                p { a href={ "/ui/deliveries?before=" (cursor_to_param(next)) } { "Older deliveries →" } }
            }
        }
    }
}

/// Where one delivery went, and why not when it did not.
fn routes(d: &DeliveryTrail) -> Markup {
    html! {
        @match d.outcome.as_str() {
            "ignored" => span.muted { "not routed: a resource Sluice does not post" },
            "duplicate" => span.muted { "duplicate: this event was received before; not counted or posted again" },
            _ => {
                @if d.folding {
                    span.muted { "stored; waiting for the leader's fold to be counted and sent to its channels" }
                } @else if d.routes.is_empty() {
                    span.muted { "routed nowhere: no route matched and there is no default channel" }
                } @else {
                    ul.routes {
                        @for r in &d.routes {
                            li {
                                (r.channel)
                                @if let Some(route) = &r.route { span.muted { " (route " (route) ")" } }
                                ": " (fate(&r.fate))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn fate(f: &Fate) -> Markup {
    html! {
        @match f {
            Fate::Pending => span.warn { "pending" },
            Fate::Posted { at_ms, slack_ts } => span.ok {
                "posted " (at(*at_ms))
                @if let Some(ts) = slack_ts { span.muted { " (ts " (ts) ")" } }
            },
            Fate::Folded => span.muted { "folded by the cooldown into the next follow-up" },
            Fate::RolledUp => span.muted { "rolled up into a backlog summary" },
            Fate::Muted => span.muted { "held by a mute" },
            Fate::Dead { error } => span.bad { "dead: " (error) },
        }
    }
}

fn dead_letters_table(page: &Page<DeadLetter, i64>, filter: &DeadLetterFilter) -> Markup {
    html! {
        h2 #dead-letters {
            "Dead letters"
            @if let Some(c) = &filter.channel { " of " (c) }
        }
        @if page.rows.is_empty() {
            p.muted { "None." }
        } @else {
            p.muted { "Once the cause is fixed, " code { "sluice dead-letters --replay [--channel C] [--since T]" }
                " queues them again." }
            table {
                thead { tr {
                    th { "Id" } th { "Channel" } th { "Dead since" } th { "Slack's error" } th { "Issue" }
                    th { "Occurrences" }
                } }
                tbody {
                    @for l in &page.rows {
                        tr.dead-letter {
                            td.n { (l.id) }
                            td { (l.channel) }
                            td { (at(l.dead_at_ms)) }
                            td.bad.error { (l.error) }
                            td {
                                @if let Some(title) = &l.title { span.title { (title) } br; }
                                span.muted { (l.kind) " · issue " (l.issue_key) }
                            }
                            td.n { (l.occurrences) }
                        }
                    }
                }
            }
            @if let Some(next) = page.next {
                p { a href=(dead_letters_href(filter.channel.as_deref(), Some(next))) { "Older dead letters →" } }
            }
        }
    }
}

fn mutes_table(mutes: &[Mute]) -> Markup {
    html! {
        h2 #mutes { "Mutes in force" }
        @if mutes.is_empty() {
            p.muted { "None." }
        } @else {
            table {
                thead { tr { th { "Issue" } th { "Channel" } th { "Until" } th { "By" } th { "Held back" } } }
                tbody {
                    @for m in mutes {
                        tr {
                            td {
                                @if let Some(title) = &m.title { span.title { (title) } br; }
                                span.muted { "issue " (m.issue_key) }
                            }
                            td { (m.channel) }
                            td { (at(m.until_ms)) }
                            td { (m.by.as_deref().unwrap_or("–")) }
                            td.n { (m.held) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeliveryRoute;

    fn header() -> Header {
        Header {
            now_ms: 1_763_769_600_000,
            leading: true,
            config_loaded_ms: 1_763_769_000_000,
            routes: 2,
            store_up: true,
        }
    }

    fn trail(title: &str) -> DeliveryTrail {
        DeliveryTrail {
            cursor: DeliveryCursor {
                received_at_ms: 1_763_769_600_000,
                body_sha256: [1; 32],
            },
            resource: "event_alert".into(),
            request_id: Some("req-1".into()),
            outcome: "stored".into(),
            event_id: Some("ev1".into()),
            issue_key: Some("42".into()),
            project: Some("python".into()),
            environment: Some("production".into()),
            title: Some(title.into()),
            folding: false,
            routes: vec![
                DeliveryRoute {
                    channel: "backend".into(),
                    route: Some("python prod".into()),
                    fate: Fate::Posted {
                        at_ms: 1_763_769_601_000,
                        slack_ts: Some("1763769601.000100".into()),
                    },
                },
                DeliveryRoute {
                    channel: "ops".into(),
                    route: None,
                    fate: Fate::Dead {
                        error: "channel_not_found".into(),
                    },
                },
            ],
        }
    }

    #[test]
    fn text_from_sentry_is_escaped() {
        let page = Page {
            rows: vec![trail("<script>alert(1)</script> & \"x\"")],
            next: None,
        };
        let out = deliveries_page(&header(), &page).into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"));
    }

    #[test]
    fn a_delivery_shows_each_channel_with_its_route_and_fate() {
        let page = Page {
            rows: vec![trail("ValueError")],
            next: Some(DeliveryCursor {
                received_at_ms: 5,
                body_sha256: [0; 32],
            }),
        };
        let out = deliveries_page(&header(), &page).into_string();
        assert!(out.contains("backend<span class=\"muted\"> (route python prod)</span>"));
        assert!(out.contains("posted 2025-11-22 00:00:01 UTC"), "{out}");
        assert!(out.contains("dead: channel_not_found"));
        assert!(out.contains(&format!("/ui/deliveries?before=5-{}", "0".repeat(64))));
    }

    #[test]
    fn accounting_says_when_the_terms_do_not_add_up() {
        let mut t = ChannelTotals {
            occurrences_routed: 10,
            occurrences_posted: 6,
            occurrences_pending: 2,
            occurrences_dead: 1,
            occurrences_muted: 1,
            ..Default::default()
        };
        assert!(accounting(&t).into_string().contains("✓"));
        t.occurrences_posted = 4;
        assert!(accounting(&t).into_string().contains("off by 2"));
    }
}
