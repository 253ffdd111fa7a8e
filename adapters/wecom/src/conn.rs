//! The connection runner (reference `wecom-aibot-official.md`): dials the endpoint (directly or
//! through an HTTP CONNECT proxy, §1.1),
//! drives the [`Session`] state machine with socket events, requests and timers, and carries out
//! the actions it returns. It owns the socket; the rest of the adapter talks to it through a
//! bounded command channel and watches its [`Link`] state.
//!
//! Socket endings of every kind (close frame, closing, already closed, read error, EOF) are
//! terminal for that socket and go through the backoff (§6.3); nothing spins. Until the first
//! subscribe is acknowledged, failures go back to `connect` and the router retries: the runner
//! never retries alongside it (refused credentials excepted: those follow §6.4 here).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use gateway_core::health::{HealthReporter, InstanceState};
use gateway_core::AdapterError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::protocol::{self, Incoming};
use crate::session::{Action, CloseReason, Phase, ReqError, Request, Session};

/// Said with every failure to reach WeCom: the usual causes, and where to look.
const OFFLINE_HINT: &str = "Check the network and DNS from this host, and the proxy: the \
    `proxy` key of this platform, else HTTPS_PROXY / ALL_PROXY (and NO_PROXY).";

/// Where a request's answer goes.
pub(crate) type Waiter = oneshot::Sender<Result<Incoming, ReqError>>;

/// A command for the runner.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send and correlate a request.
    Request(Request<Waiter>),
}

/// The connection state other tasks watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Dialling, subscribing, or waiting to reconnect.
    Down,
    /// Subscribed. `generation` changes on every (re-)subscribe, so reply routes learnt on an
    /// older generation can be told apart.
    Up {
        /// Route generation.
        generation: u64,
    },
    /// Kicked by another connection; not reconnecting.
    TakenOver,
    /// Stopped.
    Stopped,
}

/// Which proxy to use for the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    /// `HTTPS_PROXY` / `ALL_PROXY` (and `HTTP_PROXY` for `ws://`), honouring `NO_PROXY`.
    FromEnv,
    /// Never use a proxy.
    Direct,
    /// This proxy URL.
    Url(String),
}

impl ProxyChoice {
    /// From the `proxy` config key.
    pub fn from_config(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => ProxyChoice::FromEnv,
            Some(v) if v.eq_ignore_ascii_case("none") => ProxyChoice::Direct,
            Some(v) => ProxyChoice::Url(v.to_owned()),
        }
    }
}

/// Notice sent when the inbound queue is full, so the user is not silently ignored.
const BUSY_NOTICE: &str =
    "⚠️ I am receiving too many messages right now; please send this again in a minute.";

/// The socket type after dialling over the network.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of an open WebSocket.
pub type WsSink = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;
/// The receiving half of an open WebSocket.
pub type WsStream = Pin<Box<dyn Stream<Item = Result<Message, WsError>> + Send>>;

/// Opens the WebSocket to the endpoint. The adapter uses [`NetConnector`] (TCP, TLS, proxy);
/// tests that run under paused time substitute an in-memory transport, because kernel sockets
/// let tokio's auto-advancing clock fire timers while bytes are still in flight.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects to `url` and completes the WebSocket handshake.
    fn connect<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(WsSink, WsStream), DialError>>;
}

/// The network connector: direct, or through an HTTP CONNECT proxy.
#[derive(Debug, Clone)]
pub struct NetConnector {
    proxy: ProxyChoice,
}

impl NetConnector {
    /// A connector using `proxy`.
    pub fn new(proxy: ProxyChoice) -> Self {
        Self { proxy }
    }
}

impl Connector for NetConnector {
    fn connect<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(WsSink, WsStream), DialError>> {
        Box::pin(async move {
            let (sink, stream) = dial(url, &self.proxy).await?.split();
            Ok((Box::pin(sink) as WsSink, Box::pin(stream) as WsStream))
        })
    }
}

/// Completes the client handshake for `url` over an already open byte stream (used by tests
/// with an in-memory transport).
pub async fn websocket_over<S>(url: &str, io: S) -> Result<(WsSink, WsStream), DialError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _) = tokio_tungstenite::client_async(url, io)
        .await
        .map_err(handshake_error)?;
    let (sink, stream) = ws.split();
    Ok((Box::pin(sink), Box::pin(stream)))
}

