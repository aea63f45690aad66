//! The small numeric helpers every benchmark uses: its knobs from the environment, quantiles
//! of sorted times, milliseconds for the tables. Included with `#[path]`.

use std::time::Duration;

/// The knob `name` from the environment, or `default` when unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `q` quantile (0.0..=1.0) of `sorted`, nearest rank; `sorted` must not be empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `d` in milliseconds with `decimals` decimals, for a table.
pub fn ms(d: Duration, decimals: usize) -> String {
    format!("{:.decimals$}", d.as_secs_f64() * 1000.0)
}
