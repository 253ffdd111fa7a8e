//! Editing in place: only the agent block and one instance change; the result must pass `gateway check`.

use super::*;

const HAND_WRITTEN: &str = "\
# My gateway. Do not lose this comment.
gateway:
  data_dir: ./state   # inline comment stays
  listen: 127.0.0.1:8646

# The agent.
agent:
  backend: openai
  base_url: http://127.0.0.1:11434/v1
  model: qwen2.5
  system_prompt: \"Be brief.\"   # setup keeps keys it does not ask about

sessions:
  busy_mode: interrupt

platforms:
  # The sales bot, written by hand.
  wecom_sales:
    type: wecom
    extra: { bot_id: sales, secret: sales-secret }
  wecom:
    enabled: true
    extra:
      bot_id: old-id
      secret: old-secret
      groups: { \"*\": { allow_from: [boss] } }
  # Trailing notes about platforms.
";

#[tokio::test]
async fn rerunning_edits_the_instance_in_place_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, HAND_WRITTEN).unwrap();
    // Enter on every question keeps the current values; only the secret changes.
    let mut p = ScriptedPrompter::new()
        .answer("bot_secret", "new-secret")
        .answer("agent_change", "yes")
        .answer("model", "qwen3");
    let out = run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert!(!out.created);
    let text = std::fs::read_to_string(&path).unwrap();
    // Every line outside the two replaced blocks is unchanged.
    for line in [
        "# My gateway. Do not lose this comment.",
        "  data_dir: ./state   # inline comment stays",
        "# The agent.",
        "sessions:\n  busy_mode: interrupt\n",
        "  # The sales bot, written by hand.\n  wecom_sales:\n    type: wecom\n    extra: { bot_id: sales, secret: sales-secret }\n",
        "  # Trailing notes about platforms.\n",
    ] {
        assert!(text.contains(line), "lost {line:?} in:\n{text}");
    }
    assert_eq!(text.matches("wecom:").count(), 1, "{text}");
    let v = read_yaml(&path);
    let entry = &v["platforms"]["wecom"];
    assert_eq!(entry["enabled"], true);
    assert_eq!(entry["extra"]["bot_id"], "old-id");
    assert_eq!(entry["extra"]["secret"], "new-secret");
    assert_eq!(
        entry["extra"]["groups"],
        json!({"*": {"allow_from": ["boss"]}})
    );
    assert_eq!(entry["extra"]["dm_policy"], "pairing");
    assert_eq!(
        v["agent"],
        json!({"backend": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "qwen3",
               "api_key_env": "OPENAI_API_KEY", "system_prompt": "Be brief."})
    );
    assert_eq!(v["sessions"], json!({"busy_mode": "interrupt"}));
    assert_eq!(v["platforms"]["wecom_sales"]["extra"]["bot_id"], "sales");

    // A second run with no changes produces the same file.
    let mut p = ScriptedPrompter::new();
    run(&mut p, &path, Some("wecom"), |_| {}).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[tokio::test]
async fn the_example_config_gets_an_instance_and_still_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml"))
            .unwrap();
    std::fs::write(&path, &example).unwrap();
    let mut p = ScriptedPrompter::new()
        .answer("instance", "wecom_support")
        .answer("corp_id", "ww99887766")
        .answer("corp_secret", "s")
        .answer("agent_id", "1000009")
        .answer("port", "8699");
    run(&mut p, &path, Some("wecom_callback"), |_| {})
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v = read_yaml(&path);
    assert_eq!(v["platforms"]["wecom_support"]["type"], "wecom_callback");
    assert_eq!(v["platforms"]["wecom_support"]["extra"]["port"], 8699);
    // Everything before `platforms:` is untouched (the agent section was kept).
    let head = |t: &str| t[..t.find("\nplatforms:").unwrap()].to_string();
    assert_eq!(head(&text), head(&example));
    if registry().get("wecom").is_some() || !example.contains("\n  wecom:") {
        assert_passes_check(&path);
    }
}

#[tokio::test]
async fn a_result_that_fails_validation_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    // A broken section elsewhere: setup reports it and leaves the file alone.
    let original = "sessions:\n  busy_mod: queue\n";
    std::fs::write(&path, original).unwrap();
    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234")
        .answer("corp_secret", "s")
        .answer("agent_id", "1");
    let e2 = run(&mut p, &path, Some("wecom_callback"), |_| {})
        .await
        .unwrap_err();
    match e2 {
        SetupError::Invalid(errors) => assert!(
            errors.iter().any(|e| e.path == "sessions.busy_mod"),
            "{errors:?}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}
