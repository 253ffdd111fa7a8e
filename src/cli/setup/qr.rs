//! Scan-to-create for a WeCom AI Bot (reference `wecom-aibot.md` §8): ask the console endpoint for
//! a code, show its `auth_url` as a QR code in the terminal (plus the fallback page), then poll
//! every 3 s for up to 5 min, on a monotonic clock, until the bot id and secret arrive.
//!
//! The endpoints are not a public API and may change; every failure here falls back to manual
//! entry. The base URL is configurable (`--qr-base-url`, `WECOM_QR_BASE_URL`) so tests run the
//! flow against a fake.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

/// The console host that serves the flow.
pub const DEFAULT_QR_BASE_URL: &str = "https://work.weixin.qq.com";
/// The `source` parameter. The accepted values are undocumented; this is the one the reference
/// records the console answering.
const QR_SOURCE: &str = "hermes";
/// Timeout of the generate request (§8 step 1).
const GENERATE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response body read from the console.
const MAX_BODY: usize = 64 * 1024;

/// Why the flow could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// The console could not be reached.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// The console answered something else than `{data: {scode, auth_url}}`.
    #[error("unexpected response format from the console")]
    BadResponse,
    /// The QR code could not be drawn (the URL is too long for a QR code).
    #[error("cannot draw the QR code: {0}")]
    Render(String),
}

/// A started flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrSession {
    /// The code that identifies this flow when polling.
    pub scode: String,
    /// What the QR code encodes: the page the phone opens.
    pub auth_url: String,
}

/// How polling ended.
#[derive(Debug)]
pub enum PollOutcome {
    /// The bot was created.
    Created {
        /// The bot id (`bot_info.botid`, or `bot_info.bot_id`).
        bot_id: String,
        /// The bot secret.
        secret: SecretString,
    },
    /// The console said `success` without both values: the bot was not actually created.
    NoBotInfo,
    /// No success before the deadline.
    TimedOut,
}

/// Poll cadence and limits; [`PollTiming::default`] is the reference's 3 s / 5 min / 10 s.
#[derive(Debug, Clone, Copy)]
pub struct PollTiming {
    /// Pause between polls.
    pub interval: Duration,
    /// Give up after this long, measured on a monotonic clock.
    pub deadline: Duration,
    /// Timeout of one poll request.
    pub request_timeout: Duration,
}

impl Default for PollTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3),
            deadline: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A client of the scan-to-create endpoints.
#[derive(Debug, Clone)]
pub struct QrClient {
    http: reqwest::Client,
    base: String,
}

impl QrClient {
    /// A client for `base` (e.g. [`DEFAULT_QR_BASE_URL`]).
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, QrError> {
        reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|_| QrError::Unreachable(self.base.clone()))
    }

    async fn get_json(&self, url: reqwest::Url, timeout: Duration) -> Result<Value, QrError> {
        let unreachable = |_| QrError::Unreachable(self.base.clone());
        let resp = self
            .http
            .get(url)
            .header("user-agent", concat!("gateway/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(QrError::BadResponse);
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        if body.len() > MAX_BODY {
            return Err(QrError::BadResponse);
        }
        serde_json::from_slice(&body).map_err(|_| QrError::BadResponse)
    }

    /// Step 1: asks for a code.
    pub async fn generate(&self) -> Result<QrSession, QrError> {
        let url = self.url("/ai/qc/generate", &[("source", QR_SOURCE)])?;
        let v = self.get_json(url, GENERATE_TIMEOUT).await?;
        let field = |k: &str| {
            v.pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match (field("scode"), field("auth_url")) {
            (Some(scode), Some(auth_url)) => Ok(QrSession { scode, auth_url }),
            _ => Err(QrError::BadResponse),
        }
    }

    /// The page to open in a browser when the QR code cannot be scanned.
    pub fn fallback_url(&self, session: &QrSession) -> String {
        self.url(
            "/ai/qc/gen",
            &[("source", QR_SOURCE), ("scode", session.scode.as_str())],
        )
        .map(|u| u.to_string())
        .unwrap_or_default()
    }

    /// Step 3: polls until success or the deadline. Network and JSON errors are retried;
    /// `on_poll` is called with the poll count after every attempt (for the spinner).
    pub async fn poll(
        &self,
        session: &QrSession,
        timing: PollTiming,
        on_poll: &mut (dyn FnMut(u32) + Send),
    ) -> PollOutcome {
        let started = tokio::time::Instant::now();
        let mut polls = 0u32;
        loop {
            let left = timing.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return PollOutcome::TimedOut;
            }
            let url = match self.url("/ai/qc/query_result", &[("scode", session.scode.as_str())]) {
                Ok(u) => u,
                Err(_) => return PollOutcome::TimedOut,
            };
            let answer = self.get_json(url, timing.request_timeout.min(left)).await;
            polls += 1;
            on_poll(polls);
            if let Ok(v) = answer {
                let status = v
                    .pointer("/data/status")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if status.eq_ignore_ascii_case("success") {
                    return bot_info(&v);
                }
            }
            let left = timing.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return PollOutcome::TimedOut;
            }
            tokio::time::sleep(timing.interval.min(left)).await;
        }
    }
}

fn bot_info(v: &Value) -> PollOutcome {
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let id = text("/data/bot_info/botid").or_else(|| text("/data/bot_info/bot_id"));
    match (id, text("/data/bot_info/secret")) {
        (Some(bot_id), Some(secret)) => PollOutcome::Created {
            bot_id,
            secret: SecretString::from(secret),
        },
        _ => PollOutcome::NoBotInfo,
    }
}

/// Draws `data` as a QR code with Unicode half blocks, light on dark (readable on the dark
/// backgrounds most terminals use), with the quiet zone scanners need.
pub fn render_qr(data: &str) -> Result<String, QrError> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|e| QrError::Render(e.to_string()))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}
