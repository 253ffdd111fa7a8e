//! The WeCom REST client of self-built apps (wecom-callback reference §5.1 `gettoken`, §5.2
//! `message/send`, §5.3 `media/upload`, §5.4 `media/get`, §5.5 error codes).
//!
//! * One access token per app, cached until shortly before it expires; the refresh is lazy and
//!   single-flight (the per-app lock is held across the fetch, so concurrent senders wait for
//!   one `gettoken` instead of racing).
//! * Token errors (40001, 40014, 41001, 42001) evict the token that failed and retry once.
//! * 45009, 45033 and -1 are retried with exponential backoff; transport errors twice.
//! * Everything else is returned with WeCom's own text and the raw payload.
//!
//! Secrets travel in query strings (`corpsecret`, `access_token`), so no URL ever reaches an
//! error message or a log line: reqwest errors are stripped with `without_url`.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};
use wecom_common::errors::{classify, describe, ErrorClass};

use crate::config::AppConfig;

/// Retries after a rate-limit answer (45009 / 45033 / -1).
const RATE_LIMIT_RETRIES: u32 = 3;
/// Retries after a transport failure.
const TRANSPORT_RETRIES: u32 = 2;
/// Refresh a token this long before WeCom says it expires (hermes and wechatpy use 60 s; a
/// wider margin also covers clock drift and WeCom invalidating tokens a little early).
const EARLY_REFRESH: Duration = Duration::from_secs(300);
/// Timeout of one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest JSON answer read from the API (real answers are a few hundred bytes).
const JSON_CAP: usize = 1024 * 1024;
/// Largest inbound media accepted from `media/get` (the 20 MB file limit).
pub const MEDIA_GET_CAP: u64 = wecom_common::media::FILE_MAX_BYTES;

/// Why an API call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// WeCom answered with a non-zero `errcode`.
    #[error("WeCom errcode {code}: {message}")]
    Api {
        /// The `errcode`.
        code: i64,
        /// WeCom's `errmsg` (or our description when empty).
        message: String,
        /// The raw JSON answer.
        raw: String,
    },
    /// The HTTP status was not 2xx and the body was not a WeCom answer.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The request did not complete (connect, TLS, reset); the text carries no URL.
    #[error("transport error: {0}")]
    Transport(String),
    /// The request timed out.
    #[error("request timed out")]
    Timeout,
    /// The answer was not the expected JSON.
    #[error("unexpected answer: {0}")]
    BadResponse(String),
    /// Media larger than the cap.
    #[error("media larger than {cap} bytes")]
    TooLarge {
        /// The cap in bytes.
        cap: u64,
    },
}

impl ApiError {
    /// The WeCom errcode, when WeCom answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ApiError::Timeout
        } else {
            ApiError::Transport(e.without_url().to_string())
        }
    }

    fn is_transport(&self) -> bool {
        matches!(self, ApiError::Transport(_) | ApiError::Timeout)
            || matches!(self, ApiError::Status(s) if *s >= 500)
    }
}

/// The caller IP WeCom names in a 60020 message (`… from ip: 1.2.3.4, …`), if any.
pub fn egress_ip_hint(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let start = lower.find("from ip")? + "from ip".len();
    let rest = message[start..].trim_start_matches([':', ' ', '：']);
    let ip: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':'))
        .collect();
    (!ip.is_empty()).then_some(ip)
}

/// A media body fetched with `media/get`.
#[derive(Debug, Clone)]
pub struct MediaBody {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// File name from `Content-Disposition`, if sent.
    pub filename: Option<String>,
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

/// One app's token slot: credentials and the cached token behind an async lock.
struct TokenSlot {
    corp_id: String,
    secret: SecretString,
    cached: Mutex<Option<CachedToken>>,
}

/// The REST client shared by every app of an instance.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    backoff: Duration,
    slots: HashMap<String, TokenSlot>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("apps", &self.slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for `apps` against `base` (no trailing slash); `backoff` is the first delay
    /// after a rate-limit answer.
    pub fn new(base: &str, apps: &[AppConfig], backoff: Duration) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(10)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(ApiError::from_reqwest)?;
        let slots = apps
            .iter()
            .map(|a| {
                let slot = TokenSlot {
                    corp_id: a.corp_id.clone(),
                    secret: a.corp_secret.clone(),
                    cached: Mutex::new(None),
                };
                (a.name.clone(), slot)
            })
            .collect();
        Ok(Self {
            http,
            base: base.to_owned(),
            backoff,
            slots,
        })
    }

