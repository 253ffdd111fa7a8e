//! Fake AI Bot long-connection server (openws) for tests and the sandbox: a WebSocket server on
//! 127.0.0.1:0 that checks subscribe credentials, ACKs requests, pushes scripted callbacks and
//! events, records every frame it receives, and can drop the socket, stop answering pings, kick
//! (`disconnected_event`), delay or withhold ACKs, answer chosen errcodes, accept chunked uploads,
//! and serve AES-encrypted media over HTTP. Protocol facts: reference `wecom-aibot-official.md`
//! (which supersedes `wecom-aibot.md`).
//!
//! By default it is strict, modelled on the official client (`@wecom/aibot-node-sdk`):
//! - one passive reply per inbound message `req_id`: one stream (same `stream.id` on every
//!   frame; the card part of `stream_with_template_card` once), or one card, or one media reply.
//!   Anything more answers [`ERR_REPLY_USED`] (899001), **the emulator's own code, not WeCom's**
//!   (the real answer is unknown), and is a violation;
//! - no passive `markdown`/`text` (40008); no stream on an event's `req_id` (846605); welcome
//!   only on `enter_chat` within 5 s, card updates only on `template_card_event` within 5 s with
//!   the event's `task_id`;
//! - stream frames more than 6 minutes after the inbound message answer 846608
//!   ([`OpenWs::stream_window`] changes the window);
//! - `aibot_send_msg` to DMs and groups with markdown, a template card or media;
//! - template cards validated (type, required fields, `task_id` unique per bot, ≤128 bytes);
//! - closing stream frames without visible text are acked but recorded as violations.
//!
//! Refusals are recorded in [`OpenWs::frames`] (the errcode in [`Received::answered`]); breaches
//! of the protocol also in [`OpenWs::violations`].
//!
//! ```no_run
//! # async fn demo() {
//! use wecom_emulator::openws::{Chat, Match, Msg, OpenWs};
//! let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
//! // ... start a gateway with websocket_url = emu.url() ...
//! emu.wait_subscribed(1).await;
//! let pushed = emu.push_text(Chat::dm("alice"), "hi");
//! emu.fail_next(Match::stream_final(), 846608);
//! let reply = emu.expect_reply(&pushed.req_id).await;
//! assert!(reply.text().starts_with("echo: hi"));
//! # }
//! ```

mod codes;
mod media;
mod msg;
mod reply;
mod server;
mod state;
mod uploads;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use codes::{
    CARD_UPDATE_WINDOW, ERR_EMPTY_CONTENT, ERR_INVALID_MSGTYPE, ERR_INVALID_PARAMETER,
    ERR_INVALID_REQ_ID, ERR_REPLY_USED, ERR_STREAM_EXPIRED, ERR_WINDOW_EXPIRED, STREAM_WINDOW,
    WELCOME_WINDOW,
};
pub use msg::{Chat, MediaRef, Msg};
pub use reply::{Bubble, Reply};
pub use state::{Match, Received, Subscribe, Upload, MARKDOWN_MAX_BYTES, STREAM_MAX_BYTES};

use server::Shared;
use state::{PushedInfo, State};

/// How long the `wait_*` helpers wait by default before failing the test.
const WAIT: Duration = Duration::from_secs(30);

/// Configures an [`OpenWs`] before it starts.
#[derive(Debug, Default)]
pub struct OpenWsBuilder {
    bots: Vec<(String, String)>,
    patience: Option<Duration>,
}

impl OpenWsBuilder {
    /// Accepts subscribes from `bot_id` with `secret`. The first bot is the default target of
    /// the `push_*` helpers; use [`OpenWs::bot`] for the others.
    pub fn bot(mut self, bot_id: &str, secret: &str) -> Self {
        self.bots.push((bot_id.to_owned(), secret.to_owned()));
        self
    }

    /// How long the `wait_*` helpers wait (tokio time) before failing; 30 s by default. Tests
    /// under paused time that wait through minutes of backoff raise it.
    pub fn patience(mut self, wait: Duration) -> Self {
        self.patience = Some(wait);
        self
    }

