//! Conformance checks: timestamp precision, closing, and concurrent callers.

use std::sync::Arc;

use super::*;

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

    store
        .history_append(
            "s",
            &[HistoryEntry {
                role: Role::User,
                text: "t".into(),
                at: fine,
            }],
            5,
        )
        .await
        .unwrap();
    assert_eq!(store.history_load("s", 5).await.unwrap()[0].at, at(1_234));

    let mut entry = inbox_entry("m", 0);
    entry.received_at = fine;
    store.inbox_put(&entry).await.unwrap();
    assert_eq!(
        store.inbox_pending().await.unwrap()[0].received_at,
        at(1_234)
    );

    let mut out = outbox_entry("a", "x");
    out.created_at = fine;
    store.outbox_put(&out).await.unwrap();
    assert_eq!(
        store.outbox_pending(None).await.unwrap()[0].created_at,
        at(1_234)
    );
}

// ---- lifecycle ------------------------------------------------------------------------------

/// After `close`, every method fails with `StoreError::Closed`; closing again is fine.
pub async fn close_then_every_call_fails_closed(store: Arc<dyn StateStore>) {
    store.kv_put("ns", "k", "v").await.unwrap();
    store.close().await.unwrap();
    fn closed<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
        assert!(
            matches!(r, Err(StoreError::Closed)),
            "{what} after close returned {r:?}"
        );
    }
    let s = &store;
    closed("session_get", s.session_get("k").await);
    closed("session_put", s.session_put(&session("k", "s")).await);
    closed("session_list", s.session_list().await);
    closed("session_delete", s.session_delete("k").await);
    closed(
        "history_append",
        s.history_append("s", &[line(Role::User, "x", 1)], 5).await,
    );
    closed("history_load", s.history_load("s", 5).await);
    closed("dedup_check", s.dedup_check("s", "m", at(0), MINUTE).await);
    closed("inbox_put", s.inbox_put(&inbox_entry("m", 0)).await);
    closed("inbox_done", s.inbox_done("wecom:m", at(0)).await);
    closed("inbox_pending", s.inbox_pending().await);
    closed("inbox_prune", s.inbox_prune(at(0)).await);
    closed("outbox_put", s.outbox_put(&outbox_entry("a", "x")).await);
    closed("outbox_pending", s.outbox_pending(None).await);
    closed("outbox_get", s.outbox_get(1).await);
    closed("outbox_for_inbox", s.outbox_for_inbox("wecom:m").await);
    closed("outbox_progress", s.outbox_progress(1, &[], 0).await);
    closed(
        "outbox_attempt",
        s.outbox_attempt(1, "e", DeliveryState::Failed).await,
    );
    closed("outbox_done", s.outbox_done(1, None, at(0)).await);
    closed(
        "intake_accept",
        s.intake_accept(&intake_entry("s", "m", 0)).await,
    );
    closed("intake_done", s.intake_done("s", "m", at(0)).await);
    closed("intake_pending", s.intake_pending("s").await);
    closed("intake_prune", s.intake_prune(at(0)).await);
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
                tokio::spawn(
                    async move { store.inbox_put(&inbox_entry(&format!("m{i}"), i)).await },
                )
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(
                task.await
                    .expect("task panicked")
                    .expect("inbox_put failed"),
            );
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
            let dedup = store
                .dedup_check("scope", "same", at(i), MINUTE)
                .await
                .unwrap();
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

/// Many concurrent accepts of one platform id (WeCom retrying while the first request is still
/// being journaled): exactly one is new, and exactly one entry is journaled.
pub async fn concurrent_intake_accepts_journal_exactly_once(store: Arc<dyn StateStore>) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let same = store
                .intake_accept(&intake_entry("s", "same", i))
                .await
                .unwrap();
            let own = store
                .intake_accept(&intake_entry("s", &format!("own{i}"), i))
                .await
                .unwrap();
            (same, own)
        }));
    }
    let (mut same_wins, mut own_wins) = (0, 0);
    for task in tasks {
        let (same, own) = task.await.expect("task panicked");
        same_wins += usize::from(same);
        own_wins += usize::from(own);
    }
    assert_eq!((same_wins, own_wins), (1, 50));
    assert_eq!(store.intake_pending("s").await.unwrap().len(), 51);
}

/// Concurrent appends to one session lose nothing and still respect the cap.
pub async fn concurrent_history_appends_respect_cap(store: Arc<dyn StateStore>) {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let entry = line(Role::User, &format!("m{i}"), i);
            store
                .history_append("shared", std::slice::from_ref(&entry), 1_000)
                .await
                .unwrap();
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
