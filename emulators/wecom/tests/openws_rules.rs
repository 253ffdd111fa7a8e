//! The openws emulator's strict rules, modelled on the official client (reference
//! `wecom-aibot-official.md` §2, §4, §5, §9, §10): each test drives a raw WebSocket client
//! over the in-memory dialer and fails if its rule is taken out of the emulator.

use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wecom_emulator::openws::{
    Chat, OpenWs, ERR_EMPTY_CONTENT, ERR_INVALID_MSGTYPE, ERR_INVALID_PARAMETER,
    ERR_INVALID_REQ_ID, ERR_REPLY_USED, ERR_STREAM_EXPIRED, ERR_WINDOW_EXPIRED,
};

/// A bare client: sends frames, reads the ack of each (skipping callbacks).
struct Client {
    ws: WebSocketStream<DuplexStream>,
    seq: u64,
}

impl Client {
    /// Connects and subscribes as the emulator's default bot.
    async fn connect(emu: &OpenWs) -> Self {
        let io = emu.in_memory().connect();
        let (ws, _) = tokio_tungstenite::client_async("ws://emulator/", io)
            .await
            .expect("websocket handshake");
        let mut c = Client { ws, seq: 0 };
        let ack = c
            .request(
                "aibot_subscribe",
                json!({ "bot_id": "bot-1", "secret": "secret-1" }),
            )
            .await;
        assert_eq!(ack["errcode"], 0, "{ack}");
        emu.wait_subscribed(1).await;
        c
    }

    /// Sends `cmd` with a fresh minted `req_id`; returns the ack.
    async fn request(&mut self, cmd: &str, body: Value) -> Value {
        self.seq += 1;
        // The SDK's format, `<prefix>_<ms>_<hex8>` (§1.3).
        let req_id = format!("{cmd}_1700000000000_{:08x}", self.seq);
        self.on(cmd, &req_id, body).await
    }

    /// Sends `cmd` on `req_id` (a callback's, for passive replies); returns the ack.
    async fn on(&mut self, cmd: &str, req_id: &str, body: Value) -> Value {
        let frame = json!({ "cmd": cmd, "headers": { "req_id": req_id }, "body": body });
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("an ack within 30 s")
                .expect("connection open")
                .expect("frame");
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v.get("cmd").is_none() && v["headers"]["req_id"] == req_id {
                return v;
            }
        }
    }

    /// One `aibot_respond_msg` stream frame on `req_id`.
    async fn stream(&mut self, req_id: &str, id: &str, content: &str, finish: bool) -> Value {
        let body = json!({ "msgtype": "stream",
                           "stream": { "id": id, "finish": finish, "content": content } });
        self.on("aibot_respond_msg", req_id, body).await
    }

    /// Uploads a small file; returns its media id.
    async fn upload(&mut self) -> String {
        let bytes = b"emulator rules".to_vec();
        let init = self
            .request(
                "aibot_upload_media_init",
                json!({ "type": "file", "filename": "a.txt", "total_size": bytes.len(),
                        "total_chunks": 1, "md5": hex::encode(Md5::digest(&bytes)) }),
            )
            .await;
        let id = init["body"]["upload_id"].as_str().unwrap().to_owned();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let chunk = self
            .request(
                "aibot_upload_media_chunk",
                json!({ "upload_id": id, "chunk_index": 0, "base64_data": b64 }),
            )
            .await;
        assert_eq!(chunk["errcode"], 0, "{chunk}");
        let done = self
            .request("aibot_upload_media_finish", json!({ "upload_id": id }))
            .await;
        done["body"]["media_id"].as_str().unwrap().to_owned()
    }
}

fn code(ack: &Value) -> i64 {
    ack["errcode"].as_i64().expect("errcode")
}

