//! The reply stream engine (reference `wecom-aibot.md` §4.3; landscape §3 items 11–27, §4 gap 2):
//! one [`StreamSink`] per reply, opened by the router for every turn and notice.
//!
//! * `start` seeds `<think></think>` at once; a per-reply pump task then sends the cumulative
//!   text, throttled and coalesced: one intermediate frame in flight, the newest text wins,
//!   identical frames skipped, pacing stretched when a bubble's frame budget runs low;
//! * bubbles are planned by [`Bubbles`]: never over the frame size, continued in new bubbles
//!   (same `req_id`) when full or old, nothing truncated;
//! * `finish` always ends every open bubble with `finish: true` (success, agent error, `/stop`,
//!   shutdown, and also when the sink is dropped); a final frame without an answer counts as
//!   delivered (no duplicates), 6000 is success, 846607 waits and retries;
//! * when the stream cannot carry the answer (846604/846608 expiry, 600039, a reconnect made
//!   the `req_id` stale, a dropped socket), whatever did not reach the user goes through the
//!   non-stream path (`send.rs`); when that fails too, `finish` returns an error and the router
//!   records the reply as undelivered.

use std::sync::Arc;

use async_trait::async_trait;
use gateway_core::{
    AdapterError, ChatAddress, DeliveryLog, InboundMessage, ReplySink, TurnOutcome,
};
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::adapter::Inner;
use crate::bubbles::{Bubbles, Planned};
use crate::protocol::{self, Incoming};
use crate::ratelimit::Lane;
use crate::send::Via;
use crate::session::ReqError;

/// Attempts of one final frame when WeCom answers 846607.
const RATE_RETRIES: usize = 5;

type AckRx = oneshot::Receiver<Result<Incoming, ReqError>>;

/// The reply context the adapter stores with each inbound message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplyContext {
    pub req_id: Option<String>,
    pub route: Option<String>,
    pub event: Option<String>,
}

impl ReplyContext {
    pub(crate) fn to_value(&self) -> Value {
        serde_json::json!({ "req_id": self.req_id, "route": self.route, "event": self.event })
    }

    pub(crate) fn from_value(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            req_id: s("req_id"),
            route: s("route"),
            event: s("event"),
        }
    }
}

/// Whether a stream answer means the frame reached the user.
fn delivered(result: &Result<Incoming, ReqError>) -> bool {
    match result {
        Ok(_) => true,
        // No answer: WeCom had usually shown it already; re-sending duplicates bubbles.
        Err(ReqError::Timeout) => true,
        // A newer frame won the race; the content is on screen.
        Err(ReqError::Platform { code: 6000, .. }) => true,
        Err(_) => false,
    }
}

/// What the pump hands back to `finish`.
#[derive(Debug)]
struct PumpState {
    bubbles: Bubbles,
    /// The answer of the intermediate frame in flight.
    outstanding: Option<AckRx>,
    /// Seal frames sent mid-stream, with the text they deliver.
    seals: Vec<(String, AckRx)>,
    /// Text of seal frames that could not even be sent.
    lost: Vec<String>,
    /// The stream cannot be used any more; remaining text goes the non-stream way.
    dead: bool,
    /// The error code that killed the stream, if any.
    fail_code: Option<i64>,
}

impl PumpState {
    fn new(inner: &Inner, dead: bool) -> Self {
        let cfg = &inner.cfg;
        Self {
            bubbles: Bubbles::new(
                cfg.stream_max_frame_bytes,
                cfg.stream_max_frames,
                cfg.stream_rotate_after(),
            ),
            outstanding: None,
            seals: Vec::new(),
            lost: Vec::new(),
            dead,
            fail_code: None,
        }
    }

    /// Takes note of an intermediate frame's answer.
    fn note(&mut self, result: &Result<Incoming, ReqError>) {
        if delivered(result) {
            return;
        }
        match result {
            Err(ReqError::Platform { code: 846607, .. }) | Err(ReqError::Busy) => {}
            Err(e) => {
                debug!(error = %e, "The reply stream stopped working; the rest goes another way.");
                self.dead = true;
                self.fail_code = self.fail_code.or(e.code());
            }
            Ok(_) => {}
        }
    }
}

/// Where a sink replies.
#[derive(Debug, Clone)]
struct Target {
    chat: ChatAddress,
    /// The inbound `req_id`, usable or not.
    req_id: Option<String>,
    /// The route tag the `req_id` belongs to.
    route: Option<String>,
    /// `enter_chat`: replies go through `aibot_respond_welcome_msg`.
    welcome: bool,
}

