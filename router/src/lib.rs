//! The router: the adapter registry, configuration loading and validation, and the dispatch
//! pipeline that takes inbound messages through policy, commands and the session engine to the
//! agent and back to the platform.
//!
//! The binary uses it in three steps: [`load`] (file + environment → validated config and built
//! adapters, every problem reported at once), [`Gateway::new`], then [`Gateway::run`].

pub mod admin;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod shared;
pub mod turn;

use std::path::Path;

pub use config::{ConfigErrors, GatewayConfig};
pub use registry::{InstancePlan, Registry};
pub use runtime::{FatalError, Gateway};

/// Loads the config file (if any) and the environment, validates every section, and builds every
/// enabled platform instance. All problems are returned together.
pub fn load(
    file: Option<&Path>,
    registry: &Registry,
    env: registry::EnvLookup<'_>,
) -> Result<(GatewayConfig, Vec<InstancePlan>), ConfigErrors> {
    let mut tree = config::load_tree(file)?;
    let mut errors = config::expand_env_refs(&mut tree, env);
    let (mut cfg, parse_errors) = config::parse_tree_partial(tree);
    errors.extend(parse_errors);
    let agent_parsed = !errors
        .iter()
        .any(|e| e.path == "agent" || e.path.starts_with("agent."));
    registry::apply_kind_env(&mut cfg, registry, env);
    let plans = match registry::build_instances(&cfg, registry) {
        Ok(p) => p,
        Err(e) => {
            errors.extend(e);
            Vec::new()
        }
    };
    if agent_parsed {
        if let Err(e) = agent_bridge::build_backend(&cfg.agent) {
            errors.extend(e.into_iter().map(|e| e.under("agent")));
        }
    }
    if errors.is_empty() {
        Ok((cfg, plans))
    } else {
        Err(ConfigErrors(errors))
    }
}
