//! The callback crypto against the independent vectors in `fixtures/wecom-callback.json`
//! (generated with wechatpy) and the published wechatpy constants (reference §8 A–E), plus the
//! rejection paths: tampered signatures, wrong receive ids, bad padding, bad lengths, bad base64.

use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use wecom_common::crypto::{CryptoError, WeComCrypto};
use wecom_common::xml::{parse_envelope, parse_message, DEFAULT_BODY_CAP};

const VECTORS: &str = include_str!("fixtures/wecom-callback.json");

/// The wechatpy test-suite key material behind the published vectors A–E.
const W_TOKEN: &str = "123456";
const W_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const W_CORP: &str = "wx49f0ab532d5d035a";

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("fixture parses")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} is a string"))
}

fn random16(v: &Value) -> Option<[u8; 16]> {
    v["inputs"]["random_prefix"]
        .as_str()
        .map(|r| r.as_bytes().try_into().expect("16 bytes"))
}

fn crypto_for(v: &Value) -> WeComCrypto {
    let i = &v["inputs"];
    WeComCrypto::new(s(i, "token"), s(i, "encoding_aes_key"), s(i, "corp_id")).unwrap()
}

/// Value of `name` in the query of a recorded request line, percent-decoded.
fn query_param(request: &str, name: &str) -> String {
    let query = request.split_once('?').map(|(_, q)| q).unwrap_or("");
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{name} in {request}"));
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

#[test]
fn every_url_verification_vector_verifies_and_decrypts() {
    let all = vectors();
    let list = all["vectors"].as_array().unwrap();
    assert!(list.len() >= 6);
    for v in list {
        let name = s(v, "name");
        let c = crypto_for(v);
        let uv = &v["url_verification"];
        let (ts, nonce) = (s(&v["inputs"], "timestamp"), s(&v["inputs"], "nonce"));
        // The recorded request carries the percent-encoded echostr; decoding it yields the field.
        let request = s(uv, "request");
        assert_eq!(query_param(request, "echostr"), s(uv, "echostr"), "{name}");
        assert_eq!(
            query_param(request, "msg_signature"),
            s(uv, "msg_signature"),
            "{name}"
        );
        let body = c
            .verify_url(s(uv, "msg_signature"), ts, nonce, s(uv, "echostr"))
            .unwrap();
        assert_eq!(body, s(uv, "expected_response_body"), "{name}");
        assert_eq!(body, s(uv, "echostr_plain"), "{name}");
        if let Some(random) = random16(v) {
            let signed = c.sign_url_verification_with_random(&body, ts, nonce, &random);
            assert_eq!(signed.encrypt, s(uv, "echostr"), "{name}");
            assert_eq!(
                format!("GET /wecom/callback?{}", signed.query),
                request,
                "{name}"
            );
        }
    }
}

#[test]
fn every_post_vector_verifies_decrypts_and_parses() {
    let all = vectors();
    for v in all["vectors"].as_array().unwrap() {
        let name = s(v, "name");
        let c = crypto_for(v);
        let pc = &v["post_callback"];
        let (ts, nonce) = (s(&v["inputs"], "timestamp"), s(&v["inputs"], "nonce"));
        let env = parse_envelope(s(pc, "body").as_bytes(), DEFAULT_BODY_CAP).unwrap();
        assert_eq!(env.encrypt, s(pc, "encrypt"), "{name}");
        assert_eq!(
            env.to_user_name.as_deref(),
            Some(s(&v["inputs"], "corp_id")),
            "{name}"
        );
        assert_eq!(
            env.agent_id.as_deref(),
            Some(s(&v["inputs"], "agent_id")),
            "{name}"
        );
        assert_eq!(
            query_param(s(pc, "request"), "msg_signature"),
            s(pc, "msg_signature")
        );
        let inner = c
            .verify_and_decrypt(s(pc, "msg_signature"), ts, nonce, &env.encrypt)
            .unwrap();
        assert_eq!(inner, s(pc, "inner_xml"), "{name}");
        let msg = parse_message(&inner).unwrap();
        assert_eq!(
            msg.to_user_name(),
            Some(s(&v["inputs"], "corp_id")),
            "{name}"
        );
        assert_eq!(msg.agent_id(), Some(s(&v["inputs"], "agent_id")), "{name}");
        assert!(
            msg.from_user_name().is_some() && msg.create_time().is_some(),
            "{name}"
        );
        match msg.msg_type() {
            // Events carry `Event` and no `MsgId`; messages carry a `MsgId`.
            Some("event") => assert!(msg.event().is_some() && msg.msg_id().is_none(), "{name}"),
            Some(_) => assert!(msg.msg_id().is_some(), "{name}"),
            None => panic!("{name}: no MsgType"),
        }
        if let Some(random) = random16(v) {
            let agent = s(&v["inputs"], "agent_id");
            let signed = c.sign_callback_with_random(&inner, agent, ts, nonce, &random);
            assert_eq!(signed.encrypt, s(pc, "encrypt"), "{name}");
            assert_eq!(signed.body, s(pc, "body"), "{name}");
            assert_eq!(
                format!("POST /wecom/callback?{}", signed.query),
                s(pc, "request")
            );
        }
    }
}

#[test]
fn every_passive_reply_vector_decrypts_and_reencrypts() {
    let all = vectors();
    for v in all["vectors"].as_array().unwrap() {
        let name = s(v, "name");
        let c = crypto_for(v);
        let pr = &v["passive_reply"];
        let (ts, nonce) = (s(&v["inputs"], "timestamp"), s(&v["inputs"], "nonce"));
        assert_eq!(
            c.decrypt(s(pr, "encrypt")).unwrap(),
            s(pr, "plain"),
            "{name}"
        );
        assert_eq!(
            c.signature(ts, nonce, s(pr, "encrypt")),
            s(pr, "msg_signature"),
            "{name}"
        );
        // The envelope is what WeCom would parse back.
        let env = parse_message(s(pr, "envelope")).unwrap();
        assert_eq!(env.get("Encrypt"), Some(s(pr, "encrypt")));
        assert_eq!(env.get("MsgSignature"), Some(s(pr, "msg_signature")));
        if let Some(random) = random16(v) {
            assert_eq!(
                c.encrypt_with_random(s(pr, "plain"), &random),
                s(pr, "encrypt")
            );
            let envelope = c.reply_envelope_with_random(s(pr, "plain"), ts, nonce, &random);
            assert_eq!(envelope, s(pr, "envelope"), "{name}");
        }
        // A random prefix still decrypts to the same message.
        let fresh = c.reply_envelope(s(pr, "plain"), ts, nonce);
        let fresh = parse_message(&fresh).unwrap();
        let enc = fresh.get("Encrypt").unwrap();
        c.verify_signature(fresh.get("MsgSignature").unwrap(), ts, nonce, enc)
            .unwrap();
        assert_eq!(c.decrypt(enc).unwrap(), s(pr, "plain"));
    }
}

#[test]
fn published_wechatpy_vectors_reproduce() {
    let all = vectors();
    let p = &all["published"];
    let c = WeComCrypto::new(W_TOKEN, W_KEY, W_CORP).unwrap();

    // A: URL verification, and the negative with a nonce one lower.
    let echostr =
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";
    let sig_a = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96";
    assert_eq!(
        c.verify_url(sig_a, "1411443780", "437374425", echostr)
            .unwrap(),
        s(p, "A_url_verification_plain")
    );
    assert_eq!(
        c.verify_url(sig_a, "1411443780", "437374424", echostr),
        Err(CryptoError::BadSignature)
    );

    // B: POST decryption (pad byte 1).
    let encrypt_b = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";
    let sig_b = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d";
    let plain_b = c
        .verify_and_decrypt(sig_b, "1411525903", "461056294", encrypt_b)
        .unwrap();
    assert_eq!(plain_b, s(p, "B_post_plain"));
    let parsed = parse_message(&plain_b).unwrap();
    assert_eq!(parsed.from_user_name(), Some("messense"));
    assert_eq!(parsed.msg_id(), Some("4363689963896700987"));
    assert_eq!(parsed.agent_id(), Some("1"));

    // C: deterministic reply encryption. (Its 285-byte plaintext pads by 3 under 16- and
    // 32-byte blocks alike, so it cannot catch a wrong block size; the tests below can.)
    let plain_c = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
    let encrypt_c = c.encrypt_with_random(plain_c, b"1234567890123456");
    assert_eq!(encrypt_c, s(p, "C_reply_encrypt"));
    assert_eq!(
        c.signature("1411525903", "461056294", &encrypt_c),
        s(p, "C_reply_signature")
    );

    // D: bare block with receive id "rust".
    let d = WeComCrypto::new(W_TOKEN, W_KEY, "rust").unwrap();
    assert_eq!(
        d.encrypt_with_random("test", b"1234567890123456"),
        s(p, "D_prp_encrypt_test_rust")
    );
    assert_eq!(d.decrypt(s(p, "D_prp_encrypt_test_rust")).unwrap(), "test");

    // E: signature only.
    let e = WeComCrypto::new("test", W_KEY, W_CORP).unwrap();
    assert_eq!(
        e.signature("123456", "test", "rust"),
        s(p, "E_sig_test_123456_test_rust")
    );
}

// ---- rejection paths -------------------------------------------------------------------------

fn fixture_crypto() -> (WeComCrypto, [u8; 32]) {
    let all = vectors();
    let app = &all["app"];
    let key_hex = s(&all["vectors"][0]["derived"], "aes_key_hex");
    let key: [u8; 32] = hex::decode(key_hex).unwrap().try_into().unwrap();
    let c = WeComCrypto::new(
        s(app, "token"),
        s(app, "encoding_aes_key"),
        s(app, "corp_id"),
    );
    (c.unwrap(), key)
}

/// Encrypts `data` (already a multiple of 16 bytes) with no padding applied, so tests can craft
/// any padding or length field they like.
fn raw_encrypt(key: &[u8; 32], data: &[u8]) -> String {
    assert_eq!(data.len() % 16, 0);
    let mut buf = data.to_vec();
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&key[..16]);
    let mut enc = cbc::Encryptor::<aes::Aes256>::new(key.into(), &iv.into());
    for block in buf.chunks_exact_mut(16) {
        enc.encrypt_block_mut(block.into());
    }
    STANDARD.encode(buf)
}

