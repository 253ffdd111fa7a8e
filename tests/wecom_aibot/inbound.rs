//! Acceptance 2: every inbound message type reaches the agent with the right text, sender, chat
//! and DM/group flag, media arrives decrypted (the echo agent prints size and SHA-256), and the
//! shared media vectors all decrypt. Also: split-text merging and events.

use base64::Engine as _;
use gateway_core::{ChatKind, StateStore};
use serde_json::{json, Value};
use wecom_emulator::openws::{Chat, Msg, OpenWs};

use super::{poll_http, sha16, start};

const VECTORS: &str = include_str!("../fixtures/wecom-media.json");

fn png(n: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend((0..n).map(|i| (i * 7 % 251) as u8));
    v
}

fn line(kind: &str, name: &str, bytes: &[u8]) -> String {
    format!(
        "[{kind} {name} {} bytes sha256:{}]",
        bytes.len(),
        sha16(bytes)
    )
}

#[tokio::test]
async fn every_message_type_reaches_the_agent_decrypted() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;

    // Text, in a DM and (with the @mention stripped) in a group.
    let dm = emu.push_text(Chat::dm("alice"), "plain text");
    let grp = emu.push_text(Chat::group("team", "bob"), "@Bot  hello group");
    assert_eq!(
        emu.expect_reply(&dm.req_id).await.text(),
        "echo: plain text"
    );
    assert_eq!(
        emu.expect_reply(&grp.req_id).await.text(),
        "echo: hello group"
    );

    // Image by URL + aeskey, and inline base64.
    let img = png(3000);
    let m = emu.host_media(&img);
    let p = emu.push(Chat::dm("carol"), Msg::image(&m));
    let r = emu.expect_reply(&p.req_id).await.text();
    assert!(r.starts_with("echo: \n[image image-"), "{r}");
    assert!(
        r.contains(&format!("{} bytes sha256:{}]", img.len(), sha16(&img))),
        "{r}"
    );
    let small = png(40);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&small);
    let p = emu.push(
        Chat::dm("carol"),
        Msg::image_base64(&format!("data:image/png;base64,{b64}")),
    );
    let r = emu.expect_reply(&p.req_id).await.text();
    assert!(
        r.contains(&format!("{} bytes sha256:{}]", small.len(), sha16(&small))),
        "{r}"
    );

    // Mixed: text, image, text.
    let mixed_img = png(500);
    let mm = emu.host_media(&mixed_img);
    let p = emu.push(
        Chat::dm("dave"),
        Msg::mixed(vec![
            Msg::text("part1"),
            Msg::image(&mm),
            Msg::text("part2"),
        ]),
    );
    let r = emu.expect_reply(&p.req_id).await.text();
    assert!(r.starts_with("echo: part1\npart2\n[image "), "{r}");
    assert!(r.contains(&sha16(&mixed_img)));

    // File with its name; appmsg (how PDFs arrive) with the title as name; a shared article.
    let pdf = b"%PDF-1.7 a small document".to_vec();
    let fm = emu.host_media(&pdf);
    let p = emu.push(Chat::dm("erin"), Msg::file(&fm, "report.pdf"));
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        format!("echo: \n{}", line("file", "report.pdf", &pdf))
    );
    let am = emu.host_media(&pdf);
    let p = emu.push(Chat::dm("erin"), Msg::appmsg_file(&am, "Quarterly.pdf"));
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        format!("echo: \n{}", line("file", "Quarterly.pdf", &pdf))
    );
    let p = emu.push(
        Chat::dm("erin"),
        Msg::article("Update", "Latest data", "https://example.com/a"),
    );
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: [link] Update\nLatest data\nhttps://example.com/a"
    );

    // Voice: the server's transcript.
    let p = emu.push(Chat::dm("frank"), Msg::voice("spoken words"));
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: spoken words"
    );

    // Video: downloaded (peers drop it).
    let mut mp4 = b"\0\0\0\x18ftypmp42".to_vec();
    mp4.extend(std::iter::repeat_n(7u8, 5000));
    let vm = emu.host_media(&mp4);
    let p = emu.push(Chat::group("team", "grace"), Msg::video(&vm));
    let r = emu.expect_reply(&p.req_id).await.text();
    assert!(r.starts_with("echo: \n[video video-"), "{r}");
    assert!(
        r.contains(&format!("{} bytes sha256:{}]", mp4.len(), sha16(&mp4))),
        "{r}"
    );

    // Quote: its text follows the message as a markdown quote, its media is listed too.
    let qimg = png(100);
    let qm = emu.host_media(&qimg);
    let p = emu.push(
        Chat::dm("heidi"),
        Msg::text("what is this?")
            .quoting(Msg::mixed(vec![Msg::text("look at this"), Msg::image(&qm)])),
    );
    let r = emu.expect_reply(&p.req_id).await.text();
    assert!(
        r.starts_with("echo: what is this?\n\n> look at this\n[image "),
        "{r}"
    );
    assert!(r.contains(&sha16(&qimg)));
    // Legacy command name, quote of a voice message.
    let p = emu.push_legacy(
        Chat::dm("heidi"),
        Msg::text("and this").quoting(Msg::voice("said before")),
    );
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: and this\n\n> said before"
    );

    // A download that fails is visible, not silently dropped.
    let hosted = emu.host_raw(b"x");
    let missing = format!("{}/missing", hosted.rsplit_once('/').unwrap().0);
    let gone = wecom_emulator::openws::MediaRef {
        url: missing,
        aeskey: m.aeskey.clone(),
    };
    let p = emu.push(Chat::dm("ivan"), Msg::image(&gone));
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: [image could not be downloaded]"
    );

    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;

    // Sender, chat and DM/group flags as the router recorded them.
    let store = store_sqlite::SqliteStore::open(&dir.path().join("data/gateway.db")).unwrap();
    let sessions = store.session_list().await.unwrap();
    let find = |user: &str| {
        sessions
            .iter()
            .find(|s| s.sender.user_id == user)
            .unwrap_or_else(|| panic!("{user}"))
    };
    assert_eq!(
        (find("alice").chat.kind, find("alice").chat.chat_id.as_str()),
        (ChatKind::Dm, "alice")
    );
    assert_eq!(
        (find("bob").chat.kind, find("bob").chat.chat_id.as_str()),
        (ChatKind::Group, "team")
    );
    assert_eq!(
        (find("grace").chat.kind, find("grace").chat.chat_id.as_str()),
        (ChatKind::Group, "team")
    );
    assert_eq!(find("erin").turns, 3);
    // The voice message was kept as voice: its history line says it was a transcript.
    let frank = store
        .history_load(&find("frank").session_id, 10)
        .await
        .unwrap();
    assert_eq!(frank[0].text, "[voice] spoken words");
}

