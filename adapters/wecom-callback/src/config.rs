//! The typed configuration of a `wecom_callback` instance (wecom-callback reference §4.3 multi-app
//! model, §6 endpoints, defaults and environment variables): either the flat single-app keys or
//! an `apps:` list, plus the listener and REST settings shared by all apps. Validation collects
//! every problem with its key path and says what to fix.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use gateway_core::adapter::{ConfigKey, KeyKind};
use gateway_core::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use wecom_common::crypto::WeComCrypto;

/// Default listen host (all IPv4 interfaces, as hermes; WeCom must reach it).
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default listen port (reference §6).
pub const DEFAULT_PORT: u16 = 8645;
/// Default callback path (reference §6).
pub const DEFAULT_PATH: &str = "/wecom/callback";
/// Default REST API base.
pub const DEFAULT_API_BASE_URL: &str = "https://qyapi.weixin.qq.com";
/// Default replay window: WeCom retries a callback for about 15 s, so minutes are safe.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;
/// Default base delay of the rate-limit backoff.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1000;
/// Default "working on it" notice text (sent only when `working_notice_secs` > 0).
pub const DEFAULT_WORKING_NOTICE: &str = "⏳ Working on it…";
/// The app name used for the flat single-app form.
pub const DEFAULT_APP_NAME: &str = "default";

/// `agent_id` as YAML gives it: a number, or a string of digits (environment values).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum AgentIdValue {
    Number(i64),
    Text(String),
}

/// How replies are formatted in `message/send`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyFormat {
    /// `msgtype: text` (shown everywhere, including the WeChat plug-in).
    #[default]
    Text,
    /// `msgtype: markdown` (WeCom's subset; not rendered in the WeChat plug-in).
    Markdown,
}

/// One app as written under `apps:` (or synthesised from the flat keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    corp_id: Option<String>,
    #[serde(default)]
    corp_secret: Option<SecretString>,
    #[serde(default)]
    agent_id: Option<AgentIdValue>,
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default)]
    encoding_aes_key: Option<SecretString>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    welcome_text: Option<String>,
}

/// `extra` of a `wecom_callback` instance, as parsed (before validation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    corp_id: Option<String>,
    #[serde(default)]
    corp_secret: Option<SecretString>,
    #[serde(default)]
    agent_id: Option<AgentIdValue>,
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default)]
    encoding_aes_key: Option<SecretString>,
    #[serde(default)]
    apps: Option<Vec<RawApp>>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    api_base_url: Option<String>,
    #[serde(default)]
    replay_window_secs: Option<u64>,
    #[serde(default)]
    reply_format: Option<ReplyFormat>,
    #[serde(default)]
    welcome_text: Option<String>,
    #[serde(default)]
    working_notice_secs: Option<u64>,
    #[serde(default)]
    working_notice: Option<String>,
    #[serde(default)]
    retry_backoff_ms: Option<u64>,
}

/// One validated app: credentials, crypto context and routing.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Unique name within the instance (persisted in the user→app map).
    pub name: String,
    /// The CorpID (`ww…`); also the receive id of the callback crypto.
    pub corp_id: String,
    /// The app's Secret, for `gettoken`.
    pub corp_secret: SecretString,
    /// The app's AgentId.
    pub agent_id: i64,
    /// Token + EncodingAESKey + CorpID, validated.
    pub crypto: WeComCrypto,
    /// The callback path of this app.
    pub path: String,
    /// Sent when a user opens the app (`enter_agent`), at most once a day per user.
    pub welcome_text: Option<String>,
}

/// The validated configuration of one instance.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Apps, in configuration order (the first is the default for `party:`, `tag:`, `@all`).
    pub apps: Vec<AppConfig>,
    /// Listen address.
    pub host: IpAddr,
    /// Listen port (0 picks a free one).
    pub port: u16,
    /// REST API base URL without a trailing slash.
    pub api_base_url: String,
    /// Accepted distance between a callback's timestamp and the host clock; `None` = no check.
    pub replay_window: Option<Duration>,
    /// `msgtype` of replies.
    pub reply_format: ReplyFormat,
    /// Delay before the "working on it" notice; `None` = never sent.
    pub working_notice_after: Option<Duration>,
    /// Text of the "working on it" notice.
    pub working_notice: String,
    /// Base delay of the backoff for 45009 / 45033 / -1.
    pub retry_backoff: Duration,
}

