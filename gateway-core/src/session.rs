//! Session engine: session keys, per-key serialisation of turns, busy modes, the global cap on
//! concurrent turns, reset policy, and drain on shutdown.
//!
//! Invariant: one agent turn at a time per session key; different keys run concurrently (up to
//! `max_concurrent_turns`). `submit` is synchronous and O(1), so an adapter's read loop can call it
//! through the router without waiting on any agent work.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{ChatAddress, ChatKind, InboundMessage};

/// What happens to a message that arrives while its session is running a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyMode {
    /// Queue it (bounded); it runs as its own turn after the current one.
    #[default]
    Queue,
    /// Stop the current turn (its bubble is finished with a notice), then run the new message.
    Interrupt,
}

/// When a session starts afresh on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetMode {
    /// Never.
    None,
    /// After `idle_minutes` without a turn.
    #[default]
    Idle,
    /// Daily at `at_hour` (UTC offset `utc_offset_hours`).
    Daily,
    /// Whichever comes first.
    Both,
}

/// The automatic reset policy, evaluated on the next message of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResetPolicy {
    /// Which rule applies.
    pub mode: ResetMode,
    /// Idle time after which a session resets (`idle`, `both`).
    pub idle_minutes: u32,
    /// Hour of day (0–23) of the daily reset (`daily`, `both`).
    pub at_hour: u32,
    /// Offset of the local time zone for `at_hour`, in hours (e.g. 8 for China).
    pub utc_offset_hours: i32,
}

impl Default for ResetPolicy {
    fn default() -> Self {
        Self {
            mode: ResetMode::Idle,
            idle_minutes: 1440,
            at_hour: 4,
            utc_offset_hours: 8,
        }
    }
}

/// Why a session was reset automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetReason {
    /// Idle longer than `idle_minutes`.
    Idle,
    /// A daily reset time passed since the last turn.
    Daily,
}

impl ResetPolicy {
    /// Whether a session last active at `last` must reset at `now`, and why.
    pub fn expired(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<ResetReason> {
        let idle = matches!(self.mode, ResetMode::Idle | ResetMode::Both)
            && now - last >= chrono::Duration::minutes(i64::from(self.idle_minutes.max(1)));
        if idle {
            return Some(ResetReason::Idle);
        }
        let daily = matches!(self.mode, ResetMode::Daily | ResetMode::Both)
            && self.last_daily_boundary(now).is_some_and(|b| last < b);
        daily.then_some(ResetReason::Daily)
    }

    /// The most recent daily reset instant at or before `now`.
    fn last_daily_boundary(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset = chrono::FixedOffset::east_opt(self.utc_offset_hours.clamp(-23, 23) * 3600)?;
        let local = now.with_timezone(&offset);
        let today = local
            .with_hour(self.at_hour.min(23))?
            .with_minute(0)?
            .with_second(0)?
            .with_nanosecond(0)?;
        let boundary = if today <= local {
            today
        } else {
            today - chrono::Duration::days(1)
        };
        Some(boundary.with_timezone(&Utc))
    }
}

/// The `sessions:` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Busy mode for messages arriving mid-turn.
    pub busy_mode: BusyMode,
    /// In groups, give each member their own session (default true).
    pub group_sessions_per_user: bool,
    /// Messages that may wait per session while a turn runs.
    pub max_queue: usize,
    /// Turns that may run at once across all sessions.
    pub max_concurrent_turns: usize,
    /// History lines kept per session.
    pub history_cap: usize,
    /// History lines sent to the agent with each turn.
    pub history_turns: usize,
    /// Automatic reset.
    pub reset: ResetPolicy,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            busy_mode: BusyMode::Queue,
            group_sessions_per_user: true,
            max_queue: 8,
            max_concurrent_turns: 32,
            history_cap: 200,
            history_turns: 40,
            reset: ResetPolicy::default(),
        }
    }
}

