//! Resumable, idempotent delivery (DESIGN.md "Delivery guarantee").
//!
//! Every reply and gateway notice goes out through an [`OutboxLog`]: when the adapter says how it
//! splits the text (`planned`), the delivery is written to the outbox **before** the first part
//! is sent; each confirmed part is recorded as it is confirmed; when the last part is confirmed
//! the entry is removed and, in the same transaction, the inbox entry it answers is closed. So:
//!
//! * a failure after part *k* leaves an entry whose retry starts at part *k + 1*;
//! * a crash mid-delivery leaves an entry in state `sending`, which the next start finishes
//!   (from the first unconfirmed part) instead of running the agent again;
//! * a part that got no answer (a timeout, a dropped connection) is recorded as
//!   `unconfirmed`: the platform may have shown it, and the record says so.
//!
//! The one window that remains is the part in flight when the process dies: sent by the
//! platform, not yet recorded. It is sent again on restart (at least once, never lost).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gateway_core::store::{DeliveryState, OutboxEntry};
use gateway_core::{AdapterError, DeliveryLog, OutboundMessage, Target};
use tracing::{debug, info, warn};

use crate::shared::{Instance, Shared};

/// Ids of outbox entries a live delivery is working on; the retry loop leaves them alone.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<i64>>);

impl InFlight {
    fn insert(&self, id: i64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
    }

    fn remove(&self, id: i64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// True while a live delivery owns entry `id`.
    pub fn contains(&self, id: i64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }
}

/// What the log knows about its outbox entry.
#[derive(Debug, Default)]
struct Record {
    id: Option<i64>,
    parts: Vec<String>,
    done: u32,
}

/// A [`DeliveryLog`] backed by the outbox; one per delivery.
pub struct OutboxLog {
    shared: Arc<Shared>,
    instance: String,
    target: Target,
    text: String,
    inbox_id: Option<String>,
    record: Mutex<Record>,
}

impl std::fmt::Debug for OutboxLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxLog")
            .field("instance", &self.instance)
            .field("inbox_id", &self.inbox_id)
            .finish_non_exhaustive()
    }
}

impl OutboxLog {
    /// A log for a new delivery of `text` to `target`, answering inbox entry `inbox_id`.
    pub fn new(
        shared: Arc<Shared>,
        instance: &str,
        target: Target,
        text: &str,
        inbox_id: Option<String>,
    ) -> Self {
        Self {
            shared,
            instance: instance.to_string(),
            target,
            text: text.to_string(),
            inbox_id,
            record: Mutex::new(Record::default()),
        }
    }

