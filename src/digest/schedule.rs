//! When digests are due: `digest.schedule` (cron) read in `digest.timezone`, so "Mondays at
//! 09:00 Europe/Berlin" stays 09:00 local across daylight-saving changes.

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The first scheduled instant strictly after `after`.
pub fn next_after(cron: &Cron, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&after.to_zoned(tz.clone()), false)
        .ok()
        .map(|z| z.timestamp())
}

/// The last scheduled instant at or before `at`: the period a digest posted at `at` is for.
pub fn latest_at_or_before(cron: &Cron, tz: &TimeZone, at: Timestamp) -> Option<Timestamp> {
    cron.find_previous_occurrence(&at.to_zoned(tz.clone()), true)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cron;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    #[test]
    fn mondays_at_nine_stay_nine_local_across_the_autumn_change() {
        let cron = parse_cron("0 9 * * MON").unwrap();
        // 2026-10-25: Europe/Berlin leaves summer time (UTC+2 -> UTC+1).
        let before = next_after(&cron, &berlin(), ts("2026-10-14T00:00:00Z")).unwrap();
        assert_eq!(before, ts("2026-10-19T07:00:00Z"), "09:00 CEST");
        let after = next_after(&cron, &berlin(), before).unwrap();
        assert_eq!(
            after,
            ts("2026-10-26T08:00:00Z"),
            "09:00 CET, one week later"
        );
    }

    #[test]
    fn mondays_at_nine_stay_nine_local_across_the_spring_change() {
        let cron = parse_cron("0 9 * * MON").unwrap();
        // 2026-03-29: summer time starts (UTC+1 -> UTC+2).
        let a = next_after(&cron, &berlin(), ts("2026-03-20T00:00:00Z")).unwrap();
        assert_eq!(a, ts("2026-03-23T08:00:00Z"));
        let b = next_after(&cron, &berlin(), a).unwrap();
        assert_eq!(b, ts("2026-03-30T07:00:00Z"));
    }

    #[test]
    fn a_time_in_the_spring_gap_still_fires_once_that_day() {
        // 02:30 does not exist in Berlin on 2026-03-29.
        let cron = parse_cron("30 2 * * *").unwrap();
        let fire = next_after(&cron, &berlin(), ts("2026-03-28T12:00:00Z")).unwrap();
        let next = next_after(&cron, &berlin(), fire).unwrap();
        assert!(fire < ts("2026-03-29T12:00:00Z"), "{fire}");
        assert!(fire > ts("2026-03-28T12:00:00Z"), "{fire}");
        assert!(next > ts("2026-03-30T00:00:00Z"), "{next}");
    }

    #[test]
    fn the_latest_period_is_the_last_fire_time_at_or_before() {
        let cron = parse_cron("0 9 * * MON").unwrap();
        let utc = TimeZone::UTC;
        let monday_nine = ts("2026-11-16T09:00:00Z");
        assert_eq!(
            latest_at_or_before(&cron, &utc, monday_nine),
            Some(monday_nine)
        );
        assert_eq!(
            latest_at_or_before(&cron, &utc, ts("2026-11-22T20:00:00Z")),
            Some(monday_nine)
        );
        assert_eq!(
            latest_at_or_before(&cron, &utc, ts("2026-11-16T08:59:59Z")),
            Some(ts("2026-11-09T09:00:00Z"))
        );
    }
}
