//! The local admin endpoint on `gateway.listen`: `POST /admin/send` lets `gateway send` deliver
//! through the running process (a second WeCom bot connection would kick the live one), and
//! `POST /admin/outbox/retry` makes it retry its undelivered replies now.
//!
//! Access needs the bearer token that the running gateway writes to `<data_dir>/admin.json`
//! (mode 0600) at start and removes at shutdown; anyone who can read the data dir can send.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use gateway_core::{AdapterError, OutboundMessage, PlatformAdapter, Target};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

use crate::http::HttpState;

/// The admin file's name inside the data dir.
pub const ADMIN_FILE: &str = "admin.json";

/// What the running gateway publishes for local tools.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminInfo {
    /// The listen address of the running gateway.
    pub listen: String,
    /// The bearer token for `/admin/*`.
    pub token: String,
    /// The process id, for messages.
    pub pid: u32,
}

impl std::fmt::Debug for AdminInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminInfo")
            .field("listen", &self.listen)
            .field("token", &"[redacted]")
            .field("pid", &self.pid)
            .finish()
    }
}

impl AdminInfo {
    /// A fresh random token for this process.
    pub fn generate(listen: String) -> Self {
        let bytes: [u8; 32] = rand::random();
        Self {
            listen,
            token: hex::encode(bytes),
            pid: std::process::id(),
        }
    }

    /// Writes the file with owner-only permissions.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<PathBuf> {
        gateway_core::private_fs::create_private_dir(data_dir)?;
        let path = data_dir.join(ADMIN_FILE);
        let tmp = data_dir.join(format!(".{ADMIN_FILE}.tmp"));
        let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Reads the file, if a gateway published one.
    pub fn read(data_dir: &Path) -> Option<Self> {
        let body = std::fs::read(data_dir.join(ADMIN_FILE)).ok()?;
        serde_json::from_slice(&body).ok()
    }
}

/// The body of `POST /admin/send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Platform instance name.
    pub platform: String,
    /// `user:ID`, `group:ID`, `party:ID`, `tag:ID`, `@all`.
    pub to: String,
    /// Plain text.
    #[serde(default)]
    pub text: Option<String>,
    /// Markdown.
    #[serde(default)]
    pub markdown: Option<String>,
    /// A local file path (sent as image, voice, video or file by its type).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Sends one message through an adapter; shared by the admin endpoint and `gateway send`'s
/// direct mode.
pub async fn send_via(adapter: &dyn PlatformAdapter, req: &SendRequest) -> Result<(), SendError> {
    let target = Target::parse(&req.to).map_err(SendError::BadRequest)?;
    match (&req.text, &req.markdown, &req.file) {
        (Some(t), None, None) => Ok(adapter.send(&target, &OutboundMessage::text(t)).await?),
        (None, Some(m), None) => Ok(adapter.send(&target, &OutboundMessage::markdown(m)).await?),
        (None, None, Some(path)) => {
            if !path.is_file() {
                return Err(SendError::BadRequest(format!(
                    "{} is not a file",
                    path.display()
                )));
            }
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            match ext.as_str() {
                "png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp" => {
                    Ok(adapter.send_image(&target, path).await?)
                }
                "amr" => Ok(adapter.send_voice(&target, path).await?),
                "mp4" | "mov" => Ok(adapter.send_video(&target, path).await?),
                _ => Ok(adapter.send_file(&target, path).await?),
            }
        }
        _ => Err(SendError::BadRequest(
            "give exactly one of text, markdown or file".into(),
        )),
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// No such platform instance.
    #[error("no platform instance named `{0}`")]
    UnknownPlatform(String),
    /// The platform refused or could not be reached.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
}

/// Checks the bearer token; the refusal to answer otherwise.
fn authorize(
    token: &str,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, Json<serde_json::Value>)> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // An empty token means no admin file was published: nothing can authenticate.
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad or missing admin token"})),
        ));
    }
    Ok(())
}

/// `POST /admin/outbox/retry`: retries every recorded delivery now, including those past the
/// automatic attempt limit (`gateway outbox retry`).
pub async fn outbox_retry(
    State(st): State<HttpState>,
    headers: HeaderMap,
) -> (StatusCode, Json<serde_json::Value>) {
    if let Err(refusal) = authorize(&st.admin_token, &headers) {
        return refusal;
    }
    st.shared.outbox_kick.notify_one();
    (StatusCode::OK, Json(json!({"ok": true})))
}

/// `POST /admin/send`.
pub async fn send(
    State(st): State<HttpState>,
    headers: HeaderMap,
    Json(req): Json<SendRequest>,
) -> (StatusCode, Json<serde_json::Value>) {
    if let Err(refusal) = authorize(&st.admin_token, &headers) {
        return refusal;
    }
    let shared = st.shared;
    let Some(inst) = shared.instance(&req.platform) else {
        let e = SendError::UnknownPlatform(req.platform.clone());
        return (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()})));
    };
    match send_via(inst.adapter.as_ref(), &req).await {
        Ok(()) => {
            shared
                .metrics
                .inc("gateway_messages_out_total", &[("instance", &inst.name)]);
            (StatusCode::OK, Json(json!({"ok": true})))
        }
        Err(e @ SendError::BadRequest(_)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        ),
        Err(e) => {
            shared.metrics.inc(
                "gateway_errors_total",
                &[("instance", &inst.name), ("kind", "send")],
            );
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({"error": gateway_core::redact::scrub_string(e.to_string())})),
            )
        }
    }
}