/// Everything the runner needs.
pub(crate) struct Runner {
    pub(crate) instance: String,
    pub(crate) session: Session<Waiter>,
    pub(crate) url: String,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) cmds: mpsc::Receiver<Command>,
    pub(crate) inbound: mpsc::Sender<Incoming>,
    pub(crate) link: watch::Sender<Link>,
    pub(crate) health: HealthReporter,
    pub(crate) stop: CancellationToken,
    /// Told the outcome of the first connection attempt, then dropped.
    pub(crate) first: Option<oneshot::Sender<Result<(), AdapterError>>>,
    pub(crate) generation: u64,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// How a served socket ended.
enum Ended {
    /// The socket is gone (closed, errored, or closed by us for a reason).
    Gone,
    /// We are stopping.
    Stop,
}

impl Runner {
    fn report_first(&mut self, result: Result<(), AdapterError>) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(result);
        }
    }

    /// Runs until stopped, taken over, or the first attempt failed.
    pub(crate) async fn run(mut self) {
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let _ = self.link.send_replace(Link::Down);
            // Until the first subscribe is acknowledged, failures go back to `connect`, whose
            // caller (the router) retries with its own backoff and logs it.
            let first_attempt = self.first.is_some();
            let generation = self.generation;
            let dialed = tokio::select! {
                r = tokio::time::timeout(self.connect_timeout, self.connector.connect(&self.url)) => r,
                () = self.stop.cancelled() => break,
            };
            let ended = match dialed {
                Ok(Ok((sink, stream))) => self.serve(sink, stream).await,
                Ok(Err(e)) => {
                    warn!(instance = %self.instance, url = %self.url, error = %e, "Could not open the WeCom connection. {OFFLINE_HINT}");
                    self.health.error(format!("connect: {e}"));
                    self.report_first(Err(AdapterError::Io(format!("connect: {e}"))));
                    if first_attempt {
                        break;
                    }
                    Ended::Gone
                }
                Err(_) => {
                    warn!(instance = %self.instance, url = %self.url, timeout_secs = self.connect_timeout.as_secs_f32(), "Opening the WeCom connection timed out. {OFFLINE_HINT}");
                    self.health.error("connect: timed out");
                    self.report_first(Err(AdapterError::Timeout("connecting to WeCom".into())));
                    if first_attempt {
                        break;
                    }
                    Ended::Gone
                }
            };
            let now = Instant::now();
            let acts = self.session.on_disconnected(now);
            complete_only(acts);
            if matches!(ended, Ended::Stop) || self.stop.is_cancelled() {
                break;
            }
            if self.session.phase() == Phase::Stopped {
                // Credentials refused for good; the first report (if still due) was made.
                let _ = self.link.send_replace(Link::Stopped);
                break;
            }
            if first_attempt && self.generation == generation && !self.session.retrying_auth() {
                // Closed before the first subscribe (a timeout, a close): the router retries
                // `connect` itself, so this runner must not retry too.
                self.report_first(Err(AdapterError::Disconnected(
                    "the connection closed before the subscribe was acknowledged".into(),
                )));
                break;
            }
            match self.session.phase() {
                Phase::TakenOver => {
                    let _ = self.link.send_replace(Link::TakenOver);
                    // Stay alive only to refuse requests until the adapter stops.
                    self.refuse_until_stopped().await;
                    break;
                }
                Phase::Stopped => break,
                _ => {}
            }
            let attempt = u32::try_from(self.session.attempt()).unwrap_or(u32::MAX);
            let delay = self.session.reconnect_in(now).unwrap_or_default();
            if !matches!(
                self.health.snapshot().state,
                InstanceState::AuthFailed { .. }
            ) {
                self.health.reconnecting(attempt);
            }
            warn!(
                instance = %self.instance,
                attempt,
                delay_secs = delay.as_secs_f32(),
                "Reconnecting to WeCom in {:.1} s (attempt {attempt}).",
                delay.as_secs_f32()
            );
            if !self.wait_backoff().await {
                break;
            }
        }
        let acts = self.session.stop();
        complete_only(acts);
        let _ = self.link.send_replace(Link::Stopped);
        self.report_first(Err(AdapterError::Shutdown));
    }

    /// Waits out the backoff, refusing requests meanwhile. False when stopping.
    async fn wait_backoff(&mut self) -> bool {
        loop {
            let deadline = self.session.next_deadline();
            tokio::select! {
                () = self.stop.cancelled() => return false,
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Request(r)) => complete_only(self.session.submit(r, Instant::now())),
                    None => return false,
                },
                () = sleep_until_opt(deadline) => {
                    let acts = self.session.on_tick(Instant::now());
                    let connect = acts.iter().any(|a| matches!(a, Action::Connect));
                    complete_only(acts);
                    if connect {
                        return true;
                    }
                }
            }
        }
    }

    async fn refuse_until_stopped(&mut self) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Request(r)) => complete_only(self.session.submit(r, Instant::now())),
                    None => return,
                },
            }
        }
    }

    /// Serves one socket until it ends.
    async fn serve(&mut self, mut sink: WsSink, mut stream: WsStream) -> Ended {
        let acts = self.session.on_connected(Instant::now());
        if let Some(end) = self.apply(acts, &mut sink).await {
            return end;
        }
        loop {
            let deadline = self.session.next_deadline();
            let acts = tokio::select! {
                // Stopping wins over everything else.
                biased;
                () = self.stop.cancelled() => {
                    let acts = self.session.stop();
                    let _ = self.apply(acts, &mut sink).await;
                    return Ended::Stop;
                }
                // A frame or a socket event from the server.
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.session.on_frame(t.as_str(), Instant::now()),
                    Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                        Ok(t) => self.session.on_frame(t, Instant::now()),
                        Err(_) => {
                            debug!(instance = %self.instance, "Dropped a binary frame that is not UTF-8.");
                            Vec::new()
                        }
                    },
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; flushing sends it now.
                        if sink.flush().await.is_err() {
                            return Ended::Gone;
                        }
                        Vec::new()
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => Vec::new(),
                    Some(Ok(Message::Close(frame))) => {
                        info!(instance = %self.instance, reason = ?frame.map(|f| f.reason.to_string()), "WeCom closed the connection.");
                        return Ended::Gone;
                    }
                    Some(Err(e)) => {
                        warn!(instance = %self.instance, error = %e, "WeCom connection failed.");
                        self.health.error(format!("connection: {e}"));
                        return Ended::Gone;
                    }
                    None => {
                        info!(instance = %self.instance, "WeCom connection ended.");
                        return Ended::Gone;
                    }
                },
                // A request from the adapter.
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Request(r)) => self.session.submit(r, Instant::now()),
                    None => self.session.stop(),
                },
                // Pings, request deadlines, the subscribe deadline.
                () = sleep_until_opt(deadline) => self.session.on_tick(Instant::now()),
            };
            if let Some(end) = self.apply(acts, &mut sink).await {
                return end;
            }
        }
    }

    /// Carries out actions; `Some` when the socket must be given up.
    async fn apply<S>(&mut self, acts: Vec<Action<Waiter>>, sink: &mut S) -> Option<Ended>
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        let mut queue: std::collections::VecDeque<Action<Waiter>> = acts.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(text) => {
                    if let Err(e) = sink.send(Message::text(text)).await {
                        warn!(instance = %self.instance, error = %e, "Writing to WeCom failed.");
                        return Some(Ended::Gone);
                    }
                }
                Action::Complete(w, r) => {
                    let _ = w.send(r);
                }
                Action::Inbound(frame) => match self.inbound.try_send(frame) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(frame)) => {
                        warn!(instance = %self.instance, "Inbound queue full; telling the sender to retry.");
                        if let Some(chat) = frame
                            .is_message()
                            .then(|| protocol::chat_of(&frame.body))
                            .flatten()
                        {
                            let (tx, _rx) = oneshot::channel();
                            let req = Request {
                                frame: protocol::markdown_send(&chat, BUSY_NOTICE),
                                timeout: self.request_timeout,
                                waiter: tx,
                            };
                            queue.extend(self.session.submit(req, Instant::now()));
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                },
                Action::Up { epoch } => {
                    self.generation += 1;
                    let _ = self.link.send_replace(Link::Up {
                        generation: self.generation,
                    });
                    self.health.set_state(InstanceState::Connected);
                    info!(instance = %self.instance, epoch, "Subscribed to WeCom.");
                    self.report_first(Ok(()));
                }
                Action::AuthFailed {
                    code,
                    message,
                    failures,
                    gave_up,
                } => {
                    self.health
                        .error(format!("subscribe refused: {message} (errcode {code})"));
                    if gave_up {
                        let hint = format!(
                            "WeCom refused the bot's credentials {failures} times in a row \
                             (last errcode {code}: {message}); check bot_id and secret \
                             (WECOM_BOT_ID / WECOM_SECRET) in the WeCom admin console, fix the \
                             config (`gateway check`) and restart the gateway"
                        );
                        error!(instance = %self.instance, code, failures, "WeCom refused the bot credentials; giving up until the gateway restarts.");
                        self.health
                            .set_state(InstanceState::AuthFailed { hint: hint.clone() });
                        self.report_first(Err(AdapterError::Auth {
                            message: format!("{message} (errcode {code})"),
                            hint,
                        }));
                    } else {
                        warn!(instance = %self.instance, code, failures, "WeCom refused the subscribe (errcode {code}: {message}); trying again (refusal {failures}).");
                    }
                }
                Action::TakenOver => {
                    let explanation = "another connection subscribed with this bot id and WeCom \
                        disconnected this one (disconnected_event); not reconnecting so the two do \
                        not take turns kicking each other. Stop the other process, then restart this \
                        gateway."
                        .to_owned();
                    error!(instance = %self.instance, "WeCom bot taken over by another connection; not reconnecting.");
                    self.health.set_state(InstanceState::TakenOver {
                        explanation: explanation.clone(),
                    });
                    self.health.error(explanation);
                    let _ = self.link.send_replace(Link::TakenOver);
                }
                Action::Resubscribing => {
                    self.generation += 1;
                    warn!(instance = %self.instance, "WeCom says this connection is no longer subscribed; re-subscribing.");
                    let _ = self.link.send_replace(Link::Up {
                        generation: self.generation,
                    });
                }
                Action::Close(reason) => {
                    match &reason {
                        CloseReason::MissedPings => {
                            warn!(instance = %self.instance, "Pings went unanswered; the connection counts as dead.");
                            self.health.error("pings unanswered; reconnecting");
                        }
                        CloseReason::SubscribeTimeout => {
                            warn!(instance = %self.instance, "No subscribe acknowledgement in time.");
                            self.health.error("subscribe not acknowledged in time");
                            self.report_first(Err(AdapterError::Timeout(
                                "waiting for the subscribe acknowledgement".into(),
                            )));
                        }
                        // Told (and retried or given up) under `Action::AuthFailed`.
                        CloseReason::SubscribeRejected { .. } => {}
                        CloseReason::TakenOver | CloseReason::Stopping => {}
                    }
                    let _ = sink.send(Message::Close(None)).await;
                    let _ = sink.close().await;
                    return Some(if reason == CloseReason::Stopping {
                        Ended::Stop
                    } else {
                        Ended::Gone
                    });
                }
                Action::Connect => {}
            }
        }
        None
    }
}

