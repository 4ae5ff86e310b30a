//! When the lead wants to be live: "by Friday", "end of March", "end of next quarter", "Q2",
//! "in six weeks", "next year", resolved against the day of the meeting into a date.

use super::date::Date;
use super::text::{find_phrase, words};

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn month_of(w: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| {
            *m == w
                || (w.len() == 3 && m.starts_with(w) && w != "may"
                    || w == "sept" && *m == "september")
        })
        .map(|i| i as u32 + 1)
}

fn small_number(w: &str) -> Option<i64> {
    const N: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    match w {
        "a" | "an" => Some(1),
        "couple" => Some(2),
        "few" => Some(3),
        _ => N.iter().position(|n| *n == w).map(|i| i as i64),
    }
}

fn end_of_quarter(year: i32, quarter: u32) -> Date {
    Date::new(year, quarter * 3, 1)
        .expect("valid")
        .end_of_month()
}

/// What an answer says about timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timeline {
    /// A date to be live by.
    By(Date),
    /// Said outright: no timeline.
    NoTimeline,
}

/// The first timing an answer names, resolved against `today` (the meeting's date).
pub fn parse_timeline(text: &str, today: Date) -> Option<Timeline> {
    let w = words(text);
    let has = |p: &str| !find_phrase(&w, p).is_empty();
    for phrase in [
        "no timeline",
        "no rush",
        "no deadline",
        "not sure when",
        "no particular date",
    ] {
        if has(phrase) {
            return Some(Timeline::NoTimeline);
        }
    }
    let mut best: Option<(usize, Date)> = None;
    let mut offer = |pos: usize, d: Date| {
        if best.is_none_or(|(p, _)| pos < p) {
            best = Some((pos, d));
        }
    };
    let this_year_or_next = |month: u32, day: Option<u32>| {
        let year = if month < today.month
            || (month == today.month && day.is_some_and(|d| d < today.day))
        {
            today.year + 1
        } else {
            today.year
        };
        match day {
            Some(d) => Date::new(year, month, d),
            None => Date::new(year, month, 1).map(Date::end_of_month),
        }
    };
    for (i, word) in w.iter().enumerate() {
        let prev = |k: usize| i.checked_sub(k).and_then(|j| w.get(j)).map(String::as_str);
        let next = |k: usize| w.get(i + k).map(String::as_str);
        if let Some(m) = month_of(word) {
            // "may" is a month only after a time word: "by May", "in May", "end of May".
            if word == "may"
                && !matches!(
                    prev(1),
                    Some("by" | "in" | "of" | "until" | "before" | "early" | "mid" | "late")
                )
            {
                continue;
            }
            // "March 15th", "the 15th of March"
            let day_after = next(1).and_then(|d| {
                d.trim_end_matches(|c: char| c.is_alphabetic())
                    .parse::<u32>()
                    .ok()
            });
            let day_before = match (prev(1), prev(2)) {
                (Some("of"), Some(d)) => d
                    .trim_end_matches(|c: char| c.is_alphabetic())
                    .parse::<u32>()
                    .ok(),
                _ => None,
            };
            let day = day_after.or(day_before).filter(|d| (1..=31).contains(d));
            let day = match (day, prev(1)) {
                (Some(d), _) => Some(d),
                (None, Some("early")) => Some(10),
                (None, Some("mid")) => Some(15),
                _ => None,
            };
            if let Some(d) = this_year_or_next(m, day) {
                offer(i, d);
            }
            continue;
        }
        if let Some(wd) = WEEKDAYS.iter().position(|d| d == word) {
            let mut ahead = (wd as i64 - i64::from(today.weekday())).rem_euclid(7);
            if ahead == 0 {
                ahead = 7;
            }
            if prev(1) == Some("next") && ahead < 7 {
                ahead += 7;
            }
            offer(i, today.add_days(ahead));
            continue;
        }
        match word.as_str() {
            "quarter" => {
                let q = today.quarter();
                let (year, quarter) = match prev(1) {
                    Some("next") => {
                        if q == 4 {
                            (today.year + 1, 1)
                        } else {
                            (today.year, q + 1)
                        }
                    }
                    Some("this" | "the" | "current") => (today.year, q),
                    _ => continue,
                };
                offer(i, end_of_quarter(year, quarter));
            }
            // "Q2" is the word "q" and the number 2 to the tokenizer.
            "q" if next(1)
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| (1..=4).contains(&n)) =>
            {
                let quarter: u32 = next(1).unwrap().parse().unwrap();
                let year = match next(2).and_then(|y| y.parse::<i32>().ok()) {
                    Some(y) if y > 2000 => y,
                    _ if next(2) == Some("next") && next(3) == Some("year") => today.year + 1,
                    _ if quarter < today.quarter() => today.year + 1,
                    _ => today.year,
                };
                offer(i, end_of_quarter(year, quarter));
            }
            "month" if matches!(prev(1), Some("next" | "this" | "the")) => match prev(1) {
                Some("next") => offer(i, today.add_months(1).end_of_month()),
                Some("this" | "the") => offer(i, today.end_of_month()),
                _ => {}
            },
            "week" if prev(1) == Some("next") => {
                offer(i, today.add_days(7 + 4 - i64::from(today.weekday())));
            }
            "year" => match (prev(1), prev(2)) {
                (Some("next"), Some("early")) => offer(i, end_of_quarter(today.year + 1, 1)),
                (Some("next"), _) => offer(i, Date::new(today.year + 1, 12, 31).unwrap()),
                (Some("this" | "the"), _) => offer(i, Date::new(today.year, 12, 31).unwrap()),
                _ => {}
            },
            "days" | "day" | "weeks" | "week" | "months" | "month"
                if prev(2) == Some("in") || prev(3) == Some("in") =>
            {
                let n = prev(1).and_then(|n| {
                    n.parse::<f64>()
                        .ok()
                        .map(|f| f as i64)
                        .or_else(|| small_number(n))
                });
                let n = n.or_else(|| prev(2).and_then(small_number));
                if let Some(n) = n {
                    let d = match word.as_str() {
                        "days" | "day" => today.add_days(n),
                        "weeks" | "week" => today.add_days(7 * n),
                        _ => {
                            let first = today.add_months(n as i32);
                            Date::new(
                                first.year,
                                first.month,
                                today
                                    .day
                                    .min(super::date::days_in_month(first.year, first.month)),
                            )
                            .unwrap_or(first)
                        }
                    };
                    offer(i, d);
                }
            }
            "asap" => offer(i, today.add_days(30)),
            "soon" if prev(2) == Some("as") && prev(1) == Some("as") => {
                offer(i, today.add_days(30))
            }
            _ => {}
        }
    }
    best.map(|(_, d)| Timeline::By(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(y: i32, m: u32, d: u32) -> Date {
        Date::new(y, m, d).unwrap()
    }

    #[test]
    fn resolves_against_the_meeting_day() {
        let today = on(2026, 12, 1); // a Tuesday
        let by = |s: &str| parse_timeline(s, today);
        assert_eq!(
            by("We want it live by the end of March."),
            Some(Timeline::By(on(2027, 3, 31)))
        );
        assert_eq!(by("by Friday"), Some(Timeline::By(on(2026, 12, 4))));
        assert_eq!(
            by("end of next quarter"),
            Some(Timeline::By(on(2027, 3, 31)))
        );
        assert_eq!(
            by("end of this quarter"),
            Some(Timeline::By(on(2026, 12, 31)))
        );
        assert_eq!(
            by("Q2 2027 at the latest"),
            Some(Timeline::By(on(2027, 6, 30)))
        );
        assert_eq!(by("in six weeks"), Some(Timeline::By(on(2027, 1, 12))));
        assert_eq!(by("in 3 months"), Some(Timeline::By(on(2027, 3, 1))));
        assert_eq!(by("in a month or so"), Some(Timeline::By(on(2027, 1, 1))));
        assert_eq!(by("early next year"), Some(Timeline::By(on(2027, 3, 31))));
        assert_eq!(
            by("February 15th would be ideal"),
            Some(Timeline::By(on(2027, 2, 15)))
        );
        assert_eq!(by("There's no rush really."), Some(Timeline::NoTimeline));
        assert_eq!(by("We may look at it."), None);
        assert_eq!(by("We have forty people."), None);
    }
}
