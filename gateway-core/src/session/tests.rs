//! Tests of the session engine with paused time: per-key serialisation, global cap, busy modes,
//! `/stop`, drain, and the reset policy.

use super::*;
use crate::model::{Content, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Records, per key, how many turns run at once and the order of messages handled.
#[derive(Default)]
struct Probe {
    active: Mutex<HashMap<String, usize>>,
    max_per_key: AtomicUsize,
    global_active: AtomicUsize,
    max_global: AtomicUsize,
    done: Mutex<Vec<(String, String, Option<CancelReason>)>>,
    turn_time: Duration,
}

#[async_trait]
impl TurnHandler for Probe {
    async fn run_turn(&self, job: TurnJob, cancel: TurnCancel) {
        let n = {
            let mut a = self.active.lock().unwrap();
            let n = a.entry(job.key.clone()).or_default();
            *n += 1;
            *n
        };
        self.max_per_key.fetch_max(n, Ordering::SeqCst);
        let g = self.global_active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_global.fetch_max(g, Ordering::SeqCst);
        tokio::select! {
            () = tokio::time::sleep(self.turn_time) => {}
            () = cancel.token().cancelled() => {}
        }
        self.global_active.fetch_sub(1, Ordering::SeqCst);
        *self.active.lock().unwrap().get_mut(&job.key).unwrap() -= 1;
        self.done
            .lock()
            .unwrap()
            .push((job.key, job.message.message_id, cancel.reason()));
    }
}

fn job(key: &str, id: &str) -> TurnJob {
    TurnJob {
        key: key.into(),
        message: InboundMessage {
            instance: "t".into(),
            message_id: id.into(),
            sender: Sender::new("u"),
            chat: ChatAddress::dm("u"),
            content: Content::Text { text: id.into() },
            quote: None,
            received_at: Utc::now(),
            reply_context: serde_json::Value::Null,
        },
    }
}

fn engine(cfg: SessionConfig, turn_time: Duration) -> (SessionEngine, Arc<Probe>) {
    let probe = Arc::new(Probe {
        turn_time,
        ..Default::default()
    });
    (SessionEngine::new(cfg, probe.clone()), probe)
}

#[tokio::test(start_paused = true)]
async fn one_turn_per_key_while_other_keys_proceed() {
    let cfg = SessionConfig {
        max_queue: 100,
        max_concurrent_turns: 64,
        ..Default::default()
    };
    let (eng, probe) = engine(cfg, Duration::from_secs(1));
    for i in 0..50 {
        for k in 0..10 {
            eng.submit(job(&format!("k{k}"), &format!("{k}-{i}")));
        }
    }
    // Ten keys in parallel: after one turn time, exactly one turn per key has finished.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(probe.done.lock().unwrap().len(), 10);
    let _ = eng
        .drain(Duration::from_secs(3600), Duration::from_secs(1))
        .await;
    assert_eq!(
        probe.max_per_key.load(Ordering::SeqCst),
        1,
        "a key ran two turns at once"
    );
    assert_eq!(
        probe.max_global.load(Ordering::SeqCst),
        10,
        "keys did not run concurrently"
    );
}

#[tokio::test(start_paused = true)]
async fn queued_messages_run_in_order() {
    let (eng, probe) = engine(SessionConfig::default(), Duration::from_secs(1));
    assert_eq!(eng.submit(job("k", "a")), SubmitOutcome::Started);
    assert_eq!(
        eng.submit(job("k", "b")),
        SubmitOutcome::Queued { position: 1 }
    );
    assert_eq!(
        eng.submit(job("k", "c")),
        SubmitOutcome::Queued { position: 2 }
    );
    assert_eq!(eng.status("k").queued, 2);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let order: Vec<String> = probe
        .done
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.1.clone())
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert_eq!(eng.load(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn queue_overflow_is_reported() {
    let cfg = SessionConfig {
        max_queue: 2,
        ..Default::default()
    };
    let (eng, probe) = engine(cfg, Duration::from_secs(1));
    assert_eq!(eng.submit(job("k", "a")), SubmitOutcome::Started);
    assert_eq!(
        eng.submit(job("k", "b")),
        SubmitOutcome::Queued { position: 1 }
    );
    assert_eq!(
        eng.submit(job("k", "c")),
        SubmitOutcome::Queued { position: 2 }
    );
    assert_eq!(eng.submit(job("k", "d")), SubmitOutcome::QueueFull);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(probe.done.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn interrupt_mode_cancels_the_running_turn() {
    let cfg = SessionConfig {
        busy_mode: BusyMode::Interrupt,
        ..Default::default()
    };
    let (eng, probe) = engine(cfg, Duration::from_secs(60));
    eng.submit(job("k", "a"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(eng.submit(job("k", "b")), SubmitOutcome::Interrupted);
    tokio::time::sleep(Duration::from_millis(10)).await;
    {
        let done = probe.done.lock().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1, "a");
        assert_eq!(done[0].2, Some(CancelReason::Interrupted));
    }
    // b now runs to completion undisturbed.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let done = probe.done.lock().unwrap();
    assert_eq!(done[1], ("k".into(), "b".into(), None));
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_and_returns_queued_jobs() {
    let (eng, probe) = engine(SessionConfig::default(), Duration::from_secs(60));
    eng.submit(job("k", "a"));
    eng.submit(job("k", "b"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (running, dropped) = eng.stop("k");
    assert!(running);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].message.message_id, "b");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        probe.done.lock().unwrap()[0].2,
        Some(CancelReason::UserStop)
    );
    assert_eq!(eng.status("k"), KeyStatus::default());
    let (running, dropped) = eng.stop("k");
    assert!(!running && dropped.is_empty());
}

#[tokio::test(start_paused = true)]
async fn global_cap_limits_concurrent_turns() {
    let cfg = SessionConfig {
        max_concurrent_turns: 3,
        ..Default::default()
    };
    let (eng, probe) = engine(cfg, Duration::from_secs(1));
    for k in 0..12 {
        eng.submit(job(&format!("k{k}"), "m"));
    }
    let _ = eng
        .drain(Duration::from_secs(3600), Duration::from_secs(1))
        .await;
    assert_eq!(probe.max_global.load(Ordering::SeqCst), 3);
    assert_eq!(probe.done.lock().unwrap().len(), 12);
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_running_turns_then_cancels_at_the_deadline() {
    let (eng, probe) = engine(SessionConfig::default(), Duration::from_secs(5));
    eng.submit(job("short", "a"));
    let left = eng
        .drain(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert!(left.is_empty());
    assert_eq!(
        probe.done.lock().unwrap()[0].2,
        None,
        "drain cut a turn that fit the deadline"
    );
    assert_eq!(eng.submit(job("x", "late")), SubmitOutcome::ShuttingDown);

    let (eng, probe) = engine(SessionConfig::default(), Duration::from_secs(600));
    eng.submit(job("long", "a"));
    eng.submit(job("long", "b"));
    let left = eng
        .drain(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(
        left.len(),
        1,
        "the queued job is handed back for the next start"
    );
    assert_eq!(
        probe.done.lock().unwrap()[0].2,
        Some(CancelReason::Shutdown)
    );
}

#[test]
fn session_keys() {
    let dm = ChatAddress::dm("alice");
    let grp = ChatAddress::group("wr1");
    assert_eq!(session_key("wecom", &dm, "alice", true), "wecom:dm:alice");
    assert_eq!(
        session_key("wecom", &grp, "bob", true),
        "wecom:group:wr1:bob"
    );
    assert_eq!(session_key("wecom", &grp, "bob", false), "wecom:group:wr1");
    assert_ne!(
        session_key("a", &dm, "x", true),
        session_key("b", &dm, "x", true)
    );
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn reset_policy_rules() {
    let idle = ResetPolicy {
        mode: ResetMode::Idle,
        idle_minutes: 60,
        ..Default::default()
    };
    assert_eq!(
        idle.expired(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:59:00Z")),
        None
    );
    assert_eq!(
        idle.expired(at("2026-01-01T00:00:00Z"), at("2026-01-01T01:00:00Z")),
        Some(ResetReason::Idle)
    );
    // Daily at 04:00 UTC+8 = 20:00 UTC.
    let daily = ResetPolicy {
        mode: ResetMode::Daily,
        at_hour: 4,
        utc_offset_hours: 8,
        ..idle
    };
    assert_eq!(
        daily.expired(at("2026-01-01T19:00:00Z"), at("2026-01-01T19:59:00Z")),
        None
    );
    assert_eq!(
        daily.expired(at("2026-01-01T19:00:00Z"), at("2026-01-01T20:01:00Z")),
        Some(ResetReason::Daily)
    );
    assert_eq!(
        daily.expired(at("2026-01-01T20:30:00Z"), at("2026-01-02T19:00:00Z")),
        None
    );
    let none = ResetPolicy {
        mode: ResetMode::None,
        ..daily
    };
    assert_eq!(
        none.expired(at("2020-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")),
        None
    );
    let both = ResetPolicy {
        mode: ResetMode::Both,
        idle_minutes: 120,
        ..daily
    };
    assert_eq!(
        both.expired(at("2026-01-01T19:00:00Z"), at("2026-01-01T20:01:00Z")),
        Some(ResetReason::Daily)
    );
    assert_eq!(
        both.expired(at("2026-01-01T20:01:00Z"), at("2026-01-01T22:02:00Z")),
        Some(ResetReason::Idle)
    );
}
