//! The turn runner (DESIGN.md "The flow of one message", steps 3–5): loads or resets the session,
//! runs the agent, streams its text into the adapter's reply sink at the rate the adapter allows,
//! finishes the reply on every path (success, agent error, `/stop`, interrupt, shutdown), records
//! every delivery in the outbox part by part (its completion closes the inbox entry), and
//! appends history.

use std::sync::Arc;
use std::time::Duration;

use agent_bridge::{AgentError, AgentEvent, AgentTurn};
use async_trait::async_trait;
use futures::StreamExt;
use gateway_core::session::{new_session_id, CancelReason, TurnCancel, TurnHandler, TurnJob};
use gateway_core::store::{HistoryEntry, InboxEntry, Role, SessionRecord};
use gateway_core::{InboundMessage, OutboundMessage, ReplySink, Target, TurnOutcome};
use tracing::{debug, info, warn};

use crate::delivery::OutboxLog;
use crate::shared::{Instance, Shared};

/// Runs turns for the session engine.
#[derive(Debug, Clone)]
pub struct TurnRunner {
    shared: Arc<Shared>,
}

impl TurnRunner {
    /// A runner over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// How the agent part of a turn ended.
enum AgentEnd {
    Completed,
    Failed(AgentError),
    Cancelled(CancelReason),
}

/// Summarises a message for history: its text plus one line per attachment.
fn history_text(msg: &InboundMessage) -> String {
    let mut text = msg.text();
    if msg.kind_name() == "voice" {
        text = format!("[voice] {text}");
    }
    for a in msg.attachments() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "[{} {} {} bytes]",
            a.kind.as_str(),
            a.name,
            a.size
        ));
    }
    text
}

/// The final text shown to the user for each ending.
fn final_text(partial: &str, end: &AgentEnd) -> String {
    let notice = match end {
        AgentEnd::Completed if partial.trim().is_empty() => {
            return "(The agent returned an empty answer.)".into()
        }
        AgentEnd::Completed => return partial.to_string(),
        // Scrubbed: an agent's own error text may echo its request (a key, a header).
        AgentEnd::Failed(e) => format!(
            "⚠️ {}",
            gateway_core::redact::scrub(&e.user_message())
        ),
        AgentEnd::Cancelled(CancelReason::UserStop) => "⏹ Stopped.".to_string(),
        AgentEnd::Cancelled(CancelReason::Interrupted) => {
            "⏩ Interrupted by a newer message.".to_string()
        }
        AgentEnd::Cancelled(CancelReason::Shutdown) => {
            "⚠️ The gateway is restarting, so this answer was cut short. Please ask again in a minute."
                .to_string()
        }
    };
    if partial.trim().is_empty() {
        notice
    } else {
        format!("{partial}\n\n{notice}")
    }
}

