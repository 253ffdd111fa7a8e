//! Throughput and per-message cost of the whole pipeline: inbound submit (policy, journal in the
//! SQLite inbox with group commit, scheduling), the echo agent, delivery to a reply sink, history
//! and inbox bookkeeping. Run with `cargo bench -p router`.
//!
//! The platform side is a null adapter that counts finished replies, so the numbers are the
//! gateway's own cost, not a network's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway_core::adapter::{AdapterContext, Capabilities, InstanceSpec};
use gateway_core::clock::TokioClock;
use gateway_core::policy::AccessConfig;
use gateway_core::{
    AdapterError, ChatAddress, Content, InboundMessage, OutboundMessage, PlatformAdapter,
    ReplySink, Sender, Target, TurnOutcome,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct NullAdapter {
    finished: Arc<AtomicUsize>,
    notify: Arc<Notify>,
    ctx: std::sync::OnceLock<AdapterContext>,
}

struct NullSink {
    finished: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

#[async_trait]
impl ReplySink for NullSink {
    async fn start(&mut self) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn update(&mut self, _text: &str) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn finish(self: Box<Self>, text: &str, _o: TurnOutcome) -> Result<(), AdapterError> {
        // Count answers only: "queued" notices also finish a sink.
        if text.starts_with("echo:") {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
        self.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl PlatformAdapter for NullAdapter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn connect(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let _ = self.ctx.set(ctx);
        Ok(())
    }
    async fn disconnect(&self) {}
    async fn send(&self, _t: &Target, _m: &OutboundMessage) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn reply(&self, _i: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError> {
        Ok(Box::new(NullSink {
            finished: self.finished.clone(),
            notify: self.notify.clone(),
        }))
    }
}

fn message(seq: usize, users: usize) -> InboundMessage {
    let user = format!("user{}", seq % users);
    InboundMessage {
        instance: "bench".into(),
        message_id: format!("m{seq}"),
        sender: Sender::new(user.clone()),
        chat: ChatAddress::dm(user),
        content: Content::Text {
            text: "how do I reset my VPN password?".into(),
        },
        quote: None,
        received_at: chrono::Utc::now(),
        reply_context: serde_json::Value::Null,
    }
}

/// Runs `n` messages from `users` senders through a fresh gateway and returns the wall time from
/// the first submit to the last finished reply.
async fn run_batch(n: usize, users: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store_sqlite::SqliteStore::open(&dir.path().join("g.db")).unwrap());
    let adapter = Arc::new(NullAdapter::default());
    let plan = router::InstancePlan {
        spec: InstanceSpec {
            name: "bench".into(),
            kind: "null".into(),
            home_channel: None,
            data_dir: dir.path().into(),
        },
        access: AccessConfig::default(),
        adapter: adapter.clone(),
    };
    let mut cfg = router::GatewayConfig::default();
    cfg.gateway.data_dir = dir.path().into();
    cfg.sessions.max_queue = n;
    let agent = agent_bridge::build_backend(&cfg.agent).unwrap();
    let gw = router::Gateway::new(cfg, vec![plan], agent, store, TokioClock::shared());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(gw.run(None, shutdown.clone()));
    let ctx = loop {
        if let Some(c) = adapter.ctx.get() {
            break c.clone();
        }
        tokio::task::yield_now().await;
    };
    let start = Instant::now();
    // Senders submit concurrently, as many chats do; each submit returns after the journal write.
    let mut tasks = Vec::new();
    for chunk in 0..users {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            for seq in (chunk..n).step_by(users) {
                ctx.submit(message(seq, users)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    loop {
        let notified = adapter.notify.notified();
        if adapter.finished.load(Ordering::SeqCst) >= n {
            break;
        }
        notified.await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    elapsed
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for &(n, users) in &[(1000usize, 100usize), (1000, 1000)] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n}_messages_{users}_users"), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_batch(n, users).await;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
