//! Counters and gauges rendered as Prometheus text for `GET /metrics`. Labels are low-cardinality
//! (instance names, outcomes, error kinds) — never chat or user ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// A set of named counters with labels. Cheap enough for per-message use: one short lock.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
}

/// Help text per metric name.
const HELP: &[(&str, &str)] = &[
    (
        "gateway_messages_in_total",
        "Inbound messages received from platforms.",
    ),
    (
        "gateway_messages_blocked_total",
        "Inbound messages refused by the access policy.",
    ),
    (
        "gateway_messages_refused_total",
        "Inbound messages refused with a notice to the user, by reason (queue_full: sessions.max_queue).",
    ),
    (
        "gateway_messages_duplicate_total",
        "Inbound messages dropped as duplicates.",
    ),
    (
        "gateway_messages_out_total",
        "Replies and notices delivered to platforms.",
    ),
    ("gateway_turns_total", "Agent turns finished, by outcome."),
    ("gateway_errors_total", "Errors, by kind."),
    (
        "gateway_undelivered_total",
        "Replies that could not be delivered (kept in the outbox).",
    ),
    ("gateway_commands_total", "Gateway commands answered."),
];

impl Metrics {
    /// Adds one to `name{labels}`.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, labels)).or_default() += 1;
    }

    /// The value of `name{labels}` (tests and `/health`).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(name, labels)).copied().unwrap_or(0)
    }

    /// Renders counters plus the given gauges in the Prometheus text format.
    pub fn render(&self, gauges: &[(&str, &str, Labels, f64)]) -> String {
        let mut out = String::new();
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, labels), value) in c.iter() {
            if *name != last {
                let help = HELP.iter().find(|(n, _)| n == name).map_or("", |(_, h)| h);
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{} {value}", fmt_labels(labels));
        }
        drop(c);
        let mut last = "";
        for (name, help, labels, value) in gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                last = name;
            }
            let _ = writeln!(out, "{name}{} {value}", fmt_labels(labels));
        }
        out
    }
}

fn fmt_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc("gateway_messages_in_total", &[("instance", "a")]);
        m.inc("gateway_messages_in_total", &[("instance", "a")]);
        m.inc(
            "gateway_turns_total",
            &[("instance", "a"), ("outcome", "completed")],
        );
        let text = m.render(&[("gateway_turns_running", "Turns running.", vec![], 2.0)]);
        assert!(text.contains("# TYPE gateway_messages_in_total counter"));
        assert!(text.contains("gateway_messages_in_total{instance=\"a\"} 2\n"));
        assert!(text.contains("gateway_turns_total{instance=\"a\",outcome=\"completed\"} 1\n"));
        assert!(text.contains("gateway_turns_running 2\n"));
        assert_eq!(m.get("gateway_messages_in_total", &[("instance", "a")]), 2);
    }
}
