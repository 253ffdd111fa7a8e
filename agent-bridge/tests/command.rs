//! The `command` backend against small `sh` scripts written to a temporary directory.
//!
//! These tests run in real time: the child processes do, and paused tokio time would fire the
//! turn's deadline while the runtime waits on their pipes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_bridge::config::CommandConfig;
use agent_bridge::{AgentBackend, AgentConfig, AgentError, AgentEvent, CommandBackend};
use common::{collect, turn};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// A script in a fresh temporary directory, and a backend config running it with `DIR` set to
/// that directory.
struct Script {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Script {
    fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sh");
        std::fs::write(&path, body).unwrap();
        Self { dir, path }
    }

    fn config(&self, extra: serde_json::Value) -> CommandConfig {
        let mut json = serde_json::json!({
            "backend": "command",
            "command": ["sh", self.path.to_str().unwrap()],
            "env": {"DIR": self.dir.path().to_str().unwrap()},
            "timeout_secs": 20,
        });
        if let (Some(obj), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
            obj.extend(extra.clone());
        }
        match serde_json::from_value(json).expect("config parses") {
            AgentConfig::Command(c) => c,
            other => panic!("wrong backend: {other:?}"),
        }
    }

    fn backend(&self, extra: serde_json::Value) -> CommandBackend {
        CommandBackend::new(&self.config(extra)).expect("backend builds")
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }
}

