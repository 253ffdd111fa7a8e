//! The typed configuration of a `wecom` instance (`platforms.<name>.extra`), its documented keys
//! with their environment variables, defaults in one place, and validation that reports every
//! problem at once with its key path.
//!
//! The access-policy keys (`dm_policy`, `group_policy`, `allow_from`, `group_allow_from`,
//! `groups`) are taken out by the router before this struct sees `extra`.

use std::time::Duration;

use gateway_core::adapter::{ConfigKey, KeyKind};
use gateway_core::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The default endpoint of the AI Bot long connection (reference §0).
pub const DEFAULT_WEBSOCKET_URL: &str = "wss://openws.work.weixin.qq.com";

const MIB: u64 = 1024 * 1024;

/// Settings of one `wecom` instance. Every field but the credentials has a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeComConfig {
    /// The bot id (console: Smart Robot → API mode).
    pub bot_id: String,
    /// The bot secret.
    pub secret: SecretString,
    /// The long-connection endpoint; empty means the default.
    pub websocket_url: String,
    /// An HTTP(S) proxy URL for the WebSocket (`http://[user:pass@]host:port`), `none` to
    /// ignore the proxy environment; unset means `HTTPS_PROXY` / `ALL_PROXY` (and `NO_PROXY`).
    pub proxy: Option<String>,
    /// Sent when a user opens the bot's chat (`enter_chat`); unset sends nothing.
    pub welcome_text: Option<String>,
    /// Seconds between application-level pings.
    pub ping_interval_secs: u64,
    /// Unanswered pings after which the socket counts as dead and is reconnected.
    pub max_missed_pings: u32,
    /// Reconnect delays in seconds after network failures; the last one repeats for ever. Reset
    /// after a good subscribe.
    pub reconnect_backoff_secs: Vec<u64>,
    /// Seconds for dialling plus the subscribe acknowledgement.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the answer to a request (sends, uploads, final stream frames).
    pub request_timeout_secs: u64,
    /// Seconds to wait for the ACK of an intermediate stream frame before sending the next.
    pub stream_ack_timeout_secs: u64,
    /// Least milliseconds between two stream updates of one reply.
    pub stream_interval_ms: u64,
    /// Seconds after the user's message at which its stream is finished with what it shows,
    /// safely inside WeCom's 6 minutes (846608); the rest of the answer follows as markdown.
    pub stream_window_secs: u64,
    /// Most bytes of content per stream frame (WeCom's limit is 20480).
    pub stream_max_frame_bytes: usize,
    /// Most bytes per markdown message; longer texts are split, never cut.
    pub text_max_bytes: usize,
    /// Quiet time in milliseconds before split user texts are merged and handed on; 0 disables
    /// merging.
    pub text_batch_delay_ms: u64,
    /// Quiet time when the last piece is near the client's split size.
    pub text_batch_split_delay_ms: u64,
    /// A piece of at least this many characters was probably split by the client.
    pub text_batch_split_threshold: usize,
    /// Seconds a message id is remembered for duplicate detection.
    pub dedup_ttl_secs: u64,
    /// Most message ids remembered for duplicate detection.
    pub dedup_capacity: usize,
    /// Largest inbound media download in bytes (at most 20 MiB).
    pub media_max_bytes: u64,
    /// Downloaded media older than this many hours is deleted.
    pub media_retention_hours: u64,
    /// Allow media downloads from private, loopback and link-local addresses (tests, intranet).
    pub allow_private_media_hosts: bool,
    /// Messages per minute per chat (WeCom answers 846607 above 30).
    pub rate_limit_per_minute: u32,
    /// Of those, how many are kept for final frames and notices.
    pub rate_limit_reserve: u32,
}

