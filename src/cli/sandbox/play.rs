//! The sandbox chat: turns what you type into WeCom traffic on the emulator and prints what the
//! bot sends back — stream updates as they arrive, then the final message. The same loop plays a
//! script (`--script FILE`) and prints the transcript.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::time::Instant;
use wecom_emulator::openws::{Chat, Msg};

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
/// A reply counts as complete after this long without news.
const QUIET: Duration = Duration::from_millis(700);
/// Longest wait for one answer (the agent's own time limit answers before this).
const ANSWER_LIMIT: Duration = Duration::from_secs(600);
/// Partial stream contents are shown up to this many characters (their tail).
const PARTIAL_CHARS: usize = 90;

const HELP: &str = "\
Type a message and press Enter; the bot's answer streams below it.
  :wecom | :callback     talk to the AI Bot adapter or the self-built app adapter
  :dm [USER]             a direct message (optionally as USER)
  :group [CHAT_ID]       a group chat (AI Bot only)
  :as USER               change who you are
  :file PATH | :image PATH   send a file or a picture
  :help                  this text
  :quit                  leave (Ctrl-D works too)
Lines starting with / go to the gateway (/help, /new, /stop, /status, /whoami).";

/// The chat state: who you are, where you write, through which adapter.
pub struct Session {
    sandbox: Arc<Sandbox>,
    adapter: Adapter,
    user: String,
    group: Option<String>,
    /// Whether the user's lines are repeated in the output (scripts: yes; a terminal already
    /// shows what was typed).
    echo_input: bool,
    /// The last heading printed; a new one is printed when the chat changes.
    heading: Option<String>,
    /// Relative `:file` paths resolve here (a script's directory).
    base_dir: Option<std::path::PathBuf>,
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
    /// Starts as `alice` in a DM with the AI Bot.
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Self {
            sandbox,
            adapter: Adapter::WeCom,
            user: "alice".into(),
            group: None,
            echo_input: true,
            heading: None,
            base_dir: None,
        }
    }

    fn heading(&self) -> String {
        let chat = match &self.group {
            Some(g) => format!("group {g}"),
            None => "dm".into(),
        };
        format!("── {} · {chat} · {} ──", self.adapter.name(), self.user)
    }

    /// Handles one input line; returns false for `:quit`.
    async fn line(&mut self, line: &str, out: &mut dyn Write) -> anyhow::Result<bool> {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            return Ok(true);
        }
        if let Some(cmd) = line.strip_prefix(':') {
            let mut words = cmd.split_whitespace();
            let verb = words.next().unwrap_or_default();
            let arg = words.collect::<Vec<_>>().join(" ");
            match verb {
                "quit" | "q" | "exit" => return Ok(false),
                "help" | "h" => writeln!(out, "{HELP}")?,
                "wecom" | "bot" => self.switch(Adapter::WeCom, out)?,
                "callback" | "app" => {
                    self.group = None;
                    self.switch(Adapter::Callback, out)?
                }
                "dm" => {
                    if !arg.is_empty() {
                        self.user = arg;
                    }
                    self.group = None;
                    self.show_heading(out)?;
                }
                "group" if self.adapter == Adapter::Callback => writeln!(
                    out,
                    "(self-built apps receive no group chats; switch with :wecom first)"
                )?,
                "group" => {
                    self.group = Some(if arg.is_empty() {
                        "wr-sandbox-team".into()
                    } else {
                        arg
                    });
                    self.show_heading(out)?;
                }
                "as" if !arg.is_empty() => {
                    self.user = arg;
                    self.show_heading(out)?;
                }
                "file" | "image" if !arg.is_empty() => self.send_file(verb, &arg, out).await?,
                _ => writeln!(out, "(unknown command :{verb}; :help lists them)")?,
            }
            return Ok(true);
        }
        self.show_heading(out)?;
        if self.echo_input {
            writeln!(out, "{}> {line}", self.user)?;
        }
        match self.adapter {
            Adapter::WeCom => {
                let pushed = self.sandbox.openws.push_text(self.chat(), line);
                self.watch_stream(&pushed.req_id, out).await?;
            }
            Adapter::Callback => {
                let before = self.sandbox.rest.sent().len();
                let (posted, _) = self.sandbox.app.push_text(&self.user, line).await;
                self.check_posted(posted.status, out)?;
                self.watch_sends(before, out).await?;
            }
        }
        Ok(true)
    }

    fn switch(&mut self, adapter: Adapter, out: &mut dyn Write) -> std::io::Result<()> {
        self.adapter = adapter;
        self.show_heading(out)
    }

    /// Prints the heading when the chat differs from the one last shown.
    fn show_heading(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let h = self.heading();
        if self.heading.as_deref() != Some(h.as_str()) {
            writeln!(out, "{h}")?;
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

    fn check_posted(&self, status: u16, out: &mut dyn Write) -> std::io::Result<()> {
        if status != 200 {
            writeln!(
                out,
                "(the gateway answered the callback with HTTP {status})"
            )?;
        }
        Ok(())
    }

    async fn send_file(
        &mut self,
        verb: &str,
        path: &str,
        out: &mut dyn Write,
    ) -> anyhow::Result<()> {
        let full = match &self.base_dir {
            Some(base) if std::path::Path::new(path).is_relative() => base.join(path),
            _ => std::path::PathBuf::from(path),
        };
        let bytes =
            std::fs::read(&full).with_context(|| format!("cannot read {}", full.display()))?;
        let name = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        self.show_heading(out)?;
        writeln!(out, "{}> [{verb} {name}, {} bytes]", self.user, bytes.len())?;
        match self.adapter {
            Adapter::WeCom => {
                let media = self.sandbox.openws.host_media(&bytes);
                let msg = if verb == "image" {
                    Msg::image(&media)
                } else {
                    Msg::file(&media, &name)
                };
                let pushed = self.sandbox.openws.push(self.chat(), msg);
                self.watch_stream(&pushed.req_id, out).await
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
                let before = self.sandbox.rest.sent().len();
                let posted = self.sandbox.app.push_xml(&xml).await;
                self.check_posted(posted.status, out)?;
                self.watch_sends(before, out).await
            }
        }
    }

    /// Prints the stream bubbles on `req_id` as they change, until every bubble is finished and
    /// nothing new arrived for a moment.
    async fn watch_stream(&self, req_id: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut shown: Vec<(usize, bool)> = Vec::new(); // per bubble: contents shown, finished
        let mut markdown_shown = 0;
        let mut last_news = Instant::now();
        loop {
            let reply = self.sandbox.openws.reply(req_id);
            for (i, bubble) in reply.bubbles.iter().enumerate() {
                if shown.len() <= i {
                    shown.push((0, false));
                }
                let (count, done) = &mut shown[i];
                while *count < bubble.contents.len() && bubble.final_content.is_none() {
                    writeln!(out, "  … {}", partial(&bubble.contents[*count]))?;
                    *count += 1;
                    last_news = Instant::now();
                }
                if let (Some(fin), false) = (&bubble.final_content, *done) {
                    writeln!(out, "bot> {}", fin.replace('\u{200B}', ""))?;
                    *count = bubble.contents.len();
                    *done = true;
                    last_news = Instant::now();
                }
            }
            for md in reply.markdown.iter().skip(markdown_shown) {
                writeln!(out, "bot> {md}")?;
                markdown_shown += 1;
                last_news = Instant::now();
            }
            out.flush()?;
            if reply.is_complete() && last_news.elapsed() >= QUIET {
                return Ok(());
            }
            if start.elapsed() > ANSWER_LIMIT {
                writeln!(
                    out,
                    "(no complete answer after {} s)",
                    ANSWER_LIMIT.as_secs()
                )?;
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Prints the `message/send` calls to the current user made after the first `before`, until
    /// at least one arrived and nothing new came for a moment.
    async fn watch_sends(&self, before: usize, out: &mut dyn Write) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut seen = before;
        let mut last_news = Instant::now();
        let mut any = false;
        loop {
            let sent = self.sandbox.rest.sent();
            for m in sent.iter().skip(seen) {
                let text = match m.content() {
                    Some(t) => t.to_string(),
                    None => format!("[{} {}]", m.msgtype(), m.media_id().unwrap_or_default()),
                };
                writeln!(out, "bot> {text}")?;
                any = true;
                last_news = Instant::now();
            }
            seen = sent.len();
            out.flush()?;
            if any && last_news.elapsed() >= QUIET {
                return Ok(());
            }
            if start.elapsed() > ANSWER_LIMIT {
                writeln!(out, "(no answer after {} s)", ANSWER_LIMIT.as_secs())?;
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Plays `script` line by line, writing the transcript to `out`. Relative file paths in it
    /// resolve against `base_dir`.
    pub async fn play_script(
        &mut self,
        script: &str,
        base_dir: Option<&std::path::Path>,
        out: &mut dyn Write,
    ) -> anyhow::Result<()> {
        self.base_dir = base_dir.map(std::path::Path::to_path_buf);
        for line in script.lines() {
            if !self.line(line, out).await? {
                break;
            }
        }
        Ok(())
    }

    /// The interactive chat on the terminal.
    pub async fn interactive(&mut self) -> anyhow::Result<()> {
        let mut out = std::io::stdout();
        writeln!(
            out,
            "WeCom sandbox: an emulated WeCom on loopback, a gateway with both adapters, your agent.\n{HELP}"
        )?;
        self.show_heading(&mut out)?;
        self.echo_input = false;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            write!(out, "{}> ", self.user)?;
            out.flush()?;
            let Some(line) = lines.next_line().await? else {
                break;
            };
            if !self.line(&line, &mut out).await? {
                break;
            }
        }
        Ok(())
    }
}

/// The tail of a partial stream content, on one line, with the empty seed shown as thinking.
fn partial(content: &str) -> String {
    let flat = content.replace("<think></think>", "").replace('\n', " ⏎ ");
    if flat.trim().is_empty() {
        return "(thinking)".into();
    }
    let chars: Vec<char> = flat.chars().collect();
    if chars.len() <= PARTIAL_CHARS {
        flat
    } else {
        format!(
            "…{}",
            chars[chars.len() - PARTIAL_CHARS..]
                .iter()
                .collect::<String>()
        )
    }
}
