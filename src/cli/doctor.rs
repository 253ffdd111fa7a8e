//! `gateway doctor`: a checklist of what a working gateway needs, each failure with its fix.
//!
//! Config valid; data dir writable; listen ports free (or held by the running gateway); DNS and
//! TCP reach of the WeCom endpoints (short timeouts, so offline is reported, never hung);
//! credentials (`gettoken` for callback apps; the bot's subscribe only when no running gateway
//! owns the connection); host clock skew from the API's `Date` header; a signed URL-verification
//! GET against the local callback endpoint when a gateway runs; agent backend reachable.
//! Exit 0 when nothing failed, 1 otherwise.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use gateway_core::adapter::{InstanceSpec, Resource};
use router::admin::AdminInfo;
use router::config::{GatewayConfig, PlatformEntry};
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::setup::checks::{self, ConnectError, CredCheck};

/// Largest accepted clock skew.
const MAX_SKEW_SECS: i64 = 60;
/// Default long-connection endpoint of `wecom`.
const DEFAULT_WEBSOCKET_URL: &str = "wss://openws.work.weixin.qq.com";
/// Default REST base of `wecom_callback`.
const DEFAULT_API_BASE_URL: &str = "https://qyapi.weixin.qq.com";

/// Arguments of `gateway doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Config file.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Seconds each network probe may take.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Pass,
    /// Broken; the item says how to fix it.
    Fail,
    /// Not checked (offline, nothing to check, unsafe right now).
    Skip,
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Item {
    /// The verdict.
    pub status: Status,
    /// What was checked and what was found.
    pub title: String,
    /// More lines (config problems, server messages).
    pub details: Vec<String>,
    /// How to fix a failure.
    pub fix: Option<String>,
}

impl Item {
    fn pass(title: impl Into<String>) -> Self {
        Self {
            status: Status::Pass,
            title: title.into(),
            details: Vec::new(),
            fix: None,
        }
    }
    fn skip(title: impl Into<String>) -> Self {
        Self {
            status: Status::Skip,
            title: title.into(),
            details: Vec::new(),
            fix: None,
        }
    }
    fn fail(title: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            title: title.into(),
            details: Vec::new(),
            fix: Some(fix.into()),
        }
    }
    fn with_details(mut self, d: Vec<String>) -> Self {
        self.details = d;
        self
    }
}

/// One callback app as written in the config (flat keys or an `apps:` entry).
#[derive(Debug, Clone)]
struct App {
    label: String,
    corp_id: String,
    corp_secret: String,
    token: String,
    key: String,
    path: String,
}

fn text(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind_of(name: &str, e: &PlatformEntry) -> String {
    e.kind.clone().unwrap_or_else(|| name.to_string())
}

fn callback_apps(name: &str, extra: &Map<String, Value>) -> Vec<App> {
    let default_path = text(extra, "path").unwrap_or_else(|| "/wecom/callback".into());
    let one = |m: &Map<String, Value>, label: String| App {
        label,
        corp_id: text(m, "corp_id").unwrap_or_default(),
        corp_secret: text(m, "corp_secret").unwrap_or_default(),
        token: text(m, "token").unwrap_or_default(),
        key: text(m, "encoding_aes_key").unwrap_or_default(),
        path: text(m, "path").unwrap_or_else(|| default_path.clone()),
    };
    match extra.get("apps") {
        Some(Value::Array(apps)) => apps
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.as_object()
                    .map(|m| one(m, format!("platforms.{name}.extra.apps[{i}]")))
            })
            .collect(),
        _ => vec![one(extra, format!("platforms.{name}"))],
    }
}

/// Where a callback instance listens.
fn callback_listen(extra: &Map<String, Value>) -> Option<SocketAddr> {
    let host: IpAddr = text(extra, "host")
        .unwrap_or_else(|| "0.0.0.0".into())
        .parse()
        .ok()?;
    let port = match extra.get("port") {
        None | Some(Value::Null) => 8645,
        Some(v) => u16::try_from(v.as_u64().or_else(|| v.as_str()?.parse().ok())?).ok()?,
    };
    (port != 0).then_some(SocketAddr::new(host, port))
}

