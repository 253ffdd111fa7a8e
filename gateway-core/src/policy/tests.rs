//! Table-driven tests of the access policy: parsing from `extra`, entry normalisation, and every
//! DM and group rule.

use serde_json::json;

use super::*;

fn extra(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("test extra must be an object, got {other}"),
    }
}

fn policy(v: Value) -> AccessPolicy {
    let mut m = extra(v);
    AccessPolicy::new(AccessConfig::from_extra(&mut m).expect("valid test config"))
}

fn errors(v: Value) -> Vec<ConfigError> {
    let mut m = extra(v);
    AccessConfig::from_extra(&mut m).expect_err("config should be rejected")
}

const ALLOW: Decision = Decision::Allow;
const PAIR: Decision = Decision::NeedsPairing;

fn deny(r: DenyReason) -> Decision {
    Decision::Deny(r)
}

#[test]
fn defaults_are_open_for_both() {
    let cfg = AccessConfig::from_extra(&mut Map::new()).unwrap();
    assert_eq!(cfg, AccessConfig::default());
    assert_eq!(cfg.dm_policy, DmPolicy::Open);
    assert_eq!(cfg.group_policy, GroupPolicy::Open);
    let p = AccessPolicy::new(cfg);
    assert_eq!(p.is_open(), (true, true));
    assert_eq!(p.check(&ChatAddress::dm("alice"), "alice", false), ALLOW);
    assert_eq!(p.check(&ChatAddress::group("wrX"), "alice", false), ALLOW);
}

#[test]
fn policy_values_parse_case_insensitively() {
    let cases = [
        ("open", DmPolicy::Open),
        ("ALLOWLIST", DmPolicy::Allowlist),
        (" Disabled ", DmPolicy::Disabled),
        ("Pairing", DmPolicy::Pairing),
    ];
    for (raw, want) in cases {
        let mut m = extra(json!({ "dm_policy": raw }));
        assert_eq!(
            AccessConfig::from_extra(&mut m).unwrap().dm_policy,
            want,
            "{raw}"
        );
    }
    let cases = [
        ("OPEN", GroupPolicy::Open),
        ("allowList", GroupPolicy::Allowlist),
        ("disabled", GroupPolicy::Disabled),
    ];
    for (raw, want) in cases {
        let mut m = extra(json!({ "group_policy": raw }));
        assert_eq!(
            AccessConfig::from_extra(&mut m).unwrap().group_policy,
            want,
            "{raw}"
        );
    }
}

#[test]
fn unknown_values_are_rejected_with_path_and_valid_values() {
    let errs = errors(json!({ "dm_policy": "opne", "group_policy": "pairing" }));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "dm_policy");
    assert!(errs[0].message.contains("`opne`"), "{}", errs[0].message);
    assert!(
        errs[0]
            .message
            .contains("open, allowlist, disabled, pairing"),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[1].path, "group_policy");
    assert!(errs[1].message.contains("DMs only"), "{}", errs[1].message);
    assert!(
        errs[1].message.contains("open, allowlist, disabled"),
        "{}",
        errs[1].message
    );

    let errs = errors(json!({ "group_policy": "everyone" }));
    assert_eq!(errs[0].path, "group_policy");
    assert!(
        errs[0].message.contains("unknown value `everyone`"),
        "{}",
        errs[0].message
    );

    // An empty string is not silently the default.
    assert_eq!(errors(json!({ "dm_policy": "" }))[0].path, "dm_policy");
    assert_eq!(errors(json!({ "dm_policy": 3 }))[0].path, "dm_policy");
}

#[test]
fn every_bad_key_is_reported_at_once_with_its_path() {
    let errs = errors(json!({
        "dm_policy": "nope",
        "allow_from": {"a": 1},
        "groupAllowFrom": [true],
        "groups": {
            "wrX": { "allow_from": 5.5e0, "alow_from": ["a"] },
            "wrY": { "allowFrom": [{}] },
            "wrZ": "alice",
        },
    }));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "dm_policy",
            "allow_from",
            "groupAllowFrom[0]",
            "groups.wrX.alow_from",
            "groups.wrY.allowFrom[0]",
            "groups.wrZ",
        ],
        "{errs:?}"
    );

    assert_eq!(errors(json!({ "groups": ["wrX"] }))[0].path, "groups");
    assert_eq!(
        errors(json!({ "groups": { "wrX": { "allow_from": true } } }))[0].path,
        "groups.wrX.allow_from"
    );
}

