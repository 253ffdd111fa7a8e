//! A hardened reader for WeCom's XML: the outer callback envelope (wecom-callback reference §2.1)
//! and the decrypted inner message or event (§2.4), with the protections of §11.5.
//!
//! The documents are flat key/value records, so they are read into an ordered list of
//! `(path, text)` pairs rather than a tree. Protections: the caller's byte cap is applied before
//! parsing; any DOCTYPE is refused outright (so no entity can be declared, and nothing is ever
//! expanded); only the five predefined entities and character references are resolved; depth and
//! element count are capped.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Default cap for a callback POST body: 64 KiB, as hermes enforces (reference §6).
pub const DEFAULT_BODY_CAP: usize = 64 * 1024;

/// Deepest element nesting accepted. WeCom's deepest documents (`SendPicsInfo/PicList/item/…`)
/// nest five levels including the root.
pub const MAX_DEPTH: usize = 16;

/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 1024;

/// Longest piece of untrusted input quoted in an error message.
const MAX_ERROR_DETAIL: usize = 64;

/// Why a WeCom XML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body is larger than the cap; nothing was parsed.
    #[error("body of {len} bytes exceeds the {cap}-byte cap")]
    TooLarge {
        /// Body size in bytes.
        len: usize,
        /// The cap in bytes.
        cap: usize,
    },
    /// The document contains a DOCTYPE (DTDs, and so entity declarations, are never accepted).
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    /// A reference to an entity other than the five predefined ones.
    #[error("undeclared entity reference &{0};")]
    Entity(String),
    /// Elements are nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// The document has more than [`MAX_ELEMENTS`] elements.
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    /// A required element is absent.
    #[error("missing element <{0}>")]
    MissingField(&'static str),
    /// The document is not well-formed.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
}

/// The outer POST body of a callback: which corp and app it is for, and the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `ToUserName`: the CorpID, when present.
    pub to_user_name: Option<String>,
    /// `Encrypt`: the base64 ciphertext the signature covers.
    pub encrypt: String,
    /// `AgentID`, when present.
    pub agent_id: Option<String>,
}

/// A parsed flat WeCom document: every leaf element as `(path, text)` in document order.
///
/// The root element (`<xml>`) is not part of the paths. Top-level fields are keyed by their name
/// (`Content`); nested ones by the dotted path below the root (`ScanCodeInfo.ScanResult`,
/// `SendPicsInfo.PicList.item.PicMd5Sum`). Repeated elements appear once per occurrence.
/// CDATA is taken verbatim; text is not trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    fields: Vec<(String, String)>,
}

impl Message {
    /// The text of the first element at `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    /// The texts of every element at `path`, in document order.
    pub fn get_all<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    /// All `(path, text)` pairs in document order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The fields as a map; for repeated paths the first occurrence wins.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for (p, v) in &self.fields {
            map.entry(p.clone()).or_insert_with(|| v.clone());
        }
        map
    }

    /// `ToUserName`: the CorpID.
    pub fn to_user_name(&self) -> Option<&str> {
        self.get("ToUserName")
    }

    /// `FromUserName`: the member's UserID (`sys` for some system events).
    pub fn from_user_name(&self) -> Option<&str> {
        self.get("FromUserName")
    }

    /// `CreateTime` as Unix seconds, when present and numeric.
    pub fn create_time(&self) -> Option<i64> {
        self.get("CreateTime").and_then(|t| t.trim().parse().ok())
    }

    /// `MsgType` (`text`, `image`, `voice`, `video`, `location`, `link`, `event`, …).
    pub fn msg_type(&self) -> Option<&str> {
        self.get("MsgType")
    }

    /// `MsgId`: present on messages, absent on events.
    pub fn msg_id(&self) -> Option<&str> {
        self.get("MsgId")
    }

    /// `AgentID`.
    pub fn agent_id(&self) -> Option<&str> {
        self.get("AgentID")
    }

    /// `Content` of a text message.
    pub fn content(&self) -> Option<&str> {
        self.get("Content")
    }

    /// `Event` of an event (`subscribe`, `enter_agent`, `click`, …).
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// `EventKey` of an event (menu key, URL, …).
    pub fn event_key(&self) -> Option<&str> {
        self.get("EventKey")
    }

    /// `MediaId` of an image, voice or video message.
    pub fn media_id(&self) -> Option<&str> {
        self.get("MediaId")
    }
}

