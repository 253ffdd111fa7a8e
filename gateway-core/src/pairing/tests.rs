//! Pairing tests on paused tokio time against the in-memory store: code format, hash-only
//! storage, TTL, rate limit, pending cap, lockout, approval paths, revoke, clear and list.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::TimeZone;

use super::*;
use crate::clock::TokioClock;
use crate::memory_store::MemoryStore;
use crate::store::{
    DeliveryState, HistoryEntry, InboxEntry, IntakeEntry, OutboxEntry, SessionRecord, StoreResult,
};

const MIN: Duration = Duration::from_secs(60);

struct Fixture {
    engine: PairingEngine,
    store: Arc<MemoryStore>,
    start: DateTime<Utc>,
}

fn fixture() -> Fixture {
    let start = Utc
        .with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid date");
    let store = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let engine = PairingEngine::new(store.clone(), clock);
    Fixture {
        engine,
        store,
        start,
    }
}

impl Fixture {
    async fn kv(&self, instance: &str) -> Vec<(String, String)> {
        self.store.kv_list(&namespace(instance), "").await.unwrap()
    }

    async fn request(&self, user: &str) -> PairingRequest {
        self.engine
            .request("wecom", user, Some("Display Name"))
            .await
            .expect("code issued")
    }
}

fn at(start: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    start + TimeDelta::from_std(d).unwrap()
}

#[tokio::test(start_paused = true)]
async fn codes_have_the_documented_format() {
    let f = fixture();
    let mut seen = HashSet::new();
    for i in 0..20 {
        let r = f.request(&format!("user{i}")).await;
        assert_eq!(r.code().len(), CODE_LEN);
        assert_eq!(r.request_id.len(), REQUEST_ID_LEN);
        for c in r.code().bytes().chain(r.request_id.bytes()) {
            assert!(CODE_ALPHABET.contains(&c), "unexpected {:?}", c as char);
        }
        assert_eq!(r.expires_at, at(f.start, CODE_TTL));
        assert_eq!(r.instance, "wecom");
        assert_eq!(r.user_id, format!("user{i}"));
        seen.insert(r.code().to_string());
        f.engine.clear_pending("wecom").await.unwrap();
    }
    assert_eq!(seen.len(), 20, "codes repeat");

    // Over many draws every symbol shows up and none of the look-alikes does.
    let sample = random_string(4000).unwrap();
    let symbols: HashSet<u8> = sample.bytes().collect();
    assert_eq!(symbols.len(), 32);
    assert!(!sample.contains(['0', 'O', '1', 'I']));
}

#[tokio::test(start_paused = true)]
async fn codes_are_stored_only_as_salted_hashes() {
    let f = fixture();
    let a = f.request("alice").await;
    let b = f.request("bob").await;
    let kv = f.kv("wecom").await;
    assert!(!kv.is_empty());
    for (key, value) in &kv {
        for code in [a.code(), b.code()] {
            assert!(
                !key.contains(code) && !value.contains(code),
                "plaintext code in {key}"
            );
            assert!(
                !value.contains(&code.to_lowercase()),
                "plaintext code in {key}"
            );
        }
    }
    let rec: PendingRecord = serde_json::from_str(
        &kv.iter()
            .find(|(k, _)| *k == format!("pending:{}", a.request_id))
            .unwrap()
            .1,
    )
    .unwrap();
    let salt = hex::decode(&rec.salt).unwrap();
    assert_eq!(salt.len(), 16);
    assert_eq!(rec.hash, hex::encode(code_hash(&salt, a.code())));
    let other: Vec<&String> = kv
        .iter()
        .filter(|(k, _)| k.starts_with(PENDING))
        .map(|(_, v)| v)
        .collect();
    let salts: HashSet<String> = other
        .iter()
        .map(|v| serde_json::from_str::<PendingRecord>(v).unwrap().salt)
        .collect();
    assert_eq!(salts.len(), 2, "salts must differ per entry");
}

#[tokio::test(start_paused = true)]
async fn debug_output_redacts_the_code() {
    let f = fixture();
    let r = f.request("alice").await;
    let dbg = format!("{r:?}");
    assert!(!dbg.contains(r.code()), "{dbg}");
    assert!(
        dbg.contains("[redacted]") && dbg.contains(&r.request_id),
        "{dbg}"
    );
}

