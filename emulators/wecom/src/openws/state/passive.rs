//! Passive replies on a callback's `req_id` (reference `wecom-aibot-official.md` §2.3–§2.5,
//! §4, §5), checked the way the official client behaves:
//!
//! - an inbound message's `req_id` takes **one** passive reply: one stream (any number of frames
//!   with the same `stream.id`, the card part of `stream_with_template_card` at most once), or one
//!   `template_card`, or one media reply. Anything more answers [`ERR_REPLY_USED`], the
//!   emulator's own code;
//! - there is no passive `markdown` or `text` ([`ERR_INVALID_MSGTYPE`]);
//! - stream frames more than [`STREAM_WINDOW`] after the inbound message answer 846608;
//! - an event's `req_id` takes no stream (846605); `enter_chat` takes a welcome (or a card)
//!   within 5 s, `template_card_event` a matching card update within 5 s, once;
//! - a closing frame without visible text is acked but recorded as a violation.

use serde_json::Value;
use tokio::time::Instant;

use super::checks::{check_card, has_visible_text};
use super::{PushedInfo, State, StreamInfo, STREAM_MAX_BYTES};
use crate::openws::codes::{
    CARD_UPDATE_WINDOW, ERR_INVALID_MSGTYPE, ERR_INVALID_PARAMETER, ERR_INVALID_REQ_ID,
    ERR_REPLY_USED, ERR_STREAM_EXPIRED, ERR_WINDOW_EXPIRED, WELCOME_WINDOW,
};

/// The ACK body (`Ok`) or the refusal `(errcode, errmsg)`.
pub(crate) type Answer = Result<Option<Value>, (i64, String)>;

/// What was accepted on one callback's `req_id` so far.
#[derive(Debug, Default)]
pub(super) struct Passive {
    /// The one stream of an inbound message.
    pub stream: Option<StreamInfo>,
    /// Whether a `stream_with_template_card` frame carried its card.
    pub stream_card: bool,
    /// The other passive reply accepted (`template_card`, a media type, `welcome`, `update`).
    pub other: Option<String>,
}

impl State {
    /// Refuses with `code` and records `what` as a violation.
    pub(super) fn breach<T>(&mut self, code: i64, what: String) -> Result<T, (i64, String)> {
        self.violations.push(what.clone());
        Err((code, what))
    }

    /// The callback behind `req_id`, if this connection of `bot` may still answer it.
    fn callback(
        &mut self,
        conn: u64,
        bot: &str,
        req_id: &str,
        now: Instant,
    ) -> Result<PushedInfo, (i64, String)> {
        let Some(p) = self.pushed.get(req_id).cloned() else {
            return self.breach(
                ERR_INVALID_REQ_ID,
                format!("reply on unknown req_id {req_id}"),
            );
        };
        if p.bot != bot {
            let what = format!("reply on req_id {req_id} of another bot");
            return self.breach(ERR_INVALID_REQ_ID, what);
        }
        if !self.behaviour.req_ids_survive_reconnect && p.conn != Some(conn) {
            let msg = "invalid req_id: from an earlier connection".to_owned();
            return Err((ERR_INVALID_REQ_ID, msg));
        }
        if self
            .behaviour
            .reply_window
            .is_some_and(|w| now.saturating_duration_since(p.at) > w)
        {
            return Err((ERR_WINDOW_EXPIRED, "reply window expired".into()));
        }
        Ok(p)
    }

    /// Validates a card and claims its `task_id` for `bot` (unique per bot, §9).
    pub(super) fn claim_card(&mut self, bot: &str, card: &Value) -> Result<(), (i64, String)> {
        let task_id = match check_card(card) {
            Ok(t) => t,
            Err(what) => return self.breach(ERR_INVALID_PARAMETER, what),
        };
        if !self.task_ids.insert((bot.to_owned(), task_id.clone())) {
            let what = format!("task_id {task_id} already used by bot {bot}");
            return self.breach(ERR_INVALID_PARAMETER, what);
        }
        Ok(())
    }

