//! The agent bridge: how the gateway reaches the agent (DESIGN.md, "The flow of one message",
//! step 4).
//!
//! A backend implements [`AgentBackend`]: `start` takes an [`AgentTurn`] and returns an
//! [`AgentStream`] of text deltas that ends with exactly one final answer or one error. The
//! backends are `echo` (built in, for first runs and end-to-end tests), `openai` (any
//! OpenAI-compatible `/chat/completions`), `http` (a webhook receiving the turn as JSON) and
//! `command` (a local program speaking JSON lines). [`build_backend`] turns the `agent:` section
//! of the configuration into a backend.
//!
//! Every backend runs its turn in a task owned by the returned stream, so the time limit, the
//! cancellation token and dropping the stream are handled in one place (`driver`).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;
use gateway_core::store::HistoryEntry;
use gateway_core::{Attachment, ChatAddress, ConfigError, Sender};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub mod command;
pub mod config;
mod driver;
pub mod echo;
pub mod error;
mod headers;
pub mod http;
mod lines;
pub mod openai;
mod transport;
pub mod wire;

pub use command::CommandBackend;
pub use config::{AgentConfig, CommandConfig, CommandMode, EchoConfig, HttpConfig, OpenAiConfig};
pub use echo::EchoBackend;
pub use error::AgentError;
pub use http::HttpBackend;
pub use openai::OpenAiBackend;
pub use wire::TurnRequest;

/// One agent turn: the message to answer and what the agent needs to know around it.
#[derive(Clone, Debug, Serialize)]
pub struct AgentTurn {
    /// The session key (stable for a conversation, across resets).
    pub session_key: String,
    /// The current session id (changes on `/new` and resets; history hangs off it).
    pub session_id: String,
    /// The platform instance name (`"console"` for `gateway chat`).
    pub instance: String,
    /// Who wrote the message.
    pub sender: Sender,
    /// The conversation it was written in.
    pub chat: ChatAddress,
    /// What the user sent: `text`, `voice` (`text` is then the platform's transcript), `media`,
    /// `mixed`, `location` or `link`.
    pub message_type: String,
    /// The message text.
    pub text: String,
    /// Media of the message as local, decrypted files.
    pub attachments: Vec<Attachment>,
    /// Earlier lines of the session, oldest first, without this message.
    pub history: Vec<HistoryEntry>,
}

/// One item of a turn's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// An incremental piece of the answer (append it to what came before).
    Delta(String),
    /// The full answer; the last item of a successful turn.
    Final(String),
}

/// The answer to a turn: deltas, then exactly one `Final` or one `Err`, then the end.
pub type AgentStream = Pin<Box<dyn Stream<Item = Result<AgentEvent, AgentError>> + Send>>;

/// Something that answers agent turns.
#[async_trait]
pub trait AgentBackend: Send + Sync + std::fmt::Debug {
    /// The backend's name for logs and `/status` (`echo`, `openai`, `http`, `command`).
    fn name(&self) -> &str;

    /// Starts a turn. The stream yields deltas, then exactly one `Final` (or one `Err`) and
    /// ends. Dropping the stream cancels the turn (the HTTP request is dropped, a command turn is
    /// abandoned); `cancel` firing ends the stream promptly with `Err(AgentError::Cancelled)`.
    /// The backend's time limit ends it with `Err(AgentError::Timeout)`.
    async fn start(
        &self,
        turn: AgentTurn,
        cancel: CancellationToken,
    ) -> Result<AgentStream, AgentError>;
}

/// Builds the backend described by `cfg`, reading the environment variables it references
/// (API key, `${NAME}` in header values). Returns every problem at once; paths are relative to
/// the `agent:` section (prefix them with [`ConfigError::under`]). Opens no connection.
pub fn build_backend(cfg: &AgentConfig) -> Result<Arc<dyn AgentBackend>, Vec<ConfigError>> {
    let errors = cfg.validate();
    if !errors.is_empty() {
        return Err(errors);
    }
    let backend: Arc<dyn AgentBackend> = match cfg {
        AgentConfig::Echo(c) => Arc::new(EchoBackend::new(c)),
        AgentConfig::OpenAi(c) => Arc::new(OpenAiBackend::new(c)?),
        AgentConfig::Http(c) => Arc::new(HttpBackend::new(c)?),
        AgentConfig::Command(c) => Arc::new(CommandBackend::new(c)?),
    };
    Ok(backend)
}
