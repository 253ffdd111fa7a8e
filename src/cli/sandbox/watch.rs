//! The output side of the sandbox chat: follows everything the gateway sent to the emulator —
//! AI Bot frames on the long connection, the self-built app's `message/send` calls — in the
//! order they arrived, shows it, and keeps count of what is still unanswered.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

use super::screen::Screen;
use super::Sandbox;

/// An answer counts as over after this long without news.
pub(super) const QUIET: Duration = Duration::from_millis(700);
/// Partial stream contents are shown up to this many characters (their tail).
const PARTIAL_CHARS: usize = 90;

/// Cursors over what the emulator received, and the replies still expected.
#[derive(Debug)]
pub(super) struct Watch {
    /// AI Bot frames already shown (an index into `OpenWs::frames`).
    frames_seen: usize,
    /// `message/send` calls already shown (an index into `FakeWeComApi::sent`).
    sent_seen: usize,
    /// AI Bot callbacks (`req_id`, chat id) with no reply yet. A message the gateway queued got its
    /// notice as a reply; from then on the gateway's own count of queued messages covers it.
    awaiting: Vec<(String, String)>,
    /// Stream bubbles started and not finished.
    open: HashSet<String>,
    /// Callback messages posted with no answer back yet.
    posted: usize,
    last_news: Instant,
}

impl Watch {
    /// Nothing seen, nothing expected.
    pub(super) fn new() -> Self {
        Self {
            frames_seen: 0,
            sent_seen: 0,
            awaiting: Vec::new(),
            open: HashSet::new(),
            posted: 0,
            last_news: Instant::now(),
        }
    }

    /// A message was pushed to the AI Bot as callback `req_id` in chat `chat_id`.
    pub(super) fn expect_stream(&mut self, req_id: String, chat_id: &str) {
        self.awaiting.push((req_id, chat_id.to_owned()));
        self.last_news = Instant::now();
    }

    /// A message was posted to the self-built app's callback.
    pub(super) fn expect_send(&mut self) {
        self.posted += 1;
        self.last_news = Instant::now();
    }

    /// Whether an answer is expected or still streaming.
    pub(super) fn pending(&self) -> bool {
        !self.awaiting.is_empty() || !self.open.is_empty() || self.posted > 0
    }

    /// How long nothing was shown or sent.
    pub(super) fn silence(&self) -> Duration {
        self.last_news.elapsed()
    }

    /// Stops expecting anything (an answer that never came).
    pub(super) fn give_up(&mut self) {
        self.awaiting.clear();
        self.open.clear();
        self.posted = 0;
    }

    /// Shows everything that arrived since the last call, in arrival order per adapter.
    pub(super) fn poll(&mut self, sandbox: &Sandbox, screen: &mut Screen) -> io::Result<()> {
        let frames = sandbox.openws.frames();
        for frame in frames.iter().skip(self.frames_seen) {
            let to = match frame.cmd() {
                "aibot_respond_msg" => To::Reply(frame.req_id()),
                "aibot_send_msg" => To::Chat(frame.body()["chatid"].as_str().unwrap_or_default()),
                _ => continue,
            };
            self.show_frame(to, frame.body(), screen)?;
        }
        self.frames_seen = frames.len();

        let sent = sandbox.rest.sent();
        for m in sent.iter().skip(self.sent_seen) {
            let text = match m.content() {
                Some(t) => t.to_string(),
                None => format!("[{} {}]", m.msgtype(), m.media_id().unwrap_or_default()),
            };
            screen.line(&format!("bot> {text}"))?;
            self.posted = self.posted.saturating_sub(1);
            self.last_news = Instant::now();
        }
        self.sent_seen = sent.len();
        Ok(())
    }

    /// One frame the gateway sent on the long connection.
    fn show_frame(
        &mut self,
        to: To<'_>,
        body: &serde_json::Value,
        screen: &mut Screen,
    ) -> io::Result<()> {
        self.last_news = Instant::now();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().replace('\u{200B}', "");
        match body["msgtype"].as_str().unwrap_or_default() {
            "stream" => {
                let stream = &body["stream"];
                let id = stream["id"].as_str().unwrap_or_default().to_owned();
                let content = text(&stream["content"]);
                if stream["finish"].as_bool().unwrap_or(false) {
                    self.open.remove(&id);
                    screen.status(None)?;
                    screen.line(&format!("bot> {content}"))?;
                    self.answered(to);
                } else {
                    self.open.insert(id);
                    self.answered(to);
                    screen.status(Some(&format!("  … {}", partial(&content))))?;
                }
            }
            "markdown" => {
                let content = text(&body["markdown"]["content"]);
                screen.line(&format!("bot> {content}"))?;
                self.answered(to);
            }
            other => {
                let media = body[other]["media_id"].as_str().unwrap_or_default();
                screen.line(&format!("bot> [{other} {media}]"))?;
                self.answered(to);
            }
        }
        Ok(())
    }

    /// A reply on a callback answers it; a message sent to a chat (the gateway sends a notice
    /// that way when it cannot reply in place) answers the oldest message waiting there.
    fn answered(&mut self, to: To<'_>) {
        match to {
            To::Reply(req_id) => self.awaiting.retain(|(r, _)| r != req_id),
            To::Chat(chat) => {
                if let Some(i) = self.awaiting.iter().position(|(_, c)| c == chat) {
                    self.awaiting.remove(i);
                }
            }
        }
    }
}

/// Where a frame from the gateway went.
#[derive(Debug, Clone, Copy)]
enum To<'a> {
    /// A reply on this callback's `req_id`.
    Reply(&'a str),
    /// A message sent on the bot's own initiative to this chat.
    Chat(&'a str),
}

/// The tail of a partial stream content, on one line, with the empty seed shown as thinking.
fn partial(content: &str) -> String {
    let flat = content.replace("<think></think>", "").replace('\n', " ⏎ ");
    if flat.trim().is_empty() {
        return "(thinking)".into();
    }
    let chars: Vec<char> = flat.chars().collect();
    if chars.len() <= PARTIAL_CHARS {
        flat
    } else {
        format!(
            "…{}",
            chars[chars.len() - PARTIAL_CHARS..]
                .iter()
                .collect::<String>()
        )
    }
}