#[test]
fn alias_and_canonical_key_together_are_an_error() {
    let errs = errors(json!({ "allow_from": ["a"], "allowFrom": ["b"] }));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "allowFrom");
    let errs = errors(json!({ "groups": { "wrX": { "allow_from": "a", "allowFrom": "b" } } }));
    assert_eq!(errs[0].path, "groups.wrX.allowFrom");
}

#[test]
fn policy_keys_are_removed_from_extra_and_others_kept() {
    let mut m = extra(json!({
        "bot_id": "b1",
        "secret": "s",
        "dm_policy": "pairing",
        "group_policy": "allowlist",
        "allowFrom": "alice",
        "groupAllowFrom": ["wrX"],
        "groups": { "wrX": { "allow_from": ["bob"] } },
    }));
    let cfg = AccessConfig::from_extra(&mut m).unwrap();
    assert_eq!(
        m.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bot_id", "secret"]
    );
    assert_eq!(cfg.dm_policy, DmPolicy::Pairing);
    assert_eq!(cfg.allow_from, ["alice"]);
    assert_eq!(cfg.group_allow_from, ["wrX"]);
    assert_eq!(cfg.groups["wrX"].allow_from, ["bob"]);

    // Invalid keys are removed too, so the adapter does not report them a second time.
    let mut m = extra(json!({ "dm_policy": "x", "allow_from": {}, "groups": 1, "bot_id": "b" }));
    assert!(AccessConfig::from_extra(&mut m).is_err());
    assert_eq!(m.keys().map(String::as_str).collect::<Vec<_>>(), ["bot_id"]);

    for key in POLICY_KEYS {
        let mut m = extra(json!({ *key: null }));
        AccessConfig::from_extra(&mut m).unwrap();
        assert!(m.is_empty(), "{key} not removed");
    }
}

#[test]
fn lists_accept_sequences_comma_strings_numbers_and_null() {
    let cases: [(Value, &[&str]); 7] = [
        (json!(["alice", " bob "]), &["alice", "bob"]),
        (json!("alice, bob,,  carol ,"), &["alice", "bob", "carol"]),
        (json!(" , "), &[]),
        (json!(["", "  ", "x"]), &["x"]),
        (json!([12345, "a"]), &["12345", "a"]),
        (json!(678), &["678"]),
        (Value::Null, &[]),
    ];
    for (raw, want) in cases {
        let mut m = extra(
            json!({ "allow_from": raw.clone(), "groups": { "g": { "allowFrom": raw.clone() } } }),
        );
        let cfg = AccessConfig::from_extra(&mut m).unwrap();
        assert_eq!(cfg.allow_from, want, "{raw}");
        assert_eq!(cfg.groups["g"].allow_from, want, "{raw}");
    }
}

#[test]
fn serde_deserialize_matches_from_extra() {
    let cfg: AccessConfig = serde_json::from_value(json!({
        "dm_policy": "PAIRING",
        "allowFrom": "alice, bob",
        "groupAllowFrom": [42, " wrX "],
        "groups": { "*": { "allowFrom": "carol" }, "wrY": {} },
    }))
    .unwrap();
    assert_eq!(cfg.dm_policy, DmPolicy::Pairing);
    assert_eq!(cfg.group_policy, GroupPolicy::Open);
    assert_eq!(cfg.allow_from, ["alice", "bob"]);
    assert_eq!(cfg.group_allow_from, ["42", "wrX"]);
    assert_eq!(cfg.groups["*"].allow_from, ["carol"]);
    assert!(cfg.groups["wrY"].allow_from.is_empty());

    let err = serde_json::from_value::<AccessConfig>(json!({ "dm_polcy": "open" })).unwrap_err();
    assert!(err.to_string().contains("dm_polcy"), "{err}");
    let err =
        serde_json::from_value::<AccessConfig>(json!({ "group_policy": "pairing" })).unwrap_err();
    assert!(err.to_string().contains("DMs only"), "{err}");
    let err = serde_json::from_value::<GroupRule>(json!({ "allow": [] })).unwrap_err();
    assert!(err.to_string().contains("allow"), "{err}");
}