/// The address to reach a listener on this host.
fn local_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Runs every check for the config at `file` and returns the checklist.
pub async fn run_checks(
    file: Option<&Path>,
    registry: &router::Registry,
    env: router::registry::EnvLookup<'_>,
    timeout: Duration,
) -> Vec<Item> {
    let mut items = Vec::new();
    let path = match router::config::find_config_file(file) {
        Ok(p) => p,
        Err(e) => {
            items.push(Item::fail(
                format!("Config file: {}", e.message),
                "create one with `gateway setup`, or pass -c FILE",
            ));
            return items;
        }
    };
    match router::load(Some(&path), registry, env) {
        Ok((cfg, plans)) => items.push(Item::pass(format!(
            "Config valid: {} platform instance(s), agent backend `{}`",
            plans.len(),
            cfg.agent.backend_name()
        ))),
        Err(e) => items.push(
            Item::fail(
                format!("Config has {} problem(s)", e.0.len()),
                format!(
                    "fix the keys above (`gateway check -c {}` lists them too)",
                    path.display()
                ),
            )
            .with_details(e.0.iter().map(|e| e.to_string()).collect()),
        ),
    }
    // The remaining checks use whatever parsed, so one broken key does not hide the rest.
    let mut cfg = match router::config::load_tree(Some(&path)) {
        Ok(tree) => router::config::parse_tree_partial(tree).0,
        Err(_) => GatewayConfig::default(),
    };
    router::registry::apply_kind_env(&mut cfg, registry, env);
    let cfg = cfg;

    items.push(check_data_dir(&cfg.gateway.data_dir));
    let running = checks::running_gateway(&cfg.gateway.data_dir).await;
    items.push(match &running {
        Some(info) => Item::pass(format!(
            "A gateway is running on this data dir (pid {}, {})",
            info.pid, info.listen
        )),
        None => {
            Item::skip("No gateway is running on this data dir (checks that need one are skipped)")
        }
    });

    let enabled: Vec<(&String, &PlatformEntry)> = cfg
        .platforms
        .iter()
        .filter(|(_, e)| e.enabled != Some(false))
        .collect();
    items.extend(check_ports(&cfg, &enabled, registry, running.as_ref()));

    // Endpoints: (label, url).
    let mut endpoints: Vec<(String, String)> = Vec::new();
    for (name, e) in &enabled {
        let kind = kind_of(name, e);
        let (key, default) = match kind.as_str() {
            "wecom" => ("websocket_url", DEFAULT_WEBSOCKET_URL),
            "wecom_callback" => ("api_base_url", DEFAULT_API_BASE_URL),
            _ => continue,
        };
        let url = text(&e.extra, key).unwrap_or_else(|| default.into());
        if !endpoints.iter().any(|(_, u)| *u == url) {
            endpoints.push((format!("platforms.{name}.extra.{key}"), url));
        }
    }
    let mut reachable: Vec<String> = Vec::new();
    for (label, url) in &endpoints {
        let item = check_reach(label, url, timeout).await;
        if item.status == Status::Pass {
            reachable.push(url.clone());
        }
        items.push(item);
    }

    let http = checks::http_client();
    let mut server_date = None;
    for (name, e) in &enabled {
        match kind_of(name, e).as_str() {
            "wecom_callback" => {
                let base =
                    text(&e.extra, "api_base_url").unwrap_or_else(|| DEFAULT_API_BASE_URL.into());
                for app in callback_apps(name, &e.extra) {
                    if !reachable.contains(&base) {
                        items.push(Item::skip(format!(
                            "Credentials of {}: skipped ({base} is unreachable)",
                            app.label
                        )));
                        continue;
                    }
                    let r = checks::gettoken(
                        &http,
                        &base,
                        &app.corp_id,
                        &SecretString::from(app.corp_secret.clone()),
                        timeout,
                    )
                    .await;
                    server_date = server_date.or(r.server_date);
                    items.push(match r.check {
                        CredCheck::Accepted => Item::pass(format!("Credentials of {}: gettoken accepted", app.label)),
                        CredCheck::Rejected { errcode, message } => Item::fail(
                            format!("Credentials of {}: WeCom refused gettoken (errcode {errcode}: {message})", app.label),
                            format!("copy the CorpID (My Company → Company Info) and the app's Secret (App Management → your app) again into {}.extra, or run `gateway setup wecom_callback`", app.label),
                        ),
                        CredCheck::Unreachable(why) => Item::fail(
                            format!("Credentials of {}: no usable answer from gettoken ({why})", app.label),
                            "check the network path to the WeCom API (proxy, firewall) and api_base_url",
                        ),
                    });
                }
            }
            "wecom" => items.push(
                check_bot(
                    name,
                    e,
                    &cfg,
                    registry,
                    running.as_ref(),
                    &reachable,
                    timeout,
                )
                .await,
            ),
            _ => {}
        }
    }

    items.push(check_clock(&http, server_date, &endpoints, &reachable, timeout).await);
    items.extend(check_callback_urls(&enabled, running.as_ref(), timeout).await);
    items.push(check_agent(&cfg.agent, timeout).await);
    items
}

