//! Agent backend steps: openai, http and command, with test requests.

use super::*;

fn wecom_basics() -> ScriptedPrompter {
    ScriptedPrompter::new()
        .answer("wecom_method", "manual")
        .answer("bot_id", "aib1")
        .answer("bot_secret", "s")
}

/// A fake agent service: OpenAI-compatible streaming at /v1/chat/completions and a plain-text
/// webhook at /turn.
async fn fake_agent() -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                let mut body = String::new();
                for piece in ["pong", " from openai"] {
                    body.push_str(&format!(
                        "data: {}\n\n",
                        json!({"choices":[{"delta":{"content":piece}}]})
                    ));
                }
                body.push_str("data: [DONE]\n\n");
                ([("content-type", "text/event-stream")], body).into_response()
            }),
        )
        .route("/turn", post(|| async { "pong from http" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn openai_backend_with_a_test_request() {
    let addr = fake_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "openai")
        .answer("base_url", format!("http://{addr}/v1"))
        .answer("model", "test-model")
        // The NAME of a variable, never the key: a pasted key is refused.
        .answer("api_key_env", "sk-abc123")
        .answer("api_key_env", "-")
        .answer("agent_test", "yes");
    let out = run(&mut p, &path, Some("wecom"), |w| w.verify = true)
        .await
        .unwrap();
    assert!(out.agent_changed);
    assert!(
        p.transcript()
            .contains("✓ The agent answered: pong from openai"),
        "{}",
        p.transcript()
    );
    assert!(p.rejected.iter().any(|(id, _)| *id == "api_key_env"));
    assert_eq!(
        read_yaml(&path)["agent"],
        json!({"backend": "openai", "base_url": format!("http://{addr}/v1"), "model": "test-model"})
    );
}

#[tokio::test]
async fn openai_key_variable_unset_here_becomes_a_todo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "openai")
        .answer("api_key_env", "GATEWAY_TEST_UNSET_KEY_VAR");
    let out = run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert!(
        out.todo
            .iter()
            .any(|t| t.contains("GATEWAY_TEST_UNSET_KEY_VAR")),
        "{:?}",
        out.todo
    );
    let agent = &read_yaml(&path)["agent"];
    assert_eq!(agent["base_url"], "https://api.openai.com/v1");
    assert_eq!(agent["model"], "gpt-4o-mini");
    assert_eq!(agent["api_key_env"], "GATEWAY_TEST_UNSET_KEY_VAR");
}

#[tokio::test]
async fn http_backend_with_a_test_request_and_a_failing_one() {
    let addr = fake_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "http")
        .answer("agent_url", format!("http://{addr}/turn"))
        .answer("agent_test", "yes");
    run(&mut p, &path, Some("wecom"), |w| w.verify = true)
        .await
        .unwrap();
    assert!(
        p.transcript()
            .contains("✓ The agent answered: pong from http"),
        "{}",
        p.transcript()
    );
    assert_eq!(
        read_yaml(&path)["agent"],
        json!({"backend": "http", "url": format!("http://{addr}/turn")})
    );

    // A service that is down: a script stops without writing; the file keeps the working setup.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    let mut p = wecom_basics()
        .answer("agent_change", "yes")
        .answer("agent_backend", "http")
        .answer("agent_url", format!("http://{closed}/turn"))
        .answer("agent_test", "yes");
    let e = run(&mut p, &path, Some("wecom"), |w| {
        w.verify = true;
        w.bot_check = Some(true);
        w.interactive = false;
    })
    .await
    .unwrap_err();
    assert!(matches!(e, SetupError::Rejected(_)), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[tokio::test]
async fn command_backend_accepts_words_or_a_json_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = wecom_basics()
        .answer("agent_backend", "command")
        .answer("agent_command", "")
        .answer("agent_command", "[\"python3\", \"/opt/my agent/agent.py\"]");
    run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert_eq!(
        read_yaml(&path)["agent"],
        json!({"backend": "command", "command": ["python3", "/opt/my agent/agent.py"]})
    );
    assert_eq!(
        setup::agent::parse_command("sh -c 'x'").unwrap(),
        ["sh", "-c", "'x'"]
    );
}