impl TurnRunner {
    /// Loads the session for `key`, starting a new one when none exists or the reset policy says
    /// it expired.
    async fn session(&self, key: &str, msg: &InboundMessage) -> SessionRecord {
        let now = self.shared.clock.now();
        let existing = match self.shared.store.session_get(key).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Could not read a session; starting a new one.");
                None
            }
        };
        match existing {
            Some(mut r) => {
                if let Some(reason) = self.shared.sessions.reset.expired(r.updated_at, now) {
                    info!(instance = %msg.instance, ?reason, "Session reset by policy.");
                    r.session_id = new_session_id(now);
                    r.created_at = now;
                    r.turns = 0;
                }
                r.updated_at = now;
                r.turns += 1;
                r.sender = msg.sender.clone();
                r
            }
            None => SessionRecord {
                key: key.to_string(),
                session_id: new_session_id(now),
                instance: msg.instance.clone(),
                chat: msg.chat.clone(),
                sender: msg.sender.clone(),
                created_at: now,
                updated_at: now,
                turns: 1,
            },
        }
    }

    /// Runs the agent, feeding `sink` cumulative text no faster than the adapter allows.
    async fn run_agent(
        &self,
        inst: &Instance,
        turn: AgentTurn,
        cancel: &TurnCancel,
        sink: &mut Option<Box<dyn ReplySink>>,
    ) -> (String, AgentEnd) {
        let mut text = String::new();
        if let Some(reason) = cancel.reason() {
            return (text, AgentEnd::Cancelled(reason));
        }
        let mut stream = tokio::select! {
            r = self.shared.agent.start(turn, cancel.token().clone()) => match r {
                Ok(s) => s,
                Err(e) => return (text, AgentEnd::Failed(e)),
            },
            () = cancel.token().cancelled() => {
                return (text, AgentEnd::Cancelled(cancel.reason().unwrap_or(CancelReason::UserStop)));
            }
        };
        let interval = inst.caps.streaming.map(|s| s.min_interval);
        let mut last_push = tokio::time::Instant::now();
        let mut dirty = false;
        loop {
            let next_push = last_push + interval.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                // Cancellation first: a stopped turn must not keep streaming.
                biased;
                () = cancel.token().cancelled() => {
                    let reason = cancel.reason().unwrap_or(CancelReason::UserStop);
                    return (text, AgentEnd::Cancelled(reason));
                }
                ev = stream.next() => match ev {
                    Some(Ok(AgentEvent::Delta(d))) => {
                        text.push_str(&d);
                        dirty = true;
                    }
                    Some(Ok(AgentEvent::Final(t))) => {
                        text = t;
                        return (text, AgentEnd::Completed);
                    }
                    Some(Err(e)) => return (text, AgentEnd::Failed(e)),
                    None if text.is_empty() => {
                        return (text, AgentEnd::Failed(AgentError::Protocol(
                            "the agent ended without an answer".into(),
                        )));
                    }
                    None => return (text, AgentEnd::Completed),
                },
                // Coalesced streaming update: at most one per interval, always the latest text.
                () = tokio::time::sleep_until(next_push), if dirty && interval.is_some() => {
                    if let Some(s) = sink.as_mut() {
                        if let Err(e) = s.update(&text).await {
                            debug!(instance = %inst.name, error = %e, "Streaming update failed; the final text will still be sent.");
                        }
                    }
                    last_push = tokio::time::Instant::now();
                    dirty = false;
                }
            }
        }
    }

    /// Delivers the final text through the sink, or proactively when no sink could be opened,
    /// recording each confirmed part in the outbox (see `delivery.rs`). When every path fails
    /// the entry stays there for a retry from its first unconfirmed part.
    async fn deliver(
        &self,
        inst: &Instance,
        msg: &InboundMessage,
        sink: Option<Box<dyn ReplySink>>,
        text: &str,
        outcome: TurnOutcome,
    ) {
        let target = Target::from_chat(&msg.chat);
        let log = OutboxLog::new(
            self.shared.clone(),
            &inst.name,
            target.clone(),
            text,
            Some(InboxEntry::id_for(msg)),
        );
        let result = match sink {
            Some(sink) => sink.finish_logged(text, outcome, &log).await,
            None => {
                inst.adapter
                    .send_logged(&target, &OutboundMessage::markdown(text), &log)
                    .await
            }
        };
        match result {
            Ok(()) => {
                log.delivered().await;
                self.shared
                    .metrics
                    .inc("gateway_messages_out_total", &[("instance", &inst.name)]);
            }
            Err(e) => {
                warn!(instance = %inst.name, error = %e, "Reply undelivered; kept in the outbox for retry.");
                self.shared
                    .metrics
                    .inc("gateway_undelivered_total", &[("instance", &inst.name)]);
                inst.health.error(format!("reply undelivered: {e}"));
                log.failed(&e).await;
            }
        }
    }
}

