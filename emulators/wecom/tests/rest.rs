//! The REST half of the emulator: the callback signer reproduces the wechatpy vectors
//! (`fixtures/wecom-callback.json`), and the fake API answers like WeCom, including the
//! injected failures tests rely on.

use std::time::Duration;

use serde_json::{json, Value};
use wecom_emulator::rest::{Endpoint, FakeApp, FakeWeComApi, DOWN_ERRCODE};

const VECTORS: &str = include_str!("fixtures/wecom-callback.json");

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key}"))
}

#[test]
fn the_signer_reproduces_every_wechatpy_vector() {
    let all: Value = serde_json::from_str(VECTORS).unwrap();
    let mut checked = 0;
    for v in all["vectors"].as_array().unwrap() {
        let i = &v["inputs"];
        let agent: i64 = s(i, "agent_id").parse().unwrap();
        let app = FakeApp::new(
            s(i, "corp_id"),
            "secret",
            agent,
            s(i, "token"),
            s(i, "encoding_aes_key"),
        );
        let (ts, nonce) = (s(i, "timestamp"), s(i, "nonce"));
        let pc = &v["post_callback"];
        // Every vector, including those with a random prefix, decrypts with the signer's keys.
        let inner = app
            .crypto()
            .verify_and_decrypt(s(pc, "msg_signature"), ts, nonce, s(pc, "encrypt"))
            .unwrap();
        assert_eq!(inner, s(pc, "inner_xml"));
        let Some(random) = i["random_prefix"].as_str() else {
            let fresh = app.sign_post(&inner);
            let again = app
                .crypto()
                .verify_and_decrypt(
                    &fresh.msg_signature,
                    &fresh.timestamp,
                    &fresh.nonce,
                    &fresh.encrypt,
                )
                .unwrap();
            assert_eq!(again, inner);
            continue;
        };
        let random: [u8; 16] = random.as_bytes().try_into().unwrap();

        let uv = &v["url_verification"];
        let get = app.sign_url_verification_at(s(uv, "echostr_plain"), ts, nonce, &random);
        assert_eq!(get.encrypt, s(uv, "echostr"), "{}", s(v, "name"));
        assert_eq!(get.msg_signature, s(uv, "msg_signature"));
        assert_eq!(
            format!("GET /wecom/callback?{}", get.query),
            s(uv, "request")
        );

        let post = app.sign_post_at(s(pc, "inner_xml"), ts, nonce, &random);
        assert_eq!(post.encrypt, s(pc, "encrypt"), "{}", s(v, "name"));
        assert_eq!(post.msg_signature, s(pc, "msg_signature"));
        assert_eq!(
            format!("POST /wecom/callback?{}", post.query),
            s(pc, "request")
        );
        assert_eq!(post.body, s(pc, "body"));
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} vectors had a fixed random prefix"
    );
}

#[test]
fn built_messages_decrypt_to_the_documented_fields() {
    let emu_key = wecom_emulator::rest::random_encoding_aes_key();
    let app = FakeApp::new("wwX", "s", 1000002, "tok", &emu_key);
    let signed = app.sign_post(&app.voice_xml("alice", "m-1", "amr", 42));
    let xml = app
        .crypto()
        .verify_and_decrypt(
            &signed.msg_signature,
            &signed.timestamp,
            &signed.nonce,
            &signed.encrypt,
        )
        .unwrap();
    let m = wecom_common::xml::parse_message(&xml).unwrap();
    assert_eq!(m.from_user_name(), Some("alice"));
    assert_eq!(m.msg_type(), Some("voice"));
    assert_eq!(m.get("Format"), Some("amr"));
    assert_eq!(m.msg_id(), Some("42"));
    assert_eq!(m.to_user_name(), Some("wwX"));
    let ev = wecom_common::xml::parse_message(&app.event_xml("bob", "click", "K1", "")).unwrap();
    assert_eq!(
        (ev.event(), ev.event_key(), ev.msg_id()),
        (Some("click"), Some("K1"), None)
    );
}

async fn get(url: String) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    let h = r.headers().clone();
    (h, r.bytes().await.unwrap().to_vec())
}

