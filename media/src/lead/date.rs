//! Calendar dates without a time zone: enough to resolve "by Friday" or "end of next
//! quarter" against the day of the meeting. Proleptic Gregorian, days counted from
//! 1970-01-01.

use std::fmt;

/// A calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1-12.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` of `year`.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        ((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month))
            .then_some(Date { year, month, day })
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days(self) -> i64 {
        // Count whole years and months from a March-based year, so February's length only
        // matters at the end of a year.
        let (y, m) = if self.month <= 2 {
            (i64::from(self.year) - 1, i64::from(self.month) + 9)
        } else {
            (i64::from(self.year), i64::from(self.month) - 3)
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// `n` days later (earlier if negative).
    pub fn add_days(self, n: i64) -> Date {
        Date::from_days(self.days() + n)
    }

    /// Monday = 0 ... Sunday = 6.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        ((self.days() + 3).rem_euclid(7)) as u32
    }

    /// The last day of this date's month.
    pub fn end_of_month(self) -> Date {
        Date {
            day: days_in_month(self.year, self.month),
            ..self
        }
    }

    /// The first day of the month `n` months later.
    pub fn add_months(self, n: i32) -> Date {
        let index = self.year * 12 + self.month as i32 - 1 + n;
        Date {
            year: index.div_euclid(12),
            month: (index.rem_euclid(12) + 1) as u32,
            day: 1,
        }
    }

    /// Quarter 1-4.
    pub fn quarter(self) -> u32 {
        (self.month - 1) / 3 + 1
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_iso(s: &str) -> Option<Date> {
        let mut it = s.splitn(3, '-');
        let year = it.next()?.parse().ok()?;
        let month = it.next()?.parse().ok()?;
        let day = it.next()?.parse().ok()?;
        Date::new(year, month, day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_days() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().days(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days(), 11_017);
        assert_eq!(Date::new(2026, 12, 1).unwrap().weekday(), 1); // a Tuesday
        for d in [-800_000i64, -1, 0, 59, 60, 11_016, 20_000, 2_932_896] {
            assert_eq!(Date::from_days(d).days(), d);
        }
        assert_eq!(
            Date::new(2028, 2, 28).unwrap().add_days(1),
            Date::new(2028, 2, 29).unwrap()
        );
        assert_eq!(
            Date::new(2026, 12, 31).unwrap().add_days(1),
            Date::new(2027, 1, 1).unwrap()
        );
        assert_eq!(
            Date::new(2026, 11, 15).unwrap().add_months(3),
            Date::new(2027, 2, 1).unwrap()
        );
        assert!(Date::new(2027, 2, 29).is_none());
        assert_eq!(Date::parse_iso("2026-03-31"), Date::new(2026, 3, 31));
    }
}
