//! Sending through `message/send` (wecom-callback reference §5.2, §5.3, §5.5, §5.6): text and
//! markdown split by UTF-8 bytes, media uploaded with `media/upload` first, textcard and news,
//! and the translation of API failures into operator-facing errors (60020 with the egress IP
//! named in the log and in `/health`).

use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use gateway_core::health::HealthReporter;
use gateway_core::{AdapterError, DeliveryLog, MediaKind, NoLog};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};
use wecom_common::errors::{classify, to_adapter_error, ErrorClass};
use wecom_common::media::{
    detect_media_type, plan_outbound_media, MediaPlan, CALLBACK_TEXT_MAX_BYTES,
};

use crate::api::{egress_ip_hint, ApiClient, ApiError};
use crate::config::{AppConfig, ReplyFormat};
use crate::routing::Recipient;

/// WeCom refuses media of 5 bytes or less (reference §5.3).
const MEDIA_MIN_BYTES: u64 = 6;
/// `textcard`/`video` title limit in bytes.
const TITLE_MAX_BYTES: usize = 128;
/// `textcard`/`video` description limit in bytes.
const DESCRIPTION_MAX_BYTES: usize = 512;

/// A `textcard` message (reference §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextCard {
    /// Title, at most 128 bytes.
    pub title: String,
    /// Description, at most 512 bytes; may use `<div class="gray|normal|highlight">`.
    pub description: String,
    /// Where a tap leads.
    pub url: String,
    /// Button text, at most 4 characters (WeCom shows 详情 when absent).
    #[serde(default)]
    pub btntxt: Option<String>,
}

/// One article of a `news` message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewsArticle {
    /// Title, at most 128 bytes.
    pub title: String,
    /// Description, at most 512 bytes.
    #[serde(default)]
    pub description: Option<String>,
    /// Where a tap leads.
    pub url: String,
    /// Picture URL.
    #[serde(default)]
    pub picurl: Option<String>,
}

/// A rich message given to `gateway send` as JSON text:
/// `{"msgtype":"textcard","textcard":{…}}` or `{"msgtype":"news","news":{"articles":[…]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "msgtype", rename_all = "lowercase", deny_unknown_fields)]
pub enum RichMessage {
    /// A text card.
    Textcard {
        /// The card.
        textcard: TextCard,
    },
    /// One to eight articles.
    News {
        /// The articles.
        news: News,
    },
}

/// The `news` payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct News {
    /// One to eight articles.
    pub articles: Vec<NewsArticle>,
}

impl RichMessage {
    /// Recognises a rich message in a text body: a JSON object whose `msgtype` is `textcard` or
    /// `news`. Anything else is `None` (and is sent as text); malformed cards are errors.
    pub fn from_text(text: &str) -> Option<Result<Self, AdapterError>> {
        let t = text.trim();
        if !t.starts_with('{') {
            return None;
        }
        let value: Value = serde_json::from_str(t).ok()?;
        match value.get("msgtype").and_then(Value::as_str) {
            Some("textcard" | "news") => Some(
                serde_json::from_value::<RichMessage>(value)
                    .map_err(|e| AdapterError::Unsupported(format!("invalid card: {e}")))
                    .and_then(|m| m.validate().map(|()| m)),
            ),
            _ => None,
        }
    }

