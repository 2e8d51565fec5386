//! The roster the services share: who each operator is (group, skills, channels, active or
//! retired), the source of truth that binds every Login (see `docs/roster.md`).
//!
//! - **Where it comes from.** The configuration (`[[operators]]`, the `[roster] file`) and
//!   admins at run time (`PutRosterOperator`, `RetireRosterOperator`), both written to the
//!   ledger: one versioned row per operator, every change audited with the old and new entries.
//! - **Precedence.** At start-up ([`restore`]) the ledger's rows are read, then the
//!   configuration is applied over the rows it last set (source `config`): a changed entry is
//!   updated, an operator the configuration no longer lists is retired, a new one created, each
//!   change audited as `configuration`. A row an admin changed at run time (source `admin`) wins
//!   over the configuration from then on, like `UpdateQueue` overrides (a warning names the
//!   operators whose configured entry differs).
//! - **Cluster.** A change is written (version checked, see `smista_ledger::RosterWrite`)
//!   before it applies here and before the reply; every node re-reads the rows every `[roster]
//!   refresh_ms` ([`refresh`], run by `tasks::roster`) and at start-up or takeover, applying
//!   every row whose version is newer than its own, so nodes converge on the latest version and a
//!   retirement reaches every node within one refresh.
//! - **Sessions.** A logged-in operator whose entry no longer covers the old one (another
//!   group, fewer or lower skills, lower capacities, retired) is logged out as soon as they hold
//!   no contact in service, paused with [`ROSTER_PAUSE`] until then (re-paused at every refresh).

use std::collections::HashMap;

use dashmap::DashMap;
use parking_lot::RwLock;
use smista_core::roster::{bind, capacities, channels_text, parse_channels, parse_skills, skills_text, Stated};
use smista_core::{LoginRequest, OperatorUpdate, RequestedState, RoutingError};
use smista_ledger::{RosterAudit, RosterRow, RosterWrite};
use tonic::Status;

use crate::app::Shared;
use crate::config::roster::{RosterEntry, RosterMode};
use crate::edge::auth::{Method, Principal};

/// Why an operator whose roster entry changed is paused until they can be logged out.
pub const ROSTER_PAUSE: &str = "roster changed: log in again";

/// The actor of changes the configuration makes.
pub const CONFIGURATION: &str = "configuration";

/// Who last set an entry.
pub const SOURCE_CONFIG: &str = "config";
/// Who last set an entry: an admin at run time.
pub const SOURCE_ADMIN: &str = "admin";

/// How many times a change is tried again when another node's change came first.
const CONFLICT_RETRIES: usize = 8;

/// One operator's entry as this node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rostered {
    /// The entry.
    pub entry: RosterEntry,
    /// [`SOURCE_CONFIG`] or [`SOURCE_ADMIN`].
    pub source: String,
    /// Its version (0: not written to a ledger: none is configured).
    pub version: i64,
    /// When it last changed, Unix ms.
    pub updated_unix_ms: i64,
}

impl Rostered {
    fn row(&self) -> RosterRow {
        RosterRow {
            operator_id: self.entry.id.clone(),
            display_name: self.entry.name.clone(),
            group: self.entry.group.clone(),
            skills: skills_text(&self.entry.skills),
            channels: channels_text(&self.entry.channels),
            retired: self.entry.retired,
            source: self.source.clone(),
            version: self.version,
            updated_unix_ms: self.updated_unix_ms,
        }
    }

    fn from_row(r: RosterRow) -> Result<Rostered, String> {
        Ok(Rostered {
            entry: RosterEntry {
                id: r.operator_id,
                name: r.display_name,
                group: r.group,
                skills: parse_skills(&r.skills)?,
                channels: parse_channels(&r.channels)?,
                retired: r.retired,
            },
            source: r.source,
            version: r.version,
            updated_unix_ms: r.updated_unix_ms,
        })
    }
}

