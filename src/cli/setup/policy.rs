//! Setup of an instance's access policy (the router's `dm_policy`, `allow_from`, `group_policy`,
//! `group_allow_from`; see `gateway_core::policy`) and its home channel. Recommends `pairing` or an
//! allowlist and says plainly what `open` means.

use gateway_core::Target;
use serde_json::{Map, Value};

use super::prompt::Question;
use super::yaml_edit::Fields;
use super::{field, list_of, split_list, str_of, wecom_callback, SetupError, Wizard};

/// The keys this step writes (`groups` is kept as it was).
pub const MANAGED: &[&str] = &[
    "dm_policy",
    "allow_from",
    "group_policy",
    "group_allow_from",
];

/// Validates a home channel (`user:ID` or `group:ID`).
pub fn check_home_channel(s: &str) -> Result<(), String> {
    match Target::parse(s) {
        Ok(Target::User(_)) | Ok(Target::Group(_)) => Ok(()),
        Ok(_) => Err("a home channel is one user (user:ID) or one group chat (group:ID)".into()),
        Err(e) => Err(e),
    }
}

fn check_ids(s: &str) -> Result<(), String> {
    if split_list(s).is_empty() {
        Err("give at least one id (comma-separated)".into())
    } else {
        Ok(())
    }
}

/// Callback apps identify senders as `corp_id:user_id`; a bare user id is prefixed so that the
/// allowlist matches.
fn qualify(ids: Vec<String>, corp_id: Option<&str>) -> Vec<String> {
    match corp_id {
        Some(corp) => ids
            .into_iter()
            .map(|id| {
                if id == "*" || id.contains(':') {
                    id
                } else {
                    format!("{corp}:{id}")
                }
            })
            .collect(),
        None => ids,
    }
}

/// Asks for the access policy and home channel. Returns the policy keys for `extra` and the
/// home channel (`None`: none).
pub fn configure(
    w: &mut Wizard<'_>,
    kind: &str,
    corp_id: Option<&str>,
    extra: &Map<String, Value>,
    entry: &Map<String, Value>,
) -> Result<(Fields, Option<String>), SetupError> {
    let callback = kind == wecom_callback::KIND;
    let corp = if callback { corp_id } else { None };
    w.prompter.say(
        "Who may talk to the agent through this bot?\n\
         \x20 pairing   — strangers get a one-time code; you approve them with \
         `gateway pairing approve <instance> <code>` (recommended)\n\
         \x20 allowlist — only the user ids you list\n\
         \x20 open      — anyone in your company who finds the bot uses your agent (and your API budget)\n\
         \x20 disabled  — no direct messages",
    );
    let choices = [
        (
            "pairing",
            "pairing — approve each new user with a code (recommended)".to_string(),
        ),
        (
            "allowlist",
            "allowlist — only the user ids I list".to_string(),
        ),
        ("open", "open — anyone in the company".to_string()),
        ("disabled", "disabled — no direct messages".to_string()),
    ];
    let current = str_of(extra, "dm_policy").map(|s| s.to_ascii_lowercase());
    let default = current
        .as_deref()
        .and_then(|c| choices.iter().position(|(k, _)| *k == c))
        .unwrap_or(0);
    let dm = w.prompter.select(
        &Question::new("dm_policy", "Direct messages"),
        &choices,
        default,
    )?;
    let mut fields: Fields = vec![field("dm_policy", dm)];
    let current_allow = list_of(extra, "allow_from").join(", ");
    let hint = if callback {
        " (WeCom user ids, e.g. zhangsan; the CorpID is added for you)"
    } else {
        " (WeCom user ids, e.g. zhangsan)"
    };
    let allow = match dm {
        "allowlist" => w.prompter.input(
            &Question::new(
                "allow_from",
                format!("Users allowed to talk to the agent{hint}"),
            )
            .default(Some(current_allow)),
            &check_ids,
        )?,
        "pairing" => w.prompter.input(
            &Question::new(
                "allow_from",
                format!("Users approved in advance{hint}; Enter for none"),
            )
            .default(Some(current_allow))
            .optional(),
            &super::prompt::any,
        )?,
        _ => current_allow,
    };
    let allow = qualify(split_list(&allow), corp);
    if !allow.is_empty() {
        fields.push(field("allow_from", allow));
    }
    if dm == "open" {
        w.prompter.say(
            "⚠ open: every colleague who can reach the bot talks to your agent. `gateway run` \
             warns about it at every start.",
        );
    }

    // Self-built apps only see one-to-one conversations; group settings apply to AI Bots.
    if !callback {
        let choices = [
            ("disabled", "disabled — ignore group chats".to_string()),
            (
                "allowlist",
                "allowlist — only the group chats I list".to_string(),
            ),
            ("open", "open — any group the bot is added to".to_string()),
        ];
        let current = str_of(extra, "group_policy").map(|s| s.to_ascii_lowercase());
        let default = current
            .as_deref()
            .and_then(|c| choices.iter().position(|(k, _)| *k == c))
            .unwrap_or(0);
        let group = w.prompter.select(
            &Question::new("group_policy", "Group chats"),
            &choices,
            default,
        )?;
        fields.push(field("group_policy", group));
        let current_groups = list_of(extra, "group_allow_from").join(", ");
        let groups = if group == "allowlist" {
            w.prompter.input(
                &Question::new(
                    "group_allow_from",
                    "Group chat ids (the gateway log shows a group's id when it is blocked)",
                )
                .default(Some(current_groups)),
                &check_ids,
            )?
        } else {
            current_groups
        };
        let groups = split_list(&groups);
        if !groups.is_empty() {
            fields.push(field("group_allow_from", groups));
        }
    }

    let home = w.prompter.input(
        &Question::new(
            "home_channel",
            "Home channel for notices (user:ID or group:ID; Enter keeps the current one, - for none)",
        )
        .default(str_of(entry, "home_channel"))
        .optional(),
        &|s: &str| if s == "-" { Ok(()) } else { check_home_channel(s) },
    )?;
    Ok((fields, Some(home).filter(|h| !h.is_empty() && h != "-")))
}