/// The session key of a message: instance, DM/group, chat id, and the sender in groups when
/// `per_user` is on. Different keys never share history or a turn slot.
pub fn session_key(instance: &str, chat: &ChatAddress, sender_id: &str, per_user: bool) -> String {
    match chat.kind {
        ChatKind::Dm => format!("{instance}:dm:{}", chat.chat_id),
        ChatKind::Group if per_user => format!("{instance}:group:{}:{sender_id}", chat.chat_id),
        ChatKind::Group => format!("{instance}:group:{}", chat.chat_id),
    }
}

/// A new random session id: `YYYYMMDD_HHMMSS_<8 hex>`.
pub fn new_session_id(now: DateTime<Utc>) -> String {
    let suffix: u32 = rand::random();
    format!("{}_{suffix:08x}", now.format("%Y%m%d_%H%M%S"))
}

/// Why a running turn was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `/stop` or `/new`.
    UserStop,
    /// A newer message interrupted it (busy mode `interrupt`).
    Interrupted,
    /// The gateway is shutting down and the drain deadline passed.
    Shutdown,
}

/// Cancellation of one turn, with the reason recorded by whoever cancelled first.
#[derive(Debug, Clone, Default)]
pub struct TurnCancel {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

impl TurnCancel {
    /// Cancels with `reason` (the first reason wins).
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The token, for `select!` and for passing to the agent.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why it was cancelled, if it was.
    pub fn reason(&self) -> Option<CancelReason> {
        if self.token.is_cancelled() {
            self.reason.get().copied()
        } else {
            None
        }
    }
}

/// One scheduled turn.
#[derive(Debug, Clone)]
pub struct TurnJob {
    /// Its session key.
    pub key: String,
    /// The message to answer.
    pub message: InboundMessage,
}

/// Runs turns; implemented by the router (agent call, delivery, history, inbox bookkeeping).
#[async_trait]
pub trait TurnHandler: Send + Sync + 'static {
    /// Runs one turn to completion. Must finish the reply even when `cancel` fires.
    async fn run_turn(&self, job: TurnJob, cancel: TurnCancel);
}

/// What `submit` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The session was idle: the turn starts now (or when a global slot frees).
    Started,
    /// Queued behind the running turn; `position` is 1-based.
    Queued {
        /// Place in the queue.
        position: usize,
    },
    /// The running turn was interrupted; this message runs next.
    Interrupted,
    /// The session's queue is full; the message was not scheduled.
    QueueFull,
    /// The engine is draining for shutdown; the message was not scheduled.
    ShuttingDown,
}

/// The state of one session key, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyStatus {
    /// How long the current turn has run, if one runs.
    pub running_for: Option<Duration>,
    /// Messages waiting.
    pub queued: usize,
}

#[derive(Debug, Default)]
struct KeyState {
    running: Option<(TurnCancel, tokio::time::Instant)>,
    queue: VecDeque<TurnJob>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, KeyState>,
    draining: bool,
}

struct Inner {
    config: SessionConfig,
    handler: Arc<dyn TurnHandler>,
    state: Mutex<State>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
}

