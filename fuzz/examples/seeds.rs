//! Writes the seed corpora under `fuzz/corpus/<target>/`: a few valid inputs per target, in the
//! framing each target documents. Ciphertexts and signatures are made with the fixed test app's
//! key, so the seeds reach the paths behind a successful decryption. Deterministic: running it
//! again rewrites the same files.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`

use std::path::Path;

use gateway_fuzz::{crypto, AGENT_ID, CORP_ID};
use wecom_common::crypto::encode_query_value;
use wecom_common::media::{encode_media_key, encrypt_media};

fn write(target: &str, name: &str, data: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), data).expect("seed written");
}

/// NUL-joined fields, the framing of `gateway_fuzz::fields`.
fn framed(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// A decrypted callback (wecom-callback reference §2.4) from `FromUserName` on.
fn inner(body: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>\
         <FromUserName><![CDATA[zhangsan]]></FromUserName>\
         <CreateTime>1700000000</CreateTime>{body}\
         <AgentID>{AGENT_ID}</AgentID></xml>"
    )
}

fn callback_seeds() {
    let messages = [
        ("text", "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello & <b>]]></Content><MsgId>7300000000000000001</MsgId>".to_owned()),
        ("image", "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://example.invalid/p.jpg]]></PicUrl><MediaId><![CDATA[m_img]]></MediaId><MsgId>2</MsgId>".to_owned()),
        ("voice", "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m_v]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[hi]]></Recognition><MsgId>3</MsgId>".to_owned()),
        ("file", "<MsgType><![CDATA[file]]></MsgType><MediaId><![CDATA[m_f]]></MediaId><FileName><![CDATA[report.pdf]]></FileName><MsgId>4</MsgId>".to_owned()),
        ("location", "<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>15</Scale><Label><![CDATA[Guangzhou]]></Label><MsgId>5</MsgId>".to_owned()),
        ("link", "<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[t]]></Title><Description><![CDATA[d]]></Description><Url><![CDATA[https://example.invalid/]]></Url><PicUrl><![CDATA[]]></PicUrl><MsgId>6</MsgId>".to_owned()),
        ("click", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[click]]></Event><EventKey><![CDATA[menu_1]]></EventKey>".to_owned()),
        ("enter_agent", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey>".to_owned()),
        ("scancode", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_waitmsg]]></Event><EventKey><![CDATA[s]]></EventKey><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo>".to_owned()),
        ("pics", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_sysphoto]]></Event><EventKey><![CDATA[p]]></EventKey><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item></PicList></SendPicsInfo>".to_owned()),
        ("card", "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[ok]]></EventKey><TaskId><![CDATA[task1]]></TaskId>".to_owned()),
    ];
    for (name, body) in &messages {
        write("callback_message", name, inner(body));
    }
    // A system notification, with a declaration, a comment and entity references.
    write(
        "callback_message",
        "sys",
        "<?xml version=\"1.0\"?>\n<!-- change -->\n<xml>\n  <ToUserName>ww1</ToUserName>\n  \
         <FromUserName>sys</FromUserName>\n  <MsgType>event</MsgType>\n  \
         <Event>change_contact</Event>\n  <Name>a &amp; b &#x4e2d;</Name>\n</xml>\n",
    );

    let c = crypto();
    let random = *b"0123456789abcdef";
    let text = inner(&messages[0].1);
    let signed = c.sign_callback_with_random(&text, "1000002", "1700000000", "nonce123", &random);
    write("callback_envelope", "signed_text", &signed.body);
    let card = inner(&messages[10].1);
    let signed_card = c.sign_callback_with_random(&card, "1000002", "1700000001", "n2", &random);
    write("callback_envelope", "signed_card", &signed_card.body);
    let reply = c.reply_envelope_with_random(
        "<xml><Content>ok</Content></xml>",
        "1700000002",
        "n3",
        &random,
    );
    write("callback_envelope", "reply_envelope", reply);
    write(
        "callback_envelope",
        "bare",
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<xml>\n  <Encrypt>\n    AAAA\n  </Encrypt>\n</xml>\n",
    );

    // callback_crypto: random ‖ mode ‖ msg ‖ tail ‖ ciphertext ‖ signature ‖ timestamp ‖ nonce ‖ query
    let url = c.sign_url_verification_with_random("echo-123", "1700000003", "n4", &random);
    for (name, mode, msg, tail, signed) in [
        ("callback", 0u8, text.as_str(), "", &signed),
        ("url_verification", 0, "echo-123", "", &url),
        ("bad_length_field", 1 | (3 << 2), "hi", "", &signed),
        ("foreign_corp", 4, "hi", "ww_other", &url),
        ("raw_padding", 8, "hi", "\x10\x10", &signed),
    ] {
        let data = [
            &random[..],
            &framed(&[
                &[mode],
                msg.as_bytes(),
                tail.as_bytes(),
                signed.encrypt.as_bytes(),
                signed.msg_signature.as_bytes(),
                signed.timestamp.as_bytes(),
                signed.nonce.as_bytes(),
                signed.query.as_bytes(),
            ]),
        ]
        .concat();
        write("callback_crypto", name, data);
    }
    let query = format!(
        "msg_signature={}&timestamp=1&nonce=%E4%B8%AD&echostr={}&timestamp=2&x",
        encode_query_value("abc"),
        encode_query_value("a+b/c=="),
    );
    write(
        "callback_crypto",
        "query",
        [
            &random[..],
            &framed(&[&[0], b"", b"", b"", b"", b"", b"", query.as_bytes()]),
        ]
        .concat(),
    );
}

