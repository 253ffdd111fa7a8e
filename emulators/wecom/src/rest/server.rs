//! The HTTP side of the fake REST API: `gettoken`, `message/send`, `media/upload`, `media/get`
//! as WeCom answers them (wecom-callback reference §5.1–§5.5), with injected errors and delays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{
    multipart, Call, Endpoint, IssuedToken, SentMessage, Shared, State as ApiState, Upload,
    DOWN_ERRCODE,
};

type Params = Query<HashMap<String, String>>;

/// The fake's routes. Uploads up to 32 MiB are read (WeCom's own limit is 20 MB).
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/cgi-bin/gettoken", get(gettoken))
        .route("/cgi-bin/message/send", post(send))
        .route("/cgi-bin/media/upload", post(upload))
        .route("/cgi-bin/media/get", get(media_get))
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            echo_request,
        ))
        .with_state(shared)
}

/// With `echo_requests` on, appends ` (request: METHOD URI)` to the `errmsg` of every error
/// answer, or to the body of a non-JSON one.
async fn echo_request(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    let resp = next.run(req).await;
    if !shared.with(|s| s.echo_requests) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "body").into_response();
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let new_body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) if v["errcode"].as_i64().unwrap_or(0) != 0 => {
            let msg = v["errmsg"].as_str().unwrap_or_default().to_string();
            v["errmsg"] = Value::String(format!("{msg} (request: {line})"));
            Bytes::from(v.to_string())
        }
        Err(_) if !parts.status.is_success() => Bytes::from(format!(
            "{} (request: {line})",
            String::from_utf8_lossy(&bytes)
        )),
        _ => bytes,
    };
    Response::from_parts(parts, axum::body::Body::from(new_body))
}

fn error_json(code: i64, message: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": message})).into_response()
}

fn errmsg(code: i64, ip: Option<&str>) -> String {
    match code {
        60020 => format!(
            "not allow to access from your ip, hint: [emulator], from ip: {}, more info at https://open.work.weixin.qq.com/devtool/query?e=60020",
            ip.unwrap_or("198.51.100.1")
        ),
        301002 => "access_token and agentid mismatch".into(),
        other => wecom_common::errors::describe(other).unwrap_or("emulated error").into(),
    }
}

fn app_label(s: &ApiState, app: usize) -> String {
    format!("{}:{}", s.apps[app].corp_id, s.apps[app].agent_id)
}

/// What the fault injection decided for one call.
enum Injected {
    /// Answer this errcode.
    Code(i64, String),
    /// Answer HTTP 503 (the fake is down).
    Down,
}

/// Whether the fake is down now; a `down_for` that ran out is lifted here.
fn is_down(s: &mut ApiState) -> bool {
    match s.down {
        Some(Some(until)) if Instant::now() >= until => {
            s.down = None;
            false
        }
        Some(_) => true,
        None => false,
    }
}

/// A down fake answers on arrival, like a load balancer in front of a dead backend: before a
/// send is held, before a queued or per-media delay. (Requests that arrived while it was up
/// and went down while they waited are refused by [`prelude`].)
fn refuse_if_down(shared: &Shared, endpoint: Endpoint) -> Option<Response> {
    shared.with(|s| is_down(s).then(|| down(s, endpoint)))
}

/// Applies a queued delay, then the injected failures (down first, then untrusted IP, then a
/// queued errcode, then a random send failure). Returns what to answer instead, if anything.
async fn prelude(shared: &Shared, endpoint: Endpoint) -> Option<Injected> {
    let delay = shared.with(|s| s.delays.get_mut(&endpoint).and_then(|d| d.pop_front()));
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    shared.with(|s| {
        if is_down(s) {
            return Some(Injected::Down);
        }
        if let Some(ip) = s.untrusted_ip.clone() {
            return Some(Injected::Code(60020, errmsg(60020, Some(&ip))));
        }
        if let Some(code) = s.failures.get_mut(&endpoint).and_then(|f| f.pop_front()) {
            return Some(Injected::Code(code, errmsg(code, None)));
        }
        if endpoint == Endpoint::Send {
            let code = s.send_faults.as_mut().and_then(|f| f.roll())?;
            return Some(Injected::Code(code, errmsg(code, None)));
        }
        None
    })
}