impl Default for WeComConfig {
    fn default() -> Self {
        Self {
            bot_id: String::new(),
            secret: SecretString::from(String::new()),
            websocket_url: DEFAULT_WEBSOCKET_URL.into(),
            proxy: None,
            welcome_text: None,
            ping_interval_secs: 30,
            max_missed_pings: 2,
            reconnect_backoff_secs: vec![1, 2, 4, 8, 16, 30],
            connect_timeout_secs: 20,
            request_timeout_secs: 15,
            stream_ack_timeout_secs: 5,
            stream_interval_ms: 1000,
            stream_window_secs: 330,
            stream_max_frame_bytes: 20480,
            text_max_bytes: 4000,
            text_batch_delay_ms: 600,
            text_batch_split_delay_ms: 2000,
            text_batch_split_threshold: 3900,
            dedup_ttl_secs: 300,
            dedup_capacity: 1000,
            media_max_bytes: 20 * MIB,
            media_retention_hours: 72,
            allow_private_media_hosts: false,
            rate_limit_per_minute: 30,
            rate_limit_reserve: 6,
        }
    }
}

impl std::fmt::Debug for WeComConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeComConfig")
            .field("bot_id", &self.bot_id)
            .field("secret", &"[redacted]")
            .field("websocket_url", &self.websocket_url)
            .finish_non_exhaustive()
    }
}

impl WeComConfig {
    /// Checks every value and returns all problems, with paths relative to `extra`.
    pub fn validate(&mut self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |path: &str, msg: String| errors.push(ConfigError::new(path, msg));
        self.bot_id = self.bot_id.trim().to_owned();
        if self.bot_id.is_empty() {
            err("bot_id", "missing: set the bot id (or WECOM_BOT_ID)".into());
        }
        if self.secret.expose_secret().trim().is_empty() {
            err(
                "secret",
                "missing: set the bot secret (or WECOM_SECRET)".into(),
            );
        }
        let url = self.websocket_url.trim();
        self.websocket_url = if url.is_empty() {
            DEFAULT_WEBSOCKET_URL.to_owned()
        } else {
            url.to_owned()
        };
        if !(self.websocket_url.starts_with("ws://") || self.websocket_url.starts_with("wss://")) {
            err(
                "websocket_url",
                "must start with wss:// (or ws:// for a local emulator)".into(),
            );
        }
        if let Some(p) = &self.proxy {
            let p = p.trim();
            if !(p.is_empty()
                || p.eq_ignore_ascii_case("none")
                || p.starts_with("http://")
                || p.starts_with("https://"))
            {
                err("proxy", "must be an http:// proxy URL, or `none`".into());
            }
        }
        if self
            .welcome_text
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            self.welcome_text = None;
        }
        // Every duration has an upper bound too: timers add it to the clock, which must not
        // overflow, and absurd values are typos.
        let mut within = |path: &str, v: u64, min: u64, max: u64| {
            if !(min..=max).contains(&v) {
                err(path, format!("must be between {min} and {max}"));
            }
        };
        const DAY: u64 = 86_400;
        within("ping_interval_secs", self.ping_interval_secs, 1, 3600);
        within("max_missed_pings", u64::from(self.max_missed_pings), 1, 100);
        within("connect_timeout_secs", self.connect_timeout_secs, 1, 600);
        within("request_timeout_secs", self.request_timeout_secs, 1, 600);
        within(
            "stream_ack_timeout_secs",
            self.stream_ack_timeout_secs,
            1,
            600,
        );
        within("stream_interval_ms", self.stream_interval_ms, 1, 600_000);
        within("stream_window_secs", self.stream_window_secs, 1, 360);
        within("text_batch_delay_ms", self.text_batch_delay_ms, 0, 60_000);
        within(
            "text_batch_split_delay_ms",
            self.text_batch_split_delay_ms,
            0,
            60_000,
        );
        within("dedup_ttl_secs", self.dedup_ttl_secs, 1, 7 * DAY);
        within(
            "media_retention_hours",
            self.media_retention_hours,
            1,
            24 * 365,
        );
        if self.reconnect_backoff_secs.is_empty()
            || self
                .reconnect_backoff_secs
                .iter()
                .any(|s| !(1..=DAY).contains(s))
        {
            err(
                "reconnect_backoff_secs",
                "must be a non-empty list of seconds, each between 1 and 86400".into(),
            );
        }
        if !(64..=20480).contains(&self.stream_max_frame_bytes) {
            err(
                "stream_max_frame_bytes",
                "must be between 64 and 20480".into(),
            );
        }
        if !(64..=4096).contains(&self.text_max_bytes) {
            err(
                "text_max_bytes",
                "must be between 64 and 4096 (WeCom's markdown limit)".into(),
            );
        }
        if !(1..=10_000_000).contains(&self.dedup_capacity) {
            err("dedup_capacity", "must be between 1 and 10000000".into());
        }
        if self.media_max_bytes == 0 || self.media_max_bytes > 20 * MIB {
            err(
                "media_max_bytes",
                "must be between 1 and 20971520 (20 MiB)".into(),
            );
        }
        if self.rate_limit_per_minute == 0 {
            err("rate_limit_per_minute", "must be greater than 0".into());
        } else if self.rate_limit_reserve >= self.rate_limit_per_minute {
            err(
                "rate_limit_reserve",
                "must be smaller than rate_limit_per_minute".into(),
            );
        }
        errors
    }

    /// The ping cadence.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    /// The reconnect delays.
    pub fn backoff(&self) -> Vec<Duration> {
        self.reconnect_backoff_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect()
    }

    /// Dial plus subscribe deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Intermediate stream frame ACK deadline.
    pub fn stream_ack_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_ack_timeout_secs)
    }

    /// Least time between stream updates.
    pub fn stream_interval(&self) -> Duration {
        Duration::from_millis(self.stream_interval_ms)
    }

    /// How long after the user's message its stream may be updated (see `stream_window_secs`).
    pub fn stream_window(&self) -> Duration {
        Duration::from_secs(self.stream_window_secs)
    }

    /// The waits before re-subscribing after refused credentials, as the official SDK has
    /// them (reference §6.4); one refusal more than there are waits gives up.
    pub fn auth_backoff(&self) -> Vec<Duration> {
        [1, 2, 4, 8, 16]
            .into_iter()
            .map(Duration::from_secs)
            .collect()
    }

    /// Re-subscribes after a refused subscribe before giving up.
    pub fn auth_retries(&self) -> u32 {
        self.auth_backoff().len() as u32
    }
}

