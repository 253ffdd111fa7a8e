//! Acceptance 1 (subscribe, device id, auth failure), pre-ACK frames, the proxy, and two bots
//! side by side (acceptance 6, second half).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wecom_emulator::openws::{Chat, OpenWs};

use super::support::TestGateway;
use super::{health_of, instance, poll_http, registry, start, yaml};

#[tokio::test]
async fn subscribe_carries_the_credentials_as_the_official_client_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    let first = emu.subscribes()[0].clone();
    assert_eq!(
        (first.bot_id.as_str(), first.secret.as_str()),
        ("bot-1", "secret-1")
    );
    assert!(
        first.device_id.is_empty(),
        "no device_id in the body (§0 item 1)"
    );
    let sub = &emu.frames()[0];
    assert_eq!(
        sub.body(),
        &serde_json::json!({"bot_id": "bot-1", "secret": "secret-1"})
    );
    assert!(
        sub.req_id().starts_with("aibot_subscribe_"),
        "{}",
        sub.req_id()
    );

    // A dropped socket: reconnect with the same body, then still serving.
    assert!(emu.drop_connection());
    let subs = emu.wait_subscribed(2).await;
    assert_ne!(subs[1].conn, subs[0].conn);
    let p = emu.push_text(Chat::dm("alice"), "after reconnect");
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: after reconnect"
    );
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

/// Refused credentials: retried after 1, 2, 4, 8 and 16 s as the SDK does, then given up with
/// `auth_failed` and a hint in /health — six subscribes in all, not an endless loop (§6.4).
#[tokio::test(start_paused = true)]
async fn a_wrong_secret_is_retried_five_times_then_shows_as_auth_failed() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-1", "secret-1")
        .patience(std::time::Duration::from_secs(900))
        .start()
        .await;
    let y = yaml(
        "",
        "",
        &instance("wecom", &emu.url(), "bot-1", "not-the-secret", ""),
    );
    let gw = super::PausedGateway::start(dir.path(), &y, &emu).await;
    emu.wait_for("six subscribes", |f| {
        f.iter().filter(|r| r.cmd() == "aibot_subscribe").count() >= 6
    })
    .await;
    // An hour later: still six, and the instance says why.
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    let subs = emu.subscribes();
    assert_eq!(subs.len(), 6, "retried five times, then given up");
    assert!(subs.iter().all(|s| !s.accepted));
    let h = gw.health("wecom").await;
    assert_eq!(h["state"], "auth_failed", "{h}");
    assert!(h["hint"].as_str().unwrap().contains("secret"), "{h}");
    assert!(h["last_error"].as_str().unwrap().contains("40013"), "{h}");
    assert!(!h.to_string().contains("not-the-secret"), "{h}");
    gw.stop().await;
}

#[tokio::test]
async fn the_real_binary_logs_an_auth_failure() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "gateway:\n  data_dir: {}\n  listen: 127.0.0.1:{port}\n{}",
        dir.path().join("data").display(),
        yaml(
            "",
            "",
            &instance("wecom", &emu.url(), "bot-1", "wrong-secret-xyz", "")
        )
    );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Logs go to stdout or stderr depending on the logging setup: read both.
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        }));
    }
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("WeCom refused the subscribe"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    let _ = child.kill();
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    let log = lines.lock().unwrap().join("\n");
    assert!(found.is_ok(), "no auth failure in the log:\n{log}");
    assert!(
        !log.contains("wrong-secret-xyz"),
        "the secret must never be logged"
    );
    let body = health.unwrap().text().await.unwrap();
    let h = health_of(&body, "wecom");
    assert!(
        h["last_error"].as_str().unwrap_or("").contains("40013"),
        "{body}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("WeCom refused the subscribe"))
        .unwrap();
    assert!(
        line.contains(" WARN ") && line.contains("refusal 1"),
        "{line}"
    );
}

#[tokio::test]
async fn callbacks_that_arrive_before_the_subscribe_ack_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    // Pushed while no connection exists: the emulator sends it right before the ACK.
    let p = emu.push_text(Chat::dm("early"), "first!");
    let gw = start(&emu, dir.path(), "", "").await;
    assert_eq!(emu.expect_reply(&p.req_id).await.text(), "echo: first!");
    gw.stop().await;
}

