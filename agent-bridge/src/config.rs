//! The `agent:` section of the configuration: which backend runs turns and its settings.
//!
//! The section is internally tagged by `backend` (`echo | openai | http | command`), every struct
//! denies unknown keys so a typo fails with its key, and every default lives in this file.
//! [`AgentConfig::validate`] collects every semantic problem at once; paths in the returned
//! [`ConfigError`]s are relative to the section (the caller adds `agent.` with
//! [`ConfigError::under`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use gateway_core::ConfigError;
use serde::{Deserialize, Serialize};

/// Default turn time limit in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Default TCP/TLS connect time limit for HTTP backends, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default number of retries of a failed request before the first response byte.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default cap on one image sent inline to a vision model, in bytes.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;
/// Default cap on everything a command prints on stdout during one turn, in bytes.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Which agent backend runs turns, and its settings. The default is the echo backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum AgentConfig {
    /// Replies `echo: <text>` plus one line per attachment; needs no service.
    Echo(EchoConfig),
    /// Any OpenAI-compatible `/chat/completions` endpoint.
    #[serde(rename = "openai")]
    OpenAi(OpenAiConfig),
    /// A generic webhook that receives the turn as JSON.
    Http(HttpConfig),
    /// A local program speaking JSON lines on stdin/stdout.
    Command(CommandConfig),
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig::Echo(EchoConfig::default())
    }
}

impl AgentConfig {
    /// The backend's name as written in `backend:`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            AgentConfig::Echo(_) => "echo",
            AgentConfig::OpenAi(_) => "openai",
            AgentConfig::Http(_) => "http",
            AgentConfig::Command(_) => "command",
        }
    }

    /// The turn time limit of the configured backend.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(match self {
            AgentConfig::Echo(c) => c.timeout_secs,
            AgentConfig::OpenAi(c) => c.timeout_secs,
            AgentConfig::Http(c) => c.timeout_secs,
            AgentConfig::Command(c) => c.timeout_secs,
        })
    }

    /// Every problem that does not depend on the environment or the file system, at once.
    /// Paths are relative to the `agent:` section.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let timeout_secs = match self {
            AgentConfig::Echo(c) => c.timeout_secs,
            AgentConfig::OpenAi(c) => c.timeout_secs,
            AgentConfig::Http(c) => c.timeout_secs,
            AgentConfig::Command(c) => c.timeout_secs,
        };
        if timeout_secs == 0 {
            errors.push(ConfigError::new("timeout_secs", "must be at least 1"));
        }
        match self {
            AgentConfig::Echo(_) => {}
            AgentConfig::OpenAi(c) => {
                check_url(&mut errors, "base_url", &c.base_url);
                if c.model.trim().is_empty() {
                    errors.push(ConfigError::new(
                        "model",
                        "must name a model, e.g. `gpt-4o-mini`",
                    ));
                }
                if let Some(name) = &c.api_key_env {
                    if !is_env_name(name) {
                        errors.push(ConfigError::new(
                            "api_key_env",
                            "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), \
                             not the key itself",
                        ));
                    }
                }
                if let Some(t) = c.temperature {
                    if !(0.0..=2.0).contains(&t) {
                        errors.push(ConfigError::new("temperature", "must be between 0 and 2"));
                    }
                }
                if c.max_tokens == Some(0) {
                    errors.push(ConfigError::new("max_tokens", "must be at least 1"));
                }
                check_connect_timeout(&mut errors, c.connect_timeout_secs);
                check_header_names(&mut errors, &c.headers);
            }
            AgentConfig::Http(c) => {
                check_url(&mut errors, "url", &c.url);
                check_connect_timeout(&mut errors, c.connect_timeout_secs);
                check_header_names(&mut errors, &c.headers);
            }
            AgentConfig::Command(c) => {
                if c.command.first().is_none_or(|p| p.trim().is_empty()) {
                    errors.push(ConfigError::new(
                        "command",
                        "must list the program and its arguments, e.g. [\"python3\", \"agent.py\"]",
                    ));
                }
                if c.max_output_bytes == 0 {
                    errors.push(ConfigError::new("max_output_bytes", "must be at least 1"));
                }
                for name in c.env.0.keys() {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        errors.push(ConfigError::new(
                            format!("env.{name}"),
                            "is not a valid environment variable name",
                        ));
                    }
                }
            }
        }
        errors
    }
}

