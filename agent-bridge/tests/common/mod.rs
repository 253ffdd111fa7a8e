//! Shared test helpers: a turn builder, a stream collector, and a scripted HTTP agent service on
//! 127.0.0.1:0 that records every request and plays a queue of replies (streams that finish,
//! stop mid-way, or hang while reporting when the client goes away).

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_bridge::{AgentError, AgentEvent, AgentStream, AgentTurn};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use gateway_core::store::{HistoryEntry, Role};
use gateway_core::{ChatAddress, Sender};
use tokio::sync::Notify;

/// A turn from alice in a DM with two lines of history.
pub fn turn(text: &str) -> AgentTurn {
    let at = Utc
        .with_ymd_and_hms(2025, 5, 1, 8, 0, 0)
        .single()
        .expect("valid date");
    AgentTurn {
        session_key: "wecom:dm:alice".into(),
        session_id: "sess-1".into(),
        instance: "wecom".into(),
        sender: Sender {
            user_id: "alice".into(),
            display_name: Some("Alice".into()),
        },
        chat: ChatAddress::dm("alice"),
        message_type: "text".into(),
        text: text.into(),
        attachments: Vec::new(),
        history: vec![
            HistoryEntry {
                role: Role::User,
                text: "earlier question".into(),
                at,
            },
            HistoryEntry {
                role: Role::Assistant,
                text: "earlier answer".into(),
                at,
            },
        ],
    }
}

/// The deltas of a finished stream and its terminal item. Fails the test if the stream breaks
/// the contract (items after the terminal one, or no terminal item).
pub async fn collect(mut stream: AgentStream) -> (Vec<String>, Result<String, AgentError>) {
    let mut deltas = Vec::new();
    let mut end = None;
    while let Some(item) = stream.next().await {
        assert!(end.is_none(), "an item after the terminal one: {item:?}");
        match item {
            Ok(AgentEvent::Delta(d)) => deltas.push(d),
            Ok(AgentEvent::Final(f)) => end = Some(Ok(f)),
            Err(e) => end = Some(Err(e)),
        }
    }
    (deltas, end.expect("the stream ended without Final or Err"))
}

/// How a scripted stream ends after its events.
#[derive(Clone, Debug)]
pub enum End {
    /// The body ends normally (the chunked terminator is sent).
    Close,
    /// The connection is torn down mid-body (no terminator).
    Abort,
    /// The body stays open, sending an SSE comment every 20 ms, until the client goes away.
    Hang,
}

/// One scripted reply.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `text/event-stream`: each string is written as `data: <s>\n\n`, then `end`.
    Sse(Vec<String>, End),
    /// A status with an optional `Retry-After` and a JSON body.
    Status(u16, Option<&'static str>, String),
    /// `200` with any content type and body.
    Raw(&'static str, String),
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Signalled when a hanging body is dropped (the client closed the connection).
    body_dropped: Notify,
    dropped_flag: AtomicBool,
}

/// The scripted agent service.
pub struct FakeServer {
    pub base: String,
    shared: Arc<Shared>,
}

impl FakeServer {
    /// Starts a server that plays `replies` in order, repeating the last one.
    pub async fn start(replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared::default());
        shared.replies.lock().expect("lock").extend(replies);
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}"),
            shared,
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Waits (up to 5 s) until a hanging body has been dropped by the server because the
    /// client closed the connection.
    pub async fn client_went_away(&self) -> bool {
        if self.shared.dropped_flag.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::timeout(Duration::from_secs(5), self.shared.body_dropped.notified())
            .await
            .is_ok()
            || self.shared.dropped_flag.load(Ordering::SeqCst)
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.lock().expect("lock").push(Recorded {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let reply = {
        let mut q = shared.replies.lock().expect("lock");
        if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        }
    };
    match reply {
        None => status(500, None, "no reply scripted".into()),
        Some(Reply::Status(code, retry_after, body)) => status(code, retry_after, body),
        Some(Reply::Raw(content_type, body)) => Response::builder()
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("response"),
        Some(Reply::Sse(events, end)) => sse(events, end, shared),
    }
}

fn status(code: u16, retry_after: Option<&'static str>, body: String) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json");
    if let Some(r) = retry_after {
        b = b.header("retry-after", r);
    }
    b.body(Body::from(body)).expect("response")
}

/// Sets the flag and wakes the waiter when the body stream is dropped.
struct DropSignal(Arc<Shared>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.dropped_flag.store(true, Ordering::SeqCst);
        self.0.body_dropped.notify_one();
    }
}

fn sse(events: Vec<String>, end: End, shared: Arc<Shared>) -> Response {
    let head = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(Bytes::from(format!("data: {e}\n\n"))))
            .collect::<Vec<_>>(),
    );
    let tail: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match end {
        End::Close => futures::stream::empty().boxed(),
        // The pause lets hyper flush the events before the error tears the connection down.
        End::Abort => futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut",
            ))
        })
        .boxed(),
        End::Hang => {
            let guard = DropSignal(shared);
            futures::stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok(Bytes::from_static(b": ping\n\n")), guard))
            })
            .boxed()
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(head.chain(tail)))
        .expect("response")
}

/// An OpenAI streaming chunk carrying `content`.
pub fn chunk(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
    .to_string()
}

/// The last OpenAI chunk (empty delta, `finish_reason: stop`).
pub fn finish_chunk() -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    })
    .to_string()
}
