//! The conformance suite every [`StateStore`] backend must pass (STYLE.md habit 7).
//!
//! Each check is a public async function taking a fresh store; [`store_conformance_tests!`]
//! expands one `#[tokio::test]` per check so a failure names the broken behaviour:
//!
//! ```ignore
//! gateway_core::store_conformance_tests!(|| Fixture::new(MemoryStore::new()));
//! ```
//!
//! The calling crate needs `tokio` (with the `macros` and `rt-multi-thread` features) among its
//! dev-dependencies, and `gateway-core` with the `test-support` feature.
//!
//! Beyond the trait's documentation the suite pins these choices, which every backend shares:
//! timestamps keep millisecond precision; a dedup record expires exactly `ttl` after its first
//! sighting, and a duplicate sighting does not extend it; `inbox_done`, `outbox_attempt` and
//! `outbox_done` on an unknown id are no-ops (so are `intake_done` and `outbox_progress`); `history_append` with `cap == 0` keeps nothing;
//! outbox ids start above zero and are never reused; `close` twice is not an error.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::{ChatAddress, Content, InboundMessage, Sender, Target};
use crate::store::{
    DeliveryState, HistoryEntry, InboxEntry, IntakeEntry, OutboxEntry, Role, SessionRecord,
    StateStore,
};

mod conversation;
mod journal;
mod kv;
mod lifecycle;

pub use conversation::*;
pub use journal::*;
pub use kv::*;
pub use lifecycle::*;

/// A store under test plus whatever must outlive it (for example the temp dir of a database).
pub struct Fixture {
    /// The store the checks run against.
    pub store: Arc<dyn StateStore>,
    // Declared after `store` so it is dropped after it: a database closes before its
    // directory goes.
    guard: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// A fixture around `store`.
    pub fn new(store: impl StateStore + 'static) -> Self {
        Self {
            store: Arc::new(store),
            guard: None,
        }
    }

    /// Keeps `guard` alive (and drops it after the store) for the length of the check.
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

/// Expands one `#[tokio::test]` per conformance check, each on a fresh store from `$make`
/// (an expression callable with no arguments that returns a [`Fixture`]).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__store_conformance_checks!($make;
            session_get_missing_is_none,
            session_put_roundtrips,
            session_put_replaces,
            session_list_is_ordered_by_key,
            session_delete_reports_existence_and_keeps_history,
            history_append_keeps_order,
            history_cap_keeps_newest,
            history_cap_zero_keeps_nothing,
            history_load_limit_returns_newest_oldest_first,
            history_is_isolated_per_session,
            dedup_first_sighting_then_duplicate,
            dedup_expires_after_ttl,
            dedup_duplicate_does_not_extend_window,
            dedup_scopes_are_isolated,
            inbox_put_roundtrips,
            inbox_duplicate_of_pending_is_rejected,
            inbox_duplicate_of_done_is_rejected,
            inbox_pending_is_oldest_first,
            inbox_done_removes_from_pending,
            inbox_prune_removes_only_done_before,
            outbox_put_assigns_increasing_ids,
            outbox_pending_filters_by_instance,
            outbox_attempt_increments_and_records_error,
            outbox_done_removes,
            outbox_done_closes_the_inbox_entry_atomically,
            outbox_progress_records_parts_and_resumes,
            outbox_for_inbox_finds_the_answer,
            intake_accept_is_dedup_and_journal_in_one,
            intake_done_keeps_the_dedup_record,
            intake_pending_is_per_scope_oldest_first,
            intake_prune_forgets_only_old_done_entries,
            kv_get_put_overwrite,
            kv_delete_reports_existence,
            kv_list_by_prefix_is_ordered,
            kv_namespaces_are_isolated,
            timestamps_keep_millisecond_precision,
            close_then_every_call_fails_closed,
        );
        $crate::__store_conformance_checks!(@multi $make;
            concurrent_inbox_puts_succeed_exactly_once,
            concurrent_duplicates_admit_one,
            concurrent_intake_accepts_journal_exactly_once,
            concurrent_history_appends_respect_cap,
        );
    };
}

/// Implementation detail of [`store_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_checks {
    ($make:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $check() {
                let fixture: $crate::store_conformance::Fixture = ($make)();
                $crate::store_conformance::$check(::std::sync::Arc::clone(&fixture.store)).await;
            }
        )*
    };
    (@multi $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture: $crate::store_conformance::Fixture = ($make)();
                $crate::store_conformance::$check(::std::sync::Arc::clone(&fixture.store)).await;
            }
        )*
    };
}

// ---- test data, also for backend-specific tests ------------------------------------------------------------------------------

/// A fixed instant `ms` milliseconds after 2025-01-01T00:00:00Z.
pub fn at(ms: i64) -> DateTime<Utc> {
    const BASE_MS: i64 = 1_735_689_600_000;
    DateTime::from_timestamp_millis(BASE_MS + ms).expect("test timestamps are in range")
}

/// A session record for `key` with a few distinctive field values.
pub fn session(key: &str, session_id: &str) -> SessionRecord {
    SessionRecord {
        key: key.to_string(),
        session_id: session_id.to_string(),
        instance: "wecom".to_string(),
        chat: ChatAddress::group(format!("chat-{key}")),
        sender: Sender {
            user_id: "alice".into(),
            display_name: Some("Alice 爱丽丝".into()),
        },
        created_at: at(1_000),
        updated_at: at(2_000),
        turns: 3,
    }
}

/// A history line.
pub fn line(role: Role, text: &str, ms: i64) -> HistoryEntry {
    HistoryEntry {
        role,
        text: text.to_string(),
        at: at(ms),
    }
}

/// An inbound text message with a reply context, as adapters journal them.
pub fn inbound(instance: &str, message_id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        instance: instance.to_string(),
        message_id: message_id.to_string(),
        sender: Sender::new("bob"),
        chat: ChatAddress::dm("bob"),
        content: Content::Text {
            text: text.to_string(),
        },
        quote: None,
        received_at: at(5),
        reply_context: serde_json::json!({ "req_id": format!("req-{message_id}") }),
    }
}

/// An inbox entry for message `message_id` of instance `wecom`, received at `ms`.
pub fn inbox_entry(message_id: &str, ms: i64) -> InboxEntry {
    InboxEntry::new(
        inbound("wecom", message_id, &format!("text of {message_id}")),
        at(ms),
    )
}

/// An undelivered reply.
pub fn outbox_entry(instance: &str, text: &str) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        instance: instance.to_string(),
        target: Target::Group("wrChat".into()),
        text: text.to_string(),
        parts: Vec::new(),
        parts_done: 0,
        inbox_id: None,
        state: DeliveryState::Failed,
        last_error: "timed out".to_string(),
        attempts: 1,
        created_at: at(7),
    }
}

/// An intake journal entry `id` in `scope`, received at `ms`.
pub fn intake_entry(scope: &str, id: &str, ms: i64) -> IntakeEntry {
    IntakeEntry {
        scope: scope.to_string(),
        id: id.to_string(),
        payload: format!("<xml>{id}</xml>"),
        received_at: at(ms),
    }
}

fn texts(entries: &[HistoryEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.text.as_str()).collect()
}

fn ids(entries: &[InboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

const MINUTE: Duration = Duration::from_secs(60);
