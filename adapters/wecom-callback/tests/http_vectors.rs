//! Acceptance 1 over HTTP: every wechatpy vector (`fixtures/wecom-callback.json`) is answered
//! by the real callback server — URL verification returns the plaintext, POSTs answer `success`
//! and reach the router — while tampered signatures, a wrong CorpID, bad padding, a truncated
//! length field, non-base64 ciphertext, XML bombs, oversized bodies and stale timestamps are
//! refused with their status and nothing reaches the router.

mod common;

use std::sync::Arc;

use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::Harness;
use gateway_core::memory_store::MemoryStore;
use gateway_core::{Content, MediaKind, PlatformEvent, StateStore};
use serde_json::{json, Value};
use wecom_common::crypto::WeComCrypto;
use wecom_emulator::rest::FakeWeComApi;

const VECTORS: &str = include_str!("fixtures/wecom-callback.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key}"))
}

/// The fixture app of the vectors, with the replay window off (the vectors are from 2024).
async fn fixture_gateway(
    emu: &FakeWeComApi,
    corp_override: Option<&str>,
) -> (Harness, tempfile::TempDir) {
    let all = vectors();
    let app = &all["app"];
    emu.register_app(s(app, "corp_id"), "test-secret", 1000002);
    let extra = json!({
        "corp_id": corp_override.unwrap_or(s(app, "corp_id")),
        "corp_secret": "test-secret",
        "agent_id": s(app, "agent_id"),
        "token": s(app, "token"),
        "encoding_aes_key": s(app, "encoding_aes_key"),
        "api_base_url": emu.base_url(),
        "replay_window_secs": 0,
    });
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    (Harness::start(extra, store, dir.path()).await, dir)
}

