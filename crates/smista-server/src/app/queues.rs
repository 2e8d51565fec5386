//! Queue settings that admins change at run time (`UpdateQueue`, `SetQueueOpen`), made durable:
//! each change is merged into the queue's *override* (what differs from the configuration
//! file, as it now stands), recorded in the ledger with an audit record naming the principal,
//! and re-applied over the configuration at start-up, so a restart or a failover starts from
//! what the admins last set.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use smista_core::config::{ExpansionStep, SkillRequirement, Strategy};
use smista_core::hours::HoursConfig;
use smista_core::snapshot::QueueUpdate;
use smista_core::Fallback;

/// A queue's settings changed by admins (unset: as configured), stored as TOML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueOverride {
    /// Opened or closed by an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<bool>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrap_up_ms: Option<u64>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_timeout_ms: Option<u64>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<SkillRequirement>>,
    /// Opening hours set by an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursConfig>,
    /// Opening hours removed by an admin (open around the clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_open: Option<bool>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Vec<String>>,
    /// See [`QueueUpdate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expansion: Option<Vec<ExpansionStep>>,
}

impl QueueOverride {
    /// `other`'s settings over these.
    pub fn merge(&mut self, other: &QueueOverride) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f.clone_from(&other.$f); } )* };
        }
        take!(
            open,
            max_length,
            max_wait_ms,
            wrap_up_ms,
            offer_timeout_ms,
            fallback,
            priority,
            strategy,
            skills,
            overflow,
            expansion
        );
        if other.hours.is_some() {
            self.hours.clone_from(&other.hours);
            self.always_open = None;
        }
        if other.always_open == Some(true) {
            self.hours = None;
            self.always_open = Some(true);
        }
    }

    /// The engine update these settings make (the open flag apart).
    #[must_use]
    pub fn update(&self) -> QueueUpdate {
        QueueUpdate {
            max_length: self.max_length,
            max_wait_ms: self.max_wait_ms,
            wrap_up_ms: self.wrap_up_ms,
            offer_timeout_ms: self.offer_timeout_ms,
            fallback: self.fallback,
            priority: self.priority,
            strategy: self.strategy,
            skills: self.skills.clone(),
            hours: match (&self.hours, self.always_open) {
                (Some(h), _) => Some(Some(h.clone())),
                (None, Some(true)) => Some(None),
                _ => None,
            },
            overflow: self.overflow.clone(),
            expansion: self.expansion.clone(),
        }
    }

    /// As stored (TOML).
    #[must_use]
    pub fn to_text(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The overrides of every queue changed since the configuration was written.
#[derive(Debug, Default)]
pub struct Overrides(Mutex<HashMap<String, QueueOverride>>);

impl Overrides {
    /// `change` merged into `queue`'s override; returns the override as it now stands.
    pub fn merged(&self, queue: &str, change: &QueueOverride) -> QueueOverride {
        self.merged_from(queue, change).1
    }

    /// [`merged`](Self::merged), with the override as it stood before.
    pub fn merged_from(&self, queue: &str, change: &QueueOverride) -> (QueueOverride, QueueOverride) {
        let mut g = self.0.lock();
        let o = g.entry(queue.to_owned()).or_default();
        let before = o.clone();
        o.merge(change);
        (before, o.clone())
    }
}

/// Records `change` of `queue` by `actor`: merged, then written to the ledger with its audit
/// record, which holds the queue's settings before and after (when there is a ledger).
pub async fn record(
    shared: &crate::app::Shared,
    queue: &str,
    change: &QueueOverride,
    actor: &str,
) -> Result<(), tonic::Status> {
    let now = i64::try_from(shared.clock.unix_ms(shared.clock.now())).unwrap_or(i64::MAX);
    let (before, settings) = shared.queue_overrides.merged_from(queue, change);
    // The change in full is in the audit record (ListQueueAudit); a log line quotes 128 bytes.
    tracing::info!(principal = %actor, queue = %queue, change = %smista_core::error::clip(&change.to_text().replace('\n', "; ")), "queue changed");
    match &shared.ledger {
        Some(l) => l
            .record_queue_change(&smista_ledger::QueueChange {
                queue,
                old_settings: &before.to_text(),
                settings: &settings.to_text(),
                at_unix_ms: now,
                actor,
                change: &change.to_text(),
            })
            .await
            .map_err(crate::wire::error::ledger_status),
        None => Ok(()),
    }
}

/// Applies the overrides the ledger holds over the configuration (at start-up). A queue no
/// longer configured, or a stored override the engine refuses, is skipped with a warning.
pub async fn restore(shared: &crate::app::Shared) -> Result<(), smista_ledger::LedgerError> {
    let Some(l) = &shared.ledger else { return Ok(()) };
    for (queue, text) in l.queue_settings().await? {
        let o: QueueOverride = match toml::from_str(&text) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "stored queue settings not understood: configuration kept");
                continue;
            }
        };
        let applied = shared.engine.update_queue(&queue, &o.update()).and_then(|()| match o.open {
            Some(open) => shared.engine.set_queue_open(&queue, open),
            None => Ok(()),
        });
        match applied {
            Ok(()) => {
                tracing::info!(queue = %queue, settings = %text.replace('\n', "; "), "queue settings restored");
                shared.queue_overrides.merged(&queue, &o);
            }
            Err(e) => tracing::warn!(queue = %queue, error = %e, "stored queue settings refused: configuration kept"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_merge_and_round_trip_as_toml() {
        let mut o = QueueOverride { max_length: Some(5), hours: Some(HoursConfig::default()), ..Default::default() };
        o.merge(&QueueOverride { always_open: Some(true), priority: Some(3), ..Default::default() });
        assert_eq!((o.max_length, o.priority, o.hours.is_none(), o.always_open), (Some(5), Some(3), true, Some(true)));
        assert_eq!(o.update().hours, Some(None));
        o.merge(&QueueOverride {
            hours: Some(HoursConfig { weekly: vec!["mon 08:00-12:00".into()], ..Default::default() }),
            strategy: Some(Strategy::RoundRobin),
            fallback: Some(Fallback::Announcement),
            ..Default::default()
        });
        assert_eq!(o.always_open, None);
        let back: QueueOverride = toml::from_str(&o.to_text()).expect("round trip");
        assert_eq!(back, o);
    }
}