/// A valid card of each type (§9 required fields), with `task_id`.
fn card(kind: &str, task_id: &str) -> Value {
    let title = json!({ "title": "Title" });
    let mut c = match kind {
        "text_notice" | "news_notice" => {
            json!({ "main_title": title, "card_action": { "type": 1, "url": "https://a.example" } })
        }
        "button_interaction" => json!({ "main_title": title,
            "button_list": [{ "text": "OK", "key": "ok" }, { "text": "No", "key": "no" }] }),
        "vote_interaction" => json!({ "main_title": title,
            "checkbox": { "question_key": "q", "option_list": [{ "id": "a", "text": "A" }] },
            "submit_button": { "text": "Send", "key": "send" } }),
        _ => json!({ "main_title": title,
            "select_list": [{ "question_key": "q", "option_list": [{ "id": "a", "text": "A" }] }],
            "submit_button": { "text": "Send", "key": "send" } }),
    };
    c["card_type"] = json!(kind);
    c["task_id"] = json!(task_id);
    c
}

fn card_reply(card: Value) -> Value {
    json!({ "msgtype": "template_card", "template_card": card })
}

fn violations_mention(emu: &OpenWs, text: &str) -> bool {
    emu.violations().iter().any(|v| v.contains(text))
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_one_reply_however_many_frames_and_acks_say_ok() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let p = emu.push_text(Chat::dm("alice"), "hi");
    for content in ["<think></think>", "a", "ab", "abc"] {
        let ack = c.stream(&p.req_id, "stream_1", content, false).await;
        assert_eq!(
            (ack["errcode"].clone(), ack["errmsg"].clone()),
            (json!(0), json!("ok"))
        );
    }
    // An identical final (same content as the last intermediate) is fine (§0 #11).
    let ack = c.stream(&p.req_id, "stream_1", "abc", true).await;
    assert_eq!(
        (ack["errcode"].clone(), ack["errmsg"].clone()),
        (json!(0), json!("ok"))
    );
    let ping = c.on("ping", "ping_1_00000000", Value::Null).await;
    assert_eq!(
        (ping["errcode"].clone(), ping["errmsg"].clone()),
        (json!(0), json!("ok"))
    );
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    assert!(emu.frames().iter().all(|r| r.accepted()));
    assert_eq!(emu.reply(&p.req_id).bubbles.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_second_stream_id_on_one_req_id_is_refused() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let p = emu.push_text(Chat::dm("alice"), "hi");
    assert_eq!(code(&c.stream(&p.req_id, "stream_1", "one", true).await), 0);
    let ack = c.stream(&p.req_id, "stream_2", "two", false).await;
    assert_eq!(code(&ack), ERR_REPLY_USED);
    assert!(
        violations_mention(&emu, "second stream stream_2"),
        "{:?}",
        emu.violations()
    );
    // The refusal is in the frames log.
    let last = emu.frames().pop().unwrap();
    assert_eq!(last.answered, Some(ERR_REPLY_USED));
}

#[tokio::test(start_paused = true)]
async fn no_other_passive_reply_after_a_stream_or_a_reply() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let media_id = c.upload().await;
    let media = json!({ "msgtype": "file", "file": { "media_id": media_id } });

    // Media, then a card, after a finished stream.
    let p = emu.push_text(Chat::dm("alice"), "one");
    assert_eq!(code(&c.stream(&p.req_id, "s1", "answer", true).await), 0);
    let ack = c.on("aibot_respond_msg", &p.req_id, media.clone()).await;
    assert_eq!(code(&ack), ERR_REPLY_USED);
    let ack = c
        .on(
            "aibot_respond_msg",
            &p.req_id,
            card_reply(card("text_notice", "t1")),
        )
        .await;
    assert_eq!(code(&ack), ERR_REPLY_USED);

    // A media reply is itself the one reply: no second media, no stream after it.
    let q = emu.push_text(Chat::dm("alice"), "two");
    assert_eq!(
        code(&c.on("aibot_respond_msg", &q.req_id, media.clone()).await),
        0
    );
    assert_eq!(
        code(&c.on("aibot_respond_msg", &q.req_id, media).await),
        ERR_REPLY_USED
    );
    assert_eq!(
        code(&c.stream(&q.req_id, "s2", "late", true).await),
        ERR_REPLY_USED
    );

    // Same for a card.
    let r = emu.push_text(Chat::dm("alice"), "three");
    let ack = c
        .on(
            "aibot_respond_msg",
            &r.req_id,
            card_reply(card("text_notice", "t2")),
        )
        .await;
    assert_eq!(code(&ack), 0, "{ack}");
    let ack = c
        .on(
            "aibot_respond_msg",
            &r.req_id,
            card_reply(card("text_notice", "t3")),
        )
        .await;
    assert_eq!(code(&ack), ERR_REPLY_USED);
    assert_eq!(emu.violations().len(), 5, "{:?}", emu.violations());
}

