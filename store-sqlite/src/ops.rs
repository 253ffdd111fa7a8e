//! The SQL of each store operation, run on the writer thread inside a transaction.
//!
//! Every statement goes through the connection's statement cache and hits an index (see
//! `schema::MIGRATIONS`), so the work per message does not grow with the size of the tables.
//! Values arrive already converted (times as milliseconds, JSON already encoded) so the writer
//! thread spends its time on SQL only.

use chrono::{DateTime, Utc};
use gateway_core::model::{ChatAddress, ChatKind, Sender, Target};
use gateway_core::store::{
    DeliveryState, HistoryEntry, InboxEntry, IntakeEntry, OutboxEntry, Role, SessionRecord,
    StoreResult,
};
use gateway_core::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::sql_err;

// ---- statements -----------------------------------------------------------------------------
// Named so that the query-plan test below checks the very statements the operations run.

const SESSION_GET: &str = "SELECT key, session_id, instance, chat_kind, chat_id, sender_id, \
    sender_name, created_at, updated_at, turns FROM sessions WHERE key = ?1";
const SESSION_LIST: &str = "SELECT key, session_id, instance, chat_kind, chat_id, sender_id, \
    sender_name, created_at, updated_at, turns FROM sessions ORDER BY key";
const SESSION_PUT: &str = "INSERT INTO sessions (key, session_id, instance, chat_kind, chat_id, \
    sender_id, sender_name, created_at, updated_at, turns) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
    ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id, \
    instance = excluded.instance, chat_kind = excluded.chat_kind, chat_id = excluded.chat_id, \
    sender_id = excluded.sender_id, sender_name = excluded.sender_name, \
    created_at = excluded.created_at, updated_at = excluded.updated_at, turns = excluded.turns";
const SESSION_DELETE: &str = "DELETE FROM sessions WHERE key = ?1";

const HISTORY_LAST: &str =
    "SELECT seq FROM history WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1";
const HISTORY_INSERT: &str =
    "INSERT INTO history (session_id, seq, role, text, at) VALUES (?1, ?2, ?3, ?4, ?5)";
const HISTORY_TRIM: &str = "DELETE FROM history WHERE session_id = ?1 AND seq <= ?2";
const HISTORY_LOAD: &str =
    "SELECT role, text, at FROM history WHERE session_id = ?1 ORDER BY seq DESC LIMIT ?2";

const DEDUP_PURGE: &str = "DELETE FROM dedup WHERE expires_at <= ?1";
const DEDUP_INSERT: &str = "INSERT INTO dedup (scope, id, seen_at, expires_at) \
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (scope, id) DO NOTHING";

const INBOX_PUT: &str = "INSERT INTO inbox (id, message, received_at) VALUES (?1, ?2, ?3) \
    ON CONFLICT (id) DO NOTHING";
const INBOX_DONE: &str = "UPDATE inbox SET done_at = ?2 WHERE id = ?1 AND done_at IS NULL";
// `rowid` breaks ties in insertion order; the partial index already holds it.
const INBOX_PENDING: &str = "SELECT id, message, received_at FROM inbox WHERE done_at IS NULL \
    ORDER BY received_at, rowid";
const INBOX_PRUNE: &str = "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < ?1";

const INTAKE_ACCEPT: &str = "INSERT INTO intake (scope, id, payload, received_at) \
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (scope, id) DO NOTHING";
const INTAKE_DONE: &str =
    "UPDATE intake SET done_at = ?3 WHERE scope = ?1 AND id = ?2 AND done_at IS NULL";
const INTAKE_PENDING: &str = "SELECT id, payload, received_at FROM intake \
    WHERE scope = ?1 AND done_at IS NULL ORDER BY received_at, rowid";
const INTAKE_PRUNE: &str = "DELETE FROM intake WHERE done_at IS NOT NULL AND done_at < ?1";

