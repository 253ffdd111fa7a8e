//! Request headers of the HTTP backends, resolved once at build time: `${NAME}` references are
//! expanded from the environment, every value is marked sensitive (so `http`'s own `Debug`
//! hides it), and the secret strings are remembered so error bodies can be scrubbed of them.

use std::fmt;

use gateway_core::ConfigError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{expand_env, SecretMap};

/// Secrets shorter than this are not scrubbed from error text: replacing every "1" in a body
/// because some header is `X-Version: 1` would only garble it.
const MIN_SCRUB_LEN: usize = 6;

/// Resolved request headers plus the secrets they contain.
#[derive(Clone, Default)]
pub(crate) struct ResolvedHeaders {
    map: HeaderMap,
    secrets: Vec<SecretString>,
}

impl fmt::Debug for ResolvedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: every value may carry a credential.
        f.debug_list()
            .entries(self.map.keys().map(|k| k.as_str()))
            .finish()
    }
}

impl ResolvedHeaders {
    /// Resolves `headers` (expanding `${NAME}` with `lookup`) and, when given, adds
    /// `Authorization: Bearer <key>` first so an explicit header can still override it.
    pub(crate) fn resolve(
        headers: &SecretMap,
        bearer: Option<SecretString>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut out = ResolvedHeaders::default();
        let mut errors = Vec::new();
        if let Some(key) = bearer {
            match HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    out.map.insert(AUTHORIZATION, v);
                    out.remember(key.expose_secret());
                }
                Err(_) => errors.push(ConfigError::new(
                    "api_key_env",
                    "the API key contains characters not allowed in a header",
                )),
            }
        }
        for (name, raw) in &headers.0 {
            let path = format!("headers.{name}");
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(ConfigError::new(path, "is not a valid header name"));
                continue;
            };
            let value = match expand_env(raw, lookup) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(ConfigError::new(path, e));
                    continue;
                }
            };
            match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    out.map.insert(name, v);
                    out.remember(&value);
                }
                Err(_) => errors.push(ConfigError::new(
                    path,
                    "contains characters not allowed in a header",
                )),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Remembers a secret value and each of its words (the token of `Bearer <token>`).
    fn remember(&mut self, value: &str) {
        // Process-wide too, for the log writer and every notice the router shows.
        gateway_core::redact::register(value);
        let candidates = std::iter::once(value).chain(value.split_whitespace());
        for c in candidates {
            if c.len() >= MIN_SCRUB_LEN && !self.secrets.iter().any(|s| s.expose_secret() == c) {
                self.secrets.push(SecretString::from(c.to_string()));
            }
        }
        // Longest first, so a whole value is replaced before one of its words.
        self.secrets
            .sort_by_key(|s| std::cmp::Reverse(s.expose_secret().len()));
    }

    /// The headers to send.
    pub(crate) fn map(&self) -> &HeaderMap {
        &self.map
    }

    /// `text` with every remembered secret replaced by `[redacted]`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.expose_secret()) {
                out = out.replace(s.expose_secret(), "[redacted]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_expands_and_scrubs() {
        let headers: SecretMap = [("X-Token", "tok-${T}"), ("X-Version", "1")]
            .into_iter()
            .collect();
        let lookup = |n: &str| (n == "T").then(|| "abcdef123".to_string());
        let h =
            ResolvedHeaders::resolve(&headers, Some(SecretString::from("sk-secret-key")), &lookup)
                .unwrap();
        assert_eq!(h.map()["x-token"], "tok-abcdef123");
        assert_eq!(h.map()[AUTHORIZATION], "Bearer sk-secret-key");
        assert!(h.map()[AUTHORIZATION].is_sensitive());
        let dbg = format!("{h:?}");
        assert!(
            !dbg.contains("sk-secret-key") && !dbg.contains("abcdef"),
            "{dbg}"
        );
        assert_eq!(
            h.scrub("bad key sk-secret-key, token tok-abcdef123 v1"),
            "bad key [redacted], token [redacted] v1"
        );
    }

    #[test]
    fn unset_variables_are_reported_with_the_header_path() {
        let headers: SecretMap = [("Authorization", "Bearer ${NOPE}")].into_iter().collect();
        let errs = ResolvedHeaders::resolve(&headers, None, &|_| None).unwrap_err();
        assert_eq!(errs[0].path, "headers.Authorization");
        assert!(errs[0].message.contains("NOPE"));
    }
}
