//! AI Bot media decryption (wecom-aibot reference §5), media type detection by magic bytes, and
//! the outbound media limits of both WeCom APIs (aibot §4.6, §6.5; callback §5.3, §5.6).
//!
//! Inbound media of the AI Bot arrives AES-256-CBC encrypted with a per-URL `aeskey` (unpadded,
//! sometimes URL-encoded base64 of 32 bytes), IV = key[..16], PKCS#7 on 32-byte blocks.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use gateway_core::MediaKind;

use crate::aescbc::AesKey;
use crate::crypto::{CryptoError, LENIENT_KEY_B64};

const MIB: u64 = 1024 * 1024;

/// Largest image sent as an image (10 MiB); larger ones go as files. AI Bot §4.6 and callback
/// `media/upload` (§5.3: "image ≤10 MB").
pub const IMAGE_MAX_BYTES: u64 = 10 * MIB;

/// Largest video sent as a video (10 MiB); larger ones go as files.
pub const VIDEO_MAX_BYTES: u64 = 10 * MIB;

/// Largest voice note sent as a voice message (2 MiB, AMR only); others go as files.
pub const VOICE_MAX_BYTES: u64 = 2 * MIB;

/// Absolute limit for any media (20 MiB): larger payloads are refused, not downgraded.
pub const FILE_MAX_BYTES: u64 = 20 * MIB;

/// Cap for inbound media downloads (20 MiB), aibot §3.5.
pub const DOWNLOAD_MAX_BYTES: u64 = FILE_MAX_BYTES;

/// AI Bot chunked upload: bytes per `aibot_upload_media_chunk` (512 KiB), aibot §4.4.
pub const UPLOAD_CHUNK_BYTES: usize = 512 * 1024;

/// AI Bot chunked upload: most chunks per upload, aibot §4.4.
pub const UPLOAD_MAX_CHUNKS: usize = 100;

/// Self-built-app `message/send` text and markdown limit: 2048 UTF-8 bytes; WeCom truncates
/// longer content (callback §5.6).
pub const CALLBACK_TEXT_MAX_BYTES: usize = 2048;

/// AI Bot markdown message limit in bytes. hermes caps at 4000 code points and live tests found
/// a 4096-byte server cap (aibot §4.2, §6.5); 4000 bytes satisfies both.
pub const AIBOT_TEXT_MAX_BYTES: usize = 4000;

/// AI Bot stream frame content limit: 20480 UTF-8 bytes (aibot §4.3).
pub const STREAM_FRAME_MAX_BYTES: usize = 20480;

/// What to do with an outbound media item, from [`plan_outbound_media`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPlan {
    /// Send as the requested kind.
    Send(MediaKind),
    /// Send as another kind (always a file) and tell the user why with `note`.
    Downgrade {
        /// The kind to send as.
        to: MediaKind,
        /// A short notice for the user.
        note: String,
    },
    /// Do not send; `reason` says why (for the user and the logs).
    Refuse {
        /// Why it was refused.
        reason: String,
    },
}

/// Decides how to send `size` bytes of `kind` (aibot §4.6, same order of checks):
/// empty or over 20 MiB → refuse; image or video over 10 MiB → file; voice that is not AMR or is
/// over 2 MiB → file; otherwise send as is. Limits are inclusive (exactly 10 MiB is an image).
pub fn plan_outbound_media(kind: MediaKind, size: u64, is_amr: bool) -> MediaPlan {
    if size == 0 {
        return MediaPlan::Refuse {
            reason: "The file is empty.".into(),
        };
    }
    if size > FILE_MAX_BYTES {
        return MediaPlan::Refuse {
            reason: format!(
                "The file is {} but WeCom accepts at most 20 MiB; compress it or send a smaller one.",
                human_size(size)
            ),
        };
    }
    let downgrade = |note: String| MediaPlan::Downgrade {
        to: MediaKind::File,
        note,
    };
    match kind {
        MediaKind::Image if size > IMAGE_MAX_BYTES => downgrade(format!(
            "The image is {} (over WeCom's 10 MiB image limit), so it was sent as a file.",
            human_size(size)
        )),
        MediaKind::Video if size > VIDEO_MAX_BYTES => downgrade(format!(
            "The video is {} (over WeCom's 10 MiB video limit), so it was sent as a file.",
            human_size(size)
        )),
        MediaKind::Voice if !is_amr => downgrade(
            "WeCom plays only AMR voice notes, so the audio was sent as a file.".to_owned(),
        ),
        MediaKind::Voice if size > VOICE_MAX_BYTES => downgrade(format!(
            "The voice note is {} (over WeCom's 2 MiB voice limit), so it was sent as a file.",
            human_size(size)
        )),
        other => MediaPlan::Send(other),
    }
}