#[tokio::test(start_paused = true)]
async fn the_card_part_of_stream_with_template_card_goes_once() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let p = emu.push_text(Chat::dm("alice"), "hi");
    let frame = |content: &str, finish: bool, card: Option<Value>| {
        let mut b = json!({ "msgtype": "stream_with_template_card",
                            "stream": { "id": "s1", "finish": finish, "content": content } });
        if let Some(card) = card {
            b["template_card"] = card;
        }
        b
    };
    let first = frame("a", false, Some(card("button_interaction", "swc1")));
    assert_eq!(code(&c.on("aibot_respond_msg", &p.req_id, first).await), 0);
    assert_eq!(
        code(
            &c.on("aibot_respond_msg", &p.req_id, frame("ab", false, None))
                .await
        ),
        0
    );
    let again = frame("abc", false, Some(card("button_interaction", "swc2")));
    assert_eq!(
        code(&c.on("aibot_respond_msg", &p.req_id, again).await),
        ERR_REPLY_USED
    );
    assert_eq!(
        code(
            &c.on("aibot_respond_msg", &p.req_id, frame("abc", true, None))
                .await
        ),
        0
    );
    assert_eq!(emu.violations().len(), 1, "{:?}", emu.violations());
    assert_eq!(emu.reply(&p.req_id).cards.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn passive_markdown_and_text_are_refused() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let p = emu.push_text(Chat::dm("alice"), "hi");
    let md = json!({ "msgtype": "markdown", "markdown": { "content": "hello" } });
    assert_eq!(
        code(&c.on("aibot_respond_msg", &p.req_id, md).await),
        ERR_INVALID_MSGTYPE
    );
    let text = json!({ "msgtype": "text", "text": { "content": "hello" } });
    assert_eq!(
        code(&c.on("aibot_respond_msg", &p.req_id, text).await),
        ERR_INVALID_MSGTYPE
    );
    assert!(
        violations_mention(&emu, "passive markdown"),
        "{:?}",
        emu.violations()
    );
    assert!(
        violations_mention(&emu, "passive text"),
        "{:?}",
        emu.violations()
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_req_id_takes_no_stream() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let ev = emu.enter_chat("alice");
    assert_eq!(
        code(&c.stream(&ev.req_id, "s1", "hi", false).await),
        ERR_INVALID_REQ_ID
    );
    let tap = emu.card_click(Chat::dm("alice"), "task1", "ok");
    assert_eq!(
        code(&c.stream(&tap.req_id, "s2", "hi", true).await),
        ERR_INVALID_REQ_ID
    );
    assert_eq!(emu.violations().len(), 2, "{:?}", emu.violations());
}

#[tokio::test(start_paused = true)]
async fn welcome_goes_on_enter_chat_only_within_five_seconds_once() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let hello = json!({ "msgtype": "text", "text": { "content": "Welcome!" } });
    let cmd = "aibot_respond_welcome_msg";

    let msg = emu.push_text(Chat::dm("alice"), "hi");
    assert_eq!(
        code(&c.on(cmd, &msg.req_id, hello.clone()).await),
        ERR_INVALID_REQ_ID
    );
    let tap = emu.card_click(Chat::dm("alice"), "task1", "ok");
    assert_eq!(
        code(&c.on(cmd, &tap.req_id, hello.clone()).await),
        ERR_INVALID_REQ_ID
    );

    let ev = emu.enter_chat("alice");
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(code(&c.on(cmd, &ev.req_id, hello.clone()).await), 0);
    assert_eq!(
        code(&c.on(cmd, &ev.req_id, hello.clone()).await),
        ERR_REPLY_USED
    );

    let late = emu.enter_chat("bob");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        code(&c.on(cmd, &late.req_id, hello).await),
        ERR_WINDOW_EXPIRED
    );

    // A card is a welcome too, and enter_chat also takes a passive card.
    let ev2 = emu.enter_chat("carol");
    let body = card_reply(card("text_notice", "welcome1"));
    assert_eq!(code(&c.on(cmd, &ev2.req_id, body).await), 0);
    let ev3 = emu.enter_chat("dave");
    let body = card_reply(card("text_notice", "welcome2"));
    assert_eq!(code(&c.on("aibot_respond_msg", &ev3.req_id, body).await), 0);
    assert_eq!(emu.violations().len(), 3, "{:?}", emu.violations());
}

