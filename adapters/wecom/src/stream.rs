//! The reply stream engine, as the official client streams (reference
//! `wecom-aibot-official.md` §4, §5, §0 items 10–12): one [`StreamSink`] per reply, opened by the
//! router for every turn.
//!
//! * **One stream per inbound message**: one `stream.id` on the message's `req_id` carries the
//!   `<think></think>` seed, the throttled intermediate frames (the whole text so far, newest
//!   wins, one in flight, identical frames skipped) and the final frame. No second stream and no
//!   other passive reply ever goes on that `req_id`.
//! * **What does not fit continues proactively**: a stream shows at most
//!   `stream_max_frame_bytes` (WeCom's 20480); the text after that — cut at a paragraph, line,
//!   sentence or space, nothing lost or repeated — follows the final frame as `aibot_send_msg`
//!   markdown to the chat (DM user id or group chat id), split by bytes.
//! * **The 6-minute window**: `stream_window_secs` after the user's message the stream is
//!   finished with what it shows; the rest of the answer follows as markdown. A stream that
//!   WeCom reports expired (846608) or refuses in any other way is abandoned and the whole answer
//!   goes as markdown, once.
//! * **The final frame is always visible**: WeCom ignores invisible content and would leave the
//!   thinking animation up, so an empty answer closes the stream with [`DONE`].
//! * **Unconfirmed is not delivered**: a final frame without an answer is sent again (same id,
//!   same content: idempotent); still unanswered, the reply is reported unconfirmed to the router
//!   (outbox, `/health`), never counted as delivered.
//! * Events take no stream (846605): `enter_chat` is answered with `aibot_respond_welcome_msg`
//!   within 5 s, other events proactively; a `req_id` from before a reconnect or restart is not
//!   used either.

mod plan;

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

use crate::adapter::{to_adapter_error, Inner};
use crate::protocol::{self, Incoming};
use crate::ratelimit::Lane;
use crate::session::ReqError;
pub use plan::{Plan, DONE, STILL_WORKING};

/// Tries of a final frame that gets no answer (re-sending it is idempotent).
const FINAL_TRIES: usize = 3;

type AckRx = oneshot::Receiver<Result<Incoming, ReqError>>;

/// The reply context the adapter stores with each inbound message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplyContext {
    pub req_id: Option<String>,
    pub route: Option<String>,
    /// `enter_chat`, or `event` for any other event; `None` for a message.
    pub event: Option<String>,
    /// When the adapter received the frame (Unix milliseconds).
    pub arrived_ms: Option<i64>,
}

impl ReplyContext {
    pub(crate) fn to_value(&self) -> Value {
        serde_json::json!({
            "req_id": self.req_id,
            "route": self.route,
            "event": self.event,
            "arrived_ms": self.arrived_ms,
        })
    }

    pub(crate) fn from_value(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            req_id: s("req_id"),
            route: s("route"),
            event: s("event"),
            arrived_ms: v.get("arrived_ms").and_then(Value::as_i64),
        }
    }
}

/// What the inbound `req_id` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A user message: one stream.
    Message,
    /// `enter_chat`: one welcome reply within 5 s.
    Welcome,
    /// Any other event: no passive reply at all.
    Event,
}

/// Where a sink replies.
#[derive(Debug, Clone)]
struct Target {
    chat: ChatAddress,
    /// The inbound `req_id`, usable or not.
    req_id: Option<String>,
    /// The route tag (connection generation) the `req_id` belongs to.
    route: Option<String>,
    kind: Kind,
}

/// The stream's state, handed from the pump to `finish`.
#[derive(Debug)]
struct StreamState {
    plan: Plan,
    /// The answer of the intermediate frame in flight.
    outstanding: Option<AckRx>,
    /// The stream cannot be used any more (refused, expired, connection gone).
    dead: bool,
    /// The final frame the pump sent when the window closed: the text it delivers (empty when
    /// it only said [`STILL_WORKING`]) and its answer.
    sealed: Option<(String, AckRx)>,
}

impl StreamState {
    fn new(inner: &Inner) -> Self {
        Self {
            plan: Plan::new(inner.cfg.stream_max_frame_bytes),
            outstanding: None,
            dead: false,
            sealed: None,
        }
    }

    /// Takes note of an intermediate frame's answer.
    fn note(&mut self, result: &Result<Incoming, ReqError>) {
        match result {
            Ok(_) => {}
            // Not a verdict on the stream: the next frame carries the same text and more.
            Err(ReqError::Timeout | ReqError::Busy)
            | Err(ReqError::Platform { code: 846607, .. }) => {}
            Err(e) => {
                debug!(error = %e, "The reply stream stopped working; the answer goes as markdown.");
                self.dead = true;
            }
        }
    }
}

