//! The two backends behind one set of statements: an embedded SQLite file (one node) or a
//! PostgreSQL database (several nodes sharing budgets). Statements are written once, with `?`
//! placeholders, and numbered (`$1`...) for PostgreSQL; the few differences (amendment numbering,
//! migrations of old SQLite files) are here.
//!
//! **Schema versions.** The schema's version is recorded in `schema_version`. Opening a ledger
//! whose schema is current reads that version and runs no DDL at all: a node starting, or taking
//! over from an active cut off with a transaction still open, never waits for another session's
//! locks on the ledger's tables and never deadlocks with its writer (issue 25). A ledger of an
//! older version (or of none: written before versions were recorded) is migrated once, by
//! whichever opener gets there first, in one transaction: on PostgreSQL under an advisory lock
//! and a `lock_timeout` shorter than the default `deadlock_timeout` (so a migration that would
//! deadlock with a running writer gives up first, and the writer is never the victim), retried
//! with back-off a bounded number of times and then refused with an error saying why; on SQLite
//! under `BEGIN IMMEDIATE` (one writer per file). Every step only adds (tables, columns with
//! defaults, indexes), so a node of the previous version keeps working on a migrated ledger
//! (rolling upgrades).

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Row};

use crate::LedgerError;

/// Where a ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A SQLite file (WAL, `synchronous = FULL`).
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Create it if missing.
        create: bool,
    },
    /// A PostgreSQL database, e.g. `postgres://smista@db.example/smista`.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema holding the tables (created if missing; `None`: the server's default, usually
        /// `public`). Tests give each run its own.
        schema: Option<String>,
    },
}

/// An open connection pool to either backend.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to whichever pool `$db` holds (the body is compiled for both).
macro_rules! with_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($p) => $body,
            $crate::db::Db::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_db;

