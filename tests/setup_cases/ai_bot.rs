//! `wecom` (AI Bot) setup: manual entry, scan-to-create against a fake console, the bot connection check.

use super::*;

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
