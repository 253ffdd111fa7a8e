//! The AI Bot load driver: text messages pushed by the openws emulator to the gateway's `wecom`
//! instance over its long connection, each timed from the push until the emulator recorded the
//! final stream frame (`finish: true`) on the message's `req_id`.
//!
//! Every message comes from its own user `a<id>` with text `bench <id>`. One watcher task sees
//! every frame the emulator records (through its change notification, no polling), counts the
//! `aibot_respond_msg` frames and wakes the waiter of each final stream frame. Latency uses the
//! emulator's own arrival time of the frame, so a late watcher does not inflate it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use wecom_emulator::openws::{Chat, OpenWs, Received};

use crate::load::{lock, Load, Outcome};

/// The bot the gateway subscribes as.
pub const BOT_ID: &str = "bot-bench";
/// Its secret.
pub const SECRET: &str = "secret-bench";

/// Messages waiting for their final frame: req_id -> the waiter to wake with its arrival time.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

/// Drives one gateway over the openws emulator.
#[derive(Debug)]
pub struct AibotDriver {
    emu: Arc<OpenWs>,
    waiters: Waiters,
    next_id: AtomicU64,
    timeout: Duration,
    /// `aibot_respond_msg` frames the emulator received so far.
    pub frames: Arc<AtomicU64>,
    /// Final frames that matched no waiting message (a second answer, or one after its timeout).
    pub unmatched: Arc<AtomicU64>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for AibotDriver {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The emulator, patient enough for the watcher to wait for a year.
pub async fn emulator() -> OpenWs {
    OpenWs::builder()
        .bot(BOT_ID, SECRET)
        .patience(Duration::from_secs(365 * 24 * 3600))
        .start()
        .await
}

impl AibotDriver {
    /// A driver pushing through `emu` (the gateway already subscribed); starts the watcher.
    pub fn new(emu: Arc<OpenWs>, timeout: Duration) -> Self {
        let waiters: Waiters = Arc::default();
        let frames = Arc::new(AtomicU64::new(0));
        let unmatched = Arc::new(AtomicU64::new(0));
        let watcher = tokio::spawn(watch(
            emu.clone(),
            waiters.clone(),
            frames.clone(),
            unmatched.clone(),
        ));
        Self {
            emu,
            waiters,
            next_id: AtomicU64::new(1),
            timeout,
            frames,
            unmatched,
            watcher,
        }
    }

    /// Pushes one message and waits for its final stream frame.
    pub async fn one(&self) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // The waiter is registered under the lock the push takes too, before the frame can be
        // answered: hold our own map's lock across the push.
        let (started, req_id) = {
            let mut w = lock(&self.waiters);
            let started = Instant::now();
            let pushed = self
                .emu
                .push_text(Chat::dm(&format!("a{id}")), &format!("bench {id}"));
            w.insert(pushed.req_id.clone(), tx);
            (started, pushed.req_id)
        };
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(at)) => Outcome::Replied(at.saturating_duration_since(started)),
            _ => {
                lock(&self.waiters).remove(&req_id);
                Outcome::NoReply
            }
        }
    }
}

impl Load for AibotDriver {
    fn one(&self) -> impl std::future::Future<Output = Outcome> + Send {
        AibotDriver::one(self)
    }
}

/// Wakes the waiter of every final stream frame the emulator records, looking only at the
/// frames new since the last change.
async fn watch(
    emu: Arc<OpenWs>,
    waiters: Waiters,
    frames: Arc<AtomicU64>,
    unmatched: Arc<AtomicU64>,
) {
    let seen = Mutex::new(0usize);
    let pred = |log: &[Received]| {
        let mut seen = lock(&seen);
        for r in &log[(*seen).min(log.len())..] {
            if r.cmd() != "aibot_respond_msg" {
                continue;
            }
            frames.fetch_add(1, Ordering::Relaxed);
            let body = r.body();
            if body["msgtype"] != "stream" || body["stream"]["finish"].as_bool() != Some(true) {
                continue;
            }
            match lock(&waiters).remove(r.req_id()) {
                // A waiter that timed out meanwhile dropped its receiver: nothing to do.
                Some(tx) => drop(tx.send(r.at)),
                None => drop(unmatched.fetch_add(1, Ordering::Relaxed)),
            }
        }
        *seen = log.len();
        // Never done: the driver aborts the watcher when it is dropped.
        false
    };
    emu.wait_for("the end of the benchmark", pred).await;
}
