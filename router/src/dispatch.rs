//! The dispatch pipeline for inbound messages (DESIGN.md "The flow of one message", step 2):
//! access policy and pairing, gateway commands, then the inbox journal and the session engine.
//!
//! `submit` returns as soon as the message is journaled and scheduled; replies to commands and
//! notices go out on background tasks, so an adapter's read loop never waits on a platform call
//! or on the agent.

use std::sync::Arc;

use async_trait::async_trait;
use gateway_core::commands::{self, Command};
use gateway_core::pairing::PairingRefusal;
use gateway_core::policy::Decision;
use gateway_core::session::{session_key, SessionEngine, SubmitOutcome, TurnJob};
use gateway_core::store::InboxEntry;
use gateway_core::{AdapterError, Admission, Content, InboundMessage, InboundSink, PlatformEvent};
use tracing::{debug, info, warn};

use crate::shared::Shared;

/// The router's [`InboundSink`]: one per gateway, shared by all instances.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    engine: SessionEngine,
}

impl Dispatcher {
    /// A dispatcher over `shared` scheduling turns on `engine`.
    pub fn new(shared: Arc<Shared>, engine: SessionEngine) -> Self {
        Self { shared, engine }
    }

    /// The session key of a message.
    pub fn key_of(&self, msg: &InboundMessage) -> String {
        session_key(
            &msg.instance,
            &msg.chat,
            &msg.sender.user_id,
            self.shared.sessions.group_sessions_per_user,
        )
    }

    /// Schedules a journaled message.
    pub fn schedule(&self, msg: InboundMessage) -> SubmitOutcome {
        self.schedule_as(msg, false)
    }

    /// Schedules a message resumed from the inbox after a restart. Its "queued" notice, if it
    /// had one, was sent before the restart, so none is sent again.
    pub fn resume(&self, msg: InboundMessage) -> SubmitOutcome {
        self.schedule_as(msg, true)
    }

    fn schedule_as(&self, msg: InboundMessage, resumed: bool) -> SubmitOutcome {
        let key = self.key_of(&msg);
        let outcome = self.engine.submit(TurnJob {
            key,
            message: msg.clone(),
        });
        self.after_submit(&msg, outcome, resumed)
    }

    fn after_submit(
        &self,
        msg: &InboundMessage,
        outcome: SubmitOutcome,
        resumed: bool,
    ) -> SubmitOutcome {
        match outcome {
            SubmitOutcome::Queued { .. } if resumed => {}
            SubmitOutcome::Queued { position } => self.shared.notify(
                msg,
                format!("⏳ Queued (position {position}): I will answer after the current reply."),
            ),
            SubmitOutcome::QueueFull => {
                warn!(
                    instance = %msg.instance,
                    session = %self.key_of(msg),
                    "A conversation has too many messages waiting (sessions.max_queue); refusing one with a notice to the user."
                );
                self.shared.metrics.inc(
                    "gateway_messages_refused_total",
                    &[("instance", &msg.instance), ("reason", "queue_full")],
                );
                self.shared.notify(
                    msg,
                    "⚠️ Too many messages are waiting in this conversation; this one was not processed. \
                     Send it again once the current answer is done, or /stop."
                        .into(),
                );
                self.close_inbox(msg);
            }
            SubmitOutcome::ShuttingDown => {
                // Journaled and pending: it runs after the restart.
                info!(instance = %msg.instance, "Message kept for after the restart.");
            }
            SubmitOutcome::Started | SubmitOutcome::Interrupted => {}
        }
        outcome
    }

    fn close_inbox(&self, msg: &InboundMessage) {
        let shared = self.shared.clone();
        let id = InboxEntry::id_for(msg);
        self.shared.tasks.spawn(async move {
            if let Err(e) = shared.store.inbox_done(&id, shared.clock.now()).await {
                warn!(error = %e, "Could not close an inbox entry.");
            }
        });
    }

    /// Applies the access policy. Reads the pairing store only for DMs where it matters.
    async fn admit(&self, msg: &InboundMessage) -> Result<Decision, AdapterError> {
        let Some(inst) = self.shared.instance(&msg.instance) else {
            return Err(AdapterError::Unsupported(format!(
                "unknown instance {}",
                msg.instance
            )));
        };
        let sender = msg.sender.user_id.as_str();
        let paired = if inst.policy.needs_pairing_check(&msg.chat) && !sender.is_empty() {
            self.shared.pairing.is_approved(&msg.instance, sender).await.unwrap_or_else(|e| {
                warn!(instance = %msg.instance, error = %e, "Pairing store unreadable; treating sender as unpaired.");
                false
            })
        } else {
            false
        };
        Ok(inst.policy.check(&msg.chat, sender, paired))
    }

