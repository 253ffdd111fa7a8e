//! Setup of a `wecom_callback` instance (a self-built app, reference `wecom-callback.md`): CorpID,
//! app Secret and AgentId checked live with `gettoken` (§5.1); a random Token and EncodingAESKey
//! generated on request (CSPRNG); the listener's port and path; and the exact values to paste
//! into the admin console's "Receive Messages" settings.

use std::time::Duration;

use rand::Rng as _;
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::checks::{gettoken, CredCheck};
use super::prompt::Question;
use super::yaml_edit::Fields;
use super::{after_failure, field, str_of, SetupError, Wizard};

/// The adapter kind.
pub const KIND: &str = "wecom_callback";
/// The keys this step writes (others under `extra` are kept as they were).
pub const MANAGED: &[&str] = &[
    "corp_id",
    "corp_secret",
    "agent_id",
    "token",
    "encoding_aes_key",
    "port",
    "path",
];
/// Default listen port of the callback server.
pub const DEFAULT_PORT: u16 = 8645;
/// Default callback path.
pub const DEFAULT_PATH: &str = "/wecom/callback";
/// Default REST API base.
pub const DEFAULT_API_BASE_URL: &str = "https://qyapi.weixin.qq.com";
/// Length of an EncodingAESKey.
pub const AES_KEY_LEN: usize = 43;
const GETTOKEN_TIMEOUT: Duration = Duration::from_secs(10);

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_alnum(len: usize) -> String {
    // ThreadRng is a CSPRNG (ChaCha, reseeded from the OS).
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALNUM[rng.random_range(0..ALNUM.len())]))
        .collect()
}

/// A random callback Token: 32 letters and digits (the console's limit).
pub fn random_token() -> String {
    random_alnum(32)
}

/// A random EncodingAESKey: 43 letters and digits, the form the console generates; it decodes
/// to a 32-byte AES key.
pub fn random_aes_key() -> String {
    random_alnum(AES_KEY_LEN)
}

/// Validates a CorpID as typed.
pub fn check_corp_id(s: &str) -> Result<(), String> {
    if s.len() >= 4 && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(
            "the CorpID is letters and digits, like ww1234567890abcdef (My Company → Company Info)"
                .into(),
        )
    }
}

/// Validates an AgentId as typed.
pub fn check_agent_id(s: &str) -> Result<(), String> {
    match s.parse::<i64>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err("the AgentId is a number like 1000002, shown on the app's page".into()),
    }
}

/// Validates a callback Token as typed.
pub fn check_token(s: &str) -> Result<(), String> {
    if super::is_env_ref(s) {
        return Ok(());
    }
    if (3..=32).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("the Token is 3 to 32 letters and digits".into())
    }
}

/// Validates an EncodingAESKey as typed: exactly 43 characters that decode to an AES key.
pub fn check_aes_key(s: &str) -> Result<(), String> {
    // A reference is checked once resolved, by the final validation.
    if super::is_env_ref(s) {
        return Ok(());
    }
    wecom_common::WeComCrypto::new("check", s, "")
        .map(|_| ())
        .map_err(|e| {
            let t = e.to_string();
            t.strip_prefix("invalid key: ").unwrap_or(&t).to_string()
        })
}

fn check_secret(s: &str) -> Result<(), String> {
    if super::is_env_ref(s) {
        return Ok(());
    }
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        Err("the Secret is one word without spaces (App Management → your app → Secret)".into())
    } else {
        Ok(())
    }
}

fn check_port(s: &str) -> Result<(), String> {
    match s.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err("a TCP port between 1 and 65535".into()),
    }
}

fn check_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        Err(format!("a URL path starting with `/`, like {DEFAULT_PATH}"))
    } else if s == "/health" {
        Err("`/health` is the health check; choose another path".into())
    } else {
        Ok(())
    }
}

/// Validates the public base URL (`https://host[:port][/prefix]`).
pub fn check_public_url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.query().is_none() =>
        {
            Ok(())
        }
        _ => Err("an address like https://bot.example.com (no query string)".into()),
    }
}

/// The callback URL to register: the public base plus the path.
pub fn callback_url(public_base: &str, path: &str) -> String {
    format!("{}{path}", public_base.trim_end_matches('/'))
}

