//! `gateway setup [PLATFORM]`: a wizard that adds or edits ONE platform instance and the agent
//! backend in the config file, and nothing else.
//!
//! The file is edited as text ([`yaml_edit`]): only the `agent:` block and the
//! `platforms.<name>:` block are replaced, every other line and comment stays. The result is
//! parsed back and compared with what was meant, validated exactly like `gateway check`, and
//! written atomically with mode 0600 (it holds secrets). Questions go through a [`Prompter`]:
//! dialoguer in a terminal, or answers from flags with `--non-interactive` (and in tests).

pub mod agent;
pub mod args;
pub mod checks;
pub mod policy;
pub mod prompt;
pub mod qr;
pub mod wecom;
pub mod wecom_callback;
pub mod yaml_edit;

use std::path::{Path, PathBuf};

use gateway_core::ConfigError;
use serde_json::{Map, Value};

pub use args::{setup, SetupArgs};
use prompt::{PromptError, Prompter, Question};
use yaml_edit::{Fields, Node};

/// The first lines of a config file that setup creates.
const NEW_FILE: &str = "\
# gateway configuration, written by `gateway setup`. Every key is documented in
# config.example.yaml; validate with `gateway check -c <this file>`.
gateway:
  data_dir: ./data
  listen: 127.0.0.1:8646
";

/// The platform kinds setup knows, with a one-line description.
pub const KINDS: &[(&str, &str)] = &[
    (
        wecom::KIND,
        "WeCom AI Bot (long connection; no public endpoint needed; DMs and groups; streaming)",
    ),
    (
        wecom_callback::KIND,
        "WeCom self-built app (WeCom calls your HTTPS endpoint; proactive sends to users, departments, tags)",
    ),
];

/// Why setup stopped without writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A question could not be answered.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The file could not be edited.
    #[error(transparent)]
    Edit(#[from] yaml_edit::EditError),
    /// Reading or writing the file failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The resulting configuration does not pass `gateway check`.
    #[error("the result would not pass `gateway check`:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
    /// A live check refused the credentials and the user chose to stop.
    #[error("{0}")]
    Rejected(String),
    /// The request cannot be done by setup.
    #[error("{0}")]
    Unsupported(String),
}

/// Keys that setup writes whatever the user answers (scripted overrides of advanced keys).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `websocket_url` of a `wecom` instance.
    pub websocket_url: Option<String>,
    /// `api_base_url` of a `wecom_callback` instance.
    pub api_base_url: Option<String>,
    /// `host` of a `wecom_callback` instance.
    pub host: Option<String>,
}

/// Environment lookup (tests pass their own).
pub type EnvFn<'a> = &'a (dyn Fn(&str) -> Option<String> + Send + Sync);

/// Everything a setup run needs.
pub struct Wizard<'a> {
    /// Asks the questions.
    pub prompter: &'a mut dyn Prompter,
    /// The adapter registry (validation and connection checks).
    pub registry: &'a router::Registry,
    /// The environment used for validation.
    pub env: EnvFn<'a>,
    /// HTTP client for live checks and the QR flow.
    pub http: reqwest::Client,
    /// Base URL of the scan-to-create endpoints.
    pub qr_base: String,
    /// Poll cadence of the scan-to-create flow.
    pub qr_timing: qr::PollTiming,
    /// Run live credential checks (gettoken, agent test offers).
    pub verify: bool,
    /// Connect a bot once to test it: `Some` answers without asking.
    pub bot_check: Option<bool>,
    /// A person answers (failures offer a retry instead of stopping).
    pub interactive: bool,
    /// Advanced keys set from flags.
    pub overrides: Overrides,
    /// The config's data dir (for the running-gateway check); set by [`Wizard::run`].
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for Wizard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wizard")
            .field("qr_base", &self.qr_base)
            .field("interactive", &self.interactive)
            .finish_non_exhaustive()
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The file written.
    pub path: PathBuf,
    /// The instance name.
    pub instance: String,
    /// Its kind.
    pub kind: String,
    /// False when an existing instance was edited.
    pub created: bool,
    /// Whether the `agent:` section was replaced.
    pub agent_changed: bool,
    /// Things to do before `gateway run` (e.g. export an API key variable).
    pub todo: Vec<String>,
}

