//! The embedded SQLite `StateStore`.
//!
//! One dedicated thread owns the database connection and runs every command (see `writer`):
//! callers send commands over a bounded channel and await the reply, so the async runtime never
//! blocks on SQLite, and concurrent writes are grouped into one transaction (group commit).
//!
//! Reads go through the same thread rather than a second connection on `spawn_blocking`. The
//! per-message reads (a session, a page of history, a kv value) are indexed point lookups that
//! take microseconds, so queueing them with the writes costs little, and it buys a single
//! ordering point (a read issued after a write returns sees it), no pool of blocking threads to
//! bound, and in-memory databases that behave exactly like files. A batch holding only reads
//! runs in a deferred transaction, so reads never wait for another process's write lock.
//!
//! Other processes (the `gateway pairing` CLI) may open the same file at the same time: WAL lets
//! them read while we write, the busy timeout makes competing writers wait their turn, and a
//! lock still held after the timeout surfaces as `StoreError::Busy`.

mod ops;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gateway_core::store::{
    DeliveryState, HistoryEntry, InboxEntry, IntakeEntry, OutboxEntry, SessionRecord, StateStore,
    StoreResult,
};
use gateway_core::StoreError;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::writer::{Access, Counters, Msg, Op};

/// Tuning knobs; [`SqliteOptions::default`] suits the gateway.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long to wait for another process's write lock before failing with
    /// `StoreError::Busy`.
    pub busy_timeout: Duration,
    /// Commands that may wait for the writer thread; callers beyond it wait (asynchronously)
    /// for room.
    pub queue_capacity: usize,
    /// Most commands grouped into one transaction.
    pub batch_max: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 1024,
            batch_max: 256,
        }
    }
}

/// Counters of the writer thread, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Transactions run (committed or failed); each is one batch.
    pub transactions: u64,
    /// Commands run in those transactions.
    pub commands: u64,
}

/// A `StateStore` in one SQLite database file.
pub struct SqliteStore {
    tx: mpsc::Sender<Msg>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// For Debug and logs; `:memory:` for an in-memory database.
    location: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish()
    }
}

