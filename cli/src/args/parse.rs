//! Reading the command line, and making what clap says when it refuses one
//! safe to show: every value it echoes escaped as fruix escapes values (see
//! `fruix_core::escape`), and a bad value from an environment variable
//! blamed on the variable, not on the flag it stands for. An empty
//! environment variable is unset. Help leaves out an environment
//! variable's value that would need escaping.

use clap::builder::{StyledStr, Styles};
use clap::error::{ContextKind, ContextValue};
use clap::{Arg, CommandFactory, FromArgMatches};
use fruix_core::escape;

use super::Cli;

/// The command line, parsed. When an argument holds a control character,
/// clap formats its messages without styles (colours), so that the only
/// escape sequences in them are the arguments', which [`refusal`] escapes
/// instead of letting them be stripped.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut command = environment_as_read(Cli::command());
    if hostile_arguments() {
        command = command.styles(Styles::plain());
    }
    // The program's name as usage lines show it: clap takes it from argv[0]
    // as it is (a newline in a symlink's name would break the line).
    if let Some(name) = std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
    {
        command = command.bin_name(escape::text(&name.to_string_lossy()).to_string());
    }
    let mut matches = command
        .try_get_matches_from_mut(std::env::args_os())
        .map_err(|e| match e.kind() {
            // A subcommand's `--version` is fruix's: clap would call it
            // by the subcommand's display name (`fruix-store-list 0.1.0`).
            clap::error::ErrorKind::DisplayVersion => Cli::command()
                .try_get_matches_from(["fruix", "--version"])
                .err()
                .unwrap_or(e),
            _ => e,
        })?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// Whether a command line clap refused asked for JSON: the command it names
/// takes `--json`, and `--json` (or `--json=VALUE`, which a flag refuses)
/// is among its words (not given to a command without one, whose stdout is
/// then not JSON). The command is found by parsing again, leniently: its
/// name comes before anything refused. A subcommand that is not one
/// (`store lst --json`, `error`'s kind says) counts as one of its siblings
/// that takes `--json`; a word that is no command of fruix itself (`fruix
/// bogus`, `fruix help stor`) does not.
pub fn refused_line_wants_json(error: &clap::Error) -> bool {
    let asked = std::env::args_os().skip(1).any(|word| {
        let word = word.as_encoded_bytes();
        word == b"--json" || word.starts_with(b"--json=")
    });
    let unknown = error.kind() == clap::error::ErrorKind::InvalidSubcommand;
    asked && refused_command_takes_json(unknown)
}

fn refused_command_takes_json(or_a_sibling: bool) -> bool {
    let parsed = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os());
    let Ok(parsed) = parsed else {
        return false;
    };
    let mut command = Cli::command();
    let mut matches = &parsed;
    let mut below_the_root = false;
    while let Some((name, sub)) = matches.subcommand() {
        let Some(found) = command.find_subcommand(name).cloned() else {
            return false;
        };
        command = found;
        matches = sub;
        below_the_root = true;
    }
    // A word that is no command of fruix itself (`fruix bogus`, `fruix
    // help stor`: help's words are read by the root) names no family of
    // commands whose output is JSON.
    let takes_json = |c: &clap::Command| c.get_arguments().any(|a| a.get_id() == "json");
    takes_json(&command)
        || (or_a_sibling && below_the_root && command.get_subcommands().any(takes_json))
}

