//! Replies as the official client makes them (issue 11): one stream on the inbound `req_id`
//! (seed, cumulative updates, exactly one visible finish), what does not fit continues as
//! `aibot_send_msg` markdown without loss, every ending finishes the stream, and a stream that
//! expires or is refused gives way to markdown so the user still gets the whole answer, once.

use wecom_emulator::openws::{Chat, Match, OpenWs, Reply, STREAM_MAX_BYTES};

use super::support::TestGateway;
use super::{instance, registry, start, yaml};

/// Every bubble has exactly one final frame and nothing after it; no frame is over the limit.
fn assert_well_formed(r: &Reply) {
    for b in &r.bubbles {
        assert_eq!(
            b.finals, 1,
            "bubble {} has {} finals",
            b.stream_id, b.finals
        );
        assert!(b.final_content.is_some());
    }
    for (id, content, _) in r.stream_frames() {
        assert!(
            content.len() <= STREAM_MAX_BYTES,
            "frame of {} bytes on {id}",
            content.len()
        );
    }
    let frames = r.stream_frames();
    for b in &r.bubbles {
        let last = frames.iter().rposition(|f| f.0 == b.stream_id).unwrap();
        assert!(
            frames[last].2,
            "the last frame of {} is not its finish",
            b.stream_id
        );
    }
}

#[tokio::test]
async fn a_reply_is_a_seed_then_cumulative_updates_then_one_finish() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 60\n", "").await;
    let text = "a fairly long message so that the echo agent streams it in several pieces";
    let p = emu.push_text(Chat::dm("alice"), text);
    let r = emu.expect_reply(&p.req_id).await;
    assert_well_formed(&r);
    assert_eq!(r.bubbles.len(), 1);
    let contents = &r.bubbles[0].contents;
    assert_eq!(contents[0], "<think></think>");
    let updates = &contents[1..contents.len() - 1];
    assert!(!updates.is_empty(), "no streamed update: {contents:?}");
    for w in updates.windows(2) {
        assert!(
            w[1].starts_with(&w[0]) && w[1] != w[0],
            "not cumulative: {w:?}"
        );
    }
    assert_eq!(r.text(), format!("echo: {text}"));
    // The final frame is simply the whole text (no invisible padding, reference §0 item 11).
    let fin = r.bubbles[0].final_content.clone().unwrap();
    assert_eq!(fin, format!("echo: {text}"));
    assert!(r.frames.iter().all(|f| f.req_id() == p.req_id));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

/// The markdown pieces the gateway sent to `chat` with `aibot_send_msg`, in order.
fn markdown_to(emu: &OpenWs, chat: &str) -> Vec<String> {
    emu.sent_to(chat)
        .iter()
        .filter(|r| r.body()["msgtype"] == "markdown")
        .map(|r| r.body()["markdown"]["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_60000_byte_answer_arrives_complete_as_one_stream_plus_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 20\n", "").await;
    let para = "Streaming 长文本 past the stream's limit, nothing lost. ".repeat(20);
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 60_000 {
        text.push_str(&format!("{i} {para}\n\n"));
        i += 1;
    }
    let text = text.trim_end().to_owned();
    let expected = format!("echo: {text}");
    let p = emu.push_text(Chat::dm("alice"), &text);
    let r = emu.expect_reply(&p.req_id).await;
    assert_well_formed(&r);
    assert_eq!(r.bubbles.len(), 1, "one stream id on the inbound req_id");
    let head = r.bubbles[0].final_content.clone().unwrap();
    assert!(head.len() <= STREAM_MAX_BYTES && head.len() > 10_000);
    assert!(expected.starts_with(&head));
    // The rest follows proactively, split by bytes, in order; parts join at the paragraph
    // breaks they were cut at.
    let last_para = text.rsplit("\n\n").next().unwrap().to_owned();
    let frames = emu
        .wait_for("the last markdown piece", |_| {
            markdown_to(&emu, "alice")
                .last()
                .is_some_and(|m| m.ends_with(&last_para))
        })
        .await;
    drop(frames);
    let pieces = markdown_to(&emu, "alice");
    assert!(pieces.len() >= 10, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|p| p.len() <= 4000));
    let mut all = vec![head];
    all.extend(pieces);
    assert_eq!(all.join("\n\n"), expected, "nothing lost, nothing repeated");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn an_agent_error_still_finishes_the_bubble_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(
        &emu,
        dir.path(),
        "  delay_ms: 3000\n  timeout_secs: 1\n",
        "",
    )
    .await;
    let p = emu.push_text(Chat::dm("alice"), "this will time out");
    let r = emu.expect_reply(&p.req_id).await;
    assert_well_formed(&r);
    assert_eq!(r.finals(), 1);
    assert!(r.text().contains("did not answer in time"), "{}", r.text());
    gw.stop().await;
}