#[test]
fn entries_are_normalised() {
    let cases: [(&str, Option<&str>); 10] = [
        ("alice", Some("alice")),
        ("  Alice  ", Some("alice")),
        ("wecom:user:Alice", Some("alice")),
        ("WeCom:User: Alice ", Some("alice")),
        ("USER:bob", Some("bob")),
        ("group:wrX", Some("wrx")),
        ("wecom:wrX", Some("wrx")),
        ("user:", None),
        ("wecom:*", Some("*")),
        // Only one `user:`/`group:` prefix is stripped, after the optional `wecom:`.
        ("user:group:x", Some("group:x")),
    ];
    for (raw, want) in cases {
        assert_eq!(normalise_entry(raw).as_deref(), want, "{raw}");
    }
    // A multi-byte first character must not panic the prefix check.
    assert_eq!(normalise_entry("张三").as_deref(), Some("张三"));
    assert_eq!(normalise_entry("wecom:张三").as_deref(), Some("张三"));
}

#[test]
fn matcher_compares_trimmed_lowercased_target_without_stripping_it() {
    let m = Matcher::new(&["wecom:user:Alice".into(), "USER:bob".into()]);
    let cases = [
        ("alice", true),
        ("ALICE", true),
        (" alice ", true),
        ("bob", true),
        ("carol", false),
        // The target is not prefix-stripped.
        ("user:alice", false),
        ("", false),
    ];
    for (target, want) in cases {
        assert_eq!(m.matches(target), want, "{target}");
    }
    let any = Matcher::new(&["x".into(), " * ".into()]);
    assert!(any.matches("anyone"));
    assert!(Matcher::new(&[]).is_empty());
    assert!(!Matcher::new(&[]).matches("alice"));
    assert!(Matcher::new(&["user:".into(), " ".into()]).is_empty());
}

/// One row of the DM table: policy, allow_from, sender, paired, expected decision.
type DmCase = (&'static str, Value, &'static str, bool, Decision);

#[test]
fn dm_rules() {
    use DenyReason::*;
    #[rustfmt::skip]
    let cases: Vec<DmCase> = vec![
        // open admits everyone.
        ("open", json!([]), "alice", false, ALLOW),
        ("open", json!(["bob"]), "alice", false, ALLOW),
        // disabled refuses everyone, even listed or paired users.
        ("disabled", json!(["alice"]), "alice", true, deny(DmDisabled)),
        // allowlist: listed or paired.
        ("allowlist", json!(["alice"]), "alice", false, ALLOW),
        ("allowlist", json!(["alice"]), "bob", false, deny(NotInAllowlist)),
        ("allowlist", json!(["alice"]), "bob", true, ALLOW),
        ("allowlist", json!([]), "bob", false, deny(NotInAllowlist)),
        ("allowlist", json!(["*"]), "bob", false, ALLOW),
        ("allowlist", json!(["wecom:user:Alice"]), "alice", false, ALLOW),
        ("allowlist", json!(["USER:bob"]), "BOB", false, ALLOW),
        ("allowlist", json!("  alice , bob "), "bob", false, ALLOW),
        ("allowlist", json!(["Alice"]), " ALICE ", false, ALLOW),
        ("allowlist", json!(["alice"]), "user:alice", false, deny(NotInAllowlist)),
        // pairing: listed or paired, else offer a code.
        ("pairing", json!(["alice"]), "alice", false, ALLOW),
        ("pairing", json!(["alice"]), "bob", false, PAIR),
        ("pairing", json!([]), "bob", true, ALLOW),
        ("pairing", json!("*"), "bob", false, ALLOW),
        // An empty sender is refused under every policy.
        ("open", json!(["*"]), "", false, deny(EmptySender)),
        ("pairing", json!(["*"]), "  ", true, deny(EmptySender)),
        ("allowlist", json!(["*"]), "", true, deny(EmptySender)),
        ("disabled", json!([]), "", false, deny(EmptySender)),
    ];
    for (dm, allow, sender, paired, want) in cases {
        let p = policy(json!({ "dm_policy": dm, "allow_from": allow.clone() }));
        let got = p.check(&ChatAddress::dm(sender), sender, paired);
        assert_eq!(
            got, want,
            "dm_policy={dm} allow_from={allow} sender={sender:?} paired={paired}"
        );
    }
}

