//! Time for the server: engine time (a monotonic clock whose zero lies a day before start-up)
//! and its wall time for the wire, and the time zone reports and the command line print in.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use smista_core::Millis;
use tonic::Status;

/// How far engine time zero lies before start-up, and the oldest arrival a client may give.
pub const BACKDATE_MS: u64 = 86_400_000;
/// How far in the future a client's arrival time may be (clock skew), read as now.
pub const ARRIVAL_SKEW_MS: u64 = 5_000;

/// Engine time for the server: milliseconds on a monotonic clock whose zero is one day before
/// start-up (so a contact offered again after a failover can keep an arrival time from before
/// this process started), plus the wall time of that zero for timestamps on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Default for Clock {
    fn default() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Clock { start: Instant::now(), start_unix_ms: unix.saturating_sub(BACKDATE_MS) }
    }
}

impl Clock {
    /// Now, in engine time.
    #[must_use]
    pub fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64 + BACKDATE_MS)
    }

    /// The engine time of an arrival given in Unix ms by a client (0: none), checked: at most
    /// [`ARRIVAL_SKEW_MS`] in the future (read as now), at most [`BACKDATE_MS`] in the past.
    pub fn arrival(&self, arrived_unix_ms: u64, now: Millis) -> Result<Option<Millis>, Status> {
        if arrived_unix_ms == 0 {
            return Ok(None);
        }
        let now_unix = self.unix_ms(now);
        if arrived_unix_ms > now_unix + ARRIVAL_SKEW_MS {
            return Err(Status::invalid_argument(format!(
                "arrived_unix_ms is {} ms in the future",
                arrived_unix_ms - now_unix
            )));
        }
        let ago = now_unix.saturating_sub(arrived_unix_ms);
        if ago > BACKDATE_MS {
            return Err(Status::invalid_argument("arrived_unix_ms is more than one day ago"));
        }
        Ok(Some(Millis(now.0.saturating_sub(ago))))
    }

    /// Engine time as milliseconds since the Unix epoch.
    #[must_use]
    pub fn unix_ms(&self, t: Millis) -> u64 {
        self.start_unix_ms + t.0
    }

    /// The engine time of `unix_ms` (`None` before engine time zero).
    #[must_use]
    pub fn from_unix(&self, unix_ms: i64) -> Option<Millis> {
        u64::try_from(unix_ms).ok()?.checked_sub(self.start_unix_ms).map(Millis)
    }

    /// When a desk says its contact ended (`ended_unix_ms` of CompleteContact or
    /// TransferContact; 0: now), as engine time, at most `now`: a completion delayed by an outage
    /// of ours bills the conversation, not the outage.
    #[must_use]
    pub fn desk_ended(&self, ended_unix_ms: u64, now: Millis) -> Millis {
        match ended_unix_ms {
            0 => now,
            unix => self.from_unix(i64::try_from(unix).unwrap_or(i64::MAX)).map_or(now, |t| t.min(now)),
        }
    }

    /// The wall time of engine time zero, Unix ms.
    #[must_use]
    pub fn epoch_unix_ms(&self) -> i64 {
        i64::try_from(self.start_unix_ms).unwrap_or(i64::MAX)
    }
}

/// The IANA time zone `name` (from the database bundled in the binary, so a container without
/// `/usr/share/zoneinfo` reports in the right zone too).
pub fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|e| format!("[history] time_zone `{name}`: {e}"))
}

/// A time zone as the report builder wants it.
#[derive(Debug, Clone)]
pub struct Tz(pub jiff::tz::TimeZone);

impl smista_core::report::Zone for Tz {
    fn offset_ms(&self, unix_ms: i64) -> i64 {
        jiff::Timestamp::from_millisecond(unix_ms).map_or(0, |t| i64::from(self.0.to_offset(t).seconds()) * 1000)
    }
}

impl Tz {
    /// `unix_ms` on this zone's wall clock, RFC 3339 with its offset (`2026-10-25T02:30:00+01:00`).
    #[must_use]
    pub fn format(&self, unix_ms: i64) -> String {
        jiff::Timestamp::from_millisecond(unix_ms)
            .map(|t| t.to_zoned(self.0.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smista_core::report::{Builder, Record, Zone};

    /// 2026-03-29T01:00:00Z and 2026-10-25T01:00:00Z, the EU's change instants.
    const SPRING: i64 = 1_774_746_000_000;
    const AUTUMN: i64 = 1_792_890_000_000;
    const H: i64 = 3_600_000;

    #[test]
    fn rome_changes_its_clocks_on_the_days_the_eu_rule_says() {
        let rome = Tz(zone("Europe/Rome").expect("bundled tz database"));
        assert_eq!(rome.offset_ms(SPRING - 1), H);
        assert_eq!(rome.offset_ms(SPRING), 2 * H);
        assert_eq!(rome.offset_ms(AUTUMN - 1), 2 * H);
        assert_eq!(rome.offset_ms(AUTUMN), H);
        assert_eq!(rome.format(AUTUMN - H / 2), "2026-10-25T02:30:00+02:00");
        assert_eq!(rome.format(AUTUMN + H / 2), "2026-10-25T02:30:00+01:00");
        assert!(zone("Mars/Olympus").is_err());
    }

    #[test]
    fn a_day_of_half_hours_in_rome_has_46_or_50_rows_on_the_change_days() {
        let rome = Tz(zone("Europe/Rome").expect("zone"));
        // Local midnights: 29 March starts at 23:00Z the day before and lasts 23 h; 25 October
        // starts at 22:00Z the day before and lasts 25 h.
        for (midnight, hours) in [(SPRING - 2 * H, 23), (AUTUMN - 3 * H, 25)] {
            let mut b = Builder::new(1_800_000, &rome, Default::default(), 20_000, 5_000);
            for m in 0..hours * 60 {
                b.add(&Record {
                    arrived_unix_ms: midnight + m * 60_000,
                    first_queue: "naspi",
                    overflowed: false,
                    outcome: smista_core::Outcome::Abandoned,
                    diverted: None,
                    waited_ms: 1_000,
                    handle_ms: 0,
                    wrap_up_ms: 0,
                    group: "",
                    supplier: "",
                    transfers: &[],
                    consultation_of: "",
                });
            }
            let (rows, _) = b.finish();
            assert_eq!(rows.len() as i64, hours * 2);
            assert!(rows.iter().all(|r| r.offered == 30));
            let labels: std::collections::BTreeSet<String> =
                rows.iter().map(|r| rome.format(r.start_unix_ms)).collect();
            assert_eq!(
                labels.len() as i64,
                hours * 2,
                "every interval's label is distinct (offsets tell the repeated hour apart)"
            );
        }
    }
}