#[tokio::test]
async fn stop_finishes_the_running_bubble() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 2000\n", "").await;
    let p = emu.push_text(
        Chat::dm("alice"),
        "a long question that takes a while to answer",
    );
    // Wait for the first streamed piece, then /stop.
    emu.wait_reply(&p.req_id, |r| r.stream_frames().len() >= 2)
        .await;
    let s = emu.push_text(Chat::dm("alice"), "/stop");
    let r = emu.expect_reply(&p.req_id).await;
    assert_well_formed(&r);
    assert!(r.text().contains("Stopped"), "{}", r.text());
    // The command's answer is a notice: proactive, never on the /stop message's req_id.
    let sent = emu.wait_sent("alice", 1).await;
    assert!(
        sent[0].body()["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains("Stopping"),
        "{:?}",
        sent[0].body()
    );
    assert!(emu.reply(&s.req_id).frames.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_mid_turn_finishes_the_bubble() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let y = yaml(
        "  drain_timeout_secs: 1\n",
        "  delay_ms: 3000\n",
        &instance("wecom", &emu.url(), "bot-1", "secret-1", ""),
    );
    let gw = TestGateway::start_with(dir.path(), &y, &registry()).await;
    emu.wait_subscribed(1).await;
    let p = emu.push_text(Chat::dm("alice"), "a question asked right before a restart");
    emu.wait_reply(&p.req_id, |r| r.stream_frames().len() >= 2)
        .await;
    gw.stop().await;
    let r = emu.reply(&p.req_id);
    assert_well_formed(&r);
    assert!(r.text().contains("restarting"), "{}", r.text());
}

#[tokio::test]
async fn an_expired_stream_falls_back_and_the_whole_answer_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 30\n", "").await;
    emu.fail_next(Match::stream_final(), 846608);
    let text = "please answer even though the stream window closes";
    let p = emu.push_text(Chat::dm("alice"), text);
    let sent = emu.wait_sent("alice", 1).await;
    assert_eq!(
        sent[0].body()["markdown"]["content"],
        format!("echo: {text}")
    );
    let r = emu.reply(&p.req_id);
    assert_eq!(r.finals(), 1, "the final was attempted once, not repeated");
    gw.stop().await;
}

#[tokio::test]
async fn in_a_group_a_refused_stream_gives_way_to_markdown_to_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 50\n", "").await;
    emu.fail_next(Match::stream_final(), 846604);
    let p = emu.push_text(Chat::group("team", "alice"), "first question");
    let sent = emu.wait_sent("team", 1).await;
    assert_eq!(
        sent[0].body()["markdown"]["content"],
        "echo: first question"
    );
    assert_eq!(emu.reply(&p.req_id).finals(), 1, "the final was tried once");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn any_refused_final_sends_the_whole_answer_once_as_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    // 6000 and 600039 are not in the official client's vocabulary: a refusal like any other.
    for (i, code) in [6000, 600039].into_iter().enumerate() {
        emu.fail_next(Match::stream_final(), code);
        let text = format!("refused {code}");
        let p = emu.push_text(Chat::dm("alice"), &text);
        let sent = emu.wait_sent("alice", i + 1).await;
        assert_eq!(
            sent[i].body()["markdown"]["content"],
            format!("echo: {text}")
        );
        assert_eq!(emu.reply(&p.req_id).finals(), 1);
    }
    // A later message goes through normally, and nothing was sent twice.
    let q = emu.push_text(Chat::dm("alice"), "next");
    assert_eq!(emu.expect_reply(&q.req_id).await.text(), "echo: next");
    assert_eq!(emu.sent_to("alice").len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn not_subscribed_resubscribes_on_the_same_socket_and_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    emu.fail_next(Match::stream_final(), 846609);
    let p = emu.push_text(Chat::dm("alice"), "are you there?");
    let sent = emu.wait_sent("alice", 1).await;
    assert_eq!(
        sent[0].body()["markdown"]["content"],
        "echo: are you there?"
    );
    let subs = emu.subscribes();
    assert_eq!(subs.len(), 2, "one re-subscribe");
    assert_eq!(subs[0].conn, subs[1].conn, "on the same socket");
    assert_eq!(emu.reply(&p.req_id).finals(), 1);
    // New messages are answered normally afterwards.
    let q = emu.push_text(Chat::dm("alice"), "again");
    assert_eq!(emu.expect_reply(&q.req_id).await.text(), "echo: again");
    gw.stop().await;
}

