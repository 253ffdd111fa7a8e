//! Acceptance 6, first half: outbound media through the router's send endpoint — the upload
//! sequence (chunk count, 0-based indices, md5, concurrent chunks retried with fresh req_ids),
//! always proactive delivery (groups included), and the
//! downgrade and refusal rules. Also long proactive texts, split by bytes and never cut.

use md5::{Digest, Md5};
use serde_json::json;
use wecom_emulator::openws::{Chat, Match, OpenWs};

use super::{admin_send, start};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_file_is_uploaded_in_chunks_and_sent() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let data: Vec<u8> = (0..(MIB + MIB / 5)).map(|i| (i * 31 % 256) as u8).collect();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &data).unwrap();
    let (status, body) = admin_send(
        gw.http,
        &dir.path().join("data"),
        json!({"platform":"wecom","to":"user:alice","file":path}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let up = &emu.uploads()[0];
    assert_eq!(up.init["type"], "file");
    assert_eq!(up.init["filename"], "report.bin");
    assert_eq!(up.init["total_size"], data.len());
    assert_eq!(up.init["total_chunks"], 3);
    assert_eq!(up.init["md5"], hex::encode(Md5::digest(&data)));
    let indices: Vec<u64> = up.chunks.iter().map(|c| c.0).collect();
    assert_eq!(indices, [0, 1, 2]);
    assert!(up.chunks.iter().all(|c| c.1 <= 512 * 1024));
    assert_eq!(up.bytes, data);
    // alice never wrote: a proactive send with the media id.
    let sent = emu.sent_to("alice");
    assert_eq!(
        sent[0].body(),
        &json!({"chatid":"alice","msgtype":"file","file":{"media_id":up.media_id}})
    );
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn an_image_goes_to_a_group_with_aibot_send_msg() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let p = emu.push_text(Chat::group("team", "bob"), "@bot send the chart");
    emu.expect_reply(&p.req_id).await;
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(vec![1u8; 2048]);
    let path = dir.path().join("chart.png");
    std::fs::write(&path, &png).unwrap();
    let (status, body) = admin_send(
        gw.http,
        &dir.path().join("data"),
        json!({"platform":"wecom","to":"group:team","file":path}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let up = &emu.uploads()[0];
    assert_eq!(up.init["type"], "image");
    // Proactively to the group (reference §0 item 17): a req_id carries one reply, its answer.
    let sent = emu.sent_to("team");
    assert_eq!(
        sent.iter().map(|r| r.body().clone()).collect::<Vec<_>>(),
        vec![json!({"chatid":"team","msgtype":"image","image":{"media_id":up.media_id}})]
    );
    assert!(emu.reply(&p.req_id).media.is_empty());
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn oversized_and_non_amr_media_are_downgraded_and_huge_files_refused() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let data = dir.path().join("data");

    // An image over 10 MiB goes as a file, with a note.
    let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
    big.resize(10 * MIB + 1, 0);
    let img = dir.path().join("big.png");
    std::fs::write(&img, &big).unwrap();
    let (status, _) = admin_send(
        gw.http,
        &data,
        json!({"platform":"wecom","to":"user:alice","file":img}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(emu.uploads()[0].init["type"], "file");
    assert_eq!(emu.uploads()[0].init["total_chunks"], 21);

    // A "voice" that is not AMR goes as a file, with a note about AMR.
    let mp3 = dir.path().join("note.amr");
    std::fs::write(&mp3, b"ID3\x04\0\0\0\0\0\0 not really amr").unwrap();
    let (status, _) = admin_send(
        gw.http,
        &data,
        json!({"platform":"wecom","to":"user:alice","file":mp3}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(emu.uploads()[1].init["type"], "file");
    // A real AMR voice note stays a voice note.
    let amr = dir.path().join("real.amr");
    std::fs::write(&amr, b"#!AMR\n\x3c\x00\x00").unwrap();
    let (status, _) = admin_send(
        gw.http,
        &data,
        json!({"platform":"wecom","to":"user:alice","file":amr}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(emu.uploads()[2].init["type"], "voice");

    // Over 20 MiB: refused, nothing uploaded, the chat is told why.
    let huge = dir.path().join("huge.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(20 * MIB as u64 + 1)
        .unwrap();
    let (status, body) = admin_send(
        gw.http,
        &data,
        json!({"platform":"wecom","to":"user:alice","file":huge}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("20 MiB"), "{body}");
    assert_eq!(emu.uploads().len(), 3);

    let texts: Vec<String> = emu
        .sent_to("alice")
        .iter()
        .filter(|r| r.body()["msgtype"] == "markdown")
        .map(|r| r.body()["markdown"]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts[0].starts_with("ℹ️") && texts[0].contains("10 MiB"),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with("ℹ️") && texts[1].contains("AMR"),
        "{texts:?}"
    );
    assert!(
        texts[2].starts_with("⚠️") && texts[2].contains("20 MiB"),
        "{texts:?}"
    );
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn a_long_proactive_text_is_split_by_bytes_and_nothing_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let text = (0..2500)
        .map(|i| format!("词{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.len() > 12_000);
    let (status, body) = admin_send(
        gw.http,
        &dir.path().join("data"),
        json!({"platform":"wecom","to":"user:alice","markdown":text}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pieces: Vec<String> = emu
        .sent_to("alice")
        .iter()
        .map(|r| r.body()["markdown"]["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(pieces.len() >= 4, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|p| p.len() <= 4000));
    assert_eq!(pieces.join(" "), text, "cut only at spaces, in order");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

/// Chunks go several at once and a refused chunk is tried again with a fresh req_id (the SDK's
/// three tries); the upload still completes and is sent once.
#[tokio::test]
async fn a_refused_chunk_is_retried_with_a_fresh_req_id() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    emu.fail(Match::cmd("aibot_upload_media_chunk"), -1, 1);
    let bytes: Vec<u8> = (0..1_300_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &bytes).unwrap();
    let (status, body) = admin_send(
        gw.http,
        &dir.path().join("data"),
        json!({"platform":"wecom","to":"group:team","file":path}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let chunks: Vec<_> = emu
        .frames()
        .into_iter()
        .filter(|r| r.cmd() == "aibot_upload_media_chunk")
        .collect();
    assert_eq!(chunks.len(), 4, "three chunks, one of them twice");
    let ids: std::collections::HashSet<&str> = chunks.iter().map(|r| r.req_id()).collect();
    assert_eq!(ids.len(), 4, "every try has its own req_id");
    let up = &emu.uploads()[0];
    assert_eq!(up.bytes, bytes);
    let sent = emu.sent_to("team");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body()["file"]["media_id"], up.media_id.as_str());
    // Text to a group goes the same way.
    let (status, body) = admin_send(
        gw.http,
        &dir.path().join("data"),
        json!({"platform":"wecom","to":"group:team","text":"to the whole team"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = emu.sent_to("team");
    assert_eq!(sent[1].body()["markdown"]["content"], "to the whole team");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}
