//! Classifies a decrypted callback (wecom-callback reference §2.4 message and event fields) into
//! what the adapter does with it, and derives the dedup key (§4.4).
//!
//! Unlike the baseline peer (§2.5, §7 items 1–3), nothing is turned into a fake `/start`: media,
//! location and link messages become typed content, interactive events become typed events,
//! lifecycle and system events are only logged, and unknown types are acknowledged and logged.

use std::collections::BTreeMap;

use gateway_core::{MediaKind, PlatformEvent};
use wecom_common::xml::Message;

/// What a callback asks of the adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A text message.
    Text {
        /// `Content`.
        content: String,
    },
    /// An image, voice, video or file to fetch with `media/get`.
    Media {
        /// The media kind.
        kind: MediaKind,
        /// `MediaId`.
        media_id: String,
        /// Voice `Format` (`amr`, `speex`), or the file extension WeCom names.
        format: Option<String>,
        /// A file name WeCom gives (`FileName`/`Title`), if any.
        name: Option<String>,
        /// Voice recognition text, if the app has it enabled.
        caption: String,
    },
    /// A shared location.
    Location {
        /// `Location_X` (latitude).
        latitude: f64,
        /// `Location_Y` (longitude).
        longitude: f64,
        /// `Label`.
        label: String,
        /// `Scale` (map zoom).
        scale: Option<String>,
    },
    /// A shared link.
    Link {
        /// `Title`.
        title: String,
        /// `Description`.
        description: String,
        /// `Url`.
        url: String,
        /// `PicUrl`.
        pic_url: String,
    },
    /// A user interaction the router sees as a typed event.
    Event {
        /// The typed event.
        event: PlatformEvent,
        /// The event's own fields (scan result, picked location, …) for visibility.
        fields: BTreeMap<String, String>,
    },
    /// Acknowledged and logged only: `subscribe`, `unsubscribe`, automatic `LOCATION` reports,
    /// system events (`sys`), and unknown message types.
    LogOnly {
        /// What it was, for the log line.
        what: String,
    },
}

/// A decrypted callback, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// `FromUserName`: the member's bare UserID.
    pub user: String,
    /// `CreateTime` in Unix seconds (0 when absent).
    pub create_time: i64,
    /// The dedup key and platform message id (unique per app).
    pub id: String,
    /// What to do.
    pub body: Body,
}

/// Envelope fields every callback carries; events' extra fields are everything else.
const COMMON_FIELDS: &[&str] = &[
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "AgentID",
    "Event",
    "MsgId",
];

/// Classifies `msg` received through the app `corp_id`/`agent_id`.
pub fn parse(msg: &Message, corp_id: &str, agent_id: i64) -> Parsed {
    let user = msg.from_user_name().unwrap_or("").trim().to_owned();
    let create_time = msg.create_time().unwrap_or(0);
    let msg_type = msg.msg_type().unwrap_or("").trim().to_ascii_lowercase();
    let event = msg.event().unwrap_or("").trim().to_owned();
    let key = msg.event_key().unwrap_or("").to_owned();
    let id = match msg.msg_id().map(str::trim).filter(|m| !m.is_empty()) {
        Some(msg_id) => format!("{corp_id}:{agent_id}:{msg_id}"),
        // Events have no MsgId (§4.4). The event key is added to the documented
        // FromUserName+CreateTime+Event so two different clicks in one second stay distinct;
        // a retry repeats all four.
        None => format!("{corp_id}:{agent_id}:{user}:{create_time}:{msg_type}:{event}:{key}"),
    };
    let get = |name: &str| msg.get(name).unwrap_or("").to_owned();
    let media = |kind: MediaKind| Body::Media {
        kind,
        media_id: get("MediaId").trim().to_owned(),
        format: msg
            .get("Format")
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty()),
        name: msg
            .get("FileName")
            .or_else(|| msg.get("Title"))
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
        caption: get("Recognition").trim().to_owned(),
    };
    let body = if user.is_empty() || user == "sys" {
        // System notifications (contact changes, batch jobs) have no user to answer.
        Body::LogOnly {
            what: format!("system {msg_type} {event}").trim().to_owned(),
        }
    } else {
        match msg_type.as_str() {
            "text" => Body::Text {
                content: get("Content"),
            },
            "image" => media(MediaKind::Image),
            "voice" => media(MediaKind::Voice),
            "video" => media(MediaKind::Video),
            "file" => media(MediaKind::File),
            "location" => match (coord(msg, "Location_X"), coord(msg, "Location_Y")) {
                (Some(latitude), Some(longitude)) => Body::Location {
                    latitude,
                    longitude,
                    label: get("Label").trim().to_owned(),
                    scale: msg.get("Scale").map(str::to_owned),
                },
                _ => Body::LogOnly {
                    what: "location without coordinates".into(),
                },
            },
            "link" => Body::Link {
                title: get("Title"),
                description: get("Description"),
                url: get("Url").trim().to_owned(),
                pic_url: get("PicUrl").trim().to_owned(),
            },
            "event" => classify_event(msg, &event, key),
            other => Body::LogOnly {
                what: format!(
                    "unknown message type `{}`",
                    gateway_core::redact::printable(other)
                ),
            },
        }
    };
    if let Body::Media { media_id, .. } = &body {
        if media_id.is_empty() {
            return Parsed {
                user,
                create_time,
                id,
                body: Body::LogOnly {
                    what: format!("{msg_type} without MediaId"),
                },
            };
        }
    }
    Parsed {
        user,
        create_time,
        id,
        body,
    }
}

