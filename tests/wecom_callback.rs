//! End to end for `wecom_callback` (issue 5 acceptance 2–6): the emulator plays WeCom (signed,
//! encrypted callbacks in; a fake REST API out), the gateway runs with the echo agent — in this
//! process through the router, and once as the real `gateway` binary.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::TestGateway;
use wecom_emulator::rest::{Endpoint, FakeApp, FakeWeComApi, SentMessage};

fn registry() -> router::Registry {
    router::Registry::new().register(Arc::new(wecom_callback::WeComCallbackFactory))
}

/// Starts an in-process gateway and waits until its instances are up (the callback server
/// binds in the adapter's `connect`, which the router runs in the background).
async fn start(dir: &Path, yaml: &str) -> TestGateway {
    let gw = TestGateway::start_with(dir, yaml, &registry()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.get("/health").await;
        if status == 200 {
            return gw;
        }
        assert!(Instant::now() < deadline, "gateway not up: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago (the gateway binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `platforms:` YAML for one `wecom_callback` instance with `extra` (JSON is valid YAML).
fn platform_yaml(extra: &Value) -> String {
    format!("agent:\n  backend: echo\nplatforms:\n  wecom_callback:\n    extra: {extra}\n")
}

/// The single-app `extra` for `app`, listening on `port`, talking to `emu`.
fn single_app(emu: &FakeWeComApi, app: &FakeApp, port: u16) -> Value {
    let mut extra = app.config();
    extra["host"] = "127.0.0.1".into();
    extra["port"] = port.into();
    extra["api_base_url"] = emu.base_url().into();
    extra["retry_backoff_ms"] = 200.into();
    extra
}

/// Posts `xml`, waits for the next message the gateway sends and then for the gateway to be
/// idle (the turn closed, nothing queued), so that the next `ask` never races the end of this
/// turn's bookkeeping; returns the message.
async fn ask(gw: &TestGateway, emu: &FakeWeComApi, app: &FakeApp, xml: &str) -> SentMessage {
    let before = emu.sent().len();
    let r = app.push_xml(xml).await;
    assert_eq!((r.status, r.body.as_str()), (200, "success"));
    let sent = emu.wait_sent(before + 1).await.remove(before);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = gw.get("/health").await;
        let h: Value = serde_json::from_str(&body).unwrap_or_default();
        if h["turns_running"] == 0 && h["messages_queued"] == 0 {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never went idle: {body}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ask_text(
    gw: &TestGateway,
    emu: &FakeWeComApi,
    app: &FakeApp,
    user: &str,
    text: &str,
) -> SentMessage {
    ask(gw, emu, app, &app.text_xml(user, text, app.next_msg_id())).await
}

fn sha16(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_owned()
}

#[tokio::test]
async fn media_location_link_and_events_reach_the_agent_as_typed_content() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwMedia", 1000002);
    let port = free_port();
    let mut extra = single_app(&emu, &app, port);
    extra["welcome_text"] = "Welcome to the agent.".into();
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &platform_yaml(&extra)).await;
    app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));

    // Each media kind is fetched with media/get, decrypted to disk, and reaches the agent as an
    // attachment: the echo agent reports the size and hash of what it received.
    let cases: [(&str, &[u8], &str, &str); 4] = [
        (
            "image",
            b"\x89PNG\r\n\x1a\n-image-payload-",
            "image/png",
            "photo.png",
        ),
        (
            "voice",
            b"#!AMR\n-voice-frames-payload",
            "audio/amr",
            "voice.amr",
        ),
        (
            "video",
            b"\0\0\0\x18ftypmp42\0\0\0\0-video-",
            "video/mp4",
            "clip.mp4",
        ),
        (
            "file",
            b"%PDF-1.7\n-report-payload-",
            "application/pdf",
            "report.pdf",
        ),
    ];
    for (kind, bytes, mime, name) in cases {
        let media_id = emu.add_media(bytes, mime, name);
        let xml = match kind {
            "voice" => app.voice_xml("alice", &media_id, "amr", app.next_msg_id()),
            _ => app.media_xml("alice", kind, &media_id, app.next_msg_id()),
        };
        let reply = ask(&gw, &emu, &app, &xml).await;
        let text = reply.content().unwrap();
        let line = format!("{} bytes sha256:{}]", bytes.len(), sha16(bytes));
        assert!(
            text.starts_with(&format!("echo: \n[{kind} ")),
            "{kind}: {text}"
        );
        assert!(text.ends_with(&line), "{kind}: {text}");
        assert_eq!((reply.touser(), reply.agent_id), (Some("alice"), 1000002));
    }
    assert_eq!(emu.calls_to(Endpoint::MediaGet).len(), 4);

    // Location and link: readable text for the agent (the structured fields travel too).
    let loc = ask(
        &gw,
        &emu,
        &app,
        &app.location_xml("alice", 23.1066, 113.3245, "广州塔", app.next_msg_id()),
    )
    .await;
    assert_eq!(
        loc.content(),
        Some("echo: [location] 广州塔 (23.1066, 113.3245)")
    );
    let link = ask(
        &gw,
        &emu,
        &app,
        &app.link_xml(
            "alice",
            "Release notes",
            "v2 is out",
            "https://x.invalid/v2",
            app.next_msg_id(),
        ),
    )
    .await;
    assert_eq!(
        link.content(),
        Some("echo: [link] Release notes\nv2 is out\nhttps://x.invalid/v2")
    );

    // enter_agent: the welcome text, no agent turn.
    let welcome = ask(
        &gw,
        &emu,
        &app,
        &app.event_xml("bob", "enter_agent", "", ""),
    )
    .await;
    assert_eq!(
        (welcome.touser(), welcome.content()),
        (Some("bob"), Some("Welcome to the agent."))
    );
    // Menu clicks, scans, subscribe/unsubscribe and unknown types: acknowledged, no turn, no
    // fake "/start". The barrier message proves nothing else was sent in between.
    app.set_clock_offset(1);
    for xml in [
        app.event_xml("bob", "click", "MENU_A", ""),
        app.event_xml(
            "bob",
            "scancode_push",
            "SCAN",
            "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>R1</ScanResult></ScanCodeInfo>",
        ),
        app.event_xml("bob", "subscribe", "", ""),
        app.event_xml("bob", "unsubscribe", "", ""),
        app.text_xml("bob", "x", app.next_msg_id())
            .replace("<MsgType><![CDATA[text]]>", "<MsgType><![CDATA[hologram]]>"),
    ] {
        let r = app.push_xml(&xml).await;
        assert_eq!((r.status, r.body.as_str()), (200, "success"));
    }
    let sent_before = emu.sent().len();
    let barrier = ask_text(&gw, &emu, &app, "bob", "barrier").await;
    assert_eq!(barrier.content(), Some("echo: barrier"));
    assert_eq!(
        emu.sent().len(),
        sent_before + 1,
        "events started no turn: {:?}",
        emu.sent()
    );
    gw.stop().await;
}

#[tokio::test]
async fn duplicate_posts_run_one_turn_even_across_a_restart() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwDup", 1000002);
    let port = free_port();
    let yaml = platform_yaml(&single_app(&emu, &app, port));
    let dir = tempfile::tempdir().unwrap();
    app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));
    let echoes = |emu: &FakeWeComApi| {
        emu.sent()
            .iter()
            .filter(|m| m.content() == Some("echo: only once"))
            .count()
    };

    let gw = start(dir.path(), &yaml).await;
    let signed = app.sign_post(&app.text_xml("carol", "only once", app.next_msg_id()));
    // WeCom retries a callback that took too long: the same request, three times.
    for _ in 0..3 {
        assert_eq!(app.post(&signed).await.body, "success");
    }
    ask_text(&gw, &emu, &app, "carol", "barrier 1").await;
    assert_eq!(echoes(&emu), 1);
    gw.stop().await;

    // After a restart the retry is still recognised.
    let gw = start(dir.path(), &yaml).await;
    assert_eq!(app.post(&signed).await.body, "success");
    ask_text(&gw, &emu, &app, "carol", "barrier 2").await;
    assert_eq!(echoes(&emu), 1, "replayed after restart: {:?}", emu.sent());
    gw.stop().await;
}

