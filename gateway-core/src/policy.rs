//! Access policy: who may talk to the agent, per platform instance.
//!
//! Implements the intake rules of reference `wecom-aibot.md` §7 (policy values, list coercion,
//! entry normalisation, per-group sender lists) and the pairing interplay of
//! `gateway-semantics.md` §5.1, with our own deviations: the default is `open` for both policies,
//! unknown values are configuration errors instead of silent denies or allows, `pairing` is
//! rejected for groups, and a paired user passes a DM allowlist (pairing is a union with
//! allowlists).
//!
//! The configuration arrives inside an adapter's `extra` map; [`AccessConfig::from_extra`] takes
//! the policy keys out so the adapter's own typed config never sees them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::model::{ChatAddress, ChatKind};

#[cfg(test)]
mod tests;

/// The keys [`AccessConfig::from_extra`] removes from an adapter's `extra` map (for docs and
/// `gateway platforms`).
pub const POLICY_KEYS: &[&str] = &[
    "dm_policy",
    "group_policy",
    "allow_from",
    "allowFrom",
    "group_allow_from",
    "groupAllowFrom",
    "groups",
];

/// Who may start a DM conversation with the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DmPolicy {
    /// Everyone (the documented default; the gateway warns at startup).
    #[default]
    Open,
    /// Only senders in `allow_from`, plus users approved through pairing.
    Allowlist,
    /// Nobody.
    Disabled,
    /// Senders in `allow_from` and approved users; anyone else is offered a pairing code.
    Pairing,
}

impl DmPolicy {
    /// Every value, in the order shown in error messages.
    pub const ALL: [DmPolicy; 4] = [
        DmPolicy::Open,
        DmPolicy::Allowlist,
        DmPolicy::Disabled,
        DmPolicy::Pairing,
    ];

    /// The lowercase config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Open => "open",
            DmPolicy::Allowlist => "allowlist",
            DmPolicy::Disabled => "disabled",
            DmPolicy::Pairing => "pairing",
        }
    }

    /// Parses a config value (trimmed, case-insensitive). The error says what is valid.
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(v))
            .ok_or_else(|| {
                format!(
                    "unknown value `{v}`; expected one of: {}",
                    Self::valid_list()
                )
            })
    }

    fn valid_list() -> String {
        Self::ALL.map(DmPolicy::as_str).join(", ")
    }
}

impl fmt::Display for DmPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DmPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DmPolicy::parse(&s).map_err(de::Error::custom)
    }
}

/// Which group chats the agent answers in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GroupPolicy {
    /// Every group (per-group sender lists still apply).
    #[default]
    Open,
    /// Only groups whose chat id is in `group_allow_from`.
    Allowlist,
    /// No group.
    Disabled,
}

impl GroupPolicy {
    /// Every value, in the order shown in error messages.
    pub const ALL: [GroupPolicy; 3] = [
        GroupPolicy::Open,
        GroupPolicy::Allowlist,
        GroupPolicy::Disabled,
    ];

    /// The lowercase config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupPolicy::Open => "open",
            GroupPolicy::Allowlist => "allowlist",
            GroupPolicy::Disabled => "disabled",
        }
    }

    /// Parses a config value (trimmed, case-insensitive). `pairing` gets its own message
    /// because it is a valid DM policy that people reasonably try for groups.
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        let valid = Self::ALL.map(GroupPolicy::as_str).join(", ");
        if v.eq_ignore_ascii_case("pairing") {
            return Err(format!(
                "`pairing` applies to DMs only; expected one of: {valid}"
            ));
        }
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(v))
            .ok_or_else(|| format!("unknown value `{v}`; expected one of: {valid}"))
    }
}

impl fmt::Display for GroupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for GroupPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GroupPolicy::parse(&s).map_err(de::Error::custom)
    }
}

/// Per-group settings under `groups.<chat id>` (or `groups."*"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    /// Senders allowed in this group; empty means everyone the group policy admits.
    #[serde(default, alias = "allowFrom", deserialize_with = "deserialize_list")]
    pub allow_from: Vec<String>,
}