/// `12.34 MiB` style sizes for notices.
fn human_size(size: u64) -> String {
    // Display only; f64 precision is ample for sizes below 2^53.
    format!("{:.2} MiB", size as f64 / MIB as f64)
}

/// Decrypts AI Bot media with the `aeskey` of its media object.
///
/// The key may be URL-encoded (`%2B`, `%2F`, `%3D`), padded or not, and must decode to exactly
/// 32 bytes. Errors: [`CryptoError::BadKey`] for an unusable key, [`CryptoError::BadLength`] for
/// an empty or misaligned ciphertext, [`CryptoError::BadPadding`] for bad padding.
pub fn decrypt_media(ciphertext: &[u8], aeskey: &str) -> Result<Vec<u8>, CryptoError> {
    let key = decode_media_key(aeskey)?;
    key.decrypt(ciphertext)
}

/// Encrypts `plain` the way WeCom encrypts AI Bot media (for the emulator).
pub fn encrypt_media(plain: &[u8], key: &[u8; 32]) -> Vec<u8> {
    AesKey::new(*key).encrypt(plain)
}

/// The `aeskey` string WeCom would send for `key`: unpadded standard base64.
pub fn encode_media_key(key: &[u8; 32]) -> String {
    STANDARD_NO_PAD.encode(key)
}

fn decode_media_key(aeskey: &str) -> Result<AesKey, CryptoError> {
    let decoded = percent_encoding::percent_decode_str(aeskey.trim())
        .decode_utf8()
        .map_err(|_| CryptoError::BadKey("the media aeskey is not valid UTF-8".into()))?;
    if decoded.is_empty() {
        return Err(CryptoError::BadKey("the media aeskey is empty".into()));
    }
    // URL-safe characters are mapped to the standard alphabet in case a proxy rewrote them.
    let standard: String = decoded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let bytes = LENIENT_KEY_B64
        .decode(standard.trim_end_matches('='))
        .map_err(|_| CryptoError::BadKey("the media aeskey is not valid base64".into()))?;
    AesKey::from_slice(&bytes).ok_or_else(|| {
        CryptoError::BadKey(format!(
            "the media aeskey decodes to {} bytes, not 32",
            bytes.len()
        ))
    })
}

/// The media kind WeCom uses for a MIME type (aibot §4.6): `image/*` → image, `video/*` →
/// video, `audio/*` and `application/ogg` → voice, everything else → file. Parameters and case
/// are ignored.
pub fn kind_from_mime(mime: &str) -> MediaKind {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("image/") {
        MediaKind::Image
    } else if essence.starts_with("video/") {
        MediaKind::Video
    } else if essence.starts_with("audio/") || essence == "application/ogg" {
        MediaKind::Voice
    } else {
        MediaKind::File
    }
}