/// Hands back results of actions produced while no socket is open.
fn complete_only(acts: Vec<Action<Waiter>>) {
    for a in acts {
        if let Action::Complete(w, r) = a {
            let _ = w.send(r);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Why dialling failed. Texts name hosts, never credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The endpoint is not a `ws://` or `wss://` URL.
    #[error("bad endpoint URL")]
    BadUrl,
    /// The proxy URL is not usable.
    #[error("unsupported proxy `{0}`: use an http:// proxy or set proxy: none")]
    BadProxy(String),
    /// The proxy refused or failed.
    #[error("proxy {host}: {detail}")]
    Proxy {
        /// The proxy host.
        host: String,
        /// What went wrong.
        detail: String,
    },
    /// A network error.
    #[error("{0}")]
    Io(String),
    /// The WebSocket handshake failed.
    #[error("WebSocket handshake: {0}")]
    Handshake(String),
}

/// Dials `url`, through a proxy when one applies.
async fn dial(url: &str, proxy: &ProxyChoice) -> Result<Ws, DialError> {
    let uri: Uri = url.parse().map_err(|_| DialError::BadUrl)?;
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(DialError::BadUrl),
    };
    let host = uri
        .host()
        .ok_or(DialError::BadUrl)?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    if secure {
        // Two rustls providers may be compiled in; choosing one avoids a panic on first use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let proxy_url = match proxy {
        ProxyChoice::Direct => None,
        ProxyChoice::Url(u) => Some(u.clone()),
        ProxyChoice::FromEnv => proxy_from_env(secure, &host),
    };
    // Frames are small and answered at once: Nagle's algorithm would hold each one back until
    // the previous one's ACK (about 40 ms per stream frame against delayed ACKs).
    let Some(proxy_url) = proxy_url else {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(handshake_error)?;
        return Ok(ws);
    };
    let proxy = ProxyAddr::parse(&proxy_url)?;
    let stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| DialError::Proxy {
            host: proxy.host.clone(),
            detail: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    let stream = connect_tunnel(stream, &proxy, &host, port).await?;
    let (ws, _) = tokio_tungstenite::client_async_tls(url, stream)
        .await
        .map_err(handshake_error)?;
    Ok(ws)
}

fn handshake_error(e: tokio_tungstenite::tungstenite::Error) -> DialError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(io) => DialError::Io(io.to_string()),
        other => DialError::Handshake(other.to_string()),
    }
}

