//! The fake openws server's state and its answer to every client frame: subscribe checks,
//! ACKs, the reply/stream/send rules modelled on the official client (reference
//! `wecom-aibot-official.md` §1, §2, §4, §5, §9, §10), scripted failures, and the record of
//! everything received.
//!
//! The rules are strict by default so that the adapter's tests catch what could lose a reply on
//! the real server: a second passive reply on one `req_id`, passive markdown, a stream on an
//! event's `req_id`, stream frames past 6 minutes, invalid cards, frames over 20480 bytes,
//! frames after a stream's `finish`, closing frames without visible text, replies on unknown or
//! stale `req_id`s, uploads with wrong chunks or md5 (the passive rules: `passive.rs`). Breaches
//! of the protocol (as opposed to scripted failures) are also listed as violations. Success
//! ACKs are always `errcode: 0, errmsg: "ok"`.

mod checks;
mod passive;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::codes::{ERR_EMPTY_CONTENT, ERR_INVALID_MSGTYPE, STREAM_WINDOW};
pub use super::uploads::Upload;
use super::uploads::Uploads;
use passive::{Answer, Passive};

/// Largest stream frame content, in bytes.
pub const STREAM_MAX_BYTES: usize = 20480;
/// Largest proactive markdown content, in bytes. The official sources state no limit (the
/// plugin chunks at 4000 characters); 4096 bytes is the cap live tests found (`wecom-aibot.md`
/// §4.2), the tighter of the two, and what the adapter's `text_max_bytes` stays within.
pub const MARKDOWN_MAX_BYTES: usize = 4096;

/// What the server writes to one connection.
#[derive(Debug)]
pub(crate) enum Out {
    /// A text frame.
    Text(String),
    /// A close frame, then the end of the connection.
    Close,
    /// The end of the connection without a close frame (a dropped socket).
    Drop,
    /// A WebSocket-protocol ping.
    Ping,
}

/// A frame the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Connection number (1-based, in accept order).
    pub conn: u64,
    /// The bot the connection subscribed as, if it did.
    pub bot: Option<String>,
    /// The frame.
    pub frame: Value,
    /// When it arrived (tokio time).
    pub at: Instant,
    /// The errcode the emulator answered it with (`0` for success); `None` while unanswered
    /// (a withheld ACK, a ping left unanswered).
    pub answered: Option<i64>,
}

impl Received {
    /// True when the emulator answered the frame with success.
    pub fn accepted(&self) -> bool {
        self.answered == Some(0)
    }

    /// The frame's `cmd`.
    pub fn cmd(&self) -> &str {
        self.frame["cmd"].as_str().unwrap_or("")
    }

    /// The frame's `headers.req_id`.
    pub fn req_id(&self) -> &str {
        self.frame["headers"]["req_id"].as_str().unwrap_or("")
    }

    /// The frame's body.
    pub fn body(&self) -> &Value {
        &self.frame["body"]
    }
}

/// A subscribe the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Connection number.
    pub conn: u64,
    /// `body.bot_id`.
    pub bot_id: String,
    /// `body.secret`.
    pub secret: String,
    /// `body.device_id`.
    pub device_id: String,
    /// Whether the credentials were accepted.
    pub accepted: bool,
}

/// Selects client frames for scripted failures and withheld ACKs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    cmd: Option<String>,
    msgtype: Option<String>,
    finish: Option<bool>,
    req_id: Option<String>,
    containing: Option<String>,
}

impl Match {
    /// Frames with this `cmd`.
    pub fn cmd(cmd: &str) -> Self {
        Self {
            cmd: Some(cmd.to_owned()),
            ..Self::default()
        }
    }

    /// Narrows the match to frames whose body mentions `text` anywhere (a piece of a split
    /// answer, say).
    pub fn containing(mut self, text: &str) -> Self {
        self.containing = Some(text.to_owned());
        self
    }

    /// Stream frames with `finish: true`.
    pub fn stream_final() -> Self {
        Self {
            msgtype: Some("stream".into()),
            finish: Some(true),
            ..Self::default()
        }
    }

