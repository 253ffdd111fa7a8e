//! Wall-clock time derived from tokio's clock, so that TTLs, rate limits and reset policies can
//! be tested with `#[tokio::test(start_paused = true)]` and `tokio::time::advance`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The clock used everywhere: the wall time at creation plus tokio's elapsed time since then.
/// Under a paused tokio runtime it moves only with `tokio::time::advance`.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base_wall: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// Starts at `wall` (tests use fixed dates, e.g. for daily resets).
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            base_wall: wall,
            base: tokio::time::Instant::now(),
        }
    }

    /// As a shared trait object.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self::new())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}
