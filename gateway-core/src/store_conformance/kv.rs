//! Conformance checks: the key-value space.

use std::sync::Arc;

use super::*;

// ---- key-value ------------------------------------------------------------------------------

/// Reads see the latest write; a missing key is `None`.
pub async fn kv_get_put_overwrite(store: Arc<dyn StateStore>) {
    assert_eq!(store.kv_get("pairing", "code").await.unwrap(), None);
    store.kv_put("pairing", "code", "123456").await.unwrap();
    assert_eq!(
        store.kv_get("pairing", "code").await.unwrap().as_deref(),
        Some("123456")
    );
    store.kv_put("pairing", "code", "").await.unwrap();
    assert_eq!(
        store.kv_get("pairing", "code").await.unwrap().as_deref(),
        Some("")
    );
    store
        .kv_put("pairing", "code", "{\"json\": \"值\"}")
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("pairing", "code").await.unwrap().as_deref(),
        Some("{\"json\": \"值\"}")
    );
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
    for key in [
        "user:b",
        "user:a",
        "user",
        "usex",
        "user:ü",
        "user:\u{10FFFF}x",
        "admin",
        "user%",
        "user_",
    ] {
        store.kv_put("ns", key, &format!("v-{key}")).await.unwrap();
    }
    let keys = |v: Vec<(String, String)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.kv_list("ns", "user:").await.unwrap()),
        ["user:a", "user:b", "user:ü", "user:\u{10FFFF}x"]
    );
    assert_eq!(
        keys(store.kv_list("ns", "user").await.unwrap()),
        [
            "user",
            "user%",
            "user:a",
            "user:b",
            "user:ü",
            "user:\u{10FFFF}x",
            "user_"
        ]
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
    assert_eq!(
        store.kv_get("a", "k").await.unwrap().as_deref(),
        Some("in a")
    );
    assert_eq!(
        store.kv_get("b", "k").await.unwrap().as_deref(),
        Some("in b")
    );
    assert_eq!(
        store.kv_list("a", "").await.unwrap(),
        [("k".to_string(), "in a".to_string())]
    );
    assert!(store.kv_delete("a", "k").await.unwrap());
    assert_eq!(
        store.kv_get("b", "k").await.unwrap().as_deref(),
        Some("in b")
    );
}
