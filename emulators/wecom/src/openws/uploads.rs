//! Chunked uploads on the fake openws server (reference `wecom-aibot-official.md` §2.7): `init`
//! checks the declared size, chunk count (at most 100 of 512 KiB) and md5; each chunk must have
//! a 0-based index in range; `finish` reassembles, verifies size and md5, and hands out a media
//! id.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{json, Value};

/// Largest upload chunk.
pub const CHUNK_MAX_BYTES: usize = 512 * 1024;
/// Most chunks per upload.
pub const MAX_CHUNKS: u64 = 100;

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The `init` body.
    pub init: Value,
    /// Chunk indices in arrival order, with their sizes.
    pub chunks: Vec<(u64, usize)>,
    /// The reassembled bytes.
    pub bytes: Vec<u8>,
    /// The media id handed out.
    pub media_id: String,
}

#[derive(Debug)]
struct UploadState {
    init: Value,
    total_chunks: u64,
    chunks: BTreeMap<u64, Vec<u8>>,
    order: Vec<(u64, usize)>,
}

/// Uploads in progress and done.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    open: HashMap<String, UploadState>,
    /// Media ids handed out.
    pub media_ids: HashSet<String>,
    /// Finished uploads, in order.
    pub done: Vec<Upload>,
    seq: u64,
}

impl Uploads {
    pub(crate) fn init(
        &mut self,
        body: &Value,
        violations: &mut Vec<String>,
    ) -> Result<Option<Value>, (i64, String)> {
        let total_chunks = body["total_chunks"].as_u64().unwrap_or(0);
        let total_size = body["total_size"].as_u64().unwrap_or(0);
        let kind = body["type"].as_str().unwrap_or("");
        let ok = (1..=MAX_CHUNKS).contains(&total_chunks)
            && total_size > 0
            && matches!(kind, "image" | "file" | "voice" | "video")
            && body["md5"].as_str().is_some_and(|m| m.len() == 32)
            && body["filename"].as_str().is_some_and(|f| !f.is_empty())
            && total_chunks == total_size.div_ceil(CHUNK_MAX_BYTES as u64);
        if !ok {
            violations.push(format!("bad upload init: {body}"));
            return Err((40009, "invalid upload parameters".into()));
        }
        self.seq += 1;
        let id = format!("upload-{}", self.seq);
        self.open.insert(
            id.clone(),
            UploadState {
                init: body.clone(),
                total_chunks,
                chunks: BTreeMap::new(),
                order: Vec::new(),
            },
        );
        Ok(Some(json!({ "upload_id": id })))
    }

    pub(crate) fn chunk(
        &mut self,
        body: &Value,
        violations: &mut Vec<String>,
    ) -> Result<Option<Value>, (i64, String)> {
        let id = body["upload_id"].as_str().unwrap_or("");
        let index = body["chunk_index"].as_u64();
        let data = body["base64_data"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let Some(up) = self.open.get_mut(id) else {
            violations.push(format!("chunk for unknown upload {id}"));
            return Err((40009, "invalid upload_id".into()));
        };
        match (index, data) {
            (Some(i), Some(d))
                if i < up.total_chunks && d.len() <= CHUNK_MAX_BYTES && !d.is_empty() =>
            {
                up.order.push((i, d.len()));
                up.chunks.insert(i, d);
                Ok(None)
            }
            (i, d) => {
                let v = format!("bad chunk {i:?} ({:?} bytes) for {id}", d.map(|d| d.len()));
                violations.push(v);
                Err((40009, "invalid chunk".into()))
            }
        }
    }

    pub(crate) fn finish(
        &mut self,
        body: &Value,
        violations: &mut Vec<String>,
    ) -> Result<Option<Value>, (i64, String)> {
        let id = body["upload_id"].as_str().unwrap_or("");
        let Some(up) = self.open.remove(id) else {
            violations.push(format!("finish for unknown upload {id}"));
            return Err((40009, "invalid upload_id".into()));
        };
        let complete = (0..up.total_chunks).all(|i| up.chunks.contains_key(&i));
        let bytes: Vec<u8> = up.chunks.values().flatten().copied().collect();
        let md5 = hex::encode(Md5::digest(&bytes));
        if !complete
            || up.init["total_size"].as_u64() != Some(bytes.len() as u64)
            || up.init["md5"].as_str() != Some(md5.as_str())
        {
            violations.push(format!("upload {id} incomplete or md5/size mismatch"));
            return Err((40009, "upload verification failed".into()));
        }
        self.seq += 1;
        let media_id = format!("media-{}", self.seq);
        self.media_ids.insert(media_id.clone());
        let kind = up.init["type"].clone();
        self.done.push(Upload {
            init: up.init,
            chunks: up.order,
            bytes,
            media_id: media_id.clone(),
        });
        Ok(Some(
            json!({ "media_id": media_id, "type": kind, "created_at": "2026-01-01T00:00:00Z" }),
        ))
    }
}
