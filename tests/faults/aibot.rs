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
    for k in 0..PER_USER {
        for u in 0..USERS {
            let text = format!("ab {u}-{k}");
            emu.push_text(Chat::dm(&format!("a{u}")), &text);
            expected.push(format!("echo: {text}"));
            let n = expected.len();
            if n == 15 || n == 35 {
                // On a live connection (the one before came back), mid-stream: answers of
                // earlier messages are still streaming.
                emu.wait_subscribed(if n == 15 { 1 } else { 2 }).await;
                emu.wait_for("a stream under way", |f| {
                    f.iter().any(|r| r.body()["msgtype"] == "stream")
                })
                .await;
                assert!(emu.drop_connection());
                super::report(&format!("AI Bot: socket dropped after {n} messages"));
            }
            if n == 50 {
                emu.wait_subscribed(3).await;
                assert!(emu.kick());
                super::report(&format!("AI Bot: taken over after {n} messages"));
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Taken over: the gateway stops using the bot (it would kick the other client back). The
    // operator restarts it; the answers it could not deliver wait in the outbox until then.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = gw.health().await;
        if h["state"] == "taken_over" {
            break;
        }
        assert!(Instant::now() < deadline, "no take-over seen: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    assert_eq!((lost, twice), (0, 0), "{}", gw.log_text());
    gw.stop().await;
}