/// `random ‖ be32(len) ‖ msg ‖ receive_id`, without padding.
fn layout(len_field: u32, msg: &[u8], receive_id: &str) -> Vec<u8> {
    let mut p = b"0123456789abcdef".to_vec();
    p.extend_from_slice(&len_field.to_be_bytes());
    p.extend_from_slice(msg);
    p.extend_from_slice(receive_id.as_bytes());
    p
}

fn pad32(mut data: Vec<u8>) -> Vec<u8> {
    let pad = 32 - data.len() % 32;
    data.resize(data.len() + pad, pad as u8);
    data
}

#[test]
fn tampered_signatures_are_rejected() {
    let all = vectors();
    let v = &all["vectors"][0];
    let c = crypto_for(v);
    let pc = &v["post_callback"];
    let (ts, nonce, enc) = (
        s(&v["inputs"], "timestamp"),
        s(&v["inputs"], "nonce"),
        s(pc, "encrypt"),
    );
    let sig = s(pc, "msg_signature");
    let mut flipped = sig.to_string().into_bytes();
    flipped[39] = if flipped[39] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (sig, ts, nonce) in [
        (flipped.as_str(), ts, nonce),
        (&sig[..39], ts, nonce),
        ("", ts, nonce),
        (sig, "1710000001", nonce),
        (sig, ts, "nonce124"),
    ] {
        assert_eq!(
            c.verify_and_decrypt(sig, ts, nonce, enc),
            Err(CryptoError::BadSignature)
        );
    }
    // Signature over a different ciphertext.
    let other = s(&v["passive_reply"], "encrypt");
    assert_eq!(
        c.verify_and_decrypt(sig, ts, nonce, other),
        Err(CryptoError::BadSignature)
    );
    // A `+` decoded to a space by a form decoder (reference §1.3 gotcha) fails the signature.
    let uv = &v["url_verification"];
    let mangled = s(uv, "echostr").replace('+', " ");
    assert_ne!(mangled, s(uv, "echostr"));
    assert_eq!(
        c.verify_url(s(uv, "msg_signature"), ts, nonce, &mangled),
        Err(CryptoError::BadSignature)
    );
    // Uppercase hex is not what WeCom sends; the comparison is exact.
    assert_eq!(
        c.verify_signature(&sig.to_uppercase(), ts, nonce, enc),
        Err(CryptoError::BadSignature)
    );
}