#[tokio::test(start_paused = true)]
async fn codes_expire_after_an_hour() {
    let f = fixture();
    let r = f.request("alice").await;
    tokio::time::advance(CODE_TTL - Duration::from_secs(1)).await;
    assert_eq!(f.engine.list(Some("wecom")).await.unwrap().pending.len(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(f
        .engine
        .list(Some("wecom"))
        .await
        .unwrap()
        .pending
        .is_empty());
    // Purged from the store, not merely hidden.
    assert!(!f
        .kv("wecom")
        .await
        .iter()
        .any(|(k, _)| k.starts_with(PENDING)));
    let err = f.engine.approve("wecom", r.code()).await.unwrap_err();
    assert!(
        matches!(err, ApproveError::NoMatch { attempts_left: 4 }),
        "{err:?}"
    );
    assert!(!f.engine.is_approved("wecom", "alice").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_code_just_before_expiry_still_approves() {
    let f = fixture();
    let r = f.request("alice").await;
    tokio::time::advance(CODE_TTL - Duration::from_secs(1)).await;
    let user = f.engine.approve("wecom", r.code()).await.unwrap();
    assert_eq!(user.user_id, "alice");
}

#[tokio::test(start_paused = true)]
async fn one_request_per_user_per_ten_minutes() {
    let f = fixture();
    let first = f.request("alice").await;
    let err = f.engine.request("wecom", "alice", None).await.unwrap_err();
    assert!(
        matches!(err, PairingRefusal::RateLimited { retry_in } if retry_in == REQUEST_INTERVAL),
        "{err:?}"
    );

    tokio::time::advance(4 * MIN).await;
    // User ids are compared case-insensitively.
    let err = f.engine.request("wecom", "ALICE", None).await.unwrap_err();
    assert!(
        matches!(err, PairingRefusal::RateLimited { retry_in } if retry_in == 6 * MIN),
        "{err:?}"
    );
    // Other users are not affected.
    f.request("bob").await;

    tokio::time::advance(6 * MIN).await;
    let second = f.request("alice").await;
    assert_ne!(first.code(), second.code());
    // The new code replaces the old one: one slot per user.
    let list = f.engine.list(Some("wecom")).await.unwrap();
    let alice: Vec<_> = list
        .pending
        .iter()
        .filter(|p| p.user_id == "alice")
        .collect();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].request_id, second.request_id);
    assert!(matches!(
        f.engine.approve("wecom", first.code()).await,
        Err(ApproveError::NoMatch { .. })
    ));
    f.engine.approve("wecom", second.code()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn at_most_three_pending_per_instance() {
    let f = fixture();
    for u in ["a", "b", "c"] {
        f.request(u).await;
    }
    let err = f.engine.request("wecom", "d", None).await.unwrap_err();
    assert!(
        matches!(err, PairingRefusal::TooManyPending { max: 3 }),
        "{err:?}"
    );
    // A refused request does not start the user's rate-limit window.
    assert!(!f.kv("wecom").await.iter().any(|(k, _)| k == "rate:d"));
    // Another instance has its own slots.
    f.engine.request("wecom_sales", "d", None).await.unwrap();

    // A user who already holds a slot may renew it after the window even when full.
    tokio::time::advance(REQUEST_INTERVAL).await;
    f.request("a").await;
    assert!(matches!(
        f.engine.request("wecom", "d", None).await,
        Err(PairingRefusal::TooManyPending { .. })
    ));

    // Slots free up when codes expire.
    tokio::time::advance(CODE_TTL - REQUEST_INTERVAL).await;
    f.request("d").await;
}

/// A store that yields before every key-value operation, so concurrent engine calls really
/// interleave, and counts those operations.
#[derive(Debug, Default)]
struct YieldingStore {
    inner: MemoryStore,
    kv_ops: AtomicUsize,
}

impl YieldingStore {
    async fn step(&self) {
        self.kv_ops.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
}

#[async_trait::async_trait]
impl StateStore for YieldingStore {
    async fn session_get(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        self.inner.session_get(key).await
    }
    async fn session_put(&self, record: &SessionRecord) -> StoreResult<()> {
        self.inner.session_put(record).await
    }
    async fn session_list(&self) -> StoreResult<Vec<SessionRecord>> {
        self.inner.session_list().await
    }
    async fn session_delete(&self, key: &str) -> StoreResult<bool> {
        self.inner.session_delete(key).await
    }
    async fn history_append(&self, id: &str, e: &[HistoryEntry], cap: usize) -> StoreResult<()> {
        self.inner.history_append(id, e, cap).await
    }
    async fn history_load(&self, id: &str, limit: usize) -> StoreResult<Vec<HistoryEntry>> {
        self.inner.history_load(id, limit).await
    }
    async fn dedup_check(
        &self,
        scope: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.inner.dedup_check(scope, id, now, ttl).await
    }
    async fn intake_accept(&self, entry: &IntakeEntry) -> StoreResult<bool> {
        self.inner.intake_accept(entry).await
    }
    async fn intake_done(&self, scope: &str, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.inner.intake_done(scope, id, now).await
    }
    async fn intake_pending(&self, scope: &str) -> StoreResult<Vec<IntakeEntry>> {
        self.inner.intake_pending(scope).await
    }
    async fn intake_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.intake_prune(before).await
    }
    async fn inbox_put(&self, entry: &InboxEntry) -> StoreResult<bool> {
        self.inner.inbox_put(entry).await
    }
    async fn inbox_done(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.inner.inbox_done(id, now).await
    }
    async fn inbox_pending(&self) -> StoreResult<Vec<InboxEntry>> {
        self.inner.inbox_pending().await
    }
    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.inbox_prune(before).await
    }
    async fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<i64> {
        self.inner.outbox_put(entry).await
    }
    async fn outbox_pending(&self, instance: Option<&str>) -> StoreResult<Vec<OutboxEntry>> {
        self.inner.outbox_pending(instance).await
    }
    async fn outbox_get(&self, id: i64) -> StoreResult<Option<OutboxEntry>> {
        self.inner.outbox_get(id).await
    }
    async fn outbox_for_inbox(&self, inbox_id: &str) -> StoreResult<Option<OutboxEntry>> {
        self.inner.outbox_for_inbox(inbox_id).await
    }
    async fn outbox_progress(&self, id: i64, parts: &[String], done: u32) -> StoreResult<()> {
        self.inner.outbox_progress(id, parts, done).await
    }
    async fn outbox_attempt(&self, id: i64, error: &str, st: DeliveryState) -> StoreResult<()> {
        self.inner.outbox_attempt(id, error, st).await
    }
    async fn outbox_done(
        &self,
        id: i64,
        inbox: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner.outbox_done(id, inbox, now).await
    }
    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<String>> {
        self.step().await;
        self.inner.kv_get(ns, key).await
    }
    async fn kv_put(&self, ns: &str, key: &str, value: &str) -> StoreResult<()> {
        self.step().await;
        self.inner.kv_put(ns, key, value).await
    }
    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        self.step().await;
        self.inner.kv_delete(ns, key).await
    }
    async fn kv_list(&self, ns: &str, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        self.step().await;
        self.inner.kv_list(ns, prefix).await
    }
    async fn close(&self) -> StoreResult<()> {
        self.inner.close().await
    }
}

fn yielding_engine() -> (PairingEngine, Arc<YieldingStore>) {
    let store = Arc::new(YieldingStore::default());
    (
        PairingEngine::new(store.clone(), Arc::new(TokioClock::new())),
        store,
    )
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_respect_the_pending_cap() {
    let (engine, _store) = yielding_engine();
    let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let results =
        futures::future::join_all(users.iter().map(|u| engine.request("wecom", u, None))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), MAX_PENDING);
    assert_eq!(
        engine.list(Some("wecom")).await.unwrap().pending.len(),
        MAX_PENDING
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_wrong_approvals_lock_exactly_once() {
    let (engine, _store) = yielding_engine();
    let attempts =
        futures::future::join_all((0..8).map(|_| engine.approve("wecom", "WRONG"))).await;
    let locked = attempts
        .iter()
        .filter(|r| matches!(r, Err(ApproveError::LockedOut { .. })))
        .count();
    let no_match = attempts
        .iter()
        .filter(|r| matches!(r, Err(ApproveError::NoMatch { .. })))
        .count();
    assert_eq!((no_match, locked), (4, 4));
}

#[tokio::test(start_paused = true)]
async fn is_approved_is_a_single_point_read() {
    let (engine, store) = yielding_engine();
    let r = engine.request("wecom", "alice", None).await.unwrap();
    engine.approve("wecom", r.code()).await.unwrap();
    let before = store.kv_ops.load(Ordering::SeqCst);
    assert!(engine.is_approved("wecom", "Alice").await.unwrap());
    assert_eq!(store.kv_ops.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(start_paused = true)]
async fn five_failed_approvals_lock_out_for_an_hour() {
    let f = fixture();
    let r = f.request("alice").await;
    for left in (1..MAX_FAILED_APPROVALS).rev() {
        let err = f.engine.approve("wecom", "WRONGONE").await.unwrap_err();
        assert!(
            matches!(err, ApproveError::NoMatch { attempts_left } if attempts_left == left),
            "{err:?}"
        );
    }
    tokio::time::advance(MIN).await;
    let until = at(f.start, MIN + LOCKOUT);
    let err = f.engine.approve("wecom", "ZZZZ").await.unwrap_err();
    assert!(
        matches!(err, ApproveError::LockedOut { until: u } if u == until),
        "{err:?}"
    );

    // The lockout blocks approval, even with the right code, and generation.
    let err = f.engine.approve("wecom", r.code()).await.unwrap_err();
    assert!(matches!(err, ApproveError::LockedOut { .. }), "{err:?}");
    let err = f.engine.request("wecom", "bob", None).await.unwrap_err();
    assert!(
        matches!(err, PairingRefusal::LockedOut { until: u } if u == until),
        "{err:?}"
    );
    // Attempts during the lockout do not extend it.
    tokio::time::advance(LOCKOUT - Duration::from_secs(1)).await;
    let err = f.engine.approve("wecom", "x").await.unwrap_err();
    assert!(
        matches!(err, ApproveError::LockedOut { until: u } if u == until),
        "{err:?}"
    );
    // Other instances are unaffected.
    f.engine.request("other", "bob", None).await.unwrap();

    // It ends after an hour, with a fresh failure budget.
    tokio::time::advance(Duration::from_secs(1)).await;
    let b = f.request("bob").await;
    let err = f.engine.approve("wecom", "nope").await.unwrap_err();
    assert!(
        matches!(err, ApproveError::NoMatch { attempts_left: 4 }),
        "{err:?}"
    );
    f.engine.approve("wecom", b.code()).await.unwrap();
    assert!(f.engine.is_approved("wecom", "bob").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn failures_are_forgotten_after_an_hour_and_reset_by_success() {
    let f = fixture();
    for _ in 0..4 {
        f.engine.approve("wecom", "bad").await.unwrap_err();
    }
    tokio::time::advance(LOCKOUT).await;
    let err = f.engine.approve("wecom", "bad").await.unwrap_err();
    assert!(
        matches!(err, ApproveError::NoMatch { attempts_left: 4 }),
        "{err:?}"
    );

    for _ in 0..3 {
        f.engine.approve("wecom", "bad").await.unwrap_err();
    }
    let r = f.request("alice").await;
    f.engine.approve("wecom", r.code()).await.unwrap();
    let err = f.engine.approve("wecom", "bad").await.unwrap_err();
    assert!(
        matches!(err, ApproveError::NoMatch { attempts_left: 4 }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn approval_by_code_ignores_case_spaces_and_dashes() {
    let f = fixture();
    let r = f.request("Alice").await;
    let code = r.code().to_lowercase();
    let typed = format!(" {}-{} ", &code[..4], &code[4..]);
    tokio::time::advance(MIN).await;
    let user = f.engine.approve("wecom", &typed).await.unwrap();
    assert_eq!(
        user,
        ApprovedUser {
            instance: "wecom".into(),
            user_id: "Alice".into(),
            user_name: Some("Display Name".into()),
            approved_at: at(f.start, MIN),
        }
    );
    // Recognised case-insensitively, on this instance only.
    assert!(f.engine.is_approved("wecom", "alice").await.unwrap());
    assert!(f.engine.is_approved("wecom", "ALICE").await.unwrap());
    assert!(!f.engine.is_approved("wecom_sales", "alice").await.unwrap());
    // The request is consumed: the same code cannot be used twice.
    assert!(f
        .engine
        .list(Some("wecom"))
        .await
        .unwrap()
        .pending
        .is_empty());
    let err = f.engine.approve("wecom", r.code()).await.unwrap_err();
    assert!(matches!(err, ApproveError::NoMatch { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn approval_by_request_id() {
    let f = fixture();
    let _a = f.request("alice").await;
    let b = f.request("bob").await;
    let id = f
        .engine
        .list(Some("wecom"))
        .await
        .unwrap()
        .pending
        .into_iter()
        .find(|p| p.user_id == "bob")
        .unwrap()
        .request_id;
    assert_eq!(id, b.request_id);
    let user = f.engine.approve("wecom", &id.to_lowercase()).await.unwrap();
    assert_eq!(user.user_id, "bob");
    assert!(f.engine.is_approved("wecom", "bob").await.unwrap());
    assert!(!f.engine.is_approved("wecom", "alice").await.unwrap());
    let list = f.engine.list(Some("wecom")).await.unwrap();
    assert_eq!(list.pending.len(), 1);
    assert_eq!(list.pending[0].user_id, "alice");
}

#[tokio::test(start_paused = true)]
async fn revoke_removes_an_approval() {
    let f = fixture();
    let r = f.request("alice").await;
    f.engine.approve("wecom", r.code()).await.unwrap();
    assert!(f.engine.revoke("wecom", "ALICE").await.unwrap());
    assert!(!f.engine.is_approved("wecom", "alice").await.unwrap());
    assert!(!f.engine.revoke("wecom", "alice").await.unwrap());
    assert!(f.engine.list(None).await.unwrap().approved.is_empty());
}

#[tokio::test(start_paused = true)]
async fn clear_pending_drops_live_requests() {
    let f = fixture();
    let a = f.request("alice").await;
    f.request("bob").await;
    f.engine.request("other", "carol", None).await.unwrap();
    assert_eq!(f.engine.clear_pending("wecom").await.unwrap(), 2);
    assert_eq!(f.engine.clear_pending("wecom").await.unwrap(), 0);
    assert!(matches!(
        f.engine.approve("wecom", a.code()).await,
        Err(ApproveError::NoMatch { .. })
    ));
    // Other instances keep theirs.
    assert_eq!(f.engine.list(Some("other")).await.unwrap().pending.len(), 1);
    // Expired requests are purged, not counted.
    tokio::time::advance(CODE_TTL).await;
    assert_eq!(f.engine.clear_pending("other").await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn list_shows_pending_and_approved_per_instance() {
    let f = fixture();
    let a = f.request("alice").await;
    tokio::time::advance(MIN).await;
    let b = f.request("bob").await;
    let c = f.engine.request("other", "carol", None).await.unwrap();
    f.engine.approve("other", c.code()).await.unwrap();

    let all = f.engine.list(None).await.unwrap();
    assert_eq!(
        all.pending,
        vec![
            PendingView {
                instance: "wecom".into(),
                request_id: a.request_id.clone(),
                user_id: "alice".into(),
                user_name: Some("Display Name".into()),
                created_at: f.start,
                expires_at: a.expires_at,
            },
            PendingView {
                instance: "wecom".into(),
                request_id: b.request_id.clone(),
                user_id: "bob".into(),
                user_name: Some("Display Name".into()),
                created_at: at(f.start, MIN),
                expires_at: b.expires_at,
            },
        ]
    );
    assert_eq!(
        all.approved,
        vec![ApprovedUser {
            instance: "other".into(),
            user_id: "carol".into(),
            user_name: None,
            approved_at: at(f.start, MIN),
        }]
    );
    // The serialised list (CLI JSON output) carries no codes.
    let json = serde_json::to_string(&all).unwrap();
    assert!(!json.contains(a.code()) && !json.contains(b.code()));

    let one = f.engine.list(Some("other")).await.unwrap();
    assert!(one.pending.is_empty());
    assert_eq!(one.approved.len(), 1);
    assert_eq!(
        f.engine.list(Some("unknown")).await.unwrap(),
        PairingList::default()
    );
}

#[tokio::test(start_paused = true)]
async fn empty_user_ids_get_no_code() {
    let f = fixture();
    let err = f.engine.request("wecom", "  ", None).await.unwrap_err();
    assert!(matches!(err, PairingRefusal::EmptyUserId), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn unreadable_records_are_dropped_not_fatal() {
    let f = fixture();
    let ns = namespace("wecom");
    for key in ["pending:AAAAAA", "rate:alice", "failures", "lockout"] {
        f.store.kv_put(&ns, key, "not json").await.unwrap();
    }
    let r = f.request("alice").await;
    assert_eq!(f.engine.list(Some("wecom")).await.unwrap().pending.len(), 1);
    f.engine.approve("wecom", r.code()).await.unwrap();
    let keys: Vec<String> = f.kv("wecom").await.into_iter().map(|(k, _)| k).collect();
    assert!(
        !keys
            .iter()
            .any(|k| k == "pending:AAAAAA" || k == "failures" || k == "lockout"),
        "{keys:?}"
    );
}
