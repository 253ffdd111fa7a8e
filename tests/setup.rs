//! `gateway setup`: the wizard driven by a scripted prompter for each platform and agent backend
//! (no TTY), the scan-to-create flow against a fake console (success, pending → timeout, success
//! without bot info), text-block editing that keeps the rest of the file, `--non-interactive`
//! through the real binary, and one run of the real binary in a pseudo-terminal.
//!
//! The wizard lives in the binary crate, so its module is compiled into this test as well.

#[allow(dead_code, unused_imports)]
#[path = "../src/cli/setup/mod.rs"]
mod setup;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{json, Value};
use setup::prompt::ScriptedPrompter;
use setup::qr::{PollOutcome, PollTiming, QrClient};
use setup::{SetupError, Wizard};
use wecom_emulator::rest::{Endpoint, FakeWeComApi};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// The adapters this binary registers (see `registry()` in src/main.rs).
fn registry() -> router::Registry {
    router::Registry::new()
        .register(Arc::new(wecom::WeComFactory))
        .register(Arc::new(wecom_callback::WeComCallbackFactory))
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Runs the wizard with `p` on `path`.
async fn run(
    p: &mut ScriptedPrompter,
    path: &Path,
    kind: Option<&str>,
    tweak: impl FnOnce(&mut Wizard<'_>),
) -> Result<setup::Outcome, SetupError> {
    let reg = registry();
    let mut w = Wizard {
        prompter: p,
        registry: &reg,
        env: &no_env,
        http: reqwest::Client::new(),
        qr_base: "http://127.0.0.1:9".into(),
        qr_timing: PollTiming::default(),
        verify: false,
        bot_check: Some(false),
        interactive: true,
        overrides: setup::Overrides::default(),
        data_dir: PathBuf::new(),
    };
    tweak(&mut w);
    w.run(path, kind, None).await
}

fn read_yaml(path: &Path) -> Value {
    setup::yaml_edit::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `gateway check`'s validation with this binary's adapters.
fn assert_passes_check(path: &Path) {
    if let Err(e) = router::load(Some(path), &registry(), &no_env) {
        panic!("{e}\n--- file:\n{}", std::fs::read_to_string(path).unwrap());
    }
}

/// The `wecom` entry validated by the wecom adapter's own config type (policy keys removed the
/// way the router removes them).
fn assert_wecom_extra_valid(extra: &Value) {
    let mut m = extra.as_object().unwrap().clone();
    gateway_core::policy::AccessConfig::from_extra(&mut m).unwrap();
    let mut cfg: wecom::config::WeComConfig =
        gateway_core::adapter::parse_extra(Value::Object(m)).unwrap();
    let errors = cfg.validate();
    assert!(errors.is_empty(), "{errors:?}");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[path = "setup_cases/agents.rs"]
mod agents;
#[path = "setup_cases/ai_bot.rs"]
mod ai_bot;
#[path = "setup_cases/binary.rs"]
mod binary;
#[path = "setup_cases/callback.rs"]
mod callback;
#[path = "setup_cases/editing.rs"]
mod editing;
