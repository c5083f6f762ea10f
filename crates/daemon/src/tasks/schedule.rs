//! When a task runs: parsing `at` / `every` / `cron` (+ time zone) and
//! computing the next slot. Pure functions of a given "now", so they are
//! tested with a fake clock. Slots are unix seconds.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("give exactly one of at, every or cron")]
    NotOne,
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin or UTC)")]
    UnknownZone(String),
    #[error("bad time {0:?}: use RFC 3339 (2030-01-31T09:00:00Z) or a local YYYY-MM-DDTHH:MM[:SS] with tz")]
    BadTime(String),
    #[error("{0} does not exist in {1} (a daylight-saving gap)")]
    NoSuchLocalTime(String, String),
    #[error("at {0} is in the past")]
    InPast(String),
    #[error("bad duration {0:?}: use e.g. 30s, 5m, 1h, 1d")]
    BadDuration(String),
    #[error("every must be at least 1 second")]
    TooShort,
    #[error("bad cron expression {0:?}: {1}")]
    BadCron(String, String),
    #[error("cron expression {0:?} never matches")]
    NeverMatches(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    At(i64),
    Every(u64),
    Cron(Box<croner::Cron>, Tz),
}

/// The stored form: (kind, spec, tz).
pub type Stored = (&'static str, String, Option<String>);

fn zone(tz: Option<&str>) -> Result<Tz, ScheduleError> {
    match tz {
        None => Ok(Tz::UTC),
        Some(z) => Tz::from_str(z).map_err(|_| ScheduleError::UnknownZone(z.to_string())),
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    croner::Cron::new(expr.trim())
        .with_seconds_optional()
        .parse()
        .map_err(|e| ScheduleError::BadCron(expr.to_string(), e.to_string()))
}

/// An RFC 3339 time, or a local time in `tz`.
fn parse_at(s: &str, tz: Tz) -> Result<i64, ScheduleError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return match tz.from_local_datetime(&n) {
                LocalResult::Single(t) => Ok(t.timestamp()),
                // The first of the two (the summer-time one).
                LocalResult::Ambiguous(t, _) => Ok(t.timestamp()),
                LocalResult::None => Err(ScheduleError::NoSuchLocalTime(
                    s.to_string(),
                    tz.name().to_string(),
                )),
            };
        }
    }
    Err(ScheduleError::BadTime(s.to_string()))
}

/// Check a request and return the schedule, its stored form and its first
/// slot (after `now`).
pub fn parse(
    at: Option<&str>,
    every: Option<&str>,
    cron: Option<&str>,
    tz: Option<&str>,
    now: i64,
) -> Result<(Schedule, Stored, i64), ScheduleError> {
    let tz_name = tz.map(str::trim).filter(|z| !z.is_empty());
    let z = zone(tz_name)?;
    let tz_stored = tz_name.map(|_| z.name().to_string());
    fn given(o: Option<&str>) -> Option<&str> {
        o.map(str::trim).filter(|s| !s.is_empty())
    }
    match (given(at), given(every), given(cron)) {
        (Some(a), None, None) => {
            let t = parse_at(a, z)?;
            if t <= now {
                return Err(ScheduleError::InPast(a.to_string()));
            }
            let spec = Utc
                .timestamp_opt(t, 0)
                .single()
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .ok_or_else(|| ScheduleError::BadTime(a.to_string()))?;
            Ok((Schedule::At(t), ("at", spec, tz_stored), t))
        }
        (None, Some(e), None) => {
            let d = humantime::parse_duration(e)
                .map_err(|_| ScheduleError::BadDuration(e.to_string()))?;
            let secs = d.as_secs();
            if secs == 0 {
                return Err(ScheduleError::TooShort);
            }
            // Beyond any useful schedule; keeps the arithmetic in range.
            if secs > 100 * 365 * 86400 {
                return Err(ScheduleError::BadDuration(e.to_string()));
            }
            Ok((
                Schedule::Every(secs),
                ("every", secs.to_string(), tz_stored),
                now + secs as i64,
            ))
        }
        (None, None, Some(c)) => {
            let s = Schedule::Cron(Box::new(parse_cron(c)?), z);
            let first = s
                .next_after(now, now)
                .ok_or_else(|| ScheduleError::NeverMatches(c.to_string()))?;
            Ok((s, ("cron", c.to_string(), tz_stored), first))
        }
        _ => Err(ScheduleError::NotOne),
    }
}

impl Schedule {
    /// A stored task's schedule.
    pub fn from_stored(kind: &str, spec: &str, tz: Option<&str>) -> Result<Schedule, String> {
        match kind {
            "at" => DateTime::parse_from_rfc3339(spec)
                .map(|t| Schedule::At(t.timestamp()))
                .map_err(|e| e.to_string()),
            "every" => spec
                .parse()
                .map(Schedule::Every)
                .map_err(|e| format!("{e}")),
            "cron" => Ok(Schedule::Cron(
                Box::new(parse_cron(spec).map_err(|e| e.to_string())?),
                zone(tz).map_err(|e| e.to_string())?,
            )),
            other => Err(format!("unknown schedule kind {other:?}")),
        }
    }

