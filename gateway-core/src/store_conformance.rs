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
//! `outbox_done` on an unknown id are no-ops; `history_append` with `cap == 0` keeps nothing;
//! outbox ids start above zero and are never reused; `close` twice is not an error.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::{ChatAddress, Content, InboundMessage, Sender, Target};
use crate::store::{HistoryEntry, InboxEntry, OutboxEntry, Role, SessionRecord, StateStore};

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
        f.debug_struct("Fixture").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Fixture {
    /// A fixture around `store`.
    pub fn new(store: impl StateStore + 'static) -> Self {
        Self { store: Arc::new(store), guard: None }
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

// ---- test data ------------------------------------------------------------------------------

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
        sender: Sender { user_id: "alice".into(), display_name: Some("Alice 爱丽丝".into()) },
        created_at: at(1_000),
        updated_at: at(2_000),
        turns: 3,
    }
}

/// A history line.
pub fn line(role: Role, text: &str, ms: i64) -> HistoryEntry {
    HistoryEntry { role, text: text.to_string(), at: at(ms) }
}

/// An inbound text message with a reply context, as adapters journal them.
pub fn inbound(instance: &str, message_id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        instance: instance.to_string(),
        message_id: message_id.to_string(),
        sender: Sender::new("bob"),
        chat: ChatAddress::dm("bob"),
        content: Content::Text { text: text.to_string() },
        quote: None,
        received_at: at(5),
        reply_context: serde_json::json!({ "req_id": format!("req-{message_id}") }),
    }
}

/// An inbox entry for message `message_id` of instance `wecom`, received at `ms`.
pub fn inbox_entry(message_id: &str, ms: i64) -> InboxEntry {
    InboxEntry::new(inbound("wecom", message_id, &format!("text of {message_id}")), at(ms))
}

/// An undelivered reply.
pub fn outbox_entry(instance: &str, text: &str) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        instance: instance.to_string(),
        target: Target::Group("wrChat".into()),
        text: text.to_string(),
        last_error: "timed out".to_string(),
        attempts: 1,
        created_at: at(7),
    }
}

fn texts(entries: &[HistoryEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.text.as_str()).collect()
}

