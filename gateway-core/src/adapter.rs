//! The adapter contract: what a platform adapter implements (`PlatformAdapter`, `ReplySink`,
//! `AdapterFactory`) and what the router hands it (`AdapterContext`). See DESIGN.md, "The adapter
//! contract".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{AdapterError, ConfigError};
use crate::health::HealthReporter;
use crate::model::{ChatAddress, InboundMessage, MediaKind, OutboundMessage, Target};
use crate::store::StateStore;

/// The markdown dialect a platform renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkdownDialect {
    /// No markdown: send plain text.
    None,
    /// WeCom's markdown subset.
    WeCom,
    /// CommonMark.
    CommonMark,
}

/// How an adapter streams a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamingCaps {
    /// The router does not feed updates more often than this.
    pub min_interval: Duration,
    /// Largest single frame in bytes (the sink splits into bubbles itself).
    pub max_frame_bytes: usize,
}

/// A media kind the platform accepts, with its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MediaLimit {
    /// The media kind.
    pub kind: MediaKind,
    /// Largest accepted size in bytes.
    pub max_bytes: u64,
}

/// What a platform can do; the router adapts delivery to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Largest text message in bytes (UTF-8); longer texts are split by the adapter.
    pub max_text_bytes: usize,
    /// Markdown dialect.
    pub markdown: MarkdownDialect,
    /// `Some` when replies can be streamed into a live bubble.
    pub streaming: Option<StreamingCaps>,
    /// Media kinds that can be sent, with limits.
    pub media: Vec<MediaLimit>,
    /// Proactive (unsolicited) sends to users are possible.
    pub proactive_dm: bool,
    /// Proactive sends into group chats are possible.
    pub proactive_group: bool,
    /// Sent messages can be edited.
    pub editing: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_text_bytes: 4096,
            markdown: MarkdownDialect::None,
            streaming: None,
            media: Vec::new(),
            proactive_dm: true,
            proactive_group: true,
            editing: false,
        }
    }
}

/// Why a turn ended, passed to [`ReplySink::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    /// The agent produced its answer.
    Completed,
    /// The agent failed; the final text carries a short notice.
    Failed,
    /// The user stopped the turn (`/stop`, `/new`) or a newer message interrupted it.
    Stopped,
    /// The gateway is shutting down.
    ShuttingDown,
}

/// Where an adapter reports, part by part, how far a delivery got (DESIGN.md "Delivery
/// guarantee"): the router records it durably, so a retry (or the next start after a crash)
/// resumes at the first part the platform did not confirm and never repeats one it did.
///
/// Both methods return only once the record is durable; an adapter calls `planned` once,
/// before it sends anything, and `confirmed` after each part's success answer, in order.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// The platform messages the text is split into, in order.
    async fn planned(&self, parts: &[String]);
    /// The platform confirmed part `index` (0-based) of the plan.
    async fn confirmed(&self, index: usize);
}

/// A [`DeliveryLog`] that records nothing: for deliveries nobody resumes (tests, live chat).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLog;

#[async_trait]
impl DeliveryLog for NoLog {
    async fn planned(&self, _parts: &[String]) {}
    async fn confirmed(&self, _index: usize) {}
}

/// The reply channel for one inbound message, obtained from [`PlatformAdapter::reply`].
///
/// The router calls `start` once, then `update` with the **cumulative** text at most as often as
/// [`StreamingCaps::min_interval`] allows, then `finish` exactly once. A sink that cannot stream
/// ignores `update` and sends the final text in `finish`, split by its byte limit.
#[async_trait]
pub trait ReplySink: Send {
    /// The turn has started (a streaming adapter shows a "thinking" bubble).
    async fn start(&mut self) -> Result<(), AdapterError>;
    /// The cumulative text so far.
    async fn update(&mut self, text: &str) -> Result<(), AdapterError>;
    /// The final text. On error the router records the reply as undelivered.
    async fn finish(self: Box<Self>, text: &str, outcome: TurnOutcome) -> Result<(), AdapterError>;

    /// [`ReplySink::finish`], reporting progress to `log`. The default treats the whole text as
    /// one part; an adapter that splits a reply into several platform messages overrides it and
    /// reports each part, so a failure after part *k* is retried from part *k + 1*.
    async fn finish_logged(
        self: Box<Self>,
        text: &str,
        outcome: TurnOutcome,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        log.planned(&[text.to_string()]).await;
        self.finish(text, outcome).await?;
        log.confirmed(0).await;
        Ok(())
    }
}

