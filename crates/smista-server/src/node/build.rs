//! Builds the state the services share from the configuration: the engine, the budget book,
//! the ledger (opened, recovered, its restart state restored) and everything `app` owns.

use std::sync::Arc;

use smista_core::book::BudgetBook;
use smista_core::Engine;
use smista_ledger::Ledger;
use tokio::sync::watch;

use super::ServeError;
use crate::app::Shared;
use crate::config::Config;
use crate::edge::auth::{Authenticator, Gate};
use crate::edge::limits::Limits;

/// The routing state every service shares, built from the configuration: budget book (with its
/// durable ledger, from which a restart rebuilds the spend), engine, event log, offer board.
/// Streams end when `stop` flips to true. The services are thin wrappers around it
/// (`ContactSvc(shared.clone())`...), so benches can call them without a network.
pub async fn build_shared(cfg: &Config, stop: watch::Receiver<bool>) -> Result<Arc<Shared>, ServeError> {
    let clock = crate::clock::Clock::default();
    let zone: Arc<dyn smista_core::calendar::Zone> =
        Arc::new(crate::clock::Tz(crate::clock::zone(&cfg.engine.time_zone).map_err(|e| {
            ServeError::Config(smista_core::ConfigError { key: "engine.time_zone".into(), problem: e })
        })?));
    let mut book = BudgetBook::new_in(&cfg.budgets, clock.epoch_unix_ms(), zone.clone())?;
    // Contacts that were in service with an operator no budget paid for it (service records).
    let mut serving = Vec::new();
    let ledger = match cfg.ledger.target(&cfg.server.data_dir) {
        Some(target) => {
            if let smista_ledger::Target::Sqlite { path, .. } = &target {
                crate::datadir::secure(&cfg.server.data_dir, path)?;
            }
            let ledger = Arc::new(Ledger::connect_as(&target, &cfg.ledger_identity()).await?);
            let mut recovery = ledger.recovery().await?;
            (serving, recovery.holds) = recovery.holds.into_iter().partition(|h| h.budget.is_empty());
            book = book.with_sink(ledger.clone());
            if cfg.leased() {
                // Nothing is admitted on a budget until this node holds a lease on it.
                book = book.leased();
            }
            let done = book.restore(&recovery, clock.now());
            for s in &done.skipped {
                tracing::warn!(what = %s, "ledger entry not restored");
            }
            tracing::info!(
                ledger = %describe(&target),
                amendments = done.amendments,
                settled_cents = done.settled_cents,
                contacts_in_service = done.holds,
                unbudgeted_in_service = serving.len(),
                "budgets restored from the ledger"
            );
            Some(ledger)
        }
        None => {
            if !cfg.budgets.is_empty() {
                tracing::warn!("[ledger] kind = \"none\": budget spend is kept in memory only and lost on restart");
            }
            None
        }
    };
    let book = Arc::new(book);
    let engine = Arc::new(Engine::new(&cfg.engine_config(), book.clone())?.with_calendar(clock.epoch_unix_ms(), zone));
    if let Some(l) = &ledger {
        // Contacts that ended within the retention window before this start: remembered as in
        // the life that ended them, so a repeated offer does not route them again.
        let retention = i64::try_from(cfg.engine.finished_retention_ms).unwrap_or(i64::MAX);
        let since = i64::try_from(clock.unix_ms(clock.now())).unwrap_or(i64::MAX).saturating_sub(retention);
        let ended = l.recently_ended(since).await?;
        for e in &ended {
            engine.remember_ended(&e.contact, &e.queue, e.outcome, e.diverted);
        }
        tracing::info!(contacts = ended.len(), "recently ended contacts remembered from the ledger");
        // The live service level's window, rebuilt from the contact history (answers and late
        // abandons of this node's records within it).
        let now = clock.now();
        let since = i64::try_from(clock.unix_ms(now)).unwrap_or(i64::MAX)
            - i64::try_from(cfg.engine.sl_window_ms).unwrap_or(i64::MAX);
        let mut seeded = 0usize;
        for e in l.ended_since(since).await? {
            let (at, answered) = if e.detail.answered_unix_ms >= since {
                (e.detail.answered_unix_ms, true)
            } else if e.outcome == smista_core::Outcome::Abandoned {
                (e.ended_unix_ms, false)
            } else {
                continue;
            };
            if let Some(at) = clock.from_unix(at) {
                let segment = smista_core::Segment::parse(&e.detail.segment).unwrap_or(smista_core::Segment::General);
                seeded += usize::from(engine.seed_service_level(&e.queue, segment, at, now, e.waited_ms, answered));
            }
        }
        tracing::info!(
            contacts = seeded,
            window_ms = cfg.engine.sl_window_ms,
            "live service level rebuilt from the history"
        );
    }
    let gate = Arc::new(Gate {
        auth: Authenticator::new(&cfg.auth).map_err(ServeError::Security)?,
        limits: Arc::new(Limits::new(&cfg.limits)),
    });
    let shared = Shared::new(engine, book, ledger, clock, cfg, gate, stop);
    for h in serving {
        shared.serving.insert(h.contact.clone(), h);
    }
    if let Some(l) = &shared.ledger {
        // The budgets' refused admissions and extra-budget diversions of the current periods.
        shared.restore_budget_counters(l.budget_counters().await?, shared.clock.now());
        // Contacts transferred into a queue within the retention window and not ended since:
        // offered again, they go where their operator sent them.
        let retention = i64::try_from(cfg.engine.finished_retention_ms).unwrap_or(i64::MAX);
        let since =
            i64::try_from(shared.clock.unix_ms(shared.clock.now())).unwrap_or(i64::MAX).saturating_sub(retention);
        // (One that ended since is remembered as ended: offered again, it answers as it did.)
        for t in l.transfers_since(since).await? {
            shared.transfers.insert(t.contact.clone(), t);
        }
    }
    if let Some(l) = &shared.ledger {
        // Bookings and availability survive a restart: those not over by a day ago, and every
        // booking not started yet (a slot missed while the node was down starts at once).
        let since = i64::try_from(shared.clock.unix_ms(shared.clock.now())).unwrap_or(i64::MAX) - 86_400_000;
        let (availability, appointments) = (l.availability(since).await?, l.appointments(since).await?);
        tracing::info!(blocks = availability.len(), appointments = appointments.len(), "appointments restored");
        shared.appointments.restore(availability, appointments);
    }
    crate::app::queues::restore(&shared).await?;
    let configured = cfg.roster_entries().map_err(|e| ServeError::Roster(e.to_string()))?;
    crate::app::roster::restore(&shared, configured).await.map_err(|e| ServeError::Roster(e.message().to_owned()))?;
    if let Some(l) = &shared.ledger {
        shared.scheduled.restore(l.scheduled_callbacks().await?);
    }
    Ok(Arc::new(shared))
}

/// A ledger target for the log, without the password of a URL.
fn describe(t: &smista_ledger::Target) -> String {
    match t {
        smista_ledger::Target::Sqlite { path, .. } => path.display().to_string(),
        smista_ledger::Target::Postgres { url, schema } => {
            let host = url.rsplit('@').next().unwrap_or(url);
            format!("postgres {host} schema {}", schema.as_deref().unwrap_or("(default)"))
        }
    }
}
