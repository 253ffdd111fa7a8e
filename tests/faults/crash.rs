//! `kill -9` in the middle of a burst, three times, with a slow agent: turns in flight, callbacks
//! being journaled, answers being sent. After each kill the gateway restarts on the same data
//! dir; WeCom keeps retrying what was not acknowledged.
//!
//! Each kill happens while `message/send` is paused at the fake API and after every send the API
//! completed was recorded as done by the gateway: so it lands with sends *in flight* (held,
//! unanswered, then dropped with the dead process) but never in the one window no client can
//! close, between the platform showing a message and the gateway hearing so (DESIGN.md
//! "Delivery guarantee"). In flight at a kill means: not delivered, and sent after the restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{deliver, settle, Gateway, Setup, Wecom};

/// Senders, each with its own conversation.
/// Senders, each with a conversation of their own.
const USERS: usize = 60;
/// Within the per-conversation queue (8 waiting), as people type: more would be answered with
/// the "too many messages" notice by design.
const PER_USER: usize = 5;

#[tokio::test]
async fn kill_9_mid_burst_three_times_loses_and_repeats_nothing() {
    let wecom = Arc::new(Wecom::start().await);
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &wecom,
        &Setup {
            agent_delay_ms: 150,
            ..Setup::FAST
        },
    )
    .await;
    let accepted = Arc::new(AtomicUsize::new(0));
    // Like people typing: each user sends their messages one after the other, all at once.
    let senders: Vec<_> = (0..USERS)
        .map(|u| {
            let (wecom, accepted) = (wecom.clone(), accepted.clone());
            tokio::spawn(async move {
                for k in 0..PER_USER {
                    let id = 60_000 + (u * PER_USER + k) as u64;
                    let s = wecom.text(&format!("k{u}"), &format!("burst {u}-{k}"), id);
                    deliver(&wecom.callback_url(&s), &s).await;
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let total = USERS * PER_USER;
    let mut sent_at_start = 0;
    for round in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while accepted.load(Ordering::SeqCst) < round * total / 4 {
            assert!(
                Instant::now() < deadline,
                "the burst stalled before kill {round}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Hold new sends, and wait until the gateway recorded every completed one as done.
        wecom.emu.pause_sends();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = wecom.emu.sent().len() - sent_at_start;
            let delivered = gw.delivered().await as usize;
            if delivered == sent {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries never settled before kill {round}: the API took {sent}, the gateway \
                 recorded {delivered}\n{}",
                gw.log_text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let held = wecom.emu.sends_waiting();
        gw.kill9();
        super::report(&format!(
            "kill -9 #{round}: {} accepted, {} answers sent, {held} sends in flight",
            accepted.load(Ordering::SeqCst),
            wecom.emu.sent().len()
        ));
        // The dead process's held sends are dropped with its connections, undelivered.
        let deadline = Instant::now() + Duration::from_secs(10);
        while wecom.emu.sends_waiting() > 0 {
            assert!(
                Instant::now() < deadline,
                "held sends of the dead process remain"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wecom.emu.resume_sends();
        sent_at_start = wecom.emu.sent().len();
        gw.spawn().await;
    }
    for s in senders {
        s.await.unwrap();
    }
    let expected: Vec<String> = (0..USERS)
        .flat_map(|u| (0..PER_USER).map(move |k| format!("echo: burst {u}-{k}")))
        .collect();
    let t = settle(&wecom.emu, &expected).await;
    t.print(&format!("{total} messages, kill -9 three times mid-burst"));
    assert_eq!(
        (t.accepted, t.lost, t.twice),
        (total, 0, 0),
        "{t:?}\n{}\nother texts sent: {:?}",
        gw.journals(),
        {
            let mut other: std::collections::BTreeMap<String, usize> = Default::default();
            for (_, c) in wecom.emu.sent_contents() {
                if !c.starts_with("echo: ") {
                    *other.entry(c.chars().take(50).collect()).or_default() += 1;
                }
            }
            other
        }
    );
    gw.stop().await;
}
