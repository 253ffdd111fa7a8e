//! The `wecom` platform adapter: owns the connection runner, the inbound pipeline and the
//! shared state replies need (the live connection's generation, the rate limiter), and
//! implements the core [`PlatformAdapter`] contract on top of them.
//!
//! Requests go to the runner over a bounded channel; a request made while the connection is
//! down waits (bounded) for it to come back instead of failing at once, so a reply finishing
//! during a reconnect still gets out.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::adapter::{Capabilities, MarkdownDialect, MediaLimit, StreamingCaps};
use gateway_core::{
    AdapterContext, AdapterError, ChatAddress, InboundMessage, MediaKind, OutboundMessage,
    PlatformAdapter, ReplySink, Target,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;
use wecom_common::media::{
    FILE_MAX_BYTES, IMAGE_MAX_BYTES, STREAM_FRAME_MAX_BYTES, VIDEO_MAX_BYTES, VOICE_MAX_BYTES,
};

use crate::config::WeComConfig;
use crate::conn::{Command, Connector, Link, NetConnector, ProxyChoice, Runner};
use crate::media::MediaStore;
use crate::protocol::{Incoming, Outgoing};
use crate::ratelimit::RateLimiter;
use crate::session::{ReqError, Request, Session, SessionConfig};

/// Capacity of the runner's command queue.
const COMMAND_QUEUE: usize = 1024;
/// Capacity of the inbound queue between the socket reader and the pipeline.
const INBOUND_QUEUE: usize = 256;

/// The live connection's handles, replaced on every `connect`.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    cmds: mpsc::Sender<Command>,
    link: watch::Receiver<Link>,
}

/// State shared by the adapter, its reply sinks and its tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) instance: String,
    pub(crate) cfg: WeComConfig,
    /// Random per process: reply routes persisted before a restart never match.
    pub(crate) run_id: String,
    pub(crate) conn: Mutex<Option<ConnHandle>>,
    pub(crate) limiter: RateLimiter,
    pub(crate) tasks: TaskTracker,
    pub(crate) stop: Mutex<CancellationToken>,
    /// How connections are opened (the network, unless a test substitutes one).
    pub(crate) connector: Arc<dyn Connector>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Maps a request failure to the core error type.
pub(crate) fn to_adapter_error(e: ReqError) -> AdapterError {
    match e {
        ReqError::NotConnected | ReqError::Disconnected => {
            AdapterError::Disconnected(e.to_string())
        }
        ReqError::Timeout => AdapterError::Timeout("no answer from WeCom".into()),
        ReqError::Busy => AdapterError::Io("too many requests waiting for WeCom".into()),
        ReqError::Platform { code, message } => {
            wecom_common::errors::to_adapter_error(code, &message, String::new())
        }
    }
}

impl Inner {
    pub(crate) fn new(
        instance: &str,
        cfg: WeComConfig,
        connector: Option<Arc<dyn Connector>>,
    ) -> Self {
        let limiter = RateLimiter::new(cfg.rate_limit_per_minute, cfg.rate_limit_reserve);
        let connector = connector.unwrap_or_else(|| {
            Arc::new(NetConnector::new(ProxyChoice::from_config(
                cfg.proxy.as_deref(),
            )))
        });
        Self {
            instance: instance.to_owned(),
            cfg,
            run_id: format!("{:016x}", rand::random::<u64>()),
            conn: Mutex::new(None),
            limiter,
            tasks: TaskTracker::new(),
            stop: Mutex::new(CancellationToken::new()),
            connector,
        }
    }

    fn handle(&self) -> Option<ConnHandle> {
        lock(&self.conn).clone()
    }

    /// The route tag of the live connection (`<run id>:<generation>`), if it is up.
    pub(crate) fn route_tag(&self) -> Option<String> {
        let h = self.handle()?;
        let link = *h.link.borrow();
        match link {
            Link::Up { generation } => Some(format!("{}:{generation}", self.run_id)),
            _ => None,
        }
    }

    /// True when `tag` is the live connection's tag.
    pub(crate) fn route_is(&self, tag: Option<&str>) -> bool {
        tag.is_some() && self.route_tag().as_deref() == tag
    }

