//! Production hardening, proven on the real binary: secrets never reach a user, a log line,
//! `/health`, the outbox table or `gateway send`'s output; SIGTERM works with a closed stderr;
//! no colour escapes off a terminal; the data dir and its files are owner-only.

#[path = "support/binary.rs"]
mod binary;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binary::{deliver, free_port, Gateway, Setup, Wecom};
use wecom_emulator::rest::Endpoint;

/// Fails with the text when any of `secrets` occurs in it.
fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

/// Polls `cond` (every 20 ms) until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A WeCom API (or a proxy in front of it) that quotes the request URL in its errors returns
/// `corpsecret` and `access_token`; none of it may come out of the gateway. (Multi-threaded:
/// the emulator must keep answering while `gateway send` blocks this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_echoed_by_the_wecom_api_reach_no_log_health_outbox_or_send_output() {
    let dir = tempfile::tempdir().unwrap();
    let wecom = Wecom::start().await;
    wecom.emu.echo_requests_in_errors(true);
    // The first gettoken fails (its URL carries corpsecret), then every send is refused for
    // good (its URL carries the access token).
    wecom.emu.fail_next(Endpoint::GetToken, 40001);
    wecom.emu.fail_sends_at_rate(1.0, &[60011], 7);
    let corp_secret = wecom.app.config()["corp_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let gw = Gateway::start(dir.path(), &wecom, &Setup::FAST).await;

    let signed = wecom.text("alice", "hello", 1);
    deliver(&wecom.callback_url(&signed), &signed).await;
    // The reply is refused; the outbox keeps it with the (echoed) error.
    assert!(
        eventually(Duration::from_secs(30), || async {
            gw.cli(&["outbox", "list"]).1.contains("60011")
        })
        .await,
        "the refused reply never reached the outbox: {}",
        gw.cli(&["outbox", "list"]).1
    );
    let (sent, send_out) = gw.cli(&[
        "send",
        "--platform",
        "wecom_callback",
        "--to",
        "user:alice",
        "--text",
        "hi",
    ]);
    assert!(!sent, "{send_out}\n{}", gw.log_text());
    let health = gw.health().await.to_string();
    let (_, outbox) = gw.cli(&["outbox", "list"]);
    let db = rusqlite::Connection::open(gw.data.join("gateway.db")).unwrap();
    let stored: Vec<String> = db
        .prepare("SELECT last_error FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    gw.stop().await;
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();

    // The API did echo them (else this test would prove nothing)...
    let tokens = wecom.emu.issued_tokens();
    assert!(!tokens.is_empty(), "no token was issued");
    assert!(
        !wecom.emu.calls_to(Endpoint::Send).is_empty(),
        "no send reached the API"
    );
    assert!(log.contains("(request: "), "the API echoed nothing:\n{log}");
    // ...and the gateway repeated none of them.
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(&corp_secret);
    assert_clean("the log", &log, &secrets);
    assert_clean("/health", &health, &secrets);
    assert_clean("`gateway outbox list`", &outbox, &secrets);
    assert_clean("the outbox table", &stored.join("\n"), &secrets);
    assert_clean("`gateway send`", &send_out, &secrets);
    assert!(send_out.contains("[redacted]"), "{send_out}\n{log}");
    assert!(
        stored.iter().any(|e| e.contains("access_token=[redacted]")),
        "{stored:?}"
    );
}

/// A command backend whose error echoes its credentials (an `env` value, a bearer token, an
/// `x-key` header) and prints them on stderr: the user sees the error without them, and the
/// log keeps none of them.
#[test]
fn an_agent_error_echoing_its_credentials_reaches_the_user_and_the_log_scrubbed() {
    const ENV_SECRET: &str = "cmd-SECRET-77aa1b2c";
    const BEARER: &str = "sk-live-0f9e8d7c6b";
    const HEADER: &str = "xk-SECRET-1234abcd";
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread line\necho \"calling upstream with $MY_KEY and Authorization: Bearer {BEARER}\" >&2\n\
             printf '%s\\n' \"{{\\\"type\\\":\\\"error\\\",\\\"message\\\":\\\"upstream 401: key $MY_KEY, x-key: {HEADER}, Bearer {BEARER}\\\"}}\"\n"
        ),
    )
    .unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  backend: command\n  command: [/bin/sh, {}]\n  env:\n    MY_KEY: {ENV_SECRET}\n",
            script.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("RUST_LOG", "debug")
        .args(["chat", "--once", "hi", "-c"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        shown.contains("upstream 401"),
        "the error was not shown: {shown}\n{log}"
    );
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(
        log.contains("calling upstream"),
        "stderr was not logged:\n{log}"
    );
    for (what, text) in [("the user", &shown), ("the log", &log)] {
        assert_clean(what, text, &[ENV_SECRET, BEARER, HEADER]);
    }
}