struct Pump {
    text: watch::Sender<String>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<PumpState>,
}

/// The reply sink of the `wecom` adapter.
pub(crate) struct StreamSink {
    inner: Arc<Inner>,
    target: Target,
    pump: Option<Pump>,
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSink")
            .field("req_id", &self.target.req_id)
            .finish_non_exhaustive()
    }
}

impl StreamSink {
    /// A sink replying to `inbound`.
    pub(crate) fn open(inner: Arc<Inner>, inbound: &InboundMessage) -> Self {
        let ctx = ReplyContext::from_value(&inbound.reply_context);
        let target = Target {
            chat: inbound.chat.clone(),
            req_id: ctx.req_id,
            route: ctx.route,
            welcome: ctx.event.as_deref() == Some("enter_chat"),
        };
        Self {
            inner,
            target,
            pump: None,
        }
    }

    /// True when the stream can run on the inbound `req_id` (same live connection).
    fn usable(&self) -> bool {
        !self.target.welcome
            && self.target.req_id.is_some()
            && self.inner.route_is(self.target.route.as_deref())
    }

    fn start_pump(&mut self, seed: bool) {
        if self.pump.is_some() || !self.usable() {
            return;
        }
        let Some(req_id) = self.target.req_id.clone() else {
            return;
        };
        self.inner.stream_opened(&req_id);
        let (text_tx, text_rx) = watch::channel(String::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let inner = self.inner.clone();
        let target = self.target.clone();
        let task = self.inner.tasks.spawn(async move {
            let mut st = PumpState::new(&inner, false);
            if seed {
                let frame = st.bubbles.seed(Instant::now());
                st.outstanding = send_frames(&inner, &target, &mut st, vec![frame]).await;
            }
            run_pump(inner, target, st, text_rx, stop_rx).await
        });
        self.pump = Some(Pump {
            text: text_tx,
            stop: stop_tx,
            task,
        });
    }
}

#[async_trait]
impl ReplySink for StreamSink {
    async fn start(&mut self) -> Result<(), AdapterError> {
        self.start_pump(true);
        Ok(())
    }

    async fn update(&mut self, text: &str) -> Result<(), AdapterError> {
        self.start_pump(false);
        if let Some(p) = &self.pump {
            p.text.send_replace(text.to_owned());
        }
        Ok(())
    }

    async fn finish(self: Box<Self>, text: &str, outcome: TurnOutcome) -> Result<(), AdapterError> {
        self.finish_logged(text, outcome, &gateway_core::NoLog)
            .await
    }

