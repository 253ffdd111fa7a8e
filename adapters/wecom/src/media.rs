//! Inbound media: download at once (URLs expire in about five minutes), stream with a size cap
//! through the SSRF-guarded client, decrypt (reference `wecom-aibot-official.md` §7: AES-256-CBC, IV = key[..16], 32-byte PKCS#7), detect the type by
//! magic bytes, store under the instance's data dir, and delete old files by age (§3.5).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use gateway_core::{Attachment, MediaKind};
use tracing::{debug, info, warn};
use wecom_common::media::{decrypt_media, detect_media_type};
use wecom_common::net::{guarded_client, DownloadError, GuardedClient};

use crate::inbound::MediaRef;

/// How long one download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a media item could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The download failed (blocked host, too large, HTTP error, timeout).
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The inline base64 is not valid.
    #[error("inline media is not valid base64")]
    BadBase64,
    /// Larger than the cap.
    #[error("media exceeds the {0}-byte limit")]
    TooLarge(u64),
    /// Decryption failed.
    #[error("decryption failed: {0}")]
    Decrypt(String),
    /// Neither a URL nor inline data.
    #[error("the media reference has no URL and no data")]
    Empty,
    /// Writing the file failed.
    #[error("storing media failed: {0}")]
    Io(String),
}

/// Downloads and stores media for one instance.
#[derive(Debug, Clone)]
pub struct MediaStore {
    client: GuardedClient,
    dir: PathBuf,
    max_bytes: u64,
    retention: Duration,
}

impl MediaStore {
    /// A store writing under `<data_dir>/media`.
    pub fn new(
        data_dir: &Path,
        allow_private: bool,
        max_bytes: u64,
        retention: Duration,
    ) -> Result<Self, MediaError> {
        let client = guarded_client(allow_private, DOWNLOAD_TIMEOUT)?;
        Ok(Self {
            client,
            dir: data_dir.join("media"),
            max_bytes,
            retention,
        })
    }

    /// Where files go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fetches, decrypts and stores one item. `msgid` and `index` make the file name unique.
    pub async fn fetch(
        &self,
        r: &MediaRef,
        msgid: &str,
        index: usize,
    ) -> Result<Attachment, MediaError> {
        let (raw, header_type, header_name) = if let Some(b64) = &r.base64 {
            // Data URLs carry a `data:<mime>;base64,` prefix.
            let data = b64.split_once(',').map_or(b64.as_str(), |(_, d)| d);
            if (data.len() as u64) / 4 * 3 > self.max_bytes + 3 {
                return Err(MediaError::TooLarge(self.max_bytes));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(data.trim().trim_end_matches('='))
                })
                .map_err(|_| MediaError::BadBase64)?;
            (bytes, None, None)
        } else if let Some(url) = &r.url {
            let d = self.client.fetch_capped(url, self.max_bytes).await?;
            (d.bytes, d.content_type, d.filename)
        } else {
            return Err(MediaError::Empty);
        };
        if raw.len() as u64 > self.max_bytes {
            return Err(MediaError::TooLarge(self.max_bytes));
        }
        let plain = match r.aeskey.as_deref().filter(|k| !k.is_empty()) {
            Some(key) if r.base64.is_none() => {
                decrypt_media(&raw, key).map_err(|e| MediaError::Decrypt(e.to_string()))?
            }
            _ => raw,
        };
        let (detected_kind, detected_mime, ext) = detect_media_type(&plain);
        let mime = if detected_mime == "application/octet-stream" {
            header_type
                .map(|t| {
                    t.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .filter(|t| !t.is_empty() && t != "application/octet-stream")
                .unwrap_or_else(|| detected_mime.to_owned())
        } else {
            detected_mime.to_owned()
        };
        // The message type decides the kind, except that a "file" holding a video stays a file
        // and an image declared as a file stays a file: the user sent it as a document.
        let kind = r.kind;
        let mut name = r
            .name
            .as_deref()
            .or(header_name.as_deref())
            .map(sanitize_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}-{}.{ext}", kind.as_str(), short(msgid)));
        if !name.contains('.') && ext != "bin" {
            name = format!("{name}.{ext}");
        }
        if detected_kind != kind {
            debug!(
                declared = kind.as_str(),
                detected = detected_kind.as_str(),
                "Media type differs from the message type."
            );
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
        let path = self.dir.join(format!("{}-{index}-{name}", short(msgid)));
        tokio::fs::write(&path, &plain)
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
        Ok(Attachment {
            kind,
            path,
            name,
            mime,
            size: plain.len() as u64,
        })
    }

    /// Deletes stored files older than the retention; returns how many.
    pub async fn cleanup(&self) -> usize {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else {
            return 0;
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > self.retention);
            if meta.is_file() && old {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => removed += 1,
                    Err(e) => warn!(error = %e, "Could not delete an old media file."),
                }
            }
        }
        if removed > 0 {
            info!(removed, "Deleted old media files.");
        }
        removed
    }
}

/// A file-system-safe version of a platform-supplied name: last path component, no control or
/// separator characters, at most 100 characters.
fn sanitize_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
        })
        .take(100)
        .collect();
    cleaned.trim().trim_start_matches('.').to_owned()
}

/// The first 24 safe characters of an id, for file names.
fn short(id: &str) -> String {
    let s: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(24)
        .collect();
    if s.is_empty() {
        "media".into()
    } else {
        s
    }
}

/// The kind of an outbound file by content: magic bytes first.
pub fn detect_kind(bytes: &[u8]) -> (MediaKind, &'static str, &'static str) {
    detect_media_type(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("a\\b\\c?.pdf"), "c.pdf");
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(short("msg/../1"), "msg1");
    }

    #[tokio::test]
    async fn inline_base64_and_data_urls_are_stored_with_detected_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path(), true, 1024, Duration::from_secs(3600)).unwrap();
        let png = b"\x89PNG\r\n\x1a\n rest of a png";
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let r = MediaRef {
            kind: MediaKind::Image,
            url: None,
            aeskey: None,
            base64: Some(format!("data:image/png;base64,{b64}")),
            name: None,
        };
        let a = store.fetch(&r, "m1", 0).await.unwrap();
        assert_eq!((a.mime.as_str(), a.size), ("image/png", png.len() as u64));
        assert!(a.name.ends_with(".png"));
        assert_eq!(std::fs::read(&a.path).unwrap(), png);
        let big = MediaRef {
            base64: Some("A".repeat(4000)),
            ..r
        };
        assert!(matches!(
            store.fetch(&big, "m2", 0).await,
            Err(MediaError::TooLarge(1024))
        ));
        assert_eq!(store.cleanup().await, 0, "fresh files stay");
    }

    #[tokio::test]
    async fn cleanup_deletes_files_older_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path(), true, 1024, Duration::from_secs(3600)).unwrap();
        std::fs::create_dir_all(store.dir()).unwrap();
        let old = store.dir().join("old.bin");
        let new = store.dir().join("new.bin");
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&new, b"y").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert_eq!(store.cleanup().await, 1);
        assert!(!old.exists() && new.exists());
    }
}
