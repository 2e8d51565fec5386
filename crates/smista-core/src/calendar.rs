//! The centre's civil calendar, on Unix milliseconds and without a time library: time zones as
//! a [`Zone`] (an offset from UTC at an instant), local dates and weekdays, calendar months for
//! monthly budget periods, the local hour of the week for pacing profiles, Easter and the Italian
//! national holidays for opening hours.
//!
//! The server gives the engine and the budget book the IANA zone it is configured with
//! (`Europe/Rome` by default); [`CentralEurope`] is the same rule computed here (the EU summer
//! time rule, in force since 1996), for tests and for a core used without the server.

use std::fmt;

pub(crate) const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// A time zone: the offset of local time from UTC at an instant.
pub trait Zone: Send + Sync + fmt::Debug {
    /// Local time minus UTC at `unix_ms`, in milliseconds (e.g. +3,600,000 in Rome in winter).
    fn offset_ms(&self, unix_ms: i64) -> i64;
}

/// UTC (and any fixed offset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FixedOffset(pub i64);

impl Zone for FixedOffset {
    fn offset_ms(&self, _unix_ms: i64) -> i64 {
        self.0
    }
}

/// Central European Time with the EU summer time rule: UTC+1, and UTC+2 from the last Sunday of
/// March 01:00 UTC to the last Sunday of October 01:00 UTC. Equal to `Europe/Rome` from 1996 on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CentralEurope;

impl Zone for CentralEurope {
    fn offset_ms(&self, unix_ms: i64) -> i64 {
        let (y, _, _) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
        let start = last_sunday(y, 3) * MS_PER_DAY + MS_PER_HOUR;
        let end = last_sunday(y, 10) * MS_PER_DAY + MS_PER_HOUR;
        if (start..end).contains(&unix_ms) {
            2 * MS_PER_HOUR
        } else {
            MS_PER_HOUR
        }
    }
}

/// Day count of the last Sunday of a month.
fn last_sunday(y: i64, m: u32) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let last = days_from_civil(ny, nm, 1) - 1;
    last - i64::from((weekday(last) + 1) % 7)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), after H. Hinnant's algorithm.
#[must_use]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Weekday of a day count: Monday = 0 .. Sunday = 6 (1970-01-01 was a Thursday).
#[must_use]
pub fn weekday(days: i64) -> u32 {
    (days + 3).rem_euclid(7) as u32
}

/// Local wall-clock milliseconds (as if UTC) of an instant.
#[must_use]
pub fn to_local(unix_ms: i64, zone: &dyn Zone) -> i64 {
    unix_ms + zone.offset_ms(unix_ms)
}

/// The instant at which the local wall clock of `zone` reads `local_ms`. A local time the clocks
/// skip (the hour lost in spring) maps to the instant one offset change later, i.e. the wall
/// clock's reading after the change; a repeated one (autumn) maps to its first occurrence.
#[must_use]
pub fn to_unix(local_ms: i64, zone: &dyn Zone) -> i64 {
    let guess = local_ms - zone.offset_ms(local_ms - MS_PER_DAY / 2);
    let second = local_ms - zone.offset_ms(guess);
    // Prefer the earlier instant when both readings are valid (the repeated autumn hour).
    [guess.min(second), guess.max(second)]
        .into_iter()
        .find(|&u| to_local(u, zone) == local_ms)
        .unwrap_or(guess.max(second))
}

/// The local calendar month containing `unix_ms`: (start, end) in Unix ms and its label `YYYY-MM`.
#[must_use]
pub(crate) fn month_of(unix_ms: i64, zone: &dyn Zone) -> (i64, i64, String) {
    let (y, m, _) = civil_from_days(to_local(unix_ms, zone).div_euclid(MS_PER_DAY));
    let start = to_unix(days_from_civil(y, m, 1) * MS_PER_DAY, zone);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = to_unix(days_from_civil(ny, nm, 1) * MS_PER_DAY, zone);
    (start, end, format!("{y:04}-{m:02}"))
}

/// Local hour of the week, Monday 00:00 = 0 .. Sunday 23:00 = 167.
#[must_use]
pub(crate) fn hour_of_week(unix_ms: i64, zone: &dyn Zone) -> usize {
    let local = to_local(unix_ms, zone);
    let hour = local.rem_euclid(MS_PER_DAY) / MS_PER_HOUR;
    (weekday(local.div_euclid(MS_PER_DAY)) as i64 * 24 + hour) as usize
}

/// Easter Sunday of year `y` (Gregorian; the anonymous algorithm of Meeus, Jones and Butcher).
#[must_use]
pub fn easter(y: i64) -> (u32, u32) {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    (month as u32, day as u32)
}

