//! Recurring meetings: a useful subset of RFC 5545 RRULE, expanded into occurrences in the
//! meeting's IANA time zone. Pure: no clock, no I/O.
//!
//! Supported: `FREQ=DAILY|WEEKLY`, `INTERVAL`, `BYDAY` (plain weekdays, `MO`..`SU`), `COUNT`,
//! `UNTIL` (a date, a local date-time, or a UTC date-time ending in `Z`), and `WKST` (parsed,
//! `MO` only). Exceptions: EXDATE local start times, and single cancelled occurrences (stored
//! by the caller as EXDATEs too).
//!
//! Times: occurrences are generated as local wall-clock times (so a 09:00 Europe/Berlin weekly
//! meeting is at 09:00 local on both sides of a DST change) and only then mapped to UTC. A
//! local time that does not exist (the spring-forward gap) moves forward by the gap, as RFC 5545
//! §3.3.5 says; one that exists twice (the autumn fold) takes the first, earlier instant.
//! `COUNT` counts occurrences before EXDATEs are removed (RFC 5545 §3.8.5.3).

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// How often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freq {
    /// Every `interval` days.
    Daily,
    /// Every `interval` weeks.
    Weekly,
}

/// When the rule stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The last day (local) an occurrence may start on.
    Date(NaiveDate),
    /// The last local start time.
    Local(NaiveDateTime),
    /// The last start instant.
    Utc(DateTime<Utc>),
}

/// A parsed RRULE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Frequency.
    pub freq: Freq,
    /// Every n days or weeks (1-366).
    pub interval: u32,
    /// Weekdays (WEEKLY: which days of each week; DAILY: a filter). Empty: the start's day
    /// for WEEKLY, every day for DAILY.
    pub by_day: Vec<Weekday>,
    /// At most this many occurrences (1-1000).
    pub count: Option<u32>,
    /// No occurrence after this.
    pub until: Option<Until>,
}

/// Why a rule or series is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// Not in the subset, or malformed.
    #[error("recurrence rule: {0}")]
    Rule(String),
    /// An unknown IANA zone name.
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin)")]
    Zone(String),
}

/// Longest series: occurrences a rule may produce before it is refused as unbounded work.
pub const MAX_COUNT: u32 = 1_000;

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn weekday_code(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

/// Parses `YYYYMMDD`, `YYYYMMDDTHHMMSS` or `YYYYMMDDTHHMMSSZ` (iCalendar's basic format).
pub fn parse_ical_time(v: &str) -> Option<Until> {
    if v.len() == 8 {
        return NaiveDate::parse_from_str(v, "%Y%m%d").ok().map(Until::Date);
    }
    if let Some(utc) = v.strip_suffix('Z') {
        return NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
            .ok()
            .map(|t| Until::Utc(t.and_utc()));
    }
    NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
        .ok()
        .map(Until::Local)
}

impl Rule {
    /// Parses an RRULE value (with or without the `RRULE:` prefix).
    pub fn parse(text: &str) -> Result<Rule, RecurrenceError> {
        let err = |m: String| RecurrenceError::Rule(m);
        let text = text.trim();
        let text = text.strip_prefix("RRULE:").unwrap_or(text);
        if text.is_empty() {
            return Err(err("empty".into()));
        }
        let (mut freq, mut interval, mut by_day, mut count, mut until) =
            (None, 1u32, Vec::new(), None, None);
        for part in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not KEY=VALUE")))?;
            match key.to_ascii_uppercase().as_str() {
                "FREQ" => {
                    freq = Some(match value.to_ascii_uppercase().as_str() {
                        "DAILY" => Freq::Daily,
                        "WEEKLY" => Freq::Weekly,
                        other => {
                            return Err(err(format!(
                                "FREQ={other} is not supported (DAILY or WEEKLY)"
                            )));
                        }
                    })
                }
                "INTERVAL" => {
                    interval = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=366).contains(n))
                        .ok_or_else(|| err(format!("INTERVAL={value} must be 1-366")))?
                }
                "BYDAY" => {
                    for code in value.split(',') {
                        let d = weekday(&code.trim().to_ascii_uppercase()).ok_or_else(|| {
                            err(format!(
                                "BYDAY={code} is not supported (MO, TU, WE, TH, FR, SA, SU)"
                            ))
                        })?;
                        if !by_day.contains(&d) {
                            by_day.push(d);
                        }
                    }
                }
                "COUNT" => {
                    count = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|n| (1..=MAX_COUNT).contains(n))
                            .ok_or_else(|| err(format!("COUNT={value} must be 1-{MAX_COUNT}")))?,
                    )
                }
                "UNTIL" => {
                    until = Some(
                        parse_ical_time(value)
                            .ok_or_else(|| err(format!("UNTIL={value} is not a date or time")))?,
                    )
                }
                "WKST" if value.eq_ignore_ascii_case("MO") => {}
                other => return Err(err(format!("{other} is not supported"))),
            }
        }
        let freq = freq.ok_or_else(|| err("FREQ is required".into()))?;
        if count.is_some() && until.is_some() {
            return Err(err("COUNT and UNTIL cannot both be given".into()));
        }
        by_day.sort_by_key(|d| d.num_days_from_monday());
        Ok(Rule {
            freq,
            interval,
            by_day,
            count,
            until,
        })
    }

    /// The rule as an RRULE value (canonical order), as stored and exported.
    pub fn to_rrule(&self) -> String {
        let mut s = format!(
            "FREQ={}",
            match self.freq {
                Freq::Daily => "DAILY",
                Freq::Weekly => "WEEKLY",
            }
        );
        if self.interval != 1 {
            s.push_str(&format!(";INTERVAL={}", self.interval));
        }
        if !self.by_day.is_empty() {
            let days: Vec<&str> = self.by_day.iter().map(|d| weekday_code(*d)).collect();
            s.push_str(&format!(";BYDAY={}", days.join(",")));
        }
        if let Some(c) = self.count {
            s.push_str(&format!(";COUNT={c}"));
        }
        match self.until {
            Some(Until::Date(d)) => s.push_str(&format!(";UNTIL={}", d.format("%Y%m%d"))),
            Some(Until::Local(t)) => s.push_str(&format!(";UNTIL={}", t.format("%Y%m%dT%H%M%S"))),
            Some(Until::Utc(t)) => s.push_str(&format!(";UNTIL={}", t.format("%Y%m%dT%H%M%SZ"))),
            None => {}
        }
        s
    }
}

