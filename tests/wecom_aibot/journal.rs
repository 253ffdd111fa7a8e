//! The AI Bot intake journal (DESIGN.md "Delivery guarantee"): WeCom never delivers a message
//! twice, so a frame is journaled before its media is fetched; a process that died before the
//! router had the message answers it at the next start, and a frame journaled before is never
//! processed a second time.

use std::sync::Arc;

use gateway_core::{IntakeEntry, StateStore};
use serde_json::json;
use wecom_emulator::openws::{Chat, Msg, OpenWs};

use super::start;

/// What a run that died mid-intake leaves behind: a journaled frame, not yet done.
async fn leave_a_journaled_frame(dir: &std::path::Path, msgid: &str, text: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let store = store_sqlite::SqliteStore::open(&dir.join("data/gateway.db")).unwrap();
    let frame = json!({
        "cmd": "aibot_msg_callback",
        "headers": { "req_id": "req-of-a-dead-connection" },
        "body": {
            "msgid": msgid, "aibotid": "bot-1", "chattype": "single",
            "from": { "userid": "alice" }, "msgtype": "text", "text": { "content": text },
        },
    });
    let entry = IntakeEntry {
        scope: "wecom/wecom".into(),
        id: msgid.into(),
        payload: frame.to_string(),
        received_at: chrono::Utc::now(),
    };
    assert!(store.intake_accept(&entry).await.unwrap());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_message_journaled_before_a_crash_is_answered_once_after_the_restart() {
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let dir = tempfile::tempdir().unwrap();
    leave_a_journaled_frame(dir.path(), "m-crash", "asked before the crash").await;

    let gw = start(&emu, dir.path(), "", "").await;
    // Its req_id died with the old connection: the answer comes proactively.
    let sent = emu.wait_sent("alice", 1).await;
    assert_eq!(
        sent[0].body()["markdown"]["content"],
        "echo: asked before the crash"
    );
    // WeCom redelivering the same msgid (it does not, but a replayed frame might) is dropped:
    // the journal is the dedup record. A fresh message after it is answered, and only it.
    emu.push(Chat::dm("alice"), Msg::text("again").with_msgid("m-crash"));
    let fresh = emu.push_text(Chat::dm("alice"), "a new question");
    let reply = emu.expect_reply(&fresh.req_id).await;
    assert_eq!(reply.text(), "echo: a new question");
    assert_eq!(
        emu.sent_to("alice").len(),
        1,
        "the replayed frame was answered"
    );
    gw.stop().await;

    let store: Arc<dyn StateStore> =
        Arc::new(store_sqlite::SqliteStore::open(&dir.path().join("data/gateway.db")).unwrap());
    assert!(
        store
            .intake_pending("wecom/wecom")
            .await
            .unwrap()
            .is_empty(),
        "every journaled frame is done"
    );
}
