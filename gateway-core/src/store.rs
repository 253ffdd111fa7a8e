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

/// One platform delivery journaled by an adapter before it has become an [`InboundMessage`]
/// (a decrypted callback body, an AI Bot frame): the adapter's own intake journal.
///
/// The contract (DESIGN.md "Delivery guarantee"): **an id counts as seen only if its journal
/// entry exists.** Dedup and journal are one record written by one operation
/// ([`StateStore::intake_accept`]), so there is no moment, crash or cancellation included, at
/// which a platform retry would be acknowledged as a duplicate of something that was never
/// queued. Entries stay after they are done (they are the persistent dedup record) until
/// [`StateStore::intake_prune`] removes old ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeEntry {
    /// Which adapter instance's journal (for example `wecom_callback/main`).
    pub scope: String,
    /// The platform's id of the delivery; unique within `scope`.
    pub id: String,
    /// What the adapter needs to process it again after a restart (opaque to the store).
    pub payload: String,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
}

/// Where a recorded delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Being sent now (or the process stopped while it was being sent).
    Sending,
    /// The last attempt failed with an answer from the platform; retried later.
    Failed,
    /// The last attempt got no answer (a timeout, a dropped connection): the platform may or
    /// may not have shown the part in flight. Retried from the first unconfirmed part.
    Unconfirmed,
}

impl DeliveryState {
    /// The lowercase name, as stored and shown to the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Sending => "sending",
            DeliveryState::Failed => "failed",
            DeliveryState::Unconfirmed => "unconfirmed",
        }
    }

    /// Parses [`DeliveryState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sending" => Some(DeliveryState::Sending),
            "failed" => Some(DeliveryState::Failed),
            "unconfirmed" => Some(DeliveryState::Unconfirmed),
            _ => None,
        }
    }
}

/// A reply or notice on its way out: written before the first part is sent (write-ahead), its
/// progress recorded part by part, removed when every part was confirmed. Entries that remain
/// are the undelivered replies, retried from their first unconfirmed part and shown to the
/// operator (`gateway outbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Assigned by the store on insert (ignored on input).
    pub id: i64,
    /// Platform instance.
    pub instance: String,
    /// Where it should go.
    pub target: Target,
    /// The whole text.
    pub text: String,
    /// The platform messages the adapter split `text` into, in order; empty until the adapter
    /// said how it splits (a retry then sends `text` whole).
    pub parts: Vec<String>,
    /// How many of `parts` the platform confirmed, in order; a retry resumes after them.
    pub parts_done: u32,
    /// The inbox entry whose answer this is; `None` for proactive sends and notices.
    pub inbox_id: Option<String>,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// Why the last attempt failed (empty while the first attempt runs).
    pub last_error: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was first recorded.
    pub created_at: DateTime<Utc>,
}

impl OutboxEntry {
    /// A new entry about to be sent for the first time.
    pub fn sending(
        instance: &str,
        target: Target,
        text: &str,
        inbox_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: 0,
            instance: instance.to_string(),
            target,
            text: text.to_string(),
            parts: Vec::new(),
            parts_done: 0,
            inbox_id,
            state: DeliveryState::Sending,
            last_error: String::new(),
            attempts: 1,
            created_at: now,
        }
    }

    /// The parts still to send: the unconfirmed planned parts, or the whole text when the
    /// adapter never said how it splits.
    pub fn remaining_parts(&self) -> Vec<String> {
        if self.parts.is_empty() {
            if self.parts_done == 0 {
                vec![self.text.clone()]
            } else {
                Vec::new()
            }
        } else {
            self.parts
                .iter()
                .skip(self.parts_done as usize)
                .cloned()
                .collect()
        }
    }
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

    // ---- intake journal (adapters) --------------------------------------------------------

    /// Journals a platform delivery unless its `(scope, id)` was journaled before, pending or
    /// done, in **one** atomic step: true when it is new (and now journaled), false for a
    /// duplicate (nothing changed). An error means nothing was recorded, so the platform may
    /// safely be told to retry. See [`IntakeEntry`] for the contract.
    async fn intake_accept(&self, entry: &IntakeEntry) -> StoreResult<bool>;
    /// Marks an intake entry processed (handed to the router, or dropped for good). It stays
    /// as the dedup record until pruned. Unknown ids are a no-op.
    async fn intake_done(&self, scope: &str, id: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Unprocessed entries of `scope`, oldest first.
    async fn intake_pending(&self, scope: &str) -> StoreResult<Vec<IntakeEntry>>;
    /// Deletes processed entries (of every scope) finished before `before`; returns how many.
    async fn intake_prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

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

    /// Records a delivery (write-ahead, or an undelivered reply); returns its id.
    async fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<i64>;
    /// One entry by id.
    async fn outbox_get(&self, id: i64) -> StoreResult<Option<OutboxEntry>>;
    /// The entry recording the answer to inbox entry `inbox_id`, if any (the newest).
    async fn outbox_for_inbox(&self, inbox_id: &str) -> StoreResult<Option<OutboxEntry>>;
    /// Every recorded delivery, oldest first, optionally for one instance.
    async fn outbox_pending(&self, instance: Option<&str>) -> StoreResult<Vec<OutboxEntry>>;
    /// Records how the adapter split the text (replacing earlier parts) and how many parts are
    /// confirmed. Unknown ids are a no-op.
    async fn outbox_progress(&self, id: i64, parts: &[String], parts_done: u32) -> StoreResult<()>;
    /// Records a failed attempt: one more attempt, its error and the resulting state.
    async fn outbox_attempt(&self, id: i64, error: &str, state: DeliveryState) -> StoreResult<()>;
    /// Removes a delivered (or dropped) entry and, in the same transaction, marks the inbox
    /// entry `inbox_id` done when given, so a delivered answer is never re-run after a crash.
    async fn outbox_done(
        &self,
        id: i64,
        inbox_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

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