    /// The first slot after both `slot` (the one just due) and `now`;
    /// None when there is none (an `at` task ran). Slots in between, missed
    /// while the daemon was down or busy, are passed over: one catch-up
    /// run covers them.
    pub fn next_after(&self, slot: i64, now: i64) -> Option<i64> {
        let after = slot.max(now);
        match self {
            Schedule::At(_) => None,
            Schedule::Every(secs) => {
                let secs = *secs as i64;
                // Stay on the grid slot + k * secs.
                let k = (after - slot) / secs + 1;
                Some(slot + k * secs)
            }
            Schedule::Cron(c, tz) => {
                let from = tz.timestamp_opt(after, 0).single()?;
                c.find_next_occurrence(&from, false)
                    .ok()
                    .map(|t| t.timestamp())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn iso(t: i64) -> String {
        Utc.timestamp_opt(t, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn every_stays_on_its_grid_and_collapses_missed_slots() {
        let now = 1_000;
        let (s, stored, first) = parse(None, Some("30s"), None, None, now).unwrap();
        assert_eq!((stored.0, stored.1.as_str(), first), ("every", "30", 1_030));
        assert_eq!(s.next_after(1_030, 1_030), Some(1_060));
        // Down from 1030 to 1200: the next slot is the first grid point after now.
        assert_eq!(s.next_after(1_030, 1_200), Some(1_210));
        assert_eq!(s.next_after(1_030, 1_210), Some(1_240));
        let (_, stored, _) = parse(None, Some("1h 30m"), None, None, now).unwrap();
        assert_eq!(stored.1, "5400");
    }

    #[test]
    fn cron_in_berlin_across_both_dst_changes() {
        // Every day at 02:30 Berlin time. 2026-03-29 has no 02:30 (clocks
        // jump 02:00 -> 03:00); 2026-10-25 has it twice.
        let (s, _, first) = parse(
            None,
            None,
            Some("30 2 * * *"),
            Some("Europe/Berlin"),
            ts("2026-03-27T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(iso(first), "2026-03-28T01:30:00Z", "02:30 CET = 01:30 UTC");
        let second = s.next_after(first, first).unwrap();
        // The gap day: croner moves to the first valid time after it.
        assert_eq!(iso(second), "2026-03-29T01:00:00Z", "03:00 CEST");
        let third = s.next_after(second, second).unwrap();
        assert_eq!(iso(third), "2026-03-30T00:30:00Z", "02:30 CEST = 00:30 UTC");

        // Autumn: 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET);
        // the task runs once that day.
        let before = ts("2026-10-24T12:00:00Z");
        let a = s.next_after(before, before).unwrap();
        assert_eq!(iso(a), "2026-10-25T00:30:00Z");
        let b = s.next_after(a, a).unwrap();
        assert_eq!(iso(b), "2026-10-26T01:30:00Z", "next day, CET");

        // Every hour at :00 keeps 1-hour spacing in UTC through the change.
        let (h, _, _) = parse(None, None, Some("0 * * * *"), Some("Europe/Berlin"), 0).unwrap();
        let mut t = ts("2026-03-29T00:30:00Z");
        let mut got = vec![];
        for _ in 0..3 {
            t = h.next_after(t, t).unwrap();
            got.push(iso(t));
        }
        assert_eq!(
            got,
            [
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z",
                "2026-03-29T03:00:00Z"
            ]
        );
    }

    #[test]
    fn cron_with_seconds_and_missed_slots() {
        let (s, _, first) = parse(None, None, Some("*/5 * * * * *"), None, 1_000).unwrap();
        assert_eq!(first, 1_005);
        // Down for a minute: one catch-up, then the next slot after now.
        assert_eq!(s.next_after(1_005, 1_063), Some(1_065));
        let (m, _, first) = parse(None, None, Some("* * * * *"), None, 1_000).unwrap();
        assert_eq!(first, 1_020, "next whole minute");
        assert_eq!(m.next_after(first, first), Some(1_080));
    }

    #[test]
    fn at_in_a_zone_and_in_utc() {
        let now = ts("2026-01-01T00:00:00Z");
        let (s, stored, t) = parse(
            Some("2026-07-01T09:00"),
            None,
            None,
            Some("Europe/Berlin"),
            now,
        )
        .unwrap();
        assert_eq!(iso(t), "2026-07-01T07:00:00Z");
        assert_eq!(stored.1, "2026-07-01T07:00:00Z");
        assert_eq!(s.next_after(t, t), None);
        let (_, _, t) = parse(Some("2026-02-01T10:00:00+01:00"), None, None, None, now).unwrap();
        assert_eq!(iso(t), "2026-02-01T09:00:00Z");
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let now = ts("2026-06-01T00:00:00Z");
        let e = |at, every, cron, tz| parse(at, every, cron, tz, now).unwrap_err();
        assert_eq!(e(None, None, None, None), ScheduleError::NotOne);
        assert_eq!(
            e(Some("2030-01-01T00:00:00Z"), Some("1h"), None, None),
            ScheduleError::NotOne
        );
        assert!(matches!(
            e(None, None, Some("61 * * * *"), None),
            ScheduleError::BadCron(..)
        ));
        assert!(matches!(
            e(None, None, Some("not cron"), None),
            ScheduleError::BadCron(..)
        ));
        assert!(matches!(
            e(Some("2020-01-01T00:00:00Z"), None, None, None),
            ScheduleError::InPast(_)
        ));
        assert!(matches!(
            e(Some("tomorrow"), None, None, None),
            ScheduleError::BadTime(_)
        ));
        assert!(matches!(
            e(None, Some("1h"), None, Some("Mars/Olympus")),
            ScheduleError::UnknownZone(_)
        ));
        assert!(matches!(
            e(None, Some("soon"), None, None),
            ScheduleError::BadDuration(_)
        ));
        assert_eq!(e(None, Some("500ms"), None, None), ScheduleError::TooShort);
        assert!(matches!(
            e(Some("2026-03-29T02:30"), None, None, Some("Europe/Berlin")),
            ScheduleError::NoSuchLocalTime(..)
        ));
        assert!(matches!(
            e(None, None, Some("0 0 31 2 *"), None),
            ScheduleError::NeverMatches(_) | ScheduleError::BadCron(..)
        ));
    }
}
