//! The `console` platform used by `gateway chat`: a real [`PlatformAdapter`] whose chat is the
//! terminal. Messages go through the same dispatch, session and history path as any platform;
//! replies stream back as [`ConsoleEvent`]s for the chat loop to print.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::adapter::{Capabilities, MarkdownDialect, StreamingCaps};
use gateway_core::{
    AdapterContext, AdapterError, InboundMessage, OutboundMessage, PlatformAdapter, ReplySink,
    Target, TurnOutcome,
};
use tokio::sync::{mpsc, Notify};

/// What the console shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// The cumulative text of a reply in progress.
    Update(String),
    /// A finished reply (or notice).
    Final(String),
    /// A proactive message.
    Notice(String),
}

/// The console adapter.
#[derive(Debug)]
pub struct ConsoleAdapter {
    events: mpsc::Sender<ConsoleEvent>,
    ctx: OnceLock<AdapterContext>,
    ready: Notify,
}

impl ConsoleAdapter {
    /// An adapter that reports to `events`.
    pub fn new(events: mpsc::Sender<ConsoleEvent>) -> Arc<Self> {
        Arc::new(Self {
            events,
            ctx: OnceLock::new(),
            ready: Notify::new(),
        })
    }

    /// Waits until the router has started the adapter, then returns its context.
    pub async fn context(&self) -> AdapterContext {
        loop {
            let notified = self.ready.notified();
            if let Some(ctx) = self.ctx.get() {
                return ctx.clone();
            }
            notified.await;
        }
    }
}

#[async_trait]
impl PlatformAdapter for ConsoleAdapter {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_bytes: usize::MAX,
            markdown: MarkdownDialect::CommonMark,
            streaming: Some(StreamingCaps {
                min_interval: Duration::from_millis(50),
                max_frame_bytes: usize::MAX,
            }),
            ..Capabilities::default()
        }
    }

    async fn connect(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        ctx.health
            .set_state(gateway_core::health::InstanceState::Connected);
        let _ = self.ctx.set(ctx);
        self.ready.notify_waiters();
        Ok(())
    }

    async fn disconnect(&self) {}

    async fn send(&self, _target: &Target, message: &OutboundMessage) -> Result<(), AdapterError> {
        self.events
            .send(ConsoleEvent::Notice(message.body().to_string()))
            .await
            .map_err(|_| AdapterError::Disconnected("console closed".into()))
    }

    async fn reply(&self, _inbound: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError> {
        Ok(Box::new(ConsoleSink {
            events: self.events.clone(),
        }))
    }
}

struct ConsoleSink {
    events: mpsc::Sender<ConsoleEvent>,
}

#[async_trait]
impl ReplySink for ConsoleSink {
    async fn start(&mut self) -> Result<(), AdapterError> {
        Ok(())
    }

    async fn update(&mut self, text: &str) -> Result<(), AdapterError> {
        self.events
            .send(ConsoleEvent::Update(text.to_string()))
            .await
            .map_err(|_| AdapterError::Disconnected("console closed".into()))
    }

    async fn finish(
        self: Box<Self>,
        text: &str,
        _outcome: TurnOutcome,
    ) -> Result<(), AdapterError> {
        self.events
            .send(ConsoleEvent::Final(text.to_string()))
            .await
            .map_err(|_| AdapterError::Disconnected("console closed".into()))
    }
}
