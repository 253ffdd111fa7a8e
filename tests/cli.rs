//! The real `gateway` binary: `check` on the example and on broken configs, `chat --once` with the
//! echo default and with an OpenAI-compatible fake, `run` serving /health and /metrics and
//! stopping on SIGTERM, and no secret from the config in any log line at trace level.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::post;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// A command for the binary, isolated from the developer's environment and config files.
fn gateway(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn check_accepts_the_example_config() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let out = gateway(dir.path())
        .args(["check", "-c"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("Configuration OK"));
}

#[test]
fn check_reports_every_problem_with_its_key_path_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "sessions:\n  busy_mod: queue\nagent:\n  backend: echo\n  dely_ms: 5\nplatforms:\n  mystery:\n    extra:\n      dm_policy: sometimes\n      group_policy: pairing\n",
    )
    .unwrap();
    let out = gateway(dir.path())
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    for path in [
        "sessions.busy_mod",
        "agent.dely_ms",
        "platforms.mystery:",
        "platforms.mystery.extra.dm_policy",
        "platforms.mystery.extra.group_policy",
    ] {
        assert!(err.contains(path), "missing {path:?} in:\n{err}");
    }
    assert!(err.contains("unknown platform kind `mystery`"), "{err}");
}

#[test]
fn a_missing_config_file_suggests_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("gateway setup"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn chat_once_answers_with_the_echo_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path())
        .args(["chat", "--once", "hello"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "echo: hello\n");
}

