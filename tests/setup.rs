//! `gateway setup`: the wizard driven by a scripted prompter for each platform and agent backend
//! (no TTY), the scan-to-create flow against a fake console (success, pending → timeout, success
//! without bot info), text-block editing that keeps the rest of the file, `--non-interactive`
//! through the real binary, and one run of the real binary in a pseudo-terminal.
//!
//! The wizard lives in the binary crate, so its module is compiled into this test as well.

#[allow(dead_code, unused_imports)]
#[path = "../src/cli/setup/mod.rs"]
mod setup;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{json, Value};
use setup::prompt::ScriptedPrompter;
use setup::qr::{PollOutcome, PollTiming, QrClient};
use setup::{SetupError, Wizard};
use wecom_emulator::rest::{Endpoint, FakeWeComApi};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// The adapters this binary registers (see `registry()` in src/main.rs).
fn registry() -> router::Registry {
    router::Registry::new()
        .register(Arc::new(wecom::WeComFactory))
        .register(Arc::new(wecom_callback::WeComCallbackFactory))
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Runs the wizard with `p` on `path`.
async fn run(
    p: &mut ScriptedPrompter,
    path: &Path,
    kind: Option<&str>,
    tweak: impl FnOnce(&mut Wizard<'_>),
) -> Result<setup::Outcome, SetupError> {
    let reg = registry();
    let mut w = Wizard {
        prompter: p,
        registry: &reg,
        env: &no_env,
        http: reqwest::Client::new(),
        qr_base: "http://127.0.0.1:9".into(),
        qr_timing: PollTiming::default(),
        verify: false,
        bot_check: Some(false),
        interactive: true,
        overrides: setup::Overrides::default(),
        data_dir: PathBuf::new(),
    };
    tweak(&mut w);
    w.run(path, kind, None).await
}

fn read_yaml(path: &Path) -> Value {
    setup::yaml_edit::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `gateway check`'s validation with this binary's adapters.
fn assert_passes_check(path: &Path) {
    if let Err(e) = router::load(Some(path), &registry(), &no_env) {
        panic!("{e}\n--- file:\n{}", std::fs::read_to_string(path).unwrap());
    }
}

/// The `wecom` entry validated by the wecom adapter's own config type (policy keys removed the
/// way the router removes them).
fn assert_wecom_extra_valid(extra: &Value) {
    let mut m = extra.as_object().unwrap().clone();
    gateway_core::policy::AccessConfig::from_extra(&mut m).unwrap();
    let mut cfg: wecom::config::WeComConfig =
        gateway_core::adapter::parse_extra(Value::Object(m)).unwrap();
    let errors = cfg.validate();
    assert!(errors.is_empty(), "{errors:?}");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------- wecom_callback

fn callback_answers() -> ScriptedPrompter {
    ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        // Typed wrong first: each invalid answer is refused as typed and asked again.
        .answer("corp_secret", "has a space")
        .answer("corp_secret", "app-secret-1")
        .answer("agent_id", "abc")
        .answer("agent_id", "1000002")
        .answer("generate_secrets", "yes")
        .answer("port", "8655")
        .answer("public_url", "https://bot.example.com")
        .answer("dm_policy", "allowlist")
        .answer("allow_from", "zhangsan, lisi")
        .answer("home_channel", "user:zhangsan")
}

#[tokio::test]
async fn callback_setup_checks_gettoken_generates_secrets_and_prints_what_to_paste() {
    let api = FakeWeComApi::start().await;
    api.register_app("ww1234567890abcd", "app-secret-1", 1000002);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = callback_answers();
    let base = api.base_url();
    let out = run(&mut p, &path, Some("wecom_callback"), |w| {
        w.verify = true;
        w.overrides.api_base_url = Some(base.clone());
    })
    .await
    .unwrap();
    assert!(out.created);
    assert_passes_check(&path);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert_eq!(api.calls_to(Endpoint::GetToken).len(), 1);

    let v = read_yaml(&path);
    let extra = &v["platforms"]["wecom_callback"]["extra"];
    assert_eq!(extra["corp_id"], "ww1234567890abcd");
    assert_eq!(extra["agent_id"], 1000002);
    assert_eq!(extra["port"], 8655);
    assert_eq!(extra["api_base_url"], base.as_str());
    // Callback senders are `corp_id:user_id`; bare ids were qualified.
    assert_eq!(
        extra["allow_from"],
        json!(["ww1234567890abcd:zhangsan", "ww1234567890abcd:lisi"])
    );
    assert_eq!(
        v["platforms"]["wecom_callback"]["home_channel"],
        "user:zhangsan"
    );
    let token = extra["token"].as_str().unwrap();
    let key = extra["encoding_aes_key"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    assert_eq!(key.len(), 43);
    wecom_common::WeComCrypto::new(token, key, "ww1234567890abcd").unwrap();

    let said = p.transcript();
    assert!(
        said.contains("URL             https://bot.example.com/wecom/callback"),
        "{said}"
    );
    assert!(said.contains(&format!("Token           {token}")), "{said}");
    assert!(said.contains(&format!("EncodingAESKey  {key}")), "{said}");
    let rejected: Vec<&str> = p.rejected.iter().map(|(id, _)| *id).collect();
    assert_eq!(rejected, ["corp_secret", "agent_id"]);
}

#[test]
fn generated_keys_are_valid_and_different_each_time() {
    let a = setup::wecom_callback::random_aes_key();
    let b = setup::wecom_callback::random_aes_key();
    assert_ne!(a, b);
    for k in [&a, &b] {
        assert_eq!(k.len(), 43);
        setup::wecom_callback::check_aes_key(k).unwrap();
    }
    assert!(setup::wecom_callback::check_token(&setup::wecom_callback::random_token()).is_ok());
}

#[tokio::test]
async fn a_42_character_key_is_refused_as_typed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let good = setup::wecom_callback::random_aes_key();
    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        .answer("corp_secret", "s")
        .answer("agent_id", "1000002")
        .answer("generate_secrets", "no")
        .answer("token", "tok3n")
        .answer("encoding_aes_key", &good[..42])
        .answer("encoding_aes_key", good.clone());
    run(&mut p, &path, Some("wecom_callback"), |_| {})
        .await
        .unwrap();
    assert_passes_check(&path);
    let reason = &p
        .rejected
        .iter()
        .find(|(id, _)| *id == "encoding_aes_key")
        .unwrap()
        .1;
    assert!(reason.contains("43"), "{reason}");
    assert!(
        !reason.contains(&good[..42]),
        "the key must not be echoed: {reason}"
    );
    // Entered (not generated) values are not printed back.
    assert!(!p.transcript().contains(&good));
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom_callback"]["extra"]["encoding_aes_key"],
        good.as_str()
    );
}

#[tokio::test]
async fn a_wrong_secret_stops_a_script_and_can_be_retyped_interactively() {
    let api = FakeWeComApi::start().await;
    api.register_app("ww1234567890abcd", "right", 1000002);
    let base = api.base_url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");

    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        .answer("corp_secret", "wrong")
        .answer("agent_id", "1000002");
    let e = run(&mut p, &path, Some("wecom_callback"), |w| {
        w.verify = true;
        w.interactive = false;
        w.overrides.api_base_url = Some(base.clone());
    })
    .await
    .unwrap_err();
    assert!(matches!(e, SetupError::Rejected(_)), "{e}");
    assert!(e.to_string().contains("errcode"), "{e}");
    assert!(!e.to_string().contains("wrong"), "no secret in errors: {e}");
    assert!(!path.exists(), "nothing may be written");

    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        .answer("corp_secret", "wrong")
        .answer("agent_id", "1000002")
        .answer("credentials_failed", "retry")
        .answer("corp_secret", "right");
    run(&mut p, &path, Some("wecom_callback"), |w| {
        w.verify = true;
        w.overrides.api_base_url = Some(base.clone());
    })
    .await
    .unwrap();
    assert_eq!(api.calls_to(Endpoint::GetToken).len(), 3);
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom_callback"]["extra"]["corp_secret"],
        "right"
    );
    assert!(p.transcript().contains("✓ WeCom accepted"));
}

// ---------------------------------------------------------------- wecom (AI Bot)

#[tokio::test]
async fn wecom_manual_entry_with_policies_and_home_channel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = ScriptedPrompter::new()
        .answer("wecom_method", "manual")
        .answer("bot_id", "aibWXYZ123")
        .answer("bot_secret", "bot-secret-9")
        .answer("dm_policy", "pairing")
        .answer("allow_from", "zhangsan")
        .answer("group_policy", "allowlist")
        .answer("group_allow_from", "wrkSFfCgAAxx")
        .answer("home_channel", "party:5")
        .answer("home_channel", "user:")
        .answer("home_channel", "group:wrkSFfCgAAxx");
    run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    let v = read_yaml(&path);
    let entry = &v["platforms"]["wecom"];
    assert_eq!(entry["home_channel"], "group:wrkSFfCgAAxx");
    assert_eq!(
        entry["extra"],
        json!({"bot_id": "aibWXYZ123", "secret": "bot-secret-9", "dm_policy": "pairing",
               "allow_from": ["zhangsan"], "group_policy": "allowlist",
               "group_allow_from": ["wrkSFfCgAAxx"]})
    );
    assert_wecom_extra_valid(&entry["extra"]);
    assert_eq!(v["agent"], json!({"backend": "echo"}));
    let rejected: Vec<&str> = p.rejected.iter().map(|(id, _)| *id).collect();
    assert_eq!(rejected, ["home_channel", "home_channel"]);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    // `-` removes the home channel on a later run; everything else is kept.
    let mut again = ScriptedPrompter::new().answer("home_channel", "-");
    run(&mut again, &path, Some("wecom"), |_| {}).await.unwrap();
    let v2 = read_yaml(&path);
    assert!(v2["platforms"]["wecom"].get("home_channel").is_none());
    assert_eq!(
        v2["platforms"]["wecom"]["extra"],
        v["platforms"]["wecom"]["extra"]
    );
}

/// A fake of the console's scan-to-create endpoints: `generate` answers `generate`, each poll
/// takes the next answer of `polls` (the last one repeats).
struct FakeConsole {
    addr: SocketAddr,
    polls_seen: Arc<Mutex<Vec<String>>>,
}

async fn fake_console(generate: Value, polls: Vec<Value>) -> FakeConsole {
    let queue = Arc::new(Mutex::new(VecDeque::from(polls)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ai/qc/generate",
            get(move || async move { axum::Json(generate) }),
        )
        .route(
            "/ai/qc/query_result",
            get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let (queue, s) = (queue.clone(), s.clone());
                    async move {
                        s.lock()
                            .unwrap()
                            .push(q.get("scode").cloned().unwrap_or_default());
                        let mut q = queue.lock().unwrap();
                        let v = if q.len() > 1 {
                            q.pop_front().unwrap()
                        } else {
                            q.front().cloned().unwrap()
                        };
                        axum::Json(v)
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeConsole {
        addr,
        polls_seen: seen,
    }
}

fn generated() -> Value {
    json!({"data": {"scode": "sc+ode/1", "auth_url": "https://work.weixin.qq.com/ai/qc/auth?code=abc"}})
}

fn pending() -> Value {
    json!({"data": {"status": "pending"}})
}

fn fast() -> PollTiming {
    PollTiming {
        interval: Duration::from_millis(10),
        deadline: Duration::from_secs(10),
        request_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn qr_flow_succeeds_after_pending_polls() {
    let fake = fake_console(
        generated(),
        vec![
            pending(),
            pending(),
            json!({"data": {"status": "SUCCESS", "bot_info": {"botid": "aib1", "secret": "s1"}}}),
        ],
    )
    .await;
    let client = QrClient::new(reqwest::Client::new(), &format!("http://{}", fake.addr));
    let session = client.generate().await.unwrap();
    assert_eq!(session.scode, "sc+ode/1");
    assert!(client
        .fallback_url(&session)
        .ends_with("/ai/qc/gen?source=hermes&scode=sc%2Bode%2F1"));
    let mut ticks = Vec::new();
    let outcome = client.poll(&session, fast(), &mut |n| ticks.push(n)).await;
    match outcome {
        PollOutcome::Created { bot_id, secret } => {
            assert_eq!(bot_id, "aib1");
            assert_eq!(secrecy::ExposeSecret::expose_secret(&secret), "s1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ticks, [1, 2, 3]);
    assert_eq!(*fake.polls_seen.lock().unwrap(), ["sc+ode/1"; 3]);
}

#[tokio::test]
async fn qr_flow_reads_bot_id_as_fallback_key() {
    let fake = fake_console(
        generated(),
        vec![
            json!({"data": {"status": "success", "bot_info": {"bot_id": "aib2", "secret": "s2"}}}),
        ],
    )
    .await;
    let client = QrClient::new(reqwest::Client::new(), &format!("http://{}", fake.addr));
    let session = client.generate().await.unwrap();
    let outcome = client.poll(&session, fast(), &mut |_| {}).await;
    assert!(
        matches!(outcome, PollOutcome::Created { ref bot_id, .. } if bot_id == "aib2"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn qr_flow_times_out_when_nobody_scans() {
    let fake = fake_console(generated(), vec![pending()]).await;
    let client = QrClient::new(reqwest::Client::new(), &format!("http://{}", fake.addr));
    let session = client.generate().await.unwrap();
    let timing = PollTiming {
        interval: Duration::from_millis(30),
        deadline: Duration::from_millis(200),
        request_timeout: Duration::from_secs(1),
    };
    let started = std::time::Instant::now();
    let mut polls = 0;
    let outcome = client.poll(&session, timing, &mut |n| polls = n).await;
    assert!(matches!(outcome, PollOutcome::TimedOut), "{outcome:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(polls >= 3, "polled {polls} times");
}

#[tokio::test]
async fn qr_flow_success_without_bot_info_is_not_a_bot() {
    let fake = fake_console(
        generated(),
        vec![json!({"data": {"status": "success", "bot_info": {"botid": "aib3"}}})],
    )
    .await;
    let client = QrClient::new(reqwest::Client::new(), &format!("http://{}", fake.addr));
    let session = client.generate().await.unwrap();
    let outcome = client.poll(&session, fast(), &mut |_| {}).await;
    assert!(matches!(outcome, PollOutcome::NoBotInfo), "{outcome:?}");

    let bad = fake_console(json!({"data": {"scode": "x"}}), vec![pending()]).await;
    let client = QrClient::new(reqwest::Client::new(), &format!("http://{}", bad.addr));
    assert!(matches!(
        client.generate().await,
        Err(setup::qr::QrError::BadResponse)
    ));
}

#[tokio::test]
async fn wizard_scan_fills_the_bot_credentials_and_draws_the_code() {
    let fake = fake_console(
        generated(),
        vec![pending(), json!({"data": {"status": "success", "bot_info": {"botid": "aibQR", "secret": "qr-secret"}}})],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = ScriptedPrompter::new().answer("wecom_method", "scan");
    let base = format!("http://{}", fake.addr);
    run(&mut p, &path, Some("wecom"), |w| {
        w.qr_base = base.clone();
        w.qr_timing = fast();
    })
    .await
    .unwrap();
    let extra = &read_yaml(&path)["platforms"]["wecom"]["extra"];
    assert_eq!(extra["bot_id"], "aibQR");
    assert_eq!(extra["secret"], "qr-secret");
    assert_wecom_extra_valid(extra);
    let said = p.transcript();
    assert!(
        said.contains('▀') || said.contains('▄') || said.contains('█'),
        "no QR code drawn:\n{said}"
    );
    assert!(
        said.contains("/ai/qc/gen?source=hermes&scode=sc%2Bode%2F1"),
        "{said}"
    );
    assert!(
        !p.asked.contains(&"bot_id"),
        "no manual entry after a successful scan"
    );
}

#[tokio::test]
async fn wizard_falls_back_to_manual_entry_when_the_scan_yields_no_bot() {
    let fake = fake_console(generated(), vec![json!({"data": {"status": "success"}})]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = ScriptedPrompter::new()
        .answer("wecom_method", "scan")
        .answer("bot_id", "aibManual")
        .answer("bot_secret", "manual-secret");
    let base = format!("http://{}", fake.addr);
    run(&mut p, &path, Some("wecom"), |w| {
        w.qr_base = base.clone();
        w.qr_timing = fast();
    })
    .await
    .unwrap();
    assert!(
        p.transcript().contains("not actually created"),
        "{}",
        p.transcript()
    );
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom"]["extra"]["bot_id"],
        "aibManual"
    );

    // Unreachable console: straight to manual entry.
    let mut p = ScriptedPrompter::new()
        .answer("wecom_method", "scan")
        .answer("bot_id", "aibOffline")
        .answer("bot_secret", "s");
    run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert!(p.transcript().contains("Scan-to-create is not available"));
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom"]["extra"]["bot_id"],
        "aibOffline"
    );
}

#[tokio::test]
async fn the_bot_is_not_connected_while_a_gateway_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A running gateway: an admin file whose address answers /health.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/health", get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    router::admin::AdminInfo::generate(addr.to_string())
        .write(&data)
        .unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, format!("gateway:\n  data_dir: {}\n", data.display())).unwrap();
    let mut p = ScriptedPrompter::new()
        .answer("wecom_method", "manual")
        .answer("bot_id", "aib1")
        .answer("bot_secret", "s");
    run(&mut p, &path, Some("wecom"), |w| {
        w.verify = true;
        w.bot_check = None;
    })
    .await
    .unwrap();
    assert!(
        p.transcript()
            .contains("a second connection would disconnect its bot"),
        "{}",
        p.transcript()
    );
    assert!(!p.asked.contains(&"bot_check"));
}

#[tokio::test]
async fn the_bot_is_connected_once_to_check_it_when_no_gateway_runs() {
    let ws = wecom_emulator::openws::OpenWs::builder()
        .bot("aibGood", "good-secret")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let url = ws.url();
    let mut p = ScriptedPrompter::new()
        .answer("wecom_method", "manual")
        .answer("bot_id", "aibGood")
        .answer("bot_secret", "good-secret");
    run(&mut p, &path, Some("wecom"), |w| {
        w.verify = true;
        w.bot_check = None;
        w.overrides.websocket_url = Some(url.clone());
    })
    .await
    .unwrap();
    assert!(p.asked.contains(&"bot_check"));
    assert!(
        p.transcript()
            .contains("✓ WeCom accepted the bot's credentials"),
        "{}",
        p.transcript()
    );
    assert_eq!(ws.subscribes().len(), 1);
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom"]["extra"]["websocket_url"],
        url.as_str()
    );

    // A wrong secret: a script stops and writes nothing new.
    let before = std::fs::read_to_string(&path).unwrap();
    let mut p = ScriptedPrompter::new()
        .answer("wecom_method", "manual")
        .answer("bot_secret", "bad-secret");
    let e = run(&mut p, &path, Some("wecom"), |w| {
        w.verify = true;
        w.bot_check = Some(true);
        w.interactive = false;
    })
    .await
    .unwrap_err();
    assert!(matches!(e, SetupError::Rejected(_)), "{e}");
    assert!(!e.to_string().contains("bad-secret"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

// ---------------------------------------------------------------- agent backends

fn wecom_basics() -> ScriptedPrompter {
    ScriptedPrompter::new()
        .answer("wecom_method", "manual")
        .answer("bot_id", "aib1")
        .answer("bot_secret", "s")
}

/// A fake agent service: OpenAI-compatible streaming at /v1/chat/completions and a plain-text
/// webhook at /turn.
async fn fake_agent() -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                let mut body = String::new();
                for piece in ["pong", " from openai"] {
                    body.push_str(&format!(
                        "data: {}\n\n",
                        json!({"choices":[{"delta":{"content":piece}}]})
                    ));
                }
                body.push_str("data: [DONE]\n\n");
                ([("content-type", "text/event-stream")], body).into_response()
            }),
        )
        .route("/turn", post(|| async { "pong from http" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn openai_backend_with_a_test_request() {
    let addr = fake_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "openai")
        .answer("base_url", format!("http://{addr}/v1"))
        .answer("model", "test-model")
        // The NAME of a variable, never the key: a pasted key is refused.
        .answer("api_key_env", "sk-abc123")
        .answer("api_key_env", "-")
        .answer("agent_test", "yes");
    let out = run(&mut p, &path, Some("wecom"), |w| w.verify = true)
        .await
        .unwrap();
    assert!(out.agent_changed);
    assert!(
        p.transcript()
            .contains("✓ The agent answered: pong from openai"),
        "{}",
        p.transcript()
    );
    assert!(p.rejected.iter().any(|(id, _)| *id == "api_key_env"));
    assert_eq!(
        read_yaml(&path)["agent"],
        json!({"backend": "openai", "base_url": format!("http://{addr}/v1"), "model": "test-model"})
    );
}

#[tokio::test]
async fn openai_key_variable_unset_here_becomes_a_todo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "openai")
        .answer("api_key_env", "GATEWAY_TEST_UNSET_KEY_VAR");
    let out = run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert!(
        out.todo
            .iter()
            .any(|t| t.contains("GATEWAY_TEST_UNSET_KEY_VAR")),
        "{:?}",
        out.todo
    );
    let agent = &read_yaml(&path)["agent"];
    assert_eq!(agent["base_url"], "https://api.openai.com/v1");
    assert_eq!(agent["model"], "gpt-4o-mini");
    assert_eq!(agent["api_key_env"], "GATEWAY_TEST_UNSET_KEY_VAR");
}

#[tokio::test]
async fn http_backend_with_a_test_request_and_a_failing_one() {
    let addr = fake_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "http")
        .answer("agent_url", format!("http://{addr}/turn"))
        .answer("agent_test", "yes");
    run(&mut p, &path, Some("wecom"), |w| w.verify = true)
        .await
        .unwrap();
    assert!(
        p.transcript()
            .contains("✓ The agent answered: pong from http"),
        "{}",
        p.transcript()
    );
    assert_eq!(
        read_yaml(&path)["agent"],
        json!({"backend": "http", "url": format!("http://{addr}/turn")})
    );

    // A service that is down: a script stops without writing; the file keeps the working setup.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    let mut p = wecom_basics()
        .answer("agent_change", "yes")
        .answer("agent_backend", "http")
        .answer("agent_url", format!("http://{closed}/turn"))
        .answer("agent_test", "yes");
    let e = run(&mut p, &path, Some("wecom"), |w| {
        w.verify = true;
        w.bot_check = Some(true);
        w.interactive = false;
    })
    .await
    .unwrap_err();
    assert!(matches!(e, SetupError::Rejected(_)), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[tokio::test]
async fn command_backend_accepts_words_or_a_json_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "command")
        .answer("agent_command", "")
        .answer("agent_command", "[\"python3\", \"/opt/my agent/agent.py\"]");
    run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert_eq!(
        read_yaml(&path)["agent"],
        json!({"backend": "command", "command": ["python3", "/opt/my agent/agent.py"]})
    );
    assert_eq!(
        setup::agent::parse_command("sh -c 'x'").unwrap(),
        ["sh", "-c", "'x'"]
    );
}

// ---------------------------------------------------------------- editing in place

const HAND_WRITTEN: &str = "\
# My gateway. Do not lose this comment.
gateway:
  data_dir: ./state   # inline comment stays
  listen: 127.0.0.1:8646

# The agent.
agent:
  backend: openai
  base_url: http://127.0.0.1:11434/v1
  model: qwen2.5
  system_prompt: \"Be brief.\"   # setup keeps keys it does not ask about

sessions:
  busy_mode: interrupt

platforms:
  # The sales bot, written by hand.
  wecom_sales:
    type: wecom
    extra: { bot_id: sales, secret: sales-secret }
  wecom:
    enabled: true
    extra:
      bot_id: old-id
      secret: old-secret
      groups: { \"*\": { allow_from: [boss] } }
  # Trailing notes about platforms.
";

#[tokio::test]
async fn rerunning_edits_the_instance_in_place_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, HAND_WRITTEN).unwrap();
    // Enter on every question keeps the current values; only the secret changes.
    let mut p = ScriptedPrompter::new()
        .answer("bot_secret", "new-secret")
        .answer("agent_change", "yes")
        .answer("model", "qwen3");
    let out = run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert!(!out.created);
    let text = std::fs::read_to_string(&path).unwrap();
    // Every line outside the two replaced blocks is unchanged.
    for line in [
        "# My gateway. Do not lose this comment.",
        "  data_dir: ./state   # inline comment stays",
        "# The agent.",
        "sessions:\n  busy_mode: interrupt\n",
        "  # The sales bot, written by hand.\n  wecom_sales:\n    type: wecom\n    extra: { bot_id: sales, secret: sales-secret }\n",
        "  # Trailing notes about platforms.\n",
    ] {
        assert!(text.contains(line), "lost {line:?} in:\n{text}");
    }
    assert_eq!(text.matches("wecom:").count(), 1, "{text}");
    let v = read_yaml(&path);
    let entry = &v["platforms"]["wecom"];
    assert_eq!(entry["enabled"], true);
    assert_eq!(entry["extra"]["bot_id"], "old-id");
    assert_eq!(entry["extra"]["secret"], "new-secret");
    assert_eq!(
        entry["extra"]["groups"],
        json!({"*": {"allow_from": ["boss"]}})
    );
    assert_eq!(entry["extra"]["dm_policy"], "pairing");
    assert_eq!(
        v["agent"],
        json!({"backend": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "qwen3",
               "api_key_env": "OPENAI_API_KEY", "system_prompt": "Be brief."})
    );
    assert_eq!(v["sessions"], json!({"busy_mode": "interrupt"}));
    assert_eq!(v["platforms"]["wecom_sales"]["extra"]["bot_id"], "sales");

    // A second run with no changes produces the same file.
    let mut p = ScriptedPrompter::new();
    run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[tokio::test]
async fn the_example_config_gets_an_instance_and_still_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml"))
            .unwrap();
    std::fs::write(&path, &example).unwrap();
    let mut p = ScriptedPrompter::new()
        .answer("instance", "wecom_support")
        .answer("corp_id", "ww99887766")
        .answer("corp_secret", "s")
        .answer("agent_id", "1000009")
        .answer("port", "8699");
    run(&mut p, &path, Some("wecom_callback"), |_| {})
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v = read_yaml(&path);
    assert_eq!(v["platforms"]["wecom_support"]["type"], "wecom_callback");
    assert_eq!(v["platforms"]["wecom_support"]["extra"]["port"], 8699);
    // Everything before `platforms:` is untouched (the agent section was kept).
    let head = |t: &str| t[..t.find("\nplatforms:").unwrap()].to_string();
    assert_eq!(head(&text), head(&example));
    if registry().get("wecom").is_some() || !example.contains("\n  wecom:") {
        assert_passes_check(&path);
    }
}

#[tokio::test]
async fn a_result_that_fails_validation_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    // A broken section elsewhere: setup reports it and leaves the file alone.
    let original = "sessions:\n  busy_mod: queue\n";
    std::fs::write(&path, original).unwrap();
    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234")
        .answer("corp_secret", "s")
        .answer("agent_id", "1");
    let e2 = run(&mut p, &path, Some("wecom_callback"), |_| {})
        .await
        .unwrap_err();
    match e2 {
        SetupError::Invalid(errors) => assert!(
            errors.iter().any(|e| e.path == "sessions.busy_mod"),
            "{errors:?}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

// ---------------------------------------------------------------- the real binary

fn gateway(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir);
    cmd
}

#[test]
fn non_interactive_flags_write_a_config_that_gateway_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path())
        .args([
            "setup",
            "wecom_callback",
            "--non-interactive",
            "--no-verify",
            "--corp-id",
            "ww1234567890",
            "--secret-env",
            "MY_SECRET",
            "--agent-id",
            "1000002",
            "--dm-policy",
            "allowlist",
            "--allow-from",
            "zhangsan",
            "--home-channel",
            "user:zhangsan",
            "--public-url",
            "https://bot.example.com",
            "--agent",
            "openai",
            "--base-url",
            "http://127.0.0.1:11434/v1",
            "--model",
            "qwen2.5",
            "--api-key-env",
            "OLLAMA_KEY",
        ])
        .env("MY_SECRET", "from-the-env")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("URL             https://bot.example.com/wecom/callback"),
        "{stdout}"
    );
    assert!(stdout.contains("export OLLAMA_KEY="), "{stdout}");
    assert!(
        !stdout.contains("from-the-env"),
        "the secret was printed:\n{stdout}"
    );
    let cfg = dir.path().join("config.yaml");
    let v = read_yaml(&cfg);
    assert_eq!(
        v["platforms"]["wecom_callback"]["extra"]["corp_secret"],
        "from-the-env"
    );
    assert_eq!(v["agent"]["model"], "qwen2.5");

    let check = gateway(dir.path())
        .args(["check", "-c", "config.yaml"])
        .env("OLLAMA_KEY", "k")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Re-running with one flag edits in place.
    let again = gateway(dir.path())
        .args([
            "setup",
            "--platform",
            "wecom_callback",
            "--non-interactive",
            "--no-verify",
            "--dm-policy",
            "pairing",
        ])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let v2 = read_yaml(&cfg);
    assert_eq!(
        v2["platforms"]["wecom_callback"]["extra"]["dm_policy"],
        "pairing"
    );
    assert_eq!(
        v2["platforms"]["wecom_callback"]["extra"]["token"],
        v["platforms"]["wecom_callback"]["extra"]["token"]
    );
    assert_eq!(v2["agent"], v["agent"]);
}

#[test]
fn non_interactive_names_the_missing_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path())
        .args([
            "setup",
            "wecom",
            "--non-interactive",
            "--no-verify",
            "--secret",
            "s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bot-id"), "{err}");
    assert!(!dir.path().join("config.yaml").exists());
}

/// The real binary in a pseudo-terminal: dialoguer prompts, arrow keys, a secret typed without
/// echo.
#[cfg(unix)]
#[test]
fn interactive_setup_in_a_pseudo_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let mut cmd = gateway(dir.path());
    cmd.env("TERM", "xterm")
        .args(["setup", "wecom_callback", "--no-verify", "-c"])
        .arg(&cfg);
    let mut s = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
    let mut seen = String::new();
    // Waits for a prompt, then types. The prompt is drawn just before the terminal switches to
    // raw mode, which discards input typed ahead; the pause lets the switch happen first (no
    // event tells a pseudo-terminal's reader that it did).
    let mut answer = |s: &mut rexpect::session::PtySession, prompt: &str, keys: &str| {
        seen.push_str(&s.exp_string(prompt).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        s.send(keys).unwrap();
        s.flush().unwrap();
    };
    answer(&mut s, "Instance name", "\r");
    answer(&mut s, "CorpID", "ww1234567890\r");
    answer(&mut s, "App Secret", "pty-SECRET-value\r");
    answer(&mut s, "AgentId", "1000002\r");
    answer(&mut s, "Generate a random Token", "y");
    answer(&mut s, "Port", "\r");
    answer(&mut s, "Callback path", "\r");
    answer(&mut s, "Public HTTPS address", "https://bot.example.com\r");
    // pairing is first: one arrow down selects allowlist.
    answer(&mut s, "https://bot.example.com/wecom/callback", "");
    answer(&mut s, "Direct messages", "\x1b[B\r");
    answer(&mut s, "Users allowed", "zhangsan\r");
    answer(&mut s, "Home channel", "\r");
    answer(&mut s, "Which agent answers", "\r");
    let (before, _) = s.exp_regex("Added platforms.wecom_callback.*0600").unwrap();
    let before = format!("{seen}{before}");
    s.exp_eof().unwrap();
    assert!(
        !before.contains("pty-SECRET-value"),
        "the secret was echoed"
    );
    let v = read_yaml(&cfg);
    let extra = &v["platforms"]["wecom_callback"]["extra"];
    assert_eq!(extra["corp_secret"], "pty-SECRET-value");
    assert_eq!(extra["dm_policy"], "allowlist");
    assert_eq!(extra["allow_from"], json!(["ww1234567890:zhangsan"]));
    assert_eq!(mode(&cfg), 0o600);
    let check = gateway(dir.path())
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