/// The roster: entries by operator id, the mode, and the sessions still to end.
#[derive(Debug)]
pub struct Roster {
    mode: RosterMode,
    /// Whether `[auth.jwt] group_claim` is configured.
    group_claim: bool,
    /// The configured operator groups (an entry must name one).
    groups: Vec<smista_core::config::GroupConfig>,
    entries: RwLock<HashMap<String, Rostered>>,
    /// Serialises this node's changes (read the version, write the next).
    writing: tokio::sync::Mutex<()>,
    /// Operators whose session must end (their entry changed) and who still had a contact in
    /// service when it did.
    ending: DashMap<String, ()>,
}

fn denied(msg: String) -> Status {
    crate::metrics::auth_failure("roster");
    Status::permission_denied(msg)
}

impl Roster {
    /// An empty roster in `mode`, of operators in `groups`.
    #[must_use]
    pub fn new(mode: RosterMode, group_claim: bool, groups: Vec<smista_core::config::GroupConfig>) -> Roster {
        Roster {
            mode,
            group_claim,
            groups,
            entries: RwLock::new(HashMap::new()),
            writing: tokio::sync::Mutex::new(()),
            ending: DashMap::new(),
        }
    }

    /// The configured operator groups.
    #[must_use]
    pub fn groups(&self) -> &[smista_core::config::GroupConfig] {
        &self.groups
    }

    /// The mode in force.
    #[must_use]
    pub fn mode(&self) -> RosterMode {
        self.mode
    }

