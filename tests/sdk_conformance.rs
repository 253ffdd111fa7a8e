//! The official WeCom client as a conformance client of our openws emulator (issue 11,
//! acceptance 3). `tests/conformance/sdk_client.mjs` drives `@wecom/aibot-node-sdk` (pinned in
//! `tests/conformance/package.json`, locked in `package-lock.json`) against the emulator; this
//! test plays the WeCom user and then checks that the emulator accepted every frame the SDK sent
//! and recorded no violation. Frame shapes: reference `wecom-aibot-official.md` §2.
//!
//! Needs Node (18 or later); the SDK is installed from the lock file on first run (`npm ci
//! --prefix tests/conformance`, which `.ci/run` also does). In CI a missing Node or SDK fails the
//! test; elsewhere it prints plainly that it did not run and why.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use wecom_emulator::openws::{Chat, OpenWs, Received};

const BOT: &str = "conformance-bot";
const SECRET: &str = "conformance-secret";
const DM_USER: &str = "alice";
const GROUP: &str = "grp-conformance";
const GROUP_USER: &str = "bob";
/// The key of the button the script's card carries; the tap names it.
const BUTTON_KEY: &str = "btn_confirm";
/// Upload size: more than two 512 KiB chunks, so the SDK sends three (all in parallel, §2.7).
const UPLOAD_BYTES: usize = 1_300_000;
const UPLOAD_CHUNK: usize = 512 * 1024;
/// Steps the script reports as `ok <step>`, in the order it runs them.
const STEPS: [&str; 12] = [
    "subscribe",
    "heartbeat",
    "dm_received",
    "group_received",
    "stream_reply",
    "card_reply",
    "card_update",
    "upload",
    "send_dm_markdown",
    "send_dm_file",
    "send_group_markdown",
    "send_group_card",
];
/// How long the script may take to say `READY`, and to finish after that.
const READY_WAIT: Duration = Duration::from_secs(30);
const RUN_WAIT: Duration = Duration::from_secs(120);

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// Whether the test can run: Node on PATH and the locked SDK in `node_modules`, which it installs
/// itself (`npm ci`, from the lock file) when missing or stale. In CI (`CI=true`) anything
/// missing is a failure naming the fix (`.ci/run` installs both); on a developer's machine
/// without Node or without access to the npm registry the test says plainly that it did not
/// run, and why, instead of failing the whole suite of a fresh checkout.
fn preflight(dir: &Path) -> bool {
    let fix = "npm ci --prefix tests/conformance";
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let cannot = |why: String| -> bool {
        if ci {
            panic!(
                "CI=true and the SDK conformance test cannot run: {why}. .ci/run should have \
                 installed Node (apt-get install -y nodejs npm) and run `{fix}`."
            );
        }
        // Written past the test harness's capture, so it shows in a plain `cargo test`.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "NOT RUN: the official SDK conformance test needs {why}. Install Node 18+ and npm \
             (Debian: `sudo apt-get install -y nodejs npm`) and run `{fix}`; CI always runs it."
        );
        false
    };
    let node = std::process::Command::new("node").arg("--version").output();
    if !matches!(node, Ok(ref out) if out.status.success()) {
        return cannot("`node` on PATH".into());
    }
    let wanted: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("package.json")).expect("tests/conformance/package.json"),
    )
    .expect("package.json is JSON");
    let wanted = wanted["dependencies"]["@wecom/aibot-node-sdk"]
        .as_str()
        .expect("package.json pins @wecom/aibot-node-sdk")
        .to_owned();
    let installed_version = || -> Option<String> {
        let text =
            std::fs::read_to_string(dir.join("node_modules/@wecom/aibot-node-sdk/package.json"))
                .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["version"].as_str().map(str::to_owned)
    };
    // Missing, or another version than the lock file names: install exactly what it pins.
    if installed_version().as_deref() != Some(wanted.as_str()) {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return cannot(format!(
                    "the SDK from the npm registry, and `{fix}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return cannot(format!("`npm` on PATH ({e})")),
        }
    }
    assert_eq!(
        installed_version().as_deref(),
        Some(wanted.as_str()),
        "`{fix}` did not install the SDK version package.json pins"
    );
    true
}

