//! What the sandbox shows, and how it reads your lines.
//!
//! On a terminal (stdin and stdout both) the bottom of the screen is a live region: the bot's
//! streaming bubble, updated in place, above the prompt with what you are typing. It is redrawn
//! with `\r` and erase escapes. The terminal leaves canonical mode for the session (`stty
//! -icanon -echo`, restored on exit) because the kernel's line editor holds at most 4,095
//! characters and silently drops the rest of a longer pasted line; a small editor here
//! (printable text, Backspace, Ctrl-U, Ctrl-D, Enter) has no such limit. `ISIG` stays on, so
//! Ctrl-C is still a SIGINT.
//!
//! Anywhere else (pipes, files, `--script`) every update is a plain line with no escape codes.

use std::io::{self, Read as _, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

/// The output, plain or drawn in place.
pub(super) struct Screen {
    out: Box<dyn Write + Send>,
    /// The live region's state; `None` for plain output.
    live: Option<Live>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screen")
            .field("in_place", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

/// The bottom of a terminal screen: an optional status line above the prompt line.
#[derive(Debug, Default)]
struct Live {
    cols: usize,
    prompt: String,
    input: String,
    status: Option<String>,
    /// Rows between the top of what is drawn and the cursor's row.
    drawn_above: usize,
}

/// A screen shared by the output side and the line reader.
pub(super) type Shared = Arc<Mutex<Screen>>;

/// Locks the screen; a panic elsewhere while drawing leaves it usable.
pub(super) fn lock(screen: &Shared) -> MutexGuard<'_, Screen> {
    screen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Screen {
    /// Plain lines on stdout.
    pub(super) fn plain() -> Self {
        Self {
            out: Box::new(io::stdout()),
            live: None,
        }
    }

    /// In-place drawing on stdout, `cols` wide, with `prompt` on the last line.
    fn in_place(cols: usize, prompt: &str) -> Self {
        Self {
            out: Box::new(io::stdout()),
            live: Some(Live {
                cols,
                prompt: prompt.to_owned(),
                ..Live::default()
            }),
        }
    }

    /// Whether updates are drawn in place.
    pub(super) fn is_terminal(&self) -> bool {
        self.live.is_some()
    }

    /// A finished line, kept in the scrollback.
    pub(super) fn line(&mut self, text: &str) -> io::Result<()> {
        if self.live.is_none() {
            writeln!(self.out, "{text}")?;
            return self.out.flush();
        }
        self.erase()?;
        writeln!(self.out, "{}", for_terminal(text))?;
        self.draw()
    }

    /// The streaming bubble's current text: replaced in place on a terminal, a plain line
    /// elsewhere. `None` removes it (the bubble finished).
    pub(super) fn status(&mut self, text: Option<&str>) -> io::Result<()> {
        let Some(live) = &mut self.live else {
            if let Some(text) = text {
                writeln!(self.out, "{text}")?;
            }
            return self.out.flush();
        };
        let fitted = text.map(|t| fit_tail(&for_terminal(t), live.cols.saturating_sub(1)));
        if live.status == fitted {
            return Ok(());
        }
        self.erase()?;
        if let Some(live) = &mut self.live {
            live.status = fitted;
        }
        self.draw()
    }

    /// Changes the prompt (a terminal shows it under the output).
    pub(super) fn set_prompt(&mut self, prompt: &str) -> io::Result<()> {
        if self.live.as_ref().is_none_or(|l| l.prompt == prompt) {
            return Ok(());
        }
        self.erase()?;
        if let Some(live) = &mut self.live {
            live.prompt = prompt.to_owned();
        }
        self.draw()
    }

    /// Appends typed text to the input line (drawn without a redraw: the cursor is at its end).
    fn type_text(&mut self, text: &str) -> io::Result<()> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        live.input.push_str(text);
        write!(self.out, "{}", for_terminal(text))?;
        self.out.flush()
    }

    /// Edits the input line with `edit`, then redraws.
    fn edit_input(&mut self, edit: impl FnOnce(&mut String)) -> io::Result<()> {
        self.erase()?;
        if let Some(live) = &mut self.live {
            edit(&mut live.input);
        }
        self.draw()
    }

    /// Enter: the typed line goes to the scrollback after its prompt, and is returned.
    fn take_input(&mut self) -> io::Result<String> {
        let Some(live) = &mut self.live else {
            return Ok(String::new());
        };
        let line = std::mem::take(&mut live.input);
        let shown = format!("{}{line}", live.prompt);
        // The input is already on screen; erase and redraw so the status stays at the bottom.
        self.erase()?;
        writeln!(self.out, "{}", for_terminal(&shown))?;
        self.draw()?;
        Ok(line)
    }

    /// Moves the cursor to the start of the live region and clears to the end of the screen.
    fn erase(&mut self) -> io::Result<()> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        write!(self.out, "\r")?;
        if live.drawn_above > 0 {
            write!(self.out, "\x1b[{}A", live.drawn_above)?;
        }
        live.drawn_above = 0;
        write!(self.out, "\x1b[J")
    }

    /// Draws the live region below the cursor (which `erase` put at its start).
    fn draw(&mut self) -> io::Result<()> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let mut above = 0;
        if let Some(status) = &live.status {
            writeln!(self.out, "{status}")?;
            above += 1;
        }
        let prompt_line = format!("{}{}", live.prompt, for_terminal(&live.input));
        write!(self.out, "{prompt_line}")?;
        // A long input wraps: the cursor ends on its last row.
        above += width(&prompt_line).max(1).div_ceil(live.cols.max(1)) - 1;
        live.drawn_above = above;
        self.out.flush()
    }

    /// Leaves the live region for good (the shell's prompt comes next).
    pub(super) fn close(&mut self) -> io::Result<()> {
        if self.live.is_some() {
            self.erase()?;
            self.live = None;
        }
        self.out.flush()
    }
}