/// A fake OpenAI-compatible server that streams "Hello from the fake" and records the
/// Authorization header it saw.
async fn fake_openai() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                s.lock().unwrap().push(auth);
                let mut body = String::new();
                for piece in ["Hello", " from", " the fake"] {
                    body.push_str(&format!(
                        "data: {}\n\n",
                        serde_json::json!({"choices":[{"delta":{"content":piece}}]})
                    ));
                }
                body.push_str("data: [DONE]\n\n");
                ([("content-type", "text/event-stream")], body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

const SECRET_KEY: &str = "sk-test-SECRET-4f1c9d2e7a";
const SECRET_HEADER: &str = "hdr-SECRET-b8e7d6c5";

#[tokio::test]
async fn chat_once_streams_from_an_openai_backend_and_logs_no_secret() {
    let (addr, seen) = fake_openai().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  backend: openai\n  base_url: http://{addr}/v1\n  model: test-model\n  api_key_env: TEST_OPENAI_KEY\n  headers:\n    X-Extra: {SECRET_HEADER}\n"
        ),
    )
    .unwrap();
    let out: Output = tokio::task::spawn_blocking(move || {
        gateway(dir.path())
            .args(["chat", "--once", "hi", "-c"])
            .arg(&cfg)
            .env("TEST_OPENAI_KEY", SECRET_KEY)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello from the fake\n");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [format!("Bearer {SECRET_KEY}")]
    );
    let logs = text(&out.stderr);
    assert!(
        logs.lines().count() > 5,
        "expected trace logs, got:\n{logs}"
    );
    for secret in [SECRET_KEY, SECRET_HEADER] {
        assert!(
            !logs.contains(secret),
            "secret {secret} leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn run_serves_health_and_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  listen: 127.0.0.1:{port}\nagent:\n  backend: http\n  url: http://127.0.0.1:9/turn\n  headers:\n    Authorization: Bearer {SECRET_HEADER}\n"
        ),
    )
    .unwrap();
    let mut child = gateway(dir.path())
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut health = None;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{url}/health")).await {
            health = Some((r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = health.expect("/health never answered");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("# TYPE gateway_turns_running gauge"),
        "{metrics}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.stdin.take();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    let logs = text(&out.stderr);
    assert!(logs.contains("Stopped."), "{logs}");
    assert!(!logs.contains(SECRET_HEADER), "secret leaked:\n{logs}");
}

#[test]
fn sessions_and_pairing_commands_work_on_the_state_database() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        gateway(dir.path())
            .env("USER", "tester")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["chat", "--once", "remember me"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(&["sessions", "list"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("console:dm:tester"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["sessions", "reset", "console:dm:tester"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["sessions", "reset", "console:dm:tester"]);
    assert_eq!(out.status.code(), Some(1), "a second reset finds nothing");

    let out = run(&["pairing", "list"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("No pending pairing requests."));
    let out = run(&["pairing", "approve", "wecom", "ABCD2345"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("attempts left"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["pairing", "revoke", "wecom", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["pairing", "clear-pending", "wecom"]);
    assert!(out.status.success());
}

#[test]
fn every_adapter_key_is_documented_in_the_readme_and_the_example_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("config.example.yaml")).unwrap();
    let factories: [&dyn gateway_core::AdapterFactory; 2] =
        [&wecom::WeComFactory, &wecom_callback::WeComCallbackFactory];
    for f in factories {
        for key in f.config_keys() {
            let name = format!("`{}`", key.name);
            assert!(
                readme.contains(&name),
                "README.md does not document {} key {name}",
                f.kind()
            );
            assert!(
                example.contains(&format!("{}:", key.name)),
                "config.example.yaml does not show {} key {}",
                f.kind(),
                key.name
            );
            if let Some(env) = key.env {
                assert!(readme.contains(env), "README.md does not mention {env}");
            }
        }
    }
}

/// Starts `gateway run -c cfg` with quiet output.
fn spawn_run(dir: &Path, cfg: &Path) -> std::process::Child {
    gateway(dir)
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (up to 10 s) for a file: a running gateway's admin file is its readiness signal.
async fn wait_for_file(path: &Path) -> bool {
    for _ in 0..400 {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// SIGTERM, then the exit status.
async fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_gateway_on_the_same_data_dir_is_refused_and_the_first_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let config = |port: u16| {
        let path = dir.path().join(format!("config-{port}.yaml"));
        let data = dir.path().join("data");
        std::fs::write(
            &path,
            format!(
                "gateway:\n  listen: 127.0.0.1:{port}\n  data_dir: {}\n",
                data.display()
            ),
        )
        .unwrap();
        path
    };
    let first_cfg = config(free());
    let mut first = spawn_run(dir.path(), &first_cfg);
    // Readiness: the running gateway publishes its admin file.
    let admin = dir.path().join("data/admin.json");
    assert!(
        wait_for_file(&admin).await,
        "the first gateway never published admin.json"
    );

    let mut second = gateway(dir.path())
        .args(["run", "-c"])
        .arg(config(free()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must give up at once; one that starts serving is killed and fails the test.
    let mut refused = None;
    for _ in 0..400 {
        if let Some(status) = second.try_wait().unwrap() {
            refused = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if refused.is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = refused.unwrap_or_else(|| panic!("a second gateway started on the same data dir"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already runs") && stderr.contains(&first.id().to_string()),
        "the message must name the running gateway: {stderr}"
    );
    // The refused one removed nothing of the running one's.
    assert!(
        admin.exists(),
        "the second gateway deleted the first one's admin.json"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first gateway stopped"
    );

    assert!(terminate(first).await.success());
    // Once it is gone, the data dir is free again.
    let again = spawn_run(dir.path(), &first_cfg);
    assert!(
        wait_for_file(&admin).await,
        "the data dir stayed locked after the first gateway exited"
    );
    assert!(terminate(again).await.success());
}

/// A valid 43-character EncodingAESKey.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Runs `gateway check -c cfg` with `env`, returning (exit code, stderr).
fn check_with(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut cmd = gateway(dir);
    cmd.args(["check", "-c"]).arg(&cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_resolves_env_references_in_platform_secrets_and_names_an_unset_one() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        "platforms:\n  wecom:\n    extra:\n      bot_id: b\n      secret: ${BOT_SECRET_REF}\n      websocket_url: ws://127.0.0.1:1\n\
         \x20 wecom_callback:\n    extra:\n      corp_id: ww1\n      corp_secret: ${APP_SECRET_REF}\n      agent_id: 1000002\n      token: ${TOKEN_REF}\n      encoding_aes_key: ${AES_REF}\n      port: 0\n";
    let env = [
        ("BOT_SECRET_REF", "bot-secret-value"),
        ("APP_SECRET_REF", "app-secret-value"),
        ("TOKEN_REF", "tok123"),
        ("AES_REF", AES_KEY),
    ];
    let (code, stdout, stderr) = check_with(dir.path(), yaml, &env);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // Unset: exit 2, each reference named with its key path; no empty secret slips through.
    let (code, _, stderr) = check_with(dir.path(), yaml, &env[..1]);
    assert_eq!(code, Some(2), "{stderr}");
    for (path, var) in [
        (
            "platforms.wecom_callback.extra.corp_secret",
            "APP_SECRET_REF",
        ),
        ("platforms.wecom_callback.extra.token", "TOKEN_REF"),
        ("platforms.wecom_callback.extra.encoding_aes_key", "AES_REF"),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(path) && l.contains(var)),
            "{path} / {var} missing:\n{stderr}"
        );
    }
    assert!(!stderr.contains("platforms.wecom.extra.secret"), "{stderr}");
}

#[test]
fn check_lists_every_unknown_key_with_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "gateway:\n  lisen: 127.0.0.1:8646\nagent:\n  backend: openai\n  base_url: http://127.0.0.1:1/v1\n  model: m\n  sytem_prompt: hi\nplatforms:\n  wecom:\n    extra:\n      bot_id: b\n      secert: s\n      ping_intervl_secs: 3\n  wecom_callback:\n    extra:\n      apps:\n        - { name: a, corpid: ww1 }\n";
    let (code, _, stderr) = check_with(dir.path(), yaml, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    for (path, hint) in [
        ("gateway.lisen", "did you mean `listen`?"),
        ("agent.sytem_prompt", "did you mean `system_prompt`?"),
        ("platforms.wecom.extra.secert", "did you mean `secret`?"),
        (
            "platforms.wecom.extra.ping_intervl_secs",
            "did you mean `ping_interval_secs`?",
        ),
        (
            "platforms.wecom_callback.extra.apps[0].corpid",
            "did you mean `corp_id`?",
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(path) && l.contains(hint)),
            "{path}: {hint} missing:\n{stderr}"
        );
    }
}

#[test]
fn config_is_accepted_before_the_subcommand_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cfg.yaml"), "agent:\n  backend: echo\n").unwrap();
    for args in [["-c", "cfg.yaml", "check"], ["check", "-c", "cfg.yaml"]] {
        let out = gateway(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Configuration OK"));
    }
    let out = gateway(dir.path())
        .args(["--config", "cfg.yaml", "sessions", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Two different files: which one was meant is not guessed.
    let out = gateway(dir.path())
        .args(["-c", "cfg.yaml", "check", "-c", "other.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("given twice"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_relative_data_dir_is_relative_to_the_config_file_not_the_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("config.yaml"), "gateway:\n  data_dir: ./state\n").unwrap();
    let out = gateway(dir.path())
        .args(["sessions", "list", "-c", "etc/config.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(etc.join("state/gateway.db").is_file());
    assert!(!dir.path().join("state").exists());
}

#[test]
fn check_never_echoes_a_password_embedded_in_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "gateway:\n  listen: \"http://admin:hunter2pw@proxy.example:3128/\"\nplatforms:\n  wecom_callback:\n    extra:\n      corp_id: ww1\n      corp_secret: s3cr3t-value\n      agent_id: 1\n      token: t\n      encoding_aes_key: {AES_KEY}\n      api_base_url: \"ftp://user:hunter2pw@proxy.example/\"\n"
    );
    let (code, _, stderr) = check_with(dir.path(), &yaml, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("gateway.listen"), "{stderr}");
    assert!(stderr.contains("api_base_url"), "{stderr}");
    assert!(
        stderr.contains("proxy.example"),
        "the URL stays readable: {stderr}"
    );
    assert!(!stderr.contains("hunter2pw"), "password echoed:\n{stderr}");
}

#[test]
fn a_callback_app_refuses_a_group_home_channel() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "platforms:\n  wecom_callback:\n    home_channel: group:wrOgAAAA\n    extra:\n      corp_id: ww1\n      corp_secret: s\n      agent_id: 1\n      token: t\n      encoding_aes_key: {AES_KEY}\n      port: 0\n"
    );
    let (code, _, stderr) = check_with(dir.path(), &yaml, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("platforms.wecom_callback.home_channel")
            && stderr.contains("no group chats"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_callback_app_gets_no_open_group_policy_warning() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  listen: 127.0.0.1:{port}\n  data_dir: ./data\nplatforms:\n  wecom_callback:\n    extra:\n      corp_id: ww1\n      corp_secret: s\n      agent_id: 1\n      token: t\n      encoding_aes_key: {AES_KEY}\n      host: 127.0.0.1\n      port: 0\n      api_base_url: http://127.0.0.1:1\n      dm_policy: pairing\n"
        ),
    )
    .unwrap();
    let child = gateway(dir.path())
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The policy warning is logged before the gateway publishes its admin file.
    let ready = wait_for_file(&dir.path().join("data/admin.json")).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(ready, "the gateway did not start:\n{stderr}");
    assert!(!stderr.contains("ACCESS IS OPEN"), "{stderr}");
}
