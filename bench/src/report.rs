//! One row of results per load level: throughput, end-to-end latency percentiles, reply frames
//! per second (AI Bot path), the gateway's CPU per message and its RSS; printed as an aligned
//! table or as JSON.

use std::time::Duration;

use serde::Serialize;

use crate::load::Outcome;

/// The results of one level.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `callback` or `aibot`.
    pub path: &'static str,
    /// `c=16` (closed loop, 16 in flight) or `rate=500` (open loop, per second).
    pub level: String,
    /// Messages sent.
    pub messages: usize,
    /// Messages answered.
    pub replied: usize,
    /// Callbacks refused (non-200) or failed.
    pub refused: usize,
    /// Accepted without a reply within the timeout.
    pub no_reply: usize,
    /// Replies per second over the level's wall time.
    pub replies_per_sec: f64,
    /// End-to-end latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The gateway's user + system CPU over the level, per message sent, seconds.
    pub cpu_s_per_msg: f64,
    /// The gateway's peak RSS so far (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
    /// The gateway's RSS at the end of the level (`VmRSS`), MiB.
    pub rss_mib: f64,
    /// AI Bot path: reply frames (`aibot_respond_msg`) the emulator received per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_per_sec: Option<f64>,
}

impl Row {
    /// Summarises `outcomes` of a level that took `wall`, during which the gateway used
    /// `cpu_s` seconds of CPU and reached `peak_rss_kib`.
    pub fn new(
        level: String,
        outcomes: &[Outcome],
        wall: Duration,
        cpu_s: f64,
        peak_rss_kib: u64,
    ) -> Self {
        let mut lat: Vec<Duration> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Replied(d) => Some(*d),
                _ => None,
            })
            .collect();
        lat.sort_unstable();
        let count = |want: fn(&Outcome) -> bool| outcomes.iter().filter(|o| want(o)).count();
        let n = outcomes.len();
        Self {
            path: "callback",
            level,
            messages: n,
            replied: lat.len(),
            refused: count(|o| matches!(o, Outcome::Refused)),
            no_reply: count(|o| matches!(o, Outcome::NoReply)),
            replies_per_sec: lat.len() as f64 / wall.as_secs_f64().max(1e-9),
            p50_ms: percentile_ms(&lat, 50.0),
            p90_ms: percentile_ms(&lat, 90.0),
            p99_ms: percentile_ms(&lat, 99.0),
            cpu_s_per_msg: cpu_s / n.max(1) as f64,
            peak_rss_mib: peak_rss_kib as f64 / 1024.0,
            rss_mib: 0.0,
            frames_per_sec: None,
        }
    }

    /// Whether every message was answered.
    pub fn complete(&self) -> bool {
        self.replied == self.messages
    }
}

/// The nearest-rank `p`th percentile of sorted `lat`, in milliseconds (0 when empty).
fn percentile_ms(lat: &[Duration], p: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
    lat[rank.clamp(1, lat.len()) - 1].as_secs_f64() * 1e3
}

/// Prints `rows` as an aligned table (`frames/s` only for the AI Bot path).
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:<14} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9} {:>9}",
        "path",
        "level",
        "messages",
        "replied",
        "replies/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "frames/s",
        "CPU ms/msg",
        "peak RSS",
        "RSS"
    );
    for r in rows {
        let frames = r
            .frames_per_sec
            .map_or_else(|| "-".to_owned(), |f| format!("{f:.1}"));
        println!(
            "{:<8} {:<14} {:>8} {:>8} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>11.3} {:>5.1} MiB \
             {:>5.1} MiB",
            r.path,
            r.level,
            r.messages,
            r.replied,
            r.replies_per_sec,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            frames,
            r.cpu_s_per_msg * 1e3,
            r.peak_rss_mib,
            r.rss_mib
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&lat, 50.0), 50.0);
        assert_eq!(percentile_ms(&lat, 99.0), 99.0);
        assert_eq!(percentile_ms(&lat[..1], 99.0), 1.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
