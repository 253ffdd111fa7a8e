//! The inbound pipeline, off the socket reader (DESIGN.md "The flow of one message", step 1):
//!
//! 1. the dispatcher parses each callback and starts its media downloads at once (bounded
//!    parallelism; URLs expire in about five minutes), chaining messages of one chat so they
//!    reach the next stage in arrival order;
//! 2. the batch stage merges client-split texts (`batch.rs`) and submits to the router; the
//!    chat's reply route is remembered only when the sender passed the access policy;
//! 3. events are submitted as typed events; `enter_chat` gets the welcome text, if configured,
//!    within its 5-second window.
//!
//! Every queue is bounded. A message the router could not take is answered with a notice
//! instead of vanishing.
//!
//! WeCom does not deliver a message twice, so each message frame is journaled
//! ([`gateway_core::StateStore::intake_accept`], dedup and journal in one record) before its
//! media is fetched, and marked done once the router has it. Frames still pending at start (the
//! process died while fetching, batching or submitting) go through the pipeline again; their
//! `req_id` belongs to a dead connection, so their answers go out proactively.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::{AdapterContext, InboundMessage, IntakeEntry, PlatformEvent};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::adapter::Inner;
use crate::batch::{BatchConfig, Batcher};
use crate::inbound::{build_event, build_message, parse_event, parse_message, Fetched, MediaRef};
use crate::media::MediaStore;
use crate::protocol::{self, cmd, Incoming};
use crate::stream::ReplyContext;

/// Messages whose media is being fetched at once.
const PARALLEL: usize = 16;
/// Capacity of the queue into the batch stage.
const READY_QUEUE: usize = 256;
/// How often old media files are looked for.
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// A message ready for the router.
struct Ready {
    msg: InboundMessage,
    plain: bool,
}

/// Starts the pipeline's tasks on the adapter's tracker.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    ctx: AdapterContext,
    media: MediaStore,
    rx: mpsc::Receiver<Incoming>,
    stop: CancellationToken,
) {
    let (ready_tx, ready_rx) = mpsc::channel(READY_QUEUE);
    inner.tasks.spawn(dispatch(
        inner.clone(),
        ctx.clone(),
        media.clone(),
        rx,
        ready_tx,
        stop.clone(),
    ));
    inner
        .tasks
        .spawn(batch_stage(inner.clone(), ctx, ready_rx, stop.clone()));
    inner.tasks.spawn(cleanup(media, stop));
}

/// The intake journal scope of `instance`.
pub(crate) fn journal_scope(instance: &str) -> String {
    format!("wecom/{instance}")
}

/// A frame as the journal keeps it (re-parsed with [`Incoming::parse`] on resume).
fn journal_payload(frame: &Incoming) -> String {
    serde_json::json!({
        "cmd": frame.cmd,
        "headers": { "req_id": frame.req_id },
        "body": frame.body,
    })
    .to_string()
}

/// Message frames journaled by an earlier run and not yet handed to the router.
async fn journaled(ctx: &AdapterContext) -> Vec<Incoming> {
    match ctx
        .store
        .intake_pending(&journal_scope(&ctx.instance))
        .await
    {
        Ok(entries) => {
            if !entries.is_empty() {
                info!(instance = %ctx.instance, count = entries.len(), "Resuming journaled messages.");
            }
            entries
                .iter()
                .filter_map(|e| Incoming::parse(&e.payload).ok())
                .collect()
        }
        Err(e) => {
            warn!(instance = %ctx.instance, error = %e, "Could not read the message journal; unfinished messages wait for the next start.");
            Vec::new()
        }
    }
}

/// Journals a new message frame; false for one journaled before (a duplicate).
async fn journal(ctx: &AdapterContext, msgid: &str, frame: &Incoming) -> bool {
    let entry = IntakeEntry {
        scope: journal_scope(&ctx.instance),
        id: msgid.to_string(),
        payload: journal_payload(frame),
        received_at: chrono::Utc::now(),
    };
    match ctx.store.intake_accept(&entry).await {
        Ok(new) => new,
        Err(e) => {
            // Better processed unjournaled than dropped: the message is live on this connection.
            warn!(instance = %ctx.instance, error = %e, "Could not journal a message; processing it anyway.");
            true
        }
    }
}