/// Maps a SQLite error: a busy or locked database is `Busy` (retryable), a value that does not
/// convert is `Corrupt`, anything else is `Backend`.
pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Busy(e.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options, and migrates it.
    ///
    /// This does file I/O and may wait up to the busy timeout for another process: call it at
    /// startup or inside `spawn_blocking`, not on a busy runtime thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with explicit options.
    /// The database file is made owner-only (`0600`) before SQLite opens it, which gives its
    /// `-wal` and `-shm` files the same mode: the store holds chat history.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        gateway_core::private_fs::ensure_private_file(path)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", path.display())))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = PathBuf::from(side);
            if side.exists() {
                let _ = gateway_core::private_fs::restrict_file(&side);
            }
        }
        let conn = Connection::open(path).map_err(sql_err)?;
        Self::start(conn, path.to_path_buf(), options)
    }

    /// A private in-memory database (tests, `gateway chat` without a data dir).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(sql_err)?;
        Self::start(conn, PathBuf::from(":memory:"), SqliteOptions::default())
    }

    fn start(conn: Connection, location: PathBuf, options: SqliteOptions) -> StoreResult<Self> {
        schema::configure(&conn, options.busy_timeout)?;
        schema::migrate(&conn)?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let batch_max = options.batch_max.max(1);
        let writer = std::thread::Builder::new()
            .name("store-sqlite".into())
            .spawn(move || writer::run(conn, rx, thread_counters, batch_max))
            .map_err(|e| StoreError::Backend(format!("cannot start the store thread: {e}")))?;
        tracing::debug!(location = %location.display(), "Store opened.");
        Ok(Self {
            tx,
            closed: AtomicBool::new(false),
            counters,
            writer: Mutex::new(Some(writer)),
            location,
        })
    }

    /// Transactions and commands run so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            commands: self.counters.commands.load(Ordering::Relaxed),
        }
    }

    /// The schema version this build migrates databases to.
    pub fn schema_version() -> i64 {
        schema::latest_version()
    }

    /// Runs `f` on the writer thread and waits for its reply, which comes after the commit.
    ///
    /// If the caller stops waiting after the command was queued, the command still runs.
    async fn call<T, F>(&self, access: Access, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Op::new(access, f, reply));
        // A full queue makes us wait for room here: backpressure, not blocking.
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.unwrap_or_else(|_| {
            // The thread dropped the reply without answering: it is gone.
            if self.closed.load(Ordering::Acquire) {
                Err(StoreError::Closed)
            } else {
                Err(StoreError::Backend(
                    "the store thread stopped unexpectedly".into(),
                ))
            }
        })
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn encode<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Backend(format!("cannot encode {what}: {e}")))
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn session_get(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        let key = key.to_string();
        self.call(Access::Read, move |c| ops::session_get(c, &key))
            .await
    }

    async fn session_put(&self, record: &SessionRecord) -> StoreResult<()> {
        let record = record.clone();
        self.call(Access::Write, move |c| ops::session_put(c, &record))
            .await
    }

    async fn session_list(&self) -> StoreResult<Vec<SessionRecord>> {
        self.call(Access::Read, ops::session_list).await
    }

    async fn session_delete(&self, key: &str) -> StoreResult<bool> {
        let key = key.to_string();
        self.call(Access::Write, move |c| ops::session_delete(c, &key))
            .await
    }

    async fn history_append(
        &self,
        session_id: &str,
        entries: &[HistoryEntry],
        cap: usize,
    ) -> StoreResult<()> {
        let session_id = session_id.to_string();
        let entries = entries.to_vec();
        self.call(Access::Write, move |c| {
            ops::history_append(c, &session_id, &entries, cap)
        })
        .await
    }

    async fn history_load(&self, session_id: &str, limit: usize) -> StoreResult<Vec<HistoryEntry>> {
        let session_id = session_id.to_string();
        self.call(Access::Read, move |c| {
            ops::history_load(c, &session_id, limit)
        })
        .await
    }

    async fn dedup_check(
        &self,
        scope: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (scope, id) = (scope.to_string(), id.to_string());
        let now_ms = now.timestamp_millis();
        let expires_ms = now_ms.saturating_add(ttl_ms(ttl));
        self.call(Access::Write, move |c| {
            ops::dedup_check(c, &scope, &id, now_ms, expires_ms)
        })
        .await
    }

    async fn intake_accept(&self, entry: &IntakeEntry) -> StoreResult<bool> {
        let entry = entry.clone();
        let received_ms = entry.received_at.timestamp_millis();
        self.call(Access::Write, move |c| {
            ops::intake_accept(c, &entry.scope, &entry.id, &entry.payload, received_ms)
        })
        .await
    }

    async fn intake_done(&self, scope: &str, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (scope, id) = (scope.to_string(), id.to_string());
        let now_ms = now.timestamp_millis();
        self.call(Access::Write, move |c| {
            ops::intake_done(c, &scope, &id, now_ms)
        })
        .await
    }

    async fn intake_pending(&self, scope: &str) -> StoreResult<Vec<IntakeEntry>> {
        let scope = scope.to_string();
        self.call(Access::Read, move |c| ops::intake_pending(c, &scope))
            .await
    }

    async fn intake_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before_ms = before.timestamp_millis();
        self.call(Access::Write, move |c| ops::intake_prune(c, before_ms))
            .await
    }

    async fn inbox_put(&self, entry: &InboxEntry) -> StoreResult<bool> {
        let id = entry.id.clone();
        let message = encode("inbox message", &entry.message)?;
        let received_ms = entry.received_at.timestamp_millis();
        self.call(Access::Write, move |c| {
            ops::inbox_put(c, &id, &message, received_ms)
        })
        .await
    }

    async fn inbox_done(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let id = id.to_string();
        let now_ms = now.timestamp_millis();
        self.call(Access::Write, move |c| ops::inbox_done(c, &id, now_ms))
            .await
    }

    async fn inbox_pending(&self) -> StoreResult<Vec<InboxEntry>> {
        self.call(Access::Read, ops::inbox_pending).await
    }

    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before_ms = before.timestamp_millis();
        self.call(Access::Write, move |c| ops::inbox_prune(c, before_ms))
            .await
    }

    async fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<i64> {
        let new = ops::NewOutbox {
            instance: entry.instance.clone(),
            target_json: encode("outbox target", &entry.target)?,
            text: entry.text.clone(),
            last_error: entry.last_error.clone(),
            attempts: entry.attempts,
            created_ms: entry.created_at.timestamp_millis(),
            parts_json: encode("outbox parts", &entry.parts)?,
            parts_done: entry.parts_done,
            inbox_id: entry.inbox_id.clone(),
            state: entry.state,
        };
        self.call(Access::Write, move |c| ops::outbox_put(c, &new))
            .await
    }

    async fn outbox_get(&self, id: i64) -> StoreResult<Option<OutboxEntry>> {
        self.call(Access::Read, move |c| ops::outbox_get(c, id))
            .await
    }

    async fn outbox_for_inbox(&self, inbox_id: &str) -> StoreResult<Option<OutboxEntry>> {
        let inbox_id = inbox_id.to_string();
        self.call(Access::Read, move |c| ops::outbox_for_inbox(c, &inbox_id))
            .await
    }

    async fn outbox_pending(&self, instance: Option<&str>) -> StoreResult<Vec<OutboxEntry>> {
        let instance = instance.map(str::to_string);
        self.call(Access::Read, move |c| {
            ops::outbox_pending(c, instance.as_deref())
        })
        .await
    }

    async fn outbox_progress(&self, id: i64, parts: &[String], parts_done: u32) -> StoreResult<()> {
        let parts_json = encode("outbox parts", parts)?;
        self.call(Access::Write, move |c| {
            ops::outbox_progress(c, id, &parts_json, parts_done)
        })
        .await
    }

    async fn outbox_attempt(&self, id: i64, error: &str, state: DeliveryState) -> StoreResult<()> {
        let error = error.to_string();
        self.call(Access::Write, move |c| {
            ops::outbox_attempt(c, id, &error, state)
        })
        .await
    }

    async fn outbox_done(
        &self,
        id: i64,
        inbox_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let inbox_id = inbox_id.map(str::to_string);
        let now_ms = now.timestamp_millis();
        self.call(Access::Write, move |c| {
            ops::outbox_done(c, id, inbox_id.as_deref(), now_ms)
        })
        .await
    }

    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<String>> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.call(Access::Read, move |c| ops::kv_get(c, &ns, &key))
            .await
    }

    async fn kv_put(&self, ns: &str, key: &str, value: &str) -> StoreResult<()> {
        let (ns, key, value) = (ns.to_string(), key.to_string(), value.to_string());
        self.call(Access::Write, move |c| ops::kv_put(c, &ns, &key, &value))
            .await
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.call(Access::Write, move |c| ops::kv_delete(c, &ns, &key))
            .await
    }

    async fn kv_list(&self, ns: &str, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        let (ns, prefix) = (ns.to_string(), prefix.to_string());
        self.call(Access::Read, move |c| ops::kv_list(c, &ns, &prefix))
            .await
    }

    async fn close(&self) -> StoreResult<()> {
        // Only the first close does the work; later ones (racing shutdown paths) succeed at once.
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        // Queued behind every command already sent, so those are committed first.
        let result = match self.tx.send(Msg::Close(reply)).await {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            // The thread is already gone (it can only stop after a close or a crash).
            Err(_) => Ok(()),
        };
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            // The thread answered as its last act, so this join is immediate; still, joining
            // is blocking, so it goes to the blocking pool.
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::warn!(location = %self.location.display(), "The store thread panicked.");
            }
        }
        result
    }
}