    /// Stream frames with `finish: false`.
    pub fn stream_update() -> Self {
        Self {
            msgtype: Some("stream".into()),
            finish: Some(false),
            ..Self::default()
        }
    }

    /// Any frame whose body has this `msgtype`.
    pub fn msgtype(msgtype: &str) -> Self {
        Self {
            msgtype: Some(msgtype.to_owned()),
            ..Self::default()
        }
    }

    /// Only frames on this `req_id`.
    pub fn on_req(mut self, req_id: &str) -> Self {
        self.req_id = Some(req_id.to_owned());
        self
    }

    fn matches(&self, frame: &Value) -> bool {
        let cmd = frame["cmd"].as_str().unwrap_or("");
        let body = &frame["body"];
        self.cmd.as_deref().is_none_or(|c| c == cmd)
            && self.msgtype.as_deref().is_none_or(|t| body["msgtype"] == t)
            && self
                .finish
                .is_none_or(|f| body["stream"]["finish"].as_bool() == Some(f))
            && self
                .req_id
                .as_deref()
                .is_none_or(|r| frame["headers"]["req_id"] == r)
            && self
                .containing
                .as_deref()
                .is_none_or(|t| body.to_string().contains(t))
    }
}

#[derive(Debug)]
struct Rule {
    matcher: Match,
    /// `Some(code)` answers that errcode; `None` withholds the ACK.
    code: Option<i64>,
    remaining: u32,
}

/// What the server knows about a callback it pushed.
#[derive(Debug, Clone)]
pub(crate) struct PushedInfo {
    pub bot: String,
    pub chat_id: String,
    pub is_group: bool,
    pub conn: Option<u64>,
    pub at: Instant,
    pub event: Option<String>,
    /// A `template_card_event`'s `task_id` (nested first, then flat; §0 #19), filled by `push`.
    pub task_id: Option<String>,
}

/// The one stream of an inbound message.
#[derive(Debug)]
struct StreamInfo {
    id: String,
    finished: bool,
}

#[derive(Debug)]
pub(crate) struct BotState {
    pub secret: String,
    pub live: Option<u64>,
    /// Pushes made while no connection was subscribed; sent right before the next subscribe ACK.
    pub pending: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct ConnState {
    pub bot: Option<String>,
    pub tx: mpsc::UnboundedSender<Out>,
}

/// Tunables set by the test.
#[derive(Debug, Clone)]
pub(crate) struct Behaviour {
    pub answer_pings: bool,
    pub ack_delay: Duration,
    pub stream_window: Option<Duration>,
    pub reply_window: Option<Duration>,
    pub rate_limit: Option<usize>,
    pub group_proactive: bool,
    pub req_ids_survive_reconnect: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            answer_pings: true,
            ack_delay: Duration::ZERO,
            stream_window: Some(STREAM_WINDOW),
            reply_window: None,
            rate_limit: None,
            group_proactive: true,
            req_ids_survive_reconnect: false,
        }
    }
}

/// The whole server state, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub bots: HashMap<String, BotState>,
    pub conns: HashMap<u64, ConnState>,
    pub next_conn: u64,
    pub log: Vec<Received>,
    pub subscribes: Vec<Subscribe>,
    pub pushed: HashMap<String, PushedInfo>,
    pub groups: HashSet<String>,
    pub uploads: Uploads,
    pub violations: Vec<String>,
    pub behaviour: Behaviour,
    /// WebSocket-protocol pongs received.
    pub pongs: usize,
    /// What each callback's `req_id` carried so far.
    replies: HashMap<String, Passive>,
    /// `(bot, task_id)` of every card sent: task ids are unique per bot (§9).
    task_ids: HashSet<(String, String)>,
    rules: Vec<Rule>,
    rate: HashMap<String, VecDeque<Instant>>,
    seq: u64,
}

/// One write the server performs after handling a frame.
pub(crate) struct Write {
    pub conn: u64,
    pub out: Out,
    pub delay: Duration,
}