/// Parses the outer callback POST body. The cap is checked before anything is parsed;
/// `Encrypt` is required, `ToUserName` and `AgentID` are optional.
pub fn parse_envelope(body: &[u8], cap: usize) -> Result<Envelope, XmlError> {
    if body.len() > cap {
        return Err(XmlError::TooLarge {
            len: body.len(),
            cap,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let msg = parse_message(text)?;
    let encrypt = msg
        .get("Encrypt")
        .ok_or(XmlError::MissingField("Encrypt"))?
        .to_owned();
    Ok(Envelope {
        to_user_name: msg.to_user_name().map(str::to_owned),
        encrypt,
        agent_id: msg.agent_id().map(str::to_owned),
    })
}

/// One open element while reading.
struct Frame {
    name: String,
    text: String,
    has_children: bool,
}

/// Parses a flat WeCom document (the decrypted inner XML, or a reply envelope).
pub fn parse_message(xml: &str) -> Result<Message, XmlError> {
    let mut reader = Reader::from_str(xml);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Frame> = Vec::new();
    let mut fields = Vec::new();
    let mut elements = 0usize;
    let mut root_seen = false;

    loop {
        let event = reader.read_event().map_err(|e| malformed(&e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(_) | Event::Empty(_) if root_seen && stack.is_empty() => {
                return Err(malformed("more than one root element"));
            }
            Event::Start(start) => {
                open_element(&mut stack, &mut elements, start.name().as_ref())?;
            }
            Event::Empty(start) => {
                open_element(&mut stack, &mut elements, start.name().as_ref())?;
                close_element(&mut stack, &mut fields, &mut root_seen);
            }
            Event::End(_) => close_element(&mut stack, &mut fields, &mut root_seen),
            Event::Text(text) => {
                let text = text.decode().map_err(|_| XmlError::NotUtf8)?;
                match stack.last_mut() {
                    Some(frame) => frame.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::CData(data) => {
                let data = data.decode().map_err(|_| XmlError::NotUtf8)?;
                let frame = stack
                    .last_mut()
                    .ok_or_else(|| malformed("CDATA outside the root"))?;
                frame.text.push_str(&data);
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference)?;
                let frame = stack
                    .last_mut()
                    .ok_or_else(|| malformed("reference outside the root"))?;
                frame.text.push(resolved);
            }
            // Declarations, comments and processing instructions carry nothing we read.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("unclosed element at end of input"));
    }
    if !root_seen {
        return Err(malformed("no root element"));
    }
    Ok(Message { fields })
}

fn open_element(stack: &mut Vec<Frame>, elements: &mut usize, name: &[u8]) -> Result<(), XmlError> {
    *elements += 1;
    if *elements > MAX_ELEMENTS {
        return Err(XmlError::TooManyElements);
    }
    if stack.len() >= MAX_DEPTH {
        return Err(XmlError::TooDeep);
    }
    let name = std::str::from_utf8(name)
        .map_err(|_| XmlError::NotUtf8)?
        .to_owned();
    if let Some(parent) = stack.last_mut() {
        parent.has_children = true;
    }
    stack.push(Frame {
        name,
        text: String::new(),
        has_children: false,
    });
    Ok(())
}

/// Pops the current element; a leaf below the root becomes a field. The reader checks that end
/// tags match, so the popped frame is always the one being closed.
fn close_element(stack: &mut Vec<Frame>, fields: &mut Vec<(String, String)>, root_seen: &mut bool) {
    let Some(frame) = stack.pop() else { return };
    if stack.is_empty() {
        *root_seen = true;
        return;
    }
    if frame.has_children {
        // Whitespace between child elements is layout, not a value.
        return;
    }
    let mut path = String::new();
    for parent in stack.iter().skip(1) {
        path.push_str(&parent.name);
        path.push('.');
    }
    path.push_str(&frame.name);
    fields.push((path, frame.text));
}

/// Resolves `&name;`: character references and the five predefined entities only.
fn resolve_reference(reference: &quick_xml::events::BytesRef<'_>) -> Result<char, XmlError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(malformed("invalid character reference")),
        };
    }
    let name = reference.decode().map_err(|_| XmlError::NotUtf8)?;
    match name.as_ref() {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        other => Err(XmlError::Entity(clip(other))),
    }
}

fn malformed(detail: &str) -> XmlError {
    XmlError::Malformed(clip(detail))
}

/// Bounds untrusted text quoted in errors.
fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR_DETAIL);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_fields_with_cdata_and_entities() {
        let xml = "<?xml version=\"1.0\"?><xml><ToUserName><![CDATA[ww1]]></ToUserName>\n\
                   <Content><![CDATA[ a < b ]]></Content><Title>x &amp; y &#x4F60;</Title>\
                   <EventKey/><CreateTime>1710000000</CreateTime><!-- note --></xml>";
        let m = parse_message(xml).unwrap();
        assert_eq!(m.to_user_name(), Some("ww1"));
        assert_eq!(m.content(), Some(" a < b "));
        assert_eq!(m.get("Title"), Some("x & y 你"));
        assert_eq!(m.event_key(), Some(""));
        assert_eq!(m.create_time(), Some(1_710_000_000));
        assert_eq!(m.fields().len(), 5);
    }

    #[test]
    fn nested_elements_are_flattened_by_path() {
        let xml = "<xml><Event><![CDATA[pic_photo_or_album]]></Event>\
            <SendPicsInfo><Count>2</Count><PicList>\
            <item><PicMd5Sum><![CDATA[aaa]]></PicMd5Sum></item>\
            <item><PicMd5Sum><![CDATA[bbb]]></PicMd5Sum></item>\
            </PicList></SendPicsInfo>\
            <ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>r</ScanResult></ScanCodeInfo></xml>";
        let m = parse_message(xml).unwrap();
        assert_eq!(m.get("SendPicsInfo.Count"), Some("2"));
        let md5s: Vec<_> = m.get_all("SendPicsInfo.PicList.item.PicMd5Sum").collect();
        assert_eq!(md5s, ["aaa", "bbb"]);
        assert_eq!(m.get("ScanCodeInfo.ScanResult"), Some("r"));
        assert_eq!(
            m.to_map()
                .get("SendPicsInfo.PicList.item.PicMd5Sum")
                .unwrap(),
            "aaa"
        );
    }

    #[test]
    fn doctype_and_undeclared_entities_are_refused() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
            <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
            <xml><Content>&lol2;</Content></xml>";
        assert_eq!(parse_message(bomb), Err(XmlError::Doctype));
        let xxe =
            "<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><A>&xxe;</A></xml>";
        assert_eq!(parse_message(xxe), Err(XmlError::Doctype));
        assert_eq!(
            parse_message("<xml><A>&xxe;</A></xml>"),
            Err(XmlError::Entity("xxe".into()))
        );
    }

    #[test]
    fn depth_and_element_count_are_capped() {
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse_message(&deep), Err(XmlError::TooDeep));
        let ok_deep = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse_message(&ok_deep).is_ok());
        let wide = format!("<xml>{}</xml>", "<A/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse_message(&wide), Err(XmlError::TooManyElements));
        let ok_wide = format!("<xml>{}</xml>", "<A/>".repeat(MAX_ELEMENTS - 1));
        assert_eq!(
            parse_message(&ok_wide).unwrap().fields().len(),
            MAX_ELEMENTS - 1
        );
    }

    #[test]
    fn malformed_documents_are_refused() {
        for bad in [
            "",
            "just text",
            "<xml><A>1</B></xml>",
            "<xml><A>1</A>",
            "<xml/><xml/>",
            "<xml>&</xml>",
            "<xml><A>&#0;</A></xml>",
        ] {
            assert!(
                matches!(parse_message(bad), Err(XmlError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn envelope_cap_is_checked_before_parsing() {
        let body = format!(
            "<xml><Encrypt>{}</Encrypt></xml>",
            "A".repeat(DEFAULT_BODY_CAP)
        );
        assert_eq!(
            parse_envelope(body.as_bytes(), DEFAULT_BODY_CAP),
            Err(XmlError::TooLarge {
                len: body.len(),
                cap: DEFAULT_BODY_CAP
            })
        );
        // Even garbage over the cap reports the size, proving no parse happened.
        let junk = vec![b'<'; DEFAULT_BODY_CAP + 1];
        assert!(matches!(
            parse_envelope(&junk, DEFAULT_BODY_CAP),
            Err(XmlError::TooLarge { .. })
        ));
        assert_eq!(
            parse_envelope(b"<xml><A>1</A></xml>", 100),
            Err(XmlError::MissingField("Encrypt"))
        );
        assert_eq!(parse_envelope(&[0xff, 0xfe], 100), Err(XmlError::NotUtf8));
        let env = parse_envelope(b"<xml><Encrypt><![CDATA[abc]]></Encrypt></xml>", 100).unwrap();
        assert_eq!(
            env,
            Envelope {
                to_user_name: None,
                encrypt: "abc".into(),
                agent_id: None
            }
        );
    }
}
