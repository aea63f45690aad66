//! Counting windows: UTC day buckets, the 7-day and 30-day sums, the sparkline, and how counts
//! are written in messages (`7d: 412 · 30d: 1,204`).
//!
//! Occurrences are bucketed by the UTC day on which Sluice received them (not the event's own
//! timestamp, which a misconfigured client clock can put anywhere). "Week" is the 7 days ending
//! today, "month" the 30 days ending today, both including today.

use serde::{Deserialize, Serialize};

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// Days in the longest window kept for a message ("month").
pub const MONTH_DAYS: usize = 30;

/// Days in the short window ("week").
pub const WEEK_DAYS: usize = 7;

/// The UTC day number (days since 1970-01-01) of a Unix-milliseconds instant.
pub fn day_of(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

/// What Sluice knows of an issue's frequency at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IssueStats {
    /// Occurrences per UTC day over the last [`MONTH_DAYS`] days, oldest first; the last entry
    /// is today.
    pub daily: Vec<u64>,
    /// When Sluice first saw the issue (Unix ms), if it has.
    pub first_seen_ms: Option<i64>,
    /// Sentry's own lifetime count of the issue, as last reported by Sentry.
    pub sentry_count: Option<u64>,
    /// When Sentry first saw the issue (Unix ms), as last reported by Sentry (`firstSeen`).
    #[serde(default)]
    pub sentry_first_seen_ms: Option<i64>,
    /// The issue's title as the store knows it (the latest one received), for messages whose
    /// payload does not carry it (comments).
    #[serde(default)]
    pub title: Option<String>,
    /// The issue's web page as the store knows it (the latest link received), for messages
    /// whose payload carries none (`issue.*` without `permalink`, comments).
    #[serde(default)]
    pub issue_url: Option<String>,
    /// The issue's state in Sentry as the store knows it (the last issue notice or click), if
    /// it was ever told.
    #[serde(default)]
    pub state: Option<crate::issue::IssueState>,
    /// The issue's status before its last change, where known: a reopened issue that was
    /// resolved has regressed.
    #[serde(default)]
    pub previous_status: Option<crate::issue::Status>,
}

impl IssueStats {
    /// Builds the daily series for the month ending on `today` from `(day, count)` pairs; pairs
    /// outside the window are ignored.
    pub fn from_days(today: i64, days: impl IntoIterator<Item = (i64, u64)>) -> Vec<u64> {
        let mut daily = vec![0u64; MONTH_DAYS];
        let first = today - (MONTH_DAYS as i64 - 1);
        for (day, count) in days {
            if (first..=today).contains(&day) {
                let slot = &mut daily[(day - first) as usize];
                *slot = slot.saturating_add(count);
            }
        }
        daily
    }

    /// Occurrences in the 7 days ending today.
    pub fn week(&self) -> u64 {
        self.last_days(WEEK_DAYS).iter().sum()
    }

    /// Occurrences in the 30 days ending today.
    pub fn month(&self) -> u64 {
        self.last_days(MONTH_DAYS).iter().sum()
    }

    /// The last `n` daily counts (fewer if the series is shorter), oldest first.
    pub fn last_days(&self, n: usize) -> &[u64] {
        &self.daily[self.daily.len().saturating_sub(n)..]
    }

    /// `7d: 412 · 30d: 1,204`, the form every message uses.
    pub fn summary(&self) -> String {
        format!(
            "7d: {} · 30d: {}",
            thousands(self.week()),
            thousands(self.month())
        )
    }

    /// The 7-day sparkline, oldest day first.
    pub fn sparkline(&self) -> String {
        sparkline(self.last_days(WEEK_DAYS))
    }
}

/// `1204` → `1,204`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One bar per value (`▁▂▃▄▅▆▇█`), scaled to the largest; a zero day is the lowest bar, and any
/// non-zero day at least the second lowest so activity is never hidden.
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                BARS[0]
            } else {
                // 1..=7 for non-zero values, rounded up.
                let idx = ((v as u128 * 7).div_ceil(max as u128)).clamp(1, 7) as usize;
                BARS[idx]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(412), "412");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn windows_include_today_and_exclude_older_days() {
        let today = 20_000;
        let daily = IssueStats::from_days(
            today,
            [
                (today, 2),
                (today - 6, 3),  // still in the week
                (today - 7, 5),  // month only
                (today - 29, 7), // last day of the month
                (today - 30, 1000),
                (today + 1, 1000),
            ],
        );
        let stats = IssueStats {
            daily,
            ..Default::default()
        };
        assert_eq!(stats.week(), 5);
        assert_eq!(stats.month(), 17);
        assert_eq!(stats.summary(), "7d: 5 · 30d: 17");
    }

    #[test]
    fn sparkline_scales_to_the_busiest_day() {
        assert_eq!(sparkline(&[0, 1, 2, 3, 4, 5, 7]), "▁▂▃▄▅▆█");
        assert_eq!(sparkline(&[0; 7]), "▁▁▁▁▁▁▁");
        assert_eq!(sparkline(&[1, 1000, 0, 0, 0, 0, 0]), "▂█▁▁▁▁▁");
    }

    #[test]
    fn day_of_is_utc_and_floors_negative_instants() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
    }

    proptest! {
        #[test]
        fn week_never_exceeds_month_and_both_sum_their_days(
            today in 0i64..100_000,
            days in proptest::collection::vec((0i64..40, 0u64..1_000_000), 0..60),
        ) {
            let pairs: Vec<_> = days.iter().map(|&(ago, n)| (today - ago, n)).collect();
            let stats = IssueStats { daily: IssueStats::from_days(today, pairs), ..Default::default() };
            let week: u64 = days.iter().filter(|(ago, _)| *ago < 7).map(|(_, n)| n).sum();
            let month: u64 = days.iter().filter(|(ago, _)| *ago < 30).map(|(_, n)| n).sum();
            prop_assert_eq!(stats.week(), week);
            prop_assert_eq!(stats.month(), month);
            prop_assert!(stats.week() <= stats.month());
            prop_assert_eq!(stats.sparkline().chars().count(), 7);
        }
    }
}