    async fn finish_logged(
        mut self: Box<Self>,
        text: &str,
        outcome: TurnOutcome,
        log: &dyn DeliveryLog,
    ) -> Result<(), AdapterError> {
        debug!(instance = %self.inner.instance, ?outcome, "Finishing a reply.");
        let inner = self.inner.clone();
        let target = self.target.clone();
        if target.welcome {
            return finish_welcome(&inner, &target, text).await;
        }
        let st = match self.pump.take() {
            Some(p) => {
                let _ = p.stop.send(());
                match p.task.await {
                    Ok(st) => Some(st),
                    Err(e) => {
                        warn!(error = %e, "The reply pump failed; sending the answer without the stream.");
                        Some(PumpState::new(&inner, true))
                    }
                }
            }
            None => None,
        };
        let opened = st.is_some();
        let usable = self.usable();
        let st = st.unwrap_or_else(|| PumpState::new(&inner, !usable));
        if !usable && !st.dead {
            debug!(instance = %inner.instance, "Reply route is stale (reconnect or restart); answering without the stream.");
        }
        let result = finalize(&inner, &target, st, text, usable, log).await;
        if opened {
            if let Some(r) = &target.req_id {
                inner.stream_closed(r);
            }
        }
        result
    }
}

/// The pump: sends intermediate frames until told to stop, then hands its state back. When the
/// sink is dropped without `finish`, it finishes the reply itself with the last text, so no
/// bubble is left spinning.
async fn run_pump(
    inner: Arc<Inner>,
    target: Target,
    mut st: PumpState,
    mut text_rx: watch::Receiver<String>,
    mut stop_rx: oneshot::Receiver<()>,
) -> PumpState {
    let interval = inner.cfg.stream_interval();
    let mut last_sent: Option<Instant> = None;
    let mut dirty = false;
    let mut outstanding = st.outstanding.take();
    loop {
        let now = Instant::now();
        let send_at = (dirty && outstanding.is_none() && !st.dead)
            .then(|| next_send(last_sent, interval, &st.bubbles, now));
        let rotate_at = if st.dead {
            None
        } else {
            st.bubbles.rotate_at()
        };
        tokio::select! {
            // `finish` wants the state; a closed channel means the sink was dropped.
            stopped = &mut stop_rx => {
                st.outstanding = outstanding;
                if stopped.is_ok() {
                    return st;
                }
                let text = text_rx.borrow().clone();
                return abandon(&inner, &target, st, &text).await;
            }
            // New cumulative text; a closed channel means the sink was dropped.
            changed = text_rx.changed() => {
                if changed.is_err() {
                    st.outstanding = outstanding;
                    let text = text_rx.borrow().clone();
                    return abandon(&inner, &target, st, &text).await;
                }
                dirty = true;
            }
            // The in-flight intermediate frame was answered: the next may go.
            result = async { match outstanding.as_mut() { Some(rx) => rx.await, None => std::future::pending().await } } => {
                outstanding = None;
                st.note(&result.unwrap_or(Err(ReqError::Disconnected)));
            }
            // Throttled, coalesced update with the newest text.
            () = sleep_opt(send_at) => {
                let text = text_rx.borrow_and_update().clone();
                dirty = false;
                let frames = st.bubbles.update(&text, Instant::now());
                if let Some(rx) = send_frames(&inner, &target, &mut st, frames).await {
                    outstanding = Some(rx);
                    last_sent = Some(Instant::now());
                }
            }
            // The bubble is getting old: seal it and continue in a new one.
            () = sleep_opt(rotate_at) => {
                let text = text_rx.borrow().clone();
                info!(instance = %inner.instance, "Rotating a long-lived reply bubble.");
                let frames = st.bubbles.rotate(&text, Instant::now());
                if let Some(rx) = send_frames(&inner, &target, &mut st, frames).await {
                    outstanding = Some(rx);
                    last_sent = Some(Instant::now());
                }
            }
        }
    }
}

/// Finishes a reply whose sink was dropped without `finish`, with the last text it got, so its
/// bubble does not keep spinning.
async fn abandon(inner: &Inner, target: &Target, st: PumpState, text: &str) -> PumpState {
    warn!(instance = %inner.instance, "A reply was dropped without finishing; closing its bubble.");
    let text = if text.trim().is_empty() { "…" } else { text };
    if let Err(e) = finalize(inner, target, st, text, true, &gateway_core::NoLog).await {
        warn!(instance = %inner.instance, error = %e, "Could not close an abandoned reply.");
    }
    if let Some(r) = &target.req_id {
        inner.stream_closed(r);
    }
    PumpState::new(inner, true)
}

/// When the next intermediate frame may go: the configured interval, stretched once half the
/// bubble's frame budget is used so the rest lasts until the bubble's rotation.
fn next_send(last: Option<Instant>, interval: Duration, b: &Bubbles, now: Instant) -> Instant {
    let Some(last) = last else { return now };
    let mut gap = interval;
    let left = b.frames_left();
    if left > 0 && b.frames_used() >= left {
        if let Some(rotate) = b.rotate_at() {
            gap = gap.max(rotate.saturating_duration_since(now) / left);
        }
    }
    (last + gap).max(now)
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Sends planned mid-stream frames without waiting for their answers. Returns the answer
/// receiver of the last intermediate frame. Seal frames are metered and remembered.
async fn send_frames(
    inner: &Inner,
    target: &Target,
    st: &mut PumpState,
    frames: Vec<Planned>,
) -> Option<AckRx> {
    let req_id = target.req_id.as_deref()?;
    let mut last = None;
    for f in frames {
        if st.dead || !inner.route_is(target.route.as_deref()) {
            st.dead = true;
            if f.finish {
                st.lost.push(f.text);
            }
            continue;
        }
        let frame = protocol::stream_frame(req_id, &f.stream_id, &f.content, f.finish);
        let timeout = if f.finish {
            inner.cfg.request_timeout()
        } else {
            inner.cfg.stream_ack_timeout()
        };
        if f.finish {
            inner
                .limiter
                .acquire(&target.chat.chat_id, Lane::Control)
                .await;
        }
        match inner.submit(frame, timeout, Duration::ZERO).await {
            Ok(rx) if f.finish => st.seals.push((f.text, rx)),
            Ok(rx) => last = Some(rx),
            Err(e) => {
                debug!(error = %e, "Could not send a stream frame.");
                st.dead = true;
                if f.finish {
                    st.lost.push(f.text);
                }
            }
        }
    }
    last
}

/// Sends one final frame, retrying on 846607. `Ok` when it counts as delivered.
async fn final_frame(
    inner: &Inner,
    target: &Target,
    req_id: &str,
    f: &Planned,
) -> Result<(), ReqError> {
    let frame = protocol::stream_frame(req_id, &f.stream_id, &f.content, true);
    let mut last = ReqError::Timeout;
    for _ in 0..RATE_RETRIES {
        inner
            .limiter
            .acquire(&target.chat.chat_id, Lane::Control)
            .await;
        let result = match inner
            .submit(frame.clone(), inner.cfg.request_timeout(), Duration::ZERO)
            .await
        {
            Ok(rx) => rx.await.unwrap_or(Err(ReqError::Disconnected)),
            Err(e) => Err(e),
        };
        if delivered(&result) {
            if matches!(result, Err(ReqError::Timeout)) {
                info!(instance = %inner.instance, "No ACK for a final stream frame; counting it as delivered.");
            }
            return Ok(());
        }
        match result {
            Err(ReqError::Platform {
                code: 846607,
                message,
            }) => {
                warn!(instance = %inner.instance, "WeCom rate limit hit on a final frame; waiting.");
                inner.limiter.penalize(&target.chat.chat_id);
                last = ReqError::Platform {
                    code: 846607,
                    message,
                };
            }
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
    Err(last)
}

/// Ends the reply: collects mid-stream seals, sends the final frames, and delivers whatever
/// did not reach the user through the non-stream path.
///
/// `log` first hears the whole text as one part (the stream); when a fallback is needed it hears
/// the fallback's pieces instead, each confirmed as it goes, so a retry from the outbox repeats
/// neither what the stream showed nor a piece already sent.
async fn finalize(
    inner: &Inner,
    target: &Target,
    mut st: PumpState,
    text: &str,
    usable: bool,
    log: &dyn DeliveryLog,
) -> Result<(), AdapterError> {
    log.planned(&[text.to_owned()]).await;
    if let Some(rx) = st.outstanding.take() {
        let r = rx.await.unwrap_or(Err(ReqError::Disconnected));
        st.note(&r);
    }
    let mut missing: Vec<String> = std::mem::take(&mut st.lost);
    for (piece, rx) in std::mem::take(&mut st.seals) {
        let r = rx.await.unwrap_or(Err(ReqError::Disconnected));
        if !delivered(&r) {
            if let Err(e) = &r {
                st.fail_code = st.fail_code.or(e.code());
            }
            missing.push(piece);
        }
    }
    let stream_ok = usable && !st.dead && inner.route_is(target.route.as_deref());
    match (stream_ok, target.req_id.as_deref()) {
        (true, Some(req_id)) => {
            let frames = st.bubbles.finish(text, Instant::now());
            for (i, f) in frames.iter().enumerate() {
                if let Err(e) = final_frame(inner, target, req_id, f).await {
                    warn!(instance = %inner.instance, error = %e, "The reply stream could not be finished; falling back.");
                    st.fail_code = st.fail_code.or(e.code());
                    missing.extend(frames[i..].iter().map(|f| f.text.clone()));
                    break;
                }
            }
        }
        _ => {
            let sealed = st.bubbles.sealed_text();
            let rest = text.strip_prefix(sealed).unwrap_or(text);
            missing.push(rest.to_owned());
        }
    }
    let pending: String = missing.concat();
    if pending.trim().is_empty() {
        log.confirmed(0).await;
        return Ok(());
    }
    let via = Via {
        first: target
            .req_id
            .clone()
            .filter(|_| st.fail_code == Some(600039) && usable),
        avoid: target.req_id.clone(),
        control: true,
    };
    inner
        .deliver_text_logged(&target.chat, &pending, via, log)
        .await
        .map_err(|e| {
            AdapterError::Undelivered(format!("the stream and every fallback failed: {e}"))
        })
}

/// Replies to `enter_chat` go through `aibot_respond_welcome_msg` (5-second window); later or
/// failing ones go the non-stream way.
async fn finish_welcome(inner: &Inner, target: &Target, text: &str) -> Result<(), AdapterError> {
    if let (Some(req_id), true) = (
        target.req_id.as_deref(),
        inner.route_is(target.route.as_deref()),
    ) {
        let frame = protocol::welcome(req_id, text);
        match inner.request(frame, Duration::from_secs(5)).await {
            Ok(_) | Err(ReqError::Timeout) => return Ok(()),
            Err(e) => debug!(error = %e, "Welcome reply refused; sending it another way."),
        }
    }
    let via = Via {
        avoid: target.req_id.clone(),
        control: true,
        ..Via::default()
    };
    inner.deliver_text(&target.chat, text, via).await
}
