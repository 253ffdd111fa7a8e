//! End-to-end tests of the `wecom` adapter (AI Bot long connection) against the openws emulator,
//! through the real router, the echo agent and the SQLite store (issue 4 acceptance).

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::TestGateway;
use wecom_emulator::openws::{Chat, Match, Msg, OpenWs};

fn registry() -> router::Registry {
    router::Registry::new().register(Arc::new(wecom::WeComFactory))
}

/// One `wecom` instance on `emu`'s default bot, with test-friendly timings plus `extra` lines
/// (each indented by six spaces).
fn instance(name: &str, emu: &OpenWs, bot: &str, secret: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    type: wecom\n    extra:\n      bot_id: {bot}\n      secret: {secret}\n      \
         websocket_url: \"{}\"\n      allow_private_media_hosts: true\n      text_batch_delay_ms: 0\n      \
         stream_interval_ms: 20\n{extra}",
        emu.url()
    )
}

fn yaml(agent: &str, platforms: &str) -> String {
    format!("agent:\n  backend: echo\n{agent}platforms:\n{platforms}")
}

async fn start(emu: &OpenWs, dir: &std::path::Path, agent: &str, extra: &str) -> TestGateway {
    let y = yaml(agent, &instance("wecom", emu, "bot-1", "secret-1", extra));
    let gw = TestGateway::start_with(dir, &y, &registry()).await;
    emu.wait_subscribed(1).await;
    gw
}

fn health_of(body: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap();
    v["instances"].as_array().unwrap().iter().find(|i| i["instance"] == name).cloned().unwrap()
}

#[tokio::test]
async fn a_dm_is_answered_with_a_seeded_stream_on_its_req_id() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let p = emu.push_text(Chat::dm("alice"), "hello there");
    let reply = emu.expect_reply(&p.req_id).await;
    assert_eq!(reply.text(), "echo: hello there");
    let frames = reply.stream_frames();
    assert_eq!(frames[0].1, "<think></think>", "seeded first: {frames:?}");
    assert_eq!(reply.finals(), 1);
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}
