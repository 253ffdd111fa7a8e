//! The `http` (webhook) backend against a scripted service on 127.0.0.1:0.

mod common;

use std::time::Duration;

use agent_bridge::config::HttpConfig;
use agent_bridge::{AgentBackend, AgentConfig, AgentError, AgentEvent, HttpBackend};
use common::{collect, turn, End, FakeServer, Reply};
use futures::StreamExt;
use gateway_core::{Attachment, MediaKind};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "hook-token-93be27d1";

fn config(base: &str) -> HttpConfig {
    let json = serde_json::json!({
        "backend": "http",
        "url": format!("{base}/agent/turn"),
        "headers": {"Authorization": "Bearer ${AGENT_TOKEN}", "X-Gateway": "test"},
        "timeout_secs": 30,
    });
    match serde_json::from_value(json).expect("config parses") {
        AgentConfig::Http(c) => c,
        other => panic!("wrong backend: {other:?}"),
    }
}

fn backend(cfg: &HttpConfig) -> HttpBackend {
    let lookup = |name: &str| (name == "AGENT_TOKEN").then(|| TOKEN.to_string());
    HttpBackend::with_env(cfg, &lookup).expect("backend builds")
}

#[tokio::test]
async fn posts_the_documented_schema_and_reads_a_json_text_answer() {
    let server = FakeServer::start(vec![Reply::Raw(
        "application/json",
        r#"{"text":"hi Alice"}"#.into(),
    )])
    .await;
    let b = backend(&config(&server.base));
    let mut t = turn("hello");
    t.attachments = vec![Attachment {
        kind: MediaKind::Image,
        path: "/data/media/a1.jpg".into(),
        name: "photo.jpg".into(),
        mime: "image/jpeg".into(),
        size: 4821,
    }];
    let (_, end) = collect(b.start(t, CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "hi Alice");

    let req = &server.requests()[0];
    assert_eq!(req.path, "/agent/turn");
    assert_eq!(req.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(req.headers["x-gateway"], "test");
    assert_eq!(req.headers["content-type"], "application/json");
    let body = req.json();
    let turn_id = body["turn_id"]
        .as_str()
        .expect("turn_id is a string")
        .to_string();
    assert!(turn_id.starts_with("turn-"), "{turn_id}");
    assert_eq!(
        body,
        serde_json::json!({
            "version": 1,
            "turn_id": turn_id,
            "session_key": "wecom:dm:alice",
            "session_id": "sess-1",
            "instance": "wecom",
            "sender": {"user_id": "alice", "display_name": "Alice"},
            "chat": {"kind": "dm", "chat_id": "alice"},
            "message_type": "text",
            "text": "hello",
            "attachments": [{"kind": "image", "path": "/data/media/a1.jpg", "name": "photo.jpg",
                             "mime": "image/jpeg", "size": 4821}],
            "history": [
                {"role": "user", "text": "earlier question", "at": "2025-05-01T08:00:00Z"},
                {"role": "assistant", "text": "earlier answer", "at": "2025-05-01T08:00:00Z"},
            ],
        })
    );

    let dbg = format!("{b:?}");
    assert!(
        !dbg.contains(TOKEN) && !dbg.contains("93be27d1"),
        "token in Debug: {dbg}"
    );
    assert!(dbg.contains("authorization"), "{dbg}");
}

#[tokio::test]
async fn a_reply_field_and_plain_text_are_accepted() {
    let server = FakeServer::start(vec![
        Reply::Raw("application/json", r#"{"reply":"from reply"}"#.into()),
        Reply::Raw("text/plain; charset=utf-8", "from text".into()),
    ])
    .await;
    let b = backend(&config(&server.base));
    let (_, end) = collect(b.start(turn("a"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "from reply");
    let (_, end) = collect(b.start(turn("b"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "from text");
}

#[tokio::test]
async fn sse_deltas_then_final() {
    let server = FakeServer::start(vec![Reply::Sse(
        vec![
            r#"{"delta":"one "}"#.into(),
            r#"{"delta":"two"}"#.into(),
            r#"{"final":"one two!"}"#.into(),
        ],
        End::Close,
    )])
    .await;
    let b = backend(&config(&server.base));
    let (deltas, end) = collect(
        b.start(turn("count"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deltas, vec!["one ", "two"]);
    assert_eq!(
        end.unwrap(),
        "one two!",
        "the final event carries the whole answer"
    );
}

#[tokio::test]
async fn sse_deltas_then_done() {
    let server = FakeServer::start(vec![Reply::Sse(
        vec![
            r#"{"delta":"a"}"#.into(),
            r#"{"delta":"b"}"#.into(),
            "[DONE]".into(),
        ],
        End::Close,
    )])
    .await;
    let b = backend(&config(&server.base));
    let (deltas, end) = collect(b.start(turn("x"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(deltas, vec!["a", "b"]);
    assert_eq!(end.unwrap(), "ab");
}

#[tokio::test]
async fn a_cut_stream_is_an_error() {
    let server = FakeServer::start(vec![Reply::Sse(
        vec![r#"{"delta":"par"}"#.into()],
        End::Close,
    )])
    .await;
    let b = backend(&config(&server.base));
    let (deltas, end) = collect(b.start(turn("x"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(deltas, vec!["par"]);
    assert!(matches!(end, Err(AgentError::Protocol(_))), "{end:?}");
}

#[tokio::test]
async fn malformed_events_and_agent_errors_are_typed() {
    let server = FakeServer::start(vec![
        Reply::Sse(vec!["{oops".into()], End::Close),
        Reply::Raw("application/json", r#"{"error":"out of credits"}"#.into()),
    ])
    .await;
    let b = backend(&config(&server.base));
    let (_, end) = collect(b.start(turn("x"), CancellationToken::new()).await.unwrap()).await;
    assert!(matches!(end, Err(AgentError::Protocol(_))), "{end:?}");
    let (_, end) = collect(b.start(turn("y"), CancellationToken::new()).await.unwrap()).await;
    let err = end.unwrap_err();
    assert_eq!(err, AgentError::Agent("out of credits".into()));
    assert_eq!(
        err.user_message(),
        "The agent reported an error: out of credits"
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_and_secrets_stay_out_of_errors() {
    let server = FakeServer::start(vec![Reply::Status(
        503,
        Some("1"),
        format!("overloaded; your header was Bearer {TOKEN}"),
    )])
    .await;
    let mut cfg = config(&server.base);
    cfg.max_retries = 1;
    let b = backend(&cfg);
    let (_, end) = collect(b.start(turn("x"), CancellationToken::new()).await.unwrap()).await;
    let err = end.unwrap_err();
    assert!(
        matches!(err, AgentError::Http { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2);
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("93be27d1"),
        "{shown}"
    );
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let server =
        FakeServer::start(vec![Reply::Sse(vec![r#"{"delta":"x"}"#.into()], End::Hang)]).await;
    let b = backend(&config(&server.base));
    let mut stream = b.start(turn("x"), CancellationToken::new()).await.unwrap();
    assert_eq!(stream.next().await, Some(Ok(AgentEvent::Delta("x".into()))));
    drop(stream);
    assert!(
        server.client_went_away().await,
        "the server never saw the client leave"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_webhook_times_out() {
    let server = FakeServer::start(vec![Reply::Sse(vec![], End::Hang)]).await;
    let mut cfg = config(&server.base);
    cfg.timeout_secs = 3;
    let b = backend(&cfg);
    let (_, end) = collect(b.start(turn("x"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(
        end.unwrap_err(),
        AgentError::Timeout(Duration::from_secs(3))
    );
}

#[test]
fn an_unset_header_variable_is_a_config_error() {
    let cfg = config("http://127.0.0.1:9");
    let errs = HttpBackend::with_env(&cfg, &|_| None).unwrap_err();
    assert_eq!(errs[0].path, "headers.Authorization");
    assert!(errs[0].message.contains("AGENT_TOKEN"), "{errs:?}");
}
