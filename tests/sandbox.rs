//! `gateway sandbox`: the real binary against the emulated WeCom (both adapters). A script
//! prints its transcript; the interactive chat is driven over pipes (plain lines, input live
//! while answers stream, Ctrl-C) and in a pseudo-terminal (updates drawn in place).
//!
//! Nothing here sleeps to wait: every step waits for a line the sandbox prints, with a deadline
//! generous enough for a loaded machine.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The longest wait for one expected line.
const DEADLINE: Duration = Duration::from_secs(90);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `gateway sandbox` in a temporary home, without the caller's config or log settings.
fn sandbox_command(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("sandbox")
        .current_dir(home)
        .env("HOME", home)
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    cmd
}

/// The interactive sandbox on pipes: lines in, every output line collected as it comes.
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything read so far (for assertions and failure messages).
    seen: Vec<String>,
    _home: tempfile::TempDir,
}

impl Piped {
    /// Starts it (with `-c config` when given) and waits for the first chat heading.
    fn start(config: Option<PathBuf>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = sandbox_command(home.path());
        if let Some(config) = config {
            cmd.arg("-c").arg(config);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut me = Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            _home: home,
        };
        // The heading comes after the Ctrl-C handler is installed: signals are safe from here.
        me.wait_for(|l| l == "── wecom · dm · alice ──");
        me
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Reads lines until one satisfies `pred`; returns its index in `seen`.
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> usize {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line);
                    if hit {
                        return self.seen.len() - 1;
                    }
                }
                Err(e) => panic!("{e:?} while waiting; output so far:\n{}", self.transcript()),
            }
        }
    }

    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end on its own; returns its success and the whole output.
    fn wait_exit(mut self) -> (bool, String) {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The rest of the output: the reader ends at end of stream.
                while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
                    self.seen.push(line);
                }
                return (status.success(), self.transcript());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("the sandbox did not exit:\n{}", self.transcript());
            }
            // The exit is polled; output is read meanwhile so the pipe never fills.
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line);
            }
        }
    }

    /// Closes stdin (end of input).
    fn close(&mut self) {
        self.stdin = None;
    }

    fn transcript(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Piped output is plain: no escape codes and no carriage returns.
fn assert_plain(transcript: &str) {
    assert!(
        !transcript.contains('\x1b') && !transcript.contains('\r'),
        "escape codes in piped output:\n{transcript:?}"
    );
}

fn slow_agent() -> Option<PathBuf> {
    Some(root().join("tests/fixtures/sandbox-slow.yaml"))
}

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

#[test]
fn a_bad_attachment_path_is_an_error_line_and_the_session_goes_on() {
    let home = tempfile::tempdir().unwrap();
    let out = sandbox_command(home.path())
        .arg("--script")
        .arg(root().join("tests/fixtures/sandbox-bad-files.txt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = transcript
        .lines()
        .filter(|l| l.starts_with("(cannot send "))
        .collect();
    assert_eq!(errors.len(), 3, "{transcript}");
    assert!(errors[0].contains("no-such-file.txt"), "{transcript}");
    assert!(errors[1].contains("directory"), "{transcript}");
    assert!(
        transcript.contains("bot> echo: still here after the bad files"),
        "{transcript}"
    );
    assert_plain(&transcript);
}

#[test]
fn a_bad_attachment_in_the_interactive_chat_is_an_error_line_too() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked.txt");
    std::fs::write(&locked, "secret").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut s = Piped::start(None);
    s.send(&format!(":file {}", dir.path().display()));
    s.wait_for(|l| l.starts_with("(cannot send ") && l.contains("directory"));
    s.send(":image /no/such/picture.png");
    s.wait_for(|l| l.starts_with("(cannot send /no/such/picture.png"));
    // Root reads any file: the unreadable case only means something for other users.
    if std::fs::File::open(&locked).is_err() {
        s.send(&format!(":file {}", locked.display()));
        s.wait_for(|l| l.starts_with("(cannot send ") && l.contains("locked.txt"));
    }
    s.send("still chatting");
    s.wait_for(|l| l == "bot> echo: still chatting");
    s.close();
    let (ok, transcript) = s.wait_exit();
    assert!(ok, "{transcript}");
    assert_plain(&transcript);
}

#[test]
fn input_stays_live_while_an_answer_streams_so_messages_queue_and_stop_works() {
    let mut s = Piped::start(slow_agent());
    s.send("first");
    // The answer has started (its first piece) and takes another ten seconds or more.
    s.wait_for(|l| l.starts_with("  … echo:"));
    s.send("second");
    s.wait_for(|l| l.contains("Queued (position 1)"));
    s.send("/stop");
    s.wait_for(|l| l.contains("⏹ Stopped; 1 queued message(s) dropped."));
    s.wait_for(|l| l.contains("⏹ Stopped."));
    let transcript = s.transcript();
    assert!(
        !transcript.contains("bot> echo: first") && !transcript.contains("echo: second"),
        "the answer finished before the next lines were read:\n{transcript}"
    );
    s.close();
    let (ok, transcript) = s.wait_exit();
    assert!(ok, "{transcript}");
    assert!(!transcript.contains("echo: second"), "{transcript}");
    assert_plain(&transcript);
}

#[test]
fn ctrl_c_stops_the_answer_and_a_second_ctrl_c_leaves() {
    let mut s = Piped::start(slow_agent());
    s.send("take your time");
    s.wait_for(|l| l.starts_with("  … echo:"));
    s.interrupt();
    // The first Ctrl-C sent /stop: the gateway confirms and the bubble ends as stopped.
    s.wait_for(|l| l.contains("Stopping the current answer"));
    s.wait_for(|l| l.contains("⏹ Stopped."));
    assert!(
        !s.transcript().contains("bot> echo: take your time"),
        "{}",
        s.transcript()
    );
    s.interrupt();
    let (ok, transcript) = s.wait_exit();
    assert!(
        ok,
        "the second Ctrl-C must leave with exit 0:\n{transcript}"
    );
    assert!(transcript.contains("(leaving the sandbox)"), "{transcript}");
    assert_plain(&transcript);
}

#[test]
fn ctrl_c_with_nothing_to_stop_leaves_at_once() {
    let s = Piped::start(None);
    s.interrupt();
    let (ok, transcript) = s.wait_exit();
    assert!(ok, "{transcript}");
    assert!(transcript.contains("(leaving the sandbox)"), "{transcript}");
}

/// A line of `n` characters that shows any cut or reordering (letters and a position mark).
fn long_line(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i % 100 == 0 {
                char::from(b'0' + ((i / 100) % 10) as u8)
            } else {
                char::from(b'a' + (i % 26) as u8)
            }
        })
        .collect()
}

