//! Editing the config file as text: `gateway setup` replaces the top-level `agent:` block and one
//! `platforms.<name>:` block and leaves every other line (other sections, other instances,
//! comments) byte for byte as it was. The result is parsed again and compared with what was meant
//! ([`verify`]); a file that would not round-trip is never written.
//!
//! Blocks are found by indentation. Comment lines directly above a key at the same or a lower
//! indentation belong to that key (they usually document it), so they stay when the block before
//! them is replaced.

use serde_json::{Map, Value};

/// Why the file could not be edited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The current file is not valid YAML.
    #[error("the config file is not valid YAML ({0}); fix it first (`gateway check` shows where)")]
    Unparsable(String),
    /// The section is written in flow style (`platforms: {a: …}`), which text blocks cannot edit.
    #[error("`{0}` is written in flow style ({{ … }} on one line); rewrite it as an indented block, then run setup again")]
    FlowStyle(String),
    /// The edited text does not parse back to the intended configuration.
    #[error("the edited file would not read back as intended ({0}); nothing was written")]
    RoundTrip(String),
}

/// A value in a block we write: a scalar or list (written in flow style), or a nested mapping
/// (written as an indented block). Keeps the order in which the wizard lists keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar, list or inline mapping.
    Value(Value),
    /// A nested mapping written as a block.
    Map(Fields),
}

/// Ordered `key: value` pairs.
pub type Fields = Vec<(String, Node)>;

/// Converts fields to the JSON value the YAML parser yields for them.
pub fn to_value(fields: &Fields) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, n)| {
                let v = match n {
                    Node::Value(v) => v.clone(),
                    Node::Map(f) => to_value(f),
                };
                (k.clone(), v)
            })
            .collect::<Map<_, _>>(),
    )
}

/// Parses YAML text to JSON; an empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Value, EditError> {
    if text.lines().all(is_blank_or_comment) {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value =
        serde_saphyr::from_str(text).map_err(|e| EditError::Unparsable(first_line(&e)))?;
    Ok(if v.is_null() {
        Value::Object(Map::new())
    } else {
        v
    })
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The key of a `key:` / `key: value` line and what follows the colon (comment stripped).
fn line_key(line: &str) -> Option<(String, String)> {
    let t = line.trim_start_matches(' ');
    if t.starts_with('#') || t.starts_with("- ") || t == "-" {
        return None;
    }
    let (key, rest) = if let Some(q) = t.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_string(), q[end + 1..].trim_start())
    } else if let Some(q) = t.strip_prefix('\'') {
        let end = q.find('\'')?;
        (q[..end].to_string(), q[end + 1..].trim_start())
    } else {
        let mut split = None;
        for (i, c) in t.char_indices() {
            if c == ':' && t[i + 1..].chars().next().is_none_or(|n| n == ' ') {
                split = Some(i);
                break;
            }
        }
        let i = split?;
        (t[..i].trim_end().to_string(), &t[i..])
    };
    let rest = rest.strip_prefix(':')?;
    let rest = match rest.find(" #") {
        Some(i) => &rest[..i],
        None if rest.trim_start().starts_with('#') => "",
        None => rest,
    };
    Some((key, rest.trim().to_string()))
}

/// Whether `line` is a content line at exactly `indent` spaces with key `key`.
fn is_key_line(line: &str, at: usize, key: &str) -> bool {
    !is_blank_or_comment(line)
        && indent(line) == at
        && line_key(line).is_some_and(|(k, _)| k == key)
}

/// The block of the key on line `start` (indent `at`): up to the next content line at `at` or
/// less, minus the blank lines and shallower-or-equal comments right before it.
fn block_end(lines: &[&str], start: usize, limit: usize, at: usize) -> usize {
    let mut end = (start + 1..limit)
        .find(|&i| !is_blank_or_comment(lines[i]) && indent(lines[i]) <= at)
        .unwrap_or(limit);
    while end > start + 1 {
        let l = lines[end - 1];
        let belongs_below = l.trim().is_empty() || (is_blank_or_comment(l) && indent(l) <= at);
        if !belongs_below {
            break;
        }
        end -= 1;
    }
    end
}

/// Quotes a mapping key unless it is a plain identifier that YAML reads as a string.
fn key_text(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// Whether a string can be written without quotes and still read back as the same string:
/// starts with a letter or `/`, only `[A-Za-z0-9_./-]`, and not a word YAML reads as something
/// else.
fn plain_safe(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        )
}

