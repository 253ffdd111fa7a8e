//! Configuration: the file format, loading with precedence (built-in defaults < file <
//! environment), and validation that collects every problem at once with its key path.
//!
//! Loading happens in two steps. Figment merges the YAML file (read by serde-saphyr) with
//! `GATEWAY_…` variables (`__` separates nesting levels) into one tree; each section is then
//! deserialised on its own, so that one misspelt key does not hide the next problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_bridge::AgentConfig;
use figment::providers::{Env, Format};
use figment::Figment;
use gateway_core::session::SessionConfig;
use gateway_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `gateway:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Where the state database, media and adapter files live.
    pub data_dir: PathBuf,
    /// Address of the health, metrics and admin HTTP listener.
    pub listen: String,
    /// Seconds that in-flight turns get to finish on shutdown.
    pub drain_timeout_secs: u64,
    /// Seconds between retries of undelivered replies.
    pub outbox_retry_secs: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:8646".into(),
            drain_timeout_secs: 30,
            outbox_retry_secs: 60,
        }
    }
}

/// One entry under `platforms:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformEntry {
    /// Adapter kind; defaults to the entry's key.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether the instance runs. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Default destination for notices (`user:ID` or `group:ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_channel: Option<String>,
    /// Adapter settings and access policy.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// The whole configuration, after defaults, file and environment were merged.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GatewayConfig {
    /// `gateway:`.
    pub gateway: GatewaySection,
    /// `agent:`.
    pub agent: AgentConfig,
    /// `sessions:`.
    pub sessions: SessionConfig,
    /// `platforms:`, by instance name.
    pub platforms: BTreeMap<String, PlatformEntry>,
}

/// The top-level keys.
const SECTIONS: &[&str] = &["gateway", "agent", "sessions", "platforms"];

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), render(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the config file was found, in lookup order: `-c`, `GATEWAY_CONFIG`, `./config.yaml`,
/// then `<user config dir>/gateway/config.yaml`.
pub fn find_config_file(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ConfigError::new(
                "",
                format!("config file {} not found", p.display()),
            ))
        };
    }
    if let Some(p) = std::env::var_os("GATEWAY_CONFIG").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ConfigError::new(
                "",
                format!(
                    "GATEWAY_CONFIG points to {}, which does not exist",
                    p.display()
                ),
            ))
        };
    }
    let mut tried = vec![PathBuf::from("config.yaml")];
    if let Some(dir) = user_config_dir() {
        tried.push(dir.join("gateway").join("config.yaml"));
    }
    for p in &tried {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    let list = tried
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ConfigError::new(
        "",
        format!(
            "no config file found (looked for -c FILE, $GATEWAY_CONFIG, {list}). \
             Run `gateway setup` to create one, or copy config.example.yaml to config.yaml."
        ),
    ))
}

fn user_config_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config"))
}

/// Reads the file (if any) and the `GATEWAY_…` environment into one JSON tree.
pub fn load_tree(file: Option<&Path>) -> Result<Value, ConfigErrors> {
    let mut fig = Figment::new();
    if let Some(path) = file {
        fig = fig.merge(serde_saphyr::figment::Yaml::file_exact(path));
    }
    // Every key lives in a section, so only `GATEWAY_<SECTION>__<KEY>` variables are config;
    // others (`GATEWAY_CONFIG` names the file) are left alone.
    fig = fig.merge(
        Env::prefixed("GATEWAY_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let tree: Value = fig.extract().map_err(|e| {
        ConfigErrors(
            e.into_iter()
                .map(|e| ConfigError::new(e.path.join("."), e.kind.to_string()))
                .collect(),
        )
    })?;
    Ok(if tree.is_null() {
        Value::Object(Map::new())
    } else {
        tree
    })
}

/// Parses the merged tree into a [`GatewayConfig`], collecting every error of every section.
pub fn parse_tree(tree: Value) -> Result<GatewayConfig, ConfigErrors> {
    let (cfg, errors) = parse_tree_partial(tree);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Like [`parse_tree`], but returns what parsed (defaults in place of broken sections) together
/// with the errors, so that later checks (platform instances) still run and report theirs.
pub fn parse_tree_partial(tree: Value) -> (GatewayConfig, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let Value::Object(mut root) = tree else {
        let e = ConfigError::new("", "the config must be a mapping");
        return (GatewayConfig::default(), vec![e]);
    };
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.push(ConfigError::new(
                key.clone(),
                format!("unknown section; expected one of: {}", SECTIONS.join(", ")),
            ));
        }
    }
    let mut cfg = GatewayConfig::default();
    if let Some(s) = root
        .remove("gateway")
        .and_then(|v| section(v, "gateway", &mut errors))
    {
        cfg.gateway = s;
    }
    if let Some(s) = root
        .remove("agent")
        .and_then(|v| section(v, "agent", &mut errors))
    {
        cfg.agent = s;
    }
    if let Some(s) = root
        .remove("sessions")
        .and_then(|v| section(v, "sessions", &mut errors))
    {
        cfg.sessions = s;
    }
    match root.remove("platforms") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, v) in map {
                let path = format!("platforms.{name}");
                if let Some(entry) = section::<PlatformEntry>(v, &path, &mut errors) {
                    cfg.platforms.insert(name, entry);
                }
            }
        }
        Some(_) => errors.push(ConfigError::new(
            "platforms",
            "must be a mapping of instances",
        )),
    }
    if cfg.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
        errors.push(ConfigError::new(
            "gateway.listen",
            format!(
                "`{}` is not a host:port address such as 127.0.0.1:8646",
                cfg.gateway.listen
            ),
        ));
    }
    (cfg, errors)
}

/// Deserialises one section, recording its error with the full key path.
fn section<T: serde::de::DeserializeOwned>(
    v: Value,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    // An empty section (`sessions:` with nothing under it) means "all defaults".
    let v = if v.is_null() {
        Value::Object(Map::new())
    } else {
        v
    };
    match gateway_core::adapter::parse_extra::<T>(v) {
        Ok(t) => Some(t),
        Err(mut e) => {
            // Buffered enums (the tagged `agent:` section) lose the path of an unknown field;
            // the message still names it, so put it back on the path.
            if let Some(field) = e
                .message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                if !e.path.ends_with(field) {
                    e.path = if e.path.is_empty() {
                        field.to_string()
                    } else {
                        format!("{}.{field}", e.path)
                    };
                }
            }
            errors.push(e.under(prefix));
            None
        }
    }
}

/// Converts an environment value to JSON according to the key's declared type.
pub fn env_value(kind: gateway_core::KeyKind, raw: &str) -> Value {
    use gateway_core::KeyKind;
    match kind {
        KeyKind::Integer => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(raw.into()),
        KeyKind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "false" | "no" | "off" => Value::Bool(false),
            _ => Value::String(raw.into()),
        },
        // Lists stay comma strings: list keys accept both forms.
        KeyKind::String | KeyKind::List | KeyKind::Map => Value::String(raw.into()),
    }
}
