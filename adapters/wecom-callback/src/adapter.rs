//! The `PlatformAdapter` of self-built apps: starts the callback server and the intake workers
//! on `connect`, sends through the REST API, and replies without streaming (the final text goes
//! out when the turn ends, optionally preceded by a short "working on it" notice when the agent
//! is slow). Reference: wecom-callback §4.2 (no streaming), §5 (sending).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gateway_core::adapter::{Capabilities, MarkdownDialect, MediaLimit};
use gateway_core::health::InstanceState;
use gateway_core::{
    AdapterContext, AdapterError, DeliveryLog, InboundMessage, MediaKind, NoLog, OutboundMessage,
    PlatformAdapter, ReplySink, Target, TurnOutcome,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wecom_common::media::{
    CALLBACK_TEXT_MAX_BYTES, FILE_MAX_BYTES, IMAGE_MAX_BYTES, VIDEO_MAX_BYTES, VOICE_MAX_BYTES,
};

use crate::api::ApiClient;
use crate::config::{AppConfig, CallbackConfig, ReplyFormat};
use crate::intake::{self, Processor};
use crate::outbound::{Outbound, RichMessage};
use crate::routing::{Recipient, Routes};
use crate::server::{self, ServerState};

/// How long `disconnect` waits for the server and workers.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What runs between `connect` and `disconnect`.
struct Running {
    stop: CancellationToken,
    tasks: TaskTracker,
    addr: SocketAddr,
}

/// A `wecom_callback` instance.
pub struct WeComCallbackAdapter {
    instance: String,
    config: CallbackConfig,
    routes: Arc<Routes>,
    outbound: Arc<Outbound>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for WeComCallbackAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeComCallbackAdapter")
            .field("instance", &self.instance)
            .field(
                "apps",
                &self
                    .routes
                    .apps()
                    .iter()
                    .map(|a| &a.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl WeComCallbackAdapter {
    /// An adapter for `instance` from its validated config. No I/O happens here.
    pub fn new(instance: &str, config: CallbackConfig) -> Result<Self, AdapterError> {
        for app in &config.apps {
            gateway_core::redact::register(secrecy::ExposeSecret::expose_secret(&app.corp_secret));
        }
        let api = ApiClient::new(&config.api_base_url, &config.apps, config.retry_backoff)
            .map_err(|e| AdapterError::Io(e.to_string()))?;
        let apps = config.apps.iter().cloned().map(Arc::new).collect();
        Ok(Self {
            instance: instance.to_owned(),
            routes: Arc::new(Routes::new(instance, apps)),
            outbound: Arc::new(Outbound::new(api)),
            config,
            running: Mutex::new(None),
        })
    }

    /// The address the callback server listens on, once connected (useful with `port: 0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.addr)
    }

    /// Sends a textcard or news message (also reachable through `send` with a JSON text body).
    pub async fn send_rich(
        &self,
        target: &Target,
        message: &RichMessage,
    ) -> Result<(), AdapterError> {
        let (app, to) = self.routes.resolve(target).await?;
        self.outbound.send_rich(&app, &to, message).await
    }

    async fn send_media(
        &self,
        target: &Target,
        kind: MediaKind,
        path: &Path,
    ) -> Result<(), AdapterError> {
        let (app, to) = self.routes.resolve(target).await?;
        self.outbound.send_media(&app, &to, kind, path).await
    }

    /// Fetches every app's token once so credential and IP problems show in `/health` at
    /// startup; failures never stop the instance (inbound callbacks still work).
    fn warm_tokens(&self, tasks: &TaskTracker) {
        for app in self.routes.apps().iter().cloned() {
            let outbound = self.outbound.clone();
            tasks.spawn(async move {
                if let Err(e) = outbound.api().token(&app.name).await {
                    let err = outbound.failure(&app, "gettoken", e);
                    warn!(app = %app.name, error = %err, "Could not fetch the app's access token; sending will retry.");
                }
            });
        }
    }
}

#[async_trait]
impl PlatformAdapter for WeComCallbackAdapter {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_bytes: CALLBACK_TEXT_MAX_BYTES,
            markdown: match self.config.reply_format {
                ReplyFormat::Text => MarkdownDialect::None,
                ReplyFormat::Markdown => MarkdownDialect::WeCom,
            },
            streaming: None,
            media: vec![
                MediaLimit {
                    kind: MediaKind::Image,
                    max_bytes: IMAGE_MAX_BYTES,
                },
                MediaLimit {
                    kind: MediaKind::Voice,
                    max_bytes: VOICE_MAX_BYTES,
                },
                MediaLimit {
                    kind: MediaKind::Video,
                    max_bytes: VIDEO_MAX_BYTES,
                },
                MediaLimit {
                    kind: MediaKind::File,
                    max_bytes: FILE_MAX_BYTES,
                },
            ],
            proactive_dm: true,
            proactive_group: false,
            editing: false,
        }
    }

    /// Sending needs only the REST API: no callback listener (it would take the port of a
    /// gateway that may start meanwhile) and no intake.
    async fn connect_outbound(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        self.routes.set_store(ctx.store.clone());
        self.outbound.set_health(ctx.health.clone());
        Ok(())
    }

    async fn connect(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        if self.local_addr().is_some() {
            return Ok(());
        }
        let addr = SocketAddr::new(self.config.host, self.config.port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                AdapterError::AddressInUse(gateway_core::error::address_in_use_hint(
                    &addr.to_string(),
                    &format!("WeCom callbacks of platforms.{}", self.instance),
                ))
            } else {
                AdapterError::Io(format!("cannot listen on {addr} for WeCom callbacks: {e}"))
            }
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| AdapterError::Io(e.to_string()))?;
        self.routes.set_store(ctx.store.clone());
        self.outbound.set_health(ctx.health.clone());

        let stop = ctx.shutdown.child_token();
        let tasks = TaskTracker::new();
        let processor = Arc::new(Processor {
            ctx: ctx.clone(),
            routes: self.routes.clone(),
            outbound: self.outbound.clone(),
        });
        let intake = intake::start(processor, &tasks, &stop).await;
        let mut routes: HashMap<String, Vec<Arc<crate::config::AppConfig>>> = HashMap::new();
        for app in self.routes.apps() {
            routes
                .entry(app.path.clone())
                .or_default()
                .push(app.clone());
        }
        let paths: Vec<String> = routes.keys().cloned().collect();
        let state = Arc::new(ServerState {
            instance: self.instance.clone(),
            routes,
            replay_window: self.config.replay_window,
            intake,
            limits: crate::listener::Limits::default(),
        });
        tasks.spawn(server::serve(listener, state, stop.clone()));
        let (media_dir, instance) = (ctx.data_dir.join("media"), self.instance.clone());
        tasks.spawn(async move {
            let removed = intake::prune_media(&media_dir, intake::MEDIA_RETENTION).await;
            if removed > 0 {
                info!(instance = %instance, removed, "Deleted old downloaded media.");
            }
        });
        self.warm_tokens(&tasks);
        ctx.health.set_state(InstanceState::Connected);
        info!(instance = %self.instance, addr = %bound, paths = ?paths, apps = self.routes.apps().len(), "WeCom callback server listening.");
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
            stop,
            tasks,
            addr: bound,
        });
        Ok(())
    }

    async fn disconnect(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = running {
            r.stop.cancel();
            r.tasks.close();
            if tokio::time::timeout(STOP_TIMEOUT, r.tasks.wait())
                .await
                .is_err()
            {
                warn!(instance = %self.instance, "Callback server did not stop in time.");
            }
        }
    }

    async fn send(&self, target: &Target, message: &OutboundMessage) -> Result<(), AdapterError> {
        self.send_logged(target, message, &NoLog).await
    }

    async fn send_logged(
        &self,
        target: &Target,
        message: &OutboundMessage,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        let (app, to) = self.routes.resolve(target).await?;
        match message {
            OutboundMessage::Text { text } => match RichMessage::from_text(text) {
                Some(rich) => {
                    let rich = rich?;
                    log.planned(std::slice::from_ref(text)).await;
                    self.outbound.send_rich(&app, &to, &rich).await?;
                    log.confirmed(0).await;
                    Ok(())
                }
                None => {
                    self.outbound
                        .send_text(&app, &to, text, ReplyFormat::Text, log)
                        .await
                }
            },
            OutboundMessage::Markdown { text } => {
                self.outbound
                    .send_text(&app, &to, text, self.config.reply_format, log)
                    .await
            }
        }
    }

    async fn send_image(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.send_media(target, MediaKind::Image, path).await
    }

    async fn send_file(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.send_media(target, MediaKind::File, path).await
    }

    async fn send_voice(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.send_media(target, MediaKind::Voice, path).await
    }

    async fn send_video(&self, target: &Target, path: &Path) -> Result<(), AdapterError> {
        self.send_media(target, MediaKind::Video, path).await
    }

    async fn reply(&self, inbound: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError> {
        // The app that received the message answers; the corp prefix routes when the context
        // names an app that is gone (renamed after a restart).
        let ctx = &inbound.reply_context;
        let from_context = ctx["app"]
            .as_str()
            .and_then(|name| self.routes.by_name(name))
            .cloned()
            .zip(
                ctx["user"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned),
            );
        let (app, user) = match from_context {
            Some(x) => x,
            None => self.routes.resolve_user(&inbound.chat.chat_id).await?,
        };
        Ok(Box::new(CallbackReply {
            app,
            to: Recipient::User(user),
            outbound: self.outbound.clone(),
            format: self.config.reply_format,
            notice: self
                .config
                .working_notice_after
                .map(|after| (after, self.config.working_notice.clone())),
            timer: None,
        }))
    }
}

