//! Outbound media (reference `wecom-aibot-official.md` §8): the size and format rules (over
//! 20 MiB is refused with a message to the chat; images and videos over 10 MiB, and voice over
//! 2 MiB or not AMR, go as files with a note), the chunked upload `aibot_upload_media_init` →
//! `_chunk` (512 KiB, 0-based, at most 100) → `_finish` with the whole file's MD5 (§2.7), with
//! the SDK's chunk concurrency (all at once up to 4 chunks, 3 workers up to 10, else 2) and
//! per-chunk retries (3 tries, 500 ms then 1 s apart, a fresh `req_id` each), then the media
//! message, always proactive with `aibot_send_msg`, groups included (§0 item 17: a `req_id` can
//! be used once, and a passive media reply cannot replace the stream).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use gateway_core::{AdapterError, ChatAddress, MediaKind};
use md5::{Digest, Md5};
use serde_json::Value;
use tracing::{info, warn};
use wecom_common::media::{
    plan_outbound_media, MediaPlan, FILE_MAX_BYTES, UPLOAD_CHUNK_BYTES, UPLOAD_MAX_CHUNKS,
};

use crate::adapter::{to_adapter_error, Inner};
use crate::protocol;
use crate::ratelimit::Lane;

/// Waits before the second and third try of a chunk (§2.7).
const CHUNK_RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(1000)];

/// Chunks uploaded at the same time for an upload of `total` chunks, as the SDK does: the
/// server answers "system error" when too many arrive at once (§2.7).
pub fn chunk_workers(total: usize) -> usize {
    match total {
        0..=4 => total.max(1),
        5..=10 => 3,
        _ => 2,
    }
}

/// The upload plan of a payload: `(total_chunks, md5 hex)`.
pub fn upload_plan(bytes: &[u8], chunk: usize) -> (usize, String) {
    (
        bytes.len().div_ceil(chunk.max(1)),
        hex::encode(Md5::digest(bytes)),
    )
}

