//! `${NAME}` references in config values: every string value of the file (platform `extra`
//! keys such as `secret`, `corp_secret`, `token`, `encoding_aes_key`; agent keys such as a
//! command backend's `env`) may name environment variables, so secrets stay out of the file.
//! An unset variable is a config error naming the key and the variable, never an empty string.
//! `$${` writes a literal `${`.

use gateway_core::ConfigError;
use serde_json::Value;

/// The agent's request headers are expanded by the agent backend itself (same syntax, same
/// error), at build time; expanding them here too would expand a value twice.
const EXPANDED_BY_AGENT: &str = "agent.headers";

/// Replaces `${NAME}` in every string of `tree` with `env(NAME)`, returning one error per
/// reference that cannot be resolved (the value is then left as written).
pub fn expand_env_refs(tree: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    walk(tree, String::new(), env, &mut errors);
    errors
}

fn walk(
    v: &mut Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match v {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(out) => *s = out,
            Err(msg) => errors.push(ConfigError::new(path, msg)),
        },
        Value::Object(m) if path != EXPANDED_BY_AGENT => {
            for (k, child) in m.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(child, p, env, errors);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                walk(child, format!("{path}[{i}]"), env, errors);
            }
        }
        _ => {}
    }
}

/// Expands one value. `Err` says which reference failed and why.
fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            // `$${` is a literal `${`.
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some((name, tail)) = tail.split_once('}') else {
                return Err("has an unclosed `${` (write `$${` for a literal `${`)".into());
            };
            if !is_env_name(name) {
                return Err(format!(
                    "references `${{{name}}}`, which is not a variable name (letters, digits, `_`)"
                ));
            }
            match env(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "references ${{{name}}}, but the environment variable {name} is not set (or empty)"
                    ))
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_expanded_escaped_and_reported() {
        let env = |k: &str| (k == "S").then(|| "v".to_string());
        let mut t = json!({
            "platforms": {"a": {"extra": {"secret": "${S}", "apps": [{"token": "x-${NOPE}"}]}}},
            "agent": {"headers": {"Authorization": "Bearer ${LATER}"}, "system_prompt": "$${x} $5"}
        });
        let errors = expand_env_refs(&mut t, &env);
        assert_eq!(t["platforms"]["a"]["extra"]["secret"], "v");
        assert_eq!(t["agent"]["system_prompt"], "${x} $5");
        assert_eq!(t["agent"]["headers"]["Authorization"], "Bearer ${LATER}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "platforms.a.extra.apps[0].token");
        assert!(errors[0].message.contains("NOPE"), "{}", errors[0].message);
    }
}
