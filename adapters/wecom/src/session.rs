//! The protocol state machine of one bot's long connection, apart from I/O (STYLE.md habit 11):
//! it is fed socket events, frames and the clock, and returns [`Action`]s for the runner
//! (`conn.rs`) to carry out. It follows the official client (reference
//! `wecom-aibot-official.md`):
//!
//! * subscribe and its acknowledgement (§2.1), keeping frames that arrive before the ACK
//!   instead of dropping them (§0 item 5);
//! * success is `errcode == 0` exactly, for the subscribe, pings and every request (§1.2);
//! * any refused subscribe is an authentication failure, retried after 1, 2, 4, 8 and 16 s and
//!   then given up for good (§6.4) — no endless loop against bad credentials;
//! * correlated pings with no body; only a successful answer proves life, two unanswered (or
//!   refused) = dead socket (§6.2);
//! * request/response correlation by `req_id` only, one request in flight per `req_id` (§6.1),
//!   request deadlines, and failing everything pending at once on a drop;
//! * reconnects after network failures that never give up (a daemon), 1 s doubling to 30 s by
//!   default, reset after a good subscribe (§6.3); `disconnected_event` as a terminal take-over
//!   (§6.5); re-subscribe on 846609;
//! * duplicate `msgid` suppression, bounded.
//!
//! `W` is whatever the runner uses to hand a result back to a caller (a oneshot sender); the
//! machine only stores it and returns it in [`Action::Complete`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{self, cmd, Incoming, Outgoing};

#[cfg(test)]
mod tests;

/// Timing and bounds of the state machine.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Application ping cadence.
    pub ping_interval: Duration,
    /// Unanswered pings that make the socket count as dead.
    pub max_missed_pings: u32,
    /// Deadline for the subscribe ACK after the socket opened.
    pub subscribe_timeout: Duration,
    /// Reconnect delays; the last one repeats (for ever).
    pub backoff: Vec<Duration>,
    /// Delays before re-subscribing after refused subscribes; one more refusal than there are
    /// delays gives up.
    pub auth_backoff: Vec<Duration>,
    /// Requests waiting behind an in-flight one, over all `req_id`s.
    pub max_queued: usize,
    /// Frames kept while waiting for the subscribe ACK.
    pub max_buffered: usize,
    /// Least time between two re-subscribes triggered by 846609.
    pub resubscribe_gap: Duration,
    /// How long a `msgid` is remembered.
    pub dedup_ttl: Duration,
    /// How many `msgid`s are remembered.
    pub dedup_capacity: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            max_missed_pings: 2,
            subscribe_timeout: Duration::from_secs(20),
            backoff: [1, 2, 4, 8, 16, 30]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            auth_backoff: [1, 2, 4, 8, 16]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_queued: 4096,
            max_buffered: 256,
            resubscribe_gap: Duration::from_secs(10),
            dedup_ttl: Duration::from_secs(300),
            dedup_capacity: 1000,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReqError {
    /// No subscribed connection when the request was made.
    #[error("not connected")]
    NotConnected,
    /// The connection dropped while the request was pending.
    #[error("connection interrupted")]
    Disconnected,
    /// No answer before the deadline.
    #[error("no answer within the deadline")]
    Timeout,
    /// Too many requests are waiting.
    #[error("too many requests waiting")]
    Busy,
    /// The server answered with a non-zero `errcode`.
    #[error("errcode {code}: {message}")]
    Platform {
        /// The `errcode`.
        code: i64,
        /// The `errmsg`.
        message: String,
    },
}