/// Text as a terminal should show it: tabs as spaces, other control characters dropped.
fn for_terminal(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            '\n' => Some('\n'),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// The end of `text` that fits in `max` columns (a leading `…` marks the cut).
fn fit_tail(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let mut kept: Vec<char> = Vec::new();
    let mut used = 1; // the ellipsis
    for c in text.chars().rev() {
        let w = char_width(c);
        if used + w > max {
            break;
        }
        used += w;
        kept.push(c);
    }
    std::iter::once('…').chain(kept.into_iter().rev()).collect()
}

/// Columns `text` takes on a terminal (East Asian wide characters take two).
fn width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let u = u32::from(c);
    if c.is_control() || (0x300..=0x36F).contains(&u) || u == 0x200B {
        0
    } else if matches!(u,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD)
    {
        2
    } else {
        1
    }
}

/// What the reader hands to the chat.
#[derive(Debug)]
pub(super) enum Input {
    /// One line, without its newline.
    Line(String),
    /// End of input (Ctrl-D on an empty line, or stdin closed).
    Eof,
}

/// The terminal's settings before the sandbox changed them; restored on drop.
#[derive(Debug)]
pub(super) struct TtyGuard(String);

impl Drop for TtyGuard {
    fn drop(&mut self) {
        let _ = stty(&[self.0.as_str()]);
    }
}