/// A reply without streaming: `finish` sends the final text, split by bytes.
struct CallbackReply {
    app: Arc<AppConfig>,
    to: Recipient,
    outbound: Arc<Outbound>,
    format: ReplyFormat,
    notice: Option<(std::time::Duration, String)>,
    /// Cancels the pending "working on it" notice; dropping it cancels too.
    timer: Option<tokio_util::sync::DropGuard>,
}

#[async_trait]
impl ReplySink for CallbackReply {
    async fn start(&mut self) -> Result<(), AdapterError> {
        let Some((after, text)) = self.notice.clone() else {
            return Ok(());
        };
        let cancel = CancellationToken::new();
        let (app, to, outbound, token) = (
            self.app.clone(),
            self.to.clone(),
            self.outbound.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(after) => {
                    if let Err(e) = outbound.send_text(&app, &to, &text, ReplyFormat::Text, &NoLog).await {
                        debug!(app = %app.name, error = %e, "Could not send the working notice.");
                    }
                }
            }
        });
        self.timer = Some(cancel.drop_guard());
        Ok(())
    }

    async fn update(&mut self, _text: &str) -> Result<(), AdapterError> {
        // Self-built apps cannot edit or stream; the final text is sent by `finish`.
        Ok(())
    }

    async fn finish(self: Box<Self>, text: &str, outcome: TurnOutcome) -> Result<(), AdapterError> {
        self.finish_logged(text, outcome, &NoLog).await
    }

    async fn finish_logged(
        mut self: Box<Self>,
        text: &str,
        _outcome: TurnOutcome,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        drop(self.timer.take());
        self.outbound
            .send_text(&self.app, &self.to, text, self.format, log)
            .await
    }
}