/// Marks the journal entries of a submitted message (and of the pieces merged into it) done.
async fn journal_done(ctx: &AdapterContext, msg: &InboundMessage) {
    let scope = journal_scope(&ctx.instance);
    let mut ids = vec![msg.message_id.clone()];
    if let Some(merged) = msg.reply_context[crate::batch::MERGED_IDS].as_array() {
        ids.extend(merged.iter().filter_map(|v| v.as_str()).map(str::to_owned));
    }
    let now = chrono::Utc::now();
    for id in ids {
        if let Err(e) = ctx.store.intake_done(&scope, &id, now).await {
            debug!(instance = %ctx.instance, error = %e, "Could not mark a journal entry done; the router dedups it if it runs again.");
        }
    }
}

async fn dispatch(
    inner: Arc<Inner>,
    ctx: AdapterContext,
    media: MediaStore,
    mut rx: mpsc::Receiver<Incoming>,
    ready: mpsc::Sender<Ready>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    // Per chat, the completion signal of its latest message: the next one waits for it.
    let mut tails: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    let mut resumed: std::collections::VecDeque<Incoming> = journaled(&ctx).await.into();
    loop {
        let (frame, is_resumed) = match resumed.pop_front() {
            Some(f) => (f, true),
            None => tokio::select! {
                f = rx.recv() => match f { Some(f) => (f, false), None => return },
                () = stop.cancelled() => return,
            },
        };
        // A resumed frame's req_id belongs to a connection that is gone: no route.
        let route = if is_resumed {
            String::new()
        } else {
            inner.route_tag().unwrap_or_default()
        };
        // WeCom's `create_time` has no documented unit (reference §11): the stream window runs
        // from our own receipt of the frame.
        let arrived_ms = chrono::Utc::now().timestamp_millis();
        if frame.cmd == cmd::EVENT_CALLBACK {
            inner.tasks.spawn(handle_event(
                inner.clone(),
                ctx.clone(),
                frame,
                route,
                arrived_ms,
            ));
            continue;
        }
        let Some(parsed) = parse_message(&frame) else {
            debug!(instance = %inner.instance, "Dropped a message without a sender.");
            continue;
        };
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = stop.cancelled() => return,
        };
        let chat_key = format!(
            "{}:{}",
            parsed.origin.chat.kind.as_str(),
            parsed.origin.chat.chat_id
        );
        if tails.len() > 4 * PARALLEL {
            // Forget chats whose last message is done.
            tails.retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let prev = tails.insert(chat_key, done_rx);
        let (inner, media, ready) = (inner.clone(), media.clone(), ready.clone());
        let instance = ctx.instance.clone();
        let ctx = ctx.clone();
        inner.clone().tasks.spawn(async move {
            let msgid = parsed.origin.msgid.clone();
            if !is_resumed && !msgid.is_empty() && !journal(&ctx, &msgid, &frame).await {
                debug!(instance = %inner.instance, "Dropped a message journaled before (a redelivery).");
                drop(done_tx);
                drop(permit);
                return;
            }
            let own = fetch_all(&inner, &media, &parsed.media, &msgid, 0).await;
            let quoted_refs = parsed
                .quote
                .as_ref()
                .map(|q| q.media.clone())
                .unwrap_or_default();
            let quoted = fetch_all(&inner, &media, &quoted_refs, &msgid, own.len()).await;
            if let Some(prev) = prev {
                // Resolves when the previous message of this chat was handed on (or dropped).
                let _ = prev.await;
            }
            let context = ReplyContext {
                req_id: Some(parsed.origin.req_id.clone()).filter(|r| !r.is_empty()),
                route: Some(route).filter(|r| !r.is_empty()),
                event: None,
                arrived_ms: Some(arrived_ms),
            };
            match build_message(&instance, &parsed, own, quoted, context.to_value()) {
                Some(msg) => {
                    let plain = parsed.is_plain_text();
                    let _ = ready.send(Ready { msg, plain }).await;
                }
                None => debug!(instance = %inner.instance, "Dropped an empty message."),
            }
            drop(done_tx);
            drop(permit);
        });
    }
}

