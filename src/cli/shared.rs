//! What the commands that act on the running service's store (`mute`, `unmute`, `mutes`,
//! `dead-letters`) share: the config checked for a channel, the store it names, and the
//! plain-text tables they print.

use std::fmt::Write;
use std::path::Path;

use crate::config::Config;
use crate::store::Store;

/// The configuration at `path`, checked to have `channel`.
pub(super) fn config_with(path: &Path, channel: &str) -> Result<Config, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    if !config.channels.contains_key(channel) {
        let known: Vec<&str> = config.channels.keys().map(String::as_str).collect();
        return Err(format!(
            "no channel `{channel}` in {}; the configured channels are: {}",
            path.display(),
            known.join(", ")
        ));
    }
    Ok(config)
}

/// Runs `work` against the configured store, on a runtime of its own.
pub(super) fn with_store<T>(
    config: &Config,
    work: impl AsyncFnOnce(&dyn Store) -> Result<T, String>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = crate::store::open(config.storage.url.expose(), crate::storm::planner())
            .await
            .map_err(|e| e.to_string())?;
        work(&*store).await
    })
}

/// `head` and `rows` as left-aligned columns two spaces apart, one line each.
pub(super) fn columns<const N: usize>(head: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in std::iter::once(head).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(head).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
