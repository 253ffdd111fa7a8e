//! `gateway doctor` against the WeCom emulator (fake REST API and openws server) and fake agents:
//! a good config (with and without a running gateway), a wrong secret, a port in use, a 42-character
//! EncodingAESKey, an agent endpoint that is down, and an offline host reported quickly; plus
//! `gateway service print`.
//!
//! The checks live in the binary crate, so their modules are compiled into this test as well.

#[allow(dead_code, unused_imports)]
#[path = "../src/cli/setup/mod.rs"]
mod setup;

#[allow(dead_code, unused_imports)]
#[path = "../src/cli/doctor.rs"]
mod doctor;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doctor::{Item, Status};
use wecom_emulator::openws::OpenWs;
use wecom_emulator::rest::FakeWeComApi;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const CORP: &str = "ww1234567890abcd";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn registry() -> router::Registry {
    router::Registry::new()
        .register(Arc::new(wecom::WeComFactory))
        .register(Arc::new(wecom_callback::WeComCallbackFactory))
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    api: FakeWeComApi,
    ws: OpenWs,
    listen: u16,
    callback: u16,
}

async fn emulators() -> Setup {
    let api = FakeWeComApi::start().await;
    api.register_app(CORP, "app-secret", 1000002);
    let ws = OpenWs::builder().bot("aib1", "bot-secret").start().await;
    Setup {
        api,
        ws,
        listen: free_port(),
        callback: free_port(),
    }
}

/// A config with one bot and one callback app on the emulators, the given callback secret and
/// key, and the given `agent:` body.
fn write_config(
    dir: &Path,
    s: &Setup,
    corp_secret: &str,
    key: &str,
    agent: &str,
) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    let yaml = format!(
        "gateway:\n  data_dir: {data}\n  listen: 127.0.0.1:{listen}\n  drain_timeout_secs: 5\n\
         agent:\n{agent}\
         platforms:\n  wecom:\n    extra:\n      bot_id: aib1\n      secret: bot-secret\n      websocket_url: {ws}\n      dm_policy: pairing\n\
         \x20 wecom_callback:\n    extra:\n      corp_id: {CORP}\n      corp_secret: {corp_secret}\n      agent_id: 1000002\n\
         \x20     token: tok3n\n      encoding_aes_key: {key}\n      host: 127.0.0.1\n      port: {port}\n      api_base_url: {api}\n",
        data = dir.join("data").display(),
        listen = s.listen,
        ws = s.ws.url(),
        port = s.callback,
        api = s.api.base_url(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

const ECHO: &str = "  backend: echo\n";

async fn checks(path: &Path) -> Vec<Item> {
    doctor::run_checks(Some(path), &registry(), &no_env, Duration::from_secs(2)).await
}

fn find<'a>(items: &'a [Item], needle: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.title.contains(needle))
        .unwrap_or_else(|| panic!("no check mentions {needle:?}:\n{}", render(items)))
}

fn render(items: &[Item]) -> String {
    let mut out = Vec::new();
    doctor::print(items, &mut out);
    String::from_utf8(out).unwrap()
}

fn failures(items: &[Item]) -> Vec<&Item> {
    items.iter().filter(|i| i.status == Status::Fail).collect()
}

#[tokio::test]
async fn a_good_config_passes_every_check() {
    let s = emulators().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &s, "app-secret", KEY, ECHO);
    let items = checks(&path).await;
    assert!(failures(&items).is_empty(), "{}", render(&items));
    assert_eq!(find(&items, "Config valid").status, Status::Pass);
    assert_eq!(find(&items, "Data dir").status, Status::Pass);
    assert_eq!(
        find(&items, &format!("Port 127.0.0.1:{}", s.callback)).status,
        Status::Pass
    );
    assert_eq!(
        find(&items, &format!("Port 127.0.0.1:{}", s.listen)).status,
        Status::Pass
    );
    assert_eq!(
        find(&items, "Credentials of platforms.wecom_callback").status,
        Status::Pass
    );
    assert_eq!(
        find(&items, "Bot credentials of platforms.wecom").status,
        Status::Pass
    );
    assert_eq!(find(&items, "Clock skew").status, Status::Pass);
    assert_eq!(find(&items, "Callback URL self-test").status, Status::Skip);
    assert_eq!(find(&items, "Agent backend").status, Status::Pass);
    // The bot was connected once (subscribe) and then let go.
    assert_eq!(s.ws.subscribes().len(), 1);
    assert!(render(&items).contains("Doctor: "));
}

