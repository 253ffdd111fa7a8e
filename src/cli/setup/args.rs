//! The command line of `gateway setup`, and how `--non-interactive` turns flags into answers.

use std::path::PathBuf;
use std::process::ExitCode;

use super::prompt::{Prompter, ScriptedPrompter, TerminalPrompter};
use super::qr::{PollTiming, DEFAULT_QR_BASE_URL};
use super::{target_path, Overrides, SetupError, Wizard};

/// Arguments of `gateway setup`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SetupArgs {
    /// Platform kind to add or edit: wecom or wecom_callback (asked when omitted).
    #[arg(value_name = "PLATFORM")]
    pub platform_arg: Option<String>,
    /// Same as PLATFORM.
    #[arg(long, conflicts_with = "platform_arg")]
    pub platform: Option<String>,
    /// Config file (default: $GATEWAY_CONFIG, ./config.yaml, ~/.config/gateway/config.yaml; created when missing).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Instance name under `platforms:` (default: the kind; another name adds a second bot).
    #[arg(long)]
    pub name: Option<String>,
    /// Ask nothing: take every answer from the flags below (and defaults).
    #[arg(long)]
    pub non_interactive: bool,
    /// Skip live checks (gettoken, bot connection, agent test).
    #[arg(long)]
    pub no_verify: bool,

    /// wecom: the Bot ID.
    #[arg(long)]
    pub bot_id: Option<String>,
    /// wecom: the bot Secret; wecom_callback: the app Secret. Prefer --secret-env.
    #[arg(long, conflicts_with = "secret_env")]
    pub secret: Option<String>,
    /// Name of the environment variable holding the secret: the file gets the reference
    /// `${NAME}` (resolved by `gateway run`), never the value.
    #[arg(long, value_name = "NAME")]
    pub secret_env: Option<String>,
    /// wecom: create the bot by scanning a QR code (interactive terminals).
    #[arg(long)]
    pub scan: bool,
    /// wecom: connect the bot once to test it (off in non-interactive runs unless given).
    #[arg(long)]
    pub verify_bot: bool,
    /// wecom: the long-connection endpoint.
    #[arg(long)]
    pub websocket_url: Option<String>,
    /// Base URL of the scan-to-create endpoints.
    #[arg(long, env = "WECOM_QR_BASE_URL", default_value = DEFAULT_QR_BASE_URL, hide_default_value = true)]
    pub qr_base_url: String,

    /// wecom_callback: the CorpID.
    #[arg(long)]
    pub corp_id: Option<String>,
    /// wecom_callback: the app's AgentId.
    #[arg(long)]
    pub agent_id: Option<String>,
    /// wecom_callback: the callback Token (generated when neither it nor a current one exists).
    #[arg(long, conflicts_with = "token_env")]
    pub token: Option<String>,
    /// Name of the environment variable holding the Token (written as `${NAME}`).
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
    /// wecom_callback: the EncodingAESKey (43 characters).
    #[arg(long, conflicts_with = "encoding_aes_key_env")]
    pub encoding_aes_key: Option<String>,
    /// Name of the environment variable holding the EncodingAESKey (written as `${NAME}`).
    #[arg(long, value_name = "NAME")]
    pub encoding_aes_key_env: Option<String>,
    /// wecom_callback: generate a new Token and EncodingAESKey.
    #[arg(long)]
    pub generate_secrets: bool,
    /// wecom_callback: listen port.
    #[arg(long)]
    pub port: Option<u16>,
    /// wecom_callback: callback path.
    #[arg(long)]
    pub path: Option<String>,
    /// wecom_callback: listen address.
    #[arg(long)]
    pub host: Option<String>,
    /// wecom_callback: the public base URL WeCom reaches (for the printed callback URL).
    #[arg(long)]
    pub public_url: Option<String>,
    /// wecom_callback: the WeCom REST API base.
    #[arg(long)]
    pub api_base_url: Option<String>,

    /// Direct messages: pairing, allowlist, open or disabled.
    #[arg(long)]
    pub dm_policy: Option<String>,
    /// Users allowed (or approved in advance), comma-separated.
    #[arg(long)]
    pub allow_from: Option<String>,
    /// Group chats (wecom): disabled, allowlist or open.
    #[arg(long)]
    pub group_policy: Option<String>,
    /// Group chat ids allowed, comma-separated.
    #[arg(long)]
    pub group_allow_from: Option<String>,
    /// Home channel for notices: user:ID or group:ID.
    #[arg(long)]
    pub home_channel: Option<String>,

    /// Agent backend: echo, openai, http or command (the agent section is kept when omitted).
    #[arg(long)]
    pub agent: Option<String>,
    /// openai: API base URL.
    #[arg(long)]
    pub base_url: Option<String>,
    /// openai: model.
    #[arg(long)]
    pub model: Option<String>,
    /// openai: NAME of the variable holding the API key.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// http: the URL turns are POSTed to.
    #[arg(long)]
    pub agent_url: Option<String>,
    /// command: the program and its arguments.
    #[arg(long)]
    pub agent_command: Option<String>,
    /// Send a test message to the agent.
    #[arg(long)]
    pub test_agent: bool,
}

/// The `${NAME}` reference written for `--…-env NAME`. The variable must be set now too: the
/// live checks and the final validation use its value (which never reaches the file).
fn from_env(flag: &'static str, var: &str) -> Result<String, SetupError> {
    if !super::is_env_name(var) {
        return Err(SetupError::Unsupported(format!(
            "{flag}: `{var}` is not a variable name (letters, digits, `_`)"
        )));
    }
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|_| format!("${{{var}}}"))
        .ok_or_else(|| SetupError::Unsupported(format!("{flag}: the variable {var} is not set")))
}