fn answer(req_id: &str, code: i64, errmsg: &str, body: Option<Value>) -> String {
    let mut v = json!({ "headers": { "req_id": req_id }, "errcode": code, "errmsg": errmsg });
    if let Some(b) = body {
        v["body"] = b;
    }
    v.to_string()
}

impl State {
    pub(crate) fn new(bots: Vec<(String, String)>) -> Self {
        Self {
            bots: bots
                .into_iter()
                .map(|(id, secret)| {
                    (
                        id,
                        BotState {
                            secret,
                            live: None,
                            pending: Vec::new(),
                        },
                    )
                })
                .collect(),
            conns: HashMap::new(),
            next_conn: 1,
            log: Vec::new(),
            subscribes: Vec::new(),
            pushed: HashMap::new(),
            groups: HashSet::new(),
            uploads: Uploads::default(),
            violations: Vec::new(),
            behaviour: Behaviour::default(),
            pongs: 0,
            replies: HashMap::new(),
            task_ids: HashSet::new(),
            rules: Vec::new(),
            rate: HashMap::new(),
            seq: 0,
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}", self.seq)
    }

    pub(crate) fn add_rule(&mut self, matcher: Match, code: Option<i64>, times: u32) {
        self.rules.push(Rule {
            matcher,
            code,
            remaining: times,
        });
    }