#[tokio::test]
async fn token_expiry_rate_limits_and_untrusted_ips_mid_run() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwOps", 1000002);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &platform_yaml(&single_app(&emu, &app, port))).await;
    app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));
    assert_eq!(
        ask_text(&gw, &emu, &app, "dan", "one").await.content(),
        Some("echo: one")
    );

    // 42001 mid-run: one refresh, the reply still arrives.
    let issued = emu.tokens_issued("wwOps");
    emu.expire_tokens();
    assert_eq!(
        ask_text(&gw, &emu, &app, "dan", "two").await.content(),
        Some("echo: two")
    );
    assert_eq!(emu.tokens_issued("wwOps"), issued + 1);

    // 45009: retried after a backoff, delivered once.
    emu.fail_next_send(45009);
    let reply = ask_text(&gw, &emu, &app, "dan", "three").await;
    assert_eq!(reply.content(), Some("echo: three"));
    let calls = emu.calls_to(Endpoint::Send);
    let (limited, ok) = (&calls[calls.len() - 2], &calls[calls.len() - 1]);
    assert_eq!((limited.errcode, ok.errcode), (45009, 0));
    assert!(
        ok.at - limited.at >= Duration::from_millis(200),
        "no backoff"
    );

    // 60020: the reply cannot go out; /health names the code and the egress IP.
    emu.untrusted_ip(Some("203.0.113.9"));
    let r = app.push_text("dan", "four").await.0;
    assert_eq!(r.body, "success");
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let (_, body) = gw.get("/health").await;
        if body.contains("60020") || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        health.contains("60020") && health.contains("203.0.113.9") && health.contains("trusted IP"),
        "{health}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn two_corps_on_one_port_reply_through_their_own_app_also_after_restart() {
    let emu = FakeWeComApi::start().await;
    let a = emu.app("wwCorpA", 1000011);
    let b = emu.app("wwCorpB", 1000022);
    let port = free_port();
    let named = |app: &FakeApp, name: &str| {
        let mut v = app.config();
        v["name"] = name.into();
        v
    };
    let extra = json!({
        "host": "127.0.0.1", "port": port, "api_base_url": emu.base_url(),
        "apps": [named(&a, "corp-a"), named(&b, "corp-b")],
    });
    let yaml = platform_yaml(&extra);
    let dir = tempfile::tempdir().unwrap();
    for app in [&a, &b] {
        app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));
    }
    let check = |m: &SentMessage, app: &FakeApp, text: &str| {
        assert_eq!(m.content(), Some(text));
        assert_eq!(m.touser(), Some("alice"));
        // The fake knows which app a token belongs to: corp and agent must both match.
        assert_eq!(
            (m.corp_id.as_str(), m.agent_id),
            (app.corp_id.as_str(), app.agent_id)
        );
        assert_eq!(m.body_agent_id(), Some(app.agent_id));
    };

    for round in ["before", "after"] {
        let gw = start(dir.path(), &yaml).await;
        // The same UserID in both corps: two identities, each answered by its own app.
        let ra = ask_text(&gw, &emu, &a, "alice", &format!("from A {round}")).await;
        check(&ra, &a, &format!("echo: from A {round}"));
        let rb = ask_text(&gw, &emu, &b, "alice", &format!("from B {round}")).await;
        check(&rb, &b, &format!("echo: from B {round}"));
        let who = ask_text(&gw, &emu, &b, "alice", "/whoami").await;
        assert!(
            who.content().unwrap().contains("wwCorpB:alice"),
            "{:?}",
            who.content()
        );
        assert_eq!(who.corp_id, "wwCorpB");
        gw.stop().await;
    }
}