/// Information about a chat, as far as the platform tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChatInfo {
    /// Display name, if known.
    pub name: Option<String>,
    /// Whether the chat is a group.
    pub is_group: bool,
}

/// A platform adapter: one instance per entry under `platforms:`.
#[async_trait]
pub trait PlatformAdapter: Send + Sync {
    /// What the platform can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts serving: connects, then pushes inbound messages through `ctx`. Returns once the
    /// first connection is up (the adapter reconnects on its own afterwards), or an error when
    /// the first attempt fails; the router retries with backoff.
    async fn connect(&self, ctx: AdapterContext) -> Result<(), AdapterError>;

    /// Connects for sending only (`gateway send` with no gateway running): binds no listener
    /// and receives nothing it can avoid. The default is [`PlatformAdapter::connect`], for
    /// platforms that need their connection to send at all.
    async fn connect_outbound(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        self.connect(ctx).await
    }

    /// Stops serving and waits for the adapter's tasks to finish (bounded by the adapter).
    async fn disconnect(&self);

    /// Sends a proactive message.
    async fn send(&self, target: &Target, message: &OutboundMessage) -> Result<(), AdapterError>;

    /// [`PlatformAdapter::send`], reporting progress to `log` (see
    /// [`ReplySink::finish_logged`]). A part the adapter planned must fit in one platform
    /// message: a retry sends each remaining part on its own with `send`.
    async fn send_logged(
        &self,
        target: &Target,
        message: &OutboundMessage,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        log.planned(&[message.body().to_string()]).await;
        self.send(target, message).await?;
        log.confirmed(0).await;
        Ok(())
    }

    /// Sends an image. The default degrades to a text notice.
    async fn send_image(
        &self,
        target: &Target,
        path: &std::path::Path,
    ) -> Result<(), AdapterError> {
        self.send(target, &media_notice(MediaKind::Image, path))
            .await
    }

    /// Sends a file. The default degrades to a text notice.
    async fn send_file(&self, target: &Target, path: &std::path::Path) -> Result<(), AdapterError> {
        self.send(target, &media_notice(MediaKind::File, path))
            .await
    }

    /// Sends a voice note. The default degrades to a text notice.
    async fn send_voice(
        &self,
        target: &Target,
        path: &std::path::Path,
    ) -> Result<(), AdapterError> {
        self.send(target, &media_notice(MediaKind::Voice, path))
            .await
    }

    /// Sends a video. The default degrades to a text notice.
    async fn send_video(
        &self,
        target: &Target,
        path: &std::path::Path,
    ) -> Result<(), AdapterError> {
        self.send(target, &media_notice(MediaKind::Video, path))
            .await
    }

    /// Opens the reply channel for an inbound message.
    async fn reply(&self, inbound: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError>;

    /// Tells the sender of `inbound` something that is not its answer (a "queued" notice, a
    /// pairing code, a command's reply). The default replies in place through
    /// [`PlatformAdapter::reply`]; a platform whose reply handle takes one reply only (the
    /// answer, which may still come) sends notices another way.
    async fn notice(
        &self,
        inbound: &InboundMessage,
        text: &str,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        let sink = self.reply(inbound).await?;
        sink.finish_logged(text, TurnOutcome::Completed, log).await
    }

    /// What the platform says about a chat.
    async fn chat_info(&self, chat: &ChatAddress) -> Result<ChatInfo, AdapterError> {
        Ok(ChatInfo {
            name: None,
            is_group: chat.is_group(),
        })
    }
}

fn media_notice(kind: MediaKind, path: &std::path::Path) -> OutboundMessage {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    OutboundMessage::text(format!(
        "[{} `{name}` could not be sent: this platform does not support it]",
        kind.as_str()
    ))
}

/// Whether the router accepted an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Journaled and scheduled: the adapter may acknowledge it.
    Accepted,
    /// Already seen (same instance and message id): acknowledge, do nothing.
    Duplicate,
    /// Answered by the gateway itself (a command, a pairing code, a queue-full notice).
    Handled,
    /// Refused by the access policy: no reply, and the adapter must not cache reply routes for
    /// this chat from it.
    Blocked,
}

impl Admission {
    /// True when the sender passed the access policy (everything but `Blocked`).
    pub fn passed_policy(self) -> bool {
        self != Admission::Blocked
    }
}

/// Where adapters push inbound messages; implemented by the router.
#[async_trait]
pub trait InboundSink: Send + Sync {
    /// Applies policy, journals the message in the inbox and schedules its turn. Returns after
    /// the journal write, never after the agent.
    async fn submit(&self, message: InboundMessage) -> Result<Admission, AdapterError>;
}