fn classify_event(msg: &Message, event: &str, key: String) -> Body {
    let fields: BTreeMap<String, String> = msg
        .fields()
        .iter()
        .filter(|(p, _)| !COMMON_FIELDS.contains(&p.as_str()))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    let typed = |event| Body::Event {
        event,
        fields: fields.clone(),
    };
    match event.to_ascii_lowercase().as_str() {
        "enter_agent" => typed(PlatformEvent::EnterChat),
        "subscribe" | "unsubscribe" => Body::LogOnly {
            what: format!("{event} event"),
        },
        // Automatic location reports arrive without a user action; answering them would spam.
        "location" => Body::LogOnly {
            what: "automatic location report".into(),
        },
        "click" => typed(PlatformEvent::MenuClick { key }),
        "view" => typed(PlatformEvent::MenuView { url: key }),
        "template_card_event" | "template_card_menu_event" => typed(PlatformEvent::TemplateCard {
            task_id: msg.get("TaskId").unwrap_or("").to_owned(),
            key,
        }),
        "" => Body::LogOnly {
            what: "event without a name".into(),
        },
        // scancode_push, scancode_waitmsg, pic_sysphoto, pic_photo_or_album, pic_weixin,
        // location_select and anything newer: a named event with its fields.
        _ => typed(PlatformEvent::Other { name: clip(event) }),
    }
}

