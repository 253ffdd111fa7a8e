//! WXBizMsgCrypt: the signature and AES layer of WeCom self-built-app callbacks
//! (wecom-callback reference §1.2 signature, §2.2 key/IV/padding, §2.3 plaintext layout, §3 passive
//! reply envelope, §10/§11 strictness choices).
//!
//! Plaintext layout: `random(16) ‖ be32(len) ‖ msg ‖ receive_id`, padded PKCS#7 to 32-byte
//! blocks, AES-256-CBC with IV = key[..16], standard base64. The signature is the lowercase hex
//! SHA-1 of token, timestamp, nonce and ciphertext, sorted and concatenated.
//!
//! The same layer also serves the emulator (signed callbacks, URL verification requests) so both
//! sides of the tests share one implementation that is checked against independent vectors.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::{Rng as _, RngCore as _};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

use crate::aescbc::AesKey;

/// Length of an EncodingAESKey as shown in the WeCom admin console.
pub const ENCODING_AES_KEY_LEN: usize = 43;

/// Length of the random prefix in the plaintext.
pub const RANDOM_PREFIX_LEN: usize = 16;

/// Offset of the message in the plaintext: the random prefix plus the 4-byte length field.
const MSG_OFFSET: usize = RANDOM_PREFIX_LEN + 4;

/// Characters left unescaped in query values: the RFC 3986 unreserved set. WeCom escapes `+`,
/// `/` and `=` in `echostr`, which this reproduces.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A base64 decoder for 43-character keys: padding optional and non-zero trailing bits allowed.
/// Real EncodingAESKeys usually end in a character with trailing bits set, which the strict
/// standard engine rejects (reference §2.2, "Verified Rust gotcha").
pub(crate) const LENIENT_KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a callback could not be verified, decrypted or configured. Messages never contain key,
/// token or plaintext material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The `msg_signature` does not match token, timestamp, nonce and ciphertext.
    #[error("signature mismatch")]
    BadSignature,
    /// The ciphertext (or key) is not valid base64.
    #[error("ciphertext is not valid base64")]
    BadBase64,
    /// The PKCS#7 padding is invalid: value outside 1..=32 or inconsistent pad bytes.
    #[error("invalid PKCS#7 padding (pad value {value})")]
    BadPadding {
        /// The last byte of the decrypted data.
        value: u8,
    },
    /// The ciphertext is empty or not a multiple of 16 bytes, or the plaintext's length field
    /// points past its end.
    #[error("ciphertext or plaintext length field is invalid")]
    BadLength,
    /// The plaintext was encrypted for another CorpID / receive id.
    #[error("receive id does not match the configured one")]
    ReceiveIdMismatch,
    /// The key (or token) is unusable; the text says what to fix.
    #[error("invalid key: {0}")]
    BadKey(String),
    /// The decrypted message is not UTF-8.
    #[error("decrypted message is not valid UTF-8")]
    BadUtf8,
    /// The request timestamp is not a number or lies outside the accepted window.
    #[error("timestamp is malformed or outside the accepted window")]
    StaleTimestamp,
}

/// A URL-verification request or a callback POST as WeCom would send it, built by
/// [`WeComCrypto::sign_callback`] or [`WeComCrypto::sign_url_verification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The `msg_signature` parameter.
    pub msg_signature: String,
    /// The `timestamp` parameter.
    pub timestamp: String,
    /// The `nonce` parameter.
    pub nonce: String,
    /// The base64 ciphertext (the `Encrypt` element, or the unescaped `echostr`).
    pub encrypt: String,
    /// The query string without the leading `?`, values percent-encoded.
    pub query: String,
    /// The POST body (the outer `<xml>` envelope); empty for URL verification.
    pub body: String,
}

/// The crypto context of one callback app: token, EncodingAESKey and the expected receive id
/// (the CorpID for self-built apps). `Debug` shows only the receive id.
pub struct WeComCrypto {
    token: SecretString,
    key: AesKey,
    receive_id: String,
}

impl fmt::Debug for WeComCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeComCrypto")
            .field("token", &"[redacted]")
            .field("encoding_aes_key", &"[redacted]")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

impl Clone for WeComCrypto {
    fn clone(&self) -> Self {
        Self {
            token: SecretString::from(self.token.expose_secret()),
            key: self.key.clone(),
            receive_id: self.receive_id.clone(),
        }
    }
}

