//! The `wecom_callback` adapter: WeCom self-built apps. WeCom POSTs AES-encrypted XML callbacks
//! to our HTTP endpoint; we answer `success` at once, hand the message to the router, and reply
//! through the REST API (`message/send`). Facts: `reference/wecom-callback.md`.
//!
//! Layout (config split from runtime, STYLE.md habit 1):
//! * [`config`]: typed config, validation, documented keys;
//! * [`server`]: the axum server (URL verification, callbacks, `/health`);
//! * [`inbound`]: what a decrypted callback is (types, events, dedup key);
//! * [`intake`]: the atomic accept (dedup and journal in one record), resume at start,
//!   workers (media download, submit);
//! * `lanes`: per-sender order over a bounded worker pool;
//! * [`api`]: the REST client (token cache, retries);
//! * [`outbound`]: `message/send` bodies, splitting, media upload, cards;
//! * [`routing`]: which app answers whom (`corp_id:user_id`);
//! * [`adapter`]: the `PlatformAdapter` and its reply sink.

pub mod adapter;
pub mod api;
pub mod config;
pub mod inbound;
pub mod intake;
mod lanes;
pub mod listener;
pub mod outbound;
pub mod routing;
pub mod server;

use std::sync::Arc;

use gateway_core::adapter::{ConfigKey, InstanceSpec, Resource};
use gateway_core::{AdapterFactory, ConfigError, PlatformAdapter};

pub use adapter::WeComCallbackAdapter;
pub use config::CallbackConfig;
pub use outbound::{NewsArticle, RichMessage, TextCard};

/// The adapter kind in configuration (`type: wecom_callback`).
pub const KIND: &str = "wecom_callback";

/// Builds `wecom_callback` instances.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeComCallbackFactory;

impl AdapterFactory for WeComCallbackFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "WeCom self-built apps: encrypted XML callbacks in, REST API out (several apps and corps)"
    }

    fn config_keys(&self) -> &'static [ConfigKey] {
        config::CONFIG_KEYS
    }

    fn policy_env(&self) -> &'static [(&'static str, &'static str)] {
        config::POLICY_ENV
    }

    fn home_channel_env(&self) -> Option<&'static str> {
        Some("WECOM_CALLBACK_HOME_CHANNEL")
    }

    fn group_chats(&self) -> bool {
        // App callbacks are DMs only (reference §4.3): no group policy, no group home channel.
        false
    }

    fn resources(&self, extra: &serde_json::Value) -> Vec<Resource> {
        // Any two instances on one port conflict, whatever their hosts (0.0.0.0 covers all).
        config::listen_port(extra)
            .map(|p| vec![Resource::ListenPort(format!("port {p}"))])
            .unwrap_or_default()
    }

    fn build(
        &self,
        instance: &InstanceSpec,
        extra: serde_json::Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>> {
        let config = CallbackConfig::from_extra(extra)?;
        let adapter = WeComCallbackAdapter::new(&instance.name, config)
            .map_err(|e| vec![ConfigError::new("", e.to_string())])?;
        Ok(Arc::new(adapter))
    }
}
