//! `[history]`: how long contact records are kept and the time zone of the interval reports.

use crate::clock::zone;
use serde::Deserialize;

/// `[history]`: the contact history and its reports.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySection {
    /// Keep the contact history (on by default). Off, contacts are not followed and their end
    /// records are written only when no cost record tells how they ended (what idempotent
    /// replies after a restart need): no interval reports, no detail. For measuring what the
    /// history costs, and for a centre that keeps its records elsewhere.
    pub enabled: bool,
    /// Contact detail records older than this (by their end) are purged, days. 0 keeps them for
    /// ever.
    pub retention_days: u32,
    /// Keep the caller's keyed hash (`caller_key`) in the records (off by default: the records
    /// then hold no caller data at all).
    pub keep_caller_key: bool,
    /// The centre's time zone (IANA name): interval reports follow its wall clock.
    pub time_zone: String,
    /// Default interval of reports, minutes (a divisor of a day: 5, 10, 15, 20, 30, 60...).
    pub interval_minutes: u32,
    /// Callers who hang up within this wait are *short abandons*, counted apart, ms.
    pub short_abandon_ms: u64,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            enabled: true,
            retention_days: 400,
            keep_caller_key: false,
            time_zone: "Europe/Rome".into(),
            interval_minutes: 30,
            short_abandon_ms: 5_000,
        }
    }
}

impl HistorySection {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        zone(&self.time_zone)?;
        if !(1..=1440).contains(&self.interval_minutes) || 1440 % self.interval_minutes != 0 {
            return Err(format!(
                "[history] interval_minutes = {}: must divide a day (5, 10, 15, 30, 60...)",
                self.interval_minutes
            ));
        }
        if self.short_abandon_ms > 3_600_000 {
            return Err("[history] short_abandon_ms: at most an hour".into());
        }
        Ok(())
    }
}
