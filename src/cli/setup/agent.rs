//! Setup of the `agent:` section (agent-bridge): echo, openai (base URL, model, the NAME of the
//! key variable), http (URL) or command (program and arguments), with an optional test request
//! sent through the same backend code the gateway runs.

use std::time::Duration;

use agent_bridge::{AgentConfig, AgentEvent, AgentTurn};
use futures::StreamExt as _;
use gateway_core::{ChatAddress, Sender};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::prompt::Question;
use super::yaml_edit::{to_value, Fields, Node};
use super::{field, str_of, SetupError, Wizard};

/// Keys this step writes per backend; other keys of the same backend are kept.
const MANAGED: &[&str] = &[
    "backend",
    "base_url",
    "model",
    "api_key_env",
    "url",
    "command",
];
/// How long the test request may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default OpenAI-compatible base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Default model.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Default name of the key variable.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

fn check_url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err("an http:// or https:// URL".into()),
    }
}

/// Validates the NAME of an environment variable, and refuses what looks like a key itself.
pub fn check_env_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(
            "the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key itself"
                .into(),
        )
    }
}

/// Splits a command line: a JSON array (`["python3", "my agent.py"]`) or words separated by
/// spaces.
pub fn parse_command(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let words: Vec<String> = if s.starts_with('[') {
        serde_json::from_str(s)
            .map_err(|_| "a JSON list of strings such as [\"python3\", \"agent.py\"]".to_string())?
    } else {
        s.split_whitespace().map(str::to_string).collect()
    };
    if words.first().is_none_or(|w| w.trim().is_empty()) {
        return Err("the program to run, e.g. python3 /opt/agent/agent.py".into());
    }
    Ok(words)
}