    /// One operator's entry.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Rostered> {
        self.entries.read().get(id).cloned()
    }

    /// Every entry, by operator id.
    #[must_use]
    pub fn list(&self) -> Vec<Rostered> {
        let mut v: Vec<Rostered> = self.entries.read().values().cloned().collect();
        v.sort_by(|a, b| a.entry.id.cmp(&b.entry.id));
        v
    }

    /// How many operators are on the roster (retired included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether nobody is on the roster.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }

    /// The token's group must equal `group` where `[auth.jwt] group_claim` is configured.
    fn check_claim(&self, p: &Principal, operator: &str, group: &str) -> Result<(), Status> {
        if !self.group_claim || p.method != Method::Jwt {
            return Ok(());
        }
        match p.group.as_deref() {
            Some(g) if g == group => Ok(()),
            Some(g) => Err(denied(format!(
                "the token puts operator `{operator}` in group `{}`, the roster in `{group}`",
                smista_core::error::clip(g)
            ))),
            None => Err(denied(format!("the token carries no operator group for operator `{operator}`"))),
        }
    }

    /// Binds a Login to the roster: the group is the roster's (a request naming another is
    /// PERMISSION_DENIED, one naming none gets it), skills and channels only narrow the entry
    /// (empty: the entry's); an operator not on the roster is PERMISSION_DENIED in `required`
    /// mode and logs in as stated in `open` mode; a retired one is PERMISSION_DENIED.
    pub fn bind_login(&self, mut req: LoginRequest, p: &Principal) -> Result<LoginRequest, Status> {
        smista_core::validate_id("operator_id", &req.operator_id).map_err(crate::wire::error::client_error)?;
        let id = req.operator_id.clone();
        let Some(r) = self.get(&id) else {
            if self.mode == RosterMode::Required {
                return Err(denied(format!("operator `{id}` is not on the roster")));
            }
            self.check_claim(p, &id, &req.group)?;
            return Ok(req);
        };
        if r.entry.retired {
            return Err(denied(format!("operator `{id}` is retired from the roster")));
        }
        let stated = Stated { operator: &id, group: &req.group, skills: &req.skills, channels: &req.channels };
        let bound = bind(&r.entry.entitlement(), &stated).map_err(|e| denied(e.to_string()))?;
        self.check_claim(p, &id, &bound.group)?;
        req.group = bound.group;
        req.skills = bound.skills;
        req.channels = bound.channels;
        Ok(req)
    }

    /// Checks an `UpdateOperator` of a rostered operator: it may only narrow within the entry
    /// (PERMISSION_DENIED otherwise, or when retired). Operators not on the roster (open mode)
    /// are not checked. An empty group names the roster's, as at Login.
    pub fn check_update(&self, u: &mut OperatorUpdate) -> Result<(), Status> {
        let Some(r) = self.get(&u.operator_id) else { return Ok(()) };
        if r.entry.retired {
            return Err(denied(format!("operator `{}` is retired from the roster", u.operator_id)));
        }
        let e = r.entry.entitlement();
        let stated = Stated {
            operator: &u.operator_id,
            group: u.group.as_deref().unwrap_or(""),
            skills: u.skills.as_deref().unwrap_or(&[]),
            channels: u.channels.as_deref().unwrap_or(&[]),
        };
        let bound = bind(&e, &stated).map_err(|e| denied(e.to_string()))?;
        if u.group.as_deref() == Some("") {
            u.group = Some(bound.group);
        }
        // An update's empty channel list means one voice contact (not the entry's).
        if u.channels.as_ref().is_some_and(Vec::is_empty) && capacities(&e.channels)[0] == 0 {
            return Err(denied(format!("the roster gives operator `{}` no voice contact", u.operator_id)));
        }
        Ok(())
    }

    /// A Login is about to start a session for `operator`: if they are not logged in now, any
    /// session this node was ending for them is over.
    pub fn logging_in(&self, shared: &Shared, operator: &str) {
        if !self.ending.is_empty() && !shared.engine.is_logged_in(operator) {
            self.ending.remove(operator);
        }
    }

    /// Installs `new` if it is newer than what this node holds; ends the operator's session if
    /// the new entry no longer covers the old one. Returns whether it was installed.
    fn apply(&self, shared: &Shared, new: Rostered) -> bool {
        let old = {
            let mut g = self.entries.write();
            match g.get(&new.entry.id) {
                Some(cur) if cur.version >= new.version && new.version > 0 => return false,
                _ => {}
            }
            g.insert(new.entry.id.clone(), new.clone())
        };
        let keeps = match &old {
            Some(o) => {
                !new.entry.retired && smista_core::roster::covers(&new.entry.entitlement(), &o.entry.entitlement())
            }
            None => !new.entry.retired,
        };
        if !keeps && shared.engine.is_logged_in(&new.entry.id) {
            self.ending.insert(new.entry.id.clone(), ());
            self.end_session(shared, &new.entry.id);
        }
        true
    }

    /// Logs out `operator` if their session must end: at once without a contact in service,
    /// else paused until the next try.
    fn end_session(&self, shared: &Shared, operator: &str) {
        let now = shared.clock.now();
        let mut ev = Vec::new();
        let r = shared.engine.logout(operator, false, now, &mut ev);
        shared.publish(&ev, now);
        match r {
            Ok(()) => {
                self.ending.remove(operator);
                shared.recovering.remove(operator);
                tracing::info!("an operator was logged out: their roster entry changed");
                tracing::debug!(operator = %operator, "logged out: the roster entry changed");
            }
            Err(RoutingError::UnknownOperator(_)) => {
                self.ending.remove(operator);
            }
            Err(e) => {
                let mut ev = Vec::new();
                let paused =
                    shared.engine.set_state(operator, &RequestedState::Paused(ROSTER_PAUSE.to_owned()), now, &mut ev);
                shared.publish(&ev, now);
                tracing::debug!(operator = %operator, why = %e, paused = paused.is_ok(), "roster entry changed: logged out once the contacts in service end");
            }
        }
    }

    /// Whether `operator`'s session is to end for a roster change (retired, or an entry that no
    /// longer covers the session): they finish the contacts in their hands and log in again, and
    /// may not be made available meanwhile.
    pub fn is_ending(&self, operator: &str) -> bool {
        self.ending.contains_key(operator)
    }

    /// Tries again every session still to end.
    pub fn end_pending(&self, shared: &Shared) {
        if self.ending.is_empty() {
            return;
        }
        let ids: Vec<String> = self.ending.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            self.end_session(shared, &id);
        }
    }
}

fn now_ms(shared: &Shared) -> i64 {
    i64::try_from(shared.clock.unix_ms(shared.clock.now())).unwrap_or(i64::MAX)
}

