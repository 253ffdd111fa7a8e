//! Unknown keys: recognising serde's "unknown field" error, suggesting the closest known key
//! ("did you mean `token`?"), and taking the key out of the tree so that the next parse attempt
//! finds the next one. Together they let `gateway check` list every misspelt key in one run.

use gateway_core::ConfigError;
use serde_json::Value;

/// At most this many unknown keys are collected per section (each costs one more parse).
pub(crate) const MAX_UNKNOWN: usize = 64;

/// An unknown key as serde reports it: the key and the keys that would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    /// The key as written.
    pub key: String,
    /// The accepted keys at that level, in declaration order.
    pub known: Vec<String>,
}

/// Reads serde's `unknown field `x`, expected one of `a`, `b`` message.
pub(crate) fn unknown_field(message: &str) -> Option<UnknownKey> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    // Every other backticked word after the key is an accepted name.
    let known = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some(UnknownKey {
        key: key.to_string(),
        known,
    })
}

/// The message for an unknown key: a suggestion when a known key is close, else the list.
pub(crate) fn unknown_message(key: &str, known: &[&str]) -> String {
    match suggest(key, known) {
        Some(s) => format!("unknown key; did you mean `{s}`?"),
        None if known.is_empty() => "unknown key; nothing is accepted here".to_string(),
        None => format!("unknown key; expected one of: {}", known.join(", ")),
    }
}

/// The known key closest to `key`, when it is close enough to be a typo: at most one edit per
/// three characters (at least one), a swap of two neighbours counting as one edit.
pub(crate) fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key_l = key.to_ascii_lowercase();
    let budget = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (distance(&key_l, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// Removes the key at `path` (serde_path_to_error's form: `a.b[0].c`) from `tree`. False when
/// the path does not lead to a mapping key (for example a key containing a dot).
pub(crate) fn remove_path(tree: &mut Value, path: &str) -> bool {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            segments.push(Err(name));
        }
        while let Some((index, after)) = rest.split_once(']') {
            match index.parse::<usize>() {
                Ok(i) => segments.push(Ok(i)),
                Err(_) => return false,
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    let Some(Err(last)) = segments.pop() else {
        return false;
    };
    let mut node = tree;
    for seg in segments {
        node = match (seg, node) {
            (Ok(i), Value::Array(a)) => match a.get_mut(i) {
                Some(n) => n,
                None => return false,
            },
            (Err(k), Value::Object(m)) => match m.get_mut(k) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Object(m) => m.remove(last).is_some(),
        _ => false,
    }
}

/// Runs `attempt` on `value`; each unknown-key error is recorded (with a suggestion, the path
/// under `prefix`) and the key removed, then the attempt is repeated, so every unknown key is
/// listed. Any other error ends the loop and is recorded as it is.
pub(crate) fn collect_unknown<T>(
    mut value: Value,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
    mut attempt: impl FnMut(Value) -> Result<T, Vec<ConfigError>>,
) -> Option<T> {
    for _ in 0..MAX_UNKNOWN {
        let errs = match attempt(value.clone()) {
            Ok(t) => return Some(t),
            Err(errs) => errs,
        };
        let mut removed = false;
        let mut others = Vec::new();
        for e in errs {
            match unknown_field(&e.message) {
                Some(u) if remove_path(&mut value, &e.path) => {
                    let known: Vec<&str> = u.known.iter().map(String::as_str).collect();
                    errors.push(
                        ConfigError::new(e.path, unknown_message(&u.key, &known)).under(prefix),
                    );
                    removed = true;
                }
                _ => others.push(e.under(prefix)),
            }
        }
        errors.extend(others);
        if !removed {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serde_messages_are_read_and_typos_suggested() {
        let u = unknown_field("unknown field `tokn`, expected one of `token`, `port`").unwrap();
        assert_eq!(u.key, "tokn");
        assert_eq!(u.known, ["token", "port"]);
        let u = unknown_field("unknown field `x`, expected `a` or `b`").unwrap();
        assert_eq!(u.known, ["a", "b"]);
        assert!(unknown_field("unknown field `x`, there are no fields")
            .unwrap()
            .known
            .is_empty());
        assert_eq!(suggest("secert", &["bot_id", "secret"]), Some("secret"));
        assert_eq!(suggest("lisen", &["listen", "data_dir"]), Some("listen"));
        assert_eq!(suggest("colour", &["listen", "data_dir"]), None);
    }

    #[test]
    fn keys_are_removed_at_nested_paths() {
        let mut v = json!({"apps": [{"a": 1}, {"corpid": 2, "b": 3}], "x": {"y": 1}});
        assert!(remove_path(&mut v, "apps[1].corpid"));
        assert!(remove_path(&mut v, "x.y"));
        assert!(!remove_path(&mut v, "apps[5].a"));
        assert_eq!(v, json!({"apps": [{"a": 1}, {"b": 3}], "x": {}}));
    }
}
