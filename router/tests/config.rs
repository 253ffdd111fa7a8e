//! Config loading: precedence (defaults < file < environment), the documented per-kind
//! variables filling the default instance, `enabled: false` never overridden, port conflicts and
//! error paths. A minimal factory stands in for an adapter kind; nothing here connects anywhere.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use gateway_core::adapter::{ConfigKey, InstanceSpec, KeyKind, Resource};
use gateway_core::{
    AdapterContext, AdapterError, AdapterFactory, ConfigError, InboundMessage, OutboundMessage,
    PlatformAdapter, ReplySink, Target,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoConfig {
    token: String,
    #[serde(default = "default_port")]
    port: u16,
}

fn default_port() -> u16 {
    8645
}

struct Demo;

#[async_trait]
impl PlatformAdapter for Demo {
    fn capabilities(&self) -> gateway_core::Capabilities {
        gateway_core::Capabilities::default()
    }
    async fn connect(&self, _ctx: AdapterContext) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn disconnect(&self) {}
    async fn send(&self, _t: &Target, _m: &OutboundMessage) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn reply(&self, _i: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError> {
        Err(AdapterError::Unsupported("demo".into()))
    }
}

struct DemoFactory;

const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "token",
        kind: KeyKind::String,
        required: true,
        secret: true,
        env: Some("DEMO_TOKEN"),
        default: None,
        doc: "token",
    },
    ConfigKey {
        name: "port",
        kind: KeyKind::Integer,
        required: false,
        secret: false,
        env: Some("DEMO_PORT"),
        default: Some("8645"),
        doc: "port",
    },
];

impl AdapterFactory for DemoFactory {
    fn kind(&self) -> &'static str {
        "demo"
    }
    fn description(&self) -> &'static str {
        "demo"
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        KEYS
    }
    fn policy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[("DEMO_DM_POLICY", "dm_policy")]
    }
    fn home_channel_env(&self) -> Option<&'static str> {
        Some("DEMO_HOME_CHANNEL")
    }
    fn resources(&self, extra: &Value) -> Vec<Resource> {
        let port = extra.get("port").and_then(Value::as_u64).unwrap_or(8645);
        vec![Resource::ListenPort(format!("0.0.0.0:{port}"))]
    }
    fn build(
        &self,
        _spec: &InstanceSpec,
        extra: Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>> {
        let c: DemoConfig = gateway_core::adapter::parse_extra(extra).map_err(|e| vec![e])?;
        assert!(!c.token.is_empty() || c.port > 0);
        Ok(Arc::new(Demo))
    }
}

fn registry() -> router::Registry {
    router::Registry::new().register(Arc::new(DemoFactory))
}

fn load(
    yaml: &str,
    env: &[(&str, &str)],
) -> Result<(router::GatewayConfig, Vec<router::InstancePlan>), router::ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    router::load(Some(&path), &registry(), &move |k| env.get(k).cloned())
}

#[test]
fn kind_variables_fill_and_override_the_default_instance() {
    let (_, plans) = load(
        "platforms:\n  demo:\n    extra:\n      token: from-file\n",
        &[("DEMO_PORT", "9000")],
    )
    .unwrap();
    assert_eq!(plans.len(), 1);
    // Credentials alone create the instance.
    let (_, plans) = load("platforms: {}\n", &[("DEMO_TOKEN", "t")]).unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].spec.name, "demo");
    // The home channel variable fills the instance's home_channel.
    let env = [("DEMO_TOKEN", "t"), ("DEMO_HOME_CHANNEL", "group:ops")];
    let (_, plans) = load("platforms: {}\n", &env).unwrap();
    assert_eq!(plans[0].spec.home_channel.as_deref(), Some("group:ops"));
    // A policy variable without credentials does not.
    let (_, plans) = load("platforms: {}\n", &[("DEMO_DM_POLICY", "pairing")]).unwrap();
    assert!(plans.is_empty());
    // The policy variable reaches the instance's access config.
    let (_, plans) = load(
        "platforms: {}\n",
        &[("DEMO_TOKEN", "t"), ("DEMO_DM_POLICY", "ALLOWLIST")],
    )
    .unwrap();
    assert_eq!(
        plans[0].access.dm_policy,
        gateway_core::policy::DmPolicy::Allowlist
    );
    // A bad policy from the environment is reported at the key it fills.
    let err = load(
        "platforms: {}\n",
        &[("DEMO_TOKEN", "t"), ("DEMO_DM_POLICY", "maybe")],
    )
    .unwrap_err();
    assert_eq!(err.0[0].path, "platforms.demo.extra.dm_policy");
}