impl WeComCrypto {
    /// Validates the settings and derives the AES key.
    ///
    /// `token` must be non-empty; `encoding_aes_key` must be exactly 43 characters of the
    /// standard base64 alphabet; `receive_id` is the CorpID (it may be empty for senders that
    /// use none).
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        if token.is_empty() {
            return Err(CryptoError::BadKey(
                "the callback Token is empty; copy it from the app's \"Receive Messages\" settings"
                    .into(),
            ));
        }
        let key = decode_encoding_aes_key(encoding_aes_key)?;
        gateway_core::redact::register(token);
        gateway_core::redact::register(encoding_aes_key);
        Ok(Self {
            token: SecretString::from(token),
            key,
            receive_id: receive_id.to_owned(),
        })
    }

    /// The receive id (CorpID) this context accepts.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// The message signature: SHA-1 over token, timestamp, nonce and ciphertext sorted
    /// lexicographically (byte order) and concatenated, as lowercase hex (reference §1.2).
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        let mut parts = [self.token.expose_secret(), timestamp, nonce, encrypt];
        parts.sort_unstable();
        let mut hasher = Sha1::new();
        for part in parts {
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Checks `msg_signature` in constant time.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        let expected = self.signature(timestamp, nonce, encrypt);
        // `ct_eq` on slices of different lengths is false without leaking where they differ;
        // the length itself (always 40) is public.
        if bool::from(expected.as_bytes().ct_eq(msg_signature.as_bytes())) {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// Decrypts a base64 `Encrypt` value (or `echostr`) and returns the message part.
    ///
    /// Checks, in order: base64, block length, padding (1..=32, consistent), the length field
    /// against the plaintext size, the receive id, UTF-8.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        let ciphertext = STANDARD
            .decode(encrypt_b64)
            .map_err(|_| CryptoError::BadBase64)?;
        let plain = self.key.decrypt(&ciphertext)?;
        let (msg, receive_id) = split_plaintext(&plain)?;
        if receive_id != self.receive_id.as_bytes() {
            return Err(CryptoError::ReceiveIdMismatch);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::BadUtf8)
    }

    /// Verifies the signature, then decrypts: the full check for a callback POST.
    pub fn verify_and_decrypt(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<String, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Handles a URL-verification GET: verifies the signature over the (already URL-decoded)
    /// `echostr` and returns the decrypted echo string, which is the exact response body.
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
    ) -> Result<String, CryptoError> {
        self.verify_and_decrypt(msg_signature, timestamp, nonce, echostr)
    }

    /// Encrypts `msg` with a random prefix from the thread-local CSPRNG.
    pub fn encrypt(&self, msg: &str) -> String {
        let mut random = [0u8; RANDOM_PREFIX_LEN];
        rand::rng().fill_bytes(&mut random);
        self.encrypt_with_random(msg, &random)
    }

    /// Encrypts `msg` with the given random prefix (deterministic; for test vectors).
    pub fn encrypt_with_random(&self, msg: &str, random: &[u8; RANDOM_PREFIX_LEN]) -> String {
        let msg = msg.as_bytes();
        let mut plain = Vec::with_capacity(MSG_OFFSET + msg.len() + self.receive_id.len());
        plain.extend_from_slice(random);
        // A message longer than 4 GiB cannot be represented in the length field; callers pass
        // bodies far below that (64 KiB caps), so saturate instead of panicking.
        plain.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(self.receive_id.as_bytes());
        STANDARD.encode(self.key.encrypt(&plain))
    }

    /// Builds the encrypted passive-reply envelope (reference §3) with a CSPRNG prefix.
    pub fn reply_envelope(&self, msg: &str, timestamp: &str, nonce: &str) -> String {
        let encrypt = self.encrypt(msg);
        self.envelope_for(&encrypt, timestamp, nonce)
    }

    /// [`reply_envelope`](Self::reply_envelope) with a fixed random prefix.
    pub fn reply_envelope_with_random(
        &self,
        msg: &str,
        timestamp: &str,
        nonce: &str,
        random: &[u8; RANDOM_PREFIX_LEN],
    ) -> String {
        let encrypt = self.encrypt_with_random(msg, random);
        self.envelope_for(&encrypt, timestamp, nonce)
    }

    /// The envelope layout wechatpy emits: `Encrypt`, `MsgSignature`, `TimeStamp`, `Nonce`
    /// under `<xml>`, one element per line, CDATA for the string fields.
    fn envelope_for(&self, encrypt: &str, timestamp: &str, nonce: &str) -> String {
        let signature = self.signature(timestamp, nonce, encrypt);
        format!(
            "<xml>\n<Encrypt>{}</Encrypt>\n<MsgSignature>{}</MsgSignature>\n\
             <TimeStamp>{}</TimeStamp>\n<Nonce>{}</Nonce>\n</xml>",
            cdata(encrypt),
            cdata(&signature),
            escape_text(timestamp),
            cdata(nonce),
        )
    }

    /// Builds a signed callback POST carrying `inner_xml`, as WeCom sends it (reference §2.1):
    /// the outer envelope names this context's receive id and `agent_id`. Used by the emulator.
    pub fn sign_callback(
        &self,
        inner_xml: &str,
        agent_id: &str,
        timestamp: &str,
        nonce: &str,
    ) -> SignedRequest {
        let encrypt = self.encrypt(inner_xml);
        self.signed_post(encrypt, agent_id, timestamp, nonce)
    }

    /// [`sign_callback`](Self::sign_callback) with a fixed random prefix.
    pub fn sign_callback_with_random(
        &self,
        inner_xml: &str,
        agent_id: &str,
        timestamp: &str,
        nonce: &str,
        random: &[u8; RANDOM_PREFIX_LEN],
    ) -> SignedRequest {
        let encrypt = self.encrypt_with_random(inner_xml, random);
        self.signed_post(encrypt, agent_id, timestamp, nonce)
    }

    fn signed_post(
        &self,
        encrypt: String,
        agent_id: &str,
        timestamp: &str,
        nonce: &str,
    ) -> SignedRequest {
        let msg_signature = self.signature(timestamp, nonce, &encrypt);
        let body = format!(
            "<xml><ToUserName>{}</ToUserName><AgentID>{}</AgentID><Encrypt>{}</Encrypt></xml>",
            cdata(&self.receive_id),
            cdata(agent_id),
            cdata(&encrypt),
        );
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            encode_query_value(&msg_signature),
            encode_query_value(timestamp),
            encode_query_value(nonce),
        );
        SignedRequest {
            msg_signature,
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            encrypt,
            query,
            body,
        }
    }

    /// Builds a signed URL-verification GET whose `echostr` decrypts to `echo` (reference §1.1).
    pub fn sign_url_verification(&self, echo: &str, timestamp: &str, nonce: &str) -> SignedRequest {
        let encrypt = self.encrypt(echo);
        self.signed_get(encrypt, timestamp, nonce)
    }

    /// [`sign_url_verification`](Self::sign_url_verification) with a fixed random prefix.
    pub fn sign_url_verification_with_random(
        &self,
        echo: &str,
        timestamp: &str,
        nonce: &str,
        random: &[u8; RANDOM_PREFIX_LEN],
    ) -> SignedRequest {
        let encrypt = self.encrypt_with_random(echo, random);
        self.signed_get(encrypt, timestamp, nonce)
    }

    fn signed_get(&self, encrypt: String, timestamp: &str, nonce: &str) -> SignedRequest {
        let msg_signature = self.signature(timestamp, nonce, &encrypt);
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}&echostr={}",
            encode_query_value(&msg_signature),
            encode_query_value(timestamp),
            encode_query_value(nonce),
            encode_query_value(&encrypt),
        );
        SignedRequest {
            msg_signature,
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            encrypt,
            query,
            body: String::new(),
        }
    }
}