/// The file setup edits: `-c FILE`, `$GATEWAY_CONFIG`, an existing `./config.yaml` or
/// `~/.config/gateway/config.yaml`, else a new `./config.yaml`.
pub fn target_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("GATEWAY_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("config.yaml");
    if local.is_file() {
        return local;
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("gateway").join("config.yaml"));
    match user {
        Some(u) if u.is_file() => u,
        _ => local,
    }
}

/// A string value of `map`, trimmed, when non-empty.
pub fn str_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list value of `map` (a list or a comma-separated string) as strings.
pub fn list_of(map: &Map<String, Value>, key: &str) -> Vec<String> {
    match map.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) => split_list(s),
        _ => Vec::new(),
    }
}

/// Splits a comma- or whitespace-separated answer into trimmed entries.
pub fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n', '\t', '，'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// True for a variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when the whole answer is one `${NAME}` reference (`--secret-env NAME`, or typed): it is
/// written to the file as it is, and its value is checked once resolved.
pub fn is_env_ref(s: &str) -> bool {
    s.strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(is_env_name)
}

/// `value` with its `${NAME}` references resolved from the wizard's environment, for live
/// checks. `Err` names the unset variable.
pub fn resolve(w: &Wizard<'_>, value: Value) -> Result<Value, String> {
    let mut v = value;
    let env: &dyn Fn(&str) -> Option<String> = w.env;
    let errors = router::config::expand_env_refs(&mut v, env);
    match errors.into_iter().next() {
        None => Ok(v),
        Some(e) if e.path.is_empty() => Err(e.message),
        Some(e) => Err(format!("{}: {}", e.path, e.message)),
    }
}

/// A scalar field.
pub fn field(key: &str, v: impl Into<Value>) -> (String, Node) {
    (key.to_string(), Node::Value(v.into()))
}

/// Valid instance names: letters, digits, `_` and `-`.
pub fn check_instance_name(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err("use letters, digits, `_` and `-` only (e.g. wecom or wecom_sales)".into())
    }
}

/// What to do after a live check failed: `retry`, `keep` or `abort`.
pub fn after_failure(
    w: &mut Wizard<'_>,
    id: &'static str,
    attempt: u32,
) -> Result<&'static str, PromptError> {
    if !w.interactive {
        return Ok("abort");
    }
    let mut choices = vec![
        ("retry", "Enter them again".to_string()),
        ("keep", "Keep them anyway (fix later)".to_string()),
        ("abort", "Stop without writing anything".to_string()),
    ];
    if attempt >= 3 {
        choices.remove(0);
    }
    w.prompter
        .select(&Question::new(id, "What now?"), &choices, 0)
}

