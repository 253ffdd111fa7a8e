//! `gateway sandbox`: try the gateway with no WeCom account and no network. It starts the WeCom
//! emulator on loopback (the AI Bot long-connection server and the self-built app's REST API with
//! its callback signer), a gateway wired to it with both adapters and the configured agent (echo by
//! default), and a terminal chat in which you play a WeCom user.
//!
//! Everything goes over the real protocols: your lines become `aibot_msg_callback` frames or
//! signed, encrypted callback POSTs; the bot's answers are read back from what the emulator
//! received (stream frames, `message/send` calls).

mod play;
mod screen;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use gateway_core::clock::TokioClock;
use tokio_util::sync::CancellationToken;
use wecom_emulator::openws::OpenWs;
use wecom_emulator::rest::{FakeApp, FakeWeComApi};

pub use play::Session;

/// Arguments of `gateway sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Config file whose `agent:` section to use (default: the echo agent; platforms in the file
    /// are ignored — the sandbox wires its own).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Play a conversation from a file and print the transcript instead of chatting.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Keep the sandbox's state (database, media) here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The running emulator and gateway.
pub struct Sandbox {
    /// The AI Bot server.
    pub openws: OpenWs,
    /// The REST API.
    pub rest: FakeWeComApi,
    /// WeCom's side of the self-built app.
    pub app: FakeApp,
    shutdown: CancellationToken,
    gateway: tokio::task::JoinHandle<Result<(), router::FatalError>>,
    /// The gateway's `/health` URL (turns running and queued: "is it answering?").
    health_url: String,
    http: reqwest::Client,
    _tmp: Option<tempfile_dir::TempDir>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("openws", &self.openws.url())
            .finish_non_exhaustive()
    }
}

/// The bot the emulator accepts.
const BOT_ID: &str = "sandbox-bot";
/// Its secret (a sandbox value, not a credential).
const BOT_SECRET: &str = "sandbox-secret";
/// The self-built app's corp.
const CORP_ID: &str = "wwsandbox";
/// The self-built app's agent id.
const AGENT_ID: i64 = 1_000_002;

impl Sandbox {
    /// Starts the emulator and a gateway wired to it.
    pub async fn start(agent_from: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let openws = OpenWs::builder()
            .bot(BOT_ID, BOT_SECRET)
            .patience(std::time::Duration::from_secs(24 * 3600))
            .start()
            .await;
        let rest = FakeWeComApi::start().await;
        let app = rest.app(CORP_ID, AGENT_ID);
        let port = free_port()?;
        app.set_callback_url(format!("http://127.0.0.1:{port}/wecom/callback"));

        let (tmp, dir) = match data_dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile_dir::TempDir::new()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let agent = match agent_from {
            Some(path) => agent_section(path)?,
            // Echo, paced so the streaming bubble is visible.
            None => serde_json::json!({"backend": "echo", "delay_ms": 400}),
        };
        let mut callback = app.config();
        callback["host"] = "127.0.0.1".into();
        callback["port"] = port.into();
        callback["api_base_url"] = rest.base_url().into();
        let config = serde_json::json!({
            // A short drain: leaving the sandbox stops its answers rather than waiting them out.
            "gateway": {"data_dir": dir.join("data"), "listen": "127.0.0.1:0", "drain_timeout_secs": 3},
            "agent": agent,
            "platforms": {
                "wecom": {"extra": {
                    "bot_id": BOT_ID,
                    "secret": BOT_SECRET,
                    "websocket_url": openws.url(),
                    "allow_private_media_hosts": true,
                }},
                "wecom_callback": {"extra": callback},
            }
        });
        // JSON is YAML: the sandbox config goes through the same loader as a user's file.
        let path = dir.join("sandbox-config.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        let (cfg, plans) = router::load(Some(&path), &crate::registry(), &|_| None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let agent = super::build_agent(&cfg.agent)?;
        let store = super::open_store(&cfg.gateway.data_dir)?;
        let gw = router::Gateway::new(cfg, plans, agent, store, TokioClock::shared());
        let shutdown = CancellationToken::new();
        // The health listener tells the chat whether a turn is running or queued.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("no free loopback port")?;
        let health_url = format!("http://{}/health", listener.local_addr()?);
        let gateway = tokio::spawn(gw.run(Some(listener), shutdown.clone()));
        openws.wait_subscribed(1).await;
        // Loopback only: a proxy from the environment must not see these requests.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Self {
            openws,
            rest,
            app,
            shutdown,
            gateway,
            health_url,
            http,
            _tmp: tmp,
        })
    }

    /// Turns running plus messages queued in the gateway; `None` when `/health` cannot be read.
    pub async fn load(&self) -> Option<u64> {
        let body: serde_json::Value = self
            .http
            .get(&self.health_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(body["turns_running"].as_u64()? + body["messages_queued"].as_u64()?)
    }

    /// Stops the gateway (draining briefly) and the emulator.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.gateway.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(fatal)) => Err(fatal.into()),
            Err(e) => Err(anyhow::anyhow!("the sandbox gateway failed: {e}")),
        }
    }
}

/// Reads only the `agent:` section of a config file (the sandbox brings its own platforms).
fn agent_section(path: &Path) -> anyhow::Result<serde_json::Value> {
    let tree = router::config::load_tree(Some(path)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tree
        .get("agent")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"backend": "echo"})))
}

/// A port that was free a moment ago; the callback server binds it.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Runs `gateway sandbox`.
pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let sandbox = Sandbox::start(args.config.as_deref(), args.data_dir.as_deref()).await?;
    let sandbox = Arc::new(sandbox);
    let result = match &args.script {
        Some(script) => match std::fs::read_to_string(script) {
            Ok(text) => {
                let base = script.parent().filter(|p| !p.as_os_str().is_empty());
                Session::plain(sandbox.clone())
                    .play_script(&text, base)
                    .await
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", script.display())),
        },
        None => Session::interactive(sandbox.clone()).await,
    };
    // Every session handle is gone once the chat returns; the emulator stops with the last.
    let stopped = match Arc::try_unwrap(sandbox) {
        Ok(sandbox) => sandbox.stop().await,
        Err(_) => Ok(()),
    };
    result?;
    stopped?;
    Ok(ExitCode::SUCCESS)
}

/// A temporary directory removed on drop (no extra dependency for one use).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    /// The directory; removed with its contents when dropped.
    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates `gateway-sandbox-<random>` in the system temp dir.
        pub fn new() -> std::io::Result<Self> {
            let suffix: u64 = rand::random();
            let path = std::env::temp_dir().join(format!("gateway-sandbox-{suffix:016x}"));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
