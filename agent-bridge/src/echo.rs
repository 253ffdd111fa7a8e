//! The echo backend: answers `echo: <text>` and one line per attachment,
//! `[<kind> <name> <bytes> bytes sha256:<first 16 hex>]`, computed from the file's bytes, so a
//! first run needs no agent service and an end-to-end test can prove that media arrived intact
//! and decrypted. The answer is streamed in a few pieces to exercise streaming delivery.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::EchoConfig;
use crate::driver::spawn_turn;
use crate::{AgentBackend, AgentError, AgentStream, AgentTurn};

/// How many pieces the answer is streamed in (fewer for very short answers).
const PIECES: usize = 4;
/// Read size while hashing an attachment: files are hashed as they are read, never held whole.
const HASH_CHUNK: usize = 64 * 1024;

/// The echo backend.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    delay: Duration,
    timeout: Duration,
}

impl EchoBackend {
    /// An echo backend with `cfg`'s delay and time limit.
    pub fn new(cfg: &EchoConfig) -> Self {
        Self {
            delay: Duration::from_millis(cfg.delay_ms),
            timeout: Duration::from_secs(cfg.timeout_secs),
        }
    }
}

#[async_trait]
impl AgentBackend for EchoBackend {
    fn name(&self) -> &str {
        "echo"
    }

    async fn start(
        &self,
        turn: AgentTurn,
        cancel: CancellationToken,
    ) -> Result<AgentStream, AgentError> {
        let delay = self.delay;
        Ok(spawn_turn(
            "echo",
            self.timeout,
            cancel,
            move |em| async move {
                let reply = render(&turn).await;
                for (i, piece) in split_pieces(&reply, PIECES).into_iter().enumerate() {
                    if i > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    em.delta(piece).await?;
                }
                Ok(reply)
            },
        ))
    }
}

/// The full echo answer for `turn`.
async fn render(turn: &AgentTurn) -> String {
    let mut out = format!("echo: {}", turn.text);
    for a in &turn.attachments {
        let line = match hash_file(&a.path).await {
            Ok((bytes, digest)) => {
                format!(
                    "[{} {} {bytes} bytes sha256:{}]",
                    a.kind.as_str(),
                    a.name,
                    &digest[..16]
                )
            }
            Err(e) => format!("[{} {} unreadable: {}]", a.kind.as_str(), a.name, e.kind()),
        };
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// The size and hex SHA-256 of a file, read in chunks.
async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// `s` cut into at most `n` non-empty pieces of about equal length, on char boundaries.
fn split_pieces(s: &str, n: usize) -> Vec<&str> {
    let chars = s.chars().count();
    if chars == 0 || n == 0 {
        return Vec::new();
    }
    let per = chars.div_ceil(n);
    let mut pieces = Vec::with_capacity(n);
    let mut start = 0;
    for (count, (idx, _)) in s.char_indices().enumerate() {
        if count > 0 && count % per == 0 {
            pieces.push(&s[start..idx]);
            start = idx;
        }
    }
    pieces.push(&s[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_text_on_char_boundaries() {
        let s = "echo: 你好，世界!";
        let pieces = split_pieces(s, 4);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), s);
        assert_eq!(split_pieces("ab", 4), vec!["a", "b"]);
        assert!(split_pieces("", 4).is_empty());
    }
}
