//! The `StateStore` trait: everything that must survive a restart (sessions and history, dedup,
//! the inbox journal of accepted messages, the outbox of undelivered replies, and a small
//! key-value space used by pairing and adapters).
//!
//! The trait is deliberately narrow (point reads and writes, short lists) so that a shared backend
//! such as Redis can implement it later. Every time-dependent method takes `now` from the caller's
//! [`crate::clock::Clock`], which keeps backends deterministic under paused test time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::{ChatAddress, InboundMessage, Sender, Target};

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A conversation session: the current session id behind a session key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session key (see `session::session_key`).
    pub key: String,
    /// The current session id; history hangs off it. A reset creates a new id.
    pub session_id: String,
    /// Platform instance.
    pub instance: String,
    /// The chat the session belongs to.
    pub chat: ChatAddress,
    /// The last sender (the owner in per-user group sessions).
    pub sender: Sender,
    /// When this session id was created.
    pub created_at: DateTime<Utc>,
    /// Last activity (last turn started).
    pub updated_at: DateTime<Utc>,
    /// Number of turns in this session id.
    pub turns: u64,
}

/// Who said a history line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The agent.
    Assistant,
}

/// One line of conversation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Who said it.
    pub role: Role,
    /// What was said (attachments are summarised as text).
    pub text: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A journaled inbound message: written before the platform is acknowledged, marked done when
/// its turn ends. Unfinished entries are resumed after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// `<instance>:<message_id>`; unique.
    pub id: String,
    /// The message.
    pub message: InboundMessage,
    /// When it was journaled.
    pub received_at: DateTime<Utc>,
}

impl InboxEntry {
    /// The inbox id of a message.
    pub fn id_for(message: &InboundMessage) -> String {
        format!("{}:{}", message.instance, message.message_id)
    }

    /// A new entry for `message`.
    pub fn new(message: InboundMessage, now: DateTime<Utc>) -> Self {
        Self {
            id: Self::id_for(&message),
            message,
            received_at: now,
        }
    }
}

/// A reply that could not be delivered, kept for retry and for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Assigned by the store on insert (ignored on input).
    pub id: i64,
    /// Platform instance.
    pub instance: String,
    /// Where it should go.
    pub target: Target,
    /// The text.
    pub text: String,
    /// Why it was not delivered.
    pub last_error: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was first recorded.
    pub created_at: DateTime<Utc>,
}

/// Persistent state of the gateway.
///
/// Implementations must never block the async runtime (run SQLite on a dedicated thread or
/// `spawn_blocking`) and should group concurrent hot-path writes (inbox, dedup, history) into
/// one transaction.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    // ---- sessions -------------------------------------------------------------------------

    /// The session behind `key`, if any.
    async fn session_get(&self, key: &str) -> StoreResult<Option<SessionRecord>>;
    /// Inserts or replaces the session with `record.key`.
    async fn session_put(&self, record: &SessionRecord) -> StoreResult<()>;
    /// Every session, ordered by key.
    async fn session_list(&self) -> StoreResult<Vec<SessionRecord>>;
    /// Removes the session behind `key` (its history stays until pruned). True if it existed.
    async fn session_delete(&self, key: &str) -> StoreResult<bool>;

    // ---- history --------------------------------------------------------------------------

    /// Appends entries to a session's history and keeps only the newest `cap` entries.
    async fn history_append(
        &self,
        session_id: &str,
        entries: &[HistoryEntry],
        cap: usize,
    ) -> StoreResult<()>;
    /// The newest `limit` entries of a session's history, oldest first.
    async fn history_load(&self, session_id: &str, limit: usize) -> StoreResult<Vec<HistoryEntry>>;

    // ---- dedup ----------------------------------------------------------------------------

    /// Records `id` in `scope` and returns true when it was not seen within `ttl` before `now`;
    /// returns false for a duplicate. Entries older than `ttl` may be purged.
    async fn dedup_check(
        &self,
        scope: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> StoreResult<bool>;

    // ---- inbox ----------------------------------------------------------------------------

    /// Journals an accepted message. Returns false (and changes nothing) when an entry with the
    /// same id exists, pending or done: the inbox doubles as persistent dedup.
    async fn inbox_put(&self, entry: &InboxEntry) -> StoreResult<bool>;
    /// Marks an entry done (its turn ended, the reply was delivered or recorded undelivered).
    async fn inbox_done(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Entries not yet done, oldest first.
    async fn inbox_pending(&self) -> StoreResult<Vec<InboxEntry>>;
    /// Deletes done entries finished before `before`. Returns how many were removed.
    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // ---- outbox ---------------------------------------------------------------------------

    /// Records an undelivered reply; returns its id.
    async fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<i64>;
    /// Undelivered replies, oldest first, optionally for one instance.
    async fn outbox_pending(&self, instance: Option<&str>) -> StoreResult<Vec<OutboxEntry>>;
    /// Records a failed retry.
    async fn outbox_attempt(&self, id: i64, error: &str) -> StoreResult<()>;
    /// Removes a delivered entry.
    async fn outbox_done(&self, id: i64) -> StoreResult<()>;

    // ---- key-value ------------------------------------------------------------------------

    /// Reads `key` in namespace `ns`.
    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<String>>;
    /// Writes `key` in namespace `ns`.
    async fn kv_put(&self, ns: &str, key: &str, value: &str) -> StoreResult<()>;
    /// Deletes `key` in `ns`; true if it existed.
    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool>;
    /// Every `(key, value)` in `ns` whose key starts with `prefix`, ordered by key.
    async fn kv_list(&self, ns: &str, prefix: &str) -> StoreResult<Vec<(String, String)>>;

    // ---- lifecycle ------------------------------------------------------------------------

    /// Flushes pending writes and closes; later calls fail with `StoreError::Closed`.
    async fn close(&self) -> StoreResult<()>;
}