impl Wizard<'_> {
    /// Runs the wizard on the file at `path` (created when missing) for instance `name` (default:
    /// the kind) of `kind` (asked when `None`), and writes the result.
    pub async fn run(
        &mut self,
        path: &Path,
        kind: Option<&str>,
        name: Option<&str>,
    ) -> Result<Outcome, SetupError> {
        let exists = path.is_file();
        let text = if exists {
            std::fs::read_to_string(path).map_err(|source| SetupError::Io {
                what: "cannot read",
                path: path.to_path_buf(),
                source,
            })?
        } else {
            NEW_FILE.to_string()
        };
        let before = yaml_edit::parse(&text)?;
        self.data_dir = before
            .pointer("/gateway/data_dir")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| router::config::GatewaySection::default().data_dir);
        self.prompter.say(&format!(
            "{} {}",
            if exists { "Editing" } else { "Creating" },
            path.display()
        ));

        let kind = match kind {
            Some(k) => KINDS
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    SetupError::Unsupported(format!(
                        "setup knows the platforms {}; `{k}` is not one of them",
                        KINDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ))
                })?,
            None => {
                let choices: Vec<_> = KINDS
                    .iter()
                    .map(|(k, d)| (*k, format!("{k} — {d}")))
                    .collect();
                self.prompter.select(
                    &Question::new("platform", "Which platform do you want to connect?"),
                    &choices,
                    0,
                )?
            }
        };
        let name = match name {
            Some(n) => {
                check_instance_name(n)
                    .map_err(|e| SetupError::Unsupported(format!("--name: {e}")))?;
                n.to_string()
            }
            None => self.prompter.input(
                &Question::new(
                    "instance",
                    "Instance name (the key under `platforms:`; use another name for a second bot)",
                )
                .default(Some(kind)),
                &check_instance_name,
            )?,
        };
        let existing = before
            .pointer(&format!(
                "/platforms/{}",
                name.replace('~', "~0").replace('/', "~1")
            ))
            .cloned();
        let existing = match existing {
            Some(Value::Object(m)) => Some(m),
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(SetupError::Unsupported(format!(
                    "platforms.{name} is not a mapping; fix it by hand first"
                )))
            }
        };
        let existing_kind = existing
            .as_ref()
            .map(|e| str_of(e, "type").unwrap_or_else(|| name.clone()));
        if let Some(k) = &existing_kind {
            if k != kind {
                return Err(SetupError::Unsupported(format!(
                    "platforms.{name} is a `{k}` instance, not `{kind}`; choose another instance name"
                )));
            }
        }
        let entry_in = existing.clone().unwrap_or_default();
        let extra_in = match entry_in.get("extra") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if existing.is_some() {
            self.prompter.say(&format!(
                "platforms.{name} exists: Enter keeps each current value."
            ));
        }

        let (mut extra, managed): (Fields, &[&str]) = if kind == wecom::KIND {
            (
                wecom::configure(self, &name, &extra_in).await?,
                wecom::MANAGED,
            )
        } else {
            (
                wecom_callback::configure(self, &extra_in).await?,
                wecom_callback::MANAGED,
            )
        };
        let corp_id = extra
            .iter()
            .find(|(k, _)| k == "corp_id")
            .and_then(|(_, n)| match n {
                Node::Value(Value::String(s)) => Some(s.clone()),
                _ => None,
            });
        let (policy_fields, home) =
            policy::configure(self, kind, corp_id.as_deref(), &extra_in, &entry_in)?;
        extra.extend(policy_fields);
        // Keys setup does not manage (e.g. `groups`, `welcome_text`) are carried over as they were.
        let written: Vec<String> = extra.iter().map(|(k, _)| k.clone()).collect();
        for (k, v) in &extra_in {
            if !written.contains(k)
                && !managed.contains(&k.as_str())
                && !policy::MANAGED.contains(&k.as_str())
            {
                extra.push((k.clone(), Node::Value(v.clone())));
            }
        }

        let mut entry: Fields = Vec::new();
        if name != kind || entry_in.contains_key("type") {
            entry.push(field("type", kind));
        }
        if let Some(Value::Bool(b)) = entry_in.get("enabled") {
            entry.push(field("enabled", *b));
            if !b {
                self.prompter.say(&format!(
                    "Note: platforms.{name} has `enabled: false`; it stays off until you remove that line."
                ));
            }
        }
        if let Some(h) = &home {
            entry.push(field("home_channel", h.as_str()));
        }
        entry.push(("extra".into(), Node::Map(extra)));

        let agent_in = before.get("agent").and_then(Value::as_object).cloned();
        let agent = agent::configure(self, agent_in.as_ref()).await?;

        let new_text = yaml_edit::apply(
            &text,
            &yaml_edit::Edit {
                agent: agent.as_ref(),
                name: &name,
                entry: &entry,
            },
        )?;
        let todo = self.validate_and_write(path, &new_text)?;
        Ok(Outcome {
            path: path.to_path_buf(),
            instance: name,
            kind: kind.to_string(),
            created: existing.is_none(),
            agent_changed: agent.is_some(),
            todo,
        })
    }

    /// Writes `text` next to `path` (mode 0600), validates it like `gateway check`, then moves
    /// it into place. Returns what is left to do (unset API key variables).
    fn validate_and_write(&mut self, path: &Path, text: &str) -> Result<Vec<String>, SetupError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|source| SetupError::Io {
            what: "cannot create the directory",
            path: dir.clone(),
            source,
        })?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.yaml".into());
        let tmp = dir.join(format!(".{file_name}.setup.tmp"));
        write_private(&tmp, text).map_err(|source| SetupError::Io {
            what: "cannot write",
            path: tmp.clone(),
            source,
        })?;
        // The key variable of the agent may be set only in the service's environment; it is
        // reported as a to-do instead of failing the check.
        let mut todo = Vec::new();
        let key_var = yaml_edit::parse(text).ok().and_then(|v| {
            v.pointer("/agent/api_key_env")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let env = self.env;
        let missing = key_var.filter(|k| env(k).is_none());
        if let Some(k) = &missing {
            todo.push(format!(
                "export {k}=<your API key> in the environment of `gateway run` (agent.api_key_env)"
            ));
        }
        let lookup = |name: &str| -> Option<String> {
            if missing.as_deref() == Some(name) {
                return Some("set-at-run-time".into());
            }
            env(name)
        };
        let checked = check_with_env(&tmp, self.registry, &lookup, missing.is_some());
        match checked {
            Ok(deferred) => todo.extend(deferred.into_iter().map(|(path, var)| {
                format!("export {var}=<the value> in the environment of `gateway run` ({path})")
            })),
            Err(errors) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(SetupError::Invalid(errors));
            }
        }
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            SetupError::Io {
                what: "cannot replace",
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(todo)
    }
}