struct Pump {
    text: watch::Sender<String>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<StreamState>,
}

/// The reply sink of the `wecom` adapter.
pub(crate) struct StreamSink {
    inner: Arc<Inner>,
    target: Target,
    /// When the stream may no longer be updated.
    window_ends: Instant,
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
        let kind = match ctx.event.as_deref() {
            None => Kind::Message,
            Some("enter_chat") => Kind::Welcome,
            Some(_) => Kind::Event,
        };
        // The window runs from the frame's arrival: the message may have waited in a queue.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let waited = Duration::from_millis(
            ctx.arrived_ms
                .map_or(0, |t| u64::try_from(now_ms - t).unwrap_or(0)),
        );
        let window_ends = Instant::now() + inner.cfg.stream_window().saturating_sub(waited);
        let target = Target {
            chat: inbound.chat.clone(),
            req_id: ctx.req_id,
            route: ctx.route,
            kind,
        };
        Self {
            inner,
            target,
            window_ends,
            pump: None,
        }
    }

    /// True when the stream can run on the inbound `req_id` (a message, on the live
    /// connection, still inside its window).
    fn usable(&self) -> bool {
        self.target.kind == Kind::Message
            && self.target.req_id.is_some()
            && self.inner.route_is(self.target.route.as_deref())
            && Instant::now() < self.window_ends
    }

    fn start_pump(&mut self, seed: bool) {
        if self.pump.is_some() || !self.usable() {
            return;
        }
        let (text_tx, text_rx) = watch::channel(String::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let inner = self.inner.clone();
        let target = self.target.clone();
        let window_ends = self.window_ends;
        let task = self.inner.tasks.spawn(async move {
            let mut st = StreamState::new(&inner);
            if seed {
                let content = st.plan.seed();
                st.outstanding = send_intermediate(&inner, &target, &mut st, content).await;
            }
            run_pump(inner, target, st, window_ends, text_rx, stop_rx).await
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
        match target.kind {
            Kind::Welcome => return finish_welcome(&inner, &target, text, log).await,
            Kind::Event => {
                return inner
                    .deliver_text_logged(&target.chat, text, Lane::Control, log)
                    .await
            }
            Kind::Message => {}
        }
        let st = match self.pump.take() {
            Some(p) => {
                let _ = p.stop.send(());
                match p.task.await {
                    Ok(st) => Some(st),
                    Err(e) => {
                        warn!(error = %e, "The reply pump failed; sending the answer as markdown.");
                        None
                    }
                }
            }
            None => None,
        };
        let usable = self.usable();
        let st = match st {
            Some(st) => st,
            None => {
                let mut st = StreamState::new(&inner);
                st.dead = !usable;
                st
            }
        };
        finalize(&inner, &target, st, text, self.window_ends, log).await
    }
}

/// The pump: sends intermediate frames until told to stop, and finishes the stream itself when
/// its window closes. Hands its state back to `finish`; when the sink is dropped without
/// `finish`, it finishes the reply itself with the last text, so no bubble is left spinning.
async fn run_pump(
    inner: Arc<Inner>,
    target: Target,
    mut st: StreamState,
    window_ends: Instant,
    mut text_rx: watch::Receiver<String>,
    mut stop_rx: oneshot::Receiver<()>,
) -> StreamState {
    let interval = inner.cfg.stream_interval();
    let mut last_sent: Option<Instant> = None;
    let mut dirty = false;
    let mut outstanding = st.outstanding.take();
    loop {
        let open = !st.dead && st.sealed.is_none();
        let send_at = (dirty && outstanding.is_none() && open).then(|| match last_sent {
            Some(t) => (t + interval).max(Instant::now()),
            None => Instant::now(),
        });
        let seal_at = open.then_some(window_ends);
        tokio::select! {
            // `finish` wants the state; a closed channel means the sink was dropped.
            stopped = &mut stop_rx => {
                st.outstanding = outstanding;
                if stopped.is_ok() {
                    return st;
                }
                let text = text_rx.borrow().clone();
                return abandon(&inner, &target, st, &text, window_ends).await;
            }
            // New text so far; a closed channel means the sink was dropped.
            changed = text_rx.changed() => {
                if changed.is_err() {
                    st.outstanding = outstanding;
                    let text = text_rx.borrow().clone();
                    return abandon(&inner, &target, st, &text, window_ends).await;
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
                if let Some(content) = st.plan.update(&text) {
                    if let Some(rx) = send_intermediate(&inner, &target, &mut st, Some(content)).await {
                        outstanding = Some(rx);
                        last_sent = Some(Instant::now());
                    }
                }
            }
            // WeCom stops taking updates soon: finish the stream with what it shows.
            () = sleep_opt(seal_at) => {
                if let Some(rx) = outstanding.take() {
                    st.note(&rx.await.unwrap_or(Err(ReqError::Disconnected)));
                }
                let text = text_rx.borrow().clone();
                info!(instance = %inner.instance, "The reply stream's window is closing; the rest of the answer follows as markdown.");
                seal(&inner, &target, &mut st, &text).await;
            }
        }
    }
}

/// Finishes the stream at the end of its window with the text it can show so far (or
/// [`STILL_WORKING`]); `finish` later sends what comes after as markdown.
async fn seal(inner: &Inner, target: &Target, st: &mut StreamState, text: &str) {
    if st.dead {
        return;
    }
    let (head, _) = st.plan.split(text);
    let (content, delivers) = if protocol::has_visible(&head) {
        (head.clone(), head)
    } else {
        (STILL_WORKING.to_owned(), String::new())
    };
    match submit_final(inner, target, st, &content).await {
        Some(rx) => st.sealed = Some((delivers, rx)),
        None => st.dead = true,
    }
}

/// Finishes a reply whose sink was dropped without `finish`, with the last text it got, so its
/// bubble does not keep spinning.
async fn abandon(
    inner: &Inner,
    target: &Target,
    st: StreamState,
    text: &str,
    window_ends: Instant,
) -> StreamState {
    warn!(instance = %inner.instance, "A reply was dropped without finishing; closing its stream.");
    if let Err(e) = finalize(inner, target, st, text, window_ends, &gateway_core::NoLog).await {
        warn!(instance = %inner.instance, error = %e, "Could not close an abandoned reply.");
    }
    let mut done = StreamState::new(inner);
    done.dead = true;
    done
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Sends one intermediate frame without waiting for its answer; returns the answer receiver.
async fn send_intermediate(
    inner: &Inner,
    target: &Target,
    st: &mut StreamState,
    content: Option<String>,
) -> Option<AckRx> {
    let content = content?;
    let req_id = target.req_id.as_deref()?;
    if st.dead || !inner.route_is(target.route.as_deref()) {
        st.dead = true;
        return None;
    }
    let frame = protocol::stream_frame(req_id, st.plan.id(), &content, false);
    match inner
        .submit(frame, inner.cfg.stream_ack_timeout(), Duration::ZERO)
        .await
    {
        Ok(rx) => Some(rx),
        Err(e) => {
            debug!(error = %e, "Could not send a stream frame.");
            st.dead = true;
            None
        }
    }
}

/// Puts the final frame with `content` on its way; `None` when it could not even be sent.
async fn submit_final(
    inner: &Inner,
    target: &Target,
    st: &StreamState,
    content: &str,
) -> Option<AckRx> {
    let req_id = target.req_id.as_deref()?;
    if !inner.route_is(target.route.as_deref()) {
        return None;
    }
    inner
        .limiter
        .acquire(&target.chat.chat_id, Lane::Control)
        .await;
    let frame = protocol::stream_frame(req_id, st.plan.id(), content, true);
    inner
        .submit(frame, inner.cfg.request_timeout(), Duration::ZERO)
        .await
        .ok()
}

/// Sends the final frame until WeCom answers: again after a timeout (idempotent: same id, same
/// content) and after a rate limit; any other answer is final. A re-sent final that WeCom
/// refuses as "stream finished" (846608) while the stream's window is still open was finished
/// by the earlier, unanswered try: delivered.
async fn final_frame(
    inner: &Inner,
    target: &Target,
    st: &StreamState,
    content: &str,
    window_ends: Instant,
) -> Result<(), ReqError> {
    let mut last = ReqError::Timeout;
    let mut tries = 0;
    while tries < FINAL_TRIES {
        tries += 1;
        let Some(rx) = submit_final(inner, target, st, content).await else {
            return Err(ReqError::NotConnected);
        };
        match rx.await.unwrap_or(Err(ReqError::Disconnected)) {
            Ok(_) => return Ok(()),
            Err(ReqError::Platform { code: 846608, .. })
                if tries > 1
                    && matches!(last, ReqError::Timeout)
                    && Instant::now() < window_ends =>
            {
                info!(instance = %inner.instance, "A re-sent final frame found its stream finished: the first one arrived.");
                return Ok(());
            }
            Err(ReqError::Timeout) => {
                info!(instance = %inner.instance, tries, "No answer to a final stream frame; sending it again.");
                last = ReqError::Timeout;
            }
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
        }
    }
    Err(last)
}

/// Ends the reply: the final frame with the head of the text, then the rest as markdown; or
/// all of it as markdown when the stream cannot carry it.
///
/// `log` hears the plan (the stream's part first, then the markdown pieces) and each part WeCom
/// confirmed, so a retry from the outbox repeats nothing confirmed. When the stream fails before
/// its part was confirmed, the plan is made again with markdown pieces only.
async fn finalize(
    inner: &Inner,
    target: &Target,
    mut st: StreamState,
    text: &str,
    window_ends: Instant,
    log: &dyn DeliveryLog,
) -> Result<(), AdapterError> {
    if let Some(rx) = st.outstanding.take() {
        st.note(&rx.await.unwrap_or(Err(ReqError::Disconnected)));
    }
    // Finished at the window: the part it showed is delivered once WeCom confirms it.
    if let Some((delivers, rx)) = st.sealed.take() {
        let confirmed = rx.await.unwrap_or(Err(ReqError::Disconnected)).is_ok();
        let rest = if !confirmed || delivers.is_empty() {
            text.to_owned()
        } else {
            match st.plan.split(text) {
                // The stream showed the head it would show now: continue where it stops.
                (head, rest) if head == delivers => rest,
                _ => match text.strip_prefix(delivers.as_str()) {
                    Some(rest) => rest.trim_start_matches(['\n', ' ', '\t']).to_owned(),
                    None => text.to_owned(),
                },
            }
        };
        return inner
            .deliver_text_logged(&target.chat, &rest, Lane::Control, log)
            .await;
    }
    let stream_ok = !st.dead && inner.route_is(target.route.as_deref());
    if !stream_ok || target.req_id.is_none() {
        return inner
            .deliver_text_logged(&target.chat, text, Lane::Control, log)
            .await;
    }
    let (head, rest) = st.plan.split(text);
    let content = if protocol::has_visible(&head) {
        head
    } else {
        DONE.to_owned()
    };
    let pieces = inner.text_pieces(&rest);
    let mut parts = Vec::with_capacity(pieces.len() + 1);
    parts.push(content.clone());
    parts.extend(pieces.iter().cloned());
    log.planned(&parts).await;
    match final_frame(inner, target, &st, &content, window_ends).await {
        Ok(()) => {
            log.confirmed(0).await;
            inner
                .send_pieces(&target.chat, &pieces, 1, Lane::Control, log)
                .await
        }
        // No answer after every try: WeCom may show it or not. Reported as unconfirmed (the
        // router keeps it in the outbox and shows it in /health), never as delivered.
        Err(e @ (ReqError::Timeout | ReqError::Disconnected)) => {
            warn!(instance = %inner.instance, error = %e, "A final stream frame was never confirmed; the reply is kept as unconfirmed.");
            Err(to_adapter_error(e))
        }
        // Refused (846608 expired, or any other code) or never sent: nothing of the stream
        // counts, the whole answer goes as markdown.
        Err(e) => {
            info!(instance = %inner.instance, error = %e, "The reply stream could not be finished; sending the answer as markdown.");
            inner
                .deliver_text_logged(&target.chat, text, Lane::Control, log)
                .await
        }
    }
}

/// Replies to `enter_chat` go through `aibot_respond_welcome_msg` (5-second window); later or
/// refused ones go proactively.
async fn finish_welcome(
    inner: &Inner,
    target: &Target,
    text: &str,
    log: &dyn DeliveryLog,
) -> Result<(), AdapterError> {
    if let (Some(req_id), true) = (
        target.req_id.as_deref(),
        inner.route_is(target.route.as_deref()),
    ) {
        log.planned(&[text.to_owned()]).await;
        let frame = protocol::welcome(req_id, text);
        match inner.request(frame, Duration::from_secs(5)).await {
            Ok(_) => {
                log.confirmed(0).await;
                return Ok(());
            }
            Err(e @ ReqError::Timeout) => return Err(to_adapter_error(e)),
            Err(e) => debug!(error = %e, "Welcome reply refused; sending it proactively."),
        }
    }
    inner
        .deliver_text_logged(&target.chat, text, Lane::Control, log)
        .await
}
