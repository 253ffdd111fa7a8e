//! What a reply's single stream shows, apart from I/O: the frame contents for the text so far,
//! within the stream's byte limit (reference `wecom-aibot-official.md` §4: content is the whole
//! text so far, at most 20480 UTF-8 bytes; one stream id for the whole turn).

use crate::protocol::{has_visible, new_stream_id, THINK_SEED};

/// Closes the stream of an answer with nothing visible in it: WeCom ignores invisible content
/// and would leave the thinking animation up (§4).
pub const DONE: &str = "✅ Done.";

/// Closes a stream whose window ended before the agent wrote anything visible; the answer
/// follows as markdown messages.
pub const STILL_WORKING: &str = "⏳ Still working on it; the answer follows in separate messages.";

/// The stream of one reply.
#[derive(Debug, Clone)]
pub struct Plan {
    id: String,
    budget: usize,
    /// The content of the last frame planned.
    shown: Option<String>,
}

impl Plan {
    /// A stream showing at most `max_frame_bytes` bytes, with a fresh id.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            id: new_stream_id(),
            budget: max_frame_bytes.max(gateway_core::text::MIN_MAX_BYTES),
            shown: None,
        }
    }

    /// The stream id (the same for every frame of the reply).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The seed frame's content, once, before anything else was shown.
    pub fn seed(&mut self) -> Option<String> {
        if self.shown.is_some() {
            return None;
        }
        self.shown = Some(THINK_SEED.to_owned());
        Some(THINK_SEED.to_owned())
    }

    /// What the stream shows of `text` and where the rest starts: the longest head within the
    /// budget, cut at the best boundary ([`gateway_core::text::split_head`]).
    pub fn split(&self, text: &str) -> (String, String) {
        gateway_core::text::split_head(text, self.budget)
    }

    /// The content of the next intermediate frame for `text`, or `None` when it would show
    /// nothing new (same as the last frame, or nothing visible yet).
    pub fn update(&mut self, text: &str) -> Option<String> {
        let (head, _) = self.split(text);
        if !has_visible(&head) || self.shown.as_deref() == Some(head.as_str()) {
            return None;
        }
        self.shown = Some(head.clone());
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_the_seed_once_and_only_new_visible_heads() {
        let mut p = Plan::new(64);
        let id = p.id().to_owned();
        assert_eq!(p.seed().as_deref(), Some(THINK_SEED));
        assert_eq!(p.seed(), None);
        assert_eq!(p.update("  "), None, "nothing visible replaces the seed");
        assert_eq!(p.update("Hello").as_deref(), Some("Hello"));
        assert_eq!(p.update("Hello"), None, "identical frames are skipped");
        assert_eq!(p.update("Hello world").as_deref(), Some("Hello world"));
        assert_eq!(p.id(), id);
    }

    #[test]
    fn a_long_text_shows_its_head_and_the_rest_is_what_follows() {
        let mut p = Plan::new(64);
        let text = format!("{}\n\n{}", "a".repeat(40), "b".repeat(100));
        let (head, rest) = p.split(&text);
        assert_eq!(head, "a".repeat(40));
        assert_eq!(rest, "b".repeat(100));
        assert_eq!(p.update(&text).as_deref(), Some(head.as_str()));
        // Growing past the budget changes nothing on screen.
        assert_eq!(p.update(&format!("{text} more")), None);
        assert!(head.len() <= 64);
    }
}
