//! Test harness: a `WeComCallbackAdapter` connected to a recording inbound sink and a store,
//! listening on 127.0.0.1:0, with the emulator as its REST API.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::health::HealthReporter;
use gateway_core::{
    AdapterContext, AdapterError, Admission, InboundMessage, InboundSink, PlatformAdapter,
    StateStore,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wecom_callback::{CallbackConfig, WeComCallbackAdapter};

/// Records every submitted message and answers with a chosen admission.
#[derive(Default)]
pub struct RecordingSink {
    pub messages: Mutex<Vec<InboundMessage>>,
    pub admission: Mutex<Option<Admission>>,
    /// While a test holds the write side, `submit` waits (a router that is stuck).
    pub hold: tokio::sync::RwLock<()>,
    /// While set, `submit` fails with a retryable store error (a router whose store is busy).
    pub refuse: std::sync::atomic::AtomicBool,
    /// Messages refused that way.
    pub refused: Mutex<Vec<InboundMessage>>,
    changed: Notify,
}

#[async_trait]
impl InboundSink for RecordingSink {
    async fn submit(&self, message: InboundMessage) -> Result<Admission, AdapterError> {
        let _held = self.hold.read().await;
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused.lock().unwrap().push(message);
            self.changed.notify_waiters();
            return Err(AdapterError::Store(gateway_core::StoreError::Busy(
                "test".into(),
            )));
        }
        self.messages.lock().unwrap().push(message);
        self.changed.notify_waiters();
        Ok(self
            .admission
            .lock()
            .unwrap()
            .unwrap_or(Admission::Accepted))
    }
}

impl RecordingSink {
    pub fn all(&self) -> Vec<InboundMessage> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for at least `n` messages (10 s at most).
    pub async fn wait(&self, n: usize) -> Vec<InboundMessage> {
        self.wait_in(&self.messages, n).await
    }

    /// Waits for at least `n` refused submissions.
    pub async fn wait_refused(&self, n: usize) -> Vec<InboundMessage> {
        self.wait_in(&self.refused, n).await
    }

    async fn wait_in(&self, list: &Mutex<Vec<InboundMessage>>, n: usize) -> Vec<InboundMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let all = list.lock().unwrap().clone();
            if all.len() >= n {
                return all;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {n} message(s); got {}", all.len());
            }
        }
    }
}

pub struct Harness {
    pub adapter: Arc<WeComCallbackAdapter>,
    pub addr: SocketAddr,
    pub sink: Arc<RecordingSink>,
    pub store: Arc<dyn StateStore>,
    pub health: HealthReporter,
}

impl Harness {
    /// Builds and connects an adapter for `extra` (host/port default to 127.0.0.1:0).
    pub async fn start(mut extra: Value, store: Arc<dyn StateStore>, data_dir: &Path) -> Self {
        if extra.get("host").is_none() {
            extra["host"] = "127.0.0.1".into();
        }
        if extra.get("port").is_none() {
            extra["port"] = 0.into();
        }
        let cfg = CallbackConfig::from_extra(extra).unwrap_or_else(|e| panic!("config: {e:?}"));
        let adapter = Arc::new(WeComCallbackAdapter::new("cb", cfg).unwrap());
        let sink = Arc::new(RecordingSink::default());
        let health = HealthReporter::new("cb", "wecom_callback");
        let ctx = AdapterContext {
            instance: "cb".into(),
            data_dir: data_dir.join("cb"),
            inbound: sink.clone(),
            store: store.clone(),
            health: health.clone(),
            shutdown: CancellationToken::new(),
        };
        adapter.connect(ctx).await.unwrap();
        let addr = adapter.local_addr().unwrap();
        Self {
            adapter,
            addr,
            sink,
            store,
            health,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.adapter.disconnect().await;
    }
}