impl CallbackConfig {
    /// Parses and validates `extra` (policy keys already removed). Every problem is returned,
    /// with paths relative to `extra`.
    pub fn from_extra(extra: serde_json::Value) -> Result<Self, Vec<ConfigError>> {
        let raw: RawConfig = gateway_core::adapter::parse_extra(extra).map_err(|e| vec![e])?;
        raw.validate()
    }
}

/// The listen port named by `extra`, for conflict checks; `None` for port 0 or unparsable input.
pub fn listen_port(extra: &serde_json::Value) -> Option<u16> {
    let port = match extra.get("port") {
        None | Some(serde_json::Value::Null) => DEFAULT_PORT,
        Some(v) => u16::try_from(v.as_u64()?).ok()?,
    };
    (port != 0).then_some(port)
}

impl RawConfig {
    fn validate(self) -> Result<CallbackConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let default_path = self.path.clone().unwrap_or_else(|| DEFAULT_PATH.to_owned());
        check_path(&default_path, "path", &mut errors);

        let flat_set = self.corp_id.is_some()
            || self.corp_secret.is_some()
            || self.agent_id.is_some()
            || self.token.is_some()
            || self.encoding_aes_key.is_some()
            || self.name.is_some();
        let raw_apps: Vec<(String, RawApp)> = match (self.apps, flat_set) {
            (Some(_), true) => {
                errors.push(ConfigError::new(
                    "apps",
                    "set either `apps:` or the single-app keys (corp_id, corp_secret, agent_id, \
                     token, encoding_aes_key — also filled by WECOM_CALLBACK_* variables), not both",
                ));
                Vec::new()
            }
            (Some(apps), false) if apps.is_empty() => {
                errors.push(ConfigError::new(
                    "apps",
                    "the list is empty; add at least one app",
                ));
                Vec::new()
            }
            (Some(apps), false) => apps
                .into_iter()
                .enumerate()
                .map(|(i, a)| (format!("apps[{i}]"), a))
                .collect(),
            (None, _) => vec![(
                String::new(),
                RawApp {
                    name: Some(self.name.unwrap_or_else(|| DEFAULT_APP_NAME.to_owned())),
                    corp_id: self.corp_id,
                    corp_secret: self.corp_secret,
                    agent_id: self.agent_id,
                    token: self.token,
                    encoding_aes_key: self.encoding_aes_key,
                    path: None,
                    welcome_text: None,
                },
            )],
        };

        let mut apps = Vec::new();
        let mut names = HashSet::new();
        for (prefix, raw) in raw_apps {
            let at = |key: &str| {
                if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                }
            };
            if let Some(app) = raw.validate(&at, &default_path, &self.welcome_text, &mut errors) {
                if !names.insert(app.name.clone()) {
                    errors.push(ConfigError::new(
                        at("name"),
                        format!(
                            "app name `{}` is used twice; names must be unique",
                            app.name
                        ),
                    ));
                }
                apps.push(app);
            }
        }

        let host_text = self.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let host = match host_text.trim().parse::<IpAddr>() {
            Ok(h) => Some(h),
            Err(_) => {
                errors.push(ConfigError::new(
                    "host",
                    format!("`{host_text}` is not an IP address; use 0.0.0.0 (all interfaces), :: or 127.0.0.1"),
                ));
                None
            }
        };
        let api_base_url = self
            .api_base_url
            .unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned());
        let api_base_url = api_base_url.trim().trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&api_base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => errors.push(ConfigError::new(
                "api_base_url",
                format!("`{api_base_url}` is not an http(s) URL such as {DEFAULT_API_BASE_URL}"),
            )),
        }
        let working_notice = self
            .working_notice
            .unwrap_or_else(|| DEFAULT_WORKING_NOTICE.to_owned());
        let working_notice_after = self
            .working_notice_secs
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        if working_notice_after.is_some() && working_notice.trim().is_empty() {
            errors.push(ConfigError::new(
                "working_notice",
                "is empty while working_notice_secs is set; give a text or set working_notice_secs: 0",
            ));
        }

        match (errors.is_empty(), host) {
            (true, Some(host)) => Ok(CallbackConfig {
                apps,
                host,
                port: self.port.unwrap_or(DEFAULT_PORT),
                api_base_url,
                replay_window: Some(
                    self.replay_window_secs
                        .unwrap_or(DEFAULT_REPLAY_WINDOW_SECS),
                )
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
                reply_format: self.reply_format.unwrap_or_default(),
                working_notice_after,
                working_notice,
                retry_backoff: Duration::from_millis(
                    self.retry_backoff_ms.unwrap_or(DEFAULT_RETRY_BACKOFF_MS),
                ),
            }),
            _ => Err(errors),
        }
    }
}

