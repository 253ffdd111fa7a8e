//! The `openai` backend against a scripted OpenAI-compatible service on 127.0.0.1:0.

mod common;

use std::time::Duration;

use agent_bridge::config::OpenAiConfig;
use agent_bridge::{AgentBackend, AgentConfig, AgentError, AgentEvent, OpenAiBackend};
use base64::Engine as _;
use common::{chunk, collect, finish_chunk, turn, End, FakeServer, Reply};
use futures::StreamExt;
use gateway_core::{Attachment, MediaKind};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-test-SECRET-4f9a1b2c";

fn config(base: &str) -> OpenAiConfig {
    let json = serde_json::json!({
        "backend": "openai",
        "base_url": format!("{base}/v1"),
        "model": "test-model",
        "api_key_env": "TEST_OPENAI_KEY",
        "system_prompt": "You are terse.",
        "temperature": 0.5,
        "max_tokens": 64,
        "timeout_secs": 30,
    });
    match serde_json::from_value(json).expect("config parses") {
        AgentConfig::OpenAi(c) => c,
        other => panic!("wrong backend: {other:?}"),
    }
}

fn backend(cfg: &OpenAiConfig) -> OpenAiBackend {
    let lookup = |name: &str| (name == "TEST_OPENAI_KEY").then(|| KEY.to_string());
    OpenAiBackend::with_env(cfg, &lookup).expect("backend builds")
}

fn done() -> String {
    "[DONE]".to_string()
}

#[tokio::test]
async fn streams_deltas_in_order_and_sends_prompt_history_and_key() {
    let server = FakeServer::start(vec![Reply::Sse(
        vec![
            chunk("Hel"),
            chunk("lo, "),
            chunk("Alice"),
            finish_chunk(),
            done(),
        ],
        End::Close,
    )])
    .await;
    let b = backend(&config(&server.base));
    let (deltas, end) = collect(
        b.start(turn("say hello"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deltas, vec!["Hel", "lo, ", "Alice"]);
    assert_eq!(end.unwrap(), "Hello, Alice");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].headers["authorization"], format!("Bearer {KEY}"));
    let body = reqs[0].json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(
        body["messages"],
        serde_json::json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "say hello"},
        ])
    );

    let dbg = format!("{b:?}");
    assert!(
        !dbg.contains(KEY) && !dbg.contains("4f9a1b2c"),
        "key in Debug: {dbg}"
    );
}

