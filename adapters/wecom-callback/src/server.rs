//! The callback HTTP server (wecom-callback reference §1 URL verification, §2 encrypted POST,
//! §4.1 response matrix, §6 endpoints, §11 checklist items 1–6).
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /health` | `200` JSON `{"status":"ok","platform":"wecom_callback",…}` |
//! | `GET <path>` verified | `200 text/plain` = the decrypted `echostr`, nothing else |
//! | `GET <path>` anything else | `403`, no detail |
//! | `POST <path>` body over 64 KiB | `413` (checked before parsing) |
//! | `POST` not XML, DTD/entities, no `Encrypt` | `400` |
//! | `POST` no app's signature matches, or timestamp outside the window | `403` |
//! | `POST` signed, but does not decrypt for the app (padding, length, base64, CorpID) | `400` |
//! | `POST` accepted (new or duplicate) or ignored type | `200 success` |
//! | `POST` accepted but the queue is full | `503` (WeCom retries) |
//!
//! Apps sharing a path are tried in configuration order (an app whose AgentID matches the
//! envelope first); one app's failure never stops the next from being tried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use percent_encoding::percent_decode_str;
use tracing::{debug, info, warn};
use wecom_common::crypto::{check_timestamp, CryptoError};
use wecom_common::xml::{parse_envelope, parse_message, DEFAULT_BODY_CAP};

use crate::config::AppConfig;
use crate::inbound::{self, Body as Kind};
use crate::intake::{Accepted, Intake, IntakeError, Job};
use crate::listener::Limits;

/// Everything the handlers need.
#[derive(Debug)]
pub struct ServerState {
    /// Instance name (logs, health).
    pub instance: String,
    /// Apps by callback path, in configuration order.
    pub routes: HashMap<String, Vec<Arc<AppConfig>>>,
    /// Replay window; `None` = off.
    pub replay_window: Option<Duration>,
    /// Where accepted callbacks go.
    pub intake: Intake,
    /// Connection cap and timeouts of the listener.
    pub limits: Limits,
}

/// The axum application: `/health` plus one GET/POST route per configured path.
pub fn app(state: Arc<ServerState>) -> Router {
    let mut router = Router::new().route("/health", get(health));
    let mut paths: Vec<&String> = state.routes.keys().collect();
    paths.sort();
    for path in paths {
        router = router.route(path, get(verify_url).post(callback));
    }
    router.with_state(state)
}

/// Serves `app` on `listener` until `stop` is cancelled, within the state's [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    stop: tokio_util::sync::CancellationToken,
) {
    let (instance, limits) = (state.instance.clone(), state.limits);
    crate::listener::serve(listener, app(state), limits, stop, &instance).await;
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let body = serde_json::json!({"status": "ok", "platform": "wecom_callback", "instance": state.instance});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// Query parameters, percent-decoded. A literal `+` stays `+` on purpose: WeCom
/// percent-encodes `echostr` (`%2B`), and a tester pasting raw base64 means `+`, not a space
/// (reference §1.3 gotcha). The first occurrence of a name wins.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `msg_signature`.
    pub msg_signature: String,
    /// `timestamp`.
    pub timestamp: String,
    /// `nonce`.
    pub nonce: String,
    /// `echostr` (GET only).
    pub echostr: String,
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = Query::default();
        let mut seen = [false; 4];
        for pair in raw.unwrap_or("").split('&').take(32) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "msg_signature" => 0,
                "timestamp" => 1,
                "nonce" => 2,
                "echostr" => 3,
                _ => continue,
            };
            if seen[slot] {
                continue;
            }
            seen[slot] = true;
            let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
            match slot {
                0 => q.msg_signature = value,
                1 => q.timestamp = value,
                2 => q.nonce = value,
                _ => q.echostr = value,
            }
        }
        q
    }
}

fn apps_for<'a>(state: &'a ServerState, uri: &Uri) -> &'a [Arc<AppConfig>] {
    state
        .routes
        .get(uri.path())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// URL verification (reference §1): the first app whose signature verifies and whose key
/// decrypts `echostr` for its CorpID answers with the plaintext.
async fn verify_url(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Query::parse(raw.as_deref());
    // The same replay window as POSTs: a captured verification URL must not verify again
    // days later.
    if let Some(window) = state.replay_window {
        if check_timestamp(
            &q.timestamp,
            Utc::now().timestamp(),
            window.as_secs() as i64,
        )
        .is_err()
        {
            debug!(instance = %state.instance, "URL verification outside the replay window refused.");
            return StatusCode::FORBIDDEN.into_response();
        }
    }
    for app in apps_for(&state, &uri) {
        if let Ok(plain) =
            app.crypto
                .verify_url(&q.msg_signature, &q.timestamp, &q.nonce, &q.echostr)
        {
            info!(instance = %state.instance, app = %app.name, "Callback URL verified.");
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                plain,
            )
                .into_response();
        }
    }
    debug!(instance = %state.instance, "URL verification refused.");
    StatusCode::FORBIDDEN.into_response()
}

/// An encrypted callback (reference §2).
async fn callback(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    // The cap applies while reading: a larger body is never buffered, let alone parsed. A
    // body that trickles in slower than the body timeout is refused too.
    let read = tokio::time::timeout(
        state.limits.body_timeout,
        axum::body::to_bytes(body, DEFAULT_BODY_CAP),
    );
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            debug!(instance = %state.instance, "Callback body over the cap refused.");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
        }
        Err(_) => {
            debug!(instance = %state.instance, "Callback body too slow; refused.");
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "request body timeout",
            )
                .into_response();
        }
    };
    let envelope = match parse_envelope(&bytes, DEFAULT_BODY_CAP) {
        Ok(e) => e,
        Err(e) => {
            debug!(instance = %state.instance, error = %e, "Callback body refused.");
            return text(StatusCode::BAD_REQUEST, "invalid callback payload");
        }
    };
    let q = Query::parse(raw.as_deref());
    let mut apps: Vec<&Arc<AppConfig>> = apps_for(&state, &uri).iter().collect();
    if let Some(agent) = envelope.agent_id.as_deref().map(str::trim) {
        // Stable sort: the app the envelope names first, the others keep their order.
        apps.sort_by_key(|a| a.agent_id.to_string() != agent);
    }
    let mut signed_by = None;
    let mut decrypted = None;
    for app in apps {
        if app
            .crypto
            .verify_signature(&q.msg_signature, &q.timestamp, &q.nonce, &envelope.encrypt)
            .is_err()
        {
            continue;
        }
        signed_by.get_or_insert(app.name.clone());
        if let Some(window) = state.replay_window {
            let now = Utc::now().timestamp();
            if check_timestamp(&q.timestamp, now, window.as_secs() as i64).is_err() {
                let offset = q.timestamp.trim().parse::<i64>().map(|t| t - now).ok();
                warn!(
                    instance = %state.instance,
                    app = %app.name,
                    offset_secs = ?offset,
                    window_secs = window.as_secs(),
                    "Refused a correctly signed callback whose timestamp is outside the replay window. \
                     If every callback is refused, this host's clock is probably wrong: check NTP \
                     (or set replay_window_secs: 0 to disable the check)."
                );
                return StatusCode::FORBIDDEN.into_response();
            }
        }
        match app.crypto.decrypt(&envelope.encrypt) {
            Ok(xml) => {
                decrypted = Some((app.clone(), xml));
                break;
            }
            Err(e) => log_decrypt_failure(&state.instance, app, &e),
        }
    }
    let Some((app, xml)) = decrypted else {
        return match signed_by {
            Some(_) => text(StatusCode::BAD_REQUEST, "invalid callback payload"),
            None => {
                debug!(instance = %state.instance, "Callback signature matches no app.");
                StatusCode::FORBIDDEN.into_response()
            }
        };
    };
    let msg = match parse_message(&xml) {
        Ok(m) => m,
        Err(e) => {
            warn!(instance = %state.instance, app = %app.name, error = %e, "Decrypted callback is not valid XML.");
            return text(StatusCode::BAD_REQUEST, "invalid callback payload");
        }
    };
    let parsed = inbound::parse(&msg, &app.corp_id, app.agent_id);
    if let Kind::LogOnly { what } = &parsed.body {
        info!(instance = %state.instance, app = %app.name, what = %what, "Callback acknowledged without a turn.");
        return text(StatusCode::OK, "success");
    }
    let job = Job {
        id: parsed.id,
        app: app.name.clone(),
        user: parsed.user,
        xml,
        received_at: Utc::now(),
    };
    match state.intake.accept(job).await {
        Ok(Accepted::Queued) => text(StatusCode::OK, "success"),
        Ok(Accepted::Duplicate) => {
            debug!(instance = %state.instance, app = %app.name, "Duplicate callback (WeCom retry) acknowledged.");
            text(StatusCode::OK, "success")
        }
        Err(IntakeError::Busy) => {
            warn!(instance = %state.instance, app = %app.name, "Callback queue full; asking WeCom to retry.");
            text(StatusCode::SERVICE_UNAVAILABLE, "busy")
        }
        Err(IntakeError::Slow) => {
            warn!(instance = %state.instance, app = %app.name, "The journal is slow; asking WeCom to retry (the callback is kept if the write completes).");
            text(StatusCode::SERVICE_UNAVAILABLE, "busy")
        }
        Err(IntakeError::Store(e)) => {
            warn!(instance = %state.instance, app = %app.name, error = %e, "Could not journal a callback; WeCom will retry.");
            text(StatusCode::INTERNAL_SERVER_ERROR, "retry later")
        }
    }
}

fn log_decrypt_failure(instance: &str, app: &AppConfig, e: &CryptoError) {
    match e {
        CryptoError::ReceiveIdMismatch => warn!(
            instance = %instance,
            app = %app.name,
            "A correctly signed callback was encrypted for another CorpID; check this app's corp_id."
        ),
        other => {
            warn!(instance = %instance, app = %app.name, error = %other, "A correctly signed callback did not decrypt.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_keeps_a_literal_plus() {
        let q = Query::parse(Some(
            "msg_signature=ab&timestamp=1&nonce=n%20x&echostr=a+b%2Bc%3D%3D&echostr=second",
        ));
        assert_eq!(q.msg_signature, "ab");
        assert_eq!(q.nonce, "n x");
        assert_eq!(q.echostr, "a+b+c==");
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(Query::parse(Some("timestamp")).timestamp, "");
    }
}