impl RawApp {
    fn validate(
        self,
        at: &dyn Fn(&str) -> String,
        default_path: &str,
        default_welcome: &Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<AppConfig> {
        let before = errors.len();
        let name = self.name.unwrap_or_default().trim().to_owned();
        if name.is_empty() {
            errors.push(ConfigError::new(
                at("name"),
                "is required: a short unique name for this app",
            ));
        }
        let corp_id = required_text(self.corp_id.as_deref(), &at("corp_id"), errors,
            "is required: the CorpID (企业ID) from My Company → Company Info, like ww1234567890abcdef");
        if corp_id.contains(':') {
            errors.push(ConfigError::new(at("corp_id"), "must not contain `:`"));
        }
        let secret = self
            .corp_secret
            .filter(|s| !s.expose_secret().trim().is_empty());
        if secret.is_none() {
            errors.push(ConfigError::new(
                at("corp_secret"),
                "is required: the app's Secret from App Management → your app",
            ));
        }
        let agent_id = match self.agent_id {
            Some(AgentIdValue::Number(n)) if n > 0 => Some(n),
            Some(AgentIdValue::Text(t)) if t.trim().parse::<i64>().is_ok_and(|n| n > 0) => {
                t.trim().parse().ok()
            }
            Some(_) => {
                errors.push(ConfigError::new(
                    at("agent_id"),
                    "must be the app's numeric AgentId (like 1000002), shown on the app's page",
                ));
                None
            }
            None => {
                errors.push(ConfigError::new(
                    at("agent_id"),
                    "is required: the app's numeric AgentId (like 1000002)",
                ));
                None
            }
        };
        let token = self
            .token
            .map(|t| t.expose_secret().trim().to_owned())
            .unwrap_or_default();
        if token.is_empty() {
            errors.push(ConfigError::new(
                at("token"),
                "is required: the Token from the app's \"Receive Messages\" (接收消息) settings",
            ));
        }
        let key = self
            .encoding_aes_key
            .map(|k| k.expose_secret().trim().to_owned())
            .unwrap_or_default();
        let crypto = if key.is_empty() {
            errors.push(ConfigError::new(
                at("encoding_aes_key"),
                "is required: the 43-character EncodingAESKey from the app's \"Receive Messages\" settings",
            ));
            None
        } else {
            // A placeholder token still lets the key be checked when the token is missing.
            let check_token = if token.is_empty() {
                "-"
            } else {
                token.as_str()
            };
            match WeComCrypto::new(check_token, &key, &corp_id) {
                Ok(c) => (!token.is_empty()).then_some(c),
                Err(e) => {
                    let text = e.to_string();
                    let text = text
                        .strip_prefix("invalid key: ")
                        .unwrap_or(&text)
                        .to_owned();
                    errors.push(ConfigError::new(at("encoding_aes_key"), text));
                    None
                }
            }
        };
        let path = self.path.unwrap_or_else(|| default_path.to_owned());
        check_path(&path, &at("path"), errors);
        if errors.len() > before {
            return None;
        }
        Some(AppConfig {
            name,
            corp_id,
            corp_secret: secret?,
            agent_id: agent_id?,
            crypto: crypto?,
            path,
            welcome_text: self
                .welcome_text
                .or_else(|| default_welcome.clone())
                .filter(|w| !w.trim().is_empty()),
        })
    }
}

fn required_text(
    value: Option<&str>,
    at: &str,
    errors: &mut Vec<ConfigError>,
    message: &str,
) -> String {
    let v = value.unwrap_or("").trim().to_owned();
    if v.is_empty() {
        errors.push(ConfigError::new(at, message));
    }
    v
}

fn check_path(path: &str, at: &str, errors: &mut Vec<ConfigError>) {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        errors.push(ConfigError::new(
            at,
            format!("`{path}` must be a URL path starting with `/`, like {DEFAULT_PATH}"),
        ));
    } else if path == "/health" {
        errors.push(ConfigError::new(
            at,
            "`/health` is reserved for the health check",
        ));
    }
}