/// A parsed `http://[user:pass@]host[:port]` proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProxyAddr {
    host: String,
    port: u16,
    /// `user:pass`, percent-decoded.
    auth: Option<String>,
}

impl ProxyAddr {
    fn parse(url: &str) -> Result<Self, DialError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| DialError::BadProxy(url.split("://").next().unwrap_or("").to_owned()))?;
        let authority = rest.split('/').next().unwrap_or("");
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((a, h)) => (Some(percent_decode(a)), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or(DialError::BadProxy("http".into()))?;
            (
                h.to_owned(),
                after
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(80),
            )
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| DialError::BadProxy("http".into()))?,
                ),
                None => (hostport.to_owned(), 80),
            }
        };
        if host.is_empty() {
            return Err(DialError::BadProxy("http".into()));
        }
        Ok(Self { host, port, auth })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens an HTTP CONNECT tunnel to `host:port` through the proxy.
async fn connect_tunnel(
    mut stream: TcpStream,
    proxy: &ProxyAddr,
    host: &str,
    port: u16,
) -> Result<TcpStream, DialError> {
    use base64::Engine as _;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.auth {
        let token = base64::engine::general_purpose::STANDARD.encode(auth.as_bytes());
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    let perr = |detail: String| DialError::Proxy {
        host: proxy.host.clone(),
        detail,
    };
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| perr(e.to_string()))?;
    // Read the answer byte by byte up to the blank line, so no tunnelled byte is consumed.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 8192 {
            return Err(perr("oversized CONNECT answer".into()));
        }
        let b = stream.read_u8().await.map_err(|e| perr(e.to_string()))?;
        head.push(b);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(perr(format!("CONNECT refused: {status_line}")));
    }
    Ok(stream)
}