/// Whether a local date is an Italian national public holiday: New Year, Epiphany (6 January),
/// Easter Sunday and Monday, Liberation Day (25 April), Labour Day (1 May), Republic Day
/// (2 June), Assumption (15 August), St Francis (4 October, again a national holiday from 2026,
/// law 151/2025), All Saints (1 November), Immaculate Conception (8 December), Christmas and
/// St Stephen (25 and 26 December). Local patron saints' days are not national: configure them
/// as closures.
#[must_use]
pub fn italian_holiday(y: i64, m: u32, d: u32) -> bool {
    let fixed = matches!(
        (m, d),
        (1, 1) | (1, 6) | (4, 25) | (5, 1) | (6, 2) | (8, 15) | (11, 1) | (12, 8) | (12, 25) | (12, 26)
    );
    if fixed || (y >= 2026 && (m, d) == (10, 4)) {
        return true;
    }
    let (em, ed) = easter(y);
    let sunday = days_from_civil(y, em, ed);
    let day = days_from_civil(y, m, d);
    day == sunday || day == sunday + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_weekdays() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        let utc = FixedOffset(0);
        // 2026-11-24 12:00 UTC
        let t = days_from_civil(2026, 11, 24) * MS_PER_DAY + 12 * 3_600_000;
        let (s, e, label) = month_of(t, &utc);
        assert_eq!(label, "2026-11");
        assert_eq!(s, days_from_civil(2026, 11, 1) * MS_PER_DAY);
        assert_eq!(e - s, 30 * MS_PER_DAY);
        assert_eq!(month_of(days_from_civil(2026, 12, 31) * MS_PER_DAY, &utc).2, "2026-12");
        // 2026-11-24 is a Tuesday.
        assert_eq!(hour_of_week(t, &utc), 24 + 12);
        assert_eq!(hour_of_week(0, &utc), 3 * 24); // Thursday 00:00
        assert_eq!(hour_of_week(t, &CentralEurope), 24 + 13);
    }

    #[test]
    fn months_follow_the_local_clock() {
        // In Rome, November starts at 2026-10-31 23:00 UTC and ends at 2026-11-30 23:00 UTC.
        let t = days_from_civil(2026, 10, 31) * MS_PER_DAY + 23 * MS_PER_HOUR + 30 * 60_000;
        let (s, e, label) = month_of(t, &CentralEurope);
        assert_eq!(label, "2026-11");
        assert_eq!(s, days_from_civil(2026, 10, 31) * MS_PER_DAY + 23 * MS_PER_HOUR);
        assert_eq!(e, days_from_civil(2026, 11, 30) * MS_PER_DAY + 23 * MS_PER_HOUR);
        // April starts at 22:00 UTC on 31 March (summer time).
        let (s, _, label) = month_of(days_from_civil(2027, 4, 1) * MS_PER_DAY, &CentralEurope);
        assert_eq!((label.as_str(), s), ("2027-04", days_from_civil(2027, 3, 31) * MS_PER_DAY + 22 * MS_PER_HOUR));
    }

    #[test]
    fn summer_time_changes() {
        let z = CentralEurope;
        // 2027: last Sunday of March is the 28th, of October the 31st.
        let spring = days_from_civil(2027, 3, 28) * MS_PER_DAY + MS_PER_HOUR;
        assert_eq!(z.offset_ms(spring - 1), MS_PER_HOUR);
        assert_eq!(z.offset_ms(spring), 2 * MS_PER_HOUR);
        let autumn = days_from_civil(2027, 10, 31) * MS_PER_DAY + MS_PER_HOUR;
        assert_eq!(z.offset_ms(autumn - 1), 2 * MS_PER_HOUR);
        assert_eq!(z.offset_ms(autumn), MS_PER_HOUR);
        // 02:30 local does not exist on 28 March 2027: read as 03:30 (01:30 UTC).
        let local = days_from_civil(2027, 3, 28) * MS_PER_DAY + 2 * MS_PER_HOUR + 30 * 60_000;
        assert_eq!(to_unix(local, &z), spring + 30 * 60_000);
        // 02:30 local happens twice on 31 October 2027: the first one (00:30 UTC).
        let local = days_from_civil(2027, 10, 31) * MS_PER_DAY + 2 * MS_PER_HOUR + 30 * 60_000;
        assert_eq!(to_unix(local, &z), autumn - 30 * 60_000);
        // Ordinary times round-trip.
        for h in 0..48 {
            let u = days_from_civil(2027, 3, 27) * MS_PER_DAY + h * MS_PER_HOUR + 17;
            assert_eq!(to_unix(to_local(u, &z), &z), u, "hour {h}");
        }
    }

    #[test]
    fn easter_and_holidays() {
        assert_eq!(easter(2024), (3, 31));
        assert_eq!(easter(2025), (4, 20));
        assert_eq!(easter(2026), (4, 5));
        assert_eq!(easter(2027), (3, 28));
        assert_eq!(easter(2038), (4, 25));
        assert!(italian_holiday(2027, 3, 29)); // Easter Monday 2027
        assert!(!italian_holiday(2027, 3, 30));
        assert!(italian_holiday(2027, 1, 6));
        assert!(italian_holiday(2026, 12, 25));
        assert!(italian_holiday(2026, 10, 4));
        assert!(!italian_holiday(2025, 10, 4));
        assert!(!italian_holiday(2026, 11, 26));
    }
}
