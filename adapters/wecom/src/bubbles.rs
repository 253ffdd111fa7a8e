//! The bubble planner of the stream engine, apart from I/O: given the cumulative reply text and
//! the clock, it decides which stream frames to send (reference `wecom-aibot.md` §4.3, §9 item
//! 12; landscape §4 gap 2):
//!
//! * frames carry the cumulative text of their bubble, never more than the byte budget;
//! * a text that outgrows a bubble continues in a new bubble (new stream id, same `req_id`),
//!   cut at a paragraph, line, space or character boundary — the bubbles are consecutive slices
//!   of the text, so nothing is lost or repeated;
//! * a bubble that reached its frame budget, or its age limit (safely inside WeCom's 6/10-minute
//!   window), is sealed with `finish: true` and continued in a new one; an empty bubble is sealed
//!   with a short "still working" line and re-seeded with `<think></think>`;
//! * a final frame identical to the bubble's previous frame gets a U+200B appended.

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{new_stream_id, THINK_SEED, ZERO_WIDTH_SPACE};

/// Shown when an empty "thinking" bubble must be sealed because of its age.
pub const STILL_WORKING: &str = "⏳ Still working on it…";

/// One frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// `stream.id`.
    pub stream_id: String,
    /// `stream.content`.
    pub content: String,
    /// `stream.finish`.
    pub finish: bool,
    /// For final frames: the slice of the reply text this frame delivers (without U+200B or
    /// placeholders), so a failed frame can be delivered another way.
    pub text: String,
}

#[derive(Debug, Clone)]
struct Current {
    id: String,
    frames: u32,
    opened_at: Instant,
    last: String,
}

/// The planner's state for one reply.
#[derive(Debug, Clone)]
pub struct Bubbles {
    budget: usize,
    max_frames: u32,
    rotate_after: Duration,
    /// Byte offset in the reply text where the current bubble starts.
    start: usize,
    /// The text delivered by sealed bubbles (`text[..start]` as it was).
    sealed: String,
    cur: Option<Current>,
}

impl Bubbles {
    /// A planner for frames of at most `max_frame_bytes` bytes of content, `max_frames`
    /// intermediate frames per bubble and bubbles younger than `rotate_after`.
    pub fn new(max_frame_bytes: usize, max_frames: u32, rotate_after: Duration) -> Self {
        // Room for the U+200B a final frame may need.
        let budget = max_frame_bytes
            .saturating_sub(ZERO_WIDTH_SPACE.len_utf8())
            .max(8);
        Self {
            budget,
            max_frames: max_frames.max(2),
            rotate_after,
            start: 0,
            sealed: String::new(),
            cur: None,
        }
    }

    /// True once any frame was planned for the current bubble.
    pub fn is_open(&self) -> bool {
        self.cur.is_some()
    }

    /// The text delivered by sealed bubbles so far.
    pub fn sealed_text(&self) -> &str {
        &self.sealed
    }

    /// Intermediate frames used in the current bubble.
    pub fn frames_used(&self) -> u32 {
        self.cur.as_ref().map_or(0, |c| c.frames)
    }

    /// Frames left in the current bubble's budget.
    pub fn frames_left(&self) -> u32 {
        self.max_frames.saturating_sub(self.frames_used())
    }

    /// When the current bubble must be rotated.
    pub fn rotate_at(&self) -> Option<Instant> {
        self.cur.as_ref().map(|c| c.opened_at + self.rotate_after)
    }

    fn open(&mut self, now: Instant) -> &mut Current {
        self.cur.get_or_insert_with(|| Current {
            id: new_stream_id(),
            frames: 0,
            opened_at: now,
            last: String::new(),
        })
    }

    fn intermediate(&mut self, content: &str, now: Instant) -> Planned {
        let cur = self.open(now);
        cur.frames += 1;
        cur.last = content.to_owned();
        Planned {
            stream_id: cur.id.clone(),
            content: content.to_owned(),
            finish: false,
            text: String::new(),
        }
    }