/// The documented keys of `platforms.<name>.extra` for `wecom` (policy keys excluded).
pub const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey::new(
        "bot_id",
        KeyKind::String,
        true,
        false,
        Some("WECOM_BOT_ID"),
        None,
        "The AI Bot's id.",
    ),
    ConfigKey::new(
        "secret",
        KeyKind::String,
        true,
        true,
        Some("WECOM_SECRET"),
        None,
        "The AI Bot's secret.",
    ),
    ConfigKey::new(
        "websocket_url",
        KeyKind::String,
        false,
        false,
        Some("WECOM_WEBSOCKET_URL"),
        Some(DEFAULT_WEBSOCKET_URL),
        "Long-connection endpoint.",
    ),
    ConfigKey::new(
        "proxy",
        KeyKind::String,
        false,
        false,
        Some("WECOM_PROXY"),
        None,
        "HTTP proxy for the WebSocket, or `none`; unset uses HTTPS_PROXY/ALL_PROXY.",
    ),
    ConfigKey::new(
        "welcome_text",
        KeyKind::String,
        false,
        false,
        None,
        None,
        "Greeting for enter_chat.",
    ),
    ConfigKey::new(
        "ping_interval_secs",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("30"),
        "Ping cadence.",
    ),
    ConfigKey::new(
        "max_missed_pings",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("2"),
        "Unanswered pings before reconnecting.",
    ),
    ConfigKey::new(
        "reconnect_backoff_secs",
        KeyKind::List,
        false,
        false,
        None,
        Some("[1, 2, 4, 8, 16, 30]"),
        "Reconnect delays after network failures; the last repeats for ever.",
    ),
    ConfigKey::new(
        "connect_timeout_secs",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("20"),
        "Dial + subscribe deadline.",
    ),
    ConfigKey::new(
        "request_timeout_secs",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("15"),
        "Deadline for answers to sends, uploads and final frames.",
    ),
    ConfigKey::new(
        "stream_ack_timeout_secs",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("5"),
        "Deadline for the ACK of an intermediate stream frame.",
    ),
    ConfigKey::new(
        "stream_interval_ms",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("1000"),
        "Least time between stream updates.",
    ),
    ConfigKey::new(
        "stream_window_secs",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("330"),
        "Seconds after the user's message at which its stream is finished (WeCom: 6 minutes); the rest follows as markdown.",
    ),
    ConfigKey::new(
        "stream_max_frame_bytes",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("20480"),
        "Content bytes per stream frame.",
    ),
    ConfigKey::new(
        "text_max_bytes",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("4000"),
        "Bytes per markdown message; longer texts are split.",
    ),
    ConfigKey::new(
        "text_batch_delay_ms",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("600"),
        "Quiet time before split user texts are merged; 0 disables.",
    ),
    ConfigKey::new(
        "text_batch_split_delay_ms",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("2000"),
        "Quiet time after a piece near the client's split size.",
    ),
    ConfigKey::new(
        "text_batch_split_threshold",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("3900"),
        "Characters from which a piece counts as client-split.",
    ),
    ConfigKey::new(
        "dedup_ttl_secs",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("300"),
        "How long message ids are remembered.",
    ),
    ConfigKey::new(
        "dedup_capacity",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("1000"),
        "How many message ids are remembered.",
    ),
    ConfigKey::new(
        "media_max_bytes",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("20971520"),
        "Largest inbound media download.",
    ),
    ConfigKey::new(
        "media_retention_hours",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("72"),
        "Age after which downloaded media is deleted.",
    ),
    ConfigKey::new(
        "allow_private_media_hosts",
        KeyKind::Bool,
        false,
        false,
        None,
        Some("false"),
        "Allow media downloads from private/loopback addresses.",
    ),
    ConfigKey::new(
        "rate_limit_per_minute",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("30"),
        "Messages per minute per chat.",
    ),
    ConfigKey::new(
        "rate_limit_reserve",
        KeyKind::Integer,
        false,
        false,
        None,
        Some("6"),
        "Of those, kept for final frames and notices.",
    ),
];