const OUTBOX_PUT: &str = "INSERT INTO outbox (instance, target, text, last_error, attempts, \
    created_at, parts, parts_done, inbox_id, state) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const OUTBOX_ALL: &str = "SELECT id, instance, target, text, last_error, attempts, \
    created_at, parts, parts_done, inbox_id, state FROM outbox ORDER BY id";
const OUTBOX_BY_INSTANCE: &str = "SELECT id, instance, target, text, last_error, attempts, \
    created_at, parts, parts_done, inbox_id, state FROM outbox WHERE instance = ?1 ORDER BY id";
const OUTBOX_GET: &str = "SELECT id, instance, target, text, last_error, attempts, \
    created_at, parts, parts_done, inbox_id, state FROM outbox WHERE id = ?1";
const OUTBOX_FOR_INBOX: &str = "SELECT id, instance, target, text, last_error, attempts, \
    created_at, parts, parts_done, inbox_id, state FROM outbox \
    WHERE inbox_id = ?1 ORDER BY id DESC LIMIT 1";
const OUTBOX_PROGRESS: &str = "UPDATE outbox SET parts = ?2, parts_done = ?3 WHERE id = ?1";
// Saturates at u32::MAX, like the in-memory store, rather than store an unreadable count.
const OUTBOX_ATTEMPT: &str = "UPDATE outbox \
    SET attempts = MIN(attempts + 1, 4294967295), last_error = ?2, state = ?3 WHERE id = ?1";
const OUTBOX_DONE: &str = "DELETE FROM outbox WHERE id = ?1";

const KV_GET: &str = "SELECT value FROM kv WHERE ns = ?1 AND key = ?2";
const KV_PUT: &str = "INSERT INTO kv (ns, key, value) VALUES (?1, ?2, ?3) \
    ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value";
const KV_DELETE: &str = "DELETE FROM kv WHERE ns = ?1 AND key = ?2";
const KV_RANGE: &str =
    "SELECT key, value FROM kv WHERE ns = ?1 AND key >= ?2 AND key < ?3 ORDER BY key";
const KV_FROM: &str = "SELECT key, value FROM kv WHERE ns = ?1 AND key >= ?2 ORDER BY key";

/// Milliseconds since the epoch back to a time.
pub(crate) fn time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} ms is out of range")))
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn role_from(s: &str) -> StoreResult<Role> {
    match s {
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(StoreError::Corrupt(format!(
            "unknown history role `{other}`"
        ))),
    }
}

// ---- sessions -------------------------------------------------------------------------------

/// A sessions row as stored, before validation.
struct SessionRow {
    key: String,
    session_id: String,
    instance: String,
    chat_kind: String,
    chat_id: String,
    sender_id: String,
    sender_name: Option<String>,
    created_at: i64,
    updated_at: i64,
    turns: i64,
}

impl SessionRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            key: row.get(0)?,
            session_id: row.get(1)?,
            instance: row.get(2)?,
            chat_kind: row.get(3)?,
            chat_id: row.get(4)?,
            sender_id: row.get(5)?,
            sender_name: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
            turns: row.get(9)?,
        })
    }

    fn into_record(self) -> StoreResult<SessionRecord> {
        let kind = match self.chat_kind.as_str() {
            "dm" => ChatKind::Dm,
            "group" => ChatKind::Group,
            other => return Err(StoreError::Corrupt(format!("unknown chat kind `{other}`"))),
        };
        let turns = u64::try_from(self.turns)
            .map_err(|_| StoreError::Corrupt(format!("negative turn count {}", self.turns)))?;
        Ok(SessionRecord {
            key: self.key,
            session_id: self.session_id,
            instance: self.instance,
            chat: ChatAddress {
                kind,
                chat_id: self.chat_id,
            },
            sender: Sender {
                user_id: self.sender_id,
                display_name: self.sender_name,
            },
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            turns,
        })
    }
}

