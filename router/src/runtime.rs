//! The gateway runtime: builds the pipeline from a validated config, starts every platform
//! instance under a supervisor (retry with backoff; one failing instance never stops the others),
//! resumes unfinished inbox entries, retries the outbox, serves `/health` and `/metrics`, and on
//! shutdown drains in-flight turns before disconnecting adapters and closing the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_bridge::AgentBackend;
use gateway_core::adapter::AdapterContext;
use gateway_core::clock::Clock;
use gateway_core::health::{HealthReporter, InstanceState};
use gateway_core::pairing::PairingEngine;
use gateway_core::policy::AccessPolicy;
use gateway_core::session::SessionEngine;
use gateway_core::store::DeliveryState;
use gateway_core::{AdapterError, InboundMessage, StateStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::AdminInfo;
use crate::config::GatewayConfig;
use crate::dispatch::Dispatcher;
use crate::http::{app, HttpState};
use crate::metrics::Metrics;
use crate::registry::InstancePlan;
use crate::shared::{Instance, Shared};
use crate::turn::TurnRunner;

/// Delays between attempts to start an instance that failed to connect.
const START_BACKOFF: &[u64] = &[2, 5, 10, 30, 60];

/// A gateway assembled from its config, ready to run.
pub struct Gateway {
    config: GatewayConfig,
    shared: Arc<Shared>,
    engine: SessionEngine,
    dispatcher: Dispatcher,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("instances", &self.shared.instances.keys())
            .finish()
    }
}

impl Gateway {
    /// Wires instances, the agent and the store into a pipeline. No I/O happens here.
    pub fn new(
        config: GatewayConfig,
        plans: Vec<InstancePlan>,
        agent: Arc<dyn AgentBackend>,
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut instances = HashMap::new();
        for plan in plans {
            let caps = plan.adapter.capabilities();
            let name = plan.spec.name.clone();
            instances.insert(
                name.clone(),
                Instance {
                    health: HealthReporter::new(&name, &plan.spec.kind),
                    name,
                    kind: plan.spec.kind,
                    adapter: plan.adapter,
                    caps,
                    policy: AccessPolicy::new(plan.access),
                    home_channel: plan.spec.home_channel,
                },
            );
        }
        let shared = Arc::new(Shared {
            instances,
            pairing: PairingEngine::new(store.clone(), clock.clone()),
            store,
            agent,
            clock,
            sessions: config.sessions.clone(),
            metrics: Metrics::default(),
            tasks: TaskTracker::new(),
            pairing_notified: Mutex::new(HashMap::new()),
            in_flight: Default::default(),
            outbox_kick: tokio::sync::Notify::new(),
        });
        let engine = SessionEngine::new(
            config.sessions.clone(),
            Arc::new(TurnRunner::new(shared.clone())),
        );
        let dispatcher = Dispatcher::new(shared.clone(), engine.clone());
        Self {
            config,
            shared,
            engine,
            dispatcher,
        }
    }

    /// Warns loudly for every instance whose DM or group policy is `open`.
    pub fn warn_open_policies(&self) {
        for inst in self.shared.instances.values() {
            let (dm_open, group_open) = inst.policy.is_open();
            if dm_open || group_open {
                let which = match (dm_open, group_open) {
                    (true, true) => "DMs and groups",
                    (true, false) => "DMs",
                    _ => "groups",
                };
                warn!(
                    instance = %inst.name,
                    "ACCESS IS OPEN for {which}: anyone who can reach this bot can use your agent. \
                     Set dm_policy: pairing or allowlist (and group_policy: allowlist) under platforms.{}.extra.",
                    inst.name
                );
            }
        }
    }

    /// The inbound sink (tests drive the pipeline through it).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Health of every instance.
    pub fn health(&self) -> Vec<gateway_core::health::InstanceHealth> {
        self.shared
            .instances
            .values()
            .map(|i| i.health.snapshot())
            .collect()
    }

