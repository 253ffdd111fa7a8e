//! The fault suite (DESIGN.md "Delivery guarantee"): the real `gateway` binary, a real SQLite
//! file, the fake WeCom REST API and a WeCom-like client that signs callbacks and retries them
//! the way WeCom does (until it gets `success`). Each test injects one fault that happens in real
//! deployments, then counts every message: **accepted** (acknowledged at least once),
//! **answered** (its echo reached `message/send`), **lost** (accepted, never answered) and
//! **twice** (an answer or a part of one delivered more than once), prints the counts and asserts
//! 0 lost and 0 twice.
//!
//! Run alone with `cargo test --test faults -- --nocapture` to see the counts.

#[path = "faults/aibot.rs"]
mod aibot;
#[path = "support/binary.rs"]
mod binary;
#[path = "faults/callback.rs"]
mod callback;
#[path = "faults/crash.rs"]
mod crash;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use binary::{deliver, post_once, Gateway, Setup, Wecom, SETTLE};
use wecom_emulator::rest::FakeWeComApi;

/// What the fake API received for a set of expected answers.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    answered: usize,
    lost: usize,
    twice: usize,
    /// The first few texts lost or repeated, for the failure message.
    examples: Vec<String>,
}

impl Tally {
    /// Counts each expected text (an echo, or one part of a split echo) in what was sent.
    fn of(emu: &FakeWeComApi, expected: &[String]) -> Self {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let sent = emu.sent_contents();
        for (_, content) in &sent {
            *seen.entry(content.as_str()).or_default() += 1;
        }
        let mut t = Tally {
            accepted: expected.len(),
            ..Tally::default()
        };
        for e in expected {
            let n = seen.get(e.as_str()).copied().unwrap_or(0);
            match n {
                0 => t.lost += 1,
                1 => t.answered += 1,
                _ => {
                    t.answered += 1;
                    t.twice += 1;
                }
            }
            if n != 1 && t.examples.len() < 5 {
                let short: String = e.chars().take(40).collect();
                t.examples.push(format!("{short} ×{n}"));
            }
        }
        t
    }

    fn print(&self, what: &str) {
        report(&format!(
            "{what}: accepted {} answered {} lost {} twice {}",
            self.accepted, self.answered, self.lost, self.twice
        ));
    }
}

/// Prints a line of the fault suite's counts, and appends it to the file `$FAULT_REPORT` names
/// (CI prints that file after the test run, since the test harness keeps passing tests quiet).
fn report(line: &str) {
    println!("fault suite: {line}");
    if let Some(path) = std::env::var_os("FAULT_REPORT") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Waits until every expected text was sent at least once (or [`SETTLE`] passes), then
/// returns the tally.
async fn settle(emu: &FakeWeComApi, expected: &[String]) -> Tally {
    let deadline = Instant::now() + SETTLE;
    loop {
        let t = Tally::of(emu, expected);
        if t.lost == 0 || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