fn check_data_dir(dir: &Path) -> Item {
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let r = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match r {
        Ok(()) => Item::pass(format!("Data dir {} is writable", dir.display())),
        Err(e) => Item::fail(
            format!("Data dir {} is not writable ({e})", dir.display()),
            "create it and give the gateway's user write access (mkdir -p DIR && chown USER DIR), or set gateway.data_dir",
        ),
    }
}

fn check_ports(
    cfg: &GatewayConfig,
    enabled: &[(&String, &PlatformEntry)],
    registry: &router::Registry,
    running: Option<&AdminInfo>,
) -> Vec<Item> {
    let mut ports: Vec<(String, SocketAddr)> = Vec::new();
    if let Ok(a) = cfg.gateway.listen.parse() {
        ports.push(("gateway.listen".into(), a));
    }
    for (name, e) in enabled {
        let kind = kind_of(name, e);
        let label = format!("platforms.{name}.extra.port");
        if kind == "wecom_callback" {
            if let Some(a) = callback_listen(&e.extra) {
                ports.push((label, a));
            }
        } else if let Some(f) = registry.get(&kind) {
            for Resource::ListenPort(r) in f.resources(&Value::Object(e.extra.clone())) {
                if let Ok(a) = r.parse() {
                    ports.push((label.clone(), a));
                }
            }
        }
    }
    ports
        .into_iter()
        .map(|(label, addr)| match std::net::TcpListener::bind(addr) {
            Ok(_) => Item::pass(format!("Port {addr} ({label}) is free")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match running {
                Some(info) => Item::pass(format!("Port {addr} ({label}) is held by the running gateway (pid {})", info.pid)),
                None => Item::fail(
                    format!("Port {addr} ({label}) is in use by another program"),
                    format!("find it with `ss -ltnp 'sport = :{}'` and stop it, or choose another port in {label}", addr.port()),
                ),
            },
            Err(e) => Item::fail(
                format!("Port {addr} ({label}) cannot be opened ({e})"),
                format!("use an address of this host and a port above 1023 in {label}"),
            ),
        })
        .collect()
}

/// Host and port of an http(s) or ws(s) URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u.port().or(match u.scheme() {
        "https" | "wss" => Some(443),
        "http" | "ws" => Some(80),
        _ => None,
    })?;
    Some((host, port))
}

async fn check_reach(label: &str, url: &str, timeout: Duration) -> Item {
    let Some((host, port)) = host_port(url) else {
        return Item::fail(
            format!("{label}: `{url}` is not a URL"),
            format!("fix {label}"),
        );
    };
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
        .await
    {
        Ok(Ok(a)) => a.collect::<Vec<_>>(),
        Ok(Err(e)) => return Item::fail(
            format!("DNS: cannot resolve {host} ({e})"),
            "this host seems offline or its DNS is broken; check /etc/resolv.conf and the network",
        ),
        Err(_) => {
            return Item::fail(
                format!("DNS: no answer for {host} within {} s", timeout.as_secs()),
                "this host seems offline or its DNS is slow; check the network",
            )
        }
    };
    let Some(first) = addrs.first().copied() else {
        return Item::fail(
            format!("DNS: {host} has no address"),
            "check the network's DNS",
        );
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => Item::pass(format!(
            "Reach {host}:{port} ({label}): DNS and TCP in {} ms",
            started.elapsed().as_millis()
        )),
        Ok(Err(e)) => Item::fail(
            format!("Reach {host}:{port} ({label}): TCP connect failed ({e})"),
            "a firewall or proxy blocks it, or the address is wrong; WeCom needs outbound HTTPS (443)",
        ),
        Err(_) => Item::fail(
            format!("Reach {host}:{port} ({label}): no TCP answer within {} s", timeout.as_secs()),
            "a firewall drops the traffic or the host is offline",
        ),
    }
}

