//! Conformance checks: sessions and history.

use std::sync::Arc;

use super::*;

// ---- sessions -------------------------------------------------------------------------------

/// An unknown key has no session.
pub async fn session_get_missing_is_none(store: Arc<dyn StateStore>) {
    assert_eq!(store.session_get("nobody").await.unwrap(), None);
}

/// A stored session comes back field for field.
pub async fn session_put_roundtrips(store: Arc<dyn StateStore>) {
    let record = session("wecom:dm:alice", "s1");
    store.session_put(&record).await.unwrap();
    assert_eq!(
        store.session_get("wecom:dm:alice").await.unwrap(),
        Some(record)
    );
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
        store
            .session_put(&session(key, &format!("s-{key}")))
            .await
            .unwrap();
    }
    let keys: Vec<String> = store
        .session_list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["a", "b", "m", "z"]);
}

/// Deleting reports whether the session existed, and leaves its history in place.
pub async fn session_delete_reports_existence_and_keeps_history(store: Arc<dyn StateStore>) {
    store.session_put(&session("k", "s1")).await.unwrap();
    store.session_put(&session("other", "s2")).await.unwrap();
    store
        .history_append("s1", &[line(Role::User, "hi", 1)], 10)
        .await
        .unwrap();
    assert!(store.session_delete("k").await.unwrap());
    assert!(!store.session_delete("k").await.unwrap());
    assert_eq!(store.session_get("k").await.unwrap(), None);
    assert_eq!(
        store
            .session_get("other")
            .await
            .unwrap()
            .map(|r| r.session_id),
        Some("s2".into())
    );
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
        store
            .history_append("s", &[line(Role::User, &format!("m{i}"), i)], 3)
            .await
            .unwrap();
    }
    assert_eq!(
        texts(&store.history_load("s", 100).await.unwrap()),
        ["m2", "m3", "m4"]
    );
    let burst: Vec<HistoryEntry> = (5..10)
        .map(|i| line(Role::Assistant, &format!("m{i}"), i))
        .collect();
    store.history_append("s", &burst, 4).await.unwrap();
    assert_eq!(
        texts(&store.history_load("s", 100).await.unwrap()),
        ["m6", "m7", "m8", "m9"]
    );
    // A larger cap later does not bring trimmed entries back.
    store
        .history_append("s", &[line(Role::User, "m10", 10)], 100)
        .await
        .unwrap();
    assert_eq!(
        texts(&store.history_load("s", 100).await.unwrap()),
        ["m6", "m7", "m8", "m9", "m10"]
    );
}

/// A cap of zero keeps no history at all.
pub async fn history_cap_zero_keeps_nothing(store: Arc<dyn StateStore>) {
    store
        .history_append("s", &[line(Role::User, "a", 1)], 10)
        .await
        .unwrap();
    store
        .history_append("s", &[line(Role::User, "b", 2)], 0)
        .await
        .unwrap();
    assert!(store.history_load("s", 10).await.unwrap().is_empty());
}

/// `limit` selects the newest entries and returns them oldest first.
pub async fn history_load_limit_returns_newest_oldest_first(store: Arc<dyn StateStore>) {
    let all: Vec<HistoryEntry> = (0..6)
        .map(|i| line(Role::User, &format!("m{i}"), i))
        .collect();
    store.history_append("s", &all, 100).await.unwrap();
    assert_eq!(
        texts(&store.history_load("s", 2).await.unwrap()),
        ["m4", "m5"]
    );
    assert_eq!(texts(&store.history_load("s", 1).await.unwrap()), ["m5"]);
    assert!(store.history_load("s", 0).await.unwrap().is_empty());
    assert_eq!(store.history_load("s", 50).await.unwrap(), all);
}

/// Sessions do not see or trim each other's history.
pub async fn history_is_isolated_per_session(store: Arc<dyn StateStore>) {
    store
        .history_append("a", &[line(Role::User, "a1", 1)], 10)
        .await
        .unwrap();
    store
        .history_append("b", &[line(Role::User, "b1", 2)], 10)
        .await
        .unwrap();
    store
        .history_append("a", &[line(Role::Assistant, "a2", 3)], 10)
        .await
        .unwrap();
    // Capping "b" to one entry must leave "a" alone.
    store
        .history_append("b", &[line(Role::User, "b2", 4)], 1)
        .await
        .unwrap();
    assert_eq!(
        texts(&store.history_load("a", 10).await.unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(texts(&store.history_load("b", 10).await.unwrap()), ["b2"]);
    // Ids that are prefixes of each other are still different sessions.
    assert!(store.history_load("", 10).await.unwrap().is_empty());
    assert!(store.history_load("a ", 10).await.unwrap().is_empty());
}