    fn slot(&self, app: &str) -> Result<&TokenSlot, ApiError> {
        self.slots
            .get(app)
            .ok_or_else(|| ApiError::BadResponse(format!("unknown app {app}")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The app's access token, fetched when missing or about to expire. Only one fetch per app
    /// runs at a time; callers arriving meanwhile get its result.
    pub async fn token(&self, app: &str) -> Result<SecretString, ApiError> {
        let slot = self.slot(app)?;
        let mut cached = slot.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let (token, expires_in) = self.fetch_token(slot).await?;
        let lifetime = Duration::from_secs(expires_in);
        // Refresh early, but never sooner than half the lifetime (short test tokens).
        let early = EARLY_REFRESH.min(lifetime / 2);
        *cached = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(early),
        });
        info!(app = %app, expires_in, "Fetched a WeCom access token.");
        Ok(token)
    }

    /// Drops the cached token if it is still `used` (a concurrent refresh may have replaced it).
    async fn evict(&self, app: &str, used: &SecretString) {
        if let Ok(slot) = self.slot(app) {
            let mut cached = slot.cached.lock().await;
            if cached
                .as_ref()
                .is_some_and(|c| c.token.expose_secret() == used.expose_secret())
            {
                *cached = None;
            }
        }
    }

    async fn fetch_token(&self, slot: &TokenSlot) -> Result<(SecretString, u64), ApiError> {
        let url = self.url("/cgi-bin/gettoken");
        let value = self
            .retrying(|| async {
                let resp = self
                    .http
                    .get(&url)
                    .query(&[
                        ("corpid", slot.corp_id.as_str()),
                        ("corpsecret", slot.secret.expose_secret()),
                    ])
                    .send()
                    .await
                    .map_err(ApiError::from_reqwest)?;
                read_json(resp).await
            })
            .await?;
        let token = value
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::BadResponse("gettoken answered without access_token".into())
            })?;
        let expires_in = value
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(7200);
        // Access tokens travel in query strings; an echoed URL must not show one.
        gateway_core::redact::register_runtime(token);
        Ok((SecretString::from(token), expires_in.max(2)))
    }

    /// Runs `op` with rate-limit and transport retries (no token handling).
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let (mut rate, mut transport) = (0u32, 0u32);
        loop {
            match op().await {
                Err(ApiError::Api { code, .. })
                    if classify(code) == ErrorClass::RateLimited && rate < RATE_LIMIT_RETRIES =>
                {
                    let delay = self.backoff * 2u32.pow(rate);
                    rate += 1;
                    warn!(
                        errcode = code,
                        attempt = rate,
                        delay_ms = delay.as_millis() as u64,
                        "WeCom rate limit; retrying in {} ms (attempt {rate} of {RATE_LIMIT_RETRIES}).",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) if e.is_transport() && transport < TRANSPORT_RETRIES => {
                    transport += 1;
                    let delay = self.backoff * transport;
                    warn!(
                        error = %e,
                        attempt = transport,
                        delay_ms = delay.as_millis() as u64,
                        "Could not reach the WeCom API; retrying in {} ms (attempt {transport} of {TRANSPORT_RETRIES}). \
                         If this persists, check the network, DNS and proxy (HTTPS_PROXY / ALL_PROXY, NO_PROXY) from this host.",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Runs `op` with the app's token: on a token error the token is evicted and `op` runs once
    /// more with a fresh one; rate limits and transport errors are retried inside.
    async fn with_token<T, F, Fut>(&self, app: &str, op: F) -> Result<T, ApiError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut refreshed = false;
        loop {
            let token = self.token(app).await?;
            let result = self.retrying(|| op(token.clone())).await;
            match result {
                Err(ApiError::Api { code, .. })
                    if classify(code) == ErrorClass::TokenExpired && !refreshed =>
                {
                    info!(app = %app, errcode = code, "WeCom access token refused; fetching a new one.");
                    self.evict(app, &token).await;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// `POST /cgi-bin/message/send` with `body` (the `agentid` must be the app's).
    pub async fn send_message(&self, app: &str, body: &Value) -> Result<Value, ApiError> {
        let url = self.url("/cgi-bin/message/send");
        self.with_token(app, |token| {
            let req = self
                .http
                .post(&url)
                .query(&[("access_token", token.expose_secret())])
                .json(body);
            async move { read_json(req.send().await.map_err(ApiError::from_reqwest)?).await }
        })
        .await
    }

    /// `POST /cgi-bin/media/upload?type=…` with the multipart field `media`; returns `media_id`.
    pub async fn upload_media(
        &self,
        app: &str,
        kind: &str,
        filename: &str,
        mime: &str,
        bytes: Bytes,
    ) -> Result<String, ApiError> {
        let url = self.url("/cgi-bin/media/upload");
        let value = self
            .with_token(app, |token| {
                let len = bytes.len() as u64;
                let body = reqwest::Body::from(bytes.clone());
                let part = reqwest::multipart::Part::stream_with_length(body, len)
                    .file_name(filename.to_owned())
                    .mime_str(mime);
                let req = part.map(|part| {
                    self.http
                        .post(&url)
                        .query(&[("access_token", token.expose_secret()), ("type", kind)])
                        .multipart(reqwest::multipart::Form::new().part("media", part))
                });
                async move {
                    let req = req.map_err(|_| ApiError::BadResponse("invalid MIME type".into()))?;
                    read_json(req.send().await.map_err(ApiError::from_reqwest)?).await
                }
            })
            .await?;
        value
            .get("media_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadResponse("media/upload answered without media_id".into()))
    }

    /// `GET /cgi-bin/media/get?media_id=…`: the bytes, or WeCom's JSON error (told apart by
    /// `Content-Type`, reference §5.4). Bodies over [`MEDIA_GET_CAP`] are refused.
    pub async fn get_media(&self, app: &str, media_id: &str) -> Result<MediaBody, ApiError> {
        let url = self.url("/cgi-bin/media/get");
        self.with_token(app, |token| {
            let req = self.http.get(&url).query(&[
                ("access_token", token.expose_secret()),
                ("media_id", media_id),
            ]);
            async move {
                let resp = req.send().await.map_err(ApiError::from_reqwest)?;
                read_media(resp, MEDIA_GET_CAP).await
            }
        })
        .await
    }
}

/// Reads a WeCom JSON answer: `errcode` 0 (or absent) is success, anything else an error.
async fn read_json(mut resp: reqwest::Response) -> Result<Value, ApiError> {
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ApiError::from_reqwest)? {
        if body.len() + chunk.len() > JSON_CAP {
            return Err(ApiError::TooLarge {
                cap: JSON_CAP as u64,
            });
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) if !status.is_success() => return Err(ApiError::Status(status.as_u16())),
        Err(_) => return Err(ApiError::BadResponse("the answer is not JSON".into())),
    };
    check_errcode(value, &text)
}

fn check_errcode(value: Value, raw: &str) -> Result<Value, ApiError> {
    let code = value.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    if code == 0 {
        return Ok(value);
    }
    let msg = value
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let message = if msg.is_empty() {
        describe(code).unwrap_or("unknown error").to_owned()
    } else {
        msg.to_owned()
    };
    // Raw answers are bounded: they end up in logs and the outbox.
    let raw: String = raw.chars().take(512).collect();
    Err(ApiError::Api { code, message, raw })
}

async fn read_media(mut resp: reqwest::Response, cap: u64) -> Result<MediaBody, ApiError> {
    let status = resp.status();
    let header = |name: reqwest::header::HeaderName, resp: &reqwest::Response| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE, &resp);
    let is_json = content_type.as_deref().is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("application/json") || ct.starts_with("text/plain")
    });
    if is_json || !status.is_success() {
        // Errors are small; anything else under a JSON type is not a media body either.
        return match read_json(resp).await {
            Ok(_) => Err(ApiError::BadResponse(
                "media/get answered JSON without media".into(),
            )),
            Err(e) => Err(e),
        };
    }
    if resp.content_length().is_some_and(|l| l > cap) {
        return Err(ApiError::TooLarge { cap });
    }
    let filename = header(reqwest::header::CONTENT_DISPOSITION, &resp)
        .and_then(|d| wecom_common::net::disposition_filename(&d));
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ApiError::from_reqwest)? {
        if bytes.len() as u64 + chunk.len() as u64 > cap {
            return Err(ApiError::TooLarge { cap });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(MediaBody {
        bytes,
        content_type,
        filename,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_ip_is_found_in_the_60020_text() {
        let msg = "not allow to access from your ip, hint: [1700000000_1_abc], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020";
        assert_eq!(egress_ip_hint(msg).as_deref(), Some("203.0.113.7"));
        assert_eq!(
            egress_ip_hint("from ip:2001:db8::1, x").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(egress_ip_hint("no ip here"), None);
    }

    #[test]
    fn errcodes_become_typed_errors_with_wecom_text() {
        let ok = check_errcode(serde_json::json!({"errcode": 0, "msgid": "m"}), "{}").unwrap();
        assert_eq!(ok["msgid"], "m");
        let raw = r#"{"errcode":60011,"errmsg":""}"#;
        let e = check_errcode(serde_json::from_str(raw).unwrap(), raw).unwrap_err();
        assert_eq!(e.code(), Some(60011));
        assert!(e.to_string().contains("no privilege"), "{e}");
        let e = check_errcode(
            serde_json::json!({"errcode": 81013, "errmsg": "user & party & tag all invalid"}),
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("all invalid"));
    }
}
