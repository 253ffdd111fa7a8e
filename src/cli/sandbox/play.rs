//! The sandbox chat: turns what you type into WeCom traffic on the emulator and prints what the
//! bot sends back — stream updates as they arrive, then the final message. Typing and showing
//! run side by side: a reader thread feeds lines into a channel, and the chat loop selects
//! between them, a poll of the emulator, and Ctrl-C. A script (`--script FILE`) is played on
//! the same session, one line after the previous answer is in, and prints the transcript.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wecom_emulator::openws::{Chat, Msg};

use super::screen::{self, Input};
use super::watch::{Watch, QUIET};
use super::Sandbox;

/// Which adapter the user talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// The AI Bot long connection (streams).
    WeCom,
    /// The self-built app (callbacks in, REST out).
    Callback,
}

impl Adapter {
    fn name(self) -> &'static str {
        match self {
            Adapter::WeCom => "wecom",
            Adapter::Callback => "wecom_callback",
        }
    }
}

/// How often the emulator is polled for the bot's frames.
const POLL: Duration = Duration::from_millis(40);
/// Longest wait for one answer in a script (the agent's own time limit answers before this).
const ANSWER_LIMIT: Duration = Duration::from_secs(600);
/// A second Ctrl-C this soon after the first leaves, even while an answer is being stopped.
const DOUBLE_PRESS: Duration = Duration::from_secs(2);
/// On leaving, an answer that was expected but shows no sign of coming is not waited for.
const LEAVE_PATIENCE: Duration = Duration::from_secs(5);

const HELP: &str = "\
Type a message and press Enter; the bot's answer streams below it. You can keep typing while
it answers: a new message waits its turn in the gateway, /stop ends the answer.
  :wecom | :callback     talk to the AI Bot adapter or the self-built app adapter
  :dm [USER]             a direct message (optionally as USER)
  :group [CHAT_ID]       a group chat (AI Bot only)
  :as USER               change who you are
  :file PATH | :image PATH   send a file or a picture
  :help                  this text
  :quit                  leave once the answers are in (Ctrl-D works too)
Ctrl-C stops the current answer (it sends /stop); a second Ctrl-C, or one while nothing is
being answered, leaves at once.
Lines starting with / go to the gateway (/help, /new, /stop, /status, /whoami).";

/// The chat state: who you are, where you write, through which adapter.
pub struct Session {
    sandbox: Arc<Sandbox>,
    screen: screen::Shared,
    watch: Watch,
    adapter: Adapter,
    user: String,
    group: Option<String>,
    /// Whether the user's lines are repeated in the output (scripts and piped input: yes; a
    /// terminal already shows what was typed).
    echo_input: bool,
    /// The last heading printed; a new one is printed when the chat changes.
    heading: Option<String>,
    /// Relative `:file` paths resolve here (a script's directory).
    base_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("adapter", &self.adapter)
            .field("user", &self.user)
            .finish()
    }
}

impl Session {
    /// Starts as `alice` in a DM with the AI Bot, writing to `screen`.
    fn new(sandbox: Arc<Sandbox>, screen: screen::Shared) -> Self {
        Self {
            sandbox,
            screen,
            watch: Watch::new(),
            adapter: Adapter::WeCom,
            user: "alice".into(),
            group: None,
            echo_input: true,
            heading: None,
            base_dir: None,
        }
    }

    /// A session writing plain lines to stdout (for scripts).
    pub fn plain(sandbox: Arc<Sandbox>) -> Self {
        Self::new(
            sandbox,
            Arc::new(std::sync::Mutex::new(screen::Screen::plain())),
        )
    }

    fn heading(&self) -> String {
        let chat = match &self.group {
            Some(g) => format!("group {g}"),
            None => "dm".into(),
        };
        format!("── {} · {chat} · {} ──", self.adapter.name(), self.user)
    }

    /// Shows a finished line.
    fn say(&self, text: &str) -> std::io::Result<()> {
        screen::lock(&self.screen).line(text)
    }

    /// Shows what the emulator received since the last call.
    fn poll(&mut self) -> std::io::Result<()> {
        let mut screen = screen::lock(&self.screen);
        self.watch.poll(&self.sandbox, &mut screen)
    }

    /// Whether the gateway is answering (or about to): a reply is expected or streaming, or a
    /// turn runs or waits in the gateway.
    async fn answering(&self) -> bool {
        self.watch.pending() || self.sandbox.load().await.unwrap_or(0) > 0
    }

