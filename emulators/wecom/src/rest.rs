//! A fake WeCom REST API for self-built apps (wecom-callback reference §5: `gettoken`,
//! `message/send`, `media/upload`, `media/get`, with the error codes of §5.5) and a callback
//! signer that plays WeCom's side of the callbacks (§1, §2).
//!
//! The API runs on `127.0.0.1:0`, records every call, and can be told to misbehave:
//!
//! ```text
//! let emu = FakeWeComApi::start().await;
//! let app = emu.app("ww-corp-a", 1000002);           // credentials WeCom would issue
//! app.set_callback_url(format!("http://{addr}/wecom/callback"));
//! app.push_text("alice", "hi").await;                 // a signed, encrypted POST
//! let sent = emu.wait_sent(1).await;                  // what the gateway sent back
//! emu.expire_tokens();                                // next call with an old token: 42001
//! emu.fail_next_send(45009);                          // next message/send: rate limited
//! emu.untrusted_ip(Some("203.0.113.7"));              // every call: 60020
//! emu.fail_sends_at_rate(0.3, &[-1, 42001, 45009], 7); // 30 % of sends fail, reproducibly
//! emu.set_down(true);                                 // every call: HTTP 503 until set_down(false)
//! emu.down_for(Duration::from_secs(20));              // every call: HTTP 503 for 20 s
//! emu.pause_sends();                                  // sends wait unanswered…
//! emu.wait_sends_waiting(1).await;                    // (one is held now: sends_waiting() == 1)
//! emu.resume_sends();                                 // …until released
//! emu.delay_media_get(&media_id, Duration::from_secs(10)); // one slow download
//! let texts = emu.sent_contents();                    // [(touser, content)] of text/markdown
//! let two = emu.wait_sent_until(|s| s.len() >= 2, Duration::from_secs(1)).await; // None: timeout
//! ```

mod multipart;
mod server;
mod signer;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore as _;
use serde_json::Value;
use tokio::sync::Notify;

pub use signer::{FakeApp, Posted};

/// The REST endpoints the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /cgi-bin/gettoken`.
    GetToken,
    /// `POST /cgi-bin/message/send`.
    Send,
    /// `POST /cgi-bin/media/upload`.
    Upload,
    /// `GET /cgi-bin/media/get`.
    MediaGet,
}

/// One recorded API call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The errcode answered (0 = success).
    pub errcode: i64,
    /// `corp_id:agent_id` of the app the call authenticated as, when known.
    pub app: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A successful `message/send`.
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// CorpID of the token's app.
    pub corp_id: String,
    /// AgentId of the token's app.
    pub agent_id: i64,
    /// The access token used.
    pub token: String,
    /// The JSON body.
    pub body: Value,
}

impl SentMessage {
    /// `touser`, if set.
    pub fn touser(&self) -> Option<&str> {
        self.body.get("touser").and_then(Value::as_str)
    }

