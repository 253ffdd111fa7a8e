//! Shared test support: the loopback platform and an in-process gateway runner.
#![allow(dead_code)]

pub mod loopback;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use gateway_core::clock::TokioClock;
use gateway_core::StateStore;
use tokio_util::sync::CancellationToken;

/// The registry used by router tests: the loopback platform only.
pub fn registry() -> router::Registry {
    router::Registry::new().register(Arc::new(loopback::LoopbackFactory))
}

/// A gateway running in this process.
pub struct TestGateway {
    /// Address of `/health` and `/metrics`.
    pub http: SocketAddr,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    /// Finishes when the gateway has drained and stopped.
    pub handle: tokio::task::JoinHandle<Result<(), router::FatalError>>,
}

impl TestGateway {
    /// Starts a gateway from `yaml` (written to `dir/config.yaml`), state in `dir/data`, with
    /// the loopback platform registered.
    pub async fn start(dir: &Path, yaml: &str) -> Self {
        Self::start_with(dir, yaml, &registry()).await
    }

    /// Like [`TestGateway::start`] with another adapter registry (e.g. the WeCom factories).
    pub async fn start_with(dir: &Path, yaml: &str, registry: &router::Registry) -> Self {
        let path = dir.join("config.yaml");
        let yaml = format!(
            "gateway:\n  data_dir: {}\n{yaml}",
            dir.join("data").display()
        );
        std::fs::write(&path, yaml).unwrap();
        let (cfg, plans) = router::load(Some(&path), registry, &|_| None)
            .unwrap_or_else(|e| panic!("config: {e}"));
        std::fs::create_dir_all(&cfg.gateway.data_dir).unwrap();
        let store: Arc<dyn StateStore> = Arc::new(
            store_sqlite::SqliteStore::open(&cfg.gateway.data_dir.join("gateway.db")).unwrap(),
        );
        let agent = agent_bridge::build_backend(&cfg.agent).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let gw = router::Gateway::new(cfg, plans, agent, store, TokioClock::shared());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(gw.run(Some(listener), shutdown.clone()));
        Self {
            http,
            shutdown,
            handle,
        }
    }

    /// Shuts down and waits for the drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    /// GET a path on the health listener; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}