    /// Seals the current bubble with `content` (opening one if none is open).
    fn seal(&mut self, content: &str, delivers: &str, now: Instant) -> Planned {
        let cur = self.open(now);
        let mut body = content.to_owned();
        if cur.frames > 0 && body == cur.last {
            body.push(ZERO_WIDTH_SPACE);
        }
        let planned = Planned {
            stream_id: cur.id.clone(),
            content: body,
            finish: true,
            text: delivers.to_owned(),
        };
        self.cur = None;
        planned
    }

    /// The seed frame `<think></think>` of a new bubble.
    pub fn seed(&mut self, now: Instant) -> Planned {
        self.intermediate(THINK_SEED, now)
    }

    /// Frames for a new cumulative `text`: seals for every full bubble, then one intermediate
    /// frame with the rest (none when it did not change).
    pub fn update(&mut self, text: &str, now: Instant) -> Vec<Planned> {
        let mut out = Vec::new();
        if !text.starts_with(self.sealed.as_str()) {
            // The text changed behind a sealed bubble; the final frame sorts it out.
            return out;
        }
        self.seal_full(text, now, &mut out);
        let rest = &text[self.start..];
        if rest.is_empty() {
            return out;
        }
        if self.cur.as_ref().is_some_and(|c| c.last == rest) {
            return out;
        }
        if self.frames_left() == 0 {
            // Out of frames: seal what the bubble shows and continue in a new one.
            let shown = self
                .cur
                .as_ref()
                .map(|c| c.last.clone())
                .unwrap_or_default();
            if !shown.is_empty() && shown != THINK_SEED && rest.starts_with(&shown) {
                let delivered = shown.clone();
                out.push(self.seal(&shown, &delivered, now));
                self.advance(&delivered);
            } else {
                out.push(self.seal(STILL_WORKING, "", now));
            }
        }
        let rest = text[self.start..].to_owned();
        if !rest.is_empty() {
            out.push(self.intermediate(&rest, now));
        }
        out
    }

    fn advance(&mut self, delivered: &str) {
        self.start += delivered.len();
        self.sealed.push_str(delivered);
    }

    /// Seals bubbles while the unsealed rest exceeds the budget.
    fn seal_full(&mut self, text: &str, now: Instant, out: &mut Vec<Planned>) {
        while text.len() - self.start > self.budget {
            let rest = &text[self.start..];
            let cut = split_point(rest, self.budget);
            let piece = rest[..cut].to_owned();
            out.push(self.seal(&piece, &piece, now));
            self.advance(&piece);
        }
    }

    /// Frames for an aged bubble: it is sealed (at a paragraph break in its latter half when
    /// there is one) and continued in a new bubble, which is re-seeded when nothing is left to
    /// show. `text` is the latest cumulative text.
    pub fn rotate(&mut self, text: &str, now: Instant) -> Vec<Planned> {
        let mut out = self.update(text, now);
        let due = self.rotate_at().is_some_and(|t| t <= now);
        if !due || !text.starts_with(self.sealed.as_str()) {
            return out;
        }
        let rest = text[self.start..].to_owned();
        if rest.is_empty() {
            out.push(self.seal(STILL_WORKING, "", now));
            out.push(self.seed(now));
            return out;
        }
        let cut = paragraph_cut(&rest).unwrap_or(rest.len());
        let piece = rest[..cut].to_owned();
        out.push(self.seal(&piece, &piece, now));
        self.advance(&piece);
        let left = text[self.start..].to_owned();
        if left.is_empty() {
            out.push(self.seed(now));
        } else {
            out.push(self.intermediate(&left, now));
        }
        out
    }