/// Deterministic bytes that do not compress to nothing (xorshift), so chunk boundaries matter.
fn upload_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..UPLOAD_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A frame for the failure report, with upload chunk data shortened to its length.
fn summary(r: &Received) -> String {
    let mut f = r.frame.clone();
    if let Some(data) = f["body"]["base64_data"].as_str() {
        f["body"]["base64_data"] = Value::String(format!("<{} base64 chars>", data.len()));
    }
    format!("conn {} answered {:?}: {f}", r.conn, r.answered)
}

/// Polls the emulator's log (every 50 ms, up to `wait`) for the first frame matching `pred`.
async fn wait_frame(
    emu: &OpenWs,
    wait: Duration,
    pred: impl Fn(&Received) -> bool,
) -> Option<Received> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(r) = emu.frames().into_iter().find(&pred) {
            return Some(r);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the script's stdout line by line: each line goes to `tx` as it arrives.
fn forward_lines(out: tokio::process::ChildStdout, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

#[tokio::test]
async fn official_sdk_is_accepted_by_the_emulator() {
    let dir = conformance_dir();
    if !preflight(&dir) {
        return;
    }

    let emu = OpenWs::builder().bot(BOT, SECRET).start().await;
    let tmp = tempfile::tempdir().unwrap();
    let upload_path = tmp.path().join("conformance.bin");
    let bytes = upload_bytes();
    std::fs::write(&upload_path, &bytes).unwrap();

    let mut child = tokio::process::Command::new("node")
        .arg("sdk_client.mjs")
        .current_dir(&dir)
        .env("WECOM_WS_URL", emu.url())
        .env("WECOM_BOT_ID", BOT)
        .env("WECOM_SECRET", SECRET)
        .env("CONFORMANCE_UPLOAD", &upload_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node tests/conformance/sdk_client.mjs");
    let (tx, mut rx) = mpsc::unbounded_channel();
    forward_lines(child.stdout.take().unwrap(), tx);
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });

    let mut lines: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    // Explicit readiness: the script prints READY once its subscribe was acknowledged.
    let ready = tokio::time::timeout(READY_WAIT, async {
        while let Some(line) = rx.recv().await {
            let done = line == "READY";
            lines.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        problems.push(format!(
            "the script never printed READY within {READY_WAIT:?}"
        ));
    } else {
        // The user: one DM and one group message, then a tap on the card the group got.
        let dm = emu.push_text(Chat::dm(DM_USER), "conformance: a DM");
        let grp = emu.push_text(
            Chat::group(GROUP, GROUP_USER),
            "conformance: a group message",
        );
        let card = wait_frame(&emu, Duration::from_secs(20), |r| {
            r.cmd() == "aibot_respond_msg"
                && r.req_id() == grp.req_id
                && r.body()["msgtype"] == "template_card"
        })
        .await;
        let tap = match card {
            Some(card) => {
                let task_id = card.body()["template_card"]["task_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let tap = emu.card_click(Chat::group(GROUP, GROUP_USER), &task_id, BUTTON_KEY);
                Some((tap, task_id))
            }
            None => {
                problems.push("no template_card reply on the group message's req_id".into());
                None
            }
        };

        let exit = tokio::time::timeout(RUN_WAIT, child.wait()).await;
        match exit {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => problems.push(format!("the script exited with {status}")),
            Ok(Err(e)) => problems.push(format!("waiting for the script: {e}")),
            Err(_) => problems.push(format!("the script did not finish within {RUN_WAIT:?}")),
        }
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            lines.push(line);
        }
        for step in STEPS {
            let prefix = format!("ok {step}");
            if !lines
                .iter()
                .any(|l| l == &prefix || l.starts_with(&format!("{prefix} ")))
            {
                problems.push(format!("the script did not complete step `{step}`"));
            }
        }
        check_frames(&emu, &dm.req_id, &grp.req_id, tap, &bytes, &mut problems);
    }
    let _ = child.kill().await;
    let stderr = stderr_task.await.unwrap_or_default();

    let violations = emu.violations();
    if !violations.is_empty() {
        problems.push(format!("{} emulator violation(s)", violations.len()));
    }
    assert!(
        problems.is_empty(),
        "the official SDK and the emulator disagree:\n- {}\n\nviolations:\n{:#?}\n\nframes the \
         emulator received:\n{}\n\nscript stdout:\n{}\n\nscript stderr:\n{stderr}",
        problems.join("\n- "),
        violations,
        emu.frames()
            .iter()
            .map(summary)
            .collect::<Vec<_>>()
            .join("\n"),
        lines.join("\n"),
    );
}

/// The emulator's side of every step: each frame kind present and answered errcode 0.
fn check_frames(
    emu: &OpenWs,
    dm_req: &str,
    grp_req: &str,
    tap: Option<(wecom_emulator::openws::Pushed, String)>,
    bytes: &[u8],
    problems: &mut Vec<String>,
) {
    let frames = emu.frames();
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            problems.push(format!("missing: {what}"));
        }
    };
    // Subscribe and heartbeat.
    expect(
        "an accepted aibot_subscribe",
        emu.subscribes()
            .iter()
            .any(|s| s.accepted && s.bot_id == BOT),
    );
    expect(
        "a ping answered errcode 0",
        frames.iter().any(|r| r.cmd() == "ping" && r.accepted()),
    );
    // The DM: one stream, several intermediate frames, then one final frame, all accepted.
    let stream: Vec<&Received> = frames
        .iter()
        .filter(|r| r.cmd() == "aibot_respond_msg" && r.req_id() == dm_req)
        .collect();
    let ids: std::collections::HashSet<&str> = stream
        .iter()
        .filter_map(|r| r.body()["stream"]["id"].as_str())
        .collect();
    let finals = stream
        .iter()
        .filter(|r| r.body()["stream"]["finish"] == true)
        .count();
    expect(
        "a streamed DM reply: ≥3 intermediate frames then one final frame, one stream id",
        stream.len() >= 4
            && stream.iter().all(|r| r.body()["msgtype"] == "stream")
            && ids.len() == 1
            && finals == 1
            && stream
                .last()
                .is_some_and(|r| r.body()["stream"]["finish"] == true),
    );
    expect(
        "every DM stream frame answered errcode 0",
        !stream.is_empty() && stream.iter().all(|r| r.accepted()),
    );
    // The group: a passive template card, then its update on the tap's req_id.
    expect(
        "a template_card reply on the group message's req_id answered errcode 0",
        frames.iter().any(|r| {
            r.cmd() == "aibot_respond_msg"
                && r.req_id() == grp_req
                && r.body()["msgtype"] == "template_card"
                && r.accepted()
        }),
    );
    let updated = tap.is_some_and(|(tap, task_id)| {
        frames.iter().any(|r| {
            r.cmd() == "aibot_respond_update_msg"
                && r.req_id() == tap.req_id
                && r.body()["response_type"] == "update_template_card"
                && r.body()["template_card"]["task_id"] == task_id.as_str()
                && r.accepted()
        })
    });
    expect(
        "an aibot_respond_update_msg on the tap's req_id answered errcode 0",
        updated,
    );
    // The upload: init, one chunk per 512 KiB, finish; the emulator reassembled the file.
    let chunks = bytes.len().div_ceil(UPLOAD_CHUNK);
    for (cmd, n) in [
        ("aibot_upload_media_init", 1),
        ("aibot_upload_media_chunk", chunks),
        ("aibot_upload_media_finish", 1),
    ] {
        let accepted = frames
            .iter()
            .filter(|r| r.cmd() == cmd && r.accepted())
            .count();
        expect(
            &format!("{n} × {cmd} answered errcode 0 (got {accepted})"),
            accepted == n,
        );
    }
    let uploads = emu.uploads();
    expect(
        &format!(
            "one finished upload of {} bytes in {chunks} chunks",
            bytes.len()
        ),
        uploads.len() == 1 && uploads[0].bytes == bytes && uploads[0].chunks.len() == chunks,
    );
    // Proactive sends to the DM user and to the group chat.
    for (chat, msgtype) in [
        (DM_USER, "markdown"),
        (DM_USER, "file"),
        (GROUP, "markdown"),
        (GROUP, "template_card"),
    ] {
        expect(
            &format!("aibot_send_msg {msgtype} to {chat} answered errcode 0"),
            frames.iter().any(|r| {
                r.cmd() == "aibot_send_msg"
                    && r.body()["chatid"] == chat
                    && r.body()["msgtype"] == msgtype
                    && r.accepted()
            }),
        );
    }
    // Nothing the official client sent may be refused.
    for r in frames.iter().filter(|r| !r.accepted()) {
        problems.push(format!("refused or unanswered: {}", summary(r)));
    }
}