#[test]
fn explicit_disabled_is_never_overridden_by_the_environment() {
    let (_, plans) = load(
        "platforms:\n  demo:\n    enabled: false\n    extra: { token: x }\n",
        &[("DEMO_TOKEN", "t")],
    )
    .unwrap();
    assert!(plans.is_empty());
    // Disabled instances are still validated.
    let err = load(
        "platforms:\n  demo:\n    enabled: false\n    extra: { tokn: x }\n",
        &[],
    )
    .unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|e| e.path.starts_with("platforms.demo.extra")),
        "{err}"
    );
}

#[test]
fn named_instances_need_a_type_and_ports_are_not_shared() {
    let err = load(
        "platforms:\n  a:\n    type: demo\n    extra: { token: x }\n  b:\n    type: demo\n    extra: { token: tok-b }\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].message.contains("already uses"), "{err}");
    let (_, plans) = load(
        "platforms:\n  a:\n    type: demo\n    extra: { token: x }\n  b:\n    type: demo\n    extra: { token: tok-b, port: 9001 }\n",
        &[],
    )
    .unwrap();
    assert_eq!(plans.len(), 2);
    let err = load("platforms:\n  c:\n    extra: { token: x }\n", &[]).unwrap_err();
    assert_eq!(err.0[0].path, "platforms.c");
}

#[test]
fn misspelt_keys_are_reported_with_their_paths_all_at_once() {
    let err = load(
        "gatway: {}\ngateway:\n  listen: nowhere\nsessions:\n  reset:\n    mode: weekly\nplatforms:\n  demo:\n    extra: { tokn: x }\n",
        &[],
    )
    .unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"gatway"), "{paths:?}");
    assert!(paths.contains(&"gateway.listen"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("sessions.reset")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("platforms.demo.extra")),
        "{paths:?}"
    );
}

#[test]
fn gateway_variables_reach_any_key_and_beat_the_file() {
    // figment reads the process environment for GATEWAY_…; use a key no other test sets.
    std::env::set_var("GATEWAY_SESSIONS__MAX_QUEUE", "3");
    let (cfg, _) = load("sessions:\n  max_queue: 9\n", &[]).unwrap();
    std::env::remove_var("GATEWAY_SESSIONS__MAX_QUEUE");
    assert_eq!(cfg.sessions.max_queue, 3);
    let (cfg, _) = load("sessions:\n  max_queue: 9\n", &[]).unwrap();
    assert_eq!(cfg.sessions.max_queue, 9);
    let (cfg, _) = load("{}\n", &[]).unwrap();
    assert_eq!(cfg.sessions.max_queue, 8, "built-in default");
}

/// Like [`DemoFactory`], but for a platform without group chats (a WeCom app).
struct AppFactory;

impl AdapterFactory for AppFactory {
    fn kind(&self) -> &'static str {
        "app"
    }
    fn description(&self) -> &'static str {
        "app"
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        &[]
    }
    fn group_chats(&self) -> bool {
        false
    }
    fn build(
        &self,
        _spec: &InstanceSpec,
        _extra: Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>> {
        Ok(Arc::new(Demo))
    }
}

fn load_in(
    dir: &std::path::Path,
    yaml: &str,
    env: &[(&str, &str)],
) -> Result<(router::GatewayConfig, Vec<router::InstancePlan>), router::ConfigErrors> {
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let registry = registry().register(Arc::new(AppFactory));
    router::load(Some(&path), &registry, &move |k| env.get(k).cloned())
}