/// Asks for the app's settings and returns the adapter keys.
pub async fn configure(
    w: &mut Wizard<'_>,
    existing: &Map<String, Value>,
) -> Result<Fields, SetupError> {
    if existing.contains_key("apps") {
        return Err(SetupError::Unsupported(
            "this instance lists several apps under `apps:`; setup edits single-app instances \
             only (edit that list by hand, or choose another instance name)"
                .into(),
        ));
    }
    let api_base = w
        .overrides
        .api_base_url
        .clone()
        .or_else(|| str_of(existing, "api_base_url"))
        .unwrap_or_else(|| DEFAULT_API_BASE_URL.to_string());
    let mut cur_corp = str_of(existing, "corp_id");
    let mut cur_secret = str_of(existing, "corp_secret");
    let mut cur_agent = str_of(existing, "agent_id");
    w.prompter.say(
        "You need a self-built app: admin console → App Management → Create App (自建应用). \
         Its page shows the AgentId and the Secret; the CorpID is under My Company → Company Info.",
    );
    let mut attempt = 0;
    let (corp_id, corp_secret, agent_id) = loop {
        attempt += 1;
        let corp_id = w.prompter.input(
            &Question::new("corp_id", "CorpID (企业ID)").default(cur_corp.clone()),
            &check_corp_id,
        )?;
        let secret = w.prompter.secret(
            &Question::new("corp_secret", "App Secret").default(cur_secret.clone()),
            &check_secret,
        )?;
        let agent_id = w.prompter.input(
            &Question::new("agent_id", "AgentId").default(cur_agent.clone()),
            &check_agent_id,
        )?;
        if !w.verify {
            break (corp_id, secret, agent_id);
        }
        let p = w
            .prompter
            .progress("Checking the CorpID and Secret with WeCom (gettoken)…");
        // A `${NAME}` answer is written as it is; WeCom is asked with its value.
        let resolved = match super::resolve(w, Value::String(secret.clone())) {
            Ok(Value::String(s)) => s,
            Ok(_) => secret.clone(),
            Err(e) => {
                w.prompter.say(&format!(
                    "Not checking the credentials now: the Secret {e}."
                ));
                break (corp_id, secret, agent_id);
            }
        };
        let r = gettoken(
            &w.http,
            &api_base,
            &corp_id,
            &SecretString::from(resolved),
            GETTOKEN_TIMEOUT,
        )
        .await;
        match r.check {
            CredCheck::Accepted => {
                p.finish("Credentials accepted.");
                w.prompter.say("✓ WeCom accepted the CorpID and Secret.");
                break (corp_id, secret, agent_id);
            }
            CredCheck::Unreachable(why) => {
                p.finish("Could not check.");
                w.prompter.say(&format!(
                    "⚠ Could not check the credentials ({why}); continuing. `gateway doctor` \
                     checks them again later."
                ));
                break (corp_id, secret, agent_id);
            }
            CredCheck::Rejected { errcode, message } => {
                p.finish("Credentials rejected.");
                w.prompter.say(&format!(
                    "✗ WeCom rejected the CorpID or Secret (errcode {errcode}: {message})."
                ));
                match after_failure(w, "credentials_failed", attempt)? {
                    "keep" => break (corp_id, secret, agent_id),
                    "retry" => {
                        cur_corp = Some(corp_id);
                        cur_secret = Some(secret);
                        cur_agent = Some(agent_id);
                    }
                    _ => {
                        return Err(SetupError::Rejected(format!(
                            "WeCom rejected the CorpID or Secret (errcode {errcode}); nothing was written"
                        )))
                    }
                }
            }
        }
    };

    let cur_token = str_of(existing, "token");
    let cur_key = str_of(existing, "encoding_aes_key");
    let have = cur_token.is_some() && cur_key.is_some();
    let generate = w.prompter.confirm(
        &Question::new(
            "generate_secrets",
            if have {
                "Generate a new Token and EncodingAESKey? (No keeps the current ones)"
            } else {
                "Generate a random Token and EncodingAESKey for you? (No: enter the ones the admin console shows)"
            },
        ),
        !have,
    )?;
    let (token, key) = if generate {
        (random_token(), random_aes_key())
    } else {
        let token = w.prompter.secret(
            &Question::new("token", "Token (接收消息 → Token)").default(cur_token),
            &check_token,
        )?;
        let key = w.prompter.secret(
            &Question::new("encoding_aes_key", "EncodingAESKey (43 characters)").default(cur_key),
            &check_aes_key,
        )?;
        (token, key)
    };

    let port = w.prompter.input(
        &Question::new("port", "Port the callback server listens on").default(Some(
            str_of(existing, "port").unwrap_or_else(|| DEFAULT_PORT.to_string()),
        )),
        &check_port,
    )?;
    let path = w.prompter.input(
        &Question::new("path", "Callback path").default(Some(
            str_of(existing, "path").unwrap_or_else(|| DEFAULT_PATH.to_string()),
        )),
        &check_path,
    )?;
    let public = w.prompter.input(
        &Question::new(
            "public_url",
            format!(
                "Public HTTPS address where WeCom reaches this server (e.g. https://bot.example.com, \
                 a reverse proxy to port {port}; Enter to skip)"
            ),
        )
        .optional(),
        &check_public_url,
    )?;
    let url = if public.is_empty() {
        format!("https://<your public address>{path}")
    } else {
        callback_url(&public, &path)
    };
    let (token_line, key_line) = if generate {
        (token.clone(), key.clone())
    } else {
        (
            "(the Token you entered)".to_string(),
            "(the EncodingAESKey you entered)".to_string(),
        )
    };
    w.prompter.say(&format!(
        "\nIn the admin console: App Management → your app → Receive Messages (接收消息) → \
         Set API Receive (设置API接收), enter exactly:\n\
         \x20 URL             {url}\n\
         \x20 Token           {token_line}\n\
         \x20 EncodingAESKey  {key_line}\n\
         WeCom checks the URL when you click Save, so start the gateway first (`gateway run`) \
         and make sure the address reaches port {port}.\n\
         Also add this server's public IP under the app's Trusted IPs (企业可信IP), or replies \
         fail with errcode 60020.\n"
    ));

    let mut fields: Fields = vec![
        field("corp_id", corp_id.as_str()),
        field("corp_secret", corp_secret.as_str()),
        field("agent_id", agent_id.parse::<i64>().unwrap_or_default()),
        field("token", token.as_str()),
        field("encoding_aes_key", key.as_str()),
        field("port", port.parse::<u16>().unwrap_or(DEFAULT_PORT)),
        field("path", path.as_str()),
    ];
    if let Some(host) = &w.overrides.host {
        fields.push(field("host", host.as_str()));
    }
    if let Some(base) = &w.overrides.api_base_url {
        fields.push(field("api_base_url", base.as_str()));
    }
    Ok(fields)
}