    /// Whether everything sent was answered and shown, and nothing came for a moment. An
    /// expected reply that has shown no sign for `patience` is not waited for.
    async fn settled(&self, patience: Duration) -> bool {
        let silence = self.watch.silence();
        silence >= QUIET
            && (!self.watch.pending() || silence >= patience)
            && self.sandbox.load().await.unwrap_or(0) == 0
    }

    /// Handles one input line; returns false for `:quit`. Nothing here waits for an answer.
    async fn line(&mut self, line: &str) -> anyhow::Result<bool> {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            return Ok(true);
        }
        let Some(cmd) = line.strip_prefix(':') else {
            self.send_text(line).await?;
            return Ok(true);
        };
        let mut words = cmd.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let arg = words.collect::<Vec<_>>().join(" ");
        match verb {
            "quit" | "q" | "exit" => return Ok(false),
            "help" | "h" => {
                for l in HELP.lines() {
                    self.say(l)?;
                }
            }
            "wecom" | "bot" => self.switch(Adapter::WeCom)?,
            "callback" | "app" => {
                self.group = None;
                self.switch(Adapter::Callback)?
            }
            "dm" => {
                if !arg.is_empty() {
                    self.user = arg;
                }
                self.group = None;
                self.show_heading()?;
            }
            "group" if self.adapter == Adapter::Callback => {
                self.say("(self-built apps receive no group chats; switch with :wecom first)")?
            }
            "group" => {
                self.group = Some(if arg.is_empty() {
                    "wr-sandbox-team".into()
                } else {
                    arg
                });
                self.show_heading()?;
            }
            "as" if !arg.is_empty() => {
                self.user = arg;
                self.show_heading()?;
            }
            "file" | "image" if !arg.is_empty() => self.send_file(verb, &arg).await?,
            _ => self.say(&format!("(unknown command :{verb}; :help lists them)"))?,
        }
        Ok(true)
    }

    /// Sends a text message (or a gateway command) as the current user in the current chat.
    async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.show_heading()?;
        if self.echo_input {
            self.say(&format!("{}> {text}", self.user))?;
        }
        match self.adapter {
            Adapter::WeCom => {
                let chat = self.chat();
                let chat_id = chat.chat_id().to_owned();
                let pushed = self.sandbox.openws.push_text(chat, text);
                self.watch.expect_stream(pushed.req_id, &chat_id);
            }
            Adapter::Callback => {
                let (posted, _) = self.sandbox.app.push_text(&self.user, text).await;
                self.posted(posted.status)?;
            }
        }
        Ok(())
    }

    fn switch(&mut self, adapter: Adapter) -> std::io::Result<()> {
        self.adapter = adapter;
        self.show_heading()
    }

    /// Prints the heading when the chat differs from the one last shown.
    fn show_heading(&mut self) -> std::io::Result<()> {
        let h = self.heading();
        if self.heading.as_deref() != Some(h.as_str()) {
            let mut screen = screen::lock(&self.screen);
            screen.line(&h)?;
            screen.set_prompt(&format!("{}> ", self.user))?;
            self.heading = Some(h);
        }
        Ok(())
    }

    fn chat(&self) -> Chat {
        match &self.group {
            Some(g) => Chat::group(g, &self.user),
            None => Chat::dm(&self.user),
        }
    }

    /// The gateway's answer to a callback POST: 200 means an answer will come.
    fn posted(&mut self, status: u16) -> std::io::Result<()> {
        if status == 200 {
            self.watch.expect_send();
            Ok(())
        } else {
            self.say(&format!(
                "(the gateway answered the callback with HTTP {status})"
            ))
        }
    }

    /// `:file` / `:image`: a path that cannot be read is reported and the chat goes on.
    async fn send_file(&mut self, verb: &str, path: &str) -> anyhow::Result<()> {
        let full = match &self.base_dir {
            Some(base) if Path::new(path).is_relative() => base.join(path),
            _ => PathBuf::from(path),
        };
        let bytes = match read_attachment(&full) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.say(&format!("(cannot send {}: {e})", full.display()))?;
                return Ok(());
            }
        };
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        self.show_heading()?;
        self.say(&format!(
            "{}> [{verb} {name}, {} bytes]",
            self.user,
            bytes.len()
        ))?;
        match self.adapter {
            Adapter::WeCom => {
                let media = self.sandbox.openws.host_media(&bytes);
                let msg = if verb == "image" {
                    Msg::image(&media)
                } else {
                    Msg::file(&media, &name)
                };
                let chat = self.chat();
                let chat_id = chat.chat_id().to_owned();
                let pushed = self.sandbox.openws.push(chat, msg);
                self.watch.expect_stream(pushed.req_id, &chat_id);
            }
            Adapter::Callback => {
                let mime = if verb == "image" {
                    "image/png"
                } else {
                    "application/octet-stream"
                };
                let media_id = self.sandbox.rest.add_media(&bytes, mime, &name);
                let msg_id = self.sandbox.app.next_msg_id();
                let xml = self
                    .sandbox
                    .app
                    .media_xml(&self.user, verb, &media_id, msg_id);
                let posted = self.sandbox.app.push_xml(&xml).await;
                self.posted(posted.status)?;
            }
        }
        Ok(())
    }

    /// Shows the answers until everything sent was answered (scripts go one line at a time).
    async fn settle(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            self.poll()?;
            if self.settled(ANSWER_LIMIT).await {
                return Ok(());
            }
            if start.elapsed() > ANSWER_LIMIT {
                self.say(&format!(
                    "(no complete answer after {} s)",
                    ANSWER_LIMIT.as_secs()
                ))?;
                self.watch.give_up();
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Plays `script` line by line, printing the transcript. Relative file paths in it resolve
    /// against `base_dir`.
    pub async fn play_script(
        mut self,
        script: &str,
        base_dir: Option<&Path>,
    ) -> anyhow::Result<()> {
        self.base_dir = base_dir.map(Path::to_path_buf);
        for line in script.lines() {
            if !self.line(line).await? {
                break;
            }
            self.settle().await?;
        }
        Ok(())
    }

    /// The interactive chat on stdin and stdout (a terminal, or pipes).
    pub async fn interactive(sandbox: Arc<Sandbox>) -> anyhow::Result<()> {
        // Ctrl-C is ours from here on (before the banner, which tells a test we are ready).
        let mut interrupts = Interrupts::new()?;
        let (screen, mut input, _tty) = screen::open("alice> ");
        let mut session = Self::new(sandbox, screen);
        // A terminal shows what was typed; piped input is repeated so the transcript reads.
        session.echo_input = !screen::lock(&session.screen).is_terminal();
        session.say(
            "WeCom sandbox: an emulated WeCom on loopback, a gateway with both adapters, your agent.",
        )?;
        for l in HELP.lines() {
            session.say(l)?;
        }
        session.show_heading()?;
        let result = session.run_chat(&mut input, &mut interrupts).await;
        screen::lock(&session.screen).close()?;
        result
    }

    /// The chat loop: input, output and Ctrl-C, side by side.
    async fn run_chat(
        &mut self,
        input: &mut tokio::sync::mpsc::Receiver<Input>,
        interrupts: &mut Interrupts,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_interrupt: Option<Instant> = None;
        // After `:quit` or end of input: no more reading, leave once the answers are in.
        let mut leaving = false;
        loop {
            tokio::select! {
                // A line: commands act at once, messages go out without waiting for answers
                // (the gateway queues them, or /stop ends the current one).
                got = input.recv(), if !leaving => match got {
                    Some(Input::Line(line)) => {
                        self.poll()?;
                        if !self.line(&line).await? {
                            leaving = true;
                        }
                    }
                    Some(Input::Eof) | None => leaving = true,
                },
                // The bot's output, shown as it arrives, in order.
                _ = tick.tick() => {
                    self.poll()?;
                    if leaving && self.settled(LEAVE_PATIENCE).await {
                        return Ok(());
                    }
                }
                // Ctrl-C: stop the answer; a second one soon after, or one with nothing to
                // stop, leaves.
                () = interrupts.next() => {
                    self.poll()?;
                    let again = last_interrupt.is_some_and(|t| t.elapsed() < DOUBLE_PRESS);
                    if again || !self.answering().await {
                        self.say("(leaving the sandbox)")?;
                        return Ok(());
                    }
                    last_interrupt = Some(Instant::now());
                    self.say("(Ctrl-C: stopping the answer; press Ctrl-C again to leave)")?;
                    self.send_text("/stop").await?;
                }
            }
        }
    }
}

/// Reads a file to attach; only regular files (a directory or a device is refused, a FIFO
/// would block).
fn read_attachment(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::other("it is a directory"));
    }
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::read(path)
}

/// SIGINT (Ctrl-C), received as a stream once installed.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                signal: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next Ctrl-C.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