async fn token(emu: &FakeWeComApi, app: &FakeApp) -> String {
    let url = format!(
        "{}/cgi-bin/gettoken?corpid={}&corpsecret={}",
        emu.base_url(),
        app.corp_id,
        app.secret
    );
    let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(v["errcode"], 0, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

async fn send(emu: &FakeWeComApi, token: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/message/send?access_token={token}",
            emu.base_url()
        ))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_sends_and_injected_errors_behave_like_wecom() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwA", 1000002);
    let bad = reqwest::get(format!(
        "{}/cgi-bin/gettoken?corpid=wwA&corpsecret=nope",
        emu.base_url()
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(bad["errcode"], 40001);
    let t = token(&emu, &app).await;
    assert_eq!(emu.tokens_issued("wwA"), 1);

    let body = json!({"touser": "alice", "msgtype": "text", "agentid": 1000002, "text": {"content": "hi"}});
    assert_eq!(send(&emu, &t, body.clone()).await["errcode"], 0);
    let sent = emu.wait_sent(1).await;
    assert_eq!(
        (sent[0].touser(), sent[0].content(), sent[0].agent_id),
        (Some("alice"), Some("hi"), 1000002)
    );

    let wrong_agent =
        json!({"touser": "alice", "msgtype": "text", "agentid": 7, "text": {"content": "hi"}});
    assert_eq!(send(&emu, &t, wrong_agent).await["errcode"], 301002);
    assert_eq!(send(&emu, "unknown", body.clone()).await["errcode"], 40014);

    emu.fail_next_send(45009);
    assert_eq!(send(&emu, &t, body.clone()).await["errcode"], 45009);
    assert_eq!(send(&emu, &t, body.clone()).await["errcode"], 0);

    emu.expire_tokens();
    assert_eq!(send(&emu, &t, body.clone()).await["errcode"], 42001);

    emu.untrusted_ip(Some("203.0.113.7"));
    let t2 = reqwest::get(format!(
        "{}/cgi-bin/gettoken?corpid=wwA&corpsecret={}",
        emu.base_url(),
        app.secret
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(t2["errcode"], 60020);
    assert!(t2["errmsg"]
        .as_str()
        .unwrap()
        .contains("from ip: 203.0.113.7"));
    emu.untrusted_ip(None);

    emu.delay_next(Endpoint::GetToken, Duration::from_millis(150));
    let started = std::time::Instant::now();
    token(&emu, &app).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(emu.calls_to(Endpoint::Send).len(), 6);
}

#[tokio::test]
async fn media_round_trips_through_upload_and_get() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwA", 1000002);
    let t = token(&emu, &app).await;

    let id = emu.add_media(b"\x89PNG\r\n\x1a\nimage-bytes", "image/png", "p.png");
    let (h, bytes) = get(format!(
        "{}/cgi-bin/media/get?access_token={t}&media_id={id}",
        emu.base_url()
    ))
    .await;
    assert_eq!(bytes, b"\x89PNG\r\n\x1a\nimage-bytes");
    assert_eq!(h["content-type"], "image/png");
    assert!(h["content-disposition"].to_str().unwrap().contains("p.png"));
    let (h, bytes) = get(format!(
        "{}/cgi-bin/media/get?access_token={t}&media_id=nope",
        emu.base_url()
    ))
    .await;
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["errcode"],
        40007
    );

    let part = reqwest::multipart::Part::bytes(b"%PDF-1.7 file".to_vec())
        .file_name("r.pdf")
        .mime_str("application/pdf")
        .unwrap();
    let v: Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/media/upload?access_token={t}&type=file",
            emu.base_url()
        ))
        .multipart(reqwest::multipart::Form::new().part("media", part))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], 0, "{v}");
    let up = emu.uploads();
    assert_eq!(
        (
            up[0].kind.as_str(),
            up[0].filename.as_str(),
            up[0].bytes.as_slice()
        ),
        ("file", "r.pdf", &b"%PDF-1.7 file"[..])
    );
    assert_eq!(v["media_id"], up[0].media_id.as_str());
}

// ---- fault injection for the fault suite ----------------------------------------------------

fn text_body(agent_id: i64, n: usize) -> Value {
    json!({"touser": "u", "msgtype": "text", "agentid": agent_id, "text": {"content": format!("m{n}")}})
}

