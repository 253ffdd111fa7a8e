//! In-memory `StateStore` (tests, and `gateway chat` without a data dir).
//!
//! Everything lives in `BTreeMap`s behind one `std::sync::Mutex`. No method awaits while holding
//! the lock, so the lock is held for a few map operations and never blocks the runtime for long.
//! Timestamps are kept at millisecond precision, like the SQLite backend, so that code tested
//! against this store sees exactly what it would see against the real one.
//!
//! Growth is bounded where the gateway relies on the store to forget: dedup entries are purged
//! once their TTL has passed (on every `dedup_check`), history is cut to its cap on append, and
//! done inbox entries go on `inbox_prune`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::store::{
    DeliveryState, HistoryEntry, InboxEntry, IntakeEntry, OutboxEntry, SessionRecord, StateStore,
    StoreResult,
};

/// A `StateStore` held entirely in memory; lost when the process exits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state, or fails once the store is closed.
    fn state(&self) -> StoreResult<MutexGuard<'_, State>> {
        let guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        if guard.closed {
            return Err(StoreError::Closed);
        }
        Ok(guard)
    }
}

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    closed: bool,
    sessions: BTreeMap<String, SessionRecord>,
    history: BTreeMap<String, VecDeque<HistoryEntry>>,
    dedup: Dedup,
    inbox: Inbox,
    intake: Intake,
    outbox: BTreeMap<i64, OutboxEntry>,
    /// Last outbox id handed out; ids are never reused, like SQLite's AUTOINCREMENT.
    outbox_last_id: i64,
    /// ns -> key -> value.
    kv: BTreeMap<String, BTreeMap<String, String>>,
}

/// Dedup records with an index by expiry, so purging is a walk from the front of the index.
#[derive(Debug, Default)]
struct Dedup {
    /// (scope, id) -> expiry in ms.
    seen: BTreeMap<(String, String), i64>,
    /// (expiry ms, scope, id), oldest first.
    by_expiry: BTreeSet<(i64, String, String)>,
}

impl Dedup {
    /// Drops every record whose expiry is at or before `now_ms`.
    fn purge(&mut self, now_ms: i64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some((_, scope, id)) = self.by_expiry.pop_first() {
                self.seen.remove(&(scope, id));
            }
        }
    }
}

/// The inbox journal with its two orderings: pending by arrival, done by completion time.
#[derive(Debug, Default)]
struct Inbox {
    entries: BTreeMap<String, InboxSlot>,
    /// (received_at ms, insertion seq) -> id, for entries not yet done.
    pending: BTreeMap<(i64, u64), String>,
    /// (done_at ms, id), for done entries.
    done: BTreeSet<(i64, String)>,
    next_seq: u64,
}

/// The adapters' intake journal: entries by `(scope, id)`, pending ones by arrival.
#[derive(Debug, Default)]
struct Intake {
    /// (scope, id) -> (entry, insertion seq, done_at ms).
    entries: BTreeMap<(String, String), (IntakeEntry, u64, Option<i64>)>,
    /// (scope, received ms, seq) -> id, for entries not yet done.
    pending: BTreeMap<(String, i64, u64), String>,
    /// (done ms, scope, id), for done entries.
    done: BTreeSet<(i64, String, String)>,
    next_seq: u64,
}

impl Inbox {
    /// Marks `id` done at `done_ms`; unknown or already-done ids are a no-op.
    fn mark_done(&mut self, id: &str, done_ms: i64) {
        let Some(slot) = self.entries.get_mut(id) else {
            return;
        };
        if slot.done_at.is_some() {
            return;
        }
        slot.done_at = Some(done_ms);
        let pending_key = (slot.entry.received_at.timestamp_millis(), slot.seq);
        self.pending.remove(&pending_key);
        self.done.insert((done_ms, id.to_string()));
    }
}

#[derive(Debug)]
struct InboxSlot {
    entry: InboxEntry,
    seq: u64,
    done_at: Option<i64>,
}