async fn fetch_all(
    inner: &Inner,
    media: &MediaStore,
    refs: &[MediaRef],
    msgid: &str,
    offset: usize,
) -> Vec<Fetched> {
    let jobs = refs.iter().enumerate().map(|(i, r)| async move {
        match media.fetch(r, msgid, offset + i).await {
            Ok(a) => Fetched::Ok(a),
            Err(e) => {
                warn!(instance = %inner.instance, kind = r.kind.as_str(), error = %e, "Could not fetch inbound media.");
                Fetched::Failed(r.kind)
            }
        }
    });
    futures::future::join_all(jobs).await
}

async fn batch_stage(
    inner: Arc<Inner>,
    ctx: AdapterContext,
    mut rx: mpsc::Receiver<Ready>,
    stop: CancellationToken,
) {
    let cfg = &inner.cfg;
    let mut batcher = Batcher::new(BatchConfig {
        delay: Duration::from_millis(cfg.text_batch_delay_ms),
        split_delay: Duration::from_millis(
            cfg.text_batch_split_delay_ms.max(cfg.text_batch_delay_ms),
        ),
        split_threshold: cfg.text_batch_split_threshold,
        ..BatchConfig::default()
    });
    loop {
        let deadline = batcher.next_deadline();
        let out = tokio::select! {
            r = rx.recv() => match r {
                Some(ready) => batcher.push(ready.msg, ready.plain, Instant::now()),
                None => break,
            },
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                batcher.due(Instant::now())
            }
            () = stop.cancelled() => break,
        };
        for msg in out {
            submit(&inner, &ctx, msg).await;
        }
    }
    for msg in batcher.drain() {
        submit(&inner, &ctx, msg).await;
    }
}

/// Hands a message to the router; remembers its reply route when the sender passed policy.
async fn submit(inner: &Inner, ctx: &AdapterContext, msg: InboundMessage) {
    let chat = msg.chat.clone();
    let journaled = msg.clone();
    match ctx.submit(msg).await {
        Ok(admission) => {
            debug!(instance = %inner.instance, ?admission, "Message submitted.");
            journal_done(ctx, &journaled).await;
        }
        Err(e) => {
            warn!(instance = %inner.instance, error = %e, "The router could not take a message; telling the sender.");
            if !e.is_retryable() {
                // Not a passing condition: resuming it would fail the same way.
                journal_done(ctx, &journaled).await;
            }
            // Out of turn, so proactively (reference §5: a notice never takes the req_id).
            let notice = "⚠️ Sorry, I could not take this message right now; please send it again.";
            if let Err(e) = inner.deliver_text(&chat, notice).await {
                debug!(instance = %inner.instance, error = %e, "Could not tell the sender.");
            }
        }
    }
}

async fn handle_event(
    inner: Arc<Inner>,
    ctx: AdapterContext,
    frame: Incoming,
    route: String,
    arrived_ms: i64,
) {
    let Some(parsed) = parse_event(&frame) else {
        return;
    };
    let enter = parsed.event == PlatformEvent::EnterChat;
    let context = ReplyContext {
        req_id: Some(parsed.origin.req_id.clone()).filter(|r| !r.is_empty()),
        route: Some(route).filter(|r| !r.is_empty()),
        // Every event is marked: an event's req_id takes no stream (846605).
        event: Some(if enter { "enter_chat" } else { "event" }.to_owned()),
        arrived_ms: Some(arrived_ms),
    };
    let msg = build_event(&ctx.instance, &parsed, context.to_value());
    let admission = match ctx.submit(msg).await {
        Ok(a) => a,
        Err(e) => {
            warn!(instance = %inner.instance, error = %e, "The router could not take an event.");
            return;
        }
    };
    if !enter || !admission.passed_policy() {
        return;
    }
    let (Some(text), Some(req_id)) = (inner.cfg.welcome_text.clone(), context.req_id) else {
        return;
    };
    // The welcome window is five seconds from the event.
    match inner
        .request(protocol::welcome(&req_id, &text), Duration::from_secs(5))
        .await
    {
        Ok(_) => info!(instance = %inner.instance, "Welcome message sent."),
        Err(e) => {
            warn!(instance = %inner.instance, error = %e, "Could not send the welcome message.")
        }
    }
}

async fn cleanup(media: MediaStore, stop: CancellationToken) {
    loop {
        media.cleanup().await;
        tokio::select! {
            () = tokio::time::sleep(CLEANUP_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