/// The kind of change from `old` to `new`, as audit records name it.
fn change_kind(old: Option<&RosterEntry>, new: &RosterEntry) -> &'static str {
    match old {
        None => "created",
        Some(o) if !o.retired && new.retired => "retired",
        Some(o) if o.retired && !new.retired => "reinstated",
        Some(_) => "updated",
    }
}

/// An entry as an audit record shows it: its TOML and where it came from (an admin's put of what
/// the configuration says changes only the source, and with it which one wins at the next start).
fn audit_text(e: &RosterEntry, source: &str) -> String {
    format!("{}source = \"{source}\"\n", e.describe())
}

/// Sets `entry` (created or replaced) by `actor` from `source`, durably: written to the ledger
/// with its audit record (old and new entries) before it applies here. `expected`: the version
/// it must replace (0: none, create only). Returns the entry as it now stands and whether it
/// changed (setting what is already in force writes nothing).
pub async fn put(
    shared: &Shared,
    entry: RosterEntry,
    expected: Option<i64>,
    actor: &str,
    source: &str,
) -> Result<(Rostered, bool), Status> {
    let roster = &shared.roster;
    let _one = roster.writing.lock().await;
    for _ in 0..CONFLICT_RETRIES {
        let current = match &shared.ledger {
            Some(l) => match l.roster_entry(&entry.id).await.map_err(crate::wire::error::ledger_status)? {
                Some(row) => Some(Rostered::from_row(row).map_err(|e| {
                    Status::internal(format!("the ledger's roster entry of `{}` does not parse: {e}", entry.id))
                })?),
                None => None,
            },
            None => roster.get(&entry.id),
        };
        let version = current.as_ref().map_or(0, |c| c.version);
        if let Some(x) = expected {
            if x != version {
                return Err(Status::aborted(format!(
                    "operator `{}` is at version {version}, not {x}: read the entry again",
                    entry.id
                )));
            }
        }
        if let Some(c) = &current {
            if c.entry == entry && c.source == source {
                roster.apply(shared, c.clone());
                return Ok((c.clone(), false));
            }
        }
        let new = Rostered {
            entry: entry.clone(),
            source: source.to_owned(),
            version: version + 1,
            updated_unix_ms: now_ms(shared),
        };
        let audit = RosterAudit {
            operator_id: entry.id.clone(),
            version: new.version,
            at_unix_ms: new.updated_unix_ms,
            actor: actor.to_owned(),
            change: change_kind(current.as_ref().map(|c| &c.entry), &entry).to_owned(),
            old_value: current.as_ref().map(|c| audit_text(&c.entry, &c.source)).unwrap_or_default(),
            new_value: audit_text(&entry, source),
        };
        let written = match &shared.ledger {
            Some(l) => l
                .put_roster(&new.row(), current.as_ref().map(|c| c.version), &audit)
                .await
                .map_err(crate::wire::error::ledger_status)?,
            None => RosterWrite::Written,
        };
        match written {
            RosterWrite::Written => {
                tracing::info!(principal = %actor, change = %audit.change, version = new.version, group = %entry.group, "roster changed");
                tracing::debug!(operator = %entry.id, version = new.version, "roster entry written");
                roster.apply(shared, new.clone());
                return Ok((new, true));
            }
            RosterWrite::Conflict if expected.is_some() => {
                return Err(Status::aborted(format!(
                    "operator `{}` was changed by another node meanwhile: read the entry again",
                    entry.id
                )))
            }
            RosterWrite::Conflict => continue,
        }
    }
    Err(Status::aborted(format!("operator `{}` keeps changing on other nodes: try again", entry.id)))
}

