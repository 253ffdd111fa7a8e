//! `wecom-common`: the pieces both WeCom adapters share — the callback crypto (WXBizMsgCrypt),
//! AI Bot media decryption and media limits, a hardened XML reader, a guarded media downloader,
//! and the WeCom error-code table.
//!
//! Depends on `gateway-core` only (plus crates.io crates); no WebSocket or HTTP-server crates.

mod aescbc;
pub mod crypto;
pub mod errors;
pub mod media;
pub mod net;
pub mod xml;

pub use aescbc::{pkcs7_pad, pkcs7_unpad_len, PAD_BLOCK};
pub use crypto::{CryptoError, SignedRequest, WeComCrypto};
pub use errors::{classify, describe, ErrorClass};
pub use media::{decrypt_media, detect_media_type, plan_outbound_media, MediaPlan};
pub use net::{download_capped, guarded_client, DownloadError, GuardedClient};
pub use xml::{parse_envelope, parse_message, Envelope, Message, XmlError};