#[test]
fn env_references_resolve_in_platform_keys_and_an_unset_one_is_an_error() {
    let (cfg, plans) = load(
        "platforms:\n  demo:\n    extra:\n      token: ${DEMO_SECRET_REF}\nagent:\n  backend: command\n  command: [\"true\"]\n  env: { KEY: \"k-${AGENT_KEY}\" }\n",
        &[("DEMO_SECRET_REF", "from-env"), ("AGENT_KEY", "abc")],
    )
    .unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(cfg.platforms["demo"].extra["token"], "from-env");
    let agent = serde_json::to_value(&cfg.agent).unwrap();
    assert_eq!(agent["env"]["KEY"], "k-abc");
    // Unset: an error naming the key and the variable, not an empty secret.
    let err = load(
        "platforms:\n  demo:\n    extra:\n      token: ${NOT_SET_ANYWHERE}\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].path, "platforms.demo.extra.token");
    assert!(err.0[0].message.contains("NOT_SET_ANYWHERE"), "{err}");
}

#[test]
fn every_unknown_key_is_listed_at_once_with_a_suggestion() {
    let err = load(
        "gatway: {}\ngateway:\n  lisen: 127.0.0.1:1\n  colour: red\nsessions:\n  max_qeue: 3\n  reset:\n    mdoe: idle\nagent:\n  backend: echo\n  dely_ms: 1\nplatforms:\n  demo:\n    extra: { tokn: x, prot: 1, token: t }\n",
        &[],
    )
    .unwrap_err();
    let find = |p: &str| {
        err.0
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} missing from {err}"))
            .message
            .clone()
    };
    assert!(find("gatway").contains("did you mean `gateway`?"), "{err}");
    assert!(
        find("gateway.lisen").contains("did you mean `listen`?"),
        "{err}"
    );
    assert!(find("gateway.colour").contains("expected one of"), "{err}");
    assert!(find("sessions.max_qeue").contains("`max_queue`"), "{err}");
    assert!(find("sessions.reset.mdoe").contains("`mode`"), "{err}");
    assert!(find("agent.dely_ms").contains("`delay_ms`"), "{err}");
    assert!(
        find("platforms.demo.extra.tokn").contains("`token`"),
        "{err}"
    );
    assert!(
        find("platforms.demo.extra.prot").contains("`port`"),
        "{err}"
    );
    assert_eq!(err.0.len(), 8, "{err}");
}

#[test]
fn a_relative_data_dir_is_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = load_in(dir.path(), "gateway:\n  data_dir: ./state\n", &[]).unwrap();
    assert_eq!(cfg.gateway.data_dir, dir.path().join("state"));
    let (cfg, _) = load_in(dir.path(), "{}\n", &[]).unwrap();
    assert_eq!(cfg.gateway.data_dir, dir.path().join("data"), "the default");
    let (cfg, _) = load_in(dir.path(), "gateway:\n  data_dir: /var/lib/gw\n", &[]).unwrap();
    assert_eq!(cfg.gateway.data_dir, std::path::Path::new("/var/lib/gw"));
}

#[test]
fn a_kind_variable_alone_does_not_conjure_an_instance_next_to_explicit_ones() {
    // Another instance of the kind is configured: the variable does not add a second one.
    let (_, plans) = load(
        "platforms:\n  bot-a:\n    type: demo\n    extra: { token: x }\n",
        &[("DEMO_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].spec.name, "bot-a");
    // An instance of another kind: only a complete set of required variables adds the default
    // instance (DEMO_TOKEN is the only required one here, so it does).
    let dir = tempfile::tempdir().unwrap();
    let (_, plans) = load_in(dir.path(), "platforms:\n  app: {}\n", &[("DEMO_PORT", "1")]).unwrap();
    assert_eq!(plans.len(), 1, "a non-required variable adds nothing");
    let (_, plans) = load_in(
        dir.path(),
        "platforms:\n  app: {}\n",
        &[("DEMO_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(plans.len(), 2);
}

#[test]
fn a_platform_without_groups_has_no_group_policy_and_no_group_home_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (_, plans) = load_in(
        dir.path(),
        "platforms:\n  app:\n    extra: { dm_policy: pairing }\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        gateway_core::policy::AccessPolicy::new(plans[0].access.clone()).is_open(),
        (false, false),
        "no open-groups warning"
    );
    // The demo kind has groups: its default group policy stays open.
    let (_, plans) = load(
        "platforms:\n  demo:\n    extra: { token: t, dm_policy: pairing }\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        gateway_core::policy::AccessPolicy::new(plans[0].access.clone()).is_open(),
        (false, true)
    );
    let err = load_in(
        dir.path(),
        "platforms:\n  app:\n    home_channel: group:wr123\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].path, "platforms.app.home_channel");
    assert!(err.0[0].message.contains("no group chats"), "{err}");
}

#[test]
fn a_yaml_syntax_error_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_in(
        dir.path(),
        "gateway:\n  listen: 127.0.0.1:1\nplatforms:\n  demo:\n    extra:\n      token: x\n     port: [1\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    let path = dir.path().join("c.yaml");
    let at = format!("{}:7:", path.display());
    assert!(err.0[0].path.starts_with(&at), "{err}");
    assert!(!err.0[0].message.contains("at line"), "{err}");
}