/// Schedules turns per session key. Cheap to clone.
#[derive(Clone)]
pub struct SessionEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SessionEngine {
    /// An engine that runs turns through `handler`.
    pub fn new(config: SessionConfig, handler: Arc<dyn TurnHandler>) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_turns.max(1)));
        Self {
            inner: Arc::new(Inner {
                config,
                handler,
                state: Mutex::new(State::default()),
                permits,
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Poisoning only follows a panic in this module's short critical sections; the map is
        // still consistent because every section leaves it valid before doing anything fallible.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules a turn. Never waits.
    pub fn submit(&self, job: TurnJob) -> SubmitOutcome {
        let mut st = self.lock();
        if st.draining {
            return SubmitOutcome::ShuttingDown;
        }
        let busy_mode = self.inner.config.busy_mode;
        let max_queue = self.inner.config.max_queue;
        let entry = st.keys.entry(job.key.clone()).or_default();
        match &entry.running {
            None => {
                let cancel = TurnCancel::default();
                entry.running = Some((cancel.clone(), tokio::time::Instant::now()));
                let key = job.key.clone();
                drop(st);
                self.spawn_worker(key, job, cancel);
                SubmitOutcome::Started
            }
            Some(_) if entry.queue.len() >= max_queue => SubmitOutcome::QueueFull,
            Some((cancel, _)) => {
                entry.queue.push_back(job);
                match busy_mode {
                    BusyMode::Queue => SubmitOutcome::Queued {
                        position: entry.queue.len(),
                    },
                    BusyMode::Interrupt => {
                        cancel.cancel(CancelReason::Interrupted);
                        SubmitOutcome::Interrupted
                    }
                }
            }
        }
    }

    /// Stops the running turn of `key` (if any) and drops its queued messages, which are returned
    /// so the caller can close them visibly. Returns whether a turn was running.
    pub fn stop(&self, key: &str) -> (bool, Vec<TurnJob>) {
        let mut st = self.lock();
        let Some(entry) = st.keys.get_mut(key) else {
            return (false, Vec::new());
        };
        let dropped: Vec<TurnJob> = entry.queue.drain(..).collect();
        let running = match &entry.running {
            Some((cancel, _)) => {
                cancel.cancel(CancelReason::UserStop);
                true
            }
            None => false,
        };
        (running, dropped)
    }

    /// The state of `key`.
    pub fn status(&self, key: &str) -> KeyStatus {
        let st = self.lock();
        st.keys
            .get(key)
            .map(|e| KeyStatus {
                running_for: e.running.as_ref().map(|(_, t)| t.elapsed()),
                queued: e.queue.len(),
            })
            .unwrap_or_default()
    }

    /// `(running turns, queued messages)` across all keys, for metrics.
    pub fn load(&self) -> (usize, usize) {
        let st = self.lock();
        st.keys.values().fold((0, 0), |(r, q), e| {
            (r + usize::from(e.running.is_some()), q + e.queue.len())
        })
    }

    fn spawn_worker(&self, key: String, first: TurnJob, cancel: TurnCancel) {
        let this = self.clone();
        self.inner
            .tracker
            .spawn(async move { this.worker(key, first, cancel).await });
    }

    /// Runs the turns of one key back to back until its queue is empty. The hand-off to the next
    /// job is a loop, not a new task, so a long queue never nests.
    async fn worker(self, key: String, first: TurnJob, first_cancel: TurnCancel) {
        let mut next = Some((first, first_cancel));
        while let Some((job, cancel)) = next.take() {
            // Wait for a global slot; a turn cancelled while waiting still runs its handler, which
            // closes the reply visibly without calling the agent.
            let permit = tokio::select! {
                p = self.inner.permits.clone().acquire_owned() => p.ok(),
                () = cancel.token().cancelled() => None,
            };
            self.inner.handler.run_turn(job, cancel).await;
            drop(permit);

            let mut st = self.lock();
            let Some(entry) = st.keys.get_mut(&key) else {
                break;
            };
            match entry.queue.pop_front() {
                Some(job) => {
                    let cancel = TurnCancel::default();
                    entry.running = Some((cancel.clone(), tokio::time::Instant::now()));
                    next = Some((job, cancel));
                }
                None => {
                    st.keys.remove(&key);
                }
            }
        }
    }

    /// Stops accepting turns and waits for running and queued turns up to `deadline`; then
    /// cancels what still runs (reason `Shutdown`, so replies finish with a notice) and waits up to
    /// `grace` more. Queued jobs that never started are returned: their inbox entries stay
    /// pending and resume after a restart.
    pub async fn drain(&self, deadline: Duration, grace: Duration) -> Vec<TurnJob> {
        let leftovers = {
            let mut st = self.lock();
            st.draining = true;
            // Queued messages would wait behind whole turns; leave them to the next start.
            st.keys
                .values_mut()
                .flat_map(|e| e.queue.drain(..))
                .collect::<Vec<_>>()
        };
        self.inner.tracker.close();
        if tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_err()
        {
            {
                let st = self.lock();
                for (cancel, _) in st.keys.values().filter_map(|e| e.running.as_ref()) {
                    cancel.cancel(CancelReason::Shutdown);
                }
            }
            let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
        }
        leftovers
    }
}

#[cfg(test)]
mod tests;