#[test]
fn wrong_receive_id_is_rejected() {
    let all = vectors();
    let v = &all["vectors"][0];
    let i = &v["inputs"];
    let other = WeComCrypto::new(s(i, "token"), s(i, "encoding_aes_key"), "ww_other").unwrap();
    assert_eq!(
        other.decrypt(s(&v["post_callback"], "encrypt")),
        Err(CryptoError::ReceiveIdMismatch)
    );
    let empty = WeComCrypto::new(s(i, "token"), s(i, "encoding_aes_key"), "").unwrap();
    assert_eq!(
        empty.decrypt(s(&v["post_callback"], "encrypt")),
        Err(CryptoError::ReceiveIdMismatch)
    );
    // An empty receive id round-trips (AI Bot style senders use none).
    assert_eq!(empty.decrypt(&empty.encrypt("hi")).unwrap(), "hi");
}

#[test]
fn bad_padding_is_rejected_with_its_value() {
    let (c, key) = fixture_crypto();
    let body = layout(5, b"hello", "ww1234567890"); // 37 bytes
                                                    // Pad value 0 and 33 (out of range), then inconsistent pad bytes.
    let mut zero = body.clone();
    zero.resize(64, 0);
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &zero)),
        Err(CryptoError::BadPadding { value: 0 })
    );
    let mut big = body.clone();
    big.resize(64, 33);
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &big)),
        Err(CryptoError::BadPadding { value: 33 })
    );
    let mut inconsistent = pad32(body.clone());
    let n = inconsistent.len();
    inconsistent[n - 2] ^= 0x01;
    let value = inconsistent[n - 1];
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &inconsistent)),
        Err(CryptoError::BadPadding { value })
    );
    // The untouched layout decrypts, so the failures above are due to the padding alone.
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &pad32(body))).unwrap(),
        "hello"
    );
}