/// Settings of the echo backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Pause between streamed pieces, in milliseconds (for testing `/stop` and streaming).
    pub delay_ms: u64,
    /// Turn time limit in seconds.
    pub timeout_secs: u64,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// Settings of the OpenAI-compatible backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// API base, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended (unless the
    /// URL already ends with it).
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The NAME of the environment variable holding the API key; omit for local servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// A system prompt sent first in every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Sampling temperature (0–2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Send images inline as `data:` URLs (for vision models); otherwise they are described.
    #[serde(default)]
    pub vision: bool,
    /// Images larger than this are described instead of sent, in bytes.
    #[serde(default = "default_max_image_bytes")]
    pub max_image_bytes: u64,
    /// Extra request headers; values may reference environment variables as `${NAME}`.
    #[serde(default)]
    pub headers: SecretMap,
    /// Turn time limit in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Connect time limit in seconds.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Retries of 429, 5xx and connection failures before the first response byte.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

/// Settings of the generic HTTP (webhook) backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the turn is POSTed.
    pub url: String,
    /// Request headers, e.g. `Authorization: "Bearer ${AGENT_TOKEN}"`.
    #[serde(default)]
    pub headers: SecretMap,
    /// Turn time limit in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Connect time limit in seconds.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Retries of 429, 5xx and connection failures before the first response byte.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

/// How the command backend runs its program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandMode {
    /// A fresh process per turn; it exits after its answer.
    #[default]
    PerTurn,
    /// One long-lived process; turns are written one after another.
    Persistent,
}

/// Settings of the local-program backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// One process per turn, or one persistent process.
    #[serde(default)]
    pub mode: CommandMode,
    /// Extra environment variables for the program (added to the gateway's own).
    #[serde(default)]
    pub env: SecretMap,
    /// Working directory of the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Turn time limit in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Cap on what the program prints on stdout during one turn, in bytes.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
}

/// A string map whose values may be secrets (header values, environment values): `Debug`
/// shows the keys only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretMap(pub BTreeMap<String, String>);

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[redacted]")))
            .finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for SecretMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        SecretMap(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
fn default_connect_timeout_secs() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}
fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}
fn default_max_image_bytes() -> u64 {
    DEFAULT_MAX_IMAGE_BYTES
}
fn default_max_output_bytes() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

fn check_url(errors: &mut Vec<ConfigError>, path: &str, url: &str) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        Ok(_) => errors.push(ConfigError::new(path, "must be an http:// or https:// URL")),
        Err(e) => errors.push(ConfigError::new(path, format!("is not a valid URL ({e})"))),
    }
}

fn check_connect_timeout(errors: &mut Vec<ConfigError>, secs: u64) {
    if secs == 0 {
        errors.push(ConfigError::new(
            "connect_timeout_secs",
            "must be at least 1",
        ));
    }
}

fn check_header_names(errors: &mut Vec<ConfigError>, headers: &SecretMap) {
    for name in headers.0.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(ConfigError::new(
                format!("headers.{name}"),
                "is not a valid header name",
            ));
        }
    }
}