pub(crate) fn session_get(conn: &Connection, key: &str) -> StoreResult<Option<SessionRecord>> {
    let row = conn
        .prepare_cached(SESSION_GET)
        .and_then(|mut s| s.query_row([key], SessionRow::read).optional())
        .map_err(sql_err)?;
    row.map(SessionRow::into_record).transpose()
}

pub(crate) fn session_put(conn: &Connection, r: &SessionRecord) -> StoreResult<()> {
    let turns = i64::try_from(r.turns)
        .map_err(|_| StoreError::Backend(format!("turn count {} is too large", r.turns)))?;
    conn.prepare_cached(SESSION_PUT)
        .and_then(|mut s| {
            s.execute(params![
                r.key,
                r.session_id,
                r.instance,
                r.chat.kind.as_str(),
                r.chat.chat_id,
                r.sender.user_id,
                r.sender.display_name,
                r.created_at.timestamp_millis(),
                r.updated_at.timestamp_millis(),
                turns,
            ])
        })
        .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn session_list(conn: &Connection) -> StoreResult<Vec<SessionRecord>> {
    let rows = conn
        .prepare_cached(SESSION_LIST)
        .and_then(|mut s| {
            s.query_map([], SessionRow::read)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err)?;
    rows.into_iter().map(SessionRow::into_record).collect()
}

pub(crate) fn session_delete(conn: &Connection, key: &str) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(SESSION_DELETE)
        .and_then(|mut s| s.execute([key]))
        .map_err(sql_err)?;
    Ok(n > 0)
}

// ---- history --------------------------------------------------------------------------------

/// Appends after the session's highest sequence number, then trims everything at or below
/// `newest - cap` with one indexed range delete.
pub(crate) fn history_append(
    conn: &Connection,
    session_id: &str,
    entries: &[HistoryEntry],
    cap: usize,
) -> StoreResult<()> {
    let last: i64 = conn
        .prepare_cached(HISTORY_LAST)
        .and_then(|mut s| s.query_row([session_id], |row| row.get(0)).optional())
        .map_err(sql_err)?
        .unwrap_or(0);
    let mut seq = last;
    {
        let mut insert = conn.prepare_cached(HISTORY_INSERT).map_err(sql_err)?;
        for entry in entries {
            seq += 1;
            insert
                .execute(params![
                    session_id,
                    seq,
                    role_str(entry.role),
                    entry.text,
                    entry.at.timestamp_millis()
                ])
                .map_err(sql_err)?;
        }
    }
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    conn.prepare_cached(HISTORY_TRIM)
        .and_then(|mut s| s.execute(params![session_id, seq.saturating_sub(cap)]))
        .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn history_load(
    conn: &Connection,
    session_id: &str,
    limit: usize,
) -> StoreResult<Vec<HistoryEntry>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(HISTORY_LOAD)
        .and_then(|mut s| {
            s.query_map(params![session_id, limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err)?;
    // Selected newest first to use the index for the limit; handed out oldest first.
    rows.into_iter()
        .rev()
        .map(|(role, text, at)| {
            Ok(HistoryEntry {
                role: role_from(&role)?,
                text,
                at: time(at)?,
            })
        })
        .collect()
}

// ---- dedup ----------------------------------------------------------------------------------

/// Purges expired records (an index range delete that usually finds nothing), then records
/// the id unless a live record exists. Each record expires `ttl` after its first sighting.
pub(crate) fn dedup_check(
    conn: &Connection,
    scope: &str,
    id: &str,
    now_ms: i64,
    expires_ms: i64,
) -> StoreResult<bool> {
    conn.prepare_cached(DEDUP_PURGE)
        .and_then(|mut s| s.execute([now_ms]))
        .map_err(sql_err)?;
    let inserted = conn
        .prepare_cached(DEDUP_INSERT)
        .and_then(|mut s| s.execute(params![scope, id, now_ms, expires_ms]))
        .map_err(sql_err)?;
    Ok(inserted == 1)
}

// ---- inbox ----------------------------------------------------------------------------------

pub(crate) fn inbox_put(
    conn: &Connection,
    id: &str,
    message_json: &str,
    received_ms: i64,
) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached(INBOX_PUT)
        .and_then(|mut s| s.execute(params![id, message_json, received_ms]))
        .map_err(sql_err)?;
    Ok(inserted == 1)
}

pub(crate) fn inbox_done(conn: &Connection, id: &str, now_ms: i64) -> StoreResult<()> {
    conn.prepare_cached(INBOX_DONE)
        .and_then(|mut s| s.execute(params![id, now_ms]))
        .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn inbox_pending(conn: &Connection) -> StoreResult<Vec<InboxEntry>> {
    let rows = conn
        .prepare_cached(INBOX_PENDING)
        .and_then(|mut s| {
            s.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err)?;
    rows.into_iter()
        .map(|(id, message, received_at)| {
            let message = serde_json::from_str(&message).map_err(|e| {
                StoreError::Corrupt(format!("inbox entry `{id}` does not decode: {e}"))
            })?;
            Ok(InboxEntry {
                id,
                message,
                received_at: time(received_at)?,
            })
        })
        .collect()
}

pub(crate) fn inbox_prune(conn: &Connection, before_ms: i64) -> StoreResult<u64> {
    let n = conn
        .prepare_cached(INBOX_PRUNE)
        .and_then(|mut s| s.execute([before_ms]))
        .map_err(sql_err)?;
    Ok(n as u64)
}

// ---- intake journal -------------------------------------------------------------------------

/// Dedup and journal in one statement: the row is the dedup record.
pub(crate) fn intake_accept(
    conn: &Connection,
    scope: &str,
    id: &str,
    payload: &str,
    received_ms: i64,
) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached(INTAKE_ACCEPT)
        .and_then(|mut s| s.execute(params![scope, id, payload, received_ms]))
        .map_err(sql_err)?;
    Ok(inserted == 1)
}

pub(crate) fn intake_done(
    conn: &Connection,
    scope: &str,
    id: &str,
    now_ms: i64,
) -> StoreResult<()> {
    conn.prepare_cached(INTAKE_DONE)
        .and_then(|mut s| s.execute(params![scope, id, now_ms]))
        .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn intake_pending(conn: &Connection, scope: &str) -> StoreResult<Vec<IntakeEntry>> {
    let rows = conn
        .prepare_cached(INTAKE_PENDING)
        .and_then(|mut s| {
            s.query_map([scope], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err)?;
    rows.into_iter()
        .map(|(id, payload, received_at)| {
            Ok(IntakeEntry {
                scope: scope.to_string(),
                id,
                payload,
                received_at: time(received_at)?,
            })
        })
        .collect()
}

pub(crate) fn intake_prune(conn: &Connection, before_ms: i64) -> StoreResult<u64> {
    let n = conn
        .prepare_cached(INTAKE_PRUNE)
        .and_then(|mut s| s.execute([before_ms]))
        .map_err(sql_err)?;
    Ok(n as u64)
}

// ---- outbox ---------------------------------------------------------------------------------

/// An outbox entry with its target and parts already encoded.
pub(crate) struct NewOutbox {
    pub(crate) instance: String,
    pub(crate) target_json: String,
    pub(crate) text: String,
    pub(crate) last_error: String,
    pub(crate) attempts: u32,
    pub(crate) created_ms: i64,
    pub(crate) parts_json: String,
    pub(crate) parts_done: u32,
    pub(crate) inbox_id: Option<String>,
    pub(crate) state: DeliveryState,
}

pub(crate) fn outbox_put(conn: &Connection, e: &NewOutbox) -> StoreResult<i64> {
    conn.prepare_cached(OUTBOX_PUT)
        .and_then(|mut s| {
            s.execute(params![
                e.instance,
                e.target_json,
                e.text,
                e.last_error,
                i64::from(e.attempts),
                e.created_ms,
                e.parts_json,
                i64::from(e.parts_done),
                e.inbox_id,
                e.state.as_str(),
            ])
        })
        .map_err(sql_err)?;
    Ok(conn.last_insert_rowid())
}

/// The raw columns of one outbox row, in the order the `OUTBOX_*` selects name them.
struct OutboxRow {
    id: i64,
    instance: String,
    target: String,
    text: String,
    last_error: String,
    attempts: i64,
    created_at: i64,
    parts: String,
    parts_done: i64,
    inbox_id: Option<String>,
    state: String,
}

fn outbox_row(row: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: row.get(0)?,
        instance: row.get(1)?,
        target: row.get(2)?,
        text: row.get(3)?,
        last_error: row.get(4)?,
        attempts: row.get(5)?,
        created_at: row.get(6)?,
        parts: row.get(7)?,
        parts_done: row.get(8)?,
        inbox_id: row.get(9)?,
        state: row.get(10)?,
    })
}

fn outbox_decode(r: OutboxRow) -> StoreResult<OutboxEntry> {
    let id = r.id;
    let corrupt = |what: &str| StoreError::Corrupt(format!("outbox entry {id} has {what}"));
    let target: Target = serde_json::from_str(&r.target).map_err(|_| corrupt("a bad target"))?;
    let parts: Vec<String> =
        serde_json::from_str(&r.parts).map_err(|_| corrupt("unreadable parts"))?;
    let attempts = u32::try_from(r.attempts).map_err(|_| corrupt("a bad attempt count"))?;
    let parts_done = u32::try_from(r.parts_done).map_err(|_| corrupt("a bad part count"))?;
    let state = DeliveryState::parse(&r.state).ok_or_else(|| corrupt("an unknown state"))?;
    Ok(OutboxEntry {
        id,
        instance: r.instance,
        target,
        text: r.text,
        parts,
        parts_done,
        inbox_id: r.inbox_id,
        state,
        last_error: r.last_error,
        attempts,
        created_at: time(r.created_at)?,
    })
}

fn outbox_query(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> StoreResult<Vec<OutboxEntry>> {
    let rows = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(args, outbox_row)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err)?;
    rows.into_iter().map(outbox_decode).collect()
}

pub(crate) fn outbox_pending(
    conn: &Connection,
    instance: Option<&str>,
) -> StoreResult<Vec<OutboxEntry>> {
    match instance {
        Some(instance) => outbox_query(conn, OUTBOX_BY_INSTANCE, [instance]),
        None => outbox_query(conn, OUTBOX_ALL, []),
    }
}

pub(crate) fn outbox_get(conn: &Connection, id: i64) -> StoreResult<Option<OutboxEntry>> {
    Ok(outbox_query(conn, OUTBOX_GET, [id])?.pop())
}

pub(crate) fn outbox_for_inbox(
    conn: &Connection,
    inbox_id: &str,
) -> StoreResult<Option<OutboxEntry>> {
    Ok(outbox_query(conn, OUTBOX_FOR_INBOX, [inbox_id])?.pop())
}

pub(crate) fn outbox_progress(
    conn: &Connection,
    id: i64,
    parts_json: &str,
    parts_done: u32,
) -> StoreResult<()> {
    conn.prepare_cached(OUTBOX_PROGRESS)
        .and_then(|mut s| s.execute(params![id, parts_json, i64::from(parts_done)]))
        .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn outbox_attempt(
    conn: &Connection,
    id: i64,
    error: &str,
    state: DeliveryState,
) -> StoreResult<()> {
    conn.prepare_cached(OUTBOX_ATTEMPT)
        .and_then(|mut s| s.execute(params![id, error, state.as_str()]))
        .map_err(sql_err)?;
    Ok(())
}

/// Deletes the entry and closes its inbox entry in the same transaction (the caller's).
pub(crate) fn outbox_done(
    conn: &Connection,
    id: i64,
    inbox_id: Option<&str>,
    now_ms: i64,
) -> StoreResult<()> {
    conn.prepare_cached(OUTBOX_DONE)
        .and_then(|mut s| s.execute([id]))
        .map_err(sql_err)?;
    if let Some(inbox_id) = inbox_id {
        inbox_done(conn, inbox_id, now_ms)?;
    }
    Ok(())
}

// ---- key-value ------------------------------------------------------------------------------

pub(crate) fn kv_get(conn: &Connection, ns: &str, key: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached(KV_GET)
        .and_then(|mut s| s.query_row([ns, key], |row| row.get(0)).optional())
        .map_err(sql_err)
}

pub(crate) fn kv_put(conn: &Connection, ns: &str, key: &str, value: &str) -> StoreResult<()> {
    conn.prepare_cached(KV_PUT)
        .and_then(|mut s| s.execute([ns, key, value]))
        .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn kv_delete(conn: &Connection, ns: &str, key: &str) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(KV_DELETE)
        .and_then(|mut s| s.execute([ns, key]))
        .map_err(sql_err)?;
    Ok(n > 0)
}

/// Lists a key range `[prefix, prefix_end(prefix))`, which the primary key serves directly;
/// `LIKE` would treat `%` and `_` in the prefix as wildcards and fold case.
pub(crate) fn kv_list(
    conn: &Connection,
    ns: &str,
    prefix: &str,
) -> StoreResult<Vec<(String, String)>> {
    let pair = |row: &Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
    match prefix_end(prefix) {
        Some(end) => conn
            .prepare_cached(KV_RANGE)
            .and_then(|mut s| s.query_map([ns, prefix, &end], pair)?.collect()),
        None => conn
            .prepare_cached(KV_FROM)
            .and_then(|mut s| s.query_map([ns, prefix], pair)?.collect()),
    }
    .map_err(sql_err)
}

/// The least string greater than every string starting with `prefix`, or `None` when there is
/// none (empty prefix, or only `char::MAX`s). SQLite's default collation compares UTF-8 bytes,
/// which orders strings by code point, so bumping the last bumpable char is exact.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value; `from_u32` skips the surrogate gap.
        if let Some(next) = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        stmt.query_map(rusqlite::params_from_iter(nulls), |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn per_message_statements_search_an_index() {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn).unwrap();
        let per_message = [
            SESSION_GET,
            SESSION_PUT,
            SESSION_DELETE,
            HISTORY_LAST,
            HISTORY_INSERT,
            HISTORY_TRIM,
            HISTORY_LOAD,
            DEDUP_PURGE,
            DEDUP_INSERT,
            INBOX_PUT,
            INBOX_DONE,
            INBOX_PRUNE,
            INTAKE_ACCEPT,
            INTAKE_DONE,
            INTAKE_PENDING,
            INTAKE_PRUNE,
            OUTBOX_PUT,
            OUTBOX_BY_INSTANCE,
            OUTBOX_GET,
            OUTBOX_FOR_INBOX,
            OUTBOX_PROGRESS,
            OUTBOX_ATTEMPT,
            OUTBOX_DONE,
            KV_GET,
            KV_PUT,
            KV_DELETE,
            KV_RANGE,
            KV_FROM,
        ];
        for sql in per_message {
            let steps = plan(&conn, sql);
            assert!(
                steps
                    .iter()
                    .all(|s| !s.starts_with("SCAN") && !s.contains("TEMP B-TREE")),
                "{sql}: {steps:?}"
            );
        }
        // Whole-table listings walk an index in order instead of sorting.
        for sql in [SESSION_LIST, INBOX_PENDING, OUTBOX_ALL] {
            let steps = plan(&conn, sql);
            assert!(
                steps.iter().all(|s| !s.contains("TEMP B-TREE")),
                "{sql}: {steps:?}"
            );
        }
        assert!(plan(&conn, INBOX_PENDING)
            .iter()
            .any(|s| s.contains("INDEX inbox_pending")));
    }

    #[test]
    fn prefix_end_bumps_the_last_char() {
        assert_eq!(prefix_end("user:").as_deref(), Some("user;"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
    }
}
