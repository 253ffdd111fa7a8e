//! The real `gateway` binary under test: a restartable process on its own data dir and ports,
//! the emulated WeCom REST API with one callback app, and a WeCom-like callback client.
//! Shared by the fault suite and the hardening tests; each uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wecom_common::crypto::SignedRequest;
use wecom_emulator::rest::{FakeApp, FakeWeComApi};

/// How long a test waits for the gateway to answer everything it accepted.
pub(crate) const SETTLE: Duration = Duration::from_secs(90);

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The emulated WeCom side: the REST API and one app whose callbacks go to `port`.
pub(crate) struct Wecom {
    pub(crate) emu: FakeWeComApi,
    pub(crate) app: FakeApp,
    pub(crate) port: u16,
}

impl Wecom {
    pub(crate) async fn start() -> Self {
        let emu = FakeWeComApi::start().await;
        let app = emu.app("wwFaults", 1000002);
        let port = free_port();
        app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));
        Self { emu, app, port }
    }

    pub(crate) fn callback_url(&self, signed: &SignedRequest) -> String {
        format!(
            "http://127.0.0.1:{}/wecom/callback?{}",
            self.port, signed.query
        )
    }

    /// A signed text callback from `user`, with message id `id`.
    pub(crate) fn text(&self, user: &str, text: &str, id: u64) -> SignedRequest {
        self.app.sign_post(&self.app.text_xml(user, text, id))
    }
}

/// Settings of one gateway under test.
pub(crate) struct Setup {
    /// Milliseconds between the echo agent's deltas (a slow agent).
    pub(crate) agent_delay_ms: u64,
    /// Seconds between outbox retries.
    pub(crate) outbox_retry_secs: u64,
}

impl Setup {
    /// A fast agent and an outbox retried every second.
    pub(crate) const FAST: Setup = Setup {
        agent_delay_ms: 0,
        outbox_retry_secs: 1,
    };
}

/// The real binary, restartable on the same data dir and ports.
pub(crate) struct Gateway {
    pub(crate) child: Option<Child>,
    pub(crate) config: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) listen: String,
    pub(crate) starts: u32,
}

impl Gateway {
    /// Writes the config (callback app of `wecom`, echo agent, outbox retried every second)
    /// and starts the gateway; returns once `/health` answers.
    pub(crate) async fn start(dir: &Path, wecom: &Wecom, setup: &Setup) -> Self {
        let mut extra = wecom.app.config();
        extra["host"] = "127.0.0.1".into();
        extra["port"] = wecom.port.into();
        extra["api_base_url"] = wecom.emu.base_url().into();
        extra["retry_backoff_ms"] = 100.into();
        let platforms = format!("platforms:\n  wecom_callback:\n    extra: {extra}\n");
        Self::launch(dir, &platforms, setup).await
    }

    /// Writes a config with `platforms` (a YAML `platforms:` section), the echo agent and an
    /// outbox retried per `setup`, and starts the gateway.
    pub(crate) async fn launch(dir: &Path, platforms: &str, setup: &Setup) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let data = dir.join("data");
        let yaml = format!(
            "gateway:\n  data_dir: {}\n  listen: {listen}\n  outbox_retry_secs: {}\n\
             agent:\n  backend: echo\n  delay_ms: {}\n{platforms}",
            data.display(),
            setup.outbox_retry_secs,
            setup.agent_delay_ms
        );
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut gw = Self {
            child: None,
            config,
            data,
            log: dir.join("gateway.log"),
            listen,
            starts: 0,
        };
        gw.spawn().await;
        gw
    }

    pub(crate) async fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["run", "-c"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.ready().await;
    }

    /// Waits until `/health` answers 200 (every instance up).
    pub(crate) async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/health", self.listen);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("gateway exited with {status}: {}", self.log_text());
            }
            assert!(Instant::now() < deadline, "not ready: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `gateway_messages_out_total` of the running process (deliveries it recorded as done).
    pub(crate) async fn delivered(&self) -> u64 {
        self.metric("gateway_messages_out_total").await
    }

    /// A counter of the running process, summed over its labels (0 when unreachable).
    pub(crate) async fn metric(&self, name: &str) -> u64 {
        let Ok(r) = reqwest::get(format!("http://{}/metrics", self.listen)).await else {
            return 0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// `/health` of the instance.
    pub(crate) async fn health(&self) -> Value {
        let v: Value = reqwest::get(format!("http://{}/health", self.listen))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["instances"]
            .as_array()
            .and_then(|a| a.first().cloned())
            .unwrap_or(v)
    }

    /// Runs `gateway <args> -c <config>` to the end; returns (success, stdout + stderr).
    pub(crate) fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// A summary of the journals in the database (for failure messages).
    pub(crate) fn journals(&self) -> String {
        let Ok(db) = rusqlite::Connection::open(self.data.join("gateway.db")) else {
            return "no database".into();
        };
        let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap_or(-1) };
        format!(
            "inbox pending {}, inbox done {}, intake pending {}, outbox {} ({} sending)",
            count("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL"),
            count("SELECT COUNT(*) FROM inbox WHERE done_at IS NOT NULL"),
            count("SELECT COUNT(*) FROM intake WHERE done_at IS NULL"),
            count("SELECT COUNT(*) FROM outbox"),
            count("SELECT COUNT(*) FROM outbox WHERE state = 'sending'"),
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's WARN and ERROR lines (at most the last 40): what a failed count assertion
    /// shows, so a loss in CI can be explained without the data dir.
    pub(crate) fn warnings(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM and wait for the exit.
    pub(crate) async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One POST attempt with a client-side time limit; the status, or `None` when the client gave
/// up or could not connect.
pub(crate) async fn post_once(url: &str, body: &str, timeout: Duration) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let r = client
        .post(url)
        .header("content-type", "text/xml")
        .body(body.to_owned())
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let text = r.text().await.ok()?;
    (status != 200 || text == "success").then_some(status)
}

/// Delivers a callback the way WeCom does: retries (same signed request) until it is answered
/// `success`, with a 5-second client timeout per attempt. Returns the attempts it took.
pub(crate) async fn deliver(url: &str, signed: &SignedRequest) -> u32 {
    let deadline = Instant::now() + SETTLE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        if post_once(url, &signed.body, Duration::from_secs(5)).await == Some(200) {
            return attempts;
        }
        assert!(Instant::now() < deadline, "callback never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
