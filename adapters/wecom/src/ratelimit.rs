//! Per-chat rate limiting: WeCom is reported to allow 30 user-visible messages per minute per
//! chat and to answer 846607 beyond that (reference `wecom-aibot.md` §6.6; the official client
//! neither limits nor knows the code, `wecom-aibot-official.md` §0 item 18 and §10, so this is a
//! safety margin of ours that costs nothing when the limit does not exist). A sliding one-minute window per
//! chat, with a reserve that only the control lane (final stream frames, replies and notices)
//! may use, so a burst of proactive sends cannot starve the end of an answer. Intermediate stream
//! frames are not counted. Waiting never drops a message.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window of the limit.
const WINDOW: Duration = Duration::from_secs(60);
/// Most chats tracked; idle ones are pruned first.
const MAX_CHATS: usize = 10_000;

/// Which budget a message draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Proactive sends and media: all but the reserve.
    Normal,
    /// Final frames, replies and notices: the whole budget.
    Control,
}

/// The limiter, shared by all senders of one instance.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: usize,
    reserve: usize,
    chats: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// `per_minute` messages per chat, `reserve` of them for the control lane.
    pub fn new(per_minute: u32, reserve: u32) -> Self {
        Self {
            per_minute: per_minute as usize,
            reserve: reserve as usize,
            chats: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.chats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot now, or says when to try again.
    pub fn try_acquire(&self, chat: &str, lane: Lane, now: Instant) -> Result<(), Instant> {
        let mut chats = self.lock();
        if chats.len() >= MAX_CHATS && !chats.contains_key(chat) {
            chats.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
            });
        }
        let q = chats.entry(chat.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            q.pop_front();
        }
        let limit = match lane {
            Lane::Normal => self.per_minute.saturating_sub(self.reserve),
            Lane::Control => self.per_minute,
        };
        if q.len() < limit {
            q.push_back(now);
            return Ok(());
        }
        // The slot frees when enough of the oldest stamps leave the window.
        let excess = q.len() + 1 - limit;
        let free_at = q.get(excess - 1).map_or(now + WINDOW, |t| *t + WINDOW);
        Err(free_at)
    }

    /// Waits until a slot is free and takes it.
    pub async fn acquire(&self, chat: &str, lane: Lane) {
        loop {
            match self.try_acquire(chat, lane, Instant::now()) {
                Ok(()) => return,
                Err(at) => {
                    tracing::debug!(?lane, "Rate limit reached for a chat; waiting.");
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }

    /// WeCom said 846607: treat the chat's window as full for a minute from now.
    pub fn penalize(&self, chat: &str) {
        let now = Instant::now();
        let mut chats = self.lock();
        let q = chats.entry(chat.to_owned()).or_default();
        q.clear();
        q.extend(std::iter::repeat_n(now, self.per_minute));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn normal_lane_keeps_a_reserve_for_control() {
        let rl = RateLimiter::new(30, 6);
        let t0 = Instant::now();
        for _ in 0..24 {
            rl.try_acquire("c", Lane::Normal, t0).unwrap();
        }
        assert_eq!(rl.try_acquire("c", Lane::Normal, t0), Err(t0 + WINDOW));
        for _ in 0..6 {
            rl.try_acquire("c", Lane::Control, t0).unwrap();
        }
        assert!(rl.try_acquire("c", Lane::Control, t0).is_err());
        assert!(
            rl.try_acquire("other", Lane::Normal, t0).is_ok(),
            "per chat"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_never_drops_and_penalty_waits_a_minute() {
        let rl = RateLimiter::new(2, 0);
        let t0 = Instant::now();
        rl.acquire("c", Lane::Normal).await;
        rl.acquire("c", Lane::Normal).await;
        rl.acquire("c", Lane::Normal).await;
        assert_eq!(
            Instant::now() - t0,
            WINDOW,
            "the third waited for the window"
        );
        rl.penalize("c");
        let t1 = Instant::now();
        rl.acquire("c", Lane::Control).await;
        assert_eq!(Instant::now() - t1, WINDOW);
    }
}
