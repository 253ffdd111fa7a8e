//! Per-instance health, written by adapters and the router, read by `GET /health`.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The connection state of a platform instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    /// Not started yet, or connecting for the first time.
    Starting,
    /// Serving.
    Connected,
    /// Lost its connection and is retrying.
    Reconnecting {
        /// Attempt number since the last good connection.
        attempt: u32,
    },
    /// Credentials refused; will not fix itself.
    AuthFailed {
        /// What to check.
        hint: String,
    },
    /// Another process took over the connection (WeCom `disconnected_event`); not retrying.
    TakenOver {
        /// Explanation for the operator.
        explanation: String,
    },
    /// Failed to start; the router retries with backoff.
    Failed {
        /// The last error.
        error: String,
    },
    /// Stopped (shutdown or disabled).
    Stopped,
}

impl InstanceState {
    /// True when the instance serves traffic.
    pub fn is_up(&self) -> bool {
        matches!(self, InstanceState::Connected)
    }
}

/// A snapshot of one instance's health.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceHealth {
    /// Instance name.
    pub instance: String,
    /// Adapter kind.
    pub kind: String,
    /// Connection state.
    #[serde(flatten)]
    pub state: InstanceState,
    /// When the last inbound message arrived.
    pub last_inbound: Option<DateTime<Utc>>,
    /// The last error, already redacted.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Reconnects since start.
    pub reconnects: u64,
    /// Deliveries that sit in the outbox now (failed or unconfirmed, waiting for a retry).
    pub undelivered: u64,
}

/// A cheap, cloneable handle to one instance's health record.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    inner: Arc<Mutex<InstanceHealth>>,
}

impl HealthReporter {
    /// A fresh record in state `Starting`.
    pub fn new(instance: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(InstanceHealth {
                instance: instance.into(),
                kind: kind.into(),
                state: InstanceState::Starting,
                last_inbound: None,
                last_error: None,
                last_error_at: None,
                reconnects: 0,
                undelivered: 0,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut InstanceHealth) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the data is still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Sets the state.
    pub fn set_state(&self, state: InstanceState) {
        self.with(|h| h.state = state);
    }

    /// Records an inbound message now.
    pub fn inbound(&self) {
        self.with(|h| h.last_inbound = Some(Utc::now()));
    }

    /// Records an error, scrubbed of secrets (it is served by `/health`).
    pub fn error(&self, message: impl Into<String>) {
        let message = crate::redact::scrub_string(message.into());
        self.with(|h| {
            h.last_error = Some(message);
            h.last_error_at = Some(Utc::now());
        });
    }

    /// Counts one reconnect and moves to `Reconnecting`.
    pub fn reconnecting(&self, attempt: u32) {
        self.with(|h| {
            h.reconnects += 1;
            h.state = InstanceState::Reconnecting { attempt };
        });
    }

    /// Sets how many deliveries of this instance sit in the outbox now (a gauge: it goes down
    /// again when they are delivered or dropped).
    pub fn set_undelivered(&self, count: u64) {
        self.with(|h| h.undelivered = count);
    }

    /// The current record.
    pub fn snapshot(&self) -> InstanceHealth {
        self.with(|h| h.clone())
    }
}
