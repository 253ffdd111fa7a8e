//! The `wecom` adapter: the WeCom AI Bot long connection, behaving as WeCom's own client does
//! (reference `wecom-aibot-official.md`, which supersedes `wecom-aibot.md`).
//!
//! We dial `wss://openws.work.weixin.qq.com`, subscribe with the bot id and secret, and exchange
//! JSON frames: message and event callbacks in; out, one stream per inbound message, and
//! everything else (what does not fit the stream, notices, media, proactive sends) with
//! `aibot_send_msg`, groups included.
//!
//! Layout (STYLE.md habits 1 and 11): `config` (typed config and documented keys), `protocol`
//! (frames), `session` (the protocol state machine, no I/O), `conn` (the socket runner),
//! `intake` + `inbound` + `batch` + `media` (the inbound pipeline), `stream` (the reply stream
//! engine), `send` (proactive text), `upload` (outbound media), `ratelimit` (the per-chat
//! limit), `adapter` (the `PlatformAdapter`).

use std::sync::Arc;

use gateway_core::adapter::{ConfigKey, InstanceSpec};
use gateway_core::{AdapterFactory, ConfigError, PlatformAdapter};

mod adapter;
pub mod batch;
pub mod config;
mod conn;
pub mod inbound;
mod intake;
pub mod media;
pub mod protocol;
pub mod ratelimit;
mod send;
pub mod session;
mod stream;
pub mod upload;

pub use adapter::WeComAdapter;
pub use config::WeComConfig;
pub use conn::{websocket_over, Connector, DialError, NetConnector, ProxyChoice, WsSink, WsStream};

/// Builds `wecom` adapters (kind `wecom`).
#[derive(Debug, Default)]
pub struct WeComFactory;

impl WeComFactory {
    /// A factory whose adapters open their connections through `connector` instead of the
    /// network (tests under paused time use an in-memory transport).
    pub fn with_connector(connector: Arc<dyn Connector>) -> WeComFactoryWith {
        WeComFactoryWith { connector }
    }
}

/// A [`WeComFactory`] with a substituted [`Connector`].
#[derive(Debug, Clone)]
pub struct WeComFactoryWith {
    connector: Arc<dyn Connector>,
}

fn parse_config(extra: serde_json::Value) -> Result<WeComConfig, Vec<ConfigError>> {
    let mut cfg: WeComConfig = gateway_core::adapter::parse_extra(extra).map_err(|e| vec![e])?;
    let errors = cfg.validate();
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

impl AdapterFactory for WeComFactory {
    fn kind(&self) -> &'static str {
        "wecom"
    }

    fn description(&self) -> &'static str {
        "WeCom AI Bot over the long connection (WebSocket): DMs and groups, streamed replies, media"
    }

    fn config_keys(&self) -> &'static [ConfigKey] {
        config::CONFIG_KEYS
    }

    fn policy_env(&self) -> &'static [(&'static str, &'static str)] {
        config::POLICY_ENV
    }

    fn home_channel_env(&self) -> Option<&'static str> {
        Some("WECOM_HOME_CHANNEL")
    }

    fn build(
        &self,
        instance: &InstanceSpec,
        extra: serde_json::Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>> {
        Ok(Arc::new(WeComAdapter::new(
            &instance.name,
            parse_config(extra)?,
        )))
    }
}

impl AdapterFactory for WeComFactoryWith {
    fn kind(&self) -> &'static str {
        WeComFactory.kind()
    }

    fn description(&self) -> &'static str {
        WeComFactory.description()
    }

    fn config_keys(&self) -> &'static [ConfigKey] {
        config::CONFIG_KEYS
    }

    fn policy_env(&self) -> &'static [(&'static str, &'static str)] {
        config::POLICY_ENV
    }

    fn home_channel_env(&self) -> Option<&'static str> {
        Some("WECOM_HOME_CHANNEL")
    }

    fn build(
        &self,
        instance: &InstanceSpec,
        extra: serde_json::Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>> {
        let cfg = parse_config(extra)?;
        Ok(Arc::new(WeComAdapter::with_connector(
            &instance.name,
            cfg,
            self.connector.clone(),
        )))
    }
}
