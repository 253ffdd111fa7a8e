//! Error types of the core layer. Each is classified (`is_retryable`, `retry_after`) so callers
//! decide uniformly whether to retry, and keeps the raw platform payload where there is one.

use std::time::Duration;

/// A configuration problem, with the key path it concerns (for example
/// `platforms.wecom.extra.dm_policy`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted key path; empty when it concerns the whole value.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix` prepended to its path.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }
}

/// An error from a platform adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// Credentials were refused; `hint` says what to check.
    #[error("authentication failed: {message} ({hint})")]
    Auth {
        /// The platform's message.
        message: String,
        /// What the operator should check.
        hint: String,
    },
    /// The connection is down or could not be established.
    #[error("not connected: {0}")]
    Disconnected(String),
    /// The platform answered with an error code.
    #[error("platform error {code}: {message}")]
    Platform {
        /// The platform's error code.
        code: i64,
        /// The platform's error text.
        message: String,
        /// Raw response payload, for logs.
        raw: String,
        /// When the platform asked us to wait, how long.
        retry_after: Option<Duration>,
    },
    /// A request timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The request is invalid for this platform (unsupported target, too large, …).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A reply could not be delivered by any path; the router records it in the outbox.
    #[error("undelivered: {0}")]
    Undelivered(String),
    /// An I/O problem (network, disk).
    #[error("i/o: {0}")]
    Io(String),
    /// A port the adapter must listen on is taken (by another gateway, or another program).
    /// Fatal at startup, like a taken `gateway.listen`: retrying would not free it.
    #[error("{0}")]
    AddressInUse(String),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// What to say about a taken port, the same for `gateway.listen` and an adapter's listener.
pub fn address_in_use_hint(addr: &str, what: &str) -> String {
    format!(
        "cannot listen on {addr} ({what}): the address is in use. Another gateway may be \
         running with this config (`gateway doctor` shows it), or another program holds the \
         port (`ss -ltnp` names it); stop it or choose another port."
    )
}

impl AdapterError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AdapterError::Disconnected(_) | AdapterError::Timeout(_) | AdapterError::Io(_) => true,
            AdapterError::Platform { retry_after, .. } => retry_after.is_some(),
            AdapterError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// How long the platform asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AdapterError::Platform { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterError::Auth { .. } => "auth",
            AdapterError::Disconnected(_) => "disconnected",
            AdapterError::Platform { .. } => "platform",
            AdapterError::Timeout(_) => "timeout",
            AdapterError::Unsupported(_) => "unsupported",
            AdapterError::Undelivered(_) => "undelivered",
            AdapterError::Io(_) => "io",
            AdapterError::AddressInUse(_) => "address_in_use",
            AdapterError::Store(_) => "store",
            AdapterError::Shutdown => "shutdown",
        }
    }
}

/// An error from a [`crate::store::StateStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (database error, lost connection).
    #[error("store backend: {0}")]
    Backend(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The store is closed (shutting down).
    #[error("store closed")]
    Closed,
    /// The database is busy or locked by another process.
    #[error("store busy: {0}")]
    Busy(String),
}

impl StoreError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }
}