    /// `msgtype`.
    pub fn msgtype(&self) -> &str {
        self.body
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `agentid` from the body.
    pub fn body_agent_id(&self) -> Option<i64> {
        self.body.get("agentid").and_then(Value::as_i64)
    }

    /// The text of a `text` or `markdown` message.
    pub fn content(&self) -> Option<&str> {
        self.body.get(self.msgtype())?.get("content")?.as_str()
    }

    /// The `media_id` of an image/voice/video/file message.
    pub fn media_id(&self) -> Option<&str> {
        self.body.get(self.msgtype())?.get("media_id")?.as_str()
    }
}

/// A successful `media/upload`.
#[derive(Debug, Clone)]
pub struct Upload {
    /// CorpID of the token's app.
    pub corp_id: String,
    /// The `type` parameter.
    pub kind: String,
    /// The multipart file name.
    pub filename: String,
    /// The multipart content type.
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The media id handed out.
    pub media_id: String,
}

/// Media served by `media/get`.
#[derive(Debug, Clone)]
struct StoredMedia {
    bytes: Vec<u8>,
    content_type: String,
    filename: String,
}

#[derive(Debug, Clone)]
struct AppCreds {
    corp_id: String,
    secret: String,
    agent_id: i64,
}

#[derive(Debug, Clone)]
struct IssuedToken {
    app: usize,
    expired: bool,
}

#[derive(Debug, Default)]
struct State {
    apps: Vec<AppCreds>,
    tokens: HashMap<String, IssuedToken>,
    token_seq: u64,
    token_lifetime: u64,
    failures: HashMap<Endpoint, VecDeque<i64>>,
    delays: HashMap<Endpoint, VecDeque<Duration>>,
    untrusted_ip: Option<String>,
    media: HashMap<String, StoredMedia>,
    media_seq: u64,
    sent: Vec<SentMessage>,
    uploads: Vec<Upload>,
    calls: Vec<Call>,
    /// Random `message/send` failures: probability, codes (round-robin), seeded generator.
    send_faults: Option<SendFaults>,
    /// Every endpoint answers HTTP 503 while set (until the instant, when there is one).
    down: Option<Option<std::time::Instant>>,
    /// `message/send` requests wait in the handler while set.
    sends_paused: bool,
    /// `message/send` requests waiting now.
    sends_waiting: usize,
    /// `media/get` of these media ids answers only after the delay.
    media_delays: HashMap<String, Duration>,
    /// Error answers quote the request line (see [`FakeWeComApi::echo_requests_in_errors`]).
    echo_requests: bool,
}

/// Random failures of `message/send` (see [`FakeWeComApi::fail_sends_at_rate`]).
#[derive(Debug)]
struct SendFaults {
    rate: f64,
    codes: Vec<i64>,
    next_code: usize,
    rng: rand::rngs::StdRng,
}

impl SendFaults {
    /// The errcode for the next send, if it is to fail.
    fn roll(&mut self) -> Option<i64> {
        use rand::Rng as _;
        if self.codes.is_empty() || self.rng.random::<f64>() >= self.rate {
            return None;
        }
        let code = self.codes[self.next_code % self.codes.len()];
        self.next_code += 1;
        Some(code)
    }
}

/// Shared between the handle and the server.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Notify,
    /// Wakes paused `message/send` requests.
    resumed: Notify,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_waiters();
        r
    }
}

/// The fake REST API. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeWeComApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWeComApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The errcode recorded for calls answered HTTP 503 while the fake is down.
pub const DOWN_ERRCODE: i64 = -503;

/// How long the `wait_*` helpers wait before panicking.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

