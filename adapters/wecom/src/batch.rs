//! Merging of client-split texts (reference `wecom-aibot.md` §4.7, §9 item 16; the official
//! client does not merge, `wecom-aibot-official.md` §6.6, so this is ours): WeCom clients
//! cut long user messages at about 4000 characters and send the pieces as separate callbacks.
//! Plain texts from one sender in one chat are held for a quiet period (0.6 s, or 2 s after a
//! piece near the split size) and handed on as one message.
//!
//! This is a plain state machine fed messages and the clock; one task owns it, so the
//! "flush cancelled after wake-up" race hermes had to patch (commit `584817437`) cannot occur.

use std::collections::HashMap;
use std::time::Duration;

use gateway_core::{Content, InboundMessage};
use tokio::time::Instant;

/// Merging settings.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Quiet time before a batch is handed on; zero disables merging.
    pub delay: Duration,
    /// Quiet time after a piece of at least `split_threshold` characters.
    pub split_delay: Duration,
    /// Characters from which a piece counts as client-split.
    pub split_threshold: usize,
    /// Most pieces merged into one message.
    pub max_pieces: usize,
    /// Most bytes merged into one message.
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(600),
            split_delay: Duration::from_secs(2),
            split_threshold: 3900,
            max_pieces: 32,
            max_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug)]
struct Pending {
    first: InboundMessage,
    text: String,
    last_was_split: bool,
    pieces: usize,
    /// Message ids of the pieces merged after the first.
    merged_ids: Vec<String>,
    /// The reply context of the newest piece (its `req_id` is the freshest reply handle).
    reply_context: serde_json::Value,
    deadline: Instant,
}

/// The batcher.
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchConfig,
    pending: HashMap<String, Pending>,
}

fn key(m: &InboundMessage) -> String {
    format!(
        "{}:{}:{}",
        m.chat.kind.as_str(),
        m.chat.chat_id,
        m.sender.user_id
    )
}

impl Batcher {
    /// A batcher with `cfg`.
    pub fn new(cfg: BatchConfig) -> Self {
        Self {
            cfg,
            pending: HashMap::new(),
        }
    }

    /// True when merging is on.
    pub fn enabled(&self) -> bool {
        !self.cfg.delay.is_zero()
    }

    /// Takes a message. Plain texts are held (or merged); anything else is returned at once,
    /// after the same sender's held text so the order is kept.
    pub fn push(
        &mut self,
        msg: InboundMessage,
        plain_text: bool,
        now: Instant,
    ) -> Vec<InboundMessage> {
        let k = key(&msg);
        if !self.enabled() || !plain_text {
            let mut out: Vec<InboundMessage> =
                self.pending.remove(&k).map(finish).into_iter().collect();
            out.push(msg);
            return out;
        }
        let Content::Text { text } = &msg.content else {
            return vec![msg];
        };
        let text = text.clone();
        let split = text.chars().count() >= self.cfg.split_threshold;
        let wait = if split {
            self.cfg.split_delay
        } else {
            self.cfg.delay
        };
        let mut out = Vec::new();
        if let Some(p) = self.pending.get_mut(&k) {
            if p.pieces < self.cfg.max_pieces && p.text.len() + text.len() <= self.cfg.max_bytes {
                // A client split cuts mid-text: join without a separator. Separate messages
                // typed in quick succession are joined by a line break.
                if !p.last_was_split {
                    p.text.push('\n');
                }
                p.text.push_str(&text);
                p.pieces += 1;
                p.merged_ids.push(msg.message_id.clone());
                p.last_was_split = split;
                p.reply_context = msg.reply_context.clone();
                p.deadline = now + wait;
                return out;
            }
            out.extend(self.pending.remove(&k).map(finish));
        }
        let reply_context = msg.reply_context.clone();
        self.pending.insert(
            k,
            Pending {
                first: msg,
                text,
                last_was_split: split,
                pieces: 1,
                merged_ids: Vec::new(),
                reply_context,
                deadline: now + wait,
            },
        );
        out
    }