#[tokio::test]
async fn a_fallback_that_fails_midway_resumes_at_the_first_unconfirmed_piece() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let y = yaml(
        "  outbox_retry_secs: 1\n",
        "",
        &instance(
            "wecom",
            &emu.url(),
            "bot-1",
            "secret-1",
            "      text_max_bytes: 1000\n",
        ),
    );
    let gw = TestGateway::start_with(dir.path(), &y, &registry()).await;
    emu.wait_subscribed(1).await;
    // The stream window closes, so the answer goes out in three pieces; WeCom refuses the
    // second piece once.
    emu.fail_next(Match::stream_final(), 846608);
    emu.fail(Match::cmd("aibot_send_msg").containing("PARTB"), 40058, 1);
    let text = format!(
        "PARTA {}\nPARTB {}\nPARTC {}",
        "a".repeat(900),
        "b".repeat(900),
        "c".repeat(900)
    );
    emu.push_text(Chat::dm("alice"), &text);
    // Every markdown piece the gateway sent, by route (passive reply or proactive send).
    let pieces = |frames: &[wecom_emulator::openws::Received]| -> Vec<String> {
        frames
            .iter()
            .filter(|r| r.body()["msgtype"] == "markdown")
            .map(|r| {
                r.body()["markdown"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    let frames = emu
        .wait_for("the last piece", |f| {
            pieces(f).iter().any(|c| c.contains("PARTC"))
        })
        .await;
    let got = pieces(&frames);
    let count = |part: &str| got.iter().filter(|c| c.contains(part)).count();
    // PARTB twice: the refused attempt and the retry; nothing before it is repeated.
    assert_eq!(
        (count("PARTA"), count("PARTB"), count("PARTC")),
        (1, 2, 1),
        "{:?}",
        got.iter()
            .map(|c| &c[..12.min(c.len())])
            .collect::<Vec<_>>()
    );
    gw.stop().await;
}

/// Risk 2 of issue 11: a notice outside a turn must not take a req_id. In a group, a member's
/// second message while the first is answered gets its "queued" notice with `aibot_send_msg`
/// to the group, and later its own answer as the one stream on its own req_id.
#[tokio::test]
async fn a_queued_notice_in_a_group_goes_proactively_and_the_answer_keeps_its_req_id() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "  delay_ms: 300\n", "").await;
    let first = emu.push_text(Chat::group("team", "alice"), "first question");
    emu.wait_reply(&first.req_id, |r| !r.frames.is_empty())
        .await;
    let second = emu.push_text(Chat::group("team", "alice"), "second question");
    let sent = emu.wait_sent("team", 1).await;
    let notice = sent[0].body()["markdown"]["content"].as_str().unwrap();
    assert!(notice.contains("Queued"), "{notice}");
    assert_eq!(
        emu.expect_reply(&first.req_id).await.text(),
        "echo: first question"
    );
    let r = emu.expect_reply(&second.req_id).await;
    assert_eq!(r.text(), "echo: second question");
    assert_eq!(r.bubbles.len(), 1);
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}