    /// `aibot_respond_msg`.
    pub(super) fn respond(
        &mut self,
        conn: u64,
        bot: &str,
        req_id: &str,
        body: &Value,
        now: Instant,
    ) -> Answer {
        let p = self.callback(conn, bot, req_id, now)?;
        let msgtype = body["msgtype"].as_str().unwrap_or("");
        if let Some(event) = p.event.as_deref() {
            // §5: an event's req_id carries its own answer only; a stream gets 846605.
            return match msgtype {
                "stream" | "stream_with_template_card" => self.breach(
                    ERR_INVALID_REQ_ID,
                    format!("stream reply on {req_id}, the req_id of a {event} event"),
                ),
                "template_card" if event == "enter_chat" => {
                    self.other_reply(bot, req_id, "template_card", body, now)
                }
                other => self.breach(
                    ERR_INVALID_REQ_ID,
                    format!("passive {other} reply on {req_id}, the req_id of a {event} event"),
                ),
            };
        }
        match msgtype {
            "stream" | "stream_with_template_card" => self.stream_frame(bot, req_id, &p, body, now),
            "template_card" | "image" | "file" | "voice" | "video" => {
                self.other_reply(bot, req_id, msgtype, body, now)
            }
            "markdown" | "text" => self.breach(
                ERR_INVALID_MSGTYPE,
                format!("passive {msgtype} reply on {req_id} (markdown goes with aibot_send_msg)"),
            ),
            other => self.breach(
                ERR_INVALID_MSGTYPE,
                format!("reply with msgtype `{other}` on {req_id}"),
            ),
        }
    }

    /// A passive card or media reply: the only reply on its `req_id`.
    fn other_reply(
        &mut self,
        bot: &str,
        req_id: &str,
        kind: &str,
        body: &Value,
        now: Instant,
    ) -> Answer {
        let used = self.replies.get(req_id).and_then(|r| {
            r.stream
                .as_ref()
                .map(|s| format!("stream {}", s.id))
                .or_else(|| r.other.clone())
        });
        if let Some(used) = used {
            let what = format!("{kind} reply on {req_id}, which already carries a {used} reply");
            return self.breach(ERR_REPLY_USED, what);
        }
        if kind == "template_card" {
            self.claim_card(bot, &body["template_card"])?;
        } else {
            self.media_ok(&body[kind], "reply")?;
        }
        let chat = self.pushed.get(req_id).map(|p| p.chat_id.clone());
        if chat.is_some_and(|c| !self.rate_ok(&c, now)) {
            return Err((846607, "rate limit".into()));
        }
        self.replies.entry(req_id.to_owned()).or_default().other = Some(kind.to_owned());
        Ok(None)
    }

    /// A frame of the message's one stream (`stream` or `stream_with_template_card`).
    fn stream_frame(
        &mut self,
        bot: &str,
        req_id: &str,
        p: &PushedInfo,
        body: &Value,
        now: Instant,
    ) -> Answer {
        let stream = &body["stream"];
        let id = stream["id"].as_str().unwrap_or("").to_owned();
        let content = stream["content"].as_str().unwrap_or("").to_owned();
        let finish = stream["finish"].as_bool().unwrap_or(false);
        if id.is_empty() {
            return self.breach(
                ERR_INVALID_MSGTYPE,
                format!("stream frame without id on {req_id}"),
            );
        }
        if content.len() > STREAM_MAX_BYTES {
            let what = format!("stream frame of {} bytes on {req_id}", content.len());
            return self.breach(45002, what);
        }
        let (open, other, card_sent) = match self.replies.get(req_id) {
            Some(r) => (
                r.stream.as_ref().map(|s| (s.id.clone(), s.finished)),
                r.other.clone(),
                r.stream_card,
            ),
            None => (None, None, false),
        };
        if let Some(other) = other {
            let what = format!("stream {id} on {req_id}, which already carries a {other} reply");
            return self.breach(ERR_REPLY_USED, what);
        }
        match open {
            Some((first, _)) if first != id => {
                let what = format!("second stream {id} on {req_id}, which carries stream {first}");
                return self.breach(ERR_REPLY_USED, what);
            }
            Some((_, true)) => {
                let what = format!("frame after finish on stream {id} of {req_id}");
                return self.breach(ERR_STREAM_EXPIRED, what);
            }
            _ => {}
        }
        // §4: the 6 minutes run from the inbound message, not from the first frame.
        if self
            .behaviour
            .stream_window
            .is_some_and(|w| now.saturating_duration_since(p.at) > w)
        {
            return Err((ERR_STREAM_EXPIRED, "stream message update expired".into()));
        }
        let card = &body["template_card"];
        let has_card = body["msgtype"] == "stream_with_template_card" && !card.is_null();
        if has_card && card_sent {
            let what = format!("second card part on {req_id} (once per message)");
            return self.breach(ERR_REPLY_USED, what);
        }
        // Final frames count against the per-chat limit; intermediate ones do not.
        if finish && !self.rate_ok(&p.chat_id, now) {
            return Err((846607, "rate limit".into()));
        }
        if has_card {
            self.claim_card(bot, card)?;
        }
        if finish && !has_visible_text(&content) {
            // WeCom acks it but ignores it: the bubble keeps its spinner (§4).
            self.violations.push(format!(
                "final frame without visible text on stream {id} of {req_id}: {content:?}"
            ));
        }
        let r = self.replies.entry(req_id.to_owned()).or_default();
        r.stream_card |= has_card;
        r.stream
            .get_or_insert(StreamInfo {
                id,
                finished: false,
            })
            .finished = finish;
        Ok(None)
    }