/// Parses an IANA zone name.
pub fn zone(name: &str) -> Result<Tz, RecurrenceError> {
    name.parse::<Tz>()
        .map_err(|_| RecurrenceError::Zone(name.to_owned()))
}

/// The instant a local wall-clock time in `tz` names: the earlier one in a fold, and the
/// time moved forward by the gap when it falls in one.
pub fn to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    use chrono::LocalResult;
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(early, _) => early.with_timezone(&Utc),
        LocalResult::None => {
            // Interpret with the offset in force before the gap (RFC 5545 §3.3.5): find it an
            // hour or so earlier, where the time exists.
            for back in [1i64, 2, 3, 4] {
                let before = local - Duration::hours(back);
                if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                    tz.from_local_datetime(&before)
                {
                    let offset = t.offset().fix();
                    return (local - Duration::seconds(i64::from(offset.local_minus_utc())))
                        .and_utc();
                }
            }
            local.and_utc()
        }
    }
}

/// One meeting occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// Start on the local wall clock (its identity within the series, as RECURRENCE-ID).
    pub local_start: NaiveDateTime,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant (start plus the series' duration; absolute, so a meeting across a DST
    /// change lasts what it says).
    pub end: DateTime<Utc>,
}

/// A meeting's schedule: its first start, duration, zone, rule and exceptions.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// First start, local.
    pub start: NaiveDateTime,
    /// Length of each occurrence.
    pub duration: Duration,
    /// Zone of `start`, the rule and the exceptions.
    pub tz: Tz,
    /// Recurrence; `None` for a single meeting.
    pub rule: Option<Rule>,
    /// Local starts that do not happen.
    pub exdates: Vec<NaiveDateTime>,
}

/// Candidate local starts a rule may scan past before giving up on a window (bounds the work
/// of a rule whose days never match, or a window far in the future).
const MAX_SCAN: usize = 20_000;