    /// The final frames for the whole reply `text`: every remaining slice in its own bubble,
    /// each with `finish: true`. When `text` does not extend what sealed bubbles delivered, it
    /// is delivered whole in new bubbles.
    pub fn finish(&mut self, text: &str, now: Instant) -> Vec<Planned> {
        let mut out = Vec::new();
        let rest: String = if text.starts_with(self.sealed.as_str()) {
            text[self.start..].to_owned()
        } else {
            tracing::debug!("Final text differs from the sealed bubbles; sending it whole.");
            text.to_owned()
        };
        let mut rest = rest.as_str();
        while !rest.is_empty() {
            let cut = if rest.len() > self.budget {
                split_point(rest, self.budget)
            } else {
                rest.len()
            };
            let piece = rest[..cut].to_owned();
            out.push(self.seal(&piece, &piece, now));
            self.sealed.push_str(&piece);
            rest = &rest[cut..];
        }
        if self.cur.is_some() {
            // A re-seeded bubble with nothing left to show still needs its finish frame.
            out.push(self.seal(&ZERO_WIDTH_SPACE.to_string(), "", now));
        }
        out
    }
}

/// Where to cut `s` so the first part has at most `limit` bytes: after a paragraph break in the
/// second half if there is one, else after a line break, else after a space, else at the last
/// character boundary. Never 0 for a non-empty `s`.
pub fn split_point(s: &str, limit: usize) -> usize {
    if s.len() <= limit {
        return s.len();
    }
    let mut max = limit;
    while max > 0 && !s.is_char_boundary(max) {
        max -= 1;
    }
    if max == 0 {
        // Only when `limit` is below one character: take that character whole.
        return s.char_indices().nth(1).map_or(s.len(), |(i, _)| i);
    }
    let window = &s[..max];
    let half = max / 2;
    let after = |needle: &str| {
        window
            .rfind(needle)
            .map(|i| i + needle.len())
            .filter(|&i| i >= half && i > 0)
    };
    after("\n\n")
        .or_else(|| after("\n"))
        .or_else(|| after(" ").or_else(|| after("。")))
        .unwrap_or(max)
}

