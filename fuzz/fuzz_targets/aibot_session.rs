//! The AI Bot protocol state machine (`wecom::session::Session`, STYLE.md habit 11) driven by
//! hostile server frames, with the runner's part played here: a `Close` is answered with
//! `on_disconnected`, a `Connect` with `on_connected`.
//!
//! Input: one line per step. A line starting with `#` is a runner event — `#ack` (the server
//! acknowledges our latest subscribe), `#ackfail` (it refuses it), `#tick` (two seconds pass),
//! `#wait` (ten minutes pass), `#submit ID` (we send a request with req_id `ID`), `#drop` (the
//! socket closes); any other line is a text frame from the server (`Session::on_frame`).
//!
//! Checks: no panic; every frame we send is a JSON object with a `cmd`; only callbacks reach the
//! inbound pipeline; no message is delivered twice within the dedup TTL; every request completes
//! exactly once (at the latest when the session stops); a taken-over session stays down.
#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::time::Instant;
use wecom::protocol::{str_at, Outgoing};
use wecom::session::{Action, Phase, Request, Session, SessionConfig};

struct Harness {
    session: Session<u32>,
    now: Instant,
    /// The req_id of the latest subscribe we sent.
    subscribe: Option<String>,
    /// Waiters submitted and not yet completed.
    pending: HashSet<u32>,
    next_waiter: u32,
    /// When each dedup id was last delivered.
    delivered: HashMap<String, Instant>,
    ttl: Duration,
    taken_over: bool,
}

impl Harness {
    fn run(&mut self, first: Vec<Action<u32>>) {
        let mut queue: VecDeque<Action<u32>> = first.into();
        let mut steps = 0;
        while let Some(action) = queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "the runner loop does not settle");
            match action {
                Action::Send(text) => {
                    let v: Value = serde_json::from_str(&text).expect("we send JSON");
                    let cmd = v["cmd"].as_str().expect("every frame has a cmd");
                    if cmd == "aibot_subscribe" {
                        self.subscribe = v["headers"]["req_id"].as_str().map(str::to_owned);
                    }
                }
                Action::Complete(waiter, _) => {
                    assert!(
                        self.pending.remove(&waiter),
                        "waiter {waiter} completed twice"
                    );
                }
                Action::Inbound(frame) => {
                    assert!(frame.is_callback(), "a non-callback reached the pipeline");
                    let id = str_at(&frame.body, &["msgid"])
                        .map(str::to_owned)
                        .or_else(|| (!frame.req_id.is_empty()).then(|| frame.req_id.clone()));
                    if let Some(id) = id {
                        if let Some(&at) = self.delivered.get(&id) {
                            assert!(
                                self.now.saturating_duration_since(at) >= self.ttl,
                                "message {id:?} delivered twice within the TTL"
                            );
                        }
                        self.delivered.insert(id, self.now);
                    }
                }
                Action::TakenOver => self.taken_over = true,
                Action::Close(_) => queue.extend(self.session.on_disconnected(self.now)),
                Action::Connect => queue.extend(self.session.on_connected(self.now)),
                Action::Up { .. } | Action::AuthFailed { .. } | Action::Resubscribing => {}
            }
        }
        if self.taken_over {
            assert_eq!(self.session.phase(), Phase::TakenOver);
        }
    }

    fn ack(&mut self, errcode: i64) {
        let Some(req_id) = self.subscribe.clone() else {
            return;
        };
        let ack = json!({"headers": {"req_id": req_id}, "errcode": errcode, "errmsg": "ok"});
        let actions = self.session.on_frame(&ack.to_string(), self.now);
        self.run(actions);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let actions = self.session.on_tick(self.now);
        self.run(actions);
    }

    fn submit(&mut self, req_id: &str) {
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        self.pending.insert(waiter);
        let frame = Outgoing {
            cmd: "aibot_send_msg",
            req_id: req_id.to_owned(),
            body: json!({"chatid": "c", "msgtype": "markdown", "markdown": {"content": "x"}}),
        };
        let req = Request {
            frame,
            timeout: Duration::from_secs(5),
            waiter,
        };
        let actions = self.session.submit(req, self.now);
        self.run(actions);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Small bounds so that queue and buffer limits are reached by short inputs.
    let cfg = SessionConfig {
        max_queued: 4,
        max_buffered: 4,
        backoff: vec![Duration::ZERO, Duration::from_secs(2)],
        ..SessionConfig::default()
    };
    let ttl = cfg.dedup_ttl;
    let session = Session::new(cfg, "bot", SecretString::from("secret"));
    let mut h = Harness {
        session,
        now: Instant::now(),
        subscribe: None,
        pending: HashSet::new(),
        next_waiter: 0,
        delivered: HashMap::new(),
        ttl,
        taken_over: false,
    };
    let first = h.session.on_connected(h.now);
    h.run(first);
    for line in text.lines() {
        match line.split_once(' ').unwrap_or((line, "")) {
            ("#ack", _) => h.ack(0),
            ("#ackfail", _) => h.ack(40013),
            ("#tick", _) => h.advance(Duration::from_secs(2)),
            ("#wait", _) => h.advance(Duration::from_secs(600)),
            ("#submit", id) => h.submit(id),
            ("#drop", _) => {
                let actions = h.session.on_disconnected(h.now);
                h.run(actions);
            }
            _ => {
                let actions = h.session.on_frame(line, h.now);
                h.run(actions);
            }
        }
    }
    // Stopping moves a taken-over session to `Stopped`, which is fine.
    h.taken_over = false;
    let actions = h.session.stop();
    h.run(actions);
    assert!(
        h.pending.is_empty(),
        "requests left without an answer: {:?}",
        h.pending
    );
});
