//! Unit tests of the protocol state machine, driven by hand-made frames and paused tokio time.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{advance, Instant};

use super::*;

type S = Session<u32>;

fn session() -> S {
    Session::new(SessionConfig::default(), "bot-1", "sec-1".to_owned().into())
}

fn sent(actions: &[Action<u32>]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

fn ack(req_id: &str, code: i64) -> String {
    json!({"headers":{"req_id":req_id},"errcode":code,"errmsg":if code == 0 {"ok"} else {"bad"}})
        .to_string()
}

fn callback(req_id: &str, msgid: &str) -> String {
    json!({"cmd":"aibot_msg_callback","headers":{"req_id":req_id},
           "body":{"msgid":msgid,"chattype":"single","from":{"userid":"u"},"msgtype":"text",
                   "text":{"content":"hi"}}})
    .to_string()
}

/// Connects and acknowledges the subscribe; returns the subscribe frame.
fn up(s: &mut S) -> Value {
    let now = Instant::now();
    let frames = sent(&s.on_connected(now));
    let sub = frames[0].clone();
    let acts = s.on_frame(&ack(sub["headers"]["req_id"].as_str().unwrap(), 0), now);
    assert!(acts.iter().any(|a| matches!(a, Action::Up { .. })));
    sub
}

fn completions(actions: &[Action<u32>]) -> Vec<(u32, Result<i64, ReqError>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Complete(w, r) => {
                Some((*w, r.as_ref().map(|f| f.code()).map_err(Clone::clone)))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn subscribe_carries_the_credentials_only_as_the_official_sdk_does() {
    let mut s = session();
    let first = up(&mut s);
    assert_eq!(first["cmd"], "aibot_subscribe");
    assert_eq!(first["body"], json!({"bot_id":"bot-1","secret":"sec-1"}));
    assert!(first["headers"]["req_id"]
        .as_str()
        .unwrap()
        .starts_with("aibot_subscribe_"));
    s.on_disconnected(Instant::now());
    advance(Duration::from_secs(1)).await;
    assert!(matches!(s.on_tick(Instant::now())[..], [Action::Connect]));
    let second = up(&mut s);
    assert_eq!(second["body"], first["body"]);
    assert_ne!(second["headers"]["req_id"], first["headers"]["req_id"]);
    assert_eq!(s.epoch(), 2);
}

#[tokio::test(start_paused = true)]
async fn frames_before_the_ack_are_kept_and_replayed() {
    let mut s = session();
    let now = Instant::now();
    let sub = sent(&s.on_connected(now))[0].clone();
    assert!(
        s.on_frame(&callback("r1", "m1"), now).is_empty(),
        "nothing before the ACK"
    );
    let acts = s.on_frame(&ack(sub["headers"]["req_id"].as_str().unwrap(), 0), now);
    assert!(matches!(acts[0], Action::Up { epoch: 1 }));
    assert!(matches!(&acts[1], Action::Inbound(f) if f.req_id == "r1"));
}

/// Sends the subscribe and answers it with `answer` (a JSON ack text for its req_id).
fn refuse(s: &mut S, answer: impl Fn(&str) -> String) -> Vec<Action<u32>> {
    let now = Instant::now();
    let sub = sent(&s.on_connected(now))[0].clone();
    s.on_frame(&answer(sub["headers"]["req_id"].as_str().unwrap()), now)
}

#[tokio::test(start_paused = true)]
async fn any_refused_subscribe_is_an_auth_failure_retried_five_times_then_given_up() {
    let mut s = session();
    let mut waits = Vec::new();
    // 40013, another code, and an answer with no errcode at all: all refusals (§1.2, §6.4).
    let answers: [&dyn Fn(&str) -> String; 6] = [
        &|r| ack(r, 40013),
        &|r| ack(r, 500),
        &|r| json!({"headers":{"req_id":r}}).to_string(),
        &|r| ack(r, 40013),
        &|r| ack(r, 40013),
        &|r| ack(r, 40013),
    ];
    for (i, answer) in answers.iter().enumerate() {
        let acts = refuse(&mut s, answer);
        let failures = i as u32 + 1;
        let gave_up = failures == 6;
        assert!(
            matches!(&acts[0], Action::AuthFailed { failures: f, gave_up: g, .. } if *f == failures && *g == gave_up),
            "{acts:?}"
        );
        assert!(acts
            .iter()
            .any(|a| matches!(a, Action::Close(CloseReason::SubscribeRejected { .. }))));
        s.on_disconnected(Instant::now());
        if gave_up {
            break;
        }
        let wait = s.reconnect_in(Instant::now()).unwrap();
        waits.push(wait.as_secs());
        advance(wait).await;
        assert!(matches!(s.on_tick(Instant::now())[..], [Action::Connect]));
    }
    assert_eq!(waits, [1, 2, 4, 8, 16], "the SDK's schedule");
    assert_eq!(s.phase(), Phase::Stopped, "no endless loop");
    advance(Duration::from_secs(3600)).await;
    assert!(s.on_tick(Instant::now()).is_empty());
    assert_eq!(s.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn a_good_subscribe_resets_the_refusal_count() {
    let mut s = session();
    for _ in 0..3 {
        refuse(&mut s, |r| ack(r, 40013));
        s.on_disconnected(Instant::now());
        advance(s.reconnect_in(Instant::now()).unwrap()).await;
        s.on_tick(Instant::now());
    }
    up(&mut s);
    s.on_disconnected(Instant::now());
    assert!(!s.retrying_auth());
    assert_eq!(s.reconnect_in(Instant::now()), Some(Duration::from_secs(1)));
    advance(Duration::from_secs(1)).await;
    s.on_tick(Instant::now());
    let acts = refuse(&mut s, |r| ack(r, 40013));
    assert!(matches!(
        &acts[0],
        Action::AuthFailed {
            failures: 1,
            gave_up: false,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn only_errcode_zero_completes_a_request_successfully() {
    let mut s = session();
    up(&mut s);
    let now = Instant::now();
    let f = protocol::markdown_send("u", "x");
    let id = f.req_id.clone();
    s.submit(
        Request {
            frame: f,
            timeout: Duration::from_secs(5),
            waiter: 1,
        },
        now,
    );
    let acts = s.on_frame(&json!({"headers":{"req_id":id}}).to_string(), now);
    assert!(
        matches!(
            &completions(&acts)[..],
            [(1, Err(ReqError::Platform { code: -1, .. }))]
        ),
        "an answer without errcode is not a success"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_ack_times_out() {
    let mut s = session();
    s.on_connected(Instant::now());
    advance(Duration::from_secs(19)).await;
    assert!(s.on_tick(Instant::now()).is_empty());
    advance(Duration::from_secs(1)).await;
    assert!(matches!(
        s.on_tick(Instant::now())[..],
        [Action::Close(CloseReason::SubscribeTimeout)]
    ));
}

#[tokio::test(start_paused = true)]
async fn backoff_follows_the_list_and_resets_after_a_good_subscribe() {
    let mut s = session();
    let mut delays = Vec::new();
    for _ in 0..7 {
        s.on_connected(Instant::now());
        s.on_disconnected(Instant::now());
        let d = s.reconnect_in(Instant::now()).unwrap();
        delays.push(d.as_secs());
        advance(d - Duration::from_millis(1)).await;
        assert!(
            s.on_tick(Instant::now()).is_empty(),
            "no dial before the delay"
        );
        advance(Duration::from_millis(1)).await;
        assert!(matches!(s.on_tick(Instant::now())[..], [Action::Connect]));
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30], "never gives up");
    up(&mut s);
    assert_eq!(s.attempt(), 0);
    s.on_disconnected(Instant::now());
    assert_eq!(s.reconnect_in(Instant::now()), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn two_missed_pings_close_the_socket_and_answers_keep_it() {
    let mut s = session();
    up(&mut s);
    advance(Duration::from_secs(30)).await;
    let p1 = sent(&s.on_tick(Instant::now()));
    assert_eq!(p1[0]["cmd"], "ping");
    assert!(p1[0].get("body").is_none(), "a ping has no body");
    // Answered: the count resets.
    s.on_frame(
        &ack(p1[0]["headers"]["req_id"].as_str().unwrap(), 0),
        Instant::now(),
    );
    advance(Duration::from_secs(30)).await;
    assert_eq!(sent(&s.on_tick(Instant::now())).len(), 1);
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        sent(&s.on_tick(Instant::now())).len(),
        1,
        "one missed: still pinging"
    );
    advance(Duration::from_secs(30)).await;
    assert!(matches!(
        s.on_tick(Instant::now())[..],
        [Action::Close(CloseReason::MissedPings)]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refused_ping_answer_does_not_count_as_alive() {
    let mut s = session();
    up(&mut s);
    for _ in 0..2 {
        advance(Duration::from_secs(30)).await;
        let p = sent(&s.on_tick(Instant::now()));
        s.on_frame(
            &ack(p[0]["headers"]["req_id"].as_str().unwrap(), 500),
            Instant::now(),
        );
    }
    advance(Duration::from_secs(30)).await;
    assert!(matches!(
        s.on_tick(Instant::now())[..],
        [Action::Close(CloseReason::MissedPings)]
    ));
}

#[tokio::test(start_paused = true)]
async fn requests_correlate_by_req_id_one_in_flight_per_req_id() {
    let mut s = session();
    up(&mut s);
    let now = Instant::now();
    let t = Duration::from_secs(15);
    let f1 = protocol::stream_frame("req-1", "s1", "a", false);
    let f2 = protocol::stream_frame("req-1", "s1", "ab", true);
    let other = protocol::markdown_send("u", "x");
    let other_id = other.req_id.clone();
    assert_eq!(
        sent(&s.submit(
            Request {
                frame: f1,
                timeout: t,
                waiter: 1
            },
            now
        ))
        .len(),
        1
    );
    assert!(
        s.submit(
            Request {
                frame: f2,
                timeout: t,
                waiter: 2
            },
            now
        )
        .is_empty(),
        "queued"
    );
    assert_eq!(
        sent(&s.submit(
            Request {
                frame: other,
                timeout: t,
                waiter: 3
            },
            now
        ))
        .len(),
        1
    );
    // A callback that shares the req_id is not an answer.
    let acts = s.on_frame(&callback("req-1", "m9"), now);
    assert!(matches!(&acts[..], [Action::Inbound(_)]));
    // The first ACK completes 1 and puts 2 on the wire.
    let acts = s.on_frame(&ack("req-1", 0), now);
    assert_eq!(completions(&acts), vec![(1, Ok(0))]);
    assert_eq!(sent(&acts)[0]["body"]["stream"]["finish"], true);
    let acts = s.on_frame(&ack("req-1", 846608), now);
    assert_eq!(
        completions(&acts)[0].1,
        Err(ReqError::Platform {
            code: 846608,
            message: "bad".into()
        })
    );
    let acts = s.on_frame(&ack(&other_id, 0), now);
    assert_eq!(completions(&acts), vec![(3, Ok(0))]);
}

#[tokio::test(start_paused = true)]
async fn deadlines_and_drops_fail_requests_at_once() {
    let mut s = session();
    up(&mut s);
    let now = Instant::now();
    let a = protocol::stream_frame("r", "s", "a", false);
    let b = protocol::stream_frame("r", "s", "b", false);
    s.submit(
        Request {
            frame: a,
            timeout: Duration::from_secs(5),
            waiter: 1,
        },
        now,
    );
    s.submit(
        Request {
            frame: b,
            timeout: Duration::from_secs(5),
            waiter: 2,
        },
        now,
    );
    advance(Duration::from_secs(5)).await;
    let acts = s.on_tick(Instant::now());
    assert_eq!(completions(&acts), vec![(1, Err(ReqError::Timeout))]);
    assert_eq!(
        sent(&acts).len(),
        1,
        "the queued request goes out after the timeout"
    );
    let acts = s.on_disconnected(Instant::now());
    assert_eq!(completions(&acts), vec![(2, Err(ReqError::Disconnected))]);
    // Not connected: refused at once.
    let c = protocol::stream_frame("r", "s", "c", false);
    let acts = s.submit(
        Request {
            frame: c,
            timeout: Duration::from_secs(5),
            waiter: 3,
        },
        Instant::now(),
    );
    assert_eq!(completions(&acts), vec![(3, Err(ReqError::NotConnected))]);
}

#[tokio::test(start_paused = true)]
async fn disconnected_event_is_terminal() {
    let mut s = session();
    up(&mut s);
    let now = Instant::now();
    s.submit(
        Request {
            frame: protocol::stream_frame("r", "s", "a", false),
            timeout: Duration::from_secs(5),
            waiter: 7,
        },
        now,
    );
    let kick = json!({"cmd":"aibot_event_callback","headers":{"req_id":"e1"},
                      "body":{"msgtype":"event","event":{"eventtype":"disconnected_event"}}});
    let acts = s.on_frame(&kick.to_string(), now);
    assert_eq!(completions(&acts), vec![(7, Err(ReqError::Disconnected))]);
    assert!(acts.iter().any(|a| matches!(a, Action::TakenOver)));
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Close(CloseReason::TakenOver))));
    assert!(s.on_disconnected(Instant::now()).is_empty());
    assert_eq!(s.phase(), Phase::TakenOver);
    advance(Duration::from_secs(3600)).await;
    assert!(
        s.on_tick(Instant::now()).is_empty(),
        "no reconnect after a take-over"
    );
    assert_eq!(s.next_deadline(), None);
    // The legacy field spelling is understood too.
    let mut s = session();
    up(&mut s);
    let legacy = json!({"cmd":"aibot_event_callback","headers":{"req_id":"e2"},
                        "body":{"event_type":"disconnected_event"}});
    assert!(s
        .on_frame(&legacy.to_string(), Instant::now())
        .iter()
        .any(|a| matches!(a, Action::TakenOver)));
}

#[tokio::test(start_paused = true)]
async fn not_subscribed_triggers_one_resubscribe() {
    let mut s = session();
    up(&mut s);
    let now = Instant::now();
    for w in [1, 2] {
        s.submit(
            Request {
                frame: protocol::markdown_send("u", "x"),
                timeout: Duration::from_secs(5),
                waiter: w,
            },
            now,
        );
    }
    let ids: Vec<String> = s.inflight.keys().cloned().collect();
    let acts = s.on_frame(&ack(&ids[0], 846609), now);
    assert!(acts.iter().any(|a| matches!(a, Action::Resubscribing)));
    let sub = sent(&acts);
    assert_eq!(sub[0]["cmd"], "aibot_subscribe");
    assert_eq!(sub[0]["body"], json!({"bot_id":"bot-1","secret":"sec-1"}));
    // A second 846609 right after does not re-subscribe again.
    let acts = s.on_frame(&ack(&ids[1], 846609), now);
    assert!(sent(&acts).is_empty());
    // The re-subscribe ACK is swallowed.
    assert!(s
        .on_frame(&ack(sub[0]["headers"]["req_id"].as_str().unwrap(), 0), now)
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn duplicates_are_dropped_within_the_ttl_and_memory_is_bounded() {
    let mut s = Session::<u32>::new(
        SessionConfig {
            dedup_capacity: 3,
            ..SessionConfig::default()
        },
        "b",
        "s".to_owned().into(),
    );
    up(&mut s);
    let n = |s: &mut S, req: &str, msg: &str| s.on_frame(&callback(req, msg), Instant::now()).len();
    assert_eq!(n(&mut s, "r1", "m1"), 1);
    assert_eq!(n(&mut s, "r2", "m1"), 0, "same msgid");
    advance(Duration::from_secs(301)).await;
    assert_eq!(n(&mut s, "r3", "m1"), 1, "remembered only for the TTL");
    for m in ["a", "b", "c", "d"] {
        assert_eq!(n(&mut s, m, m), 1);
    }
    assert!(s.seen.len() <= 3);
}

#[tokio::test(start_paused = true)]
async fn stop_fails_pending_and_closes() {
    let mut s = session();
    up(&mut s);
    s.submit(
        Request {
            frame: protocol::markdown_send("u", "x"),
            timeout: Duration::from_secs(5),
            waiter: 1,
        },
        Instant::now(),
    );
    let acts = s.stop();
    assert_eq!(completions(&acts), vec![(1, Err(ReqError::Disconnected))]);
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Close(CloseReason::Stopping))));
    assert!(s.on_disconnected(Instant::now()).is_empty());
    assert!(matches!(
        s.on_connected(Instant::now())[..],
        [Action::Close(_)]
    ));
}
