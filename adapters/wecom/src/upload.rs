//! Outbound media: the size and format rules (reference `wecom-aibot.md` §4.6: over 20 MiB is
//! refused with a message to the chat; images and videos over 10 MiB, and voice over 2 MiB or
//! not AMR, go as files with a note), the chunked upload `aibot_upload_media_init` → `_chunk`
//! (512 KiB, 0-based, at most 100) → `_finish` with the whole file's MD5 (§4.4), then the media
//! message: a passive reply on the chat's fresh `req_id` unless that `req_id` owns an open
//! stream (§9 item 14), else a proactive send (§4.5).

use std::path::Path;

use base64::Engine as _;
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
use crate::send::Via;
use crate::session::ReqError;

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
            self.deliver_text(chat, &format!("ℹ️ {note}"), Via::default())
                .await?;
        }
        Ok(())
    }

    /// Tells the chat why a file was not sent, and fails.
    async fn refuse(&self, chat: &ChatAddress, reason: &str) -> Result<(), AdapterError> {
        warn!(instance = %self.instance, "Refused to send a media file: {reason}");
        if let Err(e) = self
            .deliver_text(chat, &format!("⚠️ {reason}"), Via::default())
            .await
        {
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
        for (index, chunk) in bytes.chunks(UPLOAD_CHUNK_BYTES).enumerate() {
            let data = base64::engine::general_purpose::STANDARD.encode(chunk);
            let frame = protocol::upload_chunk(&upload_id, index, data);
            self.request(frame, timeout)
                .await
                .map_err(to_adapter_error)?;
        }
        let answer = self
            .request(protocol::upload_finish(&upload_id), timeout)
            .await
            .map_err(to_adapter_error)?;
        field(&answer.body, "media_id")
    }

    /// Sends an uploaded media item to `chat`.
    async fn deliver_media(
        &self,
        chat: &ChatAddress,
        kind: MediaKind,
        media_id: &str,
    ) -> Result<(), AdapterError> {
        let timeout = self.cfg.request_timeout();
        if let Some(req_id) = self.fresh_route(chat).filter(|r| !self.owns_open_stream(r)) {
            let frame = protocol::media_reply(&req_id, kind, media_id);
            match self
                .request_metered(&chat.chat_id, Lane::Normal, frame, timeout)
                .await
            {
                Ok(_) | Err(ReqError::Timeout) => return Ok(()),
                Err(e) => {
                    warn!(instance = %self.instance, error = %e, "Passive media reply failed; sending proactively.")
                }
            }
        }
        let frame = protocol::media_send(&chat.chat_id, kind, media_id);
        match self
            .request_metered(&chat.chat_id, Lane::Normal, frame, timeout)
            .await
        {
            Ok(_) | Err(ReqError::Timeout) => Ok(()),
            Err(e) => Err(to_adapter_error(e)),
        }
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