#[test]
fn two_instances_on_one_port_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = wecom_emulator::rest::random_encoding_aes_key();
    let app = |corp: &str| {
        json!({"corp_id": corp, "corp_secret": "s", "agent_id": 1, "token": "t",
               "encoding_aes_key": key, "port": 9645})
    };
    let yaml = format!(
        "platforms:\n  wecom_callback:\n    extra: {}\n  second:\n    type: wecom_callback\n    extra: {}\n",
        app("wwA"),
        app("wwB")
    );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err = router::load(Some(&path), &registry(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("port 9645") && err.contains("already uses"),
        "{err}"
    );

    // And through the binary: `gateway check` prints it and exits 2.
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("port 9645"), "{text}");
}

#[test]
fn wecom_callback_environment_variables_fill_the_default_instance() {
    let key = wecom_emulator::rest::random_encoding_aes_key();
    let env = move |name: &str| -> Option<String> {
        let v = match name {
            "WECOM_CALLBACK_CORP_ID" => "wwEnv",
            "WECOM_CALLBACK_CORP_SECRET" => "env-secret",
            "WECOM_CALLBACK_AGENT_ID" => "1000007",
            "WECOM_CALLBACK_TOKEN" => "env-token",
            "WECOM_CALLBACK_ENCODING_AES_KEY" => key.as_str(),
            "WECOM_CALLBACK_PORT" => "9646",
            "WECOM_CALLBACK_DM_POLICY" => "allowlist",
            "WECOM_CALLBACK_ALLOWED_USERS" => "wwEnv:zhangsan",
            _ => return None,
        };
        Some(v.to_owned())
    };
    let (_, plans) = router::load(None, &registry(), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plans.len(), 1);
    assert_eq!(
        (plans[0].spec.name.as_str(), plans[0].spec.kind.as_str()),
        ("wecom_callback", "wecom_callback")
    );
    assert_eq!(plans[0].access.allow_from, ["wwEnv:zhangsan"]);
    assert_eq!(format!("{:?}", plans[0].access.dm_policy), "Allowlist");
    // A bad value from the environment is reported against its key.
    let bad = |name: &str| {
        (name == "WECOM_CALLBACK_AGENT_ID")
            .then(|| "abc".to_owned())
            .or_else(|| env(name))
    };
    let err = router::load(None, &registry(), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("platforms.wecom_callback.extra.agent_id") && err.contains("numeric"),
        "{err}"
    );
}