    async fn start_pairing(&self, msg: &InboundMessage) {
        let instance = msg.instance.clone();
        let user = msg.sender.user_id.clone();
        let name = msg.sender.display_name.clone();
        match self
            .shared
            .pairing
            .request(&instance, &user, name.as_deref())
            .await
        {
            Ok(req) => {
                info!(instance = %instance, request_id = %req.request_id, "Pairing code issued.");
                // The operator sees the request where they look (the code stays the user's).
                let who = match &msg.sender.display_name {
                    Some(n) => format!("{user} ({n})"),
                    None => user.clone(),
                };
                self.shared.notify_home(
                    &instance,
                    format!(
                        "🔑 {who} asks to use the bot (pairing request {id}). Approve with:\n  gateway pairing approve {instance} {id}",
                        id = req.request_id
                    ),
                );
                self.shared.notify(
                    msg,
                    format!(
                        "👋 I don't know you yet. Your pairing code is {code} (valid for 1 hour).\n\
                         Ask the operator to run:\n  gateway pairing approve {instance} {code}",
                        code = req.code(),
                    ),
                );
            }
            Err(PairingRefusal::RateLimited { .. }) => {
                debug!(instance = %instance, "Pairing request rate-limited; ignoring.");
            }
            Err(refusal) => {
                info!(instance = %instance, reason = %refusal, "Pairing request refused.");
                if self.shared.should_notify_pairing(&instance, &user) {
                    self.shared.notify(
                        msg,
                        "Too many pairing requests right now; please try again later.".into(),
                    );
                }
            }
        }
    }

    async fn command(&self, msg: &InboundMessage, cmd: Command) {
        let key = self.key_of(msg);
        let shared = &self.shared;
        shared
            .metrics
            .inc("gateway_commands_total", &[("instance", &msg.instance)]);
        let text = match cmd {
            Command::Help => commands::HELP.to_string(),
            Command::WhoAmI => format!(
                "user id: {}\nchat: {} {}\ninstance: {}\nsession: {key}",
                msg.sender.user_id,
                msg.chat.kind.as_str(),
                msg.chat.chat_id,
                msg.instance
            ),
            Command::Status => {
                let st = self.engine.status(&key);
                let session = shared.store.session_get(&key).await.ok().flatten();
                let mut s = String::from("Status:\n");
                match st.running_for {
                    Some(d) => s.push_str(&format!("- answering for {} s\n", d.as_secs())),
                    None => s.push_str("- idle\n"),
                }
                s.push_str(&format!("- queued messages: {}\n", st.queued));
                match session {
                    Some(r) => s.push_str(&format!(
                        "- session {} since {}, {} turn(s)",
                        r.session_id,
                        r.created_at.format("%Y-%m-%d %H:%M UTC"),
                        r.turns
                    )),
                    None => s.push_str("- no session yet"),
                }
                s
            }
            Command::Stop => {
                let (running, dropped) = self.engine.stop(&key);
                for job in &dropped {
                    self.close_inbox(&job.message);
                }
                match (running, dropped.len()) {
                    (false, 0) => "Nothing to stop.".to_string(),
                    (true, 0) => "⏹ Stopping the current answer.".to_string(),
                    (_, n) => format!("⏹ Stopped; {n} queued message(s) dropped."),
                }
            }
            Command::New => {
                let (running, dropped) = self.engine.stop(&key);
                for job in &dropped {
                    self.close_inbox(&job.message);
                }
                if let Err(e) = shared.store.session_delete(&key).await {
                    warn!(error = %e, "Could not reset a session.");
                    "⚠️ Could not start a new conversation (storage error); try again.".to_string()
                } else if running {
                    "🆕 Stopped the current answer and started a new conversation.".to_string()
                } else {
                    "🆕 New conversation started.".to_string()
                }
            }
        };
        shared.notify(msg, text);
    }
}

#[async_trait]
impl InboundSink for Dispatcher {
    async fn submit(&self, msg: InboundMessage) -> Result<Admission, AdapterError> {
        let shared = &self.shared;
        let instance = msg.instance.clone();
        shared
            .metrics
            .inc("gateway_messages_in_total", &[("instance", &instance)]);

        match self.admit(&msg).await? {
            Decision::Allow => {}
            Decision::NeedsPairing => {
                self.start_pairing(&msg).await;
                return Ok(Admission::Handled);
            }
            Decision::Deny(reason) => {
                debug!(instance = %instance, ?reason, "Message refused by the access policy.");
                shared
                    .metrics
                    .inc("gateway_messages_blocked_total", &[("instance", &instance)]);
                return Ok(Admission::Blocked);
            }
        }

        if let Content::Event(ev) = &msg.content {
            // Events reach the router for visibility; adapters act on the ones they own
            // (welcome messages). None of them starts an agent turn.
            match ev {
                PlatformEvent::Other { name } => {
                    debug!(instance = %instance, event = %gateway_core::redact::printable(name), "Unhandled platform event.")
                }
                other => debug!(instance = %instance, event = ?other, "Platform event."),
            }
            return Ok(Admission::Handled);
        }

        if let Content::Text { text } = &msg.content {
            if let Some(cmd) = commands::parse(text, msg.chat.is_group()) {
                self.command(&msg, cmd).await;
                return Ok(Admission::Handled);
            }
        }

        let entry = InboxEntry::new(msg.clone(), shared.clock.now());
        if !shared.store.inbox_put(&entry).await? {
            shared.metrics.inc(
                "gateway_messages_duplicate_total",
                &[("instance", &instance)],
            );
            return Ok(Admission::Duplicate);
        }
        self.schedule(msg);
        Ok(Admission::Accepted)
    }
}