/// The access-policy section of a platform instance, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// DM policy; default `open`.
    #[serde(default)]
    pub dm_policy: DmPolicy,
    /// Group policy; default `open`.
    #[serde(default)]
    pub group_policy: GroupPolicy,
    /// DM senders always allowed (user ids; `*` for everyone).
    #[serde(default, alias = "allowFrom", deserialize_with = "deserialize_list")]
    pub allow_from: Vec<String>,
    /// Group chat ids allowed under `group_policy: allowlist`.
    #[serde(
        default,
        alias = "groupAllowFrom",
        deserialize_with = "deserialize_list"
    )]
    pub group_allow_from: Vec<String>,
    /// Per-group sender lists, keyed by chat id or `*`.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupRule>,
}

impl AccessConfig {
    /// Removes every policy key (see [`POLICY_KEYS`]) from an adapter's `extra` map and parses
    /// them. All problems are reported at once, with paths relative to `extra` (for example
    /// `dm_policy` or `groups.wrX.allow_from`); the keys are removed even when they are invalid,
    /// so the adapter's own parsing does not report them a second time.
    pub fn from_extra(extra: &mut Map<String, Value>) -> Result<AccessConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut cfg = AccessConfig::default();

        if let Some(v) = non_null(extra.remove("dm_policy")) {
            match policy_str(&v).and_then(DmPolicy::parse) {
                Ok(p) => cfg.dm_policy = p,
                Err(msg) => errors.push(ConfigError::new("dm_policy", msg)),
            }
        }
        if let Some(v) = non_null(extra.remove("group_policy")) {
            match policy_str(&v).and_then(GroupPolicy::parse) {
                Ok(p) => cfg.group_policy = p,
                Err(msg) => errors.push(ConfigError::new("group_policy", msg)),
            }
        }
        cfg.allow_from = take_list(extra, "allow_from", "allowFrom", "", &mut errors);
        cfg.group_allow_from =
            take_list(extra, "group_allow_from", "groupAllowFrom", "", &mut errors);

        match non_null(extra.remove("groups")) {
            None => {}
            Some(Value::Object(groups)) => {
                for (chat, rule) in groups {
                    if let Some(rule) = parse_group_rule(&chat, rule, &mut errors) {
                        cfg.groups.insert(chat, rule);
                    }
                }
            }
            Some(other) => errors.push(ConfigError::new(
                "groups",
                format!(
                    "expected a map of chat id to {{ allow_from }}, found {}",
                    kind_of(&other)
                ),
            )),
        }

        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }
}

/// Parses one `groups.<chat>` value; pushes errors and returns `None` when it is unusable.
fn parse_group_rule(chat: &str, rule: Value, errors: &mut Vec<ConfigError>) -> Option<GroupRule> {
    let path = format!("groups.{chat}");
    let mut map = match rule {
        // `groups: { wrX: }` in YAML: a group listed without settings.
        Value::Null => return Some(GroupRule::default()),
        Value::Object(map) => map,
        other => {
            errors.push(ConfigError::new(
                path,
                format!(
                    "expected a map with `allow_from`, found {}",
                    kind_of(&other)
                ),
            ));
            return None;
        }
    };
    let before = errors.len();
    let allow_from = take_list(&mut map, "allow_from", "allowFrom", &path, errors);
    for key in map.keys() {
        errors.push(ConfigError::new(
            format!("{path}.{key}"),
            "unknown key; expected `allow_from` (alias `allowFrom`)",
        ));
    }
    (errors.len() == before).then_some(GroupRule { allow_from })
}

/// Removes `key` and its camelCase `alias` from `map` and parses the list value. `prefix` is the
/// path of `map` itself, for error paths.
fn take_list(
    map: &mut Map<String, Value>,
    key: &str,
    alias: &str,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let at = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let main = map.remove(key);
    let aliased = map.remove(alias);
    let (path, value) = match (main, aliased) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                at(alias),
                format!("both `{key}` and its alias `{alias}` are set; keep one"),
            ));
            return Vec::new();
        }
        (Some(v), None) => (at(key), v),
        (None, Some(v)) => (at(alias), v),
        (None, None) => return Vec::new(),
    };
    match parse_list_value(value, &path) {
        Ok(list) => list,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    }
}

/// A list value: a sequence of strings or numbers, or one comma-separated string (environment
/// variables arrive that way). Items are trimmed and empty items dropped.
fn parse_list_value(value: Value, path: &str) -> Result<Vec<String>, ConfigError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(split_list(&s)),
        Value::Number(n) => Ok(vec![n.to_string()]),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => push_item(&mut out, &s),
                    Value::Number(n) => out.push(n.to_string()),
                    other => {
                        return Err(ConfigError::new(
                            format!("{path}[{i}]"),
                            format!("expected a string, found {}", kind_of(&other)),
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(ConfigError::new(
            path,
            format!(
                "expected a list or a comma-separated string, found {}",
                kind_of(&other)
            ),
        )),
    }
}

/// Splits a comma-separated string into trimmed, non-empty items.
fn split_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        push_item(&mut out, part);
    }
    out
}