/// A config for a gateway with the echo agent and no platform, listening on a free port.
fn plain_config(dir: &Path) -> (std::path::PathBuf, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  data_dir: {}\n  listen: {listen}\nagent:\n  backend: echo\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    (cfg, listen)
}

/// Waits until the gateway answers `/health` (its readiness signal).
async fn wait_health(listen: &str, child: &mut std::process::Child) {
    let url = format!("http://{listen}/health");
    let up = eventually(Duration::from_secs(30), || async {
        reqwest::get(&url).await.is_ok()
    })
    .await;
    assert!(up, "no /health; exited: {:?}", child.try_wait());
}

fn sigterm(child: &std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// With stderr a pipe whose reader is gone, every log line fails to write; SIGTERM must still
/// stop the gateway, with exit 0.
#[tokio::test]
async fn sigterm_with_a_closed_stderr_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, listen) = plain_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    wait_health(&listen, &mut child).await;
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Logs to a pipe carry no ANSI escapes, even with a `TERM` that supports colour.
#[tokio::test]
async fn logs_to_a_pipe_have_no_colour_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, listen) = plain_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_health(&listen, &mut child).await;
    sigterm(&child);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Gateway starting"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log:\n{log:?}"
    );
}

/// Under umask 022 (files 0644, dirs 0755 by default) the data dir is 0700 and the database,
/// its WAL files, the lock and the admin file 0600.
#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_0700_and_its_files_0600_under_umask_022() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, listen) = plain_config(dir.path());
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" run -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_gateway"))
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_health(&listen, &mut child).await;
    let data = dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let admin = data.join("admin.json");
    assert!(
        eventually(Duration::from_secs(10), || async { admin.exists() }).await,
        "no admin.json"
    );
    assert_eq!(mode(&data), 0o700, "data dir");
    for name in [
        "gateway.db",
        "gateway.db-wal",
        "gateway.db-shm",
        "gateway.lock",
        "admin.json",
    ] {
        let p = data.join(name);
        assert!(p.exists(), "{name} missing");
        assert_eq!(mode(&p), 0o600, "{name}: {:o}", mode(&p));
    }
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A config with the echo agent, `listen` and, if given, the callback app of `wecom` on `port`.
fn config_with(dir: &Path, listen: &str, app: Option<(&Wecom, u16)>) -> std::path::PathBuf {
    let mut yaml = format!(
        "gateway:\n  data_dir: {}\n  listen: {listen}\nagent:\n  backend: echo\n",
        dir.join("data").display()
    );
    if let Some((wecom, port)) = app {
        let mut extra = wecom.app.config();
        extra["host"] = "127.0.0.1".into();
        extra["port"] = port.into();
        extra["api_base_url"] = wecom.emu.base_url().into();
        yaml.push_str(&format!(
            "platforms:\n  wecom_callback:\n    extra: {extra}\n"
        ));
    }
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    cfg
}

/// Runs the binary with `args` on a blocking thread (the in-process emulator keeps answering)
/// and returns its exit code and stderr; fails if it runs longer than a minute.
async fn run_to_end(args: Vec<String>) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`gateway {}` did not exit", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    })
    .await
    .unwrap()
}

fn args(words: &[&str], config: &Path) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    v.push("-c".into());
    v.push(config.display().to_string());
    v
}