/// Everything the router hands an adapter when it starts.
#[derive(Clone)]
pub struct AdapterContext {
    /// The instance name (key under `platforms:`).
    pub instance: String,
    /// Where the adapter may keep files (media, caches): `<data_dir>/<instance>/`.
    pub data_dir: PathBuf,
    /// Inbound messages go here.
    pub inbound: Arc<dyn InboundSink>,
    /// Persistent state (dedup, key-value).
    pub store: Arc<dyn StateStore>,
    /// Status for `/health`.
    pub health: HealthReporter,
    /// Cancelled when the gateway shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for AdapterContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterContext")
            .field("instance", &self.instance)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl AdapterContext {
    /// Shorthand for `self.inbound.submit(message)`.
    pub async fn submit(&self, message: InboundMessage) -> Result<Admission, AdapterError> {
        self.health.inbound();
        self.inbound.submit(message).await
    }
}

/// The type of a config key, used to convert environment values and for documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// `true` / `false`.
    Bool,
    /// A list of strings (a comma-separated string is accepted).
    List,
    /// A map or list of maps.
    Map,
}

/// A documented config key of an adapter (`platforms.<name>.extra.<key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConfigKey {
    /// The key name.
    pub name: &'static str,
    /// Its type.
    pub kind: KeyKind,
    /// Whether it must be set.
    pub required: bool,
    /// Whether it is a secret (never printed).
    pub secret: bool,
    /// The environment variable that fills it for the default instance of the kind.
    pub env: Option<&'static str>,
    /// The default, as text, for documentation.
    pub default: Option<&'static str>,
    /// One line of help.
    pub doc: &'static str,
}

impl ConfigKey {
    /// A key description; a `const fn` so adapters can build static tables of their keys.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        name: &'static str,
        kind: KeyKind,
        required: bool,
        secret: bool,
        env: Option<&'static str>,
        default: Option<&'static str>,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            required,
            secret,
            env,
            default,
            doc,
        }
    }
}

/// A resource an instance claims exclusively (checked across instances by `gateway check`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A TCP listen address, as `host:port`.
    ListenPort(String),
}

/// The instance-level part of a platform entry, passed to [`AdapterFactory::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Instance name (the key under `platforms:`).
    pub name: String,
    /// Adapter kind.
    pub kind: String,
    /// Default destination for notices.
    pub home_channel: Option<String>,
    /// Gateway data dir.
    pub data_dir: PathBuf,
}

/// Builds adapters of one kind from their typed config.
pub trait AdapterFactory: Send + Sync {
    /// The kind name used in config (`type:`).
    fn kind(&self) -> &'static str;

    /// One line describing the adapter.
    fn description(&self) -> &'static str;

    /// The adapter's own config keys (under `extra`), for `gateway platforms`, setup and docs.
    /// The access-policy keys are handled by the router and not listed here.
    fn config_keys(&self) -> &'static [ConfigKey];

    /// Environment variables for the router's access-policy keys of the default instance,
    /// as `(variable, key)` pairs (for example `("WECOM_DM_POLICY", "dm_policy")`).
    fn policy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The environment variable that sets the default instance's `home_channel`
    /// (for example `WECOM_HOME_CHANNEL`).
    fn home_channel_env(&self) -> Option<&'static str> {
        None
    }

    /// Whether the platform has group chats. `false` (a WeCom self-built app, which only sees
    /// DMs) makes the router treat groups as disabled and refuse a `group:` home channel.
    fn group_chats(&self) -> bool {
        true
    }

    /// Resources the instance would claim, for conflict checks. Errors are reported by `build`.
    fn resources(&self, _extra: &serde_json::Value) -> Vec<Resource> {
        Vec::new()
    }

    /// Parses `extra` (policy keys already removed) into the adapter's typed config and builds the
    /// adapter. Errors name the key path relative to `extra`.
    fn build(
        &self,
        instance: &InstanceSpec,
        extra: serde_json::Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>>;
}

impl std::fmt::Debug for dyn AdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterFactory")
            .field("kind", &self.kind())
            .finish()
    }
}

/// Parses a typed adapter config from `extra`; the error names the failing key's path relative
/// to `extra` (the router prefixes `platforms.<name>.extra`).
pub fn parse_extra<T: serde::de::DeserializeOwned>(
    extra: serde_json::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(extra).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, e.into_inner().to_string())
    })
}
