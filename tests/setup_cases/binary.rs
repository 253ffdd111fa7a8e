//! The real binary: `--non-interactive` flags and one run in a pseudo-terminal.

use super::*;

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
    // --secret-env writes the reference, never the value.
    assert_eq!(
        v["platforms"]["wecom_callback"]["extra"]["corp_secret"],
        "${MY_SECRET}"
    );
    assert!(
        !std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("from-the-env"),
        "the secret value was written to the file"
    );
    assert_eq!(v["agent"]["model"], "qwen2.5");

    let check = gateway(dir.path())
        .args(["check", "-c", "config.yaml"])
        .env("OLLAMA_KEY", "k")
        .env("MY_SECRET", "from-the-env")
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
