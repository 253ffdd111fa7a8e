//! Connection setup and schema migrations, versioned by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Migrations only ever get
//! appended; a shipped one is never edited, since databases in the field already ran it.

use std::time::{Duration, Instant};

use gateway_core::StoreError;
use rusqlite::Connection;

use crate::sql_err;

/// The schema, one step per entry. Every lookup column has an index so per-message work stays
/// O(log n): sessions and kv by primary key; history by `(session_id, seq)` for appends, loads
/// and the cap's range delete; dedup by `(scope, id)` plus `expires_at` for the purge; the
/// inbox's pending and done sets by partial indexes; the outbox by `(instance, id)`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. Times are integer milliseconds since the Unix epoch, UTC.
    "
    CREATE TABLE sessions (
        key         TEXT PRIMARY KEY NOT NULL,
        session_id  TEXT NOT NULL,
        instance    TEXT NOT NULL,
        chat_kind   TEXT NOT NULL,
        chat_id     TEXT NOT NULL,
        sender_id   TEXT NOT NULL,
        sender_name TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        turns       INTEGER NOT NULL
    );

    CREATE TABLE history (
        session_id TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        role       TEXT NOT NULL,
        text       TEXT NOT NULL,
        at         INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE dedup (
        scope      TEXT NOT NULL,
        id         TEXT NOT NULL,
        seen_at    INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (scope, id)
    ) WITHOUT ROWID;
    CREATE INDEX dedup_by_expiry ON dedup (expires_at);

    CREATE TABLE inbox (
        id          TEXT PRIMARY KEY NOT NULL,
        message     TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        done_at     INTEGER
    );
    CREATE INDEX inbox_pending ON inbox (received_at) WHERE done_at IS NULL;
    CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;

    CREATE TABLE outbox (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        instance   TEXT NOT NULL,
        target     TEXT NOT NULL,
        text       TEXT NOT NULL,
        last_error TEXT NOT NULL,
        attempts   INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX outbox_by_instance ON outbox (instance, id);

    CREATE TABLE kv (
        ns    TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (ns, key)
    ) WITHOUT ROWID;
    ",
    // 2: the adapters' intake journal (dedup and journal in one row: an id is seen only if its
    // entry exists), and resumable outbox deliveries (planned parts, progress, state, the inbox
    // entry they answer). Old outbox rows were failed deliveries of the whole text.
    "
    CREATE TABLE intake (
        scope       TEXT NOT NULL,
        id          TEXT NOT NULL,
        payload     TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        done_at     INTEGER,
        UNIQUE (scope, id)
    );
    CREATE INDEX intake_pending ON intake (scope, received_at) WHERE done_at IS NULL;
    CREATE INDEX intake_done ON intake (done_at) WHERE done_at IS NOT NULL;

    ALTER TABLE outbox ADD COLUMN parts TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE outbox ADD COLUMN parts_done INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN inbox_id TEXT;
    ALTER TABLE outbox ADD COLUMN state TEXT NOT NULL DEFAULT 'failed';
    CREATE INDEX outbox_by_inbox ON outbox (inbox_id, id) WHERE inbox_id IS NOT NULL;
    ",
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies the per-connection settings: WAL so readers (the pairing CLI in another process)
/// never block the writer, `synchronous=NORMAL` which is durable against application crashes
/// in WAL mode and skips an fsync per commit, and a busy timeout so a concurrent writer in
/// another process makes us wait instead of failing at once.
pub(crate) fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout).map_err(sql_err)?;
    set_wal(conn, busy_timeout)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql_err)?;
    // Every statement of the store fits; prepared once, reused for every message.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Switches to WAL. When two processes open a brand-new file at once, the switch can fail with
/// `SQLITE_BUSY` at once, without SQLite consulting the busy handler, so retry it here for up
/// to the busy timeout. (`open` is documented as blocking; this runs before the writer thread.)
fn set_wal(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    let deadline = Instant::now() + busy_timeout;
    loop {
        // Returns the resulting mode; in-memory databases answer "memory", which is fine.
        let attempt: Result<String, _> =
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0));
        match attempt.map_err(sql_err) {
            Ok(_mode) => return Ok(()),
            Err(StoreError::Busy(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The schema version recorded in the database.
pub(crate) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_err)
}

/// Brings the schema up to date. Safe to run from several processes at once: each step runs
/// in an immediate (write-locked) transaction that re-reads the version first.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    loop {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err)?;
        let step = migrate_step(conn);
        match step {
            Ok(true) => conn.execute_batch("COMMIT").map_err(sql_err)?,
            Ok(false) => {
                conn.execute_batch("COMMIT").map_err(sql_err)?;
                return Ok(());
            }
            Err(e) => {
                // The transaction is still open; leave the connection clean. The original
                // error is the one worth reporting.
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// Applies the next pending migration inside the caller's transaction. False when there was
/// none.
fn migrate_step(conn: &Connection) -> Result<bool, StoreError> {
    let version = user_version(conn)?;
    let latest = latest_version();
    if version > latest {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this gateway supports ({latest}); \
             upgrade the gateway"
        )));
    }
    let Ok(index) = usize::try_from(version) else {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is negative"
        )));
    };
    let Some(sql) = MIGRATIONS.get(index) else {
        return Ok(false);
    };
    conn.execute_batch(sql).map_err(sql_err)?;
    conn.pragma_update(None, "user_version", version + 1)
        .map_err(sql_err)?;
    tracing::info!(version = version + 1, "Migrated the store schema.");
    Ok(true)
}
