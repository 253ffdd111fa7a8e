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
    store.outbox_done(second, None, at(8)).await.unwrap();
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
    store
        .outbox_attempt(id, "errcode 45009", DeliveryState::Failed)
        .await
        .unwrap();
    store
        .outbox_attempt(id, "timed out", DeliveryState::Unconfirmed)
        .await
        .unwrap();
    store
        .outbox_attempt(12_345_678, "unknown id is ignored", DeliveryState::Failed)
        .await
        .unwrap();
    let pending = store.outbox_pending(None).await.unwrap();
    let entry = pending.iter().find(|e| e.id == id).unwrap();
    assert_eq!(entry.attempts, 3);
    assert_eq!(entry.last_error, "timed out");
    assert_eq!(entry.state, DeliveryState::Unconfirmed);
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
    store.outbox_done(a, None, at(9)).await.unwrap();
    store.outbox_done(a, None, at(9)).await.unwrap();
    store.outbox_done(-1, None, at(9)).await.unwrap();
    let left: Vec<i64> = store
        .outbox_pending(None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [b]);
}

/// Removing a delivered answer marks its inbox entry done in the same step: after it, the
/// message is neither pending (it would be answered again after a restart) nor in the outbox.
pub async fn outbox_done_closes_the_inbox_entry_atomically(store: Arc<dyn StateStore>) {
    let inbox = inbox_entry("m1", 10);
    assert!(store.inbox_put(&inbox).await.unwrap());
    let mut entry = outbox_entry("wecom", "answer");
    entry.inbox_id = Some(inbox.id.clone());
    entry.state = DeliveryState::Sending;
    let id = store.outbox_put(&entry).await.unwrap();
    assert_eq!(ids(&store.inbox_pending().await.unwrap()), ["wecom:m1"]);
    store
        .outbox_done(id, Some(&inbox.id), at(20))
        .await
        .unwrap();
    assert!(store.inbox_pending().await.unwrap().is_empty());
    assert!(store.outbox_get(id).await.unwrap().is_none());
    // Still a duplicate: done, not forgotten.
    assert!(!store.inbox_put(&inbox).await.unwrap());
    // A missing inbox id is harmless.
    let other = store.outbox_put(&outbox_entry("wecom", "x")).await.unwrap();
    store
        .outbox_done(other, Some("wecom:none"), at(21))
        .await
        .unwrap();
    assert!(store.outbox_pending(None).await.unwrap().is_empty());
}

