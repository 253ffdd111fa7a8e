//! WXBizMsgCrypt (wecom-callback reference §1.2, §2.2, §2.3) with the fixed test app's key:
//! base64 decoding, AES-CBC, PKCS#7/32 unpadding, the plaintext layout, signature checks and the
//! callback query string.
//!
//! Input: NUL-separated fields `random(16) ‖ mode ‖ msg ‖ tail ‖ ciphertext ‖ signature ‖
//! timestamp ‖ nonce ‖ query` (see `gateway_fuzz::fields`). Checks:
//! * any ciphertext string decrypts or fails without a panic, and a success re-encrypts;
//! * encrypt → decrypt returns the message;
//! * a plaintext built by the target (length field, receive id and padding possibly wrong) and
//!   encrypted with an independent AES gives exactly the result the reference layout predicts;
//! * the signature verifies iff it equals an independently computed SHA-1;
//! * the query string parses, and re-encoded values parse back unchanged.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gateway_fuzz::{aes_key, cbc_encrypt_raw, crypto, decrypt_model, fields, pad32, text};
use gateway_fuzz::{CORP_ID, TOKEN};
use libfuzzer_sys::fuzz_target;
use sha1::{Digest as _, Sha1};
use wecom_callback::server::Query;
use wecom_common::crypto::{check_timestamp, encode_query_value};
use wecom_common::{pkcs7_pad, pkcs7_unpad_len, CryptoError};

fuzz_target!(|data: &[u8]| {
    let c = crypto();
    let (random, rest) = data.split_at(data.len().min(16));
    let mut prefix = [0u8; 16];
    prefix[..random.len()].copy_from_slice(random);
    let f = fields(rest, 8);
    let mode = f[0].first().copied().unwrap_or(0);
    let msg = text(f[1]);
    let tail = f[2];
    let ciphertext = text(f[3]);
    let (signature, timestamp, nonce) = (text(f[4]), text(f[5]), text(f[6]));

    // Free-form ciphertext, as an attacker would post it.
    if let Ok(plain) = c.decrypt(&ciphertext) {
        assert_eq!(
            c.decrypt(&c.encrypt_with_random(&plain, &prefix)),
            Ok(plain)
        );
    }

    // The encoder and decoder agree.
    let encrypted = c.encrypt_with_random(&msg, &prefix);
    assert_eq!(STANDARD.decode(&encrypted).map(|b| b.len() % 32), Ok(0));
    assert_eq!(c.decrypt(&encrypted).as_deref(), Ok(msg.as_str()));

    // A plaintext laid out by hand, with the fields the mode byte corrupts.
    let mut plain = prefix.to_vec();
    let len = match mode & 3 {
        0 => msg.len() as u32,
        1 => (msg.len() as u32).wrapping_add(u32::from(mode >> 2)),
        2 => (msg.len() as u32).wrapping_sub(u32::from(mode >> 2)),
        _ => u32::from_be_bytes([mode, mode, mode, mode]),
    };
    plain.extend_from_slice(&len.to_be_bytes());
    plain.extend_from_slice(f[1]);
    if mode & 4 == 0 {
        plain.extend_from_slice(CORP_ID.as_bytes());
    }
    plain.extend_from_slice(tail);
    let padded = if mode & 8 == 0 {
        pad32(&plain)
    } else {
        // No padding of ours: whatever the tail ends with, zero-filled to a whole block.
        let mut p = plain;
        p.resize(p.len().div_ceil(16) * 16, 0);
        p
    };
    let b64 = STANDARD.encode(cbc_encrypt_raw(&aes_key(), &padded));
    assert_eq!(
        c.decrypt(&b64),
        decrypt_model(&padded, CORP_ID),
        "plaintext {padded:?}"
    );

    // The unpadder alone, on the raw bytes, and against its own padder.
    let expected = gateway_fuzz::unpad_model(tail);
    assert_eq!(pkcs7_unpad_len(tail), expected);
    assert_eq!(pkcs7_unpad_len(&pkcs7_pad(tail)), Ok(tail.len()));
    assert_eq!(pkcs7_pad(tail), pad32(tail));

    // Signature: SHA-1 of the four values sorted and concatenated (§1.2).
    let mut parts = [
        TOKEN,
        timestamp.as_str(),
        nonce.as_str(),
        ciphertext.as_str(),
    ];
    parts.sort_unstable();
    let reference = hex::encode(Sha1::digest(parts.concat().as_bytes()));
    assert_eq!(c.signature(&timestamp, &nonce, &ciphertext), reference);
    assert!(c
        .verify_signature(&reference, &timestamp, &nonce, &ciphertext)
        .is_ok());
    assert_eq!(
        c.verify_signature(&signature, &timestamp, &nonce, &ciphertext)
            .is_ok(),
        signature == reference
    );
    if signature != reference {
        assert_eq!(
            c.verify_and_decrypt(&signature, &timestamp, &nonce, &ciphertext),
            Err(CryptoError::BadSignature)
        );
    }

    // Replay window: accepted only for a number within the window.
    let now = 1_700_000_000;
    let ok = check_timestamp(&timestamp, now, 300).is_ok();
    let within = timestamp
        .trim()
        .parse::<i64>()
        .is_ok_and(|t| t.abs_diff(now) <= 300);
    assert_eq!(ok, within);

    // The query string, then the parsed values re-encoded the way WeCom encodes them.
    let q = Query::parse(Some(&text(f[7])));
    let encoded = format!(
        "msg_signature={}&timestamp={}&nonce={}&echostr={}",
        encode_query_value(&q.msg_signature),
        encode_query_value(&q.timestamp),
        encode_query_value(&q.nonce),
        encode_query_value(&q.echostr),
    );
    assert_eq!(Query::parse(Some(&encoded)), q);
});
