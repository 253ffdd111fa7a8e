//! Faults on the callback path that leave the process running: clients that go away at every
//! point of the accept, a store locked longer than WeCom waits, REST errors, a REST API that is
//! down, one user's slow media download.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{deliver, post_once, settle, Gateway, Setup, Wecom};

/// How much of its request a vanishing client writes.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Part of the headers.
    Headers,
    /// The headers and half the body.
    HalfBody,
    /// All of it.
    Whole,
}

/// Writes the request for `url` by hand, up to `cut`, waits `linger` and closes the socket: a
/// client that goes away before, during or after the accept.
async fn post_and_vanish(url: &str, body: &str, cut: Cut, linger: Duration) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let Ok(mut sock) = tokio::net::TcpStream::connect(host).await else {
        return;
    };
    let request = format!(
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = request.as_bytes();
    let end = match cut {
        Cut::Headers => 40,
        Cut::HalfBody => bytes.len() - body.len() / 2,
        Cut::Whole => bytes.len(),
    };
    let _ = sock.write_all(&bytes[..end]).await;
    if !linger.is_zero() {
        tokio::time::sleep(linger).await;
    }
    // Dropping the socket closes it, with whatever the gateway was doing still in progress.
}

#[tokio::test]
async fn clients_that_disconnect_at_every_point_of_the_accept_lose_nothing() {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A slowish agent, so that turns overlap the retries; 300 senders of 3 messages each, so
    // that no conversation has more waiting than `sessions.max_queue` (8) allows, however slow
    // the machine (an overflow is refused with a notice: a different test's subject).
    let setup = Setup {
        agent_delay_ms: 30,
        ..Setup::FAST
    };
    let gw = Gateway::start(dir.path(), &wecom, &setup).await;
    // Where the client goes away: mid-headers, mid-body, right after the request, and at
    // growing delays after it (during decryption, the journal write, the answer).
    let lingers_us = [0u64, 0, 0, 50, 200, 500, 1_000, 2_000, 5_000, 20_000];
    let n = 900;
    let expected: Vec<String> = (0..n).map(|i| format!("echo: vanish {i}")).collect();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let wecom = &wecom;
            async move {
                let signed = wecom.text(
                    &format!("u{}", i % 300),
                    &format!("vanish {i}"),
                    10_000 + i as u64,
                );
                let url = wecom.callback_url(&signed);
                let cut = match i % 10 {
                    0 => Cut::Headers,
                    1 => Cut::HalfBody,
                    _ => Cut::Whole,
                };
                post_and_vanish(
                    &url,
                    &signed.body,
                    cut,
                    Duration::from_micros(lingers_us[i % 10]),
                )
                .await;
                // WeCom saw no answer: it retries the same request until it gets one.
                deliver(&url, &signed).await;
            }
        })
        .await;
    let t = settle(&wecom.emu, &expected).await;
    t.print("900 disconnect-then-retry callbacks");
    let refused = gw.metric("gateway_messages_refused_total").await;
    assert_eq!(
        (t.lost, t.twice, refused),
        (0, 0, 0),
        "{t:?}\n{}",
        gw.warnings()
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_store_locked_longer_than_the_client_waits_loses_nothing() {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &wecom, &Setup::FAST).await;
    // Another process holds the database's write lock for 4.5 s (a backup, a migration, a
    // stuck `gateway pairing`), longer than a 3-second client waits.
    let db = rusqlite::Connection::open(gw.data.join("gateway.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked_at = Instant::now();
    let signed: Vec<_> = (0..20)
        .map(|i| wecom.text(&format!("s{i}"), &format!("locked {i}"), 20_000 + i))
        .collect();
    let first: Vec<Option<u16>> = futures::future::join_all(signed.iter().map(|s| {
        let url = wecom.callback_url(s);
        async move { post_once(&url, &s.body, Duration::from_secs(3)).await }
    }))
    .await;
    assert!(
        first.iter().all(|s| *s != Some(200)),
        "nothing can be journaled while the store is locked: {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(4_500).saturating_sub(locked_at.elapsed())).await;
    db.execute_batch("COMMIT").unwrap();
    // WeCom retries each one.
    for s in &signed {
        deliver(&wecom.callback_url(s), s).await;
    }
    let expected: Vec<String> = (0..20).map(|i| format!("echo: locked {i}")).collect();
    let t = settle(&wecom.emu, &expected).await;
    t.print("20 callbacks during a 4.5 s store lock, 3 s client");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", gw.warnings());
    gw.stop().await;
}

/// 40 answers of about 5,000 bytes (three or four parts each, every part distinct) while
/// `message/send` fails at `rate` (-1, 42001 and 45009 in turn). Returns the tally of parts and
/// how many replies went to the outbox after the client's own retries gave up, and the
/// gateway's warnings.
async fn answers_under_rest_errors(rate: f64, seed: u64) -> (super::Tally, u64, String) {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &wecom, &Setup::FAST).await;
    wecom
        .emu
        .fail_sends_at_rate(rate, &[-1, 42001, 45009], seed);
    let n = 40;
    let texts: Vec<String> = (0..n)
        .map(|i| format!("long {i} ") + &format!("段落{i}。").repeat(600))
        .collect();
    futures::stream::iter(0..n)
        .for_each_concurrent(8, |i| {
            let (wecom, text) = (&wecom, texts[i].clone());
            async move {
                let s = wecom.text(&format!("r{i}"), &text, 30_000 + i as u64);
                deliver(&wecom.callback_url(&s), &s).await;
            }
        })
        .await;
    let expected: Vec<String> = texts
        .iter()
        .flat_map(|t| gateway_core::text::split_with_markers(&format!("echo: {t}"), 2048))
        .collect();
    assert!(expected.len() >= 3 * n, "{} parts", expected.len());
    let t = settle(&wecom.emu, &expected).await;
    let failed = wecom
        .emu
        .calls_to(wecom_emulator::rest::Endpoint::Send)
        .iter()
        .filter(|c| c.errcode != 0)
        .count();
    assert!(
        failed > 20,
        "the fault was not injected ({failed} failures)"
    );
    let undelivered = gw.metric("gateway_undelivered_total").await;
    t.print(&format!(
        "{n} multi-part answers counted by part, {:.0} % REST errors ({failed} failed sends, {undelivered} replies resumed from the outbox)",
        rate * 100.0
    ));
    let warnings = gw.warnings();
    gw.stop().await;
    (t, undelivered, warnings)
}

#[tokio::test]
async fn thirty_percent_rest_errors_repeat_no_part() {
    let (t, _, warnings) = answers_under_rest_errors(0.3, 20261202).await;
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{warnings}");
}

/// Harsher than WeCom gets: the client's own retries give up on many parts, so replies are
/// resumed from the outbox after a confirmed part 1 or 2; none of those parts comes twice.
#[tokio::test]
async fn rest_errors_past_the_clients_retries_resume_at_the_first_unconfirmed_part() {
    let (t, resumed, warnings) = answers_under_rest_errors(0.6, 7).await;
    assert!(
        resumed > 0,
        "no reply went through the outbox: the test proves nothing"
    );
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{warnings}");
}

#[tokio::test]
async fn a_rest_api_down_for_twenty_seconds_loses_nothing() {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &wecom, &Setup::FAST).await;
    wecom.emu.down_for(Duration::from_secs(20));
    let down_at = Instant::now();
    for i in 0..20u64 {
        let s = wecom.text(
            &format!("d{}", i % 5),
            &format!("while down {i}"),
            40_000 + i,
        );
        deliver(&wecom.callback_url(&s), &s).await;
    }
    // While it is down, the answers wait in the outbox and /health says so.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = gw.health().await;
        if h["undelivered"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing undelivered while down: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        down_at.elapsed() < Duration::from_secs(20),
        "the outage ended too early for the test"
    );
    let expected: Vec<String> = (0..20).map(|i| format!("echo: while down {i}")).collect();
    let t = settle(&wecom.emu, &expected).await;
    t.print("20 answers through a 20 s REST outage");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", gw.warnings());
    // Delivered: the gauge is back at zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.health().await["undelivered"] != 0 {
        assert!(
            Instant::now() < deadline,
            "undelivered never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn one_users_slow_download_delays_nobody_else() {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &wecom, &Setup::FAST).await;
    let media = wecom
        .emu
        .add_media(b"\x89PNG\r\n\x1a\n slow picture", "image/png", "slow.png");
    wecom.emu.delay_media_get(&media, Duration::from_secs(10));
    let slow = wecom
        .app
        .sign_post(&wecom.app.media_xml("slowpoke", "image", &media, 50_000));
    deliver(&wecom.callback_url(&slow), &slow).await;
    // Its download is under way (the callback was accepted); now 16 other users ask.
    let mut worst = Duration::ZERO;
    for i in 0..16u64 {
        let text = format!("quick {i}");
        let s = wecom.text(&format!("other{i}"), &text, 50_100 + i);
        let asked = Instant::now();
        deliver(&wecom.callback_url(&s), &s).await;
        let want = format!("echo: {text}");
        let deadline = asked + Duration::from_secs(5);
        while !wecom.emu.sent_contents().iter().any(|(_, c)| *c == want) {
            assert!(
                Instant::now() < deadline,
                "{want} waited behind the slow download"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst = worst.max(asked.elapsed());
    }
    // Everyone else was answered while the slow download still ran.
    assert!(
        !wecom
            .emu
            .sent_contents()
            .iter()
            .any(|(u, _)| u == "slowpoke"),
        "the slow user's answer came first"
    );
    super::report(&format!(
        "slow download: worst answer latency of 16 other users {worst:?}"
    ));
    assert!(worst < Duration::from_secs(1), "worst latency {worst:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wecom
        .emu
        .sent_contents()
        .iter()
        .any(|(u, _)| u == "slowpoke")
    {
        assert!(
            Instant::now() < deadline,
            "the slow user was never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_operator_lists_retries_and_drops_undelivered_replies() {
    let wecom = Wecom::start().await;
    let dir = tempfile::tempdir().unwrap();
    // No automatic retry within the test: only the operator's `retry` delivers.
    let setup = Setup {
        outbox_retry_secs: 3600,
        ..Setup::FAST
    };
    let gw = Gateway::start(dir.path(), &wecom, &setup).await;
    wecom.emu.set_down(true);
    for (i, user) in ["keep", "drop"].iter().enumerate() {
        let s = wecom.text(user, &format!("for {user}"), 70_000 + i as u64);
        deliver(&wecom.callback_url(&s), &s).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.health().await["undelivered"] != 2 {
        assert!(Instant::now() < deadline, "{}", gw.health().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, list) = gw.cli(&["outbox", "list"]);
    assert!(ok, "{list}");
    assert!(
        list.contains("to user:") && list.contains("failed"),
        "{list}"
    );
    let id_of = |user: &str| -> String {
        let lines: Vec<&str> = list.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.contains(&format!("echo: for {user}")))
            .unwrap_or_else(|| panic!("{user} not listed: {list}"));
        lines[i - 1].split_whitespace().next().unwrap().to_owned()
    };
    let (ok, out) = gw.cli(&["outbox", "drop", &id_of("drop")]);
    assert!(ok, "{out}");
    let (ok, out) = gw.cli(&["outbox", "drop", "999999"]);
    assert!(!ok, "dropping an unknown id must fail: {out}");

    wecom.emu.set_down(false);
    let (ok, out) = gw.cli(&["outbox", "retry"]);
    assert!(ok && out.contains("retrying"), "{out}");
    let expected = ["echo: for keep".to_owned()];
    let t = settle(&wecom.emu, &expected).await;
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", gw.warnings());
    assert!(
        !wecom.emu.sent_contents().iter().any(|(u, _)| u == "drop"),
        "a dropped reply was sent"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.health().await["undelivered"] != 0 {
        assert!(Instant::now() < deadline, "{}", gw.health().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, list) = gw.cli(&["outbox", "list"]);
    assert!(list.contains("outbox is empty"), "{list}");
    gw.stop().await;
}
