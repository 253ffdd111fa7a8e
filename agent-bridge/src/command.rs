//! The `command` backend: a local program speaking JSON lines.
//!
//! The gateway writes the turn as ONE line of JSON on the program's stdin (the schema of
//! [`crate::wire`], the same as the `http` backend's) and reads JSON lines from its stdout:
//!
//! ```text
//! {"type":"delta","text":"Hel","turn_id":"turn-3"}    a piece of the answer (any number)
//! {"type":"final","text":"Hello!","turn_id":"turn-3"} the full answer; ends the turn
//! {"type":"error","message":"quota","turn_id":"turn-3"} ends the turn with the agent's error
//! ```
//!
//! Blank lines and unknown `type`s are ignored; anything that is not a JSON object with a `type`
//! fails the turn. `turn_id` is optional; a line carrying another turn's id is skipped. Lines
//! are capped at 1 MiB and a turn's output at `max_output_bytes`. Stderr goes to the log at
//! debug level, line by line (cut at 4 KiB), and its last line is quoted when the program fails.
//!
//! - `per_turn` (default): a fresh process per turn; stdin is closed after the request line. The
//!   program may exit after its `final` line (it gets a few seconds before being killed).
//! - `persistent`: one long-lived process; turns are written one after another (never two at
//!   once) and answered in order. The process is started on the first turn and replaced after
//!   it exits or crashes, prints garbage, or a turn is abandoned (cancelled, timed out, or its
//!   stream dropped) — so a stopped turn really stops.
//!
//! Every child is spawned with `kill_on_drop`, so dropping a turn kills its process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::ConfigError;
use serde::Deserialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::config::{AgentConfig, CommandConfig, CommandMode, SecretMap};
use crate::driver::{spawn_turn, Emitter};
use crate::error::shorten;
use crate::lines::{read_line, LineTooLong};
use crate::transport::append_reply;
use crate::wire::TurnRequest;
use crate::{AgentBackend, AgentError, AgentStream, AgentTurn};

/// Longest stdout line accepted.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Stderr lines are cut to this length before logging.
const MAX_STDERR_LINE: usize = 4096;
/// How long a per-turn program may take to exit after its final answer before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long we wait for a program whose stdout closed to report its exit status.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The local-program backend.
pub struct CommandBackend {
    inner: Arc<Inner>,
}

struct Inner {
    program: String,
    args: Vec<String>,
    env: SecretMap,
    cwd: Option<PathBuf>,
    mode: CommandMode,
    timeout: Duration,
    max_output_bytes: u64,
    next_turn: AtomicU64,
    /// The persistent process; the lock also serialises persistent turns.
    persistent: Arc<Mutex<Option<Running>>>,
}

impl fmt::Debug for CommandBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        // Arguments and environment values may carry credentials: counts and names only.
        f.debug_struct("CommandBackend")
            .field("program", &i.program)
            .field("args", &i.args.len())
            .field("env", &i.env)
            .field("cwd", &i.cwd)
            .field("mode", &i.mode)
            .field("timeout", &i.timeout)
            .finish_non_exhaustive()
    }
}

impl CommandBackend {
    /// Builds the backend; checks that the program can be found and `cwd` is a directory.
    /// Starts nothing.
    pub fn new(cfg: &CommandConfig) -> Result<Self, Vec<ConfigError>> {
        let mut errors = AgentConfig::Command(cfg.clone()).validate();
        if let Some(cwd) = &cfg.cwd {
            if !cwd.is_dir() {
                errors.push(ConfigError::new(
                    "cwd",
                    format!("{} is not a directory", cwd.display()),
                ));
            }
        }
        let Some(program) = cfg.command.first().filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        if let Err(e) = find_program(program, cfg.cwd.as_deref()) {
            return Err(vec![ConfigError::new("command", e)]);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                program: program.clone(),
                args: cfg.command[1..].to_vec(),
                env: {
                    // The program's environment is where its credentials go: none of them may
                    // reach a log line or a chat through its stderr or error text.
                    for value in cfg.env.0.values() {
                        gateway_core::redact::register(value);
                    }
                    cfg.env.clone()
                },
                cwd: cfg.cwd.clone(),
                mode: cfg.mode,
                timeout: Duration::from_secs(cfg.timeout_secs),
                max_output_bytes: cfg.max_output_bytes,
                next_turn: AtomicU64::new(1),
                persistent: Arc::new(Mutex::new(None)),
            }),
        })
    }
}

#[async_trait]
impl AgentBackend for CommandBackend {
    fn name(&self) -> &str {
        "command"
    }