/// Validates a file like `gateway check`, with `lookup` as the adapters' environment. When the
/// agent's API-key variable is not set here (`key_deferred`), the agent section gets the same
/// checks except that one; otherwise it is built exactly as `gateway check` builds it.
///
/// A `${NAME}` reference whose variable is not set here may be set only in the service's
/// environment: it is returned as `(key path, variable)` to do, and the checks of that key,
/// which need its value, are left to `gateway check` at run time.
fn check_with_env(
    path: &Path,
    registry: &router::Registry,
    lookup: &dyn Fn(&str) -> Option<String>,
    key_deferred: bool,
) -> Result<Vec<(String, String)>, Vec<ConfigError>> {
    let mut tree = router::config::load_tree(Some(path)).map_err(|e| e.0)?;
    let mut deferred = Vec::new();
    let mut errors = Vec::new();
    for e in router::config::expand_env_refs(&mut tree, lookup) {
        let var = e
            .message
            .split_once("environment variable ")
            .and_then(|(_, r)| r.split_whitespace().next());
        match var {
            Some(var) => deferred.push((e.path.clone(), var.to_string())),
            None => errors.push(e),
        }
    }
    let (mut cfg, parse_errors) = router::config::parse_tree_partial(tree);
    errors.extend(parse_errors);
    router::registry::apply_kind_env(&mut cfg, registry, lookup);
    if let Err(e) = router::registry::build_instances(&cfg, registry) {
        errors.extend(e);
    }
    if !errors
        .iter()
        .any(|e| e.path == "agent" || e.path.starts_with("agent."))
    {
        let agent = if key_deferred {
            let e = cfg.agent.validate();
            if e.is_empty() {
                Ok(())
            } else {
                Err(e)
            }
        } else {
            agent_bridge::build_backend(&cfg.agent).map(|_| ())
        };
        if let Err(e) = agent {
            errors.extend(e.into_iter().map(|e| e.under("agent")));
        }
    }
    // The unresolved `${NAME}` is no value to check (an EncodingAESKey of the wrong length).
    let at_or_below =
        |e: &ConfigError, p: &str| e.path == p || e.path.starts_with(&format!("{p}."));
    errors.retain(|e| !deferred.iter().any(|(p, _)| at_or_below(e, p)));
    if errors.is_empty() {
        Ok(deferred)
    } else {
        Err(errors)
    }
}

/// Writes `text` to `path` with owner-only permissions, synced to disk.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    // An existing file keeps its old mode on open; set it explicitly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