#[tokio::test]
async fn a_wrong_secret_fails_with_the_errcode_and_a_fix() {
    let s = emulators().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &s, "wrong-secret", KEY, ECHO);
    let items = checks(&path).await;
    let item = find(&items, "Credentials of platforms.wecom_callback");
    assert_eq!(item.status, Status::Fail, "{}", render(&items));
    assert!(item.title.contains("errcode"), "{}", item.title);
    assert!(item.fix.as_deref().unwrap().contains("Secret"));
    assert!(
        !render(&items).contains("wrong-secret"),
        "the secret was printed"
    );
    assert_eq!(failures(&items).len(), 1, "{}", render(&items));
}

#[tokio::test]
async fn a_port_in_use_is_reported_with_how_to_find_the_program() {
    let s = emulators().await;
    let taken = std::net::TcpListener::bind(("127.0.0.1", s.callback)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &s, "app-secret", KEY, ECHO);
    let items = checks(&path).await;
    let item = find(&items, &format!("Port 127.0.0.1:{}", s.callback));
    assert_eq!(item.status, Status::Fail, "{}", render(&items));
    assert!(item.title.contains("platforms.wecom_callback.extra.port"));
    assert!(item
        .fix
        .as_deref()
        .unwrap()
        .contains(&format!("sport = :{}", s.callback)));
    assert_eq!(failures(&items).len(), 1, "{}", render(&items));
    drop(taken);
}

#[tokio::test]
async fn a_42_character_key_fails_the_config_check_and_the_rest_still_runs() {
    let s = emulators().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &s, "app-secret", &KEY[..42], ECHO);
    let items = checks(&path).await;
    let config = find(&items, "Config has");
    assert_eq!(config.status, Status::Fail);
    let details = config.details.join("\n");
    assert!(
        details.contains("platforms.wecom_callback.extra.encoding_aes_key"),
        "{details}"
    );
    assert!(details.contains("43"), "{details}");
    assert!(
        !details.contains(&KEY[..42]),
        "the key was printed: {details}"
    );
    // One broken key does not hide the other checks.
    assert_eq!(
        find(&items, "Credentials of platforms.wecom_callback").status,
        Status::Pass
    );
    assert_eq!(failures(&items).len(), 1, "{}", render(&items));
}