/// Validates a 43-character EncodingAESKey and decodes it to the 32-byte AES key.
fn decode_encoding_aes_key(encoding_aes_key: &str) -> Result<AesKey, CryptoError> {
    let len = encoding_aes_key.chars().count();
    if len != ENCODING_AES_KEY_LEN {
        return Err(CryptoError::BadKey(format!(
            "the EncodingAESKey must be exactly {ENCODING_AES_KEY_LEN} characters but has {len}; \
             copy it again from the app's \"Receive Messages\" settings (without a trailing '=')"
        )));
    }
    if let Some(pos) = encoding_aes_key
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
    {
        return Err(CryptoError::BadKey(format!(
            "the EncodingAESKey has a character outside A-Z, a-z, 0-9, '+', '/' at position {}",
            pos + 1
        )));
    }
    let bytes = LENIENT_KEY_B64
        .decode(encoding_aes_key)
        .map_err(|_| CryptoError::BadKey("the EncodingAESKey is not valid base64".into()))?;
    AesKey::from_slice(&bytes).ok_or_else(|| {
        CryptoError::BadKey("the EncodingAESKey does not decode to a 32-byte AES key".into())
    })
}

/// Splits a decrypted, unpadded plaintext into message and receive id, bounds-checking the
/// length field (hermes does not; a short plaintext would otherwise yield a truncated message).
fn split_plaintext(plain: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let len_field: [u8; 4] = plain
        .get(RANDOM_PREFIX_LEN..MSG_OFFSET)
        .and_then(|s| s.try_into().ok())
        .ok_or(CryptoError::BadLength)?;
    let msg_len =
        usize::try_from(u32::from_be_bytes(len_field)).map_err(|_| CryptoError::BadLength)?;
    let msg_end = MSG_OFFSET
        .checked_add(msg_len)
        .ok_or(CryptoError::BadLength)?;
    let msg = plain
        .get(MSG_OFFSET..msg_end)
        .ok_or(CryptoError::BadLength)?;
    Ok((msg, &plain[msg_end..]))
}