/// The documented keys of `platforms.<name>.extra` (policy keys excluded).
pub const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey::new("corp_id", KeyKind::String, true, false, Some("WECOM_CALLBACK_CORP_ID"), None,
        "CorpID (企业ID) of the company; single-app form (or use `apps:`)"),
    ConfigKey::new("corp_secret", KeyKind::String, true, true, Some("WECOM_CALLBACK_CORP_SECRET"), None,
        "the app's Secret, used for gettoken"),
    ConfigKey::new("agent_id", KeyKind::Integer, true, false, Some("WECOM_CALLBACK_AGENT_ID"), None,
        "the app's numeric AgentId"),
    ConfigKey::new("token", KeyKind::String, true, true, Some("WECOM_CALLBACK_TOKEN"), None,
        "Token of the app's \"Receive Messages\" settings"),
    ConfigKey::new("encoding_aes_key", KeyKind::String, true, true, Some("WECOM_CALLBACK_ENCODING_AES_KEY"),
        None, "43-character EncodingAESKey of the \"Receive Messages\" settings"),
    ConfigKey::new("name", KeyKind::String, false, false, None, Some(DEFAULT_APP_NAME),
        "name of the single app (persisted in routing data)"),
    ConfigKey::new("apps", KeyKind::Map, false, false, None, None,
        "several apps: list of {name, corp_id, corp_secret, agent_id, token, encoding_aes_key, path?, welcome_text?}"),
    ConfigKey::new("host", KeyKind::String, false, false, Some("WECOM_CALLBACK_HOST"), Some(DEFAULT_HOST),
        "listen address of the callback server"),
    ConfigKey::new("port", KeyKind::Integer, false, false, Some("WECOM_CALLBACK_PORT"), Some("8645"),
        "listen port of the callback server"),
    ConfigKey::new("path", KeyKind::String, false, false, Some("WECOM_CALLBACK_PATH"), Some(DEFAULT_PATH),
        "callback URL path shared by apps without their own `path`"),
    ConfigKey::new("api_base_url", KeyKind::String, false, false, Some("WECOM_CALLBACK_API_BASE_URL"),
        Some(DEFAULT_API_BASE_URL), "WeCom REST API base (proxies, private deployments, the emulator)"),
    ConfigKey::new("replay_window_secs", KeyKind::Integer, false, false, None, Some("300"),
        "refuse callbacks whose timestamp is further than this from the host clock; 0 = off"),
    ConfigKey::new("reply_format", KeyKind::String, false, false, None, Some("text"),
        "msgtype of replies: text or markdown"),
    ConfigKey::new("welcome_text", KeyKind::String, false, false, Some("WECOM_CALLBACK_WELCOME_TEXT"), None,
        "sent when a user opens the app (enter_agent), at most once a day per user"),
    ConfigKey::new("working_notice_secs", KeyKind::Integer, false, false, None, Some("0"),
        "send `working_notice` when an answer takes longer than this; 0 = never"),
    ConfigKey::new("working_notice", KeyKind::String, false, false, None, Some(DEFAULT_WORKING_NOTICE),
        "the short notice sent while a slow answer is being prepared"),
    ConfigKey::new("retry_backoff_ms", KeyKind::Integer, false, false, None, Some("1000"),
        "first delay of the backoff on 45009/45033/-1 (doubles per retry, 3 retries)"),
];