    /// A log that continues the recorded delivery `entry`.
    fn resume(shared: Arc<Shared>, entry: &OutboxEntry) -> Self {
        shared.in_flight.insert(entry.id);
        Self {
            shared,
            instance: entry.instance.clone(),
            target: entry.target.clone(),
            text: entry.text.clone(),
            inbox_id: entry.inbox_id.clone(),
            record: Mutex::new(Record {
                id: Some(entry.id),
                parts: entry.parts.clone(),
                done: entry.parts_done,
            }),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// A new outbox row for this delivery, about to be sent.
    fn entry(&self) -> OutboxEntry {
        OutboxEntry::sending(
            &self.instance,
            self.target.clone(),
            &self.text,
            self.inbox_id.clone(),
            self.now(),
        )
    }

    /// True once the platform confirmed any part: from then on the delivery must continue
    /// where it stopped, never start over on another path.
    pub fn started(&self) -> bool {
        self.record().done > 0
    }

    /// Every part was confirmed: the entry goes, and the inbox entry closes with it.
    pub async fn delivered(&self) {
        let id = self.record().id;
        let store = &self.shared.store;
        let result = match (id, &self.inbox_id) {
            (Some(id), inbox) => store.outbox_done(id, inbox.as_deref(), self.now()).await,
            (None, Some(inbox)) => store.inbox_done(inbox, self.now()).await,
            (None, None) => Ok(()),
        };
        if let Err(e) = result {
            warn!(instance = %self.instance, error = %e, "Could not record a delivery as done; it may be sent again after a restart.");
        }
        if let Some(id) = id {
            self.shared.in_flight.remove(id);
        }
    }

    /// The delivery failed with `error`: the entry stays for a retry from its first
    /// unconfirmed part (it is written now if the adapter failed before planning).
    pub async fn failed(&self, error: &AdapterError) {
        let state = state_after(error);
        // Stored and shown by `gateway outbox list`: an API that echoes its URL must not leave
        // an access token there.
        let message = gateway_core::redact::scrub_string(error.to_string());
        let id = self.record().id;
        let store = &self.shared.store;
        let result = match id {
            Some(id) => store.outbox_attempt(id, &message, state).await,
            None => {
                let mut entry = self.entry();
                entry.state = state;
                entry.last_error = message;
                store.outbox_put(&entry).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            warn!(instance = %self.instance, error = %e, "Could not record an undelivered reply.");
        }
        if let Some(id) = id {
            self.shared.in_flight.remove(id);
        }
        refresh_undelivered(&self.shared).await;
    }
}

/// A timeout or a dropped connection leaves the platform's side unknown.
fn state_after(error: &AdapterError) -> DeliveryState {
    match error {
        AdapterError::Timeout(_) | AdapterError::Disconnected(_) => DeliveryState::Unconfirmed,
        _ => DeliveryState::Failed,
    }
}

#[async_trait]
impl DeliveryLog for OutboxLog {
    async fn planned(&self, parts: &[String]) {
        let id = {
            let mut r = self.record();
            r.parts = parts.to_vec();
            r.done = 0;
            r.id
        };
        let store = &self.shared.store;
        match id {
            Some(id) => {
                if let Err(e) = store.outbox_progress(id, parts, 0).await {
                    warn!(instance = %self.instance, error = %e, "Could not record a delivery plan.");
                }
            }
            None => {
                let mut entry = self.entry();
                entry.parts = parts.to_vec();
                match store.outbox_put(&entry).await {
                    Ok(id) => {
                        self.shared.in_flight.insert(id);
                        self.record().id = Some(id);
                    }
                    Err(e) => {
                        warn!(instance = %self.instance, error = %e, "Could not record a delivery before sending it; a crash now could repeat it.");
                    }
                }
            }
        }
    }

    async fn confirmed(&self, index: usize) {
        let (id, parts, done) = {
            let mut r = self.record();
            let done = u32::try_from(index + 1).unwrap_or(u32::MAX).max(r.done);
            r.done = done;
            (r.id, r.parts.clone(), done)
        };
        // The last part is recorded by `delivered`, which removes the entry altogether.
        let Some(id) = id else { return };
        if (done as usize) >= parts.len() {
            return;
        }
        if let Err(e) = self.shared.store.outbox_progress(id, &parts, done).await {
            warn!(instance = %self.instance, error = %e, "Could not record a delivered part; it may be sent again.");
        }
    }
}

/// Sets every instance's `/health` undelivered gauge from the outbox.
pub async fn refresh_undelivered(shared: &Shared) {
    let Ok(entries) = shared.store.outbox_pending(None).await else {
        return;
    };
    for inst in shared.instances.values() {
        let n = entries
            .iter()
            .filter(|e| e.instance == inst.name && !shared.in_flight.contains(e.id))
            .count();
        inst.health.set_undelivered(n as u64);
    }
}

/// Sends what is left of a recorded delivery: the unconfirmed planned parts one by one, or the
/// whole text through `send_logged` when the adapter never planned it.
pub async fn retry(
    shared: &Arc<Shared>,
    inst: &Instance,
    entry: &OutboxEntry,
) -> Result<(), AdapterError> {
    let log = OutboxLog::resume(shared.clone(), entry);
    let result = if entry.parts.is_empty() {
        inst.adapter
            .send_logged(&entry.target, &OutboundMessage::markdown(&entry.text), &log)
            .await
    } else {
        let mut result = Ok(());
        for (i, part) in entry
            .parts
            .iter()
            .enumerate()
            .skip(entry.parts_done as usize)
        {
            if let Err(e) = inst
                .adapter
                .send(&entry.target, &OutboundMessage::markdown(part))
                .await
            {
                result = Err(e);
                break;
            }
            log.confirmed(i).await;
        }
        result
    };
    match &result {
        Ok(()) => {
            info!(instance = %inst.name, id = entry.id, "Delivered a reply from the outbox.");
            log.delivered().await;
        }
        Err(e) => {
            debug!(instance = %inst.name, id = entry.id, error = %e, "Outbox retry failed.");
            log.failed(e).await;
        }
    }
    result
}
