//! Intake across restarts and per-app paths: a callback journaled but not handed to the router
//! is processed after a restart (once), a retry after a restart is still a duplicate, and an app
//! with its own path answers only there.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::Harness;
use gateway_core::memory_store::MemoryStore;
use gateway_core::StateStore;
use serde_json::json;
use wecom_emulator::rest::FakeWeComApi;

#[tokio::test]
async fn journaled_callbacks_survive_a_restart_and_retries_stay_duplicates() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwJ", 1000002);
    let mut extra = app.config();
    extra["api_base_url"] = emu.base_url().into();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();

    // The router's store is busy: the callback is acknowledged (it is journaled) but cannot be
    // handed over in this run.
    let first = Harness::start(extra.clone(), store.clone(), dir.path()).await;
    first.sink.refuse.store(true, Ordering::SeqCst);
    app.set_callback_url(first.url("/wecom/callback"));
    let signed = app.sign_post(&app.text_xml("gina", "keep me", 4242));
    assert_eq!(app.post(&signed).await.body, "success");
    // Three attempts, then it stays journaled.
    first.sink.wait_refused(3).await;
    assert!(first.sink.all().is_empty());
    first.stop().await;

    // The next start hands it over once; WeCom's late retry of it is a duplicate.
    let second = Harness::start(extra, store, dir.path()).await;
    let got = second.sink.wait(1).await;
    assert_eq!(got[0].text(), "keep me");
    app.set_callback_url(second.url("/wecom/callback"));
    assert_eq!(app.post(&signed).await.body, "success");
    app.push_text("gina", "barrier").await;
    let got = second.sink.wait(2).await;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    assert_eq!(texts, ["keep me", "barrier"]);
    second.stop().await;
}

#[tokio::test]
async fn an_app_with_its_own_path_answers_only_there() {
    let emu = FakeWeComApi::start().await;
    let shared = emu.app("wwP", 1000002);
    let own = emu.app("wwP", 1000003);
    let mut a = shared.config();
    a["name"] = "shared".into();
    let mut b = own.config();
    b["name"] = "own".into();
    b["path"] = "/wecom/own".into();
    let extra = json!({"apps": [a, b], "api_base_url": emu.base_url()});
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(extra, Arc::new(MemoryStore::new()), dir.path()).await;

    own.set_callback_url(h.url("/wecom/callback"));
    assert_eq!(own.push_text("hal", "wrong door").await.0.status, 403);
    assert_eq!(own.verify_url("42").await.status, 403);
    own.set_callback_url(h.url("/wecom/own"));
    assert_eq!(own.verify_url("42").await.body, "42");
    assert_eq!(own.push_text("hal", "right door").await.0.body, "success");
    shared.set_callback_url(h.url("/wecom/callback"));
    assert_eq!(
        shared.push_text("ida", "shared door").await.0.body,
        "success"
    );
    let got = h.sink.wait(2).await;
    let routes: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            (
                m.text(),
                m.reply_context["app"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        routes.contains(&("right door".into(), "own".into())),
        "{routes:?}"
    );
    assert!(
        routes.contains(&("shared door".into(), "shared".into())),
        "{routes:?}"
    );
    assert_eq!(got.len(), 2);
    h.stop().await;
}