/// Environment variables of the router's access-policy keys for the default instance.
pub const POLICY_ENV: &[(&str, &str)] = &[
    ("WECOM_DM_POLICY", "dm_policy"),
    ("WECOM_GROUP_POLICY", "group_policy"),
    ("WECOM_ALLOWED_USERS", "allow_from"),
    ("WECOM_GROUP_ALLOWED_USERS", "group_allow_from"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<WeComConfig, Vec<ConfigError>> {
        let mut cfg: WeComConfig = gateway_core::adapter::parse_extra(v).map_err(|e| vec![e])?;
        let errors = cfg.validate();
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn defaults_and_typos() {
        let cfg = parse(json!({"bot_id":"b","secret":"s"})).unwrap();
        assert_eq!(cfg.websocket_url, DEFAULT_WEBSOCKET_URL);
        assert_eq!(cfg.backoff(), [1, 2, 4, 8, 16, 30].map(Duration::from_secs));
        assert!(!format!("{cfg:?}").contains("\"s\""));
        let e = parse(json!({"bot_id":"b","secret":"s","tokn":"x"})).unwrap_err();
        assert!(e[0].message.contains("tokn"), "{e:?}");
        let e = parse(json!({"bot_id":"b","secret":"s","ping_interval_secs":"x"})).unwrap_err();
        assert_eq!(e[0].path, "ping_interval_secs");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = parse(json!({
            "websocket_url": "http://x",
            "stream_max_frame_bytes": 30000,
            "rate_limit_reserve": 40,
            "reconnect_backoff_secs": [],
            "stream_window_secs": 400,
        }))
        .unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "bot_id",
            "secret",
            "websocket_url",
            "stream_max_frame_bytes",
            "rate_limit_reserve",
            "reconnect_backoff_secs",
            "stream_window_secs",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn every_key_is_documented() {
        let cfg =
            serde_json::to_value(CONFIG_KEYS.iter().map(|k| k.name).collect::<Vec<_>>()).unwrap();
        for name in [
            "bot_id",
            "secret",
            "websocket_url",
            "welcome_text",
            "stream_window_secs",
            "allow_private_media_hosts",
        ] {
            assert!(cfg.as_array().unwrap().iter().any(|v| v == name), "{name}");
        }
    }
}
