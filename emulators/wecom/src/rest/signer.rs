//! WeCom's side of a self-built app's callbacks (wecom-callback reference §1 URL verification,
//! §2.1 outer POST, §2.4 inner message and event XML): builds the inner XML of every message
//! type, encrypts and signs it with the app's Token and EncodingAESKey, and POSTs it to the
//! gateway like WeCom would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wecom_common::crypto::{random_nonce, SignedRequest, WeComCrypto};

/// The gateway's answer to a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: String,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Round-trip time.
    pub elapsed: Duration,
}

/// A self-built app as WeCom sees it: credentials, the callback signer and a client that
/// delivers callbacks to the configured URL.
#[derive(Debug)]
pub struct FakeApp {
    /// CorpID.
    pub corp_id: String,
    /// App Secret (for `gettoken`).
    pub secret: String,
    /// AgentId.
    pub agent_id: i64,
    /// Callback Token.
    pub token: String,
    /// EncodingAESKey (43 characters).
    pub encoding_aes_key: String,
    crypto: WeComCrypto,
    url: Mutex<Option<String>>,
    next_msg_id: AtomicU64,
    clock_offset_secs: Mutex<i64>,
    http: reqwest::Client,
}

fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

impl FakeApp {
    /// An app with these credentials. Panics on an invalid key (a test bug).
    pub fn new(
        corp_id: &str,
        secret: &str,
        agent_id: i64,
        token: &str,
        encoding_aes_key: &str,
    ) -> Self {
        let crypto = WeComCrypto::new(token, encoding_aes_key, corp_id).expect("valid test key");
        Self {
            corp_id: corp_id.into(),
            secret: secret.into(),
            agent_id,
            token: token.into(),
            encoding_aes_key: encoding_aes_key.into(),
            crypto,
            url: Mutex::new(None),
            // Distinct per app and run, so ids never collide across apps in one test.
            next_msg_id: AtomicU64::new(
                1_000_000
                    + u64::from(rand::random::<u16>()) * 1_000
                    + agent_id.unsigned_abs() % 1_000,
            ),
            clock_offset_secs: Mutex::new(0),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
        }
    }

