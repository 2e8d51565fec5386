//! Civil-calendar arithmetic on Unix milliseconds (UTC), without a time library: month
//! boundaries for monthly budget periods and the hour of the week for pacing profiles.

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), after H. Hinnant's algorithm.
#[must_use]
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
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
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// The calendar month containing `unix_ms`: (start, end) in Unix ms and its label `YYYY-MM`.
#[must_use]
pub(crate) fn month_of(unix_ms: i64) -> (i64, i64, String) {
    let (y, m, _) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    let start = days_from_civil(y, m, 1) * MS_PER_DAY;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = days_from_civil(ny, nm, 1) * MS_PER_DAY;
    (start, end, format!("{y:04}-{m:02}"))
}

/// Hour of the week, Monday 00:00 UTC = 0 .. Sunday 23:00 = 167.
#[must_use]
pub(crate) fn hour_of_week(unix_ms: i64) -> usize {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let weekday_from_monday = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday
    let hour = unix_ms.rem_euclid(MS_PER_DAY) / 3_600_000;
    (weekday_from_monday * 24 + hour) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_weekdays() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // 2026-11-24 12:00 UTC
        let t = days_from_civil(2026, 11, 24) * MS_PER_DAY + 12 * 3_600_000;
        let (s, e, label) = month_of(t);
        assert_eq!(label, "2026-11");
        assert_eq!(s, days_from_civil(2026, 11, 1) * MS_PER_DAY);
        assert_eq!(e - s, 30 * MS_PER_DAY);
        assert_eq!(month_of(days_from_civil(2026, 12, 31) * MS_PER_DAY).2, "2026-12");
        // 2026-11-24 is a Tuesday.
        assert_eq!(hour_of_week(t), 24 + 12);
        assert_eq!(hour_of_week(0), 3 * 24); // Thursday 00:00
    }
}