#[tokio::test(start_paused = true)]
async fn card_updates_match_their_tap_within_five_seconds() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let cmd = "aibot_respond_update_msg";
    let update = |task_id: &str| {
        json!({ "response_type": "update_template_card", "userids": ["alice"],
                "template_card": card("button_interaction", task_id) })
    };

    let tap = emu.card_click(Chat::dm("alice"), "task_a", "ok");
    let mut wrong_type = update("task_a");
    wrong_type["response_type"] = json!("update_button");
    assert_eq!(
        code(&c.on(cmd, &tap.req_id, wrong_type).await),
        ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(&c.on(cmd, &tap.req_id, update("task_b")).await),
        ERR_INVALID_PARAMETER
    );
    let mut no_title = update("task_a");
    no_title["template_card"]["main_title"] = Value::Null;
    assert_eq!(
        code(&c.on(cmd, &tap.req_id, no_title).await),
        ERR_INVALID_PARAMETER
    );
    assert_eq!(code(&c.on(cmd, &tap.req_id, update("task_a")).await), 0);
    assert_eq!(
        code(&c.on(cmd, &tap.req_id, update("task_a")).await),
        ERR_REPLY_USED
    );

    let late = emu.card_click(Chat::dm("alice"), "task_c", "ok");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        code(&c.on(cmd, &late.req_id, update("task_c")).await),
        ERR_WINDOW_EXPIRED
    );

    let msg = emu.push_text(Chat::dm("alice"), "hi");
    assert_eq!(
        code(&c.on(cmd, &msg.req_id, update("task_a")).await),
        ERR_INVALID_REQ_ID
    );
    assert_eq!(emu.violations().len(), 5, "{:?}", emu.violations());
}

#[tokio::test(start_paused = true)]
async fn streams_expire_six_minutes_after_the_inbound_message() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let p = emu.push_text(Chat::dm("alice"), "hi");
    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    // The first frame comes late; the clock still started at the message.
    assert_eq!(code(&c.stream(&p.req_id, "s1", "a", false).await), 0);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(code(&c.stream(&p.req_id, "s1", "ab", false).await), 0);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        code(&c.stream(&p.req_id, "s1", "abc", true).await),
        ERR_STREAM_EXPIRED
    );
    // The server's answer, not a client mistake.
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());

    // stream_window changes it.
    emu.stream_window(Duration::MAX);
    assert_eq!(code(&c.stream(&p.req_id, "s1", "abc", true).await), 0);
}

