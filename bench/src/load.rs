//! The load driver: signed text callbacks POSTed to the gateway as WeCom would send them, each
//! timed from the POST until the emulator recorded the echo reply that names it.
//!
//! Every message has its own MsgId `id`, sender `u<id>` and text `bench <id>`; the echo agent
//! answers `echo: bench <id>`. One watcher task sees every `message/send` the emulator records
//! (through its change notification, no polling) and wakes the message's waiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use wecom_emulator::rest::{FakeApp, FakeWeComApi};

/// The reply text's prefix: the echo agent's `echo: ` and our `bench `.
const REPLY_PREFIX: &str = "echo: bench ";

/// Messages waiting for their reply: MsgId -> the waiter to wake with the time it arrived.
type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Instant>>>>;

/// What happened to one message.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Replied, this long after the POST started.
    Replied(Duration),
    /// The callback was refused (non-200) or the request failed.
    Refused,
    /// Accepted, but no reply within the timeout.
    NoReply,
}

/// Drives one gateway: signs, posts and matches replies.
#[derive(Debug)]
pub struct Driver {
    app: FakeApp,
    url: String,
    http: reqwest::Client,
    waiters: Waiters,
    next_id: AtomicU64,
    timeout: Duration,
    /// Replies that matched no waiting message (a second answer, or one after its timeout).
    pub unmatched: Arc<AtomicU64>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Driver {
    /// A driver for `app`, whose callbacks go to `port`; starts the reply watcher on `emu`.
    pub fn new(emu: Arc<FakeWeComApi>, app: FakeApp, port: u16, timeout: Duration) -> Self {
        let waiters: Waiters = Arc::default();
        let unmatched = Arc::new(AtomicU64::new(0));
        let watcher = tokio::spawn(watch(emu, waiters.clone(), unmatched.clone()));
        Self {
            app,
            url: format!("http://127.0.0.1:{port}/wecom/callback"),
            http: reqwest::Client::new(),
            waiters,
            // Clear of any MsgId the emulator's own counter hands out.
            next_id: AtomicU64::new(7_000_000_000),
            timeout,
            unmatched,
            watcher,
        }
    }

    /// Sends one message and waits for its reply.
    pub async fn one(&self) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Signing is WeCom's work, not the gateway's: done before the clock starts.
        let signed = self.app.sign_post(&self.app.text_xml(
            &format!("u{id}"),
            &format!("bench {id}"),
            id,
        ));
        let url = format!("{}?{}", self.url, signed.query);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, tx);
        let started = Instant::now();
        let posted = self
            .http
            .post(url)
            .header("content-type", "text/xml")
            .body(signed.body)
            .send()
            .await;
        let accepted = match posted {
            Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if !accepted {
            lock(&self.waiters).remove(&id);
            return Outcome::Refused;
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(at)) => Outcome::Replied(at.saturating_duration_since(started)),
            _ => {
                lock(&self.waiters).remove(&id);
                Outcome::NoReply
            }
        }
    }
}

impl Load for Driver {
    fn one(&self) -> impl std::future::Future<Output = Outcome> + Send {
        Driver::one(self)
    }
}

/// A driver of one path: sends one message and waits for its answer.
pub trait Load: Send + Sync + 'static {
    /// One message, timed until its answer.
    fn one(&self) -> impl std::future::Future<Output = Outcome> + Send;
}

/// `n` messages with `concurrency` of them in flight at any time (closed loop: a sender sends
/// its next message once the last one was answered).
pub async fn closed_loop<D: Load>(d: &Arc<D>, n: usize, concurrency: usize) -> Vec<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (me, next) = (d.clone(), next.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                out.push(me.one().await);
            }
            out
        });
    }
    workers.join_all().await.concat()
}

/// `n` messages started at `rate` per second, however many are in flight (open loop).
pub async fn fixed_rate<D: Load>(d: &Arc<D>, n: usize, rate: f64) -> Vec<Outcome> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = JoinSet::new();
    for _ in 0..n {
        tick.tick().await;
        let me = d.clone();
        sends.spawn(async move { me.one().await });
    }
    sends.join_all().await
}

/// Wakes the waiter of every reply the emulator records, in order, as it is recorded: the
/// predicate runs on each change of the emulator's state and looks only at the new sends.
async fn watch(emu: Arc<FakeWeComApi>, waiters: Waiters, unmatched: Arc<AtomicU64>) {
    let mut seen = 0;
    let pred = |sent: &[wecom_emulator::rest::SentMessage]| {
        let now = Instant::now();
        for m in &sent[seen.min(sent.len())..] {
            let id = m
                .content()
                .and_then(|c| c.strip_prefix(REPLY_PREFIX))
                .and_then(|n| n.parse::<u64>().ok());
            match id.and_then(|id| lock(&waiters).remove(&id)) {
                // A waiter that timed out meanwhile dropped its receiver: nothing to do.
                Some(tx) => drop(tx.send(now)),
                None => drop(unmatched.fetch_add(1, Ordering::Relaxed)),
            }
        }
        seen = sent.len();
        // Never done: the driver aborts the watcher when it is dropped.
        false
    };
    let _ = emu
        .wait_sent_until(pred, Duration::from_secs(365 * 24 * 3600))
        .await;
}

/// Locks `m`, ignoring poison (a panicked holder leaves the map usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