/// Detects the media type from magic bytes: `(kind, mime, extension)`.
///
/// Recognised: PNG, JPEG, GIF, WebP, BMP, TIFF, HEIC (images); MP4, MOV, 3GP, WebM/MKV, AVI,
/// FLV (videos); AMR, AMR-WB, SILK, MP3, M4A, AAC, WAV, OGG, FLAC (voice); PDF, DOCX, XLSX, PPTX,
/// ZIP, legacy Office (OLE2), RTF, GZIP, 7z, RAR (files). Anything else is
/// `(File, "application/octet-stream", "bin")`.
pub fn detect_media_type(bytes: &[u8]) -> (MediaKind, &'static str, &'static str) {
    use MediaKind::{File, Image, Video, Voice};
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| {
        bytes
            .get(offset..offset + magic.len())
            .is_some_and(|s| s == magic)
    };

    if starts(b"\x89PNG\r\n\x1a\n") {
        return (Image, "image/png", "png");
    }
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return (Image, "image/jpeg", "jpg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return (Image, "image/gif", "gif");
    }
    if starts(b"RIFF") && at(8, b"WEBP") {
        return (Image, "image/webp", "webp");
    }
    if starts(b"RIFF") && at(8, b"WAVE") {
        return (Voice, "audio/wav", "wav");
    }
    if starts(b"RIFF") && at(8, b"AVI ") {
        return (Video, "video/x-msvideo", "avi");
    }
    // "BM" alone is too weak; also require the two reserved words of the header to be zero.
    if starts(b"BM") && bytes.len() >= 14 && at(6, &[0, 0, 0, 0]) {
        return (Image, "image/bmp", "bmp");
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return (Image, "image/tiff", "tiff");
    }
    if at(4, b"ftyp") {
        return detect_iso_media(bytes.get(8..12).unwrap_or(&[]));
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return (Video, "video/webm", "webm");
    }
    if starts(b"FLV\x01") {
        return (Video, "video/x-flv", "flv");
    }
    if starts(b"#!AMR-WB\n") {
        return (Voice, "audio/amr-wb", "awb");
    }
    if starts(b"#!AMR\n") {
        return (Voice, "audio/amr", "amr");
    }
    // SILK, optionally with the 0x02 byte WeChat/WeCom clients put in front.
    if starts(b"#!SILK_V3") || starts(b"\x02#!SILK_V3") {
        return (Voice, "audio/silk", "silk");
    }
    if starts(b"ID3") {
        return (Voice, "audio/mpeg", "mp3");
    }
    if starts(b"OggS") {
        return (Voice, "audio/ogg", "ogg");
    }
    if starts(b"fLaC") {
        return (Voice, "audio/flac", "flac");
    }
    if let [0xFF, second, ..] = bytes {
        // MPEG audio frame sync (11 bits). Layer bits 00 with sync are ADTS AAC, the rest MP3.
        if second & 0xE0 == 0xE0 {
            if second & 0x06 == 0 {
                return (Voice, "audio/aac", "aac");
            }
            return (Voice, "audio/mpeg", "mp3");
        }
    }
    if starts(b"%PDF-") {
        return (File, "application/pdf", "pdf");
    }
    if starts(b"PK\x03\x04") {
        return detect_zip(bytes);
    }
    if starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        // Legacy .doc/.xls/.ppt share this container; the generic type is the honest answer.
        return (File, "application/x-ole-storage", "bin");
    }
    if starts(b"{\\rtf") {
        return (File, "application/rtf", "rtf");
    }
    if starts(&[0x1F, 0x8B]) {
        return (File, "application/gzip", "gz");
    }
    if starts(b"7z\xBC\xAF\x27\x1C") {
        return (File, "application/x-7z-compressed", "7z");
    }
    if starts(b"Rar!\x1A\x07") {
        return (File, "application/vnd.rar", "rar");
    }
    (File, "application/octet-stream", "bin")
}

/// ISO base media files (`ftyp` box): the major brand tells video from audio.
fn detect_iso_media(brand: &[u8]) -> (MediaKind, &'static str, &'static str) {
    match brand {
        b"qt  " => (MediaKind::Video, "video/quicktime", "mov"),
        b"M4A " | b"M4B " => (MediaKind::Voice, "audio/mp4", "m4a"),
        b"heic" | b"heix" | b"mif1" | b"msf1" => (MediaKind::Image, "image/heic", "heic"),
        [b'3', b'g', ..] => (MediaKind::Video, "video/3gpp", "3gp"),
        _ => (MediaKind::Video, "video/mp4", "mp4"),
    }
}

/// ZIP archives: Office Open XML documents are ZIPs whose entries live under `word/`, `xl/` or
/// `ppt/`; the entry names appear in the local headers and the central directory.
fn detect_zip(bytes: &[u8]) -> (MediaKind, &'static str, &'static str) {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if contains(b"word/") {
        (
            MediaKind::File,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "docx",
        )
    } else if contains(b"xl/") {
        (
            MediaKind::File,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        )
    } else if contains(b"ppt/") {
        (
            MediaKind::File,
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "pptx",
        )
    } else {
        (MediaKind::File, "application/zip", "zip")
    }
}