/// A taken `gateway.listen` and a taken callback port end the same way: exit 1 at once, with
/// the hint that another gateway may hold it (before, the callback port was retried for ever
/// and the gateway ran half-started).
#[tokio::test]
async fn a_taken_listen_or_callback_port_exits_1_with_the_same_hint() {
    let wecom = Wecom::start().await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(dir.path(), &format!("127.0.0.1:{taken}"), None);
    let (code, out) = run_to_end(args(&["run"], &cfg)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("gateway.listen"), "{out}");
    assert!(out.contains("Another gateway may be running"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = config_with(dir.path(), &listen, Some((&wecom, taken)));
    let (code, out) = run_to_end(args(&["run"], &cfg)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("platforms.wecom_callback"), "{out}");
    assert!(out.contains("Another gateway may be running"), "{out}");
    drop(held);
}

/// `gateway send` with no gateway running talks to the REST API only: it succeeds while
/// another process holds the callback port, and binds nothing.
#[tokio::test]
async fn a_direct_send_binds_no_callback_listener() {
    let wecom = Wecom::start().await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = config_with(dir.path(), &listen, Some((&wecom, taken)));
    let words = [
        "send",
        "--platform",
        "wecom_callback",
        "--to",
        "user:alice",
        "--text",
        "sent directly",
    ];
    let (code, out) = run_to_end(args(&words, &cfg)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        wecom
            .emu
            .sent_contents()
            .iter()
            .any(|(to, text)| to == "alice" && text == "sent directly"),
        "{:?}",
        wecom.emu.sent_contents()
    );
    drop(held);
}

/// A message type is the sender's text: one carrying a newline and a fake log line must reach
/// the log escaped, on one line, so nobody can forge an entry.
#[tokio::test]
async fn a_crafted_message_type_cannot_forge_a_log_line() {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &wecom, &Setup::FAST).await;
    let forged = "2026-01-01T00:00:00.000000Z ERROR forged entry";
    let xml = wecom.app.text_xml("mallory", "hi", 90_001).replace(
        "<MsgType><![CDATA[text]]></MsgType>",
        &format!("<MsgType><![CDATA[hologram\n{forged}]]></MsgType>"),
    );
    assert!(xml.contains("hologram"), "the type was not replaced: {xml}");
    let signed = wecom.app.sign_post(&xml);
    deliver(&wecom.callback_url(&signed), &signed).await;
    let seen = eventually(Duration::from_secs(20), || async {
        gw.log_text().contains("hologram")
    })
    .await;
    let log = gw.log_text();
    gw.stop().await;
    assert!(seen, "the unknown type was not logged:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a forged line reached the log:\n{log}"
    );
    assert!(log.contains("hologram\\n2026"), "not escaped:\n{log}");
}

/// A bot whose server cannot be reached: each start retry is one WARN line with its real
/// attempt number and delay and a network/proxy hint; no ERROR, and no second retry loop
/// inside the adapter claiming "attempt 1" every time.
#[tokio::test]
async fn start_retries_are_warnings_with_their_real_attempt_and_delay() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  data_dir: {}\n  listen: {listen}\nagent:\n  backend: echo\n\
             platforms:\n  wecom:\n    extra: {{bot_id: b1, secret: retry-test-secret, \
             websocket_url: \"ws://127.0.0.1:{closed}\"}}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("gateway.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // The second retry comes after the first delay (2 s): its line is the signal.
    let seen = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("(attempt 2)")
    })
    .await;
    sigterm(&child);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(seen && status.success(), "{status:?}\n{log}");
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed to start; retrying"))
        .collect();
    assert!(
        retries[0].contains(" WARN ") && retries[0].contains("retrying in 2 s (attempt 1)"),
        "{log}"
    );
    assert!(
        retries[1].contains(" WARN ") && retries[1].contains("retrying in 5 s (attempt 2)"),
        "{log}"
    );
    assert!(log.contains("HTTPS_PROXY"), "no network hint:\n{log}");
    assert!(!log.contains(" ERROR "), "{log}");
    assert!(!log.contains("Reconnecting to WeCom"), "{log}");
}
