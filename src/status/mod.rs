//! The status page's content: "is Sluice working, and where did my error go?" answered from
//! the live config and a few bounded store reads (one page of each list, never a whole
//! table). `html` renders it; `server::status_page` serves it and guards it with the token.
//!
//! Nothing here holds a secret: a channel is shown by its name, its kind and, for the Web
//! API, the Slack channel it posts to; never a webhook URL or a token.

pub mod html;

use crate::config::{ChannelTarget, Config};
use crate::state::AppState;
use crate::store::{
    ChannelNow, DeadLetter, DeadLetterFilter, DeliveryCursor, DeliveryTrail, Mute, StoreError,
};

/// Rows per list on a page.
pub const PAGE_ROWS: u32 = 25;

/// One channel of the config, with its state now.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    /// The channel's name in routes.toml.
    pub name: String,
    /// `console`, `incoming webhook`, or `Web API <slack channel>`.
    pub destination: String,
    /// `rate`, as configured (`1/s`).
    pub rate: String,
    /// `burst`.
    pub burst: u32,
    /// What the store says about it now.
    pub now: ChannelNow,
}

/// Who this process is, and the config it runs.
#[derive(Debug, Clone)]
pub struct Header {
    /// Now, Unix ms (the page's time).
    pub now_ms: i64,
    /// Whether this replica leads: delivers to Slack and runs the digest.
    pub leading: bool,
    /// When the config in force was loaded, Unix ms.
    pub config_loaded_ms: i64,
    /// Routes in the config.
    pub routes: usize,
    /// Whether the store answers.
    pub store_up: bool,
}

/// A page of a list, and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T, C> {
    /// The rows, newest first.
    pub rows: Vec<T>,
    /// The cursor of the next (older) page, when there may be one.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// The page of `rows` read with one row more than [`PAGE_ROWS`]: that row, when there, says
    /// a next page exists; `cursor` gives the next page's start from the last row shown.
    fn of(mut rows: Vec<T>, cursor: impl Fn(&T) -> C) -> Self {
        let more = rows.len() > PAGE_ROWS as usize;
        rows.truncate(PAGE_ROWS as usize);
        let next = if more { rows.last().map(cursor) } else { None };
        Self { rows, next }
    }
}

/// Everything `GET /` shows.
#[derive(Debug, Clone)]
pub struct Overview {
    /// This process and its config.
    pub header: Header,
    /// Every configured channel, in name order.
    pub channels: Vec<ChannelRow>,
    /// The newest deliveries and where they went.
    pub deliveries: Page<DeliveryTrail, DeliveryCursor>,
    /// The newest dead letters.
    pub dead_letters: Page<DeadLetter, i64>,
    /// Mutes in force.
    pub mutes: Vec<Mute>,
}

/// The header of every page: cheap, no store read but a ping.
pub async fn header(state: &AppState) -> Header {
    let live = state.live.load();
    Header {
        now_ms: state.clock.now_ms(),
        leading: state.leading.load(std::sync::atomic::Ordering::SeqCst),
        config_loaded_ms: live.loaded_at_ms,
        routes: live.config.routes.len(),
        store_up: state.store.ping().await.is_ok(),
    }
}

/// The whole overview.
pub async fn overview(state: &AppState) -> Result<Overview, StoreError> {
    let header = header(state).await;
    Ok(Overview {
        channels: channels(state, header.now_ms).await?,
        deliveries: deliveries(state, None).await?,
        dead_letters: dead_letters(state, &DeadLetterFilter::default()).await?,
        mutes: state.store.mutes(header.now_ms).await?,
        header,
    })
}

/// Every configured channel with its state now; "today" starts at UTC midnight.
pub async fn channels(state: &AppState, now_ms: i64) -> Result<Vec<ChannelRow>, StoreError> {
    let config: &Config = &state.live.load().config;
    let midnight = now_ms - now_ms.rem_euclid(86_400_000);
    let mut names: Vec<&String> = config.channels.keys().collect();
    names.sort();
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        let channel = &config.channels[name];
        rows.push(ChannelRow {
            name: name.clone(),
            destination: match &channel.target {
                ChannelTarget::Console => "console".to_string(),
                ChannelTarget::Webhook { .. } => "incoming webhook".to_string(),
                ChannelTarget::WebApi { channel } => format!("Web API {channel}"),
            },
            rate: channel.rate.to_string(),
            burst: channel.burst,
            now: state.store.channel_now(name, now_ms, midnight).await?,
        });
    }
    Ok(rows)
}

/// A page of deliveries, newest first, from `before`.
pub async fn deliveries(
    state: &AppState,
    before: Option<DeliveryCursor>,
) -> Result<Page<DeliveryTrail, DeliveryCursor>, StoreError> {
    let rows = state.store.recent_deliveries(before, PAGE_ROWS + 1).await?;
    Ok(Page::of(rows, |d| d.cursor))
}

/// A page of dead letters, newest first, as `filter` says.
pub async fn dead_letters(
    state: &AppState,
    filter: &DeadLetterFilter,
) -> Result<Page<DeadLetter, i64>, StoreError> {
    let rows = state.store.dead_letters(filter, PAGE_ROWS + 1).await?;
    Ok(Page::of(rows, |d| d.id))
}

/// A delivery cursor as it appears in a link: `<received ms>-<body sha256 hex>`.
pub fn cursor_to_param(cursor: &DeliveryCursor) -> String {
    format!(
        "{}-{}",
        cursor.received_at_ms,
        hex::encode(cursor.body_sha256)
    )
}

/// The cursor of a link, `None` when it is not one.
pub fn cursor_from_param(param: &str) -> Option<DeliveryCursor> {
    let (ms, hash) = param.split_once('-')?;
    let mut body_sha256 = [0u8; 32];
    hex::decode_to_slice(hash, &mut body_sha256).ok()?;
    Some(DeliveryCursor {
        received_at_ms: ms.parse().ok()?,
        body_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_link() {
        let cursor = DeliveryCursor {
            received_at_ms: 1_763_769_600_123,
            body_sha256: [0xab; 32],
        };
        assert_eq!(cursor_from_param(&cursor_to_param(&cursor)), Some(cursor));
        assert_eq!(cursor_from_param("12-zz"), None);
        assert_eq!(cursor_from_param("x-abab"), None);
        assert_eq!(cursor_from_param(""), None);
    }

    #[test]
    fn a_page_read_with_one_row_more_knows_there_is_a_next() {
        let full: Vec<i64> = (0..=i64::from(PAGE_ROWS)).rev().collect();
        let page = Page::of(full, |&id| id);
        assert_eq!(page.rows.len(), PAGE_ROWS as usize);
        assert_eq!(page.next, Some(1));
        let last = Page::of(vec![3, 2, 1], |&id: &i64| id);
        assert_eq!((last.rows.len(), last.next), (3, None));
    }
}