impl ReqError {
    /// The WeCom error code, for platform errors.
    pub fn code(&self) -> Option<i64> {
        match self {
            ReqError::Platform { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why the runner must close the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The subscribe ACK did not come in time.
    SubscribeTimeout,
    /// The server refused the subscribe.
    SubscribeRejected {
        /// The `errcode`.
        code: i64,
        /// The `errmsg`.
        message: String,
    },
    /// Pings went unanswered.
    MissedPings,
    /// Another connection took the bot over.
    TakenOver,
    /// We are stopping.
    Stopping,
}

/// What the runner must do.
#[derive(Debug)]
pub enum Action<W> {
    /// Write this JSON text on the socket.
    Send(String),
    /// Hand `result` to the caller that waits on `W`.
    Complete(W, Result<Incoming, ReqError>),
    /// A callback or event for the inbound pipeline.
    Inbound(Incoming),
    /// The subscribe was acknowledged; `epoch` counts good subscribes since start.
    Up {
        /// Connection generation.
        epoch: u64,
    },
    /// The server refused our credentials (any refused subscribe, §6.4).
    AuthFailed {
        /// The `errcode` (-1 when the answer had none).
        code: i64,
        /// The `errmsg`.
        message: String,
        /// Refusals in a row so far.
        failures: u32,
        /// True when this was the last try: the session is stopped for good.
        gave_up: bool,
    },
    /// Another connection took the bot over; do not reconnect.
    TakenOver,
    /// The server said we are no longer subscribed (846609); a re-subscribe was sent and cached
    /// reply routes are unreliable.
    Resubscribing,
    /// Close the socket, then report [`Session::on_disconnected`].
    Close(CloseReason),
    /// The backoff is over: dial again, then report [`Session::on_connected`].
    Connect,
}

/// A request to send and correlate.
#[derive(Debug)]
pub struct Request<W> {
    /// The frame.
    pub frame: Outgoing,
    /// How long to wait for its answer once it is on the wire.
    pub timeout: Duration,
    /// Handed back with the result.
    pub waiter: W,
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started, or the socket is being dialled.
    Idle,
    /// Socket open, subscribe sent, waiting for the ACK.
    Subscribing,
    /// Subscribed: traffic flows.
    Ready,
    /// Waiting before the next dial.
    Backoff,
    /// Kicked by another connection; will not reconnect.
    TakenOver,
    /// Stopped for good.
    Stopped,
}

struct InFlight<W> {
    waiter: W,
    deadline: Instant,
}

/// The state machine. See the module docs.
pub struct Session<W> {
    cfg: SessionConfig,
    bot_id: String,
    secret: secrecy::SecretString,
    phase: Phase,
    /// The subscribe (or re-subscribe) request id and, while subscribing, its deadline.
    subscribe_req: Option<String>,
    subscribe_deadline: Option<Instant>,
    /// Frames that arrived before the subscribe ACK, replayed after it.
    buffered: Vec<Incoming>,
    next_ping: Option<Instant>,
    /// Request ids of unanswered pings, oldest first.
    pings: VecDeque<String>,
    inflight: HashMap<String, InFlight<W>>,
    queued: HashMap<String, VecDeque<Request<W>>>,
    queued_total: usize,
    attempt: usize,
    /// Refused subscribes in a row.
    auth_failures: u32,
    reconnect_at: Option<Instant>,
    epoch: u64,
    last_resubscribe: Option<Instant>,
    seen: HashMap<String, Instant>,
    seen_order: VecDeque<(String, Instant)>,
}

impl<W> std::fmt::Debug for Session<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("bot_id", &self.bot_id)
            .field("phase", &self.phase)
            .field("epoch", &self.epoch)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl<W> Session<W> {
    /// A machine in phase `Idle` for `bot_id`.
    pub fn new(
        cfg: SessionConfig,
        bot_id: impl Into<String>,
        secret: secrecy::SecretString,
    ) -> Self {
        Self {
            cfg,
            bot_id: bot_id.into(),
            secret,
            phase: Phase::Idle,
            subscribe_req: None,
            subscribe_deadline: None,
            buffered: Vec::new(),
            next_ping: None,
            pings: VecDeque::new(),
            inflight: HashMap::new(),
            queued: HashMap::new(),
            queued_total: 0,
            attempt: 0,
            auth_failures: 0,
            reconnect_at: None,
            epoch: 0,
            last_resubscribe: None,
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Good subscribes so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The reconnect attempt counter (0 after a good subscribe).
    pub fn attempt(&self) -> usize {
        self.attempt
    }

    /// True while refused subscribes are being retried (the last subscribe was refused).
    pub fn retrying_auth(&self) -> bool {
        self.auth_failures > 0 && self.phase != Phase::Stopped
    }

    /// The earliest instant at which [`Session::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match self.phase {
            Phase::Subscribing => consider(self.subscribe_deadline),
            Phase::Ready => consider(self.next_ping),
            Phase::Backoff => consider(self.reconnect_at),
            _ => {}
        }
        consider(self.inflight.values().map(|f| f.deadline).min());
        next
    }

    /// The socket is open: send the subscribe frame.
    pub fn on_connected(&mut self, now: Instant) -> Vec<Action<W>> {
        if matches!(self.phase, Phase::TakenOver | Phase::Stopped) {
            return vec![Action::Close(CloseReason::Stopping)];
        }
        let frame = protocol::subscribe(&self.bot_id, &self.secret);
        self.phase = Phase::Subscribing;
        self.subscribe_req = Some(frame.req_id.clone());
        self.subscribe_deadline = Some(now + self.cfg.subscribe_timeout);
        self.buffered.clear();
        self.reconnect_at = None;
        vec![Action::Send(frame.to_json())]
    }

    /// The socket closed (or could not be opened): fail everything pending and schedule the
    /// next dial, unless the bot was taken over or we are stopping.
    pub fn on_disconnected(&mut self, now: Instant) -> Vec<Action<W>> {
        let mut out = self.fail_all(ReqError::Disconnected);
        self.subscribe_req = None;
        self.subscribe_deadline = None;
        self.next_ping = None;
        self.pings.clear();
        self.buffered.clear();
        match self.phase {
            Phase::TakenOver | Phase::Stopped => {}
            _ => {
                let delay = if self.auth_failures > 0 {
                    // Refused credentials: the SDK's own schedule, then give up (below).
                    let idx = (self.auth_failures as usize - 1)
                        .min(self.cfg.auth_backoff.len().saturating_sub(1));
                    self.cfg
                        .auth_backoff
                        .get(idx)
                        .copied()
                        .unwrap_or(Duration::from_secs(16))
                } else {
                    let idx = self.attempt.min(self.cfg.backoff.len().saturating_sub(1));
                    self.cfg
                        .backoff
                        .get(idx)
                        .copied()
                        .unwrap_or(Duration::from_secs(30))
                };
                self.attempt += 1;
                self.phase = Phase::Backoff;
                self.reconnect_at = Some(now + delay);
                if delay.is_zero() {
                    self.reconnect_at = None;
                    self.phase = Phase::Idle;
                    out.push(Action::Connect);
                }
            }
        }
        out
    }

    /// The delay before the next dial, while in backoff.
    pub fn reconnect_in(&self, now: Instant) -> Option<Duration> {
        self.reconnect_at.map(|t| t.saturating_duration_since(now))
    }

    /// Stops for good: everything pending fails, the socket is closed.
    pub fn stop(&mut self) -> Vec<Action<W>> {
        let mut out = self.fail_all(ReqError::Disconnected);
        let was_open = matches!(self.phase, Phase::Subscribing | Phase::Ready);
        self.phase = Phase::Stopped;
        self.reconnect_at = None;
        if was_open {
            out.push(Action::Close(CloseReason::Stopping));
        }
        out
    }

    /// Time passed: subscribe deadline, request deadlines, pings, end of backoff.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action<W>> {
        let mut out = Vec::new();
        // Requests whose answer is overdue; the next one queued on the same req_id goes out.
        let overdue: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for req_id in overdue {
            if let Some(f) = self.inflight.remove(&req_id) {
                out.push(Action::Complete(f.waiter, Err(ReqError::Timeout)));
                self.send_next(&req_id, now, &mut out);
            }
        }
        match self.phase {
            Phase::Subscribing if self.subscribe_deadline.is_some_and(|d| d <= now) => {
                self.subscribe_deadline = None;
                out.push(Action::Close(CloseReason::SubscribeTimeout));
            }
            Phase::Ready if self.next_ping.is_some_and(|t| t <= now) => {
                if self.pings.len() >= self.cfg.max_missed_pings as usize {
                    // Half-open sockets accept writes without error; only answers prove life.
                    self.next_ping = None;
                    out.push(Action::Close(CloseReason::MissedPings));
                } else {
                    let ping = protocol::ping();
                    self.pings.push_back(ping.req_id.clone());
                    self.next_ping = Some(now + self.cfg.ping_interval);
                    out.push(Action::Send(ping.to_json()));
                }
            }
            Phase::Backoff if self.reconnect_at.is_some_and(|t| t <= now) => {
                self.reconnect_at = None;
                self.phase = Phase::Idle;
                out.push(Action::Connect);
            }
            _ => {}
        }
        out
    }

    /// Queues or sends a request. Fails at once when not subscribed.
    pub fn submit(&mut self, req: Request<W>, now: Instant) -> Vec<Action<W>> {
        if self.phase != Phase::Ready {
            return vec![Action::Complete(req.waiter, Err(ReqError::NotConnected))];
        }
        let req_id = req.frame.req_id.clone();
        if self.inflight.contains_key(&req_id) {
            if self.queued_total >= self.cfg.max_queued {
                return vec![Action::Complete(req.waiter, Err(ReqError::Busy))];
            }
            self.queued.entry(req_id).or_default().push_back(req);
            self.queued_total += 1;
            return Vec::new();
        }
        let mut out = Vec::new();
        self.put_on_wire(req, now, &mut out);
        out
    }

    fn put_on_wire(&mut self, req: Request<W>, now: Instant, out: &mut Vec<Action<W>>) {
        let req_id = req.frame.req_id.clone();
        out.push(Action::Send(req.frame.to_json()));
        self.inflight.insert(
            req_id,
            InFlight {
                waiter: req.waiter,
                deadline: now + req.timeout,
            },
        );
    }

    fn send_next(&mut self, req_id: &str, now: Instant, out: &mut Vec<Action<W>>) {
        let next = self.queued.get_mut(req_id).and_then(VecDeque::pop_front);
        if self.queued.get(req_id).is_some_and(VecDeque::is_empty) {
            self.queued.remove(req_id);
        }
        if let Some(req) = next {
            self.queued_total -= 1;
            self.put_on_wire(req, now, out);
        }
    }

    fn fail_all(&mut self, error: ReqError) -> Vec<Action<W>> {
        let mut out = Vec::new();
        for (_, f) in self.inflight.drain() {
            out.push(Action::Complete(f.waiter, Err(error.clone())));
        }
        for (_, q) in self.queued.drain() {
            for req in q {
                out.push(Action::Complete(req.waiter, Err(error.clone())));
            }
        }
        self.queued_total = 0;
        out
    }

    /// A text frame arrived.
    pub fn on_frame(&mut self, text: &str, now: Instant) -> Vec<Action<W>> {
        match Incoming::parse(text) {
            Ok(frame) => self.on_incoming(frame, now),
            Err(e) => {
                tracing::debug!(error = %e, "Dropped an unreadable frame.");
                Vec::new()
            }
        }
    }

    /// A parsed frame arrived.
    pub fn on_incoming(&mut self, frame: Incoming, now: Instant) -> Vec<Action<W>> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Subscribing => self.while_subscribing(frame, now, &mut out),
            Phase::Ready => self.while_ready(frame, now, &mut out),
            // Frames after a take-over or stop, or from a socket being closed, are ignored.
            _ => {}
        }
        out
    }