fn ids(entries: &[InboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

const MINUTE: Duration = Duration::from_secs(60);

// ---- sessions -------------------------------------------------------------------------------

/// An unknown key has no session.
pub async fn session_get_missing_is_none(store: Arc<dyn StateStore>) {
    assert_eq!(store.session_get("nobody").await.unwrap(), None);
}

/// A stored session comes back field for field.
pub async fn session_put_roundtrips(store: Arc<dyn StateStore>) {
    let record = session("wecom:dm:alice", "s1");
    store.session_put(&record).await.unwrap();
    assert_eq!(store.session_get("wecom:dm:alice").await.unwrap(), Some(record));
}

/// Putting the same key again replaces the record instead of adding one.
pub async fn session_put_replaces(store: Arc<dyn StateStore>) {
    store.session_put(&session("k", "s1")).await.unwrap();
    let mut newer = session("k", "s2");
    newer.turns = 0;
    newer.sender = Sender::new("carol");
    newer.chat = ChatAddress::dm("carol");
    newer.updated_at = at(9_000);
    store.session_put(&newer).await.unwrap();
    assert_eq!(store.session_get("k").await.unwrap(), Some(newer.clone()));
    assert_eq!(store.session_list().await.unwrap(), vec![newer]);
}

/// `session_list` returns every session ordered by key, whatever the insertion order.
pub async fn session_list_is_ordered_by_key(store: Arc<dyn StateStore>) {
    assert!(store.session_list().await.unwrap().is_empty());
    for key in ["m", "b", "z", "a"] {
        store.session_put(&session(key, &format!("s-{key}"))).await.unwrap();
    }
    let keys: Vec<String> = store.session_list().await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["a", "b", "m", "z"]);
}

/// Deleting reports whether the session existed, and leaves its history in place.
pub async fn session_delete_reports_existence_and_keeps_history(store: Arc<dyn StateStore>) {
    store.session_put(&session("k", "s1")).await.unwrap();
    store.session_put(&session("other", "s2")).await.unwrap();
    store.history_append("s1", &[line(Role::User, "hi", 1)], 10).await.unwrap();
    assert!(store.session_delete("k").await.unwrap());
    assert!(!store.session_delete("k").await.unwrap());
    assert_eq!(store.session_get("k").await.unwrap(), None);
    assert_eq!(store.session_get("other").await.unwrap().map(|r| r.session_id), Some("s2".into()));
    assert_eq!(texts(&store.history_load("s1", 10).await.unwrap()), ["hi"]);
}

// ---- history --------------------------------------------------------------------------------

/// Appends accumulate in order across calls, roles and timestamps intact.
pub async fn history_append_keeps_order(store: Arc<dyn StateStore>) {
    assert!(store.history_load("s", 10).await.unwrap().is_empty());
    let first = [line(Role::User, "one", 1), line(Role::Assistant, "two", 2)];
    let second = [line(Role::User, "three", 3)];
    store.history_append("s", &first, 100).await.unwrap();
    store.history_append("s", &second, 100).await.unwrap();
    store.history_append("s", &[], 100).await.unwrap();
    let loaded = store.history_load("s", 100).await.unwrap();
    let expected: Vec<HistoryEntry> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(loaded, expected);
}

/// The cap keeps the newest entries, both across appends and within one large append.
pub async fn history_cap_keeps_newest(store: Arc<dyn StateStore>) {
    for i in 0..5 {
        store.history_append("s", &[line(Role::User, &format!("m{i}"), i)], 3).await.unwrap();
    }
    assert_eq!(texts(&store.history_load("s", 100).await.unwrap()), ["m2", "m3", "m4"]);
    let burst: Vec<HistoryEntry> =
        (5..10).map(|i| line(Role::Assistant, &format!("m{i}"), i)).collect();
    store.history_append("s", &burst, 4).await.unwrap();
    assert_eq!(texts(&store.history_load("s", 100).await.unwrap()), ["m6", "m7", "m8", "m9"]);
    // A larger cap later does not bring trimmed entries back.
    store.history_append("s", &[line(Role::User, "m10", 10)], 100).await.unwrap();
    assert_eq!(
        texts(&store.history_load("s", 100).await.unwrap()),
        ["m6", "m7", "m8", "m9", "m10"]
    );
}

/// A cap of zero keeps no history at all.
pub async fn history_cap_zero_keeps_nothing(store: Arc<dyn StateStore>) {
    store.history_append("s", &[line(Role::User, "a", 1)], 10).await.unwrap();
    store.history_append("s", &[line(Role::User, "b", 2)], 0).await.unwrap();
    assert!(store.history_load("s", 10).await.unwrap().is_empty());
}

/// `limit` selects the newest entries and returns them oldest first.
pub async fn history_load_limit_returns_newest_oldest_first(store: Arc<dyn StateStore>) {
    let all: Vec<HistoryEntry> = (0..6).map(|i| line(Role::User, &format!("m{i}"), i)).collect();
    store.history_append("s", &all, 100).await.unwrap();
    assert_eq!(texts(&store.history_load("s", 2).await.unwrap()), ["m4", "m5"]);
    assert_eq!(texts(&store.history_load("s", 1).await.unwrap()), ["m5"]);
    assert!(store.history_load("s", 0).await.unwrap().is_empty());
    assert_eq!(store.history_load("s", 50).await.unwrap(), all);
}

/// Sessions do not see or trim each other's history.
pub async fn history_is_isolated_per_session(store: Arc<dyn StateStore>) {
    store.history_append("a", &[line(Role::User, "a1", 1)], 10).await.unwrap();
    store.history_append("b", &[line(Role::User, "b1", 2)], 10).await.unwrap();
    store.history_append("a", &[line(Role::Assistant, "a2", 3)], 10).await.unwrap();
    // Capping "b" to one entry must leave "a" alone.
    store.history_append("b", &[line(Role::User, "b2", 4)], 1).await.unwrap();
    assert_eq!(texts(&store.history_load("a", 10).await.unwrap()), ["a1", "a2"]);
    assert_eq!(texts(&store.history_load("b", 10).await.unwrap()), ["b2"]);
    // Ids that are prefixes of each other are still different sessions.
    assert!(store.history_load("", 10).await.unwrap().is_empty());
    assert!(store.history_load("a ", 10).await.unwrap().is_empty());
}

// ---- dedup ----------------------------------------------------------------------------------

/// The first sighting is new; the same id again is a duplicate.
pub async fn dedup_first_sighting_then_duplicate(store: Arc<dyn StateStore>) {
    assert!(store.dedup_check("wecom", "m1", at(0), MINUTE).await.unwrap());
    assert!(!store.dedup_check("wecom", "m1", at(1), MINUTE).await.unwrap());
    assert!(!store.dedup_check("wecom", "m1", at(2), MINUTE).await.unwrap());
    assert!(store.dedup_check("wecom", "m2", at(2), MINUTE).await.unwrap());
}

/// A record expires exactly `ttl` after it was recorded; the id is then new again and
/// recorded afresh.
pub async fn dedup_expires_after_ttl(store: Arc<dyn StateStore>) {
    let ttl_ms = 60_000;
    assert!(store.dedup_check("s", "m", at(0), MINUTE).await.unwrap());
    assert!(!store.dedup_check("s", "m", at(ttl_ms - 1), MINUTE).await.unwrap());
    assert!(store.dedup_check("s", "m", at(ttl_ms), MINUTE).await.unwrap());
    assert!(!store.dedup_check("s", "m", at(ttl_ms + 1), MINUTE).await.unwrap());
    assert!(store.dedup_check("s", "m", at(10 * ttl_ms), MINUTE).await.unwrap());
}

/// Seeing a duplicate does not restart its window: expiry counts from the first sighting.
pub async fn dedup_duplicate_does_not_extend_window(store: Arc<dyn StateStore>) {
    assert!(store.dedup_check("s", "m", at(0), MINUTE).await.unwrap());
    assert!(!store.dedup_check("s", "m", at(59_000), MINUTE).await.unwrap());
    assert!(store.dedup_check("s", "m", at(60_500), MINUTE).await.unwrap());
}

/// The same id in different scopes is tracked separately.
pub async fn dedup_scopes_are_isolated(store: Arc<dyn StateStore>) {
    assert!(store.dedup_check("wecom", "m1", at(0), MINUTE).await.unwrap());
    assert!(store.dedup_check("wecom_sales", "m1", at(0), MINUTE).await.unwrap());
    assert!(store.dedup_check("wecom:", "m1", at(0), MINUTE).await.unwrap());
    assert!(!store.dedup_check("wecom_sales", "m1", at(1), MINUTE).await.unwrap());
    assert!(!store.dedup_check("wecom", "m1", at(1), MINUTE).await.unwrap());
}

// ---- inbox ----------------------------------------------------------------------------------

/// A journaled entry comes back whole (message, reply context, time) from `inbox_pending`.
pub async fn inbox_put_roundtrips(store: Arc<dyn StateStore>) {
    assert!(store.inbox_pending().await.unwrap().is_empty());
    let entry = inbox_entry("m1", 10);
    assert_eq!(entry.id, "wecom:m1");
    assert!(store.inbox_put(&entry).await.unwrap());
    assert_eq!(store.inbox_pending().await.unwrap(), vec![entry]);
}

/// A second put with a pending entry's id returns false and changes nothing.
pub async fn inbox_duplicate_of_pending_is_rejected(store: Arc<dyn StateStore>) {
    let entry = inbox_entry("m1", 10);
    assert!(store.inbox_put(&entry).await.unwrap());
    let mut other = inbox_entry("m1", 20);
    other.message.content = Content::Text { text: "changed".into() };
    assert!(!store.inbox_put(&other).await.unwrap());
    assert_eq!(store.inbox_pending().await.unwrap(), vec![entry]);
}

/// An id whose entry is done is still a duplicate (the inbox doubles as persistent dedup).
pub async fn inbox_duplicate_of_done_is_rejected(store: Arc<dyn StateStore>) {
    let entry = inbox_entry("m1", 10);
    assert!(store.inbox_put(&entry).await.unwrap());
    store.inbox_done(&entry.id, at(20)).await.unwrap();
    assert!(!store.inbox_put(&entry).await.unwrap());
    assert!(store.inbox_pending().await.unwrap().is_empty());
}

/// Pending entries come oldest first by `received_at`, ties in insertion order.
pub async fn inbox_pending_is_oldest_first(store: Arc<dyn StateStore>) {
    for (id, ms) in [("c", 30), ("a", 10), ("b2", 20), ("b1", 20), ("d", 40)] {
        assert!(store.inbox_put(&inbox_entry(id, ms)).await.unwrap());
    }
    let pending = store.inbox_pending().await.unwrap();
    assert_eq!(ids(&pending), ["wecom:a", "wecom:b2", "wecom:b1", "wecom:c", "wecom:d"]);
}

/// `inbox_done` takes an entry out of the pending list; unknown ids and repeats are no-ops.
pub async fn inbox_done_removes_from_pending(store: Arc<dyn StateStore>) {
    for (id, ms) in [("a", 1), ("b", 2), ("c", 3)] {
        store.inbox_put(&inbox_entry(id, ms)).await.unwrap();
    }
    store.inbox_done("wecom:b", at(10)).await.unwrap();
    store.inbox_done("wecom:b", at(11)).await.unwrap();
    store.inbox_done("wecom:unknown", at(10)).await.unwrap();
    assert_eq!(ids(&store.inbox_pending().await.unwrap()), ["wecom:a", "wecom:c"]);
}

/// Pruning removes done entries finished strictly before the cut-off, never pending ones; a
/// pruned id is accepted again.
pub async fn inbox_prune_removes_only_done_before(store: Arc<dyn StateStore>) {
    for (id, ms) in [("old", 1), ("edge", 2), ("new", 3), ("open", 4)] {
        store.inbox_put(&inbox_entry(id, ms)).await.unwrap();
    }
    store.inbox_done("wecom:old", at(100)).await.unwrap();
    store.inbox_done("wecom:edge", at(200)).await.unwrap();
    store.inbox_done("wecom:new", at(300)).await.unwrap();
    assert_eq!(store.inbox_prune(at(200)).await.unwrap(), 1);
    assert_eq!(store.inbox_prune(at(200)).await.unwrap(), 0);
    // Still journaled (done), hence still duplicates.
    assert!(!store.inbox_put(&inbox_entry("edge", 5)).await.unwrap());
    assert!(!store.inbox_put(&inbox_entry("new", 5)).await.unwrap());
    // Pruned: forgotten.
    assert!(store.inbox_put(&inbox_entry("old", 5)).await.unwrap());
    assert_eq!(store.inbox_prune(at(1_000_000)).await.unwrap(), 2);
    assert_eq!(ids(&store.inbox_pending().await.unwrap()), ["wecom:open", "wecom:old"]);
}

// ---- outbox ---------------------------------------------------------------------------------

/// The store assigns positive, increasing ids, ignoring the id given, and never reuses one.
pub async fn outbox_put_assigns_increasing_ids(store: Arc<dyn StateStore>) {
    let mut entry = outbox_entry("wecom", "one");
    entry.id = 999;
    let first = store.outbox_put(&entry).await.unwrap();
    let second = store.outbox_put(&outbox_entry("wecom", "two")).await.unwrap();
    assert!(first > 0, "ids start above zero, got {first}");
    assert!(second > first);
    store.outbox_done(second).await.unwrap();
    let third = store.outbox_put(&outbox_entry("wecom", "three")).await.unwrap();
    assert!(third > second, "id {second} was reused as {third}");
    let pending = store.outbox_pending(None).await.unwrap();
    let mut expected = entry.clone();
    expected.id = first;
    assert_eq!(pending[0], expected);
    assert_eq!(pending.iter().map(|e| e.id).collect::<Vec<_>>(), [first, third]);
}

/// `outbox_pending(Some(instance))` returns only that instance's entries, oldest first.
pub async fn outbox_pending_filters_by_instance(store: Arc<dyn StateStore>) {
    let a1 = store.outbox_put(&outbox_entry("a", "a1")).await.unwrap();
    let b1 = store.outbox_put(&outbox_entry("b", "b1")).await.unwrap();
    let a2 = store.outbox_put(&outbox_entry("a", "a2")).await.unwrap();
    let id_list = |v: Vec<OutboxEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(id_list(store.outbox_pending(Some("a")).await.unwrap()), [a1, a2]);
    assert_eq!(id_list(store.outbox_pending(Some("b")).await.unwrap()), [b1]);
    assert!(store.outbox_pending(Some("c")).await.unwrap().is_empty());
    assert_eq!(id_list(store.outbox_pending(None).await.unwrap()), [a1, b1, a2]);
}

/// A failed retry increments `attempts` and replaces `last_error`, for that entry only.
pub async fn outbox_attempt_increments_and_records_error(store: Arc<dyn StateStore>) {
    let id = store.outbox_put(&outbox_entry("a", "x")).await.unwrap();
    let other = store.outbox_put(&outbox_entry("a", "y")).await.unwrap();
    store.outbox_attempt(id, "errcode 45009").await.unwrap();
    store.outbox_attempt(id, "errcode 60020").await.unwrap();
    store.outbox_attempt(12_345_678, "unknown id is ignored").await.unwrap();
    let pending = store.outbox_pending(None).await.unwrap();
    let entry = pending.iter().find(|e| e.id == id).unwrap();
    assert_eq!(entry.attempts, 3);
    assert_eq!(entry.last_error, "errcode 60020");
    let untouched = pending.iter().find(|e| e.id == other).unwrap();
    assert_eq!((untouched.attempts, untouched.last_error.as_str()), (1, "timed out"));
}

/// A delivered entry leaves the outbox; unknown ids are no-ops.
pub async fn outbox_done_removes(store: Arc<dyn StateStore>) {
    let a = store.outbox_put(&outbox_entry("a", "x")).await.unwrap();
    let b = store.outbox_put(&outbox_entry("a", "y")).await.unwrap();
    store.outbox_done(a).await.unwrap();
    store.outbox_done(a).await.unwrap();
    store.outbox_done(-1).await.unwrap();
    let left: Vec<i64> = store.outbox_pending(None).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(left, [b]);
}

// ---- key-value ------------------------------------------------------------------------------

/// Reads see the latest write; a missing key is `None`.
pub async fn kv_get_put_overwrite(store: Arc<dyn StateStore>) {
    assert_eq!(store.kv_get("pairing", "code").await.unwrap(), None);
    store.kv_put("pairing", "code", "123456").await.unwrap();
    assert_eq!(store.kv_get("pairing", "code").await.unwrap().as_deref(), Some("123456"));
    store.kv_put("pairing", "code", "").await.unwrap();
    assert_eq!(store.kv_get("pairing", "code").await.unwrap().as_deref(), Some(""));
    store.kv_put("pairing", "code", "{\"json\": \"值\"}").await.unwrap();
    assert_eq!(store.kv_get("pairing", "code").await.unwrap().as_deref(), Some("{\"json\": \"值\"}"));
}

/// Deleting reports whether the key existed.
pub async fn kv_delete_reports_existence(store: Arc<dyn StateStore>) {
    store.kv_put("ns", "k", "v").await.unwrap();
    assert!(store.kv_delete("ns", "k").await.unwrap());
    assert!(!store.kv_delete("ns", "k").await.unwrap());
    assert!(!store.kv_delete("other", "k").await.unwrap());
    assert_eq!(store.kv_get("ns", "k").await.unwrap(), None);
}

/// `kv_list` returns exactly the keys starting with the prefix, ordered by key.
pub async fn kv_list_by_prefix_is_ordered(store: Arc<dyn StateStore>) {
    for key in ["user:b", "user:a", "user", "usex", "user:ü", "user:\u{10FFFF}x", "admin", "user%", "user_"] {
        store.kv_put("ns", key, &format!("v-{key}")).await.unwrap();
    }
    let keys = |v: Vec<(String, String)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.kv_list("ns", "user:").await.unwrap()),
        ["user:a", "user:b", "user:ü", "user:\u{10FFFF}x"]
    );
    assert_eq!(
        keys(store.kv_list("ns", "user").await.unwrap()),
        ["user", "user%", "user:a", "user:b", "user:ü", "user:\u{10FFFF}x", "user_"]
    );
    // LIKE-style wildcards in the prefix are literal.
    assert_eq!(keys(store.kv_list("ns", "user_").await.unwrap()), ["user_"]);
    assert_eq!(keys(store.kv_list("ns", "user%").await.unwrap()), ["user%"]);
    assert_eq!(keys(store.kv_list("ns", "").await.unwrap()).len(), 9);
    assert!(store.kv_list("ns", "zzz").await.unwrap().is_empty());
    let listed = store.kv_list("ns", "user:a").await.unwrap();
    assert_eq!(listed, [("user:a".to_string(), "v-user:a".to_string())]);
}