async fn check_bot(
    name: &str,
    e: &PlatformEntry,
    cfg: &GatewayConfig,
    registry: &router::Registry,
    running: Option<&AdminInfo>,
    reachable: &[String],
    timeout: Duration,
) -> Item {
    let label = format!("platforms.{name}");
    if let Some(info) = running {
        return Item::skip(format!(
            "Bot credentials of {label}: skipped — the running gateway (pid {}) owns the bot's only connection; see its /health",
            info.pid
        ));
    }
    let url = text(&e.extra, "websocket_url").unwrap_or_else(|| DEFAULT_WEBSOCKET_URL.into());
    if !reachable.contains(&url) {
        return Item::skip(format!(
            "Bot credentials of {label}: skipped ({url} is unreachable)"
        ));
    }
    let spec = InstanceSpec {
        name: name.to_string(),
        kind: kind_of(name, e),
        home_channel: e.home_channel.clone(),
        data_dir: cfg.gateway.data_dir.clone(),
    };
    match checks::connect_once(registry, &spec, &e.extra, timeout.max(Duration::from_secs(20))).await {
        Ok(()) => Item::pass(format!("Bot credentials of {label}: the bot connected")),
        Err(ConnectError::NotRegistered(k)) => Item::skip(format!("Bot credentials of {label}: skipped (no `{k}` adapter in this build)")),
        Err(err) => Item::fail(
            format!("Bot credentials of {label}: {err}"),
            format!("copy the Bot ID and Secret again into {label}.extra (Smart Robot → your bot → API mode), or run `gateway setup wecom`"),
        ),
    }
}

async fn check_clock(
    http: &reqwest::Client,
    known: Option<chrono::DateTime<Utc>>,
    endpoints: &[(String, String)],
    reachable: &[String],
    timeout: Duration,
) -> Item {
    let mut date = known;
    if date.is_none() {
        for (_, url) in endpoints.iter().filter(|(_, u)| reachable.contains(u)) {
            let probe = url
                .replacen("wss://", "https://", 1)
                .replacen("ws://", "http://", 1);
            if let Ok(resp) = http.get(&probe).timeout(timeout).send().await {
                date = checks::server_date(resp.headers());
                if date.is_some() {
                    break;
                }
            }
        }
    }
    let Some(server) = date else {
        return Item::skip("Clock skew: skipped (no reachable WeCom endpoint to compare with)");
    };
    let skew = (Utc::now() - server).num_seconds();
    if skew.abs() <= MAX_SKEW_SECS {
        Item::pass(format!("Clock skew: {skew:+} s against the WeCom API"))
    } else {
        Item::fail(
            format!("Clock skew: this host is {skew:+} s off the WeCom API's clock"),
            "turn on time sync (`timedatectl set-ntp true` or chrony); callbacks with timestamps outside replay_window_secs are refused",
        )
    }
}

async fn check_callback_urls(
    enabled: &[(&String, &PlatformEntry)],
    running: Option<&AdminInfo>,
    timeout: Duration,
) -> Vec<Item> {
    let mut items = Vec::new();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(_) => return items,
    };
    for (name, e) in enabled {
        if kind_of(name, e) != "wecom_callback" {
            continue;
        }
        let Some(listen) = callback_listen(&e.extra) else {
            continue;
        };
        for app in callback_apps(name, &e.extra) {
            let title = format!(
                "Callback URL self-test of {} ({}{})",
                app.label,
                local_target(listen),
                app.path
            );
            if running.is_none() {
                items.push(Item::skip(format!(
                    "{title}: skipped (start the gateway, then run doctor again)"
                )));
                continue;
            }
            let Ok(crypto) = wecom_common::WeComCrypto::new(&app.token, &app.key, &app.corp_id)
            else {
                items.push(Item::skip(format!(
                    "{title}: skipped (the token or key is invalid; see the config check)"
                )));
                continue;
            };
            let echo = format!("doctor-{}", wecom_common::crypto::random_nonce());
            let ts = Utc::now().timestamp().to_string();
            let signed =
                crypto.sign_url_verification(&echo, &ts, &wecom_common::crypto::random_nonce());
            let url = format!(
                "http://{}{}?{}",
                local_target(listen),
                app.path,
                signed.query
            );
            let answer = match client.get(&url).send().await {
                Ok(r) => {
                    let status = r.status();
                    r.text()
                        .await
                        .map(|b| (status, b))
                        .map_err(|e| e.without_url().to_string())
                }
                Err(e) => Err(e.without_url().to_string()),
            };
            items.push(match answer {
                Ok((s, body)) if s.is_success() && body.trim() == echo => {
                    Item::pass(format!("{title}: the gateway decrypted a signed check"))
                }
                Ok((s, _)) => Item::fail(
                    format!("{title}: the running gateway answered HTTP {s} without the echo"),
                    "the running gateway uses other settings than this file (restart it after editing), or the path differs",
                ),
                Err(why) => Item::fail(
                    format!("{title}: no answer ({why})"),
                    "the running gateway does not serve this app; restart it with this config",
                ),
            });
        }
    }
    items
}