/// Parts and their progress round-trip; a retry sees only the unconfirmed parts.
pub async fn outbox_progress_records_parts_and_resumes(store: Arc<dyn StateStore>) {
    let mut entry = outbox_entry("wecom", "one two three");
    entry.state = DeliveryState::Sending;
    let id = store.outbox_put(&entry).await.unwrap();
    let got = store.outbox_get(id).await.unwrap().unwrap();
    assert_eq!(got.remaining_parts(), ["one two three"]);
    assert_eq!(got.state, DeliveryState::Sending);
    let parts: Vec<String> = ["(1/3) one", "(2/3) two", "(3/3) three"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    store.outbox_progress(id, &parts, 0).await.unwrap();
    store.outbox_progress(id, &parts, 2).await.unwrap();
    store.outbox_progress(99_999, &parts, 1).await.unwrap();
    let got = store.outbox_get(id).await.unwrap().unwrap();
    assert_eq!(got.parts, parts);
    assert_eq!(got.parts_done, 2);
    assert_eq!(got.remaining_parts(), ["(3/3) three"]);
    assert_eq!(store.outbox_pending(None).await.unwrap(), vec![got]);
    assert!(store.outbox_get(99_999).await.unwrap().is_none());
}

/// The answer to an inbox entry is found by the entry's id (the newest when there are two).
pub async fn outbox_for_inbox_finds_the_answer(store: Arc<dyn StateStore>) {
    assert!(store.outbox_for_inbox("wecom:m1").await.unwrap().is_none());
    let mut a = outbox_entry("wecom", "first");
    a.inbox_id = Some("wecom:m1".into());
    let mut b = outbox_entry("wecom", "second");
    b.inbox_id = Some("wecom:m1".into());
    store
        .outbox_put(&outbox_entry("wecom", "proactive"))
        .await
        .unwrap();
    store.outbox_put(&a).await.unwrap();
    let id_b = store.outbox_put(&b).await.unwrap();
    let found = store.outbox_for_inbox("wecom:m1").await.unwrap().unwrap();
    assert_eq!((found.id, found.text.as_str()), (id_b, "second"));
    assert_eq!(found.inbox_id.as_deref(), Some("wecom:m1"));
    assert!(store.outbox_for_inbox("wecom:m2").await.unwrap().is_none());
}

// ---- intake journal -------------------------------------------------------------------------

/// One call is both the dedup check and the journal write: new ids are journaled and returned
/// by `intake_pending` with their payload; a second accept of the same id changes nothing.
pub async fn intake_accept_is_dedup_and_journal_in_one(store: Arc<dyn StateStore>) {
    let first = intake_entry("wecom_callback/a", "m1", 10);
    assert!(store.intake_accept(&first).await.unwrap());
    let mut again = intake_entry("wecom_callback/a", "m1", 20);
    again.payload = "<xml>changed</xml>".into();
    assert!(!store.intake_accept(&again).await.unwrap());
    assert_eq!(
        store.intake_pending("wecom_callback/a").await.unwrap(),
        vec![first]
    );
    // Another scope has its own ids.
    assert!(store
        .intake_accept(&intake_entry("wecom_callback/b", "m1", 10))
        .await
        .unwrap());
}

/// A processed entry leaves the pending list but stays a duplicate until pruned.
pub async fn intake_done_keeps_the_dedup_record(store: Arc<dyn StateStore>) {
    let e = intake_entry("s", "m1", 10);
    assert!(store.intake_accept(&e).await.unwrap());
    store.intake_done("s", "m1", at(20)).await.unwrap();
    store.intake_done("s", "m1", at(30)).await.unwrap();
    store.intake_done("s", "unknown", at(30)).await.unwrap();
    assert!(store.intake_pending("s").await.unwrap().is_empty());
    assert!(!store.intake_accept(&e).await.unwrap());
    assert!(store.intake_pending("s").await.unwrap().is_empty());
}

/// Pending entries are listed per scope, oldest first, ties in insertion order.
pub async fn intake_pending_is_per_scope_oldest_first(store: Arc<dyn StateStore>) {
    for (id, ms) in [("c", 30), ("a", 10), ("b", 10)] {
        assert!(store
            .intake_accept(&intake_entry("s", id, ms))
            .await
            .unwrap());
    }
    assert!(store
        .intake_accept(&intake_entry("s2", "z", 1))
        .await
        .unwrap());
    assert!(store
        .intake_accept(&intake_entry("s:", "y", 1))
        .await
        .unwrap());
    let ids: Vec<String> = store
        .intake_pending("s")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(store.intake_pending("s2").await.unwrap().len(), 1);
    assert!(store.intake_pending("other").await.unwrap().is_empty());
}

/// Pruning removes done entries finished before the cut-off (they are then new again) and never
/// a pending one.
pub async fn intake_prune_forgets_only_old_done_entries(store: Arc<dyn StateStore>) {
    for id in ["old", "new", "open"] {
        assert!(store
            .intake_accept(&intake_entry("s", id, 0))
            .await
            .unwrap());
    }
    store.intake_done("s", "old", at(100)).await.unwrap();
    store.intake_done("s", "new", at(500)).await.unwrap();
    assert_eq!(store.intake_prune(at(500)).await.unwrap(), 1);
    assert!(store
        .intake_accept(&intake_entry("s", "old", 600))
        .await
        .unwrap());
    assert!(!store
        .intake_accept(&intake_entry("s", "new", 600))
        .await
        .unwrap());
    assert!(!store
        .intake_accept(&intake_entry("s", "open", 600))
        .await
        .unwrap());
    let ids: Vec<String> = store
        .intake_pending("s")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["open", "old"]);
}
