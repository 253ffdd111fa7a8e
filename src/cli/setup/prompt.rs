//! The questions `gateway setup` asks, behind the [`Prompter`] trait so that the wizard runs the
//! same code in a terminal ([`TerminalPrompter`]: dialoguer prompts, an indicatif spinner, secrets
//! read without echo) and from scripts or tests ([`ScriptedPrompter`]: answers by question id,
//! which is how `--non-interactive` turns its flags into answers).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The terminal could not be read (closed stdin, Ctrl-C, no TTY).
    #[error("cannot read the answer from the terminal: {0}")]
    Terminal(String),
    /// A scripted run has no answer for a question without a default.
    #[error("no answer for `{id}`{}", .flag.map(|f| format!(" (give {f})")).unwrap_or_default())]
    Missing {
        /// The question id.
        id: String,
        /// The command-line flag that answers it, when there is one.
        flag: Option<&'static str>,
    },
    /// A scripted answer failed the question's validation and no further answer was given.
    #[error("`{id}`: {reason}")]
    Invalid {
        /// The question id.
        id: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

/// A question: a stable id (what scripts and flags answer), the text shown, an optional default.
#[derive(Debug, Clone)]
pub struct Question {
    /// Stable id, e.g. `bot_id`.
    pub id: &'static str,
    /// The prompt text.
    pub prompt: String,
    /// Shown and used when the answer is empty.
    pub default: Option<String>,
    /// An empty answer is accepted (optional values).
    pub allow_empty: bool,
}

impl Question {
    /// A required question without a default.
    pub fn new(id: &'static str, prompt: impl Into<String>) -> Self {
        Self {
            id,
            prompt: prompt.into(),
            default: None,
            allow_empty: false,
        }
    }

    /// With a default (ignored when `None` or empty).
    pub fn default(mut self, value: Option<impl Into<String>>) -> Self {
        self.default = value.map(Into::into).filter(|v: &String| !v.is_empty());
        self
    }

    /// Accepts an empty answer.
    pub fn optional(mut self) -> Self {
        self.allow_empty = true;
        self
    }
}

/// A validator: `Err(reason)` rejects the answer and the question is asked again.
pub type Validator<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// Accepts anything.
pub fn any(_: &str) -> Result<(), String> {
    Ok(())
}

/// A long-running step shown to the user (a spinner in the terminal).
pub trait Progress: Send + Sync {
    /// Updates the message.
    fn set_message(&self, message: &str);
    /// Ends the step with a closing line.
    fn finish(&self, message: &str);
}

/// Everything the wizard asks or tells.
pub trait Prompter: Send {
    /// A line of text, validated as typed.
    fn input(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError>;
    /// A secret, read without echo. An empty answer returns the default (the current value).
    fn secret(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError>;
    /// Yes or no.
    fn confirm(&mut self, q: &Question, default: bool) -> Result<bool, PromptError>;
    /// One of `choices` (`(key, label)`); returns the key. Scripts answer with the key.
    fn select(
        &mut self,
        q: &Question,
        choices: &[(&'static str, String)],
        default: usize,
    ) -> Result<&'static str, PromptError>;
    /// Prints information (instructions, QR codes, results).
    fn say(&mut self, text: &str);
    /// Starts a long-running step.
    fn progress(&mut self, message: &str) -> Box<dyn Progress>;
}

/// Dialoguer prompts and an indicatif spinner on the terminal.
#[derive(Default)]
pub struct TerminalPrompter {
    theme: dialoguer::theme::ColorfulTheme,
}

impl std::fmt::Debug for TerminalPrompter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalPrompter").finish_non_exhaustive()
    }
}

/// Runs a blocking terminal read without stalling the other tasks of a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn term_err(e: dialoguer::Error) -> PromptError {
    PromptError::Terminal(e.to_string())
}

impl Prompter for TerminalPrompter {
    fn input(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError> {
        let theme = &self.theme;
        blocking(|| {
            let mut input = dialoguer::Input::<String>::with_theme(theme)
                .with_prompt(&q.prompt)
                .allow_empty(q.allow_empty || q.default.is_some())
                .validate_with(|s: &String| -> Result<(), String> {
                    if s.trim().is_empty() && q.allow_empty {
                        return Ok(());
                    }
                    validate(s.trim())
                });
            if let Some(d) = &q.default {
                input = input.default(d.clone());
            }
            input.interact_text().map(|s| s.trim().to_string())
        })
        .map_err(term_err)
    }

    fn secret(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError> {
        let theme = &self.theme;
        let keep = q.default.is_some();
        let prompt = if keep {
            format!("{} (Enter keeps the current one)", q.prompt)
        } else {
            q.prompt.clone()
        };
        let answer = blocking(|| {
            dialoguer::Password::with_theme(theme)
                .with_prompt(prompt)
                .allow_empty_password(keep || q.allow_empty)
                .validate_with(|s: &String| -> Result<(), String> {
                    if s.trim().is_empty() && (keep || q.allow_empty) {
                        return Ok(());
                    }
                    validate(s.trim())
                })
                .interact()
        })
        .map_err(term_err)?;
        let answer = answer.trim().to_string();
        Ok(match (&q.default, answer.is_empty()) {
            (Some(d), true) => d.clone(),
            _ => answer,
        })
    }

    fn confirm(&mut self, q: &Question, default: bool) -> Result<bool, PromptError> {
        let theme = &self.theme;
        blocking(|| {
            dialoguer::Confirm::with_theme(theme)
                .with_prompt(&q.prompt)
                .default(default)
                .interact()
        })
        .map_err(term_err)
    }

    fn select(
        &mut self,
        q: &Question,
        choices: &[(&'static str, String)],
        default: usize,
    ) -> Result<&'static str, PromptError> {
        let theme = &self.theme;
        let labels: Vec<&str> = choices.iter().map(|(_, l)| l.as_str()).collect();
        let i = blocking(|| {
            dialoguer::Select::with_theme(theme)
                .with_prompt(&q.prompt)
                .items(&labels)
                .default(default.min(choices.len().saturating_sub(1)))
                .interact()
        })
        .map_err(term_err)?;
        choices
            .get(i)
            .map(|(k, _)| *k)
            .ok_or_else(|| PromptError::Terminal("no choice made".into()))
    }

    fn say(&mut self, text: &str) {
        println!("{text}");
    }

    fn progress(&mut self, message: &str) -> Box<dyn Progress> {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Box::new(Spinner(bar))
    }
}

struct Spinner(indicatif::ProgressBar);

impl Progress for Spinner {
    fn set_message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }
    fn finish(&self, message: &str) {
        self.0.finish_with_message(message.to_string());
    }
}

/// Answers questions from a table keyed by question id, for `--non-interactive` and tests.
///
/// Each id holds a queue of answers: an answer that fails validation is recorded in
/// [`ScriptedPrompter::rejected`] and the next one is taken, the way a user retypes in the
/// terminal. A question without an answer takes its default, or fails naming the flag to give.
#[derive(Debug, Default)]
pub struct ScriptedPrompter {
    answers: HashMap<&'static str, VecDeque<String>>,
    flags: HashMap<&'static str, &'static str>,
    echo: bool,
    /// Every question id asked, in order.
    pub asked: Vec<&'static str>,
    /// `(id, reason)` for every answer that failed validation.
    pub rejected: Vec<(&'static str, String)>,
    /// Everything the wizard said (instructions, results), in order.
    pub said: Vec<String>,
}

impl ScriptedPrompter {
    /// An empty script: every question takes its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an answer for `id` (several calls queue several answers).
    #[allow(dead_code)] // the builder form used by tests/setup.rs
    pub fn answer(mut self, id: &'static str, value: impl Into<String>) -> Self {
        self.push(id, value);
        self
    }

    /// Adds an answer for `id` in place.
    pub fn push(&mut self, id: &'static str, value: impl Into<String>) {
        self.answers.entry(id).or_default().push_back(value.into());
    }

    /// Names the flag that answers `id`, for the "missing answer" message.
    pub fn flag(&mut self, id: &'static str, flag: &'static str) {
        self.flags.insert(id, flag);
    }

    /// Prints what the wizard says to stdout as well (non-interactive runs).
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }

    /// Everything said, joined by newlines.
    #[allow(dead_code)] // used by tests/setup.rs
    pub fn transcript(&self) -> String {
        self.said.join("\n")
    }

    fn next(&mut self, id: &'static str) -> Option<String> {
        self.asked.push(id);
        self.answers.get_mut(id).and_then(VecDeque::pop_front)
    }

    fn missing(&self, id: &'static str) -> PromptError {
        PromptError::Missing {
            id: id.to_string(),
            flag: self.flags.get(id).copied(),
        }
    }

    fn text(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError> {
        loop {
            let Some(a) = self.next(q.id) else {
                return match &q.default {
                    Some(d) => Ok(d.clone()),
                    None if q.allow_empty => Ok(String::new()),
                    None => Err(self.missing(q.id)),
                };
            };
            let a = a.trim().to_string();
            if a.is_empty() {
                match &q.default {
                    Some(d) => return Ok(d.clone()),
                    None if q.allow_empty => return Ok(a),
                    None => {
                        self.rejected.push((q.id, "an answer is required".into()));
                        continue;
                    }
                }
            }
            match validate(&a) {
                Ok(()) => return Ok(a),
                Err(reason) => {
                    self.rejected.push((q.id, reason.clone()));
                    // Only fail once the script has no further answer to try.
                    if self.answers.get(q.id).is_none_or(VecDeque::is_empty) {
                        return Err(PromptError::Invalid {
                            id: q.id.to_string(),
                            reason,
                        });
                    }
                }
            }
        }
    }
}

impl Prompter for ScriptedPrompter {
    fn input(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError> {
        self.text(q, validate)
    }

    fn secret(&mut self, q: &Question, validate: Validator<'_>) -> Result<String, PromptError> {
        self.text(q, validate)
    }

    fn confirm(&mut self, q: &Question, default: bool) -> Result<bool, PromptError> {
        match self.next(q.id) {
            None => Ok(default),
            Some(a) => match a.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" | "true" | "1" => Ok(true),
                "n" | "no" | "false" | "0" => Ok(false),
                "" => Ok(default),
                other => Err(PromptError::Invalid {
                    id: q.id.to_string(),
                    reason: format!("`{other}` is not yes or no"),
                }),
            },
        }
    }

    fn select(
        &mut self,
        q: &Question,
        choices: &[(&'static str, String)],
        default: usize,
    ) -> Result<&'static str, PromptError> {
        let fallback = || choices.get(default).map(|(k, _)| *k);
        match self.next(q.id) {
            None => fallback().ok_or_else(|| self.missing(q.id)),
            Some(a) => {
                let a = a.trim().to_ascii_lowercase();
                choices
                    .iter()
                    .find(|(k, _)| *k == a)
                    .map(|(k, _)| *k)
                    .ok_or_else(|| PromptError::Invalid {
                        id: q.id.to_string(),
                        reason: format!(
                            "`{a}` is not one of: {}",
                            choices
                                .iter()
                                .map(|(k, _)| *k)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
            }
        }
    }

    fn say(&mut self, text: &str) {
        if self.echo {
            println!("{text}");
        }
        self.said.push(text.to_string());
    }

    fn progress(&mut self, message: &str) -> Box<dyn Progress> {
        self.say(message);
        Box::new(Quiet(self.echo))
    }
}

/// A step without a spinner; prints its closing line when the run echoes.
struct Quiet(bool);

impl Progress for Quiet {
    fn set_message(&self, _message: &str) {}
    fn finish(&self, message: &str) {
        if self.0 {
            println!("{message}");
        }
    }
}