/// A value in flow style. Strings that are not [`plain_safe`] are JSON strings, which YAML reads
/// as double-quoted scalars with the same escapes, so no value can change meaning (`no`,
/// `0123`, `@all`, `#x`).
fn flow(v: &Value) -> String {
    match v {
        Value::String(s) if plain_safe(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn emit_fields(out: &mut String, fields: &Fields, at: usize, step: usize) {
    let pad = " ".repeat(at);
    for (k, node) in fields {
        match node {
            Node::Value(v) => out.push_str(&format!("{pad}{}: {}\n", key_text(k), flow(v))),
            Node::Map(f) if f.is_empty() => out.push_str(&format!("{pad}{}: {{}}\n", key_text(k))),
            Node::Map(f) => {
                out.push_str(&format!("{pad}{}:\n", key_text(k)));
                emit_fields(out, f, at + step, step);
            }
        }
    }
}

/// The text of a block `key:` with `fields` under it, at indentation `at`.
pub fn emit_block(key: &str, fields: &Fields, at: usize, step: usize) -> String {
    let mut out = String::new();
    emit_fields(
        &mut out,
        &vec![(key.to_string(), Node::Map(fields.clone()))],
        at,
        step,
    );
    out
}

/// What to change in the file.
#[derive(Debug, Clone)]
pub struct Edit<'a> {
    /// The new `agent:` section, or `None` to keep the current one.
    pub agent: Option<&'a Fields>,
    /// The instance name under `platforms:`.
    pub name: &'a str,
    /// The instance's new entry (type, enabled, home_channel, extra).
    pub entry: &'a Fields,
}

/// Applies `edit` to `text` and returns the new text, verified by parsing it back.
pub fn apply(text: &str, edit: &Edit<'_>) -> Result<String, EditError> {
    let before = parse(text)?;
    let mut out = upsert_platform(text, edit.name, edit.entry)?;
    if let Some(agent) = edit.agent {
        out = replace_top_level(&out, "agent", agent, Some("platforms"))?;
    }
    verify(&before, &out, edit)?;
    Ok(out)
}

/// Checks that `new_text` parses to `before` with exactly the edit applied.
pub fn verify(before: &Value, new_text: &str, edit: &Edit<'_>) -> Result<(), EditError> {
    let after = parse(new_text).map_err(|e| EditError::RoundTrip(e.to_string()))?;
    let mut expected = match before {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Some(agent) = edit.agent {
        expected.insert("agent".into(), to_value(agent));
    }
    let platforms = expected
        .entry("platforms")
        .or_insert_with(|| Value::Object(Map::new()));
    if platforms.is_null() {
        *platforms = Value::Object(Map::new());
    }
    if let Value::Object(p) = platforms {
        p.insert(edit.name.to_string(), to_value(edit.entry));
    }
    if after != Value::Object(expected) {
        return Err(EditError::RoundTrip(
            "the parsed result differs from the intended one".into(),
        ));
    }
    Ok(())
}

fn split_lines(text: &str) -> Vec<&str> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.strip_suffix('\n')
            .unwrap_or(text)
            .split('\n')
            .collect()
    }
}

fn join(lines: &[&str], replace: std::ops::Range<usize>, block: &str) -> String {
    let mut out = String::new();
    for l in &lines[..replace.start] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(block);
    for l in &lines[replace.end..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Replaces (or adds) the top-level `key:` block. A new block goes before the comments that
/// precede `before` (when that section exists), else at the end.
pub fn replace_top_level(
    text: &str,
    key: &str,
    fields: &Fields,
    before: Option<&str>,
) -> Result<String, EditError> {
    let lines = split_lines(text);
    let block = emit_block(key, fields, 0, 2);
    if let Some(start) = lines.iter().position(|l| is_key_line(l, 0, key)) {
        let end = block_end(&lines, start, lines.len(), 0);
        return Ok(join(&lines, start..end, &block));
    }
    if let Some(next) = before.and_then(|b| lines.iter().position(|l| is_key_line(l, 0, b))) {
        // Above the comment lines that document `before`, below the blank line separating it.
        let mut at = next;
        while at > 0 && lines[at - 1].trim_start().starts_with('#') && indent(lines[at - 1]) == 0 {
            at -= 1;
        }
        return Ok(join(&lines, at..at, &format!("{block}\n")));
    }
    Ok(append(&lines, &block))
}

fn append(lines: &[&str], block: &str) -> String {
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut out = join(&lines[..end], end..end, "");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(block);
    out
}

/// Replaces (or adds) the entry `name` under the top-level `platforms:`.
pub fn upsert_platform(text: &str, name: &str, fields: &Fields) -> Result<String, EditError> {
    let lines = split_lines(text);
    let Some(pstart) = lines.iter().position(|l| is_key_line(l, 0, "platforms")) else {
        let block = emit_block(
            "platforms",
            &vec![(name.to_string(), Node::Map(fields.clone()))],
            0,
            2,
        );
        return Ok(append(&lines, &block));
    };
    let inline = line_key(lines[pstart])
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let rewritten;
    let lines: Vec<&str> = if inline.is_empty() {
        lines
    } else if matches!(inline.as_str(), "{}" | "~" | "null") {
        // An empty flow mapping becomes an empty block we can add to.
        rewritten = "platforms:".to_string();
        let mut l = lines.clone();
        l[pstart] = &rewritten;
        l
    } else {
        return Err(EditError::FlowStyle("platforms".into()));
    };
    let next_top = (pstart + 1..lines.len())
        .find(|&i| !is_blank_or_comment(lines[i]) && indent(lines[i]) == 0);
    let pend = match next_top {
        Some(_) => block_end(&lines, pstart, lines.len(), 0),
        None => lines.len(),
    };
    let child = (pstart + 1..pend)
        .find(|&i| !is_blank_or_comment(lines[i]))
        .map(|i| indent(lines[i]))
        .unwrap_or(2);
    let step = child.max(1);
    let block = emit_block(name, fields, child, step);
    if let Some(start) = (pstart + 1..pend).find(|&i| is_key_line(lines[i], child, name)) {
        let end = block_end(&lines, start, pend, child);
        return Ok(join(&lines, start..end, &block));
    }
    let mut at = pend;
    if next_top.is_none() {
        // Last section: add after everything, trailing blank lines aside.
        while at > pstart + 1 && lines[at - 1].trim().is_empty() {
            at -= 1;
        }
    }
    Ok(join(&lines, at..at, &block))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(bot: &str) -> Fields {
        vec![(
            "extra".into(),
            Node::Map(vec![
                ("bot_id".into(), Node::Value(json!(bot))),
                ("allow_from".into(), Node::Value(json!(["a", "no"]))),
            ]),
        )]
    }

    #[test]
    fn keys_are_found_with_values_comments_and_quotes() {
        assert_eq!(line_key("  wecom:"), Some(("wecom".into(), String::new())));
        assert_eq!(
            line_key("agent: {backend: echo} # x").map(|k| k.1),
            Some("{backend: echo}".into())
        );
        assert_eq!(line_key("\"a b\": 1").map(|k| k.0), Some("a b".into()));
        assert_eq!(line_key("  - item"), None);
        assert_eq!(
            line_key("url: http://x"),
            Some(("url".into(), "http://x".into()))
        );
    }

    #[test]
    fn flow_values_keep_their_meaning() {
        assert_eq!(flow(&json!("no")), "\"no\"");
        assert_eq!(flow(&json!("0123")), "\"0123\"");
        assert_eq!(flow(&json!("ww12ab")), "ww12ab");
        assert_eq!(flow(&json!("/wecom/callback")), "/wecom/callback");
        assert_eq!(flow(&json!(["a b", 1])), "[\"a b\", 1]");
        assert_eq!(key_text("yes"), "\"yes\"");
        assert_eq!(key_text("wecom_sales"), "wecom_sales");
    }

    #[test]
    fn an_entry_is_added_to_an_empty_file_and_replaced_in_place() {
        let edit = Edit {
            agent: None,
            name: "wecom",
            entry: &entry("one"),
        };
        let t = apply("", &edit).unwrap();
        assert!(t.starts_with("platforms:\n  wecom:\n    extra:\n"), "{t}");
        let e2 = entry("two");
        let t2 = apply(&t, &Edit { entry: &e2, ..edit }).unwrap();
        assert_eq!(t2.matches("wecom:").count(), 1);
        assert!(t2.contains("bot_id: two"), "{t2}");
    }

    #[test]
    fn a_flow_style_platforms_section_is_refused() {
        let text = "platforms: {a: {extra: {}}}\n";
        let e = apply(
            text,
            &Edit {
                agent: None,
                name: "wecom",
                entry: &entry("x"),
            },
        );
        assert!(matches!(e, Err(EditError::FlowStyle(_))));
        let ok = apply(
            "platforms: {}\n",
            &Edit {
                agent: None,
                name: "wecom",
                entry: &entry("x"),
            },
        );
        assert!(ok.is_ok());
    }
}