/// `command`, reading the environment as fruix does. An empty variable is
/// unset (CI templates export empty ones): its option keeps its default,
/// rather than being refused as given no value. Help leaves out the value
/// of each variable fruix would not show as it is (help otherwise shows
/// `[env: NAME=VALUE]`, a control character included).
fn environment_as_read(command: clap::Command) -> clap::Command {
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let command = command.mut_args(|arg| {
        let value = arg.get_env().and_then(std::env::var_os);
        match value {
            Some(v) if v.is_empty() => arg.env(None::<&'static str>),
            Some(v) if needs_escaping(&v.to_string_lossy()) => arg.hide_env_values(true),
            _ => arg,
        }
    });
    subcommands.iter().fold(command, |command, name| {
        command.mut_subcommand(name, environment_as_read)
    })
}

/// A command line clap refused, ready to show.
pub struct Refusal {
    /// clap's error, every value it echoes escaped: safe for clap to print.
    pub error: clap::Error,
    /// The whole message as plain text, safe for a terminal (and for the
    /// `--json` error).
    pub text: String,
    /// `text` must be shown instead of letting clap print `error`: it names
    /// an environment variable clap does not, or an argument held a control
    /// character, which clap's printing would strip rather than show escaped.
    pub plain: bool,
}

impl Refusal {
    /// The message proper, for the `--json` error: the first paragraph of
    /// [`Refusal::text`] (what is refused, and why), without clap's
    /// `error: `, usage, tips and `For more information` line.
    pub fn message(&self) -> &str {
        let text = self.text.trim_start();
        let text = text.strip_prefix("error: ").unwrap_or(text);
        text.split("\n\n").next().unwrap_or(text).trim_end()
    }
}

/// `error` (a refused command line, not help or the version) made safe to
/// show.
pub fn refusal(mut error: clap::Error) -> Refusal {
    // The values clap also repeats inside its tips ("to pass '--x' as a
    // value, use '-- --x'").
    let echoed: Vec<String> = [ContextKind::InvalidArg, ContextKind::InvalidSubcommand]
        .into_iter()
        .filter_map(|kind| match error.get(kind) {
            Some(ContextValue::String(s)) if needs_escaping(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let variable = environment_variable(&error);
    let escaped: Vec<_> = error
        .context()
        .filter_map(|(kind, value)| escaped(value, &echoed).map(|value| (kind, value)))
        .collect();
    for (kind, value) in escaped {
        error.insert(kind, value);
    }
    let hostile = hostile_arguments();
    let mut text = if hostile {
        // Unstyled (see `parse`): what control characters are left came
        // from elsewhere (a value parser's message), and are escaped too.
        escape::terminal(&error.render().ansi().to_string())
    } else {
        error.render().to_string()
    };
    if let Some(name) = &variable {
        let first_line = text.find('\n').unwrap_or(text.len());
        text.insert_str(
            first_line,
            &format!(" (from the environment variable {name})"),
        );
    }
    Refusal {
        error,
        text,
        plain: hostile || variable.is_some(),
    }
}

/// Whether an argument (the program's name included) holds a control
/// character.
fn hostile_arguments() -> bool {
    arguments().any(|a| escape::line(&a) != a)
}

fn arguments() -> impl Iterator<Item = String> {
    std::env::args_os().map(|a| a.to_string_lossy().into_owned())
}

/// Whether fruix would show `s` otherwise than as it is.
fn needs_escaping(s: &str) -> bool {
    escape::text(s).to_string() != s
}

/// `value` escaped, `None` when it needs no escaping. `echoed` are the
/// values the tips repeat, which are escaped inside them.
fn escaped(value: &ContextValue, echoed: &[String]) -> Option<ContextValue> {
    let text = |s: &String| escape::text(s).to_string();
    match value {
        ContextValue::String(s) if needs_escaping(s) => Some(ContextValue::String(text(s))),
        ContextValue::Strings(v) if v.iter().any(|s| needs_escaping(s)) => {
            Some(ContextValue::Strings(v.iter().map(text).collect()))
        }
        ContextValue::StyledStrs(tips) if !echoed.is_empty() => {
            let escape_echoed = |tip: &StyledStr| {
                let shown = echoed.iter().fold(tip.ansi().to_string(), |shown, value| {
                    shown.replace(value.as_str(), &text(value))
                });
                StyledStr::from(shown)
            };
            Some(ContextValue::StyledStrs(
                tips.iter().map(escape_echoed).collect(),
            ))
        }
        _ => None,
    }
}

/// The environment variable the value clap refused came from, when it did:
/// clap then names the flag the variable stands for, though that flag was
/// not given. (The flags that read a variable all have a long name.)
fn environment_variable(error: &clap::Error) -> Option<String> {
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    let options: Vec<String> = arguments().skip(1).take_while(|a| a != "--").collect();
    let given = |long: &str| {
        let spelled = format!("--{long}");
        options
            .iter()
            .any(|a| a == &spelled || a.strip_prefix(&spelled).is_some_and(|v| v.starts_with('=')))
    };
    let mut command = Cli::command();
    command.build();
    let from_variable = |arg: &Arg| {
        let name = arg.get_env()?;
        let set = std::env::var_os(name).filter(|v| !v.is_empty())?;
        let refused = arg.to_string() == *flag
            && set.to_string_lossy() == *value
            && !arg.get_long().is_some_and(given);
        refused.then(|| name.to_string_lossy().into_owned())
    };
    reading_variables(&command)
        .into_iter()
        .find_map(from_variable)
}

/// The arguments of `command` and of its subcommands that read an
/// environment variable.
fn reading_variables(command: &clap::Command) -> Vec<&Arg> {
    command
        .get_arguments()
        .filter(|a| a.get_env().is_some())
        .chain(command.get_subcommands().flat_map(reading_variables))
        .collect()
}