/// The proxy the environment asks for, if any: `HTTPS_PROXY` then `ALL_PROXY` for `wss://`,
/// `HTTP_PROXY` then `ALL_PROXY` for `ws://`; none for loopback hosts or hosts in `NO_PROXY`.
fn proxy_from_env(secure: bool, host: &str) -> Option<String> {
    let var = |names: &[&str]| {
        names.iter().find_map(|n| {
            std::env::var(n)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    };
    let no_proxy = var(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    if is_loopback(host) || no_proxy_matches(&no_proxy, host) {
        return None;
    }
    if secure {
        var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
    } else {
        var(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `NO_PROXY` matching: `*`, exact hosts, and domain suffixes (`.example.com` or `example.com`).
fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|e| {
            if e == "*" {
                return true;
            }
            let e = e
                .split(':')
                .next()
                .unwrap_or("")
                .trim_start_matches('.')
                .to_owned();
            host == e || host.ends_with(&format!(".{e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse() {
        let p = ProxyAddr::parse("http://u%40x:p%3Aw@proxy.local:3128/").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.auth.as_deref()),
            ("proxy.local", 3128, Some("u@x:p:w"))
        );
        let p = ProxyAddr::parse("http://[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert_eq!(ProxyAddr::parse("http://p").unwrap().port, 80);
        assert!(
            matches!(ProxyAddr::parse("socks5://p:1"), Err(DialError::BadProxy(s)) if s == "socks5")
        );
        // Errors never carry the credentials.
        let e = ProxyAddr::parse("http://user:secret@:1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"));
    }

    #[test]
    fn no_proxy_rules() {
        assert!(no_proxy_matches("*", "openws.work.weixin.qq.com"));
        assert!(no_proxy_matches(
            "foo, .qq.com",
            "openws.work.weixin.qq.com"
        ));
        assert!(no_proxy_matches(
            "weixin.qq.com:443",
            "openws.work.weixin.qq.com"
        ));
        assert!(!no_proxy_matches(
            "example.com",
            "openws.work.weixin.qq.com"
        ));
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("::1"));
        assert_eq!(ProxyChoice::from_config(Some("NONE")), ProxyChoice::Direct);
        assert_eq!(ProxyChoice::from_config(None), ProxyChoice::FromEnv);
    }
}