    async fn start(
        &self,
        turn: AgentTurn,
        cancel: CancellationToken,
    ) -> Result<AgentStream, AgentError> {
        let inner = Arc::clone(&self.inner);
        let turn_id = format!("turn-{}", inner.next_turn.fetch_add(1, Ordering::Relaxed));
        let mut line = TurnRequest::new(&turn_id, &turn)
            .to_json_line()
            .map_err(|e| AgentError::Protocol(format!("cannot encode the request: {e}")))?;
        line.push('\n');
        Ok(spawn_turn(
            "command",
            self.inner.timeout,
            cancel,
            move |em| async move {
                match inner.mode {
                    CommandMode::PerTurn => inner.run_per_turn(&turn_id, line, &em).await,
                    CommandMode::Persistent => inner.run_persistent(&turn_id, line, &em).await,
                }
            },
        ))
    }
}

/// A running program with its pipes.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Logs stderr; yields the last non-empty line when the pipe closes.
    stderr: Option<JoinHandle<Option<String>>>,
}

/// How reading a turn's answer ended, short of an answer.
enum ReadEnd {
    /// Stdout closed: the program exited (or closed it) before answering.
    Eof,
    /// The turn failed; `keep` says whether the process is still usable (an `error` line ends
    /// a turn cleanly, garbage does not).
    Failed { error: AgentError, keep: bool },
}

impl Inner {
    fn spawn(&self) -> Result<Running, AgentError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.0.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| AgentError::Process(format!("cannot start `{}`: {e}", self.program)))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(AgentError::Process(
                "the program's pipes are missing".into(),
            ));
        };
        let pid = child.id();
        let stderr = tokio::spawn(log_stderr(stderr, pid));
        debug!(backend = "command", pid, "Agent program started.");
        Ok(Running {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr: Some(stderr),
        })
    }

    async fn run_per_turn(
        &self,
        turn_id: &str,
        line: String,
        em: &Emitter,
    ) -> Result<String, AgentError> {
        let mut proc = self.spawn()?;
        // Written from its own task so a program that prints before it reads cannot deadlock
        // with us; dropping stdin afterwards tells the program the input is complete. The
        // handle aborts the write if the turn is dropped.
        let stdin = proc.stdin.take();
        let _writer = AbortOnDropHandle::new(tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                if let Err(e) = stdin.write_all(line.as_bytes()).await {
                    debug!(backend = "command", error = %e, "Could not write the turn to the program.");
                }
            }
        }));
        match self.read_answer(&mut proc.stdout, turn_id, em).await {
            Ok(text) => {
                // Let the program finish cleanly in the background; killed if it lingers.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(EXIT_GRACE, proc.child.wait()).await;
                });
                Ok(text)
            }
            Err(ReadEnd::Eof) => Err(exit_error(&mut proc).await),
            Err(ReadEnd::Failed { error, .. }) => Err(error),
        }
    }

    async fn run_persistent(
        &self,
        turn_id: &str,
        line: String,
        em: &Emitter,
    ) -> Result<String, AgentError> {
        // Holding the lock for the whole turn serialises turns over the one process.
        let mut lease = Lease {
            slot: Arc::clone(&self.persistent).lock_owned().await,
            keep: false,
        };
        if let Some(running) = lease.slot.as_mut() {
            if let Ok(Some(status)) = running.child.try_wait() {
                warn!(backend = "command", %status, "Agent program exited between turns; restarting it.");
                *lease.slot = None;
            }
        }
        let running = match lease.slot.as_mut() {
            Some(r) => r,
            None => {
                let r = self.spawn()?;
                info!(
                    backend = "command",
                    pid = r.child.id(),
                    "Persistent agent program started."
                );
                lease.slot.insert(r)
            }
        };
        let write = async {
            let stdin = running
                .stdin
                .as_mut()
                .ok_or(std::io::ErrorKind::BrokenPipe)?;
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(e) = write.await {
            debug!(backend = "command", error = %e, "Could not write the turn to the program.");
            // The program is gone or not reading: its exit status says more than the EPIPE.
            return Err(exit_error(running).await);
        }
        match self.read_answer(&mut running.stdout, turn_id, em).await {
            Ok(text) => {
                lease.keep = true;
                Ok(text)
            }
            Err(ReadEnd::Eof) => Err(exit_error(running).await),
            Err(ReadEnd::Failed { error, keep }) => {
                lease.keep = keep;
                Err(error)
            }
        }
    }

    /// Reads stdout lines until this turn's `final` or `error`.
    async fn read_answer(
        &self,
        stdout: &mut BufReader<ChildStdout>,
        turn_id: &str,
        em: &Emitter,
    ) -> Result<String, ReadEnd> {
        let fail = |error| ReadEnd::Failed { error, keep: false };
        let mut reply = String::new();
        let mut total: u64 = 0;
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(stdout, &mut line, MAX_LINE_BYTES, false).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Err(ReadEnd::Eof),
                Ok(Err(LineTooLong(max))) => {
                    return Err(fail(AgentError::Process(format!(
                        "the program printed a line longer than {max} bytes"
                    ))))
                }
                Err(e) => {
                    return Err(fail(AgentError::Process(format!(
                        "cannot read the program's output: {e}"
                    ))))
                }
            }
            total += line.len() as u64 + 1;
            if total > self.max_output_bytes {
                return Err(fail(AgentError::Process(format!(
                    "the program printed more than {} bytes",
                    self.max_output_bytes
                ))));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let out: OutLine = serde_json::from_slice(&line).map_err(|e| {
                // The line may hold answer text: it goes to the debug log only, not the error.
                let text = String::from_utf8_lossy(&line);
                debug!(backend = "command", line = %shorten(&text, 200), "Unreadable program output.");
                fail(AgentError::Process(format!(
                    "the program printed a line that is not the JSON line protocol ({e})"
                )))
            })?;
            if out.turn_id.as_deref().is_some_and(|id| id != turn_id) {
                debug!(backend = "command", "Skipping a line of another turn.");
                continue;
            }
            match out.kind.as_str() {
                "delta" => {
                    let piece = out.text.unwrap_or_default();
                    append_reply(&mut reply, &piece).map_err(fail)?;
                    em.delta(piece).await.map_err(fail)?;
                }
                "final" => return Ok(out.text.unwrap_or(reply)),
                "error" => {
                    let message = out
                        .message
                        .or(out.text)
                        .unwrap_or_else(|| "unknown error".into());
                    return Err(ReadEnd::Failed {
                        error: AgentError::Agent(shorten(&message, 500)),
                        keep: true,
                    });
                }
                other => debug!(
                    backend = "command",
                    kind = other,
                    "Ignoring an unknown line type."
                ),
            }
        }
    }
}