    fn while_subscribing(&mut self, frame: Incoming, now: Instant, out: &mut Vec<Action<W>>) {
        let is_ack = !frame.is_callback()
            && !frame.req_id.is_empty()
            && self.subscribe_req.as_deref() == Some(frame.req_id.as_str());
        if !is_ack {
            if frame.cmd == cmd::PING {
                return;
            }
            if frame.cmd == cmd::EVENT_CALLBACK && frame.event_type() == Some("disconnected_event")
            {
                self.taken_over(out);
                return;
            }
            // Kept, not dropped: callbacks can race the ACK (§9 item 8).
            if self.buffered.len() < self.cfg.max_buffered {
                self.buffered.push(frame);
            } else {
                tracing::warn!("Too many frames before the subscribe ACK; dropping one.");
            }
            return;
        }
        self.subscribe_deadline = None;
        if !frame.is_success() {
            let code = frame.code();
            let message = if frame.errmsg.is_empty() {
                "authentication failed".to_owned()
            } else {
                frame.errmsg.clone()
            };
            self.auth_failures += 1;
            let gave_up = self.auth_failures as usize > self.cfg.auth_backoff.len();
            out.push(Action::AuthFailed {
                code,
                message: message.clone(),
                failures: self.auth_failures,
                gave_up,
            });
            if gave_up {
                self.phase = Phase::Stopped;
                self.reconnect_at = None;
                out.extend(self.fail_all(ReqError::NotConnected));
            }
            out.push(Action::Close(CloseReason::SubscribeRejected {
                code,
                message,
            }));
            return;
        }
        self.phase = Phase::Ready;
        self.attempt = 0;
        self.auth_failures = 0;
        self.epoch += 1;
        self.pings.clear();
        self.next_ping = Some(now + self.cfg.ping_interval);
        out.push(Action::Up { epoch: self.epoch });
        for f in std::mem::take(&mut self.buffered) {
            self.while_ready(f, now, out);
            if self.phase != Phase::Ready {
                break;
            }
        }
    }