#[tokio::test]
async fn an_agent_endpoint_that_is_down_fails() {
    let s = emulators().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let agent =
        format!("  backend: openai\n  base_url: http://127.0.0.1:{closed}/v1\n  model: m\n");
    let path = write_config(dir.path(), &s, "app-secret", KEY, &agent);
    let items = checks(&path).await;
    let item = find(&items, "Agent backend");
    assert_eq!(item.status, Status::Fail, "{}", render(&items));
    assert!(
        item.title.contains("cannot reach base_url"),
        "{}",
        item.title
    );
    assert!(item.fix.as_deref().unwrap().contains("agent.base_url"));

    let agent = format!("  backend: http\n  url: http://127.0.0.1:{closed}/turn\n");
    let path = write_config(dir.path(), &s, "app-secret", KEY, &agent);
    let items = checks(&path).await;
    assert_eq!(find(&items, "Agent backend").status, Status::Fail);

    let agent = "  backend: command\n  command: [\"/nonexistent/agent-program\"]\n";
    let path = write_config(dir.path(), &s, "app-secret", KEY, agent);
    let items = checks(&path).await;
    assert_eq!(find(&items, "Agent backend").status, Status::Fail);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_reported_quickly_and_dependent_checks_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "gateway:\n  data_dir: {}\n  listen: 127.0.0.1:{}\nplatforms:\n  wecom_callback:\n    extra:\n      corp_id: {CORP}\n      corp_secret: s\n      agent_id: 1\n      token: t\n      encoding_aes_key: {KEY}\n      port: {}\n      api_base_url: https://gateway-doctor-test.invalid\n",
            dir.path().join("data").display(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let items = doctor::run_checks(Some(&path), &registry(), &no_env, Duration::from_secs(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let reach = find(&items, "gateway-doctor-test.invalid");
    assert_eq!(reach.status, Status::Fail, "{}", render(&items));
    assert_eq!(find(&items, "Credentials of").status, Status::Skip);
    assert_eq!(find(&items, "Clock skew").status, Status::Skip);
}

fn gateway(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null());
    cmd
}

/// Stops the child on drop (SIGTERM, then waits).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_0_on_a_good_config_and_self_tests_a_running_gateway() {
    let s = emulators().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &s, "app-secret", KEY, ECHO);

    let out = gateway(dir.path())
        .args(["doctor", "--timeout", "2", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("✓ Config valid"), "{text}");

    // Start the gateway; doctor then self-tests its callback URL and leaves the bot alone.
    let child = gateway(dir.path())
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let data = dir.path().join("data");
    let deadline = Instant::now() + Duration::from_secs(30);
    while setup::checks::running_gateway(&data).await.is_none() || s.ws.subscribes().len() < 2 {
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subscribes = s.ws.subscribes().len();
    let out = gateway(dir.path())
        .args(["doctor", "--timeout", "2", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("the gateway decrypted a signed check"),
        "{text}"
    );
    assert!(text.contains("held by the running gateway"), "{text}");
    assert!(text.contains("owns the bot's only connection"), "{text}");
    assert_eq!(
        s.ws.subscribes().len(),
        subscribes,
        "doctor must not subscribe while a gateway runs"
    );
}

#[test]
fn the_binary_exits_1_when_a_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let closed = free_port();
    std::fs::write(
        &path,
        format!(
            "gateway:\n  data_dir: {}\n  listen: 127.0.0.1:{}\nagent:\n  backend: http\n  url: http://127.0.0.1:{closed}/turn\n",
            dir.path().join("data").display(),
            free_port()
        ),
    )
    .unwrap();
    let out = gateway(dir.path())
        .args(["doctor", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("✗ Agent backend: cannot reach url"), "{text}");
    assert!(text.contains("    fix: start the agent service"), "{text}");
}

#[test]
fn service_print_writes_a_hardened_systemd_unit_for_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "gateway:\n  data_dir: ./state\n  drain_timeout_secs: 45\n",
    )
    .unwrap();
    let out = gateway(dir.path())
        .env("USER", "svc-user")
        .args(["service", "print", "-c", "config.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = String::from_utf8_lossy(&out.stdout);
    let bin = std::fs::canonicalize(BIN).unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    for line in [
        format!(
            "ExecStart={} run -c {}",
            bin.display(),
            root.join("config.yaml").display()
        ),
        "Restart=on-failure".into(),
        "KillSignal=SIGTERM".into(),
        "TimeoutStopSec=60".into(),
        "User=svc-user".into(),
        "NoNewPrivileges=true".into(),
        "ProtectSystem=strict".into(),
        format!("ReadWritePaths={}", root.join("state").display()),
        format!("WorkingDirectory={}", root.display()),
        "RestartPreventExitStatus=2".into(),
        "WantedBy=multi-user.target".into(),
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "missing {line:?} in:\n{unit}"
        );
    }
    // Stop timeout above the drain timeout.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > 45);
    assert!(unit.lines().any(|l| l == "LimitNOFILE=65536"), "{unit}");
    // Run from target/debug, it warns that the unit would run a build output.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("install the binary first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gateway(dir.path())
        .args(["service", "print", "-c", "config.yaml", "--binary"])
        .arg("/usr/local/bin/gateway")
        .output()
        .unwrap();
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStart=/usr/local/bin/gateway run -c ")),
        "{unit}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--user` wins over the environment.
    let out = gateway(dir.path())
        .args(["service", "print", "-c", "config.yaml", "--user", "gateway"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "User=gateway"));
}