/// The answer of a down fake, recorded.
fn down(s: &mut ApiState, endpoint: Endpoint) -> Response {
    record(s, endpoint, DOWN_ERRCODE, None);
    (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream").into_response()
}

/// Counts a held `message/send` for as long as it waits, also when its client goes away and
/// the handler is dropped mid-wait.
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.with(|s| s.sends_waiting -= 1);
    }
}

/// Holds a `message/send` while sends are paused.
async fn hold_if_paused(shared: &Shared) {
    loop {
        let resumed = shared.resumed.notified();
        tokio::pin!(resumed);
        resumed.as_mut().enable();
        let paused = shared.with(|s| {
            if s.sends_paused {
                s.sends_waiting += 1;
            }
            s.sends_paused
        });
        if !paused {
            return;
        }
        let guard = Waiting(shared);
        resumed.await;
        drop(guard);
    }
}

/// Resolves an access token to its app: 41001 missing, 40014 unknown, 42001 expired.
fn authenticate(s: &ApiState, params: &HashMap<String, String>) -> Result<usize, i64> {
    let token = params.get("access_token").map(String::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(41001);
    }
    match s.tokens.get(token) {
        None => Err(40014),
        Some(IssuedToken { expired: true, .. }) => Err(42001),
        Some(t) => Ok(t.app),
    }
}

fn record(s: &mut ApiState, endpoint: Endpoint, errcode: i64, app: Option<usize>) {
    let app = app.map(|a| app_label(s, a));
    s.calls.push(Call {
        endpoint,
        errcode,
        app,
        at: Instant::now(),
    });
}

async fn gettoken(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let corp = params.get("corpid").cloned().unwrap_or_default();
    let secret = params.get("corpsecret").cloned().unwrap_or_default();
    if let Some(refused) = refuse_if_down(&shared, Endpoint::GetToken) {
        return refused;
    }
    let injected = prelude(&shared, Endpoint::GetToken).await;
    shared.with(|s| {
        let app = s.apps.iter().position(|a| a.corp_id == corp && a.secret == secret);
        match injected {
            Some(Injected::Down) => return down(s, Endpoint::GetToken),
            Some(Injected::Code(code, msg)) => {
                record(s, Endpoint::GetToken, code, app);
                return error_json(code, &msg);
            }
            None => {}
        }
        let Some(app) = app else {
            let code = if s.apps.iter().any(|a| a.corp_id == corp) { 40001 } else { 40013 };
            record(s, Endpoint::GetToken, code, None);
            return error_json(code, &errmsg(code, None));
        };
        s.token_seq += 1;
        let token = format!("emu-token-{}-{}", s.token_seq, s.apps[app].agent_id);
        s.tokens.insert(token.clone(), IssuedToken { app, expired: false });
        record(s, Endpoint::GetToken, 0, Some(app));
        Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": s.token_lifetime}))
            .into_response()
    })
}

