//! `gateway-bench`: a load benchmark of the WeCom callback path (issue 14). It starts the
//! emulator's REST API and the real `gateway` binary (echo agent), drives signed callbacks over
//! loopback at the chosen concurrency levels or a fixed rate, and prints per level replies/s,
//! p50/p90/p99 end-to-end latency (POST until the emulator recorded the reply), the gateway's CPU
//! per message and its peak RSS. `--path aibot` does the same for the AI Bot path: the openws
//! emulator pushes texts over the gateway's long connection, each timed until the emulator
//! received its final stream frame, with the reply frames per second. `--sessions N` adds a level
//! of N messages from N new senders; every gateway's cold start and idle RSS are reported.
//!
//! `cargo build --release -p gateway -p gateway-bench && target/release/gateway-bench`

mod aibot;
mod gateway;
mod load;
mod report;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use wecom_emulator::rest::FakeWeComApi;

use crate::aibot::AibotDriver;
use crate::gateway::Gateway;
use crate::load::{Driver, Outcome};
use crate::report::Row;

/// Load benchmark of the gateway's WeCom callback and AI Bot paths.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The path to load: WeCom callbacks, or the AI Bot long connection (openws emulator).
    #[arg(long, value_enum, default_value = "callback")]
    path: BenchPath,
    /// AI Bot path: the gateway's `stream_interval_ms` (how often a stream is flushed).
    #[arg(long, default_value_t = 20)]
    stream_interval_ms: u64,
    /// After the levels: one message from each of this many new senders, then the RSS.
    #[arg(long)]
    sessions: Option<usize>,
    /// Closed-loop levels: messages in flight at a time (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Messages per level (each from its own sender).
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Instead of the concurrency levels: one open-loop level at this many messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Unmeasured messages (one at a time) before the first level: token, connections, caches.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Seconds a message may wait for its reply before it counts as unanswered.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// The gateway binary (default: `gateway` next to this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Pin the gateway to this CPU list (`taskset -c`).
    #[arg(long)]
    pin_gateway: Option<String>,
    /// Pin this driver and the emulator to this CPU list (`taskset -a -p -c`).
    #[arg(long)]
    pin_driver: Option<String>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// CI check: both paths, 20 messages at concurrency 4 each, no warm-up; fails unless all
    /// are answered.
    #[arg(long)]
    smoke: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.concurrency = vec![4];
        args.messages = 20;
        args.rate = None;
        args.warmup = 0;
        args.sessions = None;
    }
    if matches!(args.rate, Some(r) if !(r > 0.0 && r.is_finite())) {
        eprintln!("error: --rate must be a positive number");
        return ExitCode::from(2);
    }
    // Before the runtime exists, so that its worker threads inherit the affinity.
    let pin_gateway = args.pin_gateway.clone().filter(|_| taskset_available());
    if let Some(cpu) = &args.pin_driver {
        if taskset_available() {
            pin_self(cpu);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, pin_gateway.as_deref())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which path of the gateway to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPath {
    /// Signed WeCom callbacks over HTTP, replies through the emulator's REST API.
    Callback,
    /// AI Bot messages pushed over the openws long connection, answered by stream frames.
    Aibot,
}

impl BenchPath {
    fn name(self) -> &'static str {
        match self {
            BenchPath::Callback => "callback",
            BenchPath::Aibot => "aibot",
        }
    }
}