/// Environment variables of the router's policy keys for the default instance.
pub const POLICY_ENV: &[(&str, &str)] = &[
    ("WECOM_CALLBACK_DM_POLICY", "dm_policy"),
    ("WECOM_CALLBACK_ALLOWED_USERS", "allow_from"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn flat() -> serde_json::Value {
        json!({"corp_id": "ww1", "corp_secret": "s", "agent_id": 1000002, "token": "t",
               "encoding_aes_key": KEY})
    }

    fn errors(v: serde_json::Value) -> Vec<ConfigError> {
        CallbackConfig::from_extra(v).unwrap_err()
    }

    #[test]
    fn flat_keys_make_one_default_app_with_defaults() {
        let c = CallbackConfig::from_extra(flat()).unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].name, "default");
        assert_eq!(c.apps[0].agent_id, 1000002);
        assert_eq!(c.apps[0].path, DEFAULT_PATH);
        assert_eq!(c.port, 8645);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.api_base_url, DEFAULT_API_BASE_URL);
        assert_eq!(c.replay_window, Some(Duration::from_secs(300)));
        assert_eq!(c.working_notice_after, None);
        assert_eq!(c.reply_format, ReplyFormat::Text);
    }

    #[test]
    fn agent_id_may_be_a_digit_string_but_must_be_numeric() {
        let mut v = flat();
        v["agent_id"] = json!("1000003");
        assert_eq!(
            CallbackConfig::from_extra(v.clone()).unwrap().apps[0].agent_id,
            1000003
        );
        v["agent_id"] = json!("abc");
        let e = errors(v);
        assert_eq!(e[0].path, "agent_id");
        assert!(e[0].message.contains("numeric"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let e = errors(json!({"apps": [
            {"name": "a", "corp_id": "ww1", "corp_secret": "s", "agent_id": 1, "token": "",
             "encoding_aes_key": "short"},
            {"name": "a", "corp_id": "", "corp_secret": "s", "agent_id": "x", "token": "t",
             "encoding_aes_key": KEY, "path": "nope"}
        ], "host": "example", "api_base_url": "ftp://x"}));
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "apps[0].token",
            "apps[0].encoding_aes_key",
            "apps[1].corp_id",
            "apps[1].agent_id",
            "apps[1].path",
            "host",
            "api_base_url",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn key_errors_say_what_to_fix_without_echoing_the_key() {
        let mut v = flat();
        v["encoding_aes_key"] = json!("secret-material-too-short");
        let e = errors(v);
        assert_eq!(e[0].path, "encoding_aes_key");
        assert!(e[0].message.contains("43"), "{}", e[0].message);
        assert!(!e[0].message.contains("secret-material"));
    }

    #[test]
    fn unknown_keys_fail_with_their_path() {
        let mut v = flat();
        v["tokn"] = json!("x");
        let e = errors(v);
        assert!(e[0].message.contains("tokn"), "{e:?}");
        let e = errors(json!({"apps": [{"name": "a", "corpid": "x"}]}));
        assert!(e[0].path.starts_with("apps"), "{e:?}");
    }

    #[test]
    fn apps_and_flat_keys_are_exclusive_and_names_unique() {
        let mut v = flat();
        v["apps"] = json!([]);
        assert_eq!(errors(v)[0].path, "apps");
        let app = json!({"name": "x", "corp_id": "ww1", "corp_secret": "s", "agent_id": 1,
                         "token": "t", "encoding_aes_key": KEY});
        let e = errors(json!({"apps": [app.clone(), app]}));
        assert!(e
            .iter()
            .any(|e| e.path == "apps[1].name" && e.message.contains("twice")));
    }

    #[test]
    fn zero_disables_the_replay_window_and_ports_are_claimed_unless_zero() {
        let mut v = flat();
        v["replay_window_secs"] = json!(0);
        v["working_notice_secs"] = json!(5);
        let c = CallbackConfig::from_extra(v).unwrap();
        assert_eq!(c.replay_window, None);
        assert_eq!(c.working_notice_after, Some(Duration::from_secs(5)));
        assert_eq!(listen_port(&json!({})), Some(8645));
        assert_eq!(listen_port(&json!({"port": 9000})), Some(9000));
        assert_eq!(listen_port(&json!({"port": 0})), None);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = CallbackConfig::from_extra(flat()).unwrap();
        let mut v = flat();
        v["corp_secret"] = json!("very-secret-value");
        let c2 = CallbackConfig::from_extra(v).unwrap();
        assert!(!format!("{c:?}{c2:?}").contains("very-secret-value"));
        assert!(!format!("{c:?}").contains(KEY));
    }
}
