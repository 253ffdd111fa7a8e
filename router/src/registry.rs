//! The adapter registry (kind → factory) and the step that turns `platforms:` entries into built
//! adapters with their access policies, applying the documented environment variables to the
//! default instance of each kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_core::adapter::{InstanceSpec, Resource};
use gateway_core::policy::AccessConfig;
use gateway_core::{AdapterFactory, ConfigError, PlatformAdapter};
use serde_json::{Map, Value};

use crate::config::{env_value, GatewayConfig, PlatformEntry};

/// Maps adapter kinds to their factories. The binary registers one line per adapter.
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn AdapterFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory (a later one with the same kind replaces the earlier).
    pub fn register(mut self, factory: Arc<dyn AdapterFactory>) -> Self {
        self.factories.insert(factory.kind(), factory);
        self
    }

    /// The factory for `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn AdapterFactory>> {
        self.factories.get(kind)
    }

    /// Every registered factory, by kind.
    pub fn factories(&self) -> impl Iterator<Item = &Arc<dyn AdapterFactory>> {
        self.factories.values()
    }
}

/// One platform instance, validated and built, not yet started.
pub struct InstancePlan {
    /// Name, kind, home channel, data dir.
    pub spec: InstanceSpec,
    /// Access policy taken from `extra`.
    pub access: AccessConfig,
    /// The adapter.
    pub adapter: Arc<dyn PlatformAdapter>,
}

impl std::fmt::Debug for InstancePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePlan")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Reads an environment variable; an empty value counts as unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Applies each kind's documented variables (for example `WECOM_BOT_ID`) to the instance named
/// like the kind. Environment wins over the file; an explicit `enabled: false` stays. When no
/// such instance is configured, the variables create it only if no other instance of the kind
/// is configured, and then only with every required variable set, unless the file configures
/// no instance at all (an environment-only deployment, where a missing variable is reported).
/// So a stray `WECOM_SECRET` never conjures a half-configured instance next to explicit ones.
pub fn apply_kind_env(cfg: &mut GatewayConfig, registry: &Registry, env: EnvLookup<'_>) {
    let file_has_instances = !cfg.platforms.is_empty();
    let kind_of = |name: &String, e: &PlatformEntry| e.kind.clone().unwrap_or_else(|| name.clone());
    let file_kinds: Vec<String> = cfg.platforms.iter().map(|(n, e)| kind_of(n, e)).collect();
    for factory in registry.factories() {
        let kind = factory.kind();
        let mut found: Map<String, Value> = Map::new();
        let mut has_required = false;
        let mut all_required = true;
        for key in factory.config_keys() {
            let raw = key.env.and_then(env);
            if key.required && raw.is_none() {
                all_required = false;
            }
            if let Some(raw) = raw {
                has_required |= key.required;
                found.insert(key.name.to_string(), env_value(key.kind, &raw));
            }
        }
        for (var, key) in factory.policy_env() {
            if let Some(raw) = env(var) {
                found.insert((*key).to_string(), Value::String(raw));
            }
        }
        let home = factory.home_channel_env().and_then(env);
        if found.is_empty() && home.is_none() {
            continue;
        }
        match cfg.platforms.get_mut(kind) {
            // An instance named like the kind but of another type is not the default instance.
            Some(entry) if entry.kind.as_deref().is_some_and(|k| k != kind) => {}
            Some(entry) => {
                entry.extra.extend(found);
                if home.is_some() {
                    entry.home_channel = home;
                }
            }
            None if has_required
                && !file_kinds.iter().any(|k| k == kind)
                && (all_required || !file_has_instances) =>
            {
                cfg.platforms.insert(
                    kind.to_string(),
                    PlatformEntry {
                        kind: None,
                        enabled: None,
                        home_channel: home,
                        extra: found,
                    },
                );
            }
            None => {}
        }
    }
}

/// Builds every enabled instance, collecting all errors (unknown kinds, bad keys, bad policies,
/// two instances claiming one port) with their key paths.
pub fn build_instances(
    cfg: &GatewayConfig,
    registry: &Registry,
) -> Result<Vec<InstancePlan>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut plans = Vec::new();
    let mut claimed: HashMap<Resource, String> = HashMap::new();
    for (name, entry) in &cfg.platforms {
        let path = format!("platforms.{name}");
        let kind = entry.kind.clone().unwrap_or_else(|| name.clone());
        // Policy keys are checked even when the kind is unknown, so one run reports both.
        let mut extra = entry.extra.clone();
        let access = match AccessConfig::from_extra(&mut extra) {
            Ok(a) => Some(a),
            Err(errs) => {
                errors.extend(errs.into_iter().map(|e| e.under(&format!("{path}.extra"))));
                None
            }
        };
        let Some(factory) = registry.get(&kind) else {
            let known = registry
                .factories()
                .map(|f| f.kind())
                .collect::<Vec<_>>()
                .join(", ");
            let at = if entry.kind.is_some() {
                format!("{path}.type")
            } else {
                path.clone()
            };
            errors.push(ConfigError::new(
                at,
                format!("unknown platform kind `{kind}`; registered kinds: {known} (set `type:` for a named instance)"),
            ));
            continue;
        };
        let mut access = access;
        if let Some(home) = &entry.home_channel {
            match gateway_core::Target::parse(home) {
                Err(e) => errors.push(ConfigError::new(format!("{path}.home_channel"), e)),
                Ok(gateway_core::Target::Group(_)) if !factory.group_chats() => {
                    errors.push(ConfigError::new(
                        format!("{path}.home_channel"),
                        format!("`{kind}` has no group chats (it receives DMs only); use user:ID (or party:ID, tag:ID, @all)"),
                    ));
                }
                Ok(_) => {}
            }
        }
        // Without group chats no group can be admitted: the policy is `disabled`, whatever the
        // default says, so no "open for groups" warning is given for it.
        if !factory.group_chats() {
            if let Some(a) = access.as_mut() {
                a.group_policy = gateway_core::policy::GroupPolicy::Disabled;
            }
        }
        let extra = Value::Object(extra);
        for res in factory
            .resources(&extra)
            .into_iter()
            .filter(|_| entry.enabled != Some(false))
        {
            if let Some(other) = claimed.get(&res) {
                let Resource::ListenPort(addr) = &res;
                errors.push(ConfigError::new(
                    format!("{path}.extra"),
                    format!("listens on {addr}, which platforms.{other} already uses; give each instance its own port (or use several apps in one instance)"),
                ));
            } else {
                claimed.insert(res, name.clone());
            }
        }
        let spec = InstanceSpec {
            name: name.clone(),
            kind: kind.clone(),
            home_channel: entry.home_channel.clone(),
            data_dir: cfg.gateway.data_dir.clone(),
        };
        // Every unknown key of `extra` is listed, each with the closest known key.
        let built = crate::config::keys::collect_unknown(
            extra,
            &format!("{path}.extra"),
            &mut errors,
            |extra| factory.build(&spec, extra),
        );
        match built {
            // Disabled instances are validated like the others, then left out.
            Some(adapter) if entry.enabled != Some(false) => {
                if let Some(access) = access {
                    plans.push(InstancePlan {
                        spec,
                        access,
                        adapter,
                    });
                }
            }
            Some(_) | None => {}
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}