/// One row of the group table: group policy, group_allow_from, groups, chat, sender, expected.
type GroupCase = (
    &'static str,
    Value,
    Value,
    &'static str,
    &'static str,
    Decision,
);

#[test]
fn group_rules() {
    use DenyReason::*;
    let none = json!({});
    let only_bob = json!({"wrX": {"allow_from": ["bob"]}});
    let bob_or_star = json!({"wrX": {"allow_from": ["bob"]}, "*": {"allow_from": ["carol"]}});
    let two_cases = json!({"wrX": {"allow_from": ["bob"]}, "WRX": {"allow_from": ["dave"]}});
    #[rustfmt::skip]
    let cases: Vec<GroupCase> = vec![
        // open: any chat, no sender lists.
        ("open", json!([]), none.clone(), "wrX", "alice", ALLOW),
        // disabled: nothing, whatever the lists say.
        ("disabled", json!(["*"]), none.clone(), "wrX", "alice", deny(GroupDisabled)),
        // allowlist: the chat id must be listed.
        ("allowlist", json!(["wrX"]), none.clone(), "wrX", "alice", ALLOW),
        ("allowlist", json!(["wrX"]), none.clone(), "wrY", "alice", deny(GroupNotAllowed)),
        ("allowlist", json!([]), none.clone(), "wrX", "alice", deny(GroupNotAllowed)),
        ("allowlist", json!(["group:WRX"]), none.clone(), "wrx", "alice", ALLOW),
        ("allowlist", json!("wecom:group:wrX, wrY"), none.clone(), "wrY", "alice", ALLOW),
        ("allowlist", json!(["*"]), none.clone(), "anything", "alice", ALLOW),
        // A sender list on an allowed group applies after the chat check.
        ("allowlist", json!(["wrX"]), only_bob.clone(), "wrX", "alice", deny(SenderNotAllowedInGroup)),
        ("allowlist", json!(["wrX"]), only_bob.clone(), "wrX", "bob", ALLOW),
        ("allowlist", json!(["wrY"]), only_bob.clone(), "wrX", "bob", deny(GroupNotAllowed)),
        // open skips the chat check but still applies per-group sender lists.
        ("open", json!([]), only_bob.clone(), "wrX", "alice", deny(SenderNotAllowedInGroup)),
        ("open", json!([]), only_bob.clone(), "wrX", "BOB", ALLOW),
        ("open", json!([]), only_bob.clone(), "wrY", "alice", ALLOW),
        // Lookup: exact key, then case-insensitive key, then "*".
        ("open", json!([]), bob_or_star.clone(), "WRX", "bob", ALLOW),
        ("open", json!([]), bob_or_star.clone(), "WRX", "carol", deny(SenderNotAllowedInGroup)),
        ("open", json!([]), two_cases.clone(), "WRX", "dave", ALLOW),
        ("open", json!([]), two_cases.clone(), "WRX", "bob", deny(SenderNotAllowedInGroup)),
        ("open", json!([]), two_cases.clone(), "wrX", "dave", deny(SenderNotAllowedInGroup)),
        ("open", json!([]), bob_or_star.clone(), "wrZ", "carol", ALLOW),
        ("open", json!([]), bob_or_star.clone(), "wrZ", "bob", deny(SenderNotAllowedInGroup)),
        ("open", json!([]), json!({"*": {"allow_from": ["*"]}}), "wrZ", "anyone", ALLOW),
        // An empty rule (or one with no usable entries) means everyone the policy admits, and
        // it shadows "*".
        ("open", json!([]), json!({"wrX": {}, "*": {"allow_from": ["carol"]}}), "wrX", "alice", ALLOW),
        ("open", json!([]), json!({"wrX": {"allow_from": "user:"}}), "wrX", "alice", ALLOW),
        ("open", json!([]), json!({"wrX": null}), "wrX", "alice", ALLOW),
        // Sender entries are normalised like DM entries.
        ("open", json!([]), json!({"wrX": {"allowFrom": "wecom:user:Alice, USER:bob"}}), "wrX", "ALICE", ALLOW),
        // Empty senders are refused.
        ("open", json!([]), none.clone(), "wrX", "", deny(EmptySender)),
        ("disabled", json!([]), none.clone(), "wrX", " ", deny(EmptySender)),
    ];
    for (gp, gallow, groups, chat, sender, want) in cases {
        let cfg = json!({ "group_policy": gp, "group_allow_from": gallow, "groups": groups });
        let p = policy(cfg.clone());
        // Pairing never admits into groups, so `is_paired` must not matter.
        for paired in [false, true] {
            let got = p.check(&ChatAddress::group(chat), sender, paired);
            assert_eq!(
                got, want,
                "{cfg} chat={chat} sender={sender:?} paired={paired}"
            );
        }
    }
}

