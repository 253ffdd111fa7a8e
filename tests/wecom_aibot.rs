//! End-to-end tests of the `wecom` adapter (AI Bot long connection) against the openws emulator,
//! through the real router, the echo agent and a real store (issue 4 acceptance). The harness is
//! here; the tests are grouped by topic in `wecom_aibot/`.
//!
//! Tests that need minutes of protocol time (backoff, pings, rate-limit waits, ACK timeouts)
//! run under paused tokio time with an in-memory store, so they finish in milliseconds.

mod support;

#[path = "wecom_aibot/connection.rs"]
mod connection;
#[path = "wecom_aibot/inbound.rs"]
mod inbound;
#[path = "wecom_aibot/journal.rs"]
mod journal;
#[path = "wecom_aibot/media_out.rs"]
mod media_out;
#[path = "wecom_aibot/paused.rs"]
mod paused;
#[path = "wecom_aibot/policy.rs"]
mod policy;
#[path = "wecom_aibot/stream.rs"]
mod stream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::clock::TokioClock;
use gateway_core::memory_store::MemoryStore;
use gateway_core::StateStore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::TestGateway;
use tokio_util::sync::CancellationToken;
use wecom_emulator::openws::{InMemoryDialer, OpenWs};

/// The registry with the `wecom` factory.
pub(crate) fn registry() -> router::Registry {
    router::Registry::new().register(Arc::new(wecom::WeComFactory))
}

/// One `wecom` instance with test-friendly timings plus `extra` lines (six-space indent).
pub(crate) fn instance(name: &str, url: &str, bot: &str, secret: &str, extra: &str) -> String {
    let mut out = format!(
        "  {name}:\n    type: wecom\n    extra:\n      bot_id: {bot}\n      secret: {secret}\n      \
         websocket_url: \"{url}\"\n"
    );
    // Defaults that `extra` may override.
    for (key, value) in [
        ("allow_private_media_hosts", "true"),
        ("text_batch_delay_ms", "0"),
        ("stream_interval_ms", "20"),
        ("reconnect_backoff_secs", "[1]"),
    ] {
        if !extra.contains(&format!("{key}:")) {
            out.push_str(&format!("      {key}: {value}\n"));
        }
    }
    out.push_str(extra);
    out
}

/// A config: `gateway_lines` continue the `gateway:` section the harness opens (two-space
/// indent), `agent_lines` the echo agent's section, then `platforms`.
pub(crate) fn yaml(gateway_lines: &str, agent_lines: &str, platforms: &str) -> String {
    format!("{gateway_lines}agent:\n  backend: echo\n{agent_lines}platforms:\n{platforms}")
}

/// Starts a gateway with one instance `wecom` on `emu`'s `bot-1` and waits for its subscribe.
pub(crate) async fn start(emu: &OpenWs, dir: &Path, agent: &str, extra: &str) -> TestGateway {
    let y = yaml(
        "",
        agent,
        &instance("wecom", &emu.url(), "bot-1", "secret-1", extra),
    );
    let gw = TestGateway::start_with(dir, &y, &registry()).await;
    emu.wait_subscribed(1).await;
    gw
}

/// The `/health` record of instance `name`.
pub(crate) fn health_of(body: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap();
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == name)
        .cloned()
        .unwrap()
}

/// Polls `GET path` on `http` until `pred` holds on the body (30 s at most).
pub(crate) async fn poll_http(
    http: SocketAddr,
    path: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = reqwest::get(format!("http://{http}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if pred(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /admin/send` with the token the running gateway published in `data_dir`.
pub(crate) async fn admin_send(http: SocketAddr, data_dir: &Path, body: Value) -> (u16, Value) {
    let info = router::admin::AdminInfo::read(data_dir).expect("admin file");
    let r = reqwest::Client::new()
        .post(format!("http://{http}/admin/send"))
        .bearer_auth(&info.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The first 16 hex characters of the SHA-256 of `bytes` (what the echo agent prints).
pub(crate) fn sha16(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_owned()
}

/// Connects the adapter to the emulator over in-memory streams (for paused time).
#[derive(Debug)]
pub(crate) struct MemConnector(pub InMemoryDialer);

impl wecom::Connector for MemConnector {
    fn connect<'a>(
        &'a self,
        url: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(wecom::WsSink, wecom::WsStream), wecom::DialError>>
    {
        Box::pin(async move { wecom::websocket_over(url, self.0.connect()).await })
    }
}

/// The registry for paused-time tests: the `wecom` factory with the in-memory transport.
pub(crate) fn paused_registry(emu: &OpenWs) -> router::Registry {
    let connector = Arc::new(MemConnector(emu.in_memory()));
    router::Registry::new().register(Arc::new(wecom::WeComFactory::with_connector(connector)))
}

/// A gateway for tests under paused time: an in-memory store (SQLite runs on its own thread)
/// and an in-memory transport to the emulator (kernel sockets would let the auto-advancing clock
/// fire timers while bytes are in flight). `/health` is still served over TCP, so tests read it
/// only where no timer can change the answer.
#[derive(Debug)]
pub(crate) struct PausedGateway {
    /// `/health` and `/metrics`.
    pub http: SocketAddr,
    /// The store, to inspect the outbox.
    pub store: Arc<MemoryStore>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), router::FatalError>>,
}

impl PausedGateway {
    /// Starts from `yaml` (as [`yaml`] builds it), data in `dir`, connected to `emu`.
    pub async fn start(dir: &Path, yaml: &str, emu: &OpenWs) -> Self {
        let path = dir.join("config.yaml");
        let full = format!(
            "gateway:\n  data_dir: {}\n{yaml}",
            dir.join("data").display()
        );
        std::fs::write(&path, full).unwrap();
        let (cfg, plans) = router::load(Some(&path), &paused_registry(emu), &|_| None)
            .unwrap_or_else(|e| panic!("config: {e}"));
        std::fs::create_dir_all(&cfg.gateway.data_dir).unwrap();
        let store = Arc::new(MemoryStore::new());
        let agent = agent_bridge::build_backend(&cfg.agent).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let dyn_store: Arc<dyn StateStore> = store.clone();
        let gw = router::Gateway::new(cfg, plans, agent, dyn_store, TokioClock::shared());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(gw.run(Some(listener), shutdown.clone()));
        Self {
            http,
            store,
            shutdown,
            handle,
        }
    }

    /// The health record of `name`.
    pub async fn health(&self, name: &str) -> Value {
        let body = reqwest::get(format!("http://{}/health", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        health_of(&body, name)
    }

    /// Shuts down and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