/// `t` cut to whole milliseconds, the precision every backend keeps.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn session_get(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        Ok(self.state()?.sessions.get(key).cloned())
    }

    async fn session_put(&self, record: &SessionRecord) -> StoreResult<()> {
        let mut record = record.clone();
        record.created_at = millis(record.created_at);
        record.updated_at = millis(record.updated_at);
        self.state()?.sessions.insert(record.key.clone(), record);
        Ok(())
    }

    async fn session_list(&self) -> StoreResult<Vec<SessionRecord>> {
        Ok(self.state()?.sessions.values().cloned().collect())
    }

    async fn session_delete(&self, key: &str) -> StoreResult<bool> {
        Ok(self.state()?.sessions.remove(key).is_some())
    }

    async fn history_append(
        &self,
        session_id: &str,
        entries: &[HistoryEntry],
        cap: usize,
    ) -> StoreResult<()> {
        let mut state = self.state()?;
        let lines = state.history.entry(session_id.to_string()).or_default();
        lines.extend(entries.iter().map(|e| HistoryEntry {
            at: millis(e.at),
            ..e.clone()
        }));
        while lines.len() > cap {
            lines.pop_front();
        }
        if lines.is_empty() {
            state.history.remove(session_id);
        }
        Ok(())
    }

    async fn history_load(&self, session_id: &str, limit: usize) -> StoreResult<Vec<HistoryEntry>> {
        let state = self.state()?;
        let Some(lines) = state.history.get(session_id) else {
            return Ok(Vec::new());
        };
        let skip = lines.len().saturating_sub(limit);
        Ok(lines.iter().skip(skip).cloned().collect())
    }

    async fn dedup_check(
        &self,
        scope: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let now_ms = now.timestamp_millis();
        let mut state = self.state()?;
        let dedup = &mut state.dedup;
        // Purging first means any record still present is within its TTL: a duplicate. A
        // duplicate does not extend the window; the first sighting alone decides it.
        dedup.purge(now_ms);
        let key = (scope.to_string(), id.to_string());
        if dedup.seen.contains_key(&key) {
            return Ok(false);
        }
        let expires = now_ms.saturating_add(duration_ms(ttl));
        dedup
            .by_expiry
            .insert((expires, key.0.clone(), key.1.clone()));
        dedup.seen.insert(key, expires);
        // A zero TTL expires at once; keep nothing for it.
        dedup.purge(now_ms);
        Ok(true)
    }

    async fn intake_accept(&self, entry: &IntakeEntry) -> StoreResult<bool> {
        let mut state = self.state()?;
        let intake = &mut state.intake;
        let key = (entry.scope.clone(), entry.id.clone());
        if intake.entries.contains_key(&key) {
            return Ok(false);
        }
        let seq = intake.next_seq;
        intake.next_seq += 1;
        let mut entry = entry.clone();
        entry.received_at = millis(entry.received_at);
        intake.pending.insert(
            (
                entry.scope.clone(),
                entry.received_at.timestamp_millis(),
                seq,
            ),
            entry.id.clone(),
        );
        intake.entries.insert(key, (entry, seq, None));
        Ok(true)
    }

    async fn intake_done(&self, scope: &str, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut state = self.state()?;
        let intake = &mut state.intake;
        let Some((entry, seq, done_at)) =
            intake.entries.get_mut(&(scope.to_string(), id.to_string()))
        else {
            return Ok(());
        };
        if done_at.is_some() {
            return Ok(());
        }
        let done_ms = now.timestamp_millis();
        *done_at = Some(done_ms);
        let pending_key = (
            scope.to_string(),
            entry.received_at.timestamp_millis(),
            *seq,
        );
        intake.pending.remove(&pending_key);
        intake
            .done
            .insert((done_ms, scope.to_string(), id.to_string()));
        Ok(())
    }

    async fn intake_pending(&self, scope: &str) -> StoreResult<Vec<IntakeEntry>> {
        let state = self.state()?;
        let intake = &state.intake;
        Ok(intake
            .pending
            .range((scope.to_string(), i64::MIN, 0)..)
            .take_while(|((s, _, _), _)| s == scope)
            .filter_map(|(_, id)| intake.entries.get(&(scope.to_string(), id.clone())))
            .map(|(e, _, _)| e.clone())
            .collect())
    }

    async fn intake_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before_ms = before.timestamp_millis();
        let mut state = self.state()?;
        let intake = &mut state.intake;
        let mut removed = 0;
        while let Some(first) = intake.done.first() {
            if first.0 >= before_ms {
                break;
            }
            if let Some((_, scope, id)) = intake.done.pop_first() {
                intake.entries.remove(&(scope, id));
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn inbox_put(&self, entry: &InboxEntry) -> StoreResult<bool> {
        let mut state = self.state()?;
        let inbox = &mut state.inbox;
        if inbox.entries.contains_key(&entry.id) {
            return Ok(false);
        }
        let seq = inbox.next_seq;
        inbox.next_seq += 1;
        let mut entry = entry.clone();
        entry.received_at = millis(entry.received_at);
        inbox.pending.insert(
            (entry.received_at.timestamp_millis(), seq),
            entry.id.clone(),
        );
        inbox.entries.insert(
            entry.id.clone(),
            InboxSlot {
                entry,
                seq,
                done_at: None,
            },
        );
        Ok(true)
    }

    async fn inbox_done(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.state()?.inbox.mark_done(id, now.timestamp_millis());
        Ok(())
    }

    async fn inbox_pending(&self) -> StoreResult<Vec<InboxEntry>> {
        let state = self.state()?;
        let inbox = &state.inbox;
        Ok(inbox
            .pending
            .values()
            .filter_map(|id| inbox.entries.get(id))
            .map(|slot| slot.entry.clone())
            .collect())
    }

    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before_ms = before.timestamp_millis();
        let mut state = self.state()?;
        let inbox = &mut state.inbox;
        let mut removed = 0;
        while let Some(first) = inbox.done.first() {
            if first.0 >= before_ms {
                break;
            }
            if let Some((_, id)) = inbox.done.pop_first() {
                inbox.entries.remove(&id);
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<i64> {
        let mut state = self.state()?;
        state.outbox_last_id += 1;
        let id = state.outbox_last_id;
        let mut entry = entry.clone();
        entry.id = id;
        entry.created_at = millis(entry.created_at);
        state.outbox.insert(id, entry);
        Ok(id)
    }

    async fn outbox_get(&self, id: i64) -> StoreResult<Option<OutboxEntry>> {
        Ok(self.state()?.outbox.get(&id).cloned())
    }

    async fn outbox_for_inbox(&self, inbox_id: &str) -> StoreResult<Option<OutboxEntry>> {
        let state = self.state()?;
        Ok(state
            .outbox
            .values()
            .rev()
            .find(|e| e.inbox_id.as_deref() == Some(inbox_id))
            .cloned())
    }

    async fn outbox_pending(&self, instance: Option<&str>) -> StoreResult<Vec<OutboxEntry>> {
        let state = self.state()?;
        Ok(state
            .outbox
            .values()
            .filter(|e| instance.is_none_or(|i| e.instance == i))
            .cloned()
            .collect())
    }

    async fn outbox_progress(&self, id: i64, parts: &[String], parts_done: u32) -> StoreResult<()> {
        if let Some(entry) = self.state()?.outbox.get_mut(&id) {
            entry.parts = parts.to_vec();
            entry.parts_done = parts_done;
        }
        Ok(())
    }

    async fn outbox_attempt(&self, id: i64, error: &str, state: DeliveryState) -> StoreResult<()> {
        if let Some(entry) = self.state()?.outbox.get_mut(&id) {
            entry.attempts = entry.attempts.saturating_add(1);
            entry.last_error = error.to_string();
            entry.state = state;
        }
        Ok(())
    }

    async fn outbox_done(
        &self,
        id: i64,
        inbox_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut state = self.state()?;
        state.outbox.remove(&id);
        if let Some(inbox_id) = inbox_id {
            state.inbox.mark_done(inbox_id, now.timestamp_millis());
        }
        Ok(())
    }

    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<String>> {
        Ok(self.state()?.kv.get(ns).and_then(|m| m.get(key)).cloned())
    }

    async fn kv_put(&self, ns: &str, key: &str, value: &str) -> StoreResult<()> {
        self.state()?
            .kv
            .entry(ns.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        let mut state = self.state()?;
        let Some(space) = state.kv.get_mut(ns) else {
            return Ok(false);
        };
        let existed = space.remove(key).is_some();
        if space.is_empty() {
            state.kv.remove(ns);
        }
        Ok(existed)
    }

    async fn kv_list(&self, ns: &str, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        let state = self.state()?;
        let Some(space) = state.kv.get(ns) else {
            return Ok(Vec::new());
        };
        // Keys with the prefix form one contiguous run starting at the prefix itself.
        Ok(space
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn close(&self) -> StoreResult<()> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        // Closing twice is fine; shutdown paths may race.
        guard.closed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::store_conformance::Fixture;

    crate::store_conformance_tests!(|| Fixture::new(MemoryStore::new()));
}
