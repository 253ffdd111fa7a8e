//! `gateway sandbox --script`: the real binary plays a conversation against the emulated WeCom
//! (both adapters) and prints the transcript.

use std::path::Path;
use std::process::{Command, Stdio};

use sha2::Digest as _;

#[test]
fn the_demo_script_shows_a_streamed_wecom_reply_and_a_callback_reply() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["sandbox", "--script"])
        .arg(root.join("tests/fixtures/sandbox-demo.txt"))
        .current_dir(home.path())
        .env("HOME", home.path())
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{transcript}");

    let note = std::fs::read(root.join("tests/fixtures/sandbox-note.txt")).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&note));
    let attachment = format!(
        "[file sandbox-note.txt {} bytes sha256:{}]",
        note.len(),
        &sha[..16]
    );

    let wecom = transcript.split("── wecom_callback").next().unwrap();
    let callback = transcript
        .split("── wecom_callback")
        .nth(1)
        .expect("no callback section");
    // The AI Bot answer streamed: a partial update with text, then the final bubble.
    assert!(wecom.contains("── wecom · dm · alice ──"), "{transcript}");
    assert!(
        wecom.lines().any(|l| l.starts_with("  … echo:")),
        "no streamed update:\n{transcript}"
    );
    assert!(
        wecom.contains("bot> echo: hello from the AI Bot side"),
        "{transcript}"
    );
    assert!(
        wecom.contains(&attachment),
        "the file did not arrive intact:\n{transcript}"
    );
    assert!(
        wecom.contains("bot> echo: what does the team think?"),
        "{transcript}"
    );
    assert!(wecom.contains("instance: wecom"), "{transcript}");
    // The self-built app answers through message/send.
    assert!(
        callback.contains("bot> echo: hello from the self-built app"),
        "{transcript}"
    );
    assert!(callback.contains(&attachment), "{transcript}");
    assert!(callback.contains("/new (or /reset)"), "{transcript}");
}