#[test]
fn a_long_piped_line_reaches_the_bot_whole() {
    let line = long_line(10_000);
    let mut s = Piped::start(None);
    s.send(&line);
    let at = s.wait_for(|l| l.starts_with("bot> echo: "));
    assert_eq!(
        s.seen[at].len(),
        "bot> echo: ".len() + line.len(),
        "the line was cut"
    );
    assert_eq!(s.seen[at], format!("bot> echo: {line}"));
    s.close();
    let (ok, transcript) = s.wait_exit();
    assert!(ok);
    assert_plain(&transcript);
}

/// The interactive sandbox in a pseudo-terminal.
fn pty_sandbox(home: &Path) -> rexpect::session::PtySession {
    let cmd = sandbox_command(home);
    let mut p = rexpect::session::spawn_command(cmd, Some(DEADLINE.as_millis() as u64)).unwrap();
    // rexpect reads bytes one by one as characters: wait for ASCII parts of the heading.
    p.exp_string("/status, /whoami).").unwrap();
    p.exp_string(" alice ").unwrap();
    p
}

/// How rexpect shows `text` (each UTF-8 byte as a character of its own).
fn as_bytes_read(text: &str) -> String {
    text.bytes().map(char::from).collect()
}

#[test]
fn on_a_terminal_the_streaming_bubble_is_updated_in_place() {
    let home = tempfile::tempdir().unwrap();
    let mut p = pty_sandbox(home.path());
    p.send_line("hello in place").unwrap();
    let before = p.exp_string("bot> echo: hello in place").unwrap();
    // The partial bubble is drawn on the live line: return, erase, then the text.
    assert!(
        before.contains(&as_bytes_read("\r\x1b[J  … ")),
        "no in-place update:\n{before:?}"
    );
    // Ctrl-D on an empty line leaves.
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn a_long_line_typed_on_a_terminal_is_not_cut_at_the_kernel_line_limit() {
    let home = tempfile::tempdir().unwrap();
    let mut p = pty_sandbox(home.path());
    let line = long_line(10_000);
    p.send_line(&line).unwrap();
    p.exp_string("bot> echo: ").unwrap();
    let got = p.read_line().unwrap();
    assert_eq!(got.trim_end().len(), line.len(), "the line was cut");
    assert_eq!(got.trim_end(), line);
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}