#[test]
fn padding_values_17_to_32_are_accepted() {
    let (c, key) = fixture_crypto();
    for msg_len in 0..=40usize {
        let msg = "x".repeat(msg_len);
        let padded = pad32(layout(msg_len as u32, msg.as_bytes(), "ww1234567890"));
        assert_eq!(
            c.decrypt(&raw_encrypt(&key, &padded)).unwrap(),
            msg,
            "len {msg_len}"
        );
    }
}

#[test]
fn truncated_or_overlong_length_fields_are_rejected() {
    let (c, key) = fixture_crypto();
    // Plaintext shorter than prefix + length field.
    let short = pad32(b"0123456789abcdef\x00\x00".to_vec());
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &short)),
        Err(CryptoError::BadLength)
    );
    // Length field pointing past the end.
    let overlong = pad32(layout(1000, b"hello", "ww1234567890"));
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &overlong)),
        Err(CryptoError::BadLength)
    );
    let max = pad32(layout(u32::MAX, b"hello", "ww1234567890"));
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &max)),
        Err(CryptoError::BadLength)
    );
    // A length field that is one short leaves a byte in front of the receive id.
    let off_by_one = pad32(layout(4, b"hello", "ww1234567890"));
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &off_by_one)),
        Err(CryptoError::ReceiveIdMismatch)
    );
}

#[test]
fn malformed_ciphertexts_are_rejected() {
    let (c, key) = fixture_crypto();
    assert_eq!(c.decrypt("not base64 !!"), Err(CryptoError::BadBase64));
    assert_eq!(c.decrypt("QUJD*"), Err(CryptoError::BadBase64));
    // Valid base64 of 15 bytes: not a whole AES block.
    assert_eq!(
        c.decrypt(&STANDARD.encode([0u8; 15])),
        Err(CryptoError::BadLength)
    );
    assert_eq!(c.decrypt(""), Err(CryptoError::BadLength));
    // A message that is not UTF-8.
    let latin1 = pad32(layout(2, &[0xC3, 0x28], "ww1234567890"));
    assert_eq!(
        c.decrypt(&raw_encrypt(&key, &latin1)),
        Err(CryptoError::BadUtf8)
    );
}

#[test]
fn large_cjk_messages_round_trip() {
    let (c, _) = fixture_crypto();
    let text = "企业微信长消息测试。".repeat(3000); // 90,000 bytes
    let inner = format!("<xml><Content><![CDATA[{text}]]></Content></xml>");
    let signed = c.sign_callback(&inner, "1000002", "1710000000", "n");
    let env = parse_envelope(signed.body.as_bytes(), usize::MAX).unwrap();
    let out = c
        .verify_and_decrypt(&signed.msg_signature, "1710000000", "n", &env.encrypt)
        .unwrap();
    assert_eq!(parse_message(&out).unwrap().content(), Some(text.as_str()));
}