    /// A connection ended.
    pub(crate) fn closed(&mut self, conn: u64) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(bot) = c.bot.and_then(|b| self.bots.get_mut(&b)) {
                if bot.live == Some(conn) {
                    bot.live = None;
                }
            }
        }
    }

    /// Writes a text frame to `conn`.
    pub(crate) fn write(&self, conn: u64, text: String) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(Out::Text(text));
        }
    }

    /// Pushes a callback to `bot`'s live connection, or keeps it for the next subscribe.
    pub(crate) fn push(&mut self, bot: &str, frame: Value, info: PushedInfo) {
        let req_id = frame["headers"]["req_id"].as_str().unwrap_or("").to_owned();
        if info.is_group {
            self.groups.insert(info.chat_id.clone());
        }
        let live = self.bots.get(bot).and_then(|b| b.live);
        let mut info = info;
        info.conn = live;
        let event = &frame["body"]["event"];
        info.task_id = event["template_card_event"]["task_id"]
            .as_str()
            .or(event["task_id"].as_str())
            .map(str::to_owned);
        self.pushed.insert(req_id, info);
        match live {
            Some(conn) => self.write(conn, frame.to_string()),
            None => {
                if let Some(b) = self.bots.get_mut(bot) {
                    b.pending.push(frame.to_string());
                }
            }
        }
    }

    /// Sends a WebSocket-protocol ping to `bot`'s live connection.
    pub(crate) fn ws_ping(&self, bot: &str) -> bool {
        let Some(conn) = self.bots.get(bot).and_then(|b| b.live) else {
            return false;
        };
        self.conns
            .get(&conn)
            .is_some_and(|c| c.tx.send(Out::Ping).is_ok())
    }

    /// Sends `disconnected_event` to `bot`'s live connection and closes it.
    pub(crate) fn kick(&mut self, bot: &str) -> bool {
        let Some(conn) = self.bots.get(bot).and_then(|b| b.live) else {
            return false;
        };
        let ev = json!({
            "cmd": "aibot_event_callback",
            "headers": { "req_id": self.next_id("kick") },
            "body": { "msgid": self.next_id("evt"), "aibotid": bot, "msgtype": "event",
                      "event": { "eventtype": "disconnected_event" } },
        });
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(Out::Text(ev.to_string()));
            let _ = c.tx.send(Out::Close);
        }
        if let Some(b) = self.bots.get_mut(bot) {
            b.live = None;
        }
        true
    }

    /// Ends `bot`'s live connection: with a close frame (`graceful`) or by dropping it.
    pub(crate) fn end_conn(&mut self, bot: &str, graceful: bool) -> bool {
        let Some(conn) = self.bots.get(bot).and_then(|b| b.live) else {
            return false;
        };
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(if graceful { Out::Close } else { Out::Drop });
        }
        if let Some(b) = self.bots.get_mut(bot) {
            b.live = None;
        }
        true
    }

    /// Handles one client frame; returns what to write. The answer's errcode is noted on the
    /// frame's log entry.
    pub(crate) fn handle(&mut self, conn: u64, text: &str, now: Instant) -> Vec<Write> {
        let logged = self.log.len();
        let writes = self.handle_frame(conn, text, now);
        if let Some(entry) = self.log.get_mut(logged) {
            let req_id = entry.frame["headers"]["req_id"].clone();
            entry.answered = writes.iter().find_map(|w| match &w.out {
                Out::Text(t) => serde_json::from_str::<Value>(t)
                    .ok()
                    .filter(|v| v["headers"]["req_id"] == req_id)
                    .and_then(|v| v["errcode"].as_i64()),
                _ => None,
            });
        }
        writes
    }

    fn handle_frame(&mut self, conn: u64, text: &str, now: Instant) -> Vec<Write> {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            self.violations
                .push(format!("conn {conn}: frame is not JSON"));
            return Vec::new();
        };
        let bot = self.conns.get(&conn).and_then(|c| c.bot.clone());
        self.log.push(Received {
            conn,
            bot: bot.clone(),
            frame: frame.clone(),
            at: now,
            answered: None,
        });
        let cmd = frame["cmd"].as_str().unwrap_or("").to_owned();
        let req_id = frame["headers"]["req_id"].as_str().unwrap_or("").to_owned();
        if req_id.is_empty() {
            self.violations
                .push(format!("conn {conn}: `{cmd}` without headers.req_id"));
        }
        if let Some(b) = &bot {
            if self.bots.get(b).and_then(|s| s.live) != Some(conn) {
                // The server ended this connection (a take-over or a drop): frames still in
                // flight on it are never processed, so nothing is accepted without its answer.
                return Vec::new();
            }
        }
        let delay = self.behaviour.ack_delay;
        let reply = |text: String| {
            vec![Write {
                conn,
                out: Out::Text(text),
                delay,
            }]
        };

        if cmd == "ping" {
            return if self.behaviour.answer_pings {
                vec![Write {
                    conn,
                    out: Out::Text(answer(&req_id, 0, "ok", None)),
                    delay: Duration::ZERO,
                }]
            } else {
                Vec::new()
            };
        }
        // Scripted behaviour first.
        if let Some(i) = self
            .rules
            .iter()
            .position(|r| r.remaining > 0 && r.matcher.matches(&frame))
        {
            self.rules[i].remaining -= 1;
            return match self.rules[i].code {
                Some(code) => reply(answer(&req_id, code, "scripted failure", None)),
                None => Vec::new(),
            };
        }
        if cmd == "aibot_subscribe" {
            return self.subscribe(conn, &frame, &req_id);
        }
        let Some(bot) = bot else {
            return reply(answer(
                &req_id,
                846609,
                "aibot websocket not subscribed",
                None,
            ));
        };
        let result = match cmd.as_str() {
            "aibot_respond_msg" => self.respond(conn, &bot, &req_id, &frame["body"], now),
            "aibot_send_msg" => self.send_msg(&bot, &frame["body"], now),
            "aibot_respond_welcome_msg" => self.welcome(conn, &bot, &req_id, &frame["body"], now),
            "aibot_respond_update_msg" => self.update(conn, &bot, &req_id, &frame["body"], now),
            "aibot_upload_media_init" => self.uploads.init(&frame["body"], &mut self.violations),
            "aibot_upload_media_chunk" => self.uploads.chunk(&frame["body"], &mut self.violations),
            "aibot_upload_media_finish" => {
                self.uploads.finish(&frame["body"], &mut self.violations)
            }
            other => self.breach(ERR_INVALID_MSGTYPE, format!("unknown cmd `{other}`")),
        };
        match result {
            Ok(body) => reply(answer(&req_id, 0, "ok", body)),
            Err((code, msg)) => reply(answer(&req_id, code, &msg, None)),
        }
    }

    fn subscribe(&mut self, conn: u64, frame: &Value, req_id: &str) -> Vec<Write> {
        let body = &frame["body"];
        let s = |k: &str| body[k].as_str().unwrap_or("").to_owned();
        let (bot_id, secret, device_id) = (s("bot_id"), s("secret"), s("device_id"));
        let accepted = self.bots.get(&bot_id).is_some_and(|b| b.secret == secret);
        self.subscribes.push(Subscribe {
            conn,
            bot_id: bot_id.clone(),
            secret,
            device_id,
            accepted,
        });
        let mut writes = Vec::new();
        if !accepted {
            writes.push(Write {
                conn,
                out: Out::Text(answer(req_id, 40013, "invalid secret", None)),
                delay: Duration::ZERO,
            });
            writes.push(Write {
                conn,
                out: Out::Close,
                delay: Duration::ZERO,
            });
            return writes;
        }
        let already = self.conns.get(&conn).and_then(|c| c.bot.clone()).is_some();
        if !already {
            // One live connection per bot: a second subscribe kicks the first.
            if self
                .bots
                .get(&bot_id)
                .and_then(|b| b.live)
                .is_some_and(|l| l != conn)
            {
                self.kick(&bot_id);
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bot = Some(bot_id.clone());
            }
            let pending = match self.bots.get_mut(&bot_id) {
                Some(b) => {
                    b.live = Some(conn);
                    std::mem::take(&mut b.pending)
                }
                None => Vec::new(),
            };
            // Callbacks queued while offline go out before the ACK, as a real server may race.
            for text in pending {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if let Some(p) = v["headers"]["req_id"]
                        .as_str()
                        .and_then(|r| self.pushed.get_mut(r))
                    {
                        p.conn = Some(conn);
                    }
                }
                writes.push(Write {
                    conn,
                    out: Out::Text(text),
                    delay: Duration::ZERO,
                });
            }
        }
        writes.push(Write {
            conn,
            out: Out::Text(answer(req_id, 0, "ok", None)),
            delay: self.behaviour.ack_delay,
        });
        writes
    }

    /// Counts a user-visible message for `chat` against the per-minute limit.
    fn rate_ok(&mut self, chat: &str, now: Instant) -> bool {
        let Some(limit) = self.behaviour.rate_limit else {
            return true;
        };
        let q = self.rate.entry(chat.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= limit {
            return false;
        }
        q.push_back(now);
        true
    }

    /// A media body (`{media_id, title?, description?}`) names a finished upload.
    fn media_ok(&mut self, media: &Value, what: &str) -> Result<(), (i64, String)> {
        let id = media["media_id"].as_str().unwrap_or("");
        if !self.uploads.media_ids.contains(id) {
            return self.breach(40007, format!("{what} with unknown media_id {id}"));
        }
        Ok(())
    }

    /// `aibot_send_msg` (§2.6): markdown, a template card or media, to a DM user or a group.
    fn send_msg(&mut self, bot: &str, body: &Value, now: Instant) -> Answer {
        let chat = body["chatid"].as_str().unwrap_or("").to_owned();
        if chat.is_empty() {
            return self.breach(93006, "aibot_send_msg without chatid".into());
        }
        if self.groups.contains(&chat) && !self.behaviour.group_proactive {
            return Err((600039, "device type not support".into()));
        }
        let msgtype = body["msgtype"].as_str().unwrap_or("");
        match msgtype {
            "markdown" => {
                let content = body["markdown"]["content"].as_str().unwrap_or("");
                if content.is_empty() {
                    let what = format!("empty markdown to {chat}");
                    return self.breach(ERR_EMPTY_CONTENT, what);
                }
                if content.len() > MARKDOWN_MAX_BYTES {
                    let what = format!("markdown of {} bytes", content.len());
                    return self.breach(45002, what);
                }
            }
            "template_card" => self.claim_card(bot, &body["template_card"])?,
            "image" | "file" | "voice" | "video" => self.media_ok(&body[msgtype], "send")?,
            other => {
                return self.breach(ERR_INVALID_MSGTYPE, format!("send with msgtype `{other}`"));
            }
        }
        if !self.rate_ok(&chat, now) {
            return Err((846607, "rate limit".into()));
        }
        Ok(None)
    }
}
