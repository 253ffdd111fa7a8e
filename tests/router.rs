//! End-to-end tests of the router through a real platform protocol (the loopback platform in
//! `support/loopback.rs`), the echo agent and the SQLite store.

mod support;

use std::sync::Arc;

use gateway_core::clock::TokioClock;
use gateway_core::pairing::PairingEngine;
use gateway_core::StateStore;
use support::loopback::FakePlatform;
use support::TestGateway;

fn platform_yaml(name: &str, addr: &str, extra: &str) -> String {
    format!("  {name}:\n    type: loopback\n    extra:\n      addr: \"{addr}\"\n{extra}")
}

/// A gateway with one loopback instance `lb` (policy open), `sections` (YAML before
/// `platforms:`) and its platform connected.
async fn start_lb(sections: &str) -> (tempfile::TempDir, FakePlatform, TestGateway) {
    let dir = tempfile::tempdir().unwrap();
    let p = FakePlatform::start().await;
    let yaml = format!(
        "{sections}platforms:\n{}",
        platform_yaml("lb", &p.addr.to_string(), "")
    );
    let gw = TestGateway::start(dir.path(), &yaml).await;
    p.wait_connections(1).await;
    (dir, p, gw)
}

async fn open_store(dir: &std::path::Path) -> Arc<dyn StateStore> {
    Arc::new(store_sqlite::SqliteStore::open(&dir.join("data/gateway.db")).unwrap())
}

#[tokio::test]
async fn two_instances_run_at_once_without_crossing_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakePlatform::start().await, FakePlatform::start().await);
    let yaml = format!(
        "platforms:\n{}{}",
        platform_yaml("alpha", &a.addr.to_string(), ""),
        platform_yaml("beta", &b.addr.to_string(), "")
    );
    let gw = TestGateway::start(dir.path(), &yaml).await;
    a.wait_connections(1).await;
    b.wait_connections(1).await;
    a.push_dm("m1", "alice", "from alpha");
    b.push_dm("m1", "alice", "from beta");
    assert_eq!(a.final_text("m1").await, "echo: from alpha");
    assert_eq!(b.final_text("m1").await, "echo: from beta");
    // Same user, same message id, different instances: two sessions, one reply each.
    assert_eq!(a.frames_for("final", "m1").len(), 1);
    assert_eq!(b.frames_for("final", "m1").len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_instance_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = FakePlatform::start().await;
    // Nothing listens here: connect fails and the supervisor retries with backoff.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "platforms:\n{}{}",
        platform_yaml("good", &good.addr.to_string(), ""),
        platform_yaml("broken", &dead.to_string(), "")
    );
    let gw = TestGateway::start(dir.path(), &yaml).await;
    good.wait_connections(1).await;
    good.push_dm("x", "bob", "still here?");
    assert_eq!(good.final_text("x").await, "echo: still here?");

    let (status, body) = gw.get("/health").await;
    assert_eq!(
        status, 503,
        "one instance down must show as degraded: {body}"
    );
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded");
    let inst = |n: &str| {
        health["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(inst("good")["state"], "connected");
    assert_eq!(inst("broken")["state"], "failed");
    assert!(inst("broken")["last_error"]
        .as_str()
        .unwrap()
        .contains("connect"));

    let (status, metrics) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gateway_messages_in_total{instance=\"good\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_turns_total{instance=\"good\",outcome=\"completed\"} 1"));
    assert!(metrics.contains("gateway_instance_up{instance=\"broken\"} 0"));
    assert!(metrics.contains("gateway_errors_total{instance=\"broken\",kind=\"io\"}"));
    gw.stop().await;
}

