//! Acceptance 4 (and the time-dependent parts of 3): under paused tokio time with an in-memory
//! store — a socket dropped mid-stream, backoff, missed pings, a take-over, 846607 waits, a final
//! frame without ACK, and the per-chat send budget. Plus duplicate suppression (real time).

use std::time::Duration;

use gateway_core::StateStore;
use serde_json::json;
use tokio::time::Instant;
use wecom_emulator::openws::{Chat, Match, Msg, OpenWs};

use super::{instance, poll_http, start, yaml, PausedGateway};

async fn paused_gateway(
    emu: &OpenWs,
    dir: &std::path::Path,
    agent: &str,
    extra: &str,
) -> PausedGateway {
    // The default backoff (2, 5, 10, 30, 60 s) is what these tests measure.
    let extra = format!("      reconnect_backoff_secs: [2, 5, 10, 30, 60]\n{extra}");
    let inst = instance("wecom", &emu.url(), "bot-1", "secret-1", &extra);
    let gw = PausedGateway::start(dir, &yaml("", agent, &inst), emu).await;
    emu.wait_subscribed(1).await;
    gw
}

#[tokio::test(start_paused = true)]
async fn a_socket_dropped_mid_stream_reconnects_with_backoff_and_the_reply_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "  delay_ms: 5000\n", "").await;
    let p = emu.push_text(Chat::dm("alice"), "a question answered across a reconnect");
    emu.wait_reply(&p.req_id, |r| r.stream_frames().len() >= 2)
        .await;
    let dropped_at = Instant::now();
    assert!(emu.drop_connection());
    let subs = emu.wait_subscribed(2).await;
    let waited = Instant::now() - dropped_at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(5),
        "first backoff is 2 s, took {waited:?}"
    );
    assert_eq!(subs[1].secret, subs[0].secret, "re-subscribed");
    // The old req_id is stale on the new connection: the answer comes proactively, whole.
    let sent = emu.wait_sent("alice", 1).await;
    assert_eq!(
        sent[0].body()["markdown"]["content"],
        "echo: a question answered across a reconnect"
    );
    let h = gw.health("wecom").await;
    assert_eq!(h["state"], "connected");
    assert_eq!(h["reconnects"], 1);
    assert_eq!(h["undelivered"], 0);
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_group_reply_refused_everywhere_is_recorded_then_delivered_by_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    // The stream is refused, and so is every proactive send for a while.
    emu.fail_next(Match::stream_final(), 846604);
    emu.fail(Match::cmd("aibot_send_msg"), 40058, 2);
    let p = emu.push_text(Chat::group("team", "alice"), "group question");
    emu.wait_reply(&p.req_id, |r| r.finals() == 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let outbox = loop {
        let o = gw.store.outbox_pending(Some("wecom")).await.unwrap();
        if !o.is_empty() || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outbox.len(), 1, "recorded, not lost");
    assert_eq!(outbox[0].text, "echo: group question");
    assert_eq!(outbox[0].target.to_string(), "group:team");
    let h = gw.health("wecom").await;
    assert_eq!(h["undelivered"], 1);
    assert!(
        h["last_error"].as_str().unwrap().contains("undelivered"),
        "{h}"
    );
    // The outbox retry reaches the group proactively, once.
    let delivered = emu
        .wait_for("the retried answer", |f| {
            f.iter().any(|r| {
                r.cmd() == "aibot_send_msg"
                    && r.accepted()
                    && r.body()["markdown"]["content"] == "echo: group question"
            })
        })
        .await;
    let ok = delivered
        .iter()
        .filter(|r| r.cmd() == "aibot_send_msg" && r.accepted())
        .count();
    assert_eq!(ok, 1);
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_while_the_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    // After the drop, the next three subscribes are refused: after the network backoff (2 s),
    // refusals follow the SDK's schedule (1, 2, 4 s), whatever the code (§6.4).
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    emu.fail(Match::cmd("aibot_subscribe"), 500, 3);
    let t0 = Instant::now();
    assert!(emu.drop_connection());
    emu.wait_subscribed(2).await;
    let times: Vec<Duration> = emu
        .frames()
        .iter()
        .filter(|r| r.cmd() == "aibot_subscribe")
        .skip(1)
        .map(|r| r.at - t0)
        .collect();
    assert_eq!(times.len(), 4, "four attempts after the drop: {times:?}");
    // 2, then 2+1, 2+1+2, 2+1+2+4 seconds after the drop (plus dialling time).
    for (at, expected) in times.iter().zip([2u64, 3, 5, 9]) {
        let s = at.as_secs();
        assert!(
            s >= expected && s < expected + 2,
            "attempt at {at:?}, expected about {expected} s"
        );
    }
    assert_eq!(gw.health("wecom").await["reconnects"], 4);
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_graceful_close_reconnects_after_the_backoff_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    let t0 = Instant::now();
    assert!(emu.close_connection());
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(emu.connections(), 1, "no redial before the backoff");
    emu.wait_subscribed(2).await;
    assert!(Instant::now() - t0 >= Duration::from_secs(2));
    assert_eq!(emu.connections(), 2, "one redial, no spin");
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_longer_than_the_stream_window_finishes_its_stream_and_continues_as_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(3600))
        .start()
        .await;
    // A stream dies 6 minutes after the message (846608).
    emu.stream_window(Duration::from_secs(360));
    // Pieces 150 s apart: the answer takes more than 7 minutes.
    let gw = paused_gateway(
        &emu,
        dir.path(),
        "  delay_ms: 150000\n  timeout_secs: 3600\n",
        "",
    )
    .await;
    let question = "a question that needs a long think before it is answered";
    let asked = Instant::now();
    let p = emu.push_text(Chat::dm("alice"), question);
    let frames = emu
        .wait_for("the end of the answer as markdown", |f| {
            f.iter().any(|r| {
                r.cmd() == "aibot_send_msg"
                    && r.body()["markdown"]["content"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("answered"))
            })
        })
        .await;
    let r = emu.reply(&p.req_id);
    assert_eq!(r.bubbles.len(), 1, "one stream id");
    assert_eq!(r.finals(), 1);
    let head = r.bubbles[0].final_content.clone().unwrap();
    assert!(head.starts_with("echo:"), "{head}");
    // Every stream frame went out inside the window.
    for f in r.frames.iter() {
        assert!(
            f.at - asked < Duration::from_secs(360),
            "a frame at {:?}",
            f.at - asked
        );
    }
    // The stream's part and the markdown that follows make the whole answer, once.
    let md: Vec<String> = frames
        .iter()
        .filter(|r| r.cmd() == "aibot_send_msg")
        .map(|r| r.body()["markdown"]["content"].as_str().unwrap().to_owned())
        .collect();
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let mut got = words(&head);
    for m in &md {
        got.extend(words(m));
    }
    assert_eq!(got, words(&format!("echo: {question}")));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unanswered_pings_make_the_adapter_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    let t0 = Instant::now();
    emu.answer_pings(false);
    emu.wait_subscribed(2).await;
    let elapsed = Instant::now() - t0;
    let pings = emu
        .frames()
        .iter()
        .filter(|r| r.cmd() == "ping" && r.conn == 1)
        .count();
    assert_eq!(
        pings, 2,
        "two unanswered pings, then the socket counts as dead"
    );
    assert!(
        elapsed >= Duration::from_secs(90) && elapsed < Duration::from_secs(100),
        "{elapsed:?}"
    );
    emu.answer_pings(true);
    let p = emu.push_text(Chat::dm("alice"), "still there?");
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: still there?"
    );
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_take_over_stops_reconnecting_and_shows_in_health() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    assert!(emu.kick());
    // An hour later: still one connection, one subscribe.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(emu.connections(), 1);
    assert_eq!(emu.subscribes().len(), 1);
    let h = gw.health("wecom").await;
    assert_eq!(h["state"], "taken_over");
    assert!(
        h["explanation"]
            .as_str()
            .unwrap()
            .contains("another connection"),
        "{h}"
    );
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rate_limited_finals_wait_and_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    emu.fail_next(Match::stream_final(), 846607);
    let t0 = Instant::now();
    let p = emu.push_text(Chat::dm("alice"), "busy chat");
    let r = emu
        .wait_reply(&p.req_id, |r| r.bubbles.iter().any(|b| b.finals == 2))
        .await;
    assert!(
        Instant::now() - t0 >= Duration::from_secs(60),
        "waited for the window"
    );
    assert_eq!(r.text(), "echo: busy chat");
    assert!(emu.sent_to("alice").is_empty());
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_final_frame_without_ack_is_sent_again_and_the_answer_counts_once_acked() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    emu.withhold_ack(Match::stream_final(), 1);
    let p = emu.push_text(Chat::dm("alice"), "no ack please");
    let r = emu.wait_reply(&p.req_id, |r| r.finals() == 2).await;
    // The same final again (same stream id, same content): idempotent, not a second reply.
    assert_eq!(r.bubbles.len(), 1);
    assert_eq!(r.text(), "echo: no ack please");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(emu.reply(&p.req_id).finals(), 2);
    assert!(emu.sent_to("alice").is_empty());
    assert_eq!(gw.health("wecom").await["undelivered"], 0);
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_final_frame_never_acked_is_recorded_unconfirmed_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let gw = paused_gateway(&emu, dir.path(), "", "").await;
    emu.withhold_ack(Match::stream_final(), 3);
    let p = emu.push_text(Chat::dm("alice"), "never acked");
    emu.wait_reply(&p.req_id, |r| r.finals() == 3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let outbox = loop {
        let o = gw.store.outbox_pending(Some("wecom")).await.unwrap();
        let settled = o
            .iter()
            .any(|e| e.state != gateway_core::store::DeliveryState::Sending);
        if settled || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outbox.len(), 1, "kept, not counted as delivered");
    assert_eq!(
        outbox[0].state,
        gateway_core::store::DeliveryState::Unconfirmed
    );
    assert_eq!(outbox[0].parts_done, 0);
    let h = gw.health("wecom").await;
    assert_eq!(h["undelivered"], 1, "{h}");
    gw.stop().await;
}