#[tokio::test]
async fn every_media_vector_decrypts_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let all: Value = serde_json::from_str(VECTORS).unwrap();
    let b64 = |v: &Value, k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v[k].as_str().unwrap())
            .unwrap()
    };
    let mut pads = Vec::new();
    for v in all["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let plain = b64(v, "plaintext_b64");
        let url = emu.host_raw(&b64(v, "ciphertext_b64"));
        let media = wecom_emulator::openws::MediaRef {
            url,
            aeskey: v["aeskey"].as_str().unwrap().to_owned(),
        };
        let p = emu.push(Chat::dm("vec"), Msg::file(&media, &format!("{name}.bin")));
        let r = emu.expect_reply(&p.req_id).await.text();
        assert_eq!(
            r,
            format!("echo: \n{}", line("file", &format!("{name}.bin"), &plain)),
            "{name}"
        );
        pads.push(
            v["pad_value"]
                .as_str()
                .map(|s| s.parse::<u64>().unwrap())
                .or(v["pad_value"].as_u64())
                .unwrap(),
        );
    }
    assert!(
        pads.iter().any(|p| (17..=32).contains(p)),
        "the vectors cover pad values 17-32"
    );
    gw.stop().await;
}

#[tokio::test]
async fn client_split_texts_are_merged_into_one_turn() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(
        &emu,
        dir.path(),
        "",
        "      text_batch_delay_ms: 300\n      text_batch_split_delay_ms: 600\n",
    )
    .await;
    let long = "长".repeat(3950);
    let a = emu.push_text(Chat::dm("alice"), &long);
    let b = emu.push_text(Chat::dm("alice"), "tail of the message");
    // One turn, answered on the newest piece's req_id.
    let r = emu.expect_reply(&b.req_id).await;
    assert_eq!(r.text(), format!("echo: {long}tail of the message"));
    assert!(emu.reply(&a.req_id).frames.is_empty());
    // Another sender in the same group is not merged with alice.
    let g1 = emu.push_text(Chat::group("g", "x"), "from x");
    let g2 = emu.push_text(Chat::group("g", "y"), "from y");
    assert_eq!(emu.expect_reply(&g1.req_id).await.text(), "echo: from x");
    assert_eq!(emu.expect_reply(&g2.req_id).await.text(), "echo: from y");
    gw.stop().await;
}

#[tokio::test]
async fn enter_chat_gets_the_welcome_and_card_and_feedback_events_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(
        &emu,
        dir.path(),
        "",
        "      welcome_text: \"Hi! Ask me anything.\"\n",
    )
    .await;
    let e = emu.enter_chat("alice");
    let frames = emu
        .wait_for("welcome", |f| {
            f.iter().any(|r| r.cmd() == "aibot_respond_welcome_msg")
        })
        .await;
    let w = frames
        .iter()
        .find(|r| r.cmd() == "aibot_respond_welcome_msg")
        .unwrap();
    assert_eq!(w.req_id(), e.req_id);
    assert_eq!(
        w.body(),
        &json!({"msgtype":"text","text":{"content":"Hi! Ask me anything."}})
    );
    emu.card_click(Chat::dm("alice"), "task-1", "approve");
    emu.feedback(Chat::dm("alice"), "fb-1", 1);
    // Events reach the router (counted as inbound) and start no agent turn.
    poll_http(gw.http, "/metrics", "three events", |m| {
        m.contains("gateway_messages_in_total{instance=\"wecom\"} 3")
    })
    .await;
    let p = emu.push_text(Chat::dm("alice"), "after events");
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: after events"
    );
    assert_eq!(
        emu.counts().get("aibot_respond_msg").copied().unwrap_or(0),
        emu.reply(&p.req_id).frames.len()
    );
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn media_on_private_addresses_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    // The emulator's media host is on 127.0.0.1: the SSRF guard refuses it by default.
    let gw = start(
        &emu,
        dir.path(),
        "",
        "      allow_private_media_hosts: false\n",
    )
    .await;
    let m = emu.host_media(&png(10));
    let p = emu.push(Chat::dm("alice"), Msg::image(&m));
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: [image could not be downloaded]"
    );
    gw.stop().await;
}
