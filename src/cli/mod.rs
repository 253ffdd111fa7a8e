//! Subcommand implementations.

pub mod chat;
pub mod doctor;
pub mod outbox;
pub mod pairing;
pub mod run;
pub mod sandbox;
pub mod send;
pub mod service;
pub mod sessions;
pub mod setup;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use gateway_core::StateStore;

/// The state database inside a data dir.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.db")
}

/// Creates the data dir owner-only (`0700`): it holds chat history and the admin token.
pub fn create_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    gateway_core::private_fs::create_private_dir(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))
}

/// Opens (creating if needed) the SQLite store in `data_dir`.
pub fn open_store(data_dir: &Path) -> anyhow::Result<Arc<dyn StateStore>> {
    create_data_dir(data_dir)?;
    let store = store_sqlite::SqliteStore::open(&db_path(data_dir))
        .with_context(|| format!("cannot open the state database in {}", data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Loads and validates the config, printing every problem. `Err` carries the exit code 2.
pub fn load_config(
    file: Option<&Path>,
) -> Result<(router::GatewayConfig, Vec<router::InstancePlan>), ConfigFailure> {
    let path = router::config::find_config_file(file).map_err(|e| ConfigFailure(vec![e]))?;
    tracing::debug!(path = %path.display(), "Loading config.");
    router::load(
        Some(&path),
        &crate::registry(),
        &router::registry::process_env,
    )
    .map_err(|e| ConfigFailure(e.0))
}

/// Config problems, printed one per line by [`ConfigFailure::report`].
#[derive(Debug)]
pub struct ConfigFailure(pub Vec<gateway_core::ConfigError>);

impl ConfigFailure {
    /// Prints the problems to stderr and returns exit code 2. A message may quote a value
    /// (`\`ftp://user:pass@host\` is not an http(s) URL`): credentials in it, by shape or as a
    /// configured secret, are scrubbed first.
    pub fn report(&self) -> std::process::ExitCode {
        eprintln!("The configuration has {} problem(s):", self.0.len());
        for e in &self.0 {
            let line = if e.path.is_empty() {
                format!("  - {}", e.message)
            } else {
                format!("  - {}: {}", e.path, e.message)
            };
            eprintln!("{}", gateway_core::redact::scrub(&line));
        }
        std::process::ExitCode::from(2)
    }
}

/// The data dir of the config, or the default when there is no config file.
pub fn data_dir_of(file: Option<&Path>) -> anyhow::Result<PathBuf> {
    match router::config::find_config_file(file) {
        Ok(path) => {
            let mut tree = router::config::load_tree(Some(&path)).map_err(anyhow::Error::new)?;
            // Only a reference in the data dir itself matters here.
            let refs = router::config::expand_env_refs(&mut tree, &router::registry::process_env);
            if let Some(e) = refs.into_iter().find(|e| e.path == "gateway.data_dir") {
                return Err(anyhow::anyhow!("{e}"));
            }
            let cfg = router::config::parse_tree(tree).map_err(anyhow::Error::new)?;
            Ok(cfg.gateway.data_dir)
        }
        Err(_) if file.is_none() => Ok(router::config::GatewaySection::default().data_dir),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Builds the configured agent backend (the config was validated, so errors are rare: an
/// environment variable that vanished since).
pub fn build_agent(
    cfg: &agent_bridge::AgentConfig,
) -> anyhow::Result<Arc<dyn agent_bridge::AgentBackend>> {
    agent_bridge::build_backend(cfg).map_err(|e| {
        let all: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("agent: {}", all.join("; "))
    })
}
