//! Configuration: the file format, loading with precedence (built-in defaults < file <
//! environment), and validation that collects every problem at once with its key path.
//!
//! Loading happens in two steps. Figment merges the YAML file (read by serde-saphyr) with
//! `GATEWAY_…` variables (`__` separates nesting levels) into one tree; each section is then
//! deserialised on its own, so that one misspelt key does not hide the next problem, and every
//! unknown key of a section is listed with the closest known one ([`keys`]). `${NAME}`
//! references in values are resolved from the environment ([`expand_env_refs`]). A relative
//! `gateway.data_dir` (and the default `./data`) is taken relative to the config file's folder.

mod env_refs;
pub(crate) mod keys;

pub use env_refs::expand_env_refs;

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
        .map(|e| {
            if e.path.is_empty() {
                format!("  - {}", e.message)
            } else {
                format!("  - {e}")
            }
        })
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

/// Reads the file (if any) and the `GATEWAY_…` environment into one JSON tree. A YAML syntax
/// error is reported at `FILE:LINE:COLUMN`. A relative `gateway.data_dir` from the file (or the
/// default, when the file sets none) is made absolute against the file's folder; one from the
/// environment stays relative to the current directory.
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
    let mut tree: Value = match fig.extract() {
        Ok(t) => t,
        Err(e) => {
            if let Some(located) = file.and_then(syntax_error) {
                return Err(ConfigErrors(vec![located]));
            }
            return Err(ConfigErrors(
                e.into_iter()
                    .map(|e| ConfigError::new(e.path.join("."), e.kind.to_string()))
                    .collect(),
            ));
        }
    };
    if tree.is_null() {
        tree = Value::Object(Map::new());
    }
    if let Some(path) = file {
        let from_file = match fig.find_metadata("gateway.data_dir") {
            None => true,
            Some(md) => matches!(md.source, Some(figment::Source::File(_))),
        };
        if from_file {
            resolve_data_dir(&mut tree, path);
        }
    }
    Ok(tree)
}

/// The YAML syntax error of `path`, located, when the file does not parse.
fn syntax_error(path: &Path) -> Option<ConfigError> {
    let text = std::fs::read_to_string(path).ok()?;
    let opts = serde_saphyr::options! { with_snippet: false };
    let err = serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>(&text, opts).err()?;
    let loc = err.location()?;
    let message = err.to_string();
    // The message ends with the same location; it is in the path already.
    let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
    let message = message
        .strip_suffix(&suffix)
        .unwrap_or(&message)
        .to_string();
    Some(ConfigError::new(
        format!("{}:{}:{}", path.display(), loc.line(), loc.column()),
        format!("YAML syntax error: {message}"),
    ))
}

/// Makes `gateway.data_dir` absolute against the folder of `file` (the default too).
fn resolve_data_dir(tree: &mut Value, file: &Path) {
    let Value::Object(root) = tree else { return };
    let gateway = root
        .entry("gateway")
        .or_insert_with(|| Value::Object(Map::new()));
    if gateway.is_null() {
        *gateway = Value::Object(Map::new());
    }
    let Value::Object(gateway) = gateway else {
        return;
    };
    let dir = match gateway.get("data_dir") {
        None => GatewaySection::default().data_dir,
        Some(Value::String(s)) => PathBuf::from(s),
        Some(_) => return,
    };
    if dir.is_absolute() || dir.as_os_str().is_empty() {
        return;
    }
    let base = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    // `./data` joins as `data`, so messages show a clean path.
    let rel: PathBuf = dir
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    let resolved = base.join(rel);
    gateway.insert(
        "data_dir".into(),
        Value::String(resolved.to_string_lossy().into_owned()),
    );
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
            let message = match keys::suggest(key, SECTIONS) {
                Some(s) => format!("unknown section; did you mean `{s}`?"),
                None => format!("unknown section; expected one of: {}", SECTIONS.join(", ")),
            };
            errors.push(ConfigError::new(key.clone(), message));
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

/// Deserialises one section, recording its errors with the full key path: every unknown key
/// (each with a suggestion), then the first other problem.
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
    let first = errors.len();
    let parsed = keys::collect_unknown(v, prefix, errors, |v| {
        gateway_core::adapter::parse_extra::<T>(v).map_err(|mut e| {
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
            vec![e]
        })
    });
    // A key written directly under `platforms.<name>:` is most often an adapter setting that
    // belongs under `extra:`.
    if prefix.starts_with("platforms.") {
        for e in &mut errors[first..] {
            let key = e
                .path
                .strip_prefix(prefix)
                .and_then(|k| k.strip_prefix('.'));
            if let Some(key) = key.filter(|k| !k.contains('.')) {
                if !e.message.contains("did you mean") && e.message.starts_with("unknown key") {
                    e.message = format!(
                        "unknown key; adapter settings go under `extra:` (`{prefix}.extra.{key}`)"
                    );
                }
            }
        }
    }
    parsed
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