/// Namespaces do not see each other's keys.
pub async fn kv_namespaces_are_isolated(store: Arc<dyn StateStore>) {
    store.kv_put("a", "k", "in a").await.unwrap();
    store.kv_put("b", "k", "in b").await.unwrap();
    store.kv_put("ab", "x", "in ab").await.unwrap();
    assert_eq!(store.kv_get("a", "k").await.unwrap().as_deref(), Some("in a"));
    assert_eq!(store.kv_get("b", "k").await.unwrap().as_deref(), Some("in b"));
    assert_eq!(store.kv_list("a", "").await.unwrap(), [("k".to_string(), "in a".to_string())]);
    assert!(store.kv_delete("a", "k").await.unwrap());
    assert_eq!(store.kv_get("b", "k").await.unwrap().as_deref(), Some("in b"));
}

// ---- precision ------------------------------------------------------------------------------

/// Timestamps are stored at millisecond precision: sub-millisecond parts are dropped, alike in
/// every backend.
pub async fn timestamps_keep_millisecond_precision(store: Arc<dyn StateStore>) {
    let fine = at(1_234) + chrono::Duration::microseconds(567);
    let mut record = session("k", "s");
    record.created_at = fine;
    record.updated_at = fine;
    store.session_put(&record).await.unwrap();
    let back = store.session_get("k").await.unwrap().unwrap();
    assert_eq!((back.created_at, back.updated_at), (at(1_234), at(1_234)));

    store.history_append("s", &[HistoryEntry { role: Role::User, text: "t".into(), at: fine }], 5)
        .await
        .unwrap();
    assert_eq!(store.history_load("s", 5).await.unwrap()[0].at, at(1_234));

    let mut entry = inbox_entry("m", 0);
    entry.received_at = fine;
    store.inbox_put(&entry).await.unwrap();
    assert_eq!(store.inbox_pending().await.unwrap()[0].received_at, at(1_234));

    let mut out = outbox_entry("a", "x");
    out.created_at = fine;
    store.outbox_put(&out).await.unwrap();
    assert_eq!(store.outbox_pending(None).await.unwrap()[0].created_at, at(1_234));
}