fn aibot_frames() -> Vec<(&'static str, String)> {
    let media = r#""url":"https://example.invalid/m","aeskey":"WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo""#;
    let head = r#""msgid":"MSG","aibotid":"bot","create_time":1700000000"#;
    vec![
        ("text_dm", format!(r#"{{"cmd":"aibot_msg_callback","headers":{{"req_id":"r1"}},"body":{{{head},"chattype":"single","from":{{"userid":"zhangsan"}},"msgtype":"text","text":{{"content":"hello /new"}}}}}}"#)),
        ("text_group", format!(r#"{{"cmd":"aibot_msg_callback","headers":{{"req_id":"r2"}},"body":{{{head},"chattype":"group","chatid":"wrkSFfCgAA","from":{{"userid":"lisi"}},"msgtype":"text","text":{{"content":"@bot /stop@bot now"}}}}}}"#)),
        ("image", format!(r#"{{"cmd":"aibot_msg_callback","headers":{{"req_id":"r3"}},"body":{{{head},"chattype":"single","from":{{"userid":"u"}},"msgtype":"image","image":{{{media}}}}}}}"#)),
        ("mixed_quote", format!(r#"{{"cmd":"aibot_msg_callback","headers":{{"req_id":"r4"}},"body":{{{head},"chattype":"single","from":{{"userid":"u"}},"msgtype":"mixed","mixed":{{"msg_item":[{{"msgtype":"text","text":{{"content":"see"}}}},{{"msgtype":"image","image":{{"base64":"data:image/png;base64,iVBORw0KGgo="}}}}]}},"quote":{{"msgtype":"appmsg","appmsg":{{"title":"Doc","digest":"d","url":"https://example.invalid/a"}}}}}}}}"#)),
        ("file", format!(r#"{{"cmd":"aibot_callback","headers":{{"req_id":"r5"}},"body":{{"msgid":12345,"chattype":"single","from":{{"userid":"u"}},"msgtype":"file","file":{{{media},"filename":"a.pdf"}}}}}}"#)),
        ("appmsg_file", format!(r#"{{"cmd":"aibot_msg_callback","headers":{{"req_id":"r6"}},"body":{{{head},"chattype":"single","from":{{"userid":"u"}},"msgtype":"appmsg","appmsg":{{"title":"x.docx","file":{{{media}}}}}}}}}"#)),
        ("voice_video", format!(r#"{{"cmd":"aibot_msg_callback","headers":{{"req_id":"r7"}},"body":{{{head},"chattype":"single","from":{{"userid":"u"}},"msgtype":"voice","voice":{{"content":"transcript"}},"video":{{{media}}}}}}}"#)),
        ("enter_chat", r#"{"cmd":"aibot_event_callback","headers":{"req_id":"e1"},"body":{"msgid":"E1","from":{"userid":"u"},"msgtype":"event","event":{"eventtype":"enter_chat"}}}"#.into()),
        ("card_event", r#"{"cmd":"aibot_event_callback","headers":{"req_id":"e2"},"body":{"msgid":"E2","from":{"userid":"u"},"chattype":"group","chatid":"g","msgtype":"event","event":{"eventtype":"template_card_event","template_card_event":{"card_type":"button_interaction","event_key":"ok","task_id":"t1"}}}}"#.into()),
        ("feedback", r#"{"cmd":"aibot_event_callback","headers":{"req_id":"e3"},"body":{"msgid":"E3","from":{"userid":"u"},"event":{"eventtype":"feedback_event","feedback_event":{"id":"f","type":1}}}}"#.into()),
        ("disconnected", r#"{"cmd":"aibot_event_callback","headers":{"req_id":"e4"},"body":{"event_type":"disconnected_event","from":{"userid":"u"}}}"#.into()),
        ("ack_error", r#"{"headers":{"req_id":"aibot_send_msg_1"},"errcode":"846609","errmsg":"not subscribed"}"#.into()),
        ("raw_control", "{\"cmd\":\"aibot_msg_callback\",\"headers\":{\"req_id\":\"r8\"},\"body\":{\"from\":{\"userid\":\"u\"},\"msgtype\":\"text\",\"text\":{\"content\":\"a\tb\rc\"}}}".into()),
    ]
}

fn aibot_seeds() {
    let frames = aibot_frames();
    for (name, frame) in &frames {
        write("aibot_frame", name, frame);
    }
    let get = |n: &str| {
        frames
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, f)| f.clone())
            .unwrap_or_default()
    };
    let scripts = [
        (
            "buffered_then_ack",
            vec![
                get("text_dm"),
                "#ack".into(),
                get("text_dm"),
                get("enter_chat"),
            ],
        ),
        (
            "requests",
            vec![
                "#ack".into(),
                "#submit q1".into(),
                "#submit q1".into(),
                "#submit q2".into(),
                r#"{"headers":{"req_id":"q1"},"errcode":0}"#.into(),
                r#"{"headers":{"req_id":"q2"},"errcode":846609,"errmsg":"x"}"#.into(),
                "#tick".into(),
                "#tick".into(),
                "#tick".into(),
            ],
        ),
        (
            "pings_and_drop",
            vec![
                "#ack".into(),
                "#wait".into(),
                "#wait".into(),
                get("text_group"),
                "#drop".into(),
                "#tick".into(),
                "#ack".into(),
                get("text_group"),
                "#wait".into(),
                get("text_group"),
            ],
        ),
        (
            "refused",
            vec!["#ackfail".into(), "#tick".into(), "#ack".into()],
        ),
        (
            "taken_over",
            vec![
                "#ack".into(),
                "#submit q".into(),
                get("disconnected"),
                "#drop".into(),
                "#wait".into(),
            ],
        ),
    ];
    for (name, lines) in scripts {
        write("aibot_session", name, lines.join("\n"));
    }
}

fn media_seeds() {
    let key = [0x5a_u8; 32];
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    let aeskey = encode_media_key(&key);
    let sealed = encrypt_media(png, &key);
    write(
        "media",
        "png_sealed",
        framed(&[b"image/png", aeskey.as_bytes(), &sealed]),
    );
    write(
        "media",
        "png_plain",
        framed(&[b"image/png; charset=binary", b"", png]),
    );
    write(
        "media",
        "pdf",
        framed(&[
            b"application/pdf",
            b"WlpaWlpa%3D",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        ]),
    );
    write(
        "media",
        "mp4",
        framed(&[b"video/mp4", b"", b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom"]),
    );
    write(
        "media",
        "amr",
        framed(&[b"audio/amr", b"", b"#!AMR\n\x3c\x48\xf5\x1f"]),
    );
    write(
        "media",
        "zip_docx",
        framed(&[
            b"application/octet-stream",
            b"",
            b"PK\x03\x04\x14\0\x06\0\x08\0\0\0!\0[Content_Types].xmlword/document.xml",
        ]),
    );
}

fn header_and_admin_seeds() {
    for (name, value) in [
        ("quoted", "attachment; filename=\"a b.pdf\""),
        (
            "extended",
            "attachment; filename=\"x.pdf\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf",
        ),
        ("traversal", "attachment; filename=../../etc/passwd"),
        ("backslash", "attachment; filename=\"..\\\\..\\\\x.exe\""),
        (
            "language",
            "inline; FILENAME*=utf-8'zh-CN'%E4%B8%AD.txt; size=3",
        ),
        ("bare", "inline"),
    ] {
        write("content_disposition", name, value);
    }
    for (name, body) in [
        (
            "text",
            r#"{"platform":"wecom","to":"user:zhangsan","text":"hello"}"#,
        ),
        (
            "markdown_group",
            r#"{"platform":"wecom","to":"group:wrkSFfCgAA","markdown":"**hi**\n- a"}"#,
        ),
        (
            "file_party",
            r#"{"platform":"wecom_callback","to":"party:2","file":"/tmp/report.pdf"}"#,
        ),
        (
            "all_nulls",
            r#"{"platform":"cb","to":"@all","text":null,"markdown":null,"file":null,"text":"x"}"#,
        ),
        (
            "corp_user",
            r#"{"platform":"cb","to":"ww1:zhangsan","text":"\u4e2d\ud83d\ude00"}"#,
        ),
        (
            "unknown_field",
            r#"{"platform":"cb","to":"tag:1","txt":"x"}"#,
        ),
    ] {
        write("admin_send", name, body);
    }
}

fn main() {
    callback_seeds();
    aibot_seeds();
    media_seeds();
    header_and_admin_seeds();
}