/// The answers of a `--non-interactive` run.
pub fn answers(args: &SetupArgs) -> Result<ScriptedPrompter, SetupError> {
    let mut p = ScriptedPrompter::new().echo(true);
    let secret = match (&args.secret, &args.secret_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => Some(from_env("--secret-env", var)?),
        _ => None,
    };
    let token = match (&args.token, &args.token_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => Some(from_env("--token-env", var)?),
        _ => None,
    };
    let key = match (&args.encoding_aes_key, &args.encoding_aes_key_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => Some(from_env("--encoding-aes-key-env", var)?),
        _ => None,
    };
    let set =
        |p: &mut ScriptedPrompter, id: &'static str, flag: &'static str, v: &Option<String>| {
            p.flag(id, flag);
            if let Some(v) = v {
                p.push(id, v.clone());
            }
        };
    set(
        &mut p,
        "wecom_method",
        "--bot-id",
        &Some(if args.scan { "scan" } else { "manual" }.into()),
    );
    set(&mut p, "bot_id", "--bot-id", &args.bot_id);
    set(&mut p, "bot_secret", "--secret or --secret-env", &secret);
    set(&mut p, "corp_id", "--corp-id", &args.corp_id);
    set(&mut p, "corp_secret", "--secret or --secret-env", &secret);
    set(&mut p, "agent_id", "--agent-id", &args.agent_id);
    set(&mut p, "token", "--token or --generate-secrets", &token);
    set(
        &mut p,
        "encoding_aes_key",
        "--encoding-aes-key or --generate-secrets",
        &key,
    );
    // Generate unless both values were given; a current pair is kept (the question's default).
    if args.generate_secrets {
        p.push("generate_secrets", "yes");
    } else if token.is_some() || key.is_some() {
        p.push("generate_secrets", "no");
    }
    set(&mut p, "port", "--port", &args.port.map(|n| n.to_string()));
    set(&mut p, "path", "--path", &args.path);
    set(&mut p, "public_url", "--public-url", &args.public_url);
    set(&mut p, "dm_policy", "--dm-policy", &args.dm_policy);
    set(&mut p, "allow_from", "--allow-from", &args.allow_from);
    set(&mut p, "group_policy", "--group-policy", &args.group_policy);
    set(
        &mut p,
        "group_allow_from",
        "--group-allow-from",
        &args.group_allow_from,
    );
    set(&mut p, "home_channel", "--home-channel", &args.home_channel);
    p.push(
        "agent_change",
        if args.agent.is_some() { "yes" } else { "no" },
    );
    set(&mut p, "agent_backend", "--agent", &args.agent);
    set(&mut p, "base_url", "--base-url", &args.base_url);
    set(&mut p, "model", "--model", &args.model);
    set(&mut p, "api_key_env", "--api-key-env", &args.api_key_env);
    set(&mut p, "agent_url", "--agent-url", &args.agent_url);
    set(
        &mut p,
        "agent_command",
        "--agent-command",
        &args.agent_command,
    );
    p.push("agent_test", if args.test_agent { "yes" } else { "no" });
    Ok(p)
}

/// Runs `gateway setup`. Exit 0 when the file was written, 2 when the result would not pass
/// `gateway check`, 1 for anything else (a refused credential, an unanswered question).
pub async fn setup(args: SetupArgs, registry: router::Registry) -> anyhow::Result<ExitCode> {
    let kind = args.platform.clone().or(args.platform_arg.clone());
    let path = target_path(args.config.as_deref());
    let env = |name: &str| router::registry::process_env(name);
    let mut scripted;
    let mut terminal;
    let prompter: &mut dyn Prompter = if args.non_interactive {
        if kind.is_none() {
            eprintln!("--non-interactive needs the platform: gateway setup wecom|wecom_callback --non-interactive …");
            return Ok(ExitCode::from(2));
        }
        scripted = match answers(&args) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        &mut scripted
    } else {
        terminal = TerminalPrompter::default();
        &mut terminal
    };
    let mut wizard = Wizard {
        prompter,
        registry: &registry,
        env: &env,
        http: super::checks::http_client(),
        qr_base: args.qr_base_url.clone(),
        qr_timing: PollTiming::default(),
        verify: !args.no_verify,
        bot_check: args.non_interactive.then_some(args.verify_bot),
        interactive: !args.non_interactive,
        overrides: Overrides {
            websocket_url: args.websocket_url.clone(),
            api_base_url: args.api_base_url.clone(),
            host: args.host.clone(),
        },
        data_dir: PathBuf::new(),
    };
    match wizard
        .run(&path, kind.as_deref(), args.name.as_deref())
        .await
    {
        Ok(out) => {
            println!(
                "\n✓ {} platforms.{} [{}] in {} (mode 0600){}.",
                if out.created { "Added" } else { "Updated" },
                out.instance,
                out.kind,
                out.path.display(),
                if out.agent_changed {
                    " and the agent backend"
                } else {
                    ""
                }
            );
            for t in &out.todo {
                println!("  Before running: {t}");
            }
            let c = out.path.display();
            println!(
                "Next: `gateway check -c {c}`, then `gateway run -c {c}`; `gateway doctor -c {c}` \
                 checks ports, network and credentials."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ SetupError::Invalid(_)) => {
            eprintln!("Nothing was written: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("Nothing was written: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