    /// Checks WeCom's limits so the user gets a clear error instead of a truncated card.
    pub fn validate(&self) -> Result<(), AdapterError> {
        let bad = |m: String| Err(AdapterError::Unsupported(m));
        let check = |title: &str, description: &str, url: &str| {
            if title.trim().is_empty() || title.len() > TITLE_MAX_BYTES {
                return bad(format!("title must be 1..={TITLE_MAX_BYTES} bytes"));
            }
            if description.len() > DESCRIPTION_MAX_BYTES {
                return bad(format!(
                    "description must be at most {DESCRIPTION_MAX_BYTES} bytes"
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad("url must be an http(s) URL".into());
            }
            Ok(())
        };
        match self {
            RichMessage::Textcard { textcard: c } => {
                check(&c.title, &c.description, &c.url)?;
                if c.description.trim().is_empty() {
                    return bad("a textcard needs a description".into());
                }
                if c.btntxt.as_ref().is_some_and(|b| b.chars().count() > 4) {
                    return bad("btntxt must be at most 4 characters".into());
                }
                Ok(())
            }
            RichMessage::News { news } => {
                if news.articles.is_empty() || news.articles.len() > 8 {
                    return bad("news needs 1 to 8 articles".into());
                }
                for a in &news.articles {
                    check(&a.title, a.description.as_deref().unwrap_or(""), &a.url)?;
                }
                Ok(())
            }
        }
    }

    fn payload(&self) -> (&'static str, Value) {
        match self {
            RichMessage::Textcard { textcard: c } => {
                let mut v = json!({"title": c.title, "description": c.description, "url": c.url});
                if let Some(b) = &c.btntxt {
                    v["btntxt"] = json!(b);
                }
                ("textcard", v)
            }
            RichMessage::News { news } => {
                let articles: Vec<Value> = news
                    .articles
                    .iter()
                    .map(|a| {
                        let mut v = json!({"title": a.title, "url": a.url});
                        if let Some(d) = &a.description {
                            v["description"] = json!(d);
                        }
                        if let Some(p) = &a.picurl {
                            v["picurl"] = json!(p);
                        }
                        v
                    })
                    .collect();
                ("news", json!({"articles": articles}))
            }
        }
    }
}

/// The sending side of an instance.
#[derive(Debug)]
pub struct Outbound {
    api: ApiClient,
    health: Mutex<Option<HealthReporter>>,
}

impl Outbound {
    /// Sending through `api`.
    pub fn new(api: ApiClient) -> Self {
        Self {
            api,
            health: Mutex::new(None),
        }
    }

    /// The REST client.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Attaches the instance's health record (at connect).
    pub fn set_health(&self, health: HealthReporter) {
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(health);
    }

    /// Turns an API failure into the core error, telling the operator what to fix. 60020 (the
    /// server's IP is not trusted) is logged with the egress IP and written to `/health`.
    pub fn failure(&self, app: &AppConfig, action: &str, error: ApiError) -> AdapterError {
        let health = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match error {
            ApiError::Api { code, message, raw } => {
                let class = classify(code);
                if class == ErrorClass::UntrustedIp {
                    let ip = egress_ip_hint(&message);
                    let ip_text = ip.as_deref().unwrap_or("this server's public IP");
                    let text = format!(
                        "WeCom refused {action} for app {} (errcode 60020): the caller IP {ip_text} is not in the app's trusted IP list; add it under App Management → {} → Trusted IPs (企业可信IP)",
                        app.name, app.name
                    );
                    warn!(app = %app.name, errcode = code, egress_ip = %ip.as_deref().unwrap_or("unknown"), "WeCom refused the call: this server's IP is not in the app's trusted IP list.");
                    if let Some(h) = health {
                        h.error(text.clone());
                    }
                    return AdapterError::Auth {
                        message: text,
                        hint: format!("add {ip_text} to the trusted IP list of app {}", app.name),
                    };
                }
                if matches!(class, ErrorClass::TokenExpired | ErrorClass::AuthFailed) {
                    let text = format!(
                        "WeCom refused the credentials of app {} during {action} (errcode {code}: {message}); check corp_id and corp_secret",
                        app.name
                    );
                    warn!(app = %app.name, errcode = code, "WeCom refused the app's credentials.");
                    if let Some(h) = health {
                        h.error(text.clone());
                    }
                    return AdapterError::Auth {
                        message: text,
                        hint: format!("check corp_id and corp_secret of app {}", app.name),
                    };
                }
                warn!(app = %app.name, errcode = code, action, "WeCom API call failed.");
                if let Some(h) = health {
                    h.error(format!(
                        "app {}: {action} failed: errcode {code}: {message}",
                        app.name
                    ));
                }
                to_adapter_error(code, &message, raw)
            }
            ApiError::Timeout => AdapterError::Timeout(format!("{action} for app {}", app.name)),
            ApiError::TooLarge { cap } => {
                AdapterError::Unsupported(format!("media larger than {cap} bytes"))
            }
            other => {
                warn!(app = %app.name, error = %other, action, "WeCom API call failed.");
                AdapterError::Io(format!("{action} for app {}: {other}", app.name))
            }
        }
    }

    fn body(app: &AppConfig, to: &Recipient, msgtype: &str, payload: Value) -> Value {
        let (field, value) = to.field();
        let mut body = json!({"msgtype": msgtype, "agentid": app.agent_id, "safe": 0});
        body[field] = json!(value);
        body[msgtype] = payload;
        body
    }

    async fn send_one(
        &self,
        app: &AppConfig,
        to: &Recipient,
        msgtype: &str,
        payload: Value,
    ) -> Result<(), AdapterError> {
        let body = Self::body(app, to, msgtype, payload);
        let answer = self
            .api
            .send_message(&app.name, &body)
            .await
            .map_err(|e| self.failure(app, "message/send", e))?;
        for field in [
            "invaliduser",
            "invalidparty",
            "invalidtag",
            "unlicenseduser",
        ] {
            if answer
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
            {
                warn!(app = %app.name, field, "WeCom skipped some recipients of a message.");
            }
        }
        Ok(())
    }

    /// Sends `text` as `text` or `markdown`, split into messages of at most 2048 UTF-8 bytes
    /// at paragraph/line boundaries with fences balanced and `(i/n)` markers. Empty text is not
    /// sent (WeCom rejects it with 44004).
    ///
    /// `log` hears the planned parts before the first is sent and each part once WeCom
    /// confirmed it, so a retry never repeats a confirmed part (DESIGN.md "Delivery guarantee").
    pub async fn send_text(
        &self,
        app: &AppConfig,
        to: &Recipient,
        text: &str,
        format: ReplyFormat,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let msgtype = match format {
            ReplyFormat::Text => "text",
            ReplyFormat::Markdown => "markdown",
        };
        let chunks = gateway_core::text::split_with_markers(text, CALLBACK_TEXT_MAX_BYTES);
        log.planned(&chunks).await;
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.send_one(app, to, msgtype, json!({"content": chunk}))
                .await
                .map_err(|e| if n > 1 { annotate(e, i + 1, n) } else { e })?;
            log.confirmed(i).await;
        }
        Ok(())
    }

    /// Sends a textcard or news message.
    pub async fn send_rich(
        &self,
        app: &AppConfig,
        to: &Recipient,
        msg: &RichMessage,
    ) -> Result<(), AdapterError> {
        msg.validate()?;
        let (msgtype, payload) = msg.payload();
        self.send_one(app, to, msgtype, payload).await
    }

    /// Uploads `path` with `media/upload` and sends it as `kind`, applying WeCom's limits:
    /// empty or over 20 MB refused; images other than JPG/PNG, videos other than MP4, voice
    /// other than AMR, and oversized images/videos/voice are sent as files with a note.
    pub async fn send_media(
        &self,
        app: &AppConfig,
        to: &Recipient,
        kind: MediaKind,
        path: &Path,
    ) -> Result<(), AdapterError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| AdapterError::Io(format!("cannot read {name}: {}", e.kind())))?
            .len();
        if !(MEDIA_MIN_BYTES..=wecom_common::media::FILE_MAX_BYTES).contains(&size) {
            let reason = match plan_outbound_media(kind, size, false) {
                MediaPlan::Refuse { reason } => reason,
                _ => "WeCom accepts only files larger than 5 bytes.".to_owned(),
            };
            return self.refuse(app, to, &name, &reason).await;
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| AdapterError::Io(format!("cannot read {name}: {}", e.kind())))?;
        let (_, mime, _) = detect_media_type(&bytes);
        let mut plan = plan_outbound_media(kind, size, mime == "audio/amr");
        if let MediaPlan::Send(k) = plan {
            let (ok, what) = match k {
                MediaKind::Image => (
                    matches!(mime, "image/jpeg" | "image/png"),
                    "JPG and PNG images",
                ),
                MediaKind::Video => (mime == "video/mp4", "MP4 videos"),
                _ => (true, ""),
            };
            if !ok {
                plan = MediaPlan::Downgrade {
                    to: MediaKind::File,
                    note: format!("WeCom shows only {what} inline, so it was sent as a file."),
                };
            }
        }
        let (send_kind, note) = match plan {
            MediaPlan::Send(k) => (k, None),
            MediaPlan::Downgrade { to, note } => (to, Some(note)),
            MediaPlan::Refuse { reason } => return self.refuse(app, to, &name, &reason).await,
        };
        let upload_mime = if send_kind == MediaKind::File && mime == "application/octet-stream" {
            "application/octet-stream"
        } else {
            mime
        };
        let media_id = self
            .api
            .upload_media(
                &app.name,
                send_kind.as_str(),
                &name,
                upload_mime,
                Bytes::from(bytes),
            )
            .await
            .map_err(|e| self.failure(app, "media/upload", e))?;
        let mut payload = json!({"media_id": media_id});
        if send_kind == MediaKind::Video {
            payload["title"] = json!(gateway_core::text::truncate_utf8(&name, TITLE_MAX_BYTES));
        }
        self.send_one(app, to, send_kind.as_str(), payload).await?;
        info!(app = %app.name, kind = send_kind.as_str(), bytes = size, "Sent media.");
        if let Some(note) = note {
            self.send_text(app, to, &note, ReplyFormat::Text, &NoLog)
                .await?;
        }
        Ok(())
    }

    /// Refuses media that WeCom's limits rule out, before anything is sent: the caller (the
    /// operator's `gateway send`) gets the reason as an error instead of a silent success.
    async fn refuse(
        &self,
        app: &AppConfig,
        _to: &Recipient,
        name: &str,
        reason: &str,
    ) -> Result<(), AdapterError> {
        info!(app = %app.name, "Media refused by WeCom's limits; nothing sent.");
        Err(AdapterError::Unsupported(format!(
            "{name} could not be sent: {reason}"
        )))
    }
}