/// Asks for the agent backend. `None` keeps the current `agent:` section untouched.
pub async fn configure(
    w: &mut Wizard<'_>,
    existing: Option<&Map<String, Value>>,
) -> Result<Option<Fields>, SetupError> {
    let current = existing
        .and_then(|e| str_of(e, "backend"))
        .unwrap_or_else(|| "echo".into());
    if existing.is_some() {
        let change = w.prompter.confirm(
            &Question::new(
                "agent_change",
                format!("The agent backend is `{current}`. Change its settings?"),
            ),
            false,
        )?;
        if !change {
            return Ok(None);
        }
    }
    let choices = [
        (
            "echo",
            "echo — repeats what users write (try everything end to end first)".to_string(),
        ),
        (
            "openai",
            "openai — any OpenAI-compatible API: OpenAI, DeepSeek, Qwen, Ollama, vLLM".to_string(),
        ),
        (
            "http",
            "http — your agent as a web service (the turn is POSTed as JSON)".to_string(),
        ),
        (
            "command",
            "command — a local program (JSON lines on stdin/stdout)".to_string(),
        ),
    ];
    let default = choices.iter().position(|(k, _)| *k == current).unwrap_or(0);
    let empty = Map::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let backend = w.prompter.select(
            &Question::new("agent_backend", "Which agent answers the messages?"),
            &choices,
            default,
        )?;
        // Settings of the same backend that setup does not ask about stay (system_prompt, …).
        let same = existing.filter(|e| str_of(e, "backend").as_deref() == Some(backend));
        let cur = same.unwrap_or(&empty);
        let mut fields: Fields = vec![field("backend", backend)];
        match backend {
            "openai" => {
                let base = w.prompter.input(
                    &Question::new("base_url", "API base URL (/chat/completions is appended)")
                        .default(Some(
                            str_of(cur, "base_url").unwrap_or_else(|| DEFAULT_BASE_URL.into()),
                        )),
                    &check_url,
                )?;
                let model = w.prompter.input(
                    &Question::new("model", "Model").default(Some(
                        str_of(cur, "model").unwrap_or_else(|| DEFAULT_MODEL.into()),
                    )),
                    &|s: &str| {
                        if s.is_empty() {
                            Err("a model name, e.g. gpt-4o-mini".to_string())
                        } else {
                            Ok(())
                        }
                    },
                )?;
                let key_env = w.prompter.input(
                    &Question::new(
                        "api_key_env",
                        "NAME of the environment variable that holds the API key (- for none: local servers)",
                    )
                    .default(Some(
                        str_of(cur, "api_key_env").unwrap_or_else(|| DEFAULT_KEY_ENV.into()),
                    )),
                    &|s: &str| if s == "-" { Ok(()) } else { check_env_name(s) },
                )?;
                fields.push(field("base_url", base));
                fields.push(field("model", model));
                if key_env != "-" {
                    if (w.env)(&key_env).is_none() {
                        w.prompter.say(&format!(
                            "Note: {key_env} is not set here. Export it where `gateway run` runs \
                             (the key never goes into the config file)."
                        ));
                    }
                    fields.push(field("api_key_env", key_env));
                }
            }
            "http" => {
                let url = w.prompter.input(
                    &Question::new("agent_url", "URL the turns are POSTed to")
                        .default(str_of(cur, "url")),
                    &check_url,
                )?;
                fields.push(field("url", url));
            }
            "command" => {
                let current_cmd = cur.get("command").and_then(|c| {
                    serde_json::from_value::<Vec<String>>(c.clone())
                        .ok()
                        .map(|v| serde_json::to_string(&v).unwrap_or_default())
                });
                let cmd = w.prompter.input(
                    &Question::new(
                        "agent_command",
                        "Program and arguments (e.g. python3 /opt/agent/agent.py, or a JSON list)",
                    )
                    .default(current_cmd),
                    &|s: &str| parse_command(s).map(|_| ()),
                )?;
                let words =
                    parse_command(&cmd).map_err(|reason| super::prompt::PromptError::Invalid {
                        id: "agent_command".into(),
                        reason,
                    })?;
                fields.push(field("command", words));
            }
            _ => {}
        }
        for (k, v) in cur {
            if !MANAGED.contains(&k.as_str()) {
                fields.push((k.clone(), Node::Value(v.clone())));
            }
        }
        if backend == "echo" || !w.verify {
            return Ok(Some(fields));
        }
        let test = w.prompter.confirm(
            &Question::new("agent_test", "Send a test message to the agent now?"),
            w.interactive,
        )?;
        if !test {
            return Ok(Some(fields));
        }
        let p = w.prompter.progress("Sending a test message to the agent…");
        match test_agent(&fields).await {
            Ok(answer) => {
                p.finish("The agent answered.");
                w.prompter
                    .say(&format!("✓ The agent answered: {}", excerpt(&answer)));
                return Ok(Some(fields));
            }
            Err(e) => {
                p.finish("The test failed.");
                w.prompter.say(&format!("✗ The test message failed: {e}"));
                match super::after_failure(w, "agent_failed", attempt)? {
                    "keep" => return Ok(Some(fields)),
                    "retry" => {}
                    _ => {
                        return Err(SetupError::Rejected(format!(
                            "the agent test failed ({e}); nothing was written"
                        )))
                    }
                }
            }
        }
    }
}

fn excerpt(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Runs one turn through the backend described by `fields`.
async fn test_agent(fields: &Fields) -> Result<String, String> {
    let cfg: AgentConfig = serde_json::from_value(to_value(fields)).map_err(|e| e.to_string())?;
    let backend = agent_bridge::build_backend(&cfg).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let turn = AgentTurn {
        session_key: "setup:test".into(),
        session_id: "setup-test".into(),
        instance: "setup".into(),
        sender: Sender::new("setup"),
        chat: ChatAddress::dm("setup"),
        message_type: "text".into(),
        text:
            "This is a connection test from `gateway setup`. Please reply with one short sentence."
                .into(),
        attachments: Vec::new(),
        history: Vec::new(),
    };
    let run = async {
        let mut stream = backend
            .start(turn, CancellationToken::new())
            .await
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item.map_err(|e| e.to_string())? {
                AgentEvent::Delta(d) => text.push_str(&d),
                AgentEvent::Final(f) => return Ok(f),
            }
        }
        Ok(text)
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .map_err(|_| format!("no answer within {} s", TEST_TIMEOUT.as_secs()))?
}