    /// Binds the WebSocket server and the media host on 127.0.0.1, port 0.
    pub async fn start(self) -> OpenWs {
        let patience = self.patience.unwrap_or(WAIT);
        let mut bots = self.bots;
        if bots.is_empty() {
            bots.push(("bot-1".into(), "secret-1".into()));
        }
        let default_bot = bots[0].0.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(bots)),
            changed: tokio::sync::Notify::new(),
        });
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the openws emulator");
        let ws_addr = listener.local_addr().expect("local address");
        tokio::spawn(server::accept_loop(listener, shared.clone(), stop.clone()));
        let library: media::Library = Arc::default();
        let media_addr = media::start(library.clone(), stop.clone())
            .await
            .expect("bind the media host");
        OpenWs {
            shared,
            ws_addr,
            media_addr,
            library,
            default_bot,
            stop,
            patience,
        }
    }
}

/// Opens in-memory connections to an [`OpenWs`] (see [`OpenWs::in_memory`]).
#[derive(Debug, Clone)]
pub struct InMemoryDialer {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl InMemoryDialer {
    /// A new connection: the client end of a duplex stream whose server end is being served.
    pub fn connect(&self) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(server::serve_io(
            server,
            self.shared.clone(),
            self.stop.clone(),
        ));
        client
    }
}

/// A pushed callback: its `req_id` (the reply handle) and `msgid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `headers.req_id`.
    pub req_id: String,
    /// `body.msgid`.
    pub msgid: String,
}

/// The running fake server. Dropping it stops it.
#[derive(Debug)]
pub struct OpenWs {
    shared: Arc<Shared>,
    ws_addr: SocketAddr,
    media_addr: SocketAddr,
    library: media::Library,
    default_bot: String,
    stop: CancellationToken,
    patience: Duration,
}

impl Drop for OpenWs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The push helpers of one bot (see [`OpenWs::bot`]).
#[derive(Debug)]
pub struct BotView<'a> {
    emu: &'a OpenWs,
    bot: String,
}

impl BotView<'_> {
    /// Pushes a message callback.
    pub fn push(&self, chat: Chat, msg: Msg) -> Pushed {
        self.emu.push_as(&self.bot, "aibot_msg_callback", chat, msg)
    }

    /// Pushes a text message.
    pub fn push_text(&self, chat: Chat, text: &str) -> Pushed {
        self.push(chat, Msg::text(text))
    }

    /// Waits for `n` accepted subscribes of this bot.
    pub async fn wait_subscribed(&self, n: usize) -> Vec<Subscribe> {
        self.emu.wait_subscribed_as(&self.bot, n).await
    }

    /// Kicks this bot's connection.
    pub fn kick(&self) -> bool {
        self.emu.shared.lock().kick(&self.bot)
    }
}

impl OpenWs {
    /// A builder.
    pub fn builder() -> OpenWsBuilder {
        OpenWsBuilder::default()
    }