/// Waits (up to 5 s) until process `pid` is gone or a zombie.
async fn wait_dead(pid: &str) -> bool {
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    for _ in 0..250 {
        match std::fs::read_to_string(&stat) {
            Err(_) => return true,
            // The state follows the parenthesised command name: `123 (sh) Z ...`.
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

#[tokio::test]
async fn per_turn_streams_deltas_and_receives_the_turn_on_stdin() {
    let s = Script::new(
        r#"IFS= read -r line
printf '%s\n' "$line" > "$DIR/request.json"
echo '{"type":"delta","text":"Hel"}'
echo 'some diagnostics' >&2
echo ''
echo '{"type":"progress","text":"ignored"}'
echo '{"type":"delta","text":"lo"}'
echo '{"type":"final","text":"Hello"}'
"#,
    );
    let b = s.backend(serde_json::json!({}));
    let (deltas, end) = collect(
        b.start(turn("hi there"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deltas, vec!["Hel", "lo"]);
    assert_eq!(end.unwrap(), "Hello");

    let request: serde_json::Value = serde_json::from_str(&s.file("request.json")).unwrap();
    assert_eq!(request["version"], 1);
    assert!(request["turn_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("turn-")));
    assert_eq!(request["text"], "hi there");
    assert_eq!(request["session_key"], "wecom:dm:alice");
    assert_eq!(request["sender"]["user_id"], "alice");
    assert_eq!(request["history"][1]["role"], "assistant");
    assert_eq!(request["history"][1]["text"], "earlier answer");
    assert_eq!(request["attachments"], serde_json::json!([]));
}

#[tokio::test]
async fn a_crash_is_a_process_error_with_status_and_stderr() {
    let s = Script::new(
        r#"read -r line
echo '{"type":"delta","text":"x"}'
echo 'boom: the model file is missing' >&2
exit 3
"#,
    );
    let (deltas, end) = collect(
        s.backend(serde_json::json!({}))
            .start(turn("x"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deltas, vec!["x"]);
    let err = end.unwrap_err();
    let AgentError::Process(msg) = &err else {
        panic!("not a process error: {err:?}")
    };
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("boom: the model file is missing"), "{msg}");
    assert_eq!(
        err.user_message(),
        "The agent program failed — try again later."
    );
}

#[tokio::test]
async fn garbage_on_stdout_is_a_process_error() {
    let s = Script::new("read -r line\necho 'Traceback (most recent call last):'\nsleep 5\n");
    let started = std::time::Instant::now();
    let (_, end) = collect(
        s.backend(serde_json::json!({}))
            .start(turn("x"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    let err = end.unwrap_err();
    assert!(
        matches!(&err, AgentError::Process(m) if m.contains("not the JSON line protocol")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not wait for the program to exit"
    );
}

#[tokio::test]
async fn an_overlong_line_is_refused() {
    let s = Script::new("read -r line\nhead -c 1100000 /dev/zero | tr '\\0' a\necho\n");
    let (_, end) = collect(
        s.backend(serde_json::json!({}))
            .start(turn("x"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(&end, Err(AgentError::Process(m)) if m.contains("longer than")),
        "{end:?}"
    );
}

#[tokio::test]
async fn an_error_line_is_the_agents_error() {
    let s =
        Script::new("read -r line\necho '{\"type\":\"error\",\"message\":\"quota exceeded\"}'\n");
    let (_, end) = collect(
        s.backend(serde_json::json!({}))
            .start(turn("x"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end.unwrap_err(), AgentError::Agent("quota exceeded".into()));
}

#[tokio::test]
async fn a_timed_out_per_turn_program_is_killed() {
    let s = Script::new(
        "read -r line\necho $$ > \"$DIR/pid\"\necho '{\"type\":\"delta\",\"text\":\"wait\"}'\nexec sleep 30\n",
    );
    let b = s.backend(serde_json::json!({"timeout_secs": 1}));
    let (deltas, end) = collect(b.start(turn("x"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(deltas, vec!["wait"]);
    assert_eq!(
        end.unwrap_err(),
        AgentError::Timeout(Duration::from_secs(1))
    );
    assert!(
        wait_dead(&s.file("pid")).await,
        "the program survived its timeout"
    );
}

#[tokio::test]
async fn cancelling_kills_the_per_turn_program() {
    let s = Script::new(
        "read -r line\necho $$ > \"$DIR/pid\"\necho '{\"type\":\"delta\",\"text\":\"wait\"}'\nexec sleep 30\n",
    );
    let b = s.backend(serde_json::json!({}));
    let cancel = CancellationToken::new();
    let mut stream = b.start(turn("x"), cancel.clone()).await.unwrap();
    assert_eq!(
        stream.next().await,
        Some(Ok(AgentEvent::Delta("wait".into())))
    );
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(AgentError::Cancelled)));
    assert!(
        wait_dead(&s.file("pid")).await,
        "the program survived cancellation"
    );
}

/// A persistent agent: answers `pid <pid> turn <n>`, prints a stale line of another turn,
/// fails on "fail", crashes on "crash", hangs on "hang".
const PERSISTENT: &str = r#"n=0
while IFS= read -r line; do
  n=$((n+1))
  id=$(printf '%s' "$line" | sed -n 's/.*"turn_id":"\([^"]*\)".*/\1/p')
  echo $$ > "$DIR/pid"
  case "$line" in
    *'"text":"crash"'*) echo 'dying on purpose' >&2; exit 7 ;;
    *'"text":"hang"'*) exec sleep 30 ;;
    *'"text":"fail"'*) echo "{\"type\":\"error\",\"message\":\"nope\",\"turn_id\":\"$id\"}"; continue ;;
  esac
  echo "{\"type\":\"delta\",\"text\":\"pid $$ \",\"turn_id\":\"$id\"}"
  echo "{\"type\":\"delta\",\"text\":\"stale\",\"turn_id\":\"turn-0\"}"
  echo "{\"type\":\"final\",\"text\":\"pid $$ turn $n\",\"turn_id\":\"$id\"}"
done
"#;

/// Runs one turn and returns `(pid, n)` from a `pid <pid> turn <n>` answer.
async fn ask(b: &CommandBackend, text: &str) -> Result<(String, u32), AgentError> {
    let (deltas, end) = collect(b.start(turn(text), CancellationToken::new()).await.unwrap()).await;
    let answer = end?;
    let words: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(
        deltas,
        vec![format!("pid {} ", words[1])],
        "stale lines must be skipped"
    );
    Ok((words[1].to_string(), words[3].parse().unwrap()))
}

#[tokio::test]
async fn persistent_reuses_one_process_and_restarts_it_after_a_crash() {
    let s = Script::new(PERSISTENT);
    let b = s.backend(serde_json::json!({"mode": "persistent", "timeout_secs": 2}));

    let (pid, n) = ask(&b, "a").await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        ask(&b, "b").await.unwrap(),
        (pid.clone(), 2),
        "same process, next turn"
    );

    // An error line ends the turn cleanly; the process stays.
    assert_eq!(
        ask(&b, "fail").await.unwrap_err(),
        AgentError::Agent("nope".into())
    );
    assert_eq!(ask(&b, "c").await.unwrap(), (pid.clone(), 4));

    // A crash fails its turn; the next turn gets a fresh process.
    let err = ask(&b, "crash").await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Process(m) if m.contains("exit status: 7") && m.contains("dying on purpose")),
        "{err:?}"
    );
    let (pid2, n) = ask(&b, "d").await.unwrap();
    assert_ne!(pid2, pid, "restarted after the crash");
    assert_eq!(n, 1);

    // A hung turn times out; its process is killed and replaced.
    assert_eq!(
        ask(&b, "hang").await.unwrap_err(),
        AgentError::Timeout(Duration::from_secs(2))
    );
    assert!(
        wait_dead(&pid2).await,
        "the hung program survived its timeout"
    );
    let (pid3, n) = ask(&b, "e").await.unwrap();
    assert_ne!(pid3, pid2);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn persistent_turns_are_serialised() {
    let s = Script::new(PERSISTENT);
    let b = s.backend(serde_json::json!({"mode": "persistent"}));
    let (a, c) = tokio::join!(ask(&b, "one"), ask(&b, "two"));
    let (a, c) = (a.unwrap(), c.unwrap());
    assert_eq!(a.0, c.0, "one process");
    let mut turns = vec![a.1, c.1];
    turns.sort();
    assert_eq!(turns, vec![1, 2]);
}

#[test]
fn a_missing_program_is_a_config_error() {
    let json = serde_json::json!({"backend": "command", "command": ["no-such-agent-program-x"]});
    let cfg: AgentConfig = serde_json::from_value(json).unwrap();
    let errs = agent_bridge::build_backend(&cfg).unwrap_err();
    assert_eq!(errs[0].path, "command");
}

#[test]
fn debug_hides_arguments_and_environment_values() {
    let s = Script::new("true\n");
    let mut cfg = s.config(serde_json::json!({}));
    cfg.command.push("--api-key=cmd-secret-123".into());
    cfg.env
        .0
        .insert("AGENT_KEY".into(), "env-secret-456".into());
    let b = CommandBackend::new(&cfg).unwrap();
    let dbg = format!("{b:?}");
    assert!(
        !dbg.contains("cmd-secret-123") && !dbg.contains("env-secret-456"),
        "{dbg}"
    );
    assert!(dbg.contains("AGENT_KEY"), "{dbg}");
}