/// One gateway process: how long it took to be ready and its RSS before any load.
#[derive(Debug, Serialize)]
struct Startup {
    path: &'static str,
    /// Process spawn to the first `/health` 200, milliseconds.
    cold_start_ms: f64,
    /// `VmRSS` once ready, before any message, MiB.
    idle_rss_mib: f64,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
struct Results {
    gateways: Vec<Startup>,
    rows: Vec<Row>,
}

/// Runs every chosen path; `Ok(false)` when some message went unanswered.
async fn run(args: &Args, pin_gateway: Option<&str>) -> anyhow::Result<bool> {
    let binary = gateway::locate(args.gateway.clone())?;
    let paths = if args.smoke {
        vec![BenchPath::Callback, BenchPath::Aibot]
    } else {
        vec![args.path]
    };
    let mut results = Results {
        gateways: Vec::new(),
        rows: Vec::new(),
    };
    let mut levels: Vec<(Level, usize)> = match args.rate {
        Some(r) => vec![(Level::Rate(r), args.messages)],
        None => args
            .concurrency
            .iter()
            .map(|&c| (Level::Closed(c), args.messages))
            .collect(),
    };
    if let Some(n) = args.sessions {
        // Every message has its own sender: n messages leave n sessions behind.
        levels.push((Level::Sessions(n), n));
    }
    let mut complete = true;
    for path in paths {
        match path {
            BenchPath::Callback => {
                complete &=
                    run_path(args, &binary, path, &levels, pin_gateway, &mut results).await?;
            }
            // The openws emulator keeps every frame and hands out only the whole log, so the
            // watcher's cost grows with it: each level gets a fresh emulator and gateway.
            BenchPath::Aibot => {
                for level in &levels {
                    let one = std::slice::from_ref(level);
                    complete &=
                        run_path(args, &binary, path, one, pin_gateway, &mut results).await?;
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        report::print_table(&results.rows);
        for g in &results.gateways {
            println!(
                "{}: cold start {:.1} ms (spawn to /health 200), idle RSS {:.1} MiB",
                g.path, g.cold_start_ms, g.idle_rss_mib
            );
        }
    }
    Ok(complete)
}

/// Runs `levels` (level, messages) of `path` against one fresh gateway after the warm-up,
/// adding to `results`; `Ok(false)` when some message went unanswered.
async fn run_path(
    args: &Args,
    binary: &std::path::Path,
    path: BenchPath,
    levels: &[(Level, usize)],
    pin_gateway: Option<&str>,
    results: &mut Results,
) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let (gw, driver) = match path {
        BenchPath::Callback => {
            let emu = Arc::new(FakeWeComApi::start().await);
            let app = emu.app("wwBench", 1000002);
            let port = gateway::free_port()?;
            let gw = Gateway::start(binary, dir.path(), &emu, &app, port, pin_gateway).await?;
            let d = Arc::new(Driver::new(emu, app, port, timeout));
            (gw, AnyDriver::Callback(d))
        }
        BenchPath::Aibot => {
            let emu = Arc::new(aibot::emulator().await);
            let url = emu.url();
            let gw = Gateway::start_aibot(
                binary,
                dir.path(),
                (aibot::BOT_ID, aibot::SECRET, &url),
                args.stream_interval_ms,
                pin_gateway,
            )
            .await?;
            tokio::time::timeout(READY, emu.wait_subscribed(1))
                .await
                .with_context(|| format!("the gateway did not subscribe:\n{}", gw.log_tail()))?;
            (
                gw,
                AnyDriver::Aibot(Arc::new(AibotDriver::new(emu, timeout))),
            )
        }
    };
    results.gateways.push(Startup {
        path: path.name(),
        cold_start_ms: gw.cold_start.as_secs_f64() * 1e3,
        idle_rss_mib: gateway::rss_kib(gw.pid())? as f64 / 1024.0,
    });

    if args.warmup > 0 {
        let warm = driver.closed_loop(args.warmup, 1).await;
        let row = Row::new("warmup".into(), &warm, Duration::from_secs(1), 0.0, 0);
        anyhow::ensure!(
            row.complete(),
            "{} warm-up: {} of {} messages unanswered:\n{}",
            path.name(),
            row.messages - row.replied,
            row.messages,
            gw.log_tail()
        );
    }

    let ticks = gateway::clock_ticks();
    let mut rows = Vec::new();
    for &(level, n) in levels {
        let name = level.name();
        eprintln!("{} {name}: {n} messages...", path.name());
        let cpu_before = gateway::cpu_ticks(gw.pid())?;
        let frames_before = driver.frames();
        let started = Instant::now();
        let outcomes = match level {
            Level::Closed(c) => driver.closed_loop(n, c).await,
            Level::Sessions(_) => driver.closed_loop(n, SESSIONS_CONCURRENCY).await,
            Level::Rate(r) => driver.fixed_rate(n, r).await,
        };
        let wall = started.elapsed();
        let cpu_s = (gateway::cpu_ticks(gw.pid())? - cpu_before) as f64 / ticks;
        let rss = gateway::peak_rss_kib(gw.pid())?;
        let mut row = Row::new(name, &outcomes, wall, cpu_s, rss);
        row.path = path.name();
        row.rss_mib = gateway::rss_kib(gw.pid())? as f64 / 1024.0;
        row.frames_per_sec = frames_before.map(|before| {
            (driver.frames().unwrap_or(before) - before) as f64 / wall.as_secs_f64().max(1e-9)
        });
        rows.push(row);
    }

    let unmatched = driver.unmatched();
    if unmatched > 0 {
        eprintln!(
            "warning: {}: {unmatched} replies matched no waiting message (late or repeated)",
            path.name()
        );
    }
    let complete = rows.iter().all(Row::complete);
    if !complete {
        for r in rows.iter().filter(|r| !r.complete()) {
            eprintln!(
                "{} {}: {} refused, {} without a reply in {}s",
                r.path, r.level, r.refused, r.no_reply, args.timeout_secs
            );
        }
        eprintln!("gateway log (last lines):\n{}", gw.log_tail());
    }
    results.rows.extend(rows);
    Ok(complete)
}

/// Messages in flight while the `--sessions` level creates its sessions.
const SESSIONS_CONCURRENCY: usize = 64;

/// How long the gateway may take to subscribe on the openws emulator.
const READY: Duration = Duration::from_secs(30);

/// The driver of the path under test.
enum AnyDriver {
    Callback(Arc<Driver>),
    Aibot(Arc<AibotDriver>),
}

impl AnyDriver {
    async fn closed_loop(&self, n: usize, concurrency: usize) -> Vec<Outcome> {
        match self {
            AnyDriver::Callback(d) => load::closed_loop(d, n, concurrency).await,
            AnyDriver::Aibot(d) => load::closed_loop(d, n, concurrency).await,
        }
    }

    async fn fixed_rate(&self, n: usize, rate: f64) -> Vec<Outcome> {
        match self {
            AnyDriver::Callback(d) => load::fixed_rate(d, n, rate).await,
            AnyDriver::Aibot(d) => load::fixed_rate(d, n, rate).await,
        }
    }

    /// Reply frames the emulator received so far (the AI Bot path only).
    fn frames(&self) -> Option<u64> {
        match self {
            AnyDriver::Callback(_) => None,
            AnyDriver::Aibot(d) => Some(d.frames.load(Ordering::Relaxed)),
        }
    }

    fn unmatched(&self) -> u64 {
        match self {
            AnyDriver::Callback(d) => d.unmatched.load(Ordering::Relaxed),
            AnyDriver::Aibot(d) => d.unmatched.load(Ordering::Relaxed),
        }
    }
}

/// One load level.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// Closed loop with this many messages in flight.
    Closed(usize),
    /// Open loop at this many messages per second.
    Rate(f64),
    /// This many messages from as many senders (closed loop, 64 in flight).
    Sessions(usize),
}

impl Level {
    fn name(self) -> String {
        match self {
            Level::Closed(c) => format!("c={c}"),
            Level::Rate(r) => format!("rate={r}"),
            Level::Sessions(n) => format!("sessions={n}"),
        }
    }
}

/// Whether `taskset` can be run; warns when it cannot (pinning is then skipped).
fn taskset_available() -> bool {
    let ok = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: taskset not found (util-linux); running without CPU pinning");
    }
    ok
}

/// Pins every thread of this process to `cpu` (new threads inherit it).
fn pin_self(cpu: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: `taskset -a -p -c {cpu}` failed; the driver is not pinned");
    }
}
