//! Body checks that need no server state: template cards against the SDK's types and the
//! plugin's required fields (reference `wecom-aibot-official.md` §9), and whether a closing
//! stream frame shows anything (§4: WeCom ignores invisible content and the spinner stays).

use serde_json::Value;

/// The five card types (§9).
const CARD_TYPES: [&str; 5] = [
    "text_notice",
    "news_notice",
    "button_interaction",
    "vote_interaction",
    "multiple_interaction",
];
/// Longest `task_id`, in bytes (§9).
const TASK_ID_MAX_BYTES: usize = 128;
/// Most buttons on a `button_interaction` card, and the longest button key (§9).
const BUTTONS_MAX: usize = 6;
const BUTTON_KEY_MAX_BYTES: usize = 1024;
/// Most `select_list` entries on a `multiple_interaction` card (§9).
const SELECT_LIST_MAX: usize = 3;

fn non_empty_str(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

fn has_object(card: &Value, key: &str) -> bool {
    card[key].as_object().is_some_and(|o| !o.is_empty())
}

/// Checks a template card; returns its `task_id`, or what is wrong with it. Uniqueness of the
/// `task_id` is the caller's (it needs the bot's history).
pub(super) fn check_card(card: &Value) -> Result<String, String> {
    if !card.is_object() {
        return Err("template_card is not an object".into());
    }
    let kind = card["card_type"].as_str().unwrap_or("");
    if !CARD_TYPES.contains(&kind) {
        return Err(format!("card_type `{kind}` is not one of {CARD_TYPES:?}"));
    }
    // Required fields per card type, as the plugin fills them in (§9 table).
    let main_title = has_object(card, "main_title");
    let missing: Vec<&str> = match kind {
        "text_notice" => {
            let title = non_empty_str(&card["main_title"]["title"])
                || non_empty_str(&card["sub_title_text"]);
            [
                (!title).then_some("main_title.title or sub_title_text"),
                (!has_object(card, "card_action")).then_some("card_action"),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
        "news_notice" => [
            (!main_title).then_some("main_title"),
            (!has_object(card, "card_action")).then_some("card_action"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        "button_interaction" => {
            let buttons = card["button_list"]
                .as_array()
                .is_some_and(|b| !b.is_empty());
            [
                (!main_title).then_some("main_title"),
                (!buttons).then_some("button_list"),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
        "vote_interaction" => [
            (!main_title).then_some("main_title"),
            (!has_object(card, "checkbox")).then_some("checkbox"),
            (!has_object(card, "submit_button")).then_some("submit_button"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        _ => {
            let selects = card["select_list"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            [
                (!main_title).then_some("main_title"),
                (!selects).then_some("select_list"),
                (!has_object(card, "submit_button")).then_some("submit_button"),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
    };
    if !missing.is_empty() {
        return Err(format!("{kind} card without {}", missing.join(", ")));
    }
    if let Some(buttons) = card["button_list"].as_array() {
        check_buttons(buttons)?;
    }
    if card["select_list"]
        .as_array()
        .is_some_and(|s| s.len() > SELECT_LIST_MAX)
    {
        return Err(format!("more than {SELECT_LIST_MAX} select_list entries"));
    }
    let task_id = card["task_id"].as_str().unwrap_or("");
    if task_id.is_empty() {
        return Err("template_card without task_id".into());
    }
    if task_id.len() > TASK_ID_MAX_BYTES {
        return Err(format!(
            "task_id of {} bytes (at most {TASK_ID_MAX_BYTES})",
            task_id.len()
        ));
    }
    if !task_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@'))
    {
        return Err(format!(
            "task_id `{task_id}` has characters outside [0-9A-Za-z_-@]"
        ));
    }
    Ok(task_id.to_owned())
}

/// At most six buttons, each with a key of at most 1024 bytes, keys unique (§9).
fn check_buttons(buttons: &[Value]) -> Result<(), String> {
    if buttons.len() > BUTTONS_MAX {
        return Err(format!("more than {BUTTONS_MAX} buttons"));
    }
    let mut keys = std::collections::HashSet::new();
    for b in buttons {
        let key = b["key"].as_str().unwrap_or("");
        if key.is_empty() || key.len() > BUTTON_KEY_MAX_BYTES {
            return Err(format!(
                "button key `{key}` empty or over {BUTTON_KEY_MAX_BYTES} bytes"
            ));
        }
        if !keys.insert(key) {
            return Err(format!("button key `{key}` repeated"));
        }
    }
    Ok(())
}

/// Characters that render as nothing although they are not whitespace: zero-width and
/// joiner characters, direction marks, the soft hyphen, word joiners, variation selectors,
/// the BOM, Hangul fillers.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}')
}

/// True when `content` shows at least one character once the `<think></think>` seed is taken
/// out (§4: a closing frame without one leaves the thinking animation up).
pub(super) fn has_visible_text(content: &str) -> bool {
    content
        .replace("<think></think>", "")
        .chars()
        .any(|c| !c.is_whitespace() && !is_invisible(c))
}