/// Accepts everything and keeps what it got; the adapter-level tests below need no router.
#[derive(Debug, Default)]
struct Recorder {
    got: std::sync::Mutex<Vec<gateway_core::InboundMessage>>,
}

#[async_trait::async_trait]
impl gateway_core::InboundSink for Recorder {
    async fn submit(
        &self,
        m: gateway_core::InboundMessage,
    ) -> Result<gateway_core::Admission, gateway_core::AdapterError> {
        self.got.lock().unwrap().push(m);
        Ok(gateway_core::Admission::Accepted)
    }
}

impl Recorder {
    /// The first message the adapter handed on (waits for it).
    async fn first(&self) -> gateway_core::InboundMessage {
        loop {
            if let Some(m) = self.got.lock().unwrap().first().cloned() {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The adapter on its own, connected to `emu` in memory (exact under paused time).
async fn bare_adapter(
    emu: &OpenWs,
    dir: &std::path::Path,
) -> (
    std::sync::Arc<dyn gateway_core::PlatformAdapter>,
    std::sync::Arc<Recorder>,
) {
    use gateway_core::AdapterFactory;
    let connector = std::sync::Arc::new(super::MemConnector(emu.in_memory()));
    let factory = wecom::WeComFactory::with_connector(connector);
    let spec = gateway_core::adapter::InstanceSpec {
        name: "wecom".into(),
        kind: "wecom".into(),
        home_channel: None,
        data_dir: dir.to_path_buf(),
    };
    let extra = json!({"bot_id":"bot-1","secret":"secret-1","websocket_url":emu.url(),
                       "text_batch_delay_ms":0,"stream_interval_ms":20});
    let adapter = factory.build(&spec, extra).unwrap();
    let recorder = std::sync::Arc::new(Recorder::default());
    let ctx = gateway_core::AdapterContext {
        instance: "wecom".into(),
        data_dir: dir.join("wecom"),
        inbound: recorder.clone(),
        store: std::sync::Arc::new(gateway_core::memory_store::MemoryStore::new()),
        health: gateway_core::health::HealthReporter::new("wecom", "wecom"),
        shutdown: tokio_util::sync::CancellationToken::new(),
    };
    adapter.connect(ctx).await.unwrap();
    (adapter, recorder)
}

/// An emulator, the bare adapter on it, and one DM pushed and handed on by the adapter.
async fn bare_with_message(
    dir: &std::path::Path,
    text: &str,
) -> (
    OpenWs,
    std::sync::Arc<dyn gateway_core::PlatformAdapter>,
    wecom_emulator::openws::Pushed,
    gateway_core::InboundMessage,
) {
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    let (adapter, recorder) = bare_adapter(&emu, dir).await;
    let p = emu.push_text(Chat::dm("alice"), text);
    let msg = recorder.first().await;
    (emu, adapter, p, msg)
}

#[tokio::test(start_paused = true)]
async fn a_reply_dropped_without_finish_still_closes_its_bubble() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, adapter, p, msg) = bare_with_message(dir.path(), "hello").await;
    let mut sink = adapter.reply(&msg).await.unwrap();
    sink.start().await.unwrap();
    sink.update("a partial answer").await.unwrap();
    emu.wait_reply(&p.req_id, |r| r.stream_frames().len() >= 2)
        .await;
    drop(sink);
    let r = emu.wait_reply(&p.req_id, |r| r.finals() == 1).await;
    assert_eq!(r.text(), "a partial answer");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    adapter.disconnect().await;
}

#[tokio::test(start_paused = true)]
async fn proactive_sends_stay_within_thirty_per_minute_per_chat() {
    use gateway_core::{OutboundMessage, Target};
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(Duration::from_secs(900))
        .start()
        .await;
    emu.rate_limit(30);
    let (adapter, _) = bare_adapter(&emu, dir.path()).await;
    let target = Target::User("alice".into());
    let sends = (0..30).map(|i| {
        let (adapter, target) = (adapter.clone(), target.clone());
        async move {
            adapter
                .send(&target, &OutboundMessage::text(format!("n{i}")))
                .await
        }
    });
    let results = futures::future::join_all(sends).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let sent = emu.sent_to("alice");
    assert_eq!(
        sent.len(),
        30,
        "every message sent once, none refused with 846607"
    );
    let first = sent[0].at;
    let late = sent
        .iter()
        .filter(|r| r.at - first >= Duration::from_secs(60))
        .count();
    assert_eq!(
        late, 6,
        "24 at once; the 6 of the control reserve only after the window"
    );
    adapter.disconnect().await;
}

#[tokio::test]
async fn a_duplicate_msgid_makes_one_agent_turn() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let a = emu.push(Chat::dm("alice"), Msg::text("once").with_msgid("dup-1"));
    let b = emu.push(Chat::dm("alice"), Msg::text("once").with_msgid("dup-1"));
    let c = emu.push_text(Chat::dm("alice"), "after");
    assert_eq!(emu.expect_reply(&a.req_id).await.text(), "echo: once");
    emu.expect_reply(&c.req_id).await;
    assert!(
        emu.reply(&b.req_id).frames.is_empty(),
        "the duplicate got no turn"
    );
    let turns = "gateway_turns_total{instance=\"wecom\",outcome=\"completed\"} 2";
    let m = poll_http(gw.http, "/metrics", "two turns", |m| m.contains(turns)).await;
    // The duplicate never reached the router.
    assert!(
        m.contains("gateway_messages_in_total{instance=\"wecom\"} 2"),
        "{m}"
    );
    gw.stop().await;
}

/// WeCom ignores invisible content and would leave the spinner up: an answer with nothing
/// visible closes its stream with a short visible text (the emulator flags invisible finals).
#[tokio::test(start_paused = true)]
async fn an_empty_answer_still_closes_its_stream_with_visible_text() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, adapter, p, msg) = bare_with_message(dir.path(), "say nothing").await;
    let mut sink = adapter.reply(&msg).await.unwrap();
    sink.start().await.unwrap();
    sink.finish(" \u{200B}\n", gateway_core::TurnOutcome::Completed)
        .await
        .unwrap();
    let r = emu.wait_reply(&p.req_id, |r| r.finals() == 1).await;
    assert_eq!(r.bubbles[0].final_content.as_deref(), Some("✅ Done."));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    adapter.disconnect().await;
}