async fn send(State(shared): State<Arc<Shared>>, Query(params): Params, body: Bytes) -> Response {
    if let Some(refused) = refuse_if_down(&shared, Endpoint::Send) {
        return refused;
    }
    hold_if_paused(&shared).await;
    let injected = prelude(&shared, Endpoint::Send).await;
    shared.with(|s| {
        if let Some(Injected::Down) = injected {
            return down(s, Endpoint::Send);
        }
        let app = match authenticate(s, &params) {
            Ok(a) => a,
            Err(code) => {
                record(s, Endpoint::Send, code, None);
                return error_json(code, &errmsg(code, None));
            }
        };
        if let Some(Injected::Code(code, msg)) = injected {
            if code == 42001 {
                // As a real expiry: the token stays refused until a new one is fetched.
                if let Some(t) = params.get("access_token").and_then(|t| s.tokens.get_mut(t)) {
                    t.expired = true;
                }
            }
            record(s, Endpoint::Send, code, Some(app));
            return error_json(code, &msg);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            record(s, Endpoint::Send, 47001, Some(app));
            return error_json(47001, "data format error");
        };
        let creds = s.apps[app].clone();
        if body.get("agentid").and_then(Value::as_i64) != Some(creds.agent_id) {
            record(s, Endpoint::Send, 301002, Some(app));
            return error_json(301002, &errmsg(301002, None));
        }
        let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("");
        let content = body
            .get(msgtype)
            .and_then(|p| p.get("content"))
            .and_then(Value::as_str);
        if matches!(msgtype, "text" | "markdown") && content.is_none_or(|c| c.trim().is_empty()) {
            record(s, Endpoint::Send, 44004, Some(app));
            return error_json(44004, &errmsg(44004, None));
        }
        let token = params.get("access_token").cloned().unwrap_or_default();
        s.sent.push(SentMessage {
            corp_id: creds.corp_id,
            agent_id: creds.agent_id,
            token,
            body,
        });
        record(s, Endpoint::Send, 0, Some(app));
        let msgid = format!("emu-msg-{}", s.sent.len());
        Json(
            json!({"errcode": 0, "errmsg": "ok", "invaliduser": "", "invalidparty": "",
                    "invalidtag": "", "unlicenseduser": "", "msgid": msgid}),
        )
        .into_response()
    })
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_if_down(&shared, Endpoint::Upload) {
        return refused;
    }
    let injected = prelude(&shared, Endpoint::Upload).await;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    shared.with(|s| {
        if let Some(Injected::Down) = injected {
            return down(s, Endpoint::Upload);
        }
        let app = match authenticate(s, &params) {
            Ok(a) => a,
            Err(code) => {
                record(s, Endpoint::Upload, code, None);
                return error_json(code, &errmsg(code, None));
            }
        };
        if let Some(Injected::Code(code, msg)) = injected {
            record(s, Endpoint::Upload, code, Some(app));
            return error_json(code, &msg);
        }
        let kind = params.get("type").cloned().unwrap_or_default();
        if !matches!(kind.as_str(), "image" | "voice" | "video" | "file") {
            record(s, Endpoint::Upload, 40004, Some(app));
            return error_json(40004, "invalid media type");
        }
        let media = multipart::parse(&content_type, &body)
            .and_then(|parts| parts.into_iter().find(|p| p.name == "media"));
        let Some(media) = media else {
            record(s, Endpoint::Upload, 41005, Some(app));
            return error_json(41005, "media data missing");
        };
        if media.data.len() <= 5 {
            record(s, Endpoint::Upload, 40006, Some(app));
            return error_json(40006, "invalid file size");
        }
        s.media_seq += 1;
        let media_id = format!("media-up-{}", s.media_seq);
        s.uploads.push(Upload {
            corp_id: s.apps[app].corp_id.clone(),
            kind: kind.clone(),
            filename: media.filename.unwrap_or_default(),
            content_type: media.content_type.unwrap_or_default(),
            bytes: media.data,
            media_id: media_id.clone(),
        });
        record(s, Endpoint::Upload, 0, Some(app));
        Json(json!({"errcode": 0, "errmsg": "", "type": kind, "media_id": media_id, "created_at": "1380000000"}))
            .into_response()
    })
}

async fn media_get(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    if let Some(refused) = refuse_if_down(&shared, Endpoint::MediaGet) {
        return refused;
    }
    let slow = params
        .get("media_id")
        .and_then(|id| shared.with(|s| s.media_delays.get(id).copied()));
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    let injected = prelude(&shared, Endpoint::MediaGet).await;
    shared.with(|s| {
        if let Some(Injected::Down) = injected {
            return down(s, Endpoint::MediaGet);
        }
        let app = match authenticate(s, &params) {
            Ok(a) => a,
            Err(code) => {
                record(s, Endpoint::MediaGet, code, None);
                return error_json(code, &errmsg(code, None));
            }
        };
        if let Some(Injected::Code(code, msg)) = injected {
            record(s, Endpoint::MediaGet, code, Some(app));
            return error_json(code, &msg);
        }
        let id = params.get("media_id").cloned().unwrap_or_default();
        let Some(media) = s.media.get(&id).cloned() else {
            record(s, Endpoint::MediaGet, 40007, Some(app));
            return error_json(40007, "invalid media_id");
        };
        record(s, Endpoint::MediaGet, 0, Some(app));
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, media.content_type),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", media.filename),
                ),
            ],
            media.bytes,
        )
            .into_response()
    })
}