/// A minimal HTTP CONNECT proxy; records the CONNECT lines it served.
async fn connect_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if client.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_owned());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_configured_proxy_carries_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let (proxy, seen) = connect_proxy().await;
    let gw = start(&emu, dir.path(), "", &format!("      proxy: \"{proxy}\"\n")).await;
    let port = emu.url().rsplit(':').next().unwrap().to_owned();
    assert_eq!(
        seen.lock().unwrap()[0],
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1")
    );
    let p = emu.push_text(Chat::dm("alice"), "through the proxy");
    assert_eq!(
        emu.expect_reply(&p.req_id).await.text(),
        "echo: through the proxy"
    );
    gw.stop().await;
}

#[tokio::test]
async fn two_bots_run_side_by_side_without_crossing_messages() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder()
        .bot("bot-a", "secret-a")
        .bot("bot-b", "secret-b")
        .start()
        .await;
    let platforms = format!(
        "{}{}",
        instance("sales", &emu.url(), "bot-a", "secret-a", ""),
        instance("support", &emu.url(), "bot-b", "secret-b", "")
    );
    let gw = TestGateway::start_with(dir.path(), &yaml("", "", &platforms), &registry()).await;
    emu.bot("bot-a").wait_subscribed(1).await;
    emu.bot("bot-b").wait_subscribed(1).await;
    // The same user, in both bots, at the same time; a group with the same id in both.
    let pa = emu.bot("bot-a").push_text(Chat::dm("alice"), "to sales");
    let pb = emu.bot("bot-b").push_text(Chat::dm("alice"), "to support");
    let ga = emu
        .bot("bot-a")
        .push_text(Chat::group("g1", "bob"), "@sales hi");
    let gb = emu
        .bot("bot-b")
        .push_text(Chat::group("g1", "bob"), "@support hi");
    for (p, bot, text) in [
        (&pa, "bot-a", "echo: to sales"),
        (&pb, "bot-b", "echo: to support"),
        (&ga, "bot-a", "echo: hi"),
        (&gb, "bot-b", "echo: hi"),
    ] {
        let r = emu.expect_reply(&p.req_id).await;
        assert_eq!(r.text(), text);
        assert!(
            r.frames.iter().all(|f| f.bot.as_deref() == Some(bot)),
            "reply on the wrong connection"
        );
    }
    let health = poll_http(gw.http, "/health", "both up", |b| {
        b.matches("\"connected\"").count() == 2
    })
    .await;
    assert_eq!(health_of(&health, "sales")["state"], "connected");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    gw.stop().await;
}

#[tokio::test]
async fn protocol_pings_from_the_server_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let gw = start(&emu, dir.path(), "", "").await;
    assert!(emu.ws_ping());
    emu.wait_pongs(1).await;
    gw.stop().await;
}

#[test]
fn every_config_key_is_in_the_example_config_and_the_readme() {
    use gateway_core::AdapterFactory;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config.example.yaml")).unwrap();
    let block =
        &example[example.find("# >>> wecom\n").unwrap()..example.find("# <<< wecom\n").unwrap()];
    let readme = std::fs::read_to_string(root.join("adapters/wecom/README.md")).unwrap();
    for key in wecom::WeComFactory.config_keys() {
        assert!(
            block.contains(&format!("{}:", key.name)),
            "{} missing from config.example.yaml",
            key.name
        );
        assert!(
            readme.contains(&format!("| `{}` |", key.name)),
            "{} missing from the README table",
            key.name
        );
        if let Some(env) = key.env {
            assert!(
                block.contains(env) && readme.contains(env),
                "{env} undocumented"
            );
        }
    }
}