impl Db {
    /// `sql` with its `?` placeholders as this backend wants them.
    pub(crate) fn sql<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        match self {
            Db::Sqlite(_) => Cow::Borrowed(sql),
            Db::Postgres(_) => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// Whether amendments are numbered by the database (PostgreSQL, several writers) rather than
    /// by the one writer of a SQLite file.
    pub(crate) fn numbers_amendments(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    pub(crate) async fn close(&self) {
        with_db!(self, p => p.close().await)
    }
}

/// The ledger's tables. `{seq}` is the amendment number's column type.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cost_records (
    budget_id          TEXT    NOT NULL,
    contact_id         TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    queue              TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    operator_id        TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    accepted_unix_ms   BIGINT  NOT NULL,
    completed_unix_ms  BIGINT  NOT NULL,
    handle_ms          BIGINT  NOT NULL,
    cost_cents         BIGINT  NOT NULL,
    reserved_cents     BIGINT  NOT NULL,
    outcome            TEXT    NOT NULL DEFAULT 'completed',
    node_id            TEXT    NOT NULL DEFAULT '',
    {record_detail_columns}
    PRIMARY KEY (contact_id, budget_id, accepted_unix_ms)
);
CREATE INDEX IF NOT EXISTS cost_records_by_period ON cost_records (budget_id, period);
CREATE INDEX IF NOT EXISTS cost_records_by_completion ON cost_records (completed_unix_ms);
CREATE TABLE IF NOT EXISTS holds (
    budget_id          TEXT    NOT NULL,
    contact_id         TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    amount_cents       BIGINT  NOT NULL,
    queue              TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    operator_id        TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    accepted_unix_ms   BIGINT  NOT NULL,
    node_id            TEXT    NOT NULL DEFAULT '',
    arrived_unix_ms    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, contact_id)
);
CREATE TABLE IF NOT EXISTS amendments (
    seq                {seq},
    at_unix_ms         BIGINT  NOT NULL,
    budget_id          TEXT    NOT NULL,
    actor              TEXT    NOT NULL,
    note               TEXT    NOT NULL DEFAULT '',
    field              TEXT    NOT NULL,
    old_value          TEXT    NOT NULL,
    new_value          TEXT    NOT NULL,
    reason             TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_pool (
    budget_id          TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    ceiling_cents      BIGINT  NOT NULL,
    granted_cents      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period)
);
CREATE TABLE IF NOT EXISTS budget_leases (
    budget_id          TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    node_id            TEXT    NOT NULL,
    granted_cents      BIGINT  NOT NULL,
    expires_unix_ms    BIGINT  NOT NULL,
    renewed_unix_ms    BIGINT  NOT NULL,
    epoch              BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period, node_id)
);
CREATE TABLE IF NOT EXISTS contact_ends (
    contact_id         TEXT    NOT NULL,
    ended_unix_ms      BIGINT  NOT NULL,
    queue              TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    outcome            TEXT    NOT NULL,
    waited_ms          BIGINT  NOT NULL,
    handle_ms          BIGINT  NOT NULL,
    wrap_up_ms         BIGINT  NOT NULL,
    operator_id        TEXT    NOT NULL,
    divert_reason      TEXT    NOT NULL,
    fallback           TEXT    NOT NULL,
    node_id            TEXT    NOT NULL DEFAULT '',
    {history_columns}
    PRIMARY KEY (contact_id, ended_unix_ms)
);
CREATE INDEX IF NOT EXISTS contact_ends_by_time ON contact_ends (ended_unix_ms);
CREATE TABLE IF NOT EXISTS staffing (
    quarter_unix_ms    BIGINT  NOT NULL,
    operator_group     TEXT    NOT NULL,
    node_id            TEXT    NOT NULL,
    staffed_ms         BIGINT  NOT NULL,
    paused_ms          BIGINT  NOT NULL,
    busy_ms            BIGINT  NOT NULL,
    PRIMARY KEY (quarter_unix_ms, operator_group, node_id)
);
CREATE TABLE IF NOT EXISTS leaders (
    grp                TEXT    NOT NULL PRIMARY KEY,
    node_id            TEXT    NOT NULL,
    epoch              BIGINT  NOT NULL,
    expires_unix_ms    BIGINT  NOT NULL,
    address            TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS appointments (
    id                 TEXT    NOT NULL PRIMARY KEY,
    queue              TEXT    NOT NULL,
    operator_id        TEXT    NOT NULL,
    display_name       TEXT    NOT NULL,
    start_unix_ms      BIGINT  NOT NULL,
    end_unix_ms        BIGINT  NOT NULL,
    channel            TEXT    NOT NULL,
    segment            TEXT    NOT NULL,
    recording          BIGINT  NOT NULL,
    state              TEXT    NOT NULL,
    updated_unix_ms    BIGINT  NOT NULL,
    for_contact        TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS availability (
    operator_id        TEXT    NOT NULL,
    start_unix_ms      BIGINT  NOT NULL,
    queue              TEXT    NOT NULL,
    end_unix_ms        BIGINT  NOT NULL,
    display_name       TEXT    NOT NULL,
    PRIMARY KEY (operator_id, start_unix_ms)
);
CREATE TABLE IF NOT EXISTS queue_settings (
    queue              TEXT    NOT NULL PRIMARY KEY,
    settings           TEXT    NOT NULL,
    updated_unix_ms    BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_audit (
    queue              TEXT    NOT NULL,
    at_unix_ms         BIGINT  NOT NULL,
    actor              TEXT    NOT NULL,
    change             TEXT    NOT NULL,
    old_settings       TEXT    NOT NULL DEFAULT '',
    new_settings       TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (queue, at_unix_ms, change)
);
CREATE TABLE IF NOT EXISTS roster (
    operator_id        TEXT    NOT NULL PRIMARY KEY,
    display_name       TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    skills             TEXT    NOT NULL,
    channels           TEXT    NOT NULL,
    retired            BIGINT  NOT NULL,
    source             TEXT    NOT NULL,
    version            BIGINT  NOT NULL,
    updated_unix_ms    BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS roster_audit (
    operator_id        TEXT    NOT NULL,
    version            BIGINT  NOT NULL,
    at_unix_ms         BIGINT  NOT NULL,
    actor              TEXT    NOT NULL,
    change             TEXT    NOT NULL,
    old_value          TEXT    NOT NULL,
    new_value          TEXT    NOT NULL,
    PRIMARY KEY (operator_id, version)
);
CREATE INDEX IF NOT EXISTS roster_audit_by_time ON roster_audit (at_unix_ms);
CREATE TABLE IF NOT EXISTS scheduled_callbacks (
    contact_id         TEXT    NOT NULL PRIMARY KEY,
    queue              TEXT    NOT NULL,
    segment            TEXT    NOT NULL,
    due_unix_ms        BIGINT  NOT NULL,
    created_unix_ms    BIGINT  NOT NULL,
    state              TEXT    NOT NULL,
    tries              BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS node_epochs (
    node_id            TEXT    NOT NULL PRIMARY KEY,
    epoch              BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_states (
    node_id            TEXT    NOT NULL,
    epoch              BIGINT  NOT NULL,
    seq                BIGINT  NOT NULL,
    operator_id        TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    at_unix_ms         BIGINT  NOT NULL,
    fact               TEXT    NOT NULL,
    detail             TEXT    NOT NULL,
    value_ms           BIGINT  NOT NULL,
    PRIMARY KEY (node_id, epoch, seq)
);
CREATE INDEX IF NOT EXISTS operator_states_by_time ON operator_states (at_unix_ms);
-- Every state change is written through the group commit: one index less is a quarter less work
-- per row (lookups by operator and time use operator_states_by_time).
DROP INDEX IF EXISTS operator_states_by_operator;
CREATE TABLE IF NOT EXISTS budget_counters (
    budget_id          TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    node_id            TEXT    NOT NULL,
    refusals           BIGINT  NOT NULL,
    extra_budget_diversions BIGINT NOT NULL,
    PRIMARY KEY (budget_id, period, node_id)
);
CREATE TABLE IF NOT EXISTS node_lives (
    node_id            TEXT    NOT NULL,
    epoch              BIGINT  NOT NULL,
    seen_unix_ms       BIGINT  NOT NULL,
    PRIMARY KEY (node_id, epoch)
);
CREATE TABLE IF NOT EXISTS operator_report_reads (
    node_id            TEXT    NOT NULL,
    epoch              BIGINT  NOT NULL,
    seq                BIGINT  NOT NULL,
    at_unix_ms         BIGINT  NOT NULL,
    actor              TEXT    NOT NULL,
    operators          TEXT    NOT NULL,
    from_unix_ms       BIGINT  NOT NULL,
    to_unix_ms         BIGINT  NOT NULL,
    purpose            TEXT    NOT NULL,
    PRIMARY KEY (node_id, epoch, seq)
);
CREATE INDEX IF NOT EXISTS operator_report_reads_by_time ON operator_report_reads (at_unix_ms);
CREATE TABLE IF NOT EXISTS transfers (
    contact_id           TEXT    NOT NULL,
    at_unix_ms           BIGINT  NOT NULL,
    from_operator        TEXT    NOT NULL,
    from_queue           TEXT    NOT NULL,
    to_queue             TEXT    NOT NULL,
    to_operator          TEXT    NOT NULL,
    pinned_until_unix_ms BIGINT  NOT NULL,
    handle_ms            BIGINT  NOT NULL,
    wrap_up_ms           BIGINT  NOT NULL,
    arrived_unix_ms      BIGINT  NOT NULL,
    paid                 TEXT    NOT NULL,
    node_id              TEXT    NOT NULL,
    consultation_id      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (contact_id, at_unix_ms)
);
CREATE INDEX IF NOT EXISTS transfers_by_time ON transfers (at_unix_ms);
CREATE TABLE IF NOT EXISTS consultations (
    consultation_id      TEXT    NOT NULL PRIMARY KEY,
    contact_id           TEXT    NOT NULL,
    from_operator        TEXT    NOT NULL,
    to_queue             TEXT    NOT NULL,
    to_operator          TEXT    NOT NULL,
    asked_unix_ms        BIGINT  NOT NULL,
    node_id              TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS consultations_by_contact ON consultations (contact_id);
CREATE TABLE IF NOT EXISTS schema_version (
    id                 BIGINT  NOT NULL PRIMARY KEY,
    version            BIGINT  NOT NULL
);
";

/// The schema as `db` creates it.
#[must_use]
pub fn schema(postgres: bool) -> String {
    let history: String = HISTORY_COLUMNS.iter().map(|(name, ty)| format!("{name} {ty},\n    ")).collect();
    let detail: String = RECORD_DETAIL_COLUMNS.iter().map(|(name, ty)| format!("{name} {ty},\n    ")).collect();
    SCHEMA
        .replace("{seq}", if postgres { "BIGSERIAL PRIMARY KEY" } else { "BIGINT NOT NULL PRIMARY KEY" })
        .replace("{history_columns}", history.trim_end())
        .replace("{record_detail_columns}", detail.trim_end())
        + HISTORY_INDEX
}

/// The detail columns of `contact_ends` (the contact history), added to ledgers written before
/// them with these defaults (unknown: empty or zero).
const HISTORY_COLUMNS: [(&str, &str); 14] = [
    ("arrived_unix_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("received_unix_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("answered_unix_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("first_queue", "TEXT NOT NULL DEFAULT ''"),
    ("overflows", "TEXT NOT NULL DEFAULT ''"),
    ("segment", "TEXT NOT NULL DEFAULT ''"),
    ("offers", "TEXT NOT NULL DEFAULT ''"),
    ("operator_group", "TEXT NOT NULL DEFAULT ''"),
    ("supplier", "TEXT NOT NULL DEFAULT ''"),
    ("budget_id", "TEXT NOT NULL DEFAULT ''"),
    ("cost_cents", "BIGINT NOT NULL DEFAULT 0"),
    ("caller_key", "TEXT NOT NULL DEFAULT ''"),
    ("transfers", "TEXT NOT NULL DEFAULT ''"),
    ("consultation_of", "TEXT NOT NULL DEFAULT ''"),
];

/// The detail columns of `cost_records`: a budgeted contact's detail record is its cost record
/// (one row per contact, not two) when its end is committed with it (see `writer.rs`).
pub(crate) const RECORD_DETAIL_COLUMNS: [(&str, &str); 13] = [
    ("waited_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("wrap_up_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("arrived_unix_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("received_unix_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("answered_unix_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("first_queue", "TEXT NOT NULL DEFAULT ''"),
    ("overflows", "TEXT NOT NULL DEFAULT ''"),
    ("segment", "TEXT NOT NULL DEFAULT ''"),
    ("offers", "TEXT NOT NULL DEFAULT ''"),
    ("supplier", "TEXT NOT NULL DEFAULT ''"),
    ("caller_key", "TEXT NOT NULL DEFAULT ''"),
    ("transfers", "TEXT NOT NULL DEFAULT ''"),
    ("consultation_of", "TEXT NOT NULL DEFAULT ''"),
];

/// Reports read the history by arrival (cost records without a detail have arrival 0).
const HISTORY_INDEX: &str = "\nCREATE INDEX IF NOT EXISTS contact_ends_by_arrival ON contact_ends (arrived_unix_ms);
CREATE INDEX IF NOT EXISTS cost_records_by_arrival ON cost_records (arrived_unix_ms);\n";

/// The schema's changes since versions are recorded: `STEPS[i]` brings a ledger from version
/// `i + 1` to `i + 2`, as columns (table, column, type with its default) added to tables that
/// exist; [`SCHEMA`] creates the tables that do not (new ledgers, new tables) in their latest
/// shape. Version 1 is the schema of the ledgers written before versions were recorded, reached
/// from any of their shapes by the idempotent catch-up they always ran (in `postgres_migration`
/// and `sqlite_migration`). A change to the schema: the column in [`SCHEMA`] (for new ledgers) and a
/// step here (for existing ones). Only additions: a node of the previous version must keep
/// working on the migrated ledger during a rolling upgrade.
const STEPS: &[&[(&str, &str, &str)]] = &[
    // 2: the arrival time of a contact in service, so that a takeover re-ranks it truthfully.
    &[("holds", "arrived_unix_ms", "BIGINT NOT NULL DEFAULT 0")],
    // 3 (issue 28, the roster): the tables `roster` and `roster_audit` (created whole by the
    // schema script), and the queue audit's settings before and after each change.
    &[
        ("queue_audit", "old_settings", "TEXT NOT NULL DEFAULT ''"),
        ("queue_audit", "new_settings", "TEXT NOT NULL DEFAULT ''"),
    ],
    // 4 (issue 28, operator accounting): the tables `operator_states` (every operator state
    // change), `node_lives` (each node life's last sign of life) and `operator_report_reads`
    // (the privacy audit), created whole by the schema script; no column changes.
    &[],
    // 5 (issue 29): the table `budget_counters` (each node's refused admissions and extra-budget
    // diversions per budget period, kept across restarts), created whole by the schema script.
    &[],
    // 6 (issue 30): the table `transfers` (each leg an operator ended by moving its contact on),
    // created whole by the schema script; the contact an appointment was booked from; a
    // contact's transfers in its detail record (both tables that carry one).
    &[
        ("appointments", "for_contact", "TEXT NOT NULL DEFAULT ''"),
        ("contact_ends", "transfers", "TEXT NOT NULL DEFAULT ''"),
        ("cost_records", "transfers", "TEXT NOT NULL DEFAULT ''"),
    ],
    // 7 (issue 30, consultations): the table `consultations` (each consultation asked for,
    // created whole by the schema script), the consultation a transfer handed the contact over
    // to, and in a detail record the contact a consultation was about (both tables).
    &[
        ("transfers", "consultation_id", "TEXT NOT NULL DEFAULT ''"),
        ("contact_ends", "consultation_of", "TEXT NOT NULL DEFAULT ''"),
        ("cost_records", "consultation_of", "TEXT NOT NULL DEFAULT ''"),
    ],
];

/// The version of [`schema`], recorded in `schema_version` by whoever creates or migrates a ledger.
pub(crate) const SCHEMA_VERSION: i64 = 1 + STEPS.len() as i64;

/// The advisory lock serialising schema creation and migrations on one PostgreSQL database.
const SCHEMA_LOCK: i64 = 7_316_255;

/// How a PostgreSQL migration waits for the locks it needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MigrationPolicy {
    /// `lock_timeout` of each attempt: how long it may wait for the advisory lock and for each
    /// table lock. Below PostgreSQL's default `deadlock_timeout` (1 s), so that a migration
    /// waiting in a cycle with a running writer times out before the deadlock detector runs and
    /// may pick that writer as its victim.
    pub(crate) lock_timeout_ms: u64,
    /// Attempts before giving up.
    pub(crate) attempts: u32,
    /// Pause after the first failed attempt, doubled after each (at most `max_backoff_ms`).
    pub(crate) backoff_ms: u64,
    pub(crate) max_backoff_ms: u64,
}

impl MigrationPolicy {
    /// About 15 s in all before an opening that must migrate gives up.
    pub(crate) const DEFAULT: MigrationPolicy =
        MigrationPolicy { lock_timeout_ms: 500, attempts: 8, backoff_ms: 250, max_backoff_ms: 2_000 };
}

/// Opens `target`, creating the schema and bringing an older one up to date: the pool for reads,
/// and the one for the group-commit writer (SQLite: a connection of its own, whose page cache no
/// other connection's writes invalidate; PostgreSQL: the same pool).
pub(crate) async fn open(target: &Target) -> Result<(Db, Db), LedgerError> {
    open_with(target, 8, Duration::from_secs(5)).await
}

/// How long PostgreSQL lets one of our sessions sit idle inside a transaction before it ends the
/// session (`idle_in_transaction_session_timeout`). A node stopped (SIGSTOP, a VM pause) or cut off
/// in the middle of a transaction would otherwise keep that transaction's locks for as long as it
/// stays stopped, the fence's share lock on its `node_epochs` row among them, and the next
/// active's takeover (which moves that row's epoch on) would wait for it: a takeover waited 3.2 s
/// in a SIGSTOP run, for the paused active's SIGCONT. Our transactions run their statements
/// back to back, so a second of silence inside one means its node is gone; its writer, if it ever
/// wakes up, retries on a new session and meets the fence.
pub(crate) const IDLE_IN_TRANSACTION_MS: u64 = 1_000;

/// The connection options of every PostgreSQL session the ledger opens. `client_min_messages =
/// warning`: the NOTICEs PostgreSQL sends are what the schema script's `IF [NOT] EXISTS` says of
/// each table, index and column it skips ("relation ... does not exist, skipping"), which sqlx
/// logs at INFO, 30 to 90 lines at every start that creates or migrates a ledger; warnings and
/// errors still reach the log.
pub(crate) fn pg_options(url: &str) -> Result<PgConnectOptions, LedgerError> {
    let opts: PgConnectOptions = url.parse().map_err(|e| LedgerError::Storage(format!("bad PostgreSQL URL: {e}")))?;
    Ok(opts.options([
        ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_MS.to_string()),
        ("client_min_messages", "warning".to_owned()),
    ]))
}

/// [`open`] with a small PostgreSQL pool that gives up quickly on an unreachable server (the
/// leadership lease: a renewal that cannot get a connection must fail well within its lease).
pub(crate) async fn open_small(target: &Target) -> Result<(Db, Db), LedgerError> {
    open_with(target, 2, Duration::from_millis(500)).await
}

async fn open_with(target: &Target, pg_conns: u32, acquire: Duration) -> Result<(Db, Db), LedgerError> {
    match target {
        Target::Sqlite { path, create } => {
            if !*create && !path.is_file() {
                return Err(LedgerError::Missing(path.display().to_string()));
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(*create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                // Statement-level temporaries (RETURNING, IN (VALUES ...)) in memory: on files
                // they cost an open, writes and an unlink per commit.
                .pragma("temp_store", "memory")
                .busy_timeout(Duration::from_secs(5));
            // Schema and migrations on a connection of their own, closed before the pool opens: a
            // pooled connection that prepared a statement before an ALTER TABLE would describe the
            // old columns and then read rows of the new ones (sqlx panics on the extra column).
            // (A pool of one rather than a bare connection: futures holding `&mut
            // SqliteConnection` across awaits are not provably `Send`, and the server spawns this.)
            let setup = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
            let migrated = migrate_sqlite(&setup).await;
            setup.close().await;
            migrated?;
            let writer = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
            let readers = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
            Ok((Db::Sqlite(readers), Db::Sqlite(writer)))
        }
        Target::Postgres { url, schema: ns } => {
            let mut opts = pg_options(url)?;
            if let Some(ns) = ns {
                if ns.is_empty() || !ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(LedgerError::Storage(format!("bad schema name `{ns}`")));
                }
                let setup = PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
                // Created only when missing (an existing schema is not even locked). Concurrent
                // CREATE SCHEMA IF NOT EXISTS can fail on a unique index: serialise. (A
                // multi-statement simple query is one transaction: the lock is held to its commit.)
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = lower($1))")
                        .bind(ns)
                        .fetch_one(&setup)
                        .await?;
                if !exists {
                    let create =
                        format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); CREATE SCHEMA IF NOT EXISTS {ns};");
                    sqlx::raw_sql(&create).execute(&setup).await?;
                }
                setup.close().await;
                opts = opts.options([("search_path", ns.as_str())]);
            }
            let setup = PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
            let migrated = migrate_postgres(&setup, MigrationPolicy::DEFAULT).await;
            setup.close().await;
            migrated?;
            let pool =
                PgPoolOptions::new().max_connections(pg_conns).acquire_timeout(acquire).connect_with(opts).await?;
            Ok((Db::Postgres(pool.clone()), Db::Postgres(pool)))
        }
    }
}

/// Whether PostgreSQL's `schema_version` exists (in the search path).
const PG_HAS_VERSION: &str = "SELECT to_regclass('schema_version') IS NOT NULL";
/// The version recorded (NULL: none).
const VERSION: &str = "SELECT MAX(version) FROM schema_version";

/// Brings a PostgreSQL ledger to [`SCHEMA_VERSION`]; with the schema current, only reads it (no
/// lock but `schema_version`'s share lock, which no migration conflicts with).
pub(crate) async fn migrate_postgres(pool: &PgPool, policy: MigrationPolicy) -> Result<(), LedgerError> {
    let has: bool = sqlx::query(PG_HAS_VERSION).fetch_one(pool).await?.try_get(0)?;
    let found: Option<i64> = if has { sqlx::query(VERSION).fetch_one(pool).await?.try_get(0)? } else { None };
    if found.is_some_and(|v| v >= SCHEMA_VERSION) {
        return Ok(()); // current (or newer: a rolling upgrade; every step only adds)
    }
    let mut pause = policy.backoff_ms;
    let mut attempt = 1;
    loop {
        match migrate_postgres_once(pool, policy.lock_timeout_ms).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < policy.attempts && lock_trouble(&e) => {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                pause = (pause * 2).min(policy.max_backoff_ms);
                attempt += 1;
            }
            Err(e) if lock_trouble(&e) => {
                return Err(LedgerError::Storage(format!(
                    "the ledger's schema (version {}) must be migrated to version {SCHEMA_VERSION}, and {} attempts \
                     could not get the locks it needs within {} ms each: other sessions hold the ledger's tables \
                     (an open transaction of another node?); start again when they are done (last error: {e})",
                    found.map_or_else(|| "none".to_owned(), |v| v.to_string()),
                    policy.attempts,
                    policy.lock_timeout_ms,
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A lock not granted in time, or a deadlock: worth another attempt.
fn lock_trouble(e: &sqlx::Error) -> bool {
    // 55P03 lock_not_available (lock_timeout), 40P01 deadlock_detected.
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("55P03" | "40P01")))
}

/// One attempt at migrating, in one transaction under the schema lock: the version read again
/// under it (another node may just have migrated), the steps it lacks, the version recorded.
/// (Statements on the transaction only, in this one function: futures holding a `&mut
/// PgConnection` passed in are not provably `Send`, and the server spawns this.)
async fn migrate_postgres_once(pool: &PgPool, lock_timeout_ms: u64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let r = async {
        // Half the server's deadlock_timeout if that is shorter (the writer is never the victim).
        let deadlock_ms: i64 = sqlx::query(
            "SELECT CAST(EXTRACT(EPOCH FROM CAST(current_setting('deadlock_timeout') AS INTERVAL)) * 1000 AS BIGINT)",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let ms = lock_timeout_ms.min(u64::try_from(deadlock_ms / 2).unwrap_or(0).max(10));
        (&mut *tx).execute(sqlx::raw_sql(&format!("SET LOCAL lock_timeout = '{ms}ms'"))).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *tx).await?;
        let has: bool = sqlx::query(PG_HAS_VERSION).fetch_one(&mut *tx).await?.try_get(0)?;
        let from: Option<i64> = if has { sqlx::query(VERSION).fetch_one(&mut *tx).await?.try_get(0)? } else { None };
        if from.is_some_and(|v| v >= SCHEMA_VERSION) {
            return Ok(()); // another node migrated meanwhile
        }
        // The tables the steps and the indexes change, all locked first, in one statement, in the
        // order a group commit usually writes them: no DDL done and then undone for a lock that
        // never comes, and as few moments as may be holding one while waiting for another.
        let existing: Vec<String> = sqlx::query(
            "SELECT t FROM unnest(CAST($1 AS TEXT[])) WITH ORDINALITY AS u(t, n)
             WHERE to_regclass(t) IS NOT NULL ORDER BY n",
        )
        .bind(["cost_records", "holds", "contact_ends", "budget_leases"].map(str::to_owned).to_vec())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        if !existing.is_empty() {
            let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", existing.join(", "));
            (&mut *tx).execute(sqlx::raw_sql(&lock)).await?;
        }
        let ddl = postgres_migration(from.unwrap_or(0));
        (&mut *tx).execute(sqlx::raw_sql(&ddl)).await?;
        sqlx::query(
            "INSERT INTO schema_version (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = GREATEST(schema_version.version, excluded.version)",
        )
        .bind(SCHEMA_VERSION)
        .execute(&mut *tx)
        .await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    match r {
        Ok(()) => tx.commit().await,
        Err(e) => {
            // At once (the advisory lock with it), not when the connection is next used.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The script bringing a PostgreSQL ledger of version `from` (0: none recorded) to
/// [`SCHEMA_VERSION`]: the columns it lacks (`IF EXISTS`: the tables it lacks are created whole
/// by the schema script), then the schema script for the missing tables and indexes (after the
/// columns some indexes are on).
fn postgres_migration(from: i64) -> String {
    let mut ddl = String::new();
    if from == 0 {
        // Before versions were recorded: `budget_leases.epoch` came after the first PostgreSQL
        // ledgers, and so did the history's detail columns of `contact_ends` and `cost_records`.
        let legacy = HISTORY_COLUMNS
            .iter()
            .map(|(name, ty)| ("contact_ends", *name, *ty))
            .chain(RECORD_DETAIL_COLUMNS.iter().map(|(name, ty)| ("cost_records", *name, *ty)))
            .chain([("budget_leases", "epoch", "BIGINT NOT NULL DEFAULT 0")]);
        for (table, name, ty) in legacy {
            ddl.push_str(&format!("ALTER TABLE IF EXISTS {table} ADD COLUMN IF NOT EXISTS {name} {ty};\n"));
        }
    }
    for (table, name, ty) in steps_after(from).flatten() {
        ddl.push_str(&format!("ALTER TABLE IF EXISTS {table} ADD COLUMN IF NOT EXISTS {name} {ty};\n"));
    }
    ddl.push_str(&schema(true));
    ddl
}

/// The steps a ledger of version `from` lacks.
fn steps_after(from: i64) -> impl Iterator<Item = &'static [(&'static str, &'static str, &'static str)]> {
    STEPS.iter().copied().skip(usize::try_from(from.max(1) - 1).unwrap_or(0))
}

/// Brings a SQLite ledger to [`SCHEMA_VERSION`]; with the schema current, only reads it. One
/// transaction, `BEGIN IMMEDIATE` (the file's write lock first, then the version read again).
/// (Statements on the transaction only, in this one function: futures holding a `&mut
/// SqliteConnection` passed in are not provably `Send`, and the server spawns this.)
async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), LedgerError> {
    const HAS_VERSION: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'";
    let has: i64 = sqlx::query(HAS_VERSION).fetch_one(pool).await?.try_get(0)?;
    if has > 0 {
        let v: Option<i64> = sqlx::query(VERSION).fetch_one(pool).await?.try_get(0)?;
        if v.is_some_and(|v| v >= SCHEMA_VERSION) {
            return Ok(());
        }
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let has: i64 = sqlx::query(HAS_VERSION).fetch_one(&mut *tx).await?.try_get(0)?;
    let from: Option<i64> = if has > 0 { sqlx::query(VERSION).fetch_one(&mut *tx).await?.try_get(0)? } else { None };
    if from.is_some_and(|v| v >= SCHEMA_VERSION) {
        tx.commit().await?;
        return Ok(());
    }
    let columns: Vec<(String, String, i64)> = sqlx::query(
        "SELECT m.name, p.name, p.pk FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p
         WHERE m.type = 'table'",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    .collect::<Result<_, sqlx::Error>>()?;
    let script = sqlite_migration(from.unwrap_or(0), &columns);
    (&mut *tx).execute(sqlx::raw_sql(&script)).await?;
    sqlx::query(
        "INSERT INTO schema_version (id, version) VALUES (1, ?)
         ON CONFLICT (id) DO UPDATE SET version = MAX(schema_version.version, excluded.version)",
    )
    .bind(SCHEMA_VERSION)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The script bringing a SQLite ledger of version `from` (0: none recorded) whose tables have
/// `columns` (table, column, position in the key) to [`SCHEMA_VERSION`]: the columns it lacks
/// (added to the tables it has; the tables it lacks are created whole by the schema script),
/// then the schema script, then for ledgers written before versions were recorded the cost
/// records' key rebuilt if it is an old one.
fn sqlite_migration(from: i64, columns: &[(String, String, i64)]) -> String {
    let has_table = |t: &str| columns.iter().any(|(table, _, _)| table == t);
    let mut adds: Vec<(&str, &str, &str)> = Vec::new();
    if from == 0 {
        // Columns added before versions were recorded (their defaults describe the old rows
        // truthfully). The history's come before the schema script, whose indexes need some.
        adds.extend(HISTORY_COLUMNS.iter().map(|(n, ty)| ("contact_ends", *n, *ty)));
        adds.extend(RECORD_DETAIL_COLUMNS.iter().map(|(n, ty)| ("cost_records", *n, *ty)));
        adds.extend([
            // Before the column the actor was whatever the client typed, and there was no note.
            ("amendments", "note", "TEXT NOT NULL DEFAULT ''"),
            ("holds", "node_id", "TEXT NOT NULL DEFAULT ''"),
            // Ledgers before the column settled only contacts their operator completed or whose
            // caller hung up in service, without telling which: `completed` is what they reported.
            ("cost_records", "outcome", "TEXT NOT NULL DEFAULT 'completed'"),
            // Leases live on PostgreSQL only; the column keeps one schema for both.
            ("budget_leases", "epoch", "BIGINT NOT NULL DEFAULT 0"),
            ("cost_records", "node_id", "TEXT NOT NULL DEFAULT ''"),
        ]);
    }
    adds.extend(steps_after(from).flatten().copied());
    let mut script = String::new();
    for (table, name, ty) in adds {
        let missing = !columns.iter().any(|(t, c, _)| t == table && c == name);
        if has_table(table) && missing && !script.contains(&format!("ALTER TABLE {table} ADD COLUMN {name} ")) {
            script.push_str(&format!("ALTER TABLE {table} ADD COLUMN {name} {ty};\n"));
        }
    }
    script.push_str(&schema(false));
    let key: Vec<&str> = {
        let mut k: Vec<(i64, &str)> = columns
            .iter()
            .filter(|(t, _, pk)| t == "cost_records" && *pk > 0)
            .map(|(_, c, pk)| (*pk, c.as_str()))
            .collect();
        k.sort_unstable();
        k.into_iter().map(|(_, c)| c).collect()
    };
    if from == 0 && has_table("cost_records") && (key.len() != 3 || key[0] != "contact_id") {
        // Keyed (budget, contact) before: a contact id re-used after a restart was routed and
        // handled again but its record was dropped. Then keyed by budget first, with a second
        // index by contact: every commit wrote two B-trees at random places. SQLite cannot
        // change a key: rebuild (inside the migration's transaction).
        script.push_str(&format!(
            "ALTER TABLE cost_records RENAME TO cost_records_v1;
             DROP INDEX IF EXISTS cost_records_by_period;
             DROP INDEX IF EXISTS cost_records_by_contact;
             DROP INDEX IF EXISTS cost_records_by_completion;
             DROP INDEX IF EXISTS cost_records_by_arrival;
             {}
             INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group, operator_id,
                channel, accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents, outcome, node_id)
             SELECT budget_id, contact_id, period, queue, operator_group, operator_id,
                channel, accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents, outcome, node_id
             FROM cost_records_v1;
             DROP TABLE cost_records_v1;",
            schema(false)
        ));
    }
    script
}