#[tokio::test(start_paused = true)]
async fn proactive_sends_reach_groups_with_every_body_type() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let media_id = c.upload().await;
    emu.push_text(Chat::group("grp-1", "alice"), "hi");
    let bodies = [
        json!({ "msgtype": "markdown", "markdown": { "content": "**hi**" } }),
        json!({ "msgtype": "template_card", "template_card": card("text_notice", "send1") }),
        json!({ "msgtype": "file", "file": { "media_id": media_id } }),
        json!({ "msgtype": "image", "image": { "media_id": media_id } }),
        json!({ "msgtype": "voice", "voice": { "media_id": media_id } }),
        json!({ "msgtype": "video", "video": { "media_id": media_id, "title": "t",
                                               "description": "d" } }),
    ];
    for chat in ["grp-1", "alice"] {
        for b in &bodies {
            let mut b = b.clone();
            b["chatid"] = json!(chat);
            if b["msgtype"] == "template_card" {
                b["template_card"]["task_id"] = json!(format!("send_{chat}"));
            }
            let ack = c.request("aibot_send_msg", b).await;
            assert_eq!(
                (ack["errcode"].clone(), ack["errmsg"].clone()),
                (json!(0), json!("ok"))
            );
        }
    }
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());

    // The legacy model stays reachable.
    emu.allow_group_proactive(false);
    let ack = c
        .request(
            "aibot_send_msg",
            json!({ "chatid": "grp-1", "msgtype": "markdown",
                                                  "markdown": { "content": "x" } }),
        )
        .await;
    assert_eq!(code(&ack), 600039);
}

#[tokio::test(start_paused = true)]
async fn proactive_bodies_are_validated() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let md = |content: &str| {
        json!({ "chatid": "alice", "msgtype": "markdown",
                                     "markdown": { "content": content } })
    };
    let cases = [
        (
            json!({ "msgtype": "markdown", "markdown": { "content": "x" } }),
            93006,
        ),
        (md(""), ERR_EMPTY_CONTENT),
        (md(&"x".repeat(4097)), 45002),
        (
            json!({ "chatid": "alice", "msgtype": "file", "file": { "media_id": "nope" } }),
            40007,
        ),
        (
            json!({ "chatid": "alice", "msgtype": "template_card",
                 "template_card": { "card_type": "text_notice", "task_id": "x" } }),
            ERR_INVALID_PARAMETER,
        ),
        (
            json!({ "chatid": "alice", "msgtype": "news", "news": {} }),
            ERR_INVALID_MSGTYPE,
        ),
    ];
    let n = cases.len();
    for (body, want) in cases {
        let ack = c.request("aibot_send_msg", body.clone()).await;
        assert_eq!(code(&ack), want, "{body}");
    }
    assert_eq!(
        code(&c.request("aibot_send_msg", md(&"x".repeat(4096))).await),
        0
    );
    assert_eq!(emu.violations().len(), n, "{:?}", emu.violations());
}

#[tokio::test(start_paused = true)]
async fn cards_are_validated_and_task_ids_unique_per_bot() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let send = |card: Value| {
        json!({ "chatid": "alice", "msgtype": "template_card",
                                     "template_card": card })
    };
    let required = [
        ("text_notice", vec!["card_action"]),
        ("news_notice", vec!["main_title", "card_action"]),
        ("button_interaction", vec!["main_title", "button_list"]),
        (
            "vote_interaction",
            vec!["main_title", "checkbox", "submit_button"],
        ),
        (
            "multiple_interaction",
            vec!["main_title", "select_list", "submit_button"],
        ),
    ];
    let mut refused = 0;
    for (i, (kind, fields)) in required.iter().enumerate() {
        for field in fields {
            let mut bad = card(kind, &format!("bad_{i}_{field}"));
            bad.as_object_mut().unwrap().remove(*field);
            let ack = c.request("aibot_send_msg", send(bad)).await;
            assert_eq!(code(&ack), ERR_INVALID_PARAMETER, "{kind} without {field}");
            refused += 1;
        }
        let ack = c
            .request("aibot_send_msg", send(card(kind, &format!("ok_{i}"))))
            .await;
        assert_eq!(code(&ack), 0, "{kind}: {ack}");
    }
    // text_notice: sub_title_text stands in for main_title.title.
    let mut sub = card("text_notice", "sub_1");
    sub.as_object_mut().unwrap().remove("main_title");
    sub["sub_title_text"] = json!("Subtitle");
    assert_eq!(code(&c.request("aibot_send_msg", send(sub)).await), 0);
    let mut neither = card("text_notice", "sub_2");
    neither.as_object_mut().unwrap().remove("main_title");
    let bad_cards = [
        neither,
        card("poll", "x_1"),
        card("text_notice", ""),
        card("text_notice", &"t".repeat(129)),
        card("text_notice", "has space"),
        // Reused: the task id of a card already sent, here passively and proactively.
        card("text_notice", "ok_0"),
    ];
    for bad in bad_cards {
        let ack = c.request("aibot_send_msg", send(bad.clone())).await;
        assert_eq!(code(&ack), ERR_INVALID_PARAMETER, "{bad}");
        refused += 1;
    }
    let p = emu.push_text(Chat::dm("alice"), "hi");
    let ack = c
        .on(
            "aibot_respond_msg",
            &p.req_id,
            card_reply(card("text_notice", "ok_1")),
        )
        .await;
    assert_eq!(code(&ack), ERR_INVALID_PARAMETER);
    refused += 1;
    assert_eq!(
        code(
            &c.request(
                "aibot_send_msg",
                send(card("text_notice", &"t".repeat(128)))
            )
            .await
        ),
        0
    );
    assert_eq!(emu.violations().len(), refused, "{:?}", emu.violations());
}