fn coord(msg: &Message, name: &str) -> Option<f64> {
    msg.get(name)?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// Bounds untrusted names that end up in logs and ids.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wecom_common::xml::parse_message;

    fn p(xml: &str) -> Parsed {
        parse(&parse_message(xml).unwrap(), "ww1", 1000002)
    }

    fn wrap(from: &str, inner: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
             <CreateTime>1710000000</CreateTime>{inner}<AgentID>1000002</AgentID></xml>"
        )
    }

    #[test]
    fn text_messages_keep_their_content_and_msg_id() {
        let m = p(&wrap("zhangsan", "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content><MsgId>123</MsgId>"));
        assert_eq!(m.user, "zhangsan");
        assert_eq!(m.id, "ww1:1000002:123");
        assert_eq!(
            m.body,
            Body::Text {
                content: "你好".into()
            }
        );
    }

    #[test]
    fn media_types_carry_media_id_and_format() {
        let m = p(&wrap(
            "u",
            "<MsgType>voice</MsgType><MediaId>m1</MediaId><Format>AMR</Format><MsgId>1</MsgId>",
        ));
        assert!(
            matches!(m.body, Body::Media { kind: MediaKind::Voice, ref media_id, ref format, .. }
            if media_id == "m1" && format.as_deref() == Some("amr"))
        );
        for (t, k) in [
            ("image", MediaKind::Image),
            ("video", MediaKind::Video),
            ("file", MediaKind::File),
        ] {
            let m = p(&wrap(
                "u",
                &format!("<MsgType>{t}</MsgType><MediaId>m</MediaId><MsgId>2</MsgId>"),
            ));
            assert!(
                matches!(m.body, Body::Media { kind, .. } if kind == k),
                "{t}"
            );
        }
        let missing = p(&wrap("u", "<MsgType>image</MsgType><MsgId>3</MsgId>"));
        assert!(matches!(missing.body, Body::LogOnly { .. }));
    }

    #[test]
    fn location_and_link_are_structured() {
        let m = p(&wrap("u", "<MsgType>location</MsgType><Location_X>23.13</Location_X><Location_Y>113.26</Location_Y><Scale>15</Scale><Label><![CDATA[广州]]></Label><MsgId>4</MsgId>"));
        assert_eq!(
            m.body,
            Body::Location {
                latitude: 23.13,
                longitude: 113.26,
                label: "广州".into(),
                scale: Some("15".into())
            }
        );
        let l = p(&wrap("u", "<MsgType>link</MsgType><Title>T</Title><Description>D</Description><Url>https://x.invalid/a</Url><PicUrl>p</PicUrl><MsgId>5</MsgId>"));
        assert!(
            matches!(l.body, Body::Link { ref title, ref url, .. } if title == "T" && url == "https://x.invalid/a")
        );
    }

    #[test]
    fn events_are_typed_never_a_fake_start() {
        let ev = |name: &str, extra: &str| {
            p(&wrap(
                "u",
                &format!(
                    "<MsgType>event</MsgType><Event>{name}</Event><EventKey>K</EventKey>{extra}"
                ),
            ))
            .body
        };
        assert!(matches!(
            ev("enter_agent", ""),
            Body::Event {
                event: PlatformEvent::EnterChat,
                ..
            }
        ));
        assert!(
            matches!(ev("click", ""), Body::Event { event: PlatformEvent::MenuClick { ref key }, .. } if key == "K")
        );
        assert!(
            matches!(ev("view", ""), Body::Event { event: PlatformEvent::MenuView { ref url }, .. } if url == "K")
        );
        assert!(matches!(ev("template_card_event", "<TaskId>t1</TaskId>"),
            Body::Event { event: PlatformEvent::TemplateCard { ref task_id, .. }, .. } if task_id == "t1"));
        match ev(
            "scancode_push",
            "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>R</ScanResult></ScanCodeInfo>",
        ) {
            Body::Event {
                event: PlatformEvent::Other { name },
                fields,
            } => {
                assert_eq!(name, "scancode_push");
                assert_eq!(fields["ScanCodeInfo.ScanResult"], "R");
                assert_eq!(fields["EventKey"], "K");
            }
            other => panic!("{other:?}"),
        }
        for name in ["subscribe", "unsubscribe", "LOCATION"] {
            assert!(matches!(ev(name, ""), Body::LogOnly { .. }), "{name}");
        }
    }

    #[test]
    fn system_senders_and_unknown_types_are_log_only() {
        let sys = p(&wrap(
            "sys",
            "<MsgType>event</MsgType><Event>change_contact</Event>",
        ));
        assert!(matches!(sys.body, Body::LogOnly { .. }));
        let unknown = p(&wrap("u", "<MsgType>hologram</MsgType><MsgId>9</MsgId>"));
        assert!(matches!(unknown.body, Body::LogOnly { ref what } if what.contains("hologram")));
    }

    #[test]
    fn event_ids_use_sender_time_event_and_key() {
        let a = p(&wrap(
            "u",
            "<MsgType>event</MsgType><Event>click</Event><EventKey>A</EventKey>",
        ));
        let b = p(&wrap(
            "u",
            "<MsgType>event</MsgType><Event>click</Event><EventKey>B</EventKey>",
        ));
        assert_eq!(a.id, "ww1:1000002:u:1710000000:event:click:A");
        assert_ne!(a.id, b.id);
    }
}