    fn while_ready(&mut self, frame: Incoming, now: Instant, out: &mut Vec<Action<W>>) {
        if !frame.is_callback() && !frame.req_id.is_empty() {
            // An answer: correlated by req_id only, never by cmd.
            if let Some(pos) = self.pings.iter().position(|p| *p == frame.req_id) {
                if frame.is_success() {
                    // A good answer proves life; older unanswered pings are forgiven too.
                    self.pings.drain(..=pos);
                } else {
                    // A refused ping does not count as alive (§6.2): it stays missed.
                    tracing::debug!(code = frame.code(), "A ping was answered with an error.");
                }
                return;
            }
            if self.subscribe_req.as_deref() == Some(frame.req_id.as_str()) {
                // The answer to a re-subscribe.
                self.subscribe_req = None;
                if !frame.is_success() {
                    tracing::warn!(code = frame.code(), "Re-subscribe was refused.");
                }
                return;
            }
            if let Some(f) = self.inflight.remove(&frame.req_id) {
                let req_id = frame.req_id.clone();
                let code = frame.code();
                if code == 846609 {
                    self.resubscribe(now, out);
                }
                let result = if frame.is_success() {
                    Ok(frame)
                } else {
                    Err(ReqError::Platform {
                        code,
                        message: frame.errmsg,
                    })
                };
                out.push(Action::Complete(f.waiter, result));
                self.send_next(&req_id, now, out);
                return;
            }
            if frame.cmd.is_empty() {
                tracing::debug!(req_id = %frame.req_id, "Answer without a waiting request (late, or after a timeout).");
                return;
            }
        }
        match frame.cmd.as_str() {
            cmd::MSG_CALLBACK | cmd::LEGACY_CALLBACK => {
                if self.is_duplicate(&frame, now) {
                    tracing::debug!(req_id = %frame.req_id, "Duplicate message dropped.");
                    return;
                }
                out.push(Action::Inbound(frame));
            }
            cmd::EVENT_CALLBACK => {
                if frame.event_type() == Some("disconnected_event") {
                    self.taken_over(out);
                    return;
                }
                if self.is_duplicate(&frame, now) {
                    return;
                }
                out.push(Action::Inbound(frame));
            }
            cmd::PING => {}
            other => {
                tracing::info!(cmd = %gateway_core::redact::printable(other), "Unrouted frame dropped.")
            }
        }
    }

