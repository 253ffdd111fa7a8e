//! What the fuzz targets share: the fixed callback credentials, input framing, and small
//! reference implementations (AES-256-CBC without padding, WeCom's PKCS#7/32 unpadding, the
//! plaintext layout of wecom-callback reference §2.3) that the targets compare the gateway's
//! own code against. The references are written from the reference text, not copied from the
//! code under test, so a disagreement is a finding in one of the two.

use std::sync::OnceLock;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use wecom_common::{CryptoError, WeComCrypto};

/// The callback Token of the fixed test app.
pub const TOKEN: &str = "QDG6eK";
/// The EncodingAESKey of the fixed test app (43 characters, trailing bits set on purpose).
pub const ENCODING_AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
/// The CorpID (receive id) of the fixed test app.
pub const CORP_ID: &str = "wx5823bf96d3bd56c7";
/// The AgentID of the fixed test app.
pub const AGENT_ID: i64 = 1000002;

/// The crypto context of the fixed test app, built once per process.
pub fn crypto() -> &'static WeComCrypto {
    static CRYPTO: OnceLock<WeComCrypto> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        WeComCrypto::new(TOKEN, ENCODING_AES_KEY, CORP_ID).expect("the fixed test key is valid")
    })
}

/// The 32-byte AES key behind [`ENCODING_AES_KEY`], decoded here independently (base64 with
/// trailing bits allowed, as the reference §2.2 requires).
pub fn aes_key() -> [u8; 32] {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT
        .decode(ENCODING_AES_KEY)
        .expect("the fixed key is base64");
    bytes.try_into().expect("the fixed key is 32 bytes")
}

/// AES-256-CBC encryption with IV = key[..16] and no padding; `data` must be a multiple of 16.
pub fn cbc_encrypt_raw(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    assert!(data.len().is_multiple_of(16), "raw CBC input must be block-aligned");
    let iv: [u8; 16] = key[..16].try_into().expect("16 bytes");
    let mut cipher = cbc::Encryptor::<aes::Aes256>::new(key.into(), &iv.into());
    let mut buf = data.to_vec();
    for block in buf.chunks_exact_mut(16) {
        cipher.encrypt_block_mut(block.into());
    }
    buf
}

/// AES-256-CBC decryption with IV = key[..16] and no unpadding; `data` must be a multiple of 16.
pub fn cbc_decrypt_raw(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    assert!(data.len().is_multiple_of(16), "raw CBC input must be block-aligned");
    let iv: [u8; 16] = key[..16].try_into().expect("16 bytes");
    let mut cipher = cbc::Decryptor::<aes::Aes256>::new(key.into(), &iv.into());
    let mut buf = data.to_vec();
    for block in buf.chunks_exact_mut(16) {
        cipher.decrypt_block_mut(block.into());
    }
    buf
}

/// The expected result of stripping WeCom's PKCS#7 padding (pad values 1..=32, every pad byte
/// equal to the value): the unpadded length, or the error the gateway must report.
pub fn unpad_model(plain: &[u8]) -> Result<usize, CryptoError> {
    let Some(&last) = plain.last() else {
        return Err(CryptoError::BadLength);
    };
    let n = last as usize;
    if !(1..=32).contains(&n) || n > plain.len() {
        return Err(CryptoError::BadPadding { value: last });
    }
    if plain[plain.len() - n..].iter().any(|&b| b != last) {
        return Err(CryptoError::BadPadding { value: last });
    }
    Ok(plain.len() - n)
}

/// The expected result of `WeComCrypto::decrypt` for a decrypted, still padded plaintext:
/// `random(16) ‖ be32(len) ‖ msg ‖ receive_id` (reference §2.3), checked in the documented order
/// (padding, length field, receive id, UTF-8).
pub fn decrypt_model(padded: &[u8], receive_id: &str) -> Result<String, CryptoError> {
    let len = unpad_model(padded)?;
    let plain = &padded[..len];
    if plain.len() < 20 {
        return Err(CryptoError::BadLength);
    }
    let msg_len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as u64;
    if 20 + msg_len > plain.len() as u64 {
        return Err(CryptoError::BadLength);
    }
    let end = 20 + msg_len as usize;
    if &plain[end..] != receive_id.as_bytes() {
        return Err(CryptoError::ReceiveIdMismatch);
    }
    String::from_utf8(plain[20..end].to_vec()).map_err(|_| CryptoError::BadUtf8)
}

/// WeCom's PKCS#7 padding to 32-byte blocks, written here independently.
pub fn pad32(data: &[u8]) -> Vec<u8> {
    let n = 32 - data.len() % 32;
    let mut out = data.to_vec();
    out.extend(std::iter::repeat_n(n as u8, n));
    out
}

/// Splits a fuzz input into at most `n` fields at NUL bytes (the last field keeps any further
/// NULs). Missing fields are empty. The seed corpora use the same framing.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, &[]);
    out
}

/// A field as text: invalid UTF-8 is replaced, as a lenient HTTP layer would.
pub fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}