#[tokio::test]
async fn replies_stream_then_finish_once() {
    let (_dir, p, gw) = start_lb("agent:\n  backend: echo\n  delay_ms: 30\n").await;
    let text = "a fairly long message so that the echo agent streams it in several pieces";
    p.push_dm("s1", "carol", text);
    assert_eq!(p.final_text("s1").await, format!("echo: {text}"));
    let frames = p.frames();
    let kinds: Vec<&str> = frames
        .iter()
        .filter(|f| f["id"] == "s1" && f["type"] != "ack")
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"final"));
    assert_eq!(kinds.iter().filter(|k| **k == "final").count(), 1);
    let updates: Vec<String> = frames
        .iter()
        .filter(|f| f["id"] == "s1" && f["type"] == "update")
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect();
    assert!(!updates.is_empty(), "no streaming update was sent");
    // Updates are cumulative: each extends the previous one.
    for w in updates.windows(2) {
        assert!(
            w[1].starts_with(&w[0]),
            "update {:?} does not extend {:?}",
            w[1],
            w[0]
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn busy_sessions_queue_and_overflow_with_notices() {
    let (_dir, p, gw) =
        start_lb("agent:\n  backend: echo\n  delay_ms: 200\nsessions:\n  max_queue: 1\n").await;
    p.push_dm("q1", "dan", "first");
    assert_eq!(p.ack("q1").await, "Accepted");
    p.push_dm("q2", "dan", "second");
    assert_eq!(p.ack("q2").await, "Accepted");
    p.push_dm("q3", "dan", "third");
    assert_eq!(p.ack("q3").await, "Accepted");
    // q2 is told it is queued, q3 that the queue is full; both as replies to their own message.
    let queued = p.final_text("q2").await;
    assert!(queued.contains("Queued (position 1)"), "{queued}");
    let full = p.final_text("q3").await;
    assert!(full.contains("Too many messages"), "{full}");
    // Then the turns run in order, each answered.
    assert_eq!(p.finals("q1", 1).await, ["echo: first"]);
    let q2 = p.finals("q2", 2).await;
    assert_eq!(q2[1], "echo: second");
    gw.stop().await;
    assert_eq!(
        p.frames_for("final", "q3").len(),
        1,
        "the refused message must not run later"
    );
}

#[tokio::test]
async fn stop_and_new_work_mid_turn() {
    let (dir, p, gw) = start_lb("agent:\n  backend: echo\n  delay_ms: 2000\n").await;
    p.push_dm("long", "erin", "take your time");
    p.wait_started("long").await;
    p.push_dm("stop", "erin", "/stop");
    let stopped = p.final_text("long").await;
    assert!(
        stopped.contains("Stopped"),
        "the interrupted bubble must be finished: {stopped}"
    );
    assert!(p.final_text("stop").await.contains("Stopping"));

    p.push_dm("long2", "erin", "again");
    p.wait_started("long2").await;
    p.push_dm("new", "erin", "/new");
    assert!(p.final_text("long2").await.contains("Stopped"));
    assert!(p.final_text("new").await.contains("new conversation"));
    gw.stop().await;
    let store = open_store(dir.path()).await;
    assert!(
        store.session_get("lb:dm:erin").await.unwrap().is_none(),
        "/new must reset the session"
    );
}

#[tokio::test]
async fn interrupt_mode_finishes_the_old_bubble_and_answers_the_new_message() {
    let (_dir, p, gw) =
        start_lb("agent:\n  backend: echo\n  delay_ms: 1000\nsessions:\n  busy_mode: interrupt\n")
            .await;
    p.push_dm("i1", "fay", "first question");
    p.wait_started("i1").await;
    p.push_dm("i2", "fay", "second");
    assert!(p.final_text("i1").await.contains("Interrupted"));
    assert_eq!(p.final_text("i2").await, "echo: second");
    gw.stop().await;
}

#[tokio::test]
async fn policy_blocks_and_pairing_admits_after_approval() {
    let dir = tempfile::tempdir().unwrap();
    let p = FakePlatform::start().await;
    let extra = "      dm_policy: pairing\n      allow_from: [\"wecom:user:Boss\"]\n      group_policy: allowlist\n      group_allow_from: [\"group:Team\"]\n      groups:\n        team:\n          allow_from: [\"alice\"]\n";
    let yaml = format!(
        "platforms:\n{}",
        platform_yaml("lb", &p.addr.to_string(), extra)
    )
    .replace(
        "    type: loopback\n",
        "    type: loopback\n    home_channel: user:ops\n",
    );
    let gw = TestGateway::start(dir.path(), &yaml).await;
    p.wait_connections(1).await;

    // Allowlisted DM (prefix and case normalised) goes straight through.
    p.push_dm("b1", "boss", "hi");
    assert_eq!(p.final_text("b1").await, "echo: hi");

    // Groups: only the allowlisted chat, and in it only the listed sender.
    p.push_group("g1", "TEAM", "alice", "hello team");
    assert_eq!(p.final_text("g1").await, "echo: hello team");
    p.push_group("g2", "TEAM", "mallory", "hello");
    assert_eq!(p.ack("g2").await, "Blocked");
    p.push_group("g3", "other", "alice", "hello");
    assert_eq!(p.ack("g3").await, "Blocked");

    // An unknown DM sender gets a code, not the agent.
    p.push_dm("u1", "newbie", "let me in");
    assert_eq!(p.ack("u1").await, "Handled");
    let notice = p.final_text("u1").await;
    assert!(notice.contains("pairing code"), "{notice}");
    let code: String = notice
        .split_whitespace()
        .find(|w| {
            w.len() >= 8
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .expect("no code in the notice");

    // The operator hears about the request in the home channel, with the request id to approve
    // (never the user's code).
    let frames = p
        .wait_for("home notice", |f| f.iter().any(|v| v["type"] == "send"))
        .await;
    let home = frames.iter().find(|v| v["type"] == "send").unwrap();
    assert_eq!(home["target"], "user:ops");
    let home_text = home["text"].as_str().unwrap();
    assert!(home_text.contains("newbie") && home_text.contains("gateway pairing approve lb "));
    assert!(
        !home_text.contains(&code),
        "the home notice must not carry the code"
    );

    // The operator approves from another handle on the same database (as the CLI does).
    let store = open_store(dir.path()).await;
    let engine = PairingEngine::new(store.clone(), TokioClock::shared());
    engine.approve("lb", &code).await.unwrap();

    p.push_dm("u2", "newbie", "now?");
    assert_eq!(p.final_text("u2").await, "echo: now?");
    gw.stop().await;
    assert_eq!(
        p.frames_for("final", "g2").len() + p.frames_for("final", "g3").len(),
        0
    );
}

#[tokio::test]
async fn commands_are_answered_by_the_gateway() {
    let (_dir, p, gw) = start_lb("").await;
    p.push_dm("h", "gus", "/help");
    assert!(p.final_text("h").await.contains("/new"));
    p.push_dm("w", "gus", "/whoami");
    assert!(p.final_text("w").await.contains("user id: gus"));
    p.push_group("gs", "room", "gus", "@bot /status");
    assert!(p.final_text("gs").await.starts_with("Status:"));
    p.push_dm("u", "gus", "/unknown stays with the agent");
    assert_eq!(
        p.final_text("u").await,
        "echo: /unknown stays with the agent"
    );
    gw.stop().await;
}

#[tokio::test]
async fn duplicates_run_once_and_history_survives_a_restart_capped() {
    let (dir, p, gw) = start_lb("sessions:\n  history_cap: 4\n").await;
    p.push_dm("d1", "hal", "one");
    p.final_text("d1").await;
    p.push_dm("d1", "hal", "one");
    assert_eq!(p.ack("d1").await, "Accepted");
    p.wait_for("second ack", |f| {
        f.iter()
            .filter(|v| v["type"] == "ack" && v["id"] == "d1")
            .count()
            == 2
    })
    .await;
    let acks = p.frames_for("ack", "d1");
    assert_eq!(acks[1]["admission"], "Duplicate");
    gw.stop().await;

    // Restart on the same data dir: the duplicate is still known, history continues.
    let p = FakePlatform::start().await;
    let yaml = format!(
        "sessions:\n  history_cap: 4\nplatforms:\n{}",
        platform_yaml("lb", &p.addr.to_string(), "")
    );
    let gw = TestGateway::start(dir.path(), &yaml).await;
    p.wait_connections(1).await;
    p.push_dm("d1", "hal", "one");
    assert_eq!(p.ack("d1").await, "Duplicate");
    for i in 2..=4 {
        let id = format!("d{i}");
        p.push_dm(&id, "hal", &format!("msg {i}"));
        p.final_text(&id).await;
    }
    gw.stop().await;
    let store = open_store(dir.path()).await;
    let session = store
        .session_get("lb:dm:hal")
        .await
        .unwrap()
        .expect("session persisted");
    assert_eq!(session.turns, 4);
    let history = store.history_load(&session.session_id, 100).await.unwrap();
    let texts: Vec<&str> = history.iter().map(|h| h.text.as_str()).collect();
    assert_eq!(
        texts,
        ["msg 3", "echo: msg 3", "msg 4", "echo: msg 4"],
        "capped to the newest 4"
    );
}

#[tokio::test]
async fn admin_send_goes_through_the_running_gateway_with_its_token() {
    let (dir, p, gw) = start_lb("").await;
    let admin_path = dir.path().join("data/admin.json");
    let info = router::admin::AdminInfo::read(&dir.path().join("data")).expect("admin file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&admin_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the admin token must be private");
    }
    let client = reqwest::Client::new();
    let url = format!("http://{}/admin/send", gw.http);
    let body = serde_json::json!({"platform": "lb", "to": "user:kim", "text": "cron says hi"});
    let denied = client
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let ok = client
        .post(&url)
        .bearer_auth(&info.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let frames = p
        .wait_for("proactive send", |f| f.iter().any(|v| v["type"] == "send"))
        .await;
    let sent = frames.iter().find(|v| v["type"] == "send").unwrap();
    assert_eq!(sent["target"], "user:kim");
    assert_eq!(sent["text"], "cron says hi");
    let unknown = serde_json::json!({"platform": "nope", "to": "kim", "text": "x"});
    let r = client
        .post(&url)
        .bearer_auth(&info.token)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(p.frames().iter().filter(|v| v["type"] == "send").count(), 1);
    gw.stop().await;
    assert!(
        !admin_path.exists(),
        "the admin file is removed at shutdown"
    );
}