#[tokio::test]
async fn random_send_failures_are_reproducible_and_never_recorded_as_sent() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let emu = FakeWeComApi::start().await;
        let app = emu.app("wwF", 1000002);
        emu.fail_sends_at_rate(0.3, &[-1, 42001, 45009], 7);
        let (mut failed, mut delivered) = (Vec::new(), Vec::new());
        let mut tok = token(&emu, &app).await;
        for n in 0..200 {
            let v = send(&emu, &tok, text_body(1000002, n)).await;
            match v["errcode"].as_i64().unwrap() {
                0 => delivered.push(format!("m{n}")),
                42001 => {
                    failed.push((n, 42001));
                    // The token really expired: the next use is refused until a new one.
                    let again = send(&emu, &tok, text_body(1000002, n)).await;
                    assert_eq!(again["errcode"], 42001);
                    tok = token(&emu, &app).await;
                }
                code @ (-1 | 45009) => failed.push((n, code)),
                other => panic!("unexpected errcode {other}"),
            }
        }
        assert!((40..=80).contains(&failed.len()), "{failed:?}");
        for code in [-1, 42001, 45009] {
            assert!(failed.iter().any(|&(_, c)| c == code), "no {code}");
        }
        // Exactly the successful ones are sent; the failed ones are calls with their errcode.
        let contents: Vec<String> = emu.sent_contents().into_iter().map(|(_, c)| c).collect();
        assert_eq!(contents, delivered);
        let failed_calls = emu
            .calls_to(Endpoint::Send)
            .iter()
            .filter(|c| [-1, 45009].contains(&c.errcode))
            .count();
        let random_42001 = failed.iter().filter(|&&(_, c)| c == 42001).count();
        assert_eq!(failed_calls + random_42001, failed.len());
        emu.fail_sends_at_rate(0.0, &[], 0);
        assert_eq!(
            send(&emu, &tok, text_body(1000002, 999)).await["errcode"],
            0
        );
        runs.push(failed);
    }
    assert_eq!(runs[0], runs[1], "the same seed fails the same sends");
}

