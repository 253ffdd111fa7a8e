//! Downloaded media: AI Bot media decryption with the per-URL `aeskey` (wecom-aibot reference
//! §5; the key string comes from the callback), type detection from magic bytes on whatever the
//! download returned, and the `Content-Type` mapping.
//!
//! Input: NUL-separated `mime ‖ aeskey ‖ bytes`. Checks: no panic; with a fixed key, the result
//! equals an independent AES-CBC decryption and PKCS#7/32 unpadding; encrypt → decrypt returns
//! the bytes for the key in every spelling WeCom or a proxy may use (padded, unpadded,
//! URL-encoded, URL-safe alphabet); both adapters detect the same type.
#![no_main]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use gateway_fuzz::{cbc_decrypt_raw, fields, text, unpad_model};
use libfuzzer_sys::fuzz_target;
use wecom_common::media::{decrypt_media, encode_media_key, encrypt_media, kind_from_mime};
use wecom_common::{detect_media_type, CryptoError};

fuzz_target!(|data: &[u8]| {
    let f = fields(data, 3);
    let (mime, aeskey, bytes) = (text(f[0]), text(f[1]), f[2]);

    let _ = kind_from_mime(&mime);
    let detected = detect_media_type(bytes);
    assert_eq!(wecom::media::detect_kind(bytes), detected);
    assert!(!detected.1.is_empty() && !detected.2.is_empty());

    // Whatever key the callback names, and whatever ciphertext the download returned.
    let _ = decrypt_media(bytes, &aeskey);

    // A fixed key: the result is what the reference says.
    let key = [0x5a_u8; 32];
    let got = decrypt_media(bytes, &encode_media_key(&key));
    let expected = if bytes.is_empty() || bytes.len() % 16 != 0 {
        Err(CryptoError::BadLength)
    } else {
        let plain = cbc_decrypt_raw(&key, bytes);
        unpad_model(&plain).map(|n| plain[..n].to_vec())
    };
    assert_eq!(got, expected);

    // Round trip with a key taken from the input, in each accepted spelling.
    let mut key = [0u8; 32];
    for (i, b) in bytes.iter().take(32).enumerate() {
        key[i] = *b;
    }
    let sealed = encrypt_media(bytes, &key);
    assert_eq!(sealed.len() % 32, 0);
    let padded = STANDARD.encode(key);
    let spellings = [
        encode_media_key(&key),
        padded.clone(),
        padded
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
        URL_SAFE_NO_PAD.encode(key),
        format!(" {padded} "),
    ];
    for spelling in &spellings {
        assert_eq!(
            decrypt_media(&sealed, spelling).as_deref(),
            Ok(bytes),
            "key spelled {spelling:?}"
        );
    }
});
