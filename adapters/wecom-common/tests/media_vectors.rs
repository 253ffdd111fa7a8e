//! AI Bot media decryption against `fixtures/wecom-media.json` (made with Python's
//! `cryptography`), plus the media type detection and outbound media plan tables.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gateway_core::MediaKind;
use serde_json::Value;
use wecom_common::crypto::CryptoError;
use wecom_common::media::{
    decrypt_media, detect_media_type, encode_media_key, encrypt_media, kind_from_mime,
    plan_outbound_media, MediaPlan, FILE_MAX_BYTES, IMAGE_MAX_BYTES, VIDEO_MAX_BYTES,
    VOICE_MAX_BYTES,
};

const VECTORS: &str = include_str!("fixtures/wecom-media.json");

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

#[test]
fn every_media_vector_decrypts() {
    let all: Value = serde_json::from_str(VECTORS).unwrap();
    let list = all["vectors"].as_array().unwrap();
    let mut pads = Vec::new();
    let mut styles = Vec::new();
    for v in list {
        let name = field(v, "name");
        let ct = STANDARD.decode(field(v, "ciphertext_b64")).unwrap();
        let expected = STANDARD.decode(field(v, "plaintext_b64")).unwrap();
        let plain =
            decrypt_media(&ct, field(v, "aeskey")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            plain.len() as u64,
            v["plaintext_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(plain, expected, "{name}");
        pads.push(v["pad_value"].as_u64().unwrap());
        styles.push(field(v, "key_style").to_owned());
    }
    // The fixture exercises pad values above 16 (which a 16-byte unpadder rejects), a full
    // 32-byte pad block, and every key style.
    assert!(pads.iter().any(|&p| (17..=31).contains(&p)));
    assert!(pads.contains(&32));
    for style in ["unpadded", "padded", "urlencoded"] {
        assert!(styles.iter().any(|s| s == style), "{style}");
    }
}

#[test]
fn every_pad_value_from_1_to_32_round_trips() {
    let key: [u8; 32] = core::array::from_fn(|i| (i * 11 + 3) as u8);
    let aeskey = encode_media_key(&key);
    assert_eq!(aeskey.len(), 43);
    for len in 0..=64usize {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let ct = encrypt_media(&plain, &key);
        let pad = 32 - len % 32;
        assert_eq!(ct.len(), len + pad, "len {len}");
        assert_eq!(decrypt_media(&ct, &aeskey).unwrap(), plain, "len {len}");
        // The same key URL-encoded and padded also works.
        let encoded = format!("{aeskey}=")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(decrypt_media(&ct, &encoded).unwrap(), plain, "len {len}");
    }
}

#[test]
fn bad_keys_and_ciphertexts_are_rejected() {
    let key = [7u8; 32];
    let aeskey = encode_media_key(&key);
    let ct = encrypt_media(b"hello world", &key);
    assert!(matches!(
        decrypt_media(&ct, ""),
        Err(CryptoError::BadKey(_))
    ));
    assert!(matches!(
        decrypt_media(&ct, "!!!"),
        Err(CryptoError::BadKey(_))
    ));
    let short = STANDARD.encode([7u8; 31]);
    assert!(matches!(decrypt_media(&ct, &short), Err(CryptoError::BadKey(m)) if m.contains("31")));
    assert_eq!(decrypt_media(&[], &aeskey), Err(CryptoError::BadLength));
    assert_eq!(
        decrypt_media(&ct[..20], &aeskey),
        Err(CryptoError::BadLength)
    );
    // A wrong key garbles the padding. (Deterministic for these inputs.)
    let wrong = encode_media_key(&[8u8; 32]);
    assert!(matches!(
        decrypt_media(&ct, &wrong),
        Err(CryptoError::BadPadding { .. })
    ));
}

#[test]
fn media_types_are_detected_by_magic_bytes() {
    use MediaKind::{File, Image, Video, Voice};
    let mut ooxml_docx = b"PK\x03\x04\x14\x00\x00\x00[Content_Types].xml".to_vec();
    ooxml_docx.extend_from_slice(b"PK\x03\x04word/document.xml");
    let ooxml_xlsx = b"PK\x03\x04\x14\x00\x00\x00xl/workbook.xml".to_vec();
    let ooxml_pptx = b"PK\x03\x04\x14\x00\x00\x00ppt/presentation.xml".to_vec();
    let table: Vec<(&str, Vec<u8>, MediaKind, &str, &str)> = vec![
        (
            "png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
            Image,
            "image/png",
            "png",
        ),
        (
            "jpeg",
            vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10],
            Image,
            "image/jpeg",
            "jpg",
        ),
        ("gif87", b"GIF87a..".to_vec(), Image, "image/gif", "gif"),
        ("gif89", b"GIF89a..".to_vec(), Image, "image/gif", "gif"),
        (
            "webp",
            b"RIFF\x24\0\0\0WEBPVP8 ".to_vec(),
            Image,
            "image/webp",
            "webp",
        ),
        (
            "bmp",
            b"BM\x36\0\0\0\0\0\0\0\x36\0\0\0".to_vec(),
            Image,
            "image/bmp",
            "bmp",
        ),
        (
            "tiff",
            b"II*\0\x08\0\0\0".to_vec(),
            Image,
            "image/tiff",
            "tiff",
        ),
        (
            "heic",
            b"\0\0\0\x18ftypheic\0\0\0\0".to_vec(),
            Image,
            "image/heic",
            "heic",
        ),
        (
            "mp4",
            b"\0\0\0\x20ftypisom\0\0\x02\0".to_vec(),
            Video,
            "video/mp4",
            "mp4",
        ),
        (
            "mp4-mp42",
            b"\0\0\0\x18ftypmp42\0\0\0\0".to_vec(),
            Video,
            "video/mp4",
            "mp4",
        ),
        (
            "mov",
            b"\0\0\0\x14ftypqt  \0\0\0\0".to_vec(),
            Video,
            "video/quicktime",
            "mov",
        ),
        (
            "3gp",
            b"\0\0\0\x14ftyp3gp4\0\0\0\0".to_vec(),
            Video,
            "video/3gpp",
            "3gp",
        ),
        (
            "m4a",
            b"\0\0\0\x20ftypM4A \0\0\0\0".to_vec(),
            Voice,
            "audio/mp4",
            "m4a",
        ),
        (
            "webm",
            vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F],
            Video,
            "video/webm",
            "webm",
        ),
        (
            "avi",
            b"RIFF\x24\0\0\0AVI LIST".to_vec(),
            Video,
            "video/x-msvideo",
            "avi",
        ),
        ("amr", b"#!AMR\n\x3c".to_vec(), Voice, "audio/amr", "amr"),
        (
            "amr-wb",
            b"#!AMR-WB\n\x04".to_vec(),
            Voice,
            "audio/amr-wb",
            "awb",
        ),
        (
            "silk",
            b"#!SILK_V3\x0c\0".to_vec(),
            Voice,
            "audio/silk",
            "silk",
        ),
        (
            "silk-wechat",
            b"\x02#!SILK_V3\x0c\0".to_vec(),
            Voice,
            "audio/silk",
            "silk",
        ),
        (
            "mp3-id3",
            b"ID3\x04\0\0\0\0\0\0".to_vec(),
            Voice,
            "audio/mpeg",
            "mp3",
        ),
        (
            "mp3-frame",
            vec![0xFF, 0xFB, 0x90, 0x64],
            Voice,
            "audio/mpeg",
            "mp3",
        ),
        (
            "aac-adts",
            vec![0xFF, 0xF1, 0x50, 0x80],
            Voice,
            "audio/aac",
            "aac",
        ),
        (
            "wav",
            b"RIFF\x24\0\0\0WAVEfmt ".to_vec(),
            Voice,
            "audio/wav",
            "wav",
        ),
        ("ogg", b"OggS\0\x02".to_vec(), Voice, "audio/ogg", "ogg"),
        (
            "flac",
            b"fLaC\0\0\0\x22".to_vec(),
            Voice,
            "audio/flac",
            "flac",
        ),
        (
            "pdf",
            b"%PDF-1.7\n".to_vec(),
            File,
            "application/pdf",
            "pdf",
        ),
        (
            "docx",
            ooxml_docx,
            File,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "docx",
        ),
        (
            "xlsx",
            ooxml_xlsx,
            File,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        (
            "pptx",
            ooxml_pptx,
            File,
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "pptx",
        ),
        (
            "zip",
            b"PK\x03\x04\x14\0\0\0notes.txt".to_vec(),
            File,
            "application/zip",
            "zip",
        ),
        (
            "gzip",
            vec![0x1F, 0x8B, 0x08, 0],
            File,
            "application/gzip",
            "gz",
        ),
        (
            "7z",
            b"7z\xBC\xAF\x27\x1C\0\x04".to_vec(),
            File,
            "application/x-7z-compressed",
            "7z",
        ),
        (
            "rar",
            b"Rar!\x1A\x07\x01\0".to_vec(),
            File,
            "application/vnd.rar",
            "rar",
        ),
        (
            "rtf",
            b"{\\rtf1\\ansi".to_vec(),
            File,
            "application/rtf",
            "rtf",
        ),
        (
            "text",
            b"hello world".to_vec(),
            File,
            "application/octet-stream",
            "bin",
        ),
        ("empty", Vec::new(), File, "application/octet-stream", "bin"),
        (
            "bm-text",
            b"BMW is a car brand".to_vec(),
            File,
            "application/octet-stream",
            "bin",
        ),
        (
            "riff-unknown",
            b"RIFF\x24\0\0\0XXXX".to_vec(),
            File,
            "application/octet-stream",
            "bin",
        ),
    ];
    for (name, bytes, kind, mime, ext) in table {
        assert_eq!(detect_media_type(&bytes), (kind, mime, ext), "{name}");
    }
}

#[test]
fn mime_types_map_to_wecom_kinds() {
    assert_eq!(kind_from_mime("image/png"), MediaKind::Image);
    assert_eq!(kind_from_mime("Video/MP4; codecs=avc1"), MediaKind::Video);
    assert_eq!(kind_from_mime("audio/amr"), MediaKind::Voice);
    assert_eq!(kind_from_mime("application/ogg"), MediaKind::Voice);
    assert_eq!(kind_from_mime("application/pdf"), MediaKind::File);
    assert_eq!(kind_from_mime(""), MediaKind::File);
}

#[test]
fn outbound_media_plan_table() {
    use MediaKind::{File, Image, Video, Voice};
    const MIB: u64 = 1024 * 1024;
    let send = MediaPlan::Send;
    let cases: Vec<(&str, MediaKind, u64, bool, Option<MediaPlan>)> = vec![
        ("small image", Image, 1000, false, Some(send(Image))),
        (
            "image at 10 MiB",
            Image,
            IMAGE_MAX_BYTES,
            false,
            Some(send(Image)),
        ),
        ("image over 10 MiB", Image, IMAGE_MAX_BYTES + 1, false, None),
        (
            "video at 10 MiB",
            Video,
            VIDEO_MAX_BYTES,
            false,
            Some(send(Video)),
        ),
        ("video over 10 MiB", Video, VIDEO_MAX_BYTES + 1, false, None),
        ("amr voice", Voice, MIB, true, Some(send(Voice))),
        (
            "amr voice at 2 MiB",
            Voice,
            VOICE_MAX_BYTES,
            true,
            Some(send(Voice)),
        ),
        (
            "amr voice over 2 MiB",
            Voice,
            VOICE_MAX_BYTES + 1,
            true,
            None,
        ),
        ("mp3 voice", Voice, 1000, false, None),
        (
            "file at 20 MiB",
            File,
            FILE_MAX_BYTES,
            false,
            Some(send(File)),
        ),
    ];
    for (name, kind, size, amr, expected) in cases {
        let plan = plan_outbound_media(kind, size, amr);
        match expected {
            Some(exp) => assert_eq!(plan, exp, "{name}"),
            None => assert!(
                matches!(&plan, MediaPlan::Downgrade { to: File, note } if !note.is_empty()),
                "{name}: {plan:?}"
            ),
        }
    }
    // The non-AMR note says why.
    let MediaPlan::Downgrade { note, .. } = plan_outbound_media(Voice, 1000, false) else {
        panic!("mp3 voice must be downgraded");
    };
    assert!(note.contains("AMR"));
    // Over 20 MiB: refused for every kind, and the reason names the limit.
    for kind in [Image, Video, Voice, File] {
        let plan = plan_outbound_media(kind, FILE_MAX_BYTES + 1, true);
        assert!(
            matches!(&plan, MediaPlan::Refuse { reason } if reason.contains("20 MiB")),
            "{plan:?}"
        );
    }
    assert!(matches!(
        plan_outbound_media(File, 0, false),
        MediaPlan::Refuse { .. }
    ));
}