/// The end of the last paragraph break in the second half of `s`, if any.
fn paragraph_cut(s: &str) -> Option<usize> {
    s.rfind("\n\n")
        .map(|i| i + 2)
        .filter(|&i| i > s.len() / 2 && i < s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bubbles() -> Bubbles {
        Bubbles::new(20480, 85, Duration::from_secs(240))
    }

    /// Concatenates what final frames deliver.
    fn delivered(frames: &[Planned]) -> String {
        frames
            .iter()
            .filter(|f| f.finish)
            .map(|f| f.text.as_str())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn seed_updates_and_final_with_zero_width_space() {
        let now = Instant::now();
        let mut b = bubbles();
        let seed = b.seed(now);
        assert_eq!((seed.content.as_str(), seed.finish), (THINK_SEED, false));
        let u = b.update("hello", now);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].stream_id, seed.stream_id);
        assert!(
            b.update("hello", now).is_empty(),
            "identical frames are skipped"
        );
        let f = b.finish("hello", now);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].content, "hello\u{200B}");
        assert!(f[0].finish);
        assert_eq!(f[0].text, "hello");
        // A final that differs needs no marker.
        let mut b = bubbles();
        b.seed(now);
        b.update("hel", now);
        assert_eq!(b.finish("hello", now)[0].content, "hello");
        // A notice: a single final frame on a new bubble.
        let mut b = bubbles();
        let f = b.finish("Queued.", now);
        assert_eq!((f.len(), f[0].content.as_str()), (1, "Queued."));
    }

    #[tokio::test(start_paused = true)]
    async fn long_answers_continue_in_new_bubbles_without_loss() {
        let now = Instant::now();
        let para = "Lorem ipsum dolor sit amet, 你好世界 consectetur. ".repeat(40);
        let text: String = (0..30).map(|i| format!("{i}: {para}\n\n")).collect();
        assert!(text.len() > 50_000);
        let mut b = bubbles();
        let mut frames = vec![b.seed(now)];
        // Cumulative updates in growing prefixes (on char boundaries).
        let mut cut = 0;
        while cut < text.len() {
            cut = (cut + 3000).min(text.len());
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            frames.extend(b.update(&text[..cut], now));
        }
        frames.extend(b.finish(&text, now));
        assert!(
            frames.iter().all(|f| f.content.len() <= 20480),
            "frame over the limit"
        );
        assert_eq!(
            delivered(&frames),
            text,
            "bubbles are consecutive slices of the text"
        );
        let ids: std::collections::BTreeSet<_> =
            frames.iter().map(|f| f.stream_id.clone()).collect();
        assert!(ids.len() >= 3, "several bubbles: {}", ids.len());
        for id in &ids {
            let finals = frames
                .iter()
                .filter(|f| &f.stream_id == id && f.finish)
                .count();
            assert_eq!(finals, 1, "exactly one finish per bubble");
            let last = frames.iter().rev().find(|f| &f.stream_id == id).unwrap();
            assert!(last.finish, "nothing after a bubble's finish");
        }
        // Cuts fall on paragraph breaks.
        for f in frames.iter().filter(|f| f.finish) {
            assert!(
                f.text.ends_with("\n\n"),
                "{:?}",
                &f.text[f.text.len().saturating_sub(10)..]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frame_budget_rotates_the_bubble() {
        let now = Instant::now();
        let mut b = Bubbles::new(20480, 3, Duration::from_secs(240));
        let mut frames = vec![b.seed(now)];
        let mut text = String::new();
        for i in 0..6 {
            text.push_str(&format!("word{i} "));
            frames.extend(b.update(&text, now));
        }
        frames.extend(b.finish(&text, now));
        assert_eq!(delivered(&frames), text);
        let mut per_bubble = std::collections::HashMap::<String, u32>::new();
        for f in frames.iter().filter(|f| !f.finish) {
            *per_bubble.entry(f.stream_id.clone()).or_default() += 1;
        }
        assert!(per_bubble.values().all(|&n| n <= 3), "{per_bubble:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn aged_bubbles_rotate_and_reseed() {
        let t0 = Instant::now();
        let mut b = bubbles();
        let seed = b.seed(t0);
        assert_eq!(b.rotate_at(), Some(t0 + Duration::from_secs(240)));
        tokio::time::advance(Duration::from_secs(240)).await;
        let now = Instant::now();
        // Nothing to show yet: seal with a placeholder and re-seed.
        let r = b.rotate("", now);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].stream_id.as_str(), r[0].content.as_str(), r[0].finish),
            (seed.stream_id.as_str(), STILL_WORKING, true)
        );
        assert_eq!((r[1].content.as_str(), r[1].finish), (THINK_SEED, false));
        assert_ne!(r[1].stream_id, seed.stream_id);
        // With text: sealed at the paragraph break, the tail continues.
        let text = "first paragraph is long enough\n\nsecond";
        b.update(text, now);
        tokio::time::advance(Duration::from_secs(240)).await;
        let r = b.rotate(text, Instant::now());
        assert_eq!(r[0].text, "first paragraph is long enough\n\n");
        assert_eq!((r[1].content.as_str(), r[1].finish), ("second", false));
        let f = b.finish(&format!("{text} done"), Instant::now());
        assert_eq!(f[0].content, "second done");
        assert!(b.rotate_at().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_diverging_final_is_delivered_whole() {
        let now = Instant::now();
        let mut b = Bubbles::new(64, 85, Duration::from_secs(240));
        let long = "a".repeat(100);
        b.update(&long, now);
        assert!(!b.sealed_text().is_empty());
        let f = b.finish("completely different", now);
        assert!(f.iter().any(|p| p.text == "completely different"));
        // The open bubble of the old text is closed too.
        assert!(f.iter().all(|p| p.finish));
    }

    #[test]
    fn split_points() {
        assert_eq!(split_point("abc", 10), 3);
        let s = "aaaa\n\nbbbb cccc";
        assert_eq!(split_point(s, 12), 6, "after the paragraph break");
        assert_eq!(split_point("aaaa bbbb cccc", 12), 10, "after a space");
        let cjk = "你好世界你好世界";
        let cut = split_point(cjk, 10);
        assert!(cjk.is_char_boundary(cut) && cut <= 10 && cut > 0);
        assert_eq!(
            split_point("😀😀", 2),
            4,
            "one character even if over a tiny limit"
        );
    }
}