impl FakeWeComApi {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token_lifetime: 7200,
                ..State::default()
            }),
            changed: Notify::new(),
            resumed: Notify::new(),
        });
        let app = server::router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>`: the `api_base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers an app with fresh random credentials and returns WeCom's side of it (the
    /// signer for its callbacks). Put its credentials into the gateway config.
    pub fn app(&self, corp_id: &str, agent_id: i64) -> FakeApp {
        let mut rng = rand::rng();
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let encoding_aes_key = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key);
        let token = format!("tok{:08x}", rng.next_u32());
        let secret = format!("secret-{:016x}", rng.next_u64());
        self.register_app(corp_id, &secret, agent_id);
        FakeApp::new(corp_id, &secret, agent_id, &token, &encoding_aes_key)
    }

    /// Registers fixed credentials (e.g. the fixture app of the test vectors).
    pub fn register_app(&self, corp_id: &str, secret: &str, agent_id: i64) {
        self.shared.with(|s| {
            s.apps.push(AppCreds {
                corp_id: corp_id.into(),
                secret: secret.into(),
                agent_id,
            })
        });
    }

    /// Marks every token issued so far as expired: their next use answers 42001.
    pub fn expire_tokens(&self) {
        self.shared
            .with(|s| s.tokens.values_mut().for_each(|t| t.expired = true));
    }

    /// `expires_in` of new tokens (default 7200).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.with(|s| s.token_lifetime = secs);
    }

    /// The next call to `endpoint` answers `errcode` (queued; several calls queue several).
    pub fn fail_next(&self, endpoint: Endpoint, errcode: i64) {
        self.shared
            .with(|s| s.failures.entry(endpoint).or_default().push_back(errcode));
    }

    /// The next `message/send` answers `errcode`.
    pub fn fail_next_send(&self, errcode: i64) {
        self.fail_next(Endpoint::Send, errcode);
    }

    /// The next call to `endpoint` is answered after `delay`.
    pub fn delay_next(&self, endpoint: Endpoint, delay: Duration) {
        self.shared
            .with(|s| s.delays.entry(endpoint).or_default().push_back(delay));
    }

    /// With `Some(ip)`, every call answers 60020 naming `ip` as the caller; `None` lifts it.
    pub fn untrusted_ip(&self, ip: Option<&str>) {
        self.shared.with(|s| s.untrusted_ip = ip.map(str::to_owned));
    }

    /// From now on every `message/send` fails with probability `rate`, answering the `codes`
    /// in turn (e.g. `[-1, 42001, 45009]`); `seed` makes the sequence reproducible. A 42001
    /// also expires the token used, as a real expiry would. Failed sends are in
    /// [`FakeWeComApi::calls`] with their errcode and never in [`FakeWeComApi::sent`].
    /// `fail_sends_at_rate(0.0, &[], 0)` turns it off (as does an empty `codes`); calling it
    /// again replaces the setting and restarts the sequence.
    ///
    /// One draw per `message/send` that reaches the injection step (after the queued
    /// [`FakeWeComApi::fail_next`] and [`FakeWeComApi::untrusted_ip`] failures), so the same
    /// seed and the same sequence of sends fail the same sends. A send whose token is refused
    /// (missing, unknown, expired) still draws, and answers the token's errcode.
    pub fn fail_sends_at_rate(&self, rate: f64, codes: &[i64], seed: u64) {
        use rand::SeedableRng as _;
        self.shared.with(|s| {
            s.send_faults = (rate > 0.0 && !codes.is_empty()).then(|| SendFaults {
                rate,
                codes: codes.to_vec(),
                next_code: 0,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
            })
        });
    }

    /// While `down`, every endpoint answers HTTP 503 with no JSON (a load balancer in front of
    /// a dead backend). Such calls are recorded with errcode [`DOWN_ERRCODE`]. A call arriving
    /// while down is refused at once, without waiting out a paused send, a queued delay or a
    /// per-media delay (queued failures and delays are kept for after the outage).
    pub fn set_down(&self, down: bool) {
        self.shared.with(|s| s.down = down.then_some(None));
    }

    /// While set, every error answer quotes the full request line, query string included — as
    /// some proxies and API gateways do — so secrets in the URL (`corpsecret`, `access_token`)
    /// come back in `errmsg` (or in the plain-text body of a 503). For testing that the
    /// gateway never repeats them.
    pub fn echo_requests_in_errors(&self, on: bool) {
        self.shared.with(|s| s.echo_requests = on);
    }

    /// Down (see [`FakeWeComApi::set_down`]) for `d` from now, then up by itself (checked as
    /// calls arrive). A `d` too large for an `Instant` means down until `set_down(false)`.
    pub fn down_for(&self, d: Duration) {
        let until = std::time::Instant::now().checked_add(d);
        self.shared.with(|s| s.down = Some(until));
    }

    /// `message/send` requests wait in the handler, unanswered, until
    /// [`FakeWeComApi::resume_sends`]. A held send whose client gives up (or dies) is not
    /// delivered: its handler is dropped with the connection before it records anything (it
    /// is in neither [`FakeWeComApi::sent`] nor [`FakeWeComApi::calls`]).
    pub fn pause_sends(&self) {
        self.shared.with(|s| s.sends_paused = true);
    }

    /// Lets held and new `message/send` requests through.
    pub fn resume_sends(&self) {
        self.shared.with(|s| s.sends_paused = false);
        self.shared.resumed.notify_waiters();
    }

    /// `message/send` requests held by [`FakeWeComApi::pause_sends`] right now.
    pub fn sends_waiting(&self) -> usize {
        self.shared.with(|s| s.sends_waiting)
    }

    /// Waits until exactly `n` sends are held (`1`: a send has arrived and waits; `0`: the held
    /// sends were released or their clients went away), or panics after [`WAIT_TIMEOUT`].
    pub async fn wait_sends_waiting(&self, n: usize) {
        self.wait_for(&format!("{n} held send(s)"), |s| {
            (s.sends_waiting == n).then_some(())
        })
        .await
    }

    /// `media/get` of `media_id` answers only after `d`, every time (one user's slow download
    /// while the others are fast). Calling it again replaces the delay; `Duration::ZERO`
    /// makes it fast again.
    pub fn delay_media_get(&self, media_id: &str, d: Duration) {
        self.shared
            .with(|s| s.media_delays.insert(media_id.to_owned(), d));
    }

    /// `(touser, content)` of every successful text or markdown send, in order.
    pub fn sent_contents(&self) -> Vec<(String, String)> {
        self.shared.with(|s| {
            s.sent
                .iter()
                .filter_map(|m| {
                    Some((m.touser().unwrap_or("").to_owned(), m.content()?.to_owned()))
                })
                .collect()
        })
    }

    /// Stores media for `media/get` and returns its `media_id`.
    pub fn add_media(&self, bytes: &[u8], content_type: &str, filename: &str) -> String {
        let id = self.shared.with(|s| {
            s.media_seq += 1;
            format!("media-in-{}", s.media_seq)
        });
        self.add_media_with_id(&id, bytes, content_type, filename)
    }

    /// Stores media under a chosen `media_id` (e.g. one fixed in a recorded vector).
    pub fn add_media_with_id(
        &self,
        id: &str,
        bytes: &[u8],
        content_type: &str,
        filename: &str,
    ) -> String {
        self.shared.with(|s| {
            let id = id.to_owned();
            s.media.insert(
                id.clone(),
                StoredMedia {
                    bytes: bytes.to_vec(),
                    content_type: content_type.into(),
                    filename: filename.into(),
                },
            );
            id
        })
    }

    /// Every successful `message/send` so far.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.with(|s| s.sent.clone())
    }

    /// Every successful `media/upload` so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.with(|s| s.uploads.clone())
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.with(|s| s.calls.clone())
    }

    /// Calls to `endpoint` so far.
    pub fn calls_to(&self, endpoint: Endpoint) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.endpoint == endpoint)
            .collect()
    }

    /// Every access token issued so far (to check that none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.with(|s| s.tokens.keys().cloned().collect())
    }

    /// Successful `gettoken` calls for `corp_id` so far.
    pub fn tokens_issued(&self, corp_id: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| {
                c.endpoint == Endpoint::GetToken
                    && c.errcode == 0
                    && c.app
                        .as_deref()
                        .is_some_and(|a| a.starts_with(&format!("{corp_id}:")))
            })
            .count()
    }

    /// Waits until `cond` holds for the state (checked on every change), or panics after
    /// [`WAIT_TIMEOUT`].
    async fn wait_for<R>(&self, what: &str, cond: impl FnMut(&State) -> Option<R>) -> R {
        match self.wait_until(WAIT_TIMEOUT, cond).await {
            Some(r) => r,
            None => panic!("timed out waiting for {what}"),
        }
    }

    /// Waits until `cond` holds for the state (checked on every change), or `None` after
    /// `timeout`.
    async fn wait_until<R>(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&State) -> Option<R>,
    ) -> Option<R> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = cond(&self.shared.state.lock().unwrap_or_else(|p| p.into_inner())) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until `pred` holds for the successful sends so far (checked on every change) and
    /// returns them, or `None` after `timeout` (so it also shows that something did *not*
    /// arrive in time).
    pub async fn wait_sent_until(
        &self,
        mut pred: impl FnMut(&[SentMessage]) -> bool,
        timeout: Duration,
    ) -> Option<Vec<SentMessage>> {
        self.wait_until(timeout, |s| pred(&s.sent).then(|| s.sent.clone()))
            .await
    }

    /// Waits until at least `n` messages were sent; returns all of them.
    pub async fn wait_sent(&self, n: usize) -> Vec<SentMessage> {
        self.wait_for(&format!("{n} sent message(s)"), |s| {
            (s.sent.len() >= n).then(|| s.sent.clone())
        })
        .await
    }

    /// Waits until at least `n` calls to `endpoint` were made; returns them.
    pub async fn wait_calls(&self, endpoint: Endpoint, n: usize) -> Vec<Call> {
        self.wait_for(&format!("{n} call(s) to {endpoint:?}"), |s| {
            let calls: Vec<Call> = s
                .calls
                .iter()
                .filter(|c| c.endpoint == endpoint)
                .cloned()
                .collect();
            (calls.len() >= n).then_some(calls)
        })
        .await
    }
}

/// Generates a valid random EncodingAESKey (43 characters).
pub fn random_encoding_aes_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(key)
}