/// A fresh 10-character nonce from `[0-9A-Za-z]`, drawn from the thread-local CSPRNG (the form
/// hermes uses for passive replies).
pub fn random_nonce() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

/// Checks a callback `timestamp` (decimal Unix seconds) against `now_unix` with a symmetric
/// window, to refuse replays of captured requests. Baseline hermes has no such check; WeCom
/// retries a callback for about 15 s, so windows of a few minutes are safe.
pub fn check_timestamp(
    timestamp: &str,
    now_unix: i64,
    window_secs: i64,
) -> Result<(), CryptoError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| CryptoError::StaleTimestamp)?;
    if ts.abs_diff(now_unix) > window_secs.unsigned_abs() {
        return Err(CryptoError::StaleTimestamp);
    }
    Ok(())
}

/// Percent-encodes a query value, leaving only RFC 3986 unreserved characters.
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Wraps `s` in CDATA, splitting any `]]>` so the section cannot be terminated early.
pub(crate) fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// Escapes text content for XML.
pub(crate) fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn key_derivation_tolerates_trailing_bits() {
        // Fixture F and the wechatpy key both end in a character with non-zero trailing bits.
        let f = WeComCrypto::new("t", KEY, "ww1").unwrap();
        assert_eq!(
            hex::encode(f.key.bytes()),
            "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
        );
        let w = WeComCrypto::new("t", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "x").unwrap();
        assert_eq!(
            hex::encode(w.key.bytes()),
            "916c4f115d94103cb15a998f74a0b71787603c398ebdf297d471a71140d2d5a4"
        );
    }

    #[test]
    fn debug_output_hides_token_and_key() {
        let c = WeComCrypto::new("super-secret-token", KEY, "ww1").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("super-secret-token"));
        assert!(!dbg.contains("abcdefghij"));
        assert!(dbg.contains("ww1"));
    }

    #[test]
    fn key_validation_says_what_to_fix() {
        let short = WeComCrypto::new("t", "short", "ww1").unwrap_err();
        assert!(matches!(&short, CryptoError::BadKey(m) if m.contains("43") && m.contains("5")));
        let bad_char = WeComCrypto::new("t", &format!("{}-", &KEY[..42]), "ww1").unwrap_err();
        assert!(matches!(&bad_char, CryptoError::BadKey(m) if m.contains("position 43")));
        let padded = WeComCrypto::new("t", &format!("{}=", &KEY[..42]), "ww1").unwrap_err();
        assert!(matches!(padded, CryptoError::BadKey(_)));
        let empty_token = WeComCrypto::new("", KEY, "ww1").unwrap_err();
        assert!(matches!(&empty_token, CryptoError::BadKey(m) if m.contains("Token")));
        // Error texts never echo the key material.
        assert!(!format!("{bad_char}").contains("abcdefghij"));
    }

    #[test]
    fn length_field_is_bounds_checked() {
        let mut plain = vec![b'r'; 16];
        plain.extend_from_slice(&100u32.to_be_bytes());
        plain.extend_from_slice(b"short");
        assert_eq!(split_plaintext(&plain), Err(CryptoError::BadLength));
        assert_eq!(split_plaintext(&plain[..18]), Err(CryptoError::BadLength));
        let mut max = vec![0u8; 16];
        max.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(split_plaintext(&max), Err(CryptoError::BadLength));
    }

    #[test]
    fn timestamps_outside_the_window_are_stale() {
        assert!(check_timestamp("1000", 1000, 300).is_ok());
        assert!(check_timestamp("700", 1000, 300).is_ok());
        assert_eq!(
            check_timestamp("699", 1000, 300),
            Err(CryptoError::StaleTimestamp)
        );
        assert_eq!(
            check_timestamp("1301", 1000, 300),
            Err(CryptoError::StaleTimestamp)
        );
        assert_eq!(
            check_timestamp("abc", 1000, 300),
            Err(CryptoError::StaleTimestamp)
        );
    }

    #[test]
    fn nonces_are_alphanumeric_and_vary() {
        let a = random_nonce();
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_nonce());
    }

    #[test]
    fn cdata_cannot_be_broken_out_of() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
    }
}
