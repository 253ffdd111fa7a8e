//! A test-friendly view of everything a client sent on one callback's `req_id`: stream bubbles
//! (one per `stream.id`, in order of first appearance; a correct reply has at most one), cards,
//! media and (refused) markdown replies.

use serde_json::Value;

use super::state::Received;

/// One stream bubble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bubble {
    /// `stream.id`.
    pub stream_id: String,
    /// Contents of every frame, in order (cumulative, as sent).
    pub contents: Vec<String>,
    /// Content of the `finish: true` frame, if it came.
    pub final_content: Option<String>,
    /// Frames with `finish: true` (exactly one for a correct bubble).
    pub finals: usize,
}

/// Everything sent on one `req_id`.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Stream bubbles in order.
    pub bubbles: Vec<Bubble>,
    /// Markdown replies in order (the strict emulator refuses them; they are kept for the view).
    pub markdown: Vec<String>,
    /// Media replies (`{msgtype, <type>: {media_id}}` bodies), and bodies of unknown msgtypes.
    pub media: Vec<Value>,
    /// Template cards: the `template_card` of `template_card` and `stream_with_template_card`
    /// frames, in order.
    pub cards: Vec<Value>,
    /// The raw frames.
    pub frames: Vec<Received>,
}

impl Reply {
    pub(crate) fn from_frames(frames: Vec<Received>) -> Self {
        let mut reply = Reply::default();
        for r in &frames {
            let body = r.body();
            let msgtype = body["msgtype"].as_str().unwrap_or("");
            if matches!(msgtype, "template_card" | "stream_with_template_card")
                && !body["template_card"].is_null()
            {
                reply.cards.push(body["template_card"].clone());
            }
            match msgtype {
                "template_card" => {}
                "stream" | "stream_with_template_card" => {
                    let s = &body["stream"];
                    let id = s["id"].as_str().unwrap_or("").to_owned();
                    let content = s["content"].as_str().unwrap_or("").to_owned();
                    let finish = s["finish"].as_bool().unwrap_or(false);
                    let idx = match reply.bubbles.iter().position(|b| b.stream_id == id) {
                        Some(i) => i,
                        None => {
                            reply.bubbles.push(Bubble {
                                stream_id: id,
                                contents: Vec::new(),
                                final_content: None,
                                finals: 0,
                            });
                            reply.bubbles.len() - 1
                        }
                    };
                    let b = &mut reply.bubbles[idx];
                    b.contents.push(content.clone());
                    if finish {
                        b.finals += 1;
                        b.final_content = Some(content);
                    }
                }
                "markdown" => reply.markdown.push(
                    body["markdown"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                ),
                _ => reply.media.push(body.clone()),
            }
        }
        reply.frames = frames;
        reply
    }

    /// True when something was delivered (a bubble, a card, markdown) and no bubble is open.
    pub fn is_complete(&self) -> bool {
        (!self.bubbles.is_empty() || !self.markdown.is_empty() || !self.cards.is_empty())
            && self.bubbles.iter().all(|b| b.finals > 0)
    }

    /// The user-visible text: final bubble contents in order (zero-width spaces removed), then
    /// markdown replies.
    pub fn text(&self) -> String {
        let mut out: String = self
            .bubbles
            .iter()
            .filter_map(|b| b.final_content.as_deref())
            .collect::<Vec<_>>()
            .concat();
        for m in &self.markdown {
            out.push_str(m);
        }
        out.replace('\u{200B}', "")
    }

    /// Every stream frame as `(stream_id, content, finish)`, in order.
    pub fn stream_frames(&self) -> Vec<(String, String, bool)> {
        self.frames
            .iter()
            .filter(|r| {
                matches!(
                    r.body()["msgtype"].as_str(),
                    Some("stream" | "stream_with_template_card")
                )
            })
            .map(|r| {
                let s = &r.body()["stream"];
                (
                    s["id"].as_str().unwrap_or("").to_owned(),
                    s["content"].as_str().unwrap_or("").to_owned(),
                    s["finish"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    /// Number of `finish: true` frames over all bubbles.
    pub fn finals(&self) -> usize {
        self.bubbles.iter().map(|b| b.finals).sum()
    }
}