    /// Waits up to `max_wait` for a subscribed connection.
    async fn wait_up(&self, max_wait: Duration) -> Result<ConnHandle, ReqError> {
        let Some(mut h) = self.handle() else {
            return Err(ReqError::NotConnected);
        };
        let wait = async {
            loop {
                let link = *h.link.borrow_and_update();
                match link {
                    Link::Up { .. } => return Ok(()),
                    Link::TakenOver | Link::Stopped => return Err(ReqError::NotConnected),
                    Link::Down => {}
                }
                if h.link.changed().await.is_err() {
                    return Err(ReqError::NotConnected);
                }
            }
        };
        match tokio::time::timeout(max_wait, wait).await {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ReqError::NotConnected),
        }
    }

    /// Puts a request on its way and returns the receiver of its answer without waiting for it.
    /// Waits up to `max_wait` for the connection when it is down.
    pub(crate) async fn submit(
        &self,
        frame: Outgoing,
        timeout: Duration,
        max_wait: Duration,
    ) -> Result<oneshot::Receiver<Result<Incoming, ReqError>>, ReqError> {
        let h = self.wait_up(max_wait).await?;
        let (tx, rx) = oneshot::channel();
        h.cmds
            .send(Command::Request(Request {
                frame,
                timeout,
                waiter: tx,
            }))
            .await
            .map_err(|_| ReqError::NotConnected)?;
        Ok(rx)
    }

    /// Sends a request and waits for its answer; waits for the connection up to the request
    /// timeout when it is down.
    pub(crate) async fn request(
        &self,
        frame: Outgoing,
        timeout: Duration,
    ) -> Result<Incoming, ReqError> {
        let rx = self
            .submit(frame, timeout, self.cfg.request_timeout())
            .await?;
        rx.await.unwrap_or(Err(ReqError::Disconnected))
    }

    /// Like [`Inner::request`], metered by the per-chat rate limit and retried on 846607.
    pub(crate) async fn request_metered(
        &self,
        chat_id: &str,
        lane: crate::ratelimit::Lane,
        frame: Outgoing,
        timeout: Duration,
    ) -> Result<Incoming, ReqError> {
        const ATTEMPTS: usize = 5;
        let mut last = ReqError::Timeout;
        for attempt in 1..=ATTEMPTS {
            self.limiter.acquire(chat_id, lane).await;
            match self.request(frame.clone(), timeout).await {
                Err(ReqError::Platform {
                    code: 846607,
                    message,
                }) => {
                    warn!(instance = %self.instance, attempt, "WeCom rate limit hit (846607) on attempt {attempt} of {ATTEMPTS}; slowing this chat down before retrying.");
                    self.limiter.penalize(chat_id);
                    last = ReqError::Platform {
                        code: 846607,
                        message,
                    };
                }
                other => return other,
            }
        }
        Err(last)
    }
}

/// The `wecom` adapter.
#[derive(Debug, Clone)]
pub struct WeComAdapter {
    pub(crate) inner: Arc<Inner>,
}

impl WeComAdapter {
    /// An adapter for `instance` with a validated config, connecting over the network.
    pub fn new(instance: &str, cfg: WeComConfig) -> Self {
        gateway_core::redact::register(secrecy::ExposeSecret::expose_secret(&cfg.secret));
        Self {
            inner: Arc::new(Inner::new(instance, cfg, None)),
        }
    }

    /// An adapter that opens its connections through `connector`.
    pub fn with_connector(instance: &str, cfg: WeComConfig, connector: Arc<dyn Connector>) -> Self {
        gateway_core::redact::register(secrecy::ExposeSecret::expose_secret(&cfg.secret));
        Self {
            inner: Arc::new(Inner::new(instance, cfg, Some(connector))),
        }
    }

    fn chat_of(target: &Target) -> Result<ChatAddress, AdapterError> {
        match target {
            Target::User(id) => Ok(ChatAddress::dm(id)),
            Target::Group(id) => Ok(ChatAddress::group(id)),
            other => Err(AdapterError::Unsupported(format!(
                "the WeCom AI Bot cannot send to {other}; use user:ID or group:ID"
            ))),
        }
    }
}

#[async_trait]
impl PlatformAdapter for WeComAdapter {
    fn capabilities(&self) -> Capabilities {
        let cfg = &self.inner.cfg;
        Capabilities {
            max_text_bytes: cfg.text_max_bytes,
            markdown: MarkdownDialect::WeCom,
            streaming: Some(StreamingCaps {
                min_interval: cfg.stream_interval(),
                max_frame_bytes: cfg.stream_max_frame_bytes.min(STREAM_FRAME_MAX_BYTES),
            }),
            media: vec![
                MediaLimit {
                    kind: MediaKind::Image,
                    max_bytes: IMAGE_MAX_BYTES,
                },
                MediaLimit {
                    kind: MediaKind::Video,
                    max_bytes: VIDEO_MAX_BYTES,
                },
                MediaLimit {
                    kind: MediaKind::Voice,
                    max_bytes: VOICE_MAX_BYTES,
                },
                MediaLimit {
                    kind: MediaKind::File,
                    max_bytes: FILE_MAX_BYTES,
                },
            ],
            proactive_dm: true,
            // `aibot_send_msg` takes a group chat id as well (reference §2.6, §0 item 8).
            proactive_group: true,
            editing: false,
        }
    }