impl Series {
    /// Occurrences whose end is after `from` and whose start is before `to`, in order, at most
    /// `limit`.
    pub fn occurrences(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<Occurrence> {
        let mut out = Vec::new();
        let mut produced = 0u32;
        for (scanned, local) in self.candidates().enumerate() {
            if scanned >= MAX_SCAN || out.len() >= limit {
                break;
            }
            let start = to_utc(self.tz, local);
            if let Some(rule) = &self.rule {
                let past_until = match rule.until {
                    Some(Until::Date(d)) => local.date() > d,
                    Some(Until::Local(t)) => local > t,
                    Some(Until::Utc(t)) => start > t,
                    None => false,
                };
                if past_until || rule.count.is_some_and(|c| produced >= c) {
                    break;
                }
            }
            produced += 1;
            if start >= to {
                break;
            }
            let end = start + self.duration;
            if end > from && !self.exdates.contains(&local) {
                out.push(Occurrence {
                    local_start: local,
                    start,
                    end,
                });
            }
        }
        out
    }

    /// The occurrence starting at `local` (a RECURRENCE-ID), if the series has one.
    pub fn occurrence_at(&self, local: NaiveDateTime) -> Option<Occurrence> {
        let start = to_utc(self.tz, local);
        self.occurrences(start, start + Duration::seconds(1), 1)
            .into_iter()
            .find(|o| o.local_start == local)
    }

    /// Local start times in order: the first start, then what the rule adds.
    fn candidates(&self) -> Box<dyn Iterator<Item = NaiveDateTime> + '_> {
        let first = self.start;
        let Some(rule) = &self.rule else {
            return Box::new(std::iter::once(first));
        };
        let time = first.time();
        let step = i64::from(rule.interval);
        match rule.freq {
            Freq::Daily => Box::new(
                (0i64..)
                    .map(move |n| first.date() + Duration::days(n * step))
                    .filter(move |d| rule.by_day.is_empty() || rule.by_day.contains(&d.weekday()))
                    .map(move |d| d.and_time(time))
                    .filter(move |t| *t >= first),
            ),
            Freq::Weekly => {
                let days = if rule.by_day.is_empty() {
                    vec![first.weekday()]
                } else {
                    rule.by_day.clone()
                };
                let monday = first.date()
                    - Duration::days(i64::from(first.weekday().num_days_from_monday()));
                Box::new(
                    (0i64..)
                        .flat_map(move |w| {
                            let week = monday + Duration::weeks(w * step);
                            days.clone().into_iter().map(move |d| {
                                (week + Duration::days(i64::from(d.num_days_from_monday())))
                                    .and_time(time)
                            })
                        })
                        .filter(move |t| *t >= first),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn series(start: &str, tz: &str, rule: Option<&str>) -> Series {
        Series {
            start: local(start),
            duration: Duration::minutes(30),
            tz: zone(tz).unwrap(),
            rule: rule.map(|r| Rule::parse(r).unwrap()),
            exdates: vec![],
        }
    }
    fn starts(s: &Series, from: &str, to: &str) -> Vec<String> {
        s.occurrences(utc(from), utc(to), 100)
            .iter()
            .map(|o| o.start.to_rfc3339())
            .collect()
    }

    #[test]
    fn a_weekly_berlin_meeting_stays_at_nine_local_across_both_dst_changes() {
        // Europe/Berlin: CEST ends 2026-10-25, CET ends 2027-03-28.
        let s = series("2026-10-19T09:00", "Europe/Berlin", Some("FREQ=WEEKLY"));
        assert_eq!(
            starts(&s, "2026-10-01T00:00:00Z", "2026-11-03T00:00:00Z"),
            [
                "2026-10-19T07:00:00+00:00",
                "2026-10-26T08:00:00+00:00",
                "2026-11-02T08:00:00+00:00"
            ]
        );
        assert_eq!(
            starts(&s, "2027-03-20T00:00:00Z", "2027-04-03T00:00:00Z"),
            ["2027-03-22T08:00:00+00:00", "2027-03-29T07:00:00+00:00"]
        );
    }

    #[test]
    fn new_york_changes_on_other_days_than_berlin() {
        // America/New_York: EDT ends 2026-11-01.
        let s = series("2026-10-28T09:00", "America/New_York", Some("FREQ=DAILY"));
        assert_eq!(
            starts(&s, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
            [
                "2026-10-31T13:00:00+00:00",
                "2026-11-01T14:00:00+00:00",
                "2026-11-02T14:00:00+00:00"
            ]
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_moves_forward_and_a_time_in_the_autumn_fold_is_the_first() {
        let berlin = zone("Europe/Berlin").unwrap();
        // 02:30 on 2027-03-28 does not exist in Berlin: 01:30 UTC (03:30 CEST).
        assert_eq!(
            to_utc(berlin, local("2027-03-28T02:30")),
            utc("2027-03-28T01:30:00Z")
        );
        // 02:30 on 2026-10-25 happens twice: the first is 00:30 UTC (CEST).
        assert_eq!(
            to_utc(berlin, local("2026-10-25T02:30")),
            utc("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn weekly_byday_with_interval_and_count() {
        // Every other week on Monday and Thursday, 5 times, from Thursday 2026-12-03.
        let s = series(
            "2026-12-03T15:00",
            "UTC",
            Some("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=5"),
        );
        assert_eq!(
            starts(&s, "2026-12-01T00:00:00Z", "2027-03-01T00:00:00Z"),
            [
                "2026-12-03T15:00:00+00:00",
                "2026-12-14T15:00:00+00:00",
                "2026-12-17T15:00:00+00:00",
                "2026-12-28T15:00:00+00:00",
                "2026-12-31T15:00:00+00:00"
            ]
        );
    }

    #[test]
    fn daily_byday_is_a_weekday_filter_and_until_is_inclusive() {
        let s = series(
            "2026-12-04T08:30",
            "Europe/London",
            Some("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20261209"),
        );
        assert_eq!(
            starts(&s, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            [
                "2026-12-04T08:30:00+00:00",
                "2026-12-07T08:30:00+00:00",
                "2026-12-08T08:30:00+00:00",
                "2026-12-09T08:30:00+00:00"
            ]
        );
        // UNTIL in UTC compares instants.
        let s = series(
            "2026-12-04T08:30",
            "Europe/Berlin",
            Some("FREQ=DAILY;UNTIL=20261206T073000Z"),
        );
        assert_eq!(
            starts(&s, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            [
                "2026-12-04T07:30:00+00:00",
                "2026-12-05T07:30:00+00:00",
                "2026-12-06T07:30:00+00:00"
            ]
        );
    }

    #[test]
    fn exdates_remove_occurrences_but_count_still_counts_them() {
        let mut s = series("2026-12-07T10:00", "UTC", Some("FREQ=DAILY;COUNT=4"));
        s.exdates = vec![local("2026-12-08T10:00")];
        assert_eq!(
            starts(&s, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            [
                "2026-12-07T10:00:00+00:00",
                "2026-12-09T10:00:00+00:00",
                "2026-12-10T10:00:00+00:00"
            ]
        );
    }

    #[test]
    fn the_window_keeps_an_occurrence_still_running_and_stops_at_its_end() {
        let s = series("2026-12-07T10:00", "UTC", Some("FREQ=DAILY"));
        // At 10:15 on the 8th, the 10:00 occurrence is still on.
        assert_eq!(
            starts(&s, "2026-12-08T10:15:00Z", "2026-12-09T10:00:00Z"),
            ["2026-12-08T10:00:00+00:00"]
        );
        let single = series("2026-12-07T10:00", "UTC", None);
        assert_eq!(
            starts(&single, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ["2026-12-07T10:00:00+00:00"]
        );
        assert!(starts(&single, "2026-12-07T10:30:00Z", "2027-01-01T00:00:00Z").is_empty());
        assert_eq!(
            single.occurrence_at(local("2026-12-07T10:00")).unwrap().end,
            utc("2026-12-07T10:30:00Z")
        );
        assert!(s.occurrence_at(local("2026-12-07T11:00")).is_none());
    }

    #[test]
    fn unsupported_or_malformed_rules_are_refused_with_the_reason() {
        for (rule, says) in [
            ("FREQ=MONTHLY", "FREQ=MONTHLY is not supported"),
            ("FREQ=WEEKLY;BYDAY=1MO", "BYDAY=1MO is not supported"),
            ("FREQ=WEEKLY;INTERVAL=0", "INTERVAL=0 must be 1-366"),
            ("FREQ=DAILY;COUNT=5000", "COUNT=5000 must be 1-1000"),
            ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL=tomorrow is not a date"),
            ("FREQ=DAILY;COUNT=2;UNTIL=20270101", "COUNT and UNTIL"),
            ("INTERVAL=2", "FREQ is required"),
            ("FREQ=DAILY;BYSETPOS=1", "BYSETPOS is not supported"),
            ("FREQ", "is not KEY=VALUE"),
            ("", "empty"),
        ] {
            let e = Rule::parse(rule).unwrap_err().to_string();
            assert!(e.contains(says), "{rule:?}: {e}");
        }
        assert!(zone("Mars/Olympus_Mons").is_err());
    }

    #[test]
    fn rules_print_back_canonically() {
        let r =
            Rule::parse("RRULE:freq=weekly;byday=TH,MO;interval=2;UNTIL=20270301T080000Z").unwrap();
        assert_eq!(
            r.to_rrule(),
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;UNTIL=20270301T080000Z"
        );
        assert_eq!(Rule::parse(&r.to_rrule()).unwrap(), r);
    }

    #[test]
    fn a_rule_that_never_matches_does_bounded_work() {
        // Only Saturdays, from a Monday, every 366 days: matches rarely; the scan is capped.
        let s = series(
            "2026-12-07T10:00",
            "UTC",
            Some("FREQ=DAILY;INTERVAL=366;BYDAY=SA"),
        );
        let got = s.occurrences(utc("2026-12-01T00:00:00Z"), utc("2100-01-01T00:00:00Z"), 5);
        assert!(got.len() <= 5);
    }
}
