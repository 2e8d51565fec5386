//! The two backends behind one set of statements: an embedded SQLite file (one node) or a
//! PostgreSQL database (several nodes sharing budgets). Statements are written once, with `?`
//! placeholders, and numbered (`$1`...) for PostgreSQL; the few differences (amendment numbering,
//! migrations of old SQLite files) are here.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

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
    updated_unix_ms    BIGINT  NOT NULL
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
    PRIMARY KEY (queue, at_unix_ms, change)
);
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
const HISTORY_COLUMNS: [(&str, &str); 12] = [
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
];

/// The detail columns of `cost_records`: a budgeted contact's detail record is its cost record
/// (one row per contact, not two) when its end is committed with it (see `writer.rs`).
pub(crate) const RECORD_DETAIL_COLUMNS: [(&str, &str); 11] = [
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
];

/// Reports read the history by arrival (cost records without a detail have arrival 0).
const HISTORY_INDEX: &str = "\nCREATE INDEX IF NOT EXISTS contact_ends_by_arrival ON contact_ends (arrived_unix_ms);
CREATE INDEX IF NOT EXISTS cost_records_by_arrival ON cost_records (arrived_unix_ms);\n";

/// Opens `target`, creating the schema and bringing an older one up to date: the pool for reads,
/// and the one for the group-commit writer (SQLite: a connection of its own, whose page cache no
/// other connection's writes invalidate; PostgreSQL: the same pool).
pub(crate) async fn open(target: &Target) -> Result<(Db, Db), LedgerError> {
    open_with(target, 8, Duration::from_secs(5)).await
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
            add_history_columns(&setup).await?;
            sqlx::raw_sql(&schema(false)).execute(&setup).await?;
            migrate_sqlite(&setup).await?;
            setup.close().await;
            let writer = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
            let readers = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
            Ok((Db::Sqlite(readers), Db::Sqlite(writer)))
        }
        Target::Postgres { url, schema: ns } => {
            let mut opts: PgConnectOptions =
                url.parse().map_err(|e| LedgerError::Storage(format!("bad PostgreSQL URL: {e}")))?;
            if let Some(ns) = ns {
                if ns.is_empty() || !ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(LedgerError::Storage(format!("bad schema name `{ns}`")));
                }
                let setup = PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
                // Concurrent CREATE SCHEMA IF NOT EXISTS can fail on a unique index: serialise. (A
                // multi-statement simple query is one transaction: the lock is held to its commit.)
                let create = format!("SELECT pg_advisory_xact_lock(7316255); CREATE SCHEMA IF NOT EXISTS {ns};");
                sqlx::raw_sql(&create).execute(&setup).await?;
                setup.close().await;
                opts = opts.options([("search_path", ns.as_str())]);
            }
            let setup = PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
            // Several nodes may open the same database at once: one creates, the others wait.
            // (`budget_leases.epoch` came after the first PostgreSQL ledgers: add it to theirs.)
            // (So did the history's detail columns of `contact_ends`.) The columns are added
            // before the schema's index on one of them is created.
            let history: String = HISTORY_COLUMNS
                .iter()
                .map(|(name, ty)| format!("ALTER TABLE IF EXISTS contact_ends ADD COLUMN IF NOT EXISTS {name} {ty};\n"))
                .chain(RECORD_DETAIL_COLUMNS.iter().map(|(name, ty)| {
                    format!("ALTER TABLE IF EXISTS cost_records ADD COLUMN IF NOT EXISTS {name} {ty};\n")
                }))
                .collect();
            let ddl = format!(
                "SELECT pg_advisory_xact_lock(7316255); {history} {}
                 ALTER TABLE budget_leases ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
                 ALTER TABLE holds ADD COLUMN IF NOT EXISTS arrived_unix_ms BIGINT NOT NULL DEFAULT 0;",
                schema(true)
            );
            sqlx::raw_sql(&ddl).execute(&setup).await?;
            setup.close().await;
            let pool =
                PgPoolOptions::new().max_connections(pg_conns).acquire_timeout(acquire).connect_with(opts).await?;
            Ok((Db::Postgres(pool.clone()), Db::Postgres(pool)))
        }
    }
}