    /// Batches whose quiet period is over.
    pub fn due(&mut self, now: Instant) -> Vec<InboundMessage> {
        let keys: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .map(finish)
            .collect()
    }

    /// Everything held, for shutdown.
    pub fn drain(&mut self) -> Vec<InboundMessage> {
        self.pending.drain().map(|(_, p)| finish(p)).collect()
    }

    /// When [`Batcher::due`] has something next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

fn finish(p: Pending) -> InboundMessage {
    let mut m = p.first;
    m.content = Content::Text { text: p.text };
    m.reply_context = p.reply_context;
    if let (false, Some(ctx)) = (p.merged_ids.is_empty(), m.reply_context.as_object_mut()) {
        // The intake journal closes every piece once the merged message is submitted.
        ctx.insert(MERGED_IDS.into(), serde_json::json!(p.merged_ids));
    }
    m
}

/// Key in a merged message's reply context: the message ids of the pieces after the first.
pub(crate) const MERGED_IDS: &str = "merged_ids";

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::{ChatAddress, Sender};
    use serde_json::json;

    fn msg(id: &str, chat: &str, user: &str, text: &str) -> InboundMessage {
        InboundMessage {
            instance: "w".into(),
            message_id: id.into(),
            sender: Sender::new(user),
            chat: ChatAddress::dm(chat),
            content: Content::Text { text: text.into() },
            quote: None,
            received_at: chrono::Utc::now(),
            reply_context: json!({ "req_id": format!("req-{id}") }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn single_message_waits_for_the_quiet_time() {
        let mut b = Batcher::new(BatchConfig::default());
        let t0 = Instant::now();
        assert!(b.push(msg("1", "a", "a", "hi"), true, t0).is_empty());
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(600)));
        assert!(b.due(t0 + Duration::from_millis(599)).is_empty());
        let out = b.due(t0 + Duration::from_millis(600));
        assert_eq!(out.len(), 1);
        assert!(b.next_deadline().is_none(), "cleaned up after the flush");
    }

    #[tokio::test(start_paused = true)]
    async fn split_pieces_merge_and_near_limit_pieces_wait_longer() {
        let mut b = Batcher::new(BatchConfig::default());
        let t0 = Instant::now();
        let long = "x".repeat(3950);
        b.push(msg("1", "a", "a", &long), true, t0);
        assert_eq!(
            b.next_deadline(),
            Some(t0 + Duration::from_secs(2)),
            "adaptive delay"
        );
        b.push(
            msg("2", "a", "a", "tail"),
            true,
            t0 + Duration::from_secs(1),
        );
        let out = b.due(t0 + Duration::from_secs(2));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].text(),
            format!("{long}tail"),
            "client splits join without a separator"
        );
        assert_eq!(out[0].message_id, "1");
        assert_eq!(
            out[0].reply_context["req_id"], "req-2",
            "the newest req_id answers"
        );
        // Quick separate messages join with a newline.
        b.push(msg("3", "a", "a", "one"), true, t0);
        b.push(msg("4", "a", "a", "two"), true, t0);
        assert_eq!(b.drain()[0].text(), "one\ntwo");
    }

    #[tokio::test(start_paused = true)]
    async fn different_chats_do_not_merge_and_order_is_kept() {
        let mut b = Batcher::new(BatchConfig::default());
        let t0 = Instant::now();
        b.push(msg("1", "a", "a", "for a"), true, t0);
        b.push(msg("2", "b", "b", "for b"), true, t0);
        assert_eq!(b.due(t0 + Duration::from_secs(1)).len(), 2);
        b.push(msg("3", "a", "a", "text first"), true, t0);
        let out = b.push(msg("4", "a", "a", "an image"), false, t0);
        let ids: Vec<_> = out.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["3", "4"], "held text goes before the media message");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_delay_disables_merging() {
        let mut b = Batcher::new(BatchConfig {
            delay: Duration::ZERO,
            ..BatchConfig::default()
        });
        assert_eq!(
            b.push(msg("1", "a", "a", "x"), true, Instant::now()).len(),
            1
        );
    }
}