async fn status(r: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_down_api_answers_503_and_comes_back() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwD", 1000002);
    let tok = token(&emu, &app).await;
    let media = emu.add_media(b"picture bytes", "image/png", "p.png");
    emu.set_down(true);
    let http = reqwest::Client::new();
    let url = format!("{}/cgi-bin/message/send?access_token={tok}", emu.base_url());
    let send_down = || http.post(&url).json(&text_body(1000002, 1));
    let (code, body) = status(send_down()).await;
    assert_eq!(
        (code, serde_json::from_slice::<Value>(&body).is_ok()),
        (503, false)
    );
    let gettoken = format!(
        "{}/cgi-bin/gettoken?corpid=wwD&corpsecret={}",
        emu.base_url(),
        app.secret
    );
    assert_eq!(status(http.get(&gettoken)).await.0, 503);
    let upload = reqwest::multipart::Part::bytes(b"%PDF-1.7 file".to_vec()).file_name("r.pdf");
    let upload = http
        .post(format!(
            "{}/cgi-bin/media/upload?access_token={tok}&type=file",
            emu.base_url()
        ))
        .multipart(reqwest::multipart::Form::new().part("media", upload));
    assert_eq!(status(upload).await.0, 503);
    let media_get = format!(
        "{}/cgi-bin/media/get?access_token={tok}&media_id={media}",
        emu.base_url()
    );
    assert_eq!(status(http.get(&media_get)).await.0, 503);
    assert!(emu.sent().is_empty() && emu.uploads().is_empty());
    // The token fetched before going down, then four calls answered 503.
    let calls: Vec<(Endpoint, i64)> = emu
        .calls()
        .iter()
        .map(|c| (c.endpoint, c.errcode))
        .collect();
    assert_eq!(
        calls,
        [
            (Endpoint::GetToken, 0),
            (Endpoint::Send, DOWN_ERRCODE),
            (Endpoint::GetToken, DOWN_ERRCODE),
            (Endpoint::Upload, DOWN_ERRCODE),
            (Endpoint::MediaGet, DOWN_ERRCODE),
        ]
    );
    emu.set_down(false);
    assert_eq!(send(&emu, &tok, text_body(1000002, 2)).await["errcode"], 0);

    // down_for ends by itself: poll until it answers again, no fixed sleep.
    let d = Duration::from_millis(300);
    let started = std::time::Instant::now();
    emu.down_for(d);
    assert_eq!(status(send_down()).await.0, 503);
    loop {
        let (code, _) = status(http.get(&gettoken)).await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(started.elapsed() < Duration::from_secs(10), "still down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() >= d, "up after {:?}", started.elapsed());
    assert_eq!(send(&emu, &tok, text_body(1000002, 4)).await["errcode"], 0);
    assert_eq!(emu.sent().len(), 2);
}

#[tokio::test]
async fn a_down_api_refuses_on_arrival_and_keeps_queued_delays_for_later() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwR", 1000002);
    let tok = token(&emu, &app).await;
    let media = emu.add_media(b"picture bytes", "image/png", "p.png");
    emu.pause_sends();
    emu.delay_next(Endpoint::Send, Duration::from_millis(200));
    emu.delay_media_get(&media, Duration::from_secs(30));
    emu.set_down(true);
    // Neither the pause nor the delays make a down fake wait before its 503.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let url = format!("{}/cgi-bin/message/send?access_token={tok}", emu.base_url());
    assert_eq!(
        status(http.post(&url).json(&text_body(1000002, 1))).await.0,
        503
    );
    let media_get = format!(
        "{}/cgi-bin/media/get?access_token={tok}&media_id={media}",
        emu.base_url()
    );
    assert_eq!(status(http.get(&media_get)).await.0, 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(emu.sends_waiting(), 0);
    // Back up: the queued delay was not used up by the outage.
    emu.set_down(false);
    emu.resume_sends();
    emu.delay_media_get(&media, Duration::ZERO);
    let started = std::time::Instant::now();
    assert_eq!(send(&emu, &tok, text_body(1000002, 2)).await["errcode"], 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(get(media_get).await.1, b"picture bytes");
}

#[tokio::test]
async fn paused_sends_wait_and_one_whose_client_gave_up_is_not_delivered() {
    let emu = std::sync::Arc::new(FakeWeComApi::start().await);
    let app = emu.app("wwP", 1000002);
    let tok = token(&emu, &app).await;
    emu.pause_sends();
    let url = format!("{}/cgi-bin/message/send?access_token={tok}", emu.base_url());
    // One client gives up after a second; another waits.
    let impatient = tokio::spawn(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .post(&url)
            .json(&text_body(1000002, 1))
            .send(),
    );
    let patient = tokio::spawn({
        let (emu, tok) = (emu.clone(), tok.clone());
        async move { send(&emu, &tok, text_body(1000002, 2)).await }
    });
    // Readiness, not a sleep: both sends reached the handler and are held there.
    emu.wait_sends_waiting(2).await;
    assert!(emu
        .wait_sent_until(|s| !s.is_empty(), Duration::from_millis(50))
        .await
        .is_none());
    let gave_up = impatient.await.unwrap().unwrap_err();
    assert!(gave_up.is_timeout(), "{gave_up}");
    // Its connection closed, so its handler was dropped: only the patient send is held.
    emu.wait_sends_waiting(1).await;
    assert!(emu.sent().is_empty() && emu.calls_to(Endpoint::Send).is_empty());
    emu.resume_sends();
    assert_eq!(patient.await.unwrap()["errcode"], 0);
    let sent = emu
        .wait_sent_until(|s| s.len() == 1, Duration::from_secs(5))
        .await
        .expect("the patient send");
    assert_eq!(sent[0].content(), Some("m2"));
    assert_eq!(emu.sent_contents(), vec![("u".to_owned(), "m2".to_owned())]);
    // The send whose client gave up is nowhere: not sent, not even a call.
    assert_eq!(emu.calls_to(Endpoint::Send).len(), 1);
    assert_eq!(emu.sends_waiting(), 0);
}

#[tokio::test]
async fn a_slow_media_id_delays_only_its_own_downloads() {
    let emu = FakeWeComApi::start().await;
    let app = emu.app("wwM", 1000002);
    let tok = token(&emu, &app).await;
    let slow = emu.add_media(b"slow bytes", "image/png", "a.png");
    let fast = emu.add_media(b"fast bytes", "image/png", "b.png");
    emu.delay_media_get(&slow, Duration::from_millis(600));
    let url = |id: &str| {
        format!(
            "{}/cgi-bin/media/get?access_token={tok}&media_id={id}",
            emu.base_url()
        )
    };
    let t = std::time::Instant::now();
    let slow_get = tokio::spawn(get(url(&slow)));
    let (_, body) = get(url(&fast)).await;
    assert_eq!(body, b"fast bytes");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let (_, body) = slow_get.await.unwrap();
    assert_eq!(body, b"slow bytes");
    assert!(t.elapsed() >= Duration::from_millis(600));
}