/// Sends a recorded request line (`GET /wecom/callback?…`) with `body` to the harness.
async fn replay(h: &Harness, request: &str, body: &str) -> (u16, String, String) {
    let (method, target) = request.split_once(' ').unwrap();
    let client = reqwest::Client::new();
    let req = match method {
        "GET" => client.get(h.url(target)),
        _ => client.post(h.url(target)).body(body.to_owned()),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn every_vector_verifies_and_reaches_the_router() {
    let emu = FakeWeComApi::start().await;
    let (h, _dir) = fixture_gateway(&emu, None).await;
    emu.add_media_with_id(
        "MEDIA_ID_EXAMPLE",
        b"\xFF\xD8\xFF\xE0 jpeg bytes",
        "image/jpeg",
        "p.jpg",
    );
    let all = vectors();
    let list = all["vectors"].as_array().unwrap();
    for (n, v) in list.iter().enumerate() {
        let name = s(v, "name");
        let uv = &v["url_verification"];
        let (status, ct, body) = replay(&h, s(uv, "request"), "").await;
        assert_eq!(
            (status, body.as_str()),
            (200, s(uv, "expected_response_body")),
            "{name}"
        );
        assert_eq!(ct, "text/plain; charset=utf-8", "{name}");

        let pc = &v["post_callback"];
        let (status, _, body) = replay(&h, s(pc, "request"), s(pc, "body")).await;
        assert_eq!((status, body.as_str()), (200, "success"), "{name}");
        let got = h.sink.wait(n + 1).await;
        let msg = got.last().unwrap();
        assert_eq!(msg.sender.user_id, "ww1234567890:zhangsan", "{name}");
        assert_eq!(msg.chat.chat_id, "ww1234567890:zhangsan");
        let inner = wecom_common::xml::parse_message(s(pc, "inner_xml")).unwrap();
        match (&msg.content, inner.msg_type().unwrap()) {
            (Content::Text { text }, "text") => {
                assert_eq!(Some(text.as_str()), inner.content(), "{name}")
            }
            (Content::Media { attachment, .. }, "image") => {
                assert_eq!(attachment.kind, MediaKind::Image);
                assert_eq!(
                    std::fs::read(&attachment.path).unwrap(),
                    b"\xFF\xD8\xFF\xE0 jpeg bytes"
                );
            }
            (Content::Event(PlatformEvent::EnterChat), "event") => {
                assert_eq!(inner.event(), Some("enter_agent"))
            }
            (Content::Event(PlatformEvent::MenuClick { key }), "event") => {
                assert_eq!(key, "MENU_KEY")
            }
            (other, t) => panic!("{name}: {t} became {other:?}"),
        }
    }
    assert_eq!(h.sink.all().len(), list.len());
    h.stop().await;
}

#[tokio::test]
async fn a_literal_plus_in_echostr_is_kept_and_health_answers() {
    let emu = FakeWeComApi::start().await;
    let (h, _dir) = fixture_gateway(&emu, None).await;
    let v = &vectors()["vectors"][0];
    let uv = &v["url_verification"];
    // The echostr pasted raw (a `+` and `=` not percent-encoded), as a tester would.
    let raw = format!(
        "/wecom/callback?msg_signature={}&timestamp={}&nonce={}&echostr={}",
        s(uv, "msg_signature"),
        s(&v["inputs"], "timestamp"),
        s(&v["inputs"], "nonce"),
        s(uv, "echostr")
    );
    assert!(raw.contains('+'));
    let r = reqwest::get(h.url(&raw)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), s(uv, "expected_response_body"));

    let health: Value = reqwest::get(h.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["platform"], "wecom_callback");
    h.stop().await;
}

/// A signed POST whose `Encrypt` is `encrypt` (any string: the signature covers it as text).
async fn post_signed(h: &Harness, crypto: &WeComCrypto, encrypt: &str) -> (u16, String) {
    let (ts, nonce) = ("1710000000", "nonce123");
    let sig = crypto.signature(ts, nonce, encrypt);
    let body = format!(
        "<xml><ToUserName>ww1234567890</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    post_raw(
        h,
        &format!("msg_signature={sig}&timestamp={ts}&nonce={nonce}"),
        body,
    )
    .await
}

async fn post_raw(h: &Harness, query: &str, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(h.url(&format!("/wecom/callback?{query}")))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// AES-256-CBC with the fixture key and no padding of its own: lets a test produce plaintexts
/// with broken padding or length fields.
fn raw_encrypt(plain: &[u8]) -> String {
    let all = vectors();
    let key_hex = s(&all["vectors"][0]["derived"], "aes_key_hex");
    let key: [u8; 32] = hex::decode(key_hex).unwrap().try_into().unwrap();
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    assert_eq!(plain.len() % 16, 0);
    let mut buf = plain.to_vec();
    let mut enc = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
    for block in buf.chunks_exact_mut(16) {
        enc.encrypt_block_mut(block.into());
    }
    STANDARD.encode(buf)
}

fn plaintext(msg: &[u8], len_field: u32, corp: &[u8]) -> Vec<u8> {
    let mut p = b"0123456789abcdef".to_vec();
    p.extend_from_slice(&len_field.to_be_bytes());
    p.extend_from_slice(msg);
    p.extend_from_slice(corp);
    p
}

fn pad32(mut p: Vec<u8>) -> Vec<u8> {
    let pad = 32 - p.len() % 32;
    p.extend(std::iter::repeat_n(pad as u8, pad));
    p
}

#[tokio::test]
async fn tampered_or_malformed_callbacks_are_refused_and_never_reach_the_agent() {
    let emu = FakeWeComApi::start().await;
    let (h, _dir) = fixture_gateway(&emu, None).await;
    let all = vectors();
    let app = &all["app"];
    let crypto = WeComCrypto::new(
        s(app, "token"),
        s(app, "encoding_aes_key"),
        s(app, "corp_id"),
    )
    .unwrap();
    let v = &all["vectors"][0];
    let pc = &v["post_callback"];

    // Tampered signature: one hex digit changed, on GET and POST.
    let uv = &v["url_verification"];
    let tampered_get = s(uv, "request").replace(
        s(uv, "msg_signature"),
        &s(uv, "msg_signature").replace('3', "4"),
    );
    assert_eq!(replay(&h, &tampered_get, "").await.0, 403);
    let wrong_nonce = s(uv, "request").replace("nonce=nonce123", "nonce=nonce124");
    let (status, _, body) = replay(&h, &wrong_nonce, "").await;
    assert_eq!((status, body.as_str()), (403, ""), "403 without detail");
    let tampered_post = s(pc, "request").replace(
        s(pc, "msg_signature"),
        &s(pc, "msg_signature").replace('5', "6"),
    );
    assert_eq!(replay(&h, &tampered_post, s(pc, "body")).await.0, 403);
    // Missing parameters.
    assert_eq!(post_raw(&h, "", s(pc, "body").to_owned()).await.0, 403);

    // Non-base64 ciphertext, correctly signed.
    assert_eq!(post_signed(&h, &crypto, "!!not*base64!!").await.0, 400);
    // Bad padding: a pad value of 0, then one of 33, then inconsistent pad bytes.
    let inner = s(pc, "inner_xml").as_bytes();
    let base = plaintext(inner, inner.len() as u32, b"ww1234567890");
    for last in [0u8, 33] {
        let mut p = pad32(base.clone());
        let n = p.len();
        p[n - 1] = last;
        assert_eq!(
            post_signed(&h, &crypto, &raw_encrypt(&p)).await.0,
            400,
            "pad {last}"
        );
    }
    let mut p = pad32(base.clone());
    let n = p.len();
    if p[n - 1] > 1 {
        p[n - 2] ^= 0x01;
        assert_eq!(
            post_signed(&h, &crypto, &raw_encrypt(&p)).await.0,
            400,
            "inconsistent pad"
        );
    }
    // Truncated: the length field points past the end of the plaintext.
    let long = pad32(plaintext(inner, inner.len() as u32 + 4096, b"ww1234567890"));
    assert_eq!(post_signed(&h, &crypto, &raw_encrypt(&long)).await.0, 400);
    // Too short to hold a length field at all.
    assert_eq!(
        post_signed(&h, &crypto, &raw_encrypt(&pad32(b"0123456789".to_vec())))
            .await
            .0,
        400
    );
    // Encrypted for another corp.
    let other =
        WeComCrypto::new(s(app, "token"), s(app, "encoding_aes_key"), "ww_other_corp").unwrap();
    assert_eq!(
        post_signed(&h, &crypto, &other.encrypt(s(pc, "inner_xml")))
            .await
            .0,
        400
    );

    // XML bombs: in the outer body (refused before any signature work) and inside the
    // encrypted payload.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><xml><Encrypt>&lol2;</Encrypt></xml>";
    let q = s(pc, "request").split_once('?').unwrap().1.to_owned();
    assert_eq!(post_raw(&h, &q, bomb.to_owned()).await.0, 400);
    let inner_bomb = "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><FromUserName>&x;</FromUserName><MsgType>text</MsgType></xml>";
    assert_eq!(
        post_signed(&h, &crypto, &crypto.encrypt(inner_bomb))
            .await
            .0,
        400
    );
    assert_eq!(post_raw(&h, &q, "not xml at all".into()).await.0, 400);

    // Oversized body: refused while reading.
    let big = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(64 * 1024));
    assert_eq!(post_raw(&h, &q, big).await.0, 413);

    // Nothing reached the router, and the server still works.
    assert!(h.sink.all().is_empty(), "{:?}", h.sink.all());
    assert_eq!(replay(&h, s(pc, "request"), s(pc, "body")).await.0, 200);
    h.sink.wait(1).await;
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_corp_id_in_config_refuses_every_callback() {
    // Same token and key but another CorpID configured: signatures match, the receive id does
    // not, so the request is refused (400) rather than trusted.
    let emu = FakeWeComApi::start().await;
    let (h, _dir) = fixture_gateway(&emu, Some("ww_not_this_corp")).await;
    let v = &vectors()["vectors"][0];
    let pc = &v["post_callback"];
    assert_eq!(replay(&h, s(pc, "request"), s(pc, "body")).await.0, 400);
    assert_eq!(
        replay(&h, s(&v["url_verification"], "request"), "").await.0,
        403
    );
    assert!(h.sink.all().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn stale_timestamps_are_refused_when_the_window_is_on() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwStale", 1000009);
    let mut extra = app.config();
    extra["api_base_url"] = emu.base_url().into();
    extra["replay_window_secs"] = 300.into();
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(extra, Arc::new(MemoryStore::new()), dir.path()).await;
    app.set_callback_url(h.url("/wecom/callback"));
    app.set_clock_offset(-3600);
    let (stale, _) = app.push_text("alice", "replayed").await;
    assert_eq!(stale.status, 403);
    // A correctly signed URL verification an hour old is refused the same way.
    let stale_get = app.verify_url("echo-old").await;
    assert_eq!(stale_get.status, 403, "{}", stale_get.body);
    app.set_clock_offset(120);
    let (fresh, _) = app.push_text("alice", "slightly ahead").await;
    assert_eq!((fresh.status, fresh.body.as_str()), (200, "success"));
    let fresh_get = app.verify_url("echo-new").await;
    assert_eq!(
        (fresh_get.status, fresh_get.body.as_str()),
        (200, "echo-new")
    );
    let got = h.sink.wait(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text(), "slightly ahead");
    h.stop().await;
}

/// A body that trickles in slower than the body timeout is answered 408 and its connection
/// closed; nothing reaches the router. (Paused time: the 10 s pass at once.)
#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_body_timeout_is_refused_with_408() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let emu = FakeWeComApi::start().await;
    let (h, _dir) = fixture_gateway(&emu, None).await;
    let limit = wecom_callback::listener::Limits::default().body_timeout;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(
        b"POST /wecom/callback?msg_signature=a&timestamp=1&nonce=n HTTP/1.1\r\nhost: x\r\n\
          content-type: text/xml\r\ncontent-length: 100\r\n\r\n<xml>",
    )
    .await
    .unwrap();
    let t0 = tokio::time::Instant::now();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(t0.elapsed() >= limit, "{:?}", t0.elapsed());
    assert!(h.sink.all().is_empty());
    h.stop().await;
}