    /// The event behind `req_id` if it is `eventtype` and still inside `window`, and nothing
    /// was answered on it yet.
    fn event_reply(
        &mut self,
        conn: u64,
        bot: &str,
        req_id: &str,
        cmd: &str,
        eventtype: &str,
        now: Instant,
    ) -> Result<PushedInfo, (i64, String)> {
        let p = match self.pushed.get(req_id) {
            Some(p) if p.bot == bot && p.event.as_deref() == Some(eventtype) => p.clone(),
            _ => {
                let what = format!("{cmd} on {req_id}, which is not a {eventtype} event");
                return self.breach(ERR_INVALID_REQ_ID, what);
            }
        };
        if !self.behaviour.req_ids_survive_reconnect && p.conn != Some(conn) {
            let msg = "invalid req_id: from an earlier connection".to_owned();
            return Err((ERR_INVALID_REQ_ID, msg));
        }
        let window = if eventtype == "enter_chat" {
            WELCOME_WINDOW
        } else {
            CARD_UPDATE_WINDOW
        };
        if now.saturating_duration_since(p.at) > window {
            return Err((ERR_WINDOW_EXPIRED, format!("{cmd} window expired")));
        }
        if let Some(used) = self.replies.get(req_id).and_then(|r| r.other.clone()) {
            let what = format!("{cmd} on {req_id}, which already carries a {used} reply");
            return self.breach(ERR_REPLY_USED, what);
        }
        Ok(p)
    }

    /// `aibot_respond_welcome_msg`: text or a card, on an `enter_chat` req_id within 5 s (§2.4).
    pub(super) fn welcome(
        &mut self,
        conn: u64,
        bot: &str,
        req_id: &str,
        body: &Value,
        now: Instant,
    ) -> Answer {
        let cmd = "aibot_respond_welcome_msg";
        self.event_reply(conn, bot, req_id, cmd, "enter_chat", now)?;
        match body["msgtype"].as_str().unwrap_or("") {
            "text"
                if body["text"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty()) => {}
            "template_card" => self.claim_card(bot, &body["template_card"])?,
            other => {
                let what = format!("welcome with msgtype `{other}` or empty text on {req_id}");
                return self.breach(ERR_INVALID_MSGTYPE, what);
            }
        }
        self.replies.entry(req_id.to_owned()).or_default().other = Some("welcome".into());
        Ok(None)
    }

    /// `aibot_respond_update_msg`: the tapped card, same `task_id`, within 5 s (§2.5).
    pub(super) fn update(
        &mut self,
        conn: u64,
        bot: &str,
        req_id: &str,
        body: &Value,
        now: Instant,
    ) -> Answer {
        let cmd = "aibot_respond_update_msg";
        let p = self.event_reply(conn, bot, req_id, cmd, "template_card_event", now)?;
        if body["response_type"] != "update_template_card" {
            let what = format!(
                "{cmd} on {req_id} with response_type {} (must be update_template_card)",
                body["response_type"]
            );
            return self.breach(ERR_INVALID_PARAMETER, what);
        }
        let card = &body["template_card"];
        if let Err(what) = check_card(card) {
            return self.breach(ERR_INVALID_PARAMETER, format!("{cmd} on {req_id}: {what}"));
        }
        let task_id = card["task_id"].as_str().unwrap_or("");
        if p.task_id.as_deref() != Some(task_id) {
            let what = format!(
                "{cmd} on {req_id} for task_id {task_id}, the event's is {:?}",
                p.task_id
            );
            return self.breach(ERR_INVALID_PARAMETER, what);
        }
        if body.get("userids").is_some_and(|u| {
            !u.as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x.is_string()))
        }) {
            let what = format!("{cmd} on {req_id} with userids {}", body["userids"]);
            return self.breach(ERR_INVALID_PARAMETER, what);
        }
        self.replies.entry(req_id.to_owned()).or_default().other = Some("update".into());
        Ok(None)
    }
}
