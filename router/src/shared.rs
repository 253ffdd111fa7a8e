//! State shared by the dispatch pipeline, the turn runner and the HTTP endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_bridge::AgentBackend;
use gateway_core::adapter::Capabilities;
use gateway_core::clock::Clock;
use gateway_core::health::HealthReporter;
use gateway_core::pairing::PairingEngine;
use gateway_core::policy::AccessPolicy;
use gateway_core::session::SessionConfig;
use gateway_core::{InboundMessage, OutboundMessage, PlatformAdapter, StateStore};
use tokio_util::task::TaskTracker;

use crate::delivery::OutboxLog;
use crate::metrics::Metrics;

/// A running platform instance as the router sees it.
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// Adapter kind.
    pub kind: String,
    /// The adapter.
    pub adapter: Arc<dyn PlatformAdapter>,
    /// Its capabilities, read once at start.
    pub caps: Capabilities,
    /// Its access policy.
    pub policy: AccessPolicy,
    /// Its health record.
    pub health: HealthReporter,
    /// Default destination for notices.
    pub home_channel: Option<String>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Everything the pipeline needs, behind one `Arc`.
pub struct Shared {
    /// Instances by name.
    pub instances: HashMap<String, Instance>,
    /// The state store.
    pub store: Arc<dyn StateStore>,
    /// The agent.
    pub agent: Arc<dyn AgentBackend>,
    /// Pairing codes and approvals.
    pub pairing: PairingEngine,
    /// Wall clock (tokio-driven, so tests can pause it).
    pub clock: Arc<dyn Clock>,
    /// Session settings.
    pub sessions: SessionConfig,
    /// Counters.
    pub metrics: Metrics,
    /// Short background tasks (notices, pairing replies); drained on shutdown.
    pub tasks: TaskTracker,
    /// Users recently told that pairing is unavailable, so they are told once per window.
    pub pairing_notified: Mutex<HashMap<(String, String), tokio::time::Instant>>,
    /// Outbox entries a live delivery is working on.
    pub in_flight: crate::delivery::InFlight,
    /// Wakes the outbox retry loop (an operator's `gateway outbox retry`).
    pub outbox_kick: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("instances", &self.instances.keys())
            .finish_non_exhaustive()
    }
}

/// How long a user is not re-notified that pairing is unavailable.
const PAIRING_NOTICE_WINDOW: Duration = Duration::from_secs(600);
/// Bound of the pairing notice map.
const PAIRING_NOTICE_CAP: usize = 10_000;

impl Shared {
    /// The instance `name`; messages only come from known instances.
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.get(name)
    }

    /// Sends a short notice as a reply to `inbound`, in the background, so the caller (an
    /// adapter's read loop) never waits on the platform. The notice goes through the outbox
    /// like a reply: if neither the reply channel nor a proactive send takes it, it is kept
    /// and retried.
    pub fn notify(self: &Arc<Self>, inbound: &InboundMessage, text: String) {
        let this = self.clone();
        let inbound = inbound.clone();
        self.tasks.spawn(async move {
            let Some(inst) = this.instance(&inbound.instance) else { return };
            let target = gateway_core::Target::from_chat(&inbound.chat);
            let log = OutboxLog::new(this.clone(), &inst.name, target.clone(), &text, None);
            let result = inst.adapter.notice(&inbound, &text, &log).await;
            let result = match result {
                Ok(()) => Ok(()),
                Err(e) if log.started() => Err(e),
                // A notice that cannot be replied in place goes out proactively.
                Err(e) => {
                    tracing::debug!(instance = %inst.name, error = %e, "Notice not accepted as a reply; sending it proactively.");
                    inst.adapter
                        .send_logged(&target, &OutboundMessage::text(&text), &log)
                        .await
                }
            };
            match result {
                Ok(()) => {
                    log.delivered().await;
                    this.metrics.inc("gateway_messages_out_total", &[("instance", &inst.name)]);
                }
                Err(e) => {
                    this.metrics.inc(
                        "gateway_errors_total",
                        &[("instance", &inst.name), ("kind", e.kind())],
                    );
                    tracing::warn!(instance = %inst.name, error = %e, "Could not deliver a gateway notice; kept in the outbox for retry.");
                    log.failed(&e).await;
                }
            }
        });
    }

    /// Sends an operator notice to the instance's home channel, if it has one, in the
    /// background. Failures are logged; the notice is informational.
    pub fn notify_home(self: &Arc<Self>, instance: &str, text: String) {
        let Some(inst) = self.instance(instance) else {
            return;
        };
        let Some(home) = inst.home_channel.as_deref() else {
            return;
        };
        let Ok(target) = gateway_core::Target::parse(home) else {
            return;
        };
        let this = self.clone();
        let name = inst.name.clone();
        self.tasks.spawn(async move {
            let Some(inst) = this.instance(&name) else { return };
            match inst.adapter.send(&target, &OutboundMessage::text(&text)).await {
                Ok(()) => this.metrics.inc("gateway_messages_out_total", &[("instance", &name)]),
                Err(e) => tracing::warn!(instance = %name, error = %e, "Could not notify the home channel."),
            }
        });
    }

    /// True when `user` on `instance` should be told (again) that pairing is unavailable.
    pub fn should_notify_pairing(&self, instance: &str, user: &str) -> bool {
        let mut m = self
            .pairing_notified
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if m.len() >= PAIRING_NOTICE_CAP {
            m.retain(|_, t| now.duration_since(*t) < PAIRING_NOTICE_WINDOW);
            if m.len() >= PAIRING_NOTICE_CAP {
                m.clear();
            }
        }
        let key = (instance.to_string(), user.to_ascii_lowercase());
        match m.get(&key) {
            Some(t) if now.duration_since(*t) < PAIRING_NOTICE_WINDOW => false,
            _ => {
                m.insert(key, now);
                true
            }
        }
    }
}
