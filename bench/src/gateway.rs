//! The gateway under load: the real `gateway` binary as a child process, configured with one
//! WeCom callback app of the emulator (or one AI Bot on the openws emulator) and the echo
//! agent, its cold start (spawn to `/health` 200), and its CPU time and RSS read from `/proc`
//! (proc(5): `/proc/<pid>/stat` fields 14 and 15, `/proc/<pid>/status` `VmHWM` and `VmRSS`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use wecom_emulator::rest::{FakeApp, FakeWeComApi};

/// How long the gateway may take to answer `/health` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway; dropping it kills the process.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// Its stderr (the log), for the error report when something goes wrong.
    pub log: PathBuf,
    /// From spawning the process to the first `/health` 200 (polled every 2 ms).
    pub cold_start: Duration,
}

impl Gateway {
    /// Writes a config into `dir` (the callback app `app` on `port`, the emulator's REST API,
    /// the echo agent without delay) and starts `binary` on it, pinned to `pin` when given.
    /// Returns once `/health` answers 200.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        emu: &FakeWeComApi,
        app: &FakeApp,
        port: u16,
        pin: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut extra = app.config();
        extra["host"] = "127.0.0.1".into();
        extra["port"] = port.into();
        extra["api_base_url"] = emu.base_url().into();
        Self::start_with(
            binary,
            dir,
            &format!("platforms:\n  wecom_callback:\n    extra: {extra}\n"),
            pin,
        )
        .await
    }

    /// Like [`Gateway::start`] with a `wecom` (AI Bot) instance for `bot_id`/`secret` on the
    /// openws emulator at `url`: no text batching, streams flushed every `stream_interval_ms`.
    pub async fn start_aibot(
        binary: &Path,
        dir: &Path,
        (bot_id, secret, url): (&str, &str, &str),
        stream_interval_ms: u64,
        pin: Option<&str>,
    ) -> anyhow::Result<Self> {
        let extra = serde_json::json!({
            "bot_id": bot_id,
            "secret": secret,
            "websocket_url": url,
            "text_batch_delay_ms": 0,
            "stream_interval_ms": stream_interval_ms,
        });
        Self::start_with(
            binary,
            dir,
            &format!("platforms:\n  wecom:\n    extra: {extra}\n"),
            pin,
        )
        .await
    }

    /// Writes a config into `dir` (data dir, a free listen port, the echo agent without delay,
    /// and `platforms`, a YAML `platforms:` block) and starts `binary` on it, pinned to `pin`
    /// when given. Returns once `/health` answers 200, with the time that took.
    async fn start_with(
        binary: &Path,
        dir: &Path,
        platforms: &str,
        pin: Option<&str>,
    ) -> anyhow::Result<Self> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let yaml = format!(
            "gateway:\n  data_dir: {}\n  listen: {listen}\n\
             agent:\n  backend: echo\n{platforms}",
            dir.join("data").display(),
        );
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).context("writing the gateway config")?;
        let log = dir.join("gateway.log");
        let stderr = std::fs::File::create(&log).context("creating the gateway log")?;

        // `taskset -c CPU gateway ...` execs the gateway in place: the child's pid is the
        // gateway's, so `/proc/<pid>` below reads the right process.
        let mut cmd = match pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let spawned = Instant::now();
        let child = cmd
            .args(["run", "-c"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut gw = Self {
            child,
            log,
            cold_start: Duration::ZERO,
        };
        gw.ready(&format!("http://{listen}/health")).await?;
        gw.cold_start = spawned.elapsed();
        Ok(gw)
    }

    /// Polls `/health` until it answers 200 (readiness, not part of any measurement).
    async fn ready(&mut self, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(url).send().await {
                if r.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the gateway exited with {status}:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway was not ready in {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The process id (for `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the gateway's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released; the gateway binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The gateway binary: `--gateway PATH`, else `gateway` next to this binary (the same target
/// directory and profile).
pub fn locate(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("gateway"),
    };
    if !path.is_file() {
        bail!(
            "no gateway binary at {} (build it with `cargo build --release -p gateway -p \
             gateway-bench`, or `cargo build -p gateway` for a debug run, or pass --gateway PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `getconf CLK_TCK` (the workspace
/// forbids the `unsafe` a `sysconf` call needs), else the usual 100 with a warning.
pub fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    match out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    }) {
        Some(t) if t > 0.0 => t,
        _ => {
            eprintln!("warning: `getconf CLK_TCK` failed; assuming 100 ticks per second");
            100.0
        }
    }
}

/// User + system CPU time of `pid` and all its threads so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()?)
    };
    Ok(field(11)? + field(12)?)
}

/// Peak resident set size of `pid` so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set size of `pid` (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/<pid>/status"))
}