/// Retires `operator` (by `actor`): durable and audited like [`put`], on the entry as it stands
/// (a concurrent change of it on another node is kept, not overwritten). NOT_FOUND if not on the
/// roster.
pub async fn retire(shared: &Shared, operator: &str, actor: &str) -> Result<(Rostered, bool), Status> {
    for _ in 0..CONFLICT_RETRIES {
        let current = match &shared.ledger {
            Some(l) => l
                .roster_entry(operator)
                .await
                .map_err(crate::wire::error::ledger_status)?
                .map(Rostered::from_row)
                .transpose()
                .map_err(Status::internal)?,
            None => shared.roster.get(operator),
        };
        let Some(cur) = current else {
            return Err(Status::not_found(format!(
                "operator `{}` is not on the roster",
                smista_core::error::clip(operator)
            )));
        };
        if cur.entry.retired {
            shared.roster.apply(shared, cur.clone());
            return Ok((cur, false));
        }
        let retired = RosterEntry { retired: true, ..cur.entry };
        match put(shared, retired, Some(cur.version), actor, SOURCE_ADMIN).await {
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            r => return r,
        }
    }
    Err(Status::aborted(format!("operator `{operator}` keeps changing on other nodes: try again")))
}

/// Re-reads the ledger's roster and applies every entry newer than this node's (another node's
/// changes); then tries again the sessions still to end.
pub async fn refresh(shared: &Shared) -> Result<usize, smista_ledger::LedgerError> {
    let mut applied = 0;
    if let Some(l) = &shared.ledger {
        for row in l.roster().await? {
            let id = row.operator_id.clone();
            match Rostered::from_row(row) {
                Ok(r) => applied += usize::from(shared.roster.apply(shared, r)),
                Err(e) => {
                    tracing::warn!(error = %e, "a roster entry in the ledger does not parse: skipped");
                    tracing::debug!(operator = %id, "roster entry skipped");
                }
            }
        }
    }
    shared.roster.end_pending(shared);
    Ok(applied)
}

/// At start-up or takeover: the ledger's roster, then the configuration's over the entries it
/// last set (see the module's documentation for the precedence). Errors only if the ledger
/// cannot be read or written.
pub async fn restore(shared: &Shared, configured: Vec<RosterEntry>) -> Result<(), Status> {
    refresh(shared).await.map_err(crate::wire::error::ledger_status)?;
    let (mut created, mut updated, mut retired, mut kept) = (0, 0, 0, 0);
    for e in &configured {
        match shared.roster.get(&e.id) {
            Some(r) if r.source == SOURCE_ADMIN => {
                if r.entry != *e {
                    kept += 1;
                    tracing::debug!(operator = %e.id, "the roster entry an admin set at run time wins over the configuration's");
                }
            }
            Some(r) if r.entry == *e => {}
            cur => {
                // On the entry as read: one an admin (or another node) changes meanwhile wins.
                let was = cur.as_ref().map_or(0, |r| r.version);
                match put(shared, e.clone(), Some(was), CONFIGURATION, SOURCE_CONFIG).await {
                    Ok((_, true)) if was > 0 => updated += 1,
                    Ok((_, true)) => created += 1,
                    Ok((_, false)) => {}
                    Err(x) if x.code() == tonic::Code::Aborted => {
                        tracing::warn!(
                            "a roster entry changed meanwhile: the configuration's is applied at the next start"
                        );
                        tracing::debug!(operator = %e.id, "configuration entry not applied");
                    }
                    Err(x) => return Err(x),
                }
            }
        }
    }
    for r in shared.roster.list() {
        if r.source == SOURCE_CONFIG && !r.entry.retired && !configured.iter().any(|e| e.id == r.entry.id) {
            let id = r.entry.id.clone();
            match put(shared, RosterEntry { retired: true, ..r.entry }, Some(r.version), CONFIGURATION, SOURCE_CONFIG)
                .await
            {
                Ok(_) => retired += 1,
                Err(x) if x.code() == tonic::Code::Aborted => {
                    tracing::warn!("a roster entry changed meanwhile: not retired by the configuration");
                    tracing::debug!(operator = %id, "not retired by the configuration");
                }
                Err(x) => return Err(x),
            }
        }
    }
    if kept > 0 {
        tracing::warn!(
            operators = kept,
            "roster entries an admin changed at run time differ from the configuration's: the admins' stay in force (ids at debug level)"
        );
    }
    tracing::info!(
        mode = shared.roster.mode().as_str(),
        operators = shared.roster.len(),
        created,
        updated,
        retired,
        admin_changes_kept = kept,
        "roster restored"
    );
    Ok(())
}