#[tokio::test]
async fn the_key_is_never_in_errors_even_when_the_service_echoes_it() {
    let server = FakeServer::start(vec![Reply::Status(
        401,
        None,
        format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#),
    )])
    .await;
    let b = backend(&config(&server.base));
    let (_, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    let err = end.unwrap_err();
    assert!(
        matches!(err, AgentError::Http { status: 401, .. }),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}"), err.user_message()] {
        assert!(
            !text.contains(KEY) && !text.contains("4f9a1b2c"),
            "key leaked: {text}"
        );
    }
    assert!(err.to_string().contains("[redacted]"), "{err}");
    assert!(
        err.user_message().contains("API key"),
        "{}",
        err.user_message()
    );
    assert_eq!(server.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_after_its_retry_after() {
    let server = FakeServer::start(vec![
        Reply::Status(
            429,
            Some("7"),
            r#"{"error":{"message":"slow down"}}"#.into(),
        ),
        Reply::Sse(vec![chunk("ok"), finish_chunk(), done()], End::Close),
    ])
    .await;
    let b = backend(&config(&server.base));
    let started = tokio::time::Instant::now();
    let (deltas, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "ok");
    assert_eq!(deltas, vec!["ok"]);
    assert_eq!(server.requests().len(), 2, "exactly one retry");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(7),
        "Retry-After not honoured: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(9),
        "waited too long: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_500_forever_fails_after_the_retry_budget() {
    let server = FakeServer::start(vec![Reply::Status(
        500,
        None,
        r#"{"error":"internal"}"#.into(),
    )])
    .await;
    let mut cfg = config(&server.base);
    cfg.max_retries = 2;
    let b = backend(&cfg);
    let (deltas, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    assert!(deltas.is_empty());
    let err = end.unwrap_err();
    assert!(
        matches!(err, AgentError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.user_message(),
        "The agent service is unavailable (HTTP 500) — try again later."
    );
    assert_eq!(server.requests().len(), 3, "one attempt plus two retries");
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server = FakeServer::start(vec![Reply::Status(
        400,
        None,
        r#"{"error":{"message":"bad model"}}"#.into(),
    )])
    .await;
    let b = backend(&config(&server.base));
    let (_, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    let err = end.unwrap_err();
    assert!(
        matches!(&err, AgentError::Http { status: 400, body_excerpt, .. }
        if body_excerpt.contains("bad model")),
        "{err:?}"
    );
    assert_eq!(
        err.user_message(),
        "The agent service rejected the request (HTTP 400)."
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_is_a_short_typed_error() {
    // Bind and drop a listener: its port now refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut cfg = config(&base);
    cfg.max_retries = 1;
    let b = backend(&cfg);
    let (_, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    let err = end.unwrap_err();
    assert!(matches!(err, AgentError::Unreachable(_)), "{err:?}");
    assert_eq!(
        err.user_message(),
        "The agent service cannot be reached — try again later."
    );
}

#[tokio::test]
async fn malformed_sse_is_a_protocol_error() {
    let server = FakeServer::start(vec![Reply::Sse(
        vec![chunk("a"), "{not json".into()],
        End::Close,
    )])
    .await;
    let b = backend(&config(&server.base));
    let (deltas, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(deltas, vec!["a"]);
    let err = end.unwrap_err();
    assert!(matches!(err, AgentError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn a_stream_that_stops_before_done_is_an_error_not_a_truncated_answer() {
    for end in [End::Close, End::Abort] {
        let server = FakeServer::start(vec![Reply::Sse(
            vec![chunk("half an "), chunk("ans")],
            end.clone(),
        )])
        .await;
        let b = backend(&config(&server.base));
        let (deltas, result) =
            collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
        assert_eq!(deltas, vec!["half an ", "ans"], "{end:?}");
        let err = result.unwrap_err();
        assert!(matches!(err, AgentError::Protocol(_)), "{end:?}: {err:?}");
        assert_eq!(
            server.requests().len(),
            1,
            "no retry after the first byte ({end:?})"
        );
    }
}

#[tokio::test]
async fn a_finish_reason_without_done_completes_the_answer() {
    let server = FakeServer::start(vec![Reply::Sse(
        vec![chunk("all"), finish_chunk()],
        End::Close,
    )])
    .await;
    let b = backend(&config(&server.base));
    let (_, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "all");
}

#[tokio::test]
async fn a_non_streaming_json_answer_is_accepted() {
    let body = serde_json::json!({
        "id": "c1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"},
                     "finish_reason": "stop"}]
    });
    let server = FakeServer::start(vec![Reply::Raw("application/json", body.to_string())]).await;
    let b = backend(&config(&server.base));
    let (_, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "whole answer");
}

#[tokio::test(start_paused = true)]
async fn a_silent_service_times_out() {
    let server = FakeServer::start(vec![Reply::Sse(vec![chunk("thinking")], End::Hang)]).await;
    let mut cfg = config(&server.base);
    cfg.timeout_secs = 5;
    let b = backend(&cfg);
    let (deltas, end) = collect(b.start(turn("hi"), CancellationToken::new()).await.unwrap()).await;
    assert_eq!(deltas, vec!["thinking"]);
    let err = end.unwrap_err();
    assert_eq!(err, AgentError::Timeout(Duration::from_secs(5)));
    assert_eq!(
        err.user_message(),
        "The agent did not answer in time (5 s)."
    );
}

#[tokio::test]
async fn cancelling_mid_stream_closes_the_connection() {
    let server = FakeServer::start(vec![Reply::Sse(vec![chunk("first")], End::Hang)]).await;
    let b = backend(&config(&server.base));
    let cancel = CancellationToken::new();
    let mut stream = b.start(turn("hi"), cancel.clone()).await.unwrap();
    assert_eq!(
        stream.next().await,
        Some(Ok(AgentEvent::Delta("first".into())))
    );
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(AgentError::Cancelled)));
    assert_eq!(stream.next().await, None);
    assert!(
        server.client_went_away().await,
        "the server never saw the client leave"
    );
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let server = FakeServer::start(vec![Reply::Sse(vec![chunk("first")], End::Hang)]).await;
    let b = backend(&config(&server.base));
    let mut stream = b.start(turn("hi"), CancellationToken::new()).await.unwrap();
    assert_eq!(
        stream.next().await,
        Some(Ok(AgentEvent::Delta("first".into())))
    );
    drop(stream);
    assert!(
        server.client_went_away().await,
        "the server never saw the client leave"
    );
}

#[tokio::test]
async fn vision_sends_images_inline_and_describes_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("cat.png");
    let png_bytes: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    std::fs::write(&png, &png_bytes).unwrap();
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, b"%PDF-1.4").unwrap();

    let server =
        FakeServer::start(vec![Reply::Sse(vec![chunk("a cat"), done()], End::Close)]).await;
    let mut cfg = config(&server.base);
    cfg.vision = true;
    let b = backend(&cfg);
    let mut t = turn("what is this?");
    t.attachments = vec![
        Attachment {
            kind: MediaKind::Image,
            path: png,
            name: "cat.png".into(),
            mime: "image/png".into(),
            size: png_bytes.len() as u64,
        },
        Attachment {
            kind: MediaKind::File,
            path: pdf,
            name: "report.pdf".into(),
            mime: "application/pdf".into(),
            size: 8,
        },
    ];
    let (_, end) = collect(b.start(t, CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "a cat");

    let body = server.requests()[0].json();
    let content = &body["messages"][3]["content"];
    let expected_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png_bytes)
    );
    assert_eq!(
        content,
        &serde_json::json!([
            {"type": "text",
             "text": "what is this?\n[attached file: report.pdf (application/pdf, 8 bytes)]"},
            {"type": "image_url", "image_url": {"url": expected_url}},
        ])
    );
}

#[tokio::test]
async fn without_vision_images_are_described() {
    let server = FakeServer::start(vec![Reply::Sse(vec![chunk("ok"), done()], End::Close)]).await;
    let b = backend(&config(&server.base));
    let mut t = turn("look");
    t.attachments = vec![Attachment {
        kind: MediaKind::Image,
        path: "/nonexistent/cat.png".into(),
        name: "cat.png".into(),
        mime: "image/png".into(),
        size: 10,
    }];
    let (_, end) = collect(b.start(t, CancellationToken::new()).await.unwrap()).await;
    assert_eq!(end.unwrap(), "ok");
    let body = server.requests()[0].json();
    assert_eq!(
        body["messages"][3]["content"],
        "look\n[attached image: cat.png (image/png, 10 bytes)]"
    );
}

#[test]
fn a_missing_key_variable_is_a_config_error() {
    let json = serde_json::json!({
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
        "api_key_env": "AGENT_BRIDGE_TEST_UNSET_VARIABLE_7731"
    });
    let cfg: AgentConfig = serde_json::from_value(json).unwrap();
    let errs = agent_bridge::build_backend(&cfg).unwrap_err();
    assert_eq!(errs[0].path, "api_key_env");
    assert!(
        errs[0]
            .message
            .contains("AGENT_BRIDGE_TEST_UNSET_VARIABLE_7731"),
        "{errs:?}"
    );
}
