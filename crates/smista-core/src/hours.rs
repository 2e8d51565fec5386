//! Opening hours of a queue (service line) on the centre's wall clock: weekly hours, Italian
//! national holidays, closures and extra openings by date.
//!
//! ```toml
//! [queues.hours]
//! weekly = ["mon-fri 08:00-18:00", "sat 08:00-13:00"]   # empty: around the clock
//! national_holidays = true                             # closed on Italian public holidays
//! closed = ["2026-12-24", "06-29"]                     # a date, or a day every year
//! open = ["2026-12-27 09:00-13:00"]                    # replaces that date's hours
//! ```
//!
//! A date in `open` has exactly the hours it lists, holiday or not. Otherwise a date that is a
//! national holiday (when `national_holidays`) or in `closed` has none, and any other date has
//! its weekday's hours. Times are local (the centre's [`Zone`]); an opening at a time the clocks
//! skip opens when they reach it, and "24:00" ends a day. A range may not cross midnight: write
//! `mon 22:00-24:00` and `tue 00:00-02:00`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::calendar::{
    civil_from_days, days_from_civil, italian_holiday, to_local, to_unix, weekday, Zone, MS_PER_DAY,
};

/// The furthest ahead [`Hours::next_open`] looks, in days.
const HORIZON_DAYS: i64 = 400;

/// Opening hours as configured (see the module docs for the syntax).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// Weekly hours: `"<days> <HH:MM-HH:MM>..."`, days as `mon`..`sun`, ranges `mon-fri` and
    /// lists `mon,wed`. Empty: open around the clock on every date that is not closed.
    #[serde(default)]
    pub weekly: Vec<String>,
    /// Closed on Italian national public holidays (default true).
    #[serde(default = "yes")]
    pub national_holidays: bool,
    /// Further closed dates: `YYYY-MM-DD`, or `MM-DD` for every year (a patron saint's day).
    #[serde(default)]
    pub closed: Vec<String>,
    /// Extra openings: `"YYYY-MM-DD HH:MM-HH:MM..."`, replacing that date's hours.
    #[serde(default)]
    pub open: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for HoursConfig {
    fn default() -> Self {
        HoursConfig { weekly: Vec::new(), national_holidays: true, closed: Vec::new(), open: Vec::new() }
    }
}

/// Local minutes since midnight, `[start, end)`.
type Range = (u32, u32);

/// Parsed opening hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hours {
    weekly: [Vec<Range>; 7],
    national_holidays: bool,
    closed_dates: BTreeSet<i64>,
    closed_every_year: BTreeSet<(u32, u32)>,
    open_dates: BTreeMap<i64, Vec<Range>>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(s: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("`{}` is not a day (mon..sun)", crate::error::clip(s)))
}

fn minutes(s: &str) -> Result<u32, String> {
    let bad = || format!("`{}` is not a time HH:MM", crate::error::clip(s));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) || s.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn ranges<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<Vec<Range>, String> {
    let mut out: Vec<Range> = Vec::new();
    for t in tokens.flat_map(|t| t.split(',')).filter(|t| !t.is_empty()) {
        let (a, b) =
            t.split_once('-').ok_or_else(|| format!("`{}` is not a range HH:MM-HH:MM", crate::error::clip(t)))?;
        let (a, b) = (minutes(a)?, minutes(b)?);
        if a >= b {
            return Err(format!("`{}` ends before it starts (a range may not cross midnight)", crate::error::clip(t)));
        }
        out.push((a, b));
    }
    if out.is_empty() {
        return Err("no time range".into());
    }
    out.sort_unstable();
    if out.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err("overlapping time ranges".into());
    }
    Ok(out)
}

/// `YYYY-MM-DD` as a day count, checked.
fn date(s: &str) -> Result<i64, String> {
    let bad = || format!("`{}` is not a date YYYY-MM-DD", crate::error::clip(s));
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i64, u32, u32) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    let days = days_from_civil(y, m, d);
    if !(1..=12).contains(&m) || civil_from_days(days) != (y, m, d) {
        return Err(bad());
    }
    Ok(days)
}