fn push_item(out: &mut Vec<String>, item: &str) {
    let item = item.trim();
    if !item.is_empty() {
        out.push(item.to_string());
    }
}

/// `Some` unless the key is absent or explicitly null (a YAML key left empty means "default").
fn non_null(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

fn policy_str(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, found {}", kind_of(v)))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// serde counterpart of [`parse_list_value`] for the derived `Deserialize` impls.
fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(split_list(s))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(vec![n.to_string()])
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(vec![n.to_string()])
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<ListItem>()? {
                push_item(&mut out, &item.0);
            }
            Ok(out)
        }
    }

    d.deserialize_any(ListVisitor)
}

/// One list item: a string, or a number kept as its decimal text (numeric user ids in YAML).
struct ListItem(String);

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl Visitor<'_> for ItemVisitor {
            type Value = ListItem;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ListItem, E> {
                Ok(ListItem(s.to_string()))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ListItem, E> {
                Ok(ListItem(n.to_string()))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ListItem, E> {
                Ok(ListItem(n.to_string()))
            }
        }

        d.deserialize_any(ItemVisitor)
    }
}

/// Normalises an allowlist entry: trim, strip `wecom:`, then `user:` or `group:` (all
/// case-insensitive), trim, lowercase. Returns `None` when nothing is left.
fn normalise_entry(entry: &str) -> Option<String> {
    let mut s = entry.trim();
    s = strip_prefix_ci(s, "wecom:").unwrap_or(s);
    s = strip_prefix_ci(s, "user:")
        .or_else(|| strip_prefix_ci(s, "group:"))
        .unwrap_or(s);
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_lowercase())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get` returns None instead of panicking when the cut falls inside a multi-byte char.
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A precomputed allowlist: one hash lookup plus a wildcard flag per check.
#[derive(Debug, Clone, Default)]
struct Matcher {
    any: bool,
    entries: HashSet<String>,
}

impl Matcher {
    fn new(list: &[String]) -> Self {
        let mut m = Matcher::default();
        for entry in list.iter().filter_map(|e| normalise_entry(e)) {
            if entry == "*" {
                m.any = true;
            } else {
                m.entries.insert(entry);
            }
        }
        m
    }

    fn is_empty(&self) -> bool {
        !self.any && self.entries.is_empty()
    }

    /// The target is trimmed and compared case-insensitively, but not prefix-stripped.
    fn matches(&self, target: &str) -> bool {
        if self.any {
            return true;
        }
        if self.entries.is_empty() {
            return false;
        }
        self.entries.contains(&target.trim().to_lowercase())
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The message has no sender id.
    EmptySender,
    /// `dm_policy: disabled`.
    DmDisabled,
    /// `dm_policy: allowlist` and the sender is neither listed nor paired.
    NotInAllowlist,
    /// `group_policy: disabled`.
    GroupDisabled,
    /// `group_policy: allowlist` and the chat id is not in `group_allow_from`.
    GroupNotAllowed,
    /// The group's `allow_from` does not list the sender.
    SenderNotAllowedInGroup,
}

impl DenyReason {
    /// A low-cardinality label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::EmptySender => "empty_sender",
            DenyReason::DmDisabled => "dm_disabled",
            DenyReason::NotInAllowlist => "not_in_allowlist",
            DenyReason::GroupDisabled => "group_disabled",
            DenyReason::GroupNotAllowed => "group_not_allowed",
            DenyReason::SenderNotAllowedInGroup => "sender_not_allowed_in_group",
        }
    }
}

/// The outcome of [`AccessPolicy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Hand the message on.
    Allow,
    /// Drop it (silently; the router logs at debug).
    Deny(DenyReason),
    /// An unknown DM sender under `pairing`: offer a pairing code.
    NeedsPairing,
}

/// The compiled access policy of one platform instance. Cheap to query per message.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    dm_policy: DmPolicy,
    group_policy: GroupPolicy,
    allow_from: Matcher,
    group_allow_from: Matcher,
    /// Group rules by exact chat id.
    groups_exact: HashMap<String, Matcher>,
    /// The same rules by lowercased chat id; the first key in map order wins on a clash.
    groups_folded: HashMap<String, Matcher>,
    /// The `"*"` rule.
    groups_any: Option<Matcher>,
}

