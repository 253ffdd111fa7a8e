//! Conformance checks: dedup, the inbox journal and the outbox.

use std::sync::Arc;

use super::*;

// ---- dedup ----------------------------------------------------------------------------------

/// The first sighting is new; the same id again is a duplicate.
pub async fn dedup_first_sighting_then_duplicate(store: Arc<dyn StateStore>) {
    assert!(store
        .dedup_check("wecom", "m1", at(0), MINUTE)
        .await
        .unwrap());
    assert!(!store
        .dedup_check("wecom", "m1", at(1), MINUTE)
        .await
        .unwrap());
    assert!(!store
        .dedup_check("wecom", "m1", at(2), MINUTE)
        .await
        .unwrap());
    assert!(store
        .dedup_check("wecom", "m2", at(2), MINUTE)
        .await
        .unwrap());
}

/// A record expires exactly `ttl` after it was recorded; the id is then new again and
/// recorded afresh.
pub async fn dedup_expires_after_ttl(store: Arc<dyn StateStore>) {
    let ttl_ms = 60_000;
    assert!(store.dedup_check("s", "m", at(0), MINUTE).await.unwrap());
    assert!(!store
        .dedup_check("s", "m", at(ttl_ms - 1), MINUTE)
        .await
        .unwrap());
    assert!(store
        .dedup_check("s", "m", at(ttl_ms), MINUTE)
        .await
        .unwrap());
    assert!(!store
        .dedup_check("s", "m", at(ttl_ms + 1), MINUTE)
        .await
        .unwrap());
    assert!(store
        .dedup_check("s", "m", at(10 * ttl_ms), MINUTE)
        .await
        .unwrap());
}

/// Seeing a duplicate does not restart its window: expiry counts from the first sighting.
pub async fn dedup_duplicate_does_not_extend_window(store: Arc<dyn StateStore>) {
    assert!(store.dedup_check("s", "m", at(0), MINUTE).await.unwrap());
    assert!(!store
        .dedup_check("s", "m", at(59_000), MINUTE)
        .await
        .unwrap());
    assert!(store
        .dedup_check("s", "m", at(60_500), MINUTE)
        .await
        .unwrap());
}

/// The same id in different scopes is tracked separately.
pub async fn dedup_scopes_are_isolated(store: Arc<dyn StateStore>) {
    assert!(store
        .dedup_check("wecom", "m1", at(0), MINUTE)
        .await
        .unwrap());
    assert!(store
        .dedup_check("wecom_sales", "m1", at(0), MINUTE)
        .await
        .unwrap());
    assert!(store
        .dedup_check("wecom:", "m1", at(0), MINUTE)
        .await
        .unwrap());
    assert!(!store
        .dedup_check("wecom_sales", "m1", at(1), MINUTE)
        .await
        .unwrap());
    assert!(!store
        .dedup_check("wecom", "m1", at(1), MINUTE)
        .await
        .unwrap());
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
    other.message.content = Content::Text {
        text: "changed".into(),
    };
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
    assert_eq!(
        ids(&pending),
        ["wecom:a", "wecom:b2", "wecom:b1", "wecom:c", "wecom:d"]
    );
}

/// `inbox_done` takes an entry out of the pending list; unknown ids and repeats are no-ops.
pub async fn inbox_done_removes_from_pending(store: Arc<dyn StateStore>) {
    for (id, ms) in [("a", 1), ("b", 2), ("c", 3)] {
        store.inbox_put(&inbox_entry(id, ms)).await.unwrap();
    }
    store.inbox_done("wecom:b", at(10)).await.unwrap();
    store.inbox_done("wecom:b", at(11)).await.unwrap();
    store.inbox_done("wecom:unknown", at(10)).await.unwrap();
    assert_eq!(
        ids(&store.inbox_pending().await.unwrap()),
        ["wecom:a", "wecom:c"]
    );
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
    assert_eq!(
        ids(&store.inbox_pending().await.unwrap()),
        ["wecom:open", "wecom:old"]
    );
}

// ---- outbox ---------------------------------------------------------------------------------

/// The store assigns positive, increasing ids, ignoring the id given, and never reuses one.
pub async fn outbox_put_assigns_increasing_ids(store: Arc<dyn StateStore>) {
    let mut entry = outbox_entry("wecom", "one");
    entry.id = 999;
    let first = store.outbox_put(&entry).await.unwrap();
    let second = store
        .outbox_put(&outbox_entry("wecom", "two"))
        .await
        .unwrap();
    assert!(first > 0, "ids start above zero, got {first}");
    assert!(second > first);
    store.outbox_done(second).await.unwrap();
    let third = store
        .outbox_put(&outbox_entry("wecom", "three"))
        .await
        .unwrap();
    assert!(third > second, "id {second} was reused as {third}");
    let pending = store.outbox_pending(None).await.unwrap();
    let mut expected = entry.clone();
    expected.id = first;
    assert_eq!(pending[0], expected);
    assert_eq!(
        pending.iter().map(|e| e.id).collect::<Vec<_>>(),
        [first, third]
    );
}

/// `outbox_pending(Some(instance))` returns only that instance's entries, oldest first.
pub async fn outbox_pending_filters_by_instance(store: Arc<dyn StateStore>) {
    let a1 = store.outbox_put(&outbox_entry("a", "a1")).await.unwrap();
    let b1 = store.outbox_put(&outbox_entry("b", "b1")).await.unwrap();
    let a2 = store.outbox_put(&outbox_entry("a", "a2")).await.unwrap();
    let id_list = |v: Vec<OutboxEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        id_list(store.outbox_pending(Some("a")).await.unwrap()),
        [a1, a2]
    );
    assert_eq!(
        id_list(store.outbox_pending(Some("b")).await.unwrap()),
        [b1]
    );
    assert!(store.outbox_pending(Some("c")).await.unwrap().is_empty());
    assert_eq!(
        id_list(store.outbox_pending(None).await.unwrap()),
        [a1, b1, a2]
    );
}

/// A failed retry increments `attempts` and replaces `last_error`, for that entry only.
pub async fn outbox_attempt_increments_and_records_error(store: Arc<dyn StateStore>) {
    let id = store.outbox_put(&outbox_entry("a", "x")).await.unwrap();
    let other = store.outbox_put(&outbox_entry("a", "y")).await.unwrap();
    store.outbox_attempt(id, "errcode 45009").await.unwrap();
    store.outbox_attempt(id, "errcode 60020").await.unwrap();
    store
        .outbox_attempt(12_345_678, "unknown id is ignored")
        .await
        .unwrap();
    let pending = store.outbox_pending(None).await.unwrap();
    let entry = pending.iter().find(|e| e.id == id).unwrap();
    assert_eq!(entry.attempts, 3);
    assert_eq!(entry.last_error, "errcode 60020");
    let untouched = pending.iter().find(|e| e.id == other).unwrap();
    assert_eq!(
        (untouched.attempts, untouched.last_error.as_str()),
        (1, "timed out")
    );
}

/// A delivered entry leaves the outbox; unknown ids are no-ops.
pub async fn outbox_done_removes(store: Arc<dyn StateStore>) {
    let a = store.outbox_put(&outbox_entry("a", "x")).await.unwrap();
    let b = store.outbox_put(&outbox_entry("a", "y")).await.unwrap();
    store.outbox_done(a).await.unwrap();
    store.outbox_done(a).await.unwrap();
    store.outbox_done(-1).await.unwrap();
    let left: Vec<i64> = store
        .outbox_pending(None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [b]);
}
