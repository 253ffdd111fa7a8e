//! Behaviour specific to the SQLite backend: persistence across reopen, migrations, sharing the
//! file with another process, group commit, busy mapping, and shutting the writer thread down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_core::store::{Role, StateStore};
use gateway_core::store_conformance::{at, inbox_entry, line, outbox_entry, session};
use gateway_core::StoreError;
use rusqlite::Connection;
use store_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    (dir, path)
}

fn wal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

const MINUTE: Duration = Duration::from_secs(60);

/// Yields until `n` spawned tasks have started. On a current-thread runtime a task's first
/// poll runs uninterrupted, and each task here sends its store command within that poll (the
/// queue has room), so afterwards every command is queued. A fixed number of yields is not
/// enough: the test body is polled again after every 61 task polls.
async fn all_started(started: &AtomicUsize, n: usize) {
    while started.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn data_survives_reopen() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    store.session_put(&session("k", "s1")).await.unwrap();
    store
        .history_append(
            "s1",
            &[line(Role::User, "hi", 1), line(Role::Assistant, "hello", 2)],
            10,
        )
        .await
        .unwrap();
    store.inbox_put(&inbox_entry("pending", 1)).await.unwrap();
    store.inbox_put(&inbox_entry("finished", 2)).await.unwrap();
    store.inbox_done("wecom:finished", at(3)).await.unwrap();
    let out = store
        .outbox_put(&outbox_entry("wecom", "undelivered"))
        .await
        .unwrap();
    store.kv_put("pairing", "alice", "approved").await.unwrap();
    store
        .dedup_check("wecom", "m1", at(0), MINUTE)
        .await
        .unwrap();
    store.close().await.unwrap();

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.session_get("k").await.unwrap(),
        Some(session("k", "s1"))
    );
    let history = store.history_load("s1", 10).await.unwrap();
    assert_eq!(
        history,
        [line(Role::User, "hi", 1), line(Role::Assistant, "hello", 2)]
    );
    assert_eq!(
        store.inbox_pending().await.unwrap(),
        [inbox_entry("pending", 1)]
    );
    // The done entry is still journaled: still a duplicate after a restart.
    assert!(!store.inbox_put(&inbox_entry("finished", 2)).await.unwrap());
    let pending = store.outbox_pending(None).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.id).collect::<Vec<_>>(), [out]);
    assert_eq!(
        store.kv_get("pairing", "alice").await.unwrap().as_deref(),
        Some("approved")
    );
    assert!(!store
        .dedup_check("wecom", "m1", at(1), MINUTE)
        .await
        .unwrap());
    // Ids keep growing across restarts.
    assert!(
        store
            .outbox_put(&outbox_entry("wecom", "next"))
            .await
            .unwrap()
            > out
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn migrations_set_user_version_and_are_idempotent() {
    let (_dir, path) = temp_db();
    assert!(SqliteStore::schema_version() >= 1);
    for _ in 0..3 {
        let store = SqliteStore::open(&path).unwrap();
        store.kv_put("ns", "k", "v").await.unwrap();
        store.close().await.unwrap();
    }
    let raw = Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SqliteStore::schema_version());
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let rows: i64 = raw
        .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn two_stores_opening_a_new_file_at_once_both_succeed() {
    // Racing to create and migrate the same fresh file (the gateway starting while the pairing
    // CLI runs). The race is narrow, so run it a number of times.
    for _ in 0..25 {
        let (_dir, path) = temp_db();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| SqliteStore::open(&path));
            let b = s.spawn(|| SqliteStore::open(&path));
            (a.join().unwrap(), b.join().unwrap())
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        a.kv_put("ns", "a", "1").await.unwrap();
        b.kv_put("ns", "b", "2").await.unwrap();
        assert_eq!(a.kv_list("ns", "").await.unwrap().len(), 2);
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", SqliteStore::schema_version() + 1)
        .unwrap();
    drop(raw);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("newer")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_file_sees_committed_writes() {
    let (_dir, path) = temp_db();
    // The gateway and the `gateway pairing` CLI: two stores, two connections, one file.
    let gateway = Arc::new(SqliteStore::open(&path).unwrap());
    let cli = Arc::new(SqliteStore::open(&path).unwrap());
    cli.kv_put("pairing", "bob", "approved").await.unwrap();
    assert_eq!(
        gateway.kv_get("pairing", "bob").await.unwrap().as_deref(),
        Some("approved")
    );
    gateway.inbox_put(&inbox_entry("m1", 1)).await.unwrap();
    assert_eq!(cli.inbox_pending().await.unwrap().len(), 1);
    assert!(!cli.inbox_put(&inbox_entry("m1", 1)).await.unwrap());

    // Both writing at once: the busy timeout serialises them; nothing fails or is lost.
    let mut tasks = Vec::new();
    for i in 0..100 {
        for store in [&gateway, &cli] {
            let store = Arc::clone(store);
            let key = format!(
                "{}-{i}",
                if Arc::ptr_eq(&store, &gateway) {
                    "g"
                } else {
                    "c"
                }
            );
            tasks.push(tokio::spawn(async move {
                store.kv_put("load", &key, "v").await
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(gateway.kv_list("load", "").await.unwrap().len(), 200);
    assert_eq!(cli.kv_list("load", "").await.unwrap().len(), 200);
    gateway.close().await.unwrap();
    cli.close().await.unwrap();
}

#[tokio::test]
async fn group_commit_runs_concurrent_writes_in_few_transactions() {
    let (_dir, path) = temp_db();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    for i in 0..50 {
        store
            .inbox_put(&inbox_entry(&format!("old{i}"), i))
            .await
            .unwrap();
    }
    let before = store.stats();

    // Another connection holds the write lock, so the writer's first transaction waits in
    // BEGIN while every other command queues behind it; once the lock is released the queue
    // must go through in one transaction, not one each.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50_i64 {
        // The four hot-path writes of a message, 50 of each, one command per task.
        let (s, n) = (Arc::clone(&store), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            n.fetch_add(1, Ordering::SeqCst);
            assert!(s
                .inbox_put(&inbox_entry(&format!("m{i}"), i))
                .await
                .unwrap());
        }));
        let (s, n) = (Arc::clone(&store), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            n.fetch_add(1, Ordering::SeqCst);
            assert!(s
                .dedup_check("wecom", &format!("m{i}"), at(i), MINUTE)
                .await
                .unwrap());
        }));
        let (s, n) = (Arc::clone(&store), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            n.fetch_add(1, Ordering::SeqCst);
            s.history_append(&format!("s{i}"), &[line(Role::User, "hi", i)], 10)
                .await
                .unwrap();
        }));
        let (s, n) = (Arc::clone(&store), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            n.fetch_add(1, Ordering::SeqCst);
            s.inbox_done(&format!("wecom:old{i}"), at(100))
                .await
                .unwrap();
        }));
    }
    all_started(&started, 200).await;
    blocker.execute_batch("COMMIT").unwrap();
    for task in tasks {
        task.await.unwrap();
    }

    let stats = store.stats();
    let (transactions, commands) = (
        stats.transactions - before.transactions,
        stats.commands - before.commands,
    );
    assert_eq!(commands, 200);
    // The batch stuck in BEGIN, then everything queued behind it. Without grouping: 200.
    assert!(
        transactions <= 2,
        "200 writes took {transactions} transactions"
    );
    let pending = store.inbox_pending().await.unwrap();
    assert_eq!(pending.len(), 50);
    assert!(pending.iter().all(|e| e.id.starts_with("wecom:m")));
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_failing_command_is_undone_alone_and_its_batch_commits() {
    let (_dir, path) = temp_db();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let blocker = Connection::open(&path).unwrap();
    // Makes an append fail half-way: after its first line is written, the second is refused.
    blocker
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON history WHEN NEW.text = 'boom'
             BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END;",
        )
        .unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let (s, n) = (Arc::clone(&store), Arc::clone(&started));
    let bad = tokio::spawn(async move {
        n.fetch_add(1, Ordering::SeqCst);
        let lines = [line(Role::User, "fine", 1), line(Role::User, "boom", 2)];
        s.history_append("s", &lines, 10).await
    });
    let mut good = Vec::new();
    for i in 0..10 {
        let (s, n) = (Arc::clone(&store), Arc::clone(&started));
        good.push(tokio::spawn(async move {
            n.fetch_add(1, Ordering::SeqCst);
            s.kv_put("ns", &format!("k{i}"), "v").await
        }));
    }
    all_started(&started, 11).await;
    let before = store.stats();
    blocker.execute_batch("COMMIT").unwrap();
    assert!(matches!(bad.await.unwrap(), Err(StoreError::Backend(_))));
    for task in good {
        task.await.unwrap().unwrap();
    }
    // The failed append left nothing behind, and the others in its batch committed.
    assert!(store.history_load("s", 10).await.unwrap().is_empty());
    assert_eq!(store.kv_list("ns", "").await.unwrap().len(), 10);
    assert!(store.stats().transactions - before.transactions <= 4);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_busy_and_retryable() {
    let (_dir, path) = temp_db();
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    store.kv_put("ns", "k", "before").await.unwrap();

    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store.kv_put("ns", "k", "during").await.unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    assert!(err.is_retryable());
    // Reads run in a deferred transaction and are not held up by the other writer.
    assert_eq!(
        store.kv_get("ns", "k").await.unwrap().as_deref(),
        Some("before")
    );
    blocker.execute_batch("ROLLBACK").unwrap();

    store.kv_put("ns", "k", "after").await.unwrap();
    assert_eq!(
        store.kv_get("ns", "k").await.unwrap().as_deref(),
        Some("after")
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO inbox (id, message, received_at) VALUES ('x', 'not json', 0)",
        [],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO history (session_id, seq, role, text, at) VALUES ('s', 1, 'robot', 't', 0)",
        [],
    )
    .unwrap();
    assert!(matches!(
        store.inbox_pending().await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.history_load("s", 5).await,
        Err(StoreError::Corrupt(_))
    ));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_commits_queued_writes_then_refuses() {
    let (_dir, path) = temp_db();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            (i, s.kv_put("ns", &format!("k{i:03}"), "v").await)
        }));
    }
    store.close().await.unwrap();
    // The writer thread has closed the last connection: the WAL is checkpointed and removed.
    assert!(!wal_of(&path).exists());
    let mut acknowledged = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(())) => acknowledged.push(format!("k{i:03}")),
            (_, Err(StoreError::Closed)) => {}
            (_, Err(e)) => panic!("unexpected error {e:?}"),
        }
    }
    // Every write that was acknowledged is on disk, and only those.
    let store = SqliteStore::open(&path).unwrap();
    let mut stored: Vec<String> = store
        .kv_list("ns", "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    stored.sort();
    acknowledged.sort();
    assert_eq!(stored, acknowledged);
    store.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_store_stops_its_thread() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    store.kv_put("ns", "k", "v").await.unwrap();
    assert!(wal_of(&path).exists());
    drop(store);
    // The thread notices the closed channel and closes its connection, which removes the WAL.
    // It runs on its own OS thread, so wait in real time, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wal_of(&path).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store thread did not stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.kv_get("ns", "k").await.unwrap().as_deref(), Some("v"));
    store.close().await.unwrap();
}

#[tokio::test]
async fn stats_count_transactions_and_commands() {
    let store = SqliteStore::open_in_memory().unwrap();
    let before = store.stats();
    store.kv_put("ns", "a", "1").await.unwrap();
    store.kv_get("ns", "a").await.unwrap();
    let after = store.stats();
    assert_eq!(after.commands - before.commands, 2);
    assert_eq!(after.transactions - before.transactions, 2);
    assert!(format!("{store:?}").contains(":memory:"));
    store.close().await.unwrap();
}