/// Adds "part i of n" to a failed chunked send, keeping the error's class.
fn annotate(e: AdapterError, i: usize, n: usize) -> AdapterError {
    match e {
        AdapterError::Platform {
            code,
            message,
            raw,
            retry_after,
        } => AdapterError::Platform {
            code,
            message: format!("part {i}/{n}: {message}"),
            raw,
            retry_after,
        },
        AdapterError::Io(m) => AdapterError::Io(format!("part {i}/{n}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rich_messages_are_recognised_and_validated() {
        let card = r#"{"msgtype":"textcard","textcard":{"title":"Build","description":"<div class=\"gray\">ok</div>","url":"https://x.invalid/1","btntxt":"更多"}}"#;
        let m = RichMessage::from_text(card).unwrap().unwrap();
        let (t, p) = m.payload();
        assert_eq!(t, "textcard");
        assert_eq!(p["btntxt"], "更多");
        let news = r#"{"msgtype":"news","news":{"articles":[{"title":"A","url":"https://x.invalid/a","picurl":"https://x.invalid/p.png"}]}}"#;
        assert!(matches!(
            RichMessage::from_text(news),
            Some(Ok(RichMessage::News { .. }))
        ));
        // Plain text and other JSON are not cards.
        assert!(RichMessage::from_text("hello {").is_none());
        assert!(RichMessage::from_text(r#"{"msgtype":"text"}"#).is_none());
        // Broken cards are errors, not silently sent as text.
        let long = format!(
            r#"{{"msgtype":"textcard","textcard":{{"title":"{}","description":"d","url":"https://x.invalid"}}}}"#,
            "t".repeat(129)
        );
        assert!(matches!(RichMessage::from_text(&long), Some(Err(_))));
        let empty = r#"{"msgtype":"news","news":{"articles":[]}}"#;
        assert!(matches!(RichMessage::from_text(empty), Some(Err(_))));
        let btn = r#"{"msgtype":"textcard","textcard":{"title":"t","description":"d","url":"https://x.invalid","btntxt":"12345"}}"#;
        assert!(matches!(RichMessage::from_text(btn), Some(Err(_))));
    }

    #[test]
    fn bodies_name_the_recipient_field_and_agent() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let app = AppConfig {
            name: "a".into(),
            corp_id: "ww1".into(),
            corp_secret: "s".into(),
            agent_id: 1000002,
            crypto: wecom_common::WeComCrypto::new("t", key, "ww1").unwrap(),
            path: "/".into(),
            welcome_text: None,
        };
        let b = Outbound::body(
            &app,
            &Recipient::Party("2|3".into()),
            "text",
            json!({"content": "hi"}),
        );
        assert_eq!(
            b,
            json!({"toparty": "2|3", "msgtype": "text", "agentid": 1000002, "safe": 0, "text": {"content": "hi"}})
        );
        let b = Outbound::body(&app, &Recipient::All, "markdown", json!({"content": "x"}));
        assert_eq!(b["touser"], "@all");
    }
}