impl AccessPolicy {
    /// Compiles a configuration: entries are normalised once here, not per message.
    pub fn new(config: AccessConfig) -> Self {
        let mut groups_exact = HashMap::new();
        let mut groups_folded = HashMap::new();
        let mut groups_any = None;
        for (chat, rule) in &config.groups {
            let m = Matcher::new(&rule.allow_from);
            if chat == "*" {
                groups_any = Some(m);
                continue;
            }
            groups_folded
                .entry(chat.to_lowercase())
                .or_insert_with(|| m.clone());
            groups_exact.insert(chat.clone(), m);
        }
        Self {
            dm_policy: config.dm_policy,
            group_policy: config.group_policy,
            allow_from: Matcher::new(&config.allow_from),
            group_allow_from: Matcher::new(&config.group_allow_from),
            groups_exact,
            groups_folded,
            groups_any,
        }
    }

    /// The DM policy.
    pub fn dm_policy(&self) -> DmPolicy {
        self.dm_policy
    }

    /// The group policy.
    pub fn group_policy(&self) -> GroupPolicy {
        self.group_policy
    }

    /// Decides whether `sender_id` may talk to the agent in `chat`. `is_paired` says whether
    /// the pairing store lists the sender as approved; it only matters for DMs (see
    /// [`AccessPolicy::needs_pairing_check`]).
    pub fn check(&self, chat: &ChatAddress, sender_id: &str, is_paired: bool) -> Decision {
        if sender_id.trim().is_empty() {
            return Decision::Deny(DenyReason::EmptySender);
        }
        match chat.kind {
            ChatKind::Dm => self.check_dm(sender_id, is_paired),
            ChatKind::Group => self.check_group(&chat.chat_id, sender_id),
        }
    }

    fn check_dm(&self, sender_id: &str, is_paired: bool) -> Decision {
        match self.dm_policy {
            DmPolicy::Open => Decision::Allow,
            DmPolicy::Disabled => Decision::Deny(DenyReason::DmDisabled),
            DmPolicy::Allowlist if is_paired || self.allow_from.matches(sender_id) => {
                Decision::Allow
            }
            DmPolicy::Allowlist => Decision::Deny(DenyReason::NotInAllowlist),
            DmPolicy::Pairing if is_paired || self.allow_from.matches(sender_id) => Decision::Allow,
            DmPolicy::Pairing => Decision::NeedsPairing,
        }
    }

    fn check_group(&self, chat_id: &str, sender_id: &str) -> Decision {
        match self.group_policy {
            GroupPolicy::Disabled => return Decision::Deny(DenyReason::GroupDisabled),
            GroupPolicy::Allowlist if !self.group_allow_from.matches(chat_id) => {
                return Decision::Deny(DenyReason::GroupNotAllowed)
            }
            GroupPolicy::Allowlist | GroupPolicy::Open => {}
        }
        match self.group_rule(chat_id) {
            Some(rule) if !rule.is_empty() && !rule.matches(sender_id) => {
                Decision::Deny(DenyReason::SenderNotAllowedInGroup)
            }
            _ => Decision::Allow,
        }
    }

    /// The rule for a chat: exact key, then a case-insensitive key, then `"*"`.
    fn group_rule(&self, chat_id: &str) -> Option<&Matcher> {
        if self.groups_exact.is_empty() && self.groups_any.is_none() {
            return None;
        }
        self.groups_exact
            .get(chat_id)
            .or_else(|| self.groups_folded.get(&chat_id.to_lowercase()))
            .or(self.groups_any.as_ref())
    }

    /// Whether [`AccessPolicy::check`] can depend on `is_paired` for this chat: true only for
    /// DMs under `pairing` or `allowlist` without a `*` entry. The router reads the pairing
    /// store only then.
    pub fn needs_pairing_check(&self, chat: &ChatAddress) -> bool {
        chat.kind == ChatKind::Dm
            && matches!(self.dm_policy, DmPolicy::Pairing | DmPolicy::Allowlist)
            && !self.allow_from.any
    }

    /// `(dm_open, group_open)`: which policies admit everyone, for the startup warning.
    pub fn is_open(&self) -> (bool, bool) {
        (
            self.dm_policy == DmPolicy::Open,
            self.group_policy == GroupPolicy::Open,
        )
    }
}