fn month_day(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{}` is not a date YYYY-MM-DD or MM-DD", crate::error::clip(s));
    let (m, d) = s.split_once('-').ok_or_else(bad)?;
    let (m, d): (u32, u32) = (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    // 2024 is a leap year: 02-29 is a valid day that exists only in leap years.
    if m.to_string().len() > 2 || civil_from_days(days_from_civil(2024, m, d)) != (2024, m, d) {
        return Err(bad());
    }
    Ok((m, d))
}

impl Hours {
    /// Parses `cfg`; the error names the offending entry.
    pub fn parse(cfg: &HoursConfig) -> Result<Hours, String> {
        let mut weekly: [Vec<Range>; 7] = Default::default();
        let mut set = [false; 7];
        for line in &cfg.weekly {
            let ctx = |e: String| format!("weekly `{}`: {e}", crate::error::clip(line));
            let mut tokens = line.split_whitespace();
            let days = tokens.next().ok_or_else(|| ctx("empty".into()))?;
            let rs = ranges(tokens).map_err(ctx)?;
            for part in days.split(',') {
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) => (day_index(a).map_err(ctx)?, day_index(b).map_err(ctx)?),
                    None => {
                        let d = day_index(part).map_err(ctx)?;
                        (d, d)
                    }
                };
                if a > b {
                    return Err(ctx(format!(
                        "`{}` runs backwards (write mon-fri, not fri-mon)",
                        crate::error::clip(part)
                    )));
                }
                for d in a..=b {
                    if set[d] {
                        return Err(ctx(format!("{} is given twice", DAYS[d])));
                    }
                    set[d] = true;
                    weekly[d].clone_from(&rs);
                }
            }
        }
        if cfg.weekly.is_empty() {
            weekly = std::array::from_fn(|_| vec![(0, 24 * 60)]);
        }
        let mut closed_dates = BTreeSet::new();
        let mut closed_every_year = BTreeSet::new();
        for c in &cfg.closed {
            let ctx = |e: String| format!("closed `{}`: {e}", crate::error::clip(c));
            if c.len() == 5 {
                closed_every_year.insert(month_day(c).map_err(ctx)?);
            } else {
                closed_dates.insert(date(c).map_err(ctx)?);
            }
        }
        let mut open_dates = BTreeMap::new();
        for o in &cfg.open {
            let ctx = |e: String| format!("open `{}`: {e}", crate::error::clip(o));
            let mut tokens = o.split_whitespace();
            let day = date(tokens.next().unwrap_or_default()).map_err(ctx)?;
            if open_dates.insert(day, ranges(tokens).map_err(ctx)?).is_some() {
                return Err(ctx("date given twice".into()));
            }
        }
        Ok(Hours { weekly, national_holidays: cfg.national_holidays, closed_dates, closed_every_year, open_dates })
    }

    /// The opening ranges of a local date (day count).
    fn ranges_on(&self, day: i64) -> &[Range] {
        if let Some(r) = self.open_dates.get(&day) {
            return r;
        }
        let (y, m, d) = civil_from_days(day);
        if self.closed_dates.contains(&day)
            || self.closed_every_year.contains(&(m, d))
            || (self.national_holidays && italian_holiday(y, m, d))
        {
            return &[];
        }
        &self.weekly[weekday(day) as usize]
    }

    /// Whether the queue is open at `unix_ms`.
    #[must_use]
    pub fn is_open(&self, unix_ms: i64, zone: &dyn Zone) -> bool {
        let local = to_local(unix_ms, zone);
        let minute = (local.rem_euclid(MS_PER_DAY) / 60_000) as u32;
        self.ranges_on(local.div_euclid(MS_PER_DAY)).iter().any(|&(a, b)| a <= minute && minute < b)
    }

    /// The next instant at or after `unix_ms` at which the queue is open (`unix_ms` itself if it
    /// is open then), or `None` if it does not open within about a year.
    #[must_use]
    pub fn next_open(&self, unix_ms: i64, zone: &dyn Zone) -> Option<i64> {
        if self.is_open(unix_ms, zone) {
            return Some(unix_ms);
        }
        let local = to_local(unix_ms, zone);
        let today = local.div_euclid(MS_PER_DAY);
        for day in today..today + HORIZON_DAYS {
            for &(a, b) in self.ranges_on(day) {
                let start = to_unix(day * MS_PER_DAY + i64::from(a) * 60_000, zone);
                let end = to_unix(day * MS_PER_DAY + i64::from(b) * 60_000, zone);
                if start > unix_ms && end > start {
                    return Some(start);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::CentralEurope;

    const H: i64 = 3_600_000;

    fn rome(y: i64, m: u32, d: u32, hh: i64, mm: i64) -> i64 {
        to_unix(days_from_civil(y, m, d) * MS_PER_DAY + hh * H + mm * 60_000, &CentralEurope)
    }

    fn office() -> Hours {
        Hours::parse(&HoursConfig {
            weekly: vec!["mon-fri 08:00-18:00".into(), "sat 08:00-13:00".into()],
            closed: vec!["06-29".into(), "2026-12-24".into()],
            open: vec!["2026-12-27 09:00-12:00".into()],
            ..HoursConfig::default()
        })
        .expect("valid hours")
    }

    #[test]
    fn weekly_hours_on_the_local_clock() {
        let h = office();
        let z = CentralEurope;
        // Thursday 26 November 2026.
        assert!(!h.is_open(rome(2026, 11, 26, 7, 59), &z));
        assert!(h.is_open(rome(2026, 11, 26, 8, 0), &z));
        assert!(h.is_open(rome(2026, 11, 26, 17, 59), &z));
        assert!(!h.is_open(rome(2026, 11, 26, 18, 0), &z));
        assert_eq!(h.next_open(rome(2026, 11, 26, 18, 0), &z), Some(rome(2026, 11, 27, 8, 0)));
        // Saturday afternoon: next is Monday 08:00.
        assert_eq!(h.next_open(rome(2026, 11, 28, 13, 0), &z), Some(rome(2026, 11, 30, 8, 0)));
    }

    #[test]
    fn holidays_closures_and_openings() {
        let h = office();
        let z = CentralEurope;
        // Christmas Eve (closure), Christmas and St Stephen (holidays), Sunday 27 opened 09-12.
        assert_eq!(h.next_open(rome(2026, 12, 23, 19, 0), &z), Some(rome(2026, 12, 27, 9, 0)));
        assert!(!h.is_open(rome(2026, 12, 25, 10, 0), &z));
        assert_eq!(h.next_open(rome(2026, 12, 27, 12, 0), &z), Some(rome(2026, 12, 28, 8, 0)));
        // Epiphany 2027 is a Wednesday.
        assert!(!h.is_open(rome(2027, 1, 6, 10, 0), &z));
        assert_eq!(h.next_open(rome(2027, 1, 6, 10, 0), &z), Some(rome(2027, 1, 7, 8, 0)));
        // Easter Monday 2027 (29 March), the day after the clocks go forward.
        assert!(!h.is_open(rome(2027, 3, 29, 10, 0), &z));
        assert_eq!(h.next_open(rome(2027, 3, 27, 13, 0), &z), Some(rome(2027, 3, 30, 8, 0)));
        // Every year's 29 June.
        assert!(!h.is_open(rome(2027, 6, 29, 10, 0), &z));
        // Without national holidays, Christmas is an ordinary Friday.
        let plain = Hours::parse(&HoursConfig {
            weekly: vec!["mon-fri 08:00-18:00".into()],
            national_holidays: false,
            ..HoursConfig::default()
        })
        .expect("valid");
        assert!(plain.is_open(rome(2026, 12, 25, 10, 0), &z));
    }

    #[test]
    fn opening_across_summer_time_changes() {
        let z = CentralEurope;
        let h = Hours::parse(&HoursConfig {
            weekly: vec!["mon-sun 08:00-20:00".into()],
            national_holidays: false,
            ..HoursConfig::default()
        })
        .expect("valid");
        // Sunday 28 March 2027 opens at 08:00 CEST = 06:00 UTC; the day before at 07:00 UTC.
        let day = days_from_civil(2027, 3, 28) * MS_PER_DAY;
        assert_eq!(h.next_open(day - 4 * H, &z), Some(day + 6 * H));
        assert_eq!(h.next_open(day - 24 * H, &z), Some(day - 24 * H + 7 * H));
        // Sunday 31 October 2027: 08:00 CET = 07:00 UTC, closes at 19:00 UTC.
        let day = days_from_civil(2027, 10, 31) * MS_PER_DAY;
        assert_eq!(h.next_open(day, &z), Some(day + 7 * H));
        assert!(h.is_open(day + 19 * H - 1, &z));
        assert!(!h.is_open(day + 19 * H, &z));
        // Hours inside the skipped hour open when the clock reaches the end of the gap.
        let night = Hours::parse(&HoursConfig {
            weekly: vec!["sun 02:30-04:00".into()],
            national_holidays: false,
            ..HoursConfig::default()
        })
        .expect("valid");
        let day = days_from_civil(2027, 3, 28) * MS_PER_DAY;
        assert_eq!(night.next_open(day - 2 * H, &z), Some(day + H + 30 * 60_000));
    }

    #[test]
    fn bad_hours_name_the_entry() {
        let bad = |weekly: &[&str], closed: &[&str], open: &[&str]| {
            Hours::parse(&HoursConfig {
                weekly: weekly.iter().map(|s| (*s).to_owned()).collect(),
                closed: closed.iter().map(|s| (*s).to_owned()).collect(),
                open: open.iter().map(|s| (*s).to_owned()).collect(),
                national_holidays: true,
            })
            .expect_err("must not parse")
        };
        assert!(bad(&["mon-fri 8-18"], &[], &[]).contains("`8` is not a time"));
        assert!(bad(&["fri-mon 08:00-18:00"], &[], &[]).contains("runs backwards"));
        assert!(bad(&["mon 22:00-02:00"], &[], &[]).contains("cross midnight"));
        assert!(bad(&["mon 08:00-12:00 11:00-13:00"], &[], &[]).contains("overlapping"));
        assert!(bad(&["mon 08:00-12:00", "mon-fri 14:00-18:00"], &[], &[]).contains("mon is given twice"));
        assert!(bad(&["mon"], &[], &[]).contains("no time range"));
        assert!(bad(&["xyz 08:00-12:00"], &[], &[]).contains("not a day"));
        assert!(bad(&[], &["2027-02-29"], &[]).contains("not a date"));
        assert!(bad(&[], &["13-01"], &[]).contains("not a date"));
        assert!(bad(&[], &[], &["2026-12-27"]).contains("no time range"));
        assert!(bad(&[], &[], &["2026-12-27 25:00-26:00"]).contains("not a time"));
        // Around the clock, and 24:00 ends a day.
        let all = Hours::parse(&HoursConfig::default()).expect("valid");
        assert!(all.is_open(rome(2026, 11, 26, 3, 0), &CentralEurope));
        assert!(Hours::parse(&HoursConfig { weekly: vec!["mon 20:00-24:00".into()], ..Default::default() }).is_ok());
    }
}
