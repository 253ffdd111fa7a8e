//! `gateway-bench`: a load benchmark of the WeCom callback path (issue 14). It starts the
//! emulator's REST API and the real `gateway` binary (echo agent), drives signed callbacks over
//! loopback at the chosen concurrency levels or a fixed rate, and prints per level replies/s,
//! p50/p90/p99 end-to-end latency (POST until the emulator recorded the reply), the gateway's CPU
//! per message and its peak RSS.
//!
//! `cargo build --release -p gateway -p gateway-bench && target/release/gateway-bench`

mod gateway;
mod load;
mod report;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use wecom_emulator::rest::FakeWeComApi;

use crate::gateway::Gateway;
use crate::load::Driver;
use crate::report::Row;

/// Load benchmark of the gateway's WeCom callback path.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
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
    /// CI check: 20 messages at concurrency 4, no warm-up; fails unless all are answered.
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

/// Runs every level against one gateway; `Ok(false)` when some message went unanswered.
async fn run(args: &Args, pin_gateway: Option<&str>) -> anyhow::Result<bool> {
    let binary = gateway::locate(args.gateway.clone())?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let emu = Arc::new(FakeWeComApi::start().await);
    let app = emu.app("wwBench", 1000002);
    let port = gateway::free_port()?;
    let gw = Gateway::start(&binary, dir.path(), &emu, &app, port, pin_gateway).await?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let driver = Arc::new(Driver::new(emu.clone(), app, port, timeout));

    if args.warmup > 0 {
        let warm = driver.closed_loop(args.warmup, 1).await;
        let row = Row::new("warmup".into(), &warm, Duration::from_secs(1), 0.0, 0);
        anyhow::ensure!(
            row.complete(),
            "warm-up: {} of {} messages unanswered:\n{}",
            row.messages - row.replied,
            row.messages,
            gw.log_tail()
        );
    }

    let ticks = gateway::clock_ticks();
    let levels: Vec<Level> = match args.rate {
        Some(r) => vec![Level::Rate(r)],
        None => args.concurrency.iter().map(|&c| Level::Closed(c)).collect(),
    };
    let mut rows = Vec::new();
    for level in levels {
        let name = level.name();
        eprintln!("{name}: {} messages...", args.messages);
        let cpu_before = gateway::cpu_ticks(gw.pid())?;
        let started = Instant::now();
        let outcomes = match level {
            Level::Closed(c) => driver.closed_loop(args.messages, c).await,
            Level::Rate(r) => driver.fixed_rate(args.messages, r).await,
        };
        let wall = started.elapsed();
        let cpu_s = (gateway::cpu_ticks(gw.pid())? - cpu_before) as f64 / ticks;
        let rss = gateway::peak_rss_kib(gw.pid())?;
        rows.push(Row::new(name, &outcomes, wall, cpu_s, rss));
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        report::print_table(&rows);
    }
    let unmatched = driver.unmatched.load(std::sync::atomic::Ordering::Relaxed);
    if unmatched > 0 {
        eprintln!("warning: {unmatched} replies matched no waiting message (late or repeated)");
    }
    let complete = rows.iter().all(Row::complete);
    if !complete {
        for r in rows.iter().filter(|r| !r.complete()) {
            eprintln!(
                "{}: {} refused, {} without a reply in {}s",
                r.level, r.refused, r.no_reply, args.timeout_secs
            );
        }
        eprintln!("gateway log (last lines):\n{}", gw.log_tail());
    }
    Ok(complete)
}

/// One load level.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// Closed loop with this many messages in flight.
    Closed(usize),
    /// Open loop at this many messages per second.
    Rate(f64),
}

impl Level {
    fn name(self) -> String {
        match self {
            Level::Closed(c) => format!("c={c}"),
            Level::Rate(r) => format!("rate={r}"),
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