/// Adds the history's detail columns to a SQLite `contact_ends` and `cost_records` written before
/// them (before the schema script, whose indexes need some of them).
async fn add_history_columns(pool: &SqlitePool) -> Result<(), LedgerError> {
    for (table, columns) in [("contact_ends", &HISTORY_COLUMNS[..]), ("cost_records", &RECORD_DETAIL_COLUMNS[..])] {
        let present: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?)")
            .bind(table)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        if present.is_empty() {
            continue; // a new ledger: the schema creates the table whole
        }
        for (name, ty) in columns {
            if !present.iter().any(|p| p == name) {
                sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {name} {ty}")).execute(pool).await?;
            }
        }
    }
    Ok(())
}

/// Brings a SQLite ledger written by an earlier smista up to [`schema`]: columns added since
/// (their defaults describe the old rows truthfully) and the cost records' key, which now tells
/// the lives of a re-used contact id apart. Idempotent.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), LedgerError> {
    let has = |table: &'static str, column: &'static str| async move {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pragma_table_info(?) WHERE name = ?")
            .bind(table)
            .bind(column)
            .fetch_one(pool)
            .await?
            .try_get("n")?;
        Ok::<bool, LedgerError>(n > 0)
    };
    if !has("amendments", "note").await? {
        // Before the column the actor was whatever the client typed, and there was no note.
        sqlx::query("ALTER TABLE amendments ADD COLUMN note TEXT NOT NULL DEFAULT ''").execute(pool).await?;
    }
    if !has("holds", "node_id").await? {
        sqlx::query("ALTER TABLE holds ADD COLUMN node_id TEXT NOT NULL DEFAULT ''").execute(pool).await?;
    }
    if !has("holds", "arrived_unix_ms").await? {
        sqlx::query("ALTER TABLE holds ADD COLUMN arrived_unix_ms BIGINT NOT NULL DEFAULT 0").execute(pool).await?;
    }
    if !has("cost_records", "outcome").await? {
        // Ledgers before the column settled only contacts their operator completed or whose
        // caller hung up in service, without telling which: `completed` is what they reported.
        sqlx::query("ALTER TABLE cost_records ADD COLUMN outcome TEXT NOT NULL DEFAULT 'completed'")
            .execute(pool)
            .await?;
    }
    let key_cols: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pragma_table_info('cost_records') WHERE pk > 0")
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    let first_key: String = sqlx::query("SELECT name FROM pragma_table_info('cost_records') WHERE pk = 1")
        .fetch_one(pool)
        .await?
        .try_get("name")?;
    if !has("budget_leases", "epoch").await? {
        // Leases live on PostgreSQL only; the column keeps one schema for both.
        sqlx::query("ALTER TABLE budget_leases ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0").execute(pool).await?;
    }
    if !has("cost_records", "node_id").await? {
        sqlx::query("ALTER TABLE cost_records ADD COLUMN node_id TEXT NOT NULL DEFAULT ''").execute(pool).await?;
    }
    if key_cols != 3 || first_key != "contact_id" {
        // Keyed (budget, contact) before: a contact id re-used after a restart was routed and
        // handled again but its record was dropped. Then keyed by budget first, with a second
        // index by contact: every commit wrote two B-trees at random places. SQLite cannot
        // change a key: rebuild.
        // One script on the setup pool's one connection, inside one transaction.
        let script = format!(
            "BEGIN;
             ALTER TABLE cost_records RENAME TO cost_records_v1;
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
             DROP TABLE cost_records_v1;
             COMMIT;",
            schema(false)
        );
        sqlx::raw_sql(&script).execute(pool).await?;
    }
    Ok(())
}