// ---- lifecycle ------------------------------------------------------------------------------

/// After `close`, every method fails with `StoreError::Closed`; closing again is fine.
pub async fn close_then_every_call_fails_closed(store: Arc<dyn StateStore>) {
    store.kv_put("ns", "k", "v").await.unwrap();
    store.close().await.unwrap();
    fn closed<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
        assert!(matches!(r, Err(StoreError::Closed)), "{what} after close returned {r:?}");
    }
    let s = &store;
    closed("session_get", s.session_get("k").await);
    closed("session_put", s.session_put(&session("k", "s")).await);
    closed("session_list", s.session_list().await);
    closed("session_delete", s.session_delete("k").await);
    closed("history_append", s.history_append("s", &[line(Role::User, "x", 1)], 5).await);
    closed("history_load", s.history_load("s", 5).await);
    closed("dedup_check", s.dedup_check("s", "m", at(0), MINUTE).await);
    closed("inbox_put", s.inbox_put(&inbox_entry("m", 0)).await);
    closed("inbox_done", s.inbox_done("wecom:m", at(0)).await);
    closed("inbox_pending", s.inbox_pending().await);
    closed("inbox_prune", s.inbox_prune(at(0)).await);
    closed("outbox_put", s.outbox_put(&outbox_entry("a", "x")).await);
    closed("outbox_pending", s.outbox_pending(None).await);
    closed("outbox_attempt", s.outbox_attempt(1, "e").await);
    closed("outbox_done", s.outbox_done(1).await);
    closed("kv_get", s.kv_get("ns", "k").await);
    closed("kv_put", s.kv_put("ns", "k", "v").await);
    closed("kv_delete", s.kv_delete("ns", "k").await);
    closed("kv_list", s.kv_list("ns", "").await);
    store.close().await.unwrap();
}