#[tokio::test(start_paused = true)]
async fn finals_without_visible_text_are_acked_and_flagged() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let invisible = [
        "",
        "  \n\t",
        "\u{200B}",
        "\u{3000}\u{FEFF}",
        "<think></think>",
        " <think></think>\u{200B}",
    ];
    for (i, content) in invisible.iter().enumerate() {
        let p = emu.push_text(Chat::dm("alice"), "hi");
        assert_eq!(
            code(&c.stream(&p.req_id, "s", "<think></think>", false).await),
            0
        );
        let ack = c.stream(&p.req_id, "s", content, true).await;
        assert_eq!(code(&ack), 0, "WeCom acks it");
        assert_eq!(emu.violations().len(), i + 1, "{content:?} is invisible");
    }
    let p = emu.push_text(Chat::dm("alice"), "hi");
    assert_eq!(
        code(&c.stream(&p.req_id, "s", "✅ 已收到\u{200B}", true).await),
        0
    );
    // Invisible intermediates are fine: only the closing frame must show something.
    let q = emu.push_text(Chat::dm("alice"), "hi");
    assert_eq!(code(&c.stream(&q.req_id, "s", "\u{200B}", false).await), 0);
    assert_eq!(
        emu.violations().len(),
        invisible.len(),
        "{:?}",
        emu.violations()
    );
    assert!(violations_mention(&emu, "without visible text"));
}

/// A connection the server ended (a take-over) reads nothing more: a final frame still in
/// flight on it is neither processed nor answered, so it never counts as shown while its
/// sender saw no answer (what let the fault suite see one answer twice).
#[tokio::test(start_paused = true)]
async fn frames_on_a_kicked_connection_are_not_processed() {
    let emu = OpenWs::builder().start().await;
    let mut c = Client::connect(&emu).await;
    let p = emu.push_text(Chat::dm("alice"), "hi");
    assert_eq!(code(&c.stream(&p.req_id, "stream_1", "a", false).await), 0);
    assert!(emu.kick());
    let frame = json!({ "cmd": "aibot_respond_msg", "headers": { "req_id": p.req_id },
                        "body": { "msgtype": "stream",
                                  "stream": { "id": "stream_1", "finish": true, "content": "ab" } } });
    // The socket may already be closing: the write may fail, and that is fine.
    let _ = c.ws.send(Message::text(frame.to_string())).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let finals: Vec<_> = emu
        .frames()
        .into_iter()
        .filter(|r| r.body()["stream"]["finish"] == true)
        .collect();
    // Logged (if it got there before the socket closed), never processed or answered.
    assert!(finals.iter().all(|r| r.answered.is_none()), "{finals:?}");
}