    /// The app's `extra` keys for a gateway config (JSON is valid YAML):
    /// `corp_id`, `corp_secret`, `agent_id`, `token`, `encoding_aes_key`.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "corp_id": self.corp_id,
            "corp_secret": self.secret,
            "agent_id": self.agent_id,
            "token": self.token,
            "encoding_aes_key": self.encoding_aes_key,
        })
    }

    /// Where callbacks go, e.g. `http://127.0.0.1:8645/wecom/callback`.
    pub fn set_callback_url(&self, url: impl Into<String>) {
        *self.url.lock().unwrap_or_else(|p| p.into_inner()) = Some(url.into());
    }

    /// Shifts the timestamps this app signs with (to test the replay window).
    pub fn set_clock_offset(&self, secs: i64) {
        *self
            .clock_offset_secs
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = secs;
    }

    /// The app's crypto context.
    pub fn crypto(&self) -> &WeComCrypto {
        &self.crypto
    }

    fn now(&self) -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        (secs
            + *self
                .clock_offset_secs
                .lock()
                .unwrap_or_else(|p| p.into_inner()))
        .to_string()
    }

    /// A fresh MsgId.
    pub fn next_msg_id(&self) -> u64 {
        self.next_msg_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- inner XML (reference §2.4) -------------------------------------------------------

    fn inner(&self, user: &str, msg_type: &str, fields: &str) -> String {
        let now = self.now();
        format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime>\
             <MsgType>{}</MsgType>{fields}<AgentID>{}</AgentID></xml>",
            cdata(&self.corp_id),
            cdata(user),
            cdata(msg_type),
            self.agent_id
        )
    }

    /// A text message with MsgId `msg_id`.
    pub fn text_xml(&self, user: &str, text: &str, msg_id: u64) -> String {
        self.inner(
            user,
            "text",
            &format!("<Content>{}</Content><MsgId>{msg_id}</MsgId>", cdata(text)),
        )
    }

    /// An `image`, `video` or `file` message for `media_id`.
    pub fn media_xml(&self, user: &str, msg_type: &str, media_id: &str, msg_id: u64) -> String {
        let extra = match msg_type {
            "image" => format!("<PicUrl>{}</PicUrl>", cdata("https://wework.invalid/pic")),
            "video" => format!("<ThumbMediaId>{}</ThumbMediaId>", cdata("thumb-1")),
            _ => String::new(),
        };
        self.inner(
            user,
            msg_type,
            &format!(
                "<MediaId>{}</MediaId>{extra}<MsgId>{msg_id}</MsgId>",
                cdata(media_id)
            ),
        )
    }

    /// A voice message with its `Format` (`amr`, `speex`).
    pub fn voice_xml(&self, user: &str, media_id: &str, format: &str, msg_id: u64) -> String {
        self.inner(
            user,
            "voice",
            &format!(
                "<MediaId>{}</MediaId><Format>{}</Format><MsgId>{msg_id}</MsgId>",
                cdata(media_id),
                cdata(format)
            ),
        )
    }

    /// A location message.
    pub fn location_xml(&self, user: &str, lat: f64, lon: f64, label: &str, msg_id: u64) -> String {
        self.inner(
            user,
            "location",
            &format!(
                "<Location_X>{lat}</Location_X><Location_Y>{lon}</Location_Y><Scale>15</Scale>\
                 <Label>{}</Label><MsgId>{msg_id}</MsgId>",
                cdata(label)
            ),
        )
    }

    /// A link message.
    pub fn link_xml(
        &self,
        user: &str,
        title: &str,
        description: &str,
        url: &str,
        msg_id: u64,
    ) -> String {
        self.inner(
            user,
            "link",
            &format!(
                "<Title>{}</Title><Description>{}</Description><Url>{}</Url><PicUrl>{}</PicUrl><MsgId>{msg_id}</MsgId>",
                cdata(title),
                cdata(description),
                cdata(url),
                cdata("https://wework.invalid/p.png")
            ),
        )
    }

    /// An event (`enter_agent`, `click`, …) with its `EventKey` and extra XML fields.
    pub fn event_xml(&self, user: &str, event: &str, key: &str, extra: &str) -> String {
        self.inner(
            user,
            "event",
            &format!(
                "<Event>{}</Event><EventKey>{}</EventKey>{extra}",
                cdata(event),
                cdata(key)
            ),
        )
    }

    // ---- signing (reference §1, §2.1) -----------------------------------------------------

    /// A signed, encrypted POST carrying `inner_xml`, stamped now (plus the clock offset).
    pub fn sign_post(&self, inner_xml: &str) -> SignedRequest {
        self.crypto.sign_callback(
            inner_xml,
            &self.agent_id.to_string(),
            &self.now(),
            &random_nonce(),
        )
    }

    /// A signed URL-verification GET whose `echostr` decrypts to `echo`.
    pub fn sign_url_verification(&self, echo: &str) -> SignedRequest {
        self.crypto
            .sign_url_verification(echo, &self.now(), &random_nonce())
    }

    /// [`sign_post`](Self::sign_post) with fixed timestamp, nonce and random prefix
    /// (deterministic: reproduces recorded vectors).
    pub fn sign_post_at(
        &self,
        inner_xml: &str,
        timestamp: &str,
        nonce: &str,
        random: &[u8; 16],
    ) -> SignedRequest {
        self.crypto.sign_callback_with_random(
            inner_xml,
            &self.agent_id.to_string(),
            timestamp,
            nonce,
            random,
        )
    }

    /// [`sign_url_verification`](Self::sign_url_verification) with fixed inputs.
    pub fn sign_url_verification_at(
        &self,
        echo: &str,
        timestamp: &str,
        nonce: &str,
        random: &[u8; 16],
    ) -> SignedRequest {
        self.crypto
            .sign_url_verification_with_random(echo, timestamp, nonce, random)
    }

    // ---- delivery -------------------------------------------------------------------------

    fn url(&self) -> String {
        self.url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("set_callback_url first")
    }

    /// Sends `method` to the callback URL with `query` and `body` as WeCom would.
    pub async fn request(&self, method: reqwest::Method, query: &str, body: String) -> Posted {
        let started = Instant::now();
        let resp = self
            .http
            .request(method, format!("{}?{query}", self.url()))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("callback request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.unwrap_or_default();
        Posted {
            status,
            body,
            content_type,
            elapsed: started.elapsed(),
        }
    }

    /// POSTs an already signed request (re-posting one is what WeCom's retries look like).
    pub async fn post(&self, signed: &SignedRequest) -> Posted {
        self.request(reqwest::Method::POST, &signed.query, signed.body.clone())
            .await
    }

    /// Signs and POSTs `inner_xml`.
    pub async fn push_xml(&self, inner_xml: &str) -> Posted {
        self.post(&self.sign_post(inner_xml)).await
    }

    /// Signs and POSTs a text message from `user`; returns the answer and the MsgId.
    pub async fn push_text(&self, user: &str, text: &str) -> (Posted, u64) {
        let id = self.next_msg_id();
        (self.push_xml(&self.text_xml(user, text, id)).await, id)
    }

    /// Runs URL verification for `echo`.
    pub async fn verify_url(&self, echo: &str) -> Posted {
        let signed = self.sign_url_verification(echo);
        self.request(reqwest::Method::GET, &signed.query, String::new())
            .await
    }
}