/// Runs `stty` on our stdin (the terminal), returning its output.
fn stty(args: &[&str]) -> Option<String> {
    let out = Command::new("stty")
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Opens the screen and starts the line reader on a thread of its own (a blocking read must not
/// hold up the runtime's shutdown). On a terminal, the returned guard restores its settings.
pub(super) fn open(prompt: &str) -> (Shared, mpsc::Receiver<Input>, Option<TtyGuard>) {
    use std::io::IsTerminal as _;
    let (tx, rx) = mpsc::channel(64);
    let terminal = io::stdin().is_terminal() && io::stdout().is_terminal();
    let saved = terminal.then(|| stty(&["-g"])).flatten();
    let raw = saved.is_some() && stty(&["-icanon", "-echo", "min", "1", "time", "0"]).is_some();
    if raw {
        let cols = stty(&["size"])
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
            .filter(|&c| c > 0)
            .unwrap_or(80);
        let screen: Shared = Arc::new(Mutex::new(Screen::in_place(cols, prompt)));
        let reader = screen.clone();
        std::thread::spawn(move || edit_lines(&reader, &tx));
        (screen, rx, saved.map(TtyGuard))
    } else {
        // Give back whatever `stty -g` saved (nothing was changed, but be exact).
        drop(saved.map(TtyGuard));
        std::thread::spawn(move || read_lines(&tx));
        (Arc::new(Mutex::new(Screen::plain())), rx, None)
    }
}

/// Plain line reading (pipes, files): `read_line` grows its buffer, so no line is cut.
fn read_lines(tx: &mpsc::Sender<Input>) {
    let mut stdin = io::stdin().lock();
    loop {
        let mut line = String::new();
        match io::BufRead::read_line(&mut stdin, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                if tx.blocking_send(Input::Line(line.to_owned())).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.blocking_send(Input::Eof);
}

/// The line editor for a terminal in non-canonical mode. Bytes come in chunks (a paste is
/// a few large reads); text is echoed as it comes, edits redraw the prompt line.
fn edit_lines(screen: &Shared, tx: &mpsc::Sender<Input>) {
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new(); // an incomplete UTF-8 sequence or escape
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let (keys, rest) = keys(&pending);
        pending = rest;
        for key in keys {
            let sent = {
                let mut s = lock(screen);
                match key {
                    Key::Text(t) => s.type_text(&t).map(|()| None),
                    Key::Backspace => s
                        .edit_input(|i| {
                            i.pop();
                        })
                        .map(|()| None),
                    Key::KillLine => s.edit_input(String::clear).map(|()| None),
                    Key::Enter => s.take_input().map(|l| Some(Input::Line(l))),
                    Key::EndOfInput if s.live.as_ref().is_some_and(|l| l.input.is_empty()) => {
                        Ok(Some(Input::Eof))
                    }
                    Key::EndOfInput => Ok(None),
                }
            };
            match sent {
                Ok(Some(Input::Eof)) | Err(_) => {
                    let _ = tx.blocking_send(Input::Eof);
                    return;
                }
                Ok(Some(input)) => {
                    if tx.blocking_send(input).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
            }
        }
    }
    let _ = tx.blocking_send(Input::Eof);
}

/// One thing typed.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Text(String),
    Backspace,
    KillLine,
    Enter,
    EndOfInput,
}

/// Splits raw terminal bytes into keys; returns the bytes of an unfinished sequence to keep.
/// Escape sequences (arrow keys and the like) are skipped.
fn keys(bytes: &[u8]) -> (Vec<Key>, Vec<u8>) {
    let mut out = Vec::new();
    let mut text = Vec::new();
    let mut i = 0;
    let flush = |text: &mut Vec<u8>, out: &mut Vec<Key>| {
        if !text.is_empty() {
            out.push(Key::Text(String::from_utf8_lossy(text).into_owned()));
            text.clear();
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        let key = match b {
            b'\r' | b'\n' => Some(Key::Enter),
            0x7f | 0x08 => Some(Key::Backspace),
            0x15 => Some(Key::KillLine),
            0x04 => Some(Key::EndOfInput),
            0x1b => {
                // ESC [ ... final, or ESC O x; an unfinished one waits for more bytes.
                let Some(&kind) = bytes.get(i + 1) else {
                    flush(&mut text, &mut out);
                    return (out, bytes[i..].to_vec());
                };
                let end = if kind == b'[' || kind == b'O' {
                    bytes[i + 2..]
                        .iter()
                        .position(|c| (0x40..=0x7e).contains(c))
                        .map(|p| i + 2 + p)
                } else {
                    Some(i + 1)
                };
                let Some(end) = end else {
                    flush(&mut text, &mut out);
                    return (out, bytes[i..].to_vec());
                };
                i = end + 1;
                continue;
            }
            b'\t' => None,
            b if b < 0x20 => {
                i += 1;
                continue;
            }
            _ => None,
        };
        match key {
            Some(k) => {
                flush(&mut text, &mut out);
                out.push(k);
            }
            None => text.push(b),
        }
        i += 1;
    }
    // Keep an incomplete UTF-8 character at the end for the next read.
    let cut = match std::str::from_utf8(&text) {
        Ok(_) => text.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => text.len(),
    };
    let rest = text.split_off(cut);
    flush(&mut text, &mut out);
    (out, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_text_edits_and_escapes_and_keep_a_cut_character() {
        let mut bytes = b"ab\x1b[Dc\x7f\n".to_vec();
        bytes.extend_from_slice(&"é".as_bytes()[..1]);
        let (keys, rest) = keys(&bytes);
        assert_eq!(
            keys,
            // The arrow key is dropped; the text around it stays one piece.
            [Key::Text("abc".into()), Key::Backspace, Key::Enter]
        );
        assert_eq!(rest, &"é".as_bytes()[..1]);
    }

    #[test]
    fn the_status_keeps_the_newest_text_in_the_width() {
        assert_eq!(fit_tail("abcdef", 4), "…def");
        assert_eq!(fit_tail("你好世界", 5), "…世界");
        assert_eq!(fit_tail("abc", 4), "abc");
    }
}