impl Inner {
    /// Sends the file at `path` as `requested`, following the downgrade and refusal rules.
    pub(crate) async fn send_media(
        &self,
        chat: &ChatAddress,
        path: &Path,
        requested: MediaKind,
    ) -> Result<(), AdapterError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| AdapterError::Io(format!("cannot read {}: {e}", path.display())))?;
        let size = meta.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}.bin", requested.as_str()));
        // Checked before reading, so an oversized file is never loaded.
        if size > FILE_MAX_BYTES {
            let MediaPlan::Refuse { reason } = plan_outbound_media(requested, size, false) else {
                return Err(AdapterError::Unsupported("file too large".into()));
            };
            return self.refuse(chat, &reason).await;
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| AdapterError::Io(format!("cannot read {}: {e}", path.display())))?;
        let (_, mime, _) = crate::media::detect_kind(&bytes);
        let is_amr = mime == "audio/amr"
            || (name.to_ascii_lowercase().ends_with(".amr") && mime == "application/octet-stream");
        let (kind, note) = match plan_outbound_media(requested, bytes.len() as u64, is_amr) {
            MediaPlan::Send(k) => (k, None),
            MediaPlan::Downgrade { to, note } => (to, Some(note)),
            MediaPlan::Refuse { reason } => return self.refuse(chat, &reason).await,
        };
        let media_id = self.upload(kind, &name, &bytes).await?;
        self.deliver_media(chat, kind, &media_id).await?;
        info!(instance = %self.instance, kind = kind.as_str(), bytes = bytes.len(), "Media sent.");
        if let Some(note) = note {
            self.deliver_text(chat, &format!("ℹ️ {note}")).await?;
        }
        Ok(())
    }

    /// Tells the chat why a file was not sent, and fails.
    async fn refuse(&self, chat: &ChatAddress, reason: &str) -> Result<(), AdapterError> {
        warn!(instance = %self.instance, "Refused to send a media file: {reason}");
        if let Err(e) = self.deliver_text(chat, &format!("⚠️ {reason}")).await {
            warn!(instance = %self.instance, error = %e, "Could not tell the chat about a refused file.");
        }
        Err(AdapterError::Unsupported(reason.to_owned()))
    }

    /// Uploads `bytes` in chunks and returns the media id.
    pub(crate) async fn upload(
        &self,
        kind: MediaKind,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, AdapterError> {
        let (total, md5) = upload_plan(bytes, UPLOAD_CHUNK_BYTES);
        if total == 0 || total > UPLOAD_MAX_CHUNKS {
            return Err(AdapterError::Unsupported(format!(
                "cannot upload {} bytes",
                bytes.len()
            )));
        }
        let timeout = self.cfg.request_timeout();
        let init = protocol::upload_init(kind, name, bytes.len() as u64, total, &md5);
        let answer = self
            .request(init, timeout)
            .await
            .map_err(to_adapter_error)?;
        let upload_id = field(&answer.body, "upload_id")?;
        let upload_id = upload_id.as_str();
        stream::iter(0..total)
            .map(|index| {
                let start = index * UPLOAD_CHUNK_BYTES;
                let end = (start + UPLOAD_CHUNK_BYTES).min(bytes.len());
                self.upload_chunk(upload_id, index, &bytes[start..end])
            })
            .buffer_unordered(chunk_workers(total))
            .try_collect::<Vec<()>>()
            .await?;
        // Every chunk confirmed; a failed one leaves the upload unfinished (§2.7).
        let answer = self
            .request(protocol::upload_finish(upload_id), timeout)
            .await
            .map_err(to_adapter_error)?;
        field(&answer.body, "media_id")
    }

    /// One chunk, tried up to three times, each try with a fresh `req_id` (re-sending a chunk
    /// is safe: the server keeps one copy per index).
    async fn upload_chunk(
        &self,
        upload_id: &str,
        index: usize,
        chunk: &[u8],
    ) -> Result<(), AdapterError> {
        let data = base64::engine::general_purpose::STANDARD.encode(chunk);
        let mut tries = 0;
        loop {
            let frame = protocol::upload_chunk(upload_id, index, data.clone());
            match self.request(frame, self.cfg.request_timeout()).await {
                Ok(_) => return Ok(()),
                Err(e) if tries < CHUNK_RETRY_DELAYS.len() => {
                    let delay = CHUNK_RETRY_DELAYS[tries];
                    tries += 1;
                    warn!(instance = %self.instance, index, error = %e, "Upload chunk {index} failed; retrying in {} ms (try {} of 3).", delay.as_millis(), tries + 1);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(to_adapter_error(e)),
            }
        }
    }

    /// Sends an uploaded media item to `chat` with `aibot_send_msg` (DM user id or group chat
    /// id). `Ok` only on WeCom's success answer.
    async fn deliver_media(
        &self,
        chat: &ChatAddress,
        kind: MediaKind,
        media_id: &str,
    ) -> Result<(), AdapterError> {
        let frame = protocol::media_send(&chat.chat_id, kind, media_id);
        self.request_metered(
            &chat.chat_id,
            Lane::Normal,
            frame,
            self.cfg.request_timeout(),
        )
        .await
        .map(|_| ())
        .map_err(to_adapter_error)
    }
}

fn field(body: &Value, key: &str) -> Result<String, AdapterError> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| AdapterError::Io(format!("WeCom's upload answer has no {key}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_workers_follow_the_sdk() {
        let w: Vec<usize> = [1, 4, 5, 10, 11, 100]
            .into_iter()
            .map(chunk_workers)
            .collect();
        assert_eq!(w, [1, 4, 3, 3, 2, 2]);
    }

    #[test]
    fn chunk_counts_follow_the_size() {
        assert_eq!(upload_plan(b"0123456789", 4).0, 3);
        assert_eq!(
            upload_plan(&vec![0; UPLOAD_CHUNK_BYTES], UPLOAD_CHUNK_BYTES).0,
            1
        );
        assert_eq!(
            upload_plan(&vec![0; UPLOAD_CHUNK_BYTES + 1], UPLOAD_CHUNK_BYTES).0,
            2
        );
        assert_eq!(upload_plan(b"abc", 4).1, "900150983cd24fb0d6963f7d28e17f72");
    }
}