#[async_trait]
impl TurnHandler for TurnRunner {
    async fn run_turn(&self, job: TurnJob, cancel: TurnCancel) {
        let shared = &self.shared;
        let msg = job.message;
        let Some(inst) = shared.instance(&msg.instance) else {
            warn!(instance = %msg.instance, "Turn for an unknown instance dropped.");
            return;
        };
        let mut record = self.session(&job.key, &msg).await;
        let history = shared
            .store
            .history_load(&record.session_id, shared.sessions.history_turns)
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "Could not load history; continuing without it.");
                Vec::new()
            });

        // Open the reply early so a streaming adapter shows its "thinking" bubble at once.
        let mut sink = match inst.adapter.reply(&msg).await {
            Ok(mut s) => match s.start().await {
                Ok(()) => Some(s),
                Err(e) => {
                    debug!(instance = %inst.name, error = %e, "Could not open the reply bubble; will reply at the end.");
                    Some(s)
                }
            },
            Err(e) => {
                debug!(instance = %inst.name, error = %e, "No reply channel; will send proactively.");
                None
            }
        };

        let turn = AgentTurn {
            session_key: job.key.clone(),
            session_id: record.session_id.clone(),
            instance: msg.instance.clone(),
            sender: msg.sender.clone(),
            chat: msg.chat.clone(),
            message_type: msg.kind_name().to_string(),
            text: msg.text(),
            attachments: msg.attachments(),
            history,
        };
        let (partial, end) = self.run_agent(inst, turn, &cancel, &mut sink).await;
        let (outcome, label) = match &end {
            AgentEnd::Completed => (TurnOutcome::Completed, "completed"),
            AgentEnd::Failed(e) => {
                shared.metrics.inc(
                    "gateway_errors_total",
                    &[("instance", &inst.name), ("kind", e.kind())],
                );
                warn!(instance = %inst.name, error = %e, "Agent turn failed.");
                (TurnOutcome::Failed, "failed")
            }
            AgentEnd::Cancelled(CancelReason::Shutdown) => (TurnOutcome::ShuttingDown, "shutdown"),
            AgentEnd::Cancelled(_) => (TurnOutcome::Stopped, "stopped"),
        };
        shared.metrics.inc(
            "gateway_turns_total",
            &[("instance", &inst.name), ("outcome", label)],
        );
        let text = final_text(&partial, &end);

        // History and session first, delivery last: once the user sees the answer the turn is
        // over, so a follow-up sent right away starts at once (instead of being queued behind
        // bookkeeping) and already finds this exchange in the history.
        let now = shared.clock.now();
        let mut lines = vec![HistoryEntry {
            role: Role::User,
            text: history_text(&msg),
            at: now,
        }];
        if !partial.trim().is_empty() {
            lines.push(HistoryEntry {
                role: Role::Assistant,
                text: partial,
                at: now,
            });
        }
        let cap = shared.sessions.history_cap;
        if let Err(e) = shared
            .store
            .history_append(&record.session_id, &lines, cap)
            .await
        {
            warn!(error = %e, "Could not append history.");
        }
        record.updated_at = now;
        // `/new` during this turn deleted the session: do not resurrect it.
        if !matches!(end, AgentEnd::Cancelled(CancelReason::UserStop))
            || shared
                .store
                .session_get(&job.key)
                .await
                .ok()
                .flatten()
                .is_some()
        {
            if let Err(e) = shared.store.session_put(&record).await {
                warn!(error = %e, "Could not save the session.");
            }
        }
        self.deliver(inst, &msg, sink, &text, outcome).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_texts_always_say_what_happened() {
        assert_eq!(final_text("hi", &AgentEnd::Completed), "hi");
        assert!(final_text("", &AgentEnd::Completed).contains("empty"));
        let stopped = final_text("partial", &AgentEnd::Cancelled(CancelReason::UserStop));
        assert!(stopped.starts_with("partial\n\n") && stopped.contains("Stopped"));
        let cut = final_text("", &AgentEnd::Cancelled(CancelReason::Shutdown));
        assert!(cut.contains("restarting"));
        let failed = final_text(
            "",
            &AgentEnd::Failed(AgentError::Timeout(Duration::from_secs(5))),
        );
        assert!(failed.starts_with("⚠️"));
    }
}