/// True for a plausible environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces every `${NAME}` in `value` with `lookup(NAME)`. A `$` not followed by `{` is kept.
/// Fails with a message naming the variable when it is unset, or when `${` is not closed.
pub(crate) fn expand_env(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("has an unclosed `${`".to_string());
        };
        let name = &after[..end];
        if !is_env_name(name) {
            return Err(format!(
                "references `${{{name}}}`, which is not a variable name"
            ));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("references ${{{name}}}, which is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<AgentConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn default_is_echo_and_a_bare_backend_parses() {
        assert_eq!(AgentConfig::default().backend_name(), "echo");
        let cfg = parse(serde_json::json!({"backend": "echo"})).unwrap();
        assert_eq!(cfg, AgentConfig::default());
        assert_eq!(cfg.timeout(), Duration::from_secs(DEFAULT_TIMEOUT_SECS));
    }

    #[test]
    fn each_backend_parses_with_defaults() {
        let cfg = parse(serde_json::json!({
            "backend": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "qwen2.5"
        }))
        .unwrap();
        let AgentConfig::OpenAi(o) = &cfg else {
            panic!("wrong variant: {cfg:?}")
        };
        assert_eq!(o.max_retries, DEFAULT_MAX_RETRIES);
        assert!(!o.vision);
        assert!(cfg.validate().is_empty());

        let cfg =
            parse(serde_json::json!({"backend": "http", "url": "https://agent.example/turn"}))
                .unwrap();
        assert!(cfg.validate().is_empty());

        let cfg = parse(serde_json::json!({
            "backend": "command", "command": ["python3", "agent.py"], "mode": "persistent"
        }))
        .unwrap();
        let AgentConfig::Command(c) = &cfg else {
            panic!("wrong variant: {cfg:?}")
        };
        assert_eq!(c.mode, CommandMode::Persistent);
    }

    #[test]
    fn unknown_keys_and_backends_are_rejected() {
        let err = parse(serde_json::json!({"backend": "echo", "dealy_ms": 5})).unwrap_err();
        assert!(err.to_string().contains("dealy_ms"), "{err}");
        let err = parse(serde_json::json!({
            "backend": "openai", "base_url": "http://x/v1", "model": "m", "api_key": "sk-1"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
        assert!(parse(serde_json::json!({"backend": "claude"})).is_err());
    }

    #[test]
    fn validation_collects_every_problem() {
        let cfg = parse(serde_json::json!({
            "backend": "openai", "base_url": "ftp://x", "model": " ", "api_key_env": "sk-abc",
            "temperature": 3.0, "timeout_secs": 0, "headers": {"bad header": "v"}
        }))
        .unwrap();
        let paths: Vec<String> = cfg.validate().into_iter().map(|e| e.path).collect();
        for p in [
            "timeout_secs",
            "base_url",
            "model",
            "api_key_env",
            "temperature",
        ] {
            assert!(paths.contains(&p.to_string()), "{p} missing from {paths:?}");
        }
        assert!(paths.iter().any(|p| p.starts_with("headers.")), "{paths:?}");
        let cmd = parse(serde_json::json!({"backend": "command", "command": []})).unwrap();
        assert_eq!(cmd.validate()[0].path, "command");
    }

    #[test]
    fn secret_maps_hide_values_in_debug() {
        let cfg = parse(serde_json::json!({
            "backend": "http", "url": "http://x/", "headers": {"Authorization": "Bearer s3cr3t"}
        }))
        .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("Authorization"), "{dbg}");
    }

    #[test]
    fn env_references_expand() {
        let lookup = |n: &str| (n == "TOKEN").then(|| "abc".to_string());
        assert_eq!(expand_env("Bearer ${TOKEN}", lookup).unwrap(), "Bearer abc");
        assert_eq!(
            expand_env("a$b ${TOKEN}${TOKEN}", lookup).unwrap(),
            "a$b abcabc"
        );
        assert!(expand_env("${MISSING}", lookup)
            .unwrap_err()
            .contains("MISSING"));
        assert!(expand_env("${TOKEN", lookup).is_err());
        assert!(is_env_name("OPENAI_API_KEY"));
        assert!(!is_env_name("sk-abc"));
    }
}