// ---- concurrency ----------------------------------------------------------------------------

/// 200 tasks journaling distinct messages at once all succeed, each exactly once; repeating
/// them all at once is rejected every time.
pub async fn concurrent_inbox_puts_succeed_exactly_once(store: Arc<dyn StateStore>) {
    let put_all = |store: Arc<dyn StateStore>| async move {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.inbox_put(&inbox_entry(&format!("m{i}"), i)).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task panicked").expect("inbox_put failed"));
        }
        results
    };
    assert!(put_all(Arc::clone(&store)).await.iter().all(|new| *new));
    assert!(put_all(Arc::clone(&store)).await.iter().all(|new| !*new));
    let pending = store.inbox_pending().await.unwrap();
    let expected: Vec<String> = (0..200).map(|i| format!("wecom:m{i}")).collect();
    assert_eq!(ids(&pending), expected);
}

/// When many tasks race on one id, exactly one wins, in the inbox and in dedup.
pub async fn concurrent_duplicates_admit_one(store: Arc<dyn StateStore>) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let inbox = store.inbox_put(&inbox_entry("same", i)).await.unwrap();
            let dedup = store.dedup_check("scope", "same", at(i), MINUTE).await.unwrap();
            (inbox, dedup)
        }));
    }
    let (mut inbox_wins, mut dedup_wins) = (0, 0);
    for task in tasks {
        let (inbox, dedup) = task.await.expect("task panicked");
        inbox_wins += usize::from(inbox);
        dedup_wins += usize::from(dedup);
    }
    assert_eq!((inbox_wins, dedup_wins), (1, 1));
    assert_eq!(store.inbox_pending().await.unwrap().len(), 1);
}

/// Concurrent appends to one session lose nothing and still respect the cap.
pub async fn concurrent_history_appends_respect_cap(store: Arc<dyn StateStore>) {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let entry = line(Role::User, &format!("m{i}"), i);
            store.history_append("shared", &[entry.clone()], 1_000).await.unwrap();
            store.history_append("capped", &[entry], 30).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.expect("task panicked");
    }
    let mut all = texts(&store.history_load("shared", 1_000).await.unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    all.sort();
    let mut expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(store.history_load("capped", 1_000).await.unwrap().len(), 30);
}