    fn taken_over(&mut self, out: &mut Vec<Action<W>>) {
        out.extend(self.fail_all(ReqError::Disconnected));
        self.phase = Phase::TakenOver;
        self.next_ping = None;
        self.reconnect_at = None;
        out.push(Action::TakenOver);
        out.push(Action::Close(CloseReason::TakenOver));
    }

    fn resubscribe(&mut self, now: Instant, out: &mut Vec<Action<W>>) {
        if self
            .last_resubscribe
            .is_some_and(|t| now < t + self.cfg.resubscribe_gap)
        {
            return;
        }
        self.last_resubscribe = Some(now);
        let frame = protocol::subscribe(&self.bot_id, &self.secret);
        self.subscribe_req = Some(frame.req_id.clone());
        out.push(Action::Resubscribing);
        out.push(Action::Send(frame.to_json()));
    }

    /// Records the frame's `msgid` (falling back to its `req_id`) and tells whether it was seen
    /// within the TTL. The memory is bounded: expired ids go first, then the oldest.
    fn is_duplicate(&mut self, frame: &Incoming, now: Instant) -> bool {
        let id = protocol::str_at(&frame.body, &["msgid"])
            .map(str::to_owned)
            .or_else(|| (!frame.req_id.is_empty()).then(|| frame.req_id.clone()));
        let Some(id) = id else { return false };
        if let Some(&at) = self.seen.get(&id) {
            if now.saturating_duration_since(at) < self.cfg.dedup_ttl {
                return true;
            }
        }
        self.seen.insert(id.clone(), now);
        self.seen_order.push_back((id, now));
        while let Some((old, at)) = self.seen_order.front().cloned() {
            let expired = now.saturating_duration_since(at) >= self.cfg.dedup_ttl;
            if !expired && self.seen.len() <= self.cfg.dedup_capacity {
                break;
            }
            self.seen_order.pop_front();
            // Only forget the id when this queue entry is its latest stamp.
            if self.seen.get(&old) == Some(&at) {
                self.seen.remove(&old);
            }
        }
        false
    }
}