    /// Runs until `shutdown` is cancelled, then drains and returns. `listener` serves `/health`
    /// and `/metrics` when given (tests pass one bound to port 0; `gateway chat` passes none).
    ///
    /// An instance that cannot start for a reason retrying cannot cure (its port is taken) stops
    /// the whole gateway the same way, and the reason is returned as the error: the operator
    /// learns at once instead of finding a half-running gateway later.
    pub async fn run(
        self,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), FatalError> {
        let Gateway {
            config,
            shared,
            engine,
            dispatcher,
        } = self;
        // Adapters keep running while turns drain, so they get their own token, cancelled last.
        let adapters_stop = CancellationToken::new();
        let supervisors = TaskTracker::new();

        // Unfinished messages from before a crash or restart, read before any adapter can add
        // new ones so nothing is scheduled twice.
        let mut resume: HashMap<String, Vec<InboundMessage>> = HashMap::new();
        // Entries whose answer is already in the outbox are not run again: the outbox loop
        // finishes their delivery from the first unconfirmed part.
        let started = shared.clock.now();
        match shared.store.inbox_pending().await {
            Ok(entries) => {
                for e in entries {
                    match shared.store.outbox_for_inbox(&e.id).await {
                        Ok(Some(_)) => continue,
                        Ok(None) => {}
                        Err(err) => {
                            warn!(error = %err, "Could not read the outbox; resuming the message.")
                        }
                    }
                    resume
                        .entry(e.message.instance.clone())
                        .or_default()
                        .push(e.message);
                }
            }
            Err(e) => {
                error!(error = %e, "Could not read the inbox; unfinished messages will not resume.")
            }
        }

        // Publish the admin token for `gateway send` (only when there is a listener).
        let admin = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|addr| AdminInfo::generate(addr.to_string()));
        let admin_file = admin.as_ref().and_then(|a| match a.write(&config.gateway.data_dir) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(error = %e, "Could not write the admin file; `gateway send` will connect on its own.");
                None
            }
        });
        let http_state = HttpState {
            shared: shared.clone(),
            engine: engine.clone(),
            admin_token: Arc::new(admin.map(|a| a.token).unwrap_or_default()),
        };
        let http_stop = CancellationToken::new();
        let http = {
            let stop = http_stop.clone();
            tokio::spawn(async move {
                let Some(listener) = listener else { return };
                let serve = axum::serve(listener, app(http_state))
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    error!(error = %e, "Health listener failed.");
                }
            })
        };

        let fatal: Arc<std::sync::OnceLock<FatalError>> = Arc::default();
        let sink: Arc<dyn gateway_core::InboundSink> = Arc::new(dispatcher.clone());
        for inst in shared.instances.values() {
            let ctx = AdapterContext {
                instance: inst.name.clone(),
                data_dir: config.gateway.data_dir.join(&inst.name),
                inbound: sink.clone(),
                store: shared.store.clone(),
                health: inst.health.clone(),
                shutdown: adapters_stop.clone(),
            };
            let pending = resume.remove(&inst.name).unwrap_or_default();
            supervisors.spawn(supervise(
                Supervised {
                    shared: shared.clone(),
                    dispatcher: dispatcher.clone(),
                    name: inst.name.clone(),
                    fatal: fatal.clone(),
                    shutdown: shutdown.clone(),
                },
                ctx,
                pending,
                adapters_stop.clone(),
            ));
        }
        for (instance, msgs) in resume {
            warn!(instance = %instance, count = msgs.len(), "Unfinished messages for an instance that is not configured; left in the inbox.");
        }

        let maintenance = tokio::spawn(maintenance_loop(shared.clone(), adapters_stop.clone()));
        let outbox = tokio::spawn(outbox_loop(
            shared.clone(),
            Duration::from_secs(config.gateway.outbox_retry_secs.max(1)),
            started,
            adapters_stop.clone(),
        ));

        shutdown.cancelled().await;
        info!("Shutting down: finishing in-flight replies.");
        let deadline = Duration::from_secs(config.gateway.drain_timeout_secs);
        let left = engine.drain(deadline, Duration::from_secs(5)).await;
        if !left.is_empty() {
            info!(
                count = left.len(),
                "Queued messages kept for after the restart."
            );
        }
        shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await;

        adapters_stop.cancel();
        for inst in shared.instances.values() {
            if tokio::time::timeout(Duration::from_secs(10), inst.adapter.disconnect())
                .await
                .is_err()
            {
                warn!(instance = %inst.name, "Adapter did not disconnect in time.");
            }
            inst.health.set_state(InstanceState::Stopped);
        }
        supervisors.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), supervisors.wait()).await;
        outbox.abort();
        maintenance.abort();
        http_stop.cancel();
        let _ = http.await;
        if let Some(p) = admin_file {
            let _ = std::fs::remove_file(p);
        }
        if let Err(e) = shared.store.close().await {
            warn!(error = %e, "Store did not close cleanly.");
        }
        info!("Stopped.");
        match fatal.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Why the gateway stopped on its own (see [`Gateway::run`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("platform instance {instance} cannot start: {reason}")]
pub struct FatalError {
    /// The instance that could not start.
    pub instance: String,
    /// Why, with what to do about it.
    pub reason: String,
}

/// What a supervisor needs besides the adapter's context.
struct Supervised {
    shared: Arc<Shared>,
    dispatcher: Dispatcher,
    name: String,
    /// Set once by the first instance that cannot start at all.
    fatal: Arc<std::sync::OnceLock<FatalError>>,
    /// The gateway's shutdown, cancelled on a fatal error.
    shutdown: CancellationToken,
}

/// Starts one instance, retrying with backoff until it connects or the gateway stops, then
/// resumes its unfinished messages.
async fn supervise(
    sup: Supervised,
    ctx: AdapterContext,
    pending: Vec<InboundMessage>,
    stop: CancellationToken,
) {
    let Supervised {
        shared,
        dispatcher,
        name,
        fatal,
        shutdown,
    } = sup;
    let Some(inst) = shared.instance(&name) else {
        return;
    };
    let mut attempt = 0usize;
    loop {
        let result = tokio::select! {
            r = inst.adapter.connect(ctx.clone()) => r,
            () = stop.cancelled() => return,
        };
        match result {
            Ok(()) => {
                if !matches!(inst.health.snapshot().state, InstanceState::Connected) {
                    inst.health.set_state(InstanceState::Connected);
                }
                info!(instance = %name, kind = %inst.kind, "Platform instance started.");
                break;
            }
            Err(AdapterError::AddressInUse(reason)) => {
                // Retrying cannot free a port another process holds.
                inst.health.set_state(InstanceState::Failed {
                    error: reason.clone(),
                });
                inst.health.error(reason.clone());
                error!(instance = %name, "{reason}");
                let _ = fatal.set(FatalError {
                    instance: name.clone(),
                    reason,
                });
                shutdown.cancel();
                return;
            }
            Err(AdapterError::Auth { message, hint }) => {
                // The adapter already retried as its platform's client does; refused
                // credentials do not heal by themselves, so the instance stays down (the rest
                // of the gateway runs) until the config is fixed and the gateway restarted.
                error!(instance = %name, error = %message, "Platform instance not started: its credentials were refused. {hint}");
                inst.health
                    .set_state(InstanceState::AuthFailed { hint: hint.clone() });
                inst.health.error(format!("credentials refused: {message}"));
                shared.metrics.inc(
                    "gateway_errors_total",
                    &[("instance", &name), ("kind", "auth")],
                );
                return;
            }
            Err(e) => {
                let delay = START_BACKOFF[attempt.min(START_BACKOFF.len() - 1)];
                attempt += 1;
                inst.health.set_state(InstanceState::Failed {
                    error: e.to_string(),
                });
                inst.health.error(e.to_string());
                shared.metrics.inc(
                    "gateway_errors_total",
                    &[("instance", &name), ("kind", e.kind())],
                );
                warn!(
                    instance = %name,
                    error = %e,
                    attempt,
                    retry_in_secs = delay,
                    "Platform instance failed to start; retrying in {delay} s (attempt {attempt}).{}",
                    network_hint(&e)
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(delay)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
    if !pending.is_empty() {
        info!(instance = %name, count = pending.len(), "Resuming unfinished messages.");
        for msg in pending {
            dispatcher.resume(msg);
        }
    }
}

/// What to add to a start failure that looks like the network: where to look.
fn network_hint(e: &AdapterError) -> &'static str {
    match e {
        AdapterError::Disconnected(_) | AdapterError::Timeout(_) => {
            " Check the network, DNS and any proxy (HTTPS_PROXY / ALL_PROXY) between this host and the platform."
        }
        _ => "",
    }
}

/// After this many attempts an entry stays for the operator but is no longer retried on its own
/// (`gateway outbox retry` still retries it).
pub const OUTBOX_MAX_ATTEMPTS: u32 = 20;

/// Retries recorded deliveries: at start (to finish what a crash interrupted, as soon as the
/// instance is up), then every `every`, and at once when kicked (`gateway outbox retry`).
///
/// An entry in state `sending` belongs to a live delivery, unless it was written before this
/// process `started`: then a crash interrupted it and the loop finishes it.
async fn outbox_loop(
    shared: Arc<Shared>,
    every: Duration,
    started: chrono::DateTime<chrono::Utc>,
    stop: CancellationToken,
) {
    // The first passes come quickly, so resumed deliveries do not wait a whole period for
    // instances that take a moment to connect.
    let mut wait = Duration::from_millis(200);
    let mut kicked = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.outbox_kick.notified() => kicked = true,
            () = stop.cancelled() => return,
        }
        let entries = match shared.store.outbox_pending(None).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "Could not read the outbox.");
                continue;
            }
        };
        let mut waiting = false;
        for entry in entries {
            if shared.in_flight.contains(entry.id)
                || (entry.state == DeliveryState::Sending && entry.created_at >= started)
                || (!kicked && entry.attempts >= OUTBOX_MAX_ATTEMPTS)
            {
                continue;
            }
            let Some(inst) = shared.instance(&entry.instance) else {
                continue;
            };
            if !inst.health.snapshot().state.is_up() {
                waiting = true;
                continue;
            }
            if crate::delivery::retry(&shared, inst, &entry).await.is_ok() {
                shared
                    .metrics
                    .inc("gateway_messages_out_total", &[("instance", &inst.name)]);
            }
            if stop.is_cancelled() {
                return;
            }
        }
        crate::delivery::refresh_undelivered(&shared).await;
        kicked = false;
        // Keep polling quickly while an instance with work is still starting.
        wait = if waiting && wait < every {
            (wait * 2).min(every)
        } else {
            every
        };
    }
}

/// How long finished inbox entries are kept: they are the persistent dedup record, so they must
/// outlive any platform redelivery (WeCom retries within minutes).
const INBOX_KEEP: Duration = Duration::from_secs(24 * 3600);

/// Prunes finished inbox entries every hour so the journal stays bounded.
async fn maintenance_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let before =
            shared.clock.now() - chrono::Duration::from_std(INBOX_KEEP).unwrap_or_default();
        match shared.store.inbox_prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "Pruned finished inbox entries."),
            Err(e) => warn!(error = %e, "Could not prune the inbox."),
        }
        // The adapters' intake journal is their dedup record: kept as long as the inbox.
        match shared.store.intake_prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "Pruned finished intake entries."),
            Err(e) => warn!(error = %e, "Could not prune the intake journal."),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = stop.cancelled() => return,
        }
    }
}
