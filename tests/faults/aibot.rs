//! Faults on the AI Bot path, through the real binary and the openws emulator: the socket
//! dropped mid-stream (twice), stream finals refused with 846608 (the stream window closed), and
//! a take-over (another client subscribes as the bot) followed by the operator's restart. Every
//! answer must reach the user exactly once, by whichever route (stream or proactive).

use std::time::{Duration, Instant};

use wecom_emulator::openws::{Chat, Match, OpenWs, Received};

use super::{Gateway, Setup};

const USERS: usize = 12;
const PER_USER: usize = 5;

/// How many times `echo` reached the user: successful stream finals carrying it, and
/// successful markdown replies or sends carrying it.
fn deliveries(frames: &[Received], echo: &str) -> usize {
    frames
        .iter()
        .filter(|r| r.accepted())
        .filter(|r| {
            let b = r.body();
            match b["msgtype"].as_str() {
                Some("stream") => b["stream"]["finish"] == true && b["stream"]["content"] == echo,
                Some("markdown") => b["markdown"]["content"] == echo,
                _ => false,
            }
        })
        .count()
}

#[tokio::test]
async fn drops_expiries_and_a_take_over_lose_and_repeat_nothing() {
    let emu = OpenWs::builder().bot("bot-1", "secret-1").start().await;
    let dir = tempfile::tempdir().unwrap();
    let platforms = format!(
        "platforms:\n  wecom:\n    extra:\n      bot_id: bot-1\n      secret: secret-1\n      \
         websocket_url: \"{}\"\n      text_batch_delay_ms: 0\n      stream_interval_ms: 20\n      \
         reconnect_backoff_secs: [1]\n",
        emu.url()
    );
    let setup = Setup {
        agent_delay_ms: 100,
        ..Setup::FAST
    };
    let mut gw = Gateway::launch(dir.path(), &platforms, &setup).await;
    emu.wait_subscribed(1).await;
    emu.fail(Match::stream_final(), 846608, 3);
    let mut expected = Vec::new();
    let mut pushed: Vec<String> = Vec::new();
    for k in 0..PER_USER {
        for u in 0..USERS {
            let text = format!("ab {u}-{k}");
            pushed.push(emu.push_text(Chat::dm(&format!("a{u}")), &text).req_id);
            expected.push(format!("echo: {text}"));
            let n = expected.len();
            if n == 15 || n == 35 {
                // On a live connection (the one before came back), once the gateway has opened
                // a reply for every message so far (so none is still in the socket: a dropped
                // TCP connection discards what the peer had not read, which no client can
                // help), with answers still streaming.
                let live = emu.wait_subscribed(if n == 15 { 1 } else { 2 }).await;
                let conn = live.last().unwrap().conn;
                // ...and once the emulator has answered everything the gateway sent on it: an
                // answer still unsent when the socket goes is a fault no client can see either.
                emu.wait_for("a reply opened for every message, all answered", |f| {
                    pushed.iter().all(|r| f.iter().any(|x| x.req_id() == r))
                        && f.iter()
                            .filter(|x| x.conn == conn && x.cmd() != "ping")
                            .all(|x| x.answered.is_some())
                })
                .await;
                assert!(emu.drop_connection());
                super::report(&format!("AI Bot: socket dropped after {n} messages"));
            }
            if n == 50 {
                let live = emu.wait_subscribed(3).await;
                let conn = live.last().unwrap().conn;
                emu.wait_for("a reply opened for every message, all answered", |f| {
                    pushed.iter().all(|r| f.iter().any(|x| x.req_id() == r))
                        && f.iter()
                            .filter(|x| x.conn == conn && x.cmd() != "ping")
                            .all(|x| x.answered.is_some())
                })
                .await;
                assert!(emu.kick());
                super::report(&format!("AI Bot: taken over after {n} messages"));
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Taken over: the gateway stops using the bot (it would kick the other client back). The
    // operator restarts it; the answers it could not deliver wait in the outbox until then.
    // (Under heavy load the adapter sometimes sees the kick as a plain drop and reconnects; the
    // restart below then finds it connected, which must lose nothing either.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let taken_over = loop {
        let h = gw.health().await;
        if h["state"] == "taken_over" {
            break true;
        }
        if emu.subscribes().len() >= 4 {
            break false;
        }
        assert!(Instant::now() < deadline, "no take-over seen: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    super::report(&format!(
        "AI Bot: after the kick the gateway {}",
        if taken_over {
            "stopped (taken over)"
        } else {
            "reconnected (the kick looked like a drop)"
        }
    ));
    if !taken_over {
        // Connected again: the messages pushed meanwhile went to the new connection. Kill only
        // once the gateway has read them all (see the drops above).
        emu.wait_for("a reply opened for every message", |f| {
            pushed.iter().all(|r| f.iter().any(|x| x.req_id() == r))
        })
        .await;
    }
    gw.kill9();
    gw.spawn().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut lost, mut twice);
    loop {
        let frames = emu.frames();
        let counts: Vec<usize> = expected.iter().map(|e| deliveries(&frames, e)).collect();
        lost = counts.iter().filter(|c| **c == 0).count();
        twice = counts.iter().filter(|c| **c > 1).count();
        if lost == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    super::report(&format!(
        "AI Bot: {} messages, 2 drops, 3 × 846608, a take-over and a restart: \
         accepted {} answered {} lost {lost} twice {twice}",
        expected.len(),
        expected.len(),
        expected.len() - lost
    ));
    let frames = emu.frames();
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| deliveries(&frames, e) != 1)
        .map(|e| {
            let seen: Vec<String> = frames
                .iter()
                .filter(|r| r.frame.to_string().contains(e.as_str()))
                .map(|r| {
                    format!(
                        "conn {} {} {:?} {} finish={} req {}",
                        r.conn,
                        r.cmd(),
                        r.answered,
                        r.body()["msgtype"],
                        r.body()["stream"]["finish"],
                        r.req_id()
                    )
                })
                .collect();
            format!("{e}: {seen:?}")
        })
        .collect();
    assert_eq!((lost, twice), (0, 0), "{missing:#?}");
    gw.stop().await;
}
