//! `gateway send` with the real binary against the openws emulator: through the running gateway
//! (no second subscribe, which would kick the live bot), and on its own when none runs.

use std::process::{Command, Stdio};
use std::time::Duration;

use wecom_emulator::openws::OpenWs;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn gateway(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null());
    cmd
}

/// Runs `gateway send ARGS -c CFG` off the async runtime (the test also runs the emulator).
async fn send(dir: &std::path::Path, cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    let (dir, cfg) = (dir.to_path_buf(), cfg.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        gateway(&dir)
            .arg("send")
            .args(&args)
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn send_goes_through_the_running_gateway_and_connects_itself_otherwise() {
    let emu = OpenWs::builder()
        .bot("bot-send", "secret-send")
        .start()
        .await;
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
            "gateway:\n  listen: 127.0.0.1:{port}\nplatforms:\n  wecom:\n    extra:\n      bot_id: bot-send\n      secret: secret-send\n      websocket_url: {}\n      dm_policy: allowlist\n      allow_from: [alice]\n",
            emu.url()
        ),
    )
    .unwrap();

    let mut run = gateway(dir.path())
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    emu.wait_subscribed(1).await;
    // Wait until the admin endpoint is published.
    for _ in 0..200 {
        if dir.path().join("data/admin.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let out = send(
        dir.path(),
        &cfg,
        &[
            "--platform",
            "wecom",
            "--to",
            "user:alice",
            "--text",
            "build is green",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("through the running gateway"), "{stdout}");
    let sent = emu.wait_sent("alice", 1).await;
    assert!(sent[0].body().to_string().contains("build is green"));
    assert_eq!(
        emu.subscribes().len(),
        1,
        "send must not open a second bot connection"
    );

    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());

    // No gateway: send subscribes itself, delivers, and leaves.
    let out = send(
        dir.path(),
        &cfg,
        &[
            "--platform",
            "wecom",
            "--to",
            "alice",
            "--markdown",
            "**nightly** done",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = emu.wait_sent("alice", 2).await;
    assert!(sent[1].body().to_string().contains("**nightly** done"));
    assert_eq!(emu.subscribes().len(), 2);

    // A target the platform cannot reach is a clear failure with exit code 1.
    let out = send(
        dir.path(),
        &cfg,
        &["--platform", "nope", "--to", "alice", "--text", "x"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No enabled platform instance named `nope`")
    );
}