#[test]
fn dm_policy_does_not_leak_into_groups_and_back() {
    let p = policy(json!({ "dm_policy": "disabled", "group_policy": "open" }));
    assert_eq!(p.check(&ChatAddress::group("wrX"), "alice", false), ALLOW);
    let p =
        policy(json!({ "dm_policy": "open", "group_policy": "disabled", "allow_from": ["bob"] }));
    assert_eq!(p.check(&ChatAddress::dm("alice"), "alice", false), ALLOW);
    // allow_from is for DMs only; it does not gate groups.
    let p = policy(json!({ "dm_policy": "allowlist", "allow_from": ["bob"] }));
    assert_eq!(p.check(&ChatAddress::group("wrX"), "alice", false), ALLOW);
}

#[test]
fn needs_pairing_check_only_for_dms_where_pairing_matters() {
    let cases = [
        (json!({"dm_policy": "pairing"}), true, false),
        (
            json!({"dm_policy": "allowlist", "allow_from": ["alice"]}),
            true,
            false,
        ),
        (
            json!({"dm_policy": "allowlist", "allow_from": ["*"]}),
            false,
            false,
        ),
        (json!({"dm_policy": "open"}), false, false),
        (json!({"dm_policy": "disabled"}), false, false),
    ];
    for (cfg, dm, group) in cases {
        let p = policy(cfg.clone());
        assert_eq!(
            p.needs_pairing_check(&ChatAddress::dm("alice")),
            dm,
            "{cfg}"
        );
        assert_eq!(
            p.needs_pairing_check(&ChatAddress::group("wrX")),
            group,
            "{cfg}"
        );
    }
}

#[test]
fn is_open_reports_each_side() {
    let cases = [
        (json!({}), (true, true)),
        (json!({"dm_policy": "pairing"}), (false, true)),
        (json!({"group_policy": "allowlist"}), (true, false)),
        (
            json!({"dm_policy": "disabled", "group_policy": "disabled"}),
            (false, false),
        ),
    ];
    for (cfg, want) in cases {
        let p = policy(cfg.clone());
        assert_eq!(p.is_open(), want, "{cfg}");
    }
}

#[test]
fn deny_reasons_have_distinct_labels() {
    use DenyReason::*;
    let all = [
        EmptySender,
        DmDisabled,
        NotInAllowlist,
        GroupDisabled,
        GroupNotAllowed,
        SenderNotAllowedInGroup,
    ];
    let labels: HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), all.len());
}