/// One line of the program's stdout.
#[derive(Deserialize)]
struct OutLine {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    turn_id: Option<String>,
}

/// The persistent process for the duration of one turn. Unless the turn ended cleanly
/// (`keep`), dropping it drops the process, which kills it: this is what makes an abandoned,
/// timed-out or desynchronised turn really stop.
struct Lease {
    slot: OwnedMutexGuard<Option<Running>>,
    keep: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.keep {
            if let Some(r) = self.slot.take() {
                info!(
                    backend = "command",
                    pid = r.child.id(),
                    "Persistent agent program stopped; it restarts on the next turn."
                );
            }
        }
    }
}

/// The error for a program whose stdout closed before it answered: its exit status and the
/// last line of its stderr.
async fn exit_error(proc: &mut Running) -> AgentError {
    let status = match tokio::time::timeout(EXIT_WAIT, proc.child.wait()).await {
        Ok(Ok(status)) => format!("exited ({status})"),
        Ok(Err(e)) => format!("could not be waited for ({e})"),
        Err(_) => "closed its output".to_string(),
    };
    let last = match proc.stderr.take() {
        Some(task) => tokio::time::timeout(EXIT_WAIT, task)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten(),
        None => None,
    };
    match last {
        Some(line) => AgentError::Process(format!(
            "the program {status} before its final answer; stderr: {}",
            shorten(&line, 200)
        )),
        None => AgentError::Process(format!("the program {status} before its final answer")),
    }
}

/// Logs the program's stderr line by line; returns the last non-empty line.
async fn log_stderr(stderr: tokio::process::ChildStderr, pid: Option<u32>) -> Option<String> {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut last = None;
    loop {
        line.clear();
        match read_line(&mut reader, &mut line, MAX_STDERR_LINE, true).await {
            Ok(Ok(true)) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if !text.is_empty() {
                    debug!(backend = "command", pid, line = %text, "Agent program stderr.");
                    last = Some(text);
                }
            }
            _ => return last,
        }
    }
}

/// Checks that `program` can be started: a path must exist (relative to `cwd` when set), a bare
/// name must be on `PATH`.
fn find_program(program: &str, cwd: Option<&Path>) -> Result<(), String> {
    let path = Path::new(program);
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        let full = match cwd {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        return if full.is_file() {
            Ok(())
        } else {
            Err(format!("the program {} does not exist", full.display()))
        };
    }
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!("the program `{program}` is not on PATH"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up() {
        assert!(find_program("sh", None).is_ok());
        assert!(find_program("/bin/sh", None).is_ok());
        assert!(find_program("no-such-program-xyz", None)
            .unwrap_err()
            .contains("PATH"));
        assert!(find_program("./missing.sh", Some(Path::new("/"))).is_err());
    }
}
