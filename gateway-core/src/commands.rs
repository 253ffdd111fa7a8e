//! Gateway commands: `/new` (= `/reset`), `/stop`, `/status`, `/help`, `/whoami`. They are answered
//! by the gateway itself; any other `/x` goes to the agent unchanged.

/// A command the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start a new session (stops a running turn first).
    New,
    /// Stop the running turn and drop queued messages.
    Stop,
    /// Show the session's state.
    Status,
    /// List the commands.
    Help,
    /// Show the sender's ids as the gateway sees them (for allowlists).
    WhoAmI,
}

/// The help text listing the commands.
pub const HELP: &str = "Commands:\n\
/new (or /reset) — start a new conversation\n\
/stop — stop the current answer and drop queued messages\n\
/status — show this conversation's state\n\
/whoami — show your ids as the gateway sees them\n\
/help — this list";

/// Removes leading `@name` mentions (as group clients insert them), then surrounding whitespace.
pub fn strip_leading_mentions(text: &str) -> &str {
    let mut rest = text.trim_start();
    while let Some(after_at) = rest.strip_prefix('@') {
        // A mention runs to the next whitespace (ASCII or the ideographic space WeCom uses).
        match after_at.find(|c: char| c.is_whitespace()) {
            Some(end) => rest = after_at[end..].trim_start(),
            None => return "",
        }
    }
    rest.trim_end()
}

/// Parses a gateway command. In groups a leading `@name` is stripped first. A command may carry
/// a `@botname` suffix (`/stop@bot`). Unknown commands return `None` and go to the agent.
pub fn parse(text: &str, is_group: bool) -> Option<Command> {
    let text = if is_group {
        strip_leading_mentions(text)
    } else {
        text.trim()
    };
    let word = text.strip_prefix('/')?.split_whitespace().next()?;
    let name = word.split('@').next().unwrap_or(word).to_ascii_lowercase();
    match name.as_str() {
        "new" | "reset" => Some(Command::New),
        "stop" => Some(Command::Stop),
        "status" => Some(Command::Status),
        "help" => Some(Command::Help),
        "whoami" => Some(Command::WhoAmI),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let cases: &[(&str, bool, Option<Command>)] = &[
            ("/new", false, Some(Command::New)),
            ("/reset", false, Some(Command::New)),
            ("  /STOP  ", false, Some(Command::Stop)),
            ("/status please", false, Some(Command::Status)),
            ("/help", false, Some(Command::Help)),
            ("/whoami", false, Some(Command::WhoAmI)),
            ("/stop@mybot", false, Some(Command::Stop)),
            ("@bot /new", true, Some(Command::New)),
            ("@bot\u{3000}/stop", true, Some(Command::Stop)),
            ("@a @b /status", true, Some(Command::Status)),
            ("@bot /new", false, None),
            ("/unknown", false, None),
            ("/", false, None),
            ("hello /new", false, None),
            ("", true, None),
        ];
        for (text, group, want) in cases {
            assert_eq!(parse(text, *group), *want, "{text:?} group={group}");
        }
    }

    #[test]
    fn strips_mentions() {
        assert_eq!(strip_leading_mentions("@bot hello"), "hello");
        assert_eq!(strip_leading_mentions("@bot"), "");
        assert_eq!(strip_leading_mentions("hi @bot"), "hi @bot");
    }
}