    /// The `ws://` URL to configure as `websocket_url`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.ws_addr)
    }

    /// A dialer that reaches this server over in-memory streams instead of TCP. Tests under
    /// paused tokio time use it: with kernel sockets the auto-advancing clock can fire timers
    /// while bytes are still in flight.
    pub fn in_memory(&self) -> InMemoryDialer {
        InMemoryDialer {
            shared: self.shared.clone(),
            stop: self.stop.clone(),
        }
    }

    /// The push helpers of another configured bot.
    pub fn bot(&self, bot_id: &str) -> BotView<'_> {
        BotView {
            emu: self,
            bot: bot_id.to_owned(),
        }
    }

    // ---- pushing callbacks --------------------------------------------------------------

    /// Pushes a message callback from the default bot's point of view. Without a live
    /// connection it is kept and sent right before the next subscribe ACK.
    pub fn push(&self, chat: Chat, msg: Msg) -> Pushed {
        self.push_as(&self.default_bot.clone(), "aibot_msg_callback", chat, msg)
    }

    /// Pushes a text message.
    pub fn push_text(&self, chat: Chat, text: &str) -> Pushed {
        self.push(chat, Msg::text(text))
    }

    /// Pushes a message with the legacy `aibot_callback` command.
    pub fn push_legacy(&self, chat: Chat, msg: Msg) -> Pushed {
        self.push_as(&self.default_bot.clone(), "aibot_callback", chat, msg)
    }

    fn push_as(&self, bot: &str, cmd: &str, chat: Chat, msg: Msg) -> Pushed {
        let mut st = self.shared.lock();
        let req_id = random_id("req");
        let msgid = msg.msgid.clone().unwrap_or_else(|| random_id("msg"));
        let mut body = msg.fields;
        chat.fill(&mut body);
        body.insert("msgid".into(), json!(msgid));
        body.insert("aibotid".into(), json!(bot));
        body.insert("create_time".into(), json!(1_700_000_000));
        let frame = json!({ "cmd": cmd, "headers": { "req_id": req_id }, "body": body });
        let info = PushedInfo {
            bot: bot.to_owned(),
            chat_id: chat.chat_id().to_owned(),
            is_group: chat.is_group(),
            conn: None,
            at: Instant::now(),
            event: None,
            task_id: None,
        };
        st.push(bot, frame, info);
        Pushed { req_id, msgid }
    }

    /// Pushes an event callback `eventtype` with extra `event` fields.
    pub fn push_event(&self, chat: Chat, eventtype: &str, fields: Value) -> Pushed {
        let mut st = self.shared.lock();
        let bot = self.default_bot.clone();
        let req_id = random_id("evtreq");
        let msgid = random_id("evt");
        let mut event = json!({ "eventtype": eventtype });
        if let (Some(e), Value::Object(extra)) = (event.as_object_mut(), fields) {
            e.extend(extra);
        }
        let mut body = serde_json::Map::new();
        chat.fill(&mut body);
        body.insert("msgid".into(), json!(msgid));
        body.insert("aibotid".into(), json!(bot));
        body.insert("msgtype".into(), json!("event"));
        body.insert("event".into(), event);
        let frame =
            json!({ "cmd": "aibot_event_callback", "headers": { "req_id": req_id }, "body": body });
        let info = PushedInfo {
            bot: bot.clone(),
            chat_id: chat.chat_id().to_owned(),
            is_group: chat.is_group(),
            conn: None,
            at: Instant::now(),
            event: Some(eventtype.to_owned()),
            task_id: None,
        };
        st.push(&bot, frame, info);
        Pushed { req_id, msgid }
    }

    /// `enter_chat`: `user` opened the bot's chat.
    pub fn enter_chat(&self, user: &str) -> Pushed {
        self.push_event(Chat::dm(user), "enter_chat", json!({}))
    }

    /// A template card button tap.
    pub fn card_click(&self, chat: Chat, task_id: &str, key: &str) -> Pushed {
        let card =
            json!({ "card_type": "button_interaction", "event_key": key, "task_id": task_id });
        self.push_event(
            chat,
            "template_card_event",
            json!({ "template_card_event": card }),
        )
    }

    /// Feedback on a reply.
    pub fn feedback(&self, chat: Chat, id: &str, kind: i64) -> Pushed {
        self.push_event(
            chat,
            "feedback_event",
            json!({ "feedback_event": { "id": id, "type": kind } }),
        )
    }

    /// Sends an arbitrary frame to the default bot's live connection.
    pub fn push_raw(&self, frame: Value) -> bool {
        let st = self.shared.lock();
        match st.bots.get(&self.default_bot).and_then(|b| b.live) {
            Some(conn) => {
                st.write(conn, frame.to_string());
                true
            }
            None => false,
        }
    }

    // ---- connection behaviour -----------------------------------------------------------

    /// Sends `disconnected_event` to the default bot's connection and closes it.
    pub fn kick(&self) -> bool {
        self.shared.lock().kick(&self.default_bot)
    }

    /// Drops the default bot's connection without a close frame.
    pub fn drop_connection(&self) -> bool {
        self.shared.lock().end_conn(&self.default_bot, false)
    }

    /// Closes the default bot's connection gracefully (close frame).
    pub fn close_connection(&self) -> bool {
        self.shared.lock().end_conn(&self.default_bot, true)
    }

    /// Sends a WebSocket-protocol ping on the default bot's connection.
    pub fn ws_ping(&self) -> bool {
        self.shared.lock().ws_ping(&self.default_bot)
    }

    /// WebSocket-protocol pongs received so far.
    pub fn pongs(&self) -> usize {
        self.shared.lock().pongs
    }

    /// Waits until `n` pongs arrived.
    pub async fn wait_pongs(&self, n: usize) {
        self.wait_for(&format!("{n} pongs"), |_| self.pongs() >= n)
            .await;
    }

    /// Stops (or resumes) answering pings.
    pub fn answer_pings(&self, yes: bool) {
        self.shared.lock().behaviour.answer_pings = yes;
    }

    /// Delays every ACK (not ping answers) by `delay`.
    pub fn delay_acks(&self, delay: Duration) {
        self.shared.lock().behaviour.ack_delay = delay;
    }

    /// Answers the next frame matching `m` with `errcode` instead of handling it.
    pub fn fail_next(&self, m: Match, errcode: i64) {
        self.fail(m, errcode, 1);
    }

    /// Answers the next `times` frames matching `m` with `errcode`.
    pub fn fail(&self, m: Match, errcode: i64, times: u32) {
        self.shared.lock().add_rule(m, Some(errcode), times);
    }

    /// Never answers the next `times` frames matching `m`.
    pub fn withhold_ack(&self, m: Match, times: u32) {
        self.shared.lock().add_rule(m, None, times);
    }

    /// Stream frames more than `window` after the inbound message answer 846608; 6 minutes
    /// ([`STREAM_WINDOW`]) by default, as on WeCom. `Duration::MAX` turns the expiry off.
    pub fn stream_window(&self, window: Duration) {
        self.shared.lock().behaviour.stream_window = Some(window);
    }

    /// Replies on callbacks older than `window` answer 846604.
    pub fn reply_window(&self, window: Duration) {
        self.shared.lock().behaviour.reply_window = Some(window);
    }

    /// Enforces at most `per_minute` user-visible messages per chat (846607 beyond).
    pub fn rate_limit(&self, per_minute: usize) {
        self.shared.lock().behaviour.rate_limit = Some(per_minute);
    }

    /// Lets proactive sends into groups succeed (the default, as the official client does).
    /// `false` is the legacy hermes-era model: group sends answer 600039.
    pub fn allow_group_proactive(&self, yes: bool) {
        self.shared.lock().behaviour.group_proactive = yes;
    }

    /// Lets replies use `req_id`s of an earlier connection (by default they answer 846605).
    pub fn req_ids_survive_reconnect(&self, yes: bool) {
        self.shared.lock().behaviour.req_ids_survive_reconnect = yes;
    }

    // ---- media -----------------------------------------------------------------------------

    /// Encrypts `plain` with a fresh key and serves it; returns the URL and `aeskey`.
    pub fn host_media(&self, plain: &[u8]) -> MediaRef {
        let key: [u8; 32] = rand::random();
        let url = self.host_raw(&wecom_common::media::encrypt_media(plain, &key));
        MediaRef {
            url,
            aeskey: wecom_common::media::encode_media_key(&key),
        }
    }

    /// Serves `bytes` as they are (already encrypted, e.g. a test vector); returns the URL.
    pub fn host_raw(&self, bytes: &[u8]) -> String {
        let id = random_id("m");
        let item = media::Hosted {
            bytes: bytes.to_vec(),
            content_type: "application/octet-stream".into(),
            filename: None,
        };
        self.library
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), item);
        format!("http://{}/media/{id}", self.media_addr)
    }

    // ---- inspection --------------------------------------------------------------------------

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Received> {
        self.shared.lock().log.clone()
    }

    /// Every subscribe seen (accepted or not), for all bots.
    pub fn subscribes(&self) -> Vec<Subscribe> {
        self.shared.lock().subscribes.clone()
    }

    /// Protocol breaches seen so far (oversized frames, frames after finish, bad uploads, …).
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Finished uploads.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.lock().uploads.done.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().next_conn - 1
    }

    /// Frames sent on `req_id` with `aibot_respond_msg` (accepted or not), as a reply view.
    pub fn reply(&self, req_id: &str) -> Reply {
        Reply::from_frames(
            self.frames()
                .into_iter()
                .filter(|r| r.cmd() == "aibot_respond_msg" && r.req_id() == req_id)
                .collect(),
        )
    }

    /// `aibot_send_msg` frames to `chatid`.
    pub fn sent_to(&self, chatid: &str) -> Vec<Received> {
        self.frames()
            .into_iter()
            .filter(|r| r.cmd() == "aibot_send_msg" && r.body()["chatid"] == chatid)
            .collect()
    }

    /// Waits until `pred` holds over the received frames (see [`OpenWsBuilder::patience`]),
    /// returning them.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let waited = tokio::time::timeout(self.patience, async {
            loop {
                let notified = self.shared.changed.notified();
                let frames = self.frames();
                if pred(&frames) {
                    return frames;
                }
                notified.await;
            }
        })
        .await;
        match waited {
            Ok(f) => f,
            Err(_) => panic!(
                "timed out waiting for {what}; frames: {:#?}; violations: {:?}",
                self.frames().iter().map(|r| &r.frame).collect::<Vec<_>>(),
                self.violations()
            ),
        }
    }

    /// Waits until `n` subscribes of the default bot were accepted.
    pub async fn wait_subscribed(&self, n: usize) -> Vec<Subscribe> {
        self.wait_subscribed_as(&self.default_bot.clone(), n).await
    }

    async fn wait_subscribed_as(&self, bot: &str, n: usize) -> Vec<Subscribe> {
        let accepted = |all: &[Subscribe]| -> Vec<Subscribe> {
            all.iter()
                .filter(|s| s.accepted && s.bot_id == bot)
                .cloned()
                .collect()
        };
        self.wait_for(&format!("{n} accepted subscribes of {bot}"), |_| {
            accepted(&self.subscribes()).len() >= n
        })
        .await;
        // The ACK is written right after the record; give the client its turn to read it.
        self.wait_until_live(bot).await;
        accepted(&self.subscribes())
    }

    async fn wait_until_live(&self, bot: &str) {
        for _ in 0..100 {
            if self
                .shared
                .lock()
                .bots
                .get(bot)
                .is_some_and(|b| b.live.is_some())
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Waits until the reply on `req_id` satisfies `pred`.
    pub async fn wait_reply(&self, req_id: &str, pred: impl Fn(&Reply) -> bool) -> Reply {
        let req = req_id.to_owned();
        self.wait_for(&format!("reply on {req_id}"), |frames| {
            let view = Reply::from_frames(
                frames
                    .iter()
                    .filter(|r| r.cmd() == "aibot_respond_msg" && r.req_id() == req)
                    .cloned()
                    .collect(),
            );
            pred(&view)
        })
        .await;
        self.reply(req_id)
    }

    /// Waits until the reply on `req_id` has a finished bubble and no open one.
    pub async fn expect_reply(&self, req_id: &str) -> Reply {
        self.wait_reply(req_id, Reply::is_complete).await
    }

    /// Waits until `n` proactive sends reached `chatid`.
    pub async fn wait_sent(&self, chatid: &str, n: usize) -> Vec<Received> {
        let chat = chatid.to_owned();
        self.wait_for(&format!("{n} sends to {chatid}"), |frames| {
            frames
                .iter()
                .filter(|r| r.cmd() == "aibot_send_msg" && r.body()["chatid"] == chat)
                .count()
                >= n
        })
        .await;
        self.sent_to(chatid)
    }

    /// Frames per command, for quick assertions.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.frames() {
            *m.entry(r.cmd().to_owned()).or_default() += 1;
        }
        m
    }
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
