//! `AgentError`: every way an agent turn can fail, classified for retries and metrics, with a
//! short notice the router can show the user.
//!
//! The `Display` text is for logs and operators; [`AgentError::user_message`] is what a chat user
//! sees. Neither ever contains an API key or a secret header value: backends build errors from
//! status codes, provider error bodies (with the key scrubbed) and their own wording only.

use std::time::Duration;

/// Longest provider error body kept in [`AgentError::Http`], in bytes.
pub const BODY_EXCERPT_BYTES: usize = 512;

/// Longest agent-supplied error message repeated to the user, in characters.
const USER_DETAIL_CHARS: usize = 200;

/// Why an agent turn failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The turn ran past its time limit (`timeout_secs`).
    #[error("the agent did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The turn was cancelled (`/stop`, an interrupting message, shutdown).
    #[error("the turn was cancelled")]
    Cancelled,
    /// The agent service answered with a non-success HTTP status.
    #[error("the agent service answered HTTP {status}: {body_excerpt}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (at most [`BODY_EXCERPT_BYTES`]), secrets scrubbed.
        body_excerpt: String,
        /// The `Retry-After` the service sent, if any.
        retry_after: Option<Duration>,
    },
    /// The agent service could not be reached (connection refused, reset, DNS, TLS).
    #[error("the agent service is unreachable: {0}")]
    Unreachable(String),
    /// The agent's answer could not be read: malformed SSE or JSON, a stream cut off before its
    /// end, an oversized reply.
    #[error("the agent's answer is malformed: {0}")]
    Protocol(String),
    /// The agent program crashed, could not start, or printed something that is not the
    /// line protocol.
    #[error("the agent program failed: {0}")]
    Process(String),
    /// The agent itself reported an error (an `error` line or event).
    #[error("the agent reported an error: {0}")]
    Agent(String),
    /// A local file the turn needs (an attachment) could not be read.
    #[error("i/o: {0}")]
    Io(String),
    /// The backend is misconfigured in a way only discovered while running a turn.
    #[error("agent configuration: {0}")]
    Config(String),
}

impl AgentError {
    /// Whether running the same turn again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Timeout(_) | AgentError::Unreachable(_) => true,
            AgentError::Http { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }

    /// How long the agent service asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AgentError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Timeout(_) => "timeout",
            AgentError::Cancelled => "cancelled",
            AgentError::Http { .. } => "http",
            AgentError::Unreachable(_) => "unreachable",
            AgentError::Protocol(_) => "protocol",
            AgentError::Process(_) => "process",
            AgentError::Agent(_) => "agent",
            AgentError::Io(_) => "io",
            AgentError::Config(_) => "config",
        }
    }

    /// A short notice for the chat user: one sentence, no internals, no secrets.
    pub fn user_message(&self) -> String {
        match self {
            AgentError::Timeout(limit) => {
                format!("The agent did not answer in time ({} s).", limit.as_secs())
            }
            AgentError::Cancelled => "The turn was stopped.".to_string(),
            AgentError::Http { status: 429, .. } => {
                "The agent service is busy (HTTP 429) — try again later.".to_string()
            }
            AgentError::Http {
                status: status @ (401 | 403),
                ..
            } => format!(
                "The agent service refused the gateway's credentials (HTTP {status}) — \
                 the operator should check the API key."
            ),
            AgentError::Http { status, .. } if *status >= 500 => {
                format!("The agent service is unavailable (HTTP {status}) — try again later.")
            }
            AgentError::Http { status, .. } => {
                format!("The agent service rejected the request (HTTP {status}).")
            }
            AgentError::Unreachable(_) => {
                "The agent service cannot be reached — try again later.".to_string()
            }
            AgentError::Protocol(_) => {
                "The agent's answer could not be read — try again later.".to_string()
            }
            AgentError::Process(_) => "The agent program failed — try again later.".to_string(),
            AgentError::Agent(detail) => {
                format!(
                    "The agent reported an error: {}",
                    shorten(detail, USER_DETAIL_CHARS)
                )
            }
            AgentError::Io(_) => "An attachment could not be read.".to_string(),
            AgentError::Config(_) => {
                "The agent is not configured correctly — the operator should run `gateway check`."
                    .to_string()
            }
        }
    }
}

/// Whether an HTTP status means "try again later": 408, 429 and every 5xx.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..600).contains(&status)
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_status() {
        let http = |status| AgentError::Http {
            status,
            body_excerpt: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(http(429).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(401).is_retryable());
        assert_eq!(http(429).retry_after(), Some(Duration::from_secs(3)));
        assert!(AgentError::Unreachable("x".into()).is_retryable());
        assert!(!AgentError::Cancelled.is_retryable());
        assert_eq!(
            AgentError::Timeout(Duration::from_secs(1)).kind(),
            "timeout"
        );
    }

    #[test]
    fn user_messages_are_short_and_specific() {
        assert_eq!(
            AgentError::Timeout(Duration::from_secs(120)).user_message(),
            "The agent did not answer in time (120 s)."
        );
        let e500 = AgentError::Http {
            status: 500,
            body_excerpt: "boom".into(),
            retry_after: None,
        };
        assert_eq!(
            e500.user_message(),
            "The agent service is unavailable (HTTP 500) — try again later."
        );
        let e401 = AgentError::Http {
            status: 401,
            body_excerpt: String::new(),
            retry_after: None,
        };
        assert!(e401.user_message().contains("API key"));
        let long = AgentError::Agent("x".repeat(1000));
        assert!(long.user_message().chars().count() < 260);
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("ok", 5), "ok");
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
    }
}