    async fn connect(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let inner = &self.inner;
        let cfg = &inner.cfg;
        let media = MediaStore::new(
            &ctx.data_dir,
            cfg.allow_private_media_hosts,
            cfg.media_max_bytes,
            Duration::from_secs(cfg.media_retention_hours * 3600),
        )
        .map_err(|e| AdapterError::Io(e.to_string()))?;
        let stop = ctx.shutdown.child_token();
        *lock(&inner.stop) = stop.clone();
        inner.tasks.reopen();

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
        let (link_tx, link_rx) = watch::channel(Link::Down);
        *lock(&inner.conn) = Some(ConnHandle {
            cmds: cmd_tx,
            link: link_rx,
        });
        let session_cfg = SessionConfig {
            ping_interval: cfg.ping_interval(),
            max_missed_pings: cfg.max_missed_pings,
            subscribe_timeout: cfg.connect_timeout(),
            backoff: cfg.backoff(),
            auth_backoff: cfg.auth_backoff(),
            dedup_ttl: Duration::from_secs(cfg.dedup_ttl_secs),
            dedup_capacity: cfg.dedup_capacity,
            ..SessionConfig::default()
        };
        let session = Session::new(session_cfg, cfg.bot_id.clone(), cfg.secret.clone());
        let (first_tx, first_rx) = oneshot::channel();
        let runner = Runner {
            instance: inner.instance.clone(),
            session,
            url: cfg.websocket_url.clone(),
            connector: inner.connector.clone(),
            connect_timeout: cfg.connect_timeout(),
            request_timeout: cfg.request_timeout(),
            cmds: cmd_rx,
            inbound: in_tx,
            link: link_tx,
            health: ctx.health.clone(),
            stop: stop.clone(),
            first: Some(first_tx),
            generation: 0,
        };
        inner.tasks.spawn(runner.run());
        crate::intake::spawn(inner.clone(), ctx.clone(), media, in_rx, stop.clone());

        // Bounded by the runner: the first dial and subscribe, plus the refused-credential
        // retries (§6.4) when WeCom refuses the subscribe.
        let patience = (cfg.connect_timeout() * 2) * (cfg.auth_retries() + 1)
            + cfg.auth_backoff().iter().sum::<Duration>();
        let first = tokio::time::timeout(patience, first_rx).await;
        let result = match first {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AdapterError::Disconnected(
                "the connection task ended".into(),
            )),
            Err(_) => Err(AdapterError::Timeout("connecting to WeCom".into())),
        };
        if result.is_err() {
            stop.cancel();
            inner.tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), inner.tasks.wait()).await;
        }
        result
    }

    async fn disconnect(&self) {
        let inner = &self.inner;
        lock(&inner.stop).cancel();
        inner.tasks.close();
        if tokio::time::timeout(Duration::from_secs(8), inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(instance = %inner.instance, "WeCom tasks did not stop in time.");
        }
        *lock(&inner.conn) = None;
    }

    async fn send(&self, target: &Target, message: &OutboundMessage) -> Result<(), AdapterError> {
        self.send_logged(target, message, &gateway_core::NoLog)
            .await
    }

    async fn send_logged(
        &self,
        target: &Target,
        message: &OutboundMessage,
        log: &dyn gateway_core::DeliveryLog,
    ) -> Result<(), AdapterError> {
        let chat = Self::chat_of(target)?;
        self.inner
            .deliver_text_logged(&chat, message.body(), crate::ratelimit::Lane::Normal, log)
            .await
    }

    async fn send_image(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.inner
            .send_media(&Self::chat_of(target)?, path, MediaKind::Image)
            .await
    }

    async fn send_file(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.inner
            .send_media(&Self::chat_of(target)?, path, MediaKind::File)
            .await
    }

    async fn send_voice(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.inner
            .send_media(&Self::chat_of(target)?, path, MediaKind::Voice)
            .await
    }

    async fn send_video(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.inner
            .send_media(&Self::chat_of(target)?, path, MediaKind::Video)
            .await
    }

    /// Notices never take the inbound `req_id`: it carries one reply, the answer's stream
    /// (reference §5), so they go proactively with `aibot_send_msg`.
    async fn notice(
        &self,
        inbound: &InboundMessage,
        text: &str,
        log: &dyn gateway_core::DeliveryLog,
    ) -> Result<(), AdapterError> {
        self.inner
            .deliver_text_logged(&inbound.chat, text, crate::ratelimit::Lane::Control, log)
            .await
    }

    async fn reply(&self, inbound: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError> {
        Ok(Box::new(crate::stream::StreamSink::open(
            self.inner.clone(),
            inbound,
        )))
    }
}