async fn check_agent(agent: &agent_bridge::AgentConfig, timeout: Duration) -> Item {
    use agent_bridge::AgentConfig as A;
    if let Err(errs) = agent_bridge::build_backend(agent) {
        return Item::fail(
            format!("Agent backend `{}` cannot start", agent.backend_name()),
            "fix the agent section (see the problems above); an API key is read from the variable named by agent.api_key_env",
        )
        .with_details(errs.into_iter().map(|e| e.under("agent").to_string()).collect());
    }
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            return Item::fail(
                format!("Agent backend: no HTTP client ({e})"),
                "report this",
            )
        }
    };
    let probe = |url: String, label: &'static str, key: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = client.get(&url);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            match req.send().await {
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Item::fail(
                    format!(
                        "Agent backend: {label} refused the credentials (HTTP {})",
                        r.status()
                    ),
                    "check the API key in the variable named by agent.api_key_env",
                ),
                Ok(r) => Item::pass(format!(
                    "Agent backend: {label} answered (HTTP {})",
                    r.status().as_u16()
                )),
                Err(e) => Item::fail(
                    format!("Agent backend: cannot reach {label} ({})", e.without_url()),
                    format!(
                        "start the agent service or fix agent.{}",
                        if label == "base_url" {
                            "base_url"
                        } else {
                            "url"
                        }
                    ),
                ),
            }
        }
    };
    match agent {
        A::Echo(_) => Item::pass("Agent backend `echo` needs no service"),
        A::OpenAi(c) => {
            let key = c
                .api_key_env
                .as_deref()
                .and_then(router::registry::process_env);
            probe(
                format!("{}/models", c.base_url.trim_end_matches('/')),
                "base_url",
                key,
            )
            .await
        }
        A::Http(c) => probe(c.url.clone(), "url", None).await,
        A::Command(c) => {
            let program = c.command.first().cloned().unwrap_or_default();
            match find_program(&program, c.cwd.as_deref()) {
                Some(p) => Item::pass(format!("Agent backend: program {} found", p.display())),
                None => Item::fail(
                    format!("Agent backend: program `{program}` not found"),
                    "install it or give its absolute path in agent.command",
                ),
            }
        }
    }
}

fn find_program(program: &str, cwd: Option<&Path>) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            p.is_file()
        }
    };
    if program.contains('/') {
        let p = match cwd {
            Some(d) if !Path::new(program).is_absolute() => d.join(program),
            _ => PathBuf::from(program),
        };
        return is_exec(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
}

/// Prints the checklist; returns true when nothing failed.
pub fn print(items: &[Item], out: &mut dyn std::io::Write) -> bool {
    let (mut ok, mut bad, mut skipped) = (0, 0, 0);
    for i in items {
        let mark = match i.status {
            Status::Pass => {
                ok += 1;
                "✓"
            }
            Status::Fail => {
                bad += 1;
                "✗"
            }
            Status::Skip => {
                skipped += 1;
                "–"
            }
        };
        let _ = writeln!(out, "{mark} {}", i.title);
        for d in &i.details {
            let _ = writeln!(out, "    {d}");
        }
        if let Some(f) = &i.fix {
            let _ = writeln!(out, "    fix: {f}");
        }
    }
    let _ = writeln!(out, "\nDoctor: {ok} OK, {bad} failing, {skipped} skipped.");
    bad == 0
}

/// Runs `gateway doctor`: exit 0 when nothing failed, 1 otherwise.
pub async fn doctor(args: DoctorArgs, registry: router::Registry) -> anyhow::Result<ExitCode> {
    let items = run_checks(
        args.config.as_deref(),
        &registry,
        &router::registry::process_env,
        Duration::from_secs(args.timeout.max(1)),
    )
    .await;
    let ok = print(&items, &mut std::io::stdout());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
