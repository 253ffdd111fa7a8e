//! `wecom_callback` setup: gettoken check, generated Token and EncodingAESKey, what to paste, typed validation.

use super::*;

fn callback_answers() -> ScriptedPrompter {
    ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        // Typed wrong first: each invalid answer is refused as typed and asked again.
        .answer("corp_secret", "has a space")
        .answer("corp_secret", "app-secret-1")
        .answer("agent_id", "abc")
        .answer("agent_id", "1000002")
        .answer("generate_secrets", "yes")
        .answer("port", "8655")
        .answer("public_url", "https://bot.example.com")
        .answer("dm_policy", "allowlist")
        .answer("allow_from", "zhangsan, lisi")
        .answer("home_channel", "user:zhangsan")
}

#[tokio::test]
async fn callback_setup_checks_gettoken_generates_secrets_and_prints_what_to_paste() {
    let api = FakeWeComApi::start().await;
    api.register_app("ww1234567890abcd", "app-secret-1", 1000002);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let mut p = callback_answers();
    let base = api.base_url();
    let out = run(&mut p, &path, Some("wecom_callback"), |w| {
        w.verify = true;
        w.overrides.api_base_url = Some(base.clone());
    })
    .await
    .unwrap();
    assert!(out.created);
    assert_passes_check(&path);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert_eq!(api.calls_to(Endpoint::GetToken).len(), 1);

    let v = read_yaml(&path);
    let extra = &v["platforms"]["wecom_callback"]["extra"];
    assert_eq!(extra["corp_id"], "ww1234567890abcd");
    assert_eq!(extra["agent_id"], 1000002);
    assert_eq!(extra["port"], 8655);
    assert_eq!(extra["api_base_url"], base.as_str());
    // Callback senders are `corp_id:user_id`; bare ids were qualified.
    assert_eq!(
        extra["allow_from"],
        json!(["ww1234567890abcd:zhangsan", "ww1234567890abcd:lisi"])
    );
    assert_eq!(
        v["platforms"]["wecom_callback"]["home_channel"],
        "user:zhangsan"
    );
    let token = extra["token"].as_str().unwrap();
    let key = extra["encoding_aes_key"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    assert_eq!(key.len(), 43);
    wecom_common::WeComCrypto::new(token, key, "ww1234567890abcd").unwrap();

    let said = p.transcript();
    assert!(
        said.contains("URL             https://bot.example.com/wecom/callback"),
        "{said}"
    );
    assert!(said.contains(&format!("Token           {token}")), "{said}");
    assert!(said.contains(&format!("EncodingAESKey  {key}")), "{said}");
    let rejected: Vec<&str> = p.rejected.iter().map(|(id, _)| *id).collect();
    assert_eq!(rejected, ["corp_secret", "agent_id"]);
}

#[test]
fn generated_keys_are_valid_and_different_each_time() {
    let a = setup::wecom_callback::random_aes_key();
    let b = setup::wecom_callback::random_aes_key();
    assert_ne!(a, b);
    for k in [&a, &b] {
        assert_eq!(k.len(), 43);
        setup::wecom_callback::check_aes_key(k).unwrap();
    }
    assert!(setup::wecom_callback::check_token(&setup::wecom_callback::random_token()).is_ok());
}

#[tokio::test]
async fn a_42_character_key_is_refused_as_typed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let good = setup::wecom_callback::random_aes_key();
    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        .answer("corp_secret", "s")
        .answer("agent_id", "1000002")
        .answer("generate_secrets", "no")
        .answer("token", "tok3n")
        .answer("encoding_aes_key", &good[..42])
        .answer("encoding_aes_key", good.clone());
    run(&mut p, &path, Some("wecom_callback"), |_| {})
        .await
        .unwrap();
    assert_passes_check(&path);
    let reason = &p
        .rejected
        .iter()
        .find(|(id, _)| *id == "encoding_aes_key")
        .unwrap()
        .1;
    assert!(reason.contains("43"), "{reason}");
    assert!(
        !reason.contains(&good[..42]),
        "the key must not be echoed: {reason}"
    );
    // Entered (not generated) values are not printed back.
    assert!(!p.transcript().contains(&good));
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom_callback"]["extra"]["encoding_aes_key"],
        good.as_str()
    );
}

#[tokio::test]
async fn a_wrong_secret_stops_a_script_and_can_be_retyped_interactively() {
    let api = FakeWeComApi::start().await;
    api.register_app("ww1234567890abcd", "right", 1000002);
    let base = api.base_url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");

    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        .answer("corp_secret", "wrong")
        .answer("agent_id", "1000002");
    let e = run(&mut p, &path, Some("wecom_callback"), |w| {
        w.verify = true;
        w.interactive = false;
        w.overrides.api_base_url = Some(base.clone());
    })
    .await
    .unwrap_err();
    assert!(matches!(e, SetupError::Rejected(_)), "{e}");
    assert!(e.to_string().contains("errcode"), "{e}");
    assert!(!e.to_string().contains("wrong"), "no secret in errors: {e}");
    assert!(!path.exists(), "nothing may be written");

    let mut p = ScriptedPrompter::new()
        .answer("corp_id", "ww1234567890abcd")
        .answer("corp_secret", "wrong")
        .answer("agent_id", "1000002")
        .answer("credentials_failed", "retry")
        .answer("corp_secret", "right");
    run(&mut p, &path, Some("wecom_callback"), |w| {
        w.verify = true;
        w.overrides.api_base_url = Some(base.clone());
    })
    .await
    .unwrap();
    assert_eq!(api.calls_to(Endpoint::GetToken).len(), 3);
    assert_eq!(
        read_yaml(&path)["platforms"]["wecom_callback"]["extra"]["corp_secret"],
        "right"
    );
    assert!(p.transcript().contains("✓ WeCom accepted"));
}
