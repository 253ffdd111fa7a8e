//! The REST side against the emulator: token cache and refresh, retries and their limits,
//! 60020 reporting, byte-based splitting, media upload rules, cards, targets, the working
//! notice, the welcome text, and intake behaviour (dedup, full queue, broken apps).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use gateway_core::memory_store::MemoryStore;
use gateway_core::{
    AdapterError, OutboundMessage, PlatformAdapter, StateStore, Target, TurnOutcome,
};
use serde_json::{json, Value};
use wecom_emulator::rest::{Endpoint, FakeApp, FakeWeComApi};

async fn setup(extra_over: Value) -> (FakeWeComApi, FakeApp, Harness, tempfile::TempDir) {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwA", 1000002);
    let mut extra = app.config();
    extra["api_base_url"] = emu.base_url().into();
    extra["retry_backoff_ms"] = 50.into();
    for (k, v) in extra_over.as_object().unwrap() {
        extra[k] = v.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let h = Harness::start(extra, store, dir.path()).await;
    app.set_callback_url(h.url("/wecom/callback"));
    (emu, app, h, dir)
}

fn alice() -> Target {
    Target::User("wwA:alice".into())
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_message_delivered() {
    let (emu, _app, h, _d) = setup(json!({})).await;
    h.adapter
        .send(&alice(), &OutboundMessage::text("one"))
        .await
        .unwrap();
    let issued = emu.tokens_issued("wwA");
    emu.expire_tokens();
    h.adapter
        .send(&alice(), &OutboundMessage::text("two"))
        .await
        .unwrap();
    assert_eq!(emu.tokens_issued("wwA"), issued + 1, "exactly one refresh");
    let codes: Vec<i64> = emu
        .calls_to(Endpoint::Send)
        .iter()
        .map(|c| c.errcode)
        .collect();
    assert_eq!(codes, [0, 42001, 0]);
    let sent = emu.sent();
    assert_eq!(sent[1].content(), Some("two"));
    assert_ne!(sent[0].token, sent[1].token);

    // 40014 (token rejected) is a token error too; a second token error in a row fails.
    emu.fail_next_send(40014);
    h.adapter
        .send(&alice(), &OutboundMessage::text("three"))
        .await
        .unwrap();
    emu.fail_next_send(42001);
    emu.fail_next_send(42001);
    let err = h
        .adapter
        .send(&alice(), &OutboundMessage::text("four"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("42001"), "{err}");
    assert_eq!(emu.sent().len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn concurrent_senders_share_one_token_fetch() {
    let (emu, _app, h, _d) = setup(json!({})).await;
    // The warm-up fetch at connect may still be running; either way one token serves all.
    let sends = (0..8).map(|i| {
        let a = h.adapter.clone();
        async move {
            a.send(&alice(), &OutboundMessage::text(format!("m{i}")))
                .await
        }
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    assert_eq!(emu.tokens_issued("wwA"), 1);
    assert_eq!(emu.sent().len(), 8);
    h.stop().await;
}

#[tokio::test]
async fn rate_limits_are_retried_with_growing_backoff() {
    let (emu, _app, h, _d) = setup(json!({"retry_backoff_ms": 100})).await;
    emu.fail_next_send(45009);
    emu.fail_next_send(-1);
    h.adapter
        .send(&alice(), &OutboundMessage::text("later"))
        .await
        .unwrap();
    let calls = emu.calls_to(Endpoint::Send);
    let codes: Vec<i64> = calls.iter().map(|c| c.errcode).collect();
    assert_eq!(codes, [45009, -1, 0]);
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(100));
    assert!(
        calls[2].at - calls[1].at >= Duration::from_millis(200),
        "backoff doubles"
    );
    assert_eq!(emu.sent()[0].content(), Some("later"));

    // Retries are bounded: four rate limits in a row give up with the errcode.
    for _ in 0..4 {
        emu.fail_next_send(45033);
    }
    let err = h
        .adapter
        .send(&alice(), &OutboundMessage::text("x"))
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "rate limits stay retryable for the outbox: {err}"
    );
    assert!(
        err.to_string().contains("45033")
            || matches!(err, AdapterError::Platform { code: 45033, .. })
    );
    h.stop().await;
}

#[tokio::test]
async fn other_errcodes_fail_at_once_with_wecom_text() {
    let (emu, _app, h, _d) = setup(json!({})).await;
    h.adapter
        .send(&alice(), &OutboundMessage::text("warm"))
        .await
        .unwrap();
    emu.fail_next_send(60011);
    let before = emu.calls_to(Endpoint::Send).len();
    let err = h
        .adapter
        .send(&alice(), &OutboundMessage::text("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdapterError::Platform { code: 60011, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no privilege"), "{err}");
    assert_eq!(emu.calls_to(Endpoint::Send).len(), before + 1, "no retry");
    h.stop().await;
}

#[tokio::test]
async fn an_untrusted_ip_is_named_in_the_error_and_in_health() {
    let (emu, _app, h, _d) = setup(json!({})).await;
    emu.untrusted_ip(Some("203.0.113.7"));
    let err = h
        .adapter
        .send(&alice(), &OutboundMessage::text("x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AdapterError::Auth { .. }), "{err:?}");
    assert!(
        text.contains("60020") && text.contains("203.0.113.7") && text.contains("trusted IP"),
        "{text}"
    );
    let health = h.health.snapshot();
    let last = health.last_error.unwrap_or_default();
    assert!(
        last.contains("60020") && last.contains("203.0.113.7"),
        "{last}"
    );
    h.stop().await;
}

#[tokio::test]
async fn long_cjk_text_is_split_by_bytes_and_joins_back() {
    let (emu, _app, h, _d) = setup(json!({})).await;
    let text: String = "数据网关".repeat(834); // 10,008 bytes, no spaces or newlines
    assert!(text.len() >= 10_000);
    h.adapter
        .send(&alice(), &OutboundMessage::text(text.clone()))
        .await
        .unwrap();
    let sent = emu.sent();
    assert!(sent.len() >= 5, "{} messages", sent.len());
    let n = sent.len();
    let mut joined = String::new();
    for (i, m) in sent.iter().enumerate() {
        let c = m.content().unwrap();
        assert!(c.len() <= 2048, "message {i} has {} bytes", c.len());
        let marker = format!(" ({}/{n})", i + 1);
        joined.push_str(
            c.strip_suffix(&marker)
                .unwrap_or_else(|| panic!("marker in {c:?}")),
        );
    }
    assert_eq!(joined, text);
    h.stop().await;
}

#[tokio::test]
async fn media_is_uploaded_then_sent_within_wecom_rules() {
    let (emu, _app, h, d) = setup(json!({})).await;
    let png = d.path().join("chart.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n0123456789").unwrap();
    h.adapter.send_image(&alice(), &png).await.unwrap();
    let up = emu.uploads();
    assert_eq!(
        (up[0].kind.as_str(), up[0].filename.as_str()),
        ("image", "chart.png")
    );
    let sent = emu.sent();
    assert_eq!(
        (sent[0].msgtype(), sent[0].media_id()),
        ("image", Some(up[0].media_id.as_str()))
    );

    // Not AMR: sent as a file, with a note saying why.
    let mp3 = d.path().join("memo.mp3");
    std::fs::write(&mp3, b"ID3\x03\x00\x00\x00 mp3 bytes").unwrap();
    h.adapter.send_voice(&alice(), &mp3).await.unwrap();
    let sent = emu.sent();
    assert_eq!(emu.uploads()[1].kind, "file");
    assert_eq!(sent[1].msgtype(), "file");
    assert!(sent[2].content().unwrap().contains("AMR"));

    // AMR voice goes as voice; a GIF image goes as a file.
    let amr = d.path().join("v.amr");
    std::fs::write(&amr, b"#!AMR\n voice frames").unwrap();
    h.adapter.send_voice(&alice(), &amr).await.unwrap();
    assert_eq!(emu.sent()[3].msgtype(), "voice");
    let gif = d.path().join("a.gif");
    std::fs::write(&gif, b"GIF89a animation").unwrap();
    h.adapter.send_image(&alice(), &gif).await.unwrap();
    assert_eq!(emu.sent()[4].msgtype(), "file");

    // Too small or too large: nothing uploaded or sent, and the caller learns why (so
    // `gateway send --file` fails instead of reporting success).
    let tiny = d.path().join("t.txt");
    std::fs::write(&tiny, b"abc").unwrap();
    let big = d.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(21 * 1024 * 1024)
        .unwrap();
    let (uploads, sent) = (emu.uploads().len(), emu.sent().len());
    let e = h.adapter.send_file(&alice(), &tiny).await.unwrap_err();
    assert!(e.to_string().contains("t.txt"), "{e}");
    let e = h.adapter.send_file(&alice(), &big).await.unwrap_err();
    assert!(e.to_string().contains("20 MiB"), "{e}");
    assert_eq!((emu.uploads().len(), emu.sent().len()), (uploads, sent));
    h.stop().await;
}

#[tokio::test]
async fn cards_and_group_targets() {
    let (emu, _app, h, _d) = setup(json!({})).await;
    let card = r#"{"msgtype":"textcard","textcard":{"title":"Build done","description":"main","url":"https://ci.invalid/1"}}"#;
    h.adapter
        .send(&Target::Party("2".into()), &OutboundMessage::text(card))
        .await
        .unwrap();
    let news =
        r#"{"msgtype":"news","news":{"articles":[{"title":"A","url":"https://x.invalid/a"}]}}"#;
    h.adapter
        .send(&Target::Tag("7".into()), &OutboundMessage::text(news))
        .await
        .unwrap();
    h.adapter
        .send(&Target::All, &OutboundMessage::markdown("**all**"))
        .await
        .unwrap();
    let sent = emu.sent();
    assert_eq!(
        (sent[0].msgtype(), &sent[0].body["toparty"]),
        ("textcard", &json!("2"))
    );
    assert_eq!(sent[0].body["textcard"]["title"], "Build done");
    assert_eq!(
        (sent[1].msgtype(), &sent[1].body["totag"]),
        ("news", &json!("7"))
    );
    assert_eq!(
        (sent[2].touser(), sent[2].msgtype()),
        (Some("@all"), "text")
    );
    let bad =
        r#"{"msgtype":"textcard","textcard":{"title":"t","description":"d","url":"ftp://x"}}"#;
    assert!(h
        .adapter
        .send(&alice(), &OutboundMessage::text(bad))
        .await
        .is_err());
    assert!(h
        .adapter
        .send(&Target::Group("wr1".into()), &OutboundMessage::text("x"))
        .await
        .is_err());
    h.stop().await;
}

#[tokio::test]
async fn replies_send_the_final_text_and_a_notice_when_slow() {
    let (emu, app, h, _d) =
        setup(json!({"working_notice_secs": 1, "working_notice": "busy…"})).await;
    app.push_text("alice", "hello").await;
    let msg = h.sink.wait(1).await.remove(0);
    // Fast turn: no notice.
    let mut sink = h.adapter.reply(&msg).await.unwrap();
    sink.start().await.unwrap();
    sink.update("partial").await.unwrap();
    sink.finish("fast answer", TurnOutcome::Completed)
        .await
        .unwrap();
    // Slow turn: the notice first, then the answer.
    let mut sink = h.adapter.reply(&msg).await.unwrap();
    sink.start().await.unwrap();
    emu.wait_sent(2).await;
    sink.finish("slow answer", TurnOutcome::Completed)
        .await
        .unwrap();
    let texts: Vec<String> = emu
        .sent()
        .iter()
        .map(|m| m.content().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["fast answer", "busy…", "slow answer"]);
    assert!(emu
        .sent()
        .iter()
        .all(|m| m.touser() == Some("alice") && m.agent_id == 1000002));
    h.stop().await;
}

#[tokio::test]
async fn entering_the_app_gets_the_welcome_once() {
    let (emu, app, h, _d) = setup(json!({"welcome_text": "Hi! Ask me anything."})).await;
    for offset in [0, 5] {
        // A later CreateTime: a second visit, not a retry of the first.
        app.set_clock_offset(offset);
        let r = app
            .push_xml(&app.event_xml("bob", "enter_agent", "", ""))
            .await;
        assert_eq!(r.status, 200);
    }
    // bob's callbacks are processed in order, so once this one arrives both visits are done.
    app.set_clock_offset(0);
    app.push_text("bob", "barrier").await;
    h.sink.wait(3).await;
    let sent = emu.wait_sent(1).await;
    assert_eq!(sent.len(), 1, "welcome at most once a day");
    assert_eq!(
        (sent[0].touser(), sent[0].content()),
        (Some("bob"), Some("Hi! Ask me anything."))
    );
    h.stop().await;
}

#[tokio::test]
async fn retries_are_deduplicated_and_a_full_queue_is_answered() {
    let (_emu, app, h, _d) = setup(json!({})).await;
    let signed = app.sign_post(&app.text_xml("carol", "once", 777));
    assert_eq!(app.post(&signed).await.body, "success");
    assert_eq!(app.post(&signed).await.body, "success");
    // carol's callbacks are processed in order: once the barrier arrives, a second copy of
    // the first would have too.
    app.push_text("carol", "barrier").await;
    let got = h.sink.wait(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].text(), got[1].text()),
        ("once".into(), "barrier".into())
    );

    // A stuck router: one worker holds a job, the lanes fill, then 503.
    let gate = h.sink.hold.write().await;
    let mut statuses = Vec::new();
    for i in 0..(wecom_callback::intake::QUEUE_CAPACITY + 3) {
        let (r, _) = app.push_text("dave", &format!("m{i}")).await;
        statuses.push(r.status);
    }
    assert!(statuses
        .iter()
        .take(wecom_callback::intake::QUEUE_CAPACITY)
        .all(|s| *s == 200));
    assert_eq!(*statuses.last().unwrap(), 503, "{statuses:?}");
    drop(gate);
    h.sink
        .wait(2 + wecom_callback::intake::QUEUE_CAPACITY)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_broken_app_never_blocks_the_others() {
    let emu = FakeWeComApi::start().await;
    let good = emu.app("wwGood", 1000003);
    // Valid-looking config whose secret WeCom refuses.
    let broken = FakeApp::new(
        "wwBroken",
        "wrong-secret",
        1000004,
        "tokB",
        &wecom_emulator::rest::random_encoding_aes_key(),
    );
    let mut b = broken.config();
    b["name"] = "broken".into();
    let mut g = good.config();
    g["name"] = "good".into();
    let extra = json!({"apps": [b, g], "api_base_url": emu.base_url(), "retry_backoff_ms": 20});
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(extra, Arc::new(MemoryStore::new()), dir.path()).await;
    good.set_callback_url(h.url("/wecom/callback"));
    broken.set_callback_url(h.url("/wecom/callback"));
    // Both apps' callbacks are accepted on the shared path.
    assert_eq!(good.push_text("erin", "hi").await.0.status, 200);
    assert_eq!(broken.push_text("frank", "hi").await.0.status, 200);
    let got = h.sink.wait(2).await;
    assert!(got.iter().any(|m| m.sender.user_id == "wwGood:erin"));
    // Sending works for the good app; the broken one reports its credentials.
    h.adapter
        .send(
            &Target::User("wwGood:erin".into()),
            &OutboundMessage::text("ok"),
        )
        .await
        .unwrap();
    let err = h
        .adapter
        .send(
            &Target::User("wwBroken:frank".into()),
            &OutboundMessage::text("x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdapterError::Auth { .. }) && err.to_string().contains("broken"),
        "{err}"
    );
    assert_eq!(emu.sent().len(), 1);
    assert!(h
        .health
        .snapshot()
        .last_error
        .unwrap_or_default()
        .contains("broken"));
    h.stop().await;
}

#[tokio::test]
async fn proactive_sends_route_by_corp_and_the_remembered_app_after_a_restart() {
    let emu = FakeWeComApi::start().await;
    let hr = emu.app("wwShared", 1000011);
    let it = emu.app("wwShared", 1000012);
    let other = emu.app("wwOther", 1000022);
    let named = |app: &FakeApp, name: &str| {
        let mut v = app.config();
        v["name"] = name.into();
        v
    };
    let extra = json!({
        "apps": [named(&hr, "hr"), named(&it, "it"), named(&other, "other")],
        "api_base_url": emu.base_url(),
    });
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();

    // First run: bob writes to the `it` app of the shared corp.
    let first = Harness::start(extra.clone(), store.clone(), dir.path()).await;
    it.set_callback_url(first.url("/wecom/callback"));
    it.push_text("bob", "hello it").await;
    // bob's callbacks are processed in order: the second proves the first is fully handled.
    it.push_text("bob", "barrier").await;
    first.sink.wait(2).await;
    first.stop().await;

    // Second run over the same store: proactive sends still pick the right apps.
    let second = Harness::start(extra, store, dir.path()).await;
    for target in ["wwShared:bob", "wwOther:bob", "wwShared:carol"] {
        second
            .adapter
            .send(&Target::User(target.into()), &OutboundMessage::text(target))
            .await
            .unwrap();
    }
    let sent = emu.sent();
    let route: Vec<(&str, i64, Option<&str>)> = sent
        .iter()
        .map(|m| (m.corp_id.as_str(), m.agent_id, m.touser()))
        .collect();
    assert_eq!(
        route,
        [
            ("wwShared", 1000012, Some("bob")),   // remembered: bob uses `it`
            ("wwOther", 1000022, Some("bob")),    // another corp, another identity
            ("wwShared", 1000011, Some("carol")), // unknown user: the corp's first app
        ]
    );
    second.stop().await;
}