// ---- the real binary ------------------------------------------------------------------------

struct Binary {
    child: Child,
    log: std::path::PathBuf,
    health: String,
}

impl Binary {
    fn start(dir: &Path, extra: &Value) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let yaml = format!(
            // A slow echo (several deltas 300 ms apart) lets the test tell an ack that waited for
            // the agent from one that did not.
            "gateway:\n  data_dir: {}\n  listen: {listen}\n{}",
            dir.join("data").display(),
            platform_yaml(extra).replace("backend: echo\n", "backend: echo\n  delay_ms: 300\n")
        );
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["run", "-c"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            health: format!("http://{listen}/health"),
        }
    }

    /// Waits until `/health` says every instance is up.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&self.health).await {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("gateway exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log_text()
    }
}

#[tokio::test]
async fn the_real_binary_answers_at_once_and_replies_through_message_send() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwBinary", 1000002);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Binary::start(dir.path(), &single_app(&emu, &app, port));
    gw.ready().await;
    app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));

    // URL verification as the WeCom console does it.
    let verified = app.verify_url("1234567890123456789").await;
    assert_eq!(
        (verified.status, verified.body.as_str()),
        (200, "1234567890123456789")
    );

    // A signed text POST is acknowledged at once; the echo reply reaches message/send for the
    // right user, through the right app and agent id.
    let (ack, _) = app.push_text("alice", "hello from WeCom").await;
    assert_eq!((ack.status, ack.body.as_str()), (200, "success"));
    // The ack never waits for the agent: nothing was sent yet when it came back. (Its latency is
    // measured by the pipeline benchmark; the bound here only catches a gross regression on a
    // loaded CI machine.)
    assert!(emu.sent().is_empty(), "the ack waited for the reply");
    assert!(
        ack.elapsed < Duration::from_secs(3),
        "ack took {:?}",
        ack.elapsed
    );
    let reply = emu.wait_sent(1).await.remove(0);
    assert_eq!(reply.content(), Some("echo: hello from WeCom"));
    assert_eq!((reply.touser(), reply.msgtype()), (Some("alice"), "text"));
    assert_eq!(
        (
            reply.corp_id.as_str(),
            reply.agent_id,
            reply.body_agent_id()
        ),
        ("wwBinary", 1000002, Some(1000002))
    );

    // A 10,000-byte CJK answer arrives as several messages of at most 2048 bytes that join
    // back to the whole (after removing the " (i/n)" markers).
    let long: String = "企业微信网关测试。".repeat(371);
    assert!(long.len() >= 10_000);
    let before = emu.sent().len();
    let (ack, _) = app.push_text("alice", &long).await;
    assert_eq!(ack.body, "success");
    let expected = format!("echo: {long}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let parts = loop {
        let parts: Vec<SentMessage> = emu.sent().into_iter().skip(before).collect();
        let n = parts.len();
        let complete = n > 0
            && parts
                .last()
                .and_then(|m| m.content())
                .is_some_and(|c| c.ends_with(&format!("({n}/{n})")));
        if complete || Instant::now() > deadline {
            break parts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n = parts.len();
    assert!(n >= 5, "{n} parts");
    let mut joined = String::new();
    for (i, m) in parts.iter().enumerate() {
        let c = m.content().unwrap();
        assert!(c.len() <= 2048, "part {i}: {} bytes", c.len());
        assert_eq!(m.touser(), Some("alice"));
        joined.push_str(c.strip_suffix(&format!(" ({}/{n})", i + 1)).unwrap());
    }
    assert_eq!(joined, expected);

    // 60020: the log says what to fix, naming the egress IP.
    emu.untrusted_ip(Some("203.0.113.77"));
    app.push_text("alice", "blocked").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("203.0.113.77") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = reqwest::get(&gw.health)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = gw.stop().await;
    let line = log
        .lines()
        .find(|l| l.contains("203.0.113.77"))
        .unwrap_or_else(|| panic!("no 60020 log line:\n{log}"));
    assert!(
        line.contains("60020") && line.contains("trusted IP"),
        "{line}"
    );
    assert!(health.contains("203.0.113.77"), "{health}");
    // Secrets never reach the log.
    for secret in [&app.secret, &app.token, &app.encoding_aes_key] {
        assert!(!log.contains(secret.as_str()), "secret in log");
    }
    assert!(!log.contains("emu-token-"), "access token in log");
    // No dm_policy was configured: the start-up warns that access is open.
    assert!(
        log.lines()
            .any(|l| l.contains("ACCESS IS OPEN") && l.contains("wecom_callback")),
        "no open-access warning:\n{log}"
    );
}
