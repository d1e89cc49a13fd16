//! UTC timestamps from the system clock, without a calendar dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_milliseconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A UTC calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1 to 12.
    pub month: i64,
    /// Day of the month, 1 to 31.
    pub day: i64,
    /// Hour, 0 to 23.
    pub hour: i64,
    /// Minute, 0 to 59.
    pub minute: i64,
    /// Second, 0 to 59.
    pub second: i64,
}

impl Utc {
    /// The calendar time of `milliseconds` since the Unix epoch.
    pub fn from_milliseconds(milliseconds: i64) -> Self {
        let seconds = milliseconds.div_euclid(1000);
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        // Civil-from-days (H. Hinnant), exact for the proleptic Gregorian
        // calendar: eras of 400 years, years starting in March.
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        Utc {
            year: year_of_era + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: of_day / 3600,
            minute: of_day % 3600 / 60,
            second: of_day % 60,
        }
    }

    /// Now.
    pub fn now() -> Self {
        Self::from_milliseconds(now_milliseconds())
    }

    /// `YYYY-MM-DD HH:MM:SS`.
    pub fn readable(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `YYYYMMDD-HHMMSS`, for names that sort by time.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for milliseconds since the Unix epoch.
pub fn format_utc(milliseconds: i64) -> String {
    Utc::from_milliseconds(milliseconds).readable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_709_251_199_000), "2024-02-29 23:59:59");
        assert_eq!(format_utc(-1000), "1969-12-31 23:59:59");
        assert_eq!(format_utc(1_795_872_896_789), "2026-11-28 13:34:56");
        assert_eq!(
            Utc::from_milliseconds(1_796_428_800_000).compact(),
            "20261205-000000"
        );
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // Walk about 1,000 years day by day from 1670: the calendar never
        // skips or repeats a day, and months have their Gregorian lengths.
        let start = -86_400_000 * 365 * 300;
        let mut previous = Utc::from_milliseconds(start);
        for step in 1..(366 * 1000) {
            let day = Utc::from_milliseconds(start + step * 86_400_000);
            if day.day == 1 {
                assert_eq!(
                    previous.day,
                    days_in_month(previous.year, previous.month),
                    "{previous:?} -> {day:?}"
                );
                let (year, month) = if previous.month == 12 {
                    (previous.year + 1, 1)
                } else {
                    (previous.year, previous.month + 1)
                };
                assert_eq!(
                    (day.year, day.month),
                    (year, month),
                    "{previous:?} -> {day:?}"
                );
            } else {
                assert_eq!(
                    (day.year, day.month, day.day),
                    (previous.year, previous.month, previous.day + 1)
                );
            }
            previous = day;
        }
    }
}
