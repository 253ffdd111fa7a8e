//! Acceptance 5: DM and group policies, allowlists, per-group sender lists and pairing, applied
//! by the router to WeCom traffic; blocked senders get no reply at all, and nothing of theirs is
//! used to answer someone else.

use gateway_core::clock::TokioClock;
use gateway_core::pairing::PairingEngine;
use gateway_core::StateStore;
use std::sync::Arc;
use wecom_emulator::openws::{Chat, Match, OpenWs};

use super::{poll_http, start};

const POLICY: &str = "      dm_policy: allowlist\n      allow_from: [\"wecom:user:Alice\"]\n      \
    group_policy: allowlist\n      group_allow_from: [\"group:team\", \"ops\"]\n      groups:\n        \
    ops:\n          allow_from: [\"carol\"]\n";

async fn blocked(http: std::net::SocketAddr, n: usize) {
    let want = format!("gateway_messages_blocked_total{{instance=\"wecom\"}} {n}");
    poll_http(http, "/metrics", &want, |m| m.contains(&want)).await;
}

#[tokio::test]
async fn allowlists_and_per_group_sender_lists_decide_who_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", POLICY).await;

    let alice = emu.push_text(Chat::dm("alice"), "hi");
    let bob = emu.push_text(Chat::dm("bob"), "hi");
    let team = emu.push_text(Chat::group("team", "bob"), "@bot team");
    let other = emu.push_text(Chat::group("random", "alice"), "@bot other");
    let ops_carol = emu.push_text(Chat::group("ops", "carol"), "@bot ops");
    let ops_dave = emu.push_text(Chat::group("ops", "dave"), "@bot ops");

    assert_eq!(emu.expect_reply(&alice.req_id).await.text(), "echo: hi");
    assert_eq!(emu.expect_reply(&team.req_id).await.text(), "echo: team");
    assert_eq!(
        emu.expect_reply(&ops_carol.req_id).await.text(),
        "echo: ops"
    );
    blocked(gw.http, 3).await;
    for p in [&bob, &other, &ops_dave] {
        assert!(
            emu.reply(&p.req_id).frames.is_empty(),
            "a blocked sender got a reply"
        );
    }
    assert!(emu.sent_to("bob").is_empty() && emu.sent_to("random").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_blocked_senders_req_id_is_never_used_for_an_allowed_members_answer() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 400\n", POLICY).await;
    // carol (allowed in ops) asks; dave (not allowed) writes while she waits; her stream expires.
    emu.fail_next(Match::stream_final(), 846608);
    let carol = emu.push_text(Chat::group("ops", "carol"), "@bot question");
    emu.wait_reply(&carol.req_id, |r| !r.frames.is_empty())
        .await;
    let dave = emu.push_text(Chat::group("ops", "dave"), "@bot me too");
    blocked(gw.http, 1).await;
    // Her answer goes to the group proactively; dave's req_id stays untouched.
    let sent = emu.wait_sent("ops", 1).await;
    assert_eq!(sent[0].body()["markdown"]["content"], "echo: question");
    assert!(
        emu.reply(&dave.req_id).frames.is_empty(),
        "dave's req_id was used"
    );
    gw.stop().await;
}

#[tokio::test]
async fn pairing_answers_unknown_users_with_a_code_and_admits_them_after_approval() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "      dm_policy: pairing\n").await;
    let p = emu.push_text(Chat::dm("newbie"), "let me in");
    // A notice, sent proactively: the message's req_id is left alone.
    let sent = emu.wait_sent("newbie", 1).await;
    let notice = sent[0].body()["markdown"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(notice.contains("pairing code"), "{notice}");
    assert!(emu.reply(&p.req_id).frames.is_empty());
    let code = notice
        .split_whitespace()
        .find(|w| {
            w.len() >= 8
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .expect("a code in the notice")
        .to_owned();
    let store: Arc<dyn StateStore> =
        Arc::new(store_sqlite::SqliteStore::open(&dir.path().join("data/gateway.db")).unwrap());
    PairingEngine::new(store, TokioClock::shared())
        .approve("wecom", &code)
        .await
        .unwrap();
    let q = emu.push_text(Chat::dm("newbie"), "now?");
    assert_eq!(emu.expect_reply(&q.req_id).await.text(), "echo: now?");
    gw.stop().await;
}
